/* bf_shapley.h: Shapley values of a cooperative game given by a utility callback.
 *
 * Players are 0..n-1; a coalition is a bitmask. The federation's game: U(S) = validation accuracy
 * of the model aggregated from the updates of S onto the round's starting model (U(empty) = that
 * starting model). Every utility is evaluated at most once per call (results are cached).
 *  - bf_shapley_exact: all 2^n coalitions (n <= 20).
 *  - bf_shapley_layers: a budgeted estimator for larger n: coalitions are evaluated by size from
 *    both ends (the empty set and singletons, the grand coalition and its leave-one-out sets,
 *    then pairs and complements of pairs, ...), the last layer the budget reaches sampled at random
 *    from the seed. Each player's mean marginal contribution is known exactly at every size both of
 *    whose layers were evaluated (estimated from the sampled pairs in a partial layer), and
 *    interpolated linearly in between; the values are finally rescaled so they sum to
 *    U(N) - U(empty) (efficiency). Exact when the budget covers all 2^n coalitions; error against
 *    exact measured in tests/unit/test_shapley.c and blockfed-bench shapley. */
#ifndef BF_SHAPLEY_H
#define BF_SHAPLEY_H

#include <stdint.h>

#include "bf_util.h"

typedef double (*bf_utility_fn)(void *ctx, uint32_t coalition);

/* phi[n] = exact Shapley values. Returns 0, or -1 (n out of [1, 20], out of memory). */
int bf_shapley_exact(int n, bf_utility_fn u, void *ctx, double *phi, bf_err_t *err);

/* phi[n] estimated with at most `budget` distinct utility evaluations (budget >= 2n + 2, n <= 30);
 * *evals receives the number used. */
int bf_shapley_layers(int n, bf_utility_fn u, void *ctx, int budget, uint64_t seed, double *phi, int *evals,
                      bf_err_t *err);

#endif

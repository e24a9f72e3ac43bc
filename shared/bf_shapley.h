/* bf_shapley.h: Shapley values of a cooperative game given by a utility callback.
 *
 * Players are 0..n-1; a coalition is a bitmask. The federation's game: U(S) = validation accuracy
 * of the model aggregated from the updates of S onto the round's starting model (U(empty) = that
 * starting model). Every utility is evaluated at most once per call (results are cached).
 *  - bf_shapley_exact: all 2^n coalitions (n <= 20).
 *  - bf_shapley_surrogate: the coordinator's estimator (n <= 16). It evaluates the coalitions
 *    bf_shapley_layers would (below) but keeps each coalition model's logits on the validation
 *    images, not just U. A coalition model is the starting one plus sum c_i(S) delta_i (c_i = i's
 *    FedAvg weight within S), so every image's logits are a smooth function of the weights c; the
 *    surrogate fits, for every image and class at once, a quadratic in c (the n weights and their
 *    n(n+1)/2 products; ridge 1e-2 of the mean diagonal; each coalition size weighing the same in
 *    total, as in the Shapley value) to the evaluated coalitions' logits. Every other coalition's
 *    logits are predicted, and U of those (accuracy or -cross-entropy, per image: the thresholds
 *    and the noise of a 2,000-image accuracy are in the surrogate game too) is the surrogate game
 *    U~. Its values are computed exactly (n <= 12; 2^n predicted coalitions, a few ms each) or
 *    with bf_shapley_layers at 4,096 of them; what the surrogate misses, U - U~ on the evaluated
 *    coalitions, is valued with bf_shapley_layers on the same coalitions (a control variate):
 *    phi = phi(U~) + phi_layers(U - U~). Efficiency exact; exact once the budget covers all 2^n
 *    coalitions; deterministic from the seed; the logits kept are budget x images x classes
 *    floats (8 MB for 100 coalitions of 2,000 images; more than 1 GiB is refused).
 *    Measured: see the figures after bf_shapley_layers's.
 *  - bf_shapley_layers: a budgeted estimator (stratified by coalition size). It uses the identity
 *    phi_i = (U(N) - U(empty))/n + sum over sizes t = 1..n-1 of gamma_i(t)/(n-1), where gamma(t)
 *    are the player effects of the least-squares additive fit of U over the coalitions of size t
 *    (centered: they sum to 0, so any estimate of them keeps efficiency exactly).
 *    Evaluations: the empty set, N, all singletons and all leave-one-out sets (2n+2: gamma(1) and
 *    gamma(n-1) exact), then sizes 2, 4, 3, 5, 6, ..., n-2, whole while they fit, the last one in
 *    seeded balanced rounds (each player in about as many coalitions). The middle sizes follow one
 *    model fitted to every evaluated middle coalition:
 *      gamma_i(t) = gamma_i(n-1) + f(t) (a (gamma_i(1) - gamma_i(n-1)) + r_i) + l(t) s_i,
 *    f the path from the leave-one-out effects (f = 0) to the singletons' (f = 1): 1/t by
 *    preference (a FedAvg coalition weights each update 1/t, so to first order an update's effect
 *    dilutes as 1/t), linear or geometric if one of those fits 1.5x better; l the straight path;
 *    a shared, r_i and s_i per player, all ridged (a toward 1, r and s toward 0); sizes weighted
 *    by 1/(the utility's variance among them). Fully evaluated sizes use their exact effects.
 *    Exact for additive and symmetric games from 2n+2 evaluations and for any game once the
 *    budget covers all 2^n coalitions; deterministic from the seed; each coalition evaluated at
 *    most once.
 *    Measured against exact at n = 10 (blockfed-bench shapley: 10 participants with 5,000
 *    Fashion-MNIST images each, one local ResNet8 epoch per round, U on 2,000 test images;
 *    --table replays, 10 seeds), relative L2 error, mean over seeds, at 32 / 50 / 100 evaluations:
 *      IID round 1 (from a random model): accuracy 17 / 11 / 5.5%, -loss 17 / 11 / 7.2%
 *      IID round 2:                       accuracy 12 / 7.7 / 2.8%, -loss 13 / 7.7 / 3.2%
 *      IID round 3 (small values):        accuracy 38 / 23 / 9.2%, -loss 24 / 13 / 5.0%
 *      Dirichlet-0.5 round 1:             accuracy 29 / 22 / 12%,  -loss 24 / 14 / 5.4%
 *      Dirichlet-0.5 round 2:             accuracy 34 / 28 / 20%,  -loss 20 / 15 / 7.6%
 *    (mean of the ten at 100: 7.8%; on the values summed over the rounds, at 100: IID 4.1% / 5.4%,
 *    Dirichlet 14% / 6.0%, Spearman >= 0.95). The previous estimator (interpolation between sizes
 *    2 and n-2) on the same tables: mean 24% at 32 and 12% at 100.
 *    Held out (a second federation, tables made after the tuning), at 100, accuracy / -loss:
 *      IID rounds 1-5: 17 / 19%, 2.7 / 2.5%, 7.9 / 3.9%, 7.8 / 5.1%, 12 / 5.2%
 *      Dirichlet-0.5 rounds 1-3: 23 / 2.4%, 22 / 5.9%, 38 / 6.2%
 *    (previous estimator: 24 / 27, 4.4 / 3.2, 16 / 8.8, 11 / 10, 13 / 8.1; 19 / 5.7, 16 / 8.6, 33 / 10:
 *    the new one is better except on non-IID rounds under U = accuracy).
 *    On U = (sum w)^2 at n = 12: 0.15% with 100; on U = 1 - exp(-sum w) at n = 10, 12: <= 7.7%
 *    with 32 and <= 7.9% with 100 (8 of 10 games <= 3%). */
#ifndef BF_SHAPLEY_H
#define BF_SHAPLEY_H

#include <stdint.h>

#include "bf_util.h"

typedef double (*bf_utility_fn)(void *ctx, uint32_t coalition);

/* phi[n] = exact Shapley values. Returns 0, or -1 (n out of [1, 20], out of memory). */
int bf_shapley_exact(int n, bf_utility_fn u, void *ctx, double *phi, bf_err_t *err);

/* phi[n] estimated with at most `budget` distinct utility evaluations (budget >= 2n + 2, n <= 30),
 * summing to U(N) - U(empty); *evals receives the number used. */
int bf_shapley_layers(int n, bf_utility_fn u, void *ctx, int budget, uint64_t seed, double *phi, int *evals,
                      bf_err_t *err);

/* ---- the prediction surrogate -------------------------------------------------------------- */

#define BF_SURROGATE_MAXN 16

/* A coalition's model's predictions on the validation images: out[images * classes] logits. */
typedef int (*bf_logits_fn)(void *ctx, uint32_t coalition, float *out);

typedef struct {
    int images, classes;
    const int32_t *labels; /* [images], each in [0, classes) */
    const double *weight;  /* [n]: each player's FedAvg weight (its samples); NULL = equal */
    int loss;              /* U = -mean cross-entropy; 0: U = accuracy */
} bf_preds_t;

/* U of one model's logits: accuracy (the first of equal maxima wins) or -mean cross-entropy. */
double bf_preds_utility(const bf_preds_t *p, const float *logits);

/* phi[n] estimated from at most `budget` coalition predictions (budget >= 2n + 2, n <= 16), the same
 * coalitions bf_shapley_layers would evaluate, plus a surrogate of every other coalition's logits
 * fitted to them (see above); sums to U(N) - U(empty); *evals receives the number used. */
int bf_shapley_surrogate(int n, bf_logits_fn f, void *ctx, const bf_preds_t *p, int budget, uint64_t seed,
                         double *phi, int *evals, bf_err_t *err);

#endif

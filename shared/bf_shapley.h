/* bf_shapley.h: Shapley values of a cooperative game given by a utility callback.
 *
 * Players are 0..n-1; a coalition is a bitmask. The federation's game: U(S) = validation accuracy
 * of the model aggregated from the updates of S onto the round's starting model (U(empty) = that
 * starting model). Every utility is evaluated at most once per call (results are cached).
 *  - bf_shapley_exact: all 2^n coalitions (n <= 20).
 *  - bf_shapley_surrogate: the coordinator's estimator (n <= 16). It evaluates the coalitions
 *    bf_shapley_layers would (below) but keeps each coalition model's logits on the validation
 *    images, not just U. A coalition model is the starting one plus sum c_i(S) delta_i (c_i = i's
 *    FedAvg weight within S; its BN statistics then re-estimated, as the coordinator does), so
 *    every image's logits are a smooth function of the weights c; the
 *    surrogate fits, for every image and class at once, a quadratic in c (the n weights and their
 *    n(n+1)/2 products; ridge 1e-3 of the mean diagonal; each coalition size weighing the same in
 *    total, as in the Shapley value) to the evaluated coalitions' logits, one fit per coalition
 *    size t with the other sizes t' down-weighted by exp(-2|t' - t|) (one quadratic cannot follow
 *    an unconverged model from the pairs to the grand coalition). Every other coalition's
 *    logits are predicted, and U of those (accuracy or -cross-entropy, per image: the thresholds
 *    and the noise of a 2,000-image accuracy are in the surrogate game too) is the surrogate game
 *    U~. Its values are computed exactly (n <= 12; 2^n predicted coalitions, a few ms each) or
 *    with bf_shapley_layers at 4,096 of them; what the surrogate misses, U - U~ on the evaluated
 *    coalitions, is valued with bf_shapley_layers on the same coalitions (a control variate):
 *    phi = phi(U~) + phi_layers(U - U~). Efficiency exact; exact once the budget covers all 2^n
 *    coalitions; deterministic from the seed; it keeps budget x images x classes floats of logits
 *    and n x (n + n(n+1)/2) x images x classes of fitted coefficients (8 + 52 MB for 100
 *    coalitions of 2,000 images at n = 10, 8 + 195 MB at n = 16; more than 1 GiB is refused).
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
 *    Fashion-MNIST images each, one local ResNet8 epoch per round, every aggregated model's BN
 *    statistics (the initial model's too) re-estimated on 1,280 training images as the coordinator
 *    does, U on 2,000 test
 *    images; the tables and every coalition's logits replayed with --table, 10 seeds; 8 rounds of
 *    5 federations), relative L2 error, mean over seeds, at 100 evaluations, surrogate / this
 *    layer estimator on the same tables:
 *                                        U = accuracy               U = -loss
 *      IID seed 7, round 1, 2, 3:        0.46, 1.2, 2.4 / 1.4-12%   0.29, 0.58, 0.87 / 0.4-3.1%
 *      Dirichlet-0.5 seed 8, round 1, 2: 2.2, 0.68 / 37, 35%        1.2, 0.51 / 5.7, 9.7%
 *      IID seed 9, round 1:              0.50 / 1.0%                0.27 / 0.36%
 *      Dirichlet-0.5 seed 9, round 1:    2.0 / 19%                  1.3 / 7.3%
 *      Dirichlet-0.5 seed 10, round 1:   1.1 / 23%                  0.61 / 6.3%
 *      mean of the 8:                    1.3 / 17%                  0.70 / 4.3%
 *    Spearman >= 0.981 (surrogate, mean over seeds) on every round. On the values summed over a
 *    federation's rounds (what settlement pays on): IID seed 7 0.48% (accuracy) / 0.29% (-loss),
 *    Dirichlet seed 8 1.4% / 0.86%. At 32 evaluations: 1.3-3.7% (accuracy) and 0.9-2.2%
 *    (-loss) on the IID first and second rounds, 7.4-9.9% / 4.4-9.6% on the others (means 6.0% /
 *    5.1%); summed over IID seed 7's rounds 1.7% / 0.80%, Dirichlet seed 8's 8.8% / 8.8%.
 *    (Round 1's tables were made before the initial model was re-estimated too: their empty
 *    coalition was replaced by the re-estimated initial model's accuracy, -loss and logits.)
 *    Before the coordinator re-estimated BN statistics (averaged ones; 11 rounds of 4 federations
 *    and 2 of a fifth): 5.8-7.1% (accuracy) on the four first rounds from a random model and
 *    7.0-9.0% (-loss) on the two IID ones; later rounds 0.9-2.7% (IID), 2.5-7.0% (Dirichlet) /
 *    0.6-2.8% (-loss); 9.0-19% at 32. Averaging ten updates trained from a random start was then
 *    worse than each alone (IID seed 7: 0.57 alone, 0.59 in pairs, 0.37 all ten), so the logits
 *    changed most across the sizes 3 and 5-8 that 100 evaluations leave unobserved; most of that
 *    drop was the averaged statistics (re-estimated: 0.59, 0.66, 0.69), and with them re-estimated
 *    the game is monotone and smooth in the coalition size. Given every coalition of each size,
 *    the per-size fits gave 1.0-2.0% / 0.2-1.4% on those first rounds even then: the error was in
 *    the unobserved sizes, not the fit's form. The fit (quadratic, equal weight per size) was
 *    chosen on the first IID federation and the first two Dirichlet rounds, the per-size fits and
 *    their ridge on the 11 rounds, all before recalibration (nothing retuned since). Measured and
 *    rejected on them: one fit for all sizes (ridge 1e-2: 7.6% mean vs 3.9%), fitting the
 *    coalition model's features before its last (linear) layer instead of its logits (5.4 vs
 *    5.2%, 7.4 vs 7.3% on IID seed 7), coefficients smoothed across sizes instead of the
 *    exp(-2|t' - t|) weights, ridge 1e-4 and 3e-4, and other uses of the 78 middle evaluations
 *    (no complete pairs, sizes 3, 8, 4 + 8, 3 + 4 + 6, or no leave-one-out sets): all as good
 *    or worse. Its cost beyond the evaluations: 0.6-1.1 s per round at n = 10 (n fits of 100
 *    coalitions' 20,000 logits).
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
/* An image's cross-entropy counts at most this many nats: a float32 softmax cannot give the true
 * class less than e^-103 anyway, and a poisoned coalition model's logits (1e28, inf, NaN) must not
 * make U, and so the values paid out, unbounded. So |U(S) - U(T)| <= 100 and |phi_i| <= 100. */
#define BF_LOSS_CAP 100.0
/* Predictions beyond +-1e4 logits (a softmax saturated far beyond any class margin) are refused by
 * the surrogate: its float fit would bury the other coalitions' logits in their rounding error. */
#define BF_SURROGATE_MAX_LOGIT 1e4

/* A coalition's model's predictions on the validation images: out[images * classes] logits. */
typedef int (*bf_logits_fn)(void *ctx, uint32_t coalition, float *out);

typedef struct {
    int images, classes;
    const int32_t *labels; /* [images], each in [0, classes) */
    const double *weight;  /* [n]: each player's FedAvg weight (its samples); NULL = equal */
    int loss;              /* U = -mean cross-entropy; 0: U = accuracy */
} bf_preds_t;

/* U of one model's logits: accuracy (the first of equal maxima wins) or -mean cross-entropy,
 * each image's capped at BF_LOSS_CAP (NaN, inf count the cap). */
double bf_preds_utility(const bf_preds_t *p, const float *logits);

/* phi[n] estimated from at most `budget` coalition predictions (budget >= 2n + 2, n <= 16), the same
 * coalitions bf_shapley_layers would evaluate, plus a surrogate of every other coalition's logits
 * fitted to them (see above); sums to U(N) - U(empty); *evals receives the number used. Returns -1
 * (err set) if the memory cap is exceeded or a prediction is not finite or beyond
 * BF_SURROGATE_MAX_LOGIT: the caller then uses bf_shapley_layers. */
int bf_shapley_surrogate(int n, bf_logits_fn f, void *ctx, const bf_preds_t *p, int budget, uint64_t seed,
                         double *phi, int *evals, bf_err_t *err);

#endif

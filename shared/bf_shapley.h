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
 *    Fashion-MNIST images each, one local ResNet8 epoch per round, U on 2,000 test images; the
 *    tables and every coalition's logits replayed with --table, 10 seeds; 11 rounds of 4
 *    federations), relative L2 error, mean over seeds, at 100 evaluations, surrogate / this layer
 *    estimator on the same tables:
 *                                     U = accuracy                 U = -loss
 *      IID round 1 (random start), 2: 5.8 / 5.5%, 7.1 / 15%        7.0 / 7.2%, 9.0 / 12%
 *      IID rounds 2-3, 4 rounds:      0.9-2.7% / 2.8-9.2%          0.6-2.3% / 2.5-5.0%
 *      Dirichlet-0.5, 5 rounds:       2.5-7.0% / 17-38%            2.0-2.8% / 2.4-7.9%
 *      mean of the 11:                3.9% / 15%                   2.9% / 5.5%
 *    Spearman >= 0.967 (surrogate, mean over seeds) on every round. <= 5% on 7 of the 11 rounds
 *    under U = accuracy (not: the four first rounds, 5.8-7.1%), 9 of 11 under -loss (not: the
 *    two IID first rounds, 7.0 and 9.0%). On the values summed over a federation's
 *    rounds (what settlement pays on): IID 4.1 / 4.1% and 5.0 / 11%, Dirichlet 4.0 / 19% and 4.9 /
 *    15% (accuracy); IID 5.2 / 5.4% and 6.4 / 8.5%, Dirichlet 1.6 / 3.4% and 2.0 / 5.1% (-loss).
 *    At 32 evaluations (first two federations): 9.0-19% on first rounds (layer estimator 17-50%),
 *    4.6-19% on the others. With one fit for all sizes (ridge 1e-2) instead of one per size the
 *    accuracy column read 9.5, 14, 1.2-4.1, 7.1-20%, mean 7.6%, and -loss 2.8% mean. The fit
 *    (quadratic, equal weight per size) was chosen on the first IID federation and the first two
 *    Dirichlet rounds, the per-size fits and their ridge on all 11 rounds; a fifth federation
 *    made afterwards (Dirichlet-0.5, seed 10, held out) gave 4.7% and 1.7% (accuracy; layer
 *    estimator 17% and 13%), 4.9% and 1.5% (-loss; 6.8%, 5.6%) on its rounds 1-2, Spearman
 *    >= 0.954, and 8.1-13% at 32 evaluations. Its cost beyond the
 *    evaluations: 0.6-1.1 s per round at n = 10 (n fits of 100 coalitions' 20,000 logits).
 *    Why the first rounds miss: averaging ten updates trained from a random start is worse than
 *    each alone (IID seed 7: accuracy 0.57 alone, 0.59 in pairs, 0.37 all ten), so the logits
 *    change most across the sizes 3 and 5-8 that 100 evaluations leave unobserved (most of that
 *    drop is BatchNorm's running statistics: re-estimated on 3,200 training images after
 *    averaging, the all-ten model reaches 0.69, a single update 0.59, a pair 0.66; measured
 *    outside the product, which does not recalibrate; with every coalition model so recalibrated
 *    (20 train-mode batches of 64 training images) that round's game is monotone and this
 *    estimator's error is 0.64% / 0.47% (accuracy / -loss) at 100 evaluations, 2.3% / 1.8% at
 *    32, 10 seeds; Dirichlet seed 8's first round: 2.4% / 1.3% at 100 (was 7.0% / 2.0%), 8.8% /
 *    9.1% at 32; bf_net_recalibrate_bn is the engine's step for it). Given every
 *    coalition of each size, the same per-size quadratic fits give 1.0-2.0% (accuracy) and
 *    0.2-1.4% (-loss) on the four first rounds: the error is in the unobserved sizes, not the
 *    fit's form. Measured and rejected on those rounds: fitting the coalition model's features
 *    before its last (linear) layer instead of its logits (5.4 vs 5.2%, 7.4 vs 7.3% on IID seed
 *    7), coefficients smoothed across sizes instead of the exp(-2|t' - t|) weights, ridge 1e-4 and
 *    3e-4, and other uses of the 78 middle evaluations (no complete pairs, sizes 3, 8, 4 + 8,
 *    3 + 4 + 6, or no leave-one-out sets): all as good or worse.
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

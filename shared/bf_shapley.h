/* bf_shapley.h: Shapley values of a cooperative game given by a utility callback.
 *
 * Players are 0..n-1; a coalition is a bitmask (bit i = player i); U(coalition) is the caller's
 * utility, and player i's value is phi_i = sum over S without i of |S|! (n-|S|-1)! / n! x
 * (U(S + i) - U(S)). The game the coordinator values (a round's updates, U = validation accuracy
 * or -loss of the model a coalition's updates make), how each estimator works, its measured error
 * and cost, and how to reproduce the figures (blockfed-bench shapley) are in docs/SHAPLEY.md.
 *
 * Every estimator here:
 *  - asks for each coalition at most once per call, from the calling thread, so U must be
 *    deterministic; keeps no state between calls (concurrent calls with their own ctx are safe);
 *  - is efficient: the values sum to U(all) - U(empty) (up to rounding);
 *  - is deterministic: the same arguments and utilities give the same values;
 *  - does not check U: a non-finite utility gives non-finite values (bf_preds_utility is bounded);
 *  - returns 0, or -1 with err set, phi's contents then unspecified. */
#ifndef BF_SHAPLEY_H
#define BF_SHAPLEY_H

#include <stdint.h>

#include "bf_util.h"

typedef double (*bf_utility_fn)(void *ctx, uint32_t coalition);

/* phi[n] = the exact Shapley values, from all 2^n coalitions (each evaluated once, 2^n doubles
 * kept). -1: n outside [1, 20], out of memory. */
int bf_shapley_exact(int n, bf_utility_fn u, void *ctx, double *phi, bf_err_t *err);

/* phi[n] estimated from at most `budget` distinct evaluations (the layer estimator); *evals (if
 * not NULL) receives the number used, at most min(budget, 2^n). Evaluates first the empty and full
 * coalitions, every singleton and every leave-one-out coalition (2n + 2), then whole coalition
 * sizes 2, 4, 3, 5, 6, ..., n-2 while they fit in the budget, the last one partly (seeded; each
 * player in about as many of its coalitions). phi_i = (U(all) - U(empty))/n plus the mean over
 * sizes of i's effect in that size's least-squares additive fit of U: exact for fully evaluated
 * sizes, a ridge-regularized model across sizes for the others. Exact for additive games and
 * symmetric games (U a function of |S|) from 2n + 2 evaluations, and for any game once
 * budget >= 2^n.
 * Beyond the evaluations it costs a few (2n + 1)-unknown least-squares fits over the evaluated
 * coalitions and O(budget) memory. -1: n outside [1, 30], budget < 2n + 2, out of memory. */
int bf_shapley_layers(int n, bf_utility_fn u, void *ctx, int budget, uint64_t seed, double *phi, int *evals,
                      bf_err_t *err);

/* ---- the prediction surrogate -------------------------------------------------------------- */

#define BF_SURROGATE_MAXN 16 /* players bf_shapley_surrogate takes */
/* An image's cross-entropy counts at most this many nats: a float32 softmax cannot give the true
 * class less than e^-103 anyway, and a poisoned coalition model's logits (1e28, inf, NaN) must not
 * make U, and so the values paid out, unbounded. So |U(S) - U(T)| <= 100 and |phi_i| <= 100. */
#define BF_LOSS_CAP 100.0
/* Predictions beyond +-1e4 logits (a softmax saturated far beyond any class margin) are refused by
 * the surrogate: its float fit would bury the other coalitions' logits in their rounding error. */
#define BF_SURROGATE_MAX_LOGIT 1e4

/* A coalition's model's predictions on the validation images: out[images * classes] logits;
 * nonzero: failed. */
typedef int (*bf_logits_fn)(void *ctx, uint32_t coalition, float *out);

typedef struct {
    int images, classes;
    const int32_t *labels; /* [images], each in [0, classes) */
    const double *weight;  /* [n]: each player's FedAvg weight (its samples); NULL = equal */
    int loss;              /* U = -mean cross-entropy; 0: U = accuracy */
    /* [images]: each image's weight in U, finite and >= 0 with a positive sum (U is the weighted
     * mean of the images' scores); NULL = equal. bf_preds_sample's weights. */
    const double *image_weight;
} bf_preds_t;

/* U of one model's logits[images * classes]: accuracy, the fraction of images whose largest logit
 * (the first of equal maxima, as bf_evaluate) is the label's, in [0, 1]; or (p->loss) minus the
 * mean cross-entropy, each image's capped at BF_LOSS_CAP (NaN and inf count the cap), in
 * [-BF_LOSS_CAP, 0]. p->weight is not used. */
double bf_preds_utility(const bf_preds_t *p, const float *logits);

/* A sample of m of p->images valuation images whose weighted U estimates the U of all of them, for
 * a cheaper game: each image drawn with probability proportional to how much its score can move
 * between the models whose logits z0 and z1 are ([images * classes] each: the round's starting
 * model and the full coalition's), plus a floor; systematic sampling, seeded, along that order.
 * idx[m] receives the chosen images (ascending), w[m] their weights (1 / the inclusion probability,
 * scaled to mean 1), to pass as image_weight for the images idx. Returns how many were chosen (m, up
 * to rounding, and all images with weight 1 if m >= images), or -1 (bad shape, out of memory).
 * Deterministic. */
int bf_preds_sample(const bf_preds_t *p, const float *z0, const float *z1, int m, uint64_t seed, int32_t *idx,
                    double *w, bf_err_t *err);

/* phi[n] estimated from at most `budget` coalition predictions: f is asked, once each, for the
 * coalitions bf_shapley_layers(n, ..., budget, seed, ...) would evaluate, and U(S) is
 * bf_preds_utility of S's logits. A ridge fit of every image's logits, quadratic in the members'
 * FedAvg weights within the coalition (p->weight; one fit per coalition size), predicts every other
 * coalition's logits; phi = the Shapley values of that predicted game (exact from its 2^n
 * coalitions up to n = 12, bf_shapley_layers on 4,096 of them above) plus bf_shapley_layers on
 * what the prediction misses on the evaluated coalitions. Equals bf_shapley_exact's values (up to
 * rounding) once budget >= 2^n: no fit then. *evals as bf_shapley_layers.
 * Memory: (min(budget, 2^n) + n (n + n(n+1)/2)) x images x classes floats of kept logits and fitted
 * coefficients (8 + 52 MB for 100 coalitions of 2,000 images x 10 classes at n = 10, 8 + 195 MB at
 * n = 16); more than 1 GiB is refused. Beyond the evaluations: n fits of that many coefficients
 * and the predicted coalitions' logits (2^n, or 4,096), each scored with bf_preds_utility.
 * -1: n outside [1, BF_SURROGATE_MAXN], budget < 2n + 2, images < 1, classes outside
 * [2, 100000], images x classes > 1e8, a label outside [0, classes), a weight not > 0, the memory
 * cap, out of memory, f failing, a logit not finite or beyond BF_SURROGATE_MAX_LOGIT, a singular
 * fit. The caller then uses bf_shapley_layers (the coordinator does). */
int bf_shapley_surrogate(int n, bf_logits_fn f, void *ctx, const bf_preds_t *p, int budget, uint64_t seed,
                         double *phi, int *evals, bf_err_t *err);

/* Coalition S's model's logits on the m valuation images idx[m] (ascending indices into the
 * p->images; idx NULL: all of them, m = p->images): out[m * classes]. Nonzero: failed. */
typedef int (*bf_logits_subset_fn)(void *ctx, uint32_t coalition, const int32_t *idx, int m, float *out);

/* bf_shapley_surrogate's values from fewer image predictions: the first 2n + 2 coalitions (empty,
 * full, singletons, leave-one-outs) are predicted on every image, the budget's others only on
 * `sample` images drawn with equal probability (seeded, one sample for every coalition). phi = the
 * surrogate's values from the 2n + 2 on every image + (the budget's surrogate values on the sample -
 * the 2n + 2's surrogate values on the sample): a difference estimator whose control variate is the
 * anchors' surrogate, so the sample only measures what that misses. Efficient (sums to U(all) -
 * U(empty) on every image); unbiased over samples for the per-image part that the estimators are
 * linear in. f is asked once per coalition: 2n + 2 times for every image, the rest for the sample.
 * With sample >= images, or budget >= 2^n, it is bf_shapley_surrogate on every image (f with
 * idx NULL). Errors as bf_shapley_surrogate's (the caller then uses bf_shapley_layers), and
 * sample < 1. Memory: bf_shapley_surrogate's on `sample` images, plus (2n + 2) x images x classes
 * floats. Measured error and cost: docs/SHAPLEY.md. */
int bf_shapley_surrogate_sampled(int n, bf_logits_subset_fn f, void *ctx, const bf_preds_t *p, int budget, int sample,
                                 uint64_t seed, double *phi, int *evals, bf_err_t *err);

/* A vector of a coalition's model (the coordinator's: what re-estimating its BN statistics on
 * fewer images misses) predicted from the vectors of some evaluated nonempty coalitions: a ridge
 * fit quadratic in the members' FedAvg weights within the coalition (bf_shapley_surrogate's
 * features and ridge), one coefficient set for all coalitions. new: n players (1..BF_SURROGATE_MAXN),
 * weight[n] > 0 (NULL: equal), dim floats a vector; NULL on bad arguments or out of memory.
 * add: -1 once solved, beyond 64 coalitions, S empty or with a player >= n, or a value not finite
 * (nothing added). solve: -1 with nothing added, out of memory. predict: after a successful solve;
 * writes out[dim]. */
typedef struct bf_coalition_fit bf_coalition_fit_t;
bf_coalition_fit_t *bf_coalition_fit_new(int n, const double *weight, size_t dim);
int bf_coalition_fit_add(bf_coalition_fit_t *f, uint32_t coalition, const float *v);
int bf_coalition_fit_solve(bf_coalition_fit_t *f);
void bf_coalition_fit_predict(const bf_coalition_fit_t *f, uint32_t coalition, float *out);
void bf_coalition_fit_destroy(bf_coalition_fit_t **f);

/* ---- first-order values for many players ------------------------------------------------ */

/* The gradient along the round's path: at the model theta(t) = theta0 + t * sum_j c_j delta_j
 * (t in [0, 1]; delta_j player j's update, c_j its share of the aggregate), dots[i] = grad U at
 * theta(t) . c_i delta_i for every player i. Nonzero: failed. */
typedef int (*bf_path_grad_fn)(void *ctx, double t, double *dots);

#define BF_GRADIENT_MAXN 1000000 /* players bf_shapley_gradient takes */

/* phi[n]: the Aumann-Shapley values of the additive game U(S) = U(theta0 + sum over i in S of
 * c_i delta_i) (each update at its share of the full aggregate, not re-weighted within S):
 * phi_i = the integral over t in [0, 1] of dots_i(t), by `points`-point Gauss-Legendre quadrature
 * (points in 1..5, f asked once per point, in increasing t). For U quadratic in the parameters
 * these are that game's exact Shapley values (c_i grad U(theta(1/2)) . delta_i), at first order
 * c_i grad U . delta_i; a player whose update is 0 (a copy of the starting model) gets exactly 0
 * and identical updates get identical values. Then the values are moved to sum to `total` (the
 * round's U(all) - U(empty), possibly in another utility than the gradient's): the gap shared in
 * proportion to |phi_i| (equally if every phi_i is 0), so a 0 stays 0 and, when every value has
 * the same sign, this is a rescaling. Cost: `points` calls of f; O(n) memory.
 * -1: n outside [1, BF_GRADIENT_MAXN], points outside [1, 5], f failing, a dot not finite. */
int bf_shapley_gradient(int n, bf_path_grad_fn f, void *ctx, int points, double total, double *phi, bf_err_t *err);

/* The margin utility the first-order values can be taken of: image i's margin
 * m_i = z_iy - log sum over k != y of exp z_ik (its label's logit minus a smooth maximum of the
 * others': > 0 iff the label's logit is the largest, up to the smoothing), u_i = sigmoid(m_i / tau).
 * Returns scale * the sum of u_i over the n images (n x K logits, labels y in [0, K)) and, if
 * dlogits is not NULL, writes its gradient with respect to the logits there (n x K floats). With
 * tau = 1, u_i is exactly the softmax probability of the label, so the utility is the expected
 * accuracy of a prediction drawn from the model's softmax; tau -> 0 approaches the accuracy. Measured
 * against -loss in docs/SHAPLEY.md (the coordinator keeps -loss). A non-finite logit gives a
 * non-finite result (the path gradient's caller refuses it). tau > 0. */
double bf_margin_utility(const float *logits, const int32_t *y, int n, int K, double tau, double scale, float *dlogits);

#define BF_CALIB_ITERS 50 /* Newton steps of bf_calibrated_xent */
/* The cross-entropy left after the best affine recalibration of the logits: the minimum over a
 * temperature a and class offsets b_k of the mean over the n images of the cross-entropy of
 * a z_i + b (convex in (a, b): damped Newton from a = 1, b = 0, at most BF_CALIB_ITERS steps).
 * Returns that minimum, the fitted a, b in ab (K + 1 doubles) and, if dlogits is not NULL, its
 * gradient with respect to the logits (n x K floats: a (softmax(a z_i + b) - onehot(y_i)) / n, by
 * the envelope theorem the gradient of the minimum). An update that only moves the class prior or
 * the confidence scale changes this by nothing to first order. NaN: out of memory. */
double bf_calibrated_xent(const float *logits, const int32_t *y, int n, int K, double *ab, float *dlogits);

#endif

/* shapley.c: the Shapley estimators of bf_shapley.h over a utility callback: exact (every
 * coalition), the layer estimator (a budget of coalitions chosen by size, per-size player effects
 * fitted across sizes) and the prediction surrogate (the layer estimator's coalitions' logits
 * fitted per image, the predicted game valued, the misfit corrected with the layer estimator), plus
 * bf_preds_utility, the one bounded utility of a model's logits every estimator scores with.
 * Pure computation: no I/O, no threads, no state between calls. The method, its measured error and
 * the choices behind its constants are in docs/SHAPLEY.md. */
#include "bf_shapley.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int popcount(uint32_t x) { return __builtin_popcount(x); }

/* w[s] = s! (n-s-1)! / n!: the weight of a coalition of size s in player i's sum. */
static void shapley_weights(int n, double *w) {
    for (int s = 0; s < n; s++) {
        double v = 1.0 / n; /* 1 / (n * C(n-1, s)) */
        for (int k = 1; k <= s; k++) v *= (double)k / (n - k);
        w[s] = v;
    }
}

int bf_shapley_exact(int n, bf_utility_fn u, void *ctx, double *phi, bf_err_t *err) {
    if (n < 1 || n > 20) return bf_err_set(err, "exact Shapley needs 1..20 players, got %d", n);
    uint32_t full = (1u << n);
    double *v = malloc(sizeof(double) * full), w[32];
    if (!v) return bf_err_set(err, "out of memory");
    for (uint32_t m = 0; m < full; m++) v[m] = u(ctx, m);
    shapley_weights(n, w);
    for (int i = 0; i < n; i++) {
        double s = 0;
        for (uint32_t m = 0; m < full; m++)
            if (!(m & (1u << i))) s += w[popcount(m)] * (v[m | (1u << i)] - v[m]);
        phi[i] = s;
    }
    free(v);
    return 0;
}

/* ---- the budgeted estimator (method: docs/SHAPLEY.md) --------------------------------------- */

/* Ridge weights of the middle-layer fit, chosen on saved utility tables of real rounds
 * (docs/SHAPLEY.md): RIDGE_PLAYER and RIDGE_LINEAR pseudo-observations (at size 2)
 * pull each player's two corrections toward 0; RIDGE_SHAPE (relative to the spread between the singleton and
 * leave-one-out effects) pulls the shared coefficient toward the 1/t prior. */
#define RIDGE_PLAYER 1.0
#define RIDGE_LINEAR 3.0
#define RIDGE_SHAPE 0.1
#define MAXN 30

typedef struct {
    uint32_t *mask;
    double *val;
    int n, cap; /* open addressing, cap a power of two */
} cache_t;

static int cache_find(const cache_t *c, uint32_t m) {
    uint32_t h = (m * 2654435761u) & (uint32_t)(c->cap - 1);
    while (c->mask[h] != UINT32_MAX && c->mask[h] != m) h = (h + 1) & (uint32_t)(c->cap - 1);
    return (int)h;
}

static double cache_get(const cache_t *c, uint32_t m) { return c->val[cache_find(c, m)]; }

/* Evaluates coalition m unless cached, within the budget. */
static void eval(cache_t *c, uint32_t m, bf_utility_fn u, void *ctx, int budget) {
    int h = cache_find(c, m);
    if (c->mask[h] == m || c->n >= budget) return;
    c->mask[h] = m;
    c->val[h] = u(ctx, m);
    c->n++;
}

static double binom(int n, int k) {
    double c = 1;
    for (int j = 0; j < k; j++) c = c * (n - j) / (j + 1);
    return c;
}

/* The k-th coalition of size s in colex order (unranking), to enumerate a layer. */
static uint32_t unrank(int n, int s, uint64_t k) {
    uint32_t m = 0;
    for (int i = n - 1; i >= 0 && s > 0; i--) {
        double c = binom(i, s); /* coalitions of size s among players below i */
        if (c <= (double)k) {
            m |= 1u << i;
            k -= (uint64_t)c;
            s--;
        }
    }
    return m;
}

/* Evaluated coalitions of size t. */
static int layer_count(const cache_t *c, int t) {
    int k = 0;
    for (int h = 0; h < c->cap; h++) k += c->mask[h] != UINT32_MAX && popcount(c->mask[h]) == t;
    return k;
}

/* Spends the budget left on layer t: all of it if that fits, else seeded balanced rounds (a
 * shuffled player order cut into consecutive groups, so every player appears about equally often;
 * a layer above n/2 takes the complements of the mirrored layer's groups). */
static void fill_layer(cache_t *c, int n, int t, bf_utility_fn u, void *ctx, int budget, bf_rng_t *r) {
    double size = binom(n, t);
    if (size - layer_count(c, t) <= budget - c->n) {
        for (uint64_t k = 0; k < (uint64_t)size; k++) eval(c, unrank(n, t, k), u, ctx, budget);
        return;
    }
    uint32_t all = (1u << n) - 1;
    int small = t <= n - t ? t : n - t, groups = (n + small - 1) / small;
    int32_t perm[MAXN];
    for (int round = 0; c->n < budget && round < 4 * budget; round++) {
        for (int i = 0; i < n; i++) perm[i] = i;
        bf_rng_shuffle(r, perm, (size_t)n);
        for (int g = 0; g < groups && c->n < budget; g++) {
            uint32_t m = 0;
            for (int j = 0; j < small; j++) m |= 1u << perm[(g * small + j) % n];
            eval(c, small == t ? m : all & ~m, u, ctx, budget);
        }
    }
}

/* A fully evaluated layer t's player effects: gamma_i = (n-1)/n * (mean U over the layer's
 * coalitions with i - mean without i). These are the coefficients of the layer's least-squares
 * additive fit, and phi_i = (U(N) - U(empty))/n + sum over t = 1..n-1 of gamma_i(t) / (n-1) exactly. */
static void layer_gamma(const cache_t *c, int n, int t, double *g) {
    double in[MAXN] = {0}, out[MAXN] = {0}, size = binom(n, t);
    for (uint64_t k = 0; k < (uint64_t)size; k++) {
        uint32_t m = unrank(n, t, k);
        double v = cache_get(c, m);
        for (int i = 0; i < n; i++) *((m >> i & 1) ? &in[i] : &out[i]) += v;
    }
    double nin = binom(n - 1, t - 1), nout = binom(n - 1, t);
    for (int i = 0; i < n; i++) g[i] = (in[i] / nin - (t < n ? out[i] / nout : 0)) * (n - 1) / n;
}

/* Cholesky factor (lower, in place) of the symmetric positive definite m x m matrix A; -1 if A is not. */
static int spd_factor(int m, double *A) {
    for (int j = 0; j < m; j++) {
        for (int k = 0; k < j; k++)
            for (int i = j; i < m; i++) A[i * m + j] -= A[i * m + k] * A[j * m + k];
        if (!(A[j * m + j] > 0)) return -1;
        double d = sqrt(A[j * m + j]);
        for (int i = j; i < m; i++) A[i * m + j] /= d;
    }
    return 0;
}

/* x = A^-1 y (x in y) from spd_factor's L: L z = y, then L^T x = z. */
static void spd_backsolve(int m, const double *L, double *y) {
    for (int i = 0; i < m; i++) {
        for (int k = 0; k < i; k++) y[i] -= L[i * m + k] * y[k];
        y[i] /= L[i * m + i];
    }
    for (int i = m - 1; i >= 0; i--) {
        for (int k = i + 1; k < m; k++) y[i] -= L[k * m + i] * y[k];
        y[i] /= L[i * m + i];
    }
}

static int spd_solve(int m, double *A, double *y) {
    if (spd_factor(m, A)) return -1;
    spd_backsolve(m, A, y);
    return 0;
}

/* How a player's effect moves from the leave-one-out layer (shape 0) toward the singletons'
 * (shape 1) as coalitions shrink. The preferred shape is 1/t: in a FedAvg coalition each member's
 * update is weighted 1/t, so to first order its effect on the model scales as 1/t (how closely it
 * and a straight line fit real rounds: docs/SHAPLEY.md). The alternatives cover games of other
 * kinds: linear in t (a quadratic game) and geometric (saturating games, whose marginals shrink by
 * a factor per added player). */
#define SHAPES 5
#define SHAPE_MARGIN 1.5 /* an alternative shape must fit this many times better than 1/t */

static double shape(int n, int t, int k) {
    static const double rho[SHAPES] = {0, 0, 0.6, 0.8, 0.9};
    if (k == 0) return (1.0 / t - 1.0 / (n - 1)) / (1.0 - 1.0 / (n - 1));
    if (k == 1) return (double)(n - 1 - t) / (n - 2);
    return (pow(rho[k], t) - pow(rho[k], n - 1)) / (rho[k] - pow(rho[k], n - 1));
}

#define PARAMS(n) (2 * (n) + 1) /* a, r_0..r_{n-1}, s_0..s_{n-1} */

/* Regressors x of coalition S (size t) in the middle-layer model under shape k: the prior's
 * direction, then one membership indicator per player scaled by the shape, then one per player
 * scaled by the linear path; returns the response U(S) - sum of gamma(n-1) over S. */
static double regressors(uint32_t S, double u, int n, int t, int k, const double *g1, const double *gl, double *x) {
    double f = shape(n, t, k), l = shape(n, t, 1);
    x[0] = 0;
    for (int j = 0; j < n; j++) {
        int in = S >> j & 1;
        x[1 + j] = in ? f : 0, x[1 + n + j] = in ? l : 0;
        if (in) x[0] += f * (g1[j] - gl[j]), u -= gl[j];
    }
    return u;
}

/* Layer t's centered data (the layer's intercept removed) under shape k: the means of the
 * regressors and of the response over its evaluated coalitions; returns how many there are. */
static int layer_means(const cache_t *c, int n, int t, int k, const double *g1, const double *gl, double *mx, double *my) {
    int cnt = 0;
    double x[PARAMS(MAXN)];
    memset(mx, 0, sizeof(double) * PARAMS(n)), *my = 0;
    for (int h = 0; h < c->cap; h++) {
        if (c->mask[h] == UINT32_MAX || popcount(c->mask[h]) != t) continue;
        *my += regressors(c->mask[h], c->val[h], n, t, k, g1, gl, x), cnt++;
        for (int i = 0; i < PARAMS(n); i++) mx[i] += x[i];
    }
    for (int i = 0; cnt && i < PARAMS(n); i++) mx[i] /= cnt;
    if (cnt) *my /= cnt;
    return cnt;
}

/* Weights of the middle layers: 1 / the response's variance within the layer (small coalitions
 * vary far more than large ones, so equal weights let their noise decide the shape), scaled to
 * a mean of 1 per coalition so the ridges keep their meaning. 0 for layers with < 2 coalitions. */
static void layer_weights(const cache_t *c, int n, const double *g1, const double *gl, double *w) {
    double mx[PARAMS(MAXN)], my, x[PARAMS(MAXN)], total = 0;
    int all = 0;
    for (int t = 2; t <= n - 2; t++) {
        int cnt = layer_means(c, n, t, 0, g1, gl, mx, &my);
        double var = 0;
        for (int h = 0; h < c->cap && cnt >= 2; h++)
            if (c->mask[h] != UINT32_MAX && popcount(c->mask[h]) == t) {
                double v = regressors(c->mask[h], c->val[h], n, t, 0, g1, gl, x) - my;
                var += v * v / cnt;
            }
        w[t] = cnt >= 2 ? 1 / (var > 1e-300 ? var : 1e-300) : 0;
        total += cnt >= 2 ? cnt * w[t] : 0, all += cnt >= 2 ? cnt : 0;
    }
    for (int t = 2; t <= n - 2 && total > 0; t++) w[t] *= all / total;
}

/* Adds (sse == NULL) layer t's weighted, centered coalitions to the normal equations A, y, or
 * adds their weighted squared residuals under the fitted theta to *sse. */
static void layer_pass(const cache_t *c, int n, int t, int k, const double *g1, const double *gl, double w, double *A,
                       double *y, const double *theta, double *sse) {
    int m = PARAMS(n);
    double x[PARAMS(MAXN)], mx[PARAMS(MAXN)], my;
    if (w <= 0 || layer_means(c, n, t, k, g1, gl, mx, &my) < 2) return;
    for (int h = 0; h < c->cap; h++) {
        if (c->mask[h] == UINT32_MAX || popcount(c->mask[h]) != t) continue;
        double v = regressors(c->mask[h], c->val[h], n, t, k, g1, gl, x) - my;
        for (int i = 0; i < m; i++) x[i] -= mx[i];
        if (sse) {
            for (int i = 0; i < m; i++) v -= x[i] * theta[i];
            *sse += w * v * v;
            continue;
        }
        for (int i = 0; i < m; i++) {
            y[i] += w * x[i] * v;
            for (int j = 0; j < m; j++) A[i * m + j] += w * x[i] * x[j];
        }
    }
}

/* The middle layers' model under shape k:
 *   gamma_i(t) = gamma_i(n-1) + shape(t) * (a*(gamma_i(1) - gamma_i(n-1)) + r_i) + linear(t) * s_i,
 * one shared a (ridged toward 1: the shape's path from the leave-one-out effect to the
 * singleton's), a correction r_i per player along the shape and s_i along a straight line (both
 * ridged toward 0; s_i lets a player whose worth grows with the coalition, as in non-IID rounds,
 * bend away from the shape), fitted by weighted least squares to every evaluated coalition of sizes
 * 2..n-2 with an intercept per layer. The ridges are pseudo-observations at size 2, so a few
 * coalitions mostly trust the prior and many fix each player. theta = (a, r, s); returns the
 * weighted residual sum of squares. */
static double middle_fit(const cache_t *c, int n, int k, const double *g1, const double *gl, const double *w,
                         double *theta) {
    int m = PARAMS(n);
    double A[PARAMS(MAXN) * PARAMS(MAXN)] = {0}, sse = 0;
    memset(theta, 0, sizeof(double) * m);
    for (int t = 2; t <= n - 2; t++) layer_pass(c, n, t, k, g1, gl, w[t], A, theta, NULL, NULL);
    double f2 = shape(n, 2, k) * shape(n, 2, k), spread = 0;
    for (int j = 0; j < n; j++) spread += (g1[j] - gl[j]) * (g1[j] - gl[j]);
    double ra = spread > 0 ? RIDGE_SHAPE * spread * f2 : 1; /* g1 == gl: a has nothing to scale */
    A[0] += ra, theta[0] += ra;
    double l2 = shape(n, 2, 1) * shape(n, 2, 1);
    for (int j = 0; j < n; j++)
        A[(1 + j) * m + 1 + j] += RIDGE_PLAYER * f2, A[(1 + n + j) * m + 1 + n + j] += RIDGE_LINEAR * l2;
    if (spd_solve(m, A, theta)) { /* cannot happen with positive ridges; the prior stands */
        memset(theta, 0, sizeof(double) * m);
        theta[0] = 1;
    }
    for (int t = 2; t <= n - 2; t++) layer_pass(c, n, t, k, g1, gl, w[t], NULL, NULL, theta, &sse);
    return sse;
}

/* gamma for every layer 1..n-1 (G[t*n + i]): exact for fully evaluated layers (1 and n-1 always
 * are), the middle-layer model, under the shape that fits best, for the others. */
static void layer_effects(const cache_t *c, int n, double *G) {
    for (int t = 1; t < n; t++)
        if (layer_count(c, t) == (int)binom(n, t)) layer_gamma(c, n, t, G + t * n);
    if (n < 4) return;
    const double *g1 = G + n, *gl = G + (n - 1) * n;
    double w[MAXN + 1] = {0}, theta[PARAMS(MAXN)], best[PARAMS(MAXN)], best_score = 0;
    int best_k = 0;
    layer_weights(c, n, g1, gl, w);
    for (int k = 0; k < (n > 4 ? SHAPES : 1); k++) { /* n = 4: one middle layer, no shape to tell */
        double score = middle_fit(c, n, k, g1, gl, w, theta) * (k ? SHAPE_MARGIN : 1);
        if (k == 0 || score < best_score) best_score = score, best_k = k, memcpy(best, theta, sizeof theta);
    }
    for (int t = 2; t <= n - 2; t++) {
        if (layer_count(c, t) == (int)binom(n, t)) continue;
        double *g = G + t * n, mean = 0, f = shape(n, t, best_k), l = shape(n, t, 1);
        for (int i = 0; i < n; i++)
            g[i] = gl[i] + f * (best[0] * (g1[i] - gl[i]) + best[1 + i]) + l * best[1 + n + i], mean += g[i] / n;
        for (int i = 0; i < n; i++) g[i] -= mean; /* a layer's effects sum to 0 (efficiency) */
    }
}

int bf_shapley_layers(int n, bf_utility_fn u, void *ctx, int budget, uint64_t seed, double *phi, int *evals,
                      bf_err_t *err) {
    if (n < 1 || n > MAXN) return bf_err_set(err, "budgeted Shapley needs 1..%d players, got %d", MAXN, n);
    if (budget < 2 * n + 2) return bf_err_set(err, "budget %d is below 2n+2 = %d", budget, 2 * n + 2);
    cache_t c = {0};
    c.cap = 1;
    while (c.cap < 2 * budget) c.cap <<= 1;
    c.mask = malloc(sizeof(uint32_t) * c.cap);
    c.val = malloc(sizeof(double) * c.cap);
    double *G = calloc((size_t)(n + 1) * n, sizeof(double));
    if (!c.mask || !c.val || !G) {
        free(c.mask), free(c.val), free(G);
        return bf_err_set(err, "out of memory");
    }
    memset(c.mask, 0xff, sizeof(uint32_t) * c.cap);
    uint32_t all = (1u << n) - 1;
    /* both ends: every layer-1 and layer-(n-1) effect is then exact */
    eval(&c, 0, u, ctx, budget), eval(&c, all, u, ctx, budget);
    for (int i = 0; i < n; i++) eval(&c, 1u << i, u, ctx, budget);
    for (int i = 0; i < n; i++) eval(&c, all & ~(1u << i), u, ctx, budget);
    /* then the middle layers, the most informative first: size 2 (the largest shape(t), so the
     * most signal per coalition about each player's correction), then 4 (pins the shape further
     * out), then 3, 5, 6, ..., n-2; whole while they fit, the last one in balanced rounds */
    bf_rng_t r;
    bf_rng_seed(&r, seed);
    for (int k = 0; k <= n && c.n < budget; k++) {
        int t = k == 0 ? 2 : k == 1 ? 4 : k == 2 ? 3 : k + 2;
        if (t <= n - 2) fill_layer(&c, n, t, u, ctx, budget, &r);
    }
    layer_effects(&c, n, G);
    /* the effects of every layer sum to 0, so the values sum to U(N) - U(empty) (efficiency) */
    double total = cache_get(&c, all) - cache_get(&c, 0);
    for (int i = 0; i < n; i++) {
        double s = 0;
        for (int t = 1; t < n; t++) s += G[t * n + i];
        phi[i] = total / n + (n > 1 ? s / (n - 1) : 0);
    }
    if (evals) *evals = c.n;
    free(c.mask), free(c.val), free(G);
    return 0;
}

/* ---- the prediction surrogate (contract: bf_shapley.h; method: docs/SHAPLEY.md) ------------- */

/* Ridge of the surrogate's fits, relative to the mean diagonal of X^T X; it and the bandwidth were
 * chosen on every coalition's logits of real rounds (docs/SHAPLEY.md). */
#define SURROGATE_RIDGE 1e-3
#define SURROGATE_BANDWIDTH 0.5 /* in coalition sizes: see surrogate_fit_size */
#define SURROGATE_EXACT_MAXN 12 /* the surrogate game's values exactly (2^n of its coalitions) up to here */
#define SURROGATE_SAMPLES 4096  /* beyond: the layer estimator on the surrogate game with this budget */
#define SURROGATE_MAX_BYTES (1024.0 * 1048576) /* the kept predictions and fits; more is refused */

/* Why recording stopped: the callback failed, or a prediction was out of range (a poisoned model). */
enum { RECORD_OK, RECORD_FAILED, RECORD_OUT_OF_RANGE };

typedef struct {
    int n, P; /* players; features: the n weights c_i, then the products c_i c_j (i <= j) */
    size_t IK;
    const bf_preds_t *p;
    bf_logits_fn f;
    void *ctx;
    int m, cap, failed; /* coalitions predicted so far; a RECORD_ state */
    uint32_t *mask;
    double *u; /* their utilities */
    float *z;  /* cap x IK: their logits */
    float *B;  /* n x P x IK: the fitted coefficients, one fit per coalition size */
    float *tmp;
} surr_t;

double bf_preds_utility(const bf_preds_t *p, const float *logits) {
    int K = p->classes;
    double ok = 0, loss = 0, wsum = 0;
    for (int i = 0; i < p->images; i++) {
        const float *r = logits + (size_t)i * K;
        double w = p->image_weight ? p->image_weight[i] : 1.0;
        int best = 0;
        for (int k = 1; k < K; k++) best = r[k] > r[best] ? k : best; /* the first of equals, as bf_evaluate */
        ok += w * (best == p->labels[i]), wsum += w;
        if (p->loss) {
            double e = 0;
            for (int k = 0; k < K; k++) e += exp((double)r[k] - r[best]);
            double l = r[best] + log(e) - r[p->labels[i]];
            loss += w * (l < BF_LOSS_CAP ? l : BF_LOSS_CAP); /* NaN too */
        }
    }
    return p->loss ? -loss / wsum : ok / wsum;
}

static double player_weight(const surr_t *s, int i) { return s->p->weight ? s->p->weight[i] : 1.0; }

/* Coalition S's nonzero features: each member's FedAvg weight in S, then their pairwise products. */
static int features(const surr_t *s, uint32_t S, int *idx, double *x) {
    int mem[MAXN], k = 0, q = 0, n = s->n;
    double W = 0;
    for (int i = 0; i < n; i++)
        if (S >> i & 1) mem[k++] = i, W += player_weight(s, i);
    for (int a = 0; a < k; a++) idx[q] = mem[a], x[q++] = player_weight(s, mem[a]) / W;
    for (int a = 0; a < k; a++)
        for (int b = a; b < k; b++) {
            int i = mem[a], j = mem[b];
            idx[q] = n + i * n - i * (i - 1) / 2 + (j - i), x[q++] = x[a] * x[b];
        }
    return q;
}

/* The predictions of every evaluated coalition, recorded while the layer estimator picks them. */
static double record_utility(void *ctx, uint32_t S) {
    surr_t *s = ctx;
    if (s->failed) return 0;
    if (s->m >= s->cap) return s->failed = RECORD_FAILED, 0;
    float *z = s->z + (size_t)s->m * s->IK;
    if (s->f(s->ctx, S, z)) return s->failed = RECORD_FAILED, 0;
    for (size_t e = 0; e < s->IK; e++)
        if (!(fabsf(z[e]) <= BF_SURROGATE_MAX_LOGIT)) return s->failed = RECORD_OUT_OF_RANGE, 0; /* NaN too */
    s->mask[s->m] = S;
    return s->u[s->m++] = bf_preds_utility(s->p, z);
}

/* Weighted least squares (ridged) of every image's logits on the features over the evaluated
 * nonempty coalitions, all images at once: B_t = (X^T W_t X + lambda I)^-1 X^T W_t Z, one fit per
 * coalition size t. Each evaluated size weighs the same in total, as it does in the Shapley value
 * (the one grand coalition as much as all the evaluated pairs), times exp(-|t' - t| / bandwidth):
 * a quadratic in the weights cannot follow the logits from the pairs to the grand coalition of a
 * model that is still far from converged (first rounds), so each size leans on the sizes next to
 * it (one fit for all sizes, bandwidth -> infinity, measured worse on real rounds: docs/SHAPLEY.md;
 * larger bandwidths suit smooth synthetic games better, as in test_shapley_surrogate). */
static int surrogate_fit_size(surr_t *s, int t, const int *count, int sizes, int rows, double *A, double *H) {
    int P = s->P, idx[MAXN * (MAXN + 3) / 2];
    double x[MAXN * (MAXN + 3) / 2];
    memset(A, 0, sizeof(double) * P * P), memset(H, 0, sizeof(double) * s->m * P);
    for (int r = 0; r < s->m; r++) {
        if (!s->mask[r]) continue; /* the starting model: no weights, predicted exactly anyway */
        int q = features(s, s->mask[r], idx, x), tr = popcount(s->mask[r]);
        double w = (double)rows / sizes / count[tr] * exp(-abs(tr - t) / SURROGATE_BANDWIDTH);
        for (int a = 0; a < q; a++) {
            H[(size_t)r * P + idx[a]] = w * x[a];
            for (int b = 0; b < q; b++) A[idx[a] * P + idx[b]] += w * x[a] * x[b];
        }
    }
    double tr = 0;
    for (int a = 0; a < P; a++) tr += A[a * P + a];
    for (int a = 0; a < P; a++) A[a * P + a] += SURROGATE_RIDGE * (tr > 0 ? tr / P : 1);
    if (spd_factor(P, A)) return -1;
    float *B = s->B + (size_t)(t - 1) * P * s->IK;
    memset(B, 0, sizeof(float) * P * s->IK);
    for (int r = 0; r < s->m; r++) {
        if (!s->mask[r]) continue;
        double *h = H + (size_t)r * P; /* row r of (X^T W X + lambda I)^-1 X^T W, transposed */
        spd_backsolve(P, A, h);
        const float *z = s->z + (size_t)r * s->IK;
        for (int a = 0; a < P; a++) {
            float c = (float)h[a], *b = B + (size_t)a * s->IK;
            for (size_t e = 0; e < s->IK; e++) b[e] += c * z[e];
        }
    }
    return 0;
}

static int surrogate_fit(surr_t *s) {
    int P = s->P, count[MAXN + 1] = {0}, sizes = 0, rows = 0, rc = 0;
    double *A = malloc(sizeof(double) * P * P), *H = malloc(sizeof(double) * s->m * P);
    if (!A || !H) return free(A), free(H), -1;
    for (int r = 0; r < s->m; r++)
        if (s->mask[r]) sizes += !count[popcount(s->mask[r])]++, rows++;
    for (int t = 1; !rc && t <= s->n; t++) rc = surrogate_fit_size(s, t, count, sizes, rows, A, H);
    free(A), free(H);
    return rc;
}

/* The surrogate game: U of the predicted logits (the starting model's own for the empty set). */
static double surrogate_utility(void *ctx, uint32_t S) {
    surr_t *s = ctx;
    for (int r = 0; !S && r < s->m; r++)
        if (!s->mask[r]) return s->u[r];
    int idx[MAXN * (MAXN + 3) / 2];
    double x[MAXN * (MAXN + 3) / 2];
    int q = features(s, S, idx, x);
    const float *B = s->B + (size_t)(popcount(S) - 1) * s->P * s->IK; /* the fit for S's size */
    memset(s->tmp, 0, sizeof(float) * s->IK);
    for (int a = 0; a < q; a++) {
        const float *b = B + (size_t)idx[a] * s->IK;
        float c = (float)x[a];
        for (size_t e = 0; e < s->IK; e++) s->tmp[e] += c * b[e];
    }
    return bf_preds_utility(s->p, s->tmp);
}

/* What the surrogate misses, on the evaluated coalitions only (the same ones, same seed). */
static double residual_utility(void *ctx, uint32_t S) {
    surr_t *s = ctx;
    for (int r = 0; r < s->m; r++)
        if (s->mask[r] == S) return s->u[r] - surrogate_utility(s, S);
    return 0; /* not reached: the estimator asks for exactly the recorded coalitions */
}

static void surr_free(surr_t *s) { free(s->mask), free(s->u), free(s->z), free(s->B), free(s->tmp); }

int bf_shapley_surrogate(int n, bf_logits_fn f, void *ctx, const bf_preds_t *p, int budget, uint64_t seed,
                         double *phi, int *evals, bf_err_t *err) {
    if (n < 1 || n > BF_SURROGATE_MAXN) return bf_err_set(err, "the surrogate estimator needs 1..%d players, got %d", BF_SURROGATE_MAXN, n);
    if (budget < 2 * n + 2) return bf_err_set(err, "budget %d is below 2n+2 = %d", budget, 2 * n + 2);
    if (p->images < 1 || p->classes < 2 || p->classes > 100000 || p->images > 100000000 / p->classes)
        return bf_err_set(err, "predictions of %d images x %d classes are out of range", p->images, p->classes);
    for (int i = 0; i < p->images; i++)
        if (p->labels[i] < 0 || p->labels[i] >= p->classes)
            return bf_err_set(err, "label %d of image %d is not a class of %d", p->labels[i], i, p->classes);
    for (int i = 0; p->weight && i < n; i++)
        if (!(p->weight[i] > 0)) return bf_err_set(err, "player %d has weight %g (must be > 0)", i, p->weight[i]);
    surr_t s = {.n = n, .P = n + n * (n + 1) / 2, .IK = (size_t)p->images * p->classes, .p = p, .f = f, .ctx = ctx};
    uint32_t full = 1u << n;
    s.cap = (uint32_t)budget < full ? budget : (int)full;
    if (((double)s.cap + (double)n * s.P) * s.IK * sizeof(float) > SURROGATE_MAX_BYTES)
        return bf_err_set(err, "%d coalitions' predictions and %d fits of %zu logits exceed %.0f MiB", s.cap, n,
                          s.IK, SURROGATE_MAX_BYTES / 1048576.0);
    s.mask = malloc(sizeof(uint32_t) * s.cap), s.u = malloc(sizeof(double) * s.cap);
    s.z = malloc(sizeof(float) * s.cap * s.IK), s.B = malloc(sizeof(float) * n * s.P * s.IK), s.tmp = malloc(sizeof(float) * s.IK);
    double *ps = calloc(2 * (size_t)n, sizeof(double)), *pr = ps ? ps + n : NULL;
    if (!s.mask || !s.u || !s.z || !s.B || !s.tmp || !ps)
        return surr_free(&s), free(ps), bf_err_set(err, "out of memory for %d coalitions' predictions", s.cap);
    int rc = bf_shapley_layers(n, record_utility, &s, budget, seed, phi, evals, err);
    if (!rc && s.failed == RECORD_OUT_OF_RANGE) rc = bf_err_set(err, "a coalition's logits are not finite or beyond %g", BF_SURROGATE_MAX_LOGIT);
    if (!rc && s.failed == RECORD_FAILED) rc = bf_err_set(err, "a coalition's predictions failed");
    /* every coalition evaluated: the layer estimator's values are exact already */
    if (!rc && s.m < (int)full) {
        rc = surrogate_fit(&s) ? bf_err_set(err, "the surrogate fit failed") : 0;
        if (!rc)
            rc = n <= SURROGATE_EXACT_MAXN ? bf_shapley_exact(n, surrogate_utility, &s, ps, err)
                                           : bf_shapley_layers(n, surrogate_utility, &s, SURROGATE_SAMPLES, seed, ps, NULL, err);
        if (!rc) rc = bf_shapley_layers(n, residual_utility, &s, budget, seed, pr, NULL, err);
        for (int i = 0; !rc && i < n; i++) phi[i] = ps[i] + pr[i];
    }
    surr_free(&s), free(ps);
    return rc;
}

/* ---- a vector of a coalition's model, fitted over evaluated coalitions ---------------------- */

#define FIT_MAXROWS 64

struct bf_coalition_fit {
    int n, P, rows, solved;
    size_t dim;
    double weight[MAXN];
    double x[FIT_MAXROWS][MAXN * (MAXN + 3) / 2]; /* each added coalition's features */
    float *v;                                      /* [FIT_MAXROWS][dim]: its vector */
    double *B;                                     /* [P][dim]: the fitted coefficients */
};

/* The surrogate's features in full (zeros for non-members): weights, then products i <= j. */
static void fit_features(const bf_coalition_fit_t *f, uint32_t S, double *x) {
    double W = 0;
    int q = f->n;
    for (int i = 0; i < f->n; i++) W += (S >> i & 1) ? f->weight[i] : 0;
    for (int i = 0; i < f->n; i++) x[i] = (S >> i & 1) ? f->weight[i] / W : 0;
    for (int i = 0; i < f->n; i++)
        for (int j = i; j < f->n; j++) x[q++] = x[i] * x[j];
}

bf_coalition_fit_t *bf_coalition_fit_new(int n, const double *weight, size_t dim) {
    if (n < 1 || n > BF_SURROGATE_MAXN || dim < 1 || dim > 100000000) return NULL;
    for (int i = 0; weight && i < n; i++)
        if (!(weight[i] > 0)) return NULL;
    bf_coalition_fit_t *f = calloc(1, sizeof *f);
    if (!f) return NULL;
    f->n = n, f->P = n + n * (n + 1) / 2, f->dim = dim;
    for (int i = 0; i < n; i++) f->weight[i] = weight ? weight[i] : 1.0;
    f->v = malloc(sizeof(float) * FIT_MAXROWS * dim), f->B = calloc((size_t)f->P * dim, sizeof(double));
    if (!f->v || !f->B) bf_coalition_fit_destroy(&f);
    return f;
}

void bf_coalition_fit_destroy(bf_coalition_fit_t **f) {
    if (*f) free((*f)->v), free((*f)->B), free(*f);
    *f = NULL;
}

int bf_coalition_fit_add(bf_coalition_fit_t *f, uint32_t S, const float *v) {
    if (f->solved || f->rows == FIT_MAXROWS || !S || S >> f->n) return -1;
    for (size_t e = 0; e < f->dim; e++)
        if (!isfinite(v[e])) return -1;
    fit_features(f, S, f->x[f->rows]);
    memcpy(f->v + (size_t)f->rows++ * f->dim, v, sizeof(float) * f->dim);
    return 0;
}

/* B = (X^T X + lambda I)^-1 X^T V, lambda the surrogate's (1e-3 of the mean diagonal). */
int bf_coalition_fit_solve(bf_coalition_fit_t *f) {
    int P = f->P;
    if (f->solved) return 0;
    if (!f->rows) return -1;
    double *A = calloc((size_t)P * P, sizeof(double)), *h = malloc(sizeof(double) * P), tr = 0;
    if (!A || !h) return free(A), free(h), -1;
    for (int r = 0; r < f->rows; r++)
        for (int a = 0; a < P; a++)
            for (int b = 0; b < P; b++) A[a * P + b] += f->x[r][a] * f->x[r][b];
    for (int a = 0; a < P; a++) tr += A[a * P + a];
    for (int a = 0; a < P; a++) A[a * P + a] += SURROGATE_RIDGE * (tr > 0 ? tr / P : 1);
    int rc = spd_factor(P, A);
    for (int r = 0; !rc && r < f->rows; r++) { /* row r's hat weights, then its vector's share */
        memcpy(h, f->x[r], sizeof(double) * P);
        spd_backsolve(P, A, h);
        const float *v = f->v + (size_t)r * f->dim;
        for (int a = 0; a < P; a++) {
            double *b = f->B + (size_t)a * f->dim;
            for (size_t e = 0; e < f->dim; e++) b[e] += h[a] * v[e];
        }
    }
    free(A), free(h);
    f->solved = !rc;
    return rc ? -1 : 0;
}

void bf_coalition_fit_predict(const bf_coalition_fit_t *f, uint32_t S, float *out) {
    double x[MAXN * (MAXN + 3) / 2];
    fit_features(f, S, x);
    for (size_t e = 0; e < f->dim; e++) {
        double s = 0;
        for (int a = 0; a < f->P; a++) s += x[a] * f->B[(size_t)a * f->dim + e];
        out[e] = (float)s;
    }
}

/* shapley.c: exact and layer-budgeted Shapley values (see bf_shapley.h). */
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

/* ---- the budgeted estimator (see bf_shapley.h for the method and its measured error) -------- */

/* Ridge weights of the layer fits, tuned on saved utility tables of real rounds
 * (blockfed-bench shapley --table) and on the test games: RIDGE_PLAYER pseudo-observations pull
 * each player's own term toward 0; RIDGE_SHAPE (relative to the knots' spread) pulls the two
 * shared coefficients toward the interpolation prior. */
#define RIDGE_PLAYER 5.0
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

static double rms(const double *g, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += g[i] * g[i];
    return sqrt(s / n);
}

/* Interpolation between known layers lo < t < hi: gamma(t) ~ a*gamma(lo) + b*gamma(hi). The
 * direction is interpolated linearly; the spread (rms) too, except that a shrinking spread is
 * interpolated geometrically: diminishing-returns games (accuracy as data is added) shrink their
 * marginal contributions about geometrically with coalition size. */
static void interp_coef(int t, int lo, int hi, double s_lo, double s_hi, double *a, double *b) {
    double lam = (double)(t - lo) / (hi - lo);
    if (s_lo > 1e-12 && s_hi > 1e-12 && s_hi < s_lo) {
        double s = pow(s_lo, 1 - lam) * pow(s_hi, lam);
        *a = s * (1 - lam) / s_lo, *b = s * lam / s_hi;
    } else {
        *a = 1 - lam, *b = lam;
    }
}

/* Cholesky solve of the symmetric positive definite m x m system A x = y (x in y); -1 if A is not. */
static int spd_solve(int m, double *A, double *y) {
    for (int j = 0; j < m; j++) {
        for (int k = 0; k < j; k++)
            for (int i = j; i < m; i++) A[i * m + j] -= A[i * m + k] * A[j * m + k];
        if (!(A[j * m + j] > 0)) return -1;
        double d = sqrt(A[j * m + j]);
        for (int i = j; i < m; i++) A[i * m + j] /= d;
    }
    for (int i = 0; i < m; i++) { /* L z = y, then L^T x = z */
        for (int k = 0; k < i; k++) y[i] -= A[i * m + k] * y[k];
        y[i] /= A[i * m + i];
    }
    for (int i = m - 1; i >= 0; i--) {
        for (int k = i + 1; k < m; k++) y[i] -= A[k * m + i] * y[k];
        y[i] /= A[i * m + i];
    }
    return 0;
}

/* Regressors of coalition S in a partial layer: sum of gamma(lo) and of gamma(hi) over S, then
 * one membership indicator per player. */
static void regressors(uint32_t S, int n, const double *glo, const double *ghi, double *x) {
    x[0] = x[1] = 0;
    for (int j = 0; j < n; j++) {
        x[2 + j] = S >> j & 1;
        if (S >> j & 1) x[0] += glo[j], x[1] += ghi[j];
    }
}

/* A partly evaluated layer t between known layers: fits, over its evaluated coalitions,
 * U(S) = h + sum over j in S of (a*gamma_j(lo) + b*gamma_j(hi) + r_j), with a layer intercept h
 * (removed by centering), two shared coefficients a, b ridged toward the interpolation prior
 * (a0, b0), and per-player terms r ridged toward 0: a few coalitions fix the shape, many fix each
 * player. Writes gamma(t) into g; returns -1 if the layer has fewer than 2 coalitions. */
static int layer_fit(const cache_t *c, int n, int t, const double *glo, const double *ghi, double a0, double b0,
                     double *g) {
    int m = n + 2, cnt = 0;
    double A[(MAXN + 2) * (MAXN + 2)] = {0}, y[MAXN + 2] = {0}, x[MAXN + 2], mx[MAXN + 2] = {0}, my = 0;
    for (int h = 0; h < c->cap; h++) {
        if (c->mask[h] == UINT32_MAX || popcount(c->mask[h]) != t) continue;
        regressors(c->mask[h], n, glo, ghi, x);
        for (int i = 0; i < m; i++) mx[i] += x[i];
        my += c->val[h], cnt++;
    }
    if (cnt < 2) return -1;
    for (int i = 0; i < m; i++) mx[i] /= cnt;
    my /= cnt;
    for (int h = 0; h < c->cap; h++) {
        if (c->mask[h] == UINT32_MAX || popcount(c->mask[h]) != t) continue;
        regressors(c->mask[h], n, glo, ghi, x);
        double yc = c->val[h] - my;
        for (int i = 0; i < m; i++) x[i] -= mx[i];
        for (int i = 0; i < m; i++) {
            y[i] += x[i] * yc;
            for (int k = 0; k < m; k++) A[i * m + k] += x[i] * x[k];
        }
    }
    double spread = (rms(glo, n) * rms(glo, n) + rms(ghi, n) * rms(ghi, n)) / 2 * n;
    double shape = spread > 0 ? RIDGE_SHAPE * spread : 1; /* all-zero knots: the prior stands */
    A[0] += shape, y[0] += shape * a0;
    A[m + 1] += shape, y[1] += shape * b0;
    for (int j = 0; j < n; j++) A[(2 + j) * m + 2 + j] += RIDGE_PLAYER;
    if (spd_solve(m, A, y)) return -1;
    double rmean = 0;
    for (int j = 0; j < n; j++) rmean += y[2 + j] / n;
    for (int j = 0; j < n; j++) g[j] = y[0] * glo[j] + y[1] * ghi[j] + y[2 + j] - rmean;
    return 0;
}

/* Nearest layers below and above t whose gamma is known (1 and n-1 always are). */
static void neighbours(const int *known, int t, int *lo, int *hi) {
    for (*lo = t; !known[*lo]; --*lo) {}
    for (*hi = t; !known[*hi]; ++*hi) {}
}

/* gamma for every layer 1..n-1 (G[t*n + i]): exact for full layers, fitted for partial ones,
 * interpolated for the rest. */
static void layer_effects(const cache_t *c, int n, double *G) {
    int known[MAXN + 1] = {0}, partial[MAXN + 1] = {0};
    double sig[MAXN + 1] = {0};
    for (int t = 1; t < n; t++) {
        int k = layer_count(c, t);
        known[t] = k == (int)binom(n, t);
        partial[t] = !known[t] && k >= 2;
        if (known[t]) layer_gamma(c, n, t, G + t * n), sig[t] = rms(G + t * n, n);
    }
    for (int t = 2; t < n - 1; t++) { /* fit partial layers against their full neighbours */
        if (!partial[t]) continue;
        int lo, hi;
        double a, b;
        neighbours(known, t, &lo, &hi);
        interp_coef(t, lo, hi, sig[lo], sig[hi], &a, &b);
        partial[t] = !layer_fit(c, n, t, G + lo * n, G + hi * n, a, b, G + t * n);
    }
    for (int t = 2; t < n - 1; t++)
        if (partial[t]) known[t] = 1, sig[t] = rms(G + t * n, n);
    for (int t = 2; t < n - 1; t++) {
        if (known[t]) continue;
        int lo, hi;
        double a, b;
        neighbours(known, t, &lo, &hi);
        interp_coef(t, lo, hi, sig[lo], sig[hi], &a, &b);
        for (int i = 0; i < n; i++) G[t * n + i] = a * G[lo * n + i] + b * G[hi * n + i];
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
    /* then layers 2, n-2, 3, n-3, ...: whole while they fit, the last one in balanced rounds */
    bf_rng_t r;
    bf_rng_seed(&r, seed);
    for (int k = 2; k <= n / 2 && c.n < budget; k++) {
        fill_layer(&c, n, k, u, ctx, budget, &r);
        if (n - k != k && c.n < budget) fill_layer(&c, n, n - k, u, ctx, budget, &r);
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

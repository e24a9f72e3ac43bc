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

/* ---- the budgeted estimator ---------------------------------------------------------------- */

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

static int cache_has(const cache_t *c, uint32_t m) { return c->mask[cache_find(c, m)] == m; }

static double cache_get(const cache_t *c, uint32_t m) { return c->val[cache_find(c, m)]; }

static void cache_put(cache_t *c, uint32_t m, double v) {
    int h = cache_find(c, m);
    if (c->mask[h] != m) c->mask[h] = m, c->n++;
    c->val[h] = v;
}

/* Evaluates coalition m unless cached, within the budget; 1 if its value is known afterwards. */
static int eval(cache_t *c, uint32_t m, bf_utility_fn u, void *ctx, int budget) {
    if (cache_has(c, m)) return 1;
    if (c->n >= budget) return 0;
    cache_put(c, m, u(ctx, m));
    return 1;
}

/* The k-th coalition of size s in colex order (unranking), for sampling a layer. */
static uint32_t unrank(int n, int s, uint64_t k) {
    uint32_t m = 0;
    for (int i = n - 1; i >= 0 && s > 0; i--) {
        /* C(i, s): coalitions of size s among players below i */
        double c = 1;
        for (int j = 0; j < s; j++) c = c * (i - j) / (j + 1);
        if (c <= (double)k) {
            m |= 1u << i;
            k -= (uint64_t)c;
            s--;
        }
    }
    return m;
}

static double binom(int n, int k) {
    double c = 1;
    for (int j = 0; j < k; j++) c = c * (n - j) / (j + 1);
    return c;
}

/* Evaluates layer s completely if the budget allows, else a seeded random sample of it. */
static void fill_layer(cache_t *c, int n, int s, bf_utility_fn u, void *ctx, int budget, bf_rng_t *r) {
    double size = binom(n, s);
    if (size <= budget - c->n) {
        for (uint64_t k = 0; k < (uint64_t)size; k++) eval(c, unrank(n, s, k), u, ctx, budget);
        return;
    }
    for (int tries = 0; c->n < budget && tries < 4 * budget; tries++)
        eval(c, unrank(n, s, (uint64_t)(bf_rng_uniform(r) * size) % (uint64_t)size), u, ctx, budget);
}

/* Mean marginal contribution of i at coalition size s, over the evaluated pairs (S, S+i); NAN if
 * there is none. */
static double mean_marginal(const cache_t *c, int n, int i, int s) {
    double sum = 0;
    int k = 0;
    for (int h = 0; h < c->cap; h++) {
        uint32_t m = c->mask[h];
        if (m == UINT32_MAX || (m & (1u << i)) || popcount(m) != s || !cache_has(c, m | (1u << i))) continue;
        sum += cache_get(c, m | (1u << i)) - c->val[h];
        k++;
    }
    (void)n;
    return k ? sum / k : NAN;
}

int bf_shapley_layers(int n, bf_utility_fn u, void *ctx, int budget, uint64_t seed, double *phi, int *evals,
                      bf_err_t *err) {
    if (n < 1 || n > 30) return bf_err_set(err, "budgeted Shapley needs 1..30 players, got %d", n);
    if (budget < 2 * n + 2) return bf_err_set(err, "budget %d is below 2n+2 = %d", budget, 2 * n + 2);
    cache_t c = {0};
    c.cap = 1;
    while (c.cap < 2 * budget) c.cap <<= 1;
    c.mask = malloc(sizeof(uint32_t) * c.cap);
    c.val = malloc(sizeof(double) * c.cap);
    double *m = malloc(sizeof(double) * n);
    if (!c.mask || !c.val || !m) {
        free(c.mask), free(c.val), free(m);
        return bf_err_set(err, "out of memory");
    }
    memset(c.mask, 0xff, sizeof(uint32_t) * c.cap);
    bf_rng_t r;
    bf_rng_seed(&r, seed);
    /* layers from both ends: 0, n, 1, n-1, 2, n-2, ... */
    for (int k = 0; k <= n / 2 + 1 && c.n < budget; k++) {
        fill_layer(&c, n, k, u, ctx, budget, &r);
        if (n - k != k) fill_layer(&c, n, n - k, u, ctx, budget, &r);
    }
    uint32_t all = n == 32 ? UINT32_MAX : (1u << n) - 1;
    double total = cache_get(&c, all) - cache_get(&c, 0), sum = 0;
    for (int i = 0; i < n; i++) {
        /* marginals per size, interpolated across sizes with no evaluated pair */
        for (int s = 0; s < n; s++) m[s] = mean_marginal(&c, n, i, s);
        int prev = -1;
        for (int s = 0; s < n; s++) {
            if (isnan(m[s])) continue;
            for (int t = prev + 1; t < s; t++) m[t] = prev < 0 ? m[s] : m[prev] + (m[s] - m[prev]) * (t - prev) / (s - prev);
            prev = s;
        }
        for (int t = prev + 1; t < n; t++) m[t] = prev >= 0 ? m[prev] : 0;
        double v = 0;
        for (int s = 0; s < n; s++) v += m[s];
        phi[i] = v / n;
        sum += phi[i];
    }
    /* efficiency: the values share exactly what the grand coalition adds */
    if (fabs(sum) > 1e-12)
        for (int i = 0; i < n; i++) phi[i] *= total / sum;
    if (evals) *evals = c.n;
    free(c.mask), free(c.val), free(m);
    return 0;
}

/* shapley_sampled.c: bf_shapley_surrogate_sampled, the prediction surrogate with most coalitions
 * scored on a sample of the valuation images. The 2n + 2 coalitions every budget starts with (the
 * empty and full ones, the singletons, the leave-one-outs) are predicted on every image; the
 * others on a seeded equal-probability sample. The anchors' own surrogate, over every image, is the
 * control variate of a difference estimator: what it misses is measured on the sample only, where
 * every coalition was predicted, so the per-image noise of a small sample is left to that
 * (small) miss. Pure computation; the method and its measured error and cost: docs/SHAPLEY.md. */
#include <stdlib.h>
#include <string.h>

#include "bf_shapley.h"

typedef struct {
    bf_logits_subset_fn f;
    void *ctx;
    int n, M, K, anchors, m;
    uint32_t mask[2 * BF_SURROGATE_MAXN + 2];
    float *za;        /* [anchors][M * K]: the anchors' logits on every image */
    const int32_t *idx; /* [m]: the sample, ascending */
} sampled_t;

static const float *anchor_logits(const sampled_t *s, uint32_t S) {
    for (int a = 0; a < s->anchors; a++)
        if (s->mask[a] == S) return s->za + (size_t)a * s->M * s->K;
    return NULL;
}

/* Before the sample is drawn: every coalition asked for (the anchors) on every image, kept. */
static int record_anchor(void *ctx, uint32_t S, float *out) {
    sampled_t *s = ctx;
    if (s->anchors == 2 * s->n + 2) return -1; /* not reached: budget 2n + 2 asks for 2n + 2 */
    if (s->f(s->ctx, S, NULL, s->M, out)) return -1;
    s->mask[s->anchors] = S;
    memcpy(s->za + (size_t)s->anchors++ * s->M * s->K, out, sizeof(float) * s->M * s->K);
    return 0;
}

/* The sample's game: an anchor's kept logits restricted to the sample, any other coalition
 * predicted on the sample alone. */
static int sample_logits(void *ctx, uint32_t S, float *out) {
    sampled_t *s = ctx;
    const float *z = anchor_logits(s, S);
    if (!z) return s->f(s->ctx, S, s->idx, s->m, out);
    for (int i = 0; i < s->m; i++) memcpy(out + (size_t)i * s->K, z + (size_t)s->idx[i] * s->K, sizeof(float) * s->K);
    return 0;
}

/* Every image in one call (the budget covers every coalition, or the sample would be them all). */
static int all_logits(void *ctx, uint32_t S, float *out) {
    sampled_t *s = ctx;
    return s->f(s->ctx, S, NULL, s->M, out);
}

static int by_index(const void *a, const void *b) { return *(const int32_t *)a - *(const int32_t *)b; }

int bf_shapley_surrogate_sampled(int n, bf_logits_subset_fn f, void *ctx, const bf_preds_t *p, int budget, int sample,
                                 uint64_t seed, double *phi, int *evals, bf_err_t *err) {
    if (n < 1 || n > BF_SURROGATE_MAXN)
        return bf_err_set(err, "the surrogate estimator needs 1..%d players, got %d", BF_SURROGATE_MAXN, n);
    if (p->images < 1 || p->classes < 2 || p->classes > 100000 || p->images > 100000000 / p->classes)
        return bf_err_set(err, "predictions of %d images x %d classes are out of range", p->images, p->classes);
    if (sample < 1) return bf_err_set(err, "an image sample of %d", sample);
    sampled_t s = {.f = f, .ctx = ctx, .n = n, .M = p->images, .K = p->classes};
    if (sample >= p->images || (uint32_t)budget >= 1u << n || budget < 2 * n + 2) /* nothing to sample (or refused) */
        return bf_shapley_surrogate(n, all_logits, &s, p, budget, seed, phi, evals, err);
    int M = p->images, K = p->classes, A = 2 * n + 2, m = sample;
    int32_t *perm = malloc(sizeof(int32_t) * M);
    double *w = p->image_weight ? malloc(sizeof(double) * m) : NULL, anchor_all[BF_SURROGATE_MAXN],
           anchor_smp[BF_SURROGATE_MAXN], full_smp[BF_SURROGATE_MAXN];
    int32_t *labels = malloc(sizeof(int32_t) * m);
    s.za = malloc(sizeof(float) * (size_t)A * M * K);
    if (!perm || !labels || !s.za || (p->image_weight && !w))
        return free(perm), free(labels), free(s.za), free(w), bf_err_set(err, "out of memory");
    /* 1. the anchors on every image, and their surrogate's values there */
    int rc = bf_shapley_surrogate(n, record_anchor, &s, p, A, seed, anchor_all, NULL, err);
    if (!rc) { /* 2. the sample: m images with equal probability (seeded), ascending */
        bf_rng_t r;
        bf_rng_seed(&r, seed ^ 0x53616d706c65ull);
        for (int i = 0; i < M; i++) perm[i] = i;
        for (int i = 0; i < m; i++) {
            int j = i + (int)bf_rng_below(&r, (uint32_t)(M - i));
            int32_t t = perm[i];
            perm[i] = perm[j], perm[j] = t;
        }
        qsort(perm, (size_t)m, sizeof *perm, by_index);
        for (int i = 0; i < m; i++) {
            labels[i] = p->labels[perm[i]];
            if (w) w[i] = p->image_weight[perm[i]];
        }
        s.idx = perm, s.m = m;
        bf_preds_t ps = *p;
        ps.images = m, ps.labels = labels, ps.image_weight = w;
        /* 3. the anchors' surrogate on the sample, then the budget's on the sample: the same
         * coalitions first, so the anchors are not predicted again */
        rc = bf_shapley_surrogate(n, sample_logits, &s, &ps, A, seed, anchor_smp, NULL, err);
        if (!rc) rc = bf_shapley_surrogate(n, sample_logits, &s, &ps, budget, seed, full_smp, evals, err);
    }
    /* anchor_all sums to U(all) - U(empty) on every image, the other two to the same on the sample */
    for (int i = 0; !rc && i < n; i++) phi[i] = anchor_all[i] + full_smp[i] - anchor_smp[i];
    free(perm), free(labels), free(s.za), free(w);
    return rc;
}

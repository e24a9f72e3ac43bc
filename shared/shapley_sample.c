/* shapley_sample.c: bf_preds_sample, the valuation images a cheaper coalition game scores on.
 * Images are drawn with probability proportional to how much their scores can move between
 * coalitions, as read from two models every round has anyway (the starting one and the full
 * coalition's), so the images every coalition gets right (or wrong) alike are mostly left out and
 * the ones that decide U's differences are mostly kept. Pure computation. Measured effect:
 * docs/SHAPLEY.md. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bf_shapley.h"

/* softmax of one image's logits into q[K] (K <= 100000 is checked by the caller) */
static void softmax(const float *z, int K, double *q) {
    double m = z[0], s = 0;
    for (int k = 1; k < K; k++) m = z[k] > m ? z[k] : m;
    for (int k = 0; k < K; k++) s += q[k] = isfinite(z[k]) ? exp((double)z[k] - m) : 0;
    for (int k = 0; k < K; k++) q[k] = s > 0 && isfinite(s) ? q[k] / s : 1.0 / K;
}

/* How much image i's score can move between the two models: the total-variation distance of
 * their softmaxes plus how unsure each is of its label (1 - p(label)) and of its top class, and
 * under U = -loss how much its (capped) cross-entropy moves (a confidently wrong image's loss
 * moves with the logits' scale while its softmax stays put). */
static double activity(const float *z0, const float *z1, int K, int label, int loss, double *q0, double *q1) {
    softmax(z0, K, q0), softmax(z1, K, q1);
    double tv = 0, top0 = 0, top1 = 0;
    for (int k = 0; k < K; k++) {
        tv += fabs(q0[k] - q1[k]) / 2;
        top0 = q0[k] > top0 ? q0[k] : top0, top1 = q1[k] > top1 ? q1[k] : top1;
    }
    double unsure = (1 - q0[label]) * (1 - top0 + 1e-3) + (1 - q1[label]) * (1 - top1 + 1e-3);
    if (!loss) return tv + unsure;
    double l0 = q0[label] > 0 ? -log(q0[label]) : BF_LOSS_CAP, l1 = q1[label] > 0 ? -log(q1[label]) : BF_LOSS_CAP;
    l0 = l0 < BF_LOSS_CAP ? l0 : BF_LOSS_CAP, l1 = l1 < BF_LOSS_CAP ? l1 : BF_LOSS_CAP;
    return tv + unsure + fabs(l1 - l0);
}

typedef struct {
    double a;
    int32_t i;
} act_t;

static int by_activity(const void *x, const void *y) {
    const act_t *a = x, *b = y;
    return a->a < b->a ? -1 : a->a > b->a ? 1 : a->i - b->i;
}

int bf_preds_sample(const bf_preds_t *p, const float *z0, const float *z1, int m, uint64_t seed, int32_t *idx,
                    double *w, bf_err_t *err) {
    int M = p->images, K = p->classes;
    if (M < 1 || K < 2 || K > 100000 || m < 1) return bf_err_set(err, "image sample: bad shape");
    if (m >= M) {
        for (int i = 0; i < M; i++) idx[i] = i, w[i] = 1;
        return M;
    }
    act_t *a = malloc(sizeof(act_t) * M);
    double *q = malloc(sizeof(double) * 2 * K), *pi = malloc(sizeof(double) * M);
    if (!a || !q || !pi) return free(a), free(q), free(pi), bf_err_set(err, "out of memory");
    double sum = 0;
    for (int i = 0; i < M; i++) {
        a[i].i = i;
        a[i].a = activity(z0 + (size_t)i * K, z1 + (size_t)i * K, K, p->labels[i], p->loss, q, q + K);
        sum += a[i].a;
    }
    /* a floor, so an image both models agree on can still be drawn (its weight then large) */
    double base = 0.05 * sum / M + 1e-12;
    for (int i = 0; i < M; i++) a[i].a += base;
    /* sorted by activity: systematic sampling along it stratifies by activity */
    qsort(a, (size_t)M, sizeof *a, by_activity);
    /* inclusion probabilities m a_i / sum a, the ones above 1 capped (taken for certain) and the
     * rest rescaled, until none exceeds 1 */
    int certain = 0;
    for (int pass = 0; pass < 64; pass++) {
        double rest = 0;
        for (int i = 0; i < M - certain; i++) rest += a[i].a;
        int more = 0;
        for (int i = 0; i < M - certain; i++) {
            pi[i] = (m - certain) * a[i].a / rest;
            more += pi[i] >= 1;
        }
        if (!more) break;
        certain += more; /* sorted ascending: the largest are at the end */
        for (int i = M - certain; i < M; i++) pi[i] = 1;
    }
    for (int i = M - certain; i < M; i++) pi[i] = 1;
    bf_rng_t r;
    bf_rng_seed(&r, seed);
    double u = (double)bf_rng_uniform(&r), c = 0;
    int k = 0;
    for (int i = 0; i < M && k < m; i++) {
        double next = c + pi[i];
        if (pi[i] >= 1 || floor(next - u) > floor(c - u)) /* a point u + j falls in [c, next) */
            idx[k] = a[i].i, w[k++] = 1 / pi[i];
        c = next;
    }
    /* images in their original order, weights normalized to mean 1 */
    double ws = 0;
    for (int i = 0; i < k; i++) ws += w[i];
    for (int i = 1; i < k; i++)
        for (int j = i; j > 0 && idx[j - 1] > idx[j]; j--) {
            int32_t ti = idx[j];
            double tw = w[j];
            idx[j] = idx[j - 1], w[j] = w[j - 1], idx[j - 1] = ti, w[j - 1] = tw;
        }
    for (int i = 0; i < k; i++) w[i] *= k / ws;
    free(a), free(q), free(pi);
    return k;
}

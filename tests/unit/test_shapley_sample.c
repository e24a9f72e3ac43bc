/* test_shapley_sample.c: the cheaper game's pieces in bf_shapley.h.
 *  - bf_preds_utility with image weights: all-1 weights score as none; weights count an image that
 *    many times; a zero weight leaves an image out;
 *  - bf_preds_sample: all images (weight 1) when m covers them; otherwise about m distinct
 *    ascending images, weights with mean 1, deterministic from the seed; images the two models
 *    agree on with confidence are drawn far less often than disputed ones; over seeds the weighted
 *    U of a third model's logits is unbiased for its U on all images, and its difference to the
 *    first model's U (what a marginal contribution is) closer to the full difference than from an
 *    equal-probability sample of the same size; bad shapes refused. */
#include <math.h>
#include <string.h>

#include "bf_shapley.h"
#include "test.h"

#define M 2000
#define K 10

static float z0[M * K], z1[M * K], z2[M * K];
static int32_t y[M];

/* Images 0..1599 settled (both models confidently right, or confidently wrong alike); the last 400
 * disputed (the models disagree, each unsure). z2 (a coalition between them) is right on the
 * settled right ones and on a seeded half of the disputed ones. */
static void make_images(void) {
    bf_rng_t r;
    bf_rng_seed(&r, 5);
    for (int i = 0; i < M; i++) {
        y[i] = (int32_t)bf_rng_below(&r, K);
        int wrong = (y[i] + 1) % K, settled = i < 1600, right = i % 5 != 0;
        for (int k = 0; k < K; k++) z0[i * K + k] = z1[i * K + k] = z2[i * K + k] = bf_rng_uniform(&r) * 0.1f;
        if (settled) {
            int c = right ? y[i] : wrong;
            z0[i * K + c] += 8, z1[i * K + c] += 9, z2[i * K + c] += 8.5f;
        } else {
            z0[i * K + wrong] += 0.5f, z1[i * K + y[i]] += 0.6f;
            z2[i * K + (bf_rng_below(&r, 2) ? y[i] : wrong)] += 0.55f;
        }
    }
}

static void test_weighted_utility(void) {
    static double ones[M], twice[M];
    for (int i = 0; i < M; i++) ones[i] = 1, twice[i] = i < 1000 ? 2 : 0;
    for (int loss = 0; loss < 2; loss++) {
        bf_preds_t p = {M, K, y, NULL, loss, NULL}, w1 = p, w2 = p, half = {1000, K, y, NULL, loss, NULL};
        w1.image_weight = ones, w2.image_weight = twice;
        CHECK_NEAR(bf_preds_utility(&w1, z2), bf_preds_utility(&p, z2), 1e-12);
        CHECK_NEAR(bf_preds_utility(&w2, z2), bf_preds_utility(&half, z2), 1e-12); /* zero weight: left out */
    }
}

static void test_sample(void) {
    static int32_t idx[M], idx2[M];
    static double w[M], w2[M];
    bf_err_t err;
    bf_preds_t p = {M, K, y, NULL, 0, NULL};
    CHECK(bf_preds_sample(&p, z0, z1, M, 1, idx, w, &err) == M);
    CHECK(idx[0] == 0 && idx[M - 1] == M - 1 && w[7] == 1);
    int k = bf_preds_sample(&p, z0, z1, 400, 1, idx, w, &err);
    CHECK_MSG(k >= 398 && k <= 400, "%d images", k);
    double ws = 0;
    int disputed = 0, ascending = 1;
    for (int i = 0; i < k; i++) {
        ws += w[i], disputed += idx[i] >= 1600;
        if (i && idx[i] <= idx[i - 1]) ascending = 0;
        CHECK(idx[i] >= 0 && idx[i] < M && w[i] > 0);
    }
    CHECK(ascending);
    CHECK_NEAR(ws / k, 1, 1e-9);
    CHECK_MSG(disputed > 300, "%d of the 400 disputed images drawn", disputed); /* 1600 settled ones: most left out */
    CHECK(bf_preds_sample(&p, z0, z1, 400, 1, idx2, w2, &err) == k);
    CHECK(!memcmp(idx, idx2, sizeof(int32_t) * k) && !memcmp(w, w2, sizeof(double) * k));

    /* unbiased and better than a plain sample, for accuracy and -loss */
    for (int loss = 0; loss < 2; loss++) {
        p.loss = loss;
        double full = bf_preds_utility(&p, z2), dfull = full - bf_preds_utility(&p, z0), mean = 0, mse = 0, mse_plain = 0;
        static float zs[M * K], zs0[M * K];
        static int32_t ys[M], all[M];
        bf_rng_t r;
        bf_rng_seed(&r, 9);
        int runs = 200;
        for (int s = 0; s < runs; s++) {
            int n = bf_preds_sample(&p, z0, z1, 200, (uint64_t)s + 10, idx, w, &err);
            for (int i = 0; i < n; i++) {
                memcpy(zs + i * K, z2 + idx[i] * K, sizeof(float) * K), ys[i] = y[idx[i]];
                memcpy(zs0 + i * K, z0 + idx[i] * K, sizeof(float) * K);
            }
            bf_preds_t q = {n, K, ys, NULL, loss, w};
            double u = bf_preds_utility(&q, zs), d = u - bf_preds_utility(&q, zs0);
            mean += u / runs, mse += (d - dfull) * (d - dfull) / runs;
            for (int i = 0; i < M; i++) all[i] = i;
            bf_rng_shuffle(&r, all, M);
            for (int i = 0; i < n; i++) {
                memcpy(zs + i * K, z2 + all[i] * K, sizeof(float) * K), ys[i] = y[all[i]];
                memcpy(zs0 + i * K, z0 + all[i] * K, sizeof(float) * K);
            }
            bf_preds_t plain = {n, K, ys, NULL, loss, NULL};
            double v = bf_preds_utility(&plain, zs) - bf_preds_utility(&plain, zs0);
            mse_plain += (v - dfull) * (v - dfull) / runs;
        }
        printf("U = %s: full %.4f, sampled mean %.4f; difference to the first model: rmse %.4f vs plain sample %.4f\n",
               loss ? "-loss" : "accuracy", full, mean, sqrt(mse), sqrt(mse_plain));
        CHECK_NEAR(mean, full, 0.02 * fabs(full) + 2e-3);
        CHECK(mse < 0.5 * mse_plain);
    }
    bf_preds_t bad = {0, K, y, NULL, 0, NULL};
    CHECK(bf_preds_sample(&bad, z0, z1, 10, 1, idx, w, &err) == -1);
    bad = (bf_preds_t){M, 1, y, NULL, 0, NULL};
    CHECK(bf_preds_sample(&bad, z0, z1, 10, 1, idx, w, &err) == -1);
    CHECK(bf_preds_sample(&p, z0, z1, 0, 1, idx, w, &err) == -1);
}

int main(void) {
    make_images();
    test_weighted_utility();
    test_sample();
    return bf_test_done("test_shapley_sample");
}

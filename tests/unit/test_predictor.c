/* test_predictor.c: the shared prediction path (bf_predictor.h): an encoded image in, the same
 * probabilities as an independent reference pipeline out; hostile images refused with a clear
 * error and no harm to the predictor; top-k order. */
#include <math.h>
#include <stdio.h>

#include "bf_datasets.h"
#include "bf_models.h"
#include "bf_predictor.h"
#include "test.h"
#include "fixtures/jpeg_fixtures.h"
#include "test_images.h"

#define C 1
#define H 16
#define W 16
#define K 4

static const float MEAN = 0.3f, STD = 0.25f;

/* scale != 1 multiplies every parameter: 3e38 keeps them finite but overflows the logits */
static uint8_t *model_bytes_scaled(size_t *len, float scale) {
    bf_err_t err;
    bf_net_t *net = bf_net_new("cnn", C, H, W, K, 1, 1, &err);
    CHECK_MSG(net != NULL, "%s", err.msg);
    bf_net_init(net, 7);
    float *w = bf_net_params(net);
    for (size_t i = 0; scale != 1 && i < bf_net_num_params(net); i++) w[i] = w[i] > 0 ? scale : -scale;
    bf_model_meta_t meta = {.classes = K, .channels = C, .mean = {MEAN}, .std = {STD}};
    for (int k = 0; k < K; k++) snprintf(meta.class_names[k], sizeof meta.class_names[k], "quadrant-%d", k);
    uint8_t *b = NULL;
    CHECK(bf_model_encode(net, &meta, &b, len, &err) == 0);
    bf_net_destroy(&net);
    return b;
}

static uint8_t *model_bytes(size_t *len) { return model_bytes_scaled(len, 1); }

/* The reference: decode with the documented conversion, normalize in double, a separate net
 * decoded from the same bytes, softmax in long double. */
static void reference(const uint8_t *model, size_t mlen, const uint8_t *img, size_t n, double *probs) {
    bf_err_t err;
    bf_model_meta_t meta;
    bf_net_t *net = bf_model_decode(model, mlen, 1, 1, &meta, &err);
    uint8_t px[C * H * W];
    float x[C * H * W], logits[K];
    CHECK(net && bf_image_decode(img, n, C, H, W, px, &err) == 0);
    for (int i = 0; i < C * H * W; i++) x[i] = (float)(((double)px[i] / 255.0 - MEAN) / STD);
    bf_net_predict(net, x, 1, logits);
    long double sum = 0;
    for (int k = 0; k < K; k++) sum += expl((long double)logits[k]);
    for (int k = 0; k < K; k++) probs[k] = (double)(expl((long double)logits[k]) / sum);
    bf_net_destroy(&net);
}

static void expect_refused(bf_predictor_t *p, const uint8_t *img, size_t n, const char *what, const char *needle) {
    double probs[K];
    bf_err_t err = {{0}};
    int rc = bf_predictor_run(p, img, n, probs, &err);
    CHECK_MSG(rc == -1 && strstr(err.msg, needle), "%s: rc %d, error '%s' (expected '%s')", what, rc, err.msg, needle);
}

static void test_predictions(void) {
    size_t mlen;
    uint8_t *model = model_bytes(&mlen);
    bf_err_t err;
    bf_predictor_t *p = bf_predictor_new(model, mlen, BF_PREDICT_THREADS, &err);
    CHECK_MSG(p != NULL, "%s", err.msg);
    if (!p) return free(model);
    CHECK(bf_predictor_classes(p) == K && !strcmp(bf_predictor_label(p, 2), "quadrant-2"));
    CHECK(!strcmp(bf_predictor_label(p, 9), "?") && !strcmp(bf_predictor_arch(p), "cnn"));
    int c, h, w;
    bf_predictor_input(p, &c, &h, &w);
    CHECK(c == C && h == H && w == W && strlen(bf_predictor_digest(p)) == 64);

    /* Gray PNG at the model's size, RGB PNG at twice the size, gray PGM, RGB BMP: each equals the
     * reference and sums to one. */
    struct {
        char fmt;
        int side, comp;
    } cases[] = {{'p', 16, 1}, {'p', 32, 3}, {'g', 16, 1}, {'b', 24, 3}, {'p', 9, 4}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n;
        uint8_t *img = ti_encode(cases[i].fmt, (int)i % 4, cases[i].side, cases[i].side, cases[i].comp, 11 + (uint32_t)i, &n);
        double got[K], again[K], ref[K], sum = 0;
        CHECK_MSG(bf_predictor_run(p, img, n, got, &err) == 0, "case %zu: %s", i, err.msg);
        reference(model, mlen, img, n, ref);
        for (int k = 0; k < K; k++) {
            CHECK_MSG(fabs(got[k] - ref[k]) <= 1e-6, "case %zu class %d: %.9f vs reference %.9f", i, k, got[k], ref[k]);
            CHECK(got[k] >= 0 && got[k] <= 1);
            sum += got[k];
        }
        CHECK(fabs(sum - 1) < 1e-12);
        /* Same image again: bit-identical. */
        CHECK(bf_predictor_run(p, img, n, again, &err) == 0 && !memcmp(got, again, sizeof got));
        free(img);
    }

    /* JPEG (RGB 20x20, gray 16x16) and GIF (hand-made 2x2): decoded and classified likewise. */
    const struct {
        const uint8_t *b;
        size_t n;
    } fixed[] = {{jpeg_rgb_20, sizeof jpeg_rgb_20}, {jpeg_gray_16, sizeof jpeg_gray_16}, {ti_gif, sizeof ti_gif}};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
        double gp[K], gr[K];
        CHECK_MSG(bf_predictor_run(p, fixed[i].b, fixed[i].n, gp, &err) == 0, "fixture %zu: %s", i, err.msg);
        reference(model, mlen, fixed[i].b, fixed[i].n, gr);
        for (int k = 0; k < K; k++) CHECK(fabs(gp[k] - gr[k]) <= 1e-6);
    }

    /* Hostile images: refused with a reason, and the predictor keeps working. */
    size_t n;
    uint8_t *good = ti_encode('p', 1, 16, 16, 1, 5, &n);
    double before[K], after[K];
    CHECK(bf_predictor_run(p, good, n, before, &err) == 0);
    expect_refused(p, good, 0, "zero bytes", "empty");
    expect_refused(p, good, n / 2, "truncated PNG", "");
    expect_refused(p, good, 8, "PNG signature only", "");
    size_t bn;
    uint8_t *bomb = ti_png_header(100000, 100000, &bn);
    expect_refused(p, bomb, bn, "100000x100000 header", "exceeds the size limit");
    free(bomb);
    bomb = ti_png_header(8192, 8193, &bn);
    expect_refused(p, bomb, bn, "8192x8193 header", "exceeds the size limit");
    free(bomb);
    const uint8_t junk[] = "this is not an image at all";
    expect_refused(p, junk, sizeof junk, "text", "cannot read image header");
    uint8_t *huge = calloc(1, (size_t)BF_PREDICT_MAX_IMAGE_BYTES + 1);
    if (huge) expect_refused(p, huge, (size_t)BF_PREDICT_MAX_IMAGE_BYTES + 1, "17 MiB", "exceeds the");
    free(huge);
    CHECK(bf_predictor_run(p, good, n, after, &err) == 0 && !memcmp(before, after, sizeof before));
    free(good);
    bf_predictor_destroy(&p);
    CHECK(p == NULL);
    bf_predictor_destroy(&p);

    /* A damaged model file never becomes a predictor. */
    model[mlen / 2] ^= 0x40;
    CHECK(bf_predictor_new(model, mlen, 1, &err) == NULL && err.msg[0]);
    CHECK(bf_predictor_new(model, 10, 1, &err) == NULL);
    free(model);
    CHECK(bf_predictor_load("/nonexistent/model.bfm", 1, &err) == NULL && strstr(err.msg, "nonexistent"));
}

/* A model whose outputs overflow gives no probabilities: refused like a bad image, not -nan. */
static void test_nonfinite_output(void) {
    size_t mlen, n;
    uint8_t *model = model_bytes_scaled(&mlen, 3e38f);
    bf_err_t err;
    bf_predictor_t *p = bf_predictor_new(model, mlen, 1, &err);
    CHECK_MSG(p != NULL, "%s", err.msg);
    uint8_t *img = ti_encode('p', 1, W, H, 1, 5, &n);
    if (p && img) expect_refused(p, img, n, "overflowing model", "not finite");
    free(img);
    bf_predictor_destroy(&p);
    free(model);
}

static void test_topk(void) {
    double pr[5] = {0.1, 0.3, 0.3, 0.05, 0.25};
    int idx[5] = {-1, -1, -1, -1, -1};
    CHECK(bf_predictor_topk(pr, 5, 3, idx) == 3 && idx[0] == 1 && idx[1] == 2 && idx[2] == 4);
    CHECK(bf_predictor_topk(pr, 5, 9, idx) == 5 && idx[3] == 0 && idx[4] == 3);
    CHECK(bf_predictor_topk(pr, 5, 1, idx) == 1 && idx[0] == 1);
    CHECK(bf_predictor_topk(pr, 5, 0, idx) == 0);
    double eq[4] = {0.25, 0.25, 0.25, 0.25};
    CHECK(bf_predictor_topk(eq, 4, 4, idx) == 4 && idx[0] == 0 && idx[1] == 1 && idx[2] == 2 && idx[3] == 3);
}

int main(void) {
    test_topk();
    test_predictions();
    test_nonfinite_output();
    return bf_test_done("test_predictor");
}

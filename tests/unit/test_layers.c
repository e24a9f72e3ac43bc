/* test_layers.c: every layer's backward against central finite differences, and conv forward
 * against a direct (naive) convolution.
 *
 * The scalar under test is L = sum(out * R) for a fixed random R, accumulated in double, so
 * dL/dout = R. Finite differences use eps = 1e-2 on float32 layers; an analytic value a and a
 * numerical value d agree when |a - d| <= 2e-3 + 2e-2 * max(|a|, |d|) (bound stated here, met with
 * a wide margin in practice: observed max relative error is printed). */
#include <string.h>

#include "bf_models.h"
#include "conv_direct.h"
#include "test.h"

#define EPS 1e-2f
#define ATOL 2e-3
#define RTOL 2e-2

static bf_rng_t rng;

static float *randn(size_t n, float scale) {
    float *p = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) p[i] = scale * (float)bf_rng_normal(&rng);
    return p;
}

static double dot(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

/* A layer under test: computes L into ctx, given its current inputs/parameters. */
typedef double (*loss_fn)(void *ctx);

static double worst;
static int probes, skipped;

/* Where the layer has a kink (ReLU, max-pool), a probe whose +-eps crosses it measures nothing
 * useful. The test then compares the pattern of positive outputs (or argmax winners) before and
 * after, and skips such probes; the number skipped is bounded below. */
static const float *kink_out;
static const int32_t *kink_argmax;
static size_t kink_n;
static uint64_t kink_signature(void) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; kink_out && i < kink_n; i++) h = (h ^ (kink_out[i] > 0)) * 1099511628211ULL;
    for (size_t i = 0; kink_argmax && i < kink_n; i++) h = (h ^ (uint64_t)kink_argmax[i]) * 1099511628211ULL;
    return h;
}

/* Compares analytic gradient g of L w.r.t. the n values at x with central differences. */
static void check_grad(const char *what, loss_fn f, void *ctx, float *x, const float *g, size_t n) {
    size_t step = n > 150 ? n / 150 : 1; /* about 150 probes per tensor */
    for (size_t i = 0; i < n; i += step) {
        float keep = x[i];
        f(ctx);
        uint64_t sig = kink_signature();
        x[i] = keep + EPS;
        double lp = f(ctx);
        uint64_t sig_p = kink_signature();
        x[i] = keep - EPS;
        double lm = f(ctx);
        uint64_t sig_m = kink_signature();
        x[i] = keep;
        probes++;
        if (sig != sig_p || sig != sig_m) {
            skipped++;
            continue;
        }
        double num = (lp - lm) / (2 * EPS), a = g[i];
        double scale = fabs(a) > fabs(num) ? fabs(a) : fabs(num);
        double rel = fabs(a - num) / (scale > 1e-3 ? scale : 1e-3);
        if (rel > worst && scale > 1e-2) worst = rel;
        CHECK_MSG(fabs(a - num) <= ATOL + RTOL * scale, "%s[%zu]: analytic %.6g numeric %.6g", what, i, a, num);
    }
}

/* ---- convolution -------------------------------------------------------------------------- */

typedef struct {
    int n, C, H, W, OC, K, S, P, OH, OW;
    float *x, *w, *b, *R, *out, *scratch;
} conv_ctx;

static double conv_loss(void *p) {
    conv_ctx *c = p;
    bf_conv2d_forward(c->out, c->x, c->w, c->b, c->n, c->C, c->H, c->W, c->OC, c->K, c->S, c->P, c->scratch);
    return dot(c->out, c->R, (size_t)c->n * c->OC * c->OH * c->OW);
}

static void naive_conv(float *out, const conv_ctx *c) {
    for (int i = 0; i < c->n; i++)
        for (int oc = 0; oc < c->OC; oc++)
            for (int oh = 0; oh < c->OH; oh++)
                for (int ow = 0; ow < c->OW; ow++) {
                    double s = c->b ? c->b[oc] : 0;
                    for (int ic = 0; ic < c->C; ic++)
                        for (int ki = 0; ki < c->K; ki++)
                            for (int kj = 0; kj < c->K; kj++) {
                                int ih = oh * c->S - c->P + ki, iw = ow * c->S - c->P + kj;
                                if (ih < 0 || iw < 0 || ih >= c->H || iw >= c->W) continue;
                                s += (double)c->x[((i * c->C + ic) * c->H + ih) * c->W + iw] *
                                     c->w[((oc * c->C + ic) * c->K + ki) * c->K + kj];
                            }
                    out[((i * c->OC + oc) * c->OH + oh) * c->OW + ow] = (float)s;
                }
}

static void test_conv(int n, int C, int H, int W, int OC, int K, int S, int P, int bias) {
    char what[96];
    snprintf(what, sizeof what, "conv n%d C%d %dx%d OC%d K%d S%d P%d", n, C, H, W, OC, K, S, P);
    conv_ctx c = {n, C, H, W, OC, K, S, P, bf_conv_out(H, K, S, P), bf_conv_out(W, K, S, P), 0, 0, 0, 0, 0, 0};
    size_t nin = (size_t)n * C * H * W, nout = (size_t)n * OC * c.OH * c.OW, nw = (size_t)OC * C * K * K;
    c.x = randn(nin, 1);
    c.w = randn(nw, 0.5f);
    c.b = bias ? randn(OC, 0.5f) : NULL;
    c.R = randn(nout, 1);
    c.out = randn(nout, 1);
    c.scratch = randn(bf_conv2d_scratch(n, C, H, W, OC, K, S, P), 1);

    float *ref = randn(nout, 0);
    conv_loss(&c);
    naive_conv(ref, &c);
    for (size_t i = 0; i < nout; i++) CHECK_MSG(fabs(ref[i] - c.out[i]) < 1e-4, "%s forward[%zu]", what, i);

    /* eval-mode BN epilogue: out = conv * scale + shift (ReLU when relu), whole and per channel range */
    float *scale = randn(OC, 1), *shift = randn(OC, 1), *aff = randn(nout, 1);
    size_t per = nout / n;
    for (int relu = 0; relu < 2; relu++) {
        bf_conv2d_forward_affine(aff, c.x, c.w, c.b, n, C, H, W, OC, K, S, P, c.scratch, scale, shift, relu);
        int unit = bf_conv2d_channel_unit(C, OC, K, S, P), mid = OC / 2 / unit * unit;
        bf_conv2d_forward_channels_affine(aff, c.x, c.w, c.b, C, H, W, OC, K, S, P, c.scratch, mid, OC, scale, shift,
                                          relu); /* image 0's upper channels again: same values */
        for (size_t i = 0; i < nout; i++) {
            int oc = (int)(i % per / (per / OC));
            double v = (double)ref[i] * scale[oc] + shift[oc];
            if (relu && v < 0) v = 0;
            CHECK_MSG(fabs(v - aff[i]) < 1e-4 * (1 + fabs(scale[oc])), "%s affine relu=%d [%zu]", what, relu, i);
        }
    }
    free(scale), free(shift), free(aff);

    float *dx = randn(nin, 0), *dw = randn(nw, 0), *db = bias ? randn(OC, 0) : NULL;
    bf_conv2d_backward(dx, 0, dw, db, c.R, c.x, c.w, n, C, H, W, OC, K, S, P, c.scratch);
    check_grad(what, conv_loss, &c, c.x, dx, nin);
    check_grad(what, conv_loss, &c, c.w, dw, nw);
    if (bias) check_grad(what, conv_loss, &c, c.b, db, OC);

    /* acc=1 adds onto what is there; parameter gradients always accumulate */
    float *dx2 = randn(nin, 1), *dx2_before = malloc(sizeof(float) * nin);
    memcpy(dx2_before, dx2, sizeof(float) * nin);
    bf_conv2d_backward(dx2, 1, dw, NULL, c.R, c.x, c.w, n, C, H, W, OC, K, S, P, c.scratch);
    for (size_t i = 0; i < nin; i++) CHECK_NEAR(dx2[i], dx2_before[i] + dx[i], 1e-4);
    free(dx2);
    free(dx2_before);
    free(c.x), free(c.w), free(c.b), free(c.R), free(c.out), free(c.scratch), free(ref), free(dx), free(dw), free(db);
}

/* ---- batch norm (training mode, one slice = the whole batch) ------------------------------ */

typedef struct {
    int n, C, HW, relu;
    float *x, *gamma, *beta, *R, *out, *mean, *rstd;
} bn_ctx;

static void bn_stats_to(bn_ctx *c) {
    double s[8] = {0}, s2[8] = {0};
    bf_bn_stats(s, s2, c->x, c->n, c->C, c->HW);
    double cnt = (double)c->n * c->HW;
    for (int k = 0; k < c->C; k++) {
        double mu = s[k] / cnt;
        c->mean[k] = (float)mu;
        c->rstd[k] = (float)(1.0 / sqrt(s2[k] / cnt - mu * mu + 1e-5));
    }
}

static double bn_loss(void *p) {
    bn_ctx *c = p;
    bn_stats_to(c);
    bf_bn_forward(c->out, c->x, c->mean, c->rstd, c->gamma, c->beta, c->n, c->C, c->HW, c->relu);
    return dot(c->out, c->R, (size_t)c->n * c->C * c->HW);
}

static void test_bn(int relu) {
    bn_ctx c = {3, 4, 10, relu, 0, 0, 0, 0, 0, 0, 0};
    size_t N = (size_t)c.n * c.C * c.HW;
    c.x = randn(N, 2);
    for (size_t i = 0; i < N; i++) c.x[i] += 0.5f; /* non-zero mean */
    c.gamma = randn(c.C, 1);
    c.beta = randn(c.C, 1);
    c.R = randn(N, 1);
    c.out = randn(N, 0);
    c.mean = randn(c.C, 0);
    c.rstd = randn(c.C, 0);
    bn_loss(&c);
    float *dout = malloc(sizeof(float) * N), *dx = randn(N, 0);
    memcpy(dout, c.R, sizeof(float) * N);
    double sdy[8] = {0}, sdyx[8] = {0};
    bf_bn_backward_stats(sdy, sdyx, dout, c.out, c.x, c.mean, c.rstd, c.n, c.C, c.HW, relu);
    bf_bn_backward(dx, 0, dout, c.x, c.mean, c.rstd, c.gamma, sdy, sdyx, c.n, c.n, c.C, c.HW);
    float dg[8], dbeta[8];
    for (int k = 0; k < c.C; k++) dg[k] = (float)sdyx[k], dbeta[k] = (float)sdy[k];
    const char *what = relu ? "bn+relu" : "bn";
    kink_out = relu ? c.out : NULL;
    kink_n = N;
    check_grad(what, bn_loss, &c, c.x, dx, N);
    check_grad(what, bn_loss, &c, c.gamma, dg, c.C);
    check_grad(what, bn_loss, &c, c.beta, dbeta, c.C);
    kink_out = NULL;
    free(c.x), free(c.gamma), free(c.beta), free(c.R), free(c.out), free(c.mean), free(c.rstd), free(dout), free(dx);
}

/* ---- pooling, linear, add, relu, loss ----------------------------------------------------- */

typedef struct {
    int kind, n, C, H, W, IN, OUT;
    float *x, *x2, *w, *b, *R, *out;
    int32_t *argmax, *y;
} misc_ctx;

enum { K_MAXPOOL, K_GAP, K_LINEAR, K_ADD_RELU, K_RELU, K_XENT };

static double misc_loss(void *p) {
    misc_ctx *c = p;
    size_t cnt = (size_t)c->n * c->C * c->H * c->W;
    switch (c->kind) {
    case K_MAXPOOL:
        bf_maxpool2_forward(c->out, c->argmax, c->x, c->n, c->C, c->H, c->W);
        return dot(c->out, c->R, (size_t)c->n * c->C * (c->H / 2) * (c->W / 2));
    case K_GAP: bf_gap_forward(c->out, c->x, c->n, c->C, c->H * c->W); return dot(c->out, c->R, (size_t)c->n * c->C);
    case K_LINEAR:
        bf_linear_forward(c->out, c->x, c->w, c->b, c->n, c->IN, c->OUT);
        return dot(c->out, c->R, (size_t)c->n * c->OUT);
    case K_ADD_RELU: bf_add_forward(c->out, c->x, c->x2, cnt, 1); return dot(c->out, c->R, cnt);
    case K_RELU: bf_relu_forward(c->out, c->x, cnt); return dot(c->out, c->R, cnt);
    default: {
        float *d = malloc(sizeof(float) * c->n * c->OUT);
        double l = bf_softmax_xent(d, NULL, c->x, c->y, c->n, c->OUT, c->n);
        free(d);
        return l;
    }
    }
}

static void test_misc(void) {
    misc_ctx c = {0, 3, 2, 6, 5, 7, 4, 0, 0, 0, 0, 0, 0, 0, 0};
    size_t cnt = (size_t)c.n * c.C * c.H * c.W;
    c.x = randn(cnt, 1);
    c.x2 = randn(cnt, 1);
    c.w = randn((size_t)c.IN * c.OUT, 1);
    c.b = randn(c.OUT, 1);
    c.R = randn(cnt, 1);
    c.out = randn(cnt, 0);
    c.argmax = calloc(cnt, sizeof(int32_t));
    c.y = calloc(c.n, sizeof(int32_t));
    float *dx = randn(cnt, 0), *dx2 = randn(cnt, 0), *dw = randn((size_t)c.IN * c.OUT, 0), *db = randn(c.OUT, 0);

    c.kind = K_MAXPOOL;
    misc_loss(&c);
    bf_maxpool2_backward(dx, 0, c.R, c.argmax, c.n, c.C, c.H, c.W);
    kink_argmax = c.argmax, kink_n = (size_t)c.n * c.C * (c.H / 2) * (c.W / 2); /* a changed winner is a kink */
    check_grad("maxpool", misc_loss, &c, c.x, dx, cnt);
    kink_argmax = NULL;

    c.kind = K_GAP;
    bf_gap_backward(dx, 0, c.R, c.n, c.C, c.H * c.W);
    check_grad("gap", misc_loss, &c, c.x, dx, cnt);

    c.kind = K_LINEAR;
    bf_linear_backward(dx, 0, dw, db, c.R, c.x, c.w, c.n, c.IN, c.OUT);
    check_grad("linear x", misc_loss, &c, c.x, dx, (size_t)c.n * c.IN);
    check_grad("linear w", misc_loss, &c, c.w, dw, (size_t)c.IN * c.OUT);
    check_grad("linear b", misc_loss, &c, c.b, db, c.OUT);

    c.kind = K_ADD_RELU;
    misc_loss(&c);
    float *dout = malloc(sizeof(float) * cnt);
    memcpy(dout, c.R, sizeof(float) * cnt);
    bf_add_backward(dx, 0, dx2, 0, dout, c.out, cnt, 1);
    kink_out = c.out, kink_n = cnt;
    check_grad("add+relu a", misc_loss, &c, c.x, dx, cnt);
    check_grad("add+relu b", misc_loss, &c, c.x2, dx2, cnt);

    c.kind = K_RELU;
    misc_loss(&c);
    bf_relu_backward(dx, 0, c.R, c.out, cnt);
    check_grad("relu", misc_loss, &c, c.x, dx, cnt);
    kink_out = NULL;

    c.kind = K_XENT;
    for (int i = 0; i < c.n; i++) c.y[i] = i % c.OUT;
    bf_softmax_xent(dx, NULL, c.x, c.y, c.n, c.OUT, c.n);
    check_grad("softmax-xent", misc_loss, &c, c.x, dx, (size_t)c.n * c.OUT);
    /* loss of uniform logits is log(K) */
    float z[8] = {0};
    int32_t y0 = 2;
    CHECK_NEAR(bf_softmax_xent(dx, NULL, z, &y0, 1, 8, 1), log(8.0), 1e-9);

    free(c.x), free(c.x2), free(c.w), free(c.b), free(c.R), free(c.out), free(c.argmax), free(c.y);
    free(dx), free(dx2), free(dw), free(db), free(dout);
}

/* The direct weight gradient over many images (its position passes, several output triples and a
 * 1- or 2-channel remainder) and the narrow forward tiles against double-precision sums: too large
 * for finite differences. */
static void test_direct_large(int n, int C, int H, int W, int OC) {
    size_t nin = (size_t)n * C * H * W, nout = (size_t)n * OC * H * W, nw = (size_t)OC * C * 9;
    float *x = randn(nin, 1), *dy = randn(nout, 1), *w = randn(nw, 0.2f), *dw = randn(nw, 0), *out = randn(nout, 0);
    float *scratch = randn(bf_conv2d_scratch(n, C, H, W, OC, 3, 1, 1), 0);
    memset(dw, 0, sizeof(float) * nw);
    bf_conv2d_backward(NULL, 0, dw, NULL, dy, x, w, n, C, H, W, OC, 3, 1, 1, scratch);
    bf_conv2d_forward(out, x, w, NULL, n, C, H, W, OC, 3, 1, 1, scratch);
    for (int oc = 0; oc < OC; oc++)
        for (int c = 0; c < C; c++)
            for (int t = 0; t < 9; t++) {
                double s = 0, mag = 0;
                for (int i = 0; i < n; i++)
                    for (int h = 0; h < H; h++)
                        for (int v = 0; v < W; v++) {
                            int ih = h - 1 + t / 3, iw = v - 1 + t % 3;
                            if (ih < 0 || iw < 0 || ih >= H || iw >= W) continue;
                            double p = (double)dy[(((size_t)i * OC + oc) * H + h) * W + v] *
                                       x[(((size_t)i * C + c) * H + ih) * W + iw];
                            s += p;
                            mag += fabs(p);
                        }
                CHECK_MSG(fabs(s - dw[((size_t)oc * C + c) * 9 + t]) <= 1e-5 * mag + 1e-5,
                          "direct dw n%d C%d OC%d %dx%d [%d][%d][%d]: %g vs %g", n, C, OC, H, W, oc, c, t,
                          dw[((size_t)oc * C + c) * 9 + t], s);
            }
    for (int i = 0; i < n; i += n - 1 > 0 ? n - 1 : 1) /* first and last image */
        for (int oc = 0; oc < OC; oc++)
            for (int h = 0; h < H; h++)
                for (int v = 0; v < W; v++) {
                    double s = 0;
                    for (int c = 0; c < C; c++)
                        for (int t = 0; t < 9; t++) {
                            int ih = h - 1 + t / 3, iw = v - 1 + t % 3;
                            if (ih < 0 || iw < 0 || ih >= H || iw >= W) continue;
                            s += (double)x[(((size_t)i * C + c) * H + ih) * W + iw] * w[((size_t)oc * C + c) * 9 + t];
                        }
                    CHECK_MSG(fabs(s - out[(((size_t)i * OC + oc) * H + h) * W + v]) < 1e-4,
                              "direct forward n%d C%d OC%d %dx%d", n, C, OC, H, W);
                }
    free(x), free(dy), free(w), free(dw), free(out), free(scratch);
}

/* The Winograd F(2x2, 3x3) eval forward against double-precision sums: maps of even and odd
 * sizes (a partial last tile row and column), several 8-channel blocks computed whole and as two
 * ranges, with and without the BN epilogue and ReLU. Its error is that of the transforms, bounded
 * relative to the sum of |products| of each output. The network uses it on the AVX2 path only, but
 * the kernel needs only AVX2 + FMA, so it is checked on the AVX-512 path too; on the generic path
 * it is neither offered nor run. */
static void test_wino(int C, int OC, int H, int W) {
    CHECK_MSG(bf_wino_ok(C, OC, H, W) == (bf_engine_isa() == BF_ISA_AVX2), "winograd offered C%d OC%d %dx%d on %s", C,
              OC, H, W, bf_engine_isa_name());
    if (bf_engine_isa() < BF_ISA_AVX2) {
        printf("winograd C%d OC%d %dx%d: not run on the %s path\n", C, OC, H, W, bf_engine_isa_name());
        return;
    }
    size_t nout = (size_t)OC * H * W, nw = (size_t)OC * C * 9;
    float *x = randn((size_t)C * H * W, 1), *w = randn(nw, 0.2f), *out = randn(nout, 0), *split = randn(nout, 0);
    float *U = randn(bf_wino_weights_floats(C, OC), 0), *scratch = randn(bf_wino_scratch(C, OC, H, W), 0);
    float *scale = randn(OC, 1), *shift = randn(OC, 1);
    int mid = OC / 16 * 8;
    bf_wino_weights(U, w, C, OC, 0, mid); /* in two ranges, as threads do */
    bf_wino_weights(U, w, C, OC, mid, OC);
    double worst_w = 0;
    for (int mode = 0; mode < 3; mode++) { /* plain, BN epilogue, BN + ReLU */
        const float *a = mode ? scale : NULL, *b = mode ? shift : NULL;
        bf_wino_channels(out, x, U, C, OC, H, W, scratch, 0, OC, a, b, mode == 2);
        bf_wino_channels(split, x, U, C, OC, H, W, scratch, 0, mid, a, b, mode == 2);
        bf_wino_channels(split, x, U, C, OC, H, W, scratch, mid, OC, a, b, mode == 2);
        CHECK_MSG(memcmp(out, split, sizeof(float) * nout) == 0, "winograd C%d OC%d %dx%d: ranges differ", C, OC, H, W);
        for (int oc = 0; oc < OC; oc++)
            for (int h = 0; h < H; h++)
                for (int v = 0; v < W; v++) {
                    double s = 0, mag = 0;
                    for (int c = 0; c < C; c++)
                        for (int t = 0; t < 9; t++) {
                            int ih = h - 1 + t / 3, iw = v - 1 + t % 3;
                            if (ih < 0 || iw < 0 || ih >= H || iw >= W) continue;
                            double p = (double)x[((size_t)c * H + ih) * W + iw] * w[((size_t)oc * C + c) * 9 + t];
                            s += p;
                            mag += fabs(p);
                        }
                    if (mode) {
                        s = s * scale[oc] + shift[oc];
                        mag *= fabs(scale[oc]);
                        if (mode == 2 && s < 0) s = 0;
                    }
                    double got = out[((size_t)oc * H + h) * W + v], err = fabs(got - s) / (mag + 1e-3);
                    if (err > worst_w) worst_w = err;
                    CHECK_MSG(err <= 1e-5, "winograd C%d OC%d %dx%d mode %d [%d][%d][%d]: %g vs %g", C, OC, H, W,
                              mode, oc, h, v, got, s);
                }
    }
    printf("winograd C%d OC%d %dx%d: worst error %.3g of the sum of |products|\n", C, OC, H, W, worst_w);
    free(x), free(w), free(out), free(split), free(U), free(scratch), free(scale), free(shift);
}

int main(void) {
    bf_rng_seed(&rng, 1234);
    printf("engine path %s\n", bf_engine_isa_name());
    test_direct_large(6, 64, 16, 16, 64); /* 6*324 positions: two 1024-position weight-gradient passes */
    test_direct_large(3, 16, 7, 7, 8);    /* 7x7: tiles of 3 then 1 vector; OC 8 = 2 triples + 2 */
    test_direct_large(2, 8, 8, 8, 16);    /* 8x8: tiles of 3 then 2 vectors; OC 16 = 5 triples + 1 */
    test_wino(16, 16, 28, 28); /* ResNet8's sizes: 14x14 tiles, 2 vectors a tile row */
    test_wino(32, 32, 14, 14);
    test_wino(64, 64, 7, 7);   /* odd: the last tile row and column half outside */
    test_wino(16, 24, 32, 32); /* 16x16 tiles, 3 blocks of 8 */
    test_wino(24, 8, 9, 20);   /* odd rows, 5x10 tiles */
    test_conv(2, 3, 7, 6, 4, 3, 1, 1, 1);  /* 3x3 same padding, bias */
    test_conv(2, 3, 7, 6, 4, 3, 2, 1, 0);  /* stride 2, odd sizes */
    test_conv(2, 5, 5, 5, 3, 1, 1, 0, 0);  /* 1x1 pointwise (no im2col) */
    test_conv(2, 4, 6, 6, 6, 1, 2, 0, 0);  /* 1x1 stride 2 projection */
    test_conv(1, 2, 9, 9, 3, 5, 1, 2, 1);  /* 5x5 padding 2 (cnn) */
    test_conv(2, 2, 8, 7, 3, 3, 3, 1, 1);  /* stride 3: three column phases */
    test_conv(1, 3, 9, 8, 2, 2, 2, 0, 0);  /* even kernel, stride 2, no padding */
    test_conv(2, 8, 7, 6, 16, 3, 1, 1, 0); /* direct kernel (OC, C multiples of 8), a map's last vectors */
    test_conv(1, 16, 5, 20, 8, 3, 1, 1, 1); /* direct: 2 vectors per row, odd rows, bias */
    test_conv(1, 8, 3, 35, 8, 3, 1, 1, 0); /* direct: 3 vectors per row */
    test_conv(2, 8, 7, 6, 16, 3, 2, 1, 0); /* direct stride-2 forward: odd rows, OC two tiles */
    test_conv(1, 3, 14, 14, 8, 3, 2, 1, 1); /* direct stride 2 at a ResNet size, bias after the kernel */
    test_conv(1, 4, 29, 40, 8, 3, 2, 1, 0); /* direct stride 2: 15 x 21 positions, full and narrow tiles */
    test_conv(2, 2, 6, 7, 3, 3, 1, 0, 1);  /* "valid" conv: plane wider than the output rows */
    test_conv(1, 2, 5, 5, 2, 3, 2, 2, 0);  /* padding 2 with stride 2 */
    test_conv(1, 2, 5, 41, 3, 3, 2, 1, 0); /* stride 2 over 41 columns: 21/20 per phase, two vectors */
    test_bn(0);
    test_bn(1);
    test_misc();
    printf("%d probes, %d skipped at a ReLU / max-pool kink\n", probes, skipped);
    CHECK(skipped * 10 < probes);
    printf("worst relative error over all probes: %.3g (bound %.3g + abs %.3g)\n", worst, RTOL, ATOL);
    return bf_test_done("test_layers");
}

/* test_net.c: whole networks. Parameter counts and PyTorch names; the loss gradient of ResNet8
 * and of the CNN along random directions against central differences (relative error <= 2e-2);
 * threads 1 vs 2 agree; a short training run on generated data learns (loss below a bound), and
 * the same seed twice gives bit-identical weights; BN recalibration sets the first BN layer's
 * running statistics to the batch average computed here directly, forgets the old statistics,
 * leaves the parameters alone, and gives the same statistics with 1 and 2 threads;
 * bf_net_objective_step with the cross-entropy gives bf_net_train_step's gradients bit for bit and
 * leaves the running statistics alone, and with another objective passes the central-difference
 * check. */
#include <math.h>
#include <string.h>

#include "bf_models.h"
#include "test.h"

static bf_rng_t rng;

/* Loss gradients against finite differences along directions d (unit norm):
 * g.d vs (L(p+hd) - L(p-hd)) / 2h with h = 1e-3; relative error <= 1e-2 along whole-model
 * directions and <= 3e-2 along single tensors (observed worst ~1.3e-2: a few kink crossings weigh
 * more when only one small tensor moves; a wrong gradient is off by far more).
 *
 * A ResNet with ReLUs and batch statistics over a tiny batch is kink-dense: along a purely random
 * direction g.d is ~|g|/sqrt(P), small enough that crossing kinks dominates the difference quotient
 * unless h is tiny, where float32 rounding dominates instead (measured: 5-10% at h=1e-2, converging
 * as h shrinks). So each direction keeps a strong component along the gradient: per parameter
 * tensor, d = its own gradient (this catches a wrong scale or direction in any one tensor), and
 * for the whole model, d = normalize(g/|g| + r/|r|) for random r. */
#define FD_H 1e-3
#define FD_RTOL 1e-2
#define FD_RTOL_TENSOR 3e-2

static double fd_check(bf_net_t *net, const float *x, const int32_t *y, int n, const float *g, const float *d) {
    size_t P = bf_net_num_params(net);
    float *p = bf_net_params(net), *saved = malloc(sizeof(float) * P);
    memcpy(saved, p, sizeof(float) * P);
    double analytic = 0;
    for (size_t i = 0; i < P; i++) analytic += (double)g[i] * d[i];
    for (size_t i = 0; i < P; i++) p[i] = (float)(saved[i] + FD_H * d[i]);
    double lp = bf_net_loss(net, x, y, n);
    for (size_t i = 0; i < P; i++) p[i] = (float)(saved[i] - FD_H * d[i]);
    double lm = bf_net_loss(net, x, y, n);
    memcpy(p, saved, sizeof(float) * P);
    free(saved);
    double numeric = (lp - lm) / (2 * FD_H);
    return fabs(analytic - numeric) / fmax(fabs(analytic), 1e-9);
}

static void normalize(float *d, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)d[i] * d[i];
    for (size_t i = 0; i < n && s > 0; i++) d[i] = (float)(d[i] / sqrt(s));
}

static void gradient_checks(const char *arch, int C, int H, int W, int n, int threads) {
    bf_err_t err;
    bf_net_t *net = bf_net_new(arch, C, H, W, 10, n, threads, &err);
    CHECK_MSG(net != NULL, "%s", err.msg);
    if (!net) return;
    bf_net_init(net, 7);
    size_t P = bf_net_num_params(net), in = (size_t)n * C * H * W;
    float *x = malloc(sizeof(float) * in), *d = malloc(sizeof(float) * P), *g = malloc(sizeof(float) * P);
    int32_t *y = malloc(sizeof(int32_t) * n);
    for (size_t i = 0; i < in; i++) x[i] = (float)bf_rng_normal(&rng);
    for (int i = 0; i < n; i++) y[i] = (int32_t)bf_rng_below(&rng, 10);
    bf_net_train_step(net, x, y, n, NULL);
    memcpy(g, bf_net_grads(net), sizeof(float) * P);

    double worst = 0;
    const char *worst_name = "";
    for (int t = 0; t < bf_net_num_tensors(net); t++) {
        const bf_tensor_view_t *v = bf_net_tensor(net, t);
        if (v->is_buffer) continue;
        memset(d, 0, sizeof(float) * P);
        memcpy(d + v->offset, g + v->offset, sizeof(float) * v->count);
        normalize(d, P);
        double rel = fd_check(net, x, y, n, g, d);
        CHECK_MSG(rel <= FD_RTOL_TENSOR, "%s %s: relative error %.3g", arch, v->name, rel);
        if (rel > worst) worst = rel, worst_name = v->name;
    }
    printf("%-8s threads %d: per-tensor gradient directions, worst rel.err %.2e (%s)\n", arch, threads, worst,
           worst_name);
    double gn = 0;
    for (size_t i = 0; i < P; i++) gn += (double)g[i] * g[i];
    for (int k = 0; k < 3; k++) {
        for (size_t i = 0; i < P; i++) d[i] = (float)bf_rng_normal(&rng);
        normalize(d, P);
        for (size_t i = 0; i < P; i++) d[i] += (float)(g[i] / sqrt(gn));
        normalize(d, P);
        double rel = fd_check(net, x, y, n, g, d);
        printf("%-8s threads %d: random direction %d, rel.err %.2e\n", arch, threads, k, rel);
        CHECK_MSG(rel <= FD_RTOL, "%s random direction %d: relative error %.3g", arch, k, rel);
    }
    free(x), free(d), free(y), free(g);
    bf_net_destroy(&net);
    CHECK(net == NULL);
}

static void test_shapes(void) {
    bf_err_t err;
    bf_net_t *a = bf_net_new("resnet8", 3, 32, 32, 10, 2, 1, &err);
    bf_net_t *b = bf_net_new("resnet8", 1, 28, 28, 10, 2, 1, &err);
    CHECK(a && b);
    if (!a || !b) return;
    CHECK(bf_net_num_params(a) == 78042);
    CHECK(bf_net_num_params(b) == 77754);
    /* state_dict order: first and last names, and a projection shortcut */
    CHECK(!strcmp(bf_net_tensor(a, 0)->name, "conv1.weight"));
    CHECK(!strcmp(bf_net_tensor(a, 1)->name, "bn1.weight"));
    CHECK(!strcmp(bf_net_tensor(a, 3)->name, "bn1.running_mean"));
    CHECK(!strcmp(bf_net_tensor(a, bf_net_num_tensors(a) - 1)->name, "fc.bias"));
    const bf_tensor_view_t *v = bf_net_find_tensor(a, "layer2.0.downsample.0.weight");
    CHECK(v && v->ndim == 4 && v->shape[0] == 32 && v->shape[1] == 16 && v->shape[2] == 1);
    CHECK(bf_net_find_tensor(a, "layer1.0.downsample.0.weight") == NULL);
    v = bf_net_find_tensor(a, "layer3.0.bn2.running_var");
    CHECK(v && v->is_buffer && v->count == 64);
    /* views tile the parameter and buffer arrays exactly */
    size_t params = 0, buffers = 0;
    for (int i = 0; i < bf_net_num_tensors(a); i++) {
        v = bf_net_tensor(a, i);
        if (v->is_buffer) {
            CHECK(v->offset == buffers);
            buffers += v->count;
        } else {
            CHECK(v->offset == params);
            params += v->count;
        }
    }
    CHECK(params == bf_net_num_params(a) && buffers == bf_net_num_buffers(a));
    CHECK(bf_net_new("resnet9", 3, 32, 32, 10, 2, 1, &err) == NULL && strstr(err.msg, "resnet9"));
    CHECK(bf_net_new("cnn", 1, 30, 30, 10, 2, 1, &err) == NULL);
    bf_net_destroy(&a);
    bf_net_destroy(&b);
}

/* Kaiming-normal (fan_out) convs, PyTorch-default linear, BN 1/0, running stats 0/1; seeded. */
static void test_init(void) {
    bf_err_t err;
    bf_net_t *a = bf_net_new("resnet8", 3, 32, 32, 10, 1, 1, &err), *b = bf_net_new("resnet8", 3, 32, 32, 10, 1, 1, &err);
    bf_net_init(a, 42);
    bf_net_init(b, 42);
    CHECK(!memcmp(bf_net_params(a), bf_net_params(b), sizeof(float) * bf_net_num_params(a)));
    bf_net_init(b, 43);
    CHECK(memcmp(bf_net_params(a), bf_net_params(b), sizeof(float) * bf_net_num_params(a)) != 0);
    const float *p = bf_net_params(a), *buf = bf_net_buffers(a);
    for (int t = 0; t < bf_net_num_tensors(a); t++) {
        const bf_tensor_view_t *v = bf_net_tensor(a, t);
        const float *x = (v->is_buffer ? buf : p) + v->offset;
        double s = 0, s2 = 0, mx = 0;
        for (size_t i = 0; i < v->count; i++) s += x[i], s2 += (double)x[i] * x[i], mx = fmax(mx, fabs(x[i]));
        double mean = s / v->count, sd = sqrt(s2 / v->count - mean * mean);
        if (v->ndim == 4) { /* conv: N(0, 2 / (OC*K*K)); the sample std is within 4 standard errors */
            double want = sqrt(2.0 / (v->shape[0] * v->shape[2] * v->shape[3]));
            CHECK_MSG(fabs(sd - want) <= 4 * want / sqrt(2.0 * v->count), "%s std %.4f want %.4f", v->name, sd, want);
        } else if (!strcmp(v->name, "fc.weight") || !strcmp(v->name, "fc.bias")) {
            CHECK_MSG(mx <= 1.0 / sqrt(64.0), "%s exceeds 1/sqrt(fan_in)", v->name);
            CHECK(mx > 0.5 / sqrt(64.0));
        } else if (strstr(v->name, "running_var") || (strstr(v->name, "weight") && v->ndim == 1)) {
            CHECK_MSG(mean == 1.0 && sd == 0, "%s should be all ones", v->name);
        } else {
            CHECK_MSG(mx == 0, "%s should be all zeros", v->name);
        }
    }
    bf_net_destroy(&a);
    bf_net_destroy(&b);
}

/* Threads split the batch differently but the math is the same. */
static void test_threads_agree(void) {
    bf_err_t err;
    int n = 8;
    bf_net_t *a = bf_net_new("resnet8", 3, 16, 16, 10, n, 1, &err), *b = bf_net_new("resnet8", 3, 16, 16, 10, n, 2, &err);
    bf_net_init(a, 3);
    bf_net_init(b, 3);
    size_t in = (size_t)n * 3 * 16 * 16;
    float *x = malloc(sizeof(float) * in);
    int32_t y[8];
    for (size_t i = 0; i < in; i++) x[i] = (float)bf_rng_normal(&rng);
    for (int i = 0; i < n; i++) y[i] = i % 10;
    double la = bf_net_train_step(a, x, y, n, NULL), lb = bf_net_train_step(b, x, y, n, NULL);
    CHECK_NEAR(la, lb, 1e-5);
    double maxd = 0, maxg = 0;
    for (size_t i = 0; i < bf_net_num_params(a); i++) {
        maxd = fmax(maxd, fabs(bf_net_grads(a)[i] - bf_net_grads(b)[i]));
        maxg = fmax(maxg, fabs(bf_net_grads(a)[i]));
    }
    CHECK_MSG(maxd <= 1e-4 * maxg, "max grad diff %.3g (max grad %.3g)", maxd, maxg);
    for (size_t i = 0; i < bf_net_num_buffers(a); i++) CHECK_NEAR(bf_net_buffers(a)[i], bf_net_buffers(b)[i], 1e-5);
    float la_[80], lb_[80];
    bf_net_predict(a, x, n, la_);
    bf_net_predict(b, x, n, lb_);
    for (int i = 0; i < 80; i++) CHECK_NEAR(la_[i], lb_[i], 1e-4);
    /* one image at a time: the 2-thread net splits every layer between its threads */
    for (int i = 0; i < n; i++) {
        bf_net_predict(b, x + (size_t)i * 3 * 16 * 16, 1, lb_);
        for (int k = 0; k < 10; k++) CHECK_NEAR(lb_[k], la_[i * 10 + k], 1e-4);
    }
    free(x);
    bf_net_destroy(&a);
    bf_net_destroy(&b);
}

/* bf_net_objective_step objectives: the softmax cross-entropy (so its gradients must be
 * bf_net_train_step's) and a smooth other one, sum over images of w . tanh(z / 4) (w fixed
 * per class), whose gradients are checked against central differences. */
static const int32_t *obj_y;
static double obj_xent(void *ctx, const float *z, int n, int K, float *dz) {
    (void)ctx;
    return bf_softmax_xent(dz, NULL, z, obj_y, n, K, n);
}
static double obj_tanh(void *ctx, const float *z, int n, int K, float *dz) {
    (void)ctx;
    double v = 0;
    for (int i = 0; i < n * K; i++) {
        double w = 1.0 + (i % K) - 0.37 * K, t = tanh(z[i] / 4.0);
        v += w * t, dz[i] = (float)(w * (1 - t * t) / 4.0);
    }
    return v;
}

static void test_objective_step(int threads) {
    bf_err_t err;
    int n = 6, C = 1, H = 12, W = 12;
    bf_net_t *a = bf_net_new("resnet8", C, H, W, 10, n, threads, &err), *b = bf_net_new("resnet8", C, H, W, 10, n, threads, &err);
    bf_net_init(a, 5), bf_net_init(b, 5);
    size_t P = bf_net_num_params(a), NB = bf_net_num_buffers(a), in = (size_t)n * C * H * W;
    float *x = malloc(sizeof(float) * in), *g = malloc(sizeof(float) * P), *d = malloc(sizeof(float) * P);
    float *buf0 = malloc(sizeof(float) * NB);
    int32_t y[6] = {0, 3, 3, 9, 1, 5};
    for (size_t i = 0; i < in; i++) x[i] = (float)bf_rng_normal(&rng);
    obj_y = y;
    memcpy(buf0, bf_net_buffers(b), sizeof(float) * NB);
    double la = bf_net_train_step(a, x, y, n, NULL), lb = bf_net_objective_step(b, x, n, obj_xent, NULL, 1);
    CHECK_NEAR(la, lb, 1e-6);
    CHECK_MSG(!memcmp(bf_net_grads(a), bf_net_grads(b), sizeof(float) * P),
              "threads %d: the cross-entropy's gradients differ from bf_net_train_step's", threads);
    CHECK_MSG(!memcmp(buf0, bf_net_buffers(b), sizeof(float) * NB), "running statistics changed");
    /* backward 0: the value only, gradients untouched; bad n: NaN */
    memcpy(g, bf_net_grads(b), sizeof(float) * P);
    CHECK_NEAR(bf_net_objective_step(b, x, n, obj_xent, NULL, 0), lb, 1e-12);
    CHECK(!memcmp(g, bf_net_grads(b), sizeof(float) * P));
    CHECK(isnan(bf_net_objective_step(b, x, 0, obj_xent, NULL, 1)) && isnan(bf_net_objective_step(b, x, n + 1, obj_xent, NULL, 1)));
    CHECK(isnan(bf_net_objective_step(b, x, n, NULL, NULL, 1)));
    /* another objective: gradient along d = normalize(g/|g| + r/|r|) against central differences */
    bf_net_objective_step(b, x, n, obj_tanh, NULL, 1);
    memcpy(g, bf_net_grads(b), sizeof(float) * P);
    for (size_t i = 0; i < P; i++) d[i] = (float)bf_rng_normal(&rng);
    normalize(d, P);
    float *gn = malloc(sizeof(float) * P);
    memcpy(gn, g, sizeof(float) * P);
    normalize(gn, P);
    for (size_t i = 0; i < P; i++) d[i] += gn[i];
    normalize(d, P);
    float *p = bf_net_params(b), *saved = malloc(sizeof(float) * P);
    memcpy(saved, p, sizeof(float) * P);
    double analytic = 0;
    for (size_t i = 0; i < P; i++) analytic += (double)g[i] * d[i];
    for (size_t i = 0; i < P; i++) p[i] = (float)(saved[i] + FD_H * d[i]);
    double vp = bf_net_objective_step(b, x, n, obj_tanh, NULL, 0);
    for (size_t i = 0; i < P; i++) p[i] = (float)(saved[i] - FD_H * d[i]);
    double vm = bf_net_objective_step(b, x, n, obj_tanh, NULL, 0);
    memcpy(p, saved, sizeof(float) * P);
    double numeric = (vp - vm) / (2 * FD_H), rel = fabs(analytic - numeric) / fmax(fabs(analytic), 1e-9);
    CHECK_MSG(rel <= FD_RTOL, "threads %d: objective gradient %.6g vs central difference %.6g (rel %.3g)", threads, analytic,
              numeric, rel);
    free(x), free(g), free(d), free(gn), free(saved), free(buf0);
    bf_net_destroy(&a), bf_net_destroy(&b);
}

/* Generated 4-class data: each class is a bright square in one quadrant plus noise. */
static void make_data(float *x, int32_t *y, int n, int H, bf_rng_t *r) {
    for (int i = 0; i < n; i++) {
        int c = (int)bf_rng_below(r, 4);
        y[i] = c;
        for (int h = 0; h < H; h++)
            for (int w = 0; w < H; w++) {
                int in_quadrant = (h < H / 2) == (c < 2) && (w < H / 2) == (c % 2 == 0);
                x[(size_t)i * H * H + h * H + w] = (in_quadrant ? 1.0f : 0.0f) + 0.3f * (float)bf_rng_normal(r);
            }
    }
}

static double train_tiny(const char *arch, uint64_t seed, float *weights_out) {
    bf_err_t err;
    const int B = 16, H = 12, steps = 60;
    bf_net_t *net = bf_net_new(arch, 1, H, H, 4, B, 2, &err);
    bf_net_init(net, seed);
    bf_sgd_t *opt = bf_sgd_new(bf_net_num_params(net), 0.9, 5e-4, 1);
    bf_rng_t r;
    bf_rng_seed(&r, seed);
    float *x = malloc(sizeof(float) * B * H * H);
    int32_t y[16];
    double loss = 0;
    for (int s = 0; s < steps; s++) {
        make_data(x, y, B, H, &r);
        loss = bf_net_train_step(net, x, y, B, NULL);
        bf_sgd_step(opt, bf_net_params(net), bf_net_grads(net), 0.05);
    }
    /* held-out batch in eval mode */
    make_data(x, y, B, H, &r);
    float logits[64];
    bf_net_predict(net, x, B, logits);
    int ok = 0;
    for (int i = 0; i < B; i++) {
        int best = 0;
        for (int k = 1; k < 4; k++) best = logits[i * 4 + k] > logits[i * 4 + best] ? k : best;
        ok += best == y[i];
    }
    printf("%s: final training loss %.4f, held-out accuracy %d/%d\n", arch, loss, ok, B);
    CHECK_MSG(ok >= 14, "%s held-out accuracy %d/16", arch, ok);
    memcpy(weights_out, bf_net_params(net), sizeof(float) * bf_net_num_params(net));
    size_t P = bf_net_num_params(net);
    free(x);
    bf_sgd_destroy(&opt);
    bf_net_destroy(&net);
    return loss + 0 * (double)P;
}

/* The single-image path of the CNN (max-pool, ReLU, linear split across threads) agrees too. */
static void test_single_cnn(void) {
    bf_err_t err;
    bf_net_t *a = bf_net_new("cnn", 1, 16, 16, 10, 4, 1, &err), *b = bf_net_new("cnn", 1, 16, 16, 10, 4, 2, &err);
    bf_net_init(a, 9);
    bf_net_init(b, 9);
    float x[4 * 256], la[40], lb[10];
    for (int i = 0; i < 4 * 256; i++) x[i] = (float)bf_rng_normal(&rng);
    bf_net_predict(a, x, 4, la);
    for (int i = 0; i < 4; i++) {
        bf_net_predict(b, x + i * 256, 1, lb);
        for (int k = 0; k < 10; k++) CHECK_NEAR(lb[k], la[i * 10 + k], 1e-4);
    }
    bf_net_destroy(&a);
    bf_net_destroy(&b);
}

static void test_training(const char *arch) {
    float *w1 = malloc(sizeof(float) * 200000), *w2 = malloc(sizeof(float) * 200000);
    double l1 = train_tiny(arch, 11, w1), l2 = train_tiny(arch, 11, w2);
    CHECK_MSG(l1 < 0.25, "%s: loss %.4f after 60 steps, bound 0.25 (starts near log 4 = 1.386)", arch, l1);
    bf_err_t err;
    bf_net_t *net = bf_net_new(arch, 1, 12, 12, 4, 16, 2, &err);
    CHECK_MSG(l1 == l2 && !memcmp(w1, w2, sizeof(float) * bf_net_num_params(net)),
              "%s: same seed, different weights", arch);
    bf_net_destroy(&net);
    free(w1), free(w2);
}

/* bf_net_recalibrate_bn on 150 images in batches of 64, 64, 22: bn1's running mean and unbiased
 * variance must be the average over the three batches of conv1's output statistics, computed
 * here with bf_conv2d_forward (conv1 has no bias). */
static void test_recalibrate_bn(void) {
    enum { N = 150, B = 64, H = 10, OC = 16 };
    bf_err_t err;
    bf_net_t *a = bf_net_new("resnet8", 1, H, H, 10, B, 1, &err), *b = bf_net_new("resnet8", 1, H, H, 10, B, 2, &err);
    bf_net_init(a, 3), bf_net_init(b, 3);
    size_t np = bf_net_num_params(a), nb = bf_net_num_buffers(a);
    float *x = malloc(sizeof(float) * N * H * H), *y = malloc(sizeof(float) * B * OC * H * H);
    float *p0 = malloc(sizeof(float) * np), *saved = malloc(sizeof(float) * nb);
    for (int i = 0; i < N * H * H; i++) x[i] = (float)(0.5 + bf_rng_normal(&rng));
    memcpy(p0, bf_net_params(a), sizeof(float) * np);
    bf_net_recalibrate_bn(a, x, N);
    const float *w = bf_net_params(a) + bf_net_find_tensor(a, "conv1.weight")->offset;
    const float *rm = bf_net_buffers(a) + bf_net_find_tensor(a, "bn1.running_mean")->offset;
    const float *rv = bf_net_buffers(a) + bf_net_find_tensor(a, "bn1.running_var")->offset;
    float *scratch = malloc(sizeof(float) * (bf_conv2d_scratch(B, 1, H, H, OC, 3, 1, 1) + 1));
    double mean[OC] = {0}, var[OC] = {0}, worst = 0;
    int batches = 0;
    for (int done = 0; done < N; done += B, batches++) {
        int m = N - done < B ? N - done : B;
        bf_conv2d_forward(y, x + (size_t)done * H * H, w, NULL, m, 1, H, H, OC, 3, 1, 1, scratch);
        for (int c = 0; c < OC; c++) {
            double s = 0, s2 = 0, cnt = (double)m * H * H;
            for (int i = 0; i < m; i++)
                for (int k = 0; k < H * H; k++) {
                    double v = y[((size_t)i * OC + c) * H * H + k];
                    s += v, s2 += v * v;
                }
            double mu = s / cnt;
            mean[c] += mu, var[c] += (s2 / cnt - mu * mu) * cnt / (cnt - 1);
        }
    }
    for (int c = 0; c < OC; c++) {
        worst = fmax(worst, fabs(rm[c] - mean[c] / batches) / (fabs(mean[c] / batches) + 1e-3));
        worst = fmax(worst, fabs(rv[c] - var[c] / batches) / (var[c] / batches));
    }
    printf("recalibrated bn1 vs direct batch averages: worst relative difference %.3g\n", worst);
    CHECK(worst < 1e-4);
    CHECK(!memcmp(p0, bf_net_params(a), sizeof(float) * np)); /* parameters untouched */
    /* the old statistics are forgotten: scrambled buffers give the same result */
    memcpy(saved, bf_net_buffers(a), sizeof(float) * nb);
    for (size_t i = 0; i < nb; i++) bf_net_buffers(a)[i] = (float)(1 + fabs(bf_rng_normal(&rng)));
    bf_net_recalibrate_bn(a, x, N);
    CHECK(!memcmp(saved, bf_net_buffers(a), sizeof(float) * nb));
    /* and the threads split the batches without changing the statistics beyond rounding */
    bf_net_recalibrate_bn(b, x, N);
    double diff = 0;
    for (size_t i = 0; i < nb; i++)
        diff = fmax(diff, fabs(bf_net_buffers(b)[i] - saved[i]) / (fabs(saved[i]) + 1e-3));
    CHECK_MSG(diff < 1e-4, "1 vs 2 threads: %.3g", diff);
    bf_net_destroy(&a), bf_net_destroy(&b);
    free(x), free(y), free(p0), free(saved), free(scratch);
}

/* Eval mode has no batch statistics and bf_net_predict runs a batch image by image, so an image's
 * logits are bit-identical whether it is predicted alone (one-thread net) or in a batch, on one
 * thread or split over two (each image stays on one thread). A 3x16x16 ResNet8 covers the
 * stride-1, stride-2 and 1x1 convolutions; 7 images split unevenly over two threads. */
static void test_batch_is_per_image(void) {
    enum { N = 7, IN = 3 * 16 * 16, K = 10 };
    bf_err_t err;
    bf_net_t *one = bf_net_new("resnet8", 3, 16, 16, K, N, 1, &err), *two = bf_net_new("resnet8", 3, 16, 16, K, N, 2, &err);
    CHECK_MSG(one && two, "%s", err.msg);
    if (!one || !two) return;
    bf_net_init(one, 5);
    bf_net_init(two, 5);
    /* non-trivial BN statistics, so the eval-mode scale and shift differ from 1 and 0 */
    for (size_t i = 0; i < bf_net_num_buffers(one); i++)
        bf_net_buffers(one)[i] = bf_net_buffers(two)[i] = (float)(0.5 + 0.25 * bf_rng_uniform(&rng));
    static float x[N * IN], batch1[N * K], batch2[N * K], alone[K];
    for (int i = 0; i < N * IN; i++) x[i] = (float)bf_rng_normal(&rng);
    bf_net_predict(one, x, N, batch1);
    bf_net_predict(two, x, N, batch2);
    CHECK_MSG(!memcmp(batch1, batch2, sizeof batch1), "batch logits differ between 1 and 2 threads");
    for (int i = 0; i < N; i++) {
        bf_net_predict(one, x + (size_t)i * IN, 1, alone);
        CHECK_MSG(!memcmp(alone, batch1 + (size_t)i * K, sizeof alone), "image %d: alone and in a batch differ", i);
    }
    bf_net_destroy(&one);
    bf_net_destroy(&two);
}

int main(int argc, char **argv) {
    bf_blas_init(argc, argv);
    bf_rng_seed(&rng, 99);
    printf("engine path %s\n", bf_engine_isa_name());
    test_shapes();
    test_init();
    gradient_checks("resnet8", 1, 12, 12, 6, 2);
    gradient_checks("resnet8", 3, 9, 9, 3, 1);
    gradient_checks("cnn", 1, 8, 8, 4, 2);
    test_threads_agree();
    test_objective_step(1);
    test_objective_step(2);
    test_single_cnn();
    test_batch_is_per_image();
    test_training("resnet8");
    test_training("cnn");
    test_recalibrate_bn();
    return bf_test_done("test_net");
}

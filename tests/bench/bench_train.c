/* bench_train.c: `blockfed-bench train [--json] [--seconds S] [--threads T] [--batch B] [--torch PATH]`
 * ResNet8 training images/s, batch inference images/s and single-image latency at 1x28x28 and
 * 3x32x32, with the OpenBLAS core in use. Random data: throughput does not depend on values.
 * --torch runs the project's PyTorch counterpart (scripts/torch_bench.py, over
 * scripts/torch_models.py) after each shape, so both engines are measured on the same machine
 * state and the ratios mean something on a noisy VM. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bf_models.h"

typedef struct {
    double train, infer, single_ms;
} figures_t;

/* Runs fn repeatedly for about `seconds` after 3 warm-up calls; returns calls per second. */
#define RATE(seconds, call)                                      \
    ({                                                           \
        for (int w_ = 0; w_ < 3; w_++) call;                     \
        long n_ = 0;                                             \
        double t0_ = bf_now();                                   \
        while (bf_now() - t0_ < (seconds)) {                     \
            call;                                                \
            n_++;                                                \
        }                                                        \
        n_ / (bf_now() - t0_);                                   \
    })

static int measure(int C, int H, int W, int batch, int threads, double seconds, figures_t *f) {
    bf_err_t err;
    bf_net_t *net = bf_net_new("resnet8", C, H, W, 10, batch, threads, &err);
    if (!net) {
        fprintf(stderr, "bench: %s\n", err.msg);
        return -1;
    }
    bf_net_t *one = bf_net_new("resnet8", C, H, W, 10, 1, threads, &err);
    bf_net_init(net, 1);
    bf_net_init(one, 1);
    bf_sgd_t *opt = bf_sgd_new(bf_net_num_params(net), 0.9, 5e-4, 0);
    size_t in = (size_t)batch * C * H * W;
    float *x = malloc(sizeof(float) * in), *logits = malloc(sizeof(float) * batch * 10);
    int32_t *y = malloc(sizeof(int32_t) * batch);
    bf_rng_t rng;
    bf_rng_seed(&rng, 1);
    for (size_t i = 0; i < in; i++) x[i] = (float)bf_rng_normal(&rng);
    for (int i = 0; i < batch; i++) y[i] = (int32_t)bf_rng_below(&rng, 10);

    f->train = batch * RATE(seconds, (bf_net_train_step(net, x, y, batch, NULL),
                                      bf_sgd_step(opt, bf_net_params(net), bf_net_grads(net), 0.05)));
    f->infer = batch * RATE(seconds / 2, bf_net_predict(net, x, batch, logits));
    f->single_ms = 1000.0 / RATE(seconds / 2, bf_net_predict(one, x, 1, logits));
    free(x), free(logits), free(y);
    bf_sgd_destroy(&opt);
    bf_net_destroy(&net);
    bf_net_destroy(&one);
    return 0;
}

/* Runs the PyTorch script (scripts/torch_bench.py's interface: --input CxHxW --batch --threads
 * --seconds, one JSON line with "train_img_per_s", "infer_img_per_s" and "single_image_ms") for
 * the same shape and reads that line; returns 0 and fills f on success. */
static int measure_torch(const char *script, int C, int H, int W, int batch, int threads, double seconds, figures_t *f) {
    char cmd[1024], line[1024];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 '%s' --input %dx%dx%d --batch %d --threads %d --seconds %g 2>/dev/null",
             script, C, H, W, batch, threads, seconds);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    int ok = 0;
    while (fgets(line, sizeof line, p)) {
        char *a = strstr(line, "\"train_img_per_s\": "), *b = strstr(line, "\"infer_img_per_s\": "),
             *c = strstr(line, "\"single_image_ms\": ");
        if (a && b && c) {
            f->train = atof(a + 19);
            f->infer = atof(b + 19);
            f->single_ms = atof(c + 19);
            ok = 1;
        }
    }
    return pclose(p) == 0 && ok ? 0 : -1;
}

int bench_train_main(int argc, char **argv) {
    int json = 0, threads = 2, batch = 64;
    double seconds = 5;
    const char *torch = NULL;
    static const struct option opts[] = {{"json", no_argument, 0, 'j'},     {"seconds", required_argument, 0, 's'},
                                         {"threads", required_argument, 0, 't'}, {"batch", required_argument, 0, 'b'},
                                         {"help", no_argument, 0, 'h'},     {"torch", required_argument, 0, 'T'},
                                         {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'j': json = 1; break;
        case 's': seconds = atof(optarg); break;
        case 't': threads = atoi(optarg); break;
        case 'b': batch = atoi(optarg); break;
        case 'T': torch = optarg; break;
        case 'h':
            printf("usage: blockfed-bench train [--json] [--seconds S=5] [--threads T=2] [--batch B=64]\n"
                   "                            [--torch PATH]\n"
                   "With --torch, runs the PyTorch reference PATH (the project's is scripts/torch_bench.py,\n"
                   "run by /usr/bin/python3; needs python3-torch) right after each measurement (same\n"
                   "shape, batch and threads) and prints both and the ratios, e.g. from the source tree:\n"
                   "  build/tests/bench/blockfed-bench train --torch scripts/torch_bench.py\n");
            return 0;
        default: return 2;
        }
    }
    if (seconds <= 0 || threads < 1 || batch < 1) {
        fprintf(stderr, "bench train: bad --seconds/--threads/--batch\n");
        return 2;
    }
    static const int shapes[2][3] = {{1, 28, 28}, {3, 32, 32}};
    for (int s = 0; s < 2; s++) {
        figures_t f, t;
        if (measure(shapes[s][0], shapes[s][1], shapes[s][2], batch, threads, seconds, &f)) return 1;
        int have_torch = torch && measure_torch(torch, shapes[s][0], shapes[s][1], shapes[s][2], batch, threads, seconds, &t) == 0;
        if (torch && !have_torch) fprintf(stderr, "bench: could not run %s\n", torch);
        if (json)
            printf("{\"engine\":\"blockfed\",\"model\":\"resnet8\",\"input\":\"%dx%dx%d\",\"batch\":%d,\"threads\":%d,"
                   "\"openblas_core\":\"%s\",\"train_img_per_s\":%.1f,\"infer_img_per_s\":%.1f,\"single_image_ms\":%.3f}\n",
                   shapes[s][0], shapes[s][1], shapes[s][2], batch, threads, bf_blas_corename(), f.train, f.infer,
                   f.single_ms);
        else
            printf("resnet8 %dx%dx%d batch %d, %d threads, OpenBLAS %s: train %.0f img/s, inference %.0f img/s, "
                   "single image %.3f ms\n",
                   shapes[s][0], shapes[s][1], shapes[s][2], batch, threads, bf_blas_corename(), f.train, f.infer,
                   f.single_ms);
        if (have_torch && json)
            printf("{\"engine\":\"pytorch\",\"input\":\"%dx%dx%d\",\"train_img_per_s\":%.1f,\"infer_img_per_s\":%.1f,"
                   "\"single_image_ms\":%.3f,\"ratio_train\":%.2f,\"ratio_infer\":%.2f,\"ratio_single_latency\":%.2f}\n",
                   shapes[s][0], shapes[s][1], shapes[s][2], t.train, t.infer, t.single_ms, f.train / t.train,
                   f.infer / t.infer, t.single_ms / f.single_ms);
        else if (have_torch)
            printf("pytorch %dx%dx%d: train %.0f img/s, inference %.0f img/s, single image %.3f ms  =>  blockfed/pytorch: "
                   "train x%.2f, inference x%.2f, single-image latency x%.2f faster\n",
                   shapes[s][0], shapes[s][1], shapes[s][2], t.train, t.infer, t.single_ms, f.train / t.train,
                   f.infer / t.infer, t.single_ms / f.single_ms);
        fflush(stdout);
    }
    return 0;
}

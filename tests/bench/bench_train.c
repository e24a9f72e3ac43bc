/* bench_train.c: `blockfed-bench train [--json] [--seconds S] [--threads T] [--batch B] [--isa LIST]
 * [--torch PATH]`: ResNet8 training images/s, batch inference images/s and single-image latency
 * (on T threads, and on one: the setting of every prediction) at 1x28x28 and 3x32x32, with the
 * engine's vector path, the OpenBLAS core, and the fraction of the machine's sgemm peak each figure
 * reaches (the peak is measured here: T threads each running a single-threaded sgemm, as the
 * engine runs). Random data: throughput does not depend on values.
 * --isa runs each listed path (BLOCKFED_ISA) in a child process, one after the other per shape;
 * --torch runs the project's PyTorch counterpart (scripts/torch_bench.py, over
 * scripts/torch_models.py) after each shape, so both engines are measured on the same machine
 * state and the ratios mean something on a noisy VM. */
#include <cblas.h>
#include <getopt.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bf_models.h"

typedef struct {
    double train, infer, single_ms;
    double single1_ms; /* one image on one thread, the setting of every prediction (BF_PREDICT_THREADS) */
    double peak_gflops, train_flops, infer_flops; /* sgemm GFLOP/s over all threads; FLOPs per image */
    char isa[16], core[32];
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

/* Milliseconds per single-image prediction on a one-thread network: the median of 9 timed chunks
 * (a preempted chunk on a shared machine moves a mean far more than a median). */
static double single_one_thread_ms(bf_net_t *solo, const float *x, float *logits, double seconds) {
    double ms[9];
    for (int w = 0; w < 20; w++) bf_net_predict(solo, x, 1, logits);
    for (int r = 0; r < 9; r++) {
        long n = 0;
        double t0 = bf_now();
        while (bf_now() - t0 < seconds / 9 || n < 3) {
            bf_net_predict(solo, x, 1, logits);
            n++;
        }
        ms[r] = (bf_now() - t0) * 1000.0 / n;
    }
    for (int i = 1; i < 9; i++) /* insertion sort of 9 */
        for (int j = i; j > 0 && ms[j] < ms[j - 1]; j--) {
            double t = ms[j];
            ms[j] = ms[j - 1];
            ms[j - 1] = t;
        }
    return ms[4];
}

static int measure(int C, int H, int W, int batch, int threads, double seconds, figures_t *f) {
    bf_err_t err;
    bf_net_t *net = bf_net_new("resnet8", C, H, W, 10, batch, threads, &err);
    if (!net) {
        fprintf(stderr, "bench: %s\n", err.msg);
        return -1;
    }
    bf_net_t *one = bf_net_new("resnet8", C, H, W, 10, 1, threads, &err);
    bf_net_t *solo = bf_net_new("resnet8", C, H, W, 10, 1, 1, &err);
    if (!one || !solo) {
        fprintf(stderr, "bench: %s\n", err.msg);
        bf_net_destroy(&net);
        bf_net_destroy(&one);
        return -1;
    }
    bf_net_init(net, 1);
    bf_net_init(one, 1);
    bf_net_init(solo, 1);
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
    f->single1_ms = single_one_thread_ms(solo, x, logits, seconds / 2);
    bf_net_flops(net, &f->infer_flops, &f->train_flops);
    snprintf(f->isa, sizeof f->isa, "%s", bf_engine_isa_name());
    snprintf(f->core, sizeof f->core, "%s", bf_blas_corename());
    free(x), free(logits), free(y);
    bf_sgd_destroy(&opt);
    bf_net_destroy(&net);
    bf_net_destroy(&one);
    bf_net_destroy(&solo);
    return 0;
}

/* GFLOP/s of `threads` concurrent single-threaded 512^3 sgemms (the engine's threading: one BLAS
 * call per thread), best of a few timed rounds after a warm-up. */
static double sgemm_peak(int threads, double seconds) {
    enum { N = 512 };
    double best = 0;
    float *m = calloc((size_t)threads * 3 * N * N, sizeof(float));
    if (!m) return 0;
    for (size_t i = 0; i < (size_t)threads * 3 * N * N; i++) m[i] = (float)(i % 7) * 0.125f;
    double t_end = bf_now() + seconds;
    for (int round = 0; round < 50 && (round < 3 || bf_now() < t_end); round++) {
        double t0 = bf_now();
        int reps = 4;
#pragma omp parallel num_threads(threads)
        {
            float *a = m + (size_t)omp_get_thread_num() * 3 * N * N, *b = a + N * N, *c = b + N * N;
            for (int r = 0; r < reps; r++)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, N, N, 1.0f, a, N, b, N, 0.0f, c, N);
        }
        double g = 2.0 * N * N * N * reps * threads / (bf_now() - t0) / 1e9;
        if (round > 0 && g > best) best = g; /* round 0 warms up */
    }
    free(m);
    return best;
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

/* Runs this program's `train --child` for one shape with BLOCKFED_ISA=isa and reads its figures.
 * An OpenBLAS core that bf_blas_init chose for this process is not passed on: the child picks the
 * core for its own path. */
static int measure_child(const char *isa, const int *shape, int batch, int threads, double seconds, figures_t *f) {
    char cmd[2048], line[1024], self[1024];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len <= 0) return -1;
    self[len] = 0;
    const char *unset = getenv("BLOCKFED_BLAS_REEXEC") ? "-u OPENBLAS_CORETYPE -u BLOCKFED_BLAS_REEXEC " : "";
    snprintf(cmd, sizeof cmd,
             "env %sBLOCKFED_ISA=%s '%s' train --child --shape %dx%dx%d --batch %d --threads %d --seconds %g",
             unset, isa, self, shape[0], shape[1], shape[2], batch, threads, seconds);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    int ok = 0;
    while (fgets(line, sizeof line, p))
        ok |= sscanf(line, "child %15s %31s %lf %lf %lf %lf %lf %lf %lf", f->isa, f->core, &f->train, &f->infer,
                     &f->single_ms, &f->peak_gflops, &f->train_flops, &f->infer_flops, &f->single1_ms) == 9;
    return pclose(p) == 0 && ok ? 0 : -1;
}

static void print_figures(const figures_t *f, const figures_t *t, const int *shape, int batch, int threads, int json) {
    double tp = f->train * f->train_flops / 1e9 / f->peak_gflops, ip = f->infer * f->infer_flops / 1e9 / f->peak_gflops;
    if (json) {
        printf("{\"engine\":\"blockfed\",\"model\":\"resnet8\",\"input\":\"%dx%dx%d\",\"isa\":\"%s\",\"batch\":%d,"
               "\"threads\":%d,\"openblas_core\":\"%s\",\"sgemm_peak_gflops\":%.1f,\"train_mflop_per_img\":%.1f,"
               "\"infer_mflop_per_img\":%.1f,\"train_img_per_s\":%.1f,\"train_peak_fraction\":%.3f,"
               "\"infer_img_per_s\":%.1f,\"infer_peak_fraction\":%.3f,\"single_image_ms\":%.3f,"
               "\"single_image_1thread_ms\":%.3f",
               shape[0], shape[1], shape[2], f->isa, batch, threads, f->core, f->peak_gflops, f->train_flops / 1e6,
               f->infer_flops / 1e6, f->train, tp, f->infer, ip, f->single_ms, f->single1_ms);
        if (t)
            printf(",\"torch_train_img_per_s\":%.1f,\"torch_infer_img_per_s\":%.1f,\"torch_single_image_ms\":%.3f,"
                   "\"ratio_train\":%.2f,\"ratio_infer\":%.2f,\"ratio_single_latency\":%.2f",
                   t->train, t->infer, t->single_ms, f->train / t->train, f->infer / t->infer, t->single_ms / f->single_ms);
        printf("}\n");
    } else {
        printf("resnet8 %dx%dx%d batch %d, %d threads, path %s, OpenBLAS %s (sgemm peak %.0f GFLOP/s): train %.0f img/s "
               "(%.0f%% of peak), inference %.0f img/s (%.0f%%), single image %.3f ms (%.3f ms on 1 thread)\n",
               shape[0], shape[1], shape[2], batch, threads, f->isa, f->core, f->peak_gflops, f->train, 100 * tp,
               f->infer, 100 * ip, f->single_ms, f->single1_ms);
        if (t)
            printf("  vs pytorch (train %.0f img/s, inference %.0f img/s, single image %.3f ms): train x%.2f, "
                   "inference x%.2f, single-image latency x%.2f faster\n",
                   t->train, t->infer, t->single_ms, f->train / t->train, f->infer / t->infer, t->single_ms / f->single_ms);
    }
}

/* "avx512,avx2" or "all" (every path this CPU has, widest first) -> paths; returns their count. */
static int parse_paths(const char *list, bf_isa_t *paths) {
    int n = 0;
    if (!strcmp(list, "all")) {
        for (int i = bf_isa_best(); i >= BF_ISA_GENERIC; i--) paths[n++] = (bf_isa_t)i;
        return n;
    }
    char buf[64];
    snprintf(buf, sizeof buf, "%s", list);
    for (char *save, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (n == 3 || bf_isa_parse(tok, &paths[n])) return -1;
        n++;
    }
    return n;
}

int bench_train_main(int argc, char **argv) {
    int json = 0, threads = 2, batch = 64, child = 0, only[3] = {0};
    double seconds = 5;
    const char *torch = NULL, *isa_list = NULL;
    static const struct option opts[] = {{"json", no_argument, 0, 'j'},     {"seconds", required_argument, 0, 's'},
                                         {"threads", required_argument, 0, 't'}, {"batch", required_argument, 0, 'b'},
                                         {"help", no_argument, 0, 'h'},     {"torch", required_argument, 0, 'T'},
                                         {"isa", required_argument, 0, 'i'}, {"child", no_argument, 0, 'c'},
                                         {"shape", required_argument, 0, 'S'}, {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'j': json = 1; break;
        case 's': seconds = atof(optarg); break;
        case 't': threads = atoi(optarg); break;
        case 'b': batch = atoi(optarg); break;
        case 'T': torch = optarg; break;
        case 'i': isa_list = optarg; break;
        case 'c': child = 1; break;
        case 'S':
            if (sscanf(optarg, "%dx%dx%d", &only[0], &only[1], &only[2]) != 3) return 2;
            break;
        case 'h':
            printf("usage: blockfed-bench train [--json] [--seconds S=5] [--threads T=2] [--batch B=64]\n"
                   "                            [--isa all|avx512,avx2,generic] [--torch PATH]\n"
                   "Measures the engine's vector path in use (BLOCKFED_ISA, else the CPU's best); --isa\n"
                   "measures each listed path in turn (in child processes). With --torch, runs the PyTorch\n"
                   "reference PATH (the project's is scripts/torch_bench.py, run by /usr/bin/python3; needs\n"
                   "python3-torch) right after each shape (same shape, batch and threads) and prints both\n"
                   "and the ratios, e.g. from the source tree:\n"
                   "  build/tests/bench/blockfed-bench train --isa all --torch scripts/torch_bench.py\n");
            return 0;
        default: return 2;
        }
    }
    bf_isa_t paths[3];
    int npaths = isa_list ? parse_paths(isa_list, paths) : 0;
    if (seconds <= 0 || threads < 1 || batch < 1 || npaths < 0) {
        fprintf(stderr, "bench train: bad --seconds/--threads/--batch/--isa\n");
        return 2;
    }
    if (child) { /* one shape on this process's path, one line for measure_child */
        figures_t f;
        if (measure(only[0], only[1], only[2], batch, threads, seconds, &f)) return 1;
        f.peak_gflops = sgemm_peak(threads, 1.0);
        printf("child %s %s %.3f %.3f %.5f %.3f %.0f %.0f %.5f\n", f.isa, f.core, f.train, f.infer, f.single_ms,
               f.peak_gflops, f.train_flops, f.infer_flops, f.single1_ms);
        return 0;
    }
    static const int shapes[2][3] = {{1, 28, 28}, {3, 32, 32}};
    double peak = npaths ? 0 : sgemm_peak(threads, 1.0);
    for (int s = 0; s < 2; s++) {
        figures_t f[3], t;
        int n = npaths ? npaths : 1;
        for (int k = 0; k < n; k++) {
            int rc = npaths ? measure_child(bf_isa_name(paths[k]), shapes[s], batch, threads, seconds, &f[k])
                            : measure(shapes[s][0], shapes[s][1], shapes[s][2], batch, threads, seconds, &f[k]);
            if (rc) {
                fprintf(stderr, "bench: measuring %s failed\n", npaths ? bf_isa_name(paths[k]) : "the engine");
                return 1;
            }
            if (!npaths) f[k].peak_gflops = peak;
        }
        int have_torch = torch && measure_torch(torch, shapes[s][0], shapes[s][1], shapes[s][2], batch, threads, seconds, &t) == 0;
        if (torch && !have_torch) fprintf(stderr, "bench: could not run %s\n", torch);
        for (int k = 0; k < n; k++) print_figures(&f[k], have_torch ? &t : NULL, shapes[s], batch, threads, json);
        fflush(stdout);
    }
    return 0;
}

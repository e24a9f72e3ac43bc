/* bench_shapley.c: `blockfed-bench shapley [--json] [--images N] [--eval N]`
 * Ten participants each train one local epoch of ResNet8 on their own Fashion-MNIST block, from the
 * same global model, as in a federated round. The game is the coordinator's: U(S) = accuracy of the
 * FedAvg of S's updates on held-out images. Exact Shapley (all 1,024 coalitions) is the reference;
 * the budgeted estimator is measured at 32 and 100 evaluations: relative L2 error, Spearman rank
 * correlation, evaluations used, and valuation time against one participant's local epoch. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bf_datasets.h"
#include "bf_models.h"
#include "bf_shapley.h"
#include "bf_trainer.h"

#define N 10

typedef struct {
    bf_net_t *net;
    const float *g_params, *g_buffers;
    float *params[N], *buffers[N];
    bf_dataset_t *val;
    float mean, std;
    int eval;
} game_t;

static double utility(void *ctx, uint32_t S) {
    game_t *g = ctx;
    size_t np = bf_net_num_params(g->net), nb = bf_net_num_buffers(g->net);
    memcpy(bf_net_params(g->net), g->g_params, sizeof(float) * np);
    memcpy(bf_net_buffers(g->net), g->g_buffers, sizeof(float) * nb);
    const float *p[N], *b[N];
    int64_t n[N];
    int k = 0;
    for (int i = 0; i < N; i++)
        if (S & (1u << i)) p[k] = g->params[i], b[k] = g->buffers[i], n[k++] = 1000;
    if (k) {
        bf_agg_opts_t o;
        bf_err_t err;
        bf_agg_parse("fedavg", &o, &err);
        bf_agg_t *a = bf_agg_new(&o, np, nb);
        bf_agg_apply(a, bf_net_params(g->net), bf_net_buffers(g->net), p, b, n, k, &err);
        bf_agg_destroy(&a);
    }
    double loss, acc;
    bf_evaluate(g->net, g->val, &g->mean, &g->std, g->eval, &loss, &acc);
    return acc;
}

static double rel_l2(const double *a, const double *b) {
    double d = 0, r = 0;
    for (int i = 0; i < N; i++) d += (a[i] - b[i]) * (a[i] - b[i]), r += b[i] * b[i];
    return sqrt(d / r);
}

static void ranks(const double *v, double *r) {
    for (int i = 0; i < N; i++) {
        int less = 0, eq = 0;
        for (int j = 0; j < N; j++) less += v[j] < v[i], eq += v[j] == v[i];
        r[i] = less + (eq + 1) / 2.0;
    }
}

static double spearman(const double *a, const double *b) {
    double ra[N], rb[N], ma = 0, mb = 0, sab = 0, saa = 0, sbb = 0;
    ranks(a, ra), ranks(b, rb);
    for (int i = 0; i < N; i++) ma += ra[i] / N, mb += rb[i] / N;
    for (int i = 0; i < N; i++) sab += (ra[i] - ma) * (rb[i] - mb), saa += (ra[i] - ma) * (ra[i] - ma), sbb += (rb[i] - mb) * (rb[i] - mb);
    return sab / sqrt(saa * sbb);
}

int bench_shapley_main(int argc, char **argv) {
    int json = 0, eval = 1000, c;
    static const struct option opts[] = {{"json", no_argument, 0, 'j'}, {"eval", required_argument, 0, 'e'},
                                         {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 'j') json = 1;
        else if (c == 'e') eval = atoi(optarg);
        else if (c == 'h') return printf("usage: blockfed-bench shapley [--json] [--eval IMAGES=1000]\n"), 0;
        else return 2;
    }
    bf_err_t err;
    bf_dataset_t train, test;
    if (bf_dataset_load("/usr/share/datasets/fashion-mnist", "train", 0, 0, 0, &train, &err) ||
        bf_dataset_load("/usr/share/datasets/fashion-mnist", "test", 0, 0, 0, &test, &err))
        return fprintf(stderr, "bench shapley: %s\n", err.msg), 1;
    float mean, std;
    bf_dataset_channel_stats(&train, &mean, &std);
    bf_blocks_t blocks;
    if (bf_blocks_partition(&train, 1000, 5000, "iid", 7, &blocks, &err)) return fprintf(stderr, "%s\n", err.msg), 1;
    bf_net_t *global = bf_net_new("resnet8", 1, 28, 28, 10, 64, 2, &err);
    bf_net_init(global, 1);
    game_t g = {bf_net_new("resnet8", 1, 28, 28, 10, 256, 2, &err), NULL, NULL, {0}, {0}, &test, mean, std, eval};
    size_t np = bf_net_num_params(global), nb = bf_net_num_buffers(global);
    float *g_params = malloc(sizeof(float) * np), *g_buffers = malloc(sizeof(float) * nb);
    memcpy(g_params, bf_net_params(global), sizeof(float) * np);
    memcpy(g_buffers, bf_net_buffers(global), sizeof(float) * nb);
    double local = 0;
    for (int i = 0; i < N; i++) { /* one local epoch per participant, from the same global model */
        bf_dataset_t mine;
        bf_dataset_subset(&train, blocks.index + (size_t)i * 1000, 1000, &mine, &err);
        memcpy(bf_net_params(global), g_params, sizeof(float) * np);
        memcpy(bf_net_buffers(global), g_buffers, sizeof(float) * nb);
        bf_train_opts_t o = {.batch = 64, .lr = 0.05, .schedule = "constant", .momentum = 0.9, .weight_decay = 5e-4, .seed = (uint64_t)i};
        bf_trainer_t *t = bf_trainer_new(global, &o, &mine, &mean, &std, 1, &err);
        bf_progress_t p;
        double t0 = bf_now();
        bf_trainer_epoch(t, NULL, NULL, &p);
        local += (bf_now() - t0) / N;
        g.params[i] = malloc(sizeof(float) * np), g.buffers[i] = malloc(sizeof(float) * nb);
        memcpy(g.params[i], bf_net_params(global), sizeof(float) * np);
        memcpy(g.buffers[i], bf_net_buffers(global), sizeof(float) * nb);
        bf_trainer_destroy(&t);
        bf_dataset_free(&mine);
    }
    g.g_params = g_params, g.g_buffers = g_buffers;
    double exact[N], est[N], t0 = bf_now();
    bf_shapley_exact(N, utility, &g, exact, &err);
    double t_exact = bf_now() - t0;
    const int budgets[2] = {32, 100};
    for (int k = 0; k < 2; k++) {
        int evals = 0;
        t0 = bf_now();
        bf_shapley_layers(N, utility, &g, budgets[k], 1, est, &evals, &err);
        double t_est = bf_now() - t0;
        if (json)
            printf("{\"bench\":\"shapley\",\"n\":%d,\"model\":\"resnet8\",\"eval_images\":%d,\"budget\":%d,\"evaluations\":%d,"
                   "\"rel_l2_error\":%.4f,\"spearman\":%.3f,\"estimator_s\":%.2f,\"exact_evaluations\":1024,\"exact_s\":%.2f,"
                   "\"local_epoch_s\":%.2f,\"valuation_vs_local_epoch\":%.2f}\n",
                   N, eval, budgets[k], evals, rel_l2(est, exact), spearman(est, exact), t_est, t_exact, local, t_est / local);
        else
            printf("n=%d, %d eval images: estimator with %d evaluations: rel. L2 error %.2f%%, Spearman %.3f, %.2f s "
                   "(exact: 1024 evaluations, %.1f s; one local epoch of 1,000 images: %.2f s)\n",
                   N, eval, evals, 100 * rel_l2(est, exact), spearman(est, exact), t_est, t_exact, local);
        fflush(stdout);
    }
    for (int i = 0; i < N; i++) free(g.params[i]), free(g.buffers[i]);
    free(g_params), free(g_buffers);
    bf_net_destroy(&global), bf_net_destroy(&g.net);
    bf_blocks_free(&blocks);
    bf_dataset_free(&train), bf_dataset_free(&test);
    return 0;
}

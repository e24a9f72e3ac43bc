/* bench_shapley_scale.c: `blockfed-bench shapley-scale [--json] [--clients 50,200,1000] ...` (--help)
 * The first-order estimator the coordinator uses above 16 updates (bf_shapley_gradient) on real
 * federated rounds with many participants: N participants, each with its own Fashion-MNIST block
 * (--images, at most 58,000 / N; images resampled to --side, default 16x16, so that the reference
 * stays affordable), train one local epoch of ResNet8 from the same global model (warmed up centrally on
 * the partition's validation split). Five of them are planted: 0 sends back the global model
 * unchanged (a copy), 1 trains on blank images (no useful data), 2 and 3 hold the same block
 * (different shuffles), 4 flips its labels (y -> 9 - y). The game is the one the estimator values:
 * U(S) = -loss (--utility: or the margin utility, or minus the cross-entropy after the best temperature and class
 * offsets), on the first --eval test images (training-mode forward: BN statistics of the batch), of the global
 * model plus each member's update at its share of the aggregate. Per N it prints the seconds of
 * valuing the round (3 path gradients) against one participant's local epoch, the planted
 * participants' values relative to the largest, and at the N of --reference (default 50) the
 * Spearman correlation and relative L2 error against --ref-evals permutation-sampled evaluations
 * of the same game (antithetic permutation pairs). What the figures mean and those measured:
 * docs/SHAPLEY.md. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bf_datasets.h"
#include "bf_models.h"
#include "bf_shapley.h"
#include "bf_trainer.h"

#define MAX_NS 8

typedef struct {
    bf_net_t *net;
    int n, np;
    const float *theta0;
    float **delta; /* [n][np]: each participant's update minus the global model */
    double *share;
    double *grad;
    float *step; /* sum of share_i delta_i */
    const float *x;
    const int32_t *y;
    int m;
    size_t chw;
    double tau; /* 0: U = -loss; > 0: U = the margin utility at this tau (bf_margin_utility); < 0: U = minus
                 * the cross-entropy after the best recalibration (bf_calibrated_xent) */
    const int32_t *yb; /* the labels of the batch being scored */
    float *z, *dz;     /* tau < 0: the m x 10 logits and their gradient */
    size_t zoff;       /* the batch's offset in them */
} scale_t;

static double keep_logits(void *ctx, const float *z, int n, int K, float *dz) {
    scale_t *s = ctx;
    (void)dz;
    memcpy(s->z + s->zoff, z, sizeof(float) * n * K);
    return 0;
}
static double give_dlogits(void *ctx, const float *z, int n, int K, float *dz) {
    scale_t *s = ctx;
    (void)z;
    memcpy(dz, s->dz + s->zoff, sizeof(float) * n * K);
    return 0;
}

/* tau < 0: the training-mode logits of the current parameters into s->z; the calibrated loss
 * (its gradient at the logits into s->dz if grad) */
static double calibrated(scale_t *s, int grad) {
    int B = bf_net_max_batch(s->net);
    for (int b = 0; b < s->m; b += B) {
        int nb = s->m - b < B ? s->m - b : B;
        s->zoff = (size_t)b * 10;
        bf_net_objective_step(s->net, s->x + (size_t)b * s->chw, nb, keep_logits, s, 0);
    }
    double ab[11];
    return bf_calibrated_xent(s->z, s->y, s->m, 10, ab, grad ? s->dz : NULL);
}

static double margin_batch(void *ctx, const float *z, int n, int K, float *dz) {
    scale_t *s = ctx;
    return bf_margin_utility(z, s->yb, n, K, s->tau, 1.0 / s->m, dz);
}

/* U of params th on the evaluation images (training-mode forward, batches of max_batch) */
static double utility(scale_t *s, const float *th) {
    memcpy(bf_net_params(s->net), th, sizeof(float) * s->np);
    int B = bf_net_max_batch(s->net);
    double l = 0;
    if (s->tau < 0) return -calibrated(s, 0);
    for (int b = 0; b < s->m; b += B) {
        int nb = s->m - b < B ? s->m - b : B;
        s->yb = s->y + b;
        if (s->tau > 0) l += bf_net_objective_step(s->net, s->x + (size_t)b * s->chw, nb, margin_batch, s, 0);
        else l -= bf_net_loss(s->net, s->x + (size_t)b * s->chw, s->y + b, nb) * nb / s->m;
    }
    return l;
}

static int path_grad(void *ctx, double t, double *dots) {
    scale_t *s = ctx;
    float *th = bf_net_params(s->net), *g = bf_net_grads(s->net);
    for (int q = 0; q < s->np; q++) th[q] = s->theta0[q] + (float)t * s->step[q], s->grad[q] = 0;
    int B = bf_net_max_batch(s->net);
    if (s->tau < 0) calibrated(s, 1);
    for (int b = 0; b < s->m; b += B) {
        int nb = s->m - b < B ? s->m - b : B;
        s->yb = s->y + b;
        if (s->tau < 0) { /* backpropagate the calibrated loss's logit gradient (already / m) */
            s->zoff = (size_t)b * 10;
            bf_net_objective_step(s->net, s->x + (size_t)b * s->chw, nb, give_dlogits, s, 1);
            for (int q = 0; q < s->np; q++) s->grad[q] -= (double)g[q];
        } else if (s->tau > 0) { /* gradient of the margin utility: already of U, already scaled by 1/m */
            bf_net_objective_step(s->net, s->x + (size_t)b * s->chw, nb, margin_batch, s, 1);
            for (int q = 0; q < s->np; q++) s->grad[q] += (double)g[q];
        } else {
            bf_net_train_step(s->net, s->x + (size_t)b * s->chw, s->y + b, nb, NULL);
            for (int q = 0; q < s->np; q++) s->grad[q] -= (double)g[q] * nb / s->m;
        }
    }
    for (int i = 0; i < s->n; i++) {
        double d = 0;
        for (int q = 0; q < s->np; q++) d += s->grad[q] * s->delta[i][q];
        dots[i] = s->share[i] * d;
    }
    return 0;
}

/* Permutation sampling of the same game: `evals` evaluations in antithetic pairs of permutations. */
static void reference(scale_t *s, int evals, uint64_t seed, double *phi, double *se) {
    int n = s->n, perms = evals / n;
    perms -= perms % 2;
    float *th = malloc(sizeof(float) * s->np);
    int32_t *order = malloc(sizeof(int32_t) * n);
    double *sq = calloc(n, sizeof(double)), *one = malloc(sizeof(double) * n);
    bf_rng_t r;
    bf_rng_seed(&r, seed);
    memset(phi, 0, sizeof(double) * n);
    double u0 = utility(s, s->theta0);
    for (int p = 0; p < perms; p++) {
        if (p % 2 == 0) {
            for (int i = 0; i < n; i++) order[i] = i;
            bf_rng_shuffle(&r, order, (size_t)n);
        } else {
            for (int i = 0; i < n / 2; i++) {
                int32_t t = order[i];
                order[i] = order[n - 1 - i], order[n - 1 - i] = t;
            }
        }
        memcpy(th, s->theta0, sizeof(float) * s->np);
        double prev = u0;
        for (int k = 0; k < n; k++) {
            int i = order[k];
            for (int q = 0; q < s->np; q++) th[q] += (float)(s->share[i] * s->delta[i][q]);
            double u = utility(s, th);
            one[i] = u - prev, prev = u;
        }
        for (int i = 0; i < n; i++) phi[i] += one[i], sq[i] += one[i] * one[i];
    }
    for (int i = 0; i < n; i++) {
        phi[i] /= perms;
        se[i] = sqrt(fmax(sq[i] / perms - phi[i] * phi[i], 0) / perms); /* pairs are negatively correlated: an upper bound */
    }
    free(th), free(order), free(sq), free(one);
}

static void ranks(const double *v, int n, double *r) {
    int32_t *o = malloc(sizeof(int32_t) * n);
    for (int i = 0; i < n; i++) o[i] = i;
    for (int i = 1; i < n; i++) /* insertion sort by value: n <= a few thousand */
        for (int j = i; j > 0 && v[o[j - 1]] > v[o[j]]; j--) {
            int32_t t = o[j];
            o[j] = o[j - 1], o[j - 1] = t;
        }
    for (int i = 0; i < n;) {
        int k = i;
        while (k + 1 < n && v[o[k + 1]] == v[o[i]]) k++;
        for (int j = i; j <= k; j++) r[o[j]] = (i + k) / 2.0 + 1;
        i = k + 1;
    }
    free(o);
}

static double spearman(const double *a, const double *b, int n) {
    double *ra = malloc(sizeof(double) * n), *rb = malloc(sizeof(double) * n), ma = 0, mb = 0, ab = 0, aa = 0, bb = 0;
    ranks(a, n, ra), ranks(b, n, rb);
    for (int i = 0; i < n; i++) ma += ra[i] / n, mb += rb[i] / n;
    for (int i = 0; i < n; i++)
        ab += (ra[i] - ma) * (rb[i] - mb), aa += (ra[i] - ma) * (ra[i] - ma), bb += (rb[i] - mb) * (rb[i] - mb);
    free(ra), free(rb);
    return aa * bb > 0 ? ab / sqrt(aa * bb) : 0;
}

typedef struct {
    bf_dataset_t train, test;
    float mean, std;
    float *x;
    int32_t *y;
    int side;
} data_t;

/* One round at n participants; prints its line. */
static int scale_round(data_t *D, int n, int images, int eval, const char *split, uint64_t seed, int ref_n,
                       int ref_evals, int json, double tau, int threads) {
    bf_err_t err;
    bf_blocks_t blocks;
    if (images > 58000 / n) images = 58000 / n; /* every participant its own block, 2,000 images kept for the warm start */
    if (bf_blocks_partition(&D->train, images, 2000, split, seed, &blocks, &err) || blocks.nblocks < n)
        return fprintf(stderr, "bench shapley-scale: %d blocks of %d images do not fit (%s)\n", n, images,
                       blocks.nblocks < n ? "too few images" : err.msg),
               -1;
    int S = D->side;
    bf_net_t *global = bf_net_new("resnet8", 1, S, S, 10, 64, threads, &err),
             *net = bf_net_new("resnet8", 1, S, S, 10, 256, threads, &err);
    if (!global || !net) return fprintf(stderr, "bench shapley-scale: %s\n", err.msg), -1;
    bf_net_init(global, 1);
    int np = (int)bf_net_num_params(global);
    bf_train_opts_t o = {.batch = 32, .lr = 0.05, .schedule = "constant", .momentum = 0.9, .seed = 1};
    bf_dataset_t warm;
    bf_progress_t pr;
    if (bf_dataset_subset(&D->train, blocks.val, blocks.nval, &warm, &err)) return -1;
    bf_trainer_t *tr = bf_trainer_new(global, &o, &warm, &D->mean, &D->std, 1, &err); /* a warm start */
    bf_trainer_epoch(tr, NULL, NULL, &pr);
    bf_trainer_destroy(&tr), bf_dataset_free(&warm);
    float *theta0 = malloc(sizeof(float) * np), *step = calloc(np, sizeof(float));
    memcpy(theta0, bf_net_params(global), sizeof(float) * np);
    scale_t s = {net, n, np, theta0, malloc(sizeof(float *) * n), malloc(sizeof(double) * n), malloc(sizeof(double) * np),
                 step, D->x, D->y, eval, (size_t)S * S, tau, NULL, malloc(sizeof(float) * eval * 10),
                 malloc(sizeof(float) * eval * 10), 0};
    double local_s = 0;
    for (int i = 0; i < n; i++) {
        s.delta[i] = calloc(np, sizeof(float));
        s.share[i] = 1.0 / n;
        if (i == 0) continue; /* a copy of the global model */
        bf_dataset_t mine;
        bf_dataset_subset(&D->train, blocks.index + (size_t)(i == 3 ? 2 : i) * images, images, &mine, &err);
        if (i == 1) memset(mine.pixels, 0, (size_t)mine.n * S * S); /* blank images */
        if (i == 4)
            for (int k = 0; k < mine.n; k++) mine.labels[k] = (uint8_t)(9 - mine.labels[k]);
        memcpy(bf_net_params(global), theta0, sizeof(float) * np);
        bf_train_opts_t lo = o;
        lo.seed = (uint64_t)i + 7;
        tr = bf_trainer_new(global, &lo, &mine, &D->mean, &D->std, 1, &err);
        double t0 = bf_now();
        bf_trainer_epoch(tr, NULL, NULL, &pr);
        if (i == 5) local_s = bf_now() - t0;
        bf_trainer_destroy(&tr), bf_dataset_free(&mine);
        for (int q = 0; q < np; q++) s.delta[i][q] = bf_net_params(global)[q] - theta0[q];
    }
    for (int i = 0; i < n; i++)
        for (int q = 0; q < np; q++) step[q] += (float)(s.share[i] * s.delta[i][q]);
    double *phi = malloc(sizeof(double) * n), t0 = bf_now();
    float *full = malloc(sizeof(float) * np);
    for (int q = 0; q < np; q++) full[q] = theta0[q] + step[q];
    double total = utility(&s, full) - utility(&s, theta0);
    int rc = bf_shapley_gradient(n, path_grad, &s, 3, total, phi, &err);
    double value_s = bf_now() - t0, big = 0;
    if (rc) fprintf(stderr, "bench shapley-scale: %s\n", err.msg);
    for (int i = 0; i < n; i++) big = fabs(phi[i]) > big ? fabs(phi[i]) : big;
    double copy = fabs(phi[0]) / big, blank = fabs(phi[1]) / big;
    double dup = fabs(phi[2] - phi[3]) / (0.5 * (fabs(phi[2]) + fabs(phi[3])));
    double flip = phi[4] / big, rho = NAN, err_l2 = NAN, ref_s = 0, se_rel = NAN;
    if (n == ref_n && !rc) {
        double *ref = malloc(sizeof(double) * n), *se = malloc(sizeof(double) * n), d = 0, r2 = 0, s2 = 0;
        double t1 = bf_now();
        reference(&s, ref_evals, seed, ref, se);
        ref_s = bf_now() - t1;
        for (int i = 0; i < n; i++) d += (phi[i] - ref[i]) * (phi[i] - ref[i]), r2 += ref[i] * ref[i], s2 += se[i] * se[i];
        rho = spearman(phi, ref, n), err_l2 = sqrt(d / r2), se_rel = sqrt(s2 / r2);
        free(ref), free(se);
    }
    if (json)
        printf("{\"bench\":\"shapley-scale\",\"n\":%d,\"estimator\":\"gradient\",\"utility\":\"%s\",\"tau\":%g,\"seed\":%llu,\"images_per_participant\":%d,\"eval_images\":%d,"
               "\"valuation_s\":%.3f,\"local_epoch_s\":%.3f,\"u_gain\":%.4f,\"copy_rel\":%.4f,\"blank_rel\":%.4f,"
               "\"duplicate_rel_diff\":%.4f,\"flipper_rel\":%.4f,\"flipper_ok\":%s,\"spearman_vs_reference\":%.3f,"
               "\"rel_l2_vs_reference\":%.4f,\"reference_rel_se\":%.4f,\"reference_evals\":%d,\"reference_s\":%.1f}\n",
               n, tau > 0 ? "margin" : tau < 0 ? "calibrated" : "loss", tau, (unsigned long long)seed, images, eval, value_s, local_s, total, copy, blank, dup, flip, phi[4] <= 0 ? "true" : "false", rho, err_l2,
               se_rel, n == ref_n ? ref_evals : 0, ref_s);
    else
        printf("%s: n = %4d: valuing the round %.2f s (one local epoch %.2f s); U gain %.4f; |copy| %.2f%%, |blank| %.2f%% of "
               "the largest; duplicates differ by %.2f%%; flipper %+.2f%% of the largest%s\n",
               tau > 0 ? "U = margin" : tau < 0 ? "U = -calibrated loss" : "U = -loss", n, value_s, local_s, total, 100 * copy, 100 * blank, 100 * dup, 100 * flip,
               n == ref_n ? "" : "");
    if (!json && n == ref_n)
        printf("          against %d permutation-sampled evaluations (%.0f s): Spearman %.3f, rel. L2 error %.2f%% (reference's "
               "own standard error %.2f%%)\n",
               ref_evals, ref_s, rho, 100 * err_l2, 100 * se_rel);
    fflush(stdout);
    for (int i = 0; i < n; i++) free(s.delta[i]);
    free(s.delta), free(s.share), free(s.z), free(s.dz), free(s.grad), free(theta0), free(step), free(phi), free(full);
    bf_net_destroy(&global), bf_net_destroy(&net);
    bf_blocks_free(&blocks);
    return rc;
}

static int usage(FILE *f) {
    fprintf(f, "usage: blockfed-bench shapley-scale [--json] [--clients 50,200,1000] [--images PER_PARTICIPANT=150]\n"
               "                                    [--eval IMAGES=200] [--split iid|dirichlet:A] [--seed S=7]\n"
               "                                    [--reference N=50] [--ref-evals E=20000] [--side 16|28]\n"
               "                                    [--utility loss|margin[:TAU=1]|calibrated] [--threads T=2]\n"
               "  One ResNet8 round on Fashion-MNIST per N: the coordinator's estimator above 16 updates (first-order\n"
               "  values along the path to the aggregate), its seconds against one local epoch, and planted\n"
               "  participants (a copy of the global model, blank images, two with the same data, a label\n"
               "  flipper); at N = --reference also against E permutation-sampled evaluations of the same game.\n"
               "  Images are resampled to SIDE x SIDE (16: a cheaper game); PER_PARTICIPANT is capped at 58000 / N.\n"
               "  --utility: the game's U, minus the training-mode cross-entropy (loss) or the mean of\n"
               "  sigmoid(margin / TAU), margin = the label's logit - logsumexp of the others' (bf_margin_utility),\n"
               "  or minus the cross-entropy after the best temperature and class offsets (bf_calibrated_xent).\n"
               "  --threads: the engine's threads (training and valuation).\n");
    return f == stdout ? 0 : 2;
}

int bench_shapley_scale_main(int argc, char **argv) {
    int json = 0, images = 150, eval = 200, side = 16, ref_n = 50, ref_evals = 20000, ns[MAX_NS] = {50, 200, 1000}, nn = 3, c;
    int threads = 2;
    double tau = 0; /* U = -loss */
    const char *split = "iid";
    uint64_t seed = 7;
    static const struct option opts[] = {
        {"json", no_argument, 0, 'j'},          {"clients", required_argument, 0, 'c'}, {"images", required_argument, 0, 'i'},
        {"eval", required_argument, 0, 'e'},    {"split", required_argument, 0, 'p'},   {"seed", required_argument, 0, 's'},
        {"reference", required_argument, 0, 'r'}, {"ref-evals", required_argument, 0, 'E'}, {"help", no_argument, 0, 'h'},
        {"side", required_argument, 0, 'S'},    {"utility", required_argument, 0, 'u'}, {"threads", required_argument, 0, 'T'},
        {0, 0, 0, 0}};
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 'j') json = 1;
        else if (c == 'c') {
            nn = 0;
            for (char *p = optarg, *end; *p && nn < MAX_NS; p = *end ? end + 1 : end) {
                long v = strtol(p, &end, 10);
                if (end == p || v < 5 || v > 5000 || (*end && *end != ',')) return usage(stderr);
                ns[nn++] = (int)v;
            }
        } else if (c == 'i') images = atoi(optarg);
        else if (c == 'e') eval = atoi(optarg);
        else if (c == 'p') split = optarg;
        else if (c == 's') seed = strtoull(optarg, NULL, 10);
        else if (c == 'r') ref_n = atoi(optarg);
        else if (c == 'E') ref_evals = atoi(optarg);
        else if (c == 'S') side = atoi(optarg);
        else if (c == 'T') threads = atoi(optarg);
        else if (c == 'u') {
            if (!strcmp(optarg, "loss")) tau = 0;
            else if (!strcmp(optarg, "calibrated")) tau = -1;
            else if (!strcmp(optarg, "margin")) tau = 1;
            else if (!strncmp(optarg, "margin:", 7) && (tau = atof(optarg + 7)) > 0 && tau <= 100) {
            } else return usage(stderr);
        }
        else if (c == 'h') return usage(stdout);
        else return usage(stderr);
    }
    if (optind < argc || !nn || images < 8 || images > 5000 || eval < 10 || eval > 10000 || ref_evals < 2 * ref_n ||
        (side != 16 && side != 28) || threads < 1 || threads > 64)
        return usage(stderr);
    data_t D;
    bf_err_t err;
    D.side = side;
    if (bf_dataset_load("/usr/share/datasets/fashion-mnist", "train", 1, side, side, &D.train, &err) ||
        bf_dataset_load("/usr/share/datasets/fashion-mnist", "test", 1, side, side, &D.test, &err))
        return fprintf(stderr, "bench shapley-scale: %s\n", err.msg), 1;
    bf_dataset_channel_stats(&D.train, &D.mean, &D.std);
    D.x = malloc(sizeof(float) * (size_t)eval * side * side), D.y = malloc(sizeof(int32_t) * eval);
    int32_t *idx = malloc(sizeof(int32_t) * eval);
    for (int i = 0; i < eval; i++) idx[i] = i;
    bf_batch_fill(&D.test, idx, eval, &D.mean, &D.std, NULL, D.x, D.y);
    free(idx);
    int rc = 0;
    for (int k = 0; k < nn && !rc; k++) rc = scale_round(&D, ns[k], images, eval, split, seed, ref_n, ref_evals, json, tau, threads);
    free(D.x), free(D.y);
    bf_dataset_free(&D.train), bf_dataset_free(&D.test);
    return rc ? 1 : 0;
}

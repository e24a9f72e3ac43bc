/* worker.c: the aggregation actor. It builds a task's model fields when the task starts or is
 * restored (so no socket-thread work is O(model)), and for each closed round the socket thread
 * hands over, it values
 * the round's updates (the Shapley game below, before the global model moves: every coalition
 * starts from the round's starting model), aggregates them into the new global model with the
 * task's strategy, re-estimates its BatchNorm statistics, evaluates it on the validation and test
 * images, and writes the checkpoint (plus the strategy's server state) whose SHA-256 the round
 * records, then encodes the model the next round sends. It sees only its coord_job_t and the model
 * fields of the job's task (and its immutable spec, data and blocks); it never touches
 * the ledger, the state store or the socket, so the socket thread keeps answering while it works.
 *
 * The game: U(S) is the accuracy (or -loss, per-image loss capped) on the task's validation
 * images of the round's starting model moved by the task's strategy with S's updates only, its
 * BN statistics re-estimated as the global model's are (the estimators can evaluate a cheaper
 * stand-in, fewer BN images and a weighted sample of the validation images, whose values are moved
 * to sum to the full game's U(all) - U(empty); off by default, VALUE_SAMPLE_IMAGES). Exact Shapley values up to exact_max updates, the surrogate
 * estimator up to BF_SURROGATE_MAXN (the layer estimator if it refuses), first-order values of the
 * additive game above; a round that changes U by less than ROUND_TRUNCATION values everyone at 0
 * (docs/SHAPLEY.md). */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bf_shapley.h"
#include "bf_trainer.h"
#include "coord.h"

char *coord_checkpoint_path(const char *home, const char *task, int round, char *buf, size_t cap) {
    snprintf(buf, cap, "%s/checkpoints/%s/round-%04d.bfm", home, task, round);
    return buf;
}

void coord_file_sha(const char *path, char hex[65]) {
    uint8_t *b = NULL;
    size_t n = 0;
    bf_err_t err;
    hex[0] = 0;
    if (bf_file_read(path, BF_MODEL_FILE_MAX, &b, &n, &err) == 0) bf_sha256_hex(b, n, hex);
    free(b);
}

static void meta_of(const coord_task_t *t, bf_model_meta_t *m) {
    memset(m, 0, sizeof *m);
    m->classes = t->ds->train.classes;
    m->channels = t->ds->train.c;
    for (int i = 0; i < m->classes; i++) snprintf(m->class_names[i], sizeof m->class_names[i], "%s", t->ds->train.class_names[i]);
    memcpy(m->mean, t->ds->mean, sizeof m->mean);
    memcpy(m->std, t->ds->std, sizeof m->std);
}

/* A strategy with server state (fedavgm's momentum) keeps it beside each checkpoint, CKPT.agg:
 * raw little-endian floats, so a resumed task continues with the same momentum. */
static int write_state(const char *ckpt, const float *v, size_t n) {
    char path[4200], tmp[4300];
    snprintf(path, sizeof path, "%s.agg", ckpt);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    int ok = f && fwrite(v, sizeof(float), n, f) == n;
    if (f) ok = (fclose(f) == 0) && ok;
    return ok && rename(tmp, path) == 0 ? 0 : -1;
}

int coord_agg_state_read(const char *ckpt, float *v, size_t n) {
    char path[4200];
    snprintf(path, sizeof path, "%s.agg", ckpt);
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    int ok = fread(v, sizeof(float), n, f) == n && fgetc(f) == EOF; /* exactly n floats */
    fclose(f);
    return ok ? 0 : -1;
}

/* ---- contribution: Shapley values of the round's updates ---------------------------------- */

#define ROUND_TRUNCATION 1e-3 /* a round that changes accuracy less than this values everyone at 0 */
/* The cheaper game the estimators can value (docs/SHAPLEY.md, "The cheaper game"): a coalition
 * model's BN statistics re-estimated on at most this many of the task's recalibration images
 * (every k-th; the new global model gets all of them), and U scored on at most this many of the
 * valuation images, drawn by bf_preds_sample from the empty and full coalitions' predictions on
 * all of them. Both are off (all images): with 400 sampled images the values were 22% (relative
 * L2) from the full game's on a held-out round, with 1,000 11%, against 1.4% for the surrogate's
 * own error at 100 evaluations of the full game. */
#define VALUE_RECAL_IMAGES INT_MAX
#define VALUE_SAMPLE_IMAGES INT_MAX

typedef struct {
    coord_job_t *j;
    const float *g_params, *g_buffers; /* the round's starting model */
    /* U(empty) and U(all) on every valuation image, the full coalition's BN statistics re-estimated
     * on every recalibration image (what the values sum to, what truncation tests) ... */
    double u_empty, u_all;
    /* ... and in the cheaper game the estimators value (its full coalition's model re-estimated
     * on the coalitions' BN images) */
    double c_empty, c_all;
    /* the sample's images (normalized once), a coalition's predictions on them, and the empty and
     * (cheaper) full coalitions' */
    float *x, *z, *z_empty, *z_all;
    int32_t *labels;
    double *image_weight;
    const float *rx; /* the coalition models' BN images: t->recal_x or rx_own */
    float *rx_own;
    int nrx;
    bf_preds_t preds; /* the sample */
    double weight[BF_SURROGATE_MAXN];
} game_t;

/* Puts into t->coalition the round's starting model moved by the task's strategy with S's updates
 * only (the task's strategy, fedavgm's momentum included), its BN statistics re-estimated on the
 * n images rx. */
static void coalition_model(game_t *g, uint32_t S, const float *rx, int n_rx) {
    coord_job_t *j = g->j;
    coord_task_t *t = j->t;
    bf_net_t *net = t->coalition;
    size_t np = bf_net_num_params(net), nb = bf_net_num_buffers(net);
    memcpy(bf_net_params(net), g->g_params, sizeof(float) * np);
    memcpy(bf_net_buffers(net), g->g_buffers, sizeof(float) * nb);
    const float *p[64], *b[64];
    int64_t n[64];
    int k = 0;
    for (int i = 0; i < j->k; i++)
        if (S & (1u << i)) p[k] = j->params[i], b[k] = j->buffers[i], n[k++] = j->samples[i];
    if (k) {
        bf_err_t err;
        bf_agg_t *a = bf_agg_new(&t->agg_opts, np, nb);
        size_t len, len2;
        float *src = bf_agg_state(t->agg, &len), *dst = a ? bf_agg_state(a, &len2) : NULL;
        if (src && dst && len == len2) memcpy(dst, src, sizeof(float) * len); /* fedavgm: the same momentum */
        if (a) bf_agg_apply(a, bf_net_params(net), bf_net_buffers(net), p, b, n, k, &err);
        bf_agg_destroy(&a);
        bf_net_recalibrate_bn(net, rx, n_rx); /* as the global model gets */
    }
}

static int finite_all(const float *v, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i])) return 0;
    return 1;
}

static int net_finite(bf_net_t *net) {
    return finite_all(bf_net_params(net), bf_net_num_params(net)) &&
           finite_all(bf_net_buffers(net), bf_net_num_buffers(net));
}

/* The coalition model's logits on the m images x (labels y). A coalition model that is not finite
 * is never run: it scores what the worst model does (every image wrong, each at the loss cap)
 * instead of whatever NaN logits would happen to give. */
static void model_predict(game_t *g, const float *x, const int32_t *y, int m, float *out) {
    bf_net_t *net = g->j->t->coalition;
    if (net_finite(net)) {
        bf_net_predict(net, x, m, out);
        return;
    }
    int K = g->preds.classes;
    for (int i = 0; i < m; i++)
        for (int k = 0; k < K; k++) out[(size_t)i * K + k] = k == y[i] ? -2 * BF_LOSS_CAP : 0;
}

/* S's logits on the sample, in the cheaper game */
static void coalition_predict(game_t *g, uint32_t S, float *out) {
    coalition_model(g, S, g->rx, g->nrx);
    model_predict(g, g->x, g->labels, g->preds.images, out);
}

/* U(S): accuracy (or -loss) of S's coalition model's predictions on the sample, scored by
 * bf_preds_utility whatever the estimator (so every estimator values the same, bounded game). */
static double coalition_utility(void *ctx, uint32_t S) {
    game_t *g = ctx;
    /* game_init already scored these two; the estimators ask for them again. */
    if (S == 0) return g->c_empty;
    if (S == (1u << g->j->k) - 1) return g->c_all;
    coalition_predict(g, S, g->z);
    return bf_preds_utility(&g->preds, g->z);
}

/* S's coalition model's logits on the sample (the surrogate estimator's evaluation); the empty
 * and full coalitions' come from game_init. */
static int coalition_logits(void *ctx, uint32_t S, float *out) {
    game_t *g = ctx;
    size_t ik = (size_t)g->preds.images * g->preds.classes;
    const float *known = S == 0 ? g->z_empty : S == (1u << g->j->k) - 1 ? g->z_all : NULL;
    if (known) return memcpy(out, known, sizeof(float) * ik), 0;
    coalition_predict(g, S, out);
    return 0;
}

static void game_free(game_t *g) {
    free(g->x), free(g->z), free(g->z_empty), free(g->z_all), free(g->labels), free(g->image_weight), free(g->rx_own);
}

/* The cheaper game's images: the coalitions' BN images (every k-th of the task's), and the sample
 * of the m valuation images xa (labels ya; za0 / za1: the empty and full coalitions' logits on
 * them) copied into g. -1: out of memory. */
static int game_sample(game_t *g, const float *xa, const int32_t *ya, const float *za0, const float *za1, int m,
                       size_t chw) {
    coord_task_t *t = g->j->t;
    int K = g->preds.classes, r = t->nrecal < VALUE_RECAL_IMAGES ? t->nrecal : VALUE_RECAL_IMAGES;
    g->rx = t->recal_x, g->nrx = t->nrecal;
    if (r < t->nrecal) {
        if (!(g->rx_own = malloc(sizeof(float) * r * chw))) return -1;
        for (int i = 0; i < r; i++)
            memcpy(g->rx_own + i * chw, t->recal_x + (size_t)((int64_t)i * t->nrecal / r) * chw, sizeof(float) * chw);
        g->rx = g->rx_own, g->nrx = r;
    }
    int s = m < VALUE_SAMPLE_IMAGES ? m : VALUE_SAMPLE_IMAGES;
    int32_t *idx = malloc(sizeof(int32_t) * m);
    g->image_weight = malloc(sizeof(double) * m);
    g->x = malloc(sizeof(float) * s * chw + 1), g->labels = malloc(sizeof(int32_t) * m);
    g->z = malloc(sizeof(float) * s * K + 1), g->z_empty = malloc(sizeof(float) * s * K + 1);
    g->z_all = malloc(sizeof(float) * s * K + 1);
    bf_err_t err;
    bf_preds_t all = {m, K, ya, NULL, g->j->utility_loss, NULL};
    if (!idx || !g->image_weight || !g->x || !g->labels || !g->z || !g->z_empty || !g->z_all ||
        (s = bf_preds_sample(&all, za0, za1, s, t->spec.seed + (uint64_t)t->round, idx, g->image_weight, &err)) < 1)
        return free(idx), -1;
    for (int i = 0; i < s; i++) {
        memcpy(g->x + i * chw, xa + idx[i] * chw, sizeof(float) * chw);
        memcpy(g->z_empty + (size_t)i * K, za0 + (size_t)idx[i] * K, sizeof(float) * K);
        memcpy(g->z_all + (size_t)i * K, za1 + (size_t)idx[i] * K, sizeof(float) * K);
        g->labels[i] = ya[idx[i]];
    }
    free(idx);
    g->preds = (bf_preds_t){s, K, g->labels, g->weight, g->j->utility_loss, s < m ? g->image_weight : NULL};
    g->c_empty = bf_preds_utility(&g->preds, g->z_empty);
    if (g->nrx < t->nrecal) { /* the full coalition in the cheaper game: its own BN statistics */
        coalition_predict(g, (1u << g->j->k) - 1, g->z_all);
    }
    g->c_all = bf_preds_utility(&g->preds, g->z_all);
    return 0;
}

/* Readies the valuation images, scores the empty and full coalitions on all of them, and draws the
 * cheaper game; -1: out of memory or no valuation images (the round is then not valued). */
static int game_init(game_t *g) {
    coord_task_t *t = g->j->t;
    const bf_dataset_t *v = &t->val;
    int m = t->spec.value_images > 0 && t->spec.value_images < v->n ? t->spec.value_images : v->n, K = v->classes;
    size_t chw = (size_t)v->c * v->h * v->w;
    int32_t *idx = malloc(sizeof(int32_t) * (m ? m : 1)), *ya = malloc(sizeof(int32_t) * (m ? m : 1));
    float *xa = malloc(sizeof(float) * m * chw + 1), *za0 = malloc(sizeof(float) * m * K + 1);
    float *za1 = malloc(sizeof(float) * m * K + 1);
    int rc = -1;
    if (idx && ya && xa && za0 && za1 && m >= 1) {
        for (int i = 0; i < m; i++) idx[i] = i;
        bf_batch_fill(v, idx, m, t->ds->mean, t->ds->std, NULL, xa, ya);
        for (int i = 0; i < g->j->k; i++) g->weight[i] = (double)g->j->samples[i];
        g->preds = (bf_preds_t){m, K, ya, g->weight, g->j->utility_loss, NULL};
        uint32_t all = (1u << g->j->k) - 1;
        coalition_model(g, 0, NULL, 0), model_predict(g, xa, ya, m, za0);
        coalition_model(g, all, t->recal_x, t->nrecal), model_predict(g, xa, ya, m, za1);
        g->u_empty = bf_preds_utility(&g->preds, za0), g->u_all = bf_preds_utility(&g->preds, za1);
        rc = game_sample(g, xa, ya, za0, za1, m, chw);
    }
    free(idx), free(ya), free(xa), free(za0), free(za1);
    return rc;
}

/* ---- many updates: first-order values along the path to the aggregate ---------------------- */

#define VALUE_GRADIENT_IMAGES 1000 /* valuation images the path gradients are taken on */
#define VALUE_GRADIENT_POINTS 3    /* Gauss-Legendre points along the path */

typedef struct {
    coord_job_t *j;
    const float *theta0;
    float *delta;  /* the aggregate's step: sum of c_i (update_i - theta0), c_i = i's share of the samples */
    double *grad;  /* grad of -loss at the current point */
    double *share; /* c_i */
    const float *x;
    const int32_t *y;
    int m;
} path_t;

/* dots[i] = grad(-loss)(theta0 + t delta) . c_i (update_i - theta0), the gradient of the
 * training-mode loss (BN statistics from each batch of the valuation images) over them. */
static int path_grad(void *ctx, double t, double *dots) {
    path_t *p = ctx;
    coord_job_t *j = p->j;
    bf_net_t *net = j->t->coalition;
    size_t np = bf_net_num_params(net);
    float *th = bf_net_params(net), *gr = bf_net_grads(net);
    for (size_t q = 0; q < np; q++) th[q] = p->theta0[q] + (float)t * p->delta[q], p->grad[q] = 0;
    int B = bf_net_max_batch(net);
    size_t chw = (size_t)j->t->val.c * j->t->val.h * j->t->val.w;
    for (int b = 0; b < p->m; b += B) {
        int nb = p->m - b < B ? p->m - b : B;
        bf_net_train_step(net, p->x + (size_t)b * chw, p->y + b, nb, NULL);
        for (size_t q = 0; q < np; q++) p->grad[q] -= (double)gr[q] * nb / p->m;
    }
    for (int i = 0; i < j->k; i++) {
        double d = 0;
        for (size_t q = 0; q < np; q++) d += p->grad[q] * ((double)j->params[i][q] - p->theta0[q]);
        dots[i] = p->share[i] * d;
    }
    return 0;
}

/* The model every update moves by the task's strategy (the new global model), BN statistics
 * re-estimated on all recalibration images, into t->coalition; -1: the strategy failed. */
static int full_model(coord_job_t *j, const float *g_params, const float *g_buffers) {
    coord_task_t *t = j->t;
    bf_net_t *net = t->coalition;
    size_t np = bf_net_num_params(net), nb = bf_net_num_buffers(net), len, len2;
    memcpy(bf_net_params(net), g_params, sizeof(float) * np);
    memcpy(bf_net_buffers(net), g_buffers, sizeof(float) * nb);
    bf_err_t err;
    bf_agg_t *a = bf_agg_new(&t->agg_opts, np, nb);
    float *src = bf_agg_state(t->agg, &len), *dst = a ? bf_agg_state(a, &len2) : NULL;
    if (src && dst && len == len2) memcpy(dst, src, sizeof(float) * len);
    int rc = a ? bf_agg_apply(a, bf_net_params(net), bf_net_buffers(net), (const float *const *)j->params,
                              (const float *const *)j->buffers, j->samples, j->k, &err)
               : -1;
    bf_agg_destroy(&a);
    if (!rc) bf_net_recalibrate_bn(net, t->recal_x, t->nrecal);
    return rc;
}

/* Above BF_SURROGATE_MAXN updates no coalition estimator fits the round's time: each update's
 * first-order effect on the validation loss along the straight path from the starting model to
 * the FedAvg of the updates (bf_shapley_gradient; docs/SHAPLEY.md), the values moved to sum to
 * the round's U(all) - U(empty) in the task's utility. */
static void value_gradient(coord_job_t *j) {
    coord_task_t *t = j->t;
    const bf_dataset_t *v = &t->val;
    bf_net_t *net = t->coalition;
    int m = t->spec.value_images > 0 && t->spec.value_images < v->n ? t->spec.value_images : v->n, K = v->classes;
    size_t chw = (size_t)v->c * v->h * v->w, np = bf_net_num_params(net), nb = bf_net_num_buffers(net);
    int32_t *idx = malloc(sizeof(int32_t) * (m ? m : 1)), *y = malloc(sizeof(int32_t) * (m ? m : 1));
    float *x = malloc(sizeof(float) * m * chw + 1), *z = malloc(sizeof(float) * m * K + 1);
    float *theta0 = malloc(sizeof(float) * (np + nb)), *delta = malloc(sizeof(float) * np);
    double *grad = malloc(sizeof(double) * np), *share = malloc(sizeof(double) * j->k), W = 0;
    bf_err_t err;
    if (idx && y && x && z && theta0 && delta && grad && share && m >= 1) {
        memcpy(theta0, bf_net_params(t->global), sizeof(float) * np);
        memcpy(theta0 + np, bf_net_buffers(t->global), sizeof(float) * nb);
        for (int i = 0; i < m; i++) idx[i] = i;
        bf_batch_fill(v, idx, m, t->ds->mean, t->ds->std, NULL, x, y);
        bf_preds_t p = {m, K, y, NULL, j->utility_loss, NULL};
        bf_net_predict(t->global, x, m, z);
        double u_empty = bf_preds_utility(&p, z), u_all = u_empty;
        if (!full_model(j, theta0, theta0 + np) && net_finite(net)) {
            bf_net_predict(net, x, m, z);
            u_all = bf_preds_utility(&p, z);
        } else {
            u_all = j->utility_loss ? -BF_LOSS_CAP : 0; /* what the worst model scores */
        }
        j->shapley_evals = 2;
        if (fabs(u_all - u_empty) < ROUND_TRUNCATION) {
            j->estimator = "truncated";
        } else {
            for (int i = 0; i < j->k; i++) W += (double)j->samples[i];
            for (int i = 0; i < j->k; i++) share[i] = (double)j->samples[i] / W;
            for (size_t q = 0; q < np; q++) {
                double d = 0;
                for (int i = 0; i < j->k; i++) d += share[i] * ((double)j->params[i][q] - theta0[q]);
                delta[q] = (float)d;
            }
            path_t path = {j, theta0, delta, grad, share, x, y, m < VALUE_GRADIENT_IMAGES ? m : VALUE_GRADIENT_IMAGES};
            if (!bf_shapley_gradient(j->k, path_grad, &path, VALUE_GRADIENT_POINTS, u_all - u_empty, j->phi, &err))
                j->estimator = "gradient", j->shapley_evals += VALUE_GRADIENT_POINTS;
            else
                memset(j->phi, 0, sizeof(double) * j->k); /* a poisoned path (not finite): not valued */
        }
    }
    free(idx), free(y), free(x), free(z), free(theta0), free(delta), free(grad), free(share);
}

/* The round's Shapley values: exact up to exact_max updates, else the surrogate estimator (up to
 * BF_SURROGATE_MAXN updates), else, or if the surrogate refuses (memory, predictions out of
 * range), the layer estimator. */
static void value_round(coord_job_t *j) {
    coord_task_t *t = j->t;
    j->phi = calloc(j->k, sizeof(double));
    if (!j->phi || !j->value) return;
    if (j->k > BF_SURROGATE_MAXN) {
        value_gradient(j);
        return;
    }
    game_t g = {.j = j, .g_params = bf_net_params(t->global), .g_buffers = bf_net_buffers(t->global)};
    if (game_init(&g)) {
        game_free(&g);
        return;
    }
    j->shapley_evals = 2;
    bf_err_t err;
    uint64_t seed = t->spec.seed + (uint64_t)t->round;
    int budget = j->budget > 2 * j->k + 2 ? j->budget : 2 * j->k + 2;
    int truncated = fabs(g.u_all - g.u_empty) < ROUND_TRUNCATION; /* GTG-Shapley's between-round truncation */
    if (truncated) {
        j->estimator = "truncated"; /* everyone 0 */
    } else if (j->k <= j->exact_max) {
        bf_shapley_exact(j->k, coalition_utility, &g, j->phi, &err), j->shapley_evals = 1 << j->k;
        j->estimator = "exact";
    } else if (j->k <= BF_SURROGATE_MAXN &&
               !bf_shapley_surrogate(j->k, coalition_logits, &g, &g.preds, budget, seed, j->phi, &j->shapley_evals, &err)) {
        j->estimator = "surrogate";
    } else {
        bf_shapley_layers(j->k, coalition_utility, &g, budget, seed, j->phi, &j->shapley_evals, &err);
        j->estimator = "layers";
    }
    /* The cheaper game's values sum to its own U(all) - U(empty); the full game's difference is what
     * the round changed, so the gap (the sample's and the BN images' error on the full coalition)
     * is shared equally. */
    double gap = truncated ? 0 : ((g.u_all - g.u_empty) - (g.c_all - g.c_empty)) / j->k;
    for (int i = 0; i < j->k; i++) j->phi[i] += gap;
    /* The utilities are bounded (bf_preds_utility), so this only guards the sums that get paid. */
    for (int i = 0; i < j->k; i++)
        if (!isfinite(j->phi[i])) {
            memset(j->phi, 0, sizeof(double) * j->k), j->estimator = NULL;
            break;
        }
    game_free(&g);
}

static void run_job(coord_job_t *j) {
    coord_task_t *t = j->t;
    bf_err_t err = {{0}};
    double t0 = bf_now();
    value_round(j); /* before the global model moves: coalitions start from it */
    /* the model before the round, kept in case the aggregate is not finite */
    size_t np = bf_net_num_params(t->global), nb = bf_net_num_buffers(t->global), ns = 0;
    const float *state0 = bf_agg_state(t->agg, &ns);
    float *keep = malloc(sizeof(float) * (np + nb + ns + 1));
    if (!keep) {
        snprintf(j->err, sizeof j->err, "out of memory");
        return;
    }
    memcpy(keep, bf_net_params(t->global), sizeof(float) * np);
    memcpy(keep + np, bf_net_buffers(t->global), sizeof(float) * nb);
    if (state0) memcpy(keep + np + nb, state0, sizeof(float) * ns);
    if (bf_agg_apply(t->agg, bf_net_params(t->global), bf_net_buffers(t->global), j->params, j->buffers, j->samples, j->k,
                     &err)) {
        snprintf(j->err, sizeof j->err, "%s", err.msg);
        free(keep);
        return;
    }
    /* Averaged BN statistics do not describe the averaged model's activations (after the first
     * round from a random start, accuracy 0.37 averaged vs 0.69 re-estimated: docs/SHAPLEY.md). */
    bf_net_recalibrate_bn(t->global, t->recal_x, t->nrecal);
    if (!net_finite(t->global)) {
        /* bounded updates can still overflow together (or in the BN statistics): such a model is
         * never sent, checkpointed or sold; the round ends with the model it started from */
        memcpy(bf_net_params(t->global), keep, sizeof(float) * np);
        memcpy(bf_net_buffers(t->global), keep + np, sizeof(float) * nb);
        float *state = bf_agg_state(t->agg, &ns);
        if (state) memcpy(state, keep + np + nb, sizeof(float) * ns);
        j->kept_previous = 1;
    }
    free(keep);
    bf_evaluate(t->global, &t->val, t->ds->mean, t->ds->std, 0, &j->val_loss, &j->val_acc);
    double test_loss;
    bf_evaluate(t->global, &t->ds->test, t->ds->mean, t->ds->std, 0, &test_loss, &j->test_acc);
    bf_model_meta_t meta;
    meta_of(t, &meta);
    if (bf_model_save(t->global, &meta, j->path, &err)) {
        snprintf(j->err, sizeof j->err, "%s", err.msg);
        return;
    }
    coord_file_sha(j->path, j->sha);
    size_t len;
    float *state = bf_agg_state(t->agg, &len);
    if (state && write_state(j->path, state, len)) {
        snprintf(j->err, sizeof j->err, "cannot write the aggregator state next to %s", j->path);
        return;
    }
    j->seconds = bf_now() - t0;
    j->ok = 1;
}

/* ---- building a task's model fields ------------------------------------------------------- */

/* The images aggregated models' BN statistics are re-estimated on: spread over every block of the
 * task's training split (the coordinator holds it), so every block's label mix is represented;
 * none for a model without BN, and at most RECAL_MAX_BYTES of them (large images: fewer). */
#define RECAL_MAX_BYTES (64u << 20)
static int recal_images(coord_task_t *t, int want) {
    const bf_dataset_t *d = &t->ds->train;
    size_t bytes = sizeof(float) * d->c * d->h * d->w;
    if (want > (int)(RECAL_MAX_BYTES / bytes)) want = (int)(RECAL_MAX_BYTES / bytes);
    if (want <= 0 || !t->nb) return 0;
    int32_t *idx = malloc(sizeof(int32_t) * want);
    t->recal_x = malloc(bytes * want);
    if (!idx || !t->recal_x) return free(idx), -1;
    t->nrecal = bf_blocks_spread(&t->blocks, t->blocks.nblocks, want, idx);
    bf_batch_fill(d, idx, t->nrecal, t->ds->mean, t->ds->std, NULL, t->recal_x, NULL);
    free(idx);
    return 0;
}

/* The global model a resumed task goes on from: the checkpoint at j->path, if its digest is the
 * one recorded and it is the task's architecture. */
static bf_net_t *resume_model(coord_job_t *j, bf_err_t *err) {
    coord_task_t *t = j->t;
    char hex[65];
    coord_file_sha(j->path, hex);
    if (strcmp(hex, j->expect_sha)) return bf_err_set(err, "checkpoint %s missing or corrupt", j->path), NULL;
    bf_model_meta_t meta;
    bf_net_t *net = bf_model_load(j->path, 256, j->threads, &meta, err);
    if (net && (strcmp(bf_net_arch(net), t->spec.model) || bf_net_num_params(net) != t->np ||
                bf_net_num_buffers(net) != t->nb)) {
        bf_err_set(err, "checkpoint %s is not a %s of this task's shape", j->path, t->spec.model);
        bf_net_destroy(&net);
    }
    return net;
}

static void build_job(coord_job_t *j) {
    coord_task_t *t = j->t;
    const bf_dataset_t *d = &t->ds->train;
    bf_err_t err = {{0}};
    double t0 = bf_now();
    if (bf_dataset_subset(d, t->blocks.val, t->blocks.nval, &t->val, &err)) goto fail;
    t->global = j->path[0] ? resume_model(j, &err) : bf_net_new(t->spec.model, d->c, d->h, d->w, d->classes, 256, j->threads, &err);
    if (!t->global) goto fail;
    t->coalition = bf_net_new(t->spec.model, d->c, d->h, d->w, d->classes, 256, j->threads, &err);
    t->agg = bf_agg_new(&t->agg_opts, t->np, t->nb);
    if (!t->coalition || !t->agg || recal_images(t, j->recal)) goto fail;
    if (!j->path[0]) {
        bf_net_init(t->global, t->spec.seed);
        /* The starting model's statistics as every aggregated model's will be: otherwise round 1's
         * coalitions would all gain what re-estimation alone gives, a free rider returning the
         * model unchanged included (the empty coalition keeps the initial 0 / 1 statistics). */
        bf_net_recalibrate_bn(t->global, t->recal_x, t->nrecal);
    } else {
        size_t len;
        float *state = bf_agg_state(t->agg, &len);
        if (state && coord_agg_state_read(j->path, state, len))
            snprintf(j->note, sizeof j->note, "aggregator state missing beside the checkpoint; its momentum restarts from zero");
    }
    if (!(j->round_model = coord_blob_of_model(t->global))) goto fail;
    j->seconds = bf_now() - t0;
    j->ok = 1;
    return;
fail:
    snprintf(j->err, sizeof j->err, "%s", err.msg[0] ? err.msg : "out of memory");
}

/* The pipe protocol (coord.h): "JOB" + pointer, answered with the same pointer when done. */
static void worker_actor(zsock_t *pipe, void *args) {
    (void)args;
    zsock_signal(pipe, 0);
    for (;;) {
        char *cmd = NULL;
        void *p = NULL;
        if (zsock_recv(pipe, "sp", &cmd, &p) < 0) break;
        int term = !cmd || !strcmp(cmd, "$TERM");
        if (!term && p) {
            coord_job_t *j = p;
            if (j->build) {
                build_job(j);
            } else {
                run_job(j);
                /* the model the round that goes on sends: the next one's, or this one's again */
                if (j->t->global && (!j->ok || j->t->round + 1 < j->t->spec.rounds))
                    j->round_model = coord_blob_of_model(j->t->global);
            }
            zsock_send(pipe, "p", p);
        }
        zstr_free(&cmd);
        if (term) break;
    }
}

zactor_t *coord_worker_new(void) { return zactor_new(worker_actor, NULL); }

int coord_worker_submit(zactor_t *w, coord_job_t *j) { return zsock_send(w, "sp", "JOB", j); }

coord_job_t *coord_worker_recv(zactor_t *w) {
    void *p = NULL;
    return zsock_recv(w, "p", &p) == 0 ? p : NULL;
}

void coord_job_free(coord_job_t **pj) {
    coord_job_t *j = pj ? *pj : NULL;
    if (!j) return;
    free(j->params);
    free(j->buffers);
    free(j->samples);
    free(j->phi);
    coord_blob_unref(j->round_model);
    free(j);
    *pj = NULL;
}

/* worker.c: the aggregation actor and its valuer thread. The actor builds a task's model fields
 * when the task starts or is restored (so no socket-thread work is O(model)), and for each closed
 * round the socket thread hands over, it keeps what valuing the round needs (the round's
 * valuation file: the starting model, the strategy's state and the updates, before the global
 * model moves; with --valuation inline it values the round there and then instead), aggregates
 * the updates into the new global model with the task's strategy, re-estimates its BatchNorm
 * statistics, evaluates it on the validation and test images, and writes the checkpoint (plus
 * the strategy's server state) whose SHA-256 the round records, then encodes the model the next
 * round sends. The valuer thread values the rounds from their files meanwhile, in order, with a
 * scratch model and images of its own, so valuing round r never holds up round r+1. Both see only
 * their coord_job_t, the actor also the model fields of the job's task, and both the task's
 * immutable spec, data and blocks; they never touch the ledger, the state store or the socket,
 * so the socket thread keeps answering while they work.
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
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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
/* The sampled surrogate (run --shapley-sample): the coalitions other than its 2n + 2 anchors get
 * their BN statistics re-estimated on at most this many of the recalibration images (every k-th),
 * plus what that misses as fitted over the anchors (bf_coalition_fit). Measured in docs/SHAPLEY.md
 * ("the sampled surrogate"): 256 left a held-out round's values 2-5% from the full game's, 512
 * 0.6-1.9%. */
#define VALUE_FIT_RECAL_IMAGES 512

/* What valuing one round needs, wherever it runs: inline on the worker's thread (from the task's
 * model fields, before the global model moves) or on the valuer thread (from the round's
 * valuation file, with its own scratch model and images). The same code values both, so the two
 * give the same values. */
typedef struct {
    const coord_task_t *t; /* its spec, data, blocks and strategy only: immutable while it runs */
    int round, k;
    const float *const *params, *const *buffers; /* the k updates */
    const int64_t *samples;
    const float *g_params, *g_buffers;           /* the round's starting model */
    const float *agg_state;                      /* the strategy's state at the round's start (or NULL) */
    size_t nstate;
    bf_net_t *net;                               /* scratch: the coalition models */
    const bf_dataset_t *val;                     /* the task's validation split */
    const float *recal_x;                        /* BN re-estimation images, normalized */
    int nrecal;
    int exact_max, budget, utility_loss;
    int sample; /* run --shapley-sample: the sampled surrogate's images (0: the surrogate on every image) */
    const atomic_int *stop;                      /* set: give up (the coordinator is stopping) */
    /* results */
    double *phi;
    int evals;
    const char *estimator;
} value_t;

static int stopped(const value_t *v) { return v->stop && atomic_load(v->stop); }

typedef struct {
    value_t *v;
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
    const float *rx; /* the coalition models' BN images: v->recal_x or rx_own */
    float *rx_own;
    int nrx;
    bf_preds_t preds; /* the sample */
    double weight[BF_SURROGATE_MAXN];
    /* the sampled surrogate's: its sample's images and labels (gathered once), the non-anchor
     * coalitions' BN images (every k-th of rx) and the fit of what they miss, a model's buffers */
    float *xs;
    int32_t *ys;
    const int32_t *xs_of;
    const float *rx_few;
    float *rx_few_own, *bn_tmp;
    int nrx_few;
    bf_coalition_fit_t *bn_fit;
} game_t;

/* Puts into the scratch model the round's starting model moved by the task's strategy with S's
 * updates only (the task's strategy, fedavgm's momentum included), its BN statistics re-estimated
 * on the n images rx. */
static void coalition_model(game_t *g, uint32_t S, const float *rx, int n_rx) {
    value_t *v = g->v;
    bf_net_t *net = v->net;
    size_t np = bf_net_num_params(net), nb = bf_net_num_buffers(net);
    memcpy(bf_net_params(net), v->g_params, sizeof(float) * np);
    memcpy(bf_net_buffers(net), v->g_buffers, sizeof(float) * nb);
    const float *p[64], *b[64];
    int64_t n[64];
    int k = 0;
    for (int i = 0; i < v->k; i++)
        if (S & (1u << i)) p[k] = v->params[i], b[k] = v->buffers[i], n[k++] = v->samples[i];
    if (k) {
        bf_err_t err;
        bf_agg_t *a = bf_agg_new(&v->t->agg_opts, np, nb);
        size_t len2;
        float *dst = a ? bf_agg_state(a, &len2) : NULL;
        if (v->agg_state && dst && v->nstate == len2) /* fedavgm: the same momentum */
            memcpy(dst, v->agg_state, sizeof(float) * len2);
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
    bf_net_t *net = g->v->net;
    if (net_finite(net)) {
        bf_net_predict(net, x, m, out);
        return;
    }
    int K = g->preds.classes;
    for (int i = 0; i < m; i++)
        for (int k = 0; k < K; k++) out[(size_t)i * K + k] = k == y[i] ? -2 * BF_LOSS_CAP : 0;
}

/* S's logits on the sample, in the cheaper game (zeros, unscored, once the valuation is given up) */
static void coalition_predict(game_t *g, uint32_t S, float *out) {
    if (stopped(g->v)) {
        memset(out, 0, sizeof(float) * g->preds.images * g->preds.classes);
        return;
    }
    coalition_model(g, S, g->rx, g->nrx);
    model_predict(g, g->x, g->labels, g->preds.images, out);
}

/* U(S): accuracy (or -loss) of S's coalition model's predictions on the sample, scored by
 * bf_preds_utility whatever the estimator (so every estimator values the same, bounded game). */
static double coalition_utility(void *ctx, uint32_t S) {
    game_t *g = ctx;
    /* game_init already scored these two; the estimators ask for them again. */
    if (S == 0) return g->c_empty;
    if (S == (1u << g->v->k) - 1) return g->c_all;
    coalition_predict(g, S, g->z);
    return bf_preds_utility(&g->preds, g->z);
}

/* S's coalition model's logits on the sample (the surrogate estimator's evaluation); the empty
 * and full coalitions' come from game_init. */
static int coalition_logits(void *ctx, uint32_t S, float *out) {
    game_t *g = ctx;
    size_t ik = (size_t)g->preds.images * g->preds.classes;
    const float *known = S == 0 ? g->z_empty : S == (1u << g->v->k) - 1 ? g->z_all : NULL;
    if (known) return memcpy(out, known, sizeof(float) * ik), 0;
    coalition_predict(g, S, out);
    return 0;
}

/* few of the n images src (chw floats each), every (n / few)-th, into dst: BN images still spread
 * over every block. */
static void spread_images(float *dst, const float *src, int n, int few, size_t chw) {
    for (int i = 0; i < few; i++)
        memcpy(dst + i * chw, src + (size_t)((int64_t)i * n / few) * chw, sizeof(float) * chw);
}

static void game_free(game_t *g) {
    free(g->x), free(g->z), free(g->z_empty), free(g->z_all), free(g->labels), free(g->image_weight), free(g->rx_own);
    free(g->xs), free(g->ys), free(g->rx_few_own), free(g->bn_tmp), bf_coalition_fit_destroy(&g->bn_fit);
}

/* ---- the sampled surrogate's evaluations (docs/SHAPLEY.md, "the sampled surrogate") ----------- */

/* An anchor (predicted on every image): its model as coalition_model makes it, and what
 * re-estimating its BN statistics on the fewer images misses, added to the fit. */
static void anchor_model(game_t *g, uint32_t S) {
    bf_net_t *net = g->v->net;
    size_t nb = bf_net_num_buffers(net);
    coalition_model(g, S, g->rx_few, g->nrx_few);
    memcpy(g->bn_tmp, bf_net_buffers(net), sizeof(float) * nb);
    coalition_model(g, S, g->rx, g->nrx);
    const float *full = bf_net_buffers(net);
    for (size_t e = 0; e < nb; e++) g->bn_tmp[e] = full[e] - g->bn_tmp[e];
    bf_coalition_fit_add(g->bn_fit, S, g->bn_tmp); /* refused if not finite: the fit does without */
}

/* Any other coalition: BN statistics on the fewer images plus the fitted correction (kept
 * uncorrected if the correction is not finite). */
static void fitted_model(game_t *g, uint32_t S) {
    bf_net_t *net = g->v->net;
    size_t nb = bf_net_num_buffers(net);
    coalition_model(g, S, g->rx_few, g->nrx_few);
    if (bf_coalition_fit_solve(g->bn_fit)) return;
    bf_coalition_fit_predict(g->bn_fit, S, g->bn_tmp);
    float *buf = bf_net_buffers(net);
    if (finite_all(g->bn_tmp, nb))
        for (size_t e = 0; e < nb; e++) buf[e] += g->bn_tmp[e];
}

/* bf_shapley_surrogate_sampled's evaluation: S's logits on the images idx (all: NULL). */
static int coalition_logits_subset(void *ctx, uint32_t S, const int32_t *idx, int m, float *out) {
    game_t *g = ctx;
    int K = g->preds.classes;
    size_t chw = (size_t)g->v->val->c * g->v->val->h * g->v->val->w;
    if (stopped(g->v)) return memset(out, 0, sizeof(float) * m * K), 0;
    if (!idx) { /* an anchor; the empty and full coalitions' logits are game_init's */
        if (S) anchor_model(g, S);
        if (S == 0 || S == (1u << g->v->k) - 1) return coalition_logits(ctx, S, out);
        model_predict(g, g->x, g->labels, m, out);
        return 0;
    }
    if (g->xs_of != idx) { /* the sample's images, gathered at its first use */
        for (int i = 0; i < m; i++) {
            memcpy(g->xs + i * chw, g->x + idx[i] * chw, sizeof(float) * chw);
            g->ys[i] = g->labels[idx[i]];
        }
        g->xs_of = idx;
    }
    fitted_model(g, S);
    model_predict(g, g->xs, g->ys, m, out);
    return 0;
}

/* Readies the sampled surrogate: its buffers, the fewer BN images, the fit; -1: out of memory. */
static int game_sampled(game_t *g) {
    value_t *v = g->v;
    size_t chw = (size_t)v->val->c * v->val->h * v->val->w, nb = bf_net_num_buffers(v->net);
    int m = g->preds.images, few = g->nrx < VALUE_FIT_RECAL_IMAGES ? g->nrx : VALUE_FIT_RECAL_IMAGES;
    g->xs = malloc(sizeof(float) * m * chw + 1), g->ys = malloc(sizeof(int32_t) * m + 1);
    g->bn_tmp = malloc(sizeof(float) * nb + 1), g->bn_fit = bf_coalition_fit_new(v->k, g->weight, nb ? nb : 1);
    g->rx_few = g->rx, g->nrx_few = few; /* (none for a model without BN) */
    if (few < g->nrx) {
        if (!(g->rx_few = g->rx_few_own = malloc(sizeof(float) * few * chw))) return -1;
        spread_images(g->rx_few_own, g->rx, g->nrx, few, chw);
    }
    return g->xs && g->ys && g->bn_tmp && g->bn_fit ? 0 : -1;
}

/* The cheaper game's images: the coalitions' BN images (every k-th of the task's), and the sample
 * of the m valuation images xa (labels ya; za0 / za1: the empty and full coalitions' logits on
 * them) copied into g. -1: out of memory. */
static int game_sample(game_t *g, const float *xa, const int32_t *ya, const float *za0, const float *za1, int m,
                       size_t chw) {
    value_t *v = g->v;
    int K = g->preds.classes, r = v->nrecal < VALUE_RECAL_IMAGES ? v->nrecal : VALUE_RECAL_IMAGES;
    g->rx = v->recal_x, g->nrx = v->nrecal;
    if (r < v->nrecal) {
        if (!(g->rx_own = malloc(sizeof(float) * r * chw))) return -1;
        spread_images(g->rx_own, v->recal_x, v->nrecal, r, chw);
        g->rx = g->rx_own, g->nrx = r;
    }
    int s = m < VALUE_SAMPLE_IMAGES ? m : VALUE_SAMPLE_IMAGES;
    int32_t *idx = malloc(sizeof(int32_t) * m);
    g->image_weight = malloc(sizeof(double) * m);
    g->x = malloc(sizeof(float) * s * chw + 1), g->labels = malloc(sizeof(int32_t) * m);
    g->z = malloc(sizeof(float) * s * K + 1), g->z_empty = malloc(sizeof(float) * s * K + 1);
    g->z_all = malloc(sizeof(float) * s * K + 1);
    bf_err_t err;
    bf_preds_t all = {m, K, ya, NULL, v->utility_loss, NULL};
    if (!idx || !g->image_weight || !g->x || !g->labels || !g->z || !g->z_empty || !g->z_all ||
        (s = bf_preds_sample(&all, za0, za1, s, v->t->spec.seed + (uint64_t)v->round, idx, g->image_weight, &err)) < 1)
        return free(idx), -1;
    for (int i = 0; i < s; i++) {
        memcpy(g->x + i * chw, xa + idx[i] * chw, sizeof(float) * chw);
        memcpy(g->z_empty + (size_t)i * K, za0 + (size_t)idx[i] * K, sizeof(float) * K);
        memcpy(g->z_all + (size_t)i * K, za1 + (size_t)idx[i] * K, sizeof(float) * K);
        g->labels[i] = ya[idx[i]];
    }
    free(idx);
    g->preds = (bf_preds_t){s, K, g->labels, g->weight, v->utility_loss, s < m ? g->image_weight : NULL};
    g->c_empty = bf_preds_utility(&g->preds, g->z_empty);
    if (g->nrx < v->nrecal) { /* the full coalition in the cheaper game: its own BN statistics */
        coalition_predict(g, (1u << v->k) - 1, g->z_all);
    }
    g->c_all = bf_preds_utility(&g->preds, g->z_all);
    return 0;
}

/* How many validation images a coalition is scored on. */
static int value_images(const value_t *v) {
    int n = v->val->n, want = v->t->spec.value_images;
    return want > 0 && want < n ? want : n;
}

/* Readies the valuation images, scores the empty and full coalitions on all of them, and draws the
 * cheaper game; -1: out of memory or no valuation images (the round is then not valued). */
static int game_init(game_t *g) {
    value_t *v = g->v;
    const bf_dataset_t *d = v->val;
    int m = value_images(v), K = d->classes;
    size_t chw = (size_t)d->c * d->h * d->w;
    int32_t *idx = malloc(sizeof(int32_t) * (m ? m : 1)), *ya = malloc(sizeof(int32_t) * (m ? m : 1));
    float *xa = malloc(sizeof(float) * m * chw + 1), *za0 = malloc(sizeof(float) * m * K + 1);
    float *za1 = malloc(sizeof(float) * m * K + 1);
    int rc = -1;
    if (idx && ya && xa && za0 && za1 && m >= 1) {
        for (int i = 0; i < m; i++) idx[i] = i;
        bf_batch_fill(d, idx, m, v->t->ds->mean, v->t->ds->std, NULL, xa, ya);
        for (int i = 0; i < v->k; i++) g->weight[i] = (double)v->samples[i];
        g->preds = (bf_preds_t){m, K, ya, g->weight, v->utility_loss, NULL};
        uint32_t all = (1u << v->k) - 1;
        coalition_model(g, 0, NULL, 0), model_predict(g, xa, ya, m, za0);
        coalition_model(g, all, v->recal_x, v->nrecal), model_predict(g, xa, ya, m, za1);
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
    value_t *v;
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
    value_t *v = p->v;
    if (stopped(v)) return -1;
    bf_net_t *net = v->net;
    size_t np = bf_net_num_params(net);
    float *th = bf_net_params(net), *gr = bf_net_grads(net);
    for (size_t q = 0; q < np; q++) th[q] = p->theta0[q] + (float)t * p->delta[q], p->grad[q] = 0;
    int B = bf_net_max_batch(net);
    size_t chw = (size_t)v->val->c * v->val->h * v->val->w;
    for (int b = 0; b < p->m; b += B) {
        int nb = p->m - b < B ? p->m - b : B;
        bf_net_train_step(net, p->x + (size_t)b * chw, p->y + b, nb, NULL);
        for (size_t q = 0; q < np; q++) p->grad[q] -= (double)gr[q] * nb / p->m;
    }
    for (int i = 0; i < v->k; i++) {
        double d = 0;
        for (size_t q = 0; q < np; q++) d += p->grad[q] * ((double)v->params[i][q] - p->theta0[q]);
        dots[i] = p->share[i] * d;
    }
    return 0;
}

/* The model every update moves by the task's strategy (the new global model), BN statistics
 * re-estimated on all recalibration images, into the scratch model; -1: the strategy failed. */
static int full_model(value_t *v) {
    bf_net_t *net = v->net;
    size_t np = bf_net_num_params(net), nb = bf_net_num_buffers(net), len2;
    memcpy(bf_net_params(net), v->g_params, sizeof(float) * np);
    memcpy(bf_net_buffers(net), v->g_buffers, sizeof(float) * nb);
    bf_err_t err;
    bf_agg_t *a = bf_agg_new(&v->t->agg_opts, np, nb);
    float *dst = a ? bf_agg_state(a, &len2) : NULL;
    if (v->agg_state && dst && v->nstate == len2) memcpy(dst, v->agg_state, sizeof(float) * len2);
    int rc = a ? bf_agg_apply(a, bf_net_params(net), bf_net_buffers(net), v->params, v->buffers, v->samples, v->k, &err)
               : -1;
    bf_agg_destroy(&a);
    if (!rc) bf_net_recalibrate_bn(net, v->recal_x, v->nrecal);
    return rc;
}

/* Above BF_SURROGATE_MAXN updates no coalition estimator fits the round's time: each update's
 * first-order effect on the validation loss along the straight path from the starting model to
 * the FedAvg of the updates (bf_shapley_gradient; docs/SHAPLEY.md), the values moved to sum to
 * the round's U(all) - U(empty) in the task's utility. */
static void value_gradient(value_t *v) {
    const bf_dataset_t *d = v->val;
    bf_net_t *net = v->net;
    int m = value_images(v), K = d->classes;
    size_t chw = (size_t)d->c * d->h * d->w, np = bf_net_num_params(net), nb = bf_net_num_buffers(net);
    int32_t *idx = malloc(sizeof(int32_t) * (m ? m : 1)), *y = malloc(sizeof(int32_t) * (m ? m : 1));
    float *x = malloc(sizeof(float) * m * chw + 1), *z = malloc(sizeof(float) * m * K + 1);
    float *theta0 = malloc(sizeof(float) * (np + nb)), *delta = malloc(sizeof(float) * np);
    double *grad = malloc(sizeof(double) * np), *share = malloc(sizeof(double) * v->k), W = 0;
    bf_err_t err;
    if (idx && y && x && z && theta0 && delta && grad && share && m >= 1) {
        memcpy(theta0, v->g_params, sizeof(float) * np);
        memcpy(theta0 + np, v->g_buffers, sizeof(float) * nb);
        for (int i = 0; i < m; i++) idx[i] = i;
        bf_batch_fill(d, idx, m, v->t->ds->mean, v->t->ds->std, NULL, x, y);
        bf_preds_t p = {m, K, y, NULL, v->utility_loss, NULL};
        memcpy(bf_net_params(net), theta0, sizeof(float) * np); /* the starting model */
        memcpy(bf_net_buffers(net), theta0 + np, sizeof(float) * nb);
        bf_net_predict(net, x, m, z);
        double u_empty = bf_preds_utility(&p, z), u_all = u_empty;
        if (!full_model(v) && net_finite(net)) {
            bf_net_predict(net, x, m, z);
            u_all = bf_preds_utility(&p, z);
        } else {
            u_all = v->utility_loss ? -BF_LOSS_CAP : 0; /* what the worst model scores */
        }
        v->evals = 2;
        if (fabs(u_all - u_empty) < ROUND_TRUNCATION) {
            v->estimator = "truncated";
        } else {
            for (int i = 0; i < v->k; i++) W += (double)v->samples[i];
            for (int i = 0; i < v->k; i++) share[i] = (double)v->samples[i] / W;
            for (size_t q = 0; q < np; q++) {
                double dd = 0;
                for (int i = 0; i < v->k; i++) dd += share[i] * ((double)v->params[i][q] - theta0[q]);
                delta[q] = (float)dd;
            }
            path_t path = {v, theta0, delta, grad, share, x, y, m < VALUE_GRADIENT_IMAGES ? m : VALUE_GRADIENT_IMAGES};
            if (!bf_shapley_gradient(v->k, path_grad, &path, VALUE_GRADIENT_POINTS, u_all - u_empty, v->phi, &err))
                v->estimator = "gradient", v->evals += VALUE_GRADIENT_POINTS;
            else
                memset(v->phi, 0, sizeof(double) * v->k); /* a poisoned path (not finite): not valued */
        }
    }
    free(idx), free(y), free(x), free(z), free(theta0), free(delta), free(grad), free(share);
}

/* The round's Shapley values into v->phi (k zeros allocated by the caller): exact up to exact_max
 * updates, else the surrogate estimator (up to BF_SURROGATE_MAXN updates), else, or if the
 * surrogate refuses (memory, predictions out of range), the layer estimator. */
static void value_round(value_t *v) {
    if (v->k > BF_SURROGATE_MAXN) {
        value_gradient(v);
        return;
    }
    game_t g = {.v = v};
    if (game_init(&g)) {
        game_free(&g);
        return;
    }
    v->evals = 2;
    bf_err_t err;
    uint64_t seed = v->t->spec.seed + (uint64_t)v->round;
    int budget = v->budget > 2 * v->k + 2 ? v->budget : 2 * v->k + 2;
    int truncated = fabs(g.u_all - g.u_empty) < ROUND_TRUNCATION; /* GTG-Shapley's between-round truncation */
    if (truncated) {
        v->estimator = "truncated"; /* everyone 0 */
    } else if (v->k <= v->exact_max) {
        bf_shapley_exact(v->k, coalition_utility, &g, v->phi, &err), v->evals = 1 << v->k;
        v->estimator = "exact";
    } else if (v->sample > 0 && v->sample < g.preds.images && budget > 2 * v->k + 2 && budget < (1 << v->k) &&
               !game_sampled(&g) &&
               !bf_shapley_surrogate_sampled(v->k, coalition_logits_subset, &g, &g.preds, budget, v->sample, seed,
                                             v->phi, &v->evals, &err)) {
        v->estimator = "surrogate-sampled";
    } else if (v->k <= BF_SURROGATE_MAXN &&
               !bf_shapley_surrogate(v->k, coalition_logits, &g, &g.preds, budget, seed, v->phi, &v->evals, &err)) {
        v->estimator = "surrogate";
    } else {
        bf_shapley_layers(v->k, coalition_utility, &g, budget, seed, v->phi, &v->evals, &err);
        v->estimator = "layers";
    }
    /* The cheaper game's values sum to its own U(all) - U(empty); the full game's difference is what
     * the round changed, so the gap (the sample's and the BN images' error on the full coalition)
     * is shared equally. */
    double gap = truncated ? 0 : ((g.u_all - g.u_empty) - (g.c_all - g.c_empty)) / v->k;
    for (int i = 0; i < v->k; i++) v->phi[i] += gap;
    /* The utilities are bounded (bf_preds_utility), so this only guards the sums that get paid. */
    for (int i = 0; i < v->k; i++)
        if (!isfinite(v->phi[i])) {
            memset(v->phi, 0, sizeof(double) * v->k), v->estimator = NULL;
            break;
        }
    game_free(&g);
}

/* ---- the valuation file: what valuing a round in the background needs ----------------------- */

/* HOME/checkpoints/TASK/value-NNNN.bin, native float32 and int64 (as the .agg files):
 *   "BFVALUE1", u32 round, u32 k, u64 np, u64 nb, u64 ns,
 *   the starting model (np parameters, nb buffers), the strategy's state (ns floats),
 *   then per update: its key (48 bytes, NUL-padded), i64 samples, np parameters, nb buffers.
 * Written whole to a temporary name and renamed, so it is there complete or not at all; read back
 * only if its size is exactly what its header says and the header matches the task. */
#define VALUE_MAGIC "BFVALUE1"
#define VALUE_KEY_BYTES 48
#define VALUE_MAX_UPDATES 100000

char *coord_value_path(const char *home, const char *task, int round, char *buf, size_t cap) {
    snprintf(buf, cap, "%s/checkpoints/%s/value-%04d.bin", home, task, round);
    return buf;
}

typedef struct {
    uint32_t round, k;
    uint64_t np, nb, ns;
} value_head_t;

static int write_value_file(const coord_job_t *j, const float *g_params, const float *g_buffers, const float *state,
                            size_t ns) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", j->value_path);
    FILE *f = fopen(tmp, "wb");
    if (!f) return -1;
    value_head_t h = {(uint32_t)j->round, (uint32_t)j->k, j->t->np, j->t->nb, ns};
    int ok = fwrite(VALUE_MAGIC, 1, 8, f) == 8 && fwrite(&h, sizeof h, 1, f) == 1 &&
             fwrite(g_params, sizeof(float), h.np, f) == h.np && fwrite(g_buffers, sizeof(float), h.nb, f) == h.nb &&
             (!ns || fwrite(state, sizeof(float), ns, f) == ns);
    for (int i = 0; ok && i < j->k; i++) {
        char key[VALUE_KEY_BYTES] = {0};
        snprintf(key, sizeof key, "%s", j->keys[i]);
        int64_t n = j->samples[i];
        ok = fwrite(key, 1, sizeof key, f) == sizeof key && fwrite(&n, sizeof n, 1, f) == 1 &&
             fwrite(j->params[i], sizeof(float), h.np, f) == h.np &&
             fwrite(j->buffers[i], sizeof(float), h.nb, f) == h.nb;
    }
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, j->value_path)) return unlink(tmp), -1;
    return 0;
}

/* A round's valuation as read back: one allocation holds every float. */
typedef struct {
    value_head_t h;
    float *floats;   /* starting params, buffers, state, then per update params, buffers */
    const float **params, **buffers;
    int64_t *samples;
} value_file_t;

static void value_file_free(value_file_t *f) {
    free(f->floats), free(f->params), free(f->buffers), free(f->samples);
    memset(f, 0, sizeof *f);
}

/* Reads j->value_path into f (and the keys into j->keys): 0; -1 with j->err (j->lost if the file
 * is missing or not this round's: it can never be read). ns: the task's strategy state length. */
static int read_value_file(coord_job_t *j, size_t ns, value_file_t *f) {
    memset(f, 0, sizeof *f);
    FILE *in = fopen(j->value_path, "rb");
    if (!in) return j->lost = 1, snprintf(j->err, sizeof j->err, "%s: missing", j->value_path), -1;
    char magic[8];
    struct stat st;
    int ok = fstat(fileno(in), &st) == 0 && fread(magic, 1, 8, in) == 8 && !memcmp(magic, VALUE_MAGIC, 8) &&
             fread(&f->h, sizeof f->h, 1, in) == 1;
    /* the header against the task and the file's size, before anything is allocated from it */
    ok = ok && f->h.round == (uint32_t)j->round && f->h.np == j->t->np && f->h.nb == j->t->nb && f->h.ns == ns &&
         f->h.k >= 1 && f->h.k <= VALUE_MAX_UPDATES;
    uint64_t model = f->h.np + f->h.nb, nfloats = ok ? model + ns + f->h.k * model : 0;
    ok = ok && (uint64_t)st.st_size == 8 + sizeof f->h + 4 * (model + ns) +
                                           f->h.k * (VALUE_KEY_BYTES + 8 + 4 * model);
    if (!ok) {
        fclose(in);
        j->lost = 1;
        snprintf(j->err, sizeof j->err, "%s: not a valuation file of this round", j->value_path);
        return -1;
    }
    int k = (int)f->h.k;
    f->floats = malloc(sizeof(float) * nfloats);
    f->params = malloc(sizeof(float *) * k), f->buffers = malloc(sizeof(float *) * k);
    f->samples = malloc(sizeof(int64_t) * k);
    j->keys = calloc(k, sizeof *j->keys);
    if (!f->floats || !f->params || !f->buffers || !f->samples || !j->keys) {
        fclose(in);
        value_file_free(f);
        return snprintf(j->err, sizeof j->err, "out of memory"), -1;
    }
    ok = fread(f->floats, sizeof(float), model + ns, in) == model + ns;
    for (int i = 0; ok && i < k; i++) {
        char key[VALUE_KEY_BYTES];
        float *u = f->floats + model + ns + (size_t)i * model;
        ok = fread(key, 1, sizeof key, in) == sizeof key && fread(&f->samples[i], 8, 1, in) == 1 &&
             fread(u, sizeof(float), model, in) == model;
        memcpy(j->keys[i], key, sizeof j->keys[i] - 1); /* a CURVE key is 40 characters */
        j->keys[i][sizeof j->keys[i] - 1] = 0;
        f->params[i] = u, f->buffers[i] = u + f->h.np;
    }
    fclose(in);
    if (!ok) {
        value_file_free(f);
        return j->lost = 1, snprintf(j->err, sizeof j->err, "%s: cannot be read", j->value_path), -1;
    }
    return 0;
}

/* ---- a closed round ------------------------------------------------------------------------ */

/* Values the round inline, from the task's model fields, before the global model moves. */
static void value_inline(coord_job_t *j) {
    coord_task_t *t = j->t;
    size_t ns = 0;
    const float *state = bf_agg_state(t->agg, &ns);
    value_t v = {.t = t, .round = j->round, .k = j->k, .params = j->params, .buffers = j->buffers,
                 .samples = j->samples, .g_params = bf_net_params(t->global), .g_buffers = bf_net_buffers(t->global),
                 .agg_state = state, .nstate = ns, .net = t->coalition, .val = &t->val, .recal_x = t->recal_x,
                 .nrecal = t->nrecal, .exact_max = j->exact_max, .budget = j->budget, .utility_loss = j->utility_loss,
                 .sample = j->sample, .phi = j->phi};
    double t0 = bf_now();
    value_round(&v);
    j->shapley_evals = v.evals, j->estimator = v.estimator;
    j->value_seconds = bf_now() - t0;
}

static void run_job(coord_job_t *j) {
    coord_task_t *t = j->t;
    bf_err_t err = {{0}};
    double t0 = bf_now();
    size_t np = bf_net_num_params(t->global), nb = bf_net_num_buffers(t->global), ns = 0;
    const float *state0 = bf_agg_state(t->agg, &ns);
    if (!(j->phi = calloc(j->k ? j->k : 1, sizeof(double)))) {
        snprintf(j->err, sizeof j->err, "out of memory");
        return;
    }
    if (j->value && j->value_inline) {
        value_inline(j); /* before the global model moves: coalitions start from it */
    } else if (j->value && write_value_file(j, bf_net_params(t->global), bf_net_buffers(t->global), state0, ns)) {
        /* what valuing it later needs, kept before the global model moves */
        snprintf(j->err, sizeof j->err, "cannot write %s", j->value_path);
        return;
    }
    double t1 = bf_now();
    /* the model before the round, kept in case the aggregate is not finite */
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
    j->aggregate_seconds = bf_now() - t1;
    j->seconds = bf_now() - t0;
    j->ok = 1;
}

/* ---- building a task's model fields ------------------------------------------------------- */

/* The images aggregated models' BN statistics are re-estimated on: spread over every block of the
 * task's training split (the coordinator holds it), so every block's label mix is represented;
 * none for a model without BN, and at most RECAL_MAX_BYTES of them (large images: fewer). */
#define RECAL_MAX_BYTES (64u << 20)
static int recal_build(const coord_task_t *t, int want, float **x, int *n) {
    const bf_dataset_t *d = &t->ds->train;
    size_t bytes = sizeof(float) * d->c * d->h * d->w;
    *x = NULL, *n = 0;
    if (want > (int)(RECAL_MAX_BYTES / bytes)) want = (int)(RECAL_MAX_BYTES / bytes);
    if (want <= 0 || !t->nb) return 0;
    int32_t *idx = malloc(sizeof(int32_t) * want);
    *x = malloc(bytes * want);
    if (!idx || !*x) return free(idx), free(*x), *x = NULL, -1;
    *n = bf_blocks_spread(&t->blocks, t->blocks.nblocks, want, idx);
    bf_batch_fill(d, idx, *n, t->ds->mean, t->ds->std, NULL, *x, NULL);
    free(idx);
    return 0;
}

static int recal_images(coord_task_t *t, int want) { return recal_build(t, want, &t->recal_x, &t->nrecal); }

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

/* ---- valuing a round in the background ---------------------------------------------------- */

/* Values round j->round from its valuation file, with a scratch model and images of its own (the
 * task's model fields are the aggregation's): on the valuer thread, while later rounds train. */
static void value_job(coord_job_t *j, const atomic_int *stop) {
    const coord_task_t *t = j->t;
    const bf_dataset_t *d = &t->ds->train;
    double t0 = bf_now();
    bf_err_t err = {{0}};
    bf_agg_t *probe = bf_agg_new(&t->agg_opts, t->np, t->nb); /* the strategy's state length */
    size_t ns = 0;
    if (probe) bf_agg_state(probe, &ns);
    bf_agg_destroy(&probe);
    value_file_t f;
    if (read_value_file(j, ns, &f)) return;
    j->k = (int)f.h.k;
    bf_dataset_t val = {0};
    float *rx = NULL;
    int nrx = 0;
    bf_net_t *net = bf_net_new(t->spec.model, d->c, d->h, d->w, d->classes, 256, j->threads, &err);
    j->phi = calloc(j->k, sizeof(double));
    if (!net || !j->phi || bf_dataset_subset(d, t->blocks.val, t->blocks.nval, &val, &err) ||
        recal_build(t, j->recal, &rx, &nrx)) {
        snprintf(j->err, sizeof j->err, "%s", err.msg[0] ? err.msg : "out of memory");
    } else {
        size_t model = f.h.np + f.h.nb;
        value_t v = {.t = t, .round = j->round, .k = j->k, .params = f.params, .buffers = f.buffers,
                     .samples = f.samples, .g_params = f.floats, .g_buffers = f.floats + f.h.np,
                     .agg_state = ns ? f.floats + model : NULL, .nstate = ns, .net = net, .val = &val, .recal_x = rx,
                     .nrecal = nrx, .exact_max = j->exact_max, .budget = j->budget, .utility_loss = j->utility_loss,
                     .sample = j->sample, .stop = stop, .phi = j->phi};
        value_round(&v);
        j->shapley_evals = v.evals, j->estimator = v.estimator;
        if (atomic_load(stop)) snprintf(j->err, sizeof j->err, "given up: the coordinator is stopping");
        else j->ok = 1;
    }
    j->value_seconds = bf_now() - t0;
    free(rx);
    bf_dataset_free(&val);
    bf_net_destroy(&net);
    value_file_free(&f);
}

/* The valuer thread: "VAL" + coord_job_t* -> the same pointer back, valued; args: the stop flag. */
static void valuer_actor(zsock_t *pipe, void *args) {
    const atomic_int *stop = args;
    zsock_signal(pipe, 0);
    for (;;) {
        char *cmd = NULL;
        void *p = NULL;
        if (zsock_recv(pipe, "sp", &cmd, &p) < 0) break;
        int term = !cmd || !strcmp(cmd, "$TERM");
        if (!term && p) {
            value_job(p, stop);
            zsock_send(pipe, "p", p);
        }
        zstr_free(&cmd);
        if (term) break;
    }
}

/* The pipe protocol (coord.h): "JOB" + pointer, answered with the same pointer when done. Builds
 * and rounds run here; valuations wait in `queue` for the valuer thread, one at a time, and their
 * answers are passed on as they come. */
static void worker_actor(zsock_t *pipe, void *args) {
    (void)args;
    atomic_int stop = 0;
    zactor_t *valuer = zactor_new(valuer_actor, &stop);
    zlistx_t *queue = zlistx_new();
    zpoller_t *poller = valuer && queue ? zpoller_new(pipe, valuer, NULL) : NULL;
    zsock_signal(pipe, 0);
    coord_job_t *valuing = NULL; /* the one on the valuer */
    while (poller) {
        void *which = zpoller_wait(poller, -1);
        if (which == valuer) {
            void *p = NULL;
            if (zsock_recv(valuer, "p", &p) == 0 && p) zsock_send(pipe, "p", p);
            valuing = NULL;
        } else if (which == pipe) {
            char *cmd = NULL;
            void *p = NULL;
            if (zsock_recv(pipe, "sp", &cmd, &p) < 0) break;
            int term = !cmd || !strcmp(cmd, "$TERM");
            zstr_free(&cmd);
            if (term) break;
            coord_job_t *j = p;
            if (!j) continue;
            if (j->valuation) {
                zlistx_add_end(queue, j);
            } else {
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
        } else if (zpoller_terminated(poller)) {
            break;
        }
        if (!valuing && (valuing = zlistx_first(queue))) {
            zlistx_delete(queue, zlistx_cursor(queue));
            if (zsock_send(valuer, "sp", "VAL", valuing)) zsock_send(pipe, "p", valuing), valuing = NULL;
        }
    }
    /* stopping: the valuation under way gives up (its file stays: the next start values it) */
    atomic_store(&stop, 1);
    if (valuing) {
        void *p = NULL;
        if (zsock_recv(valuer, "p", &p) == 0 && p) coord_job_free((coord_job_t **)&p);
    }
    for (coord_job_t *j = queue ? zlistx_first(queue) : NULL; j; j = zlistx_next(queue)) coord_job_free(&j);
    zpoller_destroy(&poller);
    zlistx_destroy(&queue);
    zactor_destroy(&valuer);
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
    free(j->keys);
    coord_blob_unref(j->round_model);
    free(j);
    *pj = NULL;
}

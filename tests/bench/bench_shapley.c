/* bench_shapley.c: `blockfed-bench shapley [--json] [--rounds R] [--split SPEC] [--save-table FILE] ...`
 *                  `blockfed-bench shapley --table FILE [--json] ...` (every flag: --help)
 * The Shapley estimators against exact values on real federated rounds; what the figures mean,
 * the ones measured so far and the commands that made them are in docs/SHAPLEY.md.
 * Ten participants, each with its own Fashion-MNIST block (--images, default 5,000), train one local
 * epoch of ResNet8 from the same global model, as in a federated round; the next round starts from
 * the FedAvg of all ten. The game is the coordinator's: U(S) = accuracy, or -loss, of the FedAvg of
 * S's updates, its BN statistics re-estimated (--recalibrate; the initial model's too), on
 * held-out images (--eval, default 2,000 = a task's default value_images); one evaluation gives
 * both. Every round evaluates all 2^10 coalitions once (a "utility table", the exact
 * Shapley values' input), then runs the budgeted estimator on that table at several budgets and
 * seeds: relative L2 error and Spearman rank correlation against exact, mean and worst, per round
 * and on the values summed over the rounds (what settlement pays on). An estimator run on the
 * table sees the same numbers it would get from the live callback (evaluation is deterministic), so
 * --save-table FILE keeps the tables (and every coalition's logits, FILE.preds) and --table FILE
 * re-runs the estimator on them instead of retraining.
 * Time fraction: a round's valuation seconds / (local training + aggregation + valuation) seconds,
 * with local training = the slowest participant's epoch (participants train in parallel) and
 * valuation = evaluations x the mean seconds of one coalition evaluation measured over the table. */
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
#define FULL (1u << N)
#define MAX_TABLES 64
#define MAX_BUDGETS 8
#define MAX_SEEDS 32
#define MAX_GROUPS 8
#define CLASSES 10
/* the coordinator's default --bn-recalibrate: the bench values the game the coordinator plays */
#define BENCH_BN_RECALIBRATE_IMAGES 1280

/* Every coalition model's logits on the evaluation images (shared by a round's two tables). */
typedef struct {
    int images;
    int32_t *labels;
    float *z; /* FULL x images x CLASSES */
    double *w; /* [images]: the images' weights in U (a cheaper game's sample), or NULL: equal */
} preds_t;

static void preds_free(preds_t **p) {
    if (*p) free((*p)->labels), free((*p)->z), free((*p)->w), free(*p);
    *p = NULL;
}

static preds_t *preds_new(int images) {
    preds_t *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->images = images;
    p->labels = malloc(sizeof(int32_t) * images);
    p->z = malloc(sizeof(float) * FULL * images * CLASSES);
    if (!p->labels || !p->z) preds_free(&p);
    return p;
}

/* One round's utility table with the timings it was measured with. */
typedef struct table {
    int round;
    char split[32];
    char utility[16]; /* "accuracy" or "loss" (U = -loss) */
    double u[FULL];
    int recal;      /* training images each coalition model's BN statistics were re-estimated on (0: none) */
    double eval_s;  /* mean seconds of one coalition evaluation (aggregate + recalibrate + evaluate) */
    double local_s; /* slowest participant's local epoch */
    double agg_s;   /* FedAvg of all updates into the next global model */
    preds_t *preds; /* every coalition's predictions, or NULL (tables saved without them) */
    const struct table *ref; /* a cheaper game's: the full game it stands for (its exact values are the reference) */
    double ref_eval_s;       /* a cheaper game's: seconds of one full evaluation, timed interleaved with its own */
    /* --sample: seconds of one evaluation on the sample's images and of one on all of them, timed
     * interleaved (0: not measured, no live game) */
    double sample_eval_s, sample_full_s;
} table_t;

/* ---- the live game: FedAvg of a coalition's updates, accuracy on held-out images ------------ */

typedef struct {
    bf_net_t *net;
    float *x; /* the evaluation images, normalized */
    const float *g_params, *g_buffers;
    float *params[N], *buffers[N];
    bf_dataset_t *val;
    float mean, std;
    int eval;
    int images; /* per participant: FedAvg weights */
    float *rx;  /* the coordinator's BN recalibration images (normalized training images), or NULL */
    int recal;
} game_t;

/* As the coordinator does after every aggregation (and to the initial model): the BN statistics
 * of the model (params, buffers) re-estimated, into buffers. */
static void recalibrate(game_t *g, const float *params, float *buffers) {
    size_t np = bf_net_num_params(g->net), nb = bf_net_num_buffers(g->net);
    float *np_ = bf_net_params(g->net), *nb_ = bf_net_buffers(g->net);
    if (!g->recal) return;
    if (params != np_) memcpy(np_, params, sizeof(float) * np);
    bf_net_recalibrate_bn(g->net, g->rx, g->recal);
    if (buffers != nb_) memcpy(buffers, nb_, sizeof(float) * nb);
}

/* FedAvg (equal weights: equal blocks) of the updates in S onto the global model, into net. */
static void aggregate(game_t *g, uint32_t S, float *out_p, float *out_b) {
    size_t np = bf_net_num_params(g->net), nb = bf_net_num_buffers(g->net);
    memcpy(out_p, g->g_params, sizeof(float) * np);
    memcpy(out_b, g->g_buffers, sizeof(float) * nb);
    const float *p[N], *b[N];
    int64_t n[N];
    int k = 0;
    for (int i = 0; i < N; i++)
        if (S & (1u << i)) p[k] = g->params[i], b[k] = g->buffers[i], n[k++] = g->images;
    if (!k) return;
    bf_agg_opts_t o;
    bf_err_t err;
    bf_agg_parse("fedavg", &o, &err);
    bf_agg_t *a = bf_agg_new(&o, np, nb);
    bf_agg_apply(a, out_p, out_b, p, b, n, k, &err);
    bf_agg_destroy(&a);
    recalibrate(g, out_p, out_b);
}

/* One evaluation gives both utilities, accuracy and -loss on the same images, from the coalition
 * model's logits (kept: the surrogate estimator is given them). */
static void live_utility(game_t *g, uint32_t S, preds_t *p, double *acc, double *neg_loss) {
    aggregate(g, S, bf_net_params(g->net), bf_net_buffers(g->net));
    float *z = p->z + (size_t)S * p->images * CLASSES;
    bf_net_predict(g->net, g->x, p->images, z);
    bf_preds_t pa = {p->images, CLASSES, p->labels, NULL, 0, p->w}, pl = {p->images, CLASSES, p->labels, NULL, 1, p->w};
    *acc = bf_preds_utility(&pa, z);
    *neg_loss = bf_preds_utility(&pl, z);
}

/* ---- the table game: what an estimator sees, with its evaluations counted ------------------ */

typedef struct {
    const double *u;
    const preds_t *p;
    int calls;
} table_game_t;

static double table_utility(void *ctx, uint32_t S) {
    table_game_t *t = ctx;
    t->calls++;
    return t->u[S];
}

static int table_logits(void *ctx, uint32_t S, float *out) {
    table_game_t *t = ctx;
    t->calls++;
    size_t ik = (size_t)t->p->images * CLASSES;
    memcpy(out, t->p->z + S * ik, sizeof(float) * ik);
    return 0;
}

/* The sampled estimator's callback: the images idx of S's saved logits (all: idx NULL). */
static int table_logits_subset(void *ctx, uint32_t S, const int32_t *idx, int m, float *out) {
    table_game_t *t = ctx;
    if (!idx) return table_logits(ctx, S, out);
    t->calls++;
    const float *z = t->p->z + S * (size_t)t->p->images * CLASSES;
    for (int i = 0; i < m; i++)
        memcpy(out + (size_t)i * CLASSES, z + (size_t)idx[i] * CLASSES, sizeof(float) * CLASSES);
    return 0;
}

/* ---- metrics ------------------------------------------------------------------------------- */

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
    for (int i = 0; i < N; i++)
        sab += (ra[i] - ma) * (rb[i] - mb), saa += (ra[i] - ma) * (ra[i] - ma), sbb += (rb[i] - mb) * (rb[i] - mb);
    return saa * sbb > 0 ? sab / sqrt(saa * sbb) : 0; /* all-equal ranks: no correlation to speak of */
}

/* ---- table files --------------------------------------------------------------------------- */

/* Text: a header line per table, then 2^N values (%.17g: bit-exact), then "end". */
static int table_save(const char *path, const table_t *t, int append) {
    FILE *f = fopen(path, append ? "a" : "w");
    if (!f) return -1;
    if (!append)
        fprintf(f, "# blockfed-bench shapley utility tables: U(S) = test accuracy or -loss (first images) of the\n"
                   "# FedAvg of coalition S's ResNet8 updates (bit i = participant i), one line per S = 0..2^n-1.\n");
    fprintf(f, "table n=%d round=%d split=%s utility=%s eval_s=%.6f local_s=%.6f agg_s=%.6f recal=%d\n", N, t->round,
            t->split, t->utility, t->eval_s, t->local_s, t->agg_s, t->recal);
    for (uint32_t S = 0; S < FULL; S++) fprintf(f, "%.17g\n", t->u[S]);
    fprintf(f, "end\n");
    return fclose(f) ? -1 : 0;
}

/* Reads up to MAX_TABLES tables; returns how many, or -1 (unreadable, malformed, another n). */
static int table_load(const char *path, table_t *ts) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[256];
    int k = 0, bad = 0;
    while (!bad && k < MAX_TABLES && fgets(line, sizeof line, f)) {
        if (line[0] == '#' || line[0] == '\n') continue;
        table_t *t = &ts[k];
        int n;
        t->recal = 0; /* tables from before recalibration have no recal= */
        if (sscanf(line, "table n=%d round=%d split=%31s utility=%15s eval_s=%lf local_s=%lf agg_s=%lf recal=%d", &n,
                   &t->round, t->split, t->utility, &t->eval_s, &t->local_s, &t->agg_s, &t->recal) < 7 ||
            n != N) {
            bad = 1;
            break;
        }
        for (uint32_t S = 0; S < FULL && !bad; S++)
            bad = !fgets(line, sizeof line, f) || sscanf(line, "%lf", &t->u[S]) != 1 || !isfinite(t->u[S]);
        bad = bad || !fgets(line, sizeof line, f) || strncmp(line, "end", 3);
        k += !bad;
    }
    fclose(f);
    return bad ? -1 : k;
}

/* Predictions beside a table file (FILE.preds), a record per round: "BFPREDS1", then int32 n,
 * round, images, classes, then the labels (int32) and every coalition's logits (float32, S = 0..2^n-1). */
static int preds_save(const char *table_path, int round, const preds_t *p, int append) {
    char path[4096];
    snprintf(path, sizeof path, "%s.preds", table_path);
    FILE *f = fopen(path, append ? "ab" : "wb");
    if (!f) return -1;
    int32_t h[4] = {N, round, p->images, CLASSES};
    int ok = fwrite("BFPREDS1", 1, 8, f) == 8 && fwrite(h, sizeof h, 1, f) == 1 &&
             fwrite(p->labels, sizeof(int32_t), p->images, f) == (size_t)p->images &&
             fwrite(p->z, sizeof(float) * p->images * CLASSES, FULL, f) == FULL;
    return fclose(f) || !ok ? -1 : 0;
}

/* Attaches FILE.preds's records to the loaded tables of the same round; a missing file leaves
 * them without (the layer estimator then); -1 if the file is there but does not fit. */
static int preds_load(const char *table_path, table_t *ts, int k) {
    char path[4096], magic[8];
    snprintf(path, sizeof path, "%s.preds", table_path);
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    int32_t h[4];
    int bad = 0;
    while (!bad && fread(magic, 1, 8, f) == 8) {
        bad = memcmp(magic, "BFPREDS1", 8) || fread(h, sizeof h, 1, f) != 1 || h[0] != N || h[3] != CLASSES ||
              h[2] < 1 || h[2] > 10000;
        preds_t *p = bad ? NULL : preds_new(h[2]);
        bad = bad || !p || fread(p->labels, sizeof(int32_t), p->images, f) != (size_t)p->images ||
              fread(p->z, sizeof(float) * p->images * CLASSES, FULL, f) != FULL;
        for (int i = 0; !bad && i < p->images; i++) bad = p->labels[i] < 0 || p->labels[i] >= CLASSES;
        int owner = 0;
        for (int t = 0; t < k && !bad; t++)
            if (ts[t].round == h[1] && !ts[t].preds) ts[t].preds = p, owner = 1;
        if (!owner) preds_free(&p);
    }
    fclose(f);
    return bad ? -1 : 0;
}

/* ---- one round of real training ------------------------------------------------------------ */

typedef struct {
    bf_dataset_t train, test;
    bf_blocks_t blocks;
    float mean, std;
    bf_net_t *global;
    game_t g;
    float *g_params, *g_buffers;
    const char *save_updates; /* --save-updates FILE: each round's starting model and updates, or NULL */
} live_t;

/* A round's starting model and the ten updates (FILE, appended per round): "BFUPD001", then int32
 * round, params, buffers, then the floats of the starting model and of each update, params then
 * buffers. Replayed with --updates to value cheaper games on exactly the same updates. */
static int updates_save(const char *path, int round, const game_t *g, size_t np, size_t nb) {
    FILE *f = fopen(path, round > 1 ? "ab" : "wb");
    if (!f) return -1;
    int32_t h[3] = {round, (int32_t)np, (int32_t)nb};
    int ok = fwrite("BFUPD001", 1, 8, f) == 8 && fwrite(h, sizeof h, 1, f) == 1 &&
             fwrite(g->g_params, sizeof(float), np, f) == np && fwrite(g->g_buffers, sizeof(float), nb, f) == nb;
    for (int i = 0; i < N && ok; i++)
        ok = fwrite(g->params[i], sizeof(float), np, f) == np && fwrite(g->buffers[i], sizeof(float), nb, f) == nb;
    return fclose(f) || !ok ? -1 : 0;
}

static int live_init(live_t *L, const char *split, uint64_t seed, int eval, int images, int recal, bf_err_t *err) {
    memset(L, 0, sizeof *L);
    if (bf_dataset_load("/usr/share/datasets/fashion-mnist", "train", 0, 0, 0, &L->train, err) ||
        bf_dataset_load("/usr/share/datasets/fashion-mnist", "test", 0, 0, 0, &L->test, err))
        return -1;
    bf_dataset_channel_stats(&L->train, &L->mean, &L->std);
    if (bf_blocks_partition(&L->train, images, 5000, split, seed, &L->blocks, err)) return -1;
    if (!(L->global = bf_net_new("resnet8", 1, 28, 28, 10, 64, 2, err))) return -1;
    bf_net_init(L->global, 1);
    game_t g = {.net = bf_net_new("resnet8", 1, 28, 28, 10, 256, 2, err), .val = &L->test, .mean = L->mean,
                .std = L->std, .eval = eval, .images = images};
    if (!g.net) return -1;
    size_t np = bf_net_num_params(L->global), nb = bf_net_num_buffers(L->global);
    L->g_params = malloc(sizeof(float) * np), L->g_buffers = malloc(sizeof(float) * nb);
    for (int i = 0; i < N; i++) g.params[i] = malloc(sizeof(float) * np), g.buffers[i] = malloc(sizeof(float) * nb);
    g.g_params = L->g_params, g.g_buffers = L->g_buffers;
    if (!(g.x = malloc(sizeof(float) * (size_t)eval * 28 * 28))) return bf_err_set(err, "out of memory");
    int32_t *ri = malloc(sizeof(int32_t) * (recal ? recal : 1));
    if (!ri || !(g.rx = malloc(sizeof(float) * ((size_t)recal * 28 * 28 + 1)))) return free(ri), bf_err_set(err, "out of memory");
    g.recal = bf_blocks_spread(&L->blocks, N, recal, ri); /* the ten participants' blocks */
    bf_batch_fill(&L->train, ri, g.recal, &L->mean, &L->std, NULL, g.rx, NULL);
    free(ri);
    L->g = g;
    memcpy(L->g_params, bf_net_params(L->global), sizeof(float) * np);
    memcpy(L->g_buffers, bf_net_buffers(L->global), sizeof(float) * nb);
    recalibrate(&L->g, L->g_params, L->g_buffers); /* the initial model's statistics, as the coordinator's */
    return 0;
}

static void live_free(live_t *L) {
    for (int i = 0; i < N; i++) free(L->g.params[i]), free(L->g.buffers[i]);
    free(L->g.x), free(L->g.rx), free(L->g_params), free(L->g_buffers);
    bf_net_destroy(&L->global), bf_net_destroy(&L->g.net);
    bf_blocks_free(&L->blocks);
    bf_dataset_free(&L->train), bf_dataset_free(&L->test);
}

/* Trains every participant one epoch from the global model, fills the round's two tables (t[0]
 * accuracy, t[1] -loss), then moves the global model to the FedAvg of all updates. */
static int live_round(live_t *L, int round, table_t *t, bf_err_t *err) {
    int images = L->g.images;
    size_t np = bf_net_num_params(L->global), nb = bf_net_num_buffers(L->global);
    t->round = round, t->local_s = 0, t->recal = L->g.recal;
    for (int i = 0; i < N; i++) {
        bf_dataset_t mine;
        if (bf_dataset_subset(&L->train, L->blocks.index + (size_t)i * images, images, &mine, err)) return -1;
        memcpy(bf_net_params(L->global), L->g_params, sizeof(float) * np);
        memcpy(bf_net_buffers(L->global), L->g_buffers, sizeof(float) * nb);
        bf_train_opts_t o = {.batch = 64, .lr = 0.05, .schedule = "constant", .momentum = 0.9, .weight_decay = 5e-4,
                             .seed = (uint64_t)(i + 100 * round)};
        bf_trainer_t *tr = bf_trainer_new(L->global, &o, &mine, &L->mean, &L->std, 1, err);
        if (!tr) return bf_dataset_free(&mine), -1;
        bf_progress_t p;
        double t0 = bf_now();
        bf_trainer_epoch(tr, NULL, NULL, &p);
        double dt = bf_now() - t0;
        if (dt > t->local_s) t->local_s = dt;
        memcpy(L->g.params[i], bf_net_params(L->global), sizeof(float) * np);
        memcpy(L->g.buffers[i], bf_net_buffers(L->global), sizeof(float) * nb);
        bf_trainer_destroy(&tr);
        bf_dataset_free(&mine);
    }
    if (L->save_updates && updates_save(L->save_updates, round, &L->g, np, nb))
        return bf_err_set(err, "cannot write %s", L->save_updates);
    preds_t *p = preds_new(L->g.eval);
    if (!p) return bf_err_set(err, "out of memory for %u coalitions' predictions", FULL);
    int32_t *idx = malloc(sizeof(int32_t) * p->images);
    if (!idx) return preds_free(&p), bf_err_set(err, "out of memory");
    for (int i = 0; i < p->images; i++) idx[i] = i;
    bf_batch_fill(L->g.val, idx, p->images, &L->g.mean, &L->g.std, NULL, L->g.x, p->labels);
    free(idx);
    double t0 = bf_now();
    for (uint32_t S = 0; S < FULL; S++) live_utility(&L->g, S, p, &t[0].u[S], &t[1].u[S]);
    t[0].preds = t[1].preds = p;
    t->eval_s = (bf_now() - t0) / FULL;
    t0 = bf_now();
    aggregate(&L->g, FULL - 1, L->g_params, L->g_buffers);
    t->agg_s = bf_now() - t0;
    snprintf(t[0].utility, sizeof t[0].utility, "accuracy");
    snprintf(t[1].utility, sizeof t[1].utility, "loss");
    t[1].round = t->round, t[1].recal = t->recal, t[1].local_s = t->local_s, t[1].eval_s = t->eval_s, t[1].agg_s = t->agg_s;
    memcpy(t[1].split, t->split, sizeof t->split);
    return 0;
}

/* ---- a cheaper game on saved updates: the coordinator's fewer BN and valuation images ---------- */

/* Reads round `round`'s record of an --save-updates FILE into the game (starting model, updates). */
static int updates_load(const char *path, int round, live_t *L) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    size_t np = bf_net_num_params(L->global), nb = bf_net_num_buffers(L->global);
    char magic[8];
    int32_t h[3];
    int found = 0;
    while (!found && fread(magic, 1, 8, f) == 8 && !memcmp(magic, "BFUPD001", 8) && fread(h, sizeof h, 1, f) == 1 &&
           h[1] == (int32_t)np && h[2] == (int32_t)nb) {
        if (h[0] != round) {
            if (fseek(f, (long)(sizeof(float) * (np + nb) * (N + 1)), SEEK_CUR)) break;
            continue;
        }
        int ok = fread(L->g_params, sizeof(float), np, f) == np && fread(L->g_buffers, sizeof(float), nb, f) == nb;
        for (int i = 0; i < N && ok; i++)
            ok = fread(L->g.params[i], sizeof(float), np, f) == np && fread(L->g.buffers[i], sizeof(float), nb, f) == nb;
        found = ok ? 1 : -1;
    }
    fclose(f);
    return found == 1 ? 0 : -1;
}

/* r of the game's recalibration images, every (recal / r)-th, into rx (as the coordinator spreads them). */
static void spread_recal(const game_t *g, int r, float *rx) {
    for (int i = 0; i < r; i++)
        memcpy(rx + (size_t)i * 784, g->rx + (size_t)((int64_t)i * g->recal / r) * 784, sizeof(float) * 784);
}

/* The coordinator's cheaper game for a full game's round (ref: its accuracy table, with every
 * coalition's logits): BN statistics re-estimated on `recal` of the full game's images (every
 * (full / recal)-th), U on bf_preds_sample's `images` of its valuation images, drawn from the
 * empty and full coalitions' logits. Fills c[0] (accuracy) and c[1] (-loss), every coalition
 * evaluated; and times full evaluations interleaved with the cheap ones for their cost ratio. */
static int cheap_round(live_t *L, const table_t *ref, const table_t *ref_loss, int recal, int images, table_t *c,
                       bf_err_t *err) {
    const preds_t *rp = ref->preds;
    size_t ik = (size_t)rp->images * CLASSES;
    preds_t *p = preds_new(images);
    int32_t *idx = malloc(sizeof(int32_t) * images), *all = malloc(sizeof(int32_t) * rp->images);
    float *x = malloc(sizeof(float) * (size_t)images * 28 * 28), *rx = malloc(sizeof(float) * (size_t)recal * 28 * 28);
    if (!p || !idx || !all || !x || !rx || !(p->w = malloc(sizeof(double) * images)))
        return preds_free(&p), free(idx), free(all), free(x), free(rx), bf_err_set(err, "out of memory");
    bf_preds_t full = {rp->images, CLASSES, rp->labels, NULL, 0, NULL};
    int m = bf_preds_sample(&full, rp->z, rp->z + (size_t)(FULL - 1) * ik, images, (uint64_t)ref->round, idx, p->w, err);
    if (m < 1) return preds_free(&p), free(idx), free(all), free(x), free(rx), -1;
    p->images = m;
    for (int i = 0; i < m; i++) {
        p->labels[i] = rp->labels[idx[i]];
        memcpy(x + (size_t)i * 784, L->g.x + (size_t)idx[i] * 784, sizeof(float) * 784);
    }
    int r = recal < L->g.recal ? recal : L->g.recal;
    spread_recal(&L->g, r, rx);
    game_t g = L->g;
    g.x = x, g.rx = rx, g.recal = r;
    double cheap = 0, fullt = 0, a, l;
    preds_t *scratch = preds_new(rp->images);
    if (scratch) memcpy(scratch->labels, rp->labels, sizeof(int32_t) * rp->images);
    for (uint32_t S = 0; S < FULL && scratch; S++) {
        double t0 = bf_now();
        live_utility(&g, S, p, &c[0].u[S], &c[1].u[S]);
        cheap += bf_now() - t0;
        if (S % 32 == 17) { /* a full evaluation now and then, for the cost ratio in the same conditions */
            t0 = bf_now();
            live_utility(&L->g, S, scratch, &a, &l);
            fullt += bf_now() - t0;
        }
    }
    preds_free(&scratch);
    free(idx), free(all), free(x), free(rx);
    for (int u = 0; u < 2; u++) {
        const table_t *rt = u ? ref_loss : ref;
        c[u].round = rt->round, c[u].recal = r, c[u].local_s = rt->local_s, c[u].agg_s = rt->agg_s;
        c[u].eval_s = cheap / FULL, c[u].ref_eval_s = fullt / (FULL / 32), c[u].ref = rt, c[u].preds = p;
        memcpy(c[u].split, rt->split, sizeof c[u].split), memcpy(c[u].utility, rt->utility, sizeof c[u].utility);
    }
    return 0;
}

/* --sample's cost: seconds of one coalition evaluation (aggregate, BN re-estimation, predictions)
 * on `m` of the evaluation images and on all of them, timed interleaved over 16 coalitions. */
static void time_sample(const game_t *g, int m, double *sample_s, double *full_s) {
    preds_t *all = preds_new(g->eval), *some = preds_new(m < g->eval ? m : g->eval);
    *sample_s = *full_s = 0;
    if (all && some) {
        memset(all->labels, 0, sizeof(int32_t) * all->images), memset(some->labels, 0, sizeof(int32_t) * some->images);
        game_t gg = *g;
        double a, l;
        for (uint32_t S = 17; S < FULL; S += 64) {
            double t0 = bf_now();
            live_utility(&gg, S, some, &a, &l);
            double t1 = bf_now();
            live_utility(&gg, S, all, &a, &l);
            *sample_s += (t1 - t0) / 16, *full_s += (bf_now() - t1) / 16;
        }
    }
    preds_free(&all), preds_free(&some);
}

/* The same for a cheaper game (its `recal` BN images; the valuation images are the sample's or
 * all of the full game's, as --sample needs them all), into both of its tables. */
static void time_cheap_sample(const game_t *full, int recal, int sample, table_t *c) {
    game_t g = *full;
    g.recal = recal < full->recal ? recal : full->recal;
    time_sample(&g, sample, &c[0].sample_eval_s, &c[0].sample_full_s);
    c[1].sample_eval_s = c[0].sample_eval_s, c[1].sample_full_s = c[0].sample_full_s;
}

/* ---- BN statistics on fewer images, corrected from the anchors' (--bn-fit R) ------------------ */

#define ANCHORS (2 * N + 2)

/* The sampled surrogate's game with the coordinator's cheaper BN statistics: the anchors (empty,
 * full, singletons, leave-one-outs) are re-estimated on all BN images; every other coalition on
 * `recal` of them (every k-th), plus what that misses, predicted by bf_coalition_fit from the
 * anchors' (each anchor's full statistics minus its statistics on the fewer images). Fills c[0],
 * c[1] with all 2^N coalitions on every valuation image (the estimator draws its sample from
 * them), and times a non-anchor's evaluation on `sample` images against a full evaluation
 * (16 coalitions, interleaved) into sample_eval_s / sample_full_s. */
static int bnfit_round(live_t *L, const table_t *ref, const table_t *ref_loss, int sample, int recal, table_t *c,
                       bf_err_t *err) {
    game_t *g = &L->g, few = *g;
    size_t nb = bf_net_num_buffers(g->net);
    int r0 = recal < g->recal ? recal : g->recal;
    uint32_t anc[ANCHORS];
    anc[0] = 0, anc[1] = FULL - 1;
    for (int i = 0; i < N; i++) anc[2 + i] = 1u << i, anc[2 + N + i] = (FULL - 1) ^ (1u << i);
    float *rx = malloc(sizeof(float) * (size_t)r0 * 784 + 1), *pb = malloc(sizeof(float) * nb),
          *ab = malloc(sizeof(float) * nb * ANCHORS);
    bf_coalition_fit_t *fit = bf_coalition_fit_new(N, NULL, nb);
    int M = ref->preds->images;
    preds_t *p = preds_new(M), *some = preds_new(sample > 0 && sample < M ? sample : 1), *scratch = preds_new(M);
    if (!rx || !pb || !ab || !fit || !p || !some || !scratch)
        return free(rx), free(pb), free(ab), bf_coalition_fit_destroy(&fit), preds_free(&p), preds_free(&some),
               preds_free(&scratch), bf_err_set(err, "out of memory");
    memset(some->labels, 0, sizeof(int32_t) * some->images), memset(scratch->labels, 0, sizeof(int32_t) * M);
    spread_recal(g, r0, rx);
    few.rx = rx, few.recal = r0;
    memcpy(p->labels, ref->preds->labels, sizeof(int32_t) * p->images);
    for (int r = 0; r < ANCHORS; r++) { /* the anchors' own statistics, and what the fewer images miss */
        aggregate(g, anc[r], bf_net_params(g->net), ab + (size_t)r * nb);
        if (!anc[r]) continue;
        aggregate(&few, anc[r], bf_net_params(g->net), pb);
        for (size_t e = 0; e < nb; e++) pb[e] = ab[(size_t)r * nb + e] - pb[e];
        bf_coalition_fit_add(fit, anc[r], pb);
    }
    int rc = bf_coalition_fit_solve(fit) ? bf_err_set(err, "the BN fit failed") : 0;
    double tfull = 0, tsub = 0, a, l;
    for (uint32_t S = 0; S < FULL && !rc; S++) {
        int r = 0;
        while (r < ANCHORS && anc[r] != S) r++;
        for (int timed = 0; timed < 1 + (S % 64 == 17); timed++) { /* now and then a sample's, then a full one */
            double t0 = bf_now();
            aggregate(&few, S, bf_net_params(g->net), bf_net_buffers(g->net));
            float *buf = bf_net_buffers(g->net);
            if (r < ANCHORS) memcpy(buf, ab + (size_t)r * nb, sizeof(float) * nb);
            else {
                bf_coalition_fit_predict(fit, S, pb);
                for (size_t e = 0; e < nb; e++) buf[e] += pb[e];
            }
            float *z = timed ? some->z : p->z + (size_t)S * p->images * CLASSES;
            bf_net_predict(g->net, g->x, timed ? some->images : p->images, z);
            if (!timed) {
                bf_preds_t pa = {p->images, CLASSES, p->labels, NULL, 0, NULL}, pl = pa;
                pl.loss = 1;
                c[0].u[S] = bf_preds_utility(&pa, z), c[1].u[S] = bf_preds_utility(&pl, z);
                continue;
            }
            double t1 = bf_now();
            live_utility(g, S, scratch, &a, &l); /* S's full evaluation, for the cost ratio */
            tfull += bf_now() - t1, tsub += t1 - t0;
        }
    }
    preds_free(&some), preds_free(&scratch), bf_coalition_fit_destroy(&fit), free(rx), free(pb), free(ab);
    if (rc) return preds_free(&p), -1;
    for (int u = 0; u < 2; u++) {
        const table_t *rt = u ? ref_loss : ref;
        c[u].round = rt->round, c[u].recal = r0, c[u].local_s = rt->local_s, c[u].agg_s = rt->agg_s;
        c[u].eval_s = tfull / 16, c[u].ref_eval_s = tfull / 16, c[u].ref = rt, c[u].preds = p;
        c[u].sample_eval_s = tsub / 16, c[u].sample_full_s = tfull / 16;
        memcpy(c[u].split, rt->split, sizeof c[u].split), memcpy(c[u].utility, rt->utility, sizeof c[u].utility);
    }
    return 0;
}

static void swap_f(float *a, float *b, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float t = a[i];
        a[i] = b[i], b[i] = t;
    }
}

/* ---- estimator against exact on tables ------------------------------------------------------ */

typedef struct {
    double err_sum, err_max, rho_sum, rho_min, frac_sum, evals_sum;
    int runs;
} stats_t;

static void stats_add(stats_t *s, double e, double rho, double frac, int evals) {
    if (!s->runs) s->err_max = e, s->rho_min = rho;
    s->err_sum += e, s->rho_sum += rho, s->frac_sum += frac, s->evals_sum += evals, s->runs++;
    if (e > s->err_max) s->err_max = e;
    if (rho < s->rho_min) s->rho_min = rho;
}

/* valuation / (local + aggregation + valuation) for a round valued with `evals` evaluations */
static double time_fraction(const table_t *t, double evals) {
    double v = evals * t->eval_s;
    return v / (t->local_s + t->agg_s + v);
}

/* Mean seconds of one evaluation of an estimator run of `evals` coalitions: with --sample the
 * first 2n + 2 on every image, the others at the measured cost ratio of a sample's evaluation. */
static double estimator_eval_s(const table_t *t, int sample, int evals) {
    if (!sample || evals <= 2 * N + 2 || !(t->sample_full_s > 0)) return t->eval_s;
    double ratio = t->sample_eval_s / t->sample_full_s;
    return t->eval_s * (2 * N + 2 + (evals - 2 * N - 2) * ratio) / evals;
}

/* A federation's values summed over its rounds (what settlement pays on): tables of one split and
 * one utility, exact and estimated per budget and seed. */
typedef struct {
    char split[32], utility[16];
    int tables;
    double exact[N], est[MAX_BUDGETS][MAX_SEEDS][N];
} cumul_t;

static cumul_t *cumul_find(cumul_t *cu, int *ncu, const table_t *t) {
    for (int k = 0; k < *ncu; k++)
        if (!strcmp(cu[k].split, t->split) && !strcmp(cu[k].utility, t->utility)) return &cu[k];
    if (*ncu == MAX_GROUPS) return NULL;
    cumul_t *c = &cu[(*ncu)++];
    memset(c, 0, sizeof *c);
    snprintf(c->split, sizeof c->split, "%s", t->split), snprintf(c->utility, sizeof c->utility, "%s", t->utility);
    return c;
}

/* A cheaper game's values are moved to sum to what the full game's do (U(all) - U(empty) of the
 * full models, which the coordinator has anyway), the difference shared equally, as the coordinator
 * does. */
static void cheap_correct(const table_t *t, double *phi) {
    if (!t->ref) return;
    double d = (t->ref->u[FULL - 1] - t->ref->u[0]) - (t->u[FULL - 1] - t->u[0]);
    for (int i = 0; i < N; i++) phi[i] += d / N;
}

/* The estimator under test: from the coalitions' predictions when the table has them (the
 * coordinator's), else (or with --estimator layers) from their utilities alone. */
static int estimate(const table_t *t, table_game_t *tg, int layers, int sample, int budget, uint64_t seed, double *est,
                    int *evals, bf_err_t *err) {
    if (layers || !t->preds) {
        int rc = bf_shapley_layers(N, table_utility, tg, budget, seed, est, evals, err);
        cheap_correct(t, est);
        return rc;
    }
    bf_preds_t p = {t->preds->images, CLASSES, t->preds->labels, NULL, !strcmp(t->utility, "loss"), t->preds->w};
    int rc = sample ? bf_shapley_surrogate_sampled(N, table_logits_subset, tg, &p, budget, sample, seed, est, evals, err)
                    : bf_shapley_surrogate(N, table_logits, tg, &p, budget, seed, est, evals, err);
    cheap_correct(t, est);
    return rc;
}

static int run_table(const table_t *t, const int *budgets, int nb, int seeds, int json, int layers, int sample,
                     stats_t *st, cumul_t *cu) {
    table_game_t tg = {t->u, t->preds, 0};
    const char *name = layers || !t->preds ? "layers" : sample ? "surrogate-sampled" : "surrogate";
    sample = layers || !t->preds ? 0 : sample;
    double exact[N], est[N];
    bf_err_t err;
    if (t->ref) { /* the reference is the full game's exact values; this game's own exact values are its floor */
        table_game_t rg = {t->ref->u, t->ref->preds, 0};
        double own[N];
        if (bf_shapley_exact(N, table_utility, &rg, exact, &err) || bf_shapley_exact(N, table_utility, &tg, own, &err))
            return fprintf(stderr, "%s\n", err.msg), -1;
        cheap_correct(t, own);
        if (json)
            printf("{\"bench\":\"shapley\",\"n\":%d,\"round\":%d,\"split\":\"%s\",\"utility\":\"%s\",\"estimator\":\"exact-cheap\","
                   "\"recal_images\":%d,\"images\":%d,\"evaluations\":%u,\"rel_l2_error\":%.4f,\"spearman\":%.3f,"
                   "\"eval_s\":%.4f,\"full_eval_s\":%.4f,\"eval_cost_ratio\":%.3f}\n",
                   N, t->round, t->split, t->utility, t->recal, t->preds ? t->preds->images : 0, FULL, rel_l2(own, exact),
                   spearman(own, exact), t->eval_s, t->ref_eval_s, t->eval_s / t->ref_eval_s);
        else
            printf("round %d (%s, U = %s%s), cheaper game (%d BN images, %d valuation images): %.4f s per evaluation "
                   "(%.4f s full, interleaved: x%.3f); its exact values vs the full game's: rel. L2 error %.2f%%, "
                   "Spearman %.3f\n",
                   t->round, t->split, t->utility[0] == 'l' ? "-" : "", t->utility, t->recal,
                   t->preds ? t->preds->images : 0, t->eval_s, t->ref_eval_s, t->eval_s / t->ref_eval_s,
                   100 * rel_l2(own, exact), spearman(own, exact));
    } else if (bf_shapley_exact(N, table_utility, &tg, exact, &err))
        return fprintf(stderr, "%s\n", err.msg), -1;
    cu->tables++;
    for (int i = 0; i < N; i++) cu->exact[i] += exact[i];
    const table_t *x = t->ref ? t->ref : t; /* U(empty), U(all) of the full game */
    if (json)
        printf("{\"bench\":\"shapley\",\"n\":%d,\"round\":%d,\"split\":\"%s\",\"utility\":\"%s\",\"estimator\":\"exact\",\"evaluations\":%u,"
               "\"u_empty\":%.4f,\"u_all\":%.4f,\"eval_s\":%.4f,\"local_epoch_s\":%.2f,\"aggregation_s\":%.3f,"
               "\"valuation_s\":%.1f,\"shapley_time_fraction\":%.4f}\n",
               N, t->round, t->split, t->utility, FULL, x->u[0], x->u[FULL - 1], t->eval_s, t->local_s, t->agg_s, FULL * t->eval_s,
               time_fraction(t, FULL));
    else
        printf("round %d (%s, U = %s%s): U(empty) %.3f, U(all) %.3f; exact: %u evaluations, %.1f s = %.0f%% of the round "
               "(slowest local epoch %.2f s, aggregation %.3f s)\n",
               t->round, t->split, t->utility[0] == 'l' ? "-" : "", t->utility, x->u[0], x->u[FULL - 1], FULL, FULL * t->eval_s, 100 * time_fraction(t, FULL), t->local_s,
               t->agg_s);
    for (int b = 0; b < nb; b++) {
        stats_t s = {0};
        double t_est = 0, eval_s = estimator_eval_s(t, sample, budgets[b]);
        for (int seed = 1; seed <= seeds; seed++) {
            int evals = 0;
            tg.calls = 0;
            double t0 = bf_now();
            if (estimate(t, &tg, layers, sample, budgets[b], (uint64_t)seed, est, &evals, &err))
                return fprintf(stderr, "%s\n", err.msg), -1;
            t_est += bf_now() - t0;
            if (tg.calls != evals || evals > budgets[b])
                return fprintf(stderr, "estimator: %d callback calls, %d evaluations reported, budget %d\n", tg.calls,
                               evals, budgets[b]),
                       -1;
            for (int i = 0; i < N; i++) cu->est[b][seed - 1][i] += est[i];
            double frac = time_fraction(t, evals * estimator_eval_s(t, sample, evals) / t->eval_s);
            stats_add(&s, rel_l2(est, exact), spearman(est, exact), frac, evals);
            stats_add(&st[b], rel_l2(est, exact), spearman(est, exact), frac, evals);
        }
        if (json)
            printf("{\"bench\":\"shapley\",\"n\":%d,\"round\":%d,\"split\":\"%s\",\"utility\":\"%s\",\"estimator\":\"%s\","
                   "\"budget\":%d,\"sample_images\":%d,\"seeds\":%d,\"evaluations\":%.1f,\"rel_l2_error_mean\":%.4f,"
                   "\"rel_l2_error_max\":%.4f,\"spearman_mean\":%.3f,\"spearman_min\":%.3f,\"eval_s\":%.4f,\"full_eval_s\":%.4f,"
                   "\"estimator_overhead_s\":%.6f,\"valuation_s\":%.2f,\"shapley_time_fraction\":%.4f}\n",
                   N, t->round, t->split, t->utility, name, budgets[b], sample, seeds, s.evals_sum / s.runs, s.err_sum / s.runs,
                   s.err_max, s.rho_sum / s.runs, s.rho_min, eval_s, t->eval_s, t_est / seeds, s.evals_sum / s.runs * eval_s,
                   s.frac_sum / s.runs);
        else
            printf("  %s, budget %3d: %5.1f evaluations, rel. L2 error %5.2f%% mean / %5.2f%% worst, Spearman %.3f mean / "
                   "%.3f worst over %d seeds; %.4f s per evaluation (x%.3f); valuation %.1f s = %.1f%% of the round\n",
                   name, budgets[b], s.evals_sum / s.runs, 100 * s.err_sum / s.runs, 100 * s.err_max, s.rho_sum / s.runs,
                   s.rho_min, seeds, eval_s, eval_s / t->eval_s, s.evals_sum / s.runs * eval_s, 100 * s.frac_sum / s.runs);
    }
    fflush(stdout);
    return 0;
}

/* st[u * MAX_BUDGETS + b]: utility u (0 accuracy, 1 loss), budget b; tables counted per utility */
static void print_summary(const stats_t *st, const int *budgets, int nb, const int *ntables, int seeds, int json) {
    for (int u = 0; u < 2; u++)
    for (int b = 0; b < nb; b++) {
        const stats_t *s = &st[u * MAX_BUDGETS + b];
        const char *name = u ? "loss" : "accuracy";
        if (!s->runs) continue;
        if (json)
            printf("{\"bench\":\"shapley\",\"n\":%d,\"summary\":true,\"utility\":\"%s\",\"tables\":%d,\"seeds\":%d,\"budget\":%d,"
                   "\"evaluations\":%.1f,\"rel_l2_error_mean\":%.4f,\"rel_l2_error_max\":%.4f,\"spearman_mean\":%.3f,"
                   "\"spearman_min\":%.3f,\"shapley_time_fraction\":%.4f}\n",
                   N, name, ntables[u], seeds, budgets[b], s->evals_sum / s->runs, s->err_sum / s->runs, s->err_max,
                   s->rho_sum / s->runs, s->rho_min, s->frac_sum / s->runs);
        else
            printf("U = %s: all %d tables x %d seeds, budget %3d: rel. L2 error %5.2f%% mean / %5.2f%% worst, Spearman %.3f mean "
                   "/ %.3f worst, valuation %.1f%% of the round\n",
                   name, ntables[u], seeds, budgets[b], 100 * s->err_sum / s->runs, 100 * s->err_max, s->rho_sum / s->runs,
                   s->rho_min, 100 * s->frac_sum / s->runs);
    }
}

static void print_cumulative(const cumul_t *cu, int ncu, const int *budgets, int nb, int seeds, int json) {
    for (int k = 0; k < ncu; k++)
        for (int b = 0; b < nb; b++) {
            stats_t s = {0};
            for (int seed = 0; seed < seeds; seed++)
                stats_add(&s, rel_l2(cu[k].est[b][seed], cu[k].exact), spearman(cu[k].est[b][seed], cu[k].exact), 0,
                          budgets[b]);
            if (json)
                printf("{\"bench\":\"shapley\",\"n\":%d,\"cumulative\":true,\"split\":\"%s\",\"utility\":\"%s\","
                       "\"rounds\":%d,\"seeds\":%d,\"budget\":%d,\"rel_l2_error_mean\":%.4f,\"rel_l2_error_max\":%.4f,"
                       "\"spearman_mean\":%.3f,\"spearman_min\":%.3f}\n",
                       N, cu[k].split, cu[k].utility, cu[k].tables, seeds, budgets[b], s.err_sum / s.runs, s.err_max,
                       s.rho_sum / s.runs, s.rho_min);
            else
                printf("cumulative over %d rounds (%s, U = %s), budget %3d: rel. L2 error %5.2f%% mean / %5.2f%% worst, "
                       "Spearman %.3f mean / %.3f worst\n",
                       cu[k].tables, cu[k].split, cu[k].utility, budgets[b], 100 * s.err_sum / s.runs, 100 * s.err_max,
                       s.rho_sum / s.runs, s.rho_min);
        }
}

static int parse_budgets(const char *s, int *b) {
    int k = 0;
    for (char *end; *s && k < MAX_BUDGETS; s = *end ? end + 1 : end) {
        long v = strtol(s, &end, 10);
        if (end == s || v < 2 * N + 2 || v > (long)FULL || (*end && *end != ',')) return -1;
        b[k++] = (int)v;
    }
    return k ? k : -1;
}

static int usage(FILE *f) {
    fprintf(f, "usage: blockfed-bench shapley [--json] [--images PER_PARTICIPANT=5000] [--eval IMAGES=2000] [--rounds R=1]\n"
               "                              [--split iid|dirichlet:A] [--seed S=7] [--save-table FILE] [--save-updates FILE]\n"
               "                              [--budgets 22,32,50,100] [--seeds K=5] [--estimator surrogate|layers]\n"
               "                              [--recalibrate IMAGES=%d] [--cheap BN_IMAGES:IMAGES|off=off] [--sample M]\n"
               "       blockfed-bench shapley --table FILE [--json] [--budgets LIST] [--seeds K] [--estimator E]\n"
               "       blockfed-bench shapley --table FILE --updates FILE [--cheap R:M | --bn-fit R] [--sample M]\n"
               "                              --split S --seed S [--images N]\n"
               "  Trains 10 ResNet8 participants R rounds (one local epoch each) on Fashion-MNIST, evaluates every\n"
               "  coalition each round on the first IMAGES test images (exact Shapley, U = accuracy and U = -loss)\n"
               "  and the budgeted estimator at each budget over K seeds. With --cheap the estimator values a\n"
               "  cheaper game (coalition models' BN statistics on BN_IMAGES of the recalibration images, U on\n"
               "  IMAGES valuation images drawn by bf_preds_sample), every coalition of it evaluated too, scored\n"
               "  against the full game's exact values (the coordinator values the full game).\n"
               "  --sample M: the sampled surrogate (the 2n + 2 anchors on every image, the other coalitions on M\n"
               "  images), its cost timed on the live game (with --table it needs --updates). --bn-fit R: the\n"
               "  game run --shapley-sample values (coalitions beyond the anchors: BN statistics on R images plus\n"
               "  the anchors' fitted correction), every coalition of it evaluated, against the full game.\n"
               "  --save-table appends each round's two full 2^10-utility tables to FILE and every coalition's\n"
               "  logits to FILE.preds; --table re-runs the estimator on saved tables (no training), --updates\n"
               "  (the rounds' updates, from --save-updates) the cheaper game on them (same --split, --seed and\n"
               "  --images as the run that saved them). The estimator is the coordinator's (surrogate, from the\n"
               "  coalitions' predictions; layers where FILE.preds is missing) or the layer estimator.\n"
               "  Every aggregated model's BatchNorm statistics are re-estimated on IMAGES training images\n"
               "  spread over the participants' blocks, as the coordinator does (0: kept as averaged).\n"
               "  What the figures mean and those measured so far: docs/SHAPLEY.md.\n",
            BENCH_BN_RECALIBRATE_IMAGES);
    return f == stdout ? 0 : 2;
}

int bench_shapley_main(int argc, char **argv) {
    int json = 0, layers = 0, recal = BENCH_BN_RECALIBRATE_IMAGES, eval = 2000, images = 5000, rounds = 1, seeds = 5, c, budgets[MAX_BUDGETS] = {22, 32, 50, 100}, nb = 4;
    const char *split = "iid", *save = NULL, *load = NULL, *save_updates = NULL, *updates = NULL;
    int cheap_recal = 0, cheap_images = 400; /* the cheaper game: off, as the coordinator's default */
    int bnfit = 0;  /* --bn-fit R: the non-anchors' BN statistics predicted from the anchors' */
    int sample = 0; /* --sample: the sampled surrogate's images (0: the surrogate on every image) */
    uint64_t seed = 7;
    static const struct option opts[] = {
        {"json", no_argument, 0, 'j'},        {"eval", required_argument, 0, 'e'},    {"rounds", required_argument, 0, 'r'},
        {"split", required_argument, 0, 'p'}, {"seed", required_argument, 0, 's'},    {"save-table", required_argument, 0, 'w'},
        {"table", required_argument, 0, 't'}, {"budgets", required_argument, 0, 'b'}, {"seeds", required_argument, 0, 'k'},
        {"images", required_argument, 0, 'i'}, {"estimator", required_argument, 0, 'E'}, {"help", no_argument, 0, 'h'},
        {"recalibrate", required_argument, 0, 'R'}, {"save-updates", required_argument, 0, 'W'},
        {"updates", required_argument, 0, 'U'}, {"cheap", required_argument, 0, 'C'},
        {"sample", required_argument, 0, 'S'}, {"bn-fit", required_argument, 0, 'F'},
        {0, 0, 0, 0}};
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 'j') json = 1;
        else if (c == 'e') eval = atoi(optarg);
        else if (c == 'r') rounds = atoi(optarg);
        else if (c == 'i') images = atoi(optarg);
        else if (c == 'R') recal = atoi(optarg);
        else if (c == 'p') split = optarg;
        else if (c == 's') seed = strtoull(optarg, NULL, 10);
        else if (c == 'w') save = optarg;
        else if (c == 'W') save_updates = optarg;
        else if (c == 'U') updates = optarg;
        else if (c == 'S') sample = atoi(optarg);
        else if (c == 'F' && (bnfit = atoi(optarg)) < 1) return usage(stderr);
        else if (c == 'C') {
            if (!strcmp(optarg, "off")) cheap_recal = 0;
            else if (sscanf(optarg, "%d:%d", &cheap_recal, &cheap_images) != 2 || cheap_recal < 1 || cheap_images < 1)
                return usage(stderr);
        }
        else if (c == 'E') {
            if (strcmp(optarg, "surrogate") && strcmp(optarg, "layers")) return usage(stderr);
            layers = !strcmp(optarg, "layers");
        }
        else if (c == 't') load = optarg;
        else if (c == 'b') {
            if ((nb = parse_budgets(optarg, budgets)) < 0)
                return fprintf(stderr, "bench shapley: --budgets takes up to %d comma-separated numbers in [%d, %u]\n",
                               MAX_BUDGETS, 2 * N + 2, FULL),
                       2;
        } else if (c == 'k') seeds = atoi(optarg);
        else if (c == 'h') return usage(stdout);
        else return usage(stderr);
    }
    if (optind < argc || rounds < 1 || 2 * rounds > MAX_TABLES || images < 64 || images > 5500 || seeds < 1 || seeds > MAX_SEEDS || eval < 1 || eval > 10000 ||
        recal < 0 || recal > 50000 ||
        (load && save) || (updates && !load) || (save_updates && load) || sample < 0 || sample > eval ||
        (sample && load && !updates) || (bnfit && (!updates || cheap_recal)))
        return usage(stderr);
    stats_t st[2 * MAX_BUDGETS] = {{0}};
    int per_utility[2] = {0, 0}, ncu = 0;
    cumul_t *cu = calloc(MAX_GROUPS, sizeof(cumul_t));
    table_t *tables = calloc(MAX_TABLES, sizeof(table_t)), *cheap_t = calloc(MAX_TABLES, sizeof(table_t));
    if (!tables || !cu || !cheap_t)
        return free(tables), free(cu), free(cheap_t), fprintf(stderr, "bench shapley: out of memory\n"), 1;
    int ntables = 0, rc = 0;
    if (load) {
        if ((ntables = table_load(load, tables)) <= 0) {
            free(tables), free(cu);
            return fprintf(stderr, "bench shapley: %s: no readable n=%d utility table\n", load, N), 1;
        }
        if (preds_load(load, tables, ntables)) rc = (fprintf(stderr, "bench shapley: %s.preds does not fit the tables\n", load), -1);
        live_t L;
        bf_err_t err;
        int ncheap = 0;
        if (!rc && updates) { /* the cheaper games of the same rounds replace the tables as what is valued */
            if (live_init(&L, split, seed, eval, images, recal, &err))
                rc = (fprintf(stderr, "bench shapley: %s\n", err.msg), -1);
            for (int k = 0; k < ntables && !rc && sample && !cheap_recal && !bnfit; k++) /* --sample's cost, full game */
                time_sample(&L.g, sample, &tables[k].sample_eval_s, &tables[k].sample_full_s);
            for (int k = 0; k + 1 < ntables && !rc && (cheap_recal || bnfit); k += 2) {
                table_t *ref = &tables[k];
                if (!ref->preds || strcmp(ref->utility, "accuracy") || strcmp(tables[k + 1].utility, "loss") ||
                    ref->preds->images > eval)
                    rc = (fprintf(stderr, "bench shapley: --updates needs each round's accuracy and loss tables with their "
                                          "predictions on at most --eval images\n"), -1);
                else if (updates_load(updates, ref->round, &L))
                    rc = (fprintf(stderr, "bench shapley: %s: no round %d of this federation's shape\n", updates, ref->round), -1);
                else {
                    int32_t *ix = malloc(sizeof(int32_t) * ref->preds->images);
                    for (int i = 0; ix && i < ref->preds->images; i++) ix[i] = i;
                    if (ix) bf_batch_fill(L.g.val, ix, ref->preds->images, &L.mean, &L.std, NULL, L.g.x, NULL);
                    free(ix);
                    if (!ix || (bnfit ? bnfit_round(&L, ref, &tables[k + 1], sample, bnfit, &cheap_t[ncheap], &err)
                                      : cheap_round(&L, ref, &tables[k + 1], cheap_recal, cheap_images, &cheap_t[ncheap], &err)))
                        rc = (fprintf(stderr, "bench shapley: %s\n", ix ? err.msg : "out of memory"), -1);
                    else {
                        if (sample && !bnfit) time_cheap_sample(&L.g, cheap_recal, sample, &cheap_t[ncheap]);
                        ncheap += 2;
                    }
                }
            }
        }
        table_t *valued = cheap_recal || bnfit ? cheap_t : tables;
        int nvalued = cheap_recal || bnfit ? ncheap : ntables;
        for (int k = 0; k < nvalued && !rc; k++) {
            int u = !strcmp(valued[k].utility, "loss");
            per_utility[u]++;
            cumul_t *g = cumul_find(cu, &ncu, &valued[k]);
            rc = g ? run_table(&valued[k], budgets, nb, seeds, json, layers, sample, st + u * MAX_BUDGETS, g) : -1;
        }
        for (int k = 0; k < ncheap; k += 2) preds_free(&cheap_t[k].preds);
        if (updates) live_free(&L);
    } else {
        live_t L;
        bf_err_t err;
        if (live_init(&L, split, seed, eval, images, recal, &err)) {
            free(tables), free(cu);
            return fprintf(stderr, "bench shapley: %s\n", err.msg), 1;
        }
        L.save_updates = save_updates;
        int ncheap = 0;
        float *start_p = malloc(sizeof(float) * bf_net_num_params(L.global)), *start_b = malloc(sizeof(float) * (bf_net_num_buffers(L.global) + 1));
        if (!start_p || !start_b) rc = (fprintf(stderr, "bench shapley: out of memory\n"), -1);
        for (int r = 1; r <= rounds && !rc; r++) {
            table_t *t = &tables[ntables];
            snprintf(t->split, sizeof t->split, "%s", split);
            memcpy(start_p, L.g_params, sizeof(float) * bf_net_num_params(L.global)); /* live_round moves them */
            memcpy(start_b, L.g_buffers, sizeof(float) * bf_net_num_buffers(L.global));
            if ((rc = live_round(&L, r, t, &err))) {
                fprintf(stderr, "bench shapley: %s\n", err.msg);
                break;
            }
            ntables += 2;
            if (sample) time_sample(&L.g, sample, &t[0].sample_eval_s, &t[0].sample_full_s);
            t[1].sample_eval_s = t[0].sample_eval_s, t[1].sample_full_s = t[0].sample_full_s;
            if (save && (table_save(save, &t[0], r > 1) || table_save(save, &t[1], 1) ||
                         preds_save(save, r, t[0].preds, r > 1))) {
                fprintf(stderr, "bench shapley: cannot write %s\n", save);
                rc = -1;
                break;
            }
            table_t *v = t; /* what is valued: the cheaper game when on (the coordinator's), else the full one */
            if (cheap_recal > 0 && ncheap + 2 <= MAX_TABLES) {
                /* the cheaper game of the same updates, from the round's starting model */
                size_t np = bf_net_num_params(L.global), nb2 = bf_net_num_buffers(L.global);
                swap_f(L.g_params, start_p, np), swap_f(L.g_buffers, start_b, nb2);
                rc = cheap_round(&L, &t[0], &t[1], cheap_recal, cheap_images, &cheap_t[ncheap], &err);
                swap_f(L.g_params, start_p, np), swap_f(L.g_buffers, start_b, nb2);
                if (rc) {
                    fprintf(stderr, "bench shapley: %s\n", err.msg);
                    break;
                }
                if (sample) time_cheap_sample(&L.g, cheap_recal, sample, &cheap_t[ncheap]);
                v = &cheap_t[ncheap], ncheap += 2;
            }
            for (int u = 0; u < 2 && !rc; u++) {
                per_utility[u]++;
                rc = run_table(&v[u], budgets, nb, seeds, json, layers, sample, st + u * MAX_BUDGETS, cumul_find(cu, &ncu, &v[u]));
            }
        }
        for (int k = 0; k < ncheap; k += 2) preds_free(&cheap_t[k].preds);
        free(start_p), free(start_b);
        live_free(&L);
    }
    if (!rc) print_summary(st, budgets, nb, per_utility, seeds, json), print_cumulative(cu, ncu, budgets, nb, seeds, json);
    for (int k = 0; k < ntables; k++) { /* a round's two tables share one record */
        preds_t *p = tables[k].preds;
        for (int j = k; j < ntables; j++)
            if (tables[j].preds == p) tables[j].preds = NULL;
        preds_free(&p);
    }
    free(tables), free(cu), free(cheap_t);
    return rc ? 1 : 0;
}

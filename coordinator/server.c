/* server.c: the coordinator's ROUTER loop: accounts, tasks, data blocks and training rounds.
 *
 * One thread owns the socket, the ledger and the state store and answers every request at once;
 * aggregation and evaluation of a closed round run on a worker actor, so heartbeats, other tasks
 * and status requests keep being answered while a round is being aggregated. Identity is the
 * CURVE key the connection authenticated with (bf_msg_user_id), never a name in a message. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bf_mp.h"
#include "bf_proto.h"
#include "bf_predictor.h"
#include "bf_shapley.h"
#include "bf_trainer.h"
#include "coord.h"

#define SERVER_NAME "blockfed-coordinator/0.1"
#define MAX_GARBAGE 50 /* malformed messages a peer may send before it is ignored */
#define SWEEP_MS 10000 /* how often holds left by interrupted predictions are released */
/* A PREDICT can carry 64 images of 16 MiB: bound what one payer, and everyone, may queue. */
#define MAX_INFLIGHT_PER_USER 16
#define MAX_INFLIGHT_TOTAL 512
#define SETTLE_MAX_VALUE 1e12 /* a cumulative Shapley value weighs at most this at settlement (int64 micro-units) */

typedef struct {
    char name[65];
    bf_dataset_t train, test;
    float mean[4], std[4];
} dataset_t;

typedef struct {
    char key[41];
    int64_t user_id;
    int own_data, left;
    int64_t samples;         /* images it trains on (blocks x block size, or declared own data) */
    int32_t *blocks;
    int nblocks;
    int update_round;        /* round of the update it holds (-1: none) */
    float *params, *buffers; /* that update */
    int64_t upd_samples;
    double upd_loss;
    int64_t contributed;     /* samples over all accepted updates */
    double shapley;          /* cumulative Shapley value (validation accuracy points) over the rounds */
} part_t;

typedef struct {
    int participants;
    int64_t samples;
    double val_acc, val_loss, test_acc, seconds;
} round_metric_t;

typedef struct task {
    task_spec_t spec;
    int64_t ledger_id;
    char state[16];          /* waiting | running | aggregating | completed | cancelled */
    int round;               /* completed rounds; the open round's number while running */
    int64_t round_start;
    dataset_t *ds;
    bf_blocks_t blocks;
    int32_t *owner;          /* per block: participant index, -1 free */
    bf_dataset_t val;
    bf_net_t *global;
    bf_agg_t *agg;
    bf_agg_opts_t agg_opts;
    bf_net_t *coalition;     /* scratch model for valuing coalitions (worker thread only) */
    float *recal_x;          /* BN recalibration images (normalized, from the task's blocks) */
    int nrecal;
    part_t *parts;
    int nparts;
    round_metric_t *metrics;
    int nmetrics;
    char checkpoint_sha[65], result_hash[65];
} task_t;

typedef struct {
    coord_opts_t o;
    bf_ledger_t *ledger;
    coord_store_t *store;
    zsock_t *router;
    zactor_t *zap, *worker, *predict;
    int64_t last_sweep;      /* ms: expired prediction holds are released every SWEEP_MS */
    dataset_t ds[COORD_MAX_DATASETS];
    int nds;
    task_t **tasks;
    int ntasks;
    zhashx_t *seen;          /* CURVE key -> last message time (ms), as int64_t* */
    zhashx_t *garbage;       /* routing id (hex) -> malformed message count */
    zhashx_t *users;         /* CURVE key -> user id (int64_t*): a key's account never changes */
    zhashx_t *inflight;      /* payer id (decimal) -> PREDICT requests queued or running (int*) */
    int inflight_total;
} server_t;

/* A closed round handed to the worker; the worker fills the results. */
typedef struct {
    task_t *t;
    int k;
    const float **params, **buffers;
    int64_t *samples;
    int threads;
    int value, exact_max, budget, utility_loss; /* valuation: this round?, exact up to, estimator budget */
    char path[4096];
    /* results */
    int ok;
    char err[4600], sha[65];
    double *phi;              /* Shapley value of each of the k updates this round */
    int shapley_evals;
    const char *estimator; /* how the round was valued: "exact", "surrogate", "layers", "truncated" */
    double val_acc, val_loss, test_acc, seconds;
} job_t;

static int64_t now_ms(void) { return zclock_mono(); }

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logf_(const char *fmt, ...) {
    char ts[32];
    time_t t = time(NULL);
    strftime(ts, sizeof ts, "%Y-%m-%d %H:%M:%S", localtime(&t));
    printf("%s ", ts);
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
}

/* ---- msgpack builders for the "any" reply fields ------------------------------------------- */

typedef struct {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} mp_t;

static msgpack_packer *mp_begin(mp_t *m) {
    msgpack_sbuffer_init(&m->sb);
    msgpack_packer_init(&m->pk, &m->sb, msgpack_sbuffer_write);
    return &m->pk;
}

static void mp_kv_str(msgpack_packer *pk, const char *k, const char *v) { bf_mp_pack_str(pk, k), bf_mp_pack_str(pk, v); }
static void mp_kv_int(msgpack_packer *pk, const char *k, int64_t v) { bf_mp_pack_str(pk, k), msgpack_pack_int64(pk, v); }
static void mp_kv_dbl(msgpack_packer *pk, const char *k, double v) { bf_mp_pack_str(pk, k), msgpack_pack_double(pk, v); }

static void money(char buf[32], int64_t cents) { bf_money_format_amount(cents, 2, buf); }
static void mp_kv_money(msgpack_packer *pk, const char *k, int64_t cents) {
    char b[32];
    money(b, cents);
    mp_kv_str(pk, k, b);
}

/* Sets an any field from the builder and frees the builder. */
static void mp_set(mp_t *m, bf_msg_t *msg, const char *key) {
    bf_msg_set_any(msg, key, m->sb.data, m->sb.size);
    msgpack_sbuffer_destroy(&m->sb);
}

/* ---- lookups ------------------------------------------------------------------------------- */

static task_t *find_task(server_t *s, const char *id) {
    for (int i = 0; id && i < s->ntasks; i++)
        if (!strcmp(s->tasks[i]->spec.id, id)) return s->tasks[i];
    return NULL;
}

static part_t *find_part(task_t *t, const char *key) {
    for (int i = 0; key && i < t->nparts; i++)
        if (!strcmp(t->parts[i].key, key)) return &t->parts[i];
    return NULL;
}

static dataset_t *find_dataset(server_t *s, const char *name) {
    for (int i = 0; i < s->nds; i++)
        if (!strcmp(s->ds[i].name, name)) return &s->ds[i];
    return NULL;
}

static int64_t last_seen(server_t *s, const char *key) {
    int64_t *v = zhashx_lookup(s->seen, key);
    return v ? *v : 0;
}

static void touch(server_t *s, const char *key) {
    int64_t *v = zhashx_lookup(s->seen, key);
    if (!v) {
        v = malloc(sizeof *v);
        if (!v) return;
        zhashx_insert(s->seen, key, v);
    }
    *v = now_ms();
}

static int is_live(server_t *s, const part_t *p) {
    return !p->left && now_ms() - last_seen(s, p->key) < s->o.liveness_ms;
}

static void remember_user(server_t *s, const char *key, int64_t id) {
    int64_t *v = malloc(sizeof *v);
    if (!v) return;
    *v = id;
    zhashx_update(s->users, key, v);
}

/* The registered user behind a CURVE key, or 0. Every request asks, so known keys come from a
 * cache; only a key not seen registered yet costs a scan of the ledger's users. */
static int64_t user_of(server_t *s, const char *key) {
    if (!key) return 0;
    int64_t *cached = zhashx_lookup(s->users, key);
    if (cached) return *cached;
    bf_ledger_user_t *users = NULL;
    size_t n = 0;
    bf_err_t err;
    int64_t id = 0;
    if (bf_ledger_users(s->ledger, &users, &n, &err) != 0) return 0;
    for (size_t i = 0; i < n && !id; i++)
        if (!strcmp(users[i].curve_key, key)) id = users[i].id;
    free(users);
    if (id) remember_user(s, key, id);
    return id;
}

static bf_msg_t *ledger_error(uint64_t id, int rc, const bf_err_t *err) {
    return bf_msg_error(id, coord_ledger_code(rc), "%s", err->msg);
}

/* ---- task lifecycle ------------------------------------------------------------------------ */

static void free_part(part_t *p) {
    free(p->blocks);
    free(p->params);
    free(p->buffers);
}

static void free_task(task_t *t) {
    for (int i = 0; i < t->nparts; i++) free_part(&t->parts[i]);
    free(t->parts);
    free(t->owner);
    free(t->metrics);
    bf_blocks_free(&t->blocks);
    bf_dataset_free(&t->val);
    free(t->recal_x);
    bf_net_destroy(&t->global);
    bf_net_destroy(&t->coalition);
    bf_agg_destroy(&t->agg);
    free(t);
}

static int val_size(const dataset_t *d) {
    int cap = d->train.n / 10;
    return COORD_VAL_SIZE < cap ? COORD_VAL_SIZE : cap;
}

/* The images aggregated models' BN statistics are re-estimated on: spread over every block of the
 * task's training split (the coordinator holds it), so every block's label mix is represented;
 * none for a model without BN, and at most RECAL_MAX_BYTES of them (large images: fewer). */
#define RECAL_MAX_BYTES (64u << 20)
static int recal_images(task_t *t, int want) {
    const bf_dataset_t *d = &t->ds->train;
    size_t bytes = sizeof(float) * d->c * d->h * d->w;
    if (want > (int)(RECAL_MAX_BYTES / bytes)) want = (int)(RECAL_MAX_BYTES / bytes);
    if (want <= 0 || !bf_net_num_buffers(t->global)) return 0;
    int32_t *idx = malloc(sizeof(int32_t) * want);
    t->recal_x = malloc(bytes * want);
    if (!idx || !t->recal_x) return free(idx), -1;
    t->nrecal = bf_blocks_spread(&t->blocks, t->blocks.nblocks, want, idx);
    bf_batch_fill(d, idx, t->nrecal, t->ds->mean, t->ds->std, NULL, t->recal_x, NULL);
    free(idx);
    return 0;
}

/* Builds the in-memory task: blocks from the seed, the validation subset, the aggregator and an
 * initial global model (seeded; replaced by the checkpoint when resuming). */
static task_t *make_task(server_t *s, const task_spec_t *spec, int64_t ledger_id, bf_err_t *err) {
    dataset_t *d = find_dataset(s, spec->dataset);
    if (!d) return bf_err_set(err, "dataset '%s' is not served here", spec->dataset), NULL;
    bf_agg_opts_t ao;
    if (bf_agg_parse(spec->strategy, &ao, err)) return NULL;
    if (ao.kind == BF_AGG_FEDPROX && spec->mu == 0) ao.mu = 0.01;
    task_t *t = calloc(1, sizeof *t);
    if (!t) return bf_err_set(err, "out of memory"), NULL;
    t->spec = *spec;
    if (t->spec.value_images <= 0) t->spec.value_images = COORD_VALUE_IMAGES;
    t->ledger_id = ledger_id;
    snprintf(t->state, sizeof t->state, "waiting");
    t->ds = d;
    if (bf_blocks_partition(&d->train, s->o.block_size, val_size(d), spec->partition, spec->seed, &t->blocks, err) ||
        bf_dataset_subset(&d->train, t->blocks.val, t->blocks.nval, &t->val, err))
        goto fail;
    t->owner = malloc(sizeof(int32_t) * t->blocks.nblocks);
    t->global = bf_net_new(spec->model, d->train.c, d->train.h, d->train.w, d->train.classes, 256, s->o.threads, err);
    if (!t->owner || !t->global) goto fail;
    for (int i = 0; i < t->blocks.nblocks; i++) t->owner[i] = -1;
    bf_net_init(t->global, spec->seed);
    t->agg = bf_agg_new(&ao, bf_net_num_params(t->global), bf_net_num_buffers(t->global));
    t->agg_opts = ao;
    t->coalition = bf_net_new(spec->model, d->train.c, d->train.h, d->train.w, d->train.classes, 256, s->o.threads, err);
    if (!t->agg || !t->coalition || recal_images(t, s->o.bn_recalibrate)) goto fail;
    /* The starting model's statistics as every aggregated model's will be: otherwise round 1's
     * coalitions would all gain what re-estimation alone gives, a free rider returning the model
     * unchanged included (the empty coalition keeps the initial 0 / 1 statistics). */
    bf_net_recalibrate_bn(t->global, t->recal_x, t->nrecal);
    return t;
fail:
    if (!err->msg[0]) bf_err_set(err, "out of memory");
    free_task(t);
    return NULL;
}

static int add_task(server_t *s, task_t *t) {
    task_t **n = realloc(s->tasks, sizeof *n * (s->ntasks + 1));
    if (!n) return -1;
    s->tasks = n;
    s->tasks[s->ntasks++] = t;
    return 0;
}

static part_t *add_part(task_t *t, const char *key, int64_t user_id, int own_data, int64_t samples) {
    part_t *n = realloc(t->parts, sizeof *n * (t->nparts + 1));
    if (!n) return NULL;
    t->parts = n;
    part_t *p = &t->parts[t->nparts++];
    memset(p, 0, sizeof *p);
    snprintf(p->key, sizeof p->key, "%s", key);
    p->user_id = user_id;
    p->own_data = own_data;
    p->samples = samples;
    p->update_round = -1;
    return p;
}

static int give_block(task_t *t, part_t *p, int32_t b) {
    int32_t *n = realloc(p->blocks, sizeof *n * (p->nblocks + 1));
    if (!n) return -1;
    p->blocks = n;
    p->blocks[p->nblocks++] = b;
    t->owner[b] = (int32_t)(p - t->parts);
    p->samples += t->blocks.block_size;
    return 0;
}

/* Picks up to n free blocks (lowest numbers first: deterministic). */
static int free_blocks(task_t *t, int n, int32_t *out) {
    int k = 0;
    for (int b = 0; b < t->blocks.nblocks && k < n; b++)
        if (t->owner[b] < 0) out[k++] = b;
    return k;
}

static char *checkpoint_path(server_t *s, const task_t *t, int round, char *buf, size_t cap) {
    snprintf(buf, cap, "%s/checkpoints/%s/round-%04d.bfm", s->o.home, t->spec.id, round);
    return buf;
}

static void file_sha(const char *path, char hex[65]) {
    FILE *f = fopen(path, "rb");
    hex[0] = 0;
    if (!f) return;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    uint8_t *b = n > 0 ? malloc((size_t)n) : NULL;
    if (b && fread(b, 1, (size_t)n, f) == (size_t)n) bf_sha256_hex(b, (size_t)n, hex);
    free(b);
    fclose(f);
}

static void meta_of(const task_t *t, bf_model_meta_t *m) {
    memset(m, 0, sizeof *m);
    m->classes = t->ds->train.classes;
    m->channels = t->ds->train.c;
    for (int i = 0; i < m->classes; i++) snprintf(m->class_names[i], sizeof m->class_names[i], "%s", t->ds->train.class_names[i]);
    memcpy(m->mean, t->ds->mean, sizeof m->mean);
    memcpy(m->std, t->ds->std, sizeof m->std);
}

static void start_task(server_t *s, task_t *t) {
    char op[160];
    bf_err_t err;
    snprintf(op, sizeof op, "start:%s", t->spec.id);
    int rc = bf_ledger_start_task(s->ledger, op, t->ledger_id, &err);
    if (rc != BF_LEDGER_OK && rc != BF_LEDGER_ESTATE) {
        logf_("task %s: cannot start: %s", t->spec.id, err.msg);
        return;
    }
    snprintf(t->state, sizeof t->state, "running");
    t->round = 0;
    t->round_start = now_ms();
    if (coord_store_set_progress(s->store, t->spec.id, "running", 0, "", "", &err)) logf_("state: %s", err.msg);
    logf_("task %s: started with %d participants, %d rounds", t->spec.id, t->nparts, t->spec.rounds);
}

/* Settlement weights: each participant's positive cumulative Shapley value, in millionths of an
 * accuracy point (integers: the ledger splits exactly). A value <= 0 earns nothing. If nobody's
 * value is positive (every update hurt or the model never moved), the documented rule is an equal
 * split among the participants whose updates were accepted. */
static size_t settlement_weights(const task_t *t, int64_t *users, int64_t *weights) {
    size_t n = 0;
    for (int i = 0; i < t->nparts; i++) {
        /* micro-units of value; capped so llround stays defined (a value is at most 100 per round,
         * BF_LOSS_CAP, but this sum comes back from the database too); NaN counts nothing */
        double v = t->parts[i].shapley;
        int64_t w = v > 0 ? llround(fmin(v, SETTLE_MAX_VALUE) * 1e6) : 0;
        if (w > 0) users[n] = t->parts[i].user_id, weights[n++] = w;
    }
    if (n) return n;
    for (int i = 0; i < t->nparts; i++)
        if (t->parts[i].contributed > 0) users[n] = t->parts[i].user_id, weights[n++] = 1;
    return n;
}

static void complete_task(server_t *s, task_t *t) {
    char op[160];
    bf_err_t err;
    int64_t *users = calloc(t->nparts + 1, sizeof(int64_t)), *weights = calloc(t->nparts + 1, sizeof(int64_t));
    size_t n = settlement_weights(t, users, weights);
    int rc = BF_LEDGER_OK;
    if (n && !strcmp(t->spec.mode, "reward")) {
        snprintf(op, sizeof op, "settle:%s", t->spec.id);
        rc = bf_ledger_settle_reward(s->ledger, op, t->ledger_id, n, users, weights, t->result_hash, &err);
    } else if (n) {
        snprintf(op, sizeof op, "shares:%s", t->spec.id);
        rc = bf_ledger_allocate_shares(s->ledger, op, t->ledger_id, n, users, weights, t->result_hash, &err);
        snprintf(op, sizeof op, "online:%s", t->spec.id);
        if (rc == BF_LEDGER_OK) rc = bf_ledger_set_model_online(s->ledger, op, t->ledger_id, 1, &err);
    }
    free(users);
    free(weights);
    if (rc != BF_LEDGER_OK) {
        logf_("task %s: settlement failed: %s (will retry at restart)", t->spec.id, err.msg);
        return;
    }
    snprintf(t->state, sizeof t->state, "completed");
    if (coord_store_set_progress(s->store, t->spec.id, "completed", t->round, t->checkpoint_sha, t->result_hash, &err))
        logf_("state: %s", err.msg);
    logf_("task %s: completed after %d rounds; result hash %s", t->spec.id, t->round, t->result_hash);
}

/* ---- the worker: aggregation, evaluation, checkpoint --------------------------------------- */

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

static int read_state(const char *ckpt, float *v, size_t n) {
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

typedef struct {
    job_t *j;
    const float *g_params, *g_buffers; /* the round's starting model */
    double u_empty, u_all;             /* scored once by game_init */
    /* the valuation images (normalized once), a coalition's predictions, and the empty and full
     * coalitions' kept from the truncation test */
    float *x, *z, *z_empty, *z_all;
    int32_t *labels;
    bf_preds_t preds;
    double weight[BF_SURROGATE_MAXN];
} game_t;

/* Puts into t->coalition the round's starting model moved by the task's strategy with S's updates only. */
static void coalition_model(game_t *g, uint32_t S) {
    job_t *j = g->j;
    task_t *t = j->t;
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
        bf_net_recalibrate_bn(net, t->recal_x, t->nrecal); /* as the global model gets */
    }
}

static void coalition_predict(game_t *g, uint32_t S, float *out) {
    coalition_model(g, S);
    bf_net_predict(g->j->t->coalition, g->x, g->preds.images, out);
}

/* U(S): accuracy (or -loss) of S's coalition model's predictions on the valuation images, scored
 * by bf_preds_utility whatever the estimator (so every estimator values the same, bounded game). */
static double coalition_utility(void *ctx, uint32_t S) {
    game_t *g = ctx;
    /* The truncation test already scored these two; the estimators ask for them again. */
    if (S == 0) return g->u_empty;
    if (S == (1u << g->j->k) - 1) return g->u_all;
    coalition_predict(g, S, g->z);
    return bf_preds_utility(&g->preds, g->z);
}

/* S's coalition model's logits on the valuation images (the surrogate estimator's evaluation);
 * the empty and full coalitions' come from the truncation test. */
static int coalition_logits(void *ctx, uint32_t S, float *out) {
    game_t *g = ctx;
    size_t ik = (size_t)g->preds.images * g->preds.classes;
    const float *known = S == 0 ? g->z_empty : S == (1u << g->j->k) - 1 ? g->z_all : NULL;
    if (known) return memcpy(out, known, sizeof(float) * ik), 0;
    coalition_predict(g, S, out);
    return 0;
}

static void game_free(game_t *g) { free(g->x), free(g->z), free(g->z_empty), free(g->z_all), free(g->labels); }

/* Readies the valuation images and scores the empty and full coalitions; -1: out of memory or no
 * valuation images (the round is then not valued). */
static int game_init(game_t *g) {
    task_t *t = g->j->t;
    const bf_dataset_t *v = &t->val;
    int m = t->spec.value_images > 0 && t->spec.value_images < v->n ? t->spec.value_images : v->n, K = v->classes;
    size_t chw = (size_t)v->c * v->h * v->w;
    int32_t *idx = malloc(sizeof(int32_t) * (m ? m : 1));
    g->x = malloc(sizeof(float) * m * chw + 1), g->labels = malloc(sizeof(int32_t) * (m ? m : 1));
    g->z = malloc(sizeof(float) * m * K + 1);
    g->z_empty = malloc(sizeof(float) * m * K + 1), g->z_all = malloc(sizeof(float) * m * K + 1);
    if (!idx || !g->x || !g->labels || !g->z || !g->z_empty || !g->z_all || m < 1) return free(idx), -1;
    for (int i = 0; i < m; i++) idx[i] = i;
    bf_batch_fill(v, idx, m, t->ds->mean, t->ds->std, NULL, g->x, g->labels);
    free(idx);
    for (int i = 0; i < g->j->k; i++) g->weight[i] = (double)g->j->samples[i];
    g->preds = (bf_preds_t){m, K, g->labels, g->weight, g->j->utility_loss};
    coalition_predict(g, 0, g->z_empty), coalition_predict(g, (1u << g->j->k) - 1, g->z_all);
    g->u_empty = bf_preds_utility(&g->preds, g->z_empty), g->u_all = bf_preds_utility(&g->preds, g->z_all);
    return 0;
}

/* The round's Shapley values: exact up to exact_max updates, else the surrogate estimator (up to
 * BF_SURROGATE_MAXN updates), else, or if the surrogate refuses (memory, predictions out of
 * range), the layer estimator. */
static void value_round(job_t *j) {
    task_t *t = j->t;
    j->phi = calloc(j->k, sizeof(double));
    if (!j->phi || j->k > 30 || !j->value) return;
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
    /* The utilities are bounded (bf_preds_utility), so this only guards the sums that get paid. */
    for (int i = 0; i < j->k; i++)
        if (!isfinite(j->phi[i])) {
            memset(j->phi, 0, sizeof(double) * j->k), j->estimator = NULL;
            break;
        }
    game_free(&g);
}

static void run_job(job_t *j) {
    task_t *t = j->t;
    bf_err_t err = {{0}};
    double t0 = bf_now();
    value_round(j); /* before the global model moves: coalitions start from it */
    if (bf_agg_apply(t->agg, bf_net_params(t->global), bf_net_buffers(t->global), j->params, j->buffers, j->samples, j->k,
                     &err)) {
        snprintf(j->err, sizeof j->err, "%s", err.msg);
        return;
    }
    /* Averaged BN statistics do not describe the averaged model's activations (after the first
     * round from a random start, accuracy 0.37 averaged vs 0.69 re-estimated: bf_shapley.h). */
    bf_net_recalibrate_bn(t->global, t->recal_x, t->nrecal);
    bf_evaluate(t->global, &t->val, t->ds->mean, t->ds->std, 0, &j->val_loss, &j->val_acc);
    double test_loss;
    bf_evaluate(t->global, &t->ds->test, t->ds->mean, t->ds->std, 0, &test_loss, &j->test_acc);
    bf_model_meta_t meta;
    meta_of(t, &meta);
    if (bf_model_save(t->global, &meta, j->path, &err)) {
        snprintf(j->err, sizeof j->err, "%s", err.msg);
        return;
    }
    file_sha(j->path, j->sha);
    size_t len;
    float *state = bf_agg_state(t->agg, &len);
    if (state && write_state(j->path, state, len)) {
        snprintf(j->err, sizeof j->err, "cannot write the aggregator state next to %s", j->path);
        return;
    }
    j->seconds = bf_now() - t0;
    j->ok = 1;
}

static void worker_actor(zsock_t *pipe, void *args) {
    (void)args;
    zsock_signal(pipe, 0);
    for (;;) {
        char *cmd = NULL;
        void *p = NULL;
        if (zsock_recv(pipe, "sp", &cmd, &p) < 0) break;
        int term = !cmd || !strcmp(cmd, "$TERM");
        if (!term) {
            run_job(p);
            zsock_send(pipe, "p", p);
        }
        zstr_free(&cmd);
        if (term) break;
    }
}

/* Closes the open round if everyone alive reported, or if its timeout passed with enough reports. */
static void maybe_close_round(server_t *s, task_t *t) {
    if (strcmp(t->state, "running")) return;
    int reported = 0, live_missing = 0;
    for (int i = 0; i < t->nparts; i++) {
        part_t *p = &t->parts[i];
        if (p->update_round == t->round) reported++;
        else if (is_live(s, p)) live_missing++;
    }
    int timed_out = now_ms() - t->round_start > (int64_t)t->spec.round_timeout * 1000;
    if (!reported || (live_missing && !timed_out)) return;
    if (reported < t->spec.min_clients && (!timed_out || reported < t->spec.min_clients)) {
        if (live_missing || reported < t->spec.min_clients) return;
    }
    job_t *j = calloc(1, sizeof *j);
    if (!j) return;
    j->t = t;
    j->value = (t->round + 1) % s->o.value_every == 0 || t->round + 1 >= t->spec.rounds;
    j->exact_max = s->o.shapley_exact_max;
    j->budget = s->o.shapley_budget;
    j->utility_loss = s->o.utility_loss;
    j->params = calloc(reported, sizeof(float *));
    j->buffers = calloc(reported, sizeof(float *));
    j->samples = calloc(reported, sizeof(int64_t));
    for (int i = 0; i < t->nparts; i++) {
        part_t *p = &t->parts[i];
        if (p->update_round != t->round) continue;
        j->params[j->k] = p->params;
        j->buffers[j->k] = p->buffers;
        j->samples[j->k++] = p->upd_samples;
    }
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/checkpoints/%s", s->o.home, t->spec.id);
    zsys_dir_create("%s", dir);
    checkpoint_path(s, t, t->round, j->path, sizeof j->path);
    snprintf(t->state, sizeof t->state, "aggregating");
    zsock_send(s->worker, "sp", "JOB", j);
}

static void job_done(server_t *s, job_t *j) {
    task_t *t = j->t;
    bf_err_t err;
    snprintf(t->state, sizeof t->state, "running");
    if (!j->ok) {
        logf_("task %s round %d: aggregation failed: %s; the round stays open", t->spec.id, t->round, j->err);
    } else {
        int64_t samples = 0;
        for (int i = 0; i < j->k; i++) samples += j->samples[i];
        for (int i = 0, k = 0; i < t->nparts; i++) {
            part_t *p = &t->parts[i];
            if (p->update_round != t->round) continue;
            p->contributed += p->upd_samples;
            double v = j->phi ? j->phi[k] : 0;
            p->shapley += v;
            k++;
            if (coord_store_add_contribution(s->store, t->spec.id, t->round, p->key, v, &err)) logf_("state: %s", err.msg);
            if (s->o.verbose) logf_("task %s round %d: %.8s... Shapley %+.5f (cumulative %+.5f)", t->spec.id, t->round + 1,
                                    p->key, v, p->shapley);
        }
        round_metric_t m = {j->k, samples, j->val_acc, j->val_loss, j->test_acc, (now_ms() - t->round_start) / 1000.0};
        round_metric_t *n = realloc(t->metrics, sizeof *n * (t->nmetrics + 1));
        if (n) t->metrics = n, t->metrics[t->nmetrics++] = m;
        snprintf(t->checkpoint_sha, sizeof t->checkpoint_sha, "%s", j->sha);
        if (coord_store_add_round(s->store, t->spec.id, t->round, j->k, samples, j->val_acc, j->val_loss, j->test_acc,
                                  m.seconds, j->sha, &err))
            logf_("state: %s", err.msg);
        logf_("task %s round %d/%d: %d participants, %lld samples, val acc %.4f loss %.4f, test acc %.4f, %.1f s "
              "(aggregate+value+eval %.1f s, %d coalitions valued, %s)",
              t->spec.id, t->round + 1, t->spec.rounds, j->k, (long long)samples, j->val_acc, j->val_loss, j->test_acc,
              m.seconds, j->seconds, j->shapley_evals, j->estimator ? j->estimator : "not valued");
        for (int i = 0; i < t->nparts; i++) { /* the updates are spent */
            free(t->parts[i].params), free(t->parts[i].buffers);
            t->parts[i].params = t->parts[i].buffers = NULL;
        }
        t->round++;
        t->round_start = now_ms();
        if (t->round >= t->spec.rounds) snprintf(t->result_hash, sizeof t->result_hash, "%s", j->sha);
        if (coord_store_set_progress(s->store, t->spec.id, "running", t->round, t->checkpoint_sha, t->result_hash, &err))
            logf_("state: %s", err.msg);
        if (t->round >= t->spec.rounds) complete_task(s, t);
    }
    free(j->params);
    free(j->buffers);
    free(j->samples);
    free(j->phi);
    free(j);
}

/* ---- request handlers ---------------------------------------------------------------------- */

typedef struct {
    server_t *s;
    const bf_msg_t *req;
    uint64_t id;
    const char *key;    /* authenticated CURVE key (or the insecure stand-in), may be NULL */
    int64_t user;       /* registered user id, 0 if none */
} ctx_t;

static bf_msg_t *need_user(const ctx_t *c) {
    if (!c->key) return bf_msg_error(c->id, BF_PROTO_UNAUTHORIZED, "no authenticated key on this connection");
    if (!c->user) return bf_msg_error(c->id, BF_PROTO_UNAUTHORIZED, "this key has no account: register first");
    return NULL;
}

/* The common preamble: a registered caller and the task the request names. */
static bf_msg_t *user_and_task(const ctx_t *c, task_t **t) {
    bf_msg_t *e = need_user(c);
    if (e) return e;
    *t = find_task(c->s, bf_msg_str(c->req, "task"));
    return *t ? NULL : bf_msg_error(c->id, BF_PROTO_NOT_FOUND, "no such task");
}

static bf_msg_t *h_hello(const ctx_t *c) {
    bf_msg_t *r = bf_msg_new("WELCOME", c->id);
    bf_msg_set_str(r, "server", SERVER_NAME);
    bf_ledger_user_t u;
    bf_err_t err;
    if (c->user && bf_ledger_user_get(c->s->ledger, c->user, &u, &err) == 0) bf_msg_set_str(r, "user", u.name);
    return r;
}

static bf_msg_t *user_result(const ctx_t *c, int64_t user) {
    bf_ledger_user_t u;
    bf_err_t err;
    if (bf_ledger_user_get(c->s->ledger, user, &u, &err)) return bf_msg_error(c->id, BF_PROTO_INTERNAL, "%s", err.msg);
    bf_msg_t *r = bf_msg_new("OK", c->id);
    mp_t m;
    msgpack_packer *pk = mp_begin(&m);
    msgpack_pack_map(pk, 3);
    mp_kv_str(pk, "user", u.name);
    mp_kv_int(pk, "coins", u.coin.posted);
    mp_kv_money(pk, "cash", u.cash.posted);
    mp_set(&m, r, "result");
    return r;
}

static bf_msg_t *h_register(const ctx_t *c) {
    if (!c->key) return bf_msg_error(c->id, BF_PROTO_UNAUTHORIZED, "registration needs a CURVE key");
    const char *name = bf_msg_str(c->req, "name");
    char op[96];
    snprintf(op, sizeof op, "register:%s", c->key);
    bf_err_t err;
    int64_t uid = 0;
    int rc = bf_ledger_register_user(c->s->ledger, op, name, c->key, NULL, &uid, &err);
    if (rc == BF_LEDGER_ECONFLICT)
        return bf_msg_error(c->id, BF_PROTO_CONFLICT, "this key is already registered under another name");
    if (rc != BF_LEDGER_OK) return ledger_error(c->id, rc, &err);
    remember_user(c->s, c->key, uid);
    logf_("user %s registered (key %.8s...)", name, c->key);
    return user_result(c, uid);
}

static bf_msg_t *h_recharge(const ctx_t *c) {
    bf_msg_t *e = need_user(c);
    if (e) return e;
    int64_t cents;
    bf_err_t err;
    if (bf_money_parse_amount(bf_msg_str(c->req, "amount"), 2, &cents, &err) || cents <= 0)
        return bf_msg_error(c->id, BF_PROTO_BAD_REQUEST, "amount: %s", cents <= 0 ? "must be positive" : err.msg);
    char op[128];
    snprintf(op, sizeof op, "recharge:%s:%llu", c->key, (unsigned long long)c->id);
    int rc = bf_ledger_recharge(c->s->ledger, op, c->user, cents, &err);
    if (rc != BF_LEDGER_OK) return ledger_error(c->id, rc, &err);
    return user_result(c, c->user);
}

static int copy_field(const bf_msg_t *m, const char *k, char *dst, size_t cap) {
    const char *v = bf_msg_str(m, k);
    snprintf(dst, cap, "%s", v ? v : "");
    return v != NULL;
}

static bf_msg_t *h_task_create(const ctx_t *c) {
    bf_msg_t *e = need_user(c);
    if (e) return e;
    server_t *s = c->s;
    task_spec_t t;
    memset(&t, 0, sizeof t);
    copy_field(c->req, "task", t.id, sizeof t.id);
    copy_field(c->req, "name", t.name, sizeof t.name);
    copy_field(c->req, "description", t.description, sizeof t.description);
    copy_field(c->req, "model", t.model, sizeof t.model);
    copy_field(c->req, "dataset", t.dataset, sizeof t.dataset);
    copy_field(c->req, "mode", t.mode, sizeof t.mode);
    copy_field(c->req, "partition", t.partition, sizeof t.partition);
    copy_field(c->req, "strategy", t.strategy, sizeof t.strategy);
    snprintf(t.creator, sizeof t.creator, "%s", c->key);
    t.rounds = (int)bf_msg_uint(c->req, "rounds", 1);
    t.min_clients = (int)bf_msg_uint(c->req, "min_clients", 1);
    t.local_epochs = (int)bf_msg_uint(c->req, "local_epochs", 1);
    t.batch = (int)bf_msg_uint(c->req, "batch", 64);
    t.round_timeout = (int)bf_msg_uint(c->req, "round_timeout", 300);
    t.lr = bf_msg_double(c->req, "lr", 0.05);
    t.mu = bf_msg_double(c->req, "mu", 0);
    t.seed = bf_msg_uint(c->req, "seed", 1);
    t.value_images = (int)bf_msg_uint(c->req, "value_images", COORD_VALUE_IMAGES);
    bf_err_t err;
    if (strcmp(t.model, "resnet8") && strcmp(t.model, "cnn"))
        return bf_msg_error(c->id, BF_PROTO_BAD_REQUEST, "model must be resnet8 or cnn");
    if (strcmp(t.mode, "reward") && strcmp(t.mode, "shareholding"))
        return bf_msg_error(c->id, BF_PROTO_BAD_REQUEST, "mode must be reward or shareholding");
    if (!find_dataset(s, t.dataset)) return bf_msg_error(c->id, BF_PROTO_NOT_FOUND, "no dataset '%s' here", t.dataset);
    if (find_task(s, t.id)) return bf_msg_error(c->id, BF_PROTO_CONFLICT, "task '%s' exists", t.id);
    const char *fee = bf_msg_str(c->req, "fee"), *pool = bf_msg_str(c->req, "pool");
    if ((fee && bf_money_parse_amount(fee, 2, &t.fee_cents, &err)) || (pool && bf_money_parse_amount(pool, 2, &t.pool_cents, &err)))
        return bf_msg_error(c->id, BF_PROTO_BAD_REQUEST, "fee/pool: %s", err.msg);
    t.rate_num = t.rate_den = 1;
    const char *base = bf_msg_str(c->req, "base_fee"), *rate = bf_msg_str(c->req, "rate");
    if ((base && bf_money_parse_amount(base, 2, &t.base_fee_cents, &err)) ||
        (rate && bf_money_parse_rate(rate, &t.rate_num, &t.rate_den, &err)))
        return bf_msg_error(c->id, BF_PROTO_BAD_REQUEST, "base fee/rate: %s", err.msg);
    int64_t max_price;
    if (bf_money_price(t.base_fee_cents, t.fee_cents, BF_PREDICT_MAX_IMAGES, t.rate_num, t.rate_den, &max_price, &err))
        return bf_msg_error(c->id, BF_PROTO_BAD_REQUEST, "pricing: %s", err.msg);
    if (!strcmp(t.mode, "reward") && t.pool_cents <= 0)
        return bf_msg_error(c->id, BF_PROTO_BAD_REQUEST, "a reward task needs a positive --pool");
    if (!strcmp(t.mode, "shareholding") && t.pool_cents)
        return bf_msg_error(c->id, BF_PROTO_BAD_REQUEST, "a shareholding task has no pool (it earns usage fees)");
    task_t *probe = make_task(s, &t, 0, &err); /* validates partition, strategy, model vs data */
    if (!probe) return bf_msg_error(c->id, BF_PROTO_BAD_REQUEST, "%s", err.msg);
    bf_ledger_task_spec_t ls = {t.name, !strcmp(t.mode, "reward") ? BF_LEDGER_MODE_REWARD : BF_LEDGER_MODE_SHAREHOLDING,
                                t.pool_cents, t.fee_cents};
    char op[160];
    snprintf(op, sizeof op, "task:%s", t.id);
    int64_t lid = 0;
    int rc = bf_ledger_create_task(s->ledger, op, c->user, &ls, &lid, &err);
    if (rc != BF_LEDGER_OK) {
        free_task(probe);
        return ledger_error(c->id, rc, &err);
    }
    probe->ledger_id = lid;
    probe->spec.created_at = (int64_t)time(NULL);
    if (coord_store_add_task(s->store, &t, lid, &err) || add_task(s, probe)) {
        free_task(probe);
        return bf_msg_error(c->id, BF_PROTO_INTERNAL, "%s", err.msg);
    }
    logf_("task %s created by %.8s...: %s on %s, %d rounds, %s, %d blocks of %d", t.id, c->key, t.model, t.dataset,
          t.rounds, t.mode, probe->blocks.nblocks, probe->blocks.block_size);
    bf_msg_t *r = bf_msg_new("OK", c->id);
    mp_t m;
    msgpack_packer *pk = mp_begin(&m);
    msgpack_pack_map(pk, 2);
    mp_kv_str(pk, "task", t.id);
    mp_kv_int(pk, "blocks", probe->blocks.nblocks);
    mp_set(&m, r, "result");
    return r;
}

static void pack_task_summary(msgpack_packer *pk, const task_t *t) {
    msgpack_pack_map(pk, 9);
    mp_kv_str(pk, "task", t->spec.id);
    mp_kv_str(pk, "name", t->spec.name);
    mp_kv_str(pk, "model", t->spec.model);
    mp_kv_str(pk, "dataset", t->spec.dataset);
    mp_kv_str(pk, "mode", t->spec.mode);
    mp_kv_str(pk, "state", t->state);
    mp_kv_int(pk, "round", t->round);
    mp_kv_int(pk, "rounds", t->spec.rounds);
    mp_kv_int(pk, "participants", t->nparts);
}

static bf_msg_t *h_task_list(const ctx_t *c) {
    bf_msg_t *r = bf_msg_new("TASKS", c->id);
    mp_t m;
    msgpack_packer *pk = mp_begin(&m);
    msgpack_pack_array(pk, c->s->ntasks);
    for (int i = 0; i < c->s->ntasks; i++) pack_task_summary(pk, c->s->tasks[i]);
    mp_set(&m, r, "tasks");
    return r;
}

static const char *user_name(server_t *s, int64_t uid, char *buf, size_t cap) {
    bf_ledger_user_t u;
    bf_err_t err;
    snprintf(buf, cap, "%s", bf_ledger_user_get(s->ledger, uid, &u, &err) == 0 ? u.name : "?");
    return buf;
}

static bf_msg_t *h_task_status(const ctx_t *c) {
    task_t *t = find_task(c->s, bf_msg_str(c->req, "task"));
    if (!t) return bf_msg_error(c->id, BF_PROTO_NOT_FOUND, "no such task");
    bf_msg_t *r = bf_msg_new("STATUS", c->id);
    mp_t m;
    msgpack_packer *pk = mp_begin(&m);
    msgpack_pack_map(pk, 22);
    mp_kv_str(pk, "task", t->spec.id);
    mp_kv_str(pk, "name", t->spec.name);
    mp_kv_str(pk, "description", t->spec.description);
    mp_kv_str(pk, "model", t->spec.model);
    mp_kv_str(pk, "dataset", t->spec.dataset);
    mp_kv_str(pk, "mode", t->spec.mode);
    mp_kv_str(pk, "state", t->state);
    mp_kv_str(pk, "strategy", t->spec.strategy);
    mp_kv_str(pk, "partition", t->spec.partition);
    mp_kv_int(pk, "round", t->round);
    mp_kv_int(pk, "rounds", t->spec.rounds);
    mp_kv_int(pk, "min_clients", t->spec.min_clients);
    mp_kv_money(pk, "fee", t->spec.fee_cents);
    mp_kv_money(pk, "pool", t->spec.pool_cents);
    mp_kv_money(pk, "base_fee", t->spec.base_fee_cents);
    char rate[48];
    snprintf(rate, sizeof rate, "%lld/%lld", (long long)t->spec.rate_num, (long long)t->spec.rate_den);
    mp_kv_str(pk, "rate", rate);
    mp_kv_int(pk, "value_images", t->spec.value_images);
    int nfree = 0;
    for (int b = 0; b < t->blocks.nblocks; b++) nfree += t->owner[b] < 0;
    mp_kv_int(pk, "blocks_free", nfree);
    mp_kv_str(pk, "result_hash", t->result_hash);
    bf_mp_pack_str(pk, "participants");
    msgpack_pack_array(pk, t->nparts);
    for (int i = 0; i < t->nparts; i++) {
        const part_t *p = &t->parts[i];
        char name[65];
        msgpack_pack_map(pk, 7);
        mp_kv_str(pk, "user", user_name(c->s, p->user_id, name, sizeof name));
        mp_kv_dbl(pk, "shapley", p->shapley);
        mp_kv_int(pk, "blocks", p->nblocks);
        mp_kv_int(pk, "samples", p->samples);
        mp_kv_int(pk, "contributed", p->contributed);
        mp_kv_str(pk, "status", p->left ? "left" : is_live(c->s, p) ? "live" : "away");
        mp_kv_int(pk, "reported_round", p->update_round);
    }
    bf_mp_pack_str(pk, "history");
    msgpack_pack_array(pk, t->nmetrics);
    for (int i = 0; i < t->nmetrics; i++) {
        const round_metric_t *x = &t->metrics[i];
        msgpack_pack_map(pk, 7);
        mp_kv_int(pk, "round", i + 1);
        mp_kv_int(pk, "participants", x->participants);
        mp_kv_int(pk, "samples", x->samples);
        mp_kv_dbl(pk, "val_acc", x->val_acc);
        mp_kv_dbl(pk, "val_loss", x->val_loss);
        mp_kv_dbl(pk, "test_acc", x->test_acc);
        mp_kv_dbl(pk, "seconds", x->seconds);
    }
    mp_kv_str(pk, "checkpoint_sha", t->checkpoint_sha);
    mp_set(&m, r, "status");
    return r;
}

static bf_msg_t *h_task_cancel(const ctx_t *c) {
    task_t *t;
    bf_msg_t *e = user_and_task(c, &t);
    if (e) return e;
    if (strcmp(t->spec.creator, c->key)) return bf_msg_error(c->id, BF_PROTO_FORBIDDEN, "only the creator may cancel");
    if (strcmp(t->state, "waiting")) return bf_msg_error(c->id, BF_PROTO_BAD_STATE, "task is %s, not waiting", t->state);
    char op[160];
    bf_err_t err;
    snprintf(op, sizeof op, "refund:%s", t->spec.id);
    int rc = bf_ledger_refund_task(c->s->ledger, op, t->ledger_id, &err);
    if (rc != BF_LEDGER_OK) return ledger_error(c->id, rc, &err);
    snprintf(t->state, sizeof t->state, "cancelled");
    coord_store_set_progress(c->s->store, t->spec.id, "cancelled", t->round, "", "", &err);
    logf_("task %s cancelled and refunded", t->spec.id);
    return bf_msg_new("OK", c->id);
}

static bf_msg_t *joined_reply(const ctx_t *c, const task_t *t, const part_t *p) {
    bf_msg_t *r = bf_msg_new("JOINED", c->id);
    bf_msg_set_str(r, "task", t->spec.id);
    bf_msg_set_uint(r, "block_size", (uint64_t)t->blocks.block_size);
    mp_t m;
    msgpack_packer *pk = mp_begin(&m);
    msgpack_pack_array(pk, p->nblocks);
    for (int i = 0; i < p->nblocks; i++) msgpack_pack_uint32(pk, (uint32_t)p->blocks[i]);
    mp_set(&m, r, "blocks");
    return r;
}

static int assign_blocks(server_t *s, task_t *t, part_t *p, int want, bf_err_t *err) {
    int32_t pick[1000];
    int k = free_blocks(t, want < 1000 ? want : 1000, pick);
    for (int i = 0; i < k; i++)
        if (give_block(t, p, pick[i])) return bf_err_set(err, "out of memory");
    return k && coord_store_add_blocks(s->store, t->spec.id, p->key, pick, k, err) ? -1 : k;
}

/* Adds the caller to t (ledger participation, state, initial blocks); *out is the participant. */
static bf_msg_t *join_task(const ctx_t *c, task_t *t, int own, int64_t declared, part_t **out) {
    server_t *s = c->s;
    bf_err_t err;
    if (own && declared < 1) return bf_msg_error(c->id, BF_PROTO_BAD_REQUEST, "own data needs samples >= 1");
    char op[192];
    snprintf(op, sizeof op, "join:%s:%s", t->spec.id, c->key);
    int rc = bf_ledger_join_task(s->ledger, op, t->ledger_id, c->user, &err);
    if (rc != BF_LEDGER_OK) return ledger_error(c->id, rc, &err);
    part_t *p = add_part(t, c->key, c->user, own, own ? declared : 0);
    if (!p || coord_store_add_participant(s->store, t->spec.id, c->key, c->user, own, own ? declared : 0, &err))
        return bf_msg_error(c->id, BF_PROTO_INTERNAL, "cannot record the participant");
    if (!own && assign_blocks(s, t, p, s->o.blocks_per_join, &err) < 0)
        return bf_msg_error(c->id, BF_PROTO_INTERNAL, "%s", err.msg);
    logf_("task %s: %.8s... joined with %d blocks (%lld images)%s", t->spec.id, c->key, p->nblocks, (long long)p->samples,
          own ? " of its own data" : "");
    *out = p;
    return NULL;
}

static int joinable(const task_t *t) {
    return !strcmp(t->state, "waiting") || !strcmp(t->state, "running") || !strcmp(t->state, "aggregating");
}

static bf_msg_t *h_join(const ctx_t *c) {
    task_t *t;
    bf_msg_t *e = user_and_task(c, &t);
    if (e) return e;
    if (!joinable(t)) return bf_msg_error(c->id, BF_PROTO_BAD_STATE, "task is %s", t->state);
    part_t *p = find_part(t, c->key);
    bf_err_t err;
    if (p) { /* a returning participant: same blocks, back in from the next round */
        if (p->left &&
            coord_store_add_participant(c->s->store, t->spec.id, c->key, c->user, p->own_data, p->samples, &err) == 0)
            p->left = 0;
        return joined_reply(c, t, p);
    }
    e = join_task(c, t, bf_msg_bool(c->req, "own_data", 0), (int64_t)bf_msg_uint(c->req, "samples", 0), &p);
    return e ? e : joined_reply(c, t, p);
}

static bf_msg_t *h_leave(const ctx_t *c) {
    task_t *t = find_task(c->s, bf_msg_str(c->req, "task"));
    part_t *p = t ? find_part(t, c->key) : NULL;
    if (!p) return bf_msg_error(c->id, BF_PROTO_NOT_FOUND, "not a participant of this task");
    bf_err_t err;
    p->left = 1;
    coord_store_leave(c->s->store, t->spec.id, c->key, &err);
    logf_("task %s: %.8s... left", t->spec.id, c->key);
    return bf_msg_new("OK", c->id);
}

static bf_msg_t *h_blocks_buy(const ctx_t *c) {
    task_t *t;
    bf_msg_t *e = user_and_task(c, &t);
    if (e) return e;
    if (!joinable(t)) return bf_msg_error(c->id, BF_PROTO_BAD_STATE, "task is %s", t->state);
    part_t *p = find_part(t, c->key);
    if (!p && (e = join_task(c, t, 0, 0, &p))) return e; /* buying blocks joins the task */
    int n = (int)bf_msg_uint(c->req, "n", 1);
    int32_t pick[1000];
    if (free_blocks(t, n, pick) < n) return bf_msg_error(c->id, BF_PROTO_CONFLICT, "fewer than %d free blocks left", n);
    char op[192];
    bf_err_t err;
    snprintf(op, sizeof op, "buy:%s:%s:%llu", t->spec.id, c->key, (unsigned long long)c->id);
    int rc = bf_ledger_spend_coins(c->s->ledger, op, c->user, n, &err);
    if (rc != BF_LEDGER_OK) return ledger_error(c->id, rc, &err);
    if (assign_blocks(c->s, t, p, n, &err) < 0) return bf_msg_error(c->id, BF_PROTO_INTERNAL, "%s", err.msg);
    logf_("task %s: %.8s... bought %d blocks (now %d)", t->spec.id, c->key, n, p->nblocks);
    return joined_reply(c, t, p);
}

static bf_msg_t *h_block_get(const ctx_t *c) {
    task_t *t = find_task(c->s, bf_msg_str(c->req, "task"));
    part_t *p = t ? find_part(t, c->key) : NULL;
    if (!p) return bf_msg_error(c->id, BF_PROTO_NOT_FOUND, "not a participant of this task");
    int64_t b = (int64_t)bf_msg_uint(c->req, "block", 0);
    if (b >= t->blocks.nblocks || t->owner[b] != (int32_t)(p - t->parts))
        return bf_msg_error(c->id, BF_PROTO_FORBIDDEN, "block %lld is not assigned to you", (long long)b);
    const bf_dataset_t *d = &t->ds->train;
    int32_t n = t->blocks.block_size;
    size_t chw = (size_t)d->c * d->h * d->w;
    uint8_t *px = malloc(chw * n), *lb = malloc(n);
    if (!px || !lb) {
        free(px), free(lb);
        return bf_msg_error(c->id, BF_PROTO_INTERNAL, "out of memory");
    }
    for (int32_t i = 0; i < n; i++) {
        int32_t img = t->blocks.index[(size_t)b * n + i];
        memcpy(px + i * chw, d->pixels + img * chw, chw);
        lb[i] = d->labels[img];
    }
    char hex[65];
    bf_block_digest(n, d->c, d->h, d->w, px, lb, hex);
    bf_msg_t *r = bf_msg_new("BLOCK", c->id);
    bf_msg_set_str(r, "task", t->spec.id);
    bf_msg_set_uint(r, "block", (uint64_t)b);
    bf_msg_set_str(r, "sha256", hex);
    bf_msg_set_uint(r, "n", (uint64_t)n);
    bf_msg_set_uint(r, "c", (uint64_t)d->c);
    bf_msg_set_uint(r, "h", (uint64_t)d->h);
    bf_msg_set_uint(r, "w", (uint64_t)d->w);
    bf_msg_set_uint(r, "classes", (uint64_t)d->classes);
    bf_msg_add_frame_owned(r, px, chw * n);
    bf_msg_add_frame_owned(r, lb, n);
    return r;
}

static bf_msg_t *wait_reply(uint64_t id, int ms, const char *why) {
    bf_msg_t *r = bf_msg_new("WAIT", id);
    bf_msg_set_uint(r, "retry_ms", (uint64_t)ms);
    bf_msg_set_str(r, "reason", why);
    return r;
}

static void pack_floats(msgpack_packer *pk, const float *v, int n) {
    msgpack_pack_array(pk, n);
    for (int i = 0; i < n; i++) msgpack_pack_float(pk, v[i]);
}

static bf_msg_t *h_round_get(const ctx_t *c) {
    task_t *t = find_task(c->s, bf_msg_str(c->req, "task"));
    part_t *p = t ? find_part(t, c->key) : NULL;
    if (!p) return bf_msg_error(c->id, BF_PROTO_NOT_FOUND, "not a participant of this task");
    if (!strcmp(t->state, "completed") || !strcmp(t->state, "cancelled")) {
        bf_msg_t *r = bf_msg_new("DONE", c->id);
        bf_msg_set_str(r, "task", t->spec.id);
        if (t->result_hash[0]) bf_msg_set_str(r, "result_hash", t->result_hash);
        return r;
    }
    if (!strcmp(t->state, "waiting")) return wait_reply(c->id, 1000, "waiting for participants");
    if (!strcmp(t->state, "aggregating") || p->update_round == t->round)
        return wait_reply(c->id, 500, "waiting for the round to close");
    p->left = 0;
    bf_msg_t *r = bf_msg_new("ROUND", c->id);
    const bf_dataset_t *d = &t->ds->train;
    bf_msg_set_str(r, "task", t->spec.id);
    bf_msg_set_uint(r, "round", (uint64_t)t->round);
    bf_msg_set_uint(r, "rounds", (uint64_t)t->spec.rounds);
    bf_msg_set_str(r, "arch", t->spec.model);
    bf_msg_set_uint(r, "c", (uint64_t)d->c);
    bf_msg_set_uint(r, "h", (uint64_t)d->h);
    bf_msg_set_uint(r, "w", (uint64_t)d->w);
    bf_msg_set_uint(r, "classes", (uint64_t)d->classes);
    bf_msg_set_uint(r, "local_epochs", (uint64_t)t->spec.local_epochs);
    bf_msg_set_uint(r, "batch", (uint64_t)t->spec.batch);
    /* the task's lr decays over the rounds (cosine), as a central one-cycle/cosine run would: late
     * rounds fine-tune instead of undoing each other's steps */
    double lr = t->spec.lr * 0.5 * (1 + cos(M_PI * t->round / t->spec.rounds));
    bf_msg_set_double(r, "lr", lr > 1e-6 ? lr : 1e-6);
    bf_msg_set_double(r, "mu", !strncmp(t->spec.strategy, "fedprox", 7) ? (t->spec.mu > 0 ? t->spec.mu : 0.01) : 0);
    bf_msg_set_uint(r, "seed", t->spec.seed * 1000003u + (uint64_t)t->round);
    int64_t left = (int64_t)t->spec.round_timeout * 1000 - (now_ms() - t->round_start);
    bf_msg_set_uint(r, "deadline_ms", (uint64_t)(left > 0 ? left : 1));
    mp_t m;
    msgpack_packer *pk = mp_begin(&m);
    msgpack_pack_map(pk, 2);
    bf_mp_pack_str(pk, "mean");
    pack_floats(pk, t->ds->mean, d->c);
    bf_mp_pack_str(pk, "std");
    pack_floats(pk, t->ds->std, d->c);
    mp_set(&m, r, "preprocess");
    bf_msg_add_f32(r, bf_net_params(t->global), bf_net_num_params(t->global));
    bf_msg_add_f32(r, bf_net_buffers(t->global), bf_net_num_buffers(t->global));
    return r;
}

static int all_finite(const float *v, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i])) return 0;
    return 1;
}

static bf_msg_t *h_update(const ctx_t *c) {
    task_t *t = find_task(c->s, bf_msg_str(c->req, "task"));
    part_t *p = t ? find_part(t, c->key) : NULL;
    if (!p) return bf_msg_error(c->id, BF_PROTO_NOT_FOUND, "not a participant of this task");
    int round = (int)bf_msg_uint(c->req, "round", 0);
    if (strcmp(t->state, "running") || round != t->round || p->update_round == t->round)
        return bf_msg_error(c->id, BF_PROTO_STALE, "round %d is not open for an update from you (open: %d, %s)", round,
                            t->round, t->state);
    size_t np = bf_net_num_params(t->global), nb = bf_net_num_buffers(t->global);
    float *params = malloc(sizeof(float) * (np + 1)), *buffers = malloc(sizeof(float) * (nb + 1));
    if (!params || !buffers || bf_msg_frame_f32(c->req, 0, params, np) || bf_msg_frame_f32(c->req, 1, buffers, nb) ||
        !all_finite(params, np) || !all_finite(buffers, nb)) {
        free(params), free(buffers);
        return bf_msg_error(c->id, BF_PROTO_BAD_REQUEST, "update frames must hold %zu parameters and %zu buffers, all finite",
                            np, nb);
    }
    free(p->params), free(p->buffers);
    p->params = params;
    p->buffers = buffers;
    /* the weight is capped at the data the participant actually holds: claiming more buys nothing */
    int64_t claimed = (int64_t)bf_msg_uint(c->req, "samples", 1);
    p->upd_samples = claimed < p->samples ? claimed : p->samples;
    if (p->upd_samples < 1) p->upd_samples = 1;
    p->upd_loss = bf_msg_double(c->req, "loss", 0);
    p->update_round = t->round;
    if (c->s->o.verbose)
        logf_("task %s round %d: update from %.8s... (%lld samples, loss %.4f)", t->spec.id, t->round + 1, c->key,
              (long long)p->upd_samples, p->upd_loss);
    return bf_msg_new("OK", c->id);
}

static bf_msg_t *h_assets(const ctx_t *c) {
    bf_msg_t *e = need_user(c);
    if (e) return e;
    server_t *s = c->s;
    bf_ledger_user_t u;
    bf_err_t err;
    bf_ledger_share_t *sh = NULL;
    bf_ledger_reward_t *rw = NULL;
    size_t nsh = 0, nrw = 0;
    if (bf_ledger_user_get(s->ledger, c->user, &u, &err) || bf_ledger_user_shares(s->ledger, c->user, &sh, &nsh, &err) ||
        bf_ledger_rewards(s->ledger, 0, c->user, &rw, &nrw, &err)) {
        free(sh);
        return bf_msg_error(c->id, BF_PROTO_INTERNAL, "%s", err.msg);
    }
    bf_msg_t *r = bf_msg_new("ASSETS", c->id);
    mp_t m;
    msgpack_packer *pk = mp_begin(&m);
    msgpack_pack_map(pk, 6);
    mp_kv_str(pk, "user", u.name);
    mp_kv_money(pk, "cash", u.cash.posted);
    mp_kv_money(pk, "cash_available", u.cash.available);
    mp_kv_int(pk, "coins", u.coin.posted);
    bf_mp_pack_str(pk, "shares");
    msgpack_pack_array(pk, nsh);
    for (size_t i = 0; i < nsh; i++) {
        msgpack_pack_map(pk, 3);
        mp_kv_int(pk, "task_ledger_id", sh[i].task_id);
        mp_kv_int(pk, "ppm", sh[i].ppm);
        mp_kv_money(pk, "received", sh[i].received);
    }
    bf_mp_pack_str(pk, "rewards");
    msgpack_pack_array(pk, nrw);
    for (size_t i = 0; i < nrw; i++) {
        msgpack_pack_map(pk, 2);
        mp_kv_int(pk, "task_ledger_id", rw[i].task_id);
        mp_kv_money(pk, "amount", rw[i].amount);
    }
    mp_set(&m, r, "assets");
    free(sh);
    free(rw);
    return r;
}

static bf_msg_t *h_history(const ctx_t *c) {
    bf_msg_t *e = need_user(c);
    if (e) return e;
    bf_ledger_entry_t *h = NULL;
    size_t n = 0;
    bf_err_t err;
    if (bf_ledger_history(c->s->ledger, c->user, &h, &n, &err)) return bf_msg_error(c->id, BF_PROTO_INTERNAL, "%s", err.msg);
    size_t limit = (size_t)bf_msg_uint(c->req, "limit", 100);
    size_t k = n < limit ? n : limit;
    bf_msg_t *r = bf_msg_new("HISTORY", c->id);
    mp_t m;
    msgpack_packer *pk = mp_begin(&m);
    msgpack_pack_array(pk, k);
    for (size_t i = 0; i < k; i++) {
        const bf_ledger_entry_t *x = &h[n - 1 - i]; /* newest first */
        int cash = x->currency == BF_LEDGER_CNY;
        char a[32], b[32], d[32];
        msgpack_pack_map(pk, 6);
        mp_kv_int(pk, "time", x->created_at);
        mp_kv_str(pk, "kind", x->code ? x->code : "");
        mp_kv_str(pk, "currency", cash ? "CNY" : "COIN");
        if (cash) {
            money(a, x->amount), money(b, x->balance_before), money(d, x->balance_after);
        } else {
            snprintf(a, sizeof a, "%lld", (long long)x->amount);
            snprintf(b, sizeof b, "%lld", (long long)x->balance_before);
            snprintf(d, sizeof d, "%lld", (long long)x->balance_after);
        }
        mp_kv_str(pk, "amount", a);
        mp_kv_str(pk, "before", b);
        mp_kv_str(pk, "after", d);
    }
    mp_set(&m, r, "entries");
    free(h);
    return r;
}

static bf_msg_t *h_model_get(const ctx_t *c) {
    task_t *t;
    bf_msg_t *e = user_and_task(c, &t);
    if (e) return e;
    if (strcmp(t->state, "completed")) return bf_msg_error(c->id, BF_PROTO_BAD_STATE, "the task has not completed");
    int owner = !strcmp(t->spec.creator, c->key) || (!strcmp(t->spec.mode, "shareholding") && find_part(t, c->key));
    if (!owner) return bf_msg_error(c->id, BF_PROTO_FORBIDDEN, "only the task's owner may download its model");
    char path[4096];
    checkpoint_path(c->s, t, t->round - 1, path, sizeof path);
    FILE *f = fopen(path, "rb");
    if (!f) return bf_msg_error(c->id, BF_PROTO_INTERNAL, "model file missing");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    uint8_t *b = n > 0 ? malloc((size_t)n) : NULL;
    int ok = b && fread(b, 1, (size_t)n, f) == (size_t)n;
    fclose(f);
    if (!ok) {
        free(b);
        return bf_msg_error(c->id, BF_PROTO_INTERNAL, "cannot read the model file");
    }
    char hex[65];
    bf_sha256_hex(b, (size_t)n, hex);
    bf_msg_t *r = bf_msg_new("MODEL", c->id);
    bf_msg_set_str(r, "task", t->spec.id);
    bf_msg_set_str(r, "sha256", hex);
    bf_msg_add_frame_owned(r, b, (size_t)n);
    return r;
}

/* PREDICT: who and which task are checked here; holding, classifying and settling happen on the
 * prediction actor, which sends the job back with its reply (NULL return: handed over). */
static bf_msg_t *h_predict(const ctx_t *c, zframe_t **rid, bf_msg_t **req) {
    task_t *t;
    bf_msg_t *e = user_and_task(c, &t);
    if (e) return e;
    if (!strcmp(t->spec.mode, "reward"))
        return bf_msg_error(c->id, BF_PROTO_BAD_STATE,
                            "task %s is a reward-mode task: its model belongs to its creator and is not offered for "
                            "paid predictions (the owner downloads it with blockfed-client model download)",
                            t->spec.id);
    if (strcmp(t->state, "completed"))
        return bf_msg_error(c->id, BF_PROTO_BAD_STATE, "task %s is %s: its model is not online yet", t->spec.id, t->state);
    char payer[32];
    snprintf(payer, sizeof payer, "%lld", (long long)c->user);
    int *mine = zhashx_lookup(c->s->inflight, payer);
    if ((mine && *mine >= MAX_INFLIGHT_PER_USER) || c->s->inflight_total >= MAX_INFLIGHT_TOTAL)
        return bf_msg_error(c->id, BF_PROTO_RATE_LIMITED, "too many predictions in flight; retry when earlier ones are answered");
    if (!mine && (mine = calloc(1, sizeof *mine))) zhashx_insert(c->s->inflight, payer, mine);
    coord_predict_job_t *j = mine ? calloc(1, sizeof *j) : NULL;
    if (!j) return bf_msg_error(c->id, BF_PROTO_INTERNAL, "out of memory");
    j->id = c->id;
    j->payer = c->user;
    j->ledger_task = t->ledger_id;
    snprintf(j->task, sizeof j->task, "%s", t->spec.id);
    checkpoint_path(c->s, t, t->round - 1, j->model_path, sizeof j->model_path);
    snprintf(j->model_sha, sizeof j->model_sha, "%s", t->checkpoint_sha);
    const char *request = bf_msg_str(c->req, "request");
    snprintf(j->request, sizeof j->request, "%s", request ? request : "");
    j->base = t->spec.base_fee_cents;
    j->per_image = t->spec.fee_cents;
    j->rate_num = t->spec.rate_num;
    j->rate_den = t->spec.rate_den;
    j->rid = *rid, *rid = NULL;
    j->req = *req, *req = NULL;
    if (coord_predict_submit(c->s->predict, &j) == 0) {
        ++*mine, c->s->inflight_total++;
        return NULL;
    }
    *rid = j->rid, j->rid = NULL; /* not handed over: answer here */
    *req = j->req, j->req = NULL;
    coord_predict_job_free(&j);
    return bf_msg_error(c->id, BF_PROTO_INTERNAL, "the prediction service is unavailable");
}

static bf_msg_t *dispatch(const ctx_t *c) {
    const char *type = bf_msg_type(c->req);
    static const struct {
        const char *type;
        bf_msg_t *(*fn)(const ctx_t *);
    } table[] = {
        {"HELLO", h_hello},           {"REGISTER", h_register},       {"RECHARGE", h_recharge},
        {"TASK_CREATE", h_task_create}, {"TASK_LIST", h_task_list},   {"TASK_STATUS", h_task_status},
        {"TASK_CANCEL", h_task_cancel}, {"JOIN", h_join},             {"LEAVE", h_leave},
        {"BLOCKS_BUY", h_blocks_buy}, {"BLOCK_GET", h_block_get},     {"ROUND_GET", h_round_get},
        {"UPDATE", h_update},         {"ASSETS_GET", h_assets},       {"HISTORY_GET", h_history},
        {"MODEL_GET", h_model_get},
    };
    if (!strcmp(type, "PING")) return bf_msg_new("PONG", c->id);
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (!strcmp(type, table[i].type)) return table[i].fn(c);
    return bf_msg_error(c->id, BF_PROTO_UNKNOWN_TYPE, "'%s' is not a request", type);
}

/* ---- the socket ---------------------------------------------------------------------------- */

static void send_reply(server_t *s, zframe_t **rid, bf_msg_t *rep) {
    bf_err_t err;
    zmsg_t *out = rep ? bf_msg_encode(rep, &err) : NULL;
    if (!out) { /* a handler built something invalid: a bug, answered as INTERNAL */
        bf_msg_t *e = bf_msg_error(rep ? bf_msg_id(rep) : 0, BF_PROTO_INTERNAL, "reply failed validation");
        logf_("internal: reply %s failed validation: %s", rep ? bf_msg_type(rep) : "?", rep ? err.msg : "no reply");
        out = bf_msg_encode(e, &err);
        bf_msg_destroy(&e);
    }
    if (out) {
        zmsg_prepend(out, rid);
        zmsg_send(&out, s->router);
        zmsg_destroy(&out);
    }
    zframe_destroy(rid);
}

/* Counts malformed messages per connection; past MAX_GARBAGE the peer gets no more answers and
 * its key may not connect again. */
static int garbage(server_t *s, zframe_t *rid, const char *key) {
    char *hex = zframe_strhex(rid);
    int *n = zhashx_lookup(s->garbage, hex);
    if (!n && (n = calloc(1, sizeof *n))) zhashx_insert(s->garbage, hex, n);
    int count = n ? ++*n : 0;
    if (count == MAX_GARBAGE) {
        logf_("peer %s (key %.8s...) sent %d malformed messages: ignored from now on, its key refused", hex,
              key ? key : "none", count);
        bf_proto_zap_deny(s->zap, key);
    }
    free(hex);
    return count;
}

static int ignored(server_t *s, zframe_t *rid) {
    char *hex = zframe_strhex(rid);
    int *n = zhashx_lookup(s->garbage, hex);
    free(hex);
    return n && *n >= MAX_GARBAGE;
}

/* A prediction came back from the actor: answer it and release its in-flight slot. */
static void predict_done(server_t *s, coord_predict_job_t *j) {
    char payer[32];
    snprintf(payer, sizeof payer, "%lld", (long long)j->payer);
    int *n = zhashx_lookup(s->inflight, payer);
    if (n && *n > 0) --*n;
    if (s->inflight_total > 0) s->inflight_total--;
    send_reply(s, &j->rid, j->rep);
}

static void handle_message(server_t *s) {
    zmsg_t *z = zmsg_recv(s->router);
    if (!z) return;
    zframe_t *rid = zmsg_pop(z);
    if (!rid || ignored(s, rid)) {
        zframe_destroy(&rid);
        zmsg_destroy(&z);
        return;
    }
    bf_proto_reject_t rej;
    bf_err_t err;
    char key[41] = "";
    const char *uid = zmsg_first(z) ? zframe_meta(zmsg_first(z), "User-Id") : NULL;
    if (uid) snprintf(key, sizeof key, "%s", uid);
    bf_msg_t *req = bf_msg_decode(&z, &rej, &err);
    if (!req) {
        if (garbage(s, rid, key[0] ? key : NULL) <= MAX_GARBAGE) send_reply(s, &rid, bf_msg_error_reject(&rej, &err));
        zframe_destroy(&rid);
        return;
    }
    ctx_t c = {s, req, bf_msg_id(req), bf_msg_user_id(req), 0};
    char insecure_key[41];
    if (!c.key && s->o.insecure && zframe_size(rid) == 40) {
        /* --insecure (loopback only): no CURVE handshake, so the client names its key as its
         * routing id; nothing authenticates it, which is why insecure mode is loopback-only */
        memcpy(insecure_key, zframe_data(rid), 40);
        insecure_key[40] = 0;
        c.key = insecure_key;
    }
    bf_msg_t *rep;
    if (!bf_proto_is_request(bf_msg_type(req))) {
        rep = bf_msg_error(c.id, BF_PROTO_UNKNOWN_TYPE, "'%s' is a reply, not a request", bf_msg_type(req));
    } else {
        if (c.key) {
            touch(s, c.key);
            c.user = user_of(s, c.key);
        }
        if (!strcmp(bf_msg_type(req), "PREDICT")) {
            rep = h_predict(&c, &rid, &req);
            if (!rep) return; /* the prediction actor answers */
        } else {
            rep = dispatch(&c);
        }
    }
    send_reply(s, &rid, rep);
    bf_msg_destroy(&rep);
    bf_msg_destroy(&req);
}

/* ---- start-up: datasets, state, resume ----------------------------------------------------- */

static int load_datasets(server_t *s, bf_err_t *err) {
    for (int i = 0; i < s->o.ndatasets; i++) {
        dataset_t *d = &s->ds[s->nds];
        snprintf(d->name, sizeof d->name, "%s", s->o.dataset_names[i]);
        if (bf_dataset_load(s->o.dataset_paths[i], "train", 0, 0, 0, &d->train, err) ||
            bf_dataset_load(s->o.dataset_paths[i], "test", d->train.c, d->train.h, d->train.w, &d->test, err))
            return bf_err_prefix(err, "dataset %s: ", d->name);
        bf_dataset_channel_stats(&d->train, d->mean, d->std);
        for (int c = 0; c < d->train.c; c++)
            if (!(d->std[c] > 0)) d->std[c] = 1;
        s->nds++;
        logf_("dataset %s: %d training / %d test images of %dx%dx%d, %d classes", d->name, d->train.n, d->test.n,
              d->train.c, d->train.h, d->train.w, d->train.classes);
    }
    return 0;
}

typedef struct {
    server_t *s;
    bf_err_t err;
} load_t;

static void on_task(void *u, const task_spec_t *spec, int64_t ledger_id, const char *state, int round, const char *sha,
                    const char *result) {
    load_t *l = u;
    bf_err_t err;
    task_t *t = make_task(l->s, spec, ledger_id, &err);
    if (!t) {
        logf_("task %s: cannot restore: %s", spec->id, err.msg);
        return;
    }
    snprintf(t->state, sizeof t->state, "%s", state);
    t->round = round;
    t->round_start = now_ms();
    snprintf(t->checkpoint_sha, sizeof t->checkpoint_sha, "%s", sha);
    snprintf(t->result_hash, sizeof t->result_hash, "%s", result);
    if (round > 0) { /* resume from the last completed round's checkpoint, verified by its digest */
        char path[4096], hex[65];
        checkpoint_path(l->s, t, round - 1, path, sizeof path);
        file_sha(path, hex);
        bf_model_meta_t meta;
        bf_net_t *net = strcmp(hex, sha) ? NULL : bf_model_load(path, 256, l->s->o.threads, &meta, &err);
        if (!net) {
            logf_("task %s: checkpoint %s missing or corrupt; not restored", spec->id, path);
            free_task(t);
            return;
        }
        bf_net_destroy(&t->global);
        t->global = net;
        size_t len;
        float *state = bf_agg_state(t->agg, &len);
        if (state && read_state(path, state, len))
            logf_("task %s: aggregator state missing beside %s; its momentum restarts from zero", spec->id, path);
    }
    if (add_task(l->s, t)) free_task(t);
    else logf_("task %s restored: %s, %d/%d rounds done", spec->id, state, round, spec->rounds);
}

static void on_part(void *u, const char *task, const char *key, int64_t user_id, int own, int64_t samples, int left) {
    server_t *s = ((load_t *)u)->s;
    task_t *t = find_task(s, task);
    part_t *p = t ? add_part(t, key, user_id, own, own ? samples : 0) : NULL;
    if (p) p->left = left;
    /* after a restart every participant gets one liveness window to reconnect before a round
     * may close without it */
    touch(s, key);
}

static void on_block(void *u, const char *task, const char *key, int32_t block) {
    task_t *t = find_task(((load_t *)u)->s, task);
    part_t *p = t ? find_part(t, key) : NULL;
    if (p && block >= 0 && block < t->blocks.nblocks) give_block(t, p, block);
}

static void on_round(void *u, const char *task, int round, int participants, int64_t samples, double va, double vl,
                     double ta, double secs) {
    task_t *t = find_task(((load_t *)u)->s, task);
    (void)round;
    if (!t) return;
    round_metric_t *n = realloc(t->metrics, sizeof *n * (t->nmetrics + 1));
    if (n) t->metrics = n, t->metrics[t->nmetrics++] = (round_metric_t){participants, samples, va, vl, ta, secs};
}

static void on_contribution(void *u, const char *task, int round, const char *key, double value) {
    task_t *t = find_task(((load_t *)u)->s, task);
    part_t *p = t ? find_part(t, key) : NULL;
    (void)round;
    if (p) p->shapley += value;
}

static int open_router(server_t *s, bf_err_t *err) {
    char path[4096];
    s->router = zsock_new(ZMQ_ROUTER);
    if (!s->router) return bf_err_set(err, "cannot create the socket");
    zsock_set_maxmsgsize(s->router, (int)(BF_PROTO_MAX_FRAME + (1u << 20)));
    zsock_set_router_mandatory(s->router, 1);
    zsock_set_heartbeat_ivl(s->router, 5000);
    zsock_set_heartbeat_timeout(s->router, 30000);
    zsock_set_sndhwm(s->router, 10000);
    zsock_set_rcvhwm(s->router, 10000);
    if (!s->o.insecure) {
        snprintf(path, sizeof path, "%s/server.cert_secret", s->o.home);
        zcert_t *cert = zcert_load(path);
        if (!cert) return bf_err_set(err, "%s: cannot load the server certificate (run init first)", path);
        if (!(s->zap = bf_proto_zap_new(err))) {
            zcert_destroy(&cert);
            return -1;
        }
        zsock_set_zap_domain(s->router, "global");
        zcert_apply(cert, s->router);
        zsock_set_curve_server(s->router, 1);
        logf_("CURVE on; server key %s", zcert_public_txt(cert));
        zcert_destroy(&cert);
    }
    if (zsock_bind(s->router, "%s", s->o.bind) < 0) return bf_err_set(err, "cannot bind %s: %s", s->o.bind, zmq_strerror(zmq_errno()));
    logf_("listening on %s", s->o.bind);
    return 0;
}

/* A task that did not gather its minimum participants in time is refunded (escrow back to its
 * creator) and cancelled; the ledger op id makes a repeat after a crash harmless. */
static void expire_task(server_t *s, task_t *t) {
    char op[160];
    bf_err_t err;
    snprintf(op, sizeof op, "refund:%s", t->spec.id);
    int rc = bf_ledger_refund_task(s->ledger, op, t->ledger_id, &err);
    if (rc != BF_LEDGER_OK) {
        logf_("task %s: refund failed: %s", t->spec.id, err.msg);
        return;
    }
    snprintf(t->state, sizeof t->state, "cancelled");
    coord_store_set_progress(s->store, t->spec.id, "cancelled", t->round, "", "", &err);
    logf_("task %s: fewer than %d participants after %d s: cancelled and refunded", t->spec.id, t->spec.min_clients,
          s->o.start_deadline);
}

static void tick(server_t *s) {
    if (now_ms() - s->last_sweep > SWEEP_MS) {
        bf_err_t err;
        int64_t n = 0;
        s->last_sweep = now_ms();
        if (bf_ledger_sweep_expired(s->ledger, &n, &err)) logf_("ledger: sweeping expired holds: %s", err.msg);
        else if (n) logf_("ledger: released %lld expired prediction hold(s)", (long long)n);
    }
    for (int i = 0; i < s->ntasks; i++) {
        task_t *t = s->tasks[i];
        if (!strcmp(t->state, "waiting")) {
            int live = 0;
            for (int k = 0; k < t->nparts; k++) live += is_live(s, &t->parts[k]);
            if (live >= t->spec.min_clients) start_task(s, t);
            else if (t->spec.created_at && time(NULL) - t->spec.created_at > s->o.start_deadline) expire_task(s, t);
        } else if (!strcmp(t->state, "running") && t->round >= t->spec.rounds) {
            complete_task(s, t); /* a restart after the last round but before settlement */
        } else {
            maybe_close_round(s, t);
        }
    }
}

int coord_serve(const coord_opts_t *o) {
    server_t s;
    memset(&s, 0, sizeof s);
    s.o = *o;
    if (s.o.liveness_ms <= 0) s.o.liveness_ms = 15000;
    if (s.o.threads <= 0) s.o.threads = 1;
    if (s.o.block_size <= 0) s.o.block_size = COORD_BLOCK_SIZE;
    if (s.o.blocks_per_join <= 0) s.o.blocks_per_join = COORD_BLOCKS_PER_JOIN;
    if (s.o.start_deadline <= 0) s.o.start_deadline = 86400;
    if (s.o.value_every <= 0) s.o.value_every = 1;
    if (s.o.shapley_budget <= 0) s.o.shapley_budget = 100;
    bf_err_t err = {{0}};
    char path[4096];
    int rc = 3;
    s.seen = zhashx_new();
    s.garbage = zhashx_new();
    s.users = zhashx_new();
    s.inflight = zhashx_new();
    zhashx_set_destructor(s.users, (zhashx_destructor_fn *)zstr_free);
    zhashx_set_destructor(s.inflight, (zhashx_destructor_fn *)zstr_free);
    zhashx_set_destructor(s.seen, (zhashx_destructor_fn *)zstr_free);
    zhashx_set_destructor(s.garbage, (zhashx_destructor_fn *)zstr_free);
    snprintf(path, sizeof path, "%s/ledger.db", o->home);
    if (!(s.ledger = bf_ledger_open(path, &err))) goto out;
    snprintf(path, sizeof path, "%s/coordinator.db", o->home);
    if (!(s.store = coord_store_open(path, &err)) || load_datasets(&s, &err)) goto out;
    load_t l = {&s, {{0}}};
    coord_load_cb_t cb = {on_task, on_part, on_block, on_round, on_contribution};
    if (coord_store_load(s.store, &cb, &l, &err) || open_router(&s, &err)) goto out;
    int64_t swept = 0;
    bf_ledger_sweep_expired(s.ledger, &swept, &err);
    s.worker = zactor_new(worker_actor, NULL);
    snprintf(path, sizeof path, "%s/ledger.db", o->home);
    s.predict = coord_predict_new(path);
    zpoller_t *poller = zpoller_new(s.router, s.worker, s.predict, NULL);
    while (!zsys_interrupted) {
        void *which = zpoller_wait(poller, 200);
        if (which == s.router) handle_message(&s);
        else if (which == s.worker) {
            void *p = NULL;
            if (zsock_recv(s.worker, "p", &p) == 0 && p) job_done(&s, p);
        } else if (which == s.predict) {
            coord_predict_job_t *j = coord_predict_recv(s.predict);
            if (j) predict_done(&s, j);
            coord_predict_job_free(&j);
        } else if (zpoller_terminated(poller)) break;
        tick(&s);
    }
    zpoller_destroy(&poller);
    logf_("shutting down");
    rc = 0;
out:
    if (rc) fprintf(stderr, "blockfed-coordinator: %s\n", err.msg);
    zactor_destroy(&s.worker);
    zactor_destroy(&s.predict);
    zactor_destroy(&s.zap);
    zsock_destroy(&s.router);
    for (int i = 0; i < s.ntasks; i++) free_task(s.tasks[i]);
    free(s.tasks);
    for (int i = 0; i < s.nds; i++) bf_dataset_free(&s.ds[i].train), bf_dataset_free(&s.ds[i].test);
    zhashx_destroy(&s.seen);
    zhashx_destroy(&s.garbage);
    zhashx_destroy(&s.users);
    zhashx_destroy(&s.inflight);
    coord_store_close(&s.store);
    bf_ledger_close(&s.ledger);
    return rc;
}

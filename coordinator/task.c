/* task.c: tasks and their participants, on the socket thread. A task's life (coord.h: the states
 * and how each maps to the ledger's), its data blocks and who holds them, when a round closes
 * (handed to the worker) and what happens when the worker gives it back (contributions, metrics,
 * the next round), the round's valuation that follows (its values, whenever they come), and the
 * settlement that ends it once every round is valued: every ledger call carries an op id derived
 * from the task id, so repeating one after a crash is harmless. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "coord.h"

#define SETTLE_MAX_VALUE 1e12 /* a cumulative Shapley value weighs at most this at settlement (int64 micro-units) */

int coord_stored(int rc, const bf_err_t *err) {
    if (rc) coord_log("state: %s", err->msg);
    return rc;
}

/* ---- lookups and liveness ------------------------------------------------------------------ */

coord_task_t *coord_task_find(coord_server_t *s, const char *id) {
    for (int i = 0; id && i < s->ntasks; i++)
        if (!strcmp(s->tasks[i]->spec.id, id)) return s->tasks[i];
    return NULL;
}

coord_part_t *coord_part_find(coord_task_t *t, const char *key) {
    for (int i = 0; key && i < t->nparts; i++)
        if (!strcmp(t->parts[i].key, key)) return &t->parts[i];
    return NULL;
}

coord_dataset_t *coord_dataset_find(coord_server_t *s, const char *name) {
    for (int i = 0; i < s->nds; i++)
        if (!strcmp(s->ds[i].name, name)) return &s->ds[i];
    return NULL;
}

static int64_t last_seen(coord_server_t *s, const char *key) {
    int64_t *v = zhashx_lookup(s->seen, key);
    return v ? *v : 0;
}

void coord_touch(coord_server_t *s, const char *key) {
    int64_t *v = zhashx_lookup(s->seen, key);
    if (!v) {
        v = malloc(sizeof *v);
        if (!v) return;
        zhashx_insert(s->seen, key, v);
    }
    *v = coord_now_ms();
}

int coord_seen_sweep(coord_server_t *s) {
    int64_t now = coord_now_ms();
    zlistx_t *old = zlistx_new();
    if (!old) return 0;
    zlistx_set_destructor(old, (zlistx_destructor_fn *)zstr_free);
    for (int64_t *v = zhashx_first(s->seen); v; v = zhashx_next(s->seen))
        if (now - *v >= s->o.liveness_ms) zlistx_add_end(old, strdup((const char *)zhashx_cursor(s->seen)));
    for (char *k = zlistx_first(old); k; k = zlistx_next(old)) zhashx_delete(s->seen, k);
    int n = (int)zlistx_size(old);
    zlistx_destroy(&old);
    return n;
}

int coord_open_tasks(const coord_server_t *s, const char *key) {
    int n = 0;
    for (int i = 0; i < s->ntasks; i++) {
        const coord_task_t *t = s->tasks[i];
        if (!strcmp(t->spec.creator, key) && t->state != COORD_TASK_COMPLETED && t->state != COORD_TASK_CANCELLED &&
            t->state != COORD_TASK_FAILED)
            n++;
    }
    return n;
}

int coord_is_live(coord_server_t *s, const coord_part_t *p) {
    return !p->left && coord_now_ms() - last_seen(s, p->key) < s->o.liveness_ms;
}


/* ---- building and freeing ------------------------------------------------------------------ */

static void free_part(coord_part_t *p) {
    free(p->blocks);
    free(p->params);
    free(p->buffers);
}

void coord_task_free(coord_task_t **pt) {
    coord_task_t *t = pt ? *pt : NULL;
    if (!t) return;
    for (int i = 0; i < t->nparts; i++) free_part(&t->parts[i]);
    free(t->parts);
    free(t->owner);
    for (int i = 0; i < t->nmetrics; i++) free(t->metrics[i].value_part), free(t->metrics[i].value);
    free(t->metrics);
    bf_blocks_free(&t->blocks);
    coord_task_release_model(t);
    free(t);
    *pt = NULL;
}

void coord_task_release_model(coord_task_t *t) {
    bf_dataset_free(&t->val);
    free(t->recal_x);
    t->recal_x = NULL;
    t->nrecal = 0;
    coord_blob_unref(t->round_model);
    t->round_model = NULL;
    bf_net_destroy(&t->global);
    bf_net_destroy(&t->coalition);
    bf_agg_destroy(&t->agg);
}

static int val_size(const coord_dataset_t *d) {
    int cap = d->train.n / 10;
    return COORD_VAL_SIZE < cap ? COORD_VAL_SIZE : cap;
}

/* A task's block size. Given --block-size, that; by default enough blocks for every expected
 * participant to get a whole JOIN's worth (min_clients x blocks per join), at most
 * COORD_BLOCK_SIZE images each: a small dataset gets small blocks instead of a first joiner
 * taking all of them. A function of the dataset, the spec and the options only, so a restart cuts
 * the same blocks. */
static int block_size(const coord_server_t *s, const coord_dataset_t *d, const coord_task_spec_t *spec) {
    if (!s->o.block_size_auto) return s->o.block_size;
    int64_t want = (int64_t)(spec->min_clients > 0 ? spec->min_clients : 1) * s->o.blocks_per_join;
    int64_t bs = (d->train.n - val_size(d)) / (want > 0 ? want : 1);
    return bs < 1 ? 1 : bs > COORD_BLOCK_SIZE ? COORD_BLOCK_SIZE : (int)bs;
}

coord_task_t *coord_task_new(coord_server_t *s, const coord_task_spec_t *spec, int64_t ledger_id, bf_err_t *err) {
    coord_dataset_t *d = coord_dataset_find(s, spec->dataset);
    if (!d) return bf_err_set(err, "dataset '%s' is not served here", spec->dataset), NULL;
    bf_agg_opts_t ao;
    if (bf_agg_parse(spec->strategy, &ao, err)) return NULL;
    if (ao.kind == BF_AGG_FEDPROX && spec->mu == 0) ao.mu = 0.01;
    bf_net_plan_t plan; /* the model against the data, without building it */
    if (bf_net_plan(spec->model, d->train.c, d->train.h, d->train.w, d->train.classes, 256, s->o.threads, &plan, err))
        return NULL;
    coord_task_t *t = calloc(1, sizeof *t);
    if (!t) return bf_err_set(err, "out of memory"), NULL;
    t->spec = *spec;
    if (t->spec.value_images <= 0) t->spec.value_images = COORD_VALUE_IMAGES;
    t->ledger_id = ledger_id;
    t->state = COORD_TASK_WAITING;
    t->ds = d;
    t->agg_opts = ao;
    t->np = plan.nparams;
    t->nb = plan.nbuffers;
    if (bf_blocks_partition(&d->train, block_size(s, d, spec), val_size(d), spec->partition, spec->seed, &t->blocks, err))
        goto fail;
    t->owner = malloc(sizeof(int32_t) * t->blocks.nblocks);
    if (!t->owner) goto fail;
    for (int i = 0; i < t->blocks.nblocks; i++) t->owner[i] = -1;
    return t;
fail:
    if (!err->msg[0]) bf_err_set(err, "out of memory");
    coord_task_free(&t);
    return NULL;
}

int coord_task_add(coord_server_t *s, coord_task_t *t) {
    coord_task_t **n = realloc(s->tasks, sizeof *n * (s->ntasks + 1));
    if (!n) return -1;
    s->tasks = n;
    s->tasks[s->ntasks++] = t;
    return 0;
}

coord_part_t *coord_part_add(coord_task_t *t, const char *key, int64_t user_id, int own_data, int64_t samples) {
    coord_part_t *n = realloc(t->parts, sizeof *n * (t->nparts + 1));
    if (!n) return NULL;
    t->parts = n;
    coord_part_t *p = &t->parts[t->nparts++];
    memset(p, 0, sizeof *p);
    snprintf(p->key, sizeof p->key, "%s", key);
    p->user_id = user_id;
    p->own_data = own_data;
    p->samples = samples;
    p->update_round = -1;
    return p;
}

int coord_block_give(coord_task_t *t, coord_part_t *p, int32_t b) {
    int32_t *n = realloc(p->blocks, sizeof *n * (p->nblocks + 1));
    if (!n) return -1;
    p->blocks = n;
    p->blocks[p->nblocks++] = b;
    t->owner[b] = (int32_t)(p - t->parts);
    p->samples += t->blocks.block_size;
    return 0;
}

int coord_blocks_free(const coord_task_t *t, int n, int32_t *out) {
    int k = 0;
    for (int b = 0; b < t->blocks.nblocks && k < n; b++)
        if (t->owner[b] < 0) out[k++] = b;
    return k;
}

int coord_join_blocks(const coord_server_t *s, const coord_task_t *t) {
    int nfree = 0;
    for (int b = 0; b < t->blocks.nblocks; b++) nfree += t->owner[b] < 0;
    int want = s->o.blocks_per_join;
    if (t->state == COORD_TASK_WAITING) { /* leave enough for the participants still expected */
        int expected = t->spec.min_clients - t->nparts;
        int fair = nfree / (expected > 1 ? expected : 1);
        if (fair < 1) fair = 1;
        if (want > fair) want = fair;
    }
    return want < nfree ? want : nfree;
}

int coord_blocks_assign(coord_server_t *s, coord_task_t *t, coord_part_t *p, int want, bf_err_t *err) {
    int32_t pick[1000];
    int k = coord_blocks_free(t, want < 1000 ? want : 1000, pick);
    for (int i = 0; i < k; i++)
        if (coord_block_give(t, p, pick[i])) return bf_err_set(err, "out of memory");
    return k && coord_store_add_blocks(s->store, t->spec.id, p->key, pick, k, err) ? -1 : k;
}

int64_t coord_own_data_cap(const coord_server_t *s, const coord_task_t *t) {
    if (t->spec.own_data_cap > 0) return t->spec.own_data_cap;
    int64_t cap = 0;
    for (int i = 0; i < t->nparts; i++)
        if (!t->parts[i].own_data && t->parts[i].samples > cap) cap = t->parts[i].samples;
    return cap ? cap : (int64_t)s->o.blocks_per_join * t->blocks.block_size;
}

/* ---- transitions --------------------------------------------------------------------------- */

void coord_task_set_state(coord_server_t *s, coord_task_t *t, coord_task_state_t state) {
    bf_err_t err;
    t->state = state;
    coord_stored(coord_store_set_progress(s->store, t->spec.id, state, t->round, t->checkpoint_sha, t->result_hash, &err),
                 &err);
}

static void start_task(coord_server_t *s, coord_task_t *t) {
    char op[160];
    bf_err_t err;
    snprintf(op, sizeof op, "start:%s", t->spec.id);
    int rc = bf_ledger_start_task(s->ledger, op, t->ledger_id, &err);
    if (rc != BF_LEDGER_OK && rc != BF_LEDGER_ESTATE) {
        coord_log("task %s: cannot start: %s", t->spec.id, err.msg);
        return;
    }
    t->round = 0;
    t->round_start = coord_now_ms();
    coord_task_set_state(s, t, COORD_TASK_RUNNING);
    coord_log("task %s: started with %d participants, %d rounds", t->spec.id, t->nparts, t->spec.rounds);
}

/* Settlement weights: each participant's positive cumulative Shapley value, in millionths of an
 * accuracy point (integers: the ledger splits exactly). A value <= 0 earns nothing. If nobody's
 * value is positive (every update hurt or the model never moved), the documented rule is an equal
 * split among the participants whose updates were accepted. */
static size_t settlement_weights(const coord_task_t *t, int64_t *users, int64_t *weights) {
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

/* Pays the pool out (reward) or allocates the shares and puts the model online (shareholding);
 * a failure leaves the task RUNNING with every round done, retried at the next tick. */
static void complete_task(coord_server_t *s, coord_task_t *t) {
    char op[160];
    bf_err_t err;
    int64_t *users = calloc(t->nparts + 1, sizeof(int64_t)), *weights = calloc(t->nparts + 1, sizeof(int64_t));
    if (!users || !weights) {
        free(users), free(weights);
        coord_log("task %s: settlement: out of memory (will retry)", t->spec.id);
        return;
    }
    size_t n = settlement_weights(t, users, weights);
    int rc = BF_LEDGER_OK;
    if (n && t->spec.mode == BF_LEDGER_MODE_REWARD) {
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
        coord_log("task %s: settlement failed: %s (will retry at restart)", t->spec.id, err.msg);
        return;
    }
    coord_task_set_state(s, t, COORD_TASK_COMPLETED);
    coord_log("task %s: completed after %d rounds; result hash %s", t->spec.id, t->round, t->result_hash);
}

/* Settles a task whose every round is done and valued (its values decide the split); until the
 * last valuation is stored it stays RUNNING with every round done. */
static void maybe_settle(coord_server_t *s, coord_task_t *t) {
    if (t->state != COORD_TASK_RUNNING || t->round < t->spec.rounds || t->unvalued > 0) return;
    if (s->o.fault_before_settle) {
        coord_log("task %s: fault injection: exiting before settlement", t->spec.id);
        _exit(99);
    }
    complete_task(s, t);
}

int coord_task_cancel(coord_server_t *s, coord_task_t *t, bf_err_t *err) {
    char op[160];
    snprintf(op, sizeof op, "refund:%s", t->spec.id);
    int rc = bf_ledger_refund_task(s->ledger, op, t->ledger_id, err);
    if (rc != BF_LEDGER_OK) return rc;
    coord_task_set_state(s, t, COORD_TASK_CANCELLED);
    return BF_LEDGER_OK;
}

/* A task that did not gather its minimum participants in time is refunded (escrow back to its
 * creator) and cancelled; the ledger op id makes a repeat after a crash harmless. */
static void expire_task(coord_server_t *s, coord_task_t *t) {
    bf_err_t err;
    if (coord_task_cancel(s, t, &err) != BF_LEDGER_OK) {
        coord_log("task %s: refund failed: %s", t->spec.id, err.msg);
        return;
    }
    coord_log("task %s: fewer than %d participants after %d s: cancelled and refunded", t->spec.id, t->spec.min_clients,
              s->o.start_deadline);
}

void coord_task_fail_reason(const coord_task_t *t, char *buf, size_t cap) {
    snprintf(buf, cap,
             "task %s failed: round %d got fewer than %d updates within twice its %d s timeout (participants "
             "stopped reporting); %s",
             t->spec.id, t->round + 1, t->spec.min_clients, t->spec.round_timeout,
             t->spec.mode == BF_LEDGER_MODE_REWARD ? "the pool was refunded to the creator"
                                                   : "no shares were allocated and the model is not online");
}

/* A round that cannot close: the ledger task is refunded (a reward pool back to its creator in
 * full; a shareholding task has nothing in escrow and allocates nothing), then the task is FAILED.
 * The refund's op id is the one a cancel would use: a task is refunded once, whichever way. */
static void fail_task(coord_server_t *s, coord_task_t *t) {
    char op[160], why[512];
    bf_err_t err;
    snprintf(op, sizeof op, "refund:%s", t->spec.id);
    int rc = bf_ledger_refund_task(s->ledger, op, t->ledger_id, &err);
    if (rc != BF_LEDGER_OK) {
        coord_log("task %s: refund of the failed task failed: %s (will retry)", t->spec.id, err.msg);
        return;
    }
    for (int i = 0; i < t->nparts; i++) { /* the updates of the round are never used */
        free(t->parts[i].params), free(t->parts[i].buffers);
        t->parts[i].params = t->parts[i].buffers = NULL;
    }
    coord_task_release_model(t);
    coord_task_set_state(s, t, COORD_TASK_FAILED);
    coord_task_fail_reason(t, why, sizeof why);
    coord_log("%s", why);
}

/* ---- rounds -------------------------------------------------------------------------------- */

/* Closes the open round if everyone alive reported, or if its timeout passed with enough reports:
 * the updates go to the worker and the task is AGGREGATING until it gives them back. */
static void maybe_close_round(coord_server_t *s, coord_task_t *t) {
    if (t->state != COORD_TASK_RUNNING || !t->round_model) return; /* no round open before the model is built */
    int reported = 0, live_missing = 0;
    for (int i = 0; i < t->nparts; i++) {
        coord_part_t *p = &t->parts[i];
        if (p->update_round == t->round) reported++;
        else if (coord_is_live(s, p)) live_missing++;
    }
    int64_t elapsed = coord_now_ms() - t->round_start;
    int timed_out = elapsed > (int64_t)t->spec.round_timeout * 1000;
    /* one more timeout for the missing to come back, then the task cannot go on */
    if (reported < t->spec.min_clients && elapsed > 2 * (int64_t)t->spec.round_timeout * 1000) {
        fail_task(s, t);
        return;
    }
    if (!reported || (live_missing && !timed_out)) return;
    if (reported < t->spec.min_clients && (!timed_out || reported < t->spec.min_clients)) {
        if (live_missing || reported < t->spec.min_clients) return;
    }
    int value = (t->round + 1) % s->o.value_every == 0 || t->round + 1 >= t->spec.rounds;
    /* each round waiting for its values keeps a valuation file (its updates): at most
     * --value-backlog of them per task, so a valuation slower than the rounds bounds the disk it
     * holds by holding the rounds back instead */
    if (value && !s->o.value_inline && t->unvalued >= s->o.value_backlog) {
        if (!t->backlog_logged)
            coord_log("task %s round %d: waits for the values of %d earlier rounds (--value-backlog %d)", t->spec.id,
                      t->round + 1, t->unvalued, s->o.value_backlog);
        t->backlog_logged = 1;
        return;
    }
    t->backlog_logged = 0;
    coord_job_t *j = calloc(1, sizeof *j);
    if (j) {
        j->params = calloc(reported, sizeof(float *));
        j->buffers = calloc(reported, sizeof(float *));
        j->samples = calloc(reported, sizeof(int64_t));
        j->keys = calloc(reported, sizeof *j->keys);
    }
    if (!j || !j->params || !j->buffers || !j->samples || !j->keys) { /* the round stays open: tried again next tick */
        coord_job_free(&j);
        return;
    }
    j->t = t;
    j->round = t->round;
    j->value = value;
    j->value_inline = s->o.value_inline;
    j->exact_max = s->o.shapley_exact_max;
    j->budget = s->o.shapley_budget;
    j->sample = s->o.shapley_sample;
    j->utility_loss = s->o.utility_loss;
    for (int i = 0; i < t->nparts; i++) {
        coord_part_t *p = &t->parts[i];
        if (p->update_round != t->round) continue;
        snprintf(j->keys[j->k], sizeof j->keys[j->k], "%s", p->key);
        j->params[j->k] = p->params;
        j->buffers[j->k] = p->buffers;
        j->samples[j->k++] = p->upd_samples;
    }
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/checkpoints/%s", s->o.home, t->spec.id);
    zsys_dir_create("%s", dir);
    coord_checkpoint_path(s->o.home, t->spec.id, t->round, j->path, sizeof j->path);
    coord_value_path(s->o.home, t->spec.id, t->round, j->value_path, sizeof j->value_path);
    t->state = COORD_TASK_AGGREGATING; /* in memory only: the store still says running */
    if (coord_worker_submit(s->worker, j)) {
        t->state = COORD_TASK_RUNNING;
        coord_job_free(&j);
    }
}

/* A running task without its model (just started, restored, or left without one by a failure) gets
 * it built on the worker: from
 * the seed, or from the last completed round's checkpoint, checked against its recorded digest. */
static void build_model(coord_server_t *s, coord_task_t *t) {
    if (t->building || coord_now_ms() < t->build_after) return;
    coord_task_release_model(t); /* whatever is left of a failed build or round */
    coord_job_t *j = calloc(1, sizeof *j);
    if (!j) return;
    j->t = t;
    j->build = 1;
    j->threads = s->o.threads;
    j->recal = s->o.bn_recalibrate;
    if (t->round > 0) {
        coord_checkpoint_path(s->o.home, t->spec.id, t->round - 1, j->path, sizeof j->path);
        snprintf(j->expect_sha, sizeof j->expect_sha, "%s", t->checkpoint_sha);
    }
    t->building = 1;
    if (coord_worker_submit(s->worker, j)) {
        t->building = 0;
        coord_job_free(&j);
    }
}

#define BUILD_RETRY_MS 60000 /* a task whose model could not be built tries again after this */

static void build_done(coord_server_t *s, coord_job_t *j) {
    coord_task_t *t = j->t;
    t->building = 0;
    if (j->note[0]) coord_log("task %s: %s", t->spec.id, j->note);
    if (!j->ok) {
        coord_task_release_model(t);
        t->build_after = coord_now_ms() + BUILD_RETRY_MS;
        coord_log("task %s: cannot build its model: %s (retried in %d s)", t->spec.id, j->err, BUILD_RETRY_MS / 1000);
    } else {
        coord_blob_unref(t->round_model);
        t->round_model = j->round_model;
        j->round_model = NULL;
        t->round_start = coord_now_ms(); /* the round opens now */
        if (s->o.verbose) coord_log("task %s: model ready (%.1f s), round %d open", t->spec.id, j->seconds, t->round + 1);
    }
    coord_job_free(&j);
}

static void round_done(coord_server_t *s, coord_job_t *j);
static void value_done(coord_server_t *s, coord_job_t *j);

void coord_job_done(coord_server_t *s, coord_job_t *j) {
    if (j->build) build_done(s, j);
    else if (j->valuation) value_done(s, j);
    else round_done(s, j);
}

/* Appends a round's metrics (the next round's: t->nmetrics is the round's number); -1: out of
 * memory. The values are given to it, or come with its valuation. */
static int add_metric(coord_task_t *t, const coord_round_metric_t *m) {
    coord_round_metric_t *n = realloc(t->metrics, sizeof *n * (t->nmetrics + 1));
    if (!n) return -1;
    t->metrics = n;
    t->metrics[t->nmetrics] = *m;
    t->metrics[t->nmetrics].value_part = NULL, t->metrics[t->nmetrics].value = NULL;
    t->metrics[t->nmetrics].nvalues = 0, t->metrics[t->nmetrics].valuing = 0;
    t->nmetrics++;
    return 0;
}

/* Records participant index part's value in round m's values, kept in joining order (the store
 * gives them back by key). */
static void metric_value(coord_round_metric_t *m, int part, double v) {
    int *ip = realloc(m->value_part, sizeof *ip * (m->nvalues + 1));
    if (ip) m->value_part = ip;
    double *vp = ip ? realloc(m->value, sizeof *vp * (m->nvalues + 1)) : NULL;
    if (!vp) return;
    m->value = vp;
    int at = m->nvalues++;
    for (; at > 0 && m->value_part[at - 1] > part; at--)
        m->value_part[at] = m->value_part[at - 1], m->value[at] = m->value[at - 1];
    m->value_part[at] = part, m->value[at] = v;
}

void coord_task_restore_round(coord_task_t *t, int round, const coord_round_metric_t *m) {
    /* rows come in round order; a round stored but not counted as done reopens (and is stored
     * again when it closes) */
    if (round != t->nmetrics || round >= t->round || add_metric(t, m)) return;
    if (!m->valued) t->unvalued++; /* valued again from its file (coord_task_tick) */
}

void coord_task_restore_contribution(coord_task_t *t, int round, const char *key, double value, int64_t samples) {
    coord_part_t *p = coord_part_find(t, key);
    /* a round stored but not yet counted as done (a crash in between) reopens: its rows are
     * replaced when it closes again, so they must not count twice */
    if (!p || round >= t->round) return;
    p->contributed += samples;
    if (round < t->nmetrics && !t->metrics[round].valued) return; /* its value is still to come */
    p->shapley += value;
    if (round < t->nmetrics) metric_value(&t->metrics[round], (int)(p - t->parts), value);
}

/* Hands round `round`'s valuation (its file written when it was aggregated) to the worker. */
static void submit_valuation(coord_server_t *s, coord_task_t *t, int round) {
    coord_job_t *j = calloc(1, sizeof *j);
    if (!j) return;
    j->t = t;
    j->valuation = 1;
    j->value = 1;
    j->round = round;
    j->threads = s->o.value_threads > 0 ? s->o.value_threads : s->o.threads;
    j->recal = s->o.bn_recalibrate;
    j->exact_max = s->o.shapley_exact_max;
    j->budget = s->o.shapley_budget;
    j->sample = s->o.shapley_sample;
    j->utility_loss = s->o.utility_loss;
    coord_value_path(s->o.home, t->spec.id, round, j->value_path, sizeof j->value_path);
    t->metrics[round].valuing = 1;
    if (coord_worker_submit(s->worker, j)) {
        t->metrics[round].valuing = 0;
        coord_job_free(&j);
    }
}

#define VALUE_RETRY_MS 60000 /* a valuation that failed (out of memory, the store) is retried after this */

/* A round's values came back from the worker: stored with the round's valued flag in one
 * transaction, then counted, and the round's valuation file deleted. A round whose file is gone
 * (or unreadable) can never be valued: it is stored as valued with every value 0, so the task
 * still settles on the rounds that were. */
static void value_done(coord_server_t *s, coord_job_t *j) {
    coord_task_t *t = j->t;
    bf_err_t err;
    if (j->round >= t->nmetrics) return coord_job_free(&j); /* cannot happen: the round is stored */
    coord_round_metric_t *m = &t->metrics[j->round];
    m->valuing = 0;
    if (m->valued) return coord_job_free(&j);
    if (!j->ok && !j->lost) {
        coord_log("task %s round %d: valuation failed: %s (retried in %d s)", t->spec.id, j->round + 1, j->err,
                  VALUE_RETRY_MS / 1000);
        t->value_after = coord_now_ms() + VALUE_RETRY_MS;
        return coord_job_free(&j);
    }
    if (j->lost) {
        coord_log("task %s round %d: cannot be valued: %s; its values are 0", t->spec.id, j->round + 1, j->err);
        j->k = 0;
    }
    if (coord_stored(coord_store_round_valued(s->store, t->spec.id, j->round, j->k, (const char (*)[41])j->keys, j->phi,
                                              j->value_seconds, &err),
                     &err)) {
        t->value_after = coord_now_ms() + VALUE_RETRY_MS;
        return coord_job_free(&j);
    }
    for (int i = 0; i < j->k; i++) {
        coord_part_t *p = coord_part_find(t, j->keys[i]);
        if (!p) continue;
        p->shapley += j->phi[i];
        metric_value(m, (int)(p - t->parts), j->phi[i]);
        if (s->o.verbose)
            coord_log("task %s round %d: %.8s... Shapley %+.5f (cumulative %+.5f)", t->spec.id, j->round + 1, p->key,
                      j->phi[i], p->shapley);
    }
    m->valued = 1;
    m->value_seconds = j->value_seconds;
    t->unvalued--;
    unlink(j->value_path);
    if (!j->lost)
        coord_log("task %s round %d: valued in %.1f s (%d coalitions valued, %s)", t->spec.id, j->round + 1,
                  j->value_seconds, j->shapley_evals, j->estimator ? j->estimator : "not valued");
    maybe_settle(s, t);
    coord_job_free(&j);
}

static void round_done(coord_server_t *s, coord_job_t *j) {
    coord_task_t *t = j->t;
    bf_err_t err;
    t->state = COORD_TASK_RUNNING;
    coord_blob_unref(t->round_model); /* the model of the round that goes on (the next, or this one again) */
    t->round_model = j->round_model;
    j->round_model = NULL;
    if (!j->ok) {
        coord_log("task %s round %d: aggregation failed: %s; the round stays open", t->spec.id, t->round, j->err);
        coord_job_free(&j);
        return;
    }
    /* valued in the background: its values come later (value_done); until then it counts 0 */
    int later = j->value && !j->value_inline;
    int64_t samples = 0;
    for (int i = 0; i < j->k; i++) samples += j->samples[i];
    coord_round_metric_t m = {.participants = j->k,
                              .samples = samples,
                              .val_acc = j->val_acc,
                              .val_loss = j->val_loss,
                              .test_acc = j->test_acc,
                              .seconds = (coord_now_ms() - t->round_start) / 1000.0,
                              .aggregate_seconds = j->aggregate_seconds,
                              .value_seconds = later ? 0 : j->value_seconds,
                              .valued = !later};
    if (t->nmetrics != t->round || add_metric(t, &m)) { /* cannot happen but out of memory: the round stays open */
        coord_log("task %s round %d: out of memory recording the round; it stays open", t->spec.id, t->round + 1);
        coord_job_free(&j);
        return;
    }
    coord_round_metric_t *mm = &t->metrics[t->round];
    for (int i = 0, k = 0; i < t->nparts; i++) {
        coord_part_t *p = &t->parts[i];
        if (p->update_round != t->round) continue;
        p->contributed += p->upd_samples;
        double v = !later && j->phi ? j->phi[k] : 0;
        if (!later) p->shapley += v, metric_value(mm, i, v);
        k++;
        coord_stored(coord_store_add_contribution(s->store, t->spec.id, t->round, p->key, v, p->upd_samples, &err), &err);
        if (s->o.verbose && !later)
            coord_log("task %s round %d: %.8s... Shapley %+.5f (cumulative %+.5f)", t->spec.id, t->round + 1, p->key, v,
                      p->shapley);
    }
    if (j->kept_previous)
        coord_log("task %s round %d: the aggregated model was not finite; the round keeps the model it started from",
                  t->spec.id, t->round + 1);
    snprintf(t->checkpoint_sha, sizeof t->checkpoint_sha, "%s", j->sha);
    coord_stored(coord_store_add_round(s->store, t->spec.id, t->round, &m, j->sha, &err), &err);
    if (later)
        coord_log("task %s round %d/%d: %d participants, %lld samples, val acc %.4f loss %.4f, test acc %.4f, %.1f s "
                  "(aggregate %.1f s; valued in the background)",
                  t->spec.id, t->round + 1, t->spec.rounds, j->k, (long long)samples, j->val_acc, j->val_loss,
                  j->test_acc, m.seconds, j->aggregate_seconds);
    else
        coord_log("task %s round %d/%d: %d participants, %lld samples, val acc %.4f loss %.4f, test acc %.4f, %.1f s "
                  "(aggregate %.1f s, value %.1f s, %d coalitions valued, %s)",
                  t->spec.id, t->round + 1, t->spec.rounds, j->k, (long long)samples, j->val_acc, j->val_loss,
                  j->test_acc, m.seconds, j->aggregate_seconds, j->value_seconds, j->shapley_evals,
                  j->estimator ? j->estimator : "not valued");
    for (int i = 0; i < t->nparts; i++) { /* the updates are spent (a valuation reads them from its file) */
        free(t->parts[i].params), free(t->parts[i].buffers);
        t->parts[i].params = t->parts[i].buffers = NULL;
    }
    int round = t->round++;
    t->round_start = coord_now_ms();
    if (t->round >= t->spec.rounds) { /* the model has done its work: the checkpoint is the result */
        snprintf(t->result_hash, sizeof t->result_hash, "%s", j->sha);
        coord_task_release_model(t);
    }
    coord_task_set_state(s, t, COORD_TASK_RUNNING);
    if (later) t->unvalued++, submit_valuation(s, t, round);
    else unlink(j->value_path); /* one left by an earlier closing of this round (a crash, other options) */
    maybe_settle(s, t);
    coord_job_free(&j);
}

/* Rounds restored unvalued (or whose valuation failed) go to the worker again. Once, at the first
 * tick: the files of rounds already valued are deleted (a crash between storing the values and
 * deleting the file leaves one). */
static void resume_valuations(coord_server_t *s, coord_task_t *t) {
    for (int r = 0; !t->files_swept && r < t->nmetrics; r++) {
        char path[4096];
        if (t->metrics[r].valued) unlink(coord_value_path(s->o.home, t->spec.id, r, path, sizeof path));
    }
    t->files_swept = 1;
    if (!t->unvalued || coord_now_ms() < t->value_after) return;
    for (int r = 0; r < t->nmetrics; r++)
        if (!t->metrics[r].valued && !t->metrics[r].valuing) submit_valuation(s, t, r);
}

void coord_task_tick(coord_server_t *s, coord_task_t *t) {
    resume_valuations(s, t);
    if (t->state == COORD_TASK_WAITING) {
        int live = 0;
        for (int k = 0; k < t->nparts; k++) live += coord_is_live(s, &t->parts[k]);
        if (live >= t->spec.min_clients) start_task(s, t);
        else if (t->spec.created_at && time(NULL) - t->spec.created_at > s->o.start_deadline) expire_task(s, t);
    } else if (t->state == COORD_TASK_RUNNING && t->round >= t->spec.rounds) {
        maybe_settle(s, t); /* every value in: a restart after the last one but before settlement */
    } else if (t->state == COORD_TASK_RUNNING && !t->round_model) {
        build_model(s, t);
    } else {
        maybe_close_round(s, t);
    }
}

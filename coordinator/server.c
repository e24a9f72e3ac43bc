/* server.c: the coordinator's socket thread. It owns the ROUTER socket and is the only code that
 * sends on it: it receives each message, decodes it (bf_msg_decode checks every length and count
 * before anything is allocated), counts malformed ones per peer (past MAX_GARBAGE a peer is ignored
 * and its key refused), hands valid requests to handlers.c and sends what comes back. It also
 * polls the two actors (the aggregation worker and the prediction service) and hands their
 * results back to task.c and to the requester, runs the periodic work (tasks, expired holds),
 * and at start-up loads the datasets and restores every task from coordinator.db and its last
 * checkpoint. Identity is the CURVE key the connection authenticated with (bf_msg_user_id),
 * never a name in a message. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coord.h"

#define MAX_GARBAGE 50 /* malformed messages a peer may send before it is ignored */
#define SWEEP_MS 10000 /* how often holds left by interrupted predictions are released */

/* ---- the socket ---------------------------------------------------------------------------- */

static void send_reply(coord_server_t *s, zframe_t **rid, bf_msg_t *rep) {
    bf_err_t err;
    zmsg_t *out = rep ? bf_msg_encode(rep, &err) : NULL;
    if (!out) { /* a handler built something invalid: a bug, answered as INTERNAL */
        bf_msg_t *e = bf_msg_error(rep ? bf_msg_id(rep) : 0, BF_PROTO_INTERNAL, "reply failed validation");
        coord_log("internal: reply %s failed validation: %s", rep ? bf_msg_type(rep) : "?", rep ? err.msg : "no reply");
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
static int garbage(coord_server_t *s, zframe_t *rid, const char *key) {
    char *hex = zframe_strhex(rid);
    int *n = zhashx_lookup(s->garbage, hex);
    if (!n && (n = calloc(1, sizeof *n))) zhashx_insert(s->garbage, hex, n);
    int count = n ? ++*n : 0;
    if (count == MAX_GARBAGE) {
        coord_log("peer %s (key %.8s...) sent %d malformed messages: ignored from now on, its key refused", hex,
              key ? key : "none", count);
        bf_proto_zap_deny(s->zap, key);
    }
    free(hex);
    return count;
}

static int ignored(coord_server_t *s, zframe_t *rid) {
    char *hex = zframe_strhex(rid);
    int *n = zhashx_lookup(s->garbage, hex);
    free(hex);
    return n && *n >= MAX_GARBAGE;
}

/* A prediction came back from the actor: answer it and release its in-flight slot. */
static void predict_done(coord_server_t *s, coord_predict_job_t *j) {
    coord_inflight_release(s, j->payer);
    send_reply(s, &j->rid, j->rep);
}

static void handle_message(coord_server_t *s) {
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
    const char *who = bf_msg_user_id(req);
    char insecure_key[41];
    if (!who && s->o.insecure && zframe_size(rid) == 40) {
        /* --insecure (loopback only): no CURVE handshake, so the client names its key as its
         * routing id; nothing authenticates it, which is why insecure mode is loopback-only */
        memcpy(insecure_key, zframe_data(rid), 40);
        insecure_key[40] = 0;
        who = insecure_key;
    }
    bf_msg_t *rep = coord_handle(s, &req, &rid, who);
    if (rep) send_reply(s, &rid, rep); /* else the prediction actor answers */
    bf_msg_destroy(&rep);
    bf_msg_destroy(&req);
    zframe_destroy(&rid);
}

/* ---- start-up: datasets, state, resume ----------------------------------------------------- */

static int load_datasets(coord_server_t *s, bf_err_t *err) {
    for (int i = 0; i < s->o.ndatasets; i++) {
        coord_dataset_t *d = &s->ds[s->nds];
        snprintf(d->name, sizeof d->name, "%s", s->o.dataset_names[i]);
        if (bf_dataset_load(s->o.dataset_paths[i], "train", 0, 0, 0, &d->train, err) ||
            bf_dataset_load(s->o.dataset_paths[i], "test", d->train.c, d->train.h, d->train.w, &d->test, err))
            return bf_err_prefix(err, "dataset %s: ", d->name);
        bf_dataset_channel_stats(&d->train, d->mean, d->std);
        for (int c = 0; c < d->train.c; c++)
            if (!(d->std[c] > 0)) d->std[c] = 1;
        s->nds++;
        coord_log("dataset %s: %d training / %d test images of %dx%dx%d, %d classes", d->name, d->train.n, d->test.n,
              d->train.c, d->train.h, d->train.w, d->train.classes);
    }
    return 0;
}

typedef struct {
    coord_server_t *s;
    bf_err_t err;
} load_t;

static void on_task(void *u, const coord_task_spec_t *spec, int64_t ledger_id, coord_task_state_t state, int round,
                    const char *sha, const char *result) {
    load_t *l = u;
    bf_err_t err;
    coord_task_t *t = coord_task_new(l->s, spec, ledger_id, &err);
    if (!t) {
        coord_log("task %s: cannot restore: %s", spec->id, err.msg);
        return;
    }
    t->state = state;
    t->round = round;
    t->round_start = coord_now_ms();
    snprintf(t->checkpoint_sha, sizeof t->checkpoint_sha, "%s", sha);
    snprintf(t->result_hash, sizeof t->result_hash, "%s", result);
    if (round > 0) { /* resume from the last completed round's checkpoint, verified by its digest */
        char path[4096], hex[65];
        coord_checkpoint_path(l->s->o.home, spec->id, round - 1, path, sizeof path);
        coord_file_sha(path, hex);
        bf_model_meta_t meta;
        bf_net_t *net = strcmp(hex, sha) ? NULL : bf_model_load(path, 256, l->s->o.threads, &meta, &err);
        if (!net) {
            coord_log("task %s: checkpoint %s missing or corrupt; not restored", spec->id, path);
            coord_task_free(&t);
            return;
        }
        bf_net_destroy(&t->global);
        t->global = net;
        size_t len;
        float *state = bf_agg_state(t->agg, &len);
        if (state && coord_agg_state_read(path, state, len))
            coord_log("task %s: aggregator state missing beside %s; its momentum restarts from zero", spec->id, path);
    }
    if (coord_task_add(l->s, t)) coord_task_free(&t);
    else coord_log("task %s restored: %s, %d/%d rounds done", spec->id, coord_task_state_name(state), round, spec->rounds);
}

static void on_part(void *u, const char *task, const char *key, int64_t user_id, int own, int64_t samples, int left) {
    coord_server_t *s = ((load_t *)u)->s;
    coord_task_t *t = coord_task_find(s, task);
    coord_part_t *p = t ? coord_part_add(t, key, user_id, own, own ? samples : 0) : NULL;
    if (p) p->left = left;
    /* after a restart every participant gets one liveness window to reconnect before a round
     * may close without it */
    coord_touch(s, key);
}

static void on_block(void *u, const char *task, const char *key, int32_t block) {
    coord_task_t *t = coord_task_find(((load_t *)u)->s, task);
    coord_part_t *p = t ? coord_part_find(t, key) : NULL;
    if (p && block >= 0 && block < t->blocks.nblocks) coord_block_give(t, p, block);
}

static void on_round(void *u, const char *task, int round, int participants, int64_t samples, double va, double vl,
                     double ta, double secs) {
    coord_task_t *t = coord_task_find(((load_t *)u)->s, task);
    (void)round;
    if (!t) return;
    coord_round_metric_t *n = realloc(t->metrics, sizeof *n * (t->nmetrics + 1));
    if (n) t->metrics = n, t->metrics[t->nmetrics++] = (coord_round_metric_t){participants, samples, va, vl, ta, secs};
}

static void on_contribution(void *u, const char *task, int round, const char *key, double value, int64_t samples) {
    coord_task_t *t = coord_task_find(((load_t *)u)->s, task);
    coord_part_t *p = t ? coord_part_find(t, key) : NULL;
    /* a round stored but not yet counted as done (a crash in between) reopens: its rows are
     * replaced when it closes again, so they must not count twice */
    if (p && round < t->round) p->shapley += value, p->contributed += samples;
}

static int open_router(coord_server_t *s, bf_err_t *err) {
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
        coord_log("CURVE on; server key %s", zcert_public_txt(cert));
        zcert_destroy(&cert);
    }
    if (zsock_bind(s->router, "%s", s->o.bind) < 0) return bf_err_set(err, "cannot bind %s: %s", s->o.bind, zmq_strerror(zmq_errno()));
    coord_log("listening on %s", s->o.bind);
    return 0;
}

/* Periodic work, after every poll: expired prediction holds, then each task's own. */
static void tick(coord_server_t *s) {
    if (coord_now_ms() - s->last_sweep > SWEEP_MS) {
        bf_err_t err;
        int64_t n = 0;
        s->last_sweep = coord_now_ms();
        if (bf_ledger_sweep_expired(s->ledger, &n, &err)) coord_log("ledger: sweeping expired holds: %s", err.msg);
        else if (n) coord_log("ledger: released %lld expired prediction hold(s)", (long long)n);
    }
    for (int i = 0; i < s->ntasks; i++) coord_task_tick(s, s->tasks[i]);
}

/* zhashx values are malloc'ed scalars */
static void free_value(void **p) {
    free(*p);
    *p = NULL;
}

int coord_serve(const coord_opts_t *o) {
    coord_server_t s;
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
    if (!s.seen || !s.garbage || !s.users || !s.inflight) {
        bf_err_set(&err, "out of memory");
        goto out;
    }
    zhashx_set_destructor(s.users, free_value);
    zhashx_set_destructor(s.inflight, free_value);
    zhashx_set_destructor(s.seen, free_value);
    zhashx_set_destructor(s.garbage, free_value);
    snprintf(path, sizeof path, "%s/ledger.db", o->home);
    if (!(s.ledger = bf_ledger_open(path, &err))) goto out;
    snprintf(path, sizeof path, "%s/coordinator.db", o->home);
    if (!(s.store = coord_store_open(path, &err)) || load_datasets(&s, &err)) goto out;
    load_t l = {&s, {{0}}};
    coord_load_cb_t cb = {on_task, on_part, on_block, on_round, on_contribution};
    if (coord_store_load(s.store, &cb, &l, &err) || open_router(&s, &err)) goto out;
    int64_t swept = 0;
    bf_ledger_sweep_expired(s.ledger, &swept, &err);
    s.worker = coord_worker_new();
    snprintf(path, sizeof path, "%s/ledger.db", o->home);
    s.predict = coord_predict_new(path);
    zpoller_t *poller = zpoller_new(s.router, s.worker, s.predict, NULL);
    while (!zsys_interrupted) {
        void *which = zpoller_wait(poller, 200);
        if (which == s.router) handle_message(&s);
        else if (which == s.worker) {
            coord_job_t *j = coord_worker_recv(s.worker);
            if (j) coord_round_done(&s, j);
        } else if (which == s.predict) {
            coord_predict_job_t *j = coord_predict_recv(s.predict);
            if (j) predict_done(&s, j);
            coord_predict_job_free(&j);
        } else if (zpoller_terminated(poller)) break;
        tick(&s);
    }
    zpoller_destroy(&poller);
    coord_log("shutting down");
    rc = 0;
out:
    if (rc) fprintf(stderr, "blockfed-coordinator: %s\n", err.msg);
    zactor_destroy(&s.worker);
    zactor_destroy(&s.predict);
    zactor_destroy(&s.zap);
    zsock_destroy(&s.router);
    for (int i = 0; i < s.ntasks; i++) coord_task_free(&s.tasks[i]);
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

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
#include <stdatomic.h>
#include <string.h>

#include "coord.h"

#define MAX_GARBAGE 50 /* malformed messages a peer may send before it is ignored */
#define SWEEP_MS 10000 /* how often holds left by interrupted predictions are released */
/* What one peer may have queued and not yet read. An honest client asks and waits for the answer,
 * so it has one reply in flight; a peer past these caps is not reading, and its replies are
 * dropped instead of queued (the socket thread never blocks on a send). */
#define PEER_MAX_QUEUED 64                 /* replies */
#define PEER_MAX_BYTES (160u << 20)        /* their bytes (a model frame shared by many counts fully) */
#define PEER_LARGE (64u << 10)             /* a reply this big or bigger counts as large ... */
#define PEER_MAX_LARGE 2                   /* ... and a peer may have this many large ones queued */
#define MAX_DROPPED 200    /* replies dropped for one peer before it is cut off like a garbage sender */
#define PEER_MAX 65536     /* peers tracked at once; past it the idle ones are forgotten sooner */

/* ---- peers --------------------------------------------------------------------------------- */

/* One connection (routing id). The counters of queued replies are decremented by libzmq's I/O
 * thread when it has written a frame out (the free function of a zero-copy frame), hence atomics
 * and a reference count: the peers map holds one reference, every frame libzmq still holds one. */
typedef struct {
    atomic_int refs;
    atomic_int queued;
    atomic_llong bytes;
    atomic_int large;
    int garbage; /* malformed messages */
    int dropped; /* replies dropped because the peer was over its caps */
    int64_t last_ms;
} peer_t;

static int peer_cut_off(const peer_t *p) { return p->garbage >= MAX_GARBAGE || p->dropped >= MAX_DROPPED; }

static void peer_unref(peer_t *p) {
    if (p && atomic_fetch_sub(&p->refs, 1) == 1) free(p);
}

static void peer_destructor(void **v) {
    peer_unref(*v);
    *v = NULL;
}

/* Forgets peers silent for idle_ms with nothing queued; returns how many are left. */
static size_t peers_sweep(coord_server_t *s, int64_t idle_ms) {
    int64_t now = coord_now_ms();
    zlistx_t *old = zlistx_new();
    if (!old) return zhashx_size(s->peers);
    zlistx_set_destructor(old, (zlistx_destructor_fn *)zstr_free);
    for (peer_t *p = zhashx_first(s->peers); p; p = zhashx_next(s->peers))
        if (now - p->last_ms > idle_ms && atomic_load(&p->queued) == 0)
            zlistx_add_end(old, strdup((const char *)zhashx_cursor(s->peers)));
    for (char *k = zlistx_first(old); k; k = zlistx_next(old)) zhashx_delete(s->peers, k);
    zlistx_destroy(&old);
    return zhashx_size(s->peers);
}

/* Room for a new peer: below PEER_MAX, or after forgetting the idle ones, a sweep (O(peers)) done
 * at most once a second, so a table full of active peers does not cost a scan per message. */
static int peer_room(coord_server_t *s) {
    if (zhashx_size(s->peers) < PEER_MAX) return 1;
    int64_t now = coord_now_ms();
    if (now - s->last_full_sweep < 1000) return 0;
    s->last_full_sweep = now;
    return peers_sweep(s, SWEEP_MS) < PEER_MAX;
}

/* The peer behind a routing id, created on first contact; NULL if the table is full of peers
 * that are all still active (then the message is not answered). */
static peer_t *peer_of(coord_server_t *s, zframe_t *rid) {
    char *hex = zframe_strhex(rid);
    if (!hex) return NULL;
    peer_t *p = zhashx_lookup(s->peers, hex);
    if (!p && peer_room(s) && (p = calloc(1, sizeof *p))) {
        atomic_init(&p->refs, 1);
        zhashx_insert(s->peers, hex, p);
    }
    if (p) p->last_ms = coord_now_ms();
    free(hex);
    return p;
}

/* A reply libzmq holds: when its last frame is written out (or dropped with the connection), the
 * peer's counters go down. */
typedef struct {
    peer_t *peer;
    atomic_int frames;
    size_t bytes;
    int large;
} inflight_t;

typedef struct {
    inflight_t *reply;
    bf_msg_free_fn *release;
    void *hint;
} frame_hint_t;

static void reply_done(inflight_t *r) {
    atomic_fetch_sub(&r->peer->queued, 1);
    atomic_fetch_sub(&r->peer->bytes, (long long)r->bytes);
    atomic_fetch_sub(&r->peer->large, r->large);
    peer_unref(r->peer);
    free(r);
}

static void reply_frame_free(void *data, void *hint) {
    frame_hint_t *h = hint;
    inflight_t *r = h->reply;
    h->release(data, h->hint);
    free(h);
    if (atomic_fetch_sub(&r->frames, 1) == 1) reply_done(r);
}

static void free_plain(void *data, void *hint) {
    (void)hint;
    free(data);
}

/* ---- the socket ---------------------------------------------------------------------------- */

/* Hands [rid, header, payload...] to libzmq without copying the payload and without waiting: a
 * peer whose queue is full (libzmq's EAGAIN under router_mandatory) or over its caps loses this
 * reply. Returns 0 if queued, -1 if dropped. */
static int send_frames(coord_server_t *s, zframe_t *rid, peer_t *peer, bf_msg_t *rep, uint8_t *hdr, size_t hlen) {
    size_t n = bf_msg_frame_count(rep), total = hlen;
    for (size_t i = 0; i < n; i++) {
        size_t len = 0;
        bf_msg_frame(rep, i, &len);
        total += len;
    }
    int large = total >= PEER_LARGE;
    if (atomic_load(&peer->queued) >= PEER_MAX_QUEUED || atomic_load(&peer->bytes) + (long long)total > PEER_MAX_BYTES ||
        (large && atomic_load(&peer->large) >= PEER_MAX_LARGE)) {
        free(hdr);
        return -1;
    }
    void *sock = zsock_resolve(s->router);
    if (zmq_send(sock, zframe_data(rid), zframe_size(rid), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
        free(hdr); /* EAGAIN: its queue is full; EHOSTUNREACH: it is gone */
        return -1;
    }
    /* From here libzmq takes every frame: after the routing id is accepted, a ROUTER does not
     * refuse the rest of the message. */
    inflight_t *r = calloc(1, sizeof *r);
    if (!r) {
        free(hdr);
        zmq_send(sock, "", 0, ZMQ_DONTWAIT); /* ends the started message; the peer drops it */
        return -1;
    }
    r->peer = peer;
    r->bytes = total;
    r->large = large;
    atomic_init(&r->frames, (int)n + 1);
    atomic_fetch_add(&peer->refs, 1);
    atomic_fetch_add(&peer->queued, 1);
    atomic_fetch_add(&peer->bytes, (long long)total);
    atomic_fetch_add(&peer->large, large);
    for (size_t i = 0; i <= n; i++) {
        void *data = hdr, *hint = NULL;
        size_t len = hlen;
        bf_msg_free_fn *release = free_plain;
        frame_hint_t *h = malloc(sizeof *h);
        zmq_msg_t msg;
        if (i > 0 && bf_msg_frame_take(rep, i - 1, &data, &len, &release, &hint)) data = NULL;
        if (!data || !h || zmq_msg_init_data(&msg, data, len, reply_frame_free, h)) {
            /* out of memory: the frame goes out empty (the peer rejects the reply) */
            if (data) release(data, hint);
            free(h);
            zmq_msg_init(&msg);
            zmq_send(sock, "", 0, i < n ? ZMQ_SNDMORE | ZMQ_DONTWAIT : ZMQ_DONTWAIT);
            zmq_msg_close(&msg);
            if (atomic_fetch_sub(&r->frames, 1) == 1) reply_done(r);
            continue;
        }
        *h = (frame_hint_t){r, release, hint};
        if (zmq_msg_send(&msg, sock, i < n ? ZMQ_SNDMORE | ZMQ_DONTWAIT : ZMQ_DONTWAIT) < 0) zmq_msg_close(&msg);
    }
    return 0;
}

/* A reply to the HTTP bridge: [rid, header, payload...] copied and sent without waiting (the HTTP
 * thread waits for it; one that gave up has closed its socket, and the reply is dropped). */
static void send_bridge(coord_server_t *s, zframe_t *rid, const bf_msg_t *rep) {
    bf_err_t err;
    zmsg_t *z = s->bridge && rep ? bf_msg_encode(rep, &err) : NULL;
    if (!z) return;
    zmsg_prepend(z, &(zframe_t *){zframe_dup(rid)});
    void *sock = zsock_resolve(s->bridge);
    size_t n = zmsg_size(z), i = 0;
    for (zframe_t *f = zmsg_first(z); f; f = zmsg_next(z), i++)
        if (zmq_send(sock, zframe_data(f), zframe_size(f), (i + 1 < n ? ZMQ_SNDMORE : 0) | ZMQ_DONTWAIT) < 0) break;
    zmsg_destroy(&z);
}

static void send_reply(coord_server_t *s, coord_via_t via, zframe_t **rid, bf_msg_t *rep) {
    if (via == COORD_VIA_HTTP) {
        if (*rid) send_bridge(s, *rid, rep);
        zframe_destroy(rid);
        return;
    }
    bf_err_t err;
    size_t hlen = 0;
    bf_msg_t *e = NULL;
    uint8_t *hdr = rep ? bf_msg_encode_header(rep, &hlen, &err) : NULL;
    if (!hdr) { /* a handler built something invalid: a bug, answered as INTERNAL */
        e = bf_msg_error(rep ? bf_msg_id(rep) : 0, BF_PROTO_INTERNAL, "reply failed validation");
        coord_log("internal: reply %s failed validation: %s", rep ? bf_msg_type(rep) : "?", rep ? err.msg : "no reply");
        hdr = e ? bf_msg_encode_header(e, &hlen, &err) : NULL;
        rep = e;
    }
    peer_t *peer = *rid ? peer_of(s, *rid) : NULL;
    if (hdr && peer && send_frames(s, *rid, peer, rep, hdr, hlen) && !peer_cut_off(peer)) peer->dropped++;
    else if (hdr && !peer) free(hdr);
    bf_msg_destroy(&e);
    zframe_destroy(rid);
}

/* Counts malformed messages per connection; past MAX_GARBAGE the peer gets no more answers and
 * its key may not connect again. */
static int garbage(coord_server_t *s, zframe_t *rid, const char *key) {
    peer_t *p = peer_of(s, rid);
    int count = p ? ++p->garbage : MAX_GARBAGE + 1;
    if (count == MAX_GARBAGE) {
        char *hex = zframe_strhex(rid);
        coord_log("peer %s (key %.8s...) sent %d malformed messages: ignored from now on, its key refused",
                  hex ? hex : "?", key ? key : "none", count);
        free(hex);
        bf_proto_zap_deny(s->zap, key);
    }
    return count;
}

static int ignored(coord_server_t *s, zframe_t *rid, const char *key) {
    peer_t *p = peer_of(s, rid);
    if (!p) return 1;
    if (p->dropped == MAX_DROPPED) { /* cut off once, on its next message, which names its key */
        p->dropped++;
        char *hex = zframe_strhex(rid);
        coord_log("peer %s (key %.8s...) does not read its replies (%d dropped): ignored from now on, its key refused",
                  hex ? hex : "?", key ? key : "none", MAX_DROPPED);
        free(hex);
        bf_proto_zap_deny(s->zap, key);
    }
    return peer_cut_off(p);
}

/* A prediction came back from the actor: answer it and release its in-flight slot. */
static void predict_done(coord_server_t *s, coord_predict_job_t *j) {
    coord_inflight_release(s, j->payer);
    s->fee_ops += 2; /* its hold and its settlement */
    if (j->batch_first) {
        int b = 0;
        while (b < 6 && j->batch_size > (1 << b)) b++;
        s->group_commits++, s->group_requests += j->batch_size, s->group_hist[b]++;
    }
    send_reply(s, j->via, &j->rid, j->rep);
}

/* Receives one message frame by frame, keeping at most what its type may carry: the header says
 * the type, and once the payload passes bf_proto_max_payload (or the frame count its limit) the
 * rest is read and dropped frame by frame, so an oversized message is never held whole here.
 * NULL if nothing arrived; *too_large set when frames were dropped (the rest is returned so that
 * the caller can answer with the request id). */
static zmsg_t *recv_capped(coord_server_t *s, zframe_t **rid, int *too_large) {
    *too_large = 0;
    *rid = zframe_recv(s->router);
    zmsg_t *z = *rid && zsock_rcvmore(s->router) ? zmsg_new() : NULL;
    if (!z) {
        while (zsock_rcvmore(s->router)) {
            zframe_t *f = zframe_recv(s->router);
            zframe_destroy(&f);
        }
        zframe_destroy(rid);
        return NULL;
    }
    size_t cap = 0, total = 0, nframes = 0;
    while (1) {
        int more = zsock_rcvmore(s->router);
        if (!more) break;
        zframe_t *f = zframe_recv(s->router);
        if (!f) break;
        if (nframes == 0) cap = bf_proto_max_payload(zframe_data(f), zframe_size(f));
        else total += zframe_size(f);
        nframes++;
        if (nframes > 1 && (total > cap || nframes > BF_PROTO_MAX_FRAMES)) {
            *too_large = 1;
            zframe_destroy(&f);
        } else {
            zmsg_append(z, &f);
        }
    }
    return z;
}

static void handle_message(coord_server_t *s) {
    int too_large;
    zframe_t *rid = NULL;
    zmsg_t *z = recv_capped(s, &rid, &too_large);
    if (!z) return;
    bf_proto_reject_t rej;
    bf_err_t err;
    char key[41] = "";
    const char *uid = zmsg_first(z) ? zframe_meta(zmsg_first(z), "User-Id") : NULL;
    if (uid) snprintf(key, sizeof key, "%s", uid);
    if (ignored(s, rid, key[0] ? key : NULL)) {
        zframe_destroy(&rid);
        zmsg_destroy(&z);
        return;
    }
    bf_msg_t *req = NULL;
    if (too_large) {
        /* what was kept is cut short: decode only for the request id */
        zframe_t *h = zmsg_pop(z);
        zmsg_destroy(&z);
        z = zmsg_new();
        zmsg_append(z, &h);
        bf_msg_t *head = bf_msg_decode(&z, &rej, &err);
        rej = (bf_proto_reject_t){BF_PROTO_TOO_LARGE, head ? bf_msg_id(head) : rej.id, head ? 1 : rej.has_id};
        bf_err_set(&err, "message over the size allowed for its type (%u MiB at most)", BF_PROTO_MAX_MESSAGE >> 20);
        bf_msg_destroy(&head);
    } else {
        req = bf_msg_decode(&z, &rej, &err);
    }
    if (!req) {
        if (garbage(s, rid, key[0] ? key : NULL) <= MAX_GARBAGE) {
            bf_msg_t *e = bf_msg_error_reject(&rej, &err);
            send_reply(s, COORD_VIA_ZMQ, &rid, e);
            bf_msg_destroy(&e);
        }
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
    bf_msg_t *rep = coord_handle(s, &req, &rid, who, COORD_VIA_ZMQ);
    if (rep) send_reply(s, COORD_VIA_ZMQ, &rid, rep); /* else the prediction actor answers */
    bf_msg_destroy(&rep);
    bf_msg_destroy(&req);
    zframe_destroy(&rid);
}

/* One request from the HTTP bridge: [rid, key, header, payload...]. The key is the account the
 * HTTP thread resolved the caller's credential to ("" for none); only this process's HTTP threads
 * can reach the inproc socket, so it is the same authenticated identity a CURVE handshake gives.
 * The request is decoded and answered exactly as one from the ROUTER. */
static void handle_bridge(coord_server_t *s) {
    zmsg_t *z = zmsg_recv(s->bridge);
    zframe_t *rid = z ? zmsg_pop(z) : NULL, *kf = z ? zmsg_pop(z) : NULL;
    char key[41] = "";
    if (kf && zframe_size(kf) == 40) memcpy(key, zframe_data(kf), 40);
    zframe_destroy(&kf);
    bf_proto_reject_t rej;
    bf_err_t err;
    bf_msg_t *req = rid ? bf_msg_decode(&z, &rej, &err) : NULL;
    zmsg_destroy(&z);
    if (!req) {
        bf_msg_t *e = rid ? bf_msg_error_reject(&rej, &err) : NULL;
        if (e) send_reply(s, COORD_VIA_HTTP, &rid, e);
        bf_msg_destroy(&e);
        zframe_destroy(&rid);
        return;
    }
    bf_msg_t *rep = coord_handle(s, &req, &rid, key[0] ? key : NULL, COORD_VIA_HTTP);
    if (rep) send_reply(s, COORD_VIA_HTTP, &rid, rep);
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
    /* a running task's model is built on the worker at its first tick (coord_task_tick) */
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

static void on_round(void *u, const char *task, int round, const coord_round_metric_t *m) {
    coord_task_t *t = coord_task_find(((load_t *)u)->s, task);
    if (t) coord_task_restore_round(t, round, m);
}

static void on_contribution(void *u, const char *task, int round, const char *key, double value, int64_t samples) {
    coord_task_t *t = coord_task_find(((load_t *)u)->s, task);
    if (t) coord_task_restore_contribution(t, round, key, value, samples);
}

/* The HTTPS API: the bridge's inproc ROUTER (this thread's end), then the HTTP server's threads. */
static int start_http(coord_server_t *s, bf_err_t *err) {
    s->bridge = zsock_new(ZMQ_ROUTER);
    if (!s->bridge) return bf_err_set(err, "cannot make the HTTP bridge socket");
    zsock_set_router_mandatory(s->bridge, 1);
    zsock_set_sndhwm(s->bridge, 0);
    zsock_set_rcvhwm(s->bridge, 0);
    if (zsock_bind(s->bridge, "%s", COORD_HTTP_BRIDGE) < 0) return bf_err_set(err, "cannot bind %s", COORD_HTTP_BRIDGE);
    return (s->http = coord_http_start(&s->o, s->webauth, err)) ? 0 : -1;
}

static int open_router(coord_server_t *s, bf_err_t *err) {
    char path[4096];
    s->router = zsock_new(ZMQ_ROUTER);
    if (!s->router) return bf_err_set(err, "cannot create the socket");
    zsock_set_maxmsgsize(s->router, (int)(BF_PROTO_MAX_FRAME + (1u << 20)));
    zsock_set_router_mandatory(s->router, 1);
    zsock_set_heartbeat_ivl(s->router, 5000);
    zsock_set_heartbeat_timeout(s->router, 30000);
    zsock_set_sndhwm(s->router, 1000); /* libzmq's own cap; the per-peer caps above come first */
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
    /* bounded maps: idle connections (--forget-after) and keys past the liveness window expire */
    if (coord_now_ms() - s->last_forget > (s->o.forget_ms < SWEEP_MS ? s->o.forget_ms : SWEEP_MS)) {
        s->last_forget = coord_now_ms();
        size_t before = zhashx_size(s->peers), left = peers_sweep(s, s->o.forget_ms);
        int keys = coord_seen_sweep(s);
        if (before > left || keys)
            coord_log("forgot %zu idle connection(s) and %d key(s) not heard from; %zu connection(s) and %zu key(s) tracked",
                      before - left, keys, left, zhashx_size(s->seen));
    }
    for (int i = 0; i < s->ntasks; i++) coord_task_tick(s, s->tasks[i]);
}

/* Every user's key, once: a request from a key that is not here has no account, so it costs one
 * hash lookup, never a scan of the ledger's users (REGISTER adds its key). */
static int load_users(coord_server_t *s, bf_err_t *err) {
    bf_ledger_user_t *users = NULL;
    size_t n = 0;
    if (bf_ledger_users(s->ledger, &users, &n, err)) return -1;
    for (size_t i = 0; i < n; i++) {
        int64_t *v = malloc(sizeof *v);
        if (!v) {
            free(users);
            return bf_err_set(err, "out of memory");
        }
        *v = users[i].id;
        zhashx_update(s->users, users[i].curve_key, v);
    }
    free(users);
    return 0;
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
    if (s.o.max_open_tasks <= 0) s.o.max_open_tasks = COORD_MAX_OPEN_TASKS;
    if (s.o.forget_ms <= 0) s.o.forget_ms = COORD_FORGET_MS;
    if (s.o.value_every <= 0) s.o.value_every = 1;
    if (s.o.value_backlog <= 0) s.o.value_backlog = COORD_VALUE_BACKLOG;
    if (s.o.shapley_budget <= 0) s.o.shapley_budget = 100;
    bf_err_t err = {{0}};
    char path[4096];
    int rc = 3;
    s.seen = zhashx_new();
    s.peers = zhashx_new();
    s.users = zhashx_new();
    s.strangers = zhashx_new();
    s.inflight = zhashx_new();
    s.recharged = zhashx_new();
    if (!s.seen || !s.peers || !s.users || !s.strangers || !s.inflight || !s.recharged) {
        bf_err_set(&err, "out of memory");
        goto out;
    }
    zhashx_set_destructor(s.users, free_value);
    zhashx_set_destructor(s.strangers, free_value);
    zhashx_set_destructor(s.inflight, free_value);
    zhashx_set_destructor(s.recharged, free_value);
    zhashx_set_destructor(s.seen, free_value);
    zhashx_set_destructor(s.peers, peer_destructor);
    snprintf(path, sizeof path, "%s/ledger.db", o->home);
    if (!(s.ledger = bf_ledger_open(path, &err))) goto out;
    snprintf(path, sizeof path, "%s/coordinator.db", o->home);
    if (!(s.store = coord_store_open(path, &err)) || load_users(&s, &err) || load_datasets(&s, &err)) goto out;
    snprintf(path, sizeof path, "%s/web.db", o->home);
    if (!(s.webauth = coord_webauth_open(path, &err))) goto out;
    load_t l = {&s, {{0}}};
    coord_load_cb_t cb = {on_task, on_part, on_block, on_round, on_contribution};
    if (coord_store_load(s.store, &cb, &l, &err) || open_router(&s, &err)) goto out;
    int64_t swept = 0;
    bf_ledger_sweep_expired(s.ledger, &swept, &err);
    s.worker = coord_worker_new();
    snprintf(path, sizeof path, "%s/ledger.db", o->home);
    s.predict = coord_predict_new(path);
    if (o->http && start_http(&s, &err)) goto out;
    zpoller_t *poller = zpoller_new(s.router, s.worker, s.predict, NULL);
    if (s.bridge) zpoller_add(poller, s.bridge);
    while (!zsys_interrupted) {
        void *which = zpoller_wait(poller, 200);
        if (which == s.router) handle_message(&s);
        else if (which && which == s.bridge) handle_bridge(&s);
        else if (which == s.worker) {
            coord_job_t *j = coord_worker_recv(s.worker);
            if (j) coord_job_done(&s, j);
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
    coord_http_stop(&s.http); /* its threads first: they wait on the bridge */
    zsock_destroy(&s.bridge);
    coord_webauth_close(&s.webauth);
    zactor_destroy(&s.worker);
    zactor_destroy(&s.predict);
    zactor_destroy(&s.zap);
    zsock_destroy(&s.router);
    for (int i = 0; i < s.ntasks; i++) coord_task_free(&s.tasks[i]);
    free(s.tasks);
    for (int i = 0; i < s.nds; i++) bf_dataset_free(&s.ds[i].train), bf_dataset_free(&s.ds[i].test);
    zhashx_destroy(&s.seen);
    zhashx_destroy(&s.peers);
    zhashx_destroy(&s.users);
    zhashx_destroy(&s.strangers);
    zhashx_destroy(&s.inflight);
    zhashx_destroy(&s.recharged);
    coord_store_close(&s.store);
    bf_ledger_close(&s.ledger);
    return rc;
}

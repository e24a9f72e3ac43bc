/* conn.c: the participant's connection to the coordinator (bf_conn.h): the DEALER socket and its
 * CURVE keys, requests sent with the connection's next id, the wait for the reply that matches
 * it (leftovers of timed-out requests discarded), Lazy-Pirate retries on a fresh socket, and
 * the heartbeat actor (its own socket, PING/PONG) that keeps the participant alive while a
 * round trains. */
#include "bf_conn.h"

#include <openssl/rand.h>
#include <string.h>

#include "bf_mp.h"
#include "bf_profile.h"

#define MAX_RECV_BYTES (256 << 20) /* ZMQ_MAXMSGSIZE: libzmq drops a peer that sends a bigger frame */

/* What a socket needs; copied into the heartbeat actor, which outlives nothing of ours. */
typedef struct {
    char endpoint[BF_PROFILE_MAX_ENDPOINT];
    char server_key[41], public_txt[41], secret_txt[41];
    int insecure;
    int hb_interval_ms, hb_timeout_ms;
} sock_cfg_t;

struct bf_conn {
    sock_cfg_t cfg;
    zsock_t *sock;
    uint64_t next_id, last_id;
    int backoff_ms, backoff_max_ms;
    int reconnects, discarded;
    bf_conn_status_t status;
    zactor_t *heartbeat;
};

static zsock_t *open_socket(const sock_cfg_t *cfg, int send_timeout_ms) {
    zsock_t *s = zsock_new(ZMQ_DEALER);
    if (!s) return NULL;
    zsock_set_linger(s, 0);
    zsock_set_reconnect_ivl(s, 100);
    zsock_set_reconnect_ivl_max(s, 5000);
    zsock_set_heartbeat_ivl(s, 5000);
    zsock_set_heartbeat_timeout(s, 30000);
    zsock_set_maxmsgsize(s, MAX_RECV_BYTES);
    zsock_set_sndtimeo(s, send_timeout_ms);
    if (!cfg->insecure) {
        zsock_set_curve_publickey(s, cfg->public_txt);
        zsock_set_curve_secretkey(s, cfg->secret_txt);
        zsock_set_curve_serverkey(s, cfg->server_key);
    }
    if (zsock_connect(s, "%s", cfg->endpoint)) {
        zsock_destroy(&s);
        return NULL;
    }
    return s;
}

bf_conn_t *bf_conn_new(const char *endpoint, const char *server_key, zcert_t *cert, int insecure, bf_err_t *err) {
    if (bf_check_endpoint(endpoint, err)) return NULL;
    if (insecure && !bf_endpoint_is_loopback(endpoint))
        return bf_err_set(err, "--insecure (plain TCP, no encryption or authentication) is allowed only for loopback "
                               "endpoints (tcp://127.0.0.1:PORT, tcp://localhost:PORT, ipc://, inproc://), not %s",
                          endpoint), NULL;
    if (!insecure && (!cert || bf_check_server_key(server_key, err)))
        return cert ? NULL : (bf_err_set(err, "CURVE needs the participant's certificate"), NULL);
    bf_conn_t *c = calloc(1, sizeof *c);
    if (!c) return bf_err_set(err, "out of memory"), NULL;
    snprintf(c->cfg.endpoint, sizeof c->cfg.endpoint, "%s", endpoint);
    c->cfg.insecure = insecure;
    c->cfg.hb_interval_ms = 5000;
    c->cfg.hb_timeout_ms = 30000;
    if (!insecure) {
        snprintf(c->cfg.server_key, sizeof c->cfg.server_key, "%s", server_key);
        snprintf(c->cfg.public_txt, sizeof c->cfg.public_txt, "%s", zcert_public_txt(cert));
        snprintf(c->cfg.secret_txt, sizeof c->cfg.secret_txt, "%s", zcert_secret_txt(cert));
    } else {
        fprintf(stderr, "blockfed-client: WARNING: --insecure: talking to %s over plain TCP, without encryption or "
                        "authentication; the coordinator cannot tell participants apart. Use it for local tests only.\n",
                endpoint);
    }
    c->next_id = 1;
    c->backoff_ms = 1000;
    c->backoff_max_ms = 30000;
    c->sock = open_socket(&c->cfg, 1000);
    if (!c->sock) {
        free(c);
        return bf_err_set(err, "cannot connect a socket to %s: %s", endpoint, zmq_strerror(zmq_errno())), NULL;
    }
    return c;
}

void bf_conn_destroy(bf_conn_t **p) {
    if (!p || !*p) return;
    bf_conn_t *c = *p;
    bf_conn_heartbeat_stop(c);
    zsock_destroy(&c->sock);
    memset(&c->cfg, 0, sizeof c->cfg); /* the secret key */
    free(c);
    *p = NULL;
}

void bf_conn_set_backoff(bf_conn_t *c, int initial_ms, int max_ms) {
    c->backoff_ms = initial_ms > 0 ? initial_ms : 1;
    c->backoff_max_ms = max_ms > c->backoff_ms ? max_ms : c->backoff_ms;
}

void bf_conn_set_heartbeat(bf_conn_t *c, int interval_ms, int timeout_ms) {
    c->cfg.hb_interval_ms = interval_ms > 0 ? interval_ms : 5000;
    c->cfg.hb_timeout_ms = timeout_ms > interval_ms ? timeout_ms : 6 * c->cfg.hb_interval_ms;
}

bf_conn_status_t bf_conn_status(const bf_conn_t *c) { return c->status; }
int bf_conn_reconnects(const bf_conn_t *c) { return c->reconnects; }
int bf_conn_discarded(const bf_conn_t *c) { return c->discarded; }
uint64_t bf_conn_last_id(const bf_conn_t *c) { return c->last_id; }
const char *bf_conn_endpoint(const bf_conn_t *c) { return c->cfg.endpoint; }

int bf_conn_reconnect(bf_conn_t *c, bf_err_t *err) {
    zsock_destroy(&c->sock);
    c->reconnects++;
    c->sock = open_socket(&c->cfg, 1000);
    if (!c->sock) return bf_err_set(err, "cannot reconnect to %s: %s", c->cfg.endpoint, zmq_strerror(zmq_errno()));
    return 0;
}

int bf_conn_request_key(char out[65], bf_err_t *err) {
    unsigned char b[32];
    if (RAND_bytes(b, sizeof b) != 1) return bf_err_set(err, "no random bytes for a request key");
    for (int i = 0; i < 32; i++) snprintf(out + 2 * i, 3, "%02x", b[i]);
    return 0;
}

int bf_conn_nap(int ms) {
    int64_t end = zclock_mono() + ms;
    for (int64_t now = zclock_mono(); now < end; now = zclock_mono()) {
        if (zsys_interrupted) return -1;
        zclock_sleep((int)(end - now < 100 ? end - now : 100));
    }
    return zsys_interrupted ? -1 : 0;
}

/* The encoded request with its header's `id` replaced (bf_msg_t has no id setter, and the id
 * belongs to the connection, not to whoever built the message). */
static zmsg_t *encode_with_id(const bf_msg_t *req, uint64_t id, bf_err_t *err) {
    zmsg_t *z = bf_msg_encode(req, err);
    if (!z) return NULL;
    zframe_t *h = zmsg_pop(z);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    if (!h || bf_mp_parse(zframe_data(h), zframe_size(h), BF_PROTO_MAX_DEPTH, BF_PROTO_MAX_OBJECTS, &u, err) ||
        u.data.type != MSGPACK_OBJECT_MAP) {
        msgpack_unpacked_destroy(&u);
        zframe_destroy(&h);
        zmsg_destroy(&z);
        return bf_err_set(err, "cannot re-encode the request header"), NULL;
    }
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    const msgpack_object_map *m = &u.data.via.map;
    int r = msgpack_pack_map(&pk, m->size);
    for (uint32_t i = 0; i < m->size; i++) {
        r |= msgpack_pack_object(&pk, m->ptr[i].key);
        r |= bf_mp_str_eq(&m->ptr[i].key, "id") ? msgpack_pack_uint64(&pk, id) : msgpack_pack_object(&pk, m->ptr[i].val);
    }
    zframe_t *nh = r ? NULL : zframe_new(sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    msgpack_unpacked_destroy(&u);
    zframe_destroy(&h);
    if (!nh) {
        zmsg_destroy(&z);
        return bf_err_set(err, "out of memory"), NULL;
    }
    zmsg_prepend(z, &nh);
    return z;
}

static bf_msg_t *fail(bf_conn_t *c, bf_conn_status_t st) {
    c->status = st;
    return NULL;
}

/* Waits for the reply to c->last_id on the current socket. */
static bf_msg_t *await_reply(bf_conn_t *c, int timeout_ms, bf_err_t *err) {
    int64_t deadline = zclock_mono() + timeout_ms;
    zpoller_t *poller = zpoller_new(c->sock, NULL);
    if (!poller) return bf_err_set(err, "out of memory"), fail(c, BF_CONN_ERROR);
    bf_msg_t *reply = NULL;
    while (!reply) {
        int64_t left = deadline - zclock_mono();
        if (zsys_interrupted) {
            bf_err_set(err, "interrupted");
            c->status = BF_CONN_INTERRUPTED;
            break;
        }
        if (left <= 0) {
            bf_err_set(err, "no reply from %s within %.1f s", c->cfg.endpoint, timeout_ms / 1000.0);
            c->status = BF_CONN_TIMEOUT;
            break;
        }
        /* short slices so a Ctrl-C is noticed even if libzmq does not wake us */
        if (!zpoller_wait(poller, (int)(left < 200 ? left : 200))) continue;
        zmsg_t *z = zmsg_recv(c->sock);
        if (!z) continue;
        bf_proto_reject_t rej = {0};
        bf_err_t derr;
        bf_msg_t *m = bf_msg_decode(&z, &rej, &derr);
        if (!m) {
            if (rej.has_id && rej.id != c->last_id) {
                c->discarded++; /* garbage for an old request: not ours to judge now */
                continue;
            }
            bf_err_set(err, "invalid reply from the coordinator: %s", derr.msg);
            c->status = BF_CONN_BAD_REPLY;
            break;
        }
        int is_error = !strcmp(bf_msg_type(m), "ERROR");
        if (bf_msg_id(m) != c->last_id && !(is_error && bf_msg_id(m) == 0)) {
            c->discarded++;
            bf_msg_destroy(&m);
            continue;
        }
        if (bf_proto_is_request(bf_msg_type(m))) {
            bf_err_set(err, "invalid reply from the coordinator: %s is a request type", bf_msg_type(m));
            bf_msg_destroy(&m);
            c->status = BF_CONN_BAD_REPLY;
            break;
        }
        reply = m;
        c->status = BF_CONN_OK;
    }
    zpoller_destroy(&poller);
    return reply;
}

static bf_msg_t *send_and_wait(bf_conn_t *c, zmsg_t *wire, int timeout_ms, bf_err_t *err) {
    zmsg_t *copy = zmsg_dup(wire);
    if (!copy) return bf_err_set(err, "out of memory"), fail(c, BF_CONN_ERROR);
    if (zmsg_send(&copy, c->sock)) {
        /* the send queue is full (no peer for a long time): same as no reply */
        zmsg_destroy(&copy);
        bf_err_set(err, "cannot send to %s: %s", c->cfg.endpoint, zmq_strerror(zmq_errno()));
        return fail(c, zsys_interrupted ? BF_CONN_INTERRUPTED : BF_CONN_TIMEOUT);
    }
    return await_reply(c, timeout_ms, err);
}

bf_msg_t *bf_conn_call(bf_conn_t *c, bf_msg_t **req, int timeout_ms, int retries, bf_err_t *err) {
    if (!req || !*req) return bf_err_set(err, "no request"), fail(c, BF_CONN_ERROR);
    c->last_id = c->next_id++;
    zmsg_t *wire = encode_with_id(*req, c->last_id, err);
    bf_msg_destroy(req);
    if (!wire) return fail(c, BF_CONN_ERROR);
    bf_msg_t *reply = NULL;
    int backoff = c->backoff_ms;
    for (int attempt = 0;; attempt++) {
        reply = send_and_wait(c, wire, timeout_ms, err);
        if (reply || c->status != BF_CONN_TIMEOUT || attempt >= retries) break;
        /* Lazy Pirate: the old socket may hold a dead connection; start over on a new one */
        zsock_destroy(&c->sock);
        if (bf_conn_nap(backoff)) {
            bf_err_set(err, "interrupted");
            c->status = BF_CONN_INTERRUPTED;
            break;
        }
        if (bf_conn_reconnect(c, err)) {
            c->status = BF_CONN_ERROR;
            break;
        }
        backoff = backoff * 2 > c->backoff_max_ms ? c->backoff_max_ms : backoff * 2;
    }
    zmsg_destroy(&wire);
    if (!c->sock) {
        bf_err_t e2;
        if (bf_conn_reconnect(c, &e2)) c->status = BF_CONN_ERROR;
    }
    return reply;
}

bf_msg_t *bf_conn_request(bf_conn_t *c, bf_msg_t **req, int timeout_ms, bf_err_t *err) {
    return bf_conn_call(c, req, timeout_ms, 0, err);
}

/* ---- heartbeat actor --------------------------------------------------------------------- */

static void send_ping(zsock_t *s, uint64_t id) {
    bf_msg_t *m = bf_msg_new("PING", id);
    bf_err_t err;
    zmsg_t *z = m ? bf_msg_encode(m, &err) : NULL;
    if (z && zmsg_send(&z, s)) zmsg_destroy(&z);
    bf_msg_destroy(&m);
}

/* 1 if the message on s is a valid PONG. */
static int recv_pong(zsock_t *s) {
    zmsg_t *z = zmsg_recv(s);
    if (!z) return 0;
    bf_err_t err;
    bf_msg_t *m = bf_msg_decode(&z, NULL, &err);
    int ok = m && !strcmp(bf_msg_type(m), "PONG");
    bf_msg_destroy(&m);
    return ok;
}

static void heartbeat_actor(zsock_t *pipe, void *args) {
    sock_cfg_t *cfg = args;
    zsock_t *s = open_socket(cfg, 0);
    zsock_signal(pipe, 0);
    zpoller_t *poller = zpoller_new(pipe, NULL);
    if (s) zpoller_add(poller, s);
    zpoller_set_nonstop(poller, true); /* only $TERM from the owner ends us, not SIGINT */
    uint64_t id = 1;
    int pongs = 0;
    int64_t next = zclock_mono(), last_heard = zclock_mono();
    for (;;) {
        int64_t now = zclock_mono();
        if (now >= next && s) {
            send_ping(s, id++);
            next = now + cfg->hb_interval_ms;
        }
        if (s && now - last_heard > cfg->hb_timeout_ms) {
            /* silent peer: a fresh socket, like bf_conn_call would */
            zpoller_remove(poller, s);
            zsock_destroy(&s);
            s = open_socket(cfg, 0);
            if (s) zpoller_add(poller, s);
            last_heard = now;
        }
        int64_t wait = next - zclock_mono();
        void *which = zpoller_wait(poller, (int)(wait > 0 ? (wait < 1000 ? wait : 1000) : 0));
        if (which == pipe) {
            char *cmd = zstr_recv(pipe);
            int term = !cmd || !strcmp(cmd, "$TERM");
            if (cmd && !strcmp(cmd, "PONGS")) zstr_sendf(pipe, "%d", pongs);
            zstr_free(&cmd);
            if (term) break;
        } else if (which && which == s && recv_pong(s)) {
            pongs++;
            last_heard = zclock_mono();
        }
    }
    zpoller_destroy(&poller);
    zsock_destroy(&s);
    memset(cfg, 0, sizeof *cfg);
    free(cfg);
}

int bf_conn_heartbeat_start(bf_conn_t *c, bf_err_t *err) {
    if (c->heartbeat) return 0;
    sock_cfg_t *cfg = malloc(sizeof *cfg);
    if (!cfg) return bf_err_set(err, "out of memory");
    *cfg = c->cfg;
    c->heartbeat = zactor_new(heartbeat_actor, cfg); /* the actor frees cfg */
    if (!c->heartbeat) {
        free(cfg);
        return bf_err_set(err, "cannot start the heartbeat thread");
    }
    return 0;
}

void bf_conn_heartbeat_stop(bf_conn_t *c) { zactor_destroy(&c->heartbeat); }

int bf_conn_heartbeat_pongs(bf_conn_t *c) {
    if (!c->heartbeat) return 0;
    if (zstr_send(c->heartbeat, "PONGS")) return 0;
    char *s = zstr_recv(c->heartbeat);
    int n = s ? atoi(s) : 0;
    zstr_free(&s);
    return n;
}

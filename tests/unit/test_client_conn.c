/* test_client_conn.c: bf_conn against a real ROUTER (CURVE + bf_proto_zap) in a thread:
 * increasing request ids, stale replies discarded, garbage and request-typed replies refused,
 * timeout + socket rebuild + resend (Lazy Pirate), the wrong server key gets no reply (timeout,
 * no crash), the heartbeat actor's PING/PONG, and the insecure-endpoint rule. */
#include <stdlib.h>

#include "bf_conn.h"
#include "test.h"

typedef struct {
    zcert_t *cert; /* NULL: plain TCP (NULL mechanism) */
    int port;
} srv_args_t;

static void reply(zsock_t *r, zframe_t *rid, bf_msg_t *m) {
    bf_err_t err;
    zmsg_t *z = bf_msg_encode(m, &err);
    bf_msg_destroy(&m);
    if (!z) return;
    zframe_t *copy = zframe_dup(rid);
    zmsg_prepend(z, &copy);
    zmsg_send(&z, r);
}

/* The behaviour per request type:
 *   PING -> PONG; HELLO -> WELCOME {user: the caller's User-Id prefix};
 *   TASK_LIST: the first one is answered after 400 ms (slow), later ones at once;
 *   ASSETS_GET: two replies with other ids first (stale), then the right one;
 *   TASK_STATUS: an undecodable frame first; HISTORY_GET: never answered;
 *   MODEL_GET: answered with a request type (PING) carrying the right id. */
static void handle(zsock_t *r, zframe_t *rid, const bf_msg_t *q, int *slow_done) {
    const char *t = bf_msg_type(q);
    uint64_t id = bf_msg_id(q);
    if (!strcmp(t, "PING")) reply(r, rid, bf_msg_new("PONG", id));
    else if (!strcmp(t, "HELLO")) {
        bf_msg_t *m = bf_msg_new("WELCOME", id);
        bf_msg_set_str(m, "server", "test");
        const char *uid = bf_msg_user_id(q);
        if (uid) bf_msg_set_str(m, "user", "curve");
        reply(r, rid, m);
    } else if (!strcmp(t, "TASK_LIST")) {
        if (!*slow_done) zclock_sleep(400), *slow_done = 1;
        bf_msg_t *m = bf_msg_new("TASKS", id);
        uint8_t empty_array = 0x90;
        bf_msg_set_any(m, "tasks", &empty_array, 1);
        reply(r, rid, m);
    } else if (!strcmp(t, "ASSETS_GET")) {
        uint8_t empty_map = 0x80;
        const uint64_t others[2] = {id + 1000, id - 1}; /* a future id and the previous request's */
        for (int i = 0; i < 2; i++) {
            bf_msg_t *m = bf_msg_new("ASSETS", others[i]);
            bf_msg_set_any(m, "assets", &empty_map, 1);
            reply(r, rid, m);
        }
        bf_msg_t *m = bf_msg_new("ASSETS", id);
        bf_msg_set_any(m, "assets", &empty_map, 1);
        reply(r, rid, m);
    } else if (!strcmp(t, "TASK_STATUS")) {
        zmsg_t *z = zmsg_new();
        zframe_t *copy = zframe_dup(rid);
        zmsg_append(z, &copy);
        zmsg_addmem(z, "\xdd\xff\xff\xff\xff", 5); /* a huge declared array: must not allocate */
        zmsg_send(&z, r);
    } else if (!strcmp(t, "MODEL_GET")) {
        reply(r, rid, bf_msg_new("PING", id));
    }
}

static void server_actor(zsock_t *pipe, void *args) {
    srv_args_t *a = args;
    zsock_t *r = zsock_new(ZMQ_ROUTER);
    zsock_set_linger(r, 0);
    if (a->cert) {
        zcert_apply(a->cert, r);
        zsock_set_curve_server(r, 1);
    }
    zsock_set_zap_domain(r, "global");
    a->port = zsock_bind(r, "tcp://127.0.0.1:*");
    zsock_signal(pipe, 0);
    zpoller_t *p = zpoller_new(pipe, r, NULL);
    char ids[4096] = "";
    int slow_done = 0;
    for (;;) {
        void *w = zpoller_wait(p, -1);
        if (w == pipe) {
            char *cmd = zstr_recv(pipe);
            int term = !cmd || !strcmp(cmd, "$TERM");
            if (cmd && !strcmp(cmd, "IDS")) zstr_send(pipe, ids);
            zstr_free(&cmd);
            if (term) break;
        } else if (w == r) {
            zmsg_t *z = zmsg_recv(r);
            zframe_t *rid = zmsg_pop(z);
            bf_err_t err;
            bf_msg_t *q = bf_msg_decode(&z, NULL, &err);
            if (q && strcmp(bf_msg_type(q), "PING")) {
                size_t n = strlen(ids);
                snprintf(ids + n, sizeof ids - n, "%s%s:%llu", n ? " " : "", bf_msg_type(q),
                         (unsigned long long)bf_msg_id(q));
            }
            if (q) handle(r, rid, q, &slow_done);
            bf_msg_destroy(&q);
            zframe_destroy(&rid);
        } else
            break;
    }
    zpoller_destroy(&p);
    zsock_destroy(&r);
}

static char *server_ids(zactor_t *srv) {
    zstr_send(srv, "IDS");
    return zstr_recv(srv);
}

static bf_msg_t *req(const char *type) {
    bf_msg_t *m = bf_msg_new(type, 77); /* any id: the connection assigns its own */
    if (!strcmp(type, "TASK_STATUS") || !strcmp(type, "MODEL_GET")) bf_msg_set_str(m, "task", "t1");
    return m;
}

static void test_curve(void) {
    bf_err_t err;
    zactor_t *zap = bf_proto_zap_new(&err);
    CHECK_MSG(zap != NULL, "%s", err.msg);
    srv_args_t a = {.cert = zcert_new()};
    zactor_t *srv = zactor_new(server_actor, &a);
    char ep[64];
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", a.port);
    zcert_t *me = zcert_new();
    bf_conn_t *c = bf_conn_new(ep, zcert_public_txt(a.cert), me, 0, &err);
    CHECK_MSG(c != NULL, "%s", err.msg);
    if (!c) return;
    bf_conn_set_backoff(c, 50, 200);

    /* ids 1, 2, 3 whatever the message was built with */
    const char *seq[] = {"HELLO", "HELLO", "HELLO"};
    for (int i = 0; i < 3; i++) {
        bf_msg_t *m = req(seq[i]);
        bf_msg_t *r = bf_conn_request(c, &m, 3000, &err);
        CHECK_MSG(r && !strcmp(bf_msg_type(r), "WELCOME") && bf_msg_id(r) == (uint64_t)i + 1, "%s", r ? "" : err.msg);
        CHECK(r && bf_msg_str(r, "user")); /* the server saw a CURVE User-Id */
        CHECK(m == NULL);
        bf_msg_destroy(&r);
    }
    CHECK(bf_conn_last_id(c) == 3);

    /* stale replies (other ids) are discarded; the right one is returned */
    bf_msg_t *m = req("ASSETS_GET");
    bf_msg_t *r = bf_conn_request(c, &m, 3000, &err);
    CHECK(r && !strcmp(bf_msg_type(r), "ASSETS") && bf_msg_id(r) == 4);
    CHECK_MSG(bf_conn_discarded(c) == 2, "discarded %d", bf_conn_discarded(c));
    bf_msg_destroy(&r);

    /* garbage and request-typed replies: an error, no crash */
    m = req("TASK_STATUS");
    r = bf_conn_request(c, &m, 3000, &err);
    CHECK(!r && bf_conn_status(c) == BF_CONN_BAD_REPLY);
    m = req("MODEL_GET");
    r = bf_conn_request(c, &m, 3000, &err);
    CHECK(!r && bf_conn_status(c) == BF_CONN_BAD_REPLY && strstr(err.msg, "request type"));

    /* never answered: a timeout */
    double t0 = bf_now();
    m = req("HISTORY_GET");
    r = bf_conn_request(c, &m, 300, &err);
    CHECK(!r && bf_conn_status(c) == BF_CONN_TIMEOUT && strstr(err.msg, "no reply"));
    CHECK(bf_now() - t0 < 1.5);

    /* Lazy Pirate: the first TASK_LIST is answered after 400 ms; with a 300 ms limit the client
     * gives up, rebuilds its socket, resends (same id) and gets the answer on the new socket */
    int before = bf_conn_reconnects(c);
    m = req("TASK_LIST");
    r = bf_conn_call(c, &m, 300, 3, &err);
    CHECK_MSG(r && !strcmp(bf_msg_type(r), "TASKS"), "%s", r ? "" : err.msg);
    CHECK(bf_conn_reconnects(c) == before + 1);
    uint64_t id = bf_conn_last_id(c);
    bf_msg_destroy(&r);
    /* and the connection works normally afterwards */
    m = req("HELLO");
    r = bf_conn_request(c, &m, 3000, &err);
    CHECK(r && bf_msg_id(r) == id + 1);
    bf_msg_destroy(&r);
    char *ids = server_ids(srv);
    char want[64];
    snprintf(want, sizeof want, "TASK_LIST:%llu TASK_LIST:%llu", (unsigned long long)id, (unsigned long long)id);
    CHECK_MSG(ids && strstr(ids, want), "server saw %s", ids ? ids : "(null)");
    CHECK(ids && strstr(ids, "HELLO:1 HELLO:2 HELLO:3 ASSETS_GET:4"));
    zstr_free(&ids);

    /* heartbeat actor: PING every 100 ms on its own CURVE socket */
    bf_conn_set_heartbeat(c, 100, 1000);
    CHECK(!bf_conn_heartbeat_start(c, &err));
    zclock_sleep(600);
    int pongs = bf_conn_heartbeat_pongs(c);
    CHECK_MSG(pongs >= 3, "%d pongs", pongs);
    bf_conn_heartbeat_stop(c);
    bf_conn_heartbeat_stop(c); /* idempotent */
    bf_conn_destroy(&c);
    CHECK(c == NULL);

    /* the wrong server key: the handshake fails, nothing comes back, no crash */
    zcert_t *other = zcert_new();
    c = bf_conn_new(ep, zcert_public_txt(other), me, 0, &err);
    bf_conn_set_backoff(c, 50, 100);
    m = req("HELLO");
    r = bf_conn_call(c, &m, 300, 1, &err);
    CHECK(!r && bf_conn_status(c) == BF_CONN_TIMEOUT && bf_conn_reconnects(c) == 1);
    bf_conn_destroy(&c);
    zcert_destroy(&other);

    /* CURVE needs a certificate and a valid server key */
    CHECK(bf_conn_new(ep, "short", me, 0, &err) == NULL);
    CHECK(bf_conn_new(ep, zcert_public_txt(a.cert), NULL, 0, &err) == NULL);

    zactor_destroy(&srv);
    zcert_destroy(&a.cert);
    zcert_destroy(&me);
    zactor_destroy(&zap);
}

static void test_insecure(void) {
    bf_err_t err;
    CHECK(bf_conn_new("tcp://10.1.2.3:7700", NULL, NULL, 1, &err) == NULL && strstr(err.msg, "loopback"));
    CHECK(bf_conn_new("tcp://example.org:7700", NULL, NULL, 1, &err) == NULL);
    srv_args_t a = {.cert = NULL};
    zactor_t *srv = zactor_new(server_actor, &a);
    char ep[64];
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", a.port);
    bf_conn_t *c = bf_conn_new(ep, NULL, NULL, 1, &err); /* warns on stderr */
    CHECK_MSG(c != NULL, "%s", err.msg);
    bf_msg_t *m = req("HELLO");
    bf_msg_t *r = c ? bf_conn_request(c, &m, 3000, &err) : NULL;
    CHECK(r && !strcmp(bf_msg_type(r), "WELCOME") && !bf_msg_has(r, "user")); /* no key, no User-Id */
    bf_msg_destroy(&r);
    bf_msg_destroy(&m);
    bf_conn_destroy(&c);
    zactor_destroy(&srv);
}

int main(void) {
    test_curve();
    test_insecure();
    return bf_test_done("test_client_conn");
}

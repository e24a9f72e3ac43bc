/* test_proto_curve: the wire protocol over a real ROUTER/DEALER pair on tcp://127.0.0.1 with
 * CURVE: what czmq's zauth gives (no identity), what bf_proto_zap gives (the client's key as
 * "User-Id", per connection, read by bf_msg_decode), that a wrong server key gets nothing
 * through, plain TCP without identity, and that bf_proto_zap_deny refuses a key from the moment
 * it returns while other keys and open connections carry on. */
#include <czmq.h>
#include <msgpack.h>
#include <stdint.h>

#include "bf_proto.h"
#include "test.h"

/* ---- two messages with payload frames ----------------------------------------------------- */

static void add_floats(bf_msg_t *m, size_t n, float base) {
    float v[16];
    for (size_t i = 0; i < n; i++) v[i] = base + (float)i * 0.5f;
    CHECK(n <= 16 && bf_msg_add_f32(m, v, n) == 0);
}

/* An UPDATE with two f32 frames: 1.0, 1.5, ... (10 floats) and -2.0, -1.5, ... (4 floats). */
static bf_msg_t *update_msg(void) {
    bf_msg_t *m = bf_msg_new("UPDATE", 42);
    int r = !m;
    if (m) {
        r |= bf_msg_set_str(m, "task", "t1") | bf_msg_set_uint(m, "round", 3);
        r |= bf_msg_set_uint(m, "samples", 6000) | bf_msg_set_double(m, "loss", 0.4375);
        add_floats(m, 10, 1.0f);
        add_floats(m, 4, -2.0f);
    }
    CHECK_MSG(r == 0, "UPDATE");
    return m;
}

/* A ROUND with two f32 frames: 0.5 .. 3.0 (6 floats) and 3.0, 3.5. */
static bf_msg_t *round_msg(void) {
    bf_msg_t *m = bf_msg_new("ROUND", 42);
    int r = !m;
    if (m) {
        r |= bf_msg_set_str(m, "task", "t1") | bf_msg_set_uint(m, "round", 0) | bf_msg_set_uint(m, "rounds", 5);
        r |= bf_msg_set_str(m, "arch", "resnet8") | bf_msg_set_uint(m, "c", 1) | bf_msg_set_uint(m, "h", 28);
        r |= bf_msg_set_uint(m, "w", 28) | bf_msg_set_uint(m, "classes", 10) | bf_msg_set_uint(m, "local_epochs", 1);
        r |= bf_msg_set_uint(m, "batch", 32) | bf_msg_set_double(m, "lr", 10) | bf_msg_set_double(m, "mu", 0);
        r |= bf_msg_set_uint(m, "seed", 7) | bf_msg_set_uint(m, "deadline_ms", 1700000000000ull);
        r |= bf_msg_set_any(m, "preprocess", "\x81\xa4norm\xc3", 7); /* {"norm": true} */
        add_floats(m, 6, 0.5f);
        add_floats(m, 2, 3.0f);
    }
    CHECK_MSG(r == 0, "ROUND");
    return m;
}

/* ---- CURVE over loopback TCP ------------------------------------------------------------- */

static zmsg_t *recv_timeout(zsock_t *s, int ms) {
    zpoller_t *p = zpoller_new(s, NULL);
    zmsg_t *z = zpoller_wait(p, ms) ? zmsg_recv(s) : NULL;
    zpoller_destroy(&p);
    return z;
}

/* A CURVE ROUTER on an ephemeral loopback port; *port set. */
static zsock_t *curve_server(zcert_t *cert, int *port) {
    zsock_t *srv = zsock_new(ZMQ_ROUTER);
    zcert_apply(cert, srv);
    zsock_set_curve_server(srv, 1);
    zsock_set_zap_domain(srv, "global");
    zsock_set_maxmsgsize(srv, (int)BF_PROTO_MAX_FRAME);
    *port = zsock_bind(srv, "tcp://127.0.0.1:*");
    CHECK(*port > 0);
    return srv;
}

static zsock_t *curve_client(zcert_t *cert, const char *server_key, int port) {
    zsock_t *cli = zsock_new(ZMQ_DEALER);
    zcert_apply(cert, cli);
    zsock_set_curve_serverkey(cli, server_key);
    CHECK(zsock_connect(cli, "tcp://127.0.0.1:%d", port) == 0);
    return cli;
}

/* Sends m (not consumed) from cli; returns what srv receives, routing id still first. */
static zmsg_t *send_and_receive(const bf_msg_t *m, zsock_t *cli, zsock_t *srv, int ms) {
    bf_err_t err;
    zmsg_t *z = bf_msg_encode(m, &err);
    CHECK_MSG(z && zmsg_send(&z, cli) == 0, "%s", err.msg);
    zmsg_destroy(&z);
    return recv_timeout(srv, ms);
}

/* czmq's zauth with CURVE_ALLOW_ANY: encryption works, but User-Id comes back empty. */
static void test_curve_zauth_allow_any(void) {
    zactor_t *auth = zactor_new(zauth, NULL);
    zstr_sendx(auth, "CURVE", CURVE_ALLOW_ANY, NULL);
    zsock_wait(auth);
    zcert_t *scert = zcert_new(), *ccert = zcert_new();
    int port;
    zsock_t *srv = curve_server(scert, &port), *cli = curve_client(ccert, zcert_public_txt(scert), port);
    bf_msg_t *hello = bf_msg_new("HELLO", 1);
    zmsg_t *z = send_and_receive(hello, cli, srv, 5000);
    zframe_t *rid = z ? zmsg_pop(z) : NULL;
    const char *uid = z ? zframe_meta(zmsg_first(z), "User-Id") : NULL;
    printf("test_proto_curve: zauth CURVE_ALLOW_ANY: User-Id = %s%s%s\n", uid ? "'" : "", uid ? uid : "NULL", uid ? "'" : "");
    CHECK(z != NULL && uid && uid[0] == 0);
    bf_msg_t *m = z ? bf_msg_decode(&z, NULL, NULL) : NULL;
    CHECK(m && bf_msg_user_id(m) == NULL);
    bf_msg_destroy(&m);
    zframe_destroy(&rid);
    zmsg_destroy(&z);
    bf_msg_destroy(&hello);
    zsock_destroy(&cli), zsock_destroy(&srv);
    zcert_destroy(&scert), zcert_destroy(&ccert);
    zactor_destroy(&auth);
}

/* bf_proto_zap: every key accepted, User-Id = the client's Z85 public key, per connection. */
static void test_curve_bf_zap(void) {
    CHECK(zsys_has_curve());
    bf_err_t err;
    zactor_t *zap = bf_proto_zap_new(&err);
    CHECK_MSG(zap != NULL, "%s", err.msg);
    zactor_t *second = bf_proto_zap_new(&err);
    CHECK(second == NULL && strstr(err.msg, "cannot bind"));
    zcert_t *scert = zcert_new(), *c1 = zcert_new(), *c2 = zcert_new();
    int port;
    zsock_t *srv = curve_server(scert, &port);
    zsock_t *cli1 = curve_client(c1, zcert_public_txt(scert), port), *cli2 = curve_client(c2, zcert_public_txt(scert), port);

    /* client 1 -> server: an UPDATE with two f32 frames */
    bf_msg_t *up = update_msg();
    zmsg_t *z = send_and_receive(up, cli1, srv, 5000);
    CHECK(z != NULL && zmsg_size(z) == 4);
    zframe_t *rid = z ? zmsg_pop(z) : NULL;
    /* After a poll, only the frames after the routing id carry the metadata. */
    const char *uid_rid = rid ? zframe_meta(rid, "User-Id") : NULL;
    const char *uid_hdr = z ? zframe_meta(zmsg_first(z), "User-Id") : NULL;
    const char *uid_last = z ? zframe_meta(zmsg_last(z), "User-Id") : NULL;
    printf("test_proto_curve: bf_proto_zap: User-Id = '%s' (routing-id frame: %s), client key = '%s'\n",
           uid_hdr ? uid_hdr : "(null)", uid_rid ? uid_rid : "NULL", zcert_public_txt(c1));
    CHECK(uid_hdr && strlen(uid_hdr) == 40 && !strcmp(uid_hdr, zcert_public_txt(c1)));
    CHECK(uid_last && !strcmp(uid_last, zcert_public_txt(c1)));
    bf_proto_reject_t rej;
    bf_msg_t *req = bf_msg_decode(&z, &rej, &err);
    const char *uid = req ? bf_msg_user_id(req) : NULL;
    CHECK(uid && !strcmp(uid, zcert_public_txt(c1)));
    CHECK_MSG(req && !strcmp(bf_msg_type(req), "UPDATE") && bf_proto_is_request(bf_msg_type(req)), "%s", err.msg);
    float p[10];
    CHECK(req && bf_msg_frame_f32(req, 0, p, 10) == 0 && p[1] == 1.5f);

    /* client 2 is told apart by its own key */
    bf_msg_t *hello = bf_msg_new("HELLO", 7);
    zmsg_t *z2 = send_and_receive(hello, cli2, srv, 5000);
    zframe_t *rid2 = z2 ? zmsg_pop(z2) : NULL;
    bf_msg_t *req2 = z2 ? bf_msg_decode(&z2, NULL, &err) : NULL;
    const char *uid2 = req2 ? bf_msg_user_id(req2) : NULL;
    CHECK(uid2 && !strcmp(uid2, zcert_public_txt(c2)) && uid && strcmp(uid2, uid));
    bf_msg_destroy(&req2);
    zframe_destroy(&rid2);

    /* server -> client 1: a ROUND reply echoing the id, routed back by the routing id */
    bf_msg_t *rep = round_msg();
    bf_msg_set_uint(rep, "round", 4);
    zmsg_t *rz = bf_msg_encode(rep, &err);
    CHECK_MSG(rz != NULL, "%s", err.msg);
    if (rz && rid) zmsg_prepend(rz, &rid);
    CHECK(rz && zmsg_send(&rz, srv) == 0);
    zmsg_destroy(&rz);
    z = recv_timeout(cli1, 5000);
    bf_msg_t *got = z ? bf_msg_decode(&z, &rej, &err) : NULL;
    float back[6];
    CHECK(got && !strcmp(bf_msg_type(got), "ROUND") && bf_msg_id(got) == bf_msg_id(up) && bf_msg_uint(got, "round", 0) == 4);
    CHECK(got && bf_msg_frame_f32(got, 0, back, 6) == 0 && back[5] == 3.0f);

    /* A client that trusts the wrong server key gets nothing through (no man in the middle). */
    zcert_t *other = zcert_new();
    zsock_t *mitm = curve_client(c1, zcert_public_txt(other), port);
    zsock_set_sndtimeo(mitm, 100);
    z = send_and_receive(hello, mitm, srv, 300);
    CHECK(z == NULL);
    zmsg_destroy(&z);

    /* Plain TCP with a ZAP domain (what --insecure would do): NULL mechanism, no identity. */
    zsock_t *plain = zsock_new(ZMQ_ROUTER);
    zsock_set_zap_domain(plain, "global");
    int pport = zsock_bind(plain, "tcp://127.0.0.1:*");
    zsock_t *pc = zsock_new(ZMQ_DEALER);
    zsock_connect(pc, "tcp://127.0.0.1:%d", pport);
    z = send_and_receive(hello, pc, plain, 5000);
    zframe_t *prid = z ? zmsg_pop(z) : NULL;
    const char *puid = z ? zframe_meta(zmsg_first(z), "User-Id") : NULL;
    printf("test_proto_curve: plain TCP (NULL mechanism): User-Id = %s%s%s\n", puid ? "'" : "", puid ? puid : "NULL", puid ? "'" : "");
    CHECK(z != NULL && (puid == NULL || puid[0] == 0));
    bf_msg_t *pm = z ? bf_msg_decode(&z, NULL, NULL) : NULL;
    CHECK(pm && bf_msg_user_id(pm) == NULL);
    bf_msg_destroy(&pm);
    zframe_destroy(&prid);

    zsock_destroy(&plain), zsock_destroy(&pc), zsock_destroy(&mitm);
    bf_msg_destroy(&hello), bf_msg_destroy(&got), bf_msg_destroy(&rep), bf_msg_destroy(&req), bf_msg_destroy(&up);
    zframe_destroy(&rid);
    zcert_destroy(&other), zcert_destroy(&scert), zcert_destroy(&c1), zcert_destroy(&c2);
    zsock_destroy(&cli1), zsock_destroy(&cli2), zsock_destroy(&srv);
    zactor_destroy(&zap);
}

/* bf_proto_zap_deny is acknowledged: a handshake that starts right after it returns is refused;
 * a connection opened before stays; other keys still get in; bad arguments change nothing. */
static void test_zap_deny(void) {
    bf_err_t err;
    zactor_t *zap = bf_proto_zap_new(&err);
    CHECK_MSG(zap != NULL, "%s", err.msg);
    zcert_t *scert = zcert_new(), *bad = zcert_new(), *good = zcert_new();
    int port;
    zsock_t *srv = curve_server(scert, &port);
    zsock_t *before = curve_client(bad, zcert_public_txt(scert), port);
    bf_msg_t *hello = bf_msg_new("HELLO", 3);
    zmsg_t *z = send_and_receive(hello, before, srv, 5000);
    CHECK(z != NULL);
    zmsg_destroy(&z);

    bf_proto_zap_deny(zap, zcert_public_txt(bad));
    bf_proto_zap_deny(zap, "too-short");      /* not a key: ignored */
    bf_proto_zap_deny(zap, NULL);
    bf_proto_zap_deny(NULL, zcert_public_txt(good));

    zsock_t *after = curve_client(bad, zcert_public_txt(scert), port);
    zsock_set_sndtimeo(after, 100);
    z = send_and_receive(hello, after, srv, 500);
    CHECK_MSG(z == NULL, "a denied key got a message through");
    zmsg_destroy(&z);

    z = send_and_receive(hello, before, srv, 5000); /* the connection that was already open */
    CHECK(z != NULL);
    zmsg_destroy(&z);

    zsock_t *other = curve_client(good, zcert_public_txt(scert), port);
    z = send_and_receive(hello, other, srv, 5000);
    zframe_t *rid = z ? zmsg_pop(z) : NULL;
    bf_msg_t *m = z ? bf_msg_decode(&z, NULL, &err) : NULL;
    CHECK(m && bf_msg_user_id(m) && !strcmp(bf_msg_user_id(m), zcert_public_txt(good)));
    bf_msg_destroy(&m);
    zframe_destroy(&rid);

    bf_msg_destroy(&hello);
    zsock_destroy(&before), zsock_destroy(&after), zsock_destroy(&other), zsock_destroy(&srv);
    zcert_destroy(&scert), zcert_destroy(&bad), zcert_destroy(&good);
    zactor_destroy(&zap);
}

int main(void) {
    double t0 = bf_now();
    test_curve_zauth_allow_any();
    test_curve_bf_zap();
    test_zap_deny();
    printf("test_proto_curve: %.2f s\n", bf_now() - t0);
    return bf_test_done("test_proto_curve");
}

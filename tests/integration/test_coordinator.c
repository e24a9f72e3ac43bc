/* test_coordinator.c: a real coordinator process on loopback with CURVE, driven by three
 * participants (each with its own key) that train locally with the real engine:
 *  - a task completes 3 rounds, and every round's checkpoint equals the sample-weighted average
 *    of the models the participants returned (checked numerically, BN buffers included);
 *  - a key cannot act for another account (unregistered key, someone else's task or block);
 *  - a hostile peer sending random bytes and malformed msgpack during a round gets errors and
 *    does not disturb the round;
 *  - stale and duplicate updates are refused; the ledger verifies and the reward pool is split.
 * usage: test_coordinator COORDINATOR_BINARY */
#include <sqlite3.h>

#include "fed_participant.h"

#define ENDPOINT "tcp://127.0.0.1:27711"

static const char *server_key_g;

/* Random bytes and malformed msgpack from an authenticated but hostile peer. */
static void hostile(const char *endpoint) {
    fed_client_t h;
    fed_client_open(&h, endpoint, server_key_g);
    bf_rng_t r;
    bf_rng_seed(&r, 5);
    int errors = 0;
    for (int i = 0; i < 30; i++) {
        uint8_t junk[64];
        size_t n = 1 + bf_rng_below(&r, sizeof junk);
        for (size_t k = 0; k < n; k++) junk[k] = (uint8_t)bf_rng_below(&r, 256);
        if (i % 3 == 0) junk[0] = 0xdd, junk[1] = junk[2] = junk[3] = junk[4] = 0xff, n = n < 5 ? 5 : n;
        zframe_t *f = zframe_new(junk, n);
        zframe_send(&f, h.sock, 0);
        zmsg_t *in = zmsg_recv(h.sock);
        bf_msg_t *rep = in ? bf_msg_decode(&in, NULL, NULL) : NULL;
        errors += fed_is(rep, "ERROR");
        bf_msg_destroy(&rep);
        zmsg_destroy(&in);
    }
    printf("hostile peer: %d/30 malformed messages answered with ERROR\n", errors);
    CHECK(errors == 30);
    fed_client_close(&h);
}

/* A peer that keeps sending garbage: after 50 malformed messages it gets no more answers and its
 * key cannot connect again; other keys are not affected. */
static void persistent_garbage(const char *endpoint) {
    fed_client_t h;
    fed_client_open(&h, endpoint, server_key_g);
    zsock_set_rcvtimeo(h.sock, 1500);
    int answered = 0;
    for (int i = 0; i < 60; i++) {
        zframe_t *f = zframe_new("\xc1\xc1\xc1", 3); /* 0xc1 is never valid msgpack */
        zframe_send(&f, h.sock, 0);
        zmsg_t *in = zmsg_recv(h.sock);
        answered += in != NULL;
        zmsg_destroy(&in);
    }
    printf("persistent garbage: %d/60 answered\n", answered);
    CHECK(answered == 50);
    zsock_destroy(&h.sock); /* reconnect with the same key: refused at the handshake */
    h.sock = zsock_new(ZMQ_DEALER);
    zcert_apply(h.cert, h.sock);
    zsock_set_curve_serverkey(h.sock, server_key_g);
    zsock_set_rcvtimeo(h.sock, 1500);
    zsock_connect(h.sock, "%s", endpoint);
    bf_msg_t *rep = fed_call(&h, fed_req(&h, "HELLO"));
    CHECK_MSG(rep == NULL, "a refused key got a %s", rep ? bf_msg_type(rep) : "");
    bf_msg_destroy(&rep);
    fed_client_close(&h);
}

/* --value-every 2 over 3 rounds: round 0 is not valued (zeros recorded, no coalition evaluated,
 * although it is the round where this easy task learns everything), rounds 1 and 2 (the last)
 * are: at least the empty and grand coalitions are scored. */
static void check_valued_rounds(const char *home) {
    char path[700];
    snprintf(path, sizeof path, "%s/coordinator.db", home);
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    CHECK(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK);
    CHECK(sqlite3_prepare_v2(db, "SELECT round, COUNT(*), SUM(ABS(value)) FROM contribution GROUP BY round ORDER BY round",
                             -1, &st, NULL) == SQLITE_OK);
    int rows = 0;
    while (st && sqlite3_step(st) == SQLITE_ROW) {
        int round = sqlite3_column_int(st, 0), n = sqlite3_column_int(st, 1);
        double mass = sqlite3_column_double(st, 2);
        CHECK_MSG(n == 3, "round %d: %d contributions", round, n);
        if (round == 0) CHECK_MSG(mass == 0, "round 0 was valued: total |value| %g", mass);
        rows++;
    }
    CHECK(rows == 3);
    sqlite3_finalize(st);
    sqlite3_close(db);
    snprintf(path, sizeof path, "%s.log", home);
    const char *log = bf_slurp(path), *r1 = strstr(log, "round 1/3:"), *r2 = strstr(log, "round 2/3:"),
               *r3 = strstr(log, "round 3/3:");
    CHECK_MSG(r1 && r2 && r3, "round summaries missing from the log");
    if (r1 && r2 && r3) {
        const char *skipped = ", 0 coalitions valued, not valued)";
        CHECK(strstr(r1, skipped) && strstr(r1, skipped) < r2);
        CHECK(!strstr(r2, skipped) && !strstr(r3, skipped));
    }
}

int main(int argc, char **argv) {
    if (argc < 2) return fprintf(stderr, "usage: test_coordinator COORDINATOR\n"), 2;
    zsys_init();
    zsys_set_logstream(NULL);
    char home[600], spec[700], key[41];
    CHECK(fed_prepare(argv[1], "fed", 1100, 200, 1, home, sizeof home, spec, sizeof spec, key) == 0);
    server_key_g = key;
    /* run's numeric options are range-checked before anything starts: usage error (2), nothing served */
    const char *bad[][2] = {{"--bn-recalibrate", "-1"}, {"--bn-recalibrate", "100001"}, {"--shapley-budget", "1"},
                            {"--value-every", "0"}};
    for (int i = 0; i < 4; i++) {
        char out[700];
        snprintf(out, sizeof out, "%s.usage.out", home);
        const char *args[] = {"run", "--home", home, "--bind", ENDPOINT, bad[i][0], bad[i][1], NULL};
        int rc = bf_spawn(argv[1], args, out, 0); /* the usage goes to stderr */
        CHECK_MSG(rc == 2 && !strstr(bf_slurp(out), "listening"), "run %s %s: exit %d", bad[i][0], bad[i][1], rc);
    }
    /* Valuation every 2nd round (and the last), coalitions scored by validation loss. */
    const char *extra[] = {"--block-size", "100", "--blocks-per-join", "3", "--liveness", "30",
                           "--value-every", "2", "--utility", "loss", NULL};
    pid_t coord = fed_start(argv[1], home, ENDPOINT, spec, extra);

    part_t p[3];
    const char *names[3] = {"alice", "bob", "carol"};
    for (int i = 0; i < 3; i++) {
        memset(&p[i], 0, sizeof p[i]);
        fed_client_open(&p[i].c, ENDPOINT, key);
        bf_msg_t *hello = call(&p[i].c, fed_req(&p[i].c, "HELLO"));
        CHECK_MSG(fed_is(hello, "WELCOME") && !bf_msg_has(hello, "user"), "HELLO before registering");
        bf_msg_destroy(&hello);
        reg(&p[i].c, names[i]);
    }
    /* a name is bound to one key: a new key cannot take "alice" */
    fed_client_t mallory;
    fed_client_open(&mallory, ENDPOINT, key);
    bf_msg_t *r = fed_req(&mallory, "REGISTER");
    bf_msg_set_str(r, "name", "alice");
    bf_msg_t *rep = call(&mallory, r);
    CHECK_MSG(!strcmp(fed_code(rep), "CONFLICT"), "taking a registered name: %s", rep ? bf_msg_type(rep) : "timeout");
    bf_msg_destroy(&rep);
    /* an unregistered key may not act */
    r = fed_req(&mallory, "RECHARGE");
    bf_msg_set_str(r, "amount", "5.00");
    rep = call(&mallory, r);
    CHECK(!strcmp(fed_code(rep), "UNAUTHORIZED"));
    bf_msg_destroy(&rep);

    /* alice funds a reward task */
    r = fed_req(&p[0].c, "RECHARGE");
    bf_msg_set_str(r, "amount", "20.00");
    rep = call(&p[0].c, r);
    expect_ok(rep, "recharge");
    bf_msg_destroy(&rep);
    r = fed_req(&p[0].c, "TASK_CREATE");
    bf_msg_set_str(r, "task", "t1"), bf_msg_set_str(r, "name", "quadrants"), bf_msg_set_str(r, "model", "cnn");
    bf_msg_set_str(r, "dataset", "tiny"), bf_msg_set_uint(r, "rounds", 3), bf_msg_set_str(r, "mode", "reward");
    bf_msg_set_str(r, "pool", "10.00"), bf_msg_set_uint(r, "min_clients", 3), bf_msg_set_uint(r, "local_epochs", 1);
    bf_msg_set_uint(r, "batch", 32), bf_msg_set_double(r, "lr", 0.05), bf_msg_set_uint(r, "round_timeout", 120);
    bf_msg_set_str(r, "partition", "iid"), bf_msg_set_str(r, "strategy", "fedavg");
    rep = call(&p[0].c, r);
    expect_ok(rep, "task create");
    bf_msg_destroy(&rep);

    for (int i = 0; i < 3; i++) join_and_fetch(&p[i], "t1");
    /* bob may not fetch alice's block, nor cancel her task */
    r = fed_req(&p[1].c, "BLOCK_GET");
    bf_msg_set_str(r, "task", "t1");
    bf_msg_set_uint(r, "block", 0); /* alice joined first and holds blocks 0..2 */
    rep = call(&p[1].c, r);
    CHECK(!strcmp(fed_code(rep), "FORBIDDEN"));
    bf_msg_destroy(&rep);
    r = fed_req(&p[1].c, "TASK_CANCEL");
    bf_msg_set_str(r, "task", "t1");
    rep = call(&p[1].c, r);
    CHECK(!strcmp(fed_code(rep), "FORBIDDEN"));
    bf_msg_destroy(&rep);

    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 3; i++) {
            if (round == 1 && i == 1) hostile(ENDPOINT); /* in the middle of a round */
            train_round(&p[i], "t1", round);
        }
        /* a second update for the same round is stale */
        bf_msg_t *u = fed_req(&p[2].c, "UPDATE");
        bf_msg_set_str(u, "task", "t1"), bf_msg_set_uint(u, "round", (uint64_t)round), bf_msg_set_uint(u, "samples", 300);
        bf_msg_set_double(u, "loss", 1.0);
        bf_msg_add_f32(u, p[2].params, p[2].np), bf_msg_add_f32(u, p[2].buffers, p[2].nb);
        rep = call(&p[2].c, u);
        CHECK_MSG(!strcmp(fed_code(rep), "STALE"), "duplicate update: %s", rep ? bf_msg_type(rep) : "timeout");
        bf_msg_destroy(&rep);
        const int all[3] = {0, 1, 2};
        check_fedavg_subset(home, "t1", p, all, 3, round, NULL); /* cnn: no BN */
    }
    persistent_garbage(ENDPOINT);
    /* the task is done: DONE with the result hash, for everyone */
    bf_msg_t *done = NULL;
    for (int tries = 0; tries < 100 && !fed_is(done, "DONE"); tries++) {
        bf_msg_destroy(&done);
        r = fed_req(&p[1].c, "ROUND_GET");
        bf_msg_set_str(r, "task", "t1");
        done = call(&p[1].c, r);
        if (!fed_is(done, "DONE")) zclock_sleep(100);
    }
    CHECK(fed_is(done, "DONE") && bf_msg_has(done, "result_hash"));
    bf_msg_destroy(&done);
    rep = call(&p[2].c, fed_req(&p[2].c, "ASSETS_GET"));
    CHECK(fed_is(rep, "ASSETS"));
    bf_msg_destroy(&rep);

    fed_stop(coord, SIGTERM);
    /* the ledger replays: chain, balances, escrow settled */
    char out[700];
    snprintf(out, sizeof out, "%s.verify", home);
    const char *vargs[] = {"ledger", "verify", "--home", home, NULL};
    int vrc = bf_spawn(argv[1], vargs, out, 1);
    CHECK_MSG(vrc == 0, "ledger verify exit %d:\n%s", vrc, bf_slurp(out));
    check_valued_rounds(home);
    for (int i = 0; i < 3; i++) {
        fed_client_close(&p[i].c);
        bf_dataset_free(&p[i].data);
        free(p[i].params), free(p[i].buffers), free(p[i].global), free(p[i].global_b);
    }
    fed_client_close(&mallory);
    if (bf_test_failures) {
        snprintf(out, sizeof out, "%s.log", home);
        fprintf(stderr, "--- coordinator log ---\n%s\n", bf_slurp(out));
    }
    return bf_test_done("test_coordinator");
}

/* test_postgres_coordinators.c: two coordinators sharing one PostgreSQL ledger (the ctest fixture's
 * cluster, tests/postgres/pg_cluster.sh; argv[2] is the file with its connection string; no
 * cluster: the test fails and says why). Both homes are made by `init --ledger URL`.
 *   - accounts are global: alice, bob, carol and dave register at A; at B alice and bob register
 *     again with the same CURVE keys and get the same users (the op id names key and name: a
 *     replay), while carol never registers there: B finds her by her key in the shared ledger;
 *     the ledger has one account each;
 *   - tasks belong to their coordinator: each trains its own shareholding task (three
 *     participants, one round, the `tiny` data);
 *   - dave pays for predictions on both; then A is SIGKILLed with a burst of dave's requests in
 *     flight, restarted on the same home, and the requests retried with their ids: each is
 *     charged exactly once;
 *   - dave's cash = recharge - the fees both coordinators reported; the holders of each task got
 *     exactly that task's fees; `ledger verify` passes on the shared ledger (from either home).
 * Usage: test_postgres_coordinators COORDINATOR URL-FILE */
#include <libpq-fe.h>

#include "bf_ledger.h"
#include "fed_participant.h"
#include "test_images.h"

#define EP_A "tcp://127.0.0.1:28741"
#define EP_B "tcp://127.0.0.1:28742"
#define BURST 16

static const char *coord_g;
static char data_spec[700];

static int pg_exec(const char *url, const char *sql) {
    PGconn *c = PQconnectdb(url);
    PGresult *r = PQstatus(c) == CONNECTION_OK ? PQexec(c, sql) : NULL;
    int ok = r && PQresultStatus(r) == PGRES_COMMAND_OK;
    CHECK_MSG(ok, "%s: %s", sql, r ? PQresultErrorMessage(r) : PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
    return ok ? 0 : -1;
}

/* `init --home HOME --ledger URL`, the server key from its output. */
static int init_home(const char *home, const char *url, char key[41]) {
    char out[1024], cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s.log'", home, home);
    if (system(cmd) != 0) return -1;
    snprintf(out, sizeof out, "%s.init.out", home);
    const char *args[] = {"init", "--home", home, "--ledger", url, NULL};
    if (bf_spawn(coord_g, args, out, 1) != 0) return fprintf(stderr, "init: %s\n", bf_slurp(out)), -1;
    const char *k = strstr(bf_slurp(out), "server public key: ");
    if (!k) return -1;
    memcpy(key, k + 19, 40);
    key[40] = 0;
    return 0;
}

/* A second connection under an existing identity (its CURVE certificate). */
static void open_as(fed_client_t *c, const char *endpoint, const char *server_key, zcert_t *cert) {
    memset(c, 0, sizeof *c);
    c->cert = zcert_dup(cert);
    c->sock = zsock_new(ZMQ_DEALER);
    zcert_apply(c->cert, c->sock);
    zsock_set_curve_serverkey(c->sock, server_key);
    zsock_set_rcvtimeo(c->sock, 20000);
    zsock_connect(c->sock, "%s", endpoint);
    c->next_id = 5000;
}

static bf_msg_t *create_task(fed_client_t *c, const char *id) {
    bf_msg_t *r = fed_req(c, "TASK_CREATE");
    bf_msg_set_str(r, "task", id), bf_msg_set_str(r, "name", "quadrants"), bf_msg_set_str(r, "model", "cnn");
    bf_msg_set_str(r, "dataset", "tiny"), bf_msg_set_uint(r, "rounds", 1), bf_msg_set_str(r, "mode", "shareholding");
    bf_msg_set_str(r, "fee", "0.07"), bf_msg_set_str(r, "base_fee", "0.05"), bf_msg_set_str(r, "rate", "3/2");
    bf_msg_set_uint(r, "min_clients", 3), bf_msg_set_uint(r, "local_epochs", 1);
    bf_msg_set_uint(r, "batch", 32), bf_msg_set_double(r, "lr", 0.05), bf_msg_set_uint(r, "round_timeout", 120);
    bf_msg_set_str(r, "partition", "iid"), bf_msg_set_str(r, "strategy", "fedavg");
    return call(c, r);
}

static bf_msg_t *predict_req(fed_client_t *c, const char *task, const char *request, uint8_t *img, size_t len) {
    bf_msg_t *r = fed_req(c, "PREDICT");
    bf_msg_set_str(r, "task", task);
    bf_msg_set_uint(r, "top", 2);
    bf_msg_set_str(r, "request", request);
    bf_msg_add_frame(r, img, len);
    return r;
}

/* A request id (64 hex digits): a tag for the series and the number in it. */
static const char *rid_of(char out[65], int tag, int i) {
    snprintf(out, 65, "%02x%062x", tag & 0xff, (unsigned)i);
    return out;
}

static int64_t cents(const char *s) {
    int64_t v = -1;
    if (s) bf_money_parse_amount(s, 2, &v, NULL);
    return v;
}

/* The fee of one answered prediction, or -1. */
static int64_t paid(bf_msg_t *rep, const char *what) {
    CHECK_MSG(fed_is(rep, "PREDICTION"), "%s: %s %s", what, rep ? fed_code(rep) : "timeout",
              rep && fed_is(rep, "ERROR") ? bf_msg_str(rep, "message") : "");
    int64_t fee = fed_is(rep, "PREDICTION") ? cents(bf_msg_str(rep, "fee")) : -1;
    bf_msg_destroy(&rep);
    return fee;
}

static void wait_completed(fed_client_t *c, const char *task) {
    int done = 0;
    for (int tries = 0; tries < 600 && !done; tries++) {
        bf_msg_t *r = fed_req(c, "TASK_STATUS");
        bf_msg_set_str(r, "task", task);
        bf_msg_t *rep = call(c, r);
        const msgpack_object *st = rep ? bf_msg_any(rep, "status") : NULL, *s = st ? bf_mp_get(st, "state") : NULL;
        done = s && s->type == MSGPACK_OBJECT_STR && !strncmp(s->via.str.ptr, "completed", 9);
        bf_msg_destroy(&rep);
        if (!done) zclock_sleep(100);
    }
    CHECK_MSG(done, "task %s did not complete", task);
}

static int64_t cash_of(bf_ledger_t *L, const char *name) {
    int64_t id = 0;
    bf_ledger_balance_t b = {0};
    CHECK_MSG(bf_ledger_user_find(L, name, &id, NULL) == 0, "no user %s in the shared ledger", name);
    bf_ledger_balance(L, id, BF_LEDGER_CNY, &b, NULL);
    CHECK(b.pending_debits == 0);
    return b.posted;
}

int main(int argc, char **argv) {
    if (argc < 3) return fprintf(stderr, "usage: test_postgres_coordinators COORDINATOR URL-FILE\n"), 2;
    coord_g = argv[1];
    char base[512], url[700];
    FILE *f = fopen(argv[2], "r");
    if (!f || !fgets(base, sizeof base, f)) {
        fprintf(stderr, "test_postgres_coordinators: FAILED: no PostgreSQL cluster (%s unreadable): the ctest fixture "
                        "ledger_postgres_start did not run or failed\n", argv[2]);
        return 1;
    }
    fclose(f);
    base[strcspn(base, "\r\n")] = 0;
    char db[64], sql[128];
    snprintf(db, sizeof db, "bf_two_coords_%d", (int)getpid());
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", db);
    if (pg_exec(base, sql)) return bf_test_done("test_postgres_coordinators");
    snprintf(url, sizeof url, "%.*s/%s", (int)(strrchr(base, '/') - base), base, db);
    zsys_init();
    zsys_set_logstream(NULL);

    char dir[512], home_a[600], home_b[600], key_a[41], key_b[41];
    snprintf(dir, sizeof dir, "%s/two-coords-data", bf_test_tmpdir());
    mkdir(dir, 0755);
    fed_write_split(dir, "train", 1100, 41);
    fed_write_split(dir, "t10k", 200, 42);
    snprintf(data_spec, sizeof data_spec, "tiny=%s", dir);
    snprintf(home_a, sizeof home_a, "%s/two-coords-a", bf_test_tmpdir());
    snprintf(home_b, sizeof home_b, "%s/two-coords-b", bf_test_tmpdir());
    CHECK(init_home(home_a, url, key_a) == 0 && init_home(home_b, url, key_b) == 0);
    const char *extra[] = {"--block-size", "100", "--blocks-per-join", "3", "--liveness", "30", NULL};
    pid_t pa = fed_start(coord_g, home_a, EP_A, data_spec, extra), pb = fed_start(coord_g, home_b, EP_B, data_spec, extra);

    /* Registered at A; the same keys at B are the same users. */
    const char *names[3] = {"alice", "bob", "carol"};
    part_t p[3], q[3];
    for (int i = 0; i < 3; i++) {
        memset(&p[i], 0, sizeof p[i]);
        memset(&q[i], 0, sizeof q[i]);
        fed_client_open(&p[i].c, EP_A, key_a);
        reg(&p[i].c, names[i]);
        open_as(&q[i].c, EP_B, key_b, p[i].c.cert);
        if (i < 2) reg(&q[i].c, names[i]);
    }
    bf_msg_t *as = call(&q[2].c, fed_req(&q[2].c, "ASSETS_GET")); /* carol, registered at A only */
    const msgpack_object *au = fed_is(as, "ASSETS") ? bf_mp_get(bf_msg_any(as, "assets"), "user") : NULL;
    CHECK_MSG(au && au->type == MSGPACK_OBJECT_STR && au->via.str.size == 5 && !memcmp(au->via.str.ptr, "carol", 5),
              "B knows carol by her key without a REGISTER: %s", as ? bf_msg_type(as) : "timeout");
    bf_msg_destroy(&as);
    bf_msg_t *rep = create_task(&p[0].c, "ta");
    expect_ok(rep, "create ta on A");
    bf_msg_destroy(&rep);
    rep = create_task(&q[1].c, "tb");
    expect_ok(rep, "create tb on B");
    bf_msg_destroy(&rep);
    for (int i = 0; i < 3; i++) join_and_fetch(&p[i], "ta");
    for (int i = 0; i < 3; i++) join_and_fetch(&q[i], "tb");
    for (int i = 0; i < 3; i++) train_round(&p[i], "ta", 0);
    for (int i = 0; i < 3; i++) train_round(&q[i], "tb", 0);
    wait_completed(&p[0].c, "ta");
    wait_completed(&q[0].c, "tb");
    /* a coordinator's task is its own */
    bf_msg_t *r = fed_req(&q[0].c, "TASK_STATUS");
    bf_msg_set_str(r, "task", "ta");
    rep = call(&q[0].c, r);
    CHECK_MSG(fed_is(rep, "ERROR"), "B answers for A's task: %s", rep ? bf_msg_type(rep) : "timeout");
    bf_msg_destroy(&rep);

    bf_err_t err;
    bf_ledger_t *L = bf_ledger_open(url, &err);
    CHECK_MSG(L != NULL, "%s", err.msg);
    if (!L) return bf_test_done("test_postgres_coordinators");
    bf_ledger_user_t *users = NULL;
    size_t nu = 0;
    CHECK(bf_ledger_users(L, &users, &nu, &err) == 0 && nu == 3);
    free(users);
    int64_t before[3];
    for (int i = 0; i < 3; i++) before[i] = cash_of(L, names[i]);

    /* dave: one account, money in at A, predictions paid on both. */
    fed_client_t da, dbc;
    fed_client_open(&da, EP_A, key_a);
    reg(&da, "dave");
    open_as(&dbc, EP_B, key_b, da.cert);
    reg(&dbc, "dave");
    r = fed_req(&da, "RECHARGE");
    bf_msg_set_str(r, "amount", "30.00");
    rep = call(&da, r);
    expect_ok(rep, "recharge");
    bf_msg_destroy(&rep);
    size_t len = 0;
    uint8_t *img = ti_encode('p', 0, 16, 16, 1, 1, &len);
    int64_t fees_a = 0, fees_b = 0;
    char rid[65];
    for (int i = 0; i < 10; i++) {
        rid_of(rid, 0xa, i);
        fees_a += paid(call(&da, predict_req(&da, "ta", rid, img, len)), rid);
        rid_of(rid, 0xb, i);
        fees_b += paid(call(&dbc, predict_req(&dbc, "tb", rid, img, len)), rid);
    }
    CHECK(fees_a > 0 && fees_b == fees_a);

    /* A burst of requests to A, and A SIGKILLed while it settles them. */
    bf_err_t e2;
    for (int i = 0; i < BURST; i++) {
        rid_of(rid, 0xc, i);
        zmsg_t *z = bf_msg_encode(predict_req(&da, "ta", rid, img, len), &e2);
        zmsg_send(&z, da.sock);
    }
    usleep(2000 + (useconds_t)(getpid() % 8) * 1000); /* a few of them settled */
    fed_stop(pa, SIGKILL);
    fed_client_close(&da);
    /* what A had settled of the burst when it died (each of the same price): nothing half-done */
    int64_t unit = fees_a / 10, left = cash_of(L, "dave"), settled = (3000 - fees_a - fees_b - left) / (unit ? unit : 1);
    CHECK_MSG(unit > 0 && (3000 - fees_a - fees_b - left) % unit == 0 && settled >= 0 && settled <= BURST,
              "after the kill dave has %lld", (long long)left);
    pa = fed_start(coord_g, home_a, EP_A, data_spec, extra);
    fed_client_t da2;
    open_as(&da2, EP_A, key_a, dbc.cert);
    for (int i = 0; i < BURST; i++) { /* each retried under its id: answered, charged once */
        rid_of(rid, 0xc, i);
        fees_a += paid(call(&da2, predict_req(&da2, "ta", rid, img, len)), rid);
    }
    rid_of(rid, 0xc, 0); /* and once more: no second charge */
    int64_t again = paid(call(&da2, predict_req(&da2, "ta", rid, img, len)), "retry");
    CHECK(again > 0);

    /* Exact balances on the shared ledger. */
    CHECK_MSG(cash_of(L, "dave") == 3000 - fees_a - fees_b, "dave: %lld, expected 3000 - %lld - %lld",
              (long long)cash_of(L, "dave"), (long long)fees_a, (long long)fees_b);
    int64_t got = 0;
    for (int i = 0; i < 3; i++) got += cash_of(L, names[i]) - before[i];
    CHECK_MSG(got == fees_a + fees_b, "holders received %lld of %lld", (long long)got, (long long)(fees_a + fees_b));
    bf_ledger_task_t ti;
    int64_t rev[2] = {0, 0};
    for (int64_t t = 1; t <= 2; t++) {
        CHECK(bf_ledger_task_get(L, t, &ti, &err) == 0);
        rev[t - 1] = ti.total_revenue;
    }
    CHECK_MSG(rev[0] + rev[1] == fees_a + fees_b && (rev[0] == fees_a || rev[1] == fees_a),
              "task revenues %lld and %lld, fees %lld on A and %lld on B", (long long)rev[0], (long long)rev[1],
              (long long)fees_a, (long long)fees_b);
    bf_ledger_report_t rep_v;
    CHECK(bf_ledger_verify(L, &rep_v, &err) == 0 && rep_v.ok && rep_v.users == 4 && rep_v.tasks == 2);
    for (int i = 0; i < BF_LEDGER_CHECK_COUNT; i++)
        CHECK_MSG(rep_v.checks[i].ok, "check %s: %s", rep_v.checks[i].name, rep_v.checks[i].detail);
    char out[900];
    snprintf(out, sizeof out, "%s.verify.out", home_b);
    const char *vargs[] = {"ledger", "verify", "--home", home_b, NULL};
    CHECK_MSG(bf_spawn(coord_g, vargs, out, 1) == 0, "ledger verify --home B: %s", bf_slurp(out));
    printf("two coordinators, one PostgreSQL ledger: 4 users, 2 tasks, fees %lld on A and %lld on B; A SIGKILLed with"
           " %lld of %d requests settled, the rest settled on retry; verify ok\n",
           (long long)fees_a, (long long)fees_b, (long long)settled, BURST);

    bf_ledger_close(&L);
    free(img);
    fed_client_close(&da2);
    fed_client_close(&dbc);
    for (int i = 0; i < 3; i++) fed_client_close(&p[i].c), fed_client_close(&q[i].c);
    fed_stop(pa, SIGTERM);
    fed_stop(pb, SIGTERM);
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", db);
    pg_exec(base, sql);
    return bf_test_done("test_postgres_coordinators");
}

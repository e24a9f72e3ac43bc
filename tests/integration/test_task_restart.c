/* test_task_restart.c: a shareholding task across crashes, on a real coordinator over CURVE.
 * Two trainers and a third user who joins with 1 declared image of its own and leaves without
 * training. SIGKILL after round 1: the restarted coordinator restores every participant's
 * `contributed` (and Shapley value). A crash between the last round and settlement
 * (BLOCKFED_COORD_FAULT=before-settle): the next start settles, once, and later starts settle
 * nothing again. Then: only the shareholders download the final model (the 0-ppm joiner is
 * refused), and `ledger shares` takes the task id it was created with (the ledger's number still
 * works, an unknown id exits 4). usage: test_task_restart COORDINATOR */
#include "fed_participant.h"

/* BF_TEST_ENDPOINT: another port, for the run on PostgreSQL (tests/CMakeLists.txt) */
#define ENDPOINT (getenv("BF_TEST_ENDPOINT") ? getenv("BF_TEST_ENDPOINT") : "tcp://127.0.0.1:27763")

static const char *status_str(const bf_msg_t *st, const char *k, char buf[64]) {
    const msgpack_object *o = st ? bf_mp_get(bf_msg_any(st, "status"), k) : NULL;
    snprintf(buf, 64, "%.*s", o && o->type == MSGPACK_OBJECT_STR ? (int)o->via.str.size : 0,
             o && o->type == MSGPACK_OBJECT_STR ? o->via.str.ptr : "");
    return buf;
}

static bf_msg_t *task_status(fed_client_t *c) {
    bf_msg_t *r = fed_req(c, "TASK_STATUS");
    bf_msg_set_str(r, "task", "fm1");
    return call(c, r);
}

/* Each participant's `contributed` (in join order); returns how many. */
static int contributed(fed_client_t *c, int64_t *out, int cap) {
    bf_msg_t *st = task_status(c);
    const msgpack_object *parts = st ? bf_mp_get(bf_msg_any(st, "status"), "participants") : NULL;
    int n = 0;
    for (uint32_t i = 0; parts && parts->type == MSGPACK_OBJECT_ARRAY && i < parts->via.array.size && n < cap; i++) {
        const msgpack_object *v = bf_mp_get(&parts->via.array.ptr[i], "contributed");
        out[n++] = v && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (int64_t)v->via.u64 : -1;
    }
    bf_msg_destroy(&st);
    return n;
}

/* Waits until TASK_STATUS says the task is in state (or round >= round when state is NULL). */
static int wait_for(fed_client_t *c, const char *state, int round) {
    for (int i = 0; i < 600; i++) {
        bf_msg_t *st = task_status(c);
        const msgpack_object *r = st ? bf_mp_get(bf_msg_any(st, "status"), "round") : NULL;
        char buf[64];
        int ok = state ? !strcmp(status_str(st, "state", buf), state)
                       : r && r->type == MSGPACK_OBJECT_POSITIVE_INTEGER && (int)r->via.u64 >= round;
        bf_msg_destroy(&st);
        if (ok) return 0;
        zclock_sleep(100);
    }
    return -1;
}

static int model_get(fed_client_t *c, char *code, size_t cap) {
    bf_msg_t *r = fed_req(c, "MODEL_GET");
    bf_msg_set_str(r, "task", "fm1");
    bf_msg_t *rep = call(c, r);
    snprintf(code, cap, "%s", fed_is(rep, "MODEL") ? "MODEL" : rep ? fed_code(rep) : "timeout");
    bf_msg_destroy(&rep);
    return 0;
}

static int count_in(const char *text, const char *what) {
    int n = 0;
    for (const char *p = text; (p = strstr(p, what)); p += strlen(what)) n++;
    return n;
}

int main(int argc, char **argv) {
    if (argc < 2) return fprintf(stderr, "usage: test_task_restart COORDINATOR\n"), 2;
    const char *coord_bin = argv[1];
    zsys_init();
    zsys_set_logstream(NULL);
    char home[600], spec[700], key[41], out[800], log[700];
    CHECK(fed_prepare(coord_bin, "tres", 900, 100, 21, home, sizeof home, spec, sizeof spec, key) == 0);
    snprintf(log, sizeof log, "%s.log", home);
    const char *extra[] = {"--block-size", "100", "--blocks-per-join", "3", "--liveness", "10", NULL};
    pid_t coord = fed_start(coord_bin, home, ENDPOINT, spec, extra);
    part_t p[2];
    for (int i = 0; i < 2; i++) {
        memset(&p[i], 0, sizeof p[i]);
        fed_client_open(&p[i].c, ENDPOINT, key);
        reg(&p[i].c, i ? "bob" : "alice");
    }
    fed_client_t mallory;
    fed_client_open(&mallory, ENDPOINT, key);
    reg(&mallory, "mallory");

    bf_msg_t *r = fed_req(&p[0].c, "TASK_CREATE");
    bf_msg_set_str(r, "task", "fm1"), bf_msg_set_str(r, "name", "restart"), bf_msg_set_str(r, "model", "cnn");
    bf_msg_set_str(r, "dataset", "tiny"), bf_msg_set_uint(r, "rounds", 2), bf_msg_set_str(r, "mode", "shareholding");
    bf_msg_set_uint(r, "min_clients", 2), bf_msg_set_uint(r, "local_epochs", 1), bf_msg_set_uint(r, "batch", 32);
    bf_msg_set_double(r, "lr", 0.05), bf_msg_set_uint(r, "round_timeout", 60), bf_msg_set_str(r, "partition", "iid");
    bf_msg_set_str(r, "strategy", "fedavg");
    bf_msg_t *rep = call(&p[0].c, r);
    expect_ok(rep, "task create");
    bf_msg_destroy(&rep);
    for (int i = 0; i < 2; i++) join_and_fetch(&p[i], "fm1");
    /* the free rider: joins with one declared image and leaves, so no round waits for it */
    r = fed_req(&mallory, "JOIN");
    bf_msg_set_str(r, "task", "fm1"), bf_msg_set_bool(r, "own_data", 1), bf_msg_set_uint(r, "samples", 1);
    rep = call(&mallory, r);
    CHECK_MSG(fed_is(rep, "JOINED"), "own-data join: %s", rep ? fed_code(rep) : "timeout");
    bf_msg_destroy(&rep);
    r = fed_req(&mallory, "LEAVE");
    bf_msg_set_str(r, "task", "fm1");
    rep = call(&mallory, r);
    expect_ok(rep, "leave");
    bf_msg_destroy(&rep);

    /* round 1, then SIGKILL: contributions survive the restart */
    for (int i = 0; i < 2; i++) train_round(&p[i], "fm1", 0);
    CHECK(wait_for(&p[0].c, NULL, 1) == 0);
    int64_t before[3] = {-1, -1, -1}, after[3] = {-2, -2, -2};
    CHECK(contributed(&p[0].c, before, 3) == 3);
    CHECK_MSG(before[0] == 300 && before[1] == 300 && before[2] == 0, "contributed before the crash: %lld %lld %lld",
              (long long)before[0], (long long)before[1], (long long)before[2]);
    fed_stop(coord, SIGKILL);
    setenv("BLOCKFED_COORD_FAULT", "before-settle", 1);
    coord = fed_start(coord_bin, home, ENDPOINT, spec, extra);
    unsetenv("BLOCKFED_COORD_FAULT");
    CHECK(contributed(&p[0].c, after, 3) == 3);
    for (int i = 0; i < 3; i++)
        CHECK_MSG(after[i] == before[i], "participant %d: contributed %lld before the restart, %lld after", i,
                  (long long)before[i], (long long)after[i]);

    /* round 2: the coordinator dies right after storing it, before settlement */
    for (int i = 0; i < 2; i++) train_round(&p[i], "fm1", 1);
    int st = 0, exited = 0;
    for (int i = 0; i < 600 && !exited; i++) {
        if (waitpid(coord, &st, WNOHANG) == coord) exited = 1;
        else zclock_sleep(100);
    }
    CHECK_MSG(exited && WIFEXITED(st) && WEXITSTATUS(st) == 99, "the fault-injected coordinator did not exit 99");
    if (!exited) fed_stop(coord, SIGKILL);
    CHECK(count_in(bf_slurp(log), "completed after") == 0);

    /* the next start settles it, from the restored values */
    coord = fed_start(coord_bin, home, ENDPOINT, spec, extra);
    CHECK(wait_for(&p[0].c, "completed", 0) == 0);
    CHECK(contributed(&p[0].c, after, 3) == 3);
    CHECK_MSG(after[0] == 600 && after[1] == 600 && after[2] == 0, "contributed after settlement: %lld %lld %lld",
              (long long)after[0], (long long)after[1], (long long)after[2]);

    /* the model: shareholders only */
    char code[32];
    model_get(&mallory, code, sizeof code);
    CHECK_MSG(!strcmp(code, "FORBIDDEN"), "a 0-ppm joiner's MODEL_GET: %s", code);
    fed_stop(coord, SIGTERM);

    /* `ledger shares` by the id the task was created with, and by the ledger's number */
    snprintf(out, sizeof out, "%s.shares", home);
    const char *sargs[] = {"ledger", "shares", "fm1", "--home", home, "--json", NULL};
    int rc = bf_spawn(coord_bin, sargs, out, 0);
    char *json = bf_slurp(out);
    CHECK_MSG(rc == 0 && strstr(json, "\"task_id\":\"fm1\""), "ledger shares fm1: exit %d: %s", rc, json);
    long long sum = 0;
    int holders[2] = {0, 0};
    const char *names[2] = {"\"alice\"", "\"bob\""};
    for (const char *q = json; (q = strstr(q, "\"ppm\":")); q += 6) sum += atoll(q + 6);
    for (int i = 0; i < 2; i++) {
        const char *q = strstr(json, names[i]);
        const char *ppm = q ? strstr(q, "\"ppm\":") : NULL;
        holders[i] = ppm && atoll(ppm + 6) > 0;
    }
    CHECK_MSG(sum == 1000000 && !strstr(json, "\"mallory\""), "shares: %s", json);
    CHECK(holders[0] || holders[1]);
    const char *nargs[] = {"ledger", "shares", "1", "--home", home, NULL};
    rc = bf_spawn(coord_bin, nargs, out, 0);
    CHECK_MSG(rc == 0 && strstr(bf_slurp(out), "task fm1 (ledger 1)"), "ledger shares 1: exit %d: %s", rc, bf_slurp(out));
    const char *uargs[] = {"ledger", "shares", "nosuch", "--home", home, NULL};
    CHECK(bf_spawn(coord_bin, uargs, out, 1) == 4);

    /* one more start: nothing is settled again; the downloads follow the shares */
    coord = fed_start(coord_bin, home, ENDPOINT, spec, extra);
    for (int i = 0; i < 2; i++) {
        model_get(&p[i].c, code, sizeof code);
        CHECK_MSG(!strcmp(code, holders[i] ? "MODEL" : "FORBIDDEN"), "participant %d (%s shares): MODEL_GET %s", i,
                  holders[i] ? "with" : "without", code);
    }
    model_get(&mallory, code, sizeof code);
    CHECK_MSG(!strcmp(code, "FORBIDDEN"), "a 0-ppm joiner's MODEL_GET after a restart: %s", code);
    fed_stop(coord, SIGTERM);
    CHECK_MSG(count_in(bf_slurp(log), "completed after") == 1, "settled %d times", count_in(bf_slurp(log), "completed after"));
    rc = bf_spawn(coord_bin, sargs, out, 0);
    long long sum2 = 0;
    json = bf_slurp(out);
    for (const char *q = json; (q = strstr(q, "\"ppm\":")); q += 6) sum2 += atoll(q + 6);
    CHECK(rc == 0 && sum2 == 1000000);
    fed_client_close(&mallory);
    fed_finish(coord_bin, home, p, 2, &p[0].c);
    return bf_test_done("test_task_restart");
}

/* test_task_failed.c: a task whose participants stop reporting ends FAILED, on a real coordinator
 * over CURVE. Three trainers, min_clients 3, round timeout 3 s, in a reward task and a
 * shareholding task at once; one trainer vanishes after round 1. Round 2 cannot close; one more
 * timeout later both tasks are `failed`: the reward pool is back with its creator in full, the
 * shareholding task has no shares and is not online, and ROUND_GET / JOIN / MODEL_GET answer
 * BAD_STATE with a message saying the task failed and why. A restart keeps them failed.
 * usage: test_task_failed COORDINATOR */
#include "fed_participant.h"

#define ENDPOINT "tcp://127.0.0.1:27765"

static void create(fed_client_t *c, const char *task, const char *mode) {
    bf_msg_t *r = fed_req(c, "TASK_CREATE");
    bf_msg_set_str(r, "task", task), bf_msg_set_str(r, "name", task), bf_msg_set_str(r, "model", "cnn");
    bf_msg_set_str(r, "dataset", "tiny"), bf_msg_set_uint(r, "rounds", 3), bf_msg_set_str(r, "mode", mode);
    if (!strcmp(mode, "reward")) bf_msg_set_str(r, "pool", "10.00");
    bf_msg_set_uint(r, "min_clients", 3), bf_msg_set_uint(r, "local_epochs", 1), bf_msg_set_uint(r, "batch", 32);
    bf_msg_set_double(r, "lr", 0.05), bf_msg_set_uint(r, "round_timeout", 3), bf_msg_set_str(r, "partition", "iid");
    bf_msg_set_str(r, "strategy", "fedavg");
    bf_msg_t *rep = call(c, r);
    expect_ok(rep, "task create");
    bf_msg_destroy(&rep);
}

static bf_msg_t *ask(fed_client_t *c, const char *type, const char *task) {
    bf_msg_t *r = fed_req(c, type);
    bf_msg_set_str(r, "task", task);
    if (!strcmp(type, "JOIN")) bf_msg_set_bool(r, "own_data", 0);
    return call(c, r);
}

static int state_is(fed_client_t *c, const char *task, const char *state) {
    bf_msg_t *st = ask(c, "TASK_STATUS", task);
    const msgpack_object *o = st ? bf_mp_get(bf_msg_any(st, "status"), "state") : NULL;
    int ok = o && o->type == MSGPACK_OBJECT_STR && o->via.str.size == strlen(state) &&
             !memcmp(o->via.str.ptr, state, o->via.str.size);
    bf_msg_destroy(&st);
    return ok;
}

/* type answers BAD_STATE naming the failure */
static void refused(fed_client_t *c, const char *type, const char *task, const char *why) {
    bf_msg_t *rep = ask(c, type, task);
    const char *msg = fed_is(rep, "ERROR") ? bf_msg_str(rep, "message") : NULL;
    CHECK_MSG(!strcmp(fed_code(rep), "BAD_STATE") && msg && strstr(msg, why), "%s %s: %s %s", type, task,
              rep ? bf_msg_type(rep) : "timeout", msg ? msg : "");
    bf_msg_destroy(&rep);
}

int main(int argc, char **argv) {
    if (argc < 2) return fprintf(stderr, "usage: test_task_failed COORDINATOR\n"), 2;
    zsys_init();
    zsys_set_logstream(NULL);
    char home[600], spec[700], key[41], out[800];
    CHECK(fed_prepare(argv[1], "tfail", 1100, 100, 41, home, sizeof home, spec, sizeof spec, key) == 0);
    const char *extra[] = {"--block-size", "100", "--blocks-per-join", "3", "--liveness", "2", NULL};
    pid_t coord = fed_start(argv[1], home, ENDPOINT, spec, extra);
    fed_client_t creator;
    fed_client_open(&creator, ENDPOINT, key);
    reg(&creator, "creator");
    bf_msg_t *r = fed_req(&creator, "RECHARGE");
    bf_msg_set_str(r, "amount", "10.00");
    bf_msg_t *rep = call(&creator, r);
    expect_ok(rep, "recharge");
    bf_msg_destroy(&rep);
    double cash0 = fed_cash_cents(&creator);
    create(&creator, "rw", "reward");
    create(&creator, "sh", "shareholding");
    CHECK(fed_cash_cents(&creator) == cash0 - 1000);

    part_t p[3];
    const char *names[3] = {"alice", "bob", "carol"};
    for (int i = 0; i < 3; i++) {
        memset(&p[i], 0, sizeof p[i]);
        fed_client_open(&p[i].c, ENDPOINT, key);
        reg(&p[i].c, names[i]);
        join_and_fetch(&p[i], "rw");
    }
    /* the same participants, the same blocks' data, in the shareholding task */
    for (int i = 0; i < 3; i++) {
        bf_msg_t *j = ask(&p[i].c, "JOIN", "sh");
        CHECK(fed_is(j, "JOINED"));
        bf_msg_destroy(&j);
    }
    for (int i = 0; i < 3; i++) train_round(&p[i], "rw", 0), train_round(&p[i], "sh", 0);
    /* carol vanishes; the others report round 2 and wait */
    zsock_destroy(&p[2].c.sock);
    for (int i = 0; i < 2; i++) train_round(&p[i], "rw", 1), train_round(&p[i], "sh", 1);
    int failed = 0;
    for (int i = 0; i < 300 && !failed; i++) {
        failed = state_is(&creator, "rw", "failed") && state_is(&creator, "sh", "failed");
        if (!failed) zclock_sleep(100);
    }
    CHECK_MSG(failed, "the tasks did not fail");
    CHECK(fed_cash_cents(&creator) == cash0); /* the pool, in full */
    for (int i = 0; i < 2; i++) {
        refused(&p[i].c, "ROUND_GET", "rw", "failed: round 2 got fewer than 3 updates");
        refused(&p[i].c, "ROUND_GET", "sh", "no shares were allocated");
        refused(&p[i].c, "JOIN", "sh", "failed");
    }
    refused(&p[0].c, "MODEL_GET", "sh", "not completed");

    /* a restart keeps them failed */
    fed_stop(coord, SIGKILL);
    coord = fed_start(argv[1], home, ENDPOINT, spec, extra);
    CHECK(state_is(&creator, "rw", "failed") && state_is(&creator, "sh", "failed"));
    refused(&p[0].c, "ROUND_GET", "rw", "the pool was refunded");
    CHECK(fed_cash_cents(&creator) == cash0);
    fed_stop(coord, SIGTERM);

    snprintf(out, sizeof out, "%s.shares", home);
    const char *sargs[] = {"ledger", "shares", "sh", "--home", home, "--json", NULL};
    int rc = bf_spawn(argv[1], sargs, out, 1);
    char *json = bf_slurp(out);
    CHECK_MSG(rc == 0 && strstr(json, "\"model_online\":false") && strstr(json, "\"shares\":[]"), "shares: %s", json);
    fed_finish(argv[1], home, p, 3, &creator);
    return bf_test_done("test_task_failed");
}

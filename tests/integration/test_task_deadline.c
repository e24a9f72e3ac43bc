/* test_task_deadline.c: a reward task that does not gather its minimum participants before the
 * start deadline is cancelled and its escrowed pool returns to the creator; a creator can also
 * cancel a waiting task; the ledger verifies afterwards. usage: test_task_deadline COORDINATOR */
#include "fed_participant.h"

#define ENDPOINT "tcp://127.0.0.1:27713"

static const char *task_state(fed_client_t *c, const char *task) {
    static char state[32];
    bf_msg_t *r = fed_req(c, "TASK_STATUS");
    bf_msg_set_str(r, "task", task);
    bf_msg_t *rep = call(c, r);
    const msgpack_object *st = rep ? bf_mp_get(bf_msg_any(rep, "status"), "state") : NULL;
    snprintf(state, sizeof state, "%.*s", st && st->type == MSGPACK_OBJECT_STR ? (int)st->via.str.size : 0,
             st ? st->via.str.ptr : "");
    bf_msg_destroy(&rep);
    return state;
}

static const char *cash(fed_client_t *c) {
    static char v[32];
    bf_msg_t *rep = call(c, fed_req(c, "ASSETS_GET"));
    const msgpack_object *o = rep ? bf_mp_get(bf_msg_any(rep, "assets"), "cash") : NULL;
    snprintf(v, sizeof v, "%.*s", o && o->type == MSGPACK_OBJECT_STR ? (int)o->via.str.size : 0, o ? o->via.str.ptr : "");
    bf_msg_destroy(&rep);
    return v;
}

static void create(fed_client_t *c, const char *id) {
    bf_msg_t *r = fed_req(c, "TASK_CREATE");
    bf_msg_set_str(r, "task", id), bf_msg_set_str(r, "name", id), bf_msg_set_str(r, "model", "cnn");
    bf_msg_set_str(r, "dataset", "tiny"), bf_msg_set_uint(r, "rounds", 2), bf_msg_set_str(r, "mode", "reward");
    bf_msg_set_str(r, "pool", "4.00"), bf_msg_set_uint(r, "min_clients", 5), bf_msg_set_uint(r, "local_epochs", 1);
    bf_msg_set_uint(r, "batch", 32), bf_msg_set_double(r, "lr", 0.05), bf_msg_set_uint(r, "round_timeout", 60);
    bf_msg_set_str(r, "partition", "iid"), bf_msg_set_str(r, "strategy", "fedavg");
    bf_msg_t *rep = call(c, r);
    expect_ok(rep, "task create");
    bf_msg_destroy(&rep);
}

int main(int argc, char **argv) {
    if (argc < 2) return fprintf(stderr, "usage: test_task_deadline COORDINATOR\n"), 2;
    zsys_init();
    zsys_set_logstream(NULL);
    char home[600], spec[700], key[41];
    CHECK(fed_prepare(argv[1], "fedd", 600, 100, 5, home, sizeof home, spec, sizeof spec, key) == 0);
    const char *extra[] = {"--block-size", "100", "--start-deadline", "2", NULL};
    pid_t coord = fed_start(argv[1], home, ENDPOINT, spec, extra);
    fed_client_t a;
    fed_client_open(&a, ENDPOINT, key);
    reg(&a, "alice");
    bf_msg_t *r = fed_req(&a, "RECHARGE");
    bf_msg_set_str(r, "amount", "10.00");
    bf_msg_t *rep = call(&a, r);
    expect_ok(rep, "recharge");
    bf_msg_destroy(&rep);

    create(&a, "lonely");
    CHECK(!strcmp(cash(&a), "6.00")); /* the pool is in escrow */
    CHECK(!strcmp(task_state(&a, "lonely"), "waiting"));
    create(&a, "withdrawn");
    r = fed_req(&a, "TASK_CANCEL");
    bf_msg_set_str(r, "task", "withdrawn");
    rep = call(&a, r);
    expect_ok(rep, "cancel");
    bf_msg_destroy(&rep);
    CHECK(!strcmp(task_state(&a, "withdrawn"), "cancelled"));
    const char *st = "";
    for (int i = 0; i < 100 && strcmp(st, "cancelled"); i++) {
        zclock_sleep(100);
        st = task_state(&a, "lonely");
    }
    CHECK_MSG(!strcmp(st, "cancelled"), "state %s", st);
    CHECK_MSG(!strcmp(cash(&a), "10.00"), "cash after both refunds: %s", cash(&a));
    fed_stop(coord, SIGTERM);
    char out[700];
    snprintf(out, sizeof out, "%s.verify", home);
    const char *vargs[] = {"ledger", "verify", "--home", home, NULL};
    CHECK(bf_spawn(argv[1], vargs, out, 1) == 0);
    fed_client_close(&a);
    return bf_test_done("test_task_deadline");
}

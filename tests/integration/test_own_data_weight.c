/* test_own_data_weight.c: a participant that JOINs with own data declares 10^9 images and claims
 * them in its UPDATE; the coordinator cannot check a declared count, so FedAvg weighs it at most
 * as the largest block holder (300 images here): the round's checkpoint is the mean of the three
 * updates weighted 300 / 300 / 300, and its `contributed` is 300. A second task whose creator set
 * own_data_cap 120 weighs the same update 120 (and STATUS shows the cap). On a real coordinator
 * over CURVE. usage: test_own_data_weight COORDINATOR */
#include "fed_participant.h"

#define ENDPOINT "tcp://127.0.0.1:27764"

/* Creates task id (own_data_cap cap, 0: none), alice and bob join for blocks, carol with "own"
 * data (a copy of alice's) declared and claimed as a billion; one round; the checkpoint must be
 * the FedAvg of the three with carol weighed `weight`, which STATUS shows as her contributed and
 * as the task's own_data_cap. */
static void run_task(const char *home, part_t *p, const char *id, int64_t cap, int64_t weight) {
    bf_msg_t *r = fed_req(&p[0].c, "TASK_CREATE");
    bf_msg_set_str(r, "task", id), bf_msg_set_str(r, "name", "own data"), bf_msg_set_str(r, "model", "cnn");
    bf_msg_set_str(r, "dataset", "tiny"), bf_msg_set_uint(r, "rounds", 1), bf_msg_set_str(r, "mode", "shareholding");
    bf_msg_set_uint(r, "min_clients", 3), bf_msg_set_uint(r, "local_epochs", 1), bf_msg_set_uint(r, "batch", 32);
    bf_msg_set_double(r, "lr", 0.05), bf_msg_set_uint(r, "round_timeout", 60), bf_msg_set_str(r, "partition", "iid");
    bf_msg_set_str(r, "strategy", "fedavg");
    if (cap) bf_msg_set_uint(r, "own_data_cap", (uint64_t)cap);
    bf_msg_t *rep = call(&p[0].c, r);
    expect_ok(rep, "task create");
    bf_msg_destroy(&rep);
    for (int i = 0; i < 2; i++) join_and_fetch(&p[i], id);
    r = fed_req(&p[2].c, "JOIN");
    bf_msg_set_str(r, "task", id), bf_msg_set_bool(r, "own_data", 1), bf_msg_set_uint(r, "samples", 1000000000);
    rep = call(&p[2].c, r);
    CHECK_MSG(fed_is(rep, "JOINED"), "own-data join: %s", rep ? fed_code(rep) : "timeout");
    bf_msg_destroy(&rep);
    bf_err_t err;
    bf_dataset_free(&p[2].data);
    CHECK(bf_dataset_alloc(&p[2].data, p[0].data.n, 1, 16, 16, 10, &err) == 0);
    memcpy(p[2].data.pixels, p[0].data.pixels, (size_t)p[0].data.n * 256);
    memcpy(p[2].data.labels, p[0].data.labels, (size_t)p[0].data.n);
    p[2].claim = 1000000000;
    p[2].poison = 3; /* its update differs from alice's, so its weight shows in the mean */
    p[2].samples = 0;
    for (int i = 0; i < 3; i++) train_round(&p[i], id, 0);
    p[2].samples = weight; /* the weight it must have been given */
    int idx[3] = {0, 1, 2};
    check_fedavg_subset(home, id, p, idx, 3, 0, NULL);

    r = fed_req(&p[0].c, "TASK_STATUS");
    bf_msg_set_str(r, "task", id);
    rep = call(&p[0].c, r);
    const msgpack_object *st = rep ? bf_msg_any(rep, "status") : NULL;
    const msgpack_object *parts = st ? bf_mp_get(st, "participants") : NULL, *c = st ? bf_mp_get(st, "own_data_cap") : NULL;
    CHECK(parts && parts->type == MSGPACK_OBJECT_ARRAY && parts->via.array.size == 3);
    const msgpack_object *v = parts && parts->via.array.size == 3 ? bf_mp_get(&parts->via.array.ptr[2], "contributed") : NULL;
    CHECK_MSG(v && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER && v->via.u64 == (uint64_t)weight,
              "task %s: carol's contributed: %lld, want %lld", id, v ? (long long)v->via.u64 : -1LL, (long long)weight);
    CHECK_MSG(c && c->type == MSGPACK_OBJECT_POSITIVE_INTEGER && c->via.u64 == (uint64_t)weight,
              "task %s: STATUS.own_data_cap %lld, want %lld", id, c ? (long long)c->via.u64 : -1LL, (long long)weight);
    bf_msg_destroy(&rep);
}

int main(int argc, char **argv) {
    if (argc < 2) return fprintf(stderr, "usage: test_own_data_weight COORDINATOR\n"), 2;
    zsys_init();
    zsys_set_logstream(NULL);
    char home[600], spec[700], key[41];
    CHECK(fed_prepare(argv[1], "owd", 1100, 100, 31, home, sizeof home, spec, sizeof spec, key) == 0);
    const char *extra[] = {"--block-size", "100", "--blocks-per-join", "3", "--liveness", "10",
                           "--bn-recalibrate", "0", NULL};
    pid_t coord = fed_start(argv[1], home, ENDPOINT, spec, extra);
    part_t p[3];
    const char *names[3] = {"alice", "bob", "carol"};
    for (int i = 0; i < 3; i++) {
        memset(&p[i], 0, sizeof p[i]);
        fed_client_open(&p[i].c, ENDPOINT, key);
        reg(&p[i].c, names[i]);
    }
    run_task(home, p, "own", 0, 300);
    run_task(home, p, "own2", 120, 120);
    fed_stop(coord, SIGTERM);
    fed_finish(argv[1], home, p, 3, &p[0].c);
    return bf_test_done("test_own_data_weight");
}

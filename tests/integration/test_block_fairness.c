/* test_block_fairness.c: data blocks are shared out fairly, on a real coordinator over CURVE.
 * (1) Default block size, 3,000 images (2,700 after the validation split), min_clients 3: the
 * blocks are small enough for three whole JOINs (15 blocks of 180 images, 5 each), and a fourth
 * JOIN, with no block left and no data of its own, is refused (BAD_STATE, saying so) and not
 * counted as a participant, while a JOIN with own data still gets in. (2) --block-size 100 on
 * 1,100 images (9 blocks), --blocks-per-join 5, min_clients 3: before the task starts each joiner
 * takes at most its fair part (3, 3, 3), not 5, 4 and nothing. usage: test_block_fairness COORDINATOR */
#include "fed_participant.h"

#define ENDPOINT "tcp://127.0.0.1:27766"

static void create(fed_client_t *c, const char *task, int min_clients) {
    bf_msg_t *r = fed_req(c, "TASK_CREATE");
    bf_msg_set_str(r, "task", task), bf_msg_set_str(r, "name", task), bf_msg_set_str(r, "model", "cnn");
    bf_msg_set_str(r, "dataset", "tiny"), bf_msg_set_uint(r, "rounds", 1), bf_msg_set_str(r, "mode", "shareholding");
    bf_msg_set_uint(r, "min_clients", (uint64_t)min_clients), bf_msg_set_uint(r, "local_epochs", 1);
    bf_msg_set_uint(r, "batch", 32), bf_msg_set_double(r, "lr", 0.05), bf_msg_set_uint(r, "round_timeout", 60);
    bf_msg_set_str(r, "partition", "iid"), bf_msg_set_str(r, "strategy", "fedavg");
    bf_msg_t *rep = call(c, r);
    expect_ok(rep, "task create");
    bf_msg_destroy(&rep);
}

/* JOIN: the number of blocks (block_size in *bs), or -1 with the error code in code */
static int join(fed_client_t *c, const char *task, int own, int *bs, char *code, size_t cap) {
    bf_msg_t *r = fed_req(c, "JOIN");
    bf_msg_set_str(r, "task", task), bf_msg_set_bool(r, "own_data", own);
    if (own) bf_msg_set_uint(r, "samples", 50);
    bf_msg_t *rep = call(c, r);
    int n = -1;
    code[0] = 0;
    if (fed_is(rep, "JOINED")) {
        const msgpack_object *b = bf_msg_any(rep, "blocks");
        n = b && b->type == MSGPACK_OBJECT_ARRAY ? (int)b->via.array.size : -2;
        if (bs) *bs = (int)bf_msg_uint(rep, "block_size", 0);
    } else {
        snprintf(code, cap, "%s: %s", rep ? fed_code(rep) : "timeout",
                 fed_is(rep, "ERROR") && bf_msg_str(rep, "message") ? bf_msg_str(rep, "message") : "");
    }
    bf_msg_destroy(&rep);
    return n;
}

static int participants(fed_client_t *c, const char *task) {
    bf_msg_t *r = fed_req(c, "TASK_STATUS");
    bf_msg_set_str(r, "task", task);
    bf_msg_t *rep = call(c, r);
    const msgpack_object *parts = rep ? bf_mp_get(bf_msg_any(rep, "status"), "participants") : NULL;
    int n = parts && parts->type == MSGPACK_OBJECT_ARRAY ? (int)parts->via.array.size : -1;
    bf_msg_destroy(&rep);
    return n;
}

int main(int argc, char **argv) {
    if (argc < 2) return fprintf(stderr, "usage: test_block_fairness COORDINATOR\n"), 2;
    zsys_init();
    zsys_set_logstream(NULL);
    char home[600], spec[700], key[41], code[600];
    fed_client_t c[5];
    const char *names[5] = {"alice", "bob", "carol", "dave", "erin"};

    /* (1) the default block size */
    CHECK(fed_prepare(argv[1], "fair", 3000, 100, 51, home, sizeof home, spec, sizeof spec, key) == 0);
    pid_t coord = fed_start(argv[1], home, ENDPOINT, spec, NULL);
    for (int i = 0; i < 5; i++) fed_client_open(&c[i], ENDPOINT, key), reg(&c[i], names[i]);
    create(&c[0], "small", 3);
    for (int i = 0; i < 3; i++) {
        int bs = 0, n = join(&c[i], "small", 0, &bs, code, sizeof code);
        CHECK_MSG(n == 5 && bs == 180, "%s: %d blocks of %d %s", names[i], n, bs, code);
    }
    int n = join(&c[3], "small", 0, NULL, code, sizeof code);
    CHECK_MSG(n == -1 && strstr(code, "BAD_STATE") && strstr(code, "no free data block"), "dave: %d blocks %s", n, code);
    CHECK_MSG(participants(&c[0], "small") == 3, "participants: %d", participants(&c[0], "small"));
    n = join(&c[4], "small", 1, NULL, code, sizeof code);
    CHECK_MSG(n == 0, "erin with own data: %d %s", n, code);
    CHECK(participants(&c[0], "small") == 4);
    fed_stop(coord, SIGTERM);
    for (int i = 0; i < 5; i++) fed_client_close(&c[i]);

    /* (2) a fixed block size: the fair part before the start */
    CHECK(fed_prepare(argv[1], "fair2", 1100, 100, 52, home, sizeof home, spec, sizeof spec, key) == 0);
    const char *extra[] = {"--block-size", "100", "--blocks-per-join", "5", NULL};
    coord = fed_start(argv[1], home, ENDPOINT, spec, extra);
    for (int i = 0; i < 4; i++) fed_client_open(&c[i], ENDPOINT, key), reg(&c[i], names[i]);
    create(&c[0], "fixed", 3);
    for (int i = 0; i < 3; i++) {
        n = join(&c[i], "fixed", 0, NULL, code, sizeof code);
        CHECK_MSG(n == 3, "%s: %d blocks %s", names[i], n, code);
    }
    n = join(&c[3], "fixed", 0, NULL, code, sizeof code);
    CHECK_MSG(n == -1 && strstr(code, "BAD_STATE"), "dave: %d blocks %s", n, code);
    CHECK(participants(&c[0], "fixed") == 3);
    fed_stop(coord, SIGTERM);
    for (int i = 0; i < 4; i++) fed_client_close(&c[i]);
    if (bf_test_failures) {
        char log[700];
        snprintf(log, sizeof log, "%s.log", home);
        fprintf(stderr, "--- coordinator log ---\n%s\n", bf_slurp(log));
    }
    return bf_test_done("test_block_fairness");
}

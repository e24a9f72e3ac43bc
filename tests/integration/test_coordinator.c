/* test_coordinator.c: a real coordinator process on loopback with CURVE, driven by three
 * participants (each with its own key) that train locally with the real engine:
 *  - a task completes 3 rounds, and every round's checkpoint equals the sample-weighted average
 *    of the models the participants returned (checked numerically, BN buffers included);
 *  - a key cannot act for another account (unregistered key, someone else's task or block);
 *  - a hostile peer sending random bytes and malformed msgpack during a round gets errors and
 *    does not disturb the round;
 *  - stale and duplicate updates are refused; the ledger verifies and the reward pool is split.
 * usage: test_coordinator COORDINATOR_BINARY */
#include "bf_mp.h"
#include "bf_trainer.h"
#include "fed_common.h"

#define ENDPOINT "tcp://127.0.0.1:27711"

static const char *server_key_g;

static bf_msg_t *call(fed_client_t *c, bf_msg_t *req) { return fed_call(c, req); }

static void expect_ok(bf_msg_t *rep, const char *what) {
    CHECK_MSG(rep && !fed_is(rep, "ERROR"), "%s: %s %s", what, rep ? fed_code(rep) : "timeout",
              rep && fed_is(rep, "ERROR") ? bf_msg_str(rep, "message") : "");
}

static void reg(fed_client_t *c, const char *name) {
    bf_msg_t *r = fed_req(c, "REGISTER");
    bf_msg_set_str(r, "name", name);
    bf_msg_t *rep = call(c, r);
    expect_ok(rep, "register");
    bf_msg_destroy(&rep);
}

typedef struct {
    fed_client_t c;
    bf_dataset_t data;
    float *params, *buffers; /* the update sent in the current round */
    size_t np, nb;
    int64_t samples;
} part_t;

/* JOIN, then every assigned block with its digest checked, concatenated into one dataset. */
static void join_and_fetch(part_t *p, const char *task) {
    bf_msg_t *r = fed_req(&p->c, "JOIN");
    bf_msg_set_str(r, "task", task);
    bf_msg_set_bool(r, "own_data", 0);
    bf_msg_t *joined = call(&p->c, r);
    CHECK(fed_is(joined, "JOINED"));
    const msgpack_object *blocks = joined ? bf_msg_any(joined, "blocks") : NULL;
    int nb = blocks && blocks->type == MSGPACK_OBJECT_ARRAY ? (int)blocks->via.array.size : 0;
    CHECK(nb == 3);
    bf_err_t err;
    CHECK(bf_dataset_alloc(&p->data, nb * 100, 1, 16, 16, 10, &err) == 0);
    for (int i = 0; i < nb; i++) {
        bf_msg_t *g = fed_req(&p->c, "BLOCK_GET");
        bf_msg_set_str(g, "task", task);
        bf_msg_set_uint(g, "block", blocks->via.array.ptr[i].via.u64);
        bf_msg_t *b = call(&p->c, g);
        CHECK(fed_is(b, "BLOCK") && bf_msg_uint(b, "n", 0) == 100);
        if (!fed_is(b, "BLOCK")) {
            bf_msg_destroy(&b);
            continue;
        }
        size_t lp, ll;
        const uint8_t *px = bf_msg_frame(b, 0, &lp), *lb = bf_msg_frame(b, 1, &ll);
        char hex[65];
        bf_block_digest(100, 1, 16, 16, px, lb, hex);
        CHECK(!strcmp(hex, bf_msg_str(b, "sha256")));
        memcpy(p->data.pixels + (size_t)i * 100 * 256, px, lp);
        memcpy(p->data.labels + (size_t)i * 100, lb, ll);
        bf_msg_destroy(&b);
    }
    bf_msg_destroy(&joined);
}

/* One participant's round: ROUND_GET until ROUND, train one epoch locally, UPDATE. */
static int train_round(part_t *p, const char *task, int expect_round) {
    bf_msg_t *rep = NULL;
    for (int tries = 0; tries < 200; tries++) {
        bf_msg_t *r = fed_req(&p->c, "ROUND_GET");
        bf_msg_set_str(r, "task", task);
        rep = call(&p->c, r);
        if (!fed_is(rep, "WAIT")) break;
        bf_msg_destroy(&rep);
        zclock_sleep(100);
    }
    CHECK_MSG(fed_is(rep, "ROUND"), "expected ROUND, got %s", rep ? bf_msg_type(rep) : "timeout");
    if (!fed_is(rep, "ROUND")) return bf_msg_destroy(&rep), -1;
    CHECK((int)bf_msg_uint(rep, "round", 99) == expect_round);
    bf_err_t err;
    bf_net_t *net = bf_net_new(bf_msg_str(rep, "arch"), 1, 16, 16, 10, 32, 1, &err);
    p->np = bf_net_num_params(net);
    p->nb = bf_net_num_buffers(net);
    CHECK(bf_msg_frame_f32(rep, 0, bf_net_params(net), p->np) == 0);
    CHECK(bf_msg_frame_f32(rep, 1, bf_net_buffers(net), p->nb) == 0);
    float mean = 0, std = 1;
    const msgpack_object *pre = bf_msg_any(rep, "preprocess");
    double v;
    if (!bf_mp_as_double(&bf_mp_get(pre, "mean")->via.array.ptr[0], &v)) mean = (float)v;
    if (!bf_mp_as_double(&bf_mp_get(pre, "std")->via.array.ptr[0], &v)) std = (float)v;
    bf_train_opts_t o = {.batch = 32, .lr = bf_msg_double(rep, "lr", 0.05), .schedule = "constant", .momentum = 0.9,
                         .weight_decay = 5e-4, .seed = bf_msg_uint(rep, "seed", 1)};
    bf_trainer_t *tr = bf_trainer_new(net, &o, &p->data, &mean, &std, 1, &err);
    bf_progress_t pr;
    CHECK(tr && bf_trainer_epoch(tr, NULL, NULL, &pr) == 0);
    free(p->params), free(p->buffers);
    p->params = malloc(sizeof(float) * p->np);
    p->buffers = malloc(sizeof(float) * (p->nb + 1));
    memcpy(p->params, bf_net_params(net), sizeof(float) * p->np);
    memcpy(p->buffers, bf_net_buffers(net), sizeof(float) * p->nb);
    p->samples = p->data.n;
    bf_msg_t *u = fed_req(&p->c, "UPDATE");
    bf_msg_set_str(u, "task", task);
    bf_msg_set_uint(u, "round", (uint64_t)expect_round);
    bf_msg_set_uint(u, "samples", (uint64_t)p->samples);
    bf_msg_set_double(u, "loss", pr.loss);
    bf_msg_add_f32(u, p->params, p->np);
    bf_msg_add_f32(u, p->buffers, p->nb);
    bf_msg_t *ok = call(&p->c, u);
    expect_ok(ok, "update");
    bf_msg_destroy(&ok);
    bf_trainer_destroy(&tr);
    bf_net_destroy(&net);
    bf_msg_destroy(&rep);
    return 0;
}

/* The checkpoint of round r must be the sample-weighted mean of the three updates. */
static void check_fedavg(const char *home, part_t *parts, int k, int round) {
    char path[700];
    snprintf(path, sizeof path, "%s/checkpoints/t1/round-%04d.bfm", home, round);
    bf_err_t err;
    bf_model_meta_t meta;
    bf_net_t *g = NULL;
    for (int tries = 0; tries < 100 && !g; tries++) { /* written by the coordinator's worker */
        g = bf_model_load(path, 1, 1, &meta, &err);
        if (!g) zclock_sleep(100);
    }
    CHECK_MSG(g != NULL, "%s", err.msg);
    if (!g) return;
    double worst = 0, total = 0;
    for (int i = 0; i < k; i++) total += (double)parts[i].samples;
    for (size_t j = 0; j < parts[0].np; j++) {
        double s = 0;
        for (int i = 0; i < k; i++) s += (double)parts[i].samples * parts[i].params[j];
        worst = fmax(worst, fabs(s / total - bf_net_params(g)[j]));
    }
    for (size_t j = 0; j < parts[0].nb; j++) {
        double s = 0;
        for (int i = 0; i < k; i++) s += (double)parts[i].samples * parts[i].buffers[j];
        worst = fmax(worst, fabs(s / total - bf_net_buffers(g)[j]));
    }
    printf("round %d: checkpoint vs weighted mean of %d updates: max |diff| %.3g\n", round, k, worst);
    CHECK(worst < 1e-6);
    bf_net_destroy(&g);
}

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

int main(int argc, char **argv) {
    if (argc < 2) return fprintf(stderr, "usage: test_coordinator COORDINATOR\n"), 2;
    zsys_init();
    zsys_set_logstream(NULL);
    char dir[512], home[600], spec[700], key[41];
    snprintf(dir, sizeof dir, "%s/fed-data", bf_test_tmpdir());
    snprintf(home, sizeof home, "%s/fed-home", bf_test_tmpdir());
    mkdir(dir, 0755);
    fed_write_split(dir, "train", 1100, 1);
    fed_write_split(dir, "t10k", 200, 2);
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s.log'", home, home);
    CHECK(system(cmd) == 0);
    CHECK(fed_init_home(argv[1], home, key) == 0);
    server_key_g = key;
    snprintf(spec, sizeof spec, "tiny=%s", dir);
    const char *extra[] = {"--block-size", "100", "--blocks-per-join", "3", "--liveness", "30", NULL};
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
        check_fedavg(home, p, 3, round);
    }
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
    for (int i = 0; i < 3; i++) {
        fed_client_close(&p[i].c);
        bf_dataset_free(&p[i].data);
        free(p[i].params), free(p[i].buffers);
    }
    fed_client_close(&mallory);
    if (bf_test_failures) {
        snprintf(out, sizeof out, "%s.log", home);
        fprintf(stderr, "--- coordinator log ---\n%s\n", bf_slurp(out));
    }
    return bf_test_done("test_coordinator");
}

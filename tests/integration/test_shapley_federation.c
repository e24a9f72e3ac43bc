/* test_shapley_federation.c: contributions end to end. Four participants of a reward task:
 * alice trains on randomly permuted labels (a poisoner), bob and carol on their own blocks, and dave
 * on an exact copy of carol's data (with the same seed his updates equal hers). After the task:
 *  - alice has the lowest cumulative Shapley value and no reward (her value is not positive);
 *  - carol and dave, identical players, have equal values and rewards within one cent;
 *  - the pool splits to the exact cent (rewards sum to the pool) and the ledger verifies.
 * With "surrogate" the coordinator values every round with the budgeted estimator instead of
 * exactly (--shapley-exact-max 3, budget 10 of the 16 coalitions), and its log must say so.
 * usage: test_shapley_federation COORDINATOR [surrogate] */
#include "fed_participant.h"

static const char *server_key_g;

static double cents_of(const char *s) { return s ? llround(atof(s) * 100) : -1; }

static const char *cash_of(fed_client_t *c) {
    static char v[32];
    bf_msg_t *rep = call(c, fed_req(c, "ASSETS_GET"));
    const msgpack_object *o = rep ? bf_mp_get(bf_msg_any(rep, "assets"), "cash") : NULL;
    snprintf(v, sizeof v, "%.*s", o && o->type == MSGPACK_OBJECT_STR ? (int)o->via.str.size : 0, o ? o->via.str.ptr : "");
    bf_msg_destroy(&rep);
    return v;
}

int main(int argc, char **argv) {
    if (argc < 2) return fprintf(stderr, "usage: test_shapley_federation COORDINATOR [surrogate]\n"), 2;
    int estimator = argc > 2 && !strcmp(argv[2], "surrogate");
    const char *ENDPOINT = estimator ? "tcp://127.0.0.1:27718" : "tcp://127.0.0.1:27716";
    zsys_init();
    zsys_set_logstream(NULL);
    char home[600], spec[700], key[41];
    CHECK(fed_prepare(argv[1], estimator ? "fedsur" : "feds", 1500, 300, 11, home, sizeof home, spec, sizeof spec, key) == 0);
    server_key_g = key;
    const char *extra[] = {"--block-size", "100", "--blocks-per-join", "3", "--liveness", "30", "--verbose",
                           estimator ? "--shapley-exact-max" : NULL, "3", "--shapley-budget", "10", NULL};
    pid_t coord = fed_start(argv[1], home, ENDPOINT, spec, extra);

    fed_client_t erin;
    fed_client_open(&erin, ENDPOINT, key);
    reg(&erin, "erin");
    bf_msg_t *r = fed_req(&erin, "RECHARGE");
    bf_msg_set_str(r, "amount", "10.00");
    bf_msg_t *rep = call(&erin, r);
    expect_ok(rep, "recharge");
    bf_msg_destroy(&rep);
    r = fed_req(&erin, "TASK_CREATE");
    bf_msg_set_str(r, "task", "v"), bf_msg_set_str(r, "name", "valuation"), bf_msg_set_str(r, "model", "cnn");
    bf_msg_set_str(r, "dataset", "tiny"), bf_msg_set_uint(r, "rounds", 2), bf_msg_set_str(r, "mode", "reward");
    bf_msg_set_str(r, "pool", "10.00"), bf_msg_set_uint(r, "min_clients", 4), bf_msg_set_uint(r, "local_epochs", 1);
    bf_msg_set_uint(r, "batch", 32), bf_msg_set_double(r, "lr", 0.05), bf_msg_set_uint(r, "round_timeout", 120);
    bf_msg_set_str(r, "partition", "iid"), bf_msg_set_str(r, "strategy", "fedavg");
    rep = call(&erin, r);
    expect_ok(rep, "task create");
    bf_msg_destroy(&rep);

    part_t p[4];
    const char *names[4] = {"alice", "bob", "carol", "dave"};
    for (int i = 0; i < 4; i++) {
        memset(&p[i], 0, sizeof p[i]);
        fed_client_open(&p[i].c, ENDPOINT, key);
        reg(&p[i].c, names[i]);
        join_and_fetch(&p[i], "v");
    }
    bf_rng_t rng; /* alice's labels: a random permutation, unrelated to her images */
    bf_rng_seed(&rng, 99);
    for (int i = p[0].data.n - 1; i > 0; i--) {
        int k = (int)bf_rng_below(&rng, (uint32_t)i + 1);
        uint8_t t = p[0].data.labels[i];
        p[0].data.labels[i] = p[0].data.labels[k], p[0].data.labels[k] = t;
    }
    for (int i = 0; i < p[0].data.n; i++) p[0].data.labels[i] = (uint8_t)((p[0].data.labels[i] + 1 + i % 3) % 4);
    memcpy(p[3].data.pixels, p[2].data.pixels, (size_t)p[2].data.n * 256); /* dave = carol */
    memcpy(p[3].data.labels, p[2].data.labels, (size_t)p[2].data.n);

    for (int round = 0; round < 2; round++)
        for (int i = 0; i < 4; i++) train_round(&p[i], "v", round);
    bf_msg_t *done = NULL;
    for (int tries = 0; tries < 200 && !fed_is(done, "DONE"); tries++) {
        bf_msg_destroy(&done);
        r = fed_req(&p[1].c, "ROUND_GET");
        bf_msg_set_str(r, "task", "v");
        done = call(&p[1].c, r);
        if (!fed_is(done, "DONE")) zclock_sleep(100);
    }
    CHECK(fed_is(done, "DONE"));
    bf_msg_destroy(&done);

    r = fed_req(&erin, "TASK_STATUS");
    bf_msg_set_str(r, "task", "v");
    rep = call(&erin, r);
    const msgpack_object *parts = rep ? bf_mp_get(bf_msg_any(rep, "status"), "participants") : NULL;
    double value[4] = {0};
    CHECK(parts && parts->type == MSGPACK_OBJECT_ARRAY && parts->via.array.size == 4);
    for (uint32_t i = 0; parts && i < parts->via.array.size && i < 4; i++)
        bf_mp_as_double(bf_mp_get(&parts->via.array.ptr[i], "shapley"), &value[i]);
    bf_msg_destroy(&rep);
    printf("cumulative Shapley: alice %+.4f bob %+.4f carol %+.4f dave %+.4f\n", value[0], value[1], value[2], value[3]);
    CHECK(value[0] < value[1] && value[0] < value[2] && value[0] < value[3]);
    CHECK_NEAR(value[2], value[3], 1e-9);

    double cents[4], total = 0;
    for (int i = 0; i < 4; i++) total += cents[i] = cents_of(cash_of(&p[i].c));
    printf("rewards (cents): alice %.0f bob %.0f carol %.0f dave %.0f\n", cents[0], cents[1], cents[2], cents[3]);
    CHECK(total == 1000);                            /* the pool, to the cent */
    CHECK(fabs(cents[2] - cents[3]) <= 1);           /* identical players */
    CHECK(value[0] > 0 || cents[0] == 0);            /* a non-positive value earns nothing */
    CHECK(cents[0] <= cents[1] && cents[0] <= cents[2]);

    fed_stop(coord, SIGTERM);
    char out[700];
    snprintf(out, sizeof out, "%s.log", home);
    const char *log = bf_slurp(out);
    CHECK(log && strstr(log, estimator ? "10 coalitions valued, surrogate)" : "16 coalitions valued, exact)"));
    snprintf(out, sizeof out, "%s.verify", home);
    const char *vargs[] = {"ledger", "verify", "--home", home, NULL};
    CHECK(bf_spawn(argv[1], vargs, out, 1) == 0);
    for (int i = 0; i < 4; i++) {
        fed_client_close(&p[i].c);
        bf_dataset_free(&p[i].data);
        free(p[i].params), free(p[i].buffers), free(p[i].global);
    }
    fed_client_close(&erin);
    if (bf_test_failures) {
        snprintf(out, sizeof out, "%s.log", home);
        fprintf(stderr, "--- coordinator log ---\n%s\n", bf_slurp(out));
    }
    return bf_test_done("test_shapley_federation");
}

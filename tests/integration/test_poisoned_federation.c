/* test_poisoned_federation.c: a participant whose update is finite but huge (every parameter
 * x 1e30), valued by validation loss, with a real coordinator process: any coalition model with it
 * overflows to inf / NaN logits. The coordinator must keep serving, value both rounds with finite
 * numbers, give the poisoner the lowest cumulative value and no reward, and split the pool among
 * the others to the cent. The median strategy keeps the global model sane, so the honest
 * participants can train the second round. Run with "surrogate" for the budgeted estimator's path
 * (its fit refuses non-finite predictions; the layer estimator takes over).
 * usage: test_poisoned_federation COORDINATOR [surrogate] */
#include <math.h>

#include "fed_participant.h"

static double cents_of(const char *s) { return s ? llround(atof(s) * 100) : -1; }

static double cash_cents(fed_client_t *c) {
    bf_msg_t *rep = call(c, fed_req(c, "ASSETS_GET"));
    const msgpack_object *o = fed_is(rep, "ASSETS") ? bf_mp_get(bf_msg_any(rep, "assets"), "cash") : NULL;
    char s[32];
    snprintf(s, sizeof s, "%.*s", o && o->type == MSGPACK_OBJECT_STR ? (int)o->via.str.size : 0, o ? o->via.str.ptr : "");
    double v = o ? cents_of(s) : -1;
    bf_msg_destroy(&rep);
    return v;
}

int main(int argc, char **argv) {
    if (argc < 2) return fprintf(stderr, "usage: test_poisoned_federation COORDINATOR [surrogate]\n"), 2;
    int surrogate = argc > 2 && !strcmp(argv[2], "surrogate");
    const char *ENDPOINT = surrogate ? "tcp://127.0.0.1:27720" : "tcp://127.0.0.1:27719";
    zsys_init();
    zsys_set_logstream(NULL);
    char home[600], spec[700], key[41];
    CHECK(fed_prepare(argv[1], surrogate ? "fedpoisur" : "fedpoi", 1500, 300, 21, home, sizeof home, spec, sizeof spec,
                      key) == 0);
    const char *extra[] = {"--block-size", "100", "--blocks-per-join", "3", "--liveness", "30", "--verbose",
                           "--utility", "loss", surrogate ? "--shapley-exact-max" : NULL, "3", "--shapley-budget", "10",
                           NULL};
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
    bf_msg_set_str(r, "task", "p"), bf_msg_set_str(r, "name", "poisoned"), bf_msg_set_str(r, "model", "cnn");
    bf_msg_set_str(r, "dataset", "tiny"), bf_msg_set_uint(r, "rounds", 2), bf_msg_set_str(r, "mode", "reward");
    bf_msg_set_str(r, "pool", "10.00"), bf_msg_set_uint(r, "min_clients", 4), bf_msg_set_uint(r, "local_epochs", 1);
    bf_msg_set_uint(r, "batch", 32), bf_msg_set_double(r, "lr", 0.05), bf_msg_set_uint(r, "round_timeout", 120);
    bf_msg_set_str(r, "partition", "iid"), bf_msg_set_str(r, "strategy", "median");
    rep = call(&erin, r);
    expect_ok(rep, "task create");
    bf_msg_destroy(&rep);

    part_t p[4];
    const char *names[4] = {"mallory", "bob", "carol", "dave"};
    for (int i = 0; i < 4; i++) {
        memset(&p[i], 0, sizeof p[i]);
        fed_client_open(&p[i].c, ENDPOINT, key);
        reg(&p[i].c, names[i]);
        join_and_fetch(&p[i], "p");
    }
    p[0].poison = 1e30f;
    for (int round = 0; round < 2; round++)
        for (int i = 0; i < 4; i++) train_round(&p[i], "p", round);
    bf_msg_t *done = NULL;
    for (int tries = 0; tries < 200 && !fed_is(done, "DONE"); tries++) {
        bf_msg_destroy(&done);
        r = fed_req(&p[1].c, "ROUND_GET");
        bf_msg_set_str(r, "task", "p");
        done = call(&p[1].c, r);
        if (!fed_is(done, "DONE")) zclock_sleep(100);
    }
    CHECK(fed_is(done, "DONE"));
    bf_msg_destroy(&done);

    r = fed_req(&erin, "TASK_STATUS");
    bf_msg_set_str(r, "task", "p");
    rep = call(&erin, r);
    const msgpack_object *parts = rep ? bf_mp_get(bf_msg_any(rep, "status"), "participants") : NULL;
    double value[4] = {NAN, NAN, NAN, NAN};
    CHECK(parts && parts->type == MSGPACK_OBJECT_ARRAY && parts->via.array.size == 4);
    for (uint32_t i = 0; parts && i < parts->via.array.size && i < 4; i++)
        bf_mp_as_double(bf_mp_get(&parts->via.array.ptr[i], "shapley"), &value[i]);
    bf_msg_destroy(&rep);
    printf("cumulative Shapley: mallory %+.4g bob %+.4g carol %+.4g dave %+.4g\n", value[0], value[1], value[2], value[3]);
    for (int i = 0; i < 4; i++) CHECK_MSG(isfinite(value[i]), "%s's value is not finite", names[i]);
    CHECK(value[0] < value[1] && value[0] < value[2] && value[0] < value[3]);

    double cents[4], total = 0;
    for (int i = 0; i < 4; i++) total += cents[i] = cash_cents(&p[i].c);
    printf("rewards (cents): mallory %.0f bob %.0f carol %.0f dave %.0f\n", cents[0], cents[1], cents[2], cents[3]);
    CHECK(total == 1000); /* the pool, to the cent */
    CHECK(cents[0] == 0); /* the poisoner earns nothing */

    fed_stop(coord, SIGTERM);
    char out[700];
    snprintf(out, sizeof out, "%s.log", home);
    const char *log = bf_slurp(out);
    CHECK(log && strstr(log, "round 2/2:"));
    /* the surrogate refuses the overflowing predictions; the layer estimator values the round */
    CHECK(log && strstr(log, surrogate ? "coalitions valued, layers)" : "16 coalitions valued, exact)"));
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
    return bf_test_done("test_poisoned_federation");
}

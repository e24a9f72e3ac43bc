/* test_poisoned_federation.c: a participant whose update is finite and as large as the coordinator
 * accepts (every parameter x -1e4; values beyond +-1e6 are refused, test_nonfinite; a positive
 * factor would be undone by BatchNorm's scale invariance), valued by validation loss, with a real
 * coordinator process: any coalition model with it is garbage (huge or non-finite logits) unless
 * the robust strategy outvotes it. The coordinator must keep serving, value both rounds with
 * finite numbers, give the poisoner the lowest cumulative value and no reward, and split the pool
 * among the others to the cent. The honest participants differ only in how much data they train
 * on (bob 100 images, carol 200, dave 300): their values must be ranked by it. The robust strategy
 * (median, or trimmed-mean:0.25, which cuts one update at each end of four) keeps the global model
 * sane, so the honest participants can train the second round; every coalition's model is made with
 * the same strategy (a coalition of two is their mean under either). Run with "surrogate" for the
 * budgeted estimator's path (its fit refuses non-finite predictions; the layer estimator takes over).
 * usage: test_poisoned_federation COORDINATOR [exact|surrogate] [median|trimmed-mean:0.25] */
#include "fed_participant.h"

int main(int argc, char **argv) {
    if (argc < 2) return fprintf(stderr, "usage: test_poisoned_federation COORDINATOR [surrogate] [STRATEGY]\n"), 2;
    int surrogate = argc > 2 && !strcmp(argv[2], "surrogate");
    int mode = argc > 2 && (surrogate || !strcmp(argv[2], "exact")); /* a mode given, then maybe a strategy */
    const char *strategy = argc > 2 + mode ? argv[2 + mode] : "median";
    int trimmed = !strncmp(strategy, "trimmed-mean", 12);
    const char *ENDPOINT = trimmed ? (surrogate ? "tcp://127.0.0.1:27722" : "tcp://127.0.0.1:27721")
                                   : (surrogate ? "tcp://127.0.0.1:27720" : "tcp://127.0.0.1:27719");
    zsys_init();
    zsys_set_logstream(NULL);
    char home[600], spec[700], key[41];
    char name[32];
    snprintf(name, sizeof name, "fedpoi%s%s", surrogate ? "sur" : "", trimmed ? "trim" : "");
    CHECK(fed_prepare(argv[1], name, 1500, 300, 21, home, sizeof home, spec, sizeof spec, key) == 0);
    const char *extra[] = {"--block-size", "100", "--blocks-per-join", "3", "--liveness", "30", "--verbose",
                           "--utility", "loss", surrogate ? "--shapley-exact-max" : NULL, "3", "--shapley-budget", "10",
                           NULL};
    pid_t coord = fed_start(argv[1], home, ENDPOINT, spec, extra);

    fed_client_t erin;
    fed_client_open(&erin, ENDPOINT, key);
    reg(&erin, "erin");
    fed_reward_task(&erin, "p", strategy, 4, 2);

    part_t p[4];
    const char *names[4] = {"mallory", "bob", "carol", "dave"};
    for (int i = 0; i < 4; i++) {
        memset(&p[i], 0, sizeof p[i]);
        fed_client_open(&p[i].c, ENDPOINT, key);
        reg(&p[i].c, names[i]);
        join_and_fetch(&p[i], "p");
    }
    p[0].poison = -1e4f;
    for (int i = 1; i < 4; i++) p[i].data.n = 100 * i; /* of the 300 images of its three blocks */
    for (int round = 0; round < 2; round++)
        for (int i = 0; i < 4; i++) train_round(&p[i], "p", round);
    fed_wait_done(&p[1].c, "p");
    double value[4];
    fed_values(&erin, "p", value, 4);
    printf("cumulative Shapley: mallory %+.4g bob %+.4g carol %+.4g dave %+.4g\n", value[0], value[1], value[2], value[3]);
    for (int i = 0; i < 4; i++) CHECK_MSG(isfinite(value[i]), "%s's value is not finite", names[i]);
    CHECK(value[0] < value[1] && value[0] < value[2] && value[0] < value[3]);
    CHECK_MSG(value[1] < value[2] && value[2] < value[3], "honest participants not ranked by their data under %s", strategy);

    double cents[4], total = 0;
    for (int i = 0; i < 4; i++) total += cents[i] = fed_cash_cents(&p[i].c);
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
    fed_finish(argv[1], home, p, 4, &erin);
    return bf_test_done("test_poisoned_federation");
}

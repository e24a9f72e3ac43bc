/* test_shapley_federation.c: contributions end to end. Four participants of a reward task:
 * alice trains on randomly permuted labels (a poisoner), bob and carol on their own blocks, and dave
 * on an exact copy of carol's data (with the same seed his updates equal hers). After the task:
 *  - alice has the lowest cumulative Shapley value and no reward (her value is not positive);
 *  - carol and dave, identical players, have equal values and rewards within one cent;
 *  - the pool splits to the exact cent (rewards sum to the pool) and the ledger verifies.
 * With "surrogate" the coordinator values every round with the budgeted estimator instead of
 * exactly (--shapley-exact-max 3, budget 10 of the 16 coalitions), and its log must say so.
 * With "sampled", the sampled surrogate (--shapley-sample 100, budget 14: 4 coalitions beyond the
 * 2n + 2 anchors scored on a sample; BN statistics corrected by the anchors' fit where the model has BN); its design
 * is not symmetric in carol and dave, so their values need only be within 10% of each other.
 * usage: test_shapley_federation COORDINATOR [surrogate|sampled] */
#include "fed_participant.h"

int main(int argc, char **argv) {
    if (argc < 2) return fprintf(stderr, "usage: test_shapley_federation COORDINATOR [surrogate|sampled]\n"), 2;
    int sampled = argc > 2 && !strcmp(argv[2], "sampled");
    int estimator = sampled || (argc > 2 && !strcmp(argv[2], "surrogate"));
    const char *ENDPOINT = sampled ? "tcp://127.0.0.1:27719" : estimator ? "tcp://127.0.0.1:27718" : "tcp://127.0.0.1:27716";
    zsys_init();
    zsys_set_logstream(NULL);
    char home[600], spec[700], key[41];
    CHECK(fed_prepare(argv[1], sampled ? "fedsam" : estimator ? "fedsur" : "feds", 1500, 300, 11, home, sizeof home, spec, sizeof spec, key) == 0);
    const char *extra[] = {"--block-size", "100", "--blocks-per-join", "3", "--liveness", "30", "--verbose",
                           estimator ? "--shapley-exact-max" : NULL, "3", "--shapley-budget", sampled ? "14" : "10",
                           sampled ? "--shapley-sample" : NULL, "100", NULL};
    pid_t coord = fed_start(argv[1], home, ENDPOINT, spec, extra);

    fed_client_t erin;
    fed_client_open(&erin, ENDPOINT, key);
    reg(&erin, "erin");
    fed_reward_task(&erin, "v", "fedavg", 4, 2);

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
    fed_wait_done(&p[1].c, "v");
    double value[4];
    fed_values(&erin, "v", value, 4);
    printf("cumulative Shapley: alice %+.4f bob %+.4f carol %+.4f dave %+.4f\n", value[0], value[1], value[2], value[3]);
    CHECK(value[0] < value[1] && value[0] < value[2] && value[0] < value[3]);
    if (sampled)
        CHECK(fabs(value[2] - value[3]) <= 0.1 * fmax(fabs(value[2]), fabs(value[3])));
    else
        CHECK_NEAR(value[2], value[3], 1e-9);

    double cents[4], total = 0;
    for (int i = 0; i < 4; i++) total += cents[i] = fed_cash_cents(&p[i].c);
    printf("rewards (cents): alice %.0f bob %.0f carol %.0f dave %.0f\n", cents[0], cents[1], cents[2], cents[3]);
    CHECK(total == 1000);                            /* the pool, to the cent */
    CHECK(fabs(cents[2] - cents[3]) <= (sampled ? 0.1 * fmax(cents[2], cents[3]) + 1 : 1)); /* identical players */
    CHECK(value[0] > 0 || cents[0] == 0);            /* a non-positive value earns nothing */
    CHECK(cents[0] <= cents[1] && cents[0] <= cents[2]);

    fed_stop(coord, SIGTERM);
    char out[700];
    snprintf(out, sizeof out, "%s.log", home);
    const char *log = bf_slurp(out);
    CHECK(log && strstr(log, sampled     ? "14 coalitions valued, surrogate-sampled)"
                             : estimator ? "10 coalitions valued, surrogate)"
                                         : "16 coalitions valued, exact)"));
    fed_finish(argv[1], home, p, 4, &erin);
    return bf_test_done("test_shapley_federation");
}

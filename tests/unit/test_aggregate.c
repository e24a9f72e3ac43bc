/* test_aggregate.c: each strategy against values computed by hand: sample-weighted FedAvg (BN
 * buffers too), coordinate-wise median and trimmed mean (robust to a poisoned client), FedAvgM's
 * server momentum over two rounds, and strategy parsing. */
#include <string.h>

#include "bf_models.h"
#include "test.h"

static void apply(const char *spec, float *g, float *gb, const float *const *p, const float *const *b,
                  const int64_t *n, int k, size_t np, size_t nb) {
    bf_agg_opts_t o;
    bf_err_t err;
    CHECK_MSG(bf_agg_parse(spec, &o, &err) == 0, "%s", err.msg);
    bf_agg_t *a = bf_agg_new(&o, np, nb);
    CHECK(bf_agg_apply(a, g, gb, p, b, n, k, &err) == 0);
    bf_agg_destroy(&a);
    CHECK(a == NULL);
}

int main(void) {
    /* three clients, 4 params, 2 buffers */
    float p0[4] = {1, 2, 3, 4}, p1[4] = {2, 4, 6, 8}, p2[4] = {0, 0, 0, 1000};
    float b0[2] = {1, 1}, b1[2] = {3, 5}, b2[2] = {5, 9};
    const float *P[3] = {p0, p1, p2}, *B[3] = {b0, b1, b2};
    int64_t n[3] = {1, 2, 3};
    float g[4], gb[2];

    apply("fedavg", g, gb, P, B, n, 3, 4, 2);
    for (int j = 0; j < 4; j++) /* exact in double, then rounded once to float */
        CHECK(g[j] == (float)((1.0 * p0[j] + 2.0 * p1[j] + 3.0 * p2[j]) / 6));
    CHECK_NEAR(gb[0], (1 + 6 + 15) / 6.0, 1e-6);
    CHECK_NEAR(gb[1], (1 + 10 + 27) / 6.0, 1e-6);

    apply("fedprox:0.1", g, gb, P, B, n, 3, 4, 2); /* aggregation is fedavg's */
    CHECK_NEAR(g[3], (4 + 16 + 3000) / 6.0, 1e-3);

    apply("median", g, gb, P, B, n, 3, 4, 2);
    CHECK(g[0] == 1 && g[1] == 2 && g[2] == 3 && g[3] == 8); /* the 1000 outlier is ignored */
    CHECK(gb[0] == 3 && gb[1] == 5);
    apply("median", g, gb, P, B, n, 2, 4, 2); /* even count: mean of the middle two */
    CHECK(g[0] == 1.5f && g[3] == 6.0f);

    /* trimmed mean: 10 clients, value i, plus one huge; trim 0.1 drops one at each end */
    float v[10][1], vb[10][1];
    const float *V[10], *VB[10];
    int64_t ones[10];
    for (int i = 0; i < 10; i++) v[i][0] = (float)i, vb[i][0] = 0, V[i] = v[i], VB[i] = vb[i], ones[i] = 1;
    v[9][0] = 1e9f;
    float t[1], tb[1];
    apply("trimmed-mean:0.1", t, tb, V, VB, ones, 10, 1, 1);
    CHECK_NEAR(t[0], (1 + 2 + 3 + 4 + 5 + 6 + 7 + 8) / 8.0, 1e-6);

    /* fedavgm: global 10, clients average 8 then 7; beta 0.5, server lr 1 */
    bf_agg_opts_t o;
    bf_err_t err;
    CHECK(bf_agg_parse("fedavgm:0.5", &o, &err) == 0 && o.server_momentum == 0.5);
    bf_agg_t *a = bf_agg_new(&o, 1, 0);
    float gm[1] = {10}, c1[1] = {8}, c2[1] = {7};
    const float *C1[1] = {c1}, *C2[1] = {c2}, *NB[1] = {NULL};
    int64_t one[1] = {5};
    CHECK(bf_agg_apply(a, gm, NULL, C1, NB, one, 1, &err) == 0);
    CHECK_NEAR(gm[0], 8, 1e-6); /* v = 2, g = 10 - 2 */
    CHECK(bf_agg_apply(a, gm, NULL, C2, NB, one, 1, &err) == 0);
    CHECK_NEAR(gm[0], 6, 1e-6); /* v = 0.5*2 + (8-7) = 2, g = 8 - 2 */
    size_t len;
    CHECK(bf_agg_state(a, &len)[0] == 2.0f && len == 1);
    bf_agg_destroy(&a);

    /* errors */
    CHECK(bf_agg_parse("krum", &o, &err) == -1 && strstr(err.msg, "krum"));
    CHECK(bf_agg_parse("fedprox:-1", &o, &err) == -1);
    CHECK(bf_agg_parse("trimmed-mean:0.6", &o, &err) == -1);
    CHECK(bf_agg_parse("fedavgmx", &o, &err) == -1);
    CHECK(bf_agg_parse("fedavg", &o, &err) == 0);
    a = bf_agg_new(&o, 4, 2);
    int64_t bad[3] = {1, 0, 2};
    CHECK(bf_agg_apply(a, g, gb, P, B, bad, 3, &err) == -1 && strstr(err.msg, "samples"));
    CHECK(bf_agg_apply(a, g, gb, P, B, n, 0, &err) == -1);
    bf_agg_destroy(&a);
    return bf_test_done("test_aggregate");
}

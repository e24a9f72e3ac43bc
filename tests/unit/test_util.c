/* test_util.c: the RNG is reproducible and unbiased enough for shuffles and initialization; the
 * gamma sampler has the right mean and variance and Dirichlet draws are distributions; error
 * helpers format and prefix; SHA-256 matches the standard test vector. */
#include "bf_util.h"
#include "test.h"

int main(void) {
    bf_rng_t a, b;
    bf_rng_seed(&a, 42);
    bf_rng_seed(&b, 42);
    for (int i = 0; i < 1000; i++) CHECK(bf_rng_u64(&a) == bf_rng_u64(&b));
    bf_rng_seed(&b, 43);
    CHECK(bf_rng_u64(&a) != bf_rng_u64(&b));

    /* Mean and variance of the normal generator over 200k draws: within 4 standard errors. */
    double s = 0, s2 = 0;
    int n = 200000;
    for (int i = 0; i < n; i++) {
        double x = bf_rng_normal(&a);
        s += x;
        s2 += x * x;
    }
    CHECK_NEAR(s / n, 0.0, 4.0 / sqrt(n));
    CHECK_NEAR(s2 / n, 1.0, 4.0 * sqrt(2.0 / n));

    /* bf_rng_below stays in range and hits every bucket about equally. */
    int counts[7] = {0};
    for (int i = 0; i < 70000; i++) {
        uint32_t v = bf_rng_below(&a, 7);
        CHECK(v < 7);
        if (v < 7) counts[v]++;
    }
    for (int i = 0; i < 7; i++) CHECK_MSG(abs(counts[i] - 10000) < 500, "bucket %d has %d", i, counts[i]);

    /* A shuffle is a permutation. */
    int32_t v[100], seen[100] = {0};
    for (int i = 0; i < 100; i++) v[i] = i;
    bf_rng_shuffle(&a, v, 100);
    for (int i = 0; i < 100; i++) seen[v[i]]++;
    for (int i = 0; i < 100; i++) CHECK(seen[i] == 1);

    /* Gamma(k): mean k, variance k (200k samples, 5 standard errors) */
    bf_rng_t r;
    bf_rng_seed(&r, 1);
    const double shapes[] = {0.3, 1.0, 2.5};
    for (int t = 0; t < 3; t++) {
        double s = 0, s2 = 0, k = shapes[t];
        int n = 200000;
        for (int i = 0; i < n; i++) {
            double x = bf_rng_gamma(&r, k);
            s += x, s2 += x * x;
        }
        double mean = s / n, var = s2 / n - mean * mean;
        CHECK_MSG(fabs(mean - k) < 5 * sqrt(k / n), "gamma(%g) mean %.4f", k, mean);
        CHECK_MSG(fabs(var - k) < 0.05 * k, "gamma(%g) variance %.4f", k, var);
    }

    /* Dirichlet(alpha): k non-negative shares summing to 1; mean share 1/k (50k draws). */
    double share0 = 0, dir[10];
    for (int i = 0; i < 50000; i++) {
        bf_rng_dirichlet(&r, 0.5, 10, dir);
        double sum = 0;
        int neg = 0;
        for (int k = 0; k < 10; k++) sum += dir[k], neg += dir[k] < 0;
        if (neg || fabs(sum - 1) > 1e-12) CHECK_MSG(0, "draw %d: sum %.17g, %d negative", i, sum, neg);
        share0 += dir[0];
    }
    CHECK_NEAR(share0 / 50000, 0.1, 0.005);
    bf_rng_dirichlet(&r, 1e-300, 3, dir); /* every gamma underflows: the uniform mix */
    CHECK(dir[0] == 1.0 / 3 && dir[1] == 1.0 / 3 && dir[2] == 1.0 / 3);

    bf_err_t err;
    CHECK(bf_err_set(&err, "bad %d", 7) == -1);
    CHECK(strcmp(err.msg, "bad 7") == 0);
    bf_err_prefix(&err, "file %s: ", "x");
    CHECK(strcmp(err.msg, "file x: bad 7") == 0);

    char hex[65];
    bf_sha256_hex("abc", 3, hex);
    CHECK(strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") == 0);
    return bf_test_done("test_util");
}

/* test_shapley.c: known-answer games for the Shapley code.
 *  - additive game: each player's value is its own worth (exact and budgeted);
 *  - symmetric players get equal values; a null player gets 0; efficiency: sum = U(N) - U(empty);
 *  - closed form at n = 12: U(S) = (sum of w over S)^2 gives phi_i = w_i * W (W = sum of all w);
 *  - the budgeted estimator on a diminishing-returns game (U(S) = 1 - exp(-sum w), the shape of
 *    accuracy as data is added) against exact at n = 10 and 12: relative L2 error <= 5% with at
 *    most 100 evaluations (bf_shapley.h's documented bound), and the evaluations are counted. */
#include <string.h>

#include "bf_shapley.h"
#include "test.h"

typedef struct {
    int n, kind, calls;
    double w[32];
} game_t;

enum { ADDITIVE, SYMMETRIC, NULL_PLAYER, QUADRATIC, SATURATING, RANDOM_TABLE };

static double U(void *ctx, uint32_t s) {
    game_t *g = ctx;
    g->calls++;
    double sum = 0;
    int k = 0;
    for (int i = 0; i < g->n; i++)
        if (s & (1u << i)) sum += g->w[i], k++;
    switch (g->kind) {
    case ADDITIVE: return sum;
    case SYMMETRIC: return sqrt((double)k);
    case NULL_PLAYER: return (s & 1u) ? 0.5 * sqrt(sum - g->w[0]) + 0 : 0.5 * sqrt(sum); /* player 0 adds nothing */
    case QUADRATIC: return sum * sum;
    case SATURATING: return 1 - exp(-sum);
    default: { /* an arbitrary game: pseudo-random value per coalition */
        uint64_t x = s * 0x9e3779b97f4a7c15ULL;
        x ^= x >> 31;
        return (double)(x % 1000) / 1000.0;
    }
    }
}

static double rel_l2(const double *a, const double *b, int n) {
    double d = 0, r = 0;
    for (int i = 0; i < n; i++) d += (a[i] - b[i]) * (a[i] - b[i]), r += b[i] * b[i];
    return sqrt(d / r);
}

int main(void) {
    bf_err_t err;
    bf_rng_t rng;
    bf_rng_seed(&rng, 3);
    double phi[32], est[32];
    game_t g = {0};

    g.n = 8, g.kind = ADDITIVE;
    for (int i = 0; i < 8; i++) g.w[i] = bf_rng_uniform(&rng) - 0.3;
    CHECK(bf_shapley_exact(8, U, &g, phi, &err) == 0);
    for (int i = 0; i < 8; i++) CHECK_NEAR(phi[i], g.w[i], 1e-12);
    int evals = 0;
    CHECK(bf_shapley_layers(8, U, &g, 40, 1, est, &evals, &err) == 0);
    for (int i = 0; i < 8; i++) CHECK_NEAR(est[i], g.w[i], 1e-9);
    CHECK(evals <= 40);

    g.kind = SYMMETRIC;
    CHECK(bf_shapley_exact(8, U, &g, phi, &err) == 0);
    for (int i = 1; i < 8; i++) CHECK_NEAR(phi[i], phi[0], 1e-12);
    CHECK_NEAR(phi[0], sqrt(8.0) / 8, 1e-12);

    g.kind = NULL_PLAYER;
    for (int i = 0; i < 8; i++) g.w[i] = 0.1 + bf_rng_uniform(&rng);
    CHECK(bf_shapley_exact(8, U, &g, phi, &err) == 0);
    CHECK_NEAR(phi[0], 0, 1e-12);

    g.kind = RANDOM_TABLE;
    g.n = 9;
    CHECK(bf_shapley_exact(9, U, &g, phi, &err) == 0);
    double s = 0;
    for (int i = 0; i < 9; i++) s += phi[i];
    CHECK_NEAR(s, U(&g, (1u << 9) - 1) - U(&g, 0), 1e-12);

    /* closed form at n = 12 */
    g.n = 12, g.kind = QUADRATIC;
    double W = 0;
    for (int i = 0; i < 12; i++) W += (g.w[i] = bf_rng_uniform(&rng));
    CHECK(bf_shapley_exact(12, U, &g, phi, &err) == 0);
    for (int i = 0; i < 12; i++) CHECK_NEAR(phi[i], g.w[i] * W, 1e-9);
    CHECK(bf_shapley_layers(12, U, &g, 100, 1, est, &evals, &err) == 0);
    printf("quadratic n=12: budgeted estimator rel. L2 error %.2e with %d evaluations\n", rel_l2(est, phi, 12), evals);
    CHECK(rel_l2(est, phi, 12) <= 0.05 && evals <= 100);

    /* diminishing returns, the shape of a federation's accuracy game */
    const int ns[2] = {10, 12};
    for (int t = 0; t < 2; t++) {
        int n = ns[t];
        for (int rep = 0; rep < 5; rep++) {
            g.n = n, g.kind = SATURATING;
            for (int i = 0; i < n; i++) g.w[i] = 0.02 + 0.5 * bf_rng_uniform(&rng) * bf_rng_uniform(&rng);
            CHECK(bf_shapley_exact(n, U, &g, phi, &err) == 0);
            g.calls = 0;
            CHECK(bf_shapley_layers(n, U, &g, 100, (uint64_t)rep, est, &evals, &err) == 0);
            double e = rel_l2(est, phi, n);
            printf("saturating n=%d #%d: rel. L2 error %.4f with %d evaluations (callback calls %d)\n", n, rep, e, evals,
                   g.calls);
            CHECK_MSG(e <= 0.05, "n=%d: relative error %.3f > 5%%", n, e);
            CHECK(evals <= 100 && g.calls == evals);
        }
    }
    CHECK(bf_shapley_exact(21, U, &g, phi, &err) == -1);
    CHECK(bf_shapley_layers(10, U, &g, 10, 1, est, &evals, &err) == -1);
    return bf_test_done("test_shapley");
}

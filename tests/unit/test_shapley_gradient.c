/* test_shapley_gradient.c: bf_shapley_gradient on quadratic games, where its values must be the
 * additive game's exact Shapley values:
 *  - U(theta) = b . theta - 1/2 theta' A theta (A symmetric positive definite, D = 8 parameters),
 *    n = 10 players with unequal shares c_i: values equal bf_shapley_exact's on U(theta0 + sum over
 *    S of c_i delta_i) to 1e-9 with 2 or more quadrature points, and efficiency exact;
 *  - a player whose update is 0 gets exactly 0; two identical updates get identical values;
 *  - the values are moved to sum to another total: a rescaling when they share a sign, a zero
 *    staying zero;
 *  - bad input refused (players, points, a failing or non-finite gradient);
 *  - the utilities of the logits: bf_margin_utility at tau = 1 is the mean softmax probability of
 *    the label, unchanged by a shift of an image's logits, its gradient right (central
 *    differences); bf_calibrated_xent at most the plain cross-entropy, unchanged by a temperature
 *    and class offsets, its gradient orthogonal to both and right. */
#include <math.h>
#include <string.h>

#include "bf_shapley.h"
#include "test.h"

#define D 8
#define NP 10

typedef struct {
    int n, calls, fail, nan;
    double A[D][D], b[D], theta0[D], delta[NP][D], c[NP];
} qgame_t;

static double U(const qgame_t *q, const double *th) {
    double u = 0;
    for (int i = 0; i < D; i++) {
        u += q->b[i] * th[i];
        for (int j = 0; j < D; j++) u -= 0.5 * th[i] * q->A[i][j] * th[j];
    }
    return u;
}

static double coalition(void *ctx, uint32_t S) {
    qgame_t *q = ctx;
    double th[D];
    memcpy(th, q->theta0, sizeof th);
    for (int i = 0; i < q->n; i++)
        if (S & (1u << i))
            for (int d = 0; d < D; d++) th[d] += q->c[i] * q->delta[i][d];
    return U(q, th);
}

static int grad(void *ctx, double t, double *dots) {
    qgame_t *q = ctx;
    q->calls++;
    if (q->fail) return -1;
    double th[D], g[D];
    memcpy(th, q->theta0, sizeof th);
    for (int i = 0; i < q->n; i++)
        for (int d = 0; d < D; d++) th[d] += t * q->c[i] * q->delta[i][d];
    for (int i = 0; i < D; i++) {
        g[i] = q->b[i];
        for (int j = 0; j < D; j++) g[i] -= q->A[i][j] * th[j];
    }
    for (int i = 0; i < q->n; i++) {
        dots[i] = 0;
        for (int d = 0; d < D; d++) dots[i] += g[d] * q->c[i] * q->delta[i][d];
    }
    if (q->nan) dots[1] = NAN;
    return 0;
}

static void make(qgame_t *q, uint64_t seed) {
    memset(q, 0, sizeof *q);
    bf_rng_t r;
    bf_rng_seed(&r, seed);
    q->n = NP;
    double M[D][D];
    for (int i = 0; i < D; i++) {
        q->b[i] = bf_rng_normal(&r), q->theta0[i] = bf_rng_normal(&r);
        for (int j = 0; j < D; j++) M[i][j] = bf_rng_normal(&r);
    }
    for (int i = 0; i < D; i++)
        for (int j = 0; j < D; j++) {
            q->A[i][j] = i == j ? 1 : 0;
            for (int k = 0; k < D; k++) q->A[i][j] += 0.2 * M[k][i] * M[k][j];
        }
    double W = 0;
    for (int i = 0; i < NP; i++) {
        q->c[i] = 1 + bf_rng_below(&r, 5);
        W += q->c[i];
        for (int d = 0; d < D; d++) q->delta[i][d] = bf_rng_normal(&r);
    }
    for (int i = 0; i < NP; i++) q->c[i] /= W;
}

/* The utilities of the logits (bf_margin_utility, bf_calibrated_xent) on random logits of 40
 * images x 10 classes: values, invariances and gradients against central differences. */
#define NI 40
#define NK 10
static void test_logit_utilities(void) {
    bf_rng_t r;
    bf_rng_seed(&r, 5);
    float z[NI * NK], z2[NI * NK], dz[NI * NK], dz2[NI * NK];
    int32_t y[NI];
    for (int i = 0; i < NI; i++) {
        y[i] = (int32_t)bf_rng_below(&r, NK);
        for (int k = 0; k < NK; k++) z[i * NK + k] = (float)(2 * bf_rng_normal(&r) + (k == y[i] ? 1.0 : 0.0));
    }
    /* tau = 1: the mean softmax probability of the label */
    double pm = 0;
    for (int i = 0; i < NI; i++) {
        double s = 0;
        for (int k = 0; k < NK; k++) s += exp(z[i * NK + k]);
        pm += exp(z[i * NK + y[i]]) / s / NI;
    }
    CHECK_NEAR(bf_margin_utility(z, y, NI, NK, 1, 1.0 / NI, NULL), pm, 1e-6);
    /* a shift of every logit of an image changes no margin */
    for (int i = 0; i < NI; i++)
        for (int k = 0; k < NK; k++) z2[i * NK + k] = z[i * NK + k] + (float)(i % 7) - 3;
    for (double tau = 0.25; tau <= 1; tau *= 2) {
        double u = bf_margin_utility(z, y, NI, NK, tau, 1.0 / NI, dz);
        CHECK_NEAR(bf_margin_utility(z2, y, NI, NK, tau, 1.0 / NI, NULL), u, 1e-5);
        for (int q = 0; q < NI * NK; q += 37) { /* central differences, one logit at a time */
            memcpy(z2, z, sizeof z);
            z2[q] += 1e-2f;
            double up = bf_margin_utility(z2, y, NI, NK, tau, 1.0 / NI, NULL);
            z2[q] -= 2e-2f;
            double dn = bf_margin_utility(z2, y, NI, NK, tau, 1.0 / NI, NULL);
            CHECK_NEAR(dz[q], (up - dn) / 2e-2, 2e-3 * fabs(dz[q]) + 2e-7);
        }
    }
    /* the calibrated cross-entropy: at most the plain one, the same after any temperature and class
     * offsets, its logit gradient orthogonal to both (the envelope), and the plain cross-entropy's
     * gradient at the fitted a, b */
    double ab[NK + 1], ab2[NK + 1], plain = 0;
    for (int i = 0; i < NI; i++) {
        double s = 0;
        for (int k = 0; k < NK; k++) s += exp(z[i * NK + k]);
        plain += (log(s) - z[i * NK + y[i]]) / NI;
    }
    double c = bf_calibrated_xent(z, y, NI, NK, ab, dz);
    CHECK(c <= plain + 1e-12 && c > 0);
    for (int i = 0; i < NI; i++)
        for (int k = 0; k < NK; k++) z2[i * NK + k] = 0.4f * z[i * NK + k] + 0.3f * (float)k - 1;
    CHECK_NEAR(bf_calibrated_xent(z2, y, NI, NK, ab2, dz2), c, 1e-7);
    CHECK_NEAR(ab2[0], ab[0] / 0.4, 1e-4 * fabs(ab[0]));
    double dzz = 0, norm = 0;
    for (int k = 0; k < NK; k++) {
        double col = 0;
        for (int i = 0; i < NI; i++) col += dz[i * NK + k];
        CHECK_NEAR(col, 0, 1e-7);
    }
    for (int q = 0; q < NI * NK; q++) dzz += dz[q] * z[q], norm += fabs(dz[q]);
    CHECK_NEAR(dzz, 0, 1e-7);
    CHECK(norm > 0.1);
    for (int q = 0; q < NI * NK; q += 29) {
        memcpy(z2, z, sizeof z);
        z2[q] += 1e-2f;
        double up = bf_calibrated_xent(z2, y, NI, NK, ab2, NULL);
        z2[q] -= 2e-2f;
        double dn = bf_calibrated_xent(z2, y, NI, NK, ab2, NULL);
        CHECK_NEAR(dz[q], (up - dn) / 2e-2, 1e-4 * fabs(dz[q]) + 2e-6);
    }
}

int main(void) {
    test_logit_utilities();
    bf_err_t err;
    for (int seed = 1; seed <= 3; seed++) {
        qgame_t q;
        make(&q, (uint64_t)seed);
        memset(q.delta[4], 0, sizeof q.delta[4]);                    /* a copy of the starting model */
        memcpy(q.delta[6], q.delta[5], sizeof q.delta[5]), q.c[6] = q.c[5]; /* identical players */
        double exact[NP], phi[NP], total = coalition(&q, (1u << NP) - 1) - coalition(&q, 0);
        CHECK(bf_shapley_exact(NP, coalition, &q, exact, &err) == 0);
        for (int points = 2; points <= 5; points++) {
            q.calls = 0;
            CHECK(bf_shapley_gradient(NP, grad, &q, points, total, phi, &err) == 0);
            CHECK(q.calls == points);
            double sum = 0;
            for (int i = 0; i < NP; i++) {
                CHECK_NEAR(phi[i], exact[i], 1e-9 * (1 + fabs(exact[i])));
                sum += phi[i];
            }
            CHECK_NEAR(sum, total, 1e-12 * (1 + fabs(total)));
            CHECK(phi[4] == 0);
            CHECK(phi[5] == phi[6]);
        }
        /* another total: a rescaling where the values share a sign, a zero kept */
        double own[NP], moved[NP];
        CHECK(bf_shapley_gradient(NP, grad, &q, 3, total, own, &err) == 0);
        CHECK(bf_shapley_gradient(NP, grad, &q, 3, 3 * total, moved, &err) == 0);
        double msum = 0;
        int same_sign = 1;
        for (int i = 0; i < NP; i++) msum += moved[i], same_sign &= (own[i] >= 0) == (own[0] >= 0) || own[i] == 0;
        CHECK_NEAR(msum, 3 * total, 1e-9 * (1 + fabs(total)));
        CHECK(moved[4] == 0);
        for (int i = 0; same_sign && i < NP; i++) CHECK_NEAR(moved[i], 3 * own[i], 1e-9);
    }
    qgame_t q;
    make(&q, 9);
    double phi[NP];
    CHECK(bf_shapley_gradient(0, grad, &q, 3, 0, phi, &err) == -1);
    CHECK(bf_shapley_gradient(NP, grad, &q, 0, 0, phi, &err) == -1);
    CHECK(bf_shapley_gradient(NP, grad, &q, 6, 0, phi, &err) == -1);
    q.fail = 1;
    CHECK(bf_shapley_gradient(NP, grad, &q, 3, 0, phi, &err) == -1);
    q.fail = 0, q.nan = 1;
    CHECK(bf_shapley_gradient(NP, grad, &q, 3, 0, phi, &err) == -1);
    return bf_test_done("test_shapley_gradient");
}

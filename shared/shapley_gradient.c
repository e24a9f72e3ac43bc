/* shapley_gradient.c: bf_shapley_gradient, first-order (Aumann-Shapley) values for rounds with
 * too many players for any coalition estimator: each update's effect on U integrated along the
 * straight path from the starting model to the aggregate. Pure computation; what it values and its
 * measured quality are in docs/SHAPLEY.md. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bf_shapley.h"

int bf_shapley_gradient(int n, bf_path_grad_fn f, void *ctx, int points, double total, double *phi, bf_err_t *err) {
    /* Gauss-Legendre nodes and weights on [-1, 1] */
    static const double x[5][5] = {{0},
                                   {-0.5773502691896258, 0.5773502691896258},
                                   {-0.7745966692414834, 0, 0.7745966692414834},
                                   {-0.8611363115940526, -0.3399810435848563, 0.3399810435848563, 0.8611363115940526},
                                   {-0.9061798459386640, -0.5384693101056831, 0, 0.5384693101056831, 0.9061798459386640}};
    static const double w[5][5] = {{2},
                                   {1, 1},
                                   {0.5555555555555556, 0.8888888888888888, 0.5555555555555556},
                                   {0.3478548451374538, 0.6521451548625461, 0.6521451548625461, 0.3478548451374538},
                                   {0.2369268850561891, 0.4786286704993665, 0.5688888888888889, 0.4786286704993665,
                                    0.2369268850561891}};
    if (n < 1 || n > BF_GRADIENT_MAXN) return bf_err_set(err, "gradient values need 1..%d players, got %d", BF_GRADIENT_MAXN, n);
    if (points < 1 || points > 5) return bf_err_set(err, "gradient values: 1..5 quadrature points, got %d", points);
    double *dots = malloc(sizeof(double) * n);
    if (!dots) return bf_err_set(err, "out of memory");
    memset(phi, 0, sizeof(double) * n);
    for (int q = 0; q < points; q++) {
        if (f(ctx, 0.5 + 0.5 * x[points - 1][q], dots)) return free(dots), bf_err_set(err, "the path gradient failed");
        for (int i = 0; i < n; i++) {
            if (!isfinite(dots[i])) return free(dots), bf_err_set(err, "a path gradient is not finite");
            phi[i] += 0.5 * w[points - 1][q] * dots[i];
        }
    }
    free(dots);
    double sum = 0, mass = 0;
    for (int i = 0; i < n; i++) sum += phi[i], mass += fabs(phi[i]);
    for (int i = 0; i < n; i++) phi[i] += mass > 0 ? (total - sum) * fabs(phi[i]) / mass : (total - sum) / n;
    return 0;
}

double bf_margin_utility(const float *logits, const int32_t *y, int n, int K, double tau, double scale, float *dlogits) {
    double sum = 0;
    for (int i = 0; i < n; i++) {
        const float *z = logits + (size_t)i * K;
        int c = y[i];
        double mx = -INFINITY, s = 0;
        for (int k = 0; k < K; k++)
            if (k != c && z[k] > mx) mx = z[k];
        for (int k = 0; k < K; k++)
            if (k != c) s += exp(z[k] - mx);
        double m = (z[c] - mx - log(s)) / tau;
        double u = m >= 0 ? 1 / (1 + exp(-m)) : exp(m) / (1 + exp(m)); /* sigmoid, no overflow */
        sum += u;
        if (dlogits) {
            double g = scale * u * (1 - u) / tau; /* d(scale u) / dm */
            float *dz = dlogits + (size_t)i * K;
            for (int k = 0; k < K; k++) dz[k] = k == c ? (float)g : (float)(-g * exp(z[k] - mx) / s);
        }
    }
    return scale * sum;
}

/* mean cross-entropy of a z + b (ab = {a, b_0 .. b_K-1}); g, H (K+1, (K+1)^2) if not NULL */
static double calib_eval(const float *z, const int32_t *y, int n, int K, const double *ab, double *g, double *H,
                         double *p) {
    int P = K + 1;
    double loss = 0;
    if (g) memset(g, 0, sizeof(double) * P), memset(H, 0, sizeof(double) * P * P);
    for (int i = 0; i < n; i++) {
        const float *zi = z + (size_t)i * K;
        double mx = -INFINITY, s = 0, sz = 0, szz = 0;
        for (int k = 0; k < K; k++) p[k] = ab[0] * zi[k] + ab[1 + k], mx = p[k] > mx ? p[k] : mx;
        for (int k = 0; k < K; k++) p[k] = exp(p[k] - mx), s += p[k];
        loss += mx + log(s) - (ab[0] * zi[y[i]] + ab[1 + y[i]]);
        if (!g) continue;
        for (int k = 0; k < K; k++) p[k] /= s, sz += p[k] * zi[k], szz += p[k] * zi[k] * zi[k];
        g[0] += sz - zi[y[i]];
        H[0] += szz - sz * sz;
        for (int j = 0; j < K; j++) {
            g[1 + j] += p[j] - (j == y[i]);
            H[1 + j] += p[j] * zi[j] - p[j] * sz;
            H[(1 + j) * P + 1 + j] += p[j];
            for (int l = 0; l < K; l++) H[(1 + j) * P + 1 + l] -= p[j] * p[l];
        }
    }
    if (g) {
        for (int j = 1; j < P; j++) H[j * P] = H[j];
        for (int q = 0; q < P * P; q++) H[q] /= n;
        for (int q = 0; q < P; q++) g[q] /= n;
    }
    return loss / n;
}

/* Solves (H + ridge) d = g in place of g by Cholesky; -1 if not positive definite. */
static int chol_solve(double *H, double *g, int P) {
    for (int j = 0; j < P; j++) {
        double d = H[j * P + j];
        for (int k = 0; k < j; k++) d -= H[j * P + k] * H[j * P + k];
        if (!(d > 0)) return -1;
        H[j * P + j] = sqrt(d);
        for (int i = j + 1; i < P; i++) {
            double v = H[i * P + j];
            for (int k = 0; k < j; k++) v -= H[i * P + k] * H[j * P + k];
            H[i * P + j] = v / H[j * P + j];
        }
    }
    for (int i = 0; i < P; i++) {
        for (int k = 0; k < i; k++) g[i] -= H[i * P + k] * g[k];
        g[i] /= H[i * P + i];
    }
    for (int i = P - 1; i >= 0; i--) {
        for (int k = i + 1; k < P; k++) g[i] -= H[k * P + i] * g[k];
        g[i] /= H[i * P + i];
    }
    return 0;
}

double bf_calibrated_xent(const float *logits, const int32_t *y, int n, int K, double *ab, float *dlogits) {
    int P = K + 1;
    double *g = malloc(sizeof(double) * P), *H = malloc(sizeof(double) * P * P), *p = malloc(sizeof(double) * K);
    double *trial = malloc(sizeof(double) * P);
    if (!g || !H || !p || !trial) return free(g), free(H), free(p), free(trial), NAN;
    ab[0] = 1;
    for (int k = 0; k < K; k++) ab[1 + k] = 0;
    double loss = calib_eval(logits, y, n, K, ab, g, H, p);
    for (int it = 0; it < BF_CALIB_ITERS && isfinite(loss); it++) {
        double gmax = 0;
        for (int q = 0; q < P; q++) gmax = fmax(gmax, fabs(g[q]));
        if (gmax < 1e-9) break;
        for (int q = 0; q < P; q++) H[q * P + q] += 1e-9 + 1e-6 * H[q * P + q]; /* the b's common shift is free */
        if (chol_solve(H, g, P)) break;
        double step = 1, next = loss;
        for (int ls = 0; ls < 30; ls++, step *= 0.5) { /* backtracking: the loss is convex in (a, b) */
            for (int q = 0; q < P; q++) trial[q] = ab[q] - step * g[q];
            next = calib_eval(logits, y, n, K, trial, NULL, NULL, p);
            if (next <= loss) break;
        }
        if (!(next <= loss)) break;
        memcpy(ab, trial, sizeof(double) * P);
        if (loss - next < 1e-13) {
            loss = next;
            break;
        }
        loss = calib_eval(logits, y, n, K, ab, g, H, p);
    }
    if (dlogits) /* the envelope theorem: d loss(a* z + b*) / dz at the fitted a*, b* */
        for (int i = 0; i < n; i++) {
            const float *zi = logits + (size_t)i * K;
            double mx = -INFINITY, s = 0;
            for (int k = 0; k < K; k++) p[k] = ab[0] * zi[k] + ab[1 + k], mx = p[k] > mx ? p[k] : mx;
            for (int k = 0; k < K; k++) p[k] = exp(p[k] - mx), s += p[k];
            for (int k = 0; k < K; k++) dlogits[(size_t)i * K + k] = (float)(ab[0] * (p[k] / s - (k == y[i])) / n);
        }
    free(g), free(H), free(p), free(trial);
    return loss;
}

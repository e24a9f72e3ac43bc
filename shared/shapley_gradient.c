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

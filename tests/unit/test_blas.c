/* test_blas.c: on a CPU with AVX-512 (or AVX2), bf_blas_init must leave OpenBLAS on the fast
 * kernels matching the engine's vector path, never its generic SSE3 "Prescott" fallback, unless
 * the user chose a core; and the fast kernels compute the same sgemm as a plain triple loop. */
#include <cblas.h>
#include <string.h>

#include "bf_models.h"
#include "test.h"

int main(int argc, char **argv) {
    bf_blas_init(argc, argv); /* may re-exec this test once */
    const char *core = bf_blas_corename(), *reexec = getenv("BLOCKFED_BLAS_REEXEC");
    const char *user = reexec ? NULL : getenv("OPENBLAS_CORETYPE");
    printf("OpenBLAS core %s (%s)\n", core,
           user ? "chosen by the user" : reexec ? "set by bf_blas_init after re-exec" : "detected");
    /* the core follows the engine's path (BLOCKFED_ISA=avx2 on an AVX-512 CPU: Haswell) */
    bf_isa_t isa = bf_engine_isa();
    printf("engine path %s (best on this CPU: %s)\n", bf_engine_isa_name(), bf_isa_name(bf_isa_best()));
    if (isa == BF_ISA_GENERIC) isa = bf_isa_best();
    if (!user && isa == BF_ISA_AVX512)
        CHECK_MSG(!strcmp(core, "SkylakeX") || !strcmp(core, "Cooperlake") || !strcmp(core, "SapphireRapids"),
                  "AVX-512 path but OpenBLAS runs %s kernels", core);
    else if (!user && isa == BF_ISA_AVX2 && bf_isa_best() == BF_ISA_AVX512)
        CHECK_MSG(!strcmp(core, "Haswell"), "forced AVX2 path on an AVX-512 CPU but OpenBLAS runs %s kernels", core);
    else if (!user && isa == BF_ISA_AVX2)
        CHECK_MSG(strcmp(core, "Prescott") != 0, "AVX2 CPU but OpenBLAS runs Prescott kernels");

    /* a 37x53x29 sgemm against a double-precision triple loop */
    enum { M = 37, N = 53, K = 29 };
    static float a[M * K], b[K * N], c[M * N];
    bf_rng_t r;
    bf_rng_seed(&r, 3);
    for (int i = 0; i < M * K; i++) a[i] = (float)bf_rng_normal(&r);
    for (int i = 0; i < K * N; i++) b[i] = (float)bf_rng_normal(&r);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, a, K, b, N, 0.0f, c, N);
    double worst = 0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0;
            for (int k = 0; k < K; k++) s += (double)a[i * K + k] * b[k * N + j];
            worst = fmax(worst, fabs(s - c[i * N + j]));
        }
    CHECK_MSG(worst < 1e-4, "sgemm differs from the reference by %.3g", worst);
    return bf_test_done("test_blas");
}

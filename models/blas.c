/* blas.c: make sure OpenBLAS runs its fast kernels on this CPU, single-threaded.
 *
 * Debian's OpenBLAS 0.3.21 (DYNAMIC_ARCH) does not know recent Intel cores and picks its SSE3
 * "Prescott" kernels (fixed upstream after 0.3.21): sgemm runs several times slower than with the
 * SkylakeX kernels, with the same results (docs/ENGINE.md). OpenBLAS chooses its kernels when the
 * library loads, so the only portable fix from inside the program is to set OPENBLAS_CORETYPE and
 * exec ourselves once. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bf_models.h"

/* Cores OpenBLAS falls back to when it does not recognise a CPU. */
static int is_generic_core(const char *name) {
    static const char *const generic[] = {"Prescott", "Core2", "Penryn", "Dunnington", "Nehalem",
                                          "Atom", "Katmai", "Coppermine", "Northwood", "Banias"};
    for (size_t i = 0; i < sizeof generic / sizeof generic[0]; i++)
        if (!strcasecmp(name, generic[i])) return 1;
    return 0;
}

static const char *better_core(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
    return NULL;
}

void bf_blas_init(int argc, char **argv) {
    /* Our engine threads over sub-batches itself; nested BLAS threads would oversubscribe. */
    openblas_set_num_threads(1);
    if (getenv("OPENBLAS_CORETYPE")) return; /* the user's choice (and our re-exec's) wins */
    if (argc < 1 || !argv || !argv[0]) return; /* nothing to re-execute with */
    const char *core = openblas_get_corename();
    const char *want = better_core();
    if (!core || !want || !is_generic_core(core)) return;
    setenv("OPENBLAS_CORETYPE", want, 1);
    setenv("BLOCKFED_BLAS_REEXEC", core, 1); /* tells the new image (and tests) why the core is set */
    execv("/proc/self/exe", argv);
    /* exec failed (no /proc?): keep running on the slow kernels rather than fail */
    fprintf(stderr, "blockfed: warning: could not re-exec with OPENBLAS_CORETYPE=%s; using %s kernels\n", want,
            core);
}

const char *bf_blas_corename(void) {
    const char *name = openblas_get_corename();
    return name ? name : "unknown";
}

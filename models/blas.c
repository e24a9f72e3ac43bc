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

/* The core matching the engine's vector path: a forced AVX2 path (BLOCKFED_ISA=avx2) on an
 * AVX-512 CPU also puts OpenBLAS on its AVX2 kernels, so the path measures as it would on an AVX2
 * CPU. The generic path keeps the best core the CPU has: it exists for CPUs without AVX2, where
 * OpenBLAS's own detection of old cores is right. */
static const char *core_for(bf_isa_t isa) { return isa == BF_ISA_AVX512 ? "SkylakeX" : isa == BF_ISA_AVX2 ? "Haswell" : NULL; }

void bf_blas_init(int argc, char **argv) {
    /* Our engine threads over sub-batches itself; nested BLAS threads would oversubscribe. */
    openblas_set_num_threads(1);
    if (getenv("OPENBLAS_CORETYPE")) return; /* the user's choice (and our re-exec's) wins */
    if (argc < 1 || !argv || !argv[0]) return; /* nothing to re-execute with */
    const char *core = openblas_get_corename();
    bf_isa_t isa = bf_engine_isa(), best = bf_isa_best();
    const char *want = core_for(isa == BF_ISA_GENERIC ? best : isa);
    if (!core || !want) return;
    int narrowed = isa == BF_ISA_AVX2 && best == BF_ISA_AVX512 && strcasecmp(core, want);
    if (!is_generic_core(core) && !narrowed) return;
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

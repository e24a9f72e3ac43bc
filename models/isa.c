/* isa.c: which vector path the engine's own kernels take (AVX-512, AVX2 + FMA, or generic C).
 *
 * The build targets plain x86-64; the wide kernels are compiled per function for their ISA and
 * chosen here at run time from the CPU's features, so one binary runs on any x86-64 CPU and uses
 * what it has. BLOCKFED_ISA=avx512|avx2|generic forces a path (tests run every path on one
 * machine; benchmarks compare them). A forced path the CPU lacks falls back to the best path it
 * has, with one message on stderr: a trainer started with a stale setting still trains. The choice
 * is made once per process and never changes after, so every kernel of a run takes the same path
 * (results are bit-identical per seed, thread count and path). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bf_models.h"

static const char *const names[] = {"generic", "avx2", "avx512"};

static bf_isa_t best_supported(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        return BF_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return BF_ISA_AVX2;
#endif
    return BF_ISA_GENERIC;
}

int bf_isa_parse(const char *s, bf_isa_t *isa) {
    for (int i = 0; i < 3; i++)
        if (s && !strcmp(s, names[i])) {
            *isa = (bf_isa_t)i;
            return 0;
        }
    return -1;
}

static bf_isa_t choose(void) {
    bf_isa_t best = best_supported(), want;
    const char *env = getenv("BLOCKFED_ISA");
    if (!env || !*env || !strcmp(env, "auto")) return best;
    if (bf_isa_parse(env, &want)) {
        fprintf(stderr, "blockfed: BLOCKFED_ISA=%s is not avx512, avx2, generic or auto; using %s\n", env,
                names[best]);
        return best;
    }
    if (want > best) {
        fprintf(stderr, "blockfed: BLOCKFED_ISA=%s but this CPU lacks it; using %s\n", env, names[best]);
        return best;
    }
    return want;
}

/* Decided on first use and constant after (a process-wide fact like the CPU's features, not state
 * a caller changes); racing first calls all compute the same value. */
bf_isa_t bf_engine_isa(void) {
    static int cached = -1;
    int v = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (v < 0) {
        v = (int)choose();
        int expected = -1;
        if (!__atomic_compare_exchange_n(&cached, &expected, v, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) v = expected;
    }
    return (bf_isa_t)v;
}

const char *bf_isa_name(bf_isa_t isa) { return isa >= BF_ISA_GENERIC && isa <= BF_ISA_AVX512 ? names[isa] : "?"; }

const char *bf_engine_isa_name(void) { return names[bf_engine_isa()]; }

bf_isa_t bf_isa_best(void) { return best_supported(); }

/* layers.c: forward/backward pairs of every layer, over raw float* with explicit shapes.
 *
 * Each call works on a slice of n images (one thread's share of the batch); shapes are per image.
 * Convolutions are im2col + cblas_sgemm per image (the per-image column buffer stays in L2; one
 * GEMM over a group of images gained nothing measurable: docs/ENGINE.md), except on the AVX-512
 * and AVX2 paths the 3x3 stride-1 ones and the forward of the 3x3 stride-2 ones, which the direct
 * kernels of conv_direct.c take. */
#include <assert.h>
#include <cblas.h>
#include <float.h>
#include <math.h>
#include <string.h>

#include "bf_models.h"
#include "conv_direct.h"

/* The memory-bound loops (im2col, BN, pointwise) are compiled three times from one body, for
 * AVX-512, AVX2 + FMA and plain x86-64, and each call takes the engine's vector path (isa.c), so the
 * build stays generic x86-64 yet runs wide vectors where the CPU has them, and a forced path
 * (BLOCKFED_ISA) runs these loops as that CPU would. Results depend only on the path: noipa keeps
 * GCC from specialising a variant for one call site's constants, which can change how a reduction
 * is vectorised and so its rounding. */
#define BF_HOT_BODY __attribute__((always_inline)) static inline
#if defined(__x86_64__) && !defined(BF_NO_CLONES)
#define BF_HOT_DISPATCH(linkage, name, params, args)                                                                 \
    __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma"), noipa)) static void name##_avx512 params {    \
        name##_body args;                                                                                          \
    }                                                                                                              \
    __attribute__((target("avx2,fma"), noipa)) static void name##_avx2 params { name##_body args; }                \
    __attribute__((noipa)) static void name##_generic params { name##_body args; }                                 \
    linkage void name params {                                                                                     \
        bf_isa_t isa_ = bf_engine_isa();                                                                           \
        if (isa_ == BF_ISA_AVX512)                                                                                 \
            name##_avx512 args;                                                                                    \
        else if (isa_ == BF_ISA_AVX2)                                                                              \
            name##_avx2 args;                                                                                      \
        else                                                                                                       \
            name##_generic args;                                                                                   \
    }
#else
#define BF_HOT_DISPATCH(linkage, name, params, args) \
    linkage void name params { name##_body args; }
#endif

/* ---- convolution -------------------------------------------------------------------------- */

static int is_pointwise(int K, int S, int P) { return K == 1 && S == 1 && P == 0; }

/* im2col through "phase planes". For stride S the input is viewed as S*S planes of PH x PW,
 * phase (rr, rc) holding in[S*i + rr][S*j + rc] (zero past the input's edge); for S == 1 the one
 * plane is the input itself. Kernel tap (ki, kj) then reads phase (rr, rc) = ((ki-P) mod S,
 * (kj-P) mod S) shifted by (sr, sc) = ((ki-P-rr)/S, (kj-P-rc)/S):
 *     col[tap][oh][ow] = plane[oh + sr][ow + sc]   (0 outside the plane).
 * When a plane row is as wide as an output row (PW == OW: every "same" or stride-2 padded conv
 * here), each tap's block is a single contiguous copy plus zeroing of the wrapped columns, instead
 * of thousands of short row copies or strided gathers. */
typedef struct {
    int C, H, W, K, S, P, OH, OW, PH, PW;
} geom_t;

static geom_t geom(int C, int H, int W, int K, int S, int P) {
    geom_t g = {C, H, W, K, S, P, bf_conv_out(H, K, S, P), bf_conv_out(W, K, S, P), (H + S - 1) / S, (W + S - 1) / S};
    return g;
}

static size_t phase_floats(const geom_t *g) { return g->S > 1 ? (size_t)g->C * g->S * g->S * g->PH * g->PW : 0; }

static int floor_mod(int a, int b) { return ((a % b) + b) % b; }

/* Which phases some tap reads (a 1x1 stride-2 conv needs only phase (0,0)). */
static int phase_needed(const geom_t *g, int rr, int rc) {
    int row = 0, col = 0;
    for (int k = 0; k < g->K; k++) {
        row |= floor_mod(k - g->P, g->S) == rr;
        col |= floor_mod(k - g->P, g->S) == rc;
    }
    return row && col;
}

static float *phase_plane(float *ph, const geom_t *g, int c, int rr, int rc) {
    return ph + (((size_t)c * g->S + rr) * g->S + rc) * g->PH * g->PW;
}

/* dst[j] = x[j*S] for the n columns present; stride 2 (every strided conv here) gets its own loop
 * (AVX-512: one two-vector permute per 16 columns; the compiler's own stride-2 loop was scalar). */
#if defined(__x86_64__) && !defined(BF_NO_CLONES)
#include <immintrin.h>
__attribute__((target("avx512f"))) static void gather2_avx512(float *restrict dst, const float *restrict x, int n) {
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    for (int j = 0; j < n; j += 16) {
        int left = 2 * (n - j) - 1; /* elements to read: up to x[2(n-1)] */
        __mmask16 lo = left >= 16 ? 0xFFFF : (__mmask16)((1u << left) - 1);
        __mmask16 hi = left >= 32 ? 0xFFFF : left <= 16 ? 0 : (__mmask16)((1u << (left - 16)) - 1);
        __m512 a = _mm512_maskz_loadu_ps(lo, x + 2 * j), b = _mm512_maskz_loadu_ps(hi, x + 2 * j + 16);
        int out = n - j < 16 ? n - j : 16;
        _mm512_mask_storeu_ps(dst + j, (__mmask16)((1u << out) - 1), _mm512_permutex2var_ps(a, even, b));
    }
}

/* AVX2: two loads, an in-lane shuffle of the even elements and a cross-lane permute per 8 columns;
 * the last columns (whose two loads would read past x[2(n-1)]) one at a time. */
__attribute__((target("avx2"))) static void gather2_avx2(float *restrict dst, const float *restrict x, int n) {
    int j = 0;
    for (; j + 8 <= n - 1; j += 8) { /* reads x[2j .. 2j+15] <= x[2(n-1)] */
        __m256 a = _mm256_loadu_ps(x + 2 * j), b = _mm256_loadu_ps(x + 2 * j + 8);
        __m256 e = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0)); /* a0 a2 b0 b2 | a4 a6 b4 b6 */
        _mm256_storeu_ps(dst + j, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), 0xD8)));
    }
    for (; j < n; j++) dst[j] = x[2 * j];
}
#endif

static void gather_cols(float *restrict dst, const float *restrict x, int n, int S) {
#if defined(__x86_64__) && !defined(BF_NO_CLONES)
    if (S == 2 && bf_engine_isa() == BF_ISA_AVX512) {
        gather2_avx512(dst, x, n);
        return;
    }
    if (S == 2 && bf_engine_isa() == BF_ISA_AVX2) {
        gather2_avx2(dst, x, n);
        return;
    }
#endif
    for (int j = 0; j < n; j++) dst[j] = x[j * S];
}

/* Phases of input channels [c0, c1). */
static void split_phases(float *ph, const float *in, const geom_t *g, int c0, int c1) {
    for (int rr = 0; rr < g->S; rr++)
        for (int rc = 0; rc < g->S; rc++) {
            if (!phase_needed(g, rr, rc)) continue;
            int n = (g->W - rc + g->S - 1) / g->S; /* columns rc, rc+S, ... inside the input */
            for (int c = c0; c < c1; c++) {
                float *dst = phase_plane(ph, g, c, rr, rc);
                for (int i = 0; i < g->PH; i++, dst += g->PW) {
                    int h = g->S * i + rr, j = 0;
                    if (h < g->H) {
                        gather_cols(dst, in + ((size_t)c * g->H + h) * g->W + rc, n, g->S);
                        j = n;
                    }
                    for (; j < g->PW; j++) dst[j] = 0;
                }
            }
        }
}

/* in += the phase planes, interleaved back (adjoint of split_phases). */
BF_HOT_BODY void merge_phases_body(float *restrict in, const float *restrict ph, const geom_t *g) {
    for (int c = 0; c < g->C; c++)
        for (int rr = 0; rr < g->S; rr++)
            for (int rc = 0; rc < g->S; rc++) {
                if (!phase_needed(g, rr, rc)) continue;
                const float *src = phase_plane((float *)ph, g, c, rr, rc);
                for (int i = 0; i < g->PH && g->S * i + rr < g->H; i++, src += g->PW) {
                    float *x = in + ((size_t)c * g->H + g->S * i + rr) * g->W + rc;
                    for (int j = 0; rc + j * g->S < g->W; j++) x[j * g->S] += src[j];
                }
            }
}
BF_HOT_DISPATCH(static, merge_phases, (float *restrict in, const float *restrict ph, const geom_t *g), (in, ph, g))

/* The tap's source phase and shift, and the output rows / columns whose source lies inside it. */
typedef struct {
    int rr, rc, sr, sc, oh0, oh1, lo, hi;
} tap_t;

static int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

static tap_t tap(const geom_t *g, int ki, int kj) {
    tap_t t;
    t.rr = floor_mod(ki - g->P, g->S);
    t.rc = floor_mod(kj - g->P, g->S);
    t.sr = (ki - g->P - t.rr) / g->S;
    t.sc = (kj - g->P - t.rc) / g->S;
    t.oh0 = clampi(-t.sr, 0, g->OH);
    t.oh1 = clampi(g->PH - t.sr, t.oh0, g->OH);
    t.lo = clampi(-t.sc, 0, g->OW);
    t.hi = clampi(g->PW - t.sc, t.lo, g->OW);
    return t;
}

/* dst[OH][OW] = plane[oh + sr][ow + sc], zero outside the plane. */
BF_HOT_BODY void shifted_copy_body(float *restrict dst, const float *restrict plane, const geom_t *g, const tap_t *t) {
    int OW = g->OW, PW = g->PW;
    for (int ow = 0; ow < t->oh0 * OW; ow++) dst[ow] = 0;
    if (PW == OW) { /* one contiguous block, then clear the columns that wrapped across rows */
        long off = (long)t->sr * PW + t->sc, k0 = (long)t->oh0 * OW, k1 = (long)t->oh1 * OW;
        long a = k0 + off < 0 ? -off : k0, b = k1 + off > (long)g->PH * PW ? (long)g->PH * PW - off : k1;
        for (long k = k0; k < a; k++) dst[k] = 0;
        memcpy(dst + a, plane + a + off, sizeof(float) * (size_t)(b > a ? b - a : 0));
        for (long k = b > a ? b : a; k < k1; k++) dst[k] = 0;
        for (int oh = t->oh0; oh < t->oh1; oh++) {
            for (int ow = 0; ow < t->lo; ow++) dst[oh * OW + ow] = 0;
            for (int ow = t->hi; ow < OW; ow++) dst[oh * OW + ow] = 0;
        }
    } else {
        for (int oh = t->oh0; oh < t->oh1; oh++) {
            float *d = dst + (size_t)oh * OW;
            const float *src = plane + (size_t)(oh + t->sr) * PW + t->sc;
            for (int ow = 0; ow < t->lo; ow++) d[ow] = 0;
            for (int ow = t->lo; ow < t->hi; ow++) d[ow] = src[ow];
            for (int ow = t->hi; ow < OW; ow++) d[ow] = 0;
        }
    }
    for (int k = t->oh1 * OW; k < g->OH * OW; k++) dst[k] = 0;
}
BF_HOT_DISPATCH(static, shifted_copy,
                (float *restrict dst, const float *restrict plane, const geom_t *g, const tap_t *t),
                (dst, plane, g, t))

/* plane[oh + sr][ow + sc] += src[oh][ow] inside the plane (adjoint of shifted_copy). Destroys the
 * wrapped columns of src, which is scratch, so the contiguous case is one loop. */
BF_HOT_BODY void shifted_add_body(float *restrict plane, float *restrict src, const geom_t *g, const tap_t *t) {
    int OW = g->OW, PW = g->PW;
    if (PW == OW) {
        for (int oh = t->oh0; oh < t->oh1; oh++) {
            for (int ow = 0; ow < t->lo; ow++) src[oh * OW + ow] = 0;
            for (int ow = t->hi; ow < OW; ow++) src[oh * OW + ow] = 0;
        }
        long off = (long)t->sr * PW + t->sc, k0 = (long)t->oh0 * OW, k1 = (long)t->oh1 * OW;
        long a = k0 + off < 0 ? -off : k0, b = k1 + off > (long)g->PH * PW ? (long)g->PH * PW - off : k1;
        float *d = plane + a + off; /* a + off >= 0 even when off < 0 */
        const float *s = src + a;
        for (long k = 0; k < b - a; k++) d[k] += s[k];
    } else {
        for (int oh = t->oh0; oh < t->oh1; oh++) {
            float *d = plane + (size_t)(oh + t->sr) * PW + t->sc;
            const float *s = src + (size_t)oh * OW;
            for (int ow = t->lo; ow < t->hi; ow++) d[ow] += s[ow];
        }
    }
}
BF_HOT_DISPATCH(static, shifted_add,
                (float *restrict plane, float *restrict src, const geom_t *g, const tap_t *t),
                (plane, src, g, t))

/* col[(c*K+ki)*K+kj][oh*OW+ow] = in[c][oh*S-P+ki][ow*S-P+kj] (0 outside). */
#define MAX_TAPS 64 /* kernels up to 8x8 */

static void taps(const geom_t *g, tap_t *t) {
    assert(g->K * g->K <= MAX_TAPS); /* the architectures use K <= 5 */
    for (int ki = 0; ki < g->K; ki++)
        for (int kj = 0; kj < g->K; kj++) t[ki * g->K + kj] = tap(g, ki, kj);
}

/* col[(c*K+ki)*K+kj][oh*OW+ow] = in[c][oh*S-P+ki][ow*S-P+kj] (0 outside); rows are ld floats apart. */
static void im2col(float *col, size_t ld, const float *in, float *ph, const geom_t *g) {
    int c0 = 0, c1 = g->C;
    tap_t t[MAX_TAPS];
    taps(g, t);
    if (g->S > 1) split_phases(ph, in, g, c0, c1);
    int KK = g->K * g->K;
    for (int c = c0; c < c1; c++)
        for (int k = 0; k < KK; k++) {
            const float *plane = g->S > 1 ? phase_plane(ph, g, c, t[k].rr, t[k].rc) : in + (size_t)c * g->H * g->W;
            shifted_copy(col + ((size_t)c * KK + k) * ld, plane, g, &t[k]);
        }
}

/* in += col2im(col): every column entry back onto the input position it came from. */
static void col2im(float *in, float *col, size_t ld, float *ph, const geom_t *g) {
    tap_t t[MAX_TAPS];
    taps(g, t);
    if (g->S > 1) memset(ph, 0, sizeof(float) * phase_floats(g));
    int KK = g->K * g->K;
    for (int c = 0; c < g->C; c++)
        for (int k = 0; k < KK; k++) {
            float *plane = g->S > 1 ? phase_plane(ph, g, c, t[k].rr, t[k].rc) : in + (size_t)c * g->H * g->W;
            shifted_add(plane, col + ((size_t)c * KK + k) * ld, g, &t[k]);
        }
    if (g->S > 1) merge_phases(in, ph, g);
}

/* On the AVX-512 and AVX2 paths, 3x3 stride-1 "same" convolutions whose output channels (forward)
 * or input channels (input gradient) come in multiples of 8 run the direct kernel (conv_direct.c),
 * and so does their weight gradient; everything else runs im2col + GEMM. */
static int direct_ok(int K, int S, int P, int channels) { return K == 3 && S == 1 && P == 1 && bf_direct3x3_ok(channels); }
/* The forward of a 3x3 stride-2 convolution (the ResNet's downsampling convs) runs the direct
 * kernels on parity phases of the input; its backward stays im2col + GEMM. */
static int direct_s2_ok(int K, int S, int P, int OC) { return K == 3 && S == 2 && P == 1 && bf_direct3x3_ok(OC); }

typedef struct {
    float *col, *dcol, *ph, *direct; /* column matrix, its gradient, phase planes, direct-conv scratch */
} conv_scratch_t;

static conv_scratch_t carve(float *scratch, const geom_t *g) {
    size_t block = (size_t)g->C * g->K * g->K * g->OH * g->OW;
    conv_scratch_t s = {scratch, scratch + block, scratch + 2 * block, scratch + 2 * block + phase_floats(g)};
    return s;
}

size_t bf_conv2d_scratch(int n, int C, int H, int W, int OC, int K, int S, int P) {
    if (is_pointwise(K, S, P)) return 0;
    geom_t g = geom(C, H, W, K, S, P);
    size_t direct = 0;
    if (K == 3 && S == 1 && P == 1) {
        size_t a = bf_direct3x3_scratch(C, OC, H, W), b = bf_direct3x3_dw_scratch(n, C, OC, H, W);
        direct = a > b ? a : b;
    }
    if (K == 3 && S == 2 && P == 1) direct = bf_direct3x3s2_scratch(C, OC, H, W);
    return 2 * (size_t)C * K * K * g.OH * g.OW + phase_floats(&g) + direct;
}

static void add_bias(float *y, const float *b, int OC, int cols) {
    for (int oc = 0; oc < OC; oc++)
        for (int j = 0; j < cols; j++) y[(size_t)oc * cols + j] += b[oc];
}

/* y = y * scale[oc] + shift[oc] (then ReLU), bf_bn_forward's arithmetic. */
BF_HOT_BODY void affine_body(float *y, const float *scale, const float *shift, int OC, int cols, int relu) {
    for (int oc = 0; oc < OC; oc++) {
        float a = scale[oc], b = shift[oc], *r = y + (size_t)oc * cols;
        if (relu)
            for (int j = 0; j < cols; j++) {
                float v = r[j] * a + b;
                r[j] = v > 0 ? v : 0;
            }
        else
            for (int j = 0; j < cols; j++) r[j] = r[j] * a + b;
    }
}
BF_HOT_DISPATCH(static, affine,
                (float *y, const float *scale, const float *shift, int OC, int cols, int relu),
                (y, scale, shift, OC, cols, relu))

void bf_conv2d_forward_channels_affine(float *out, const float *in, const float *w, const float *b, int C, int H,
                                       int W, int OC, int K, int S, int P, float *scratch, int o0, int o1,
                                       const float *scale, const float *shift, int relu) {
    if (o0 >= o1) return;
    geom_t g = geom(C, H, W, K, S, P);
    int rows = C * K * K, cols = g.OH * g.OW;
    conv_scratch_t s = carve(scratch, &g);
    float *y = out + (size_t)o0 * cols;
    if (direct_ok(K, S, P, OC) || direct_s2_ok(K, S, P, OC)) {
        /* the epilogue runs in the kernel's copy-out pass unless a bias must come first */
        int fused = scale && !b;
        (S == 1 ? bf_direct3x3_channels : bf_direct3x3s2_channels)(out, in, w, C, OC, H, W, s.direct, o0, o1,
                                                                   fused ? scale : NULL, fused ? shift : NULL, relu);
        if (fused) return;
    } else {
        const float *col = in;
        if (!is_pointwise(K, S, P)) im2col(s.col, (size_t)cols, in, s.ph, &g), col = s.col;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, o1 - o0, cols, rows, 1.0f, w + (size_t)o0 * rows, rows,
                    col, cols, 0.0f, y, cols);
    }
    if (b) add_bias(y, b + o0, o1 - o0, cols);
    if (scale) affine(y, scale + o0, shift + o0, o1 - o0, cols, relu);
}

void bf_conv2d_forward_affine(float *out, const float *in, const float *w, const float *b, int n, int C, int H, int W,
                              int OC, int K, int S, int P, float *scratch, const float *scale, const float *shift,
                              int relu) {
    size_t in_sz = (size_t)C * H * W, out_sz = (size_t)OC * bf_conv_out(H, K, S, P) * bf_conv_out(W, K, S, P);
    for (int i = 0; i < n; i++)
        bf_conv2d_forward_channels_affine(out + i * out_sz, in + i * in_sz, w, b, C, H, W, OC, K, S, P, scratch, 0, OC,
                                          scale, shift, relu);
}

void bf_conv2d_forward_bnstats(float *out, const float *in, const float *w, const float *b, int n, int C, int H,
                               int W, int OC, int K, int S, int P, float *scratch, double *sum, double *sumsq) {
    size_t in_sz = (size_t)C * H * W;
    int HW = bf_conv_out(H, K, S, P) * bf_conv_out(W, K, S, P);
    for (int i = 0; i < n; i++) {
        float *y = out + (size_t)i * OC * HW;
        bf_conv2d_forward_channels_affine(y, in + i * in_sz, w, b, C, H, W, OC, K, S, P, scratch, 0, OC, NULL, NULL, 0);
        bf_bn_stats(sum, sumsq, y, 1, OC, HW);
    }
}

void bf_conv2d_forward(float *out, const float *in, const float *w, const float *b, int n, int C, int H,
                       int W, int OC, int K, int S, int P, float *scratch) {
    bf_conv2d_forward_affine(out, in, w, b, n, C, H, W, OC, K, S, P, scratch, NULL, NULL, 0);
}

int bf_conv2d_channel_unit(int C, int OC, int K, int S, int P) {
    (void)C;
    return direct_ok(K, S, P, OC) || direct_s2_ok(K, S, P, OC) ? 8 : 1;
}

void bf_conv2d_forward_channels(float *out, const float *in, const float *w, const float *b, int C, int H, int W,
                                int OC, int K, int S, int P, float *scratch, int o0, int o1) {
    bf_conv2d_forward_channels_affine(out, in, w, b, C, H, W, OC, K, S, P, scratch, o0, o1, NULL, NULL, 0);
}

static void bias_grad(float *db, const float *dy, int OC, int cols) {
    for (int oc = 0; oc < OC; oc++) {
        float s = 0;
        for (int j = 0; j < cols; j++) s += dy[(size_t)oc * cols + j];
        db[oc] += s;
    }
}

void bf_conv2d_backward(float *din, int acc, float *dw, float *db, const float *dout, const float *in,
                        const float *w, int n, int C, int H, int W, int OC, int K, int S, int P,
                        float *scratch) {
    geom_t g = geom(C, H, W, K, S, P);
    int rows = C * K * K, cols = g.OH * g.OW, pw = is_pointwise(K, S, P);
    size_t in_sz = (size_t)C * H * W, out_sz = (size_t)OC * cols;
    conv_scratch_t s = carve(scratch, &g);
    int direct = din && direct_ok(K, S, P, C);
    int direct_dw = K == 3 && S == 1 && P == 1 && bf_direct3x3_dw_ok(OC);
    if (direct_dw) bf_direct3x3_dw(dw, dout, in, n, C, OC, H, W, s.direct);
    for (int i = 0; i < n; i++) {
        const float *x = in + i * in_sz, *dy = dout + i * out_sz, *xc = x;
        float *dx = din ? din + i * in_sz : NULL;
        if (db) bias_grad(db, dy, OC, cols);
        if (!direct_dw) {
            if (!pw) im2col(s.col, (size_t)cols, x, s.ph, &g), xc = s.col;
            /* dW[OC, rows] += dY[OC, cols] * X_col[rows, cols]^T */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, OC, rows, cols, 1.0f, dy, cols, xc, cols, 1.0f, dw, rows);
        }
        if (!dx) continue;
        if (direct) { /* dX = conv3x3(dY) with transposed, flipped weights */
            bf_direct3x3(dx, dy, w, OC, C, H, W, 1, acc, s.direct);
        } else if (pw) { /* dX[C, HW] (+)= W^T * dY straight into the input gradient */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, rows, cols, OC, 1.0f, w, rows, dy, cols,
                        acc ? 1.0f : 0.0f, dx, cols);
        } else { /* dX_col = W^T * dY, then back onto the input */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, rows, cols, OC, 1.0f, w, rows, dy, cols, 0.0f, s.dcol, cols);
            if (!acc) memset(dx, 0, sizeof(float) * in_sz);
            col2im(dx, s.dcol, (size_t)cols, s.ph, &g);
        }
    }
}

/* ---- batch normalization ------------------------------------------------------------------ */

BF_HOT_BODY void bf_bn_stats_body(double *sum, double *sumsq, const float *in, int n, int C, int HW) {
    for (int i = 0; i < n; i++)
        for (int c = 0; c < C; c++) {
            const float *x = in + ((size_t)i * C + c) * HW;
            /* float partial per plane (<= a few thousand values), double across planes */
            float s = 0, s2 = 0;
#pragma omp simd reduction(+ : s, s2)
            for (int j = 0; j < HW; j++) {
                s += x[j];
                s2 += x[j] * x[j];
            }
            sum[c] += s;
            sumsq[c] += s2;
        }
}
BF_HOT_DISPATCH(, bf_bn_stats,
                (double *sum, double *sumsq, const float *in, int n, int C, int HW),
                (sum, sumsq, in, n, C, HW))

BF_HOT_BODY void bf_bn_forward_body(float *out, const float *in, const float *mean, const float *rstd, const float *gamma,
                   const float *beta, int n, int C, int HW, int relu) {
    for (int i = 0; i < n; i++)
        for (int c = 0; c < C; c++) {
            /* y = (x - mean) * rstd * gamma + beta, folded into one multiply-add */
            float a = gamma[c] * rstd[c], b = beta[c] - mean[c] * a;
            const float *x = in + ((size_t)i * C + c) * HW;
            float *y = out + ((size_t)i * C + c) * HW;
            if (relu)
                for (int j = 0; j < HW; j++) {
                    float v = x[j] * a + b;
                    y[j] = v > 0 ? v : 0;
                }
            else
                for (int j = 0; j < HW; j++) y[j] = x[j] * a + b;
        }
}
BF_HOT_DISPATCH(, bf_bn_forward,
                (float *out, const float *in, const float *mean, const float *rstd, const float *gamma,
                 const float *beta, int n, int C, int HW, int relu),
                (out, in, mean, rstd, gamma, beta, n, C, HW, relu))

BF_HOT_BODY void bf_bn_backward_stats_body(double *sum_dy, double *sum_dy_xhat, float *dout, const float *out,
                          const float *in, const float *mean, const float *rstd, int n, int C, int HW,
                          int relu) {
    for (int i = 0; i < n; i++)
        for (int c = 0; c < C; c++) {
            size_t o = ((size_t)i * C + c) * HW;
            float *dy = dout + o;
            const float *x = in + o, *y = out + o;
            if (relu)
                for (int j = 0; j < HW; j++) dy[j] = y[j] > 0 ? dy[j] : 0;
            float s = 0, sx = 0, m = mean[c];
#pragma omp simd reduction(+ : s, sx)
            for (int j = 0; j < HW; j++) {
                s += dy[j];
                sx += dy[j] * (x[j] - m);
            }
            sum_dy[c] += s;
            sum_dy_xhat[c] += (double)sx * rstd[c];
        }
}
BF_HOT_DISPATCH(, bf_bn_backward_stats,
                (double *sum_dy, double *sum_dy_xhat, float *dout, const float *out, const float *in,
                 const float *mean, const float *rstd, int n, int C, int HW, int relu),
                (sum_dy, sum_dy_xhat, dout, out, in, mean, rstd, n, C, HW, relu))

BF_HOT_BODY void bf_bn_backward_body(float *din, int acc, const float *dout, const float *in, const float *mean,
                    const float *rstd, const float *gamma, const double *sum_dy,
                    const double *sum_dy_xhat, int Ntot, int n, int C, int HW) {
    double count = (double)Ntot * HW;
    for (int c = 0; c < C; c++) {
        /* dx = gamma*rstd * (dy - mean(dy) - xhat * mean(dy*xhat)), as dx = k*dy + k2*x + k3 */
        float k = gamma[c] * rstd[c];
        float mdy = (float)(sum_dy[c] / count), mdyx = (float)(sum_dy_xhat[c] / count);
        float k2 = -k * mdyx * rstd[c];
        float k3 = -k * mdy - k2 * mean[c];
        for (int i = 0; i < n; i++) {
            size_t o = ((size_t)i * C + c) * HW;
            const float *dy = dout + o, *x = in + o;
            float *dx = din + o;
            if (acc)
                for (int j = 0; j < HW; j++) dx[j] += k * dy[j] + k2 * x[j] + k3;
            else
                for (int j = 0; j < HW; j++) dx[j] = k * dy[j] + k2 * x[j] + k3;
        }
    }
}
BF_HOT_DISPATCH(, bf_bn_backward,
                (float *din, int acc, const float *dout, const float *in, const float *mean, const float *rstd,
                 const float *gamma, const double *sum_dy, const double *sum_dy_xhat, int Ntot, int n, int C, int HW),
                (din, acc, dout, in, mean, rstd, gamma, sum_dy, sum_dy_xhat, Ntot, n, C, HW))

/* ---- pointwise ---------------------------------------------------------------------------- */

BF_HOT_BODY void bf_relu_forward_body(float *out, const float *in, size_t count) {
    for (size_t i = 0; i < count; i++) out[i] = in[i] > 0 ? in[i] : 0;
}
BF_HOT_DISPATCH(, bf_relu_forward, (float *out, const float *in, size_t count), (out, in, count))

BF_HOT_BODY void bf_relu_backward_body(float *din, int acc, const float *dout, const float *out, size_t count) {
    if (acc)
        for (size_t i = 0; i < count; i++) din[i] += out[i] > 0 ? dout[i] : 0;
    else
        for (size_t i = 0; i < count; i++) din[i] = out[i] > 0 ? dout[i] : 0;
}
BF_HOT_DISPATCH(, bf_relu_backward,
                (float *din, int acc, const float *dout, const float *out, size_t count),
                (din, acc, dout, out, count))

BF_HOT_BODY void bf_add_forward_body(float *out, const float *a, const float *b, size_t count, int relu) {
    if (relu)
        for (size_t i = 0; i < count; i++) {
            float v = a[i] + b[i];
            out[i] = v > 0 ? v : 0;
        }
    else
        for (size_t i = 0; i < count; i++) out[i] = a[i] + b[i];
}
BF_HOT_DISPATCH(, bf_add_forward,
                (float *out, const float *a, const float *b, size_t count, int relu),
                (out, a, b, count, relu))

BF_HOT_BODY void route_body(float *d, int acc, const float *g, size_t count) {
    if (acc)
        for (size_t i = 0; i < count; i++) d[i] += g[i];
    else
        memcpy(d, g, sizeof(float) * count);
}
BF_HOT_DISPATCH(static, route, (float *d, int acc, const float *g, size_t count), (d, acc, g, count))

BF_HOT_BODY void bf_add_backward_body(float *da, int acc_a, float *db, int acc_b, float *dout, const float *out,
                     size_t count, int relu) {
    if (relu)
        for (size_t i = 0; i < count; i++) dout[i] = out[i] > 0 ? dout[i] : 0;
    route(da, acc_a, dout, count);
    route(db, acc_b, dout, count);
}
BF_HOT_DISPATCH(, bf_add_backward,
                (float *da, int acc_a, float *db, int acc_b, float *dout, const float *out, size_t count, int relu),
                (da, acc_a, db, acc_b, dout, out, count, relu))

/* ---- pooling ------------------------------------------------------------------------------ */

void bf_maxpool2_forward(float *out, int32_t *argmax, const float *in, int n, int C, int H, int W) {
    int OH = H / 2, OW = W / 2;
    for (int p = 0; p < n * C; p++) {
        const float *x = in + (size_t)p * H * W;
        float *y = out + (size_t)p * OH * OW;
        int32_t *am = argmax + (size_t)p * OH * OW;
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++) {
                int best = 2 * oh * W + 2 * ow;
                const int cand[3] = {best + 1, best + W, best + W + 1};
                for (int k = 0; k < 3; k++)
                    if (x[cand[k]] > x[best]) best = cand[k];
                y[oh * OW + ow] = x[best];
                am[oh * OW + ow] = best;
            }
    }
}

void bf_maxpool2_backward(float *din, int acc, const float *dout, const int32_t *argmax, int n, int C,
                          int H, int W) {
    int OHW = (H / 2) * (W / 2);
    for (int p = 0; p < n * C; p++) {
        float *dx = din + (size_t)p * H * W;
        if (!acc) memset(dx, 0, sizeof(float) * H * W);
        for (int j = 0; j < OHW; j++) dx[argmax[(size_t)p * OHW + j]] += dout[(size_t)p * OHW + j];
    }
}

BF_HOT_BODY void bf_gap_forward_body(float *out, const float *in, int n, int C, int HW) {
    for (int p = 0; p < n * C; p++) {
        const float *x = in + (size_t)p * HW;
        float s = 0;
#pragma omp simd reduction(+ : s)
        for (int j = 0; j < HW; j++) s += x[j];
        out[p] = s / HW;
    }
}
BF_HOT_DISPATCH(, bf_gap_forward, (float *out, const float *in, int n, int C, int HW), (out, in, n, C, HW))

BF_HOT_BODY void bf_gap_backward_body(float *din, int acc, const float *dout, int n, int C, int HW) {
    for (int p = 0; p < n * C; p++) {
        float g = dout[p] / HW, *dx = din + (size_t)p * HW;
        if (acc)
            for (int j = 0; j < HW; j++) dx[j] += g;
        else
            for (int j = 0; j < HW; j++) dx[j] = g;
    }
}
BF_HOT_DISPATCH(, bf_gap_backward,
                (float *din, int acc, const float *dout, int n, int C, int HW),
                (din, acc, dout, n, C, HW))

/* ---- linear and loss ---------------------------------------------------------------------- */

void bf_linear_forward(float *out, const float *in, const float *w, const float *b, int n, int IN, int OUT) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, OUT, IN, 1.0f, in, IN, w, IN, 0.0f, out, OUT);
    if (b)
        for (int i = 0; i < n; i++)
            for (int o = 0; o < OUT; o++) out[(size_t)i * OUT + o] += b[o];
}

void bf_linear_backward(float *din, int acc, float *dw, float *db, const float *dout, const float *in,
                        const float *w, int n, int IN, int OUT) {
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OUT, IN, n, 1.0f, dout, OUT, in, IN, 1.0f, dw, IN);
    if (db)
        for (int i = 0; i < n; i++)
            for (int o = 0; o < OUT; o++) db[o] += dout[(size_t)i * OUT + o];
    if (din)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, IN, OUT, 1.0f, dout, OUT, w, IN,
                    acc ? 1.0f : 0.0f, din, IN);
}

void bf_softmax(float *probs, const float *logits, int n, int K) {
    for (int i = 0; i < n; i++) {
        const float *z = logits + (size_t)i * K;
        float *p = probs + (size_t)i * K, mx = -FLT_MAX;
        for (int k = 0; k < K; k++) mx = z[k] > mx ? z[k] : mx;
        double s = 0;
        for (int k = 0; k < K; k++) s += (p[k] = expf(z[k] - mx));
        for (int k = 0; k < K; k++) p[k] = (float)(p[k] / s);
    }
}

double bf_softmax_xent(float *dlogits, float *probs, const float *logits, const int32_t *y, int n,
                       int K, int Ntot) {
    double loss = 0;
    for (int i = 0; i < n; i++) {
        const float *z = logits + (size_t)i * K;
        float *d = dlogits + (size_t)i * K, mx = -FLT_MAX;
        for (int k = 0; k < K; k++) mx = z[k] > mx ? z[k] : mx;
        double s = 0;
        for (int k = 0; k < K; k++) s += exp((double)z[k] - mx);
        /* -log softmax(z)_y = log(sum exp(z - max)) - (z_y - max) */
        loss += log(s) - ((double)z[y[i]] - mx);
        for (int k = 0; k < K; k++) {
            double p = exp((double)z[k] - mx) / s;
            if (probs) probs[(size_t)i * K + k] = (float)p;
            d[k] = (float)((p - (k == y[i])) / Ntot);
        }
    }
    return loss / Ntot;
}

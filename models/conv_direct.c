/* conv_direct.c: the 3x3 convolutions that carry most of ResNet8's FLOPs, computed directly from a
 * zero-padded copy of the input instead of im2col + GEMM, with AVX-512 or AVX2 + FMA kernels on the
 * engine's vector path (the generic path uses im2col + GEMM instead).
 *
 * im2col writes nine shifted copies of the input and OpenBLAS then packs them once more; for 16-64
 * channel layers that memory traffic cost as much as the arithmetic. Here the input is padded into
 * planes of (H+2) rows of pitch Wp = W+1 (one zero column per row, which is the right border of its
 * row and the left border of the next, plus one leading zero) and outputs are computed on the same
 * row pitch: output position q = oh*Wp + ow reads input q + ki*Wp + kj for tap (ki, kj), so every
 * tap is one contiguous vector load and a 7-pixel-wide map fills 7/8 of each vector (the one extra
 * column per row is computed and dropped).
 *  - forward and input gradient: a tile of 8 output channels x 3 vectors of 16 positions stays in
 *    24 AVX-512 registers while the loop runs over input channels and taps (3 loads, 8 weight
 *    broadcasts, 24 FMAs a step); AVX2 runs 4 channels x 3 vectors of 8 twice. The input gradient
 *    is the same convolution of dY with the weights read transposed and flipped;
 *  - stride-2 forward: the same tiles over the input's four parity phases (see pad_phases);
 *  - weight gradient (on its own layout, row pitch W+2, see lay_out): 3 output channels x 9 taps =
 *    27 accumulators per input channel (AVX2: one kernel row, 9 accumulators), summed over the
 *    positions of all images of the slice laid end to end, reduced across lanes once. */
#include "conv_direct.h"

#include <string.h>

#include "bf_models.h"

#if defined(__x86_64__) && !defined(BF_NO_DIRECT_CONV)
#include <immintrin.h>

#define OCB 8 /* output channels per forward tile */
#define NT 3  /* vectors (16 or 8 positions) per forward tile */
#define SLACK 64

int bf_direct3x3_ok(int OC) { return OC % OCB == 0 && bf_engine_isa() >= BF_ISA_AVX2; }

/* Stride 1: rows of W pixels and one zero column. Against a pitch of W+2 (a zero column on each
 * side) this computes 1 wasted column per row instead of 2: 7x7 maps take 7 AVX2 vectors instead
 * of 8, 14x14 27 instead of 28, with the same sums in the same order (bit-identical results). */
static int pitch_s1(int W) { return W + 1; }
static size_t plane_s1(int H, int W) { return (size_t)(H + 2) * pitch_s1(W) + 1; }
static size_t pitch_q(int H, int W) { return (size_t)H * pitch_s1(W); } /* positions on the padded pitch */
static size_t pad_floats(int C, int H, int W) { return (size_t)C * plane_s1(H, W) + SLACK; }
static size_t grid_floats(int C, int H, int W) { return (size_t)C * (pitch_q(H, W) + SLACK); }

size_t bf_direct3x3_scratch(int C, int OC, int H, int W) {
    int most = C > OC ? C : OC;
    return pad_floats(most, H, W) + grid_floats(most, H, W);
}

/* Rows here are 7-30 floats: plain loops (this file is built with -fno-tree-loop-distribute-patterns)
 * beat a memcpy call per row. */
static inline void copy_row(float *restrict d, const float *restrict s, int n) {
    for (int i = 0; i < n; i++) d[i] = s[i];
}

/* pad[c]: a leading zero, a zero row, H rows of W pixels each followed by a zero, a zero row (row
 * pitch W+1); then zeroed slack. Pixel (h, w) sits at 1 + (h+1)*Wp + w. */
static void pad_input(float *pad, const float *in, int C, int H, int W) {
    int Wp = pitch_s1(W);
    size_t plane = plane_s1(H, W);
    for (int c = 0; c < C; c++) {
        float *p = pad + (size_t)c * plane;
        memset(p, 0, sizeof(float) * (size_t)(Wp + 1));
        for (int h = 0; h < H; h++) {
            float *row = p + 1 + (size_t)(h + 1) * Wp;
            copy_row(row, in + ((size_t)c * H + h) * W, W);
            row[W] = 0;
        }
        memset(p + 1 + (size_t)(H + 1) * Wp, 0, sizeof(float) * Wp);
    }
    memset(pad + (size_t)C * plane, 0, sizeof(float) * SLACK);
}

/* Where a tile reads: input planes `plane` floats apart, output positions q < Q on a row pitch of
 * Wp, and tap t reading input q + off[t] (stride 1: (t/3)*Wp + t%3; stride 2: into one of four
 * phase planes, see pad_phases). */
typedef struct {
    size_t plane, Q, gq;
    int Wp;
    size_t off[9];
} geo_t;

static geo_t geo_s1(int H, int W) {
    geo_t g = {plane_s1(H, W), pitch_q(H, W), pitch_q(H, W) + SLACK, pitch_s1(W), {0}};
    for (int t = 0; t < 9; t++) g.off[t] = (size_t)(t / 3) * g.Wp + t % 3;
    return g;
}

/* out (+)= the valid OH x OW columns of grid (row pitch Wp); with scale, out = grid * scale[c] +
 * shift[c] (then ReLU if relu): an eval-mode BatchNorm applied in the same pass, with
 * bf_bn_forward's arithmetic. */
static void from_grid(float *out, const float *grid, const geo_t *g, int C, int OH, int OW, int acc,
                      const float *scale, const float *shift, int relu) {
    for (int c = 0; c < C; c++) {
        float a = scale ? scale[c] : 1, b = scale ? shift[c] : 0;
        for (int h = 0; h < OH; h++) {
            const float *r = grid + c * g->gq + (size_t)h * g->Wp;
            float *o = out + ((size_t)c * OH + h) * OW;
            if (scale && relu)
                for (int w = 0; w < OW; w++) {
                    float v = r[w] * a + b;
                    o[w] = v > 0 ? v : 0;
                }
            else if (scale)
                for (int w = 0; w < OW; w++) o[w] = r[w] * a + b;
            else if (acc)
                for (int w = 0; w < OW; w++) o[w] += r[w];
            else
                copy_row(o, r, OW);
        }
    }
}

/* from_grid on 8-wide vectors (AVX2 and AVX-512 paths): rows are 7-32 floats, which the generic
 * loop above ran 4 wide with a scalar tail. Full vectors read past a row inside the grid (its
 * slack), and a row's last partial vector is a masked store, so nothing past the row is written.
 * The same arithmetic as from_grid: a multiply, then an add (the empty asm keeps GCC from
 * contracting them into an FMA, which rounds once and would change results), then max(v, 0),
 * which is v > 0 ? v : 0. */
__attribute__((target("avx2,fma"))) static void from_grid8(float *out, const float *grid, const geo_t *g, int C,
                                                           int OH, int OW, int acc, const float *scale,
                                                           const float *shift, int relu) {
    int tail = OW % 8;
    __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(tail ? tail : 8), lanes);
    __m256 zero = _mm256_setzero_ps();
    for (int c = 0; c < C; c++) {
        __m256 a = _mm256_set1_ps(scale ? scale[c] : 1), b = _mm256_set1_ps(scale ? shift[c] : 0);
        for (int h = 0; h < OH; h++) {
            const float *r = grid + c * g->gq + (size_t)h * g->Wp;
            float *o = out + ((size_t)c * OH + h) * OW;
            for (int w = 0; w < OW; w += 8) {
                __m256 v = _mm256_loadu_ps(r + w);
                if (scale) {
                    v = _mm256_mul_ps(v, a);
                    __asm__("" : "+x"(v));
                    v = _mm256_add_ps(v, b);
                    if (relu) v = _mm256_max_ps(v, zero);
                } else if (acc) {
                    v = _mm256_add_ps(_mm256_maskload_ps(o + w, OW - w >= 8 ? _mm256_set1_epi32(-1) : mask), v);
                }
                if (OW - w >= 8)
                    _mm256_storeu_ps(o + w, v);
                else
                    _mm256_maskstore_ps(o + w, mask, v);
            }
        }
    }
}

static void copy_out(float *out, const float *grid, const geo_t *g, int C, int OH, int OW, int acc,
                     const float *scale, const float *shift, int relu) {
    if (bf_engine_isa() >= BF_ISA_AVX2)
        from_grid8(out, grid, g, C, OH, OW, acc, scale, shift, relu);
    else
        from_grid(out, grid, g, C, OH, OW, acc, scale, shift, relu);
}

static __mmask16 tail_mask(size_t q0, size_t Q) {
    size_t rem = Q - q0;
    return rem >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << rem) - 1);
}

/* ---- forward and input gradient ------------------------------------------------------------ */

/* The 24 accumulators are named variables, not an array: GCC keeps an array of vectors in memory
 * and stores all of it after every tap, which made the kernel store-bound. The tile body is
 * inlined into one function per (vectors per tile, flipped taps, stride) triple so the tap loop
 * unrolls (faster than a run-time tap loop: docs/ENGINE.md) and masks stay in mask registers, and
 * a map's last one or two vectors get a narrower tile instead of FMAs on masked-off lanes. */
#define FOR_OC(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)
#define DECL(o) __m512 a##o##0 = _mm512_setzero_ps(), a##o##1 = a##o##0, a##o##2 = a##o##0;
#define STEP(o)                                                 \
    {                                                           \
        __m512 wv = _mm512_set1_ps(wk[o * so]);                 \
        a##o##0 = _mm512_fmadd_ps(wv, x0, a##o##0);             \
        if (nt > 1) a##o##1 = _mm512_fmadd_ps(wv, x1, a##o##1); \
        if (nt > 2) a##o##2 = _mm512_fmadd_ps(wv, x2, a##o##2); \
    }
#define STORE(o)                                                      \
    {                                                                 \
        float *y = grid + (oc0 + o) * g->gq + q0;                     \
        _mm512_mask_storeu_ps(y, m0, a##o##0);                        \
        if (nt > 1) _mm512_mask_storeu_ps(y + 16, m1, a##o##1);       \
        if (nt > 2) _mm512_mask_storeu_ps(y + 32, m2, a##o##2);       \
    }
/* tap offset: computed for stride 1 (the row pitch is the only run-time term), looked up for 2 */
#define TAP_OFF(tap) (s2 ? g->off[tap] : (size_t)((tap) / 3) * g->Wp + (tap) % 3)

/* Weight of output channel oc0+o, input channel c, tap: w[c*si + (oc0+o)*so + tap'] with tap' =
 * 8 - tap when flipped. The forward reads w[OC][C][9] (si = 9, so = 9C); the input gradient reads
 * the same array transposed and flipped (si = 9C, so = 9). The 8 weights a step broadcasts sit in
 * at most 8 cache lines that the next taps reuse, so the weights need no repacking. */
__attribute__((target("avx512f"), always_inline)) static inline void
conv_tile_body(float *grid, const geo_t *g, const float *pad, const float *w, size_t si, size_t so, const int flip,
               const int s2, const int taps, int C, int oc0, size_t q0, const int nt) {
    size_t Q = g->Q;
    __mmask16 m0 = tail_mask(q0, Q), m1 = q0 + 16 < Q ? tail_mask(q0 + 16, Q) : 0, m2 = q0 + 32 < Q ? tail_mask(q0 + 32, Q) : 0;
    FOR_OC(DECL)
    for (int c = 0; c < C; c++) {
        const float *pc = pad + c * g->plane + q0, *wc = w + c * si + oc0 * so;
#pragma GCC unroll 9
        for (int tap = 0; tap < taps; tap++) {
            const float *src = pc + TAP_OFF(tap), *wk = wc + (flip ? 8 - tap : tap);
            __m512 x0 = _mm512_maskz_loadu_ps(m0, src);
            __m512 x1 = nt > 1 ? _mm512_maskz_loadu_ps(m1, src + 16) : x0;
            __m512 x2 = nt > 2 ? _mm512_maskz_loadu_ps(m2, src + 32) : x0;
            FOR_OC(STEP)
        }
    }
    FOR_OC(STORE)
}

#define TILE_FN(name, flip, s2, taps, nt)                                                                           \
    __attribute__((target("avx512f"))) static void name(float *grid, const geo_t *g, const float *pad,             \
                                                        const float *w, size_t si, size_t so, int C, int oc0,      \
                                                        size_t q0) {                                               \
        conv_tile_body(grid, g, pad, w, si, so, flip, s2, taps, C, oc0, q0, nt);                                    \
    }
TILE_FN(tile_f1, 0, 0, 9, 1)
TILE_FN(tile_f2, 0, 0, 9, 2)
TILE_FN(tile_f3, 0, 0, 9, 3)
TILE_FN(tile_b1, 1, 0, 9, 1)
TILE_FN(tile_b2, 1, 0, 9, 2)
TILE_FN(tile_b3, 1, 0, 9, 3)
TILE_FN(tile_s1, 0, 1, 9, 1)
TILE_FN(tile_s2, 0, 1, 9, 2)
TILE_FN(tile_s3, 0, 1, 9, 3)

/* AVX2 + FMA: 16 registers of 8 floats, so the tile is 4 output channels x 3 vectors of 8
 * positions (12 accumulators, 3 input vectors, 1 broadcast). No masks: the loads past a map's last
 * position stay inside the padded buffer (the next plane or the zeroed slack) and the stores past
 * it inside the grid's slack; those lanes are never copied out. */
#define FOR_OC4(X) X(0) X(1) X(2) X(3)
#define DECL8(o) __m256 a##o##0 = _mm256_setzero_ps(), a##o##1 = a##o##0, a##o##2 = a##o##0;
#define STEP8(o)                                                \
    {                                                           \
        __m256 wv = _mm256_broadcast_ss(wk + o * so);           \
        a##o##0 = _mm256_fmadd_ps(wv, x0, a##o##0);             \
        if (nt > 1) a##o##1 = _mm256_fmadd_ps(wv, x1, a##o##1); \
        if (nt > 2) a##o##2 = _mm256_fmadd_ps(wv, x2, a##o##2); \
    }
#define STORE8(o)                                             \
    {                                                         \
        float *y = grid + (oc0 + o) * g->gq + q0;             \
        _mm256_storeu_ps(y, a##o##0);                         \
        if (nt > 1) _mm256_storeu_ps(y + 8, a##o##1);         \
        if (nt > 2) _mm256_storeu_ps(y + 16, a##o##2);        \
    }

__attribute__((target("avx2,fma"), always_inline)) static inline void
conv_tile_body8(float *grid, const geo_t *g, const float *pad, const float *w, size_t si, size_t so, const int flip,
                const int s2, const int taps, int C, int oc0, size_t q0, const int nt) {
    FOR_OC4(DECL8)
    for (int c = 0; c < C; c++) {
        const float *pc = pad + c * g->plane + q0, *wc = w + c * si + oc0 * so;
#pragma GCC unroll 9
        for (int tap = 0; tap < taps; tap++) {
            const float *src = pc + TAP_OFF(tap), *wk = wc + (flip ? 8 - tap : tap);
            __m256 x0 = _mm256_loadu_ps(src);
            __m256 x1 = nt > 1 ? _mm256_loadu_ps(src + 8) : x0;
            __m256 x2 = nt > 2 ? _mm256_loadu_ps(src + 16) : x0;
            FOR_OC4(STEP8)
        }
    }
    FOR_OC4(STORE8)
}

#define TILE8_FN(name, flip, s2, taps, nt)                                                                          \
    __attribute__((target("avx2,fma"))) static void name(float *grid, const geo_t *g, const float *pad,            \
                                                         const float *w, size_t si, size_t so, int C, int oc0,     \
                                                         size_t q0) {                                              \
        for (int o = 0; o < OCB; o += 4)                                                                            \
            conv_tile_body8(grid, g, pad, w, si, so, flip, s2, taps, C, oc0 + o, q0, nt);                           \
    }
TILE8_FN(tile8_f1, 0, 0, 9, 1)
TILE8_FN(tile8_f2, 0, 0, 9, 2)
TILE8_FN(tile8_f3, 0, 0, 9, 3)
TILE8_FN(tile8_b1, 1, 0, 9, 1)
TILE8_FN(tile8_b2, 1, 0, 9, 2)
TILE8_FN(tile8_b3, 1, 0, 9, 3)
TILE8_FN(tile8_s1, 0, 1, 9, 1)
TILE8_FN(tile8_s2, 0, 1, 9, 2)
TILE8_FN(tile8_s3, 0, 1, 9, 3)
TILE8_FN(tile8_w1, 0, 0, 1, 1)
TILE8_FN(tile8_w2, 0, 0, 1, 2)
TILE8_FN(tile8_w3, 0, 0, 1, 3)

typedef void (*tile_fn)(float *, const geo_t *, const float *, const float *, size_t, size_t, int, int, size_t);

/* kind: 0 forward, 1 input gradient (flipped taps), 2 stride-2 forward, 3 one tap (the Winograd
 * products: a plain matrix product over input channels). */
static void run_tiles(float *grid, const geo_t *g, const float *pad, const float *w, size_t si, size_t so, int kind,
                      int C, int o0, int o1) {
    static const tile_fn fns[3][3] = {{tile_f1, tile_f2, tile_f3},
                                      {tile_b1, tile_b2, tile_b3},
                                      {tile_s1, tile_s2, tile_s3}};
    static const tile_fn fns8[4][3] = {{tile8_f1, tile8_f2, tile8_f3},
                                       {tile8_b1, tile8_b2, tile8_b3},
                                       {tile8_s1, tile8_s2, tile8_s3},
                                       {tile8_w1, tile8_w2, tile8_w3}};
    /* the one-tap products run only on the AVX2 path (bf_wino_ok), 8 lanes wide on any CPU */
    int wide = bf_engine_isa() == BF_ISA_AVX512 && kind < 3;
    size_t lanes = wide ? 16 : 8;
    size_t total = (g->Q + lanes - 1) / lanes;
    for (size_t v0 = 0; v0 < total;) {
        size_t vecs = total - v0;
        /* a map of 3k+1 vectors ends in two 2-vector tiles rather than a 3 and a 1: a 1-vector tile
         * loads as many weights as it does FMAs (e.g. 4.6% of a single image's time on the AVX2
         * path for 2.7% of its FLOPs, 7x7 maps being 7 vectors) */
        int nt = vecs >= 3 && vecs != 4 ? 3 : vecs == 4 ? 2 : (int)vecs;
        tile_fn f = (wide ? fns : fns8)[kind][nt - 1];
        for (int oc0 = o0; oc0 < o1; oc0 += OCB) f(grid, g, pad, w, si, so, C, oc0, v0 * lanes);
        v0 += (size_t)nt;
    }
}

/* Output channels [o0, o1) (multiples of 8, or o1 = OC). */
static void direct_range(float *out, const float *in, const float *w, int C, int OC, int H, int W, int input_grad,
                         int acc, float *scratch, int o0, int o1, const float *scale, const float *shift, int relu) {
    float *pad = scratch, *grid = scratch + pad_floats(C > OC ? C : OC, H, W);
    geo_t g = geo_s1(H, W);
    pad_input(pad, in, C, H, W);
    /* forward: in has C channels, out OC, weights w[OC][C][9]; input gradient: in = dY has C
     * channels (the forward's OC), out = dX has OC (the forward's C), weights w[C][OC][9] */
    size_t si = input_grad ? (size_t)OC * 9 : 9, so = input_grad ? 9 : (size_t)C * 9;
    run_tiles(grid, &g, pad, w, si, so, input_grad, C, o0, o1);
    copy_out(out + (size_t)o0 * H * W, grid + o0 * g.gq, &g, o1 - o0, H, W, acc, scale ? scale + o0 : NULL,
              scale ? shift + o0 : NULL, relu);
}

void bf_direct3x3(float *out, const float *in, const float *w, int C, int OC, int H, int W, int input_grad, int acc,
                  float *scratch) {
    direct_range(out, in, w, C, OC, H, W, input_grad, acc, scratch, 0, OC, NULL, NULL, 0);
}

void bf_direct3x3_channels(float *out, const float *in, const float *w, int C, int OC, int H, int W, float *scratch,
                           int o0, int o1, const float *scale, const float *shift, int relu) {
    if (o0 < o1) direct_range(out, in, w, C, OC, H, W, 0, 0, scratch, o0, o1, scale, shift, relu);
}

/* ---- stride 2 forward ---------------------------------------------------------------------- */

/* A 3x3 stride-2 padding-1 convolution reads input row 2*oh - 1 + ki: odd rows for ki = 0 and 2,
 * even rows for ki = 1, and likewise columns. The input is split into its four (row, column)
 * parity phases, each an (OH+1) x (OW+1) plane with one zero row on top and one zero column on the
 * left (the padding); output position q = oh*(OW+1) + ow then reads phase (ki != 1, kj != 1) at
 * q + (ki > 0)*(OW+1) + (kj > 0): every tap is again one contiguous vector load, and the tiles
 * above run unchanged with that offset table. */
static int s2_out(int n) { return (n - 1) / 2 + 1; }

static geo_t geo_s2(int H, int W) {
    int OH = s2_out(H), OW = s2_out(W);
    size_t pp = (size_t)(OH + 1) * (OW + 1);
    geo_t g = {4 * pp, (size_t)OH * (OW + 1), (size_t)OH * (OW + 1) + SLACK, OW + 1, {0}};
    for (int t = 0; t < 9; t++) {
        int ki = t / 3, kj = t % 3;
        g.off[t] = (size_t)((ki != 1) * 2 + (kj != 1)) * pp + (size_t)(ki > 0) * g.Wp + (kj > 0);
    }
    return g;
}

size_t bf_direct3x3s2_scratch(int C, int OC, int H, int W) {
    geo_t g = geo_s2(H, W);
    return (size_t)C * g.plane + SLACK + (size_t)OC * g.gq;
}

/* pad[c][phase (rr, rc)][1 + i][1 + j] = in[c][2i + rr][2j + rc] (0 past the input's edge), zero
 * first row and column, then zeroed slack. */
static void pad_phases(float *pad, const float *in, const geo_t *g, int C, int H, int W) {
    int OH = s2_out(H), Wq = g->Wp;
    size_t pp = g->plane / 4;
    for (int c = 0; c < C; c++)
        for (int ph = 0; ph < 4; ph++) {
            int rr = ph >> 1, rc = ph & 1;
            float *p = pad + c * g->plane + ph * pp;
            for (int k = 0; k < Wq; k++) p[k] = 0;
            for (int i = 0; i < OH; i++) {
                float *row = p + (size_t)(i + 1) * Wq;
                int h = 2 * i + rr;
                row[0] = 0;
                if (h >= H) {
                    for (int k = 1; k < Wq; k++) row[k] = 0;
                    continue;
                }
                const float *x = in + ((size_t)c * H + h) * W + rc;
                int n = (W - rc + 1) / 2; /* columns rc, rc+2, ... inside the input */
                for (int j = 0; j < n; j++) row[1 + j] = x[2 * j];
                for (int j = n; j < Wq - 1; j++) row[1 + j] = 0;
            }
        }
    memset(pad + (size_t)C * g->plane, 0, sizeof(float) * SLACK);
}

/* pad_phases on the AVX2 and AVX-512 paths: each input row is loaded once, 16 floats at a time
 * (masked at the row's end), and split into its even and odd columns by a shuffle and a
 * cross-lane permute, which go to the (row parity, 0) and (row parity, 1) phase rows (stores
 * masked at the phase row's end). The generic loop above reads every row twice, one float in two. */
__attribute__((target("avx2,fma"))) static __m256i first_lanes(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

__attribute__((target("avx2,fma"))) static void pad_phases8(float *pad, const float *in, const geo_t *g, int C, int H,
                                                            int W) {
    int OH = s2_out(H), Wq = g->Wp, ne = (W + 1) / 2, no = W / 2;
    size_t pp = g->plane / 4;
    for (int c = 0; c < C; c++) {
        float *pc = pad + c * g->plane;
        for (int ph = 0; ph < 4; ph++) memset(pc + ph * pp, 0, sizeof(float) * Wq); /* top rows */
        for (int h = 0; h < H; h++) {
            int rr = h & 1;
            float *re = pc + (size_t)(2 * rr) * pp + (size_t)(h / 2 + 1) * Wq, *ro = re + pp;
            const float *x = in + ((size_t)c * H + h) * W;
            re[0] = ro[0] = 0;
            for (int j = 0; j < ne; j += 8) {
                int left = W - 2 * j;
                __m256 a = _mm256_maskload_ps(x + 2 * j, first_lanes(left));
                __m256 b = _mm256_maskload_ps(x + 2 * j + 8, first_lanes(left - 8));
                __m256 e = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0)); /* a0 a2 b0 b2 | a4 a6 b4 b6 */
                __m256 o = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
                e = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), 0xD8));
                o = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(o), 0xD8));
                _mm256_maskstore_ps(re + 1 + j, first_lanes(ne - j), e);
                _mm256_maskstore_ps(ro + 1 + j, first_lanes(no - j), o);
            }
            for (int k = 1 + ne; k < Wq; k++) re[k] = 0;
            for (int k = 1 + no; k < Wq; k++) ro[k] = 0;
        }
        if (H % 2) /* the odd-row phases' last row lies below the input */
            for (int ph = 2; ph < 4; ph++) memset(pc + ph * pp + (size_t)OH * Wq, 0, sizeof(float) * Wq);
    }
    memset(pad + (size_t)C * g->plane, 0, sizeof(float) * SLACK);
}

void bf_direct3x3s2_channels(float *out, const float *in, const float *w, int C, int OC, int H, int W, float *scratch,
                             int o0, int o1, const float *scale, const float *shift, int relu) {
    (void)OC; /* o1 <= OC; the weights' rows are 9C apart */
    if (o0 >= o1) return;
    geo_t g = geo_s2(H, W);
    int OH = s2_out(H), OW = s2_out(W);
    float *pad = scratch, *grid = scratch + (size_t)C * g.plane + SLACK;
    (bf_engine_isa() >= BF_ISA_AVX2 ? pad_phases8 : pad_phases)(pad, in, &g, C, H, W);
    run_tiles(grid, &g, pad, w, 9, (size_t)C * 9, 2, C, o0, o1);
    copy_out(out + (size_t)o0 * OH * OW, grid + o0 * g.gq, &g, o1 - o0, OH, OW, 0, scale ? scale + o0 : NULL,
              scale ? shift + o0 : NULL, relu);
}

/* ---- Winograd F(2x2, 3x3) forward (eval mode) --------------------------------------------- */

/* Y = A^T [(G g G^T) . (B^T d B)] A computes a 2x2 block of outputs from a 4x4 input patch with
 * 16 multiplies per input channel instead of 36 (Lavin and Gray, 2016): the 16 products of a
 * patch become 16 matrix products over input channels, M[xi][oc][t] = sum_c U[xi][oc][c] *
 * V[xi][c][t] for the T = ceil(H/2) * ceil(W/2) tiles t, which run on the tiles above with one tap.
 *  - U = G g G^T, per 8 output channels: U[ob][xi][c][8] (the weights a tile broadcasts are 8
 *    consecutive floats); the caller transforms the weights (bf_wino_weights) and keeps them;
 *  - V = B^T d B from the input's four parity phases (pad_phases8): patch element (i, j) of tile
 *    (ty, tx) is padded input (2ty + i, 2tx + j), so each element of the tiles of a tile row is a
 *    contiguous run over tx in one phase, and 8 tiles transform at once;
 *  - per block of 8 output channels, the 16 products into M (16 x 8 x T floats, in L2), then
 *    Y = A^T M A with the eval-mode BatchNorm and ReLU, written straight to the output.
 * The transforms round differently from the direct sum: test_layers bounds the error. */

/* ceil(H/2) x ceil(W/2) tiles; phase planes of (TH+2) rows of pitch TW+2 (a zero row and column
 * first, the padding, and a last row and column that a tile at the bottom or right edge reads) */
typedef struct {
    int TH, TW, Wq;
    size_t pp, T, Tpad;
} wgeo_t;

static wgeo_t wgeo(int H, int W) {
    wgeo_t w;
    w.TH = (H + 1) / 2, w.TW = (W + 1) / 2, w.Wq = w.TW + 2;
    w.pp = (size_t)(w.TH + 2) * w.Wq;
    w.T = (size_t)w.TH * w.TW;
    w.Tpad = (w.T + 15) / 16 * 16;
    return w;
}

/* Floats between the 16 products' blocks of V (C rows of Tpad) and of M (8 rows): padded so that
 * the 16 streams a transform writes or reads are not a multiple of 4 KB apart, which would put
 * them all in the same few L1 sets (it made the input transform 2.5x slower). */
#define WPAD 32
static size_t wino_vxs(const wgeo_t *w, int C) { return (size_t)C * w->Tpad + WPAD; }
static size_t wino_mxs(const wgeo_t *w) { return (size_t)OCB * w->Tpad + WPAD; }

/* AVX2 only: on the AVX-512 path the direct kernel is as fast per layer (16 lanes halve its
 * loads per FMA) and the whole network was slower with the transforms (docs/ENGINE.md). */
int bf_wino_ok(int C, int OC, int H, int W) {
    return bf_engine_isa() == BF_ISA_AVX2 && OC % OCB == 0 && C >= 16 && H >= 2 && W >= 2;
}

size_t bf_wino_weights_floats(int C, int OC) { return (size_t)16 * C * OC; }

size_t bf_wino_scratch(int C, int OC, int H, int W) {
    (void)OC;
    wgeo_t w = wgeo(H, W);
    return 4 * (size_t)C * w.pp + SLACK + 16 * wino_vxs(&w, C) + 16 * wino_mxs(&w) + SLACK;
}

void bf_wino_weights(float *U, const float *w, int C, int OC, int o0, int o1) {
    (void)OC;
    for (int oc = o0; oc < o1; oc++)
        for (int c = 0; c < C; c++) {
            const float *g = w + ((size_t)oc * C + c) * 9;
            float t[4][3], u[4][4];
            for (int k = 0; k < 3; k++) { /* G g */
                t[0][k] = g[k];
                t[1][k] = (g[k] + g[3 + k] + g[6 + k]) * 0.5f;
                t[2][k] = (g[k] - g[3 + k] + g[6 + k]) * 0.5f;
                t[3][k] = g[6 + k];
            }
            for (int i = 0; i < 4; i++) { /* (G g) G^T */
                u[i][0] = t[i][0];
                u[i][1] = (t[i][0] + t[i][1] + t[i][2]) * 0.5f;
                u[i][2] = (t[i][0] - t[i][1] + t[i][2]) * 0.5f;
                u[i][3] = t[i][2];
            }
            for (int xi = 0; xi < 16; xi++)
                U[(((size_t)(oc / OCB) * 16 + xi) * C + c) * OCB + oc % OCB] = u[xi / 4][xi % 4];
        }
}

/* The first n (1-8) lanes of v to o, with plain 32-, 16-, 8- and 4-byte stores: AVX2's masked
 * store (vmaskmovps) is slow on AMD CPUs. */
__attribute__((target("avx2,fma"))) static inline void store_first(float *o, __m256 v, int n) {
    if (n >= 8) {
        _mm256_storeu_ps(o, v);
        return;
    }
    __m128 x = _mm256_castps256_ps128(v);
    if (n & 4) {
        _mm_storeu_ps(o, x);
        o += 4;
        x = _mm256_extractf128_ps(v, 1);
    }
    if (n & 2) {
        _mm_storel_pi((__m64 *)o, x);
        o += 2;
        x = _mm_movehl_ps(x, x);
    }
    if (n & 1) _mm_store_ss(o, x);
}

/* V[xi][c][t] (blocks wino_vxs apart, rows Tpad apart, T tiles each) from the phase planes. The
 * loads of a tile row's last vector run past it into the plane (or the slack). */
__attribute__((target("avx2,fma"))) static void wino_input(float *V, const float *phases, const wgeo_t *w, int C) {
    size_t xs = wino_vxs(w, C);
    /* row i of B^T is d[a] + d[b] (i = 1) or d[a] - d[b] */
    static const int ra[4] = {0, 1, 2, 1}, rb[4] = {2, 2, 1, 3};
    for (int c = 0; c < C; c++)
        for (int ty = 0; ty < w->TH; ty++)
            for (int tx = 0; tx < w->TW; tx += 8) {
                /* patch row i is padded row 2ty + i, input row 2ty + i - 1: of parity !(i & 1), in
                 * phase row ty + (i + 1) / 2; columns likewise */
                const float *row[4];
                for (int i = 0; i < 4; i++)
                    row[i] = phases + ((size_t)c * 4 + 2 * !(i & 1)) * w->pp + (size_t)(ty + (i + 1) / 2) * w->Wq + tx;
#define LD(i, j) _mm256_loadu_ps(row[i] + (size_t)!((j) & 1) * w->pp + ((j) + 1) / 2)
                int n = w->TW - tx;
                float *v = V + (size_t)c * w->Tpad + (size_t)ty * w->TW + tx;
                /* one row of B^T d at a time, times B: loads are cheaper than the 16 live vectors that
                 * transforming every row at once would spill */
                for (int i = 0; i < 4; i++) {
                    __m256 r[4];
                    for (int j = 0; j < 4; j++)
                        r[j] = i == 1 ? _mm256_add_ps(LD(ra[i], j), LD(rb[i], j))
                                      : _mm256_sub_ps(LD(ra[i], j), LD(rb[i], j));
                    store_first(v + (4 * i + 0) * xs, _mm256_sub_ps(r[0], r[2]), n);
                    store_first(v + (4 * i + 1) * xs, _mm256_add_ps(r[1], r[2]), n);
                    store_first(v + (4 * i + 2) * xs, _mm256_sub_ps(r[2], r[1]), n);
                    store_first(v + (4 * i + 3) * xs, _mm256_sub_ps(r[1], r[3]), n);
                }
#undef LD
            }
}

/* One output row: 8 tiles' left outputs a and right outputs b, interleaved, n <= 16 columns. */
__attribute__((target("avx2,fma"))) static void store_pairs(float *o, __m256 a, __m256 b, int n) {
    __m256 lo = _mm256_unpacklo_ps(a, b), hi = _mm256_unpackhi_ps(a, b); /* a0 b0 a1 b1 | a4 b4 a5 b5 */
    store_first(o, _mm256_permute2f128_ps(lo, hi, 0x20), n);
    if (n > 8) store_first(o + 8, _mm256_permute2f128_ps(lo, hi, 0x31), n - 8);
}

/* the epilogue of from_grid8: a multiply, then an add (not contracted into an FMA), then ReLU */
__attribute__((target("avx2,fma"))) static inline __m256 affine8(__m256 v, __m256 a, __m256 b, int on, int relu) {
    if (!on) return v;
    v = _mm256_mul_ps(v, a);
    __asm__("" : "+x"(v));
    v = _mm256_add_ps(v, b);
    return relu ? _mm256_max_ps(v, _mm256_setzero_ps()) : v;
}

/* out[o][H][W] for the 8 output channels of M[xi][o][t] (blocks wino_mxs apart, rows Tpad apart).
 * Loads past a row's last tile stay inside M or its slack. */
__attribute__((target("avx2,fma"))) static void wino_output(float *out, const float *M, const wgeo_t *w, int H, int W,
                                                           const float *scale, const float *shift, int relu) {
    size_t xs = wino_mxs(w);
    int on = scale != NULL;
    for (int o = 0; o < OCB; o++) {
        __m256 a = _mm256_set1_ps(on ? scale[o] : 1), b = _mm256_set1_ps(on ? shift[o] : 0);
        const float *mo = M + (size_t)o * w->Tpad;
        float *oo = out + (size_t)o * H * W;
        for (int ty = 0; ty < w->TH; ty++)
            for (int tx = 0; tx < w->TW; tx += 8) {
                const float *mt = mo + (size_t)ty * w->TW + tx;
                __m256 s0[4], s1[4];
                for (int j = 0; j < 4; j++) { /* A^T m */
                    __m256 m0 = _mm256_loadu_ps(mt + j * xs), m1 = _mm256_loadu_ps(mt + (4 + j) * xs);
                    __m256 m2 = _mm256_loadu_ps(mt + (8 + j) * xs), m3 = _mm256_loadu_ps(mt + (12 + j) * xs);
                    s0[j] = _mm256_add_ps(_mm256_add_ps(m0, m1), m2);
                    s1[j] = _mm256_sub_ps(_mm256_sub_ps(m1, m2), m3);
                }
                /* (A^T m) A */
                __m256 y00 = _mm256_add_ps(_mm256_add_ps(s0[0], s0[1]), s0[2]);
                __m256 y01 = _mm256_sub_ps(_mm256_sub_ps(s0[1], s0[2]), s0[3]);
                __m256 y10 = _mm256_add_ps(_mm256_add_ps(s1[0], s1[1]), s1[2]);
                __m256 y11 = _mm256_sub_ps(_mm256_sub_ps(s1[1], s1[2]), s1[3]);
                int n = W - 2 * tx < 16 ? W - 2 * tx : 16;
                float *r = oo + (size_t)(2 * ty) * W + 2 * tx;
                store_pairs(r, affine8(y00, a, b, on, relu), affine8(y01, a, b, on, relu), n);
                if (2 * ty + 1 < H) store_pairs(r + W, affine8(y10, a, b, on, relu), affine8(y11, a, b, on, relu), n);
            }
    }
}

void bf_wino_channels(float *out, const float *in, const float *U, int C, int OC, int H, int W, float *scratch, int o0,
                      int o1, const float *scale, const float *shift, int relu) {
    (void)OC;
    if (o0 >= o1) return;
    wgeo_t w = wgeo(H, W);
    size_t vxs = wino_vxs(&w, C), mxs = wino_mxs(&w);
    float *phases = scratch, *V = phases + 4 * (size_t)C * w.pp + SLACK, *M = V + 16 * vxs;
    geo_t gp = {4 * w.pp, 0, 0, w.Wq, {0}};
    pad_phases8(phases, in, &gp, C, H, W);
    for (size_t p = 0; p < 4 * (size_t)C; p++) /* the phases' last row, which pad_phases8 leaves */
        memset(phases + p * w.pp + (size_t)(w.TH + 1) * w.Wq, 0, sizeof(float) * w.Wq);
    wino_input(V, phases, &w, C);
    geo_t gm = {w.Tpad, w.T, w.Tpad, 0, {0}}; /* rows of V (input channels) and of M Tpad apart */
    for (int ob = o0 / OCB; ob * OCB < o1; ob++) {
        for (int xi = 0; xi < 16; xi++)
            run_tiles(M + xi * mxs, &gm, V + xi * vxs, U + ((size_t)ob * 16 + xi) * C * OCB, OCB, 1, 3, C, 0, OCB);
        wino_output(out + (size_t)ob * OCB * H * W, M, &w, H, W, scale ? scale + ob * OCB : NULL,
                    scale ? shift + ob * OCB : NULL, relu);
    }
}

/* ---- weight gradient ----------------------------------------------------------------------- */

#define FOR_TAP(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8)
#define DECL3(t) __m512 b0_##t = _mm512_setzero_ps(), b1_##t = b0_##t, b2_##t = b0_##t;
#define STEP3(t)                                                   \
    {                                                              \
        __m512 x = _mm512_loadu_ps(src + (t / 3) * Wp + t % 3);    \
        __asm__("" : "+v"(x)); /* one load feeding 3 FMAs, not 3 */ \
        b0_##t = _mm512_fmadd_ps(y0, x, b0_##t);                   \
        if (k > 1) b1_##t = _mm512_fmadd_ps(y1, x, b1_##t);        \
        if (k > 2) b2_##t = _mm512_fmadd_ps(y2, x, b2_##t);        \
    }
#define REDUCE3(t)                                           \
    dw0[t] += _mm512_reduce_add_ps(b0_##t);                  \
    if (k > 1) dw1[t] += _mm512_reduce_add_ps(b1_##t);       \
    if (k > 2) dw2[t] += _mm512_reduce_add_ps(b2_##t);

/* dW[oc][c][9] += sum over positions q < Q (a multiple of 16) of dY[oc][q] * pad[c][q + tap
 * offset], for k = 1-3 output channels at once (27 accumulators: each input vector loaded feeds 3
 * FMAs); dw1/dw2 are dw0 + 9C, + 18C. Inlined per k so no test remains in the loop. */
__attribute__((target("avx512f"), always_inline)) static inline void dw_body(float *dw0, const float *dy0,
                                                                              size_t ylen, const float *padc,
                                                                              size_t Q, int Wp, size_t wstride,
                                                                              const int k) {
    float *dw1 = dw0 + wstride, *dw2 = dw1 + wstride;
    const float *dy1 = dy0 + ylen, *dy2 = dy1 + ylen;
    FOR_TAP(DECL3)
    for (size_t q0 = 0; q0 < Q; q0 += 16) {
        __m512 y0 = _mm512_loadu_ps(dy0 + q0);
        __m512 y1 = k > 1 ? _mm512_loadu_ps(dy1 + q0) : y0;
        __m512 y2 = k > 2 ? _mm512_loadu_ps(dy2 + q0) : y0;
        const float *src = padc + q0;
        FOR_TAP(STEP3)
    }
    FOR_TAP(REDUCE3)
}

#define DW_FN(name, k)                                                                                             \
    __attribute__((target("avx512f"))) static void name(float *dw0, const float *dy0, size_t ylen,                \
                                                        const float *padc, size_t Q, int Wp, size_t wstride) {     \
        dw_body(dw0, dy0, ylen, padc, Q, Wp, wstride, k);                                                           \
    }
DW_FN(dw_1, 1)
DW_FN(dw_2, 2)
DW_FN(dw_3, 3)

/* AVX2: 16 registers cannot hold 27 accumulators, so a call covers one kernel row ki: k = 1-3
 * output channels x 3 taps = 9 accumulators, each input vector loaded once for its k FMAs and each
 * dY vector for its 3 (6 loads per 9 FMAs; one channel's 9 taps at once took 10). */
#define FOR_KJ(X) X(0) X(1) X(2)
#define DECL_R(j) __m256 r0_##j = _mm256_setzero_ps(), r1_##j = r0_##j, r2_##j = r0_##j;
#define STEP_R(j)                                             \
    {                                                         \
        __m256 x = _mm256_loadu_ps(src + j);                  \
        r0_##j = _mm256_fmadd_ps(y0, x, r0_##j);              \
        if (k > 1) r1_##j = _mm256_fmadd_ps(y1, x, r1_##j);   \
        if (k > 2) r2_##j = _mm256_fmadd_ps(y2, x, r2_##j);   \
    }
#define REDUCE_R(j)                           \
    dw0[j] += hsum8(r0_##j);                  \
    if (k > 1) dw1[j] += hsum8(r1_##j);       \
    if (k > 2) dw2[j] += hsum8(r2_##j);

__attribute__((target("avx2,fma"))) static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* dw0..dw2 point at tap (ki, 0) of their output channel; padc at the input run shifted by ki rows. */
__attribute__((target("avx2,fma"), always_inline)) static inline void dw8_body(float *dw0, const float *dy0,
                                                                                size_t ylen, const float *padc,
                                                                                size_t Q, size_t wstride, const int k) {
    float *dw1 = dw0 + wstride, *dw2 = dw1 + wstride;
    const float *dy1 = dy0 + ylen, *dy2 = dy1 + ylen;
    FOR_KJ(DECL_R)
    for (size_t q0 = 0; q0 < Q; q0 += 8) {
        __m256 y0 = _mm256_loadu_ps(dy0 + q0);
        __m256 y1 = k > 1 ? _mm256_loadu_ps(dy1 + q0) : y0;
        __m256 y2 = k > 2 ? _mm256_loadu_ps(dy2 + q0) : y0;
        const float *src = padc + q0;
        FOR_KJ(STEP_R)
    }
    FOR_KJ(REDUCE_R)
}

#define DW8_FN(name, k)                                                                                        \
    __attribute__((target("avx2,fma"))) static void name(float *dw0, const float *dy0, size_t ylen,             \
                                                         const float *padc, size_t Q, size_t wstride) {         \
        dw8_body(dw0, dy0, ylen, padc, Q, wstride, k);                                                          \
    }
DW8_FN(dw8_1, 1)
DW8_FN(dw8_2, 2)
DW8_FN(dw8_3, 3)

int bf_direct3x3_dw_ok(int OC) { return OC > 0 && bf_engine_isa() >= BF_ISA_AVX2; }

/* The weight gradient sums over every image of the slice, so the images are laid end to end:
 * channel c of all n images forms one run of n padded planes ((H+2) x Wp each), and dY channel oc
 * one run of n planes on the same pitch (rows H, H+1 and the two extra columns zero). Output
 * position q of image i then reads input q + tap offset inside image i's plane (the overhang of the
 * last rows meets zero dY), so one loop covers the whole slice and the lanes are reduced once per
 * slice, not once per image: for a 7x7 map a per-image reduction costs as much as the FMAs. */
static size_t run_floats(int n, int H, int W) { return (size_t)n * (H + 2) * (W + 2) + 2 * (size_t)(W + 2) + SLACK; }

size_t bf_direct3x3_dw_scratch(int n, int C, int OC, int H, int W) { return (size_t)(C + OC) * run_floats(n, H, W); }

static void lay_out(float *run, const float *x, int n, int C, int H, int W, int padded) {
    size_t plane = (size_t)(H + 2) * (W + 2), len = run_floats(n, H, W);
    int Wp = W + 2;
    for (int c = 0; c < C; c++) {
        float *r = run + c * len;
        for (int i = 0; i < n; i++) {
            /* input: rows 1..H from column 1 of a zero frame; dY: rows 0..H-1 from column 0 */
            float *p = r + i * plane;
            const float *src = x + ((size_t)i * C + c) * H * W;
            for (int h = 0; h < H + 2; h++) {
                float *row = p + (size_t)h * Wp;
                int y = h - padded;
                if (y < 0 || y >= H) {
                    for (int k = 0; k < Wp; k++) row[k] = 0;
                    continue;
                }
                for (int k = 0; k < padded; k++) row[k] = 0;
                copy_row(row + padded, src + (size_t)y * W, W);
                for (int k = padded + W; k < Wp; k++) row[k] = 0;
            }
        }
        memset(r + n * plane, 0, sizeof(float) * (len - n * plane));
    }
}

/* Positions per pass: the pass's slice of every input and dY run (C + OC runs) stays in L2
 * (~512 KB) while each (output triple, input channel) pair sweeps it; streaming whole runs from L3
 * instead halved the kernel's speed at 32 images a slice. */
#define DW_L2_FLOATS (128 * 1024)

void bf_direct3x3_dw(float *dw, const float *dy, const float *in, int n, int C, int OC, int H, int W, float *scratch) {
    size_t len = run_floats(n, H, W), Q = ((size_t)n * (H + 2) * (W + 2) + 15) / 16 * 16;
    float *xr = scratch, *yr = scratch + (size_t)C * len;
    lay_out(xr, in, n, C, H, W, 1);
    lay_out(yr, dy, n, OC, H, W, 0);
    size_t P = DW_L2_FLOATS / (size_t)(C + OC) / 16 * 16;
    if (P < 256) P = 256;
    int wide = bf_engine_isa() == BF_ISA_AVX512;
    for (size_t p0 = 0; p0 < Q; p0 += P) {
        size_t np = Q - p0 < P ? Q - p0 : P;
        for (int oc = 0; oc < OC && !wide; oc += 3) {
            int k = OC - oc < 3 ? OC - oc : 3;
            for (int c = 0; c < C; c++)
                for (int ki = 0; ki < 3; ki++) {
                    float *d0 = dw + ((size_t)oc * C + c) * 9 + 3 * ki;
                    const float *y0 = yr + oc * len + p0, *x0 = xr + c * len + p0 + (size_t)ki * (W + 2);
                    size_t ws = (size_t)C * 9;
                    (k == 3 ? dw8_3 : k == 2 ? dw8_2 : dw8_1)(d0, y0, len, x0, np, ws);
                }
        }
        for (int oc = 0; oc < OC && wide; oc += 3) {
            int k = OC - oc < 3 ? OC - oc : 3;
            for (int c = 0; c < C; c++) {
                float *d0 = dw + ((size_t)oc * C + c) * 9;
                const float *y0 = yr + oc * len + p0, *x0 = xr + c * len + p0;
                size_t ws = (size_t)C * 9;
                if (k == 3)
                    dw_3(d0, y0, len, x0, np, W + 2, ws);
                else if (k == 2)
                    dw_2(d0, y0, len, x0, np, W + 2, ws);
                else
                    dw_1(d0, y0, len, x0, np, W + 2, ws);
            }
        }
    }
}

#else /* not x86-64: no direct kernels, callers use im2col + GEMM */

int bf_direct3x3_ok(int OC) {
    (void)OC;
    return 0;
}
int bf_direct3x3_dw_ok(int OC) {
    (void)OC;
    return 0;
}
size_t bf_direct3x3_scratch(int C, int OC, int H, int W) {
    (void)C, (void)OC, (void)H, (void)W;
    return 0;
}
void bf_direct3x3(float *out, const float *in, const float *w, int C, int OC, int H, int W, int input_grad, int acc,
                  float *scratch) {
    (void)out, (void)in, (void)w, (void)C, (void)OC, (void)H, (void)W, (void)input_grad, (void)acc, (void)scratch;
}
void bf_direct3x3_channels(float *out, const float *in, const float *w, int C, int OC, int H, int W, float *scratch,
                           int o0, int o1, const float *scale, const float *shift, int relu) {
    (void)out, (void)in, (void)w, (void)C, (void)OC, (void)H, (void)W, (void)scratch, (void)o0, (void)o1;
    (void)scale, (void)shift, (void)relu;
}
size_t bf_direct3x3s2_scratch(int C, int OC, int H, int W) {
    (void)C, (void)OC, (void)H, (void)W;
    return 0;
}
void bf_direct3x3s2_channels(float *out, const float *in, const float *w, int C, int OC, int H, int W, float *scratch,
                             int o0, int o1, const float *scale, const float *shift, int relu) {
    (void)out, (void)in, (void)w, (void)C, (void)OC, (void)H, (void)W, (void)scratch, (void)o0, (void)o1;
    (void)scale, (void)shift, (void)relu;
}
size_t bf_direct3x3_dw_scratch(int n, int C, int OC, int H, int W) {
    (void)n, (void)C, (void)OC, (void)H, (void)W;
    return 0;
}
void bf_direct3x3_dw(float *dw, const float *dy, const float *in, int n, int C, int OC, int H, int W, float *scratch) {
    (void)dw, (void)dy, (void)in, (void)n, (void)C, (void)OC, (void)H, (void)W, (void)scratch;
}
int bf_wino_ok(int C, int OC, int H, int W) {
    (void)C, (void)OC, (void)H, (void)W;
    return 0;
}
size_t bf_wino_weights_floats(int C, int OC) {
    (void)C, (void)OC;
    return 0;
}
size_t bf_wino_scratch(int C, int OC, int H, int W) {
    (void)C, (void)OC, (void)H, (void)W;
    return 0;
}
void bf_wino_weights(float *U, const float *w, int C, int OC, int o0, int o1) {
    (void)U, (void)w, (void)C, (void)OC, (void)o0, (void)o1;
}
void bf_wino_channels(float *out, const float *in, const float *U, int C, int OC, int H, int W, float *scratch, int o0,
                      int o1, const float *scale, const float *shift, int relu) {
    (void)out, (void)in, (void)U, (void)C, (void)OC, (void)H, (void)W, (void)scratch, (void)o0, (void)o1;
    (void)scale, (void)shift, (void)relu;
}
#endif

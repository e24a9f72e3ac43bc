/* layers.c: forward/backward pairs of every layer, over raw float* with explicit shapes.
 *
 * Each call works on a slice of n images (one thread's share of the batch); shapes are per image.
 * Convolutions are im2col + cblas_sgemm per image: the per-image column buffer stays in L2, which
 * measured faster here than one batch-wide GEMM (research notes, c_anchors.md §2.1). */
#include <cblas.h>
#include <float.h>
#include <math.h>
#include <string.h>

#include "bf_models.h"

/* The memory-bound loops (im2col, BN, pointwise) get AVX-512 / AVX2 clones picked at load time, so
 * the build stays generic x86-64 yet runs wide vectors where the CPU has them. Results depend only
 * on which clone runs, i.e. on the machine, never on the run. */
#if defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__) && !defined(BF_NO_CLONES)
#define BF_HOT __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define BF_HOT
#endif

/* ---- convolution -------------------------------------------------------------------------- */

static int is_pointwise(int K, int S, int P) { return K == 1 && S == 1 && P == 0; }

size_t bf_conv2d_scratch(int C, int H, int W, int OC, int K, int S, int P) {
    (void)OC;
    if (is_pointwise(K, S, P)) return 0;
    size_t rows = (size_t)C * K * K;
    size_t cols = (size_t)bf_conv_out(H, K, S, P) * bf_conv_out(W, K, S, P);
    /* im2col of the input and the column gradient; strided convolutions also keep the input
     * split into S column phases (see strided_phases) */
    size_t phases = S > 1 ? (size_t)C * H * S * ((W + S - 1) / S) : 0;
    return 2 * rows * cols + phases;
}

static int ceil_div(int a, int b) { return a <= 0 ? 0 : (a + b - 1) / b; }

/* The output columns ow for which input column ow*S - P + kj lies inside [0, W). */
static void valid_cols(int W, int OW, int S, int P, int kj, int *lo, int *hi) {
    *lo = ceil_div(P - kj, S);
    *hi = ceil_div(W + P - kj, S);
    if (*hi > OW) *hi = OW;
    if (*lo > *hi) *lo = *hi;
}

/* "Same" convolutions (stride 1, OW == W): each im2col row block is the input plane shifted by
 * (ki-P)*W + (kj-P) elements, so it is one contiguous copy plus zeroing of the few columns that
 * wrapped around a row edge. rows [oh0, oh1) are the ones whose input row exists. */
static void same_rows(int H, int OH, int P, int ki, int *oh0, int *oh1) {
    *oh0 = P - ki > 0 ? P - ki : 0;
    *oh1 = H + P - ki < OH ? H + P - ki : OH;
    if (*oh1 < *oh0) *oh1 = *oh0;
}

BF_HOT static void im2col_same(float *restrict col, const float *restrict in, int C, int H, int W, int K, int P) {
    size_t HW = (size_t)H * W;
    for (int c = 0; c < C; c++) {
        const float *plane = in + c * HW;
        for (int ki = 0; ki < K; ki++) {
            int oh0, oh1;
            same_rows(H, H, P, ki, &oh0, &oh1);
            for (int kj = 0; kj < K; kj++) {
                float *dst = col + (((size_t)c * K + ki) * K + kj) * HW;
                long off = (long)(oh0 - P + ki) * W - P + kj; /* source of dst[oh0*W] */
                long n = (long)(oh1 - oh0) * W;
                long j0 = off < 0 ? -off : 0, j1 = (long)HW - off < n ? (long)HW - off : n;
                memset(dst, 0, sizeof(float) * ((size_t)oh0 * W + j0));
                memcpy(dst + (size_t)oh0 * W + j0, plane + off + j0, sizeof(float) * (j1 - j0));
                memset(dst + (size_t)oh0 * W + j1, 0, sizeof(float) * (HW - (size_t)oh0 * W - j1));
                int lo, hi;
                valid_cols(W, W, 1, P, kj, &lo, &hi);
                for (int oh = oh0; oh < oh1; oh++) {
                    for (int ow = 0; ow < lo; ow++) dst[(size_t)oh * W + ow] = 0;
                    for (int ow = hi; ow < W; ow++) dst[(size_t)oh * W + ow] = 0;
                }
            }
        }
    }
}

/* Adjoint of im2col_same. Destroys col (zeroes the wrapped columns so the block add can be one
 * contiguous loop); col is scratch. */
BF_HOT static void col2im_same(float *restrict in, float *restrict col, int C, int H, int W, int K, int P) {
    size_t HW = (size_t)H * W;
    for (int c = 0; c < C; c++) {
        float *plane = in + c * HW;
        for (int ki = 0; ki < K; ki++) {
            int oh0, oh1;
            same_rows(H, H, P, ki, &oh0, &oh1);
            for (int kj = 0; kj < K; kj++) {
                float *src = col + (((size_t)c * K + ki) * K + kj) * HW;
                int lo, hi;
                valid_cols(W, W, 1, P, kj, &lo, &hi);
                for (int oh = oh0; oh < oh1; oh++) {
                    for (int ow = 0; ow < lo; ow++) src[(size_t)oh * W + ow] = 0;
                    for (int ow = hi; ow < W; ow++) src[(size_t)oh * W + ow] = 0;
                }
                long off = (long)(oh0 - P + ki) * W - P + kj;
                long n = (long)(oh1 - oh0) * W;
                long j0 = off < 0 ? -off : 0, j1 = (long)HW - off < n ? (long)HW - off : n;
                float *d = plane + off + j0; /* off may be negative; off + j0 is not */
                const float *sr = src + (size_t)oh0 * W + j0;
                for (long j = 0; j < j1 - j0; j++) d[j] += sr[j];
            }
        }
    }
}

/* Strided convolutions read every S-th input column. Splitting each input row into S "phases"
 * (phase r holds columns r, r+S, r+2S, ...) turns every im2col row into a contiguous copy from one
 * phase: input column S*ow + d lives in phase r = d mod S at index ow + (d - r)/S. The phases of
 * one image take C*H*S*ceil(W/S) floats. */
static int phase_width(int W, int S) { return (W + S - 1) / S; }

static float *phase_row(float *ph, int c, int r, int ih, int H, int S, int PW) {
    return ph + (((size_t)c * S + r) * H + ih) * PW;
}

BF_HOT static void split_phases(float *restrict ph, const float *restrict in, int C, int H, int W, int S) {
    int PW = phase_width(W, S);
    for (int c = 0; c < C; c++)
        for (int ih = 0; ih < H; ih++) {
            const float *x = in + ((size_t)c * H + ih) * W;
            for (int r = 0; r < S; r++) {
                float *dst = phase_row(ph, c, r, ih, H, S, PW);
                int j = 0;
                for (; r + j * S < W; j++) dst[j] = x[r + j * S];
                for (; j < PW; j++) dst[j] = 0;
            }
        }
}

BF_HOT static void merge_phases(float *restrict in, const float *restrict ph, int C, int H, int W, int S) {
    int PW = phase_width(W, S);
    for (int c = 0; c < C; c++)
        for (int ih = 0; ih < H; ih++) {
            float *x = in + ((size_t)c * H + ih) * W;
            for (int r = 0; r < S; r++) {
                const float *src = phase_row((float *)ph, c, r, ih, H, S, PW);
                for (int j = 0; r + j * S < W; j++) x[r + j * S] += src[j];
            }
        }
}

/* col[(c*K+ki)*K+kj][oh*OW+ow] = in[c][oh*S-P+ki][ow*S-P+kj] (0 outside), for stride S >= 1. */
BF_HOT static void im2col(float *restrict col, const float *restrict in, float *restrict ph, int C, int H, int W,
                          int K, int S, int P, int OH, int OW) {
    int PW = S > 1 ? phase_width(W, S) : W;
    if (S > 1) split_phases(ph, in, C, H, W, S);
    for (int c = 0; c < C; c++) {
        for (int ki = 0; ki < K; ki++) {
            for (int kj = 0; kj < K; kj++) {
                float *dst = col + (((size_t)c * K + ki) * K + kj) * OH * OW;
                int lo, hi, d = kj - P, r = ((d % S) + S) % S, shift = (d - r) / S;
                valid_cols(W, OW, S, P, kj, &lo, &hi);
                for (int oh = 0; oh < OH; oh++, dst += OW) {
                    int ih = oh * S - P + ki;
                    if (ih < 0 || ih >= H) {
                        for (int ow = 0; ow < OW; ow++) dst[ow] = 0;
                        continue;
                    }
                    const float *src = S > 1 ? phase_row(ph, c, r, ih, H, S, PW) : in + ((size_t)c * H + ih) * W;
                    for (int ow = 0; ow < lo; ow++) dst[ow] = 0;
                    for (int ow = lo; ow < hi; ow++) dst[ow] = src[ow + shift];
                    for (int ow = hi; ow < OW; ow++) dst[ow] = 0;
                }
            }
        }
    }
}

/* The adjoint of im2col: adds every column entry back onto the input position it came from
 * (through the phases when strided: accumulate per phase, then interleave into in). */
BF_HOT static void col2im(float *restrict in, const float *restrict col, float *restrict ph, int C, int H, int W,
                          int K, int S, int P, int OH, int OW) {
    int PW = S > 1 ? phase_width(W, S) : W;
    if (S > 1) memset(ph, 0, sizeof(float) * (size_t)C * S * H * PW);
    for (int c = 0; c < C; c++) {
        for (int ki = 0; ki < K; ki++) {
            for (int kj = 0; kj < K; kj++) {
                const float *src = col + (((size_t)c * K + ki) * K + kj) * OH * OW;
                int lo, hi, d = kj - P, r = ((d % S) + S) % S, shift = (d - r) / S;
                valid_cols(W, OW, S, P, kj, &lo, &hi);
                for (int oh = 0; oh < OH; oh++, src += OW) {
                    int ih = oh * S - P + ki;
                    if (ih < 0 || ih >= H) continue;
                    float *dst = S > 1 ? phase_row(ph, c, r, ih, H, S, PW) : in + ((size_t)c * H + ih) * W;
                    for (int ow = lo; ow < hi; ow++) dst[ow + shift] += src[ow];
                }
            }
        }
    }
    if (S > 1) merge_phases(in, ph, C, H, W, S);
}

void bf_conv2d_forward(float *out, const float *in, const float *w, const float *b, int n, int C, int H,
                       int W, int OC, int K, int S, int P, float *scratch) {
    int OH = bf_conv_out(H, K, S, P), OW = bf_conv_out(W, K, S, P);
    int rows = C * K * K, cols = OH * OW;
    for (int i = 0; i < n; i++) {
        const float *x = in + (size_t)i * C * H * W;
        float *y = out + (size_t)i * OC * cols;
        const float *col = x;
        if (!is_pointwise(K, S, P)) {
            if (S == 1 && OW == W && OH == H)
                im2col_same(scratch, x, C, H, W, K, P);
            else
                im2col(scratch, x, scratch + 2 * (size_t)rows * cols, C, H, W, K, S, P, OH, OW);
            col = scratch;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, OC, cols, rows, 1.0f, w, rows, col, cols,
                    0.0f, y, cols);
        if (b)
            for (int oc = 0; oc < OC; oc++)
                for (int j = 0; j < cols; j++) y[(size_t)oc * cols + j] += b[oc];
    }
}

void bf_conv2d_backward(float *din, int acc, float *dw, float *db, const float *dout, const float *in,
                        const float *w, int n, int C, int H, int W, int OC, int K, int S, int P,
                        float *scratch) {
    int OH = bf_conv_out(H, K, S, P), OW = bf_conv_out(W, K, S, P);
    int rows = C * K * K, cols = OH * OW;
    int pw = is_pointwise(K, S, P);
    float *col = scratch, *dcol = scratch + (size_t)rows * cols;
    for (int i = 0; i < n; i++) {
        const float *x = in + (size_t)i * C * H * W;
        const float *dy = dout + (size_t)i * OC * cols;
        const float *xc = x;
        if (!pw) {
            if (S == 1 && OW == W && OH == H)
                im2col_same(col, x, C, H, W, K, P);
            else
                im2col(col, x, dcol + (size_t)rows * cols, C, H, W, K, S, P, OH, OW);
            xc = col;
        }
        /* dW[OC, rows] += dY[OC, cols] * X_col[rows, cols]^T */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, OC, rows, cols, 1.0f, dy, cols, xc, cols, 1.0f,
                    dw, rows);
        if (db)
            for (int oc = 0; oc < OC; oc++) {
                float s = 0;
                for (int j = 0; j < cols; j++) s += dy[(size_t)oc * cols + j];
                db[oc] += s;
            }
        if (!din) continue;
        float *dx = din + (size_t)i * C * H * W;
        if (pw) { /* dX[C, HW] (+)= W[OC, C]^T * dY[OC, HW] straight into the input gradient */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, rows, cols, OC, 1.0f, w, rows, dy, cols,
                        acc ? 1.0f : 0.0f, dx, cols);
            continue;
        }
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, rows, cols, OC, 1.0f, w, rows, dy, cols, 0.0f,
                    dcol, cols);
        if (!acc) memset(dx, 0, sizeof(float) * C * H * W);
        if (S == 1 && OW == W && OH == H)
            col2im_same(dx, dcol, C, H, W, K, P);
        else
            col2im(dx, dcol, dcol + (size_t)rows * cols, C, H, W, K, S, P, OH, OW);
    }
}

/* ---- batch normalization ------------------------------------------------------------------ */

BF_HOT void bf_bn_stats(double *sum, double *sumsq, const float *in, int n, int C, int HW) {
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

BF_HOT void bf_bn_forward(float *out, const float *in, const float *mean, const float *rstd, const float *gamma,
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

BF_HOT void bf_bn_backward_stats(double *sum_dy, double *sum_dy_xhat, float *dout, const float *out,
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

BF_HOT void bf_bn_backward(float *din, int acc, const float *dout, const float *in, const float *mean,
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

/* ---- pointwise ---------------------------------------------------------------------------- */

BF_HOT void bf_relu_forward(float *out, const float *in, size_t count) {
    for (size_t i = 0; i < count; i++) out[i] = in[i] > 0 ? in[i] : 0;
}

BF_HOT void bf_relu_backward(float *din, int acc, const float *dout, const float *out, size_t count) {
    if (acc)
        for (size_t i = 0; i < count; i++) din[i] += out[i] > 0 ? dout[i] : 0;
    else
        for (size_t i = 0; i < count; i++) din[i] = out[i] > 0 ? dout[i] : 0;
}

BF_HOT void bf_add_forward(float *out, const float *a, const float *b, size_t count, int relu) {
    if (relu)
        for (size_t i = 0; i < count; i++) {
            float v = a[i] + b[i];
            out[i] = v > 0 ? v : 0;
        }
    else
        for (size_t i = 0; i < count; i++) out[i] = a[i] + b[i];
}

BF_HOT static void route(float *d, int acc, const float *g, size_t count) {
    if (acc)
        for (size_t i = 0; i < count; i++) d[i] += g[i];
    else
        memcpy(d, g, sizeof(float) * count);
}

BF_HOT void bf_add_backward(float *da, int acc_a, float *db, int acc_b, float *dout, const float *out,
                     size_t count, int relu) {
    if (relu)
        for (size_t i = 0; i < count; i++) dout[i] = out[i] > 0 ? dout[i] : 0;
    route(da, acc_a, dout, count);
    route(db, acc_b, dout, count);
}

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

BF_HOT void bf_gap_forward(float *out, const float *in, int n, int C, int HW) {
    for (int p = 0; p < n * C; p++) {
        const float *x = in + (size_t)p * HW;
        float s = 0;
#pragma omp simd reduction(+ : s)
        for (int j = 0; j < HW; j++) s += x[j];
        out[p] = s / HW;
    }
}

BF_HOT void bf_gap_backward(float *din, int acc, const float *dout, int n, int C, int HW) {
    for (int p = 0; p < n * C; p++) {
        float g = dout[p] / HW, *dx = din + (size_t)p * HW;
        if (acc)
            for (int j = 0; j < HW; j++) dx[j] += g;
        else
            for (int j = 0; j < HW; j++) dx[j] = g;
    }
}

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

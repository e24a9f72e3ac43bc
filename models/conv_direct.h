/* conv_direct.h (internal): direct 3x3 convolutions (stride 1 "same", and stride-2 forward) with
 * AVX-512 or AVX2 + FMA kernels, on the engine's vector path (bf_engine_isa). */
#ifndef BF_CONV_DIRECT_H
#define BF_CONV_DIRECT_H

#include <stddef.h>

/* Whether the direct kernel handles a 3x3/stride 1/padding 1 convolution producing OC channels
 * on this path (AVX-512 or AVX2, OC a multiple of 8). */
int bf_direct3x3_ok(int OC);
/* Floats of scratch: the zero-padded input planes. */
size_t bf_direct3x3_scratch(int C, int OC, int H, int W);
/* One image. Forward (input_grad = 0): out[OC][H][W] (+)= conv3x3(in[C][H][W]) with weights
 * w[OC][C][3][3]. Input gradient (input_grad = 1): out = dX[OC][H][W] (+)= the transposed
 * convolution of in = dY[C][H][W], with w the forward weights w[C][OC][3][3] (forward OC = C here). */
void bf_direct3x3(float *out, const float *in, const float *w, int C, int OC, int H, int W, int input_grad, int acc,
                  float *scratch);

/* Forward, output channels [o0, o1) only (multiples of 8): lets threads split one image. With
 * scale (indexed by output channel), out = conv * scale[oc] + shift[oc], then ReLU if relu. */
void bf_direct3x3_channels(float *out, const float *in, const float *w, int C, int OC, int H, int W, float *scratch,
                           int o0, int o1, const float *scale, const float *shift, int relu);

/* Forward of a 3x3 stride-2 padding-1 convolution, output channels [o0, o1) (multiples of 8),
 * same epilogue; on the same CPUs and OC as bf_direct3x3_ok. Scratch: bf_direct3x3s2_scratch. */
size_t bf_direct3x3s2_scratch(int C, int OC, int H, int W);
void bf_direct3x3s2_channels(float *out, const float *in, const float *w, int C, int OC, int H, int W, float *scratch,
                             int o0, int o1, const float *scale, const float *shift, int relu);

/* Weight gradient of the same convolution over n images: dw[OC][C][3][3] += sum over images and
 * pixels of dY[n][OC][H][W] times the shifted input in[n][C][H][W] (bf_direct3x3_dw_ok: the CPU
 * path is AVX-512 or AVX2). Scratch: bf_direct3x3_dw_scratch floats. */
int bf_direct3x3_dw_ok(int OC);
size_t bf_direct3x3_dw_scratch(int n, int C, int OC, int H, int W);
void bf_direct3x3_dw(float *dw, const float *dy, const float *in, int n, int C, int OC, int H, int W, float *scratch);

/* Winograd F(2x2, 3x3) forward of a 3x3 stride-1 padding-1 convolution without bias (eval mode:
 * rounds differently from the direct sum). bf_wino_ok: on this path and shape (the AVX2 path,
 * OC a multiple of 8, C >= 16). The weights w[OC][C][3][3] are transformed into U
 * (bf_wino_weights_floats floats) by the caller, output channels [o0, o1) at a time (multiples of
 * 8). bf_wino_channels: output channels [o0, o1) of one image, with the epilogue of
 * bf_direct3x3_channels; scratch: bf_wino_scratch floats. */
int bf_wino_ok(int C, int OC, int H, int W);
size_t bf_wino_weights_floats(int C, int OC);
void bf_wino_weights(float *U, const float *w, int C, int OC, int o0, int o1);
size_t bf_wino_scratch(int C, int OC, int H, int W);
void bf_wino_channels(float *out, const float *in, const float *U, int C, int OC, int H, int W, float *scratch, int o0,
                      int o1, const float *scale, const float *shift, int relu);

#endif

/* bf_models.h: the BlockFed training engine (ResNet8 and a small CNN), in plain C over OpenBLAS.
 *
 * Layout rules, after llm.c:
 *  - Activations are NCHW float32. Every layer is a `x_forward` / `x_backward` pair of plain
 *    functions over float* with explicit shapes (layers.c); nothing is allocated inside a step.
 *  - All parameters of a model live in one contiguous float array (bf_net_params), gradients in
 *    another of the same length, BatchNorm running statistics in a third (bf_net_buffers); named
 *    views map PyTorch state_dict names onto offsets, so FedAvg, hashing and sending a model are
 *    operations on whole vectors.
 *  - A step splits the batch into per-thread sub-batches (OpenMP) with single-threaded OpenBLAS
 *    inside each; BatchNorm statistics and weight gradients are reduced across threads in a fixed
 *    order, so the same seed and thread count give a bit-identical run. */
#ifndef BF_MODELS_H
#define BF_MODELS_H

#include <stddef.h>
#include <stdint.h>

#include "bf_util.h"

/* ---- OpenBLAS kernels --------------------------------------------------------------------- */

/* Debian's OpenBLAS 0.3.21 does not recognise recent Intel CPUs and falls back to SSE3
 * ("Prescott") kernels, several times slower than its AVX-512 ones. Call first thing in main():
 * unless the user set OPENBLAS_CORETYPE, if the detected core is a generic one and the CPU has
 * AVX-512 (or AVX2), it sets OPENBLAS_CORETYPE=SkylakeX (Haswell) and re-executes the program
 * once, since OpenBLAS reads the variable only while it loads. Returns normally when no re-exec is
 * needed. */
void bf_blas_init(int argc, char **argv);
/* The OpenBLAS core in use, e.g. "SkylakeX". */
const char *bf_blas_corename(void);

/* ---- Vector path (isa.c) ------------------------------------------------------------------ */

/* The engine's direct convolutions and hot loops exist for AVX-512, AVX2 + FMA and plain C; the
 * path is chosen once per process from the CPU's features, or forced with the environment variable
 * BLOCKFED_ISA=avx512|avx2|generic (auto: the default). A forced path the CPU lacks falls back to
 * the best one it has, with a message on stderr. Results are bit-identical per seed, thread count
 * and path; paths differ in rounding. */
typedef enum { BF_ISA_GENERIC, BF_ISA_AVX2, BF_ISA_AVX512 } bf_isa_t;
bf_isa_t bf_engine_isa(void);
/* "avx512", "avx2" or "generic": the path in use. */
const char *bf_engine_isa_name(void);
const char *bf_isa_name(bf_isa_t isa);
/* The best path this CPU supports (what auto picks). */
bf_isa_t bf_isa_best(void);
/* "avx512" / "avx2" / "generic" -> isa; -1 for anything else. */
int bf_isa_parse(const char *s, bf_isa_t *isa);

/* ---- Layers (layers.c) -------------------------------------------------------------------- */
/* Shapes: n images per call (a thread's slice), C,H,W input, OC,OH,OW output. Backward functions
 * accumulate (+=) into parameter gradients; input gradients are written (acc=0) or added (acc=1). */

static inline int bf_conv_out(int size, int k, int stride, int pad) { return (size + 2 * pad - k) / stride + 1; }
/* Kernels up to 8x8. Scratch floats a conv2d call on up to n images needs (one image's im2col and
 * column gradient, the phase planes of a strided convolution, the direct kernels' padded copies). */
size_t bf_conv2d_scratch(int n, int C, int H, int W, int OC, int K, int S, int P);
void bf_conv2d_forward(float *out, const float *in, const float *w, const float *b, int n, int C, int H,
                       int W, int OC, int K, int S, int P, float *scratch);
/* One image, output channels [o0, o1) only, so threads can split a single image by channels;
 * range boundaries must be multiples of bf_conv2d_channel_unit (8 for the direct kernel). */
int bf_conv2d_channel_unit(int C, int OC, int K, int S, int P);
void bf_conv2d_forward_channels(float *out, const float *in, const float *w, const float *b, int C, int H, int W,
                                int OC, int K, int S, int P, float *scratch, int o0, int o1);
/* The same with an affine epilogue per output channel, out = conv * scale[oc] + shift[oc] (then ReLU
 * if relu): an eval-mode BatchNorm folded into the convolution's output pass. scale may be NULL. */
void bf_conv2d_forward_affine(float *out, const float *in, const float *w, const float *b, int n, int C, int H, int W,
                              int OC, int K, int S, int P, float *scratch, const float *scale, const float *shift,
                              int relu);
void bf_conv2d_forward_channels_affine(float *out, const float *in, const float *w, const float *b, int C, int H,
                                       int W, int OC, int K, int S, int P, float *scratch, int o0, int o1,
                                       const float *scale, const float *shift, int relu);
/* bf_conv2d_forward that also adds the output's BatchNorm statistics, sum[oc] and sumsq[oc] as
 * bf_bn_stats would (same order, same result), each image's right after it is computed, while it is
 * still in cache: training-mode conv + BN reads its output once less. */
void bf_conv2d_forward_bnstats(float *out, const float *in, const float *w, const float *b, int n, int C, int H,
                               int W, int OC, int K, int S, int P, float *scratch, double *sum, double *sumsq);
void bf_conv2d_backward(float *din, int acc, float *dw, float *db, const float *dout, const float *in,
                        const float *w, int n, int C, int H, int W, int OC, int K, int S, int P,
                        float *scratch);

/* BatchNorm over N = (all slices) images, split in phases so threads can reduce statistics:
 * stats (per slice, double sums) -> combine (caller) -> apply. relu fuses a ReLU on the output. */
void bf_bn_stats(double *sum, double *sumsq, const float *in, int n, int C, int HW);
void bf_bn_forward(float *out, const float *in, const float *mean, const float *rstd, const float *gamma,
                   const float *beta, int n, int C, int HW, int relu);
/* Backward phase 1: masks dout by the fused ReLU (in place) and sums dy and dy*xhat per channel. */
void bf_bn_backward_stats(double *sum_dy, double *sum_dy_xhat, float *dout, const float *out,
                          const float *in, const float *mean, const float *rstd, int n, int C, int HW,
                          int relu);
/* Backward phase 2: din from the batch sums (Ntot = images in the whole batch). */
void bf_bn_backward(float *din, int acc, const float *dout, const float *in, const float *mean,
                    const float *rstd, const float *gamma, const double *sum_dy,
                    const double *sum_dy_xhat, int Ntot, int n, int C, int HW);

void bf_relu_forward(float *out, const float *in, size_t count);
void bf_relu_backward(float *din, int acc, const float *dout, const float *out, size_t count);
/* out = a + b, optionally followed by ReLU. */
void bf_add_forward(float *out, const float *a, const float *b, size_t count, int relu);
/* Masks dout by the ReLU (in place) and routes it to both inputs. */
void bf_add_backward(float *da, int acc_a, float *db, int acc_b, float *dout, const float *out,
                     size_t count, int relu);
/* Max-pool 2x2 stride 2 (floor); argmax holds the winning input offset per output element. */
void bf_maxpool2_forward(float *out, int32_t *argmax, const float *in, int n, int C, int H, int W);
void bf_maxpool2_backward(float *din, int acc, const float *dout, const int32_t *argmax, int n, int C,
                          int H, int W);
void bf_gap_forward(float *out, const float *in, int n, int C, int HW);
void bf_gap_backward(float *din, int acc, const float *dout, int n, int C, int HW);
/* out[n,OUT] = in[n,IN] * w[OUT,IN]^T + b */
void bf_linear_forward(float *out, const float *in, const float *w, const float *b, int n, int IN, int OUT);
void bf_linear_backward(float *din, int acc, float *dw, float *db, const float *dout, const float *in,
                        const float *w, int n, int IN, int OUT);
/* Softmax cross-entropy, mean over Ntot images: returns the slice's summed loss / Ntot and writes
 * dlogits = (softmax - onehot) / Ntot. probs may be NULL. */
double bf_softmax_xent(float *dlogits, float *probs, const float *logits, const int32_t *y, int n,
                       int K, int Ntot);
/* Softmax only (inference). */
void bf_softmax(float *probs, const float *logits, int n, int K);

/* ---- Networks (net.c) --------------------------------------------------------------------- */

typedef struct bf_net bf_net_t;

typedef struct {
    const char *name;   /* PyTorch state_dict name, e.g. "layer2.0.downsample.1.running_var" */
    int ndim;
    int shape[4];
    int is_buffer;      /* 0: in params (trainable), 1: in buffers (BN running stats) */
    size_t offset;      /* into params or buffers */
    size_t count;
} bf_tensor_view_t;

/* Architectures: "resnet8", "cnn". Returns NULL with err set for an unknown arch or bad shape. */
bf_net_t *bf_net_new(const char *arch, int C, int H, int W, int classes, int max_batch, int threads,
                     bf_err_t *err);
void bf_net_destroy(bf_net_t **p);

/* What bf_net_new would build for these arguments, computed without allocating it: the element
 * counts of the parameter and buffer arrays and the bytes the network would take in all. A caller
 * facing an untrusted shape (a model file) checks these first. */
typedef struct {
    size_t nparams, nbuffers, bytes;
} bf_net_plan_t;
int bf_net_plan(const char *arch, int C, int H, int W, int classes, int max_batch, int threads, bf_net_plan_t *plan,
                bf_err_t *err);

const char *bf_net_arch(const bf_net_t *net);
void bf_net_input(const bf_net_t *net, int *C, int *H, int *W);
int bf_net_classes(const bf_net_t *net);
int bf_net_max_batch(const bf_net_t *net);
int bf_net_threads(const bf_net_t *net);
/* Floating-point operations per image (2 per multiply-add) of the convolutions and linear layers:
 * an inference forward, and a training step (forward, weight gradients, and input gradients of
 * every layer but the first). Other layers are memory-bound and not counted. */
void bf_net_flops(const bf_net_t *net, double *forward, double *train);

float *bf_net_params(bf_net_t *net);
float *bf_net_grads(bf_net_t *net);
float *bf_net_buffers(bf_net_t *net);
size_t bf_net_num_params(const bf_net_t *net);
size_t bf_net_num_buffers(const bf_net_t *net);
/* Named views, in PyTorch state_dict (module registration) order. */
int bf_net_num_tensors(const bf_net_t *net);
const bf_tensor_view_t *bf_net_tensor(const bf_net_t *net, int i);
const bf_tensor_view_t *bf_net_find_tensor(const bf_net_t *net, const char *name);

/* Kaiming-normal (fan_out, ReLU) convs, PyTorch-default linear, BN weight 1 / bias 0, running
 * mean 0 / var 1. */
void bf_net_init(bf_net_t *net, uint64_t seed);

/* Training-mode forward + loss + backward on n <= max_batch images: fills the gradients
 * (overwriting them), updates BN running statistics, returns the mean loss. If correct is not
 * NULL it receives the number of correctly classified images. */
double bf_net_train_step(bf_net_t *net, const float *x, const int32_t *y, int n, int *correct);
/* Training-mode forward + loss only (no running-stat update): for gradient checks. */
double bf_net_loss(bf_net_t *net, const float *x, const int32_t *y, int n);
/* A caller's objective of the logits: given the n x classes logits of a batch, returns its value
 * and writes its gradient with respect to them into dlogits (n x classes floats). */
typedef double (*bf_logits_grad_fn)(void *ctx, const float *logits, int n, int classes, float *dlogits);
/* bf_net_train_step for another objective than the softmax cross-entropy: training-mode forward
 * on n <= max_batch images (BN statistics of the batch; running statistics untouched, as in
 * bf_net_loss), then f once on the whole batch's logits (single-threaded), then, if backward is
 * nonzero, backpropagation from the dlogits f wrote: fills the gradients (overwriting them) with
 * those of f's objective. Returns f's value (NaN for n outside [1, max_batch] or f NULL, the
 * gradients then untouched). With backward 0, f's value only (dlogits ignored). */
double bf_net_objective_step(bf_net_t *net, const float *x, int n, bf_logits_grad_fn f, void *ctx, int backward);
/* Re-estimates every BN layer's running statistics from n images (any n >= 1), parameters
 * untouched: training-mode forwards over batches of max_batch, each layer's running mean and
 * (unbiased) variance set to the average over the batches of their statistics, as PyTorch does
 * with momentum=None. After averaging models the stored statistics no longer describe the
 * averaged model's activations. */
void bf_net_recalibrate_bn(bf_net_t *net, const float *x, int n);
/* Eval-mode forward (BN uses running statistics): writes n*classes logits. */
void bf_net_predict(bf_net_t *net, const float *x, int n, float *logits);

/* ---- Optimizer (optim.c) ------------------------------------------------------------------ */

typedef enum { BF_LR_CONSTANT, BF_LR_STEP, BF_LR_COSINE, BF_LR_ONECYCLE } bf_lr_kind_t;

typedef struct {
    bf_lr_kind_t kind;
    double lr;           /* constant / step / cosine: initial lr; one-cycle: max lr */
    int64_t total_steps; /* cosine, one-cycle */
    int64_t step_size;   /* step: decay every step_size steps */
    double gamma;        /* step: factor */
    /* one-cycle, as torch.optim.lr_scheduler.OneCycleLR (cos annealing, two phases) */
    double pct_start;        /* 0.3 */
    double div_factor;       /* 25 */
    double final_div_factor; /* 1e4 */
    int cycle_momentum;      /* 1: momentum goes max_m -> base_m -> max_m */
    double base_momentum, max_momentum; /* 0.85, 0.95 */
} bf_schedule_t;

/* lr (and momentum, when the schedule cycles it; else *momentum unchanged) at a 0-based step. */
void bf_schedule_at(const bf_schedule_t *s, int64_t step, double *lr, double *momentum);
/* Parses "constant", "step:STEP_SIZE:GAMMA", "cosine", "onecycle"; fills defaults. */
int bf_schedule_parse(const char *spec, double lr, int64_t total_steps, bf_schedule_t *s, bf_err_t *err);

/* SGD with momentum, weight decay, dampening 0 and optional Nesterov, exactly as torch.optim.SGD. */
typedef struct bf_sgd bf_sgd_t;
bf_sgd_t *bf_sgd_new(size_t n, double momentum, double weight_decay, int nesterov);
void bf_sgd_destroy(bf_sgd_t **p);
void bf_sgd_set_momentum(bf_sgd_t *o, double momentum);
void bf_sgd_step(bf_sgd_t *o, float *params, const float *grads, double lr);
/* Clears the momentum buffers (a new federated round starts from a fresh optimizer). */
void bf_sgd_reset(bf_sgd_t *o);

/* ---- Aggregation strategies (aggregate.c) ------------------------------------------------- */
/* A federated round turns k client models into the next global model. Every strategy works on
 * the flat parameter vector and the BN buffer vector alike (running statistics are averaged the
 * same way as weights), and sums in double in participant order, so a round is reproducible. */

typedef enum { BF_AGG_FEDAVG, BF_AGG_FEDPROX, BF_AGG_FEDAVGM, BF_AGG_MEDIAN, BF_AGG_TRIMMED_MEAN } bf_agg_kind_t;

typedef struct {
    bf_agg_kind_t kind;
    double mu;              /* fedprox: proximal coefficient the clients use (aggregation = fedavg) */
    double server_lr;       /* fedavgm: server learning rate (1) */
    double server_momentum; /* fedavgm: beta (0.9) */
    double trim;            /* trimmed-mean: fraction cut at each end (0.1) */
} bf_agg_opts_t;

/* "fedavg", "fedprox[:MU]" (0.01), "fedavgm[:BETA]" (0.9), "median", "trimmed-mean[:FRAC]" (0.1). */
int bf_agg_parse(const char *spec, bf_agg_opts_t *o, bf_err_t *err);

typedef struct bf_agg bf_agg_t;
bf_agg_t *bf_agg_new(const bf_agg_opts_t *o, size_t nparams, size_t nbuffers);
void bf_agg_destroy(bf_agg_t **p);
/* Replaces global params/buffers by the aggregate of k client models (params[i], buffers[i],
 * weighted by samples[i] > 0 where the strategy weighs). fedavgm keeps its server momentum in the
 * object across rounds; bf_agg_state exposes it (nparams+nbuffers floats) for checkpoints. */
int bf_agg_apply(bf_agg_t *a, float *global_params, float *global_buffers, const float *const *params,
                 const float *const *buffers, const int64_t *samples, int k, bf_err_t *err);
float *bf_agg_state(bf_agg_t *a, size_t *len);

/* ---- Model files (modelfile.c; format in docs/MODEL_FORMAT.md) ----------------------------- */

typedef struct {
    int classes;
    char class_names[256][64];
    int channels;
    float mean[4], std[4];
} bf_model_meta_t;

#define BF_MODEL_FILE_MAX ((size_t)256 << 20) /* bytes of a model file we accept */
/* Bytes the network a model file declares may take for one image (bf_net_plan, batch 1, one
 * thread), checked before it is built: ResNet8 needs 3.4 MiB at 3x32x32, 45 MiB at 3x128x128. */
#define BF_MODEL_NET_MAX ((size_t)128 << 20)

/* Serializes net + meta into a newly malloc'd buffer. */
int bf_model_encode(bf_net_t *net, const bf_model_meta_t *meta, uint8_t **out, size_t *len, bf_err_t *err);
int bf_model_save(bf_net_t *net, const bf_model_meta_t *meta, const char *path, bf_err_t *err);
/* Validates everything (format, version, digest, arch, input, names, shapes, byte lengths; the
 * declared shape against the tensor bytes present and BF_MODEL_NET_MAX before anything is built)
 * and builds a new net with max_batch/threads as given. Returns NULL with err set on any problem. */
bf_net_t *bf_model_decode(const uint8_t *buf, size_t len, int max_batch, int threads,
                          bf_model_meta_t *meta, bf_err_t *err);
bf_net_t *bf_model_load(const char *path, int max_batch, int threads, bf_model_meta_t *meta,
                        bf_err_t *err);
/* The model's digest, as its file (bf_model_encode, version 2) stores it under sha256: SHA-256 of
 * every byte of the file before that entry, so of every field. */
int bf_model_digest(bf_net_t *net, const bf_model_meta_t *meta, char hex[65], bf_err_t *err);

#endif

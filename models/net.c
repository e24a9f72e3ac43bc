/* net.c: networks as a flat list of layer ops over activation slots, run forward and backward on
 * per-thread sub-batches.
 *
 * A network is built once (bf_net_new) into ops that name their input/output slots; every buffer
 * (activations, their gradients, per-thread scratch and gradient copies) is sized for max_batch
 * then, so a training step allocates nothing. Threads split the batch; BatchNorm needs statistics
 * of the whole batch, so each BN op reduces per-thread partial sums behind a barrier, every thread
 * combining them in the same order (bit-identical across threads and runs). */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "bf_models.h"
#include "conv_direct.h"

#define MAX_OPS 64
#define MAX_SLOTS 64
#define MAX_VIEWS 96
#define NAME_LEN 64
#define BN_EPS 1e-5
#define BN_MOMENTUM 0.1
#define NONE ((size_t)-1)

typedef enum { OP_CONV, OP_BN, OP_RELU, OP_ADD, OP_MAXPOOL, OP_GAP, OP_LINEAR } op_kind_t;

typedef struct {
    op_kind_t kind;
    int in, in2, out;       /* activation slots; slot 0 is the network input */
    int C, H, W;            /* input shape per image */
    int OC, OH, OW;         /* output shape per image */
    int K, S, P;            /* conv kernel, stride, padding */
    int relu;               /* BN / ADD: fused ReLU on the output */
    size_t w, b;            /* parameter offsets (NONE if absent) */
    size_t rm, rv;          /* BN running mean / var offsets in buffers */
    size_t bn_ch;           /* BN: offset of this op's channels in per-thread stat arrays */
    int acc_in, acc_in2;    /* backward adds into the input gradients (another consumer wrote first) */
    size_t argmax;          /* MAXPOOL: offset into the argmax buffer */
    int eval_fused;         /* CONV: the next op is a BN that only it feeds, applied in the conv's output
                             * pass in eval mode, its statistics summed by the conv in training; BN:
                             * fed by such a conv */
    size_t wino, wino_src;  /* CONV run as Winograd F(2,3) in eval mode: offsets of its transformed
                             * weights in wino_u and of the weights they came from in wino_src
                             * (NONE if not) */
} op_t;

typedef struct {
    int C, H, W;
} slot_t;

struct bf_net {
    char arch[16];
    int C, H, W, classes, max_batch, threads;
    op_t ops[MAX_OPS];
    int nops;
    slot_t slots[MAX_SLOTS];
    int nslots;
    bf_tensor_view_t views[MAX_VIEWS];
    char names[MAX_VIEWS][NAME_LEN];
    int nviews;
    size_t nparams, nbuffers, bn_channels, argmax_len, scratch_len, wino_u_len, wino_src_len;

    float *params, *grads, *buffers;
    float *wino_u, *wino_src; /* eval-mode Winograd weights and the parameters they were made from */
    float *act[MAX_SLOTS], *dact[MAX_SLOTS];
    int32_t *argmax;
    float **tgrads;          /* per thread gradient accumulators; tgrads[0] == grads */
    float **scratch;         /* per thread conv scratch */
    float **mean, **rstd;    /* per thread BN statistics of the current step */
    double **partial;        /* per thread BN partial sums: 2 * bn_channels */
    double *loss_part;       /* per thread loss */
    int *correct_part;
    int recal_batches;       /* bf_net_recalibrate_bn: batches averaged so far, this one included */
};

static size_t slot_size(const bf_net_t *net, int s) {
    return (size_t)net->slots[s].C * net->slots[s].H * net->slots[s].W;
}

/* ---- building ----------------------------------------------------------------------------- */

static int new_slot(bf_net_t *net, int C, int H, int W) {
    if (net->nslots >= MAX_SLOTS) abort(); /* fixed architectures: a programmer error */
    net->slots[net->nslots] = (slot_t){C, H, W};
    return net->nslots++;
}

static size_t new_view(bf_net_t *net, const char *prefix, const char *suffix, int is_buffer, int ndim,
                       int d0, int d1, int d2, int d3) {
    if (net->nviews >= MAX_VIEWS) abort();
    bf_tensor_view_t *v = &net->views[net->nviews];
    snprintf(net->names[net->nviews], NAME_LEN, "%s.%s", prefix, suffix);
    v->name = net->names[net->nviews++];
    v->ndim = ndim;
    int dims[4] = {d0, d1, d2, d3};
    v->count = 1;
    for (int i = 0; i < 4; i++) {
        v->shape[i] = i < ndim ? dims[i] : 0;
        if (i < ndim) v->count *= (size_t)dims[i];
    }
    v->is_buffer = is_buffer;
    size_t *end = is_buffer ? &net->nbuffers : &net->nparams;
    v->offset = *end;
    *end += v->count;
    return v->offset;
}

static op_t *new_op(bf_net_t *net, op_kind_t kind, int in) {
    if (net->nops >= MAX_OPS) abort();
    op_t *op = &net->ops[net->nops++];
    memset(op, 0, sizeof *op);
    op->kind = kind;
    op->in = in;
    op->in2 = -1;
    op->w = op->b = op->rm = op->rv = op->wino = op->wino_src = NONE;
    op->C = net->slots[in].C;
    op->H = net->slots[in].H;
    op->W = net->slots[in].W;
    op->OC = op->C;
    op->OH = op->H;
    op->OW = op->W;
    return op;
}

static int finish(bf_net_t *net, op_t *op) {
    op->out = new_slot(net, op->OC, op->OH, op->OW);
    return op->out;
}

static int conv(bf_net_t *net, const char *name, int in, int OC, int K, int S, int P, int bias) {
    op_t *op = new_op(net, OP_CONV, in);
    op->OC = OC;
    op->K = K;
    op->S = S;
    op->P = P;
    op->OH = bf_conv_out(op->H, K, S, P);
    op->OW = bf_conv_out(op->W, K, S, P);
    op->w = new_view(net, name, "weight", 0, 4, OC, op->C, K, K);
    if (bias) op->b = new_view(net, name, "bias", 0, 1, OC, 0, 0, 0);
    /* a thread's slice is at most ceil(max_batch / threads) images */
    int slice = (net->max_batch + net->threads - 1) / net->threads;
    size_t s = bf_conv2d_scratch(slice, op->C, op->H, op->W, OC, K, S, P);
    if (s > net->scratch_len) net->scratch_len = s;
    if (K == 3 && S == 1 && P == 1 && !bias && bf_wino_ok(op->C, OC, op->H, op->W)) {
        op->wino = net->wino_u_len;
        net->wino_u_len += bf_wino_weights_floats(op->C, OC);
        op->wino_src = net->wino_src_len;
        net->wino_src_len += (size_t)OC * op->C * 9;
        s = bf_wino_scratch(op->C, OC, op->H, op->W);
        if (s > net->scratch_len) net->scratch_len = s;
    }
    return finish(net, op);
}

static int bn(bf_net_t *net, const char *name, int in, int relu) {
    op_t *op = new_op(net, OP_BN, in);
    op->relu = relu;
    op->w = new_view(net, name, "weight", 0, 1, op->C, 0, 0, 0);
    op->b = new_view(net, name, "bias", 0, 1, op->C, 0, 0, 0);
    op->rm = new_view(net, name, "running_mean", 1, 1, op->C, 0, 0, 0);
    op->rv = new_view(net, name, "running_var", 1, 1, op->C, 0, 0, 0);
    op->bn_ch = net->bn_channels;
    net->bn_channels += op->C;
    return finish(net, op);
}

static int relu(bf_net_t *net, int in) { return finish(net, new_op(net, OP_RELU, in)); }

static int add(bf_net_t *net, int a, int b, int with_relu) {
    op_t *op = new_op(net, OP_ADD, a);
    op->in2 = b;
    op->relu = with_relu;
    return finish(net, op);
}

static int maxpool(bf_net_t *net, int in) {
    op_t *op = new_op(net, OP_MAXPOOL, in);
    op->OH = op->H / 2;
    op->OW = op->W / 2;
    op->argmax = net->argmax_len;
    net->argmax_len += (size_t)op->C * op->OH * op->OW;
    return finish(net, op);
}

static int gap(bf_net_t *net, int in) {
    op_t *op = new_op(net, OP_GAP, in);
    op->OH = op->OW = 1;
    return finish(net, op);
}

static int linear(bf_net_t *net, const char *name, int in, int OUT) {
    op_t *op = new_op(net, OP_LINEAR, in);
    /* a linear layer sees its input flattened: C*H*W features */
    op->C = op->C * op->H * op->W;
    op->H = op->W = 1;
    op->OC = OUT;
    op->OH = op->OW = 1;
    op->w = new_view(net, name, "weight", 0, 2, OUT, op->C, 0, 0);
    op->b = new_view(net, name, "bias", 0, 1, OUT, 0, 0, 0);
    return finish(net, op);
}

/* torchvision BasicBlock; modules registered in its order: conv1, bn1, conv2, bn2, downsample. */
static int basic_block(bf_net_t *net, const char *prefix, int in, int planes, int stride) {
    char n[NAME_LEN];
    snprintf(n, sizeof n, "%s.conv1", prefix);
    int y = conv(net, n, in, planes, 3, stride, 1, 0);
    snprintf(n, sizeof n, "%s.bn1", prefix);
    y = bn(net, n, y, 1);
    snprintf(n, sizeof n, "%s.conv2", prefix);
    y = conv(net, n, y, planes, 3, 1, 1, 0);
    snprintf(n, sizeof n, "%s.bn2", prefix);
    y = bn(net, n, y, 0);
    int skip = in;
    if (stride != 1 || net->slots[in].C != planes) {
        snprintf(n, sizeof n, "%s.downsample.0", prefix);
        skip = conv(net, n, in, planes, 1, stride, 0, 0);
        snprintf(n, sizeof n, "%s.downsample.1", prefix);
        skip = bn(net, n, skip, 0);
    }
    return add(net, y, skip, 1);
}

static void build_resnet8(bf_net_t *net) {
    int x = conv(net, "conv1", 0, 16, 3, 1, 1, 0);
    x = bn(net, "bn1", x, 1);
    x = basic_block(net, "layer1.0", x, 16, 1);
    x = basic_block(net, "layer2.0", x, 32, 2);
    x = basic_block(net, "layer3.0", x, 64, 2);
    x = gap(net, x);
    linear(net, "fc", x, net->classes);
}

/* The seed's small MNIST network: two conv5x5+ReLU+maxpool stages, then two linear layers. */
static void build_cnn(bf_net_t *net) {
    int x = relu(net, conv(net, "conv1", 0, 32, 5, 1, 2, 1));
    x = maxpool(net, x);
    x = relu(net, conv(net, "conv2", x, 64, 5, 1, 2, 1));
    x = maxpool(net, x);
    x = relu(net, linear(net, "fc1", x, 128));
    linear(net, "fc2", x, net->classes);
}

/* In backward, ops run in reverse; the first to reach a slot writes its gradient, later ones add. */
static void plan_accumulation(bf_net_t *net) {
    char touched[MAX_SLOTS] = {0};
    for (int i = net->nops - 1; i >= 0; i--) {
        op_t *op = &net->ops[i];
        op->acc_in = touched[op->in];
        touched[op->in] = 1;
        if (op->in2 >= 0) {
            op->acc_in2 = touched[op->in2];
            touched[op->in2] = 1;
        }
    }
}

/* Eval-mode BatchNorm is an affine map per channel: a conv whose output feeds only the BN right
 * after it writes the BN's output directly (conv * scale + shift, ReLU), skipping a pass. */
static void plan_eval_fusion(bf_net_t *net) {
    for (int i = 0; i + 1 < net->nops; i++) {
        op_t *op = &net->ops[i], *next = &net->ops[i + 1];
        if (op->kind != OP_CONV || next->kind != OP_BN || next->in != op->out) continue;
        int readers = 0;
        for (int j = 0; j < net->nops; j++) readers += (net->ops[j].in == op->out) + (net->ops[j].in2 == op->out);
        if (readers == 1) op->eval_fused = next->eval_fused = 1;
    }
}

static void *xcalloc(size_t n, size_t size, int *failed) {
    void *p = n ? calloc(n, size) : NULL;
    if (n && !p) *failed = 1;
    return p;
}

static int allocate(bf_net_t *net) {
    int failed = 0, T = net->threads;
    size_t B = (size_t)net->max_batch;
    net->params = xcalloc(net->nparams, sizeof(float), &failed);
    net->buffers = xcalloc(net->nbuffers + 1, sizeof(float), &failed);
    /* zero weights transform to zero: wino_u and wino_src start in step */
    net->wino_u = xcalloc(net->wino_u_len, sizeof(float), &failed);
    net->wino_src = xcalloc(net->wino_src_len, sizeof(float), &failed);
    for (int s = 1; s < net->nslots; s++) {
        net->act[s] = xcalloc(B * slot_size(net, s), sizeof(float), &failed);
        net->dact[s] = xcalloc(B * slot_size(net, s), sizeof(float), &failed);
    }
    net->argmax = xcalloc(B * net->argmax_len + 1, sizeof(int32_t), &failed);
    net->tgrads = xcalloc(T, sizeof(float *), &failed);
    net->scratch = xcalloc(T, sizeof(float *), &failed);
    net->mean = xcalloc(T, sizeof(float *), &failed);
    net->rstd = xcalloc(T, sizeof(float *), &failed);
    net->partial = xcalloc(T, sizeof(double *), &failed);
    net->loss_part = xcalloc(T, sizeof(double), &failed);
    net->correct_part = xcalloc(T, sizeof(int), &failed);
    if (failed) return -1;
    for (int t = 0; t < T; t++) {
        net->tgrads[t] = xcalloc(net->nparams, sizeof(float), &failed);
        net->scratch[t] = xcalloc(net->scratch_len + 1, sizeof(float), &failed);
        net->mean[t] = xcalloc(net->bn_channels + 1, sizeof(float), &failed);
        net->rstd[t] = xcalloc(net->bn_channels + 1, sizeof(float), &failed);
        /* forward sum/sumsq and backward sum_dy/sum_dy_xhat, each bn_channels long */
        net->partial[t] = xcalloc(4 * net->bn_channels + 1, sizeof(double), &failed);
    }
    if (failed) return -1;
    net->grads = net->tgrads[0];
    return 0;
}

/* Bytes allocate() takes for this built graph: the same arrays, counted instead of allocated (keep
 * the two in step). */
static size_t footprint(const bf_net_t *net) {
    size_t T = (size_t)net->threads, B = (size_t)net->max_batch, f = 0;
    f += (net->nparams + net->nbuffers + 1 + net->wino_u_len + net->wino_src_len) * sizeof(float);
    for (int s = 1; s < net->nslots; s++) f += 2 * B * slot_size(net, s) * sizeof(float);
    f += (B * net->argmax_len + 1) * sizeof(int32_t);
    f += T * (4 * sizeof(float *) + sizeof(double *) + sizeof(double) + sizeof(int));
    f += T * ((net->nparams + net->scratch_len + 1 + 2 * (net->bn_channels + 1)) * sizeof(float) +
              (4 * net->bn_channels + 1) * sizeof(double));
    return f;
}

/* The graph of arch for this shape, every array still unallocated (NULL). */
static bf_net_t *build(const char *arch, int C, int H, int W, int classes, int max_batch, int threads, bf_err_t *err) {
    if (!arch || (strcmp(arch, "resnet8") && strcmp(arch, "cnn"))) {
        bf_err_set(err, "unknown model architecture '%s' (expected resnet8 or cnn)", arch ? arch : "");
        return NULL;
    }
    if (C < 1 || C > 4 || H < 4 || W < 4 || H > 512 || W > 512 || classes < 2 || classes > 256 ||
        max_batch < 1 || max_batch > 4096 || threads < 1 || threads > 256) {
        bf_err_set(err, "unsupported network shape: input %dx%dx%d, %d classes, batch %d, %d threads", C, H,
                   W, classes, max_batch, threads);
        return NULL;
    }
    if (!strcmp(arch, "cnn") && (H % 4 || W % 4)) {
        bf_err_set(err, "cnn needs an input height and width divisible by 4 (got %dx%d)", H, W);
        return NULL;
    }
    bf_net_t *net = calloc(1, sizeof *net);
    if (!net) {
        bf_err_set(err, "out of memory");
        return NULL;
    }
    snprintf(net->arch, sizeof net->arch, "%s", arch);
    net->C = C, net->H = H, net->W = W, net->classes = classes;
    net->max_batch = max_batch;
    net->threads = threads;
    new_slot(net, C, H, W);
    if (!strcmp(arch, "resnet8"))
        build_resnet8(net);
    else
        build_cnn(net);
    plan_accumulation(net);
    plan_eval_fusion(net);
    return net;
}

int bf_net_plan(const char *arch, int C, int H, int W, int classes, int max_batch, int threads, bf_net_plan_t *plan,
                bf_err_t *err) {
    bf_net_t *net = build(arch, C, H, W, classes, max_batch, threads, err);
    if (!net) return -1;
    plan->nparams = net->nparams;
    plan->nbuffers = net->nbuffers;
    plan->bytes = footprint(net) + sizeof *net;
    bf_net_destroy(&net);
    return 0;
}

bf_net_t *bf_net_new(const char *arch, int C, int H, int W, int classes, int max_batch, int threads,
                     bf_err_t *err) {
    bf_net_t *net = build(arch, C, H, W, classes, max_batch, threads, err);
    if (!net) return NULL;
    if (allocate(net)) {
        bf_net_destroy(&net);
        bf_err_set(err, "out of memory allocating the network for batch %d", max_batch);
        return NULL;
    }
    bf_net_init(net, 0);
    return net;
}

void bf_net_destroy(bf_net_t **p) {
    if (!p || !*p) return;
    bf_net_t *net = *p;
    free(net->params);
    free(net->buffers);
    free(net->wino_u);
    free(net->wino_src);
    for (int s = 1; s < net->nslots; s++) {
        free(net->act[s]);
        free(net->dact[s]);
    }
    free(net->argmax);
    for (int t = 0; t < net->threads; t++) {
        if (net->tgrads) free(net->tgrads[t]);
        if (net->scratch) free(net->scratch[t]);
        if (net->mean) free(net->mean[t]);
        if (net->rstd) free(net->rstd[t]);
        if (net->partial) free(net->partial[t]);
    }
    free(net->tgrads);
    free(net->scratch);
    free(net->mean);
    free(net->rstd);
    free(net->partial);
    free(net->loss_part);
    free(net->correct_part);
    free(net);
    *p = NULL;
}

/* ---- accessors ---------------------------------------------------------------------------- */

const char *bf_net_arch(const bf_net_t *net) { return net->arch; }
void bf_net_input(const bf_net_t *net, int *C, int *H, int *W) {
    *C = net->C;
    *H = net->H;
    *W = net->W;
}
int bf_net_classes(const bf_net_t *net) { return net->classes; }
int bf_net_max_batch(const bf_net_t *net) { return net->max_batch; }
int bf_net_threads(const bf_net_t *net) { return net->threads; }

void bf_net_flops(const bf_net_t *net, double *forward, double *train) {
    double f = 0, t = 0;
    for (int i = 0; i < net->nops; i++) {
        const op_t *op = &net->ops[i];
        if (op->kind != OP_CONV && op->kind != OP_LINEAR) continue;
        double k2 = op->kind == OP_CONV ? (double)op->K * op->K : 1;
        double macs = (double)op->OC * op->OH * op->OW * op->C * k2;
        f += 2 * macs;
        t += 2 * macs * (op->in == 0 ? 2 : 3);
    }
    *forward = f;
    *train = t;
}
float *bf_net_params(bf_net_t *net) { return net->params; }
float *bf_net_grads(bf_net_t *net) { return net->grads; }
float *bf_net_buffers(bf_net_t *net) { return net->buffers; }
size_t bf_net_num_params(const bf_net_t *net) { return net->nparams; }
size_t bf_net_num_buffers(const bf_net_t *net) { return net->nbuffers; }
int bf_net_num_tensors(const bf_net_t *net) { return net->nviews; }
const bf_tensor_view_t *bf_net_tensor(const bf_net_t *net, int i) {
    return i >= 0 && i < net->nviews ? &net->views[i] : NULL;
}
const bf_tensor_view_t *bf_net_find_tensor(const bf_net_t *net, const char *name) {
    for (int i = 0; i < net->nviews; i++)
        if (!strcmp(net->views[i].name, name)) return &net->views[i];
    return NULL;
}

/* ---- initialization ----------------------------------------------------------------------- */

void bf_net_init(bf_net_t *net, uint64_t seed) {
    bf_rng_t rng;
    bf_rng_seed(&rng, seed);
    for (int i = 0; i < net->nops; i++) {
        const op_t *op = &net->ops[i];
        float *w = op->w != NONE ? net->params + op->w : NULL;
        float *b = op->b != NONE ? net->params + op->b : NULL;
        if (op->kind == OP_CONV) {
            /* kaiming_normal_(mode="fan_out", nonlinearity="relu"): std = sqrt(2 / (OC*K*K)) */
            size_t count = (size_t)op->OC * op->C * op->K * op->K;
            double std = sqrt(2.0 / ((double)op->OC * op->K * op->K));
            for (size_t j = 0; j < count; j++) w[j] = (float)(std * bf_rng_normal(&rng));
            /* PyTorch's default conv bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) */
            double bound = 1.0 / sqrt((double)op->C * op->K * op->K);
            if (b)
                for (int j = 0; j < op->OC; j++) b[j] = (float)(bound * (2.0 * bf_rng_uniform(&rng) - 1.0));
        } else if (op->kind == OP_LINEAR) {
            /* nn.Linear default: kaiming_uniform_(a=sqrt(5)) gives U(-1/sqrt(in), 1/sqrt(in)), bias too */
            double bound = 1.0 / sqrt((double)op->C);
            for (size_t j = 0; j < (size_t)op->OC * op->C; j++)
                w[j] = (float)(bound * (2.0 * bf_rng_uniform(&rng) - 1.0));
            for (int j = 0; j < op->OC; j++) b[j] = (float)(bound * (2.0 * bf_rng_uniform(&rng) - 1.0));
        } else if (op->kind == OP_BN) {
            for (int c = 0; c < op->C; c++) {
                w[c] = 1.0f;
                b[c] = 0.0f;
                net->buffers[op->rm + c] = 0.0f;
                net->buffers[op->rv + c] = 1.0f;
            }
        }
    }
}

/* ---- running the graph -------------------------------------------------------------------- */

typedef enum { MODE_TRAIN, MODE_LOSS_ONLY, MODE_EVAL, MODE_RECAL } mode_t_;

typedef struct {
    int t, T, b0, m, n; /* thread, threads, first image, images in slice, images in batch */
} slice_t;

static float *at(float *base, const bf_net_t *net, int s, int b0) { return base + (size_t)b0 * slot_size(net, s); }

/* Each max-pool op owns a [max_batch, C, OH, OW] block of argmax indices. */
static int32_t *argmax_at(bf_net_t *net, const op_t *op, int b0) {
    return net->argmax + op->argmax * net->max_batch + (size_t)b0 * op->C * op->OH * op->OW;
}

static const float *input_of(bf_net_t *net, const float *x, int s, int b0) {
    return s == 0 ? x + (size_t)b0 * slot_size(net, 0) : at(net->act[s], net, s, b0);
}

/* BN forward for one slice. In training, partial sums are reduced over all threads behind a
 * barrier; every thread then derives identical mean/rstd by summing partials in thread order. */
static void bn_forward_op(bf_net_t *net, const op_t *op, const float *in, float *out, slice_t sl, mode_t_ mode) {
    int C = op->C, HW = op->H * op->W;
    float *mean = net->mean[sl.t] + op->bn_ch, *rstd = net->rstd[sl.t] + op->bn_ch;
    if (mode == MODE_EVAL) {
        for (int c = 0; c < C; c++) {
            mean[c] = net->buffers[op->rm + c];
            rstd[c] = (float)(1.0 / sqrt((double)net->buffers[op->rv + c] + BN_EPS));
        }
    } else {
        double *sum = net->partial[sl.t] + 2 * op->bn_ch, *sumsq = sum + C;
        if (!op->eval_fused) { /* else the conv before summed its output image by image */
            memset(sum, 0, sizeof(double) * 2 * C);
            bf_bn_stats(sum, sumsq, in, sl.m, C, HW);
        }
#pragma omp barrier
        double count = (double)sl.n * HW;
        for (int c = 0; c < C; c++) {
            double s = 0, s2 = 0;
            for (int t = 0; t < sl.T; t++) {
                s += net->partial[t][2 * op->bn_ch + c];
                s2 += net->partial[t][2 * op->bn_ch + C + c];
            }
            double mu = s / count, var = s2 / count - mu * mu;
            if (var < 0) var = 0;
            mean[c] = (float)mu;
            rstd[c] = (float)(1.0 / sqrt(var + BN_EPS));
            if ((mode == MODE_TRAIN || mode == MODE_RECAL) && sl.t == 0) {
                /* PyTorch keeps the unbiased variance in running_var; recalibration averages the
                 * batches' statistics (PyTorch's momentum=None) */
                float *rm = net->buffers + op->rm, *rv = net->buffers + op->rv;
                double unbiased = count > 1 ? var * count / (count - 1) : var;
                double f = mode == MODE_RECAL ? 1.0 / net->recal_batches : BN_MOMENTUM;
                rm[c] = (float)((1 - f) * rm[c] + f * mu);
                rv[c] = (float)((1 - f) * rv[c] + f * unbiased);
            }
        }
    }
    bf_bn_forward(out, in, mean, rstd, net->params + op->w, net->params + op->b, sl.m, C, HW, op->relu);
}

/* Eval mode: BN op's channels [lo, hi) as scale/shift (bf_bn_forward's a and b) in thread t's
 * mean/rstd arrays, which eval mode does not otherwise need. */
static void eval_affine(bf_net_t *net, const op_t *bn, int t, int lo, int hi, float **scale, float **shift) {
    float *a = net->mean[t] + bn->bn_ch, *b = net->rstd[t] + bn->bn_ch;
    const float *gamma = net->params + bn->w, *beta = net->params + bn->b;
    for (int c = lo; c < hi; c++) {
        float mean = net->buffers[bn->rm + c], rstd = (float)(1.0 / sqrt((double)net->buffers[bn->rv + c] + BN_EPS));
        a[c] = gamma[c] * rstd;
        b[c] = beta[c] - mean * a[c];
    }
    *scale = a;
    *shift = b;
}

/* Brings a Winograd conv's transformed weights for output channels [o0, o1) (multiples of 8, or
 * OC) in step with the parameters: a block of 8 output channels is transformed again when its
 * weights differ in any byte from those it was made from. Callers write the parameters directly,
 * so nothing tells the engine that they changed; the comparison costs one read of the weights. */
static void wino_sync(bf_net_t *net, const op_t *op, int o0, int o1) {
    size_t block = (size_t)8 * op->C * 9;
    for (int ob = o0 / 8; ob * 8 < o1; ob++) {
        const float *w = net->params + op->w + ob * block;
        float *src = net->wino_src + op->wino_src + ob * block;
        if (!memcmp(w, src, sizeof(float) * block)) continue;
        memcpy(src, w, sizeof(float) * block);
        bf_wino_weights(net->wino_u + op->wino, net->params + op->w, op->C, op->OC, ob * 8, ob * 8 + 8);
    }
}

static void wino_sync_all(bf_net_t *net) {
    for (int i = 0; i < net->nops; i++)
        if (net->ops[i].wino != NONE) wino_sync(net, &net->ops[i], 0, net->ops[i].OC);
}

/* Eval-mode conv of one image by Winograd, output channels [lo, hi), with the BN epilogue (scale
 * NULL: none); the transformed weights must be in step (wino_sync). */
static void wino_conv(bf_net_t *net, const op_t *op, float *out, const float *in, float *scratch, int lo, int hi,
                      const float *scale, const float *shift, int relu) {
    bf_wino_channels(out, in, net->wino_u + op->wino, op->C, op->OC, op->H, op->W, scratch, lo, hi, scale, shift,
                     relu);
}

static void forward_slice(bf_net_t *net, const float *x, slice_t sl, mode_t_ mode) {
    for (int i = 0; i < net->nops; i++) {
        const op_t *op = &net->ops[i];
        const float *in = input_of(net, x, op->in, sl.b0);
        float *out = at(net->act[op->out], net, op->out, sl.b0);
        size_t count = (size_t)sl.m * slot_size(net, op->out);
        switch (op->kind) {
        case OP_CONV:
            if (mode == MODE_EVAL && op->wino != NONE) { /* image by image (predict_slice passes one) */
                float *scale = NULL, *shift = NULL;
                int relu = 0;
                if (op->eval_fused) {
                    const op_t *bn = &net->ops[i + 1];
                    eval_affine(net, bn, sl.t, 0, bn->C, &scale, &shift);
                    out = at(net->act[bn->out], net, bn->out, sl.b0);
                    relu = bn->relu;
                }
                size_t HW = (size_t)op->H * op->W; /* stride 1: the output map is the input's size */
                for (int m = 0; m < sl.m; m++)
                    wino_conv(net, op, out + m * op->OC * HW, in + m * op->C * HW, net->scratch[sl.t], 0, op->OC, scale,
                              shift, relu);
            } else if (mode == MODE_EVAL && op->eval_fused) {
                const op_t *bn = &net->ops[i + 1];
                float *scale, *shift;
                eval_affine(net, bn, sl.t, 0, bn->C, &scale, &shift);
                bf_conv2d_forward_affine(at(net->act[bn->out], net, bn->out, sl.b0), in, net->params + op->w,
                                         op->b != NONE ? net->params + op->b : NULL, sl.m, op->C, op->H, op->W,
                                         op->OC, op->K, op->S, op->P, net->scratch[sl.t], scale, shift, bn->relu);
            } else if (op->eval_fused) { /* training: the BN's statistics while each image is in cache */
                double *sum = net->partial[sl.t] + 2 * net->ops[i + 1].bn_ch;
                memset(sum, 0, sizeof(double) * 2 * op->OC);
                bf_conv2d_forward_bnstats(out, in, net->params + op->w, op->b != NONE ? net->params + op->b : NULL,
                                          sl.m, op->C, op->H, op->W, op->OC, op->K, op->S, op->P, net->scratch[sl.t],
                                          sum, sum + op->OC);
            } else {
                bf_conv2d_forward(out, in, net->params + op->w, op->b != NONE ? net->params + op->b : NULL, sl.m,
                                  op->C, op->H, op->W, op->OC, op->K, op->S, op->P, net->scratch[sl.t]);
            }
            break;
        case OP_BN:
            if (!(mode == MODE_EVAL && op->eval_fused)) bn_forward_op(net, op, in, out, sl, mode);
            break;
        case OP_RELU: bf_relu_forward(out, in, count); break;
        case OP_ADD: bf_add_forward(out, in, input_of(net, x, op->in2, sl.b0), count, op->relu); break;
        case OP_MAXPOOL:
            bf_maxpool2_forward(out, argmax_at(net, op, sl.b0), in, sl.m, op->C,
                                op->H, op->W);
            break;
        case OP_GAP: bf_gap_forward(out, in, sl.m, op->C, op->H * op->W); break;
        case OP_LINEAR:
            bf_linear_forward(out, in, net->params + op->w, net->params + op->b, sl.m, op->C, op->OC);
            break;
        }
    }
}

static void bn_backward_op(bf_net_t *net, const op_t *op, slice_t sl, float *grads) {
    int C = op->C, HW = op->H * op->W;
    const float *mean = net->mean[sl.t] + op->bn_ch, *rstd = net->rstd[sl.t] + op->bn_ch;
    const float *in = at(net->act[op->in], net, op->in, sl.b0);
    const float *out = at(net->act[op->out], net, op->out, sl.b0);
    float *dout = at(net->dact[op->out], net, op->out, sl.b0);
    double *sdy = net->partial[sl.t] + 2 * net->bn_channels + 2 * op->bn_ch, *sdyx = sdy + C;
    memset(sdy, 0, sizeof(double) * 2 * C);
    bf_bn_backward_stats(sdy, sdyx, dout, out, in, mean, rstd, sl.m, C, HW, op->relu);
#pragma omp barrier
    double tot_dy[512], tot_dyx[512];
    for (int c = 0; c < C; c++) {
        double a = 0, b = 0;
        for (int t = 0; t < sl.T; t++) {
            a += net->partial[t][2 * net->bn_channels + 2 * op->bn_ch + c];
            b += net->partial[t][2 * net->bn_channels + 2 * op->bn_ch + C + c];
        }
        tot_dy[c] = a;
        tot_dyx[c] = b;
        if (sl.t == 0) { /* the whole batch's dgamma/dbeta, once */
            grads[op->w + c] += (float)b;
            grads[op->b + c] += (float)a;
        }
    }
    if (op->in == 0) return;
    bf_bn_backward(at(net->dact[op->in], net, op->in, sl.b0), op->acc_in, dout, in, mean, rstd,
                   net->params + op->w, tot_dy, tot_dyx, sl.n, sl.m, C, HW);
}

static void backward_slice(bf_net_t *net, const float *x, slice_t sl) {
    float *g = net->tgrads[sl.t];
    memset(g, 0, sizeof(float) * net->nparams);
    for (int i = net->nops - 1; i >= 0; i--) {
        const op_t *op = &net->ops[i];
        const float *in = input_of(net, x, op->in, sl.b0);
        float *din = op->in == 0 ? NULL : at(net->dact[op->in], net, op->in, sl.b0);
        float *dout = at(net->dact[op->out], net, op->out, sl.b0);
        const float *out = at(net->act[op->out], net, op->out, sl.b0);
        size_t count = (size_t)sl.m * slot_size(net, op->out);
        switch (op->kind) {
        case OP_CONV:
            bf_conv2d_backward(din, op->acc_in, g + op->w, op->b != NONE ? g + op->b : NULL, dout, in,
                               net->params + op->w, sl.m, op->C, op->H, op->W, op->OC, op->K, op->S, op->P,
                               net->scratch[sl.t]);
            break;
        case OP_BN: bn_backward_op(net, op, sl, g); break;
        case OP_RELU:
            if (din) bf_relu_backward(din, op->acc_in, dout, out, count);
            break;
        case OP_ADD: {
            float *db = op->in2 == 0 ? NULL : at(net->dact[op->in2], net, op->in2, sl.b0);
            /* the input image never needs a gradient; both operands are inner slots here */
            bf_add_backward(din, op->acc_in, db, op->acc_in2, dout, out, count, op->relu);
            break;
        }
        case OP_MAXPOOL:
            if (din)
                bf_maxpool2_backward(din, op->acc_in, dout, argmax_at(net, op, sl.b0),
                                     sl.m, op->C, op->H, op->W);
            break;
        case OP_GAP:
            if (din) bf_gap_backward(din, op->acc_in, dout, sl.m, op->C, op->H * op->W);
            break;
        case OP_LINEAR:
            bf_linear_backward(din, op->acc_in, g + op->w, g + op->b, dout, in, net->params + op->w, sl.m, op->C,
                               op->OC);
            break;
        }
    }
}

/* Adds the other threads' gradients into grads, each thread summing a range of indices in thread
 * order (deterministic). */
static void reduce_grads(bf_net_t *net, slice_t sl) {
    if (sl.T == 1) return;
#pragma omp barrier
    size_t lo = net->nparams * sl.t / sl.T, hi = net->nparams * (sl.t + 1) / sl.T;
    for (int t = 1; t < sl.T; t++) {
        const float *src = net->tgrads[t];
        for (size_t i = lo; i < hi; i++) net->grads[i] += src[i];
    }
}

static slice_t make_slice(int n) {
    slice_t sl;
    sl.t = omp_get_thread_num();
    sl.T = omp_get_num_threads();
    sl.n = n;
    sl.b0 = (int)((long)n * sl.t / sl.T);
    sl.m = (int)((long)n * (sl.t + 1) / sl.T) - sl.b0;
    return sl;
}

static int threads_for(const bf_net_t *net, int n) { return n < net->threads ? n : net->threads; }

static int logits_slot(const bf_net_t *net) { return net->ops[net->nops - 1].out; }

static double run(bf_net_t *net, const float *x, const int32_t *y, int n, int *correct, mode_t_ mode, int backward) {
    if (n < 1 || n > net->max_batch) return NAN;
    int L = logits_slot(net), K = net->classes;
#pragma omp parallel num_threads(threads_for(net, n))
    {
        slice_t sl = make_slice(n);
        forward_slice(net, x, sl, mode);
        const float *logits = at(net->act[L], net, L, sl.b0);
        net->loss_part[sl.t] =
            bf_softmax_xent(at(net->dact[L], net, L, sl.b0), NULL, logits, y + sl.b0, sl.m, K, n);
        int ok = 0;
        for (int i = 0; i < sl.m; i++) {
            int best = 0;
            for (int k = 1; k < K; k++)
                if (logits[(size_t)i * K + k] > logits[(size_t)i * K + best]) best = k;
            ok += best == y[sl.b0 + i];
        }
        net->correct_part[sl.t] = ok;
        if (backward) {
            backward_slice(net, x, sl);
            reduce_grads(net, sl);
        }
    }
    double loss = 0;
    int ok = 0;
    for (int t = 0; t < threads_for(net, n); t++) {
        loss += net->loss_part[t];
        ok += net->correct_part[t];
    }
    if (correct) *correct = ok;
    return loss;
}

double bf_net_train_step(bf_net_t *net, const float *x, const int32_t *y, int n, int *correct) {
    return run(net, x, y, n, correct, MODE_TRAIN, 1);
}

double bf_net_loss(bf_net_t *net, const float *x, const int32_t *y, int n) {
    return run(net, x, y, n, NULL, MODE_LOSS_ONLY, 0);
}

double bf_net_objective_step(bf_net_t *net, const float *x, int n, bf_logits_grad_fn f, void *ctx, int backward) {
    if (n < 1 || n > net->max_batch || !f) return NAN;
    int L = logits_slot(net), K = net->classes;
    double value = 0;
#pragma omp parallel num_threads(threads_for(net, n))
    {
        slice_t sl = make_slice(n);
        forward_slice(net, x, sl, MODE_LOSS_ONLY);
#pragma omp barrier
#pragma omp single
        value = f(ctx, net->act[L], n, K, net->dact[L]); /* the whole batch's logits, once; a barrier after */
        if (backward) {
            backward_slice(net, x, sl);
            reduce_grads(net, sl);
        }
    }
    return value;
}

void bf_net_recalibrate_bn(bf_net_t *net, const float *x, int n) {
    if (!net->bn_channels) return; /* nothing to re-estimate: spare the forwards */
    net->recal_batches = 0;
    for (int done = 0; done < n; done += net->max_batch) {
        int m = n - done < net->max_batch ? n - done : net->max_batch;
        const float *xb = x + (size_t)done * slot_size(net, 0);
        net->recal_batches++;
#pragma omp parallel num_threads(threads_for(net, m))
        {
            slice_t sl = make_slice(m);
            forward_slice(net, xb, sl, MODE_RECAL);
        }
    }
}

/* [lo, hi) of this thread's share of n items in units of `unit` (the last share takes the rest). */
static void share(int n, int unit, int t, int T, int *lo, int *hi) {
    int units = (n + unit - 1) / unit;
    *lo = (int)((long)units * t / T) * unit;
    *hi = (int)((long)units * (t + 1) / T) * unit;
    if (*hi > n) *hi = n;
    if (*lo > n) *lo = n;
}

/* One op of a single image, this thread's share: convolutions by output channel (each thread
 * pads or im2cols the input into its own scratch, so no barrier inside the op), BN and pooling by
 * channel, pointwise ops by element. The caller puts one barrier after every op. */
static void single_op(bf_net_t *net, const op_t *op, const float *x, int t, int T) {
    const float *in = input_of(net, x, op->in, 0);
    float *out = net->act[op->out];
    int lo, hi, HW = op->H * op->W;
    switch (op->kind) {
    case OP_CONV: {
        share(op->OC, bf_conv2d_channel_unit(op->C, op->OC, op->K, op->S, op->P), t, T, &lo, &hi);
        float *scale = NULL, *shift = NULL;
        int relu = 0;
        if (op->eval_fused) { /* write the next op's (BN's) output, per channel: no barrier between */
            const op_t *bn = op + 1;
            eval_affine(net, bn, t, lo, hi, &scale, &shift);
            out = net->act[bn->out];
            relu = bn->relu;
        }
        if (op->wino != NONE) { /* each thread keeps its own channels' transformed weights in step */
            wino_sync(net, op, lo, hi);
            wino_conv(net, op, out, in, net->scratch[t], lo, hi, scale, shift, relu);
            break;
        }
        bf_conv2d_forward_channels_affine(out, in, net->params + op->w, op->b != NONE ? net->params + op->b : NULL,
                                          op->C, op->H, op->W, op->OC, op->K, op->S, op->P, net->scratch[t], lo, hi,
                                          scale, shift, relu);
        break;
    }
    case OP_BN: {
        if (op->eval_fused) break; /* done by the conv before it */
        share(op->C, 1, t, T, &lo, &hi);
        float *mean = net->mean[t] + op->bn_ch, *rstd = net->rstd[t] + op->bn_ch;
        for (int c = lo; c < hi; c++) {
            mean[c] = net->buffers[op->rm + c];
            rstd[c] = (float)(1.0 / sqrt((double)net->buffers[op->rv + c] + BN_EPS));
        }
        bf_bn_forward(out + (size_t)lo * HW, in + (size_t)lo * HW, mean + lo, rstd + lo, net->params + op->w + lo,
                      net->params + op->b + lo, 1, hi - lo, HW, op->relu);
        break;
    }
    case OP_RELU:
    case OP_ADD:
        share((int)slot_size(net, op->out), 16, t, T, &lo, &hi);
        if (op->kind == OP_RELU)
            bf_relu_forward(out + lo, in + lo, (size_t)(hi - lo));
        else
            bf_add_forward(out + lo, in + lo, input_of(net, x, op->in2, 0) + lo, (size_t)(hi - lo), op->relu);
        break;
    case OP_MAXPOOL:
        share(op->C, 1, t, T, &lo, &hi);
        bf_maxpool2_forward(out + (size_t)lo * op->OH * op->OW, argmax_at(net, op, 0) + (size_t)lo * op->OH * op->OW,
                            in + (size_t)lo * HW, 1, hi - lo, op->H, op->W);
        break;
    case OP_GAP:
        share(op->C, 1, t, T, &lo, &hi);
        bf_gap_forward(out + lo, in + (size_t)lo * HW, 1, hi - lo, HW);
        break;
    case OP_LINEAR:
        share(op->OC, 1, t, T, &lo, &hi);
        for (int o = lo; o < hi; o++) { /* a few hundred MACs: a plain dot product */
            const float *wr = net->params + op->w + (size_t)o * op->C;
            float acc = net->params[op->b + o];
            for (int k = 0; k < op->C; k++) acc += wr[k] * in[k];
            out[o] = acc;
        }
        break;
    }
}

/* Latency path: one image, all threads cooperating inside every layer. */
static void predict_one_parallel(bf_net_t *net, const float *x) {
#pragma omp parallel num_threads(net->threads)
    {
        int t = omp_get_thread_num(), T = omp_get_num_threads();
        for (int i = 0; i < net->nops; i++) {
            if (net->ops[i].kind == OP_BN && net->ops[i].eval_fused) continue;
            single_op(net, &net->ops[i], x, t, T);
#pragma omp barrier
        }
    }
}

/* A thread's images in eval mode, one at a time through the whole network, each in the activation
 * slots of the slice's first image: one image's activations (well under 1 MB) stay in L2 from op
 * to op, where a slice's (3 MB per activation at 64 images of 1x28x28) went through memory
 * between ops. Eval mode has no batch statistics, so an image's logits do not depend on the
 * others: the same whether it is predicted alone or in a batch. */
static void predict_slice(bf_net_t *net, const float *xb, slice_t sl, float *logits) {
    int L = logits_slot(net), K = net->classes;
    size_t in_sz = slot_size(net, 0);
    slice_t one = sl;
    one.m = 1;
    for (int i = 0; i < sl.m; i++) {
        /* forward_slice reads image one.b0 of its input: pass the input shifted by i images */
        forward_slice(net, xb + (size_t)i * in_sz, one, MODE_EVAL);
        memcpy(logits + (size_t)(sl.b0 + i) * K, at(net->act[L], net, L, sl.b0), sizeof(float) * K);
    }
}

void bf_net_predict(bf_net_t *net, const float *x, int n, float *logits) {
    if (n == 1 && net->threads > 1) {
        predict_one_parallel(net, x);
        memcpy(logits, net->act[logits_slot(net)], sizeof(float) * net->classes);
        return;
    }
    wino_sync_all(net); /* once for the batch, before any thread reads them */
    for (int done = 0; done < n; done += net->max_batch) {
        int m = n - done < net->max_batch ? n - done : net->max_batch;
        const float *xb = x + (size_t)done * slot_size(net, 0);
        float *lb = logits + (size_t)done * net->classes;
        if (threads_for(net, m) == 1) { /* single images: skip the thread team (latency) */
            predict_slice(net, xb, make_slice(m), lb);
        } else {
#pragma omp parallel num_threads(threads_for(net, m))
            predict_slice(net, xb, make_slice(m), lb);
        }
    }
}

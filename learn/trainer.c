/* trainer.c: epochs of SGD over a dataset, and evaluation. All buffers are allocated once in
 * bf_trainer_new; a step only fills a batch and calls the engine. */
#include "bf_trainer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct bf_trainer {
    bf_net_t *net;
    const bf_dataset_t *train;
    const float *mean, *std;
    bf_train_opts_t opts;
    bf_schedule_t sched;
    bf_sgd_t *sgd;
    bf_rng_t rng;
    int epoch, epochs;
    int64_t global_step;
    int32_t *order, *y;
    float *x;
};

bf_trainer_t *bf_trainer_new(bf_net_t *net, const bf_train_opts_t *opts, const bf_dataset_t *train,
                             const float *mean, const float *std, int total_epochs, bf_err_t *err) {
    int C, H, W;
    bf_net_input(net, &C, &H, &W);
    if (train->c != C || train->h != H || train->w != W)
        return bf_err_set(err, "dataset images are %dx%dx%d but the model expects %dx%dx%d", train->c, train->h,
                          train->w, C, H, W), NULL;
    if (train->n < 1) return bf_err_set(err, "the training set is empty"), NULL;
    if (opts->batch < 1 || opts->batch > bf_net_max_batch(net))
        return bf_err_set(err, "batch size %d out of range [1, %d]", opts->batch, bf_net_max_batch(net)), NULL;
    if (total_epochs < 1) return bf_err_set(err, "need at least one epoch"), NULL;
    for (int32_t i = 0; i < train->n; i++)
        if (train->labels[i] >= bf_net_classes(net))
            return bf_err_set(err, "label %d of image %d is outside the model's %d classes", train->labels[i], i,
                              bf_net_classes(net)), NULL;
    bf_trainer_t *t = calloc(1, sizeof *t);
    if (!t) return bf_err_set(err, "out of memory"), NULL;
    t->net = net;
    t->train = train;
    t->mean = mean;
    t->std = std;
    t->opts = *opts;
    t->epochs = total_epochs;
    int64_t steps_per_epoch = (train->n + opts->batch - 1) / opts->batch;
    if (bf_schedule_parse(opts->schedule ? opts->schedule : "onecycle", opts->lr, steps_per_epoch * total_epochs,
                          &t->sched, err)) {
        free(t);
        return NULL;
    }
    t->sgd = bf_sgd_new(bf_net_num_params(net), opts->momentum, opts->weight_decay, opts->nesterov);
    t->order = malloc(sizeof(int32_t) * train->n);
    t->y = malloc(sizeof(int32_t) * opts->batch);
    t->x = malloc(sizeof(float) * (size_t)opts->batch * C * H * W);
    if (!t->sgd || !t->order || !t->y || !t->x) {
        bf_trainer_destroy(&t);
        return bf_err_set(err, "out of memory"), NULL;
    }
    bf_rng_seed(&t->rng, opts->seed);
    for (int32_t i = 0; i < train->n; i++) t->order[i] = i;
    return t;
}

void bf_trainer_destroy(bf_trainer_t **p) {
    if (!p || !*p) return;
    bf_trainer_t *t = *p;
    bf_sgd_destroy(&t->sgd);
    free(t->order);
    free(t->y);
    free(t->x);
    free(t);
    *p = NULL;
}

/* FedProx: the gradient of mu/2 |w - w_global|^2 keeps a client near the round's global model. */
static void add_proximal(bf_trainer_t *t) {
    float *g = bf_net_grads(t->net);
    const float *w = bf_net_params(t->net), *c = t->opts.prox_center, mu = (float)t->opts.mu;
    for (size_t i = 0; i < bf_net_num_params(t->net); i++) g[i] += mu * (w[i] - c[i]);
}

int bf_trainer_epoch(bf_trainer_t *t, bf_progress_fn fn, void *user, bf_progress_t *summary) {
    const bf_dataset_t *d = t->train;
    int B = t->opts.batch;
    bf_progress_t p = {.epoch = t->epoch + 1, .epochs = t->epochs, .steps = (d->n + B - 1) / B};
    bf_rng_shuffle(&t->rng, t->order, (size_t)d->n);
    double loss_sum = 0, t0 = bf_now();
    int64_t seen = 0, correct = 0;
    for (int64_t s = 0; s < p.steps; s++) {
        if (t->opts.cancel && *t->opts.cancel) return -2;
        int n = (int)(d->n - s * B < B ? d->n - s * B : B);
        bf_batch_fill(d, t->order + s * B, n, t->mean, t->std, t->opts.augment ? &t->rng : NULL, t->x, t->y);
        double lr, momentum = t->opts.momentum;
        bf_schedule_at(&t->sched, t->global_step++, &lr, &momentum);
        bf_sgd_set_momentum(t->sgd, momentum);
        int ok = 0;
        double loss = bf_net_train_step(t->net, t->x, t->y, n, &ok);
        if (!isfinite(loss)) return -1; /* diverged: the caller reports it */
        if (t->opts.mu > 0 && t->opts.prox_center) add_proximal(t);
        bf_sgd_step(t->sgd, bf_net_params(t->net), bf_net_grads(t->net), lr);
        loss_sum += loss * n;
        seen += n;
        correct += ok;
        p.step = s + 1;
        p.loss = loss_sum / seen;
        p.accuracy = (double)correct / seen;
        p.elapsed = bf_now() - t0;
        p.img_per_s = seen / (p.elapsed > 0 ? p.elapsed : 1e-9);
        p.eta = (d->n - seen) / (p.img_per_s > 0 ? p.img_per_s : 1);
        if (fn) fn(&p, user);
    }
    t->epoch++;
    if (summary) *summary = p;
    return 0;
}

void bf_evaluate(bf_net_t *net, const bf_dataset_t *d, const float *mean, const float *std, int limit,
                 double *loss, double *accuracy) {
    int B = bf_net_max_batch(net), K = bf_net_classes(net);
    int32_t n = limit > 0 && limit < d->n ? limit : d->n;
    size_t chw = (size_t)d->c * d->h * d->w;
    float *x = malloc(sizeof(float) * B * chw), *logits = malloc(sizeof(float) * B * K), *dl = malloc(sizeof(float) * B * K);
    int32_t *idx = malloc(sizeof(int32_t) * B), *y = malloc(sizeof(int32_t) * B);
    double total = 0;
    int64_t correct = 0;
    for (int32_t s = 0; x && logits && dl && idx && y && s < n; s += B) {
        int m = n - s < B ? n - s : B;
        for (int i = 0; i < m; i++) idx[i] = s + i;
        bf_batch_fill(d, idx, m, mean, std, NULL, x, y);
        bf_net_predict(net, x, m, logits);
        total += bf_softmax_xent(dl, NULL, logits, y, m, K, 1);
        for (int i = 0; i < m; i++) {
            int best = 0;
            for (int k = 1; k < K; k++) best = logits[i * K + k] > logits[i * K + best] ? k : best;
            correct += best == y[i];
        }
    }
    *loss = n ? total / n : 0;
    *accuracy = n ? (double)correct / n : 0;
    free(x), free(logits), free(dl), free(idx), free(y);
}

/* optim.c: SGD (torch.optim.SGD semantics) and learning-rate schedules. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bf_models.h"

struct bf_sgd {
    size_t n;
    double momentum, weight_decay;
    int nesterov;
    int started; /* torch initialises the momentum buffer with the first gradient */
    float *buf;
};

bf_sgd_t *bf_sgd_new(size_t n, double momentum, double weight_decay, int nesterov) {
    bf_sgd_t *o = calloc(1, sizeof *o);
    if (!o) return NULL;
    o->buf = calloc(n ? n : 1, sizeof(float));
    if (!o->buf) {
        free(o);
        return NULL;
    }
    o->n = n;
    o->momentum = momentum;
    o->weight_decay = weight_decay;
    o->nesterov = nesterov;
    return o;
}

void bf_sgd_destroy(bf_sgd_t **p) {
    if (!p || !*p) return;
    free((*p)->buf);
    free(*p);
    *p = NULL;
}

void bf_sgd_set_momentum(bf_sgd_t *o, double momentum) { o->momentum = momentum; }

void bf_sgd_reset(bf_sgd_t *o) {
    memset(o->buf, 0, sizeof(float) * o->n);
    o->started = 0;
}

/* g = grad + wd*p; buf = m*buf + g (buf = g on the first step); d = nesterov ? g + m*buf : buf;
 * p -= lr*d. Dampening is 0, as in every recipe we follow. */
void bf_sgd_step(bf_sgd_t *o, float *params, const float *grads, double lr) {
    const float wd = (float)o->weight_decay, m = (float)o->momentum, a = (float)lr;
    float *buf = o->buf;
    if (m == 0.0f) {
        for (size_t i = 0; i < o->n; i++) params[i] -= a * (grads[i] + wd * params[i]);
        return;
    }
    int first = !o->started;
    o->started = 1;
    for (size_t i = 0; i < o->n; i++) {
        float g = grads[i] + wd * params[i];
        buf[i] = first ? g : m * buf[i] + g;
        float d = o->nesterov ? g + m * buf[i] : buf[i];
        params[i] -= a * d;
    }
}

/* ---- schedules ---------------------------------------------------------------------------- */

static double cos_anneal(double start, double end, double pct) { return end + (start - end) / 2.0 * (cos(M_PI * pct) + 1); }

/* torch.optim.lr_scheduler.OneCycleLR with anneal_strategy="cos", three_phase=False. */
static void onecycle_at(const bf_schedule_t *s, int64_t step, double *lr, double *momentum) {
    double initial = s->lr / s->div_factor, min_lr = initial / s->final_div_factor;
    double end1 = s->pct_start * (double)s->total_steps - 1, end2 = (double)s->total_steps - 1;
    double st = (double)step;
    if (st <= end1) {
        double pct = end1 > 0 ? st / end1 : 1.0;
        *lr = cos_anneal(initial, s->lr, pct);
        if (s->cycle_momentum) *momentum = cos_anneal(s->max_momentum, s->base_momentum, pct);
    } else {
        double pct = end2 > end1 ? (st - end1) / (end2 - end1) : 1.0;
        if (pct > 1) pct = 1;
        *lr = cos_anneal(s->lr, min_lr, pct);
        if (s->cycle_momentum) *momentum = cos_anneal(s->base_momentum, s->max_momentum, pct);
    }
}

void bf_schedule_at(const bf_schedule_t *s, int64_t step, double *lr, double *momentum) {
    switch (s->kind) {
    case BF_LR_CONSTANT: *lr = s->lr; break;
    case BF_LR_STEP: *lr = s->lr * pow(s->gamma, (double)(step / (s->step_size > 0 ? s->step_size : 1))); break;
    case BF_LR_COSINE: {
        double pct = s->total_steps > 0 ? (double)step / (double)s->total_steps : 1.0;
        *lr = cos_anneal(s->lr, 0.0, pct > 1 ? 1 : pct);
        break;
    }
    case BF_LR_ONECYCLE: onecycle_at(s, step, lr, momentum); break;
    }
}

int bf_schedule_parse(const char *spec, double lr, int64_t total_steps, bf_schedule_t *s, bf_err_t *err) {
    memset(s, 0, sizeof *s);
    s->lr = lr;
    s->total_steps = total_steps;
    s->pct_start = 0.3;
    s->div_factor = 25;
    s->final_div_factor = 1e4;
    s->base_momentum = 0.85;
    s->max_momentum = 0.95;
    s->gamma = 0.1;
    if (!(lr > 0) || lr > 100) return bf_err_set(err, "learning rate must be in (0, 100], got %g", lr);
    if (!strcmp(spec, "constant")) {
        s->kind = BF_LR_CONSTANT;
    } else if (!strcmp(spec, "cosine")) {
        s->kind = BF_LR_COSINE;
    } else if (!strcmp(spec, "onecycle")) {
        s->kind = BF_LR_ONECYCLE;
        s->cycle_momentum = 1;
    } else if (!strncmp(spec, "step:", 5)) {
        char *end;
        long size = strtol(spec + 5, &end, 10);
        double gamma = *end == ':' ? strtod(end + 1, &end) : -1;
        if (size < 1 || *end || !(gamma > 0) || gamma > 1)
            return bf_err_set(err, "bad step schedule '%s' (expected step:STEPS:GAMMA, gamma in (0,1])", spec);
        s->kind = BF_LR_STEP;
        s->step_size = size;
        s->gamma = gamma;
    } else {
        return bf_err_set(err, "unknown schedule '%s' (constant, step:STEPS:GAMMA, cosine, onecycle)", spec);
    }
    if ((s->kind == BF_LR_COSINE || s->kind == BF_LR_ONECYCLE) && total_steps < 1)
        return bf_err_set(err, "schedule '%s' needs a positive number of steps", spec);
    return 0;
}

/* aggregate.c: FedAvg and its robust / momentum variants over flat model vectors. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bf_models.h"

struct bf_agg {
    bf_agg_opts_t o;
    size_t np, nb;
    float *velocity;   /* fedavgm: server momentum over params then buffers */
    float *column;     /* median / trimmed mean: one coordinate's k values */
    int column_cap;
};

static int parse_suffix(const char *spec, const char *name, double dflt, double lo, double hi, double *v) {
    size_t n = strlen(name);
    if (strncmp(spec, name, n)) return 0;
    if (!spec[n]) {
        *v = dflt;
        return 1;
    }
    if (spec[n] != ':') return 0;
    char *end;
    *v = strtod(spec + n + 1, &end);
    return end != spec + n + 1 && !*end && *v >= lo && *v <= hi ? 1 : -1;
}

int bf_agg_parse(const char *spec, bf_agg_opts_t *o, bf_err_t *err) {
    memset(o, 0, sizeof *o);
    o->server_lr = 1.0;
    o->server_momentum = 0.9;
    o->trim = 0.1;
    int r;
    if (!strcmp(spec, "fedavg")) {
        o->kind = BF_AGG_FEDAVG;
    } else if (!strcmp(spec, "median")) {
        o->kind = BF_AGG_MEDIAN;
    } else if ((r = parse_suffix(spec, "fedprox", 0.01, 0, 100, &o->mu))) {
        if (r < 0) return bf_err_set(err, "fedprox:MU needs MU in [0, 100]");
        o->kind = BF_AGG_FEDPROX;
    } else if ((r = parse_suffix(spec, "fedavgm", 0.9, 0, 0.999, &o->server_momentum))) {
        if (r < 0) return bf_err_set(err, "fedavgm:BETA needs BETA in [0, 0.999]");
        o->kind = BF_AGG_FEDAVGM;
    } else if ((r = parse_suffix(spec, "trimmed-mean", 0.1, 0, 0.49, &o->trim))) {
        if (r < 0) return bf_err_set(err, "trimmed-mean:FRAC needs FRAC in [0, 0.49]");
        o->kind = BF_AGG_TRIMMED_MEAN;
    } else {
        return bf_err_set(err, "unknown strategy '%s' (fedavg, fedprox[:MU], fedavgm[:BETA], median, trimmed-mean[:FRAC])", spec);
    }
    return 0;
}

bf_agg_t *bf_agg_new(const bf_agg_opts_t *o, size_t nparams, size_t nbuffers) {
    bf_agg_t *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    a->o = *o;
    a->np = nparams;
    a->nb = nbuffers;
    if (o->kind == BF_AGG_FEDAVGM && !(a->velocity = calloc(nparams + nbuffers + 1, sizeof(float)))) {
        free(a);
        return NULL;
    }
    return a;
}

void bf_agg_destroy(bf_agg_t **p) {
    if (!p || !*p) return;
    free((*p)->velocity);
    free((*p)->column);
    free(*p);
    *p = NULL;
}

float *bf_agg_state(bf_agg_t *a, size_t *len) {
    *len = a->velocity ? a->np + a->nb : 0;
    return a->velocity;
}

/* out[j] = sum_i w_i x_i[j] / sum_i w_i, in double, participants in order. */
static void weighted_mean(float *out, const float *const *x, const int64_t *w, int k, size_t n) {
    double total = 0;
    for (int i = 0; i < k; i++) total += (double)w[i];
    for (size_t j = 0; j < n; j++) {
        double s = 0;
        for (int i = 0; i < k; i++) s += (double)w[i] * x[i][j];
        out[j] = (float)(s / total);
    }
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Coordinate-wise median (trim < 0) or mean after cutting floor(trim*k) values at each end. */
static void robust(bf_agg_t *a, float *out, const float *const *x, int k, size_t n, double trim) {
    int cut = trim < 0 ? 0 : (int)floor(trim * k);
    for (size_t j = 0; j < n; j++) {
        for (int i = 0; i < k; i++) a->column[i] = x[i][j];
        qsort(a->column, k, sizeof(float), cmp_float);
        if (trim < 0) {
            out[j] = k % 2 ? a->column[k / 2] : (float)(0.5 * ((double)a->column[k / 2 - 1] + a->column[k / 2]));
        } else {
            double s = 0;
            for (int i = cut; i < k - cut; i++) s += a->column[i];
            out[j] = (float)(s / (k - 2 * cut));
        }
    }
}

/* FedAvgM (Hsu et al. 2019): v = beta*v + (global - avg); global -= server_lr * v. */
static void server_momentum(bf_agg_t *a, float *global, const float *avg, float *v, size_t n) {
    for (size_t j = 0; j < n; j++) {
        v[j] = (float)(a->o.server_momentum * v[j] + ((double)global[j] - avg[j]));
        global[j] = (float)(global[j] - a->o.server_lr * v[j]);
    }
}

static int aggregate_vector(bf_agg_t *a, float *global, const float *const *x, const int64_t *samples, int k,
                            size_t n, float *velocity) {
    if (!n) return 0;
    switch (a->o.kind) {
    case BF_AGG_MEDIAN: robust(a, global, x, k, n, -1); return 0;
    case BF_AGG_TRIMMED_MEAN: robust(a, global, x, k, n, a->o.trim); return 0;
    case BF_AGG_FEDAVGM: {
        float *avg = malloc(sizeof(float) * n);
        if (!avg) return -1;
        weighted_mean(avg, x, samples, k, n);
        server_momentum(a, global, avg, velocity, n);
        free(avg);
        return 0;
    }
    default: weighted_mean(global, x, samples, k, n); return 0;
    }
}

int bf_agg_apply(bf_agg_t *a, float *global_params, float *global_buffers, const float *const *params,
                 const float *const *buffers, const int64_t *samples, int k, bf_err_t *err) {
    if (k < 1) return bf_err_set(err, "no client models to aggregate");
    for (int i = 0; i < k; i++)
        if (samples[i] < 1) return bf_err_set(err, "client model %d reports %lld samples", i, (long long)samples[i]);
    if (k > a->column_cap) {
        float *c = realloc(a->column, sizeof(float) * k);
        if (!c) return bf_err_set(err, "out of memory");
        a->column = c;
        a->column_cap = k;
    }
    if (aggregate_vector(a, global_params, params, samples, k, a->np, a->velocity) ||
        aggregate_vector(a, global_buffers, buffers, samples, k, a->nb, a->velocity ? a->velocity + a->np : NULL))
        return bf_err_set(err, "out of memory");
    return 0;
}

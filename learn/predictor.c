/* predictor.c: a model loaded for inference and the image path to it (bf_predictor.h). */
#include "bf_predictor.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bf_datasets.h"
#include "bf_models.h"

struct bf_predictor {
    bf_net_t *net;
    bf_model_meta_t meta;
    char digest[65];
    int c, h, w, classes;
    bf_dataset_t one; /* a one-image dataset over `pixels`, so bf_batch_fill normalizes it */
    uint8_t label;
    float *x, *logits;
};

static bf_predictor_t *finish(bf_net_t *net, const bf_model_meta_t *meta, bf_err_t *err) {
    if (!net) return NULL;
    bf_predictor_t *p = calloc(1, sizeof *p);
    if (!p) {
        bf_net_destroy(&net);
        return bf_err_set(err, "out of memory"), NULL;
    }
    p->net = net;
    p->meta = *meta;
    if (bf_model_digest(net, meta, p->digest, err)) {
        bf_predictor_destroy(&p);
        return NULL;
    }
    bf_net_input(net, &p->c, &p->h, &p->w);
    p->classes = bf_net_classes(net);
    size_t pix = (size_t)p->c * p->h * p->w;
    p->one = (bf_dataset_t){.n = 1, .c = p->c, .h = p->h, .w = p->w, .labels = &p->label, .classes = p->classes};
    p->one.pixels = malloc(pix);
    p->x = malloc(pix * sizeof *p->x);
    p->logits = malloc((size_t)p->classes * sizeof *p->logits);
    if (!p->one.pixels || !p->x || !p->logits) {
        bf_predictor_destroy(&p);
        return bf_err_set(err, "out of memory"), NULL;
    }
    return p;
}

bf_predictor_t *bf_predictor_new(const uint8_t *model, size_t len, int threads, bf_err_t *err) {
    bf_model_meta_t meta;
    bf_net_t *net = bf_model_decode(model, len, 1, threads, &meta, err);
    return finish(net, &meta, err);
}

bf_predictor_t *bf_predictor_load(const char *path, int threads, bf_err_t *err) {
    bf_model_meta_t meta;
    bf_net_t *net = bf_model_load(path, 1, threads, &meta, err);
    return finish(net, &meta, err);
}

void bf_predictor_destroy(bf_predictor_t **pp) {
    if (!pp || !*pp) return;
    bf_predictor_t *p = *pp;
    bf_net_destroy(&p->net);
    free(p->one.pixels);
    free(p->x);
    free(p->logits);
    free(p);
    *pp = NULL;
}

int bf_predictor_classes(const bf_predictor_t *p) { return p->classes; }
const char *bf_predictor_label(const bf_predictor_t *p, int k) {
    return k >= 0 && k < p->meta.classes ? p->meta.class_names[k] : "?";
}
const char *bf_predictor_digest(const bf_predictor_t *p) { return p->digest; }
const char *bf_predictor_arch(const bf_predictor_t *p) { return bf_net_arch(p->net); }
void bf_predictor_input(const bf_predictor_t *p, int *c, int *h, int *w) {
    *c = p->c, *h = p->h, *w = p->w;
}

int bf_predictor_run(bf_predictor_t *p, const uint8_t *image, size_t len, double *probs, bf_err_t *err) {
    if (len > BF_PREDICT_MAX_IMAGE_BYTES)
        return bf_err_set(err, "image of %zu bytes exceeds the %u-byte limit", len, BF_PREDICT_MAX_IMAGE_BYTES);
    if (bf_image_decode(image, len, p->c, p->h, p->w, p->one.pixels, err)) return -1;
    int32_t idx = 0, y;
    bf_batch_fill(&p->one, &idx, 1, p->meta.mean, p->meta.std, NULL, p->x, &y);
    bf_net_predict(p->net, p->x, 1, p->logits);
    /* Softmax in double, shifted by the max logit so exp never overflows. */
    double mx = p->logits[0], sum = 0;
    for (int k = 1; k < p->classes; k++) mx = p->logits[k] > mx ? p->logits[k] : mx;
    for (int k = 0; k < p->classes; k++) sum += probs[k] = exp((double)p->logits[k] - mx);
    for (int k = 0; k < p->classes; k++) probs[k] /= sum;
    /* A model of huge (finite) weights overflows to inf or NaN logits: that is no answer, and a
     * paid prediction must not be sold on it. */
    for (int k = 0; k < p->classes; k++)
        if (!isfinite(probs[k])) return bf_err_set(err, "the model's output for this image is not finite");
    return 0;
}

int bf_predictor_topk(const double *probs, int classes, int k, int *idx) {
    if (k > classes) k = classes;
    if (k < 0) k = 0;
    /* Insertion of each class into a sorted prefix of length k: stable, so ties keep the smaller
     * index first; classes <= 256. */
    int n = 0;
    for (int c = 0; c < classes; c++) {
        int j = n < k ? n++ : k;
        if (j == k && (k == 0 || !(probs[c] > probs[idx[k - 1]]))) continue;
        if (j == k) j = k - 1;
        while (j > 0 && probs[c] > probs[idx[j - 1]]) {
            idx[j] = idx[j - 1];
            j--;
        }
        idx[j] = c;
    }
    return k;
}

/* dataset.c: the in-memory dataset: allocation, subsets, statistics, batches. It reads no file:
 * the readers (idx.c, cifar.c, imgfolder.c, image.c) build datasets with bf_dataset_alloc, and
 * load.c picks the reader for a directory. */
#include "bf_datasets.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- allocation ---- */

int bf_dataset_alloc(bf_dataset_t *out, int32_t n, int32_t c, int32_t h, int32_t w, int32_t classes,
                     bf_err_t *err) {
    memset(out, 0, sizeof *out);
    if (n < 0 || c < 1 || h < 1 || w < 1)
        return bf_err_set(err, "invalid dataset shape %d x %d x %d x %d", (int)n, (int)c, (int)h, (int)w);
    if (classes < 1 || classes > BF_MAX_CLASSES)
        return bf_err_set(err, "invalid class count %d (must be 1..%d)", (int)classes, BF_MAX_CLASSES);
    size_t chw, total;
    /* Checked products: c*h*w can exceed 64 bits for hostile int32 inputs. */
    if (__builtin_mul_overflow((size_t)c, (size_t)h, &chw) || __builtin_mul_overflow(chw, (size_t)w, &chw) ||
        __builtin_mul_overflow(chw, (size_t)n, &total) || total > BF_MAX_DATASET_BYTES)
        return bf_err_set(err, "dataset of %d images of %dx%dx%d exceeds the %zu-byte limit", (int)n,
                          (int)c, (int)h, (int)w, (size_t)BF_MAX_DATASET_BYTES);
    /* calloc(0) may return NULL; keep at least one byte so a non-NULL buffer always means success. */
    uint8_t *px = calloc(total ? total : 1, 1);
    uint8_t *lb = calloc(n ? (size_t)n : 1, 1);
    if (!px || !lb) {
        free(px);
        free(lb);
        return bf_err_set(err, "out of memory allocating %zu bytes for %d images", total, (int)n);
    }
    out->n = n;
    out->c = c;
    out->h = h;
    out->w = w;
    out->pixels = px;
    out->labels = lb;
    out->classes = classes;
    for (int32_t k = 0; k < classes; k++) snprintf(out->class_names[k], BF_MAX_CLASS_NAME, "%d", (int)k);
    return 0;
}

void bf_dataset_free(bf_dataset_t *d) {
    if (!d) return;
    free(d->pixels);
    free(d->labels);
    memset(d, 0, sizeof *d);
}

int bf_dataset_subset(const bf_dataset_t *src, const int32_t *idx, int32_t n, bf_dataset_t *out,
                      bf_err_t *err) {
    memset(out, 0, sizeof *out);
    if (n < 0) return bf_err_set(err, "subset: negative size %d", (int)n);
    /* Validate every index before allocating so a bad index leaves *out empty. */
    for (int32_t i = 0; i < n; i++)
        if (idx[i] < 0 || idx[i] >= src->n)
            return bf_err_set(err, "subset: index %d at position %d out of range [0, %d)", (int)idx[i],
                              (int)i, (int)src->n);
    if (bf_dataset_alloc(out, n, src->c, src->h, src->w, src->classes, err)) return -1;
    size_t chw = (size_t)src->c * src->h * src->w;
    for (int32_t i = 0; i < n; i++) {
        memcpy(out->pixels + (size_t)i * chw, src->pixels + (size_t)idx[i] * chw, chw);
        out->labels[i] = src->labels[idx[i]];
    }
    memcpy(out->class_names, src->class_names, sizeof out->class_names);
    return 0;
}

/* ---- statistics ---- */

/* One 256-bin histogram per channel makes the sums exact integers; mean and variance then come
 * from the histogram in double precision (two passes over 256 bins, no cancellation). */
void bf_dataset_channel_stats(const bf_dataset_t *d, float *mean, float *std) {
    size_t hw = (size_t)d->h * d->w, chw = hw * d->c;
    for (int32_t ch = 0; ch < d->c; ch++) {
        uint64_t hist[256] = {0};
        for (int32_t i = 0; i < d->n; i++) {
            const uint8_t *p = d->pixels + (size_t)i * chw + (size_t)ch * hw;
            for (size_t k = 0; k < hw; k++) hist[p[k]]++;
        }
        double cnt = (double)d->n * (double)hw, m = 0, v = 0;
        if (cnt > 0) {
            for (int b = 0; b < 256; b++) m += (double)hist[b] * (b / 255.0);
            m /= cnt;
            for (int b = 0; b < 256; b++) v += (double)hist[b] * (b / 255.0 - m) * (b / 255.0 - m);
            v /= cnt;
        }
        mean[ch] = (float)m;
        std[ch] = (float)sqrt(v);
    }
}

/* ---- batches ---- */

/* The documented formula, in one place so the table and the direct path agree bit for bit. */
static inline float norm_px(int p, float m, float s) { return ((float)p / 255.0f - m) / s; }

/* Channels up to this count get a 256-entry lookup table on the stack (no allocation); more
 * channels fall back to the formula per pixel. */
#define LUT_MAX_C 4

typedef struct {
    int dy, dx, flip; /* crop offset into the padded image (0..8) and horizontal flip */
} aug_t;

#define AUG_PAD 4

/* Drawn in a fixed order (top, left, flip) so a seeded run is reproducible; like torchvision's
 * RandomCrop(padding=4) + RandomHorizontalFlip, padding is value 0 in pixel space, i.e. the
 * padded border normalizes to (0 - mean) / std. */
static aug_t aug_draw(bf_rng_t *r) {
    aug_t a;
    a.dy = (int)bf_rng_below(r, 2 * AUG_PAD + 1);
    a.dx = (int)bf_rng_below(r, 2 * AUG_PAD + 1);
    a.flip = (int)bf_rng_below(r, 2);
    return a;
}

/* One channel plane of one image: out(y,x) = padded(y+dy, x'+dx) with x' = flip ? w-1-x : x,
 * where padded(py,px) = src(py-4, px-4) inside the image and 0 outside. */
static void fill_plane(const uint8_t *src, int h, int w, const aug_t *a, const float *lut, float m,
                       float s, float *dst) {
    float zero = lut ? lut[0] : norm_px(0, m, s);
    for (int y = 0; y < h; y++) {
        int sy = a ? y + a->dy - AUG_PAD : y;
        float *row = dst + (size_t)y * w;
        if (sy < 0 || sy >= h) {
            for (int x = 0; x < w; x++) row[x] = zero;
            continue;
        }
        const uint8_t *srow = src + (size_t)sy * w;
        for (int x = 0; x < w; x++) {
            int xx = a && a->flip ? w - 1 - x : x;
            int sx = a ? xx + a->dx - AUG_PAD : xx;
            row[x] = sx < 0 || sx >= w ? zero : lut ? lut[srow[sx]] : norm_px(srow[sx], m, s);
        }
    }
}

void bf_batch_fill(const bf_dataset_t *d, const int32_t *idx, int32_t n, const float *mean,
                   const float *std, bf_rng_t *aug, float *x, int32_t *y) {
    int c = d->c, h = d->h, w = d->w;
    size_t hw = (size_t)h * w, chw = hw * c;
    float lut[LUT_MAX_C][256];
    int use_lut = c <= LUT_MAX_C;
    if (use_lut)
        for (int ch = 0; ch < c; ch++)
            for (int p = 0; p < 256; p++) lut[ch][p] = norm_px(p, mean[ch], std[ch]);
    for (int32_t i = 0; i < n; i++) {
        /* idx[i] must be in [0, d->n): this runs every step and has no error path. */
        const uint8_t *src = d->pixels + (size_t)idx[i] * chw;
        aug_t a;
        if (aug) a = aug_draw(aug);
        for (int ch = 0; ch < c; ch++)
            fill_plane(src + ch * hw, h, w, aug ? &a : NULL, use_lut ? lut[ch] : NULL, mean[ch], std[ch],
                       x + (size_t)i * chw + ch * hw);
        if (y) y[i] = d->labels[idx[i]];
    }
}

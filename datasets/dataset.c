/* dataset.c: the in-memory dataset (allocation, subsets, statistics, batches) and the format
 * detection behind bf_dataset_load. The readers live in idx.c, cifar.c, imgfolder.c, image.c. */
#include "bf_datasets.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>

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

/* ---- format detection ---- */

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* Sets buf to "dir/name"; fails (rather than truncating) when the path is too long. */
static int join(char *buf, size_t cap, const char *dir, const char *name, bf_err_t *err) {
    int k = snprintf(buf, cap, "%s/%s", dir, name);
    if (k < 0 || (size_t)k >= cap) return bf_err_set(err, "%s/%s: path too long", dir, name);
    return 0;
}

/* Finds NAME or NAME.gz in dir; 1 found (path in buf), 0 not found, -1 error. */
static int find_idx_file(const char *dir, const char *name, char *buf, size_t cap, bf_err_t *err) {
    char gz[256];
    snprintf(gz, sizeof gz, "%s.gz", name);
    if (join(buf, cap, dir, gz, err)) return -1;
    if (is_file(buf)) return 1;
    if (join(buf, cap, dir, name, err)) return -1;
    return is_file(buf);
}

/* 1 when IDX files for the split exist (loaded into out), 0 when absent, -1 on error. */
static int try_idx(const char *dir, const char *split, bf_dataset_t *out, bf_err_t *err) {
    const char *pre = strcmp(split, "train") == 0 ? "train" : "t10k";
    char iname[64], lname[64], ipath[4096], lpath[4096];
    snprintf(iname, sizeof iname, "%s-images-idx3-ubyte", pre);
    snprintf(lname, sizeof lname, "%s-labels-idx1-ubyte", pre);
    int fi = find_idx_file(dir, iname, ipath, sizeof ipath, err);
    if (fi <= 0) return fi;
    int fl = find_idx_file(dir, lname, lpath, sizeof lpath, err);
    if (fl < 0) return -1;
    if (fl == 0) return bf_err_set(err, "%s: found %s but no %s[.gz] next to it", dir, iname, lname);
    return bf_idx_load(ipath, lpath, out, err) ? -1 : 1;
}

/* CIFAR-10 batches in dir or dir/cifar-10-batches-bin/. For train all five batches must be
 * there: silently training on part of the data would be worse than an error. */
static int try_cifar_in(const char *dir, const char *split, bf_dataset_t *out, bf_err_t *err) {
    char paths[5][4096];
    const char *ptrs[5];
    int nf = strcmp(split, "train") == 0 ? 5 : 1;
    for (int k = 0; k < nf; k++) {
        char name[32];
        if (nf == 1)
            snprintf(name, sizeof name, "test_batch.bin");
        else
            snprintf(name, sizeof name, "data_batch_%d.bin", k + 1);
        if (join(paths[k], sizeof paths[k], dir, name, err)) return -1;
        ptrs[k] = paths[k];
        if (!is_file(paths[k])) {
            if (k == 0) return 0;
            return bf_err_set(err, "%s: CIFAR-10 batch missing (found %s)", paths[k], paths[0]);
        }
    }
    return bf_cifar10_load(ptrs, nf, out, err) ? -1 : 1;
}

static int try_cifar(const char *dir, const char *split, bf_dataset_t *out, bf_err_t *err) {
    int r = try_cifar_in(dir, split, out, err);
    if (r) return r;
    char sub[4096];
    if (join(sub, sizeof sub, dir, "cifar-10-batches-bin", err)) return -1;
    return is_dir(sub) ? try_cifar_in(sub, split, out, err) : 0;
}

/* Whether dir has a visible sub-folder (a candidate class folder). */
static int has_subdir(const char *dir) {
    DIR *dp = opendir(dir);
    if (!dp) return 0;
    int found = 0;
    struct dirent *e;
    char p[4096];
    while (!found && (e = readdir(dp)) != NULL)
        if (e->d_name[0] != '.' && join(p, sizeof p, dir, e->d_name, NULL) == 0) found = is_dir(p);
    closedir(dp);
    return found;
}

/* DIR/SPLIT/CLASS/FILE first; else DIR/CLASS/FILE for either split, unless DIR is split into train/
 * and test/ folders and just the requested one is missing (then "test" is not a class). */
static int try_folder(const char *dir, const char *split, int c, int h, int w, bf_dataset_t *out,
                      bf_err_t *err) {
    char sub[4096];
    if (join(sub, sizeof sub, dir, split, err)) return -1;
    if (is_dir(sub)) return bf_imgfolder_load(sub, c, h, w, out, err) ? -1 : 1;
    const char *other = strcmp(split, "train") == 0 ? "test" : "train";
    if (join(sub, sizeof sub, dir, other, err)) return -1;
    if (is_dir(sub)) return bf_err_set(err, "%s: has a %s/ folder but no %s/ folder", dir, other, split);
    if (!has_subdir(dir))
        return bf_err_set(err,
                          "%s: no dataset found for split %s (no IDX files %s-images-idx3-ubyte[.gz], no "
                          "CIFAR-10 batches, no image class folders)",
                          dir, split, strcmp(split, "train") == 0 ? "train" : "t10k");
    return bf_imgfolder_load(dir, c, h, w, out, err) ? -1 : 1;
}

/* Brings an IDX or CIFAR set to the caller's shape when one was asked for. */
static int fit_shape(bf_dataset_t *d, int c, int h, int w, bf_err_t *err) {
    if ((c == 0 || c == d->c) && (h == 0 || h == d->h) && (w == 0 || w == d->w)) return 0;
    if (bf_dataset_convert(d, c, h, w, err)) {
        bf_dataset_free(d);
        return -1;
    }
    return 0;
}

int bf_dataset_load(const char *dir, const char *split, int c, int h, int w, bf_dataset_t *out,
                    bf_err_t *err) {
    memset(out, 0, sizeof *out);
    if (!split || (strcmp(split, "train") != 0 && strcmp(split, "test") != 0))
        return bf_err_set(err, "unknown split \"%s\" (expected \"train\" or \"test\")", split ? split : "(null)");
    if (c != 0 && c != 1 && c != 3) return bf_err_set(err, "unsupported channel count %d (expected 1 or 3)", c);
    if (h < 0 || w < 0 || h > BF_MAX_IMAGE_SIDE || w > BF_MAX_IMAGE_SIDE)
        return bf_err_set(err, "unsupported image size %dx%d", h, w);
    struct stat st;
    if (stat(dir, &st) != 0) return bf_err_set(err, "%s: %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode)) return bf_err_set(err, "%s: not a directory", dir);
    int r = try_idx(dir, split, out, err);
    if (r == 0) r = try_cifar(dir, split, out, err);
    if (r > 0) return fit_shape(out, c, h, w, err);
    if (r < 0) return -1;
    return try_folder(dir, split, c, h, w, out, err) < 0 ? -1 : 0;
}

/* idx.c: the IDX format of MNIST / Fashion-MNIST, plain or gzip-compressed.
 *
 * Layout: magic 00 00 08 D (unsigned bytes, D dimensions), D big-endian uint32 sizes, then the
 * data. Images are 0x00000803 (count, rows, cols), labels 0x00000801 (count). zlib's gzread reads
 * both compressed and plain files, so one code path serves both. The decompressed size is unknown
 * until the data has been read, so the pixel buffer grows with the bytes actually delivered
 * (doubling, capped at the declared size) instead of trusting the header's count. */
#include "bf_datasets.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#define IDX_CLASSES 10
#define IDX_MAGIC_IMAGES 0x00000803u
#define IDX_MAGIC_LABELS 0x00000801u
/* gzread takes an unsigned int length; large chunks keep the load well under a second. */
#define IDX_CHUNK (16u << 20)

static const char *const fashion_names[IDX_CLASSES] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                       "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

typedef struct {
    gzFile f;
    const char *path;
    uint32_t dims[3];
} idx_file_t;

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Reads up to n bytes; returns the count delivered (short only at end of data or on error). */
static size_t gz_read_upto(gzFile f, uint8_t *buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        size_t want = n - got < IDX_CHUNK ? n - got : IDX_CHUNK;
        int r = gzread(f, buf + got, (unsigned)want);
        if (r <= 0) break;
        got += (size_t)r;
    }
    return got;
}

/* The zlib error text when the stream is damaged (bad deflate data, CRC, early end), else NULL.
 * zlib prefixes it with "path: ", which our messages already carry. */
static const char *gz_problem(gzFile f, const char *path) {
    int errnum = Z_OK;
    const char *m = gzerror(f, &errnum);
    if (errnum == Z_OK || errnum == Z_STREAM_END) return NULL;
    size_t pl = strlen(path);
    return strncmp(m, path, pl) == 0 && strncmp(m + pl, ": ", 2) == 0 ? m + pl + 2 : m;
}

static int is_early_end(const char *zp) { return zp && strstr(zp, "unexpected end") != NULL; }

static int idx_open(const char *path, uint32_t magic, int ndims, idx_file_t *ix, bf_err_t *err) {
    memset(ix, 0, sizeof *ix);
    ix->path = path;
    errno = 0;
    ix->f = gzopen(path, "rb");
    if (!ix->f) return bf_err_set(err, "%s: cannot open: %s", path, errno ? strerror(errno) : "gzopen failed");
    gzbuffer(ix->f, 1u << 18);
    uint8_t hdr[16];
    size_t want = 4 + 4 * (size_t)ndims, got = gz_read_upto(ix->f, hdr, want);
    const char *zp = gz_problem(ix->f, path);
    if (zp && !is_early_end(zp)) return bf_err_set(err, "%s: corrupt gzip data: %s", path, zp);
    if (got < want) return bf_err_set(err, "%s: truncated header: %zu of %zu bytes present", path, got, want);
    uint32_t m = be32(hdr);
    if (m != magic)
        return bf_err_set(err, "%s: bad magic 0x%08x: expected 0x%08x (IDX %s file)", path, m, magic,
                          magic == IDX_MAGIC_IMAGES ? "image" : "label");
    for (int k = 0; k < ndims; k++) ix->dims[k] = be32(hdr + 4 + 4 * k);
    return 0;
}

static void idx_close(idx_file_t *ix) {
    if (ix->f) gzclose(ix->f);
    ix->f = NULL;
}

/* Reads exactly `expected` body bytes into a new buffer; *got reports how many were present when
 * the file is short (the caller words the error, since it knows what the bytes mean). Returns 0
 * with *buf set when complete, 1 when short (no buffer), -1 on a damaged stream or trailing data. */
static int idx_read_body(idx_file_t *ix, size_t expected, uint8_t **buf, size_t *got, bf_err_t *err) {
    *buf = NULL;
    *got = 0;
    struct stat st;
    size_t fsize = stat(ix->path, &st) == 0 ? (size_t)st.st_size : 0;
    /* Start from what the file could plausibly hold (compressed size × 8), never the header's word. */
    size_t cap = fsize < ((size_t)1 << 17) ? (size_t)1 << 20 : fsize * 8;
    if (cap > expected) cap = expected;
    uint8_t *b = malloc(cap ? cap : 1);
    if (!b) return bf_err_set(err, "%s: out of memory", ix->path);
    size_t n = 0;
    for (;;) {
        n += gz_read_upto(ix->f, b + n, cap - n);
        if (n < cap || cap == expected) break;
        size_t ncap = cap * 2 < expected ? cap * 2 : expected;
        uint8_t *nb = realloc(b, ncap);
        if (!nb) {
            free(b);
            return bf_err_set(err, "%s: out of memory", ix->path);
        }
        b = nb;
        cap = ncap;
    }
    *got = n;
    uint8_t extra;
    int more = n == expected ? gzread(ix->f, &extra, 1) : 0;
    const char *zp = gz_problem(ix->f, ix->path);
    if (zp && !(n < expected && is_early_end(zp))) {
        free(b);
        return bf_err_set(err, "%s: corrupt gzip data after %zu bytes: %s", ix->path, n, zp);
    }
    if (more > 0) {
        free(b);
        return bf_err_set(err, "%s: trailing data after the %zu bytes the header declares", ix->path, expected);
    }
    if (n < expected) {
        free(b);
        return 1;
    }
    *buf = b;
    return 0;
}

static int check_image_dims(const idx_file_t *ix, bf_err_t *err) {
    uint32_t n = ix->dims[0], h = ix->dims[1], w = ix->dims[2];
    if (n == 0) return bf_err_set(err, "%s: header declares 0 images", ix->path);
    if (n > INT32_MAX) return bf_err_set(err, "%s: header declares %u images (limit %d)", ix->path, n, INT32_MAX);
    if (h == 0 || w == 0 || h > BF_MAX_IMAGE_SIDE || w > BF_MAX_IMAGE_SIDE ||
        (uint64_t)h * w > BF_MAX_IMAGE_PIXELS)
        return bf_err_set(err, "%s: unsupported image size %ux%u (limit %d per side, %u pixels)", ix->path, h, w,
                          BF_MAX_IMAGE_SIDE, BF_MAX_IMAGE_PIXELS);
    if ((uint64_t)n * h * w > BF_MAX_DATASET_BYTES)
        return bf_err_set(err, "%s: header declares %u images of %ux%u, more than the %zu-byte limit", ix->path, n,
                          h, w, (size_t)BF_MAX_DATASET_BYTES);
    return 0;
}

static int check_labels(const char *path, const uint8_t *lb, size_t n, bf_err_t *err) {
    for (size_t i = 0; i < n; i++)
        if (lb[i] >= IDX_CLASSES)
            return bf_err_set(err, "%s: label %u at index %zu out of range (expected 0..%d)", path, lb[i], i,
                              IDX_CLASSES - 1);
    return 0;
}

/* Whether the name of the folder holding path contains "fashion" (any case). Only that folder:
 * a build directory somewhere up the path must not rename the classes. */
static int in_fashion_dir(const char *path) {
    const char *end = strrchr(path, '/');
    while (end && end > path && end[-1] == '/') end--; /* "dir//file" */
    if (!end || end == path) return 0;
    const char *beg = end;
    while (beg > path && beg[-1] != '/') beg--;
    char name[256];
    size_t len = (size_t)(end - beg) < sizeof name - 1 ? (size_t)(end - beg) : sizeof name - 1;
    memcpy(name, beg, len);
    name[len] = 0;
    return strcasestr(name, "fashion") != NULL;
}

static void set_names(bf_dataset_t *d, const char *images_path) {
    int fashion = in_fashion_dir(images_path);
    for (int k = 0; k < IDX_CLASSES; k++) {
        if (fashion)
            snprintf(d->class_names[k], BF_MAX_CLASS_NAME, "%s", fashion_names[k]);
        else
            snprintf(d->class_names[k], BF_MAX_CLASS_NAME, "%d", k);
    }
}

/* Headers of both files first (cheap, and a mismatch needs no pixel read), then the bodies. */
static int idx_load2(idx_file_t *im, idx_file_t *lb, bf_dataset_t *out, bf_err_t *err) {
    if (check_image_dims(im, err)) return -1;
    uint32_t n = im->dims[0], h = im->dims[1], w = im->dims[2];
    if (lb->dims[0] != n)
        return bf_err_set(err, "%s: %u labels but %s has %u images", lb->path, lb->dims[0], im->path, n);
    size_t npx = (size_t)n * h * w, got;
    uint8_t *px = NULL, *lab = NULL;
    int r = idx_read_body(im, npx, &px, &got, err);
    if (r > 0)
        return bf_err_set(err, "%s: truncated: header says %u images of %ux%u but %zu bytes of pixel data present "
                          "(%zu expected)", im->path, n, h, w, got, npx);
    if (r < 0) return -1;
    r = idx_read_body(lb, n, &lab, &got, err);
    if (r > 0) bf_err_set(err, "%s: truncated: header says %u labels but %zu present", lb->path, n, got);
    if (r != 0 || check_labels(lb->path, lab, n, err)) {
        free(px);
        free(lab);
        return -1;
    }
    out->n = (int32_t)n;
    out->c = 1;
    out->h = (int32_t)h;
    out->w = (int32_t)w;
    out->pixels = px;
    out->labels = lab;
    out->classes = IDX_CLASSES;
    set_names(out, im->path);
    return 0;
}

int bf_idx_load(const char *images_path, const char *labels_path, bf_dataset_t *out, bf_err_t *err) {
    memset(out, 0, sizeof *out);
    idx_file_t im, lb;
    memset(&lb, 0, sizeof lb);
    int r = idx_open(images_path, IDX_MAGIC_IMAGES, 3, &im, err);
    if (r == 0) r = idx_open(labels_path, IDX_MAGIC_LABELS, 1, &lb, err);
    if (r == 0) r = idx_load2(&im, &lb, out, err);
    idx_close(&im);
    idx_close(&lb);
    if (r) memset(out, 0, sizeof *out);
    return r;
}

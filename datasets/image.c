/* image.c: decoding single images through stb_image, channel conversion and bilinear resizing,
 * shared by the image-folder reader and bf_dataset_convert.
 *
 * Conversion order: channels first (at the source resolution), then each plane is resized.
 *  - RGB(A) -> gray: ITU-R BT.601 luma with PIL's integer rounding,
 *      Y = (19595 R + 38470 G + 7471 B + 32768) >> 16   (the weights sum to 65536);
 *  - gray -> RGB: replication; alpha channels are dropped (not composited), as PIL's convert does.
 *  - resize: bilinear with pixel centres aligned (PyTorch interpolate(align_corners=False),
 *    torchvision bilinear without antialias). For output row y of H_out from H_in rows:
 *      sy = clamp((y + 0.5) * H_in / H_out - 0.5, 0, H_in - 1),  y0 = floor(sy),
 *      y1 = min(y0 + 1, H_in - 1),  fy = sy - y0,   and the same along x; then
 *      v = (1-fy) * ((1-fx) p[y0][x0] + fx p[y0][x1]) + fy * ((1-fx) p[y1][x0] + fx p[y1][x1]),
 *    computed in double and rounded half up: out = floor(v + 0.5). Downscaling does not
 *    antialias (like torchvision with antialias=False). */
#include "bf_datasets.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Only the formats we document: less attack surface in a decoder that sees untrusted files. We
 * read files ourselves (size-checked), so stb's stdio entry points are not compiled. */
#define STB_IMAGE_IMPLEMENTATION
#define STBI_NO_STDIO
#define STBI_FAILURE_USERMSG
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_ONLY_BMP
#define STBI_ONLY_GIF
#define STBI_ONLY_PNM
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wtype-limits"
#include <stb_image.h>
#pragma GCC diagnostic pop

#define IMAGE_FILE_MAX BF_IMAGE_FILE_MAX

/* ---- pixel conversion ---- */

static inline uint8_t luma(int r, int g, int b) { return (uint8_t)((19595 * r + 38470 * g + 7471 * b + 32768) >> 16); }

/* np pixels with sc channels at src (channel k of pixel i at src[i*pstride + k*cstride]) to dc
 * planes of np bytes at dst. sc 1/2 is gray(+alpha), 3/4 is RGB(+alpha). */
static void to_planes(const uint8_t *src, int sc, size_t np, size_t cstride, size_t pstride, int dc,
                      uint8_t *dst) {
    for (size_t i = 0; i < np; i++) {
        const uint8_t *p = src + i * pstride;
        if (dc == 1)
            dst[i] = sc >= 3 ? luma(p[0], p[cstride], p[2 * cstride]) : p[0];
        else
            for (int ch = 0; ch < 3; ch++) dst[(size_t)ch * np + i] = sc >= 3 ? p[(size_t)ch * cstride] : p[0];
    }
}

/* Source coordinate of output index o along an axis of in -> out samples (formula above). */
static inline void src_coord(int o, int in, int out, int *i0, int *i1, double *f) {
    double s = (o + 0.5) * ((double)in / out) - 0.5;
    if (s < 0) s = 0;
    if (s > in - 1) s = in - 1;
    *i0 = (int)s;
    *i1 = *i0 + 1 < in ? *i0 + 1 : in - 1;
    *f = s - *i0;
}

/* The x coordinates are the same for every row, plane and image of a conversion: computed once. */
typedef struct {
    int *x0, *x1;
    double *fx;
} xmap_t;

static int xmap_init(xmap_t *m, int iw, int ow) {
    m->x0 = malloc(sizeof *m->x0 * (size_t)ow);
    m->x1 = malloc(sizeof *m->x1 * (size_t)ow);
    m->fx = malloc(sizeof *m->fx * (size_t)ow);
    if (!m->x0 || !m->x1 || !m->fx) return -1;
    for (int x = 0; x < ow; x++) src_coord(x, iw, ow, &m->x0[x], &m->x1[x], &m->fx[x]);
    return 0;
}

static void xmap_free(xmap_t *m) {
    free(m->x0);
    free(m->x1);
    free(m->fx);
}

static void resize_plane(const uint8_t *src, int ih, int iw, uint8_t *dst, int oh, int ow, const xmap_t *xm) {
    for (int y = 0; y < oh; y++) {
        int y0, y1;
        double fy;
        src_coord(y, ih, oh, &y0, &y1, &fy);
        const uint8_t *r0 = src + (size_t)y0 * iw, *r1 = src + (size_t)y1 * iw;
        for (int x = 0; x < ow; x++) {
            int x0 = xm->x0[x], x1 = xm->x1[x];
            double fx = xm->fx[x];
            double v = (1 - fy) * ((1 - fx) * r0[x0] + fx * r0[x1]) + fy * ((1 - fx) * r1[x0] + fx * r1[x1]);
            int q = (int)(v + 0.5);
            dst[(size_t)y * ow + x] = (uint8_t)(q > 255 ? 255 : q < 0 ? 0 : q);
        }
    }
}

/* One image to dc×oh×ow planes at dst. When the size changes, xm maps the columns and tmp holds
 * dc*ih*iw bytes. Gray -> RGB resizes the single plane once and then replicates it. */
static void convert_image(const uint8_t *src, int sc, int ih, int iw, size_t cstride, size_t pstride, int dc,
                          int oh, int ow, const xmap_t *xm, uint8_t *tmp, uint8_t *dst) {
    size_t np = (size_t)ih * iw, onp = (size_t)oh * ow;
    if (ih == oh && iw == ow) {
        to_planes(src, sc, np, cstride, pstride, dc, dst);
        return;
    }
    int wc = dc == 3 && sc < 3 ? 1 : dc; /* planes that need resampling */
    to_planes(src, sc, np, cstride, pstride, wc, tmp);
    for (int ch = 0; ch < wc; ch++) resize_plane(tmp + ch * np, ih, iw, dst + ch * onp, oh, ow, xm);
    for (int ch = wc; ch < dc; ch++) memcpy(dst + ch * onp, dst, onp);
}

/* ---- limits ---- */

static int check_size(int w, int h, bf_err_t *err) {
    if (w < 1 || h < 1) return bf_err_set(err, "invalid image size %dx%d", w, h);
    if (w > BF_MAX_IMAGE_SIDE || h > BF_MAX_IMAGE_SIDE || (uint64_t)w * (uint64_t)h > BF_MAX_IMAGE_PIXELS)
        return bf_err_set(err, "image of %dx%d exceeds the size limit (%d per side, %u pixels)", w, h,
                          BF_MAX_IMAGE_SIDE, BF_MAX_IMAGE_PIXELS);
    return 0;
}

static int check_target(int c, int h, int w, bf_err_t *err) {
    if (c != 1 && c != 3) return bf_err_set(err, "unsupported target channel count %d (expected 1 or 3)", c);
    if (check_size(w, h, err)) return bf_err_prefix(err, "target size: ");
    return 0;
}

/* Width and height straight from a PNG's IHDR, for a clear message when stb rejects a header
 * whose size is absurd (stb then reports only "unknown type": it tries every format). */
static int png_ihdr_size(const uint8_t *b, size_t n, uint32_t *w, uint32_t *h) {
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (n < 24 || memcmp(b, sig, 8) != 0 || memcmp(b + 12, "IHDR", 4) != 0) return 0;
    *w = (uint32_t)b[16] << 24 | (uint32_t)b[17] << 16 | (uint32_t)b[18] << 8 | b[19];
    *h = (uint32_t)b[20] << 24 | (uint32_t)b[21] << 16 | (uint32_t)b[22] << 8 | b[23];
    return 1;
}

/* ---- decoding ---- */

int bf_image_info(const uint8_t *bytes, size_t n, int *w, int *h, int *c, bf_err_t *err) {
    if (n == 0) return bf_err_set(err, "empty image data");
    if (n > INT_MAX) return bf_err_set(err, "image data of %zu bytes is too large", n);
    uint32_t pw, ph;
    if (!stbi_info_from_memory(bytes, (int)n, w, h, c)) {
        if (png_ihdr_size(bytes, n, &pw, &ph) &&
            (pw > BF_MAX_IMAGE_SIDE || ph > BF_MAX_IMAGE_SIDE || (uint64_t)pw * ph > BF_MAX_IMAGE_PIXELS))
            return bf_err_set(err, "image of %ux%u exceeds the size limit (%d per side, %u pixels)", pw, ph,
                              BF_MAX_IMAGE_SIDE, BF_MAX_IMAGE_PIXELS);
        return bf_err_set(err, "cannot read image header (PNG/JPEG/BMP/GIF/PNM): %s", stbi_failure_reason());
    }
    if (*c < 1 || *c > 4) return bf_err_set(err, "unsupported channel count %d", *c);
    return 0;
}

int bf_image_decode(const uint8_t *bytes, size_t n, int c, int h, int w, uint8_t *out, bf_err_t *err) {
    int iw, ih, ic, dw, dh, dc;
    if (check_target(c, h, w, err)) return -1;
    /* Header first: the caps are checked before stb allocates anything for pixels. */
    if (bf_image_info(bytes, n, &iw, &ih, &ic, err) || check_size(iw, ih, err)) return -1;
    uint8_t *img = stbi_load_from_memory(bytes, (int)n, &dw, &dh, &dc, 0);
    if (!img) return bf_err_set(err, "cannot decode %dx%d image: %s", iw, ih, stbi_failure_reason());
    if (dw != iw || dh != ih || dc < 1 || dc > 4) {
        stbi_image_free(img);
        return bf_err_set(err, "decoder returned %dx%dx%d, header said %dx%dx%d", dw, dh, dc, iw, ih, ic);
    }
    uint8_t *tmp = NULL;
    xmap_t xm = {0};
    int resize = dh != h || dw != w;
    if (resize && (!(tmp = malloc((size_t)c * dh * dw)) || xmap_init(&xm, dw, w))) {
        free(tmp);
        xmap_free(&xm);
        stbi_image_free(img);
        return bf_err_set(err, "out of memory for a %dx%d image", dw, dh);
    }
    convert_image(img, dc, dh, dw, 1, (size_t)dc, c, h, w, &xm, tmp, out);
    free(tmp);
    xmap_free(&xm);
    stbi_image_free(img);
    return 0;
}

int bf_image_file_read(const char *path, uint8_t **buf, size_t *n, bf_err_t *err) {
    return bf_file_read(path, IMAGE_FILE_MAX, buf, n, err);
}

int bf_image_load(const char *path, int c, int h, int w, uint8_t *out, bf_err_t *err) {
    uint8_t *buf;
    size_t n;
    if (bf_image_file_read(path, &buf, &n, err)) return -1;
    int rc = bf_image_decode(buf, n, c, h, w, out, err);
    free(buf);
    return rc ? bf_err_prefix(err, "%s: ", path) : 0;
}

int bf_image_file_info(const char *path, int *w, int *h, int *c, bf_err_t *err) {
    uint8_t *buf;
    size_t n;
    if (bf_image_file_read(path, &buf, &n, err)) return -1;
    int rc = bf_image_info(buf, n, w, h, c, err);
    free(buf);
    return rc ? bf_err_prefix(err, "%s: ", path) : 0;
}

/* ---- whole datasets ---- */

int bf_dataset_convert(bf_dataset_t *d, int c, int h, int w, bf_err_t *err) {
    int nc = c ? c : d->c, nh = h ? h : d->h, nw = w ? w : d->w;
    if (nc == d->c && nh == d->h && nw == d->w) return 0;
    if (d->c < 1 || d->c > 4) return bf_err_set(err, "cannot convert a %d-channel dataset", (int)d->c);
    if (check_target(nc, nh, nw, err)) return -1;
    size_t ochw = (size_t)nc * nh * nw, ihw = (size_t)d->h * d->w, total;
    if (__builtin_mul_overflow(ochw, (size_t)d->n, &total) || total > BF_MAX_DATASET_BYTES)
        return bf_err_set(err, "converting %d images to %dx%dx%d exceeds the %zu-byte limit", (int)d->n, nc, nh, nw,
                          (size_t)BF_MAX_DATASET_BYTES);
    uint8_t *px = malloc(total ? total : 1), *tmp = malloc((size_t)nc * ihw);
    xmap_t xm = {0};
    if (!px || !tmp || xmap_init(&xm, d->w, nw)) {
        free(px);
        free(tmp);
        xmap_free(&xm);
        return bf_err_set(err, "out of memory converting %d images to %dx%dx%d", (int)d->n, nc, nh, nw);
    }
    for (int32_t i = 0; i < d->n; i++)
        convert_image(d->pixels + (size_t)i * d->c * ihw, d->c, d->h, d->w, ihw, 1, nc, nh, nw,
                      &xm, tmp, px + (size_t)i * ochw);
    free(tmp);
    xmap_free(&xm);
    free(d->pixels);
    d->pixels = px;
    d->c = nc;
    d->h = nh;
    d->w = nw;
    return 0;
}

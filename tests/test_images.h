/* test_images.h: encoded test images made in memory with stb_image_write (PNG, BMP) or by hand
 * (PGM), plus hostile ones (truncated, absurd header). Include in one file per test program. */
#ifndef BF_TEST_IMAGES_H
#define BF_TEST_IMAGES_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_WRITE_STATIC
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#include <stb_image_write.h>
#pragma GCC diagnostic pop

typedef struct {
    uint8_t *b;
    size_t n, cap;
} ti_buf_t;

static inline void ti_write(void *ctx, void *data, int size) {
    ti_buf_t *m = ctx;
    if (m->n + (size_t)size > m->cap) {
        size_t cap = (m->n + (size_t)size) * 2;
        uint8_t *g = realloc(m->b, cap);
        if (!g) return;
        m->b = g, m->cap = cap;
    }
    memcpy(m->b + m->n, data, (size_t)size);
    m->n += (size_t)size;
}

/* The federation tests' class pattern at w x h: a bright square in the class's quadrant (0..3)
 * on a dark background, `comp` interleaved channels, with a little seeded noise. */
static inline uint8_t *ti_pattern(int cls, int w, int h, int comp, uint32_t seed) {
    uint8_t *px = malloc((size_t)w * h * comp);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            int on = (y < h / 2) == (cls < 2) && (x < w / 2) == (cls % 2 == 0);
            seed = seed * 1664525u + 1013904223u;
            for (int c = 0; c < comp; c++) px[((size_t)y * w + x) * comp + c] = (uint8_t)((on ? 170 : 40) + (seed >> 26));
        }
    return px;
}

/* PNG (format 'p'), BMP ('b') or binary PGM ('g', comp must be 1) of the pattern; *n bytes,
 * malloc'ed. (No JPEG: stb's encoder trips UBSan; tests/fixtures/jpeg_fixtures.h has two.) */
static inline uint8_t *ti_encode(char format, int cls, int w, int h, int comp, uint32_t seed, size_t *n) {
    uint8_t *px = ti_pattern(cls, w, h, comp, seed);
    ti_buf_t m = {0};
    if (format == 'p') stbi_write_png_to_func(ti_write, &m, w, h, comp, px, w * comp);
    else if (format == 'b') stbi_write_bmp_to_func(ti_write, &m, w, h, comp, px);
    else {
        char hdr[64];
        int k = snprintf(hdr, sizeof hdr, "P5\n%d %d\n255\n", w, h);
        ti_write(&m, hdr, k);
        ti_write(&m, px, w * h);
    }
    free(px);
    *n = m.n;
    return m.b;
}

/* A 2x2 two-colour GIF89a (global palette black/white, one LZW-coded frame), written out by hand:
 * stb cannot write GIFs. */
static const uint8_t ti_gif[] = {'G', 'I', 'F', '8', '9', 'a', 2, 0, 2, 0, 0x80, 0, 0, 0, 0, 0, 255, 255, 255,
                                 ',', 0, 0, 0, 0, 2, 0, 2, 0, 0, 2, 3, 0x44, 0x34, 0x05, 0, ';'};

/* A PNG whose IHDR declares w x h (e.g. 100000 x 100000) over a tiny body: a decompression bomb's
 * header. Built from a real 1x1 PNG with the size fields patched (the CRC is then wrong too). */
static inline uint8_t *ti_png_header(uint32_t w, uint32_t h, size_t *n) {
    uint8_t *b = ti_encode('p', 0, 1, 1, 1, 1, n);
    uint8_t be[8] = {w >> 24, w >> 16, w >> 8, w, h >> 24, h >> 16, h >> 8, h};
    memcpy(b + 16, be, 8);
    return b;
}

#endif

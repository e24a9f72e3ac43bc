/* test_image.c: bf_image_decode on tiny generated PNG/BMP images with hand-computed expectations
 * (bilinear 2x2 -> 4x4, 4x4 -> 2x2, 3 -> 2; BT.601 luma; replication; alpha dropped); the size
 * caps on crafted headers; and the image-folder reader (sorting, hidden/unknown files, class
 * names, conversion, errors naming the bad file). */
#include <ftw.h>
#include <stdint.h>
#include <sys/stat.h>
#include <zlib.h>

#include "bf_datasets.h"
#include "test.h"

#include "test_images.h"

static char root[1024];

typedef struct {
    uint8_t b[1 << 16];
    size_t n;
} mem_t;

static void mem_write(void *ctx, void *data, int size) {
    mem_t *m = ctx;
    if (m->n + (size_t)size <= sizeof m->b) memcpy(m->b + m->n, data, (size_t)size);
    m->n += (size_t)size;
}

/* An image encoded in memory: PNG when png, else BMP. px is interleaved (HWC). */
static mem_t *encode(int png, int w, int h, int comp, const uint8_t *px) {
    mem_t *m = calloc(1, sizeof *m);
    int ok = png ? stbi_write_png_to_func(mem_write, m, w, h, comp, px, w * comp)
                 : stbi_write_bmp_to_func(mem_write, m, w, h, comp, px);
    CHECK(ok && m->n <= sizeof m->b);
    return m;
}

static void write_file(const char *path, const uint8_t *b, size_t n) {
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (!f) return;
    if (n) CHECK(fwrite(b, 1, n, f) == n);
    fclose(f);
}

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

/* A PNG signature + IHDR (valid CRC) + empty IDAT + IEND claiming w×h: only the header is real. */
static size_t craft_png(uint8_t *b, uint32_t w, uint32_t h, int color_type) {
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    memcpy(b, sig, 8);
    put_be32(b + 8, 13);
    memcpy(b + 12, "IHDR", 4);
    put_be32(b + 16, w);
    put_be32(b + 20, h);
    b[24] = 8, b[25] = (uint8_t)color_type, b[26] = 0, b[27] = 0, b[28] = 0;
    put_be32(b + 29, (uint32_t)crc32(0, b + 12, 17));
    size_t n = 33;
    const char *tail[2] = {"IDAT", "IEND"};
    for (int k = 0; k < 2; k++) {
        put_be32(b + n, 0);
        memcpy(b + n + 4, tail[k], 4);
        put_be32(b + n + 8, (uint32_t)crc32(0, b + n + 4, 4));
        n += 12;
    }
    return n;
}

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *f) {
    (void)st, (void)flag, (void)f;
    return remove(p);
}

static void fresh_dir(const char *p) {
    nftw(p, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    mkdir(p, 0755);
}

static void expect_err(int rc, const bf_err_t *e, const char *want) {
    CHECK(rc == -1);
    CHECK_MSG(strstr(e->msg, want) != NULL, "message \"%s\" lacks \"%s\"", e->msg, want);
    printf("  expected error: %s\n", e->msg);
}

/* ---- decoding ---- */

static const uint8_t GRAY2x2[4] = {10, 20, 30, 40};
/* By hand from the documented formula: source coordinates per output index are
 * 0 (clamped), 0.25, 0.75, 1 (clamped); rows interpolate to 10 12.5 17.5 20 / 30 32.5 37.5 40,
 * then down the columns, rounding halves up. */
static const uint8_t UP4x4[16] = {10, 13, 18, 20, 15, 18, 23, 25, 25, 28, 33, 35, 30, 33, 38, 40};

static void test_resize(void) {
    bf_err_t e = {{0}};
    uint8_t out[64];
    mem_t *m = encode(1, 2, 2, 1, GRAY2x2);
    int w, h, c;
    CHECK(bf_image_info(m->b, m->n, &w, &h, &c, &e) == 0 && w == 2 && h == 2 && c == 1);
    CHECK_MSG(bf_image_decode(m->b, m->n, 1, 4, 4, out, &e) == 0, "%s", e.msg);
    CHECK(memcmp(out, UP4x4, 16) == 0);
    for (int i = 0; i < 16; i++) printf("%d%c", out[i], i % 4 == 3 ? '\n' : ' ');
    /* Same size: an exact copy. */
    CHECK(bf_image_decode(m->b, m->n, 1, 2, 2, out, &e) == 0 && memcmp(out, GRAY2x2, 4) == 0);
    free(m);

    /* 4x4 -> 2x2: source coordinates 0.5 and 2.5, i.e. the mean of each 2x2 block. */
    const uint8_t g4[16] = {0, 10, 100, 101, 20, 31, 102, 104, 7, 7, 250, 255, 8, 9, 0, 1};
    m = encode(1, 4, 4, 1, g4);
    CHECK(bf_image_decode(m->b, m->n, 1, 2, 2, out, &e) == 0);
    CHECK(out[0] == 15 && out[1] == 102 && out[2] == 8 && out[3] == 127); /* 15.25 101.75 7.75 126.5 */
    free(m);

    /* 3 -> 2 wide: source x = 0.25 and 1.75 -> 25 and 175. */
    const uint8_t g3[3] = {0, 100, 200};
    m = encode(1, 3, 1, 1, g3);
    CHECK(bf_image_decode(m->b, m->n, 1, 1, 2, out, &e) == 0 && out[0] == 25 && out[1] == 175);
    free(m);
}

static void test_channels(void) {
    bf_err_t e = {{0}};
    uint8_t out[64];
    /* RGB -> gray with BT.601 (PIL's integer rounding): (255,0,0) -> 76, (0,255,0) -> 150,
     * (255,255,0) -> 226 (225.93: rounded, not truncated), (10,200,30) -> 124
     * (0.299*10 + 0.587*200 + 0.114*30 = 123.81). */
    const uint8_t rgb[12] = {255, 0, 0, 0, 255, 0, 255, 255, 0, 10, 200, 30};
    for (int png = 0; png < 2; png++) {
        mem_t *m = encode(png, 2, 2, 3, rgb);
        CHECK_MSG(bf_image_decode(m->b, m->n, 1, 2, 2, out, &e) == 0, "%s", e.msg);
        CHECK(out[0] == 76 && out[1] == 150 && out[2] == 226 && out[3] == 124);
        /* RGB stays RGB, as planes (NCHW). */
        CHECK(bf_image_decode(m->b, m->n, 3, 2, 2, out, &e) == 0);
        const uint8_t planes[12] = {255, 0, 255, 10, 0, 255, 255, 200, 0, 0, 0, 30};
        CHECK_MSG(memcmp(out, planes, 12) == 0, "%s", png ? "png" : "bmp");
        free(m);
    }
    /* Gray -> RGB replicates. */
    mem_t *m = encode(1, 2, 2, 1, GRAY2x2);
    CHECK(bf_image_decode(m->b, m->n, 3, 2, 2, out, &e) == 0);
    CHECK(memcmp(out, GRAY2x2, 4) == 0 && memcmp(out + 4, GRAY2x2, 4) == 0 && memcmp(out + 8, GRAY2x2, 4) == 0);
    free(m);
    /* RGBA -> RGB drops alpha; gray+alpha -> gray likewise. */
    const uint8_t rgba[8] = {1, 2, 3, 0, 4, 5, 6, 128};
    m = encode(1, 2, 1, 4, rgba);
    CHECK(bf_image_decode(m->b, m->n, 3, 1, 2, out, &e) == 0);
    CHECK(out[0] == 1 && out[1] == 4 && out[2] == 2 && out[3] == 5 && out[4] == 3 && out[5] == 6);
    free(m);
    const uint8_t ga[4] = {77, 0, 99, 255};
    m = encode(1, 2, 1, 2, ga);
    CHECK(bf_image_decode(m->b, m->n, 1, 1, 2, out, &e) == 0 && out[0] == 77 && out[1] == 99);
    free(m);
}

static void test_decode_errors(void) {
    bf_err_t e = {{0}};
    uint8_t out[64], buf[128];
    mem_t *m = encode(1, 4, 4, 3, (const uint8_t *)"0123456789abcdef0123456789abcdef0123456789abcdef");
    expect_err(bf_image_decode(m->b, m->n / 2, 3, 4, 4, out, &e), &e, "");
    expect_err(bf_image_decode(m->b, 0, 3, 4, 4, out, &e), &e, "empty");
    expect_err(bf_image_decode((const uint8_t *)"not an image at all", 19, 3, 4, 4, out, &e), &e, "header");
    expect_err(bf_image_decode(m->b, m->n, 2, 4, 4, out, &e), &e, "channel count 2");
    expect_err(bf_image_decode(m->b, m->n, 3, 0, 4, out, &e), &e, "target size: invalid image size 4x0");
    free(m);
    /* Hostile headers: stb refuses 100000x100000 RGB itself; gray 5000x5000 (25 Mpx) and 9000x1
     * pass stb's own checks and must be stopped by ours, before any pixel buffer exists. */
    size_t n = craft_png(buf, 100000, 100000, 2);
    int w, h, c;
    expect_err(bf_image_decode(buf, n, 3, 4, 4, out, &e), &e, "100000x100000 exceeds the size limit");
    n = craft_png(buf, 5000, 5000, 0);
    CHECK(bf_image_info(buf, n, &w, &h, &c, &e) == 0 && w == 5000 && h == 5000 && c == 1);
    expect_err(bf_image_decode(buf, n, 1, 4, 4, out, &e), &e, "exceeds the size limit");
    n = craft_png(buf, 9000, 1, 0);
    expect_err(bf_image_decode(buf, n, 1, 4, 4, out, &e), &e, "9000x1 exceeds the size limit");
}

/* Every truncation and every single-byte corruption of small PNG and BMP files: decode either
 * succeeds or fails with a message, never crashes (the sanitizer build checks memory safety). */
static void test_decode_mutations(void) {
    bf_err_t e = {{0}};
    uint8_t px[5 * 3 * 3], out[3 * 4 * 4];
    for (int i = 0; i < 45; i++) px[i] = (uint8_t)(i * 13);
    int failures = 0, no_msg = 0;
    for (int png = 0; png < 2; png++) {
        mem_t *m = encode(png, 5, 3, 3, px);
        uint8_t *copy = malloc(m->n);
        for (size_t cut = 0; cut < m->n; cut++) {
            memcpy(copy, m->b, cut);
            if (bf_image_decode(copy, cut, 3, 4, 4, out, &e)) failures++, no_msg += e.msg[0] == 0;
            e.msg[0] = 0;
        }
        for (size_t i = 0; i < m->n; i++)
            for (int bit = 0; bit < 8; bit += 3) {
                memcpy(copy, m->b, m->n);
                copy[i] ^= (uint8_t)(1u << bit);
                if (bf_image_decode(copy, m->n, 3, 4, 4, out, &e)) failures++, no_msg += e.msg[0] == 0;
                e.msg[0] = 0;
            }
        free(copy);
        free(m);
    }
    CHECK(failures > 50);
    CHECK_MSG(no_msg == 0, "%d failures without a message", no_msg);
}

/* ---- image folders ---- */

static void put(const char *dir, const char *name, const mem_t *m) {
    char p[1300];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    write_file(p, m ? m->b : NULL, m ? m->n : 0);
}

static void make_class(char *out, size_t cap, const char *dir, const char *name) {
    snprintf(out, cap, "%s/%s", dir, name);
    mkdir(out, 0755);
}

/* root/folder/{a_gray: g.png (2x2 gray); b_rgb: 2.png 1.png (4x4 RGB), .hidden.png, notes.txt,
 * c.bmp (2x2 RGB BMP)}. */
static void build_folder(const char *dir, const uint8_t *rgb44a, const uint8_t *rgb44b) {
    char cls[1200];
    fresh_dir(dir);
    make_class(cls, sizeof cls, dir, "a_gray");
    mem_t *m = encode(1, 2, 2, 1, GRAY2x2);
    put(cls, "g.png", m);
    free(m);
    make_class(cls, sizeof cls, dir, "b_rgb");
    m = encode(1, 4, 4, 3, rgb44a);
    put(cls, "2.png", m);
    free(m);
    m = encode(1, 4, 4, 3, rgb44b);
    put(cls, "1.PNG", m);
    put(cls, ".hidden.png", NULL); /* would fail to decode if read */
    put(cls, "notes.txt", NULL);
    free(m);
    const uint8_t rgb22[12] = {255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 200, 30};
    m = encode(0, 2, 2, 3, rgb22);
    put(cls, "c.bmp", m);
    free(m);
    make_class(cls, sizeof cls, dir, ".git"); /* hidden folder: not a class */
}

static void test_folder(void) {
    char dir[1100], cls[1200], p[1300];
    bf_err_t e = {{0}};
    bf_dataset_t d;
    uint8_t a[48], b[48];
    for (int i = 0; i < 48; i++) a[i] = (uint8_t)(i * 5), b[i] = (uint8_t)(200 - i * 3);
    snprintf(dir, sizeof dir, "%s/folder", root);
    build_folder(dir, a, b);

    CHECK_MSG(bf_imgfolder_load(dir, 3, 4, 4, &d, &e) == 0, "%s", e.msg);
    CHECK(d.n == 4 && d.c == 3 && d.h == 4 && d.w == 4 && d.classes == 2);
    CHECK(strcmp(d.class_names[0], "a_gray") == 0 && strcmp(d.class_names[1], "b_rgb") == 0);
    if (d.n == 4) {
        CHECK(d.labels[0] == 0 && d.labels[1] == 1 && d.labels[2] == 1 && d.labels[3] == 1);
        /* Image 0: the 2x2 gray upsampled and replicated. */
        for (int ch = 0; ch < 3; ch++) CHECK(memcmp(d.pixels + ch * 16, UP4x4, 16) == 0);
        /* Sorted by name (byte order): 1.PNG, 2.png, c.bmp. 1.PNG is b, as planes. */
        int ok1 = 1, ok2 = 1;
        for (int k = 0; k < 16; k++)
            for (int ch = 0; ch < 3; ch++) {
                ok1 &= d.pixels[48 + ch * 16 + k] == b[k * 3 + ch];
                ok2 &= d.pixels[96 + ch * 16 + k] == a[k * 3 + ch];
            }
        CHECK(ok1 && ok2);
        /* c.bmp: 2x2 -> 4x4; corners keep their values. */
        CHECK(d.pixels[144] == 255 && d.pixels[144 + 16 + 3] == 255 && d.pixels[144 + 32 + 15] == 30);
    }
    bf_dataset_free(&d);

    /* 0,0,0: shape of the first image (2x2 gray); RGB images become gray and shrink. */
    CHECK_MSG(bf_imgfolder_load(dir, 0, 0, 0, &d, &e) == 0, "%s", e.msg);
    CHECK(d.n == 4 && d.c == 1 && d.h == 2 && d.w == 2);
    if (d.n == 4) CHECK(memcmp(d.pixels, GRAY2x2, 4) == 0 && d.pixels[12] == 76 && d.pixels[15] == 124);
    bf_dataset_free(&d);

    /* bf_dataset_load: DIR/CLASS for either split, DIR/SPLIT/CLASS when split folders exist. */
    CHECK_MSG(bf_dataset_load(dir, "test", 1, 3, 3, &d, &e) == 0, "%s", e.msg);
    CHECK(d.n == 4 && d.c == 1 && d.h == 3 && d.w == 3);
    bf_dataset_free(&d);
    char split_root[1100], train[1200];
    snprintf(split_root, sizeof split_root, "%s/split", root);
    fresh_dir(split_root);
    snprintf(train, sizeof train, "%s/train", split_root);
    build_folder(train, a, b);
    CHECK_MSG(bf_dataset_load(split_root, "train", 3, 4, 4, &d, &e) == 0, "%s", e.msg);
    CHECK(d.n == 4 && d.classes == 2);
    bf_dataset_free(&d);
    expect_err(bf_dataset_load(split_root, "test", 3, 4, 4, &d, &e), &e, "no test/ folder");

    /* Errors name the offending file and leave the dataset empty. */
    snprintf(cls, sizeof cls, "%s/b_rgb", dir);
    mem_t *m = encode(1, 4, 4, 3, a);
    m->n /= 2;
    put(cls, "3_truncated.png", m);
    expect_err(bf_imgfolder_load(dir, 3, 4, 4, &d, &e), &e, "3_truncated.png");
    CHECK(d.n == 0 && d.pixels == NULL);
    snprintf(p, sizeof p, "%s/3_truncated.png", cls);
    remove(p);
    put(cls, "0_empty.png", NULL);
    expect_err(bf_imgfolder_load(dir, 3, 4, 4, &d, &e), &e, "0_empty.png: empty file");
    snprintf(p, sizeof p, "%s/0_empty.png", cls);
    remove(p);
    uint8_t buf[128];
    m->n = craft_png(m->b, 5000, 5000, 0);
    put(cls, "bomb.png", m);
    expect_err(bf_imgfolder_load(dir, 3, 4, 4, &d, &e), &e, "bomb.png: image of 5000x5000 exceeds the size limit");
    m->n = craft_png(buf, 100000, 100000, 2);
    memcpy(m->b, buf, m->n);
    put(cls, "bomb.png", m);
    expect_err(bf_imgfolder_load(dir, 3, 4, 4, &d, &e), &e, "bomb.png: image of 100000x100000 exceeds");
    free(m);
    CHECK(d.n == 0 && d.pixels == NULL);

    snprintf(p, sizeof p, "%s/noclasses", root);
    fresh_dir(p);
    expect_err(bf_imgfolder_load(p, 3, 4, 4, &d, &e), &e, "no class sub-folders");
    make_class(cls, sizeof cls, p, "only_text");
    put(cls, "x.txt", NULL);
    expect_err(bf_imgfolder_load(p, 3, 4, 4, &d, &e), &e, "no image files");
    expect_err(bf_imgfolder_load(p, 2, 4, 4, &d, &e), &e, "channel count 2");
}

/* bf_dataset_convert: the same conversion as decoding, applied to a whole dataset. */
static void test_convert(void) {
    bf_err_t e = {{0}};
    bf_dataset_t d;
    CHECK(bf_dataset_alloc(&d, 2, 1, 2, 2, 10, &e) == 0);
    memcpy(d.pixels, GRAY2x2, 4);
    memset(d.pixels + 4, 200, 4);
    CHECK(bf_dataset_convert(&d, 3, 4, 4, &e) == 0 && d.c == 3 && d.h == 4 && d.w == 4);
    CHECK(memcmp(d.pixels + 32, UP4x4, 16) == 0 && d.pixels[48] == 200 && d.pixels[95] == 200);
    CHECK(bf_dataset_convert(&d, 1, 0, 0, &e) == 0 && d.c == 1 && d.h == 4);
    CHECK(memcmp(d.pixels, UP4x4, 16) == 0); /* luma of equal R=G=B is the value itself */
    expect_err(bf_dataset_convert(&d, 2, 0, 0, &e), &e, "channel count");
    bf_dataset_free(&d);
}

int main(void) {
    snprintf(root, sizeof root, "%s/test_image", bf_test_tmpdir());
    fresh_dir(root);
    test_resize();
    test_channels();
    test_decode_errors();
    test_decode_mutations();
    test_folder();
    test_convert();
    return bf_test_done("test_image");
}

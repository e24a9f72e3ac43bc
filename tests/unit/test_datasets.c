/* test_datasets.c: the IDX and CIFAR-10 readers on small generated files, valid and corrupt
 * (every corrupt case must fail with a message naming the file and leave the dataset empty);
 * bf_dataset_load's format detection; subsets; channel statistics; batch normalization and the
 * seeded crop/flip augmentation, checked against an independent padded-copy reference. */
#include <ftw.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "bf_datasets.h"
#include "test.h"

static char root[1024];

/* ---- file helpers ---- */

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *f) {
    (void)st, (void)flag, (void)f;
    return remove(p);
}

static void fresh_dir(const char *p) {
    nftw(p, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    mkdir(p, 0755);
}

static const char *path_in(char *buf, size_t cap, const char *dir, const char *name) {
    snprintf(buf, cap, "%s/%s", dir, name);
    return buf;
}

static void write_file(const char *path, int gz, const uint8_t *b, size_t n) {
    if (gz) {
        gzFile f = gzopen(path, "wb");
        CHECK(f != NULL);
        if (!f) return;
        if (n) CHECK(gzwrite(f, b, (unsigned)n) == (int)n);
        CHECK(gzclose(f) == Z_OK);
    } else {
        FILE *f = fopen(path, "wb");
        CHECK(f != NULL);
        if (!f) return;
        if (n) CHECK(fwrite(b, 1, n, f) == n);
        fclose(f);
    }
}

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

/* IDX image file: magic, header dims (n, h, w), then `present` pixel bytes of pattern. */
static void write_idx_images(const char *path, int gz, uint32_t magic, uint32_t n, uint32_t h, uint32_t w,
                             size_t present) {
    uint8_t *b = malloc(16 + present);
    put_be32(b, magic);
    put_be32(b + 4, n);
    put_be32(b + 8, h);
    put_be32(b + 12, w);
    for (size_t i = 0; i < present; i++) b[16 + i] = (uint8_t)(i * 7 + 3);
    write_file(path, gz, b, 16 + present);
    free(b);
}

static void write_idx_labels(const char *path, int gz, uint32_t n, const uint8_t *labels, size_t present) {
    uint8_t *b = malloc(8 + present);
    put_be32(b, 0x00000801);
    put_be32(b + 4, n);
    memcpy(b + 8, labels, present);
    write_file(path, gz, b, 8 + present);
    free(b);
}

static int is_empty(const bf_dataset_t *d) {
    return d->n == 0 && d->pixels == NULL && d->labels == NULL && d->classes == 0;
}

/* A failing load: -1, a message containing `want` and the file name, and an empty dataset. */
static void expect_fail(int rc, const bf_dataset_t *d, const bf_err_t *e, const char *want, const char *file) {
    CHECK(rc == -1);
    CHECK(is_empty(d));
    CHECK_MSG(strstr(e->msg, want) != NULL, "message \"%s\" lacks \"%s\"", e->msg, want);
    if (file) CHECK_MSG(strstr(e->msg, file) != NULL, "message \"%s\" lacks file \"%s\"", e->msg, file);
    printf("  expected error: %s\n", e->msg);
}

/* ---- IDX ---- */

static const uint8_t LABELS5[5] = {3, 0, 9, 1, 4};

static void check_idx_content(const bf_dataset_t *d) {
    CHECK(d->n == 5 && d->c == 1 && d->h == 3 && d->w == 4 && d->classes == 10);
    int ok = 1;
    for (size_t i = 0; i < 60 && d->pixels; i++) ok &= d->pixels[i] == (uint8_t)(i * 7 + 3);
    CHECK(ok);
    CHECK(d->labels && memcmp(d->labels, LABELS5, 5) == 0);
}

static void test_idx_valid(void) {
    char dir[1100], ip[1200], lp[1200];
    bf_dataset_t d;
    bf_err_t e = {{0}};
    for (int gz = 0; gz < 2; gz++) {
        /* The gzipped copy lives in a "fashion" folder: Fashion-MNIST class names. */
        path_in(dir, sizeof dir, root, gz ? "Fashion_idx" : "digits_idx");
        fresh_dir(dir);
        path_in(ip, sizeof ip, dir, gz ? "imgs.gz" : "imgs");
        path_in(lp, sizeof lp, dir, gz ? "labels.gz" : "labels");
        write_idx_images(ip, gz, 0x803, 5, 3, 4, 60);
        write_idx_labels(lp, gz, 5, LABELS5, 5);
        CHECK_MSG(bf_idx_load(ip, lp, &d, &e) == 0, "%s", e.msg);
        check_idx_content(&d);
        CHECK(strcmp(d.class_names[0], gz ? "T-shirt/top" : "0") == 0);
        CHECK(strcmp(d.class_names[9], gz ? "Ankle boot" : "9") == 0);
        bf_dataset_free(&d);
        CHECK(is_empty(&d));
    }
}

static void test_idx_corrupt(void) {
    char dir[1100], ip[1200], lp[1200], gp[1200];
    bf_dataset_t d;
    bf_err_t e = {{0}};
    path_in(dir, sizeof dir, root, "idx_bad");
    fresh_dir(dir);
    path_in(ip, sizeof ip, dir, "train-images-idx3-ubyte");
    path_in(lp, sizeof lp, dir, "train-labels-idx1-ubyte");
    path_in(gp, sizeof gp, dir, "imgs.gz");
    write_idx_labels(lp, 0, 5, LABELS5, 5);

    write_idx_images(ip, 0, 0x802, 5, 3, 4, 60);
    expect_fail(bf_idx_load(ip, lp, &d, &e), &d, &e, "bad magic", "train-images-idx3-ubyte");
    write_idx_images(ip, 0, 0x803, 5, 3, 4, 55);
    expect_fail(bf_idx_load(ip, lp, &d, &e), &d, &e, "truncated", "train-images-idx3-ubyte");
    CHECK(strstr(e.msg, "5 images of 3x4") && strstr(e.msg, "55 bytes"));
    write_idx_images(ip, 0, 0x803, 5, 3, 4, 61);
    expect_fail(bf_idx_load(ip, lp, &d, &e), &d, &e, "trailing data", "train-images-idx3-ubyte");
    /* 2^31 images with 10 bytes present: rejected on the count alone. */
    write_idx_images(ip, 0, 0x803, 0x80000000u, 28, 28, 10);
    expect_fail(bf_idx_load(ip, lp, &d, &e), &d, &e, "2147483648 images", "train-images-idx3-ubyte");
    /* 5 million 28x28 images (3.9 GB, under the byte cap) with 10 bytes present: the buffer grows
     * with the data actually read, so this fails as truncated without a multi-GB allocation. */
    write_idx_images(ip, 0, 0x803, 5000000u, 28, 28, 10);
    write_idx_labels(lp, 0, 5000000u, LABELS5, 5);
    expect_fail(bf_idx_load(ip, lp, &d, &e), &d, &e, "truncated", "train-images-idx3-ubyte");
    write_idx_labels(lp, 0, 5, LABELS5, 5);
    write_idx_images(ip, 0, 0x803, 5, 0, 4, 0);
    expect_fail(bf_idx_load(ip, lp, &d, &e), &d, &e, "image size 0x4", NULL);
    write_idx_images(ip, 0, 0x803, 5, 100000, 100000, 10);
    expect_fail(bf_idx_load(ip, lp, &d, &e), &d, &e, "unsupported image size", NULL);
    write_file(ip, 0, (const uint8_t *)"\0\0\x08", 3);
    expect_fail(bf_idx_load(ip, lp, &d, &e), &d, &e, "truncated header", NULL);

    /* Count mismatch and label range, with a valid image file. */
    write_idx_images(ip, 0, 0x803, 5, 3, 4, 60);
    write_idx_labels(lp, 0, 4, LABELS5, 4);
    expect_fail(bf_idx_load(ip, lp, &d, &e), &d, &e, "4 labels but", "train-labels-idx1-ubyte");
    const uint8_t bad[5] = {1, 2, 10, 3, 4};
    write_idx_labels(lp, 0, 5, bad, 5);
    expect_fail(bf_idx_load(ip, lp, &d, &e), &d, &e, "label 10 at index 2", "train-labels-idx1-ubyte");
    write_idx_labels(lp, 0, 5, LABELS5, 3);
    expect_fail(bf_idx_load(ip, lp, &d, &e), &d, &e, "truncated", "train-labels-idx1-ubyte");
    write_idx_labels(lp, 0, 5, LABELS5, 5);
    CHECK(bf_idx_load(ip, lp, &d, &e) == 0);
    bf_dataset_free(&d);

    /* gzip: a stream cut in the middle, and one with damaged deflate data. */
    char big_ip[1200];
    path_in(big_ip, sizeof big_ip, dir, "big.gz");
    write_idx_images(big_ip, 1, 0x803, 5, 3, 4, 60);
    FILE *f = fopen(big_ip, "rb");
    uint8_t gzb[4096];
    size_t gn = f ? fread(gzb, 1, sizeof gzb, f) : 0;
    if (f) fclose(f);
    CHECK(gn > 30);
    write_file(gp, 0, gzb, gn / 2);
    expect_fail(bf_idx_load(gp, lp, &d, &e), &d, &e, "imgs.gz", NULL);
    for (size_t i = 12; i < gn - 8; i++) gzb[i] ^= 0x5a;
    write_file(gp, 0, gzb, gn);
    expect_fail(bf_idx_load(gp, lp, &d, &e), &d, &e, "corrupt gzip data", "imgs.gz");
    /* Every truncation and a flipped bit at every position of the gzipped file: a clean error
     * (or, for a flip zlib cannot see, a successful load), never a crash. */
    int fails = 0, silent = 0;
    for (size_t cut = 0; cut < gn; cut++) {
        write_idx_images(big_ip, 1, 0x803, 5, 3, 4, 60);
        FILE *g = fopen(big_ip, "rb");
        size_t k = g ? fread(gzb, 1, sizeof gzb, g) : 0;
        if (g) fclose(g);
        CHECK(k == gn);
        for (int mode = 0; mode < 2; mode++) {
            if (mode) gzb[cut] ^= 0x10;
            write_file(gp, 0, gzb, mode ? gn : cut);
            e.msg[0] = 0;
            if (bf_idx_load(gp, lp, &d, &e)) fails++, silent += e.msg[0] == 0 || !is_empty(&d);
            bf_dataset_free(&d);
        }
    }
    CHECK(fails > (int)gn);
    CHECK_MSG(silent == 0, "%d failures without a message or with a non-empty dataset", silent);
    /* Missing file. */
    path_in(gp, sizeof gp, dir, "nope");
    expect_fail(bf_idx_load(gp, lp, &d, &e), &d, &e, "cannot open", "nope");
}

/* ---- CIFAR-10 ---- */

/* nrec records; record r of file `salt` has label (r + salt) % 10 and pixels (r*31 + k + salt). */
static void write_cifar(const char *path, int nrec, int salt, int bad_label_at, size_t extra) {
    size_t sz = (size_t)nrec * 3073 + extra;
    uint8_t *b = calloc(sz ? sz : 1, 1);
    for (int r = 0; r < nrec; r++) {
        uint8_t *rec = b + (size_t)r * 3073;
        rec[0] = r == bad_label_at ? 10 : (uint8_t)((r + salt) % 10);
        for (int k = 0; k < 3072; k++) rec[1 + k] = (uint8_t)(r * 31 + k + salt);
    }
    write_file(path, 0, b, sz);
    free(b);
}

static int cifar_image_ok(const bf_dataset_t *d, int i, int r, int salt) {
    if (d->labels[i] != (r + salt) % 10) return 0;
    for (int k = 0; k < 3072; k++)
        if (d->pixels[(size_t)i * 3072 + k] != (uint8_t)(r * 31 + k + salt)) return 0;
    return 1;
}

static void test_cifar(void) {
    char dir[1100], p1[1200], p2[1200], mp[1200];
    bf_dataset_t d;
    bf_err_t e = {{0}};
    path_in(dir, sizeof dir, root, "cifar");
    fresh_dir(dir);
    path_in(p1, sizeof p1, dir, "data_batch_1.bin");
    path_in(p2, sizeof p2, dir, "data_batch_2.bin");
    write_cifar(p1, 3, 0, -1, 0);
    write_cifar(p2, 2, 5, -1, 0);
    const char *paths[2] = {p1, p2};
    CHECK_MSG(bf_cifar10_load(paths, 2, &d, &e) == 0, "%s", e.msg);
    CHECK(d.n == 5 && d.c == 3 && d.h == 32 && d.w == 32 && d.classes == 10);
    if (d.n == 5)
        CHECK(cifar_image_ok(&d, 0, 0, 0) && cifar_image_ok(&d, 2, 2, 0) && cifar_image_ok(&d, 3, 0, 5) &&
              cifar_image_ok(&d, 4, 1, 5));
    CHECK(strcmp(d.class_names[0], "airplane") == 0 && strcmp(d.class_names[9], "truck") == 0);
    bf_dataset_free(&d);

    /* batches.meta.txt as shipped: names one per line, CRLF tolerated, trailing blank lines. */
    path_in(mp, sizeof mp, dir, "batches.meta.txt");
    const char *meta = "a0\nb1\r\nc2\nd3\ne4\nf5\ng6\nh7\ni8\nj9 j\n\n\n";
    write_file(mp, 0, (const uint8_t *)meta, strlen(meta));
    CHECK_MSG(bf_cifar10_load(paths, 1, &d, &e) == 0, "%s", e.msg);
    CHECK(d.n == 3 && strcmp(d.class_names[1], "b1") == 0 && strcmp(d.class_names[9], "j9 j") == 0);
    bf_dataset_free(&d);
    write_file(mp, 0, (const uint8_t *)"x\ny\n", 4);
    expect_fail(bf_cifar10_load(paths, 1, &d, &e), &d, &e, "2 class names", "batches.meta.txt");
    remove(mp);

    write_cifar(p2, 2, 5, -1, 1);
    expect_fail(bf_cifar10_load(paths, 2, &d, &e), &d, &e, "not a multiple of the 3073-byte", "data_batch_2.bin");
    write_cifar(p2, 2, 5, 1, 0);
    expect_fail(bf_cifar10_load(paths, 2, &d, &e), &d, &e, "label 10 in record 1", "data_batch_2.bin");
    write_cifar(p2, 0, 0, -1, 0);
    expect_fail(bf_cifar10_load(paths, 2, &d, &e), &d, &e, "empty file", "data_batch_2.bin");
    expect_fail(bf_cifar10_load(paths, 0, &d, &e), &d, &e, "0 batch files", NULL);
}

/* ---- bf_dataset_load detection ---- */

static void test_detect(void) {
    char dir[1100], sub[1200], p[1300];
    bf_dataset_t d;
    bf_err_t e = {{0}};

    /* IDX, train gzipped and test plain, in a folder named like Fashion-MNIST. */
    path_in(dir, sizeof dir, root, "fashion-mnist");
    fresh_dir(dir);
    write_idx_images(path_in(p, sizeof p, dir, "train-images-idx3-ubyte.gz"), 1, 0x803, 5, 3, 4, 60);
    write_idx_labels(path_in(p, sizeof p, dir, "train-labels-idx1-ubyte.gz"), 1, 5, LABELS5, 5);
    write_idx_images(path_in(p, sizeof p, dir, "t10k-images-idx3-ubyte"), 0, 0x803, 2, 2, 2, 8);
    write_idx_labels(path_in(p, sizeof p, dir, "t10k-labels-idx1-ubyte"), 0, 2, LABELS5, 2);
    CHECK_MSG(bf_dataset_load(dir, "train", 0, 0, 0, &d, &e) == 0, "%s", e.msg);
    check_idx_content(&d);
    CHECK(strcmp(d.class_names[8], "Bag") == 0);
    bf_dataset_free(&d);
    CHECK_MSG(bf_dataset_load(dir, "test", 0, 0, 0, &d, &e) == 0, "%s", e.msg);
    CHECK(d.n == 2 && d.h == 2 && d.w == 2);
    bf_dataset_free(&d);
    /* Asking for another shape converts: gray replicated to 3 planes, 2x2 -> 4x4 bilinear. */
    CHECK_MSG(bf_dataset_load(dir, "test", 3, 4, 4, &d, &e) == 0, "%s", e.msg);
    CHECK(d.n == 2 && d.c == 3 && d.h == 4 && d.w == 4);
    if (d.c == 3 && d.pixels) {
        CHECK(memcmp(d.pixels, d.pixels + 16, 16) == 0 && memcmp(d.pixels, d.pixels + 32, 16) == 0);
        /* Image 0 is {3,10;17,24}: corners keep their values, the 4x4 centre blends all four. */
        CHECK(d.pixels[0] == 3 && d.pixels[3] == 10 && d.pixels[12] == 17 && d.pixels[15] == 24);
    }
    bf_dataset_free(&d);
    expect_fail(bf_dataset_load(dir, "valid", 0, 0, 0, &d, &e), &d, &e, "unknown split", NULL);
    remove(path_in(p, sizeof p, dir, "t10k-labels-idx1-ubyte"));
    expect_fail(bf_dataset_load(dir, "test", 0, 0, 0, &d, &e), &d, &e, "t10k-labels-idx1-ubyte", NULL);

    /* CIFAR-10 inside cifar-10-batches-bin/. Train needs all five batches. */
    path_in(dir, sizeof dir, root, "cifar_root");
    fresh_dir(dir);
    path_in(sub, sizeof sub, dir, "cifar-10-batches-bin");
    mkdir(sub, 0755);
    for (int k = 1; k <= 5; k++) {
        char name[32];
        snprintf(name, sizeof name, "data_batch_%d.bin", k);
        write_cifar(path_in(p, sizeof p, sub, name), 1, k, -1, 0);
    }
    write_cifar(path_in(p, sizeof p, sub, "test_batch.bin"), 2, 0, -1, 0);
    CHECK_MSG(bf_dataset_load(dir, "train", 0, 0, 0, &d, &e) == 0, "%s", e.msg);
    CHECK(d.n == 5 && d.c == 3 && d.classes == 10);
    if (d.n == 5) CHECK(cifar_image_ok(&d, 4, 0, 5));
    bf_dataset_free(&d);
    CHECK_MSG(bf_dataset_load(dir, "test", 1, 16, 16, &d, &e) == 0, "%s", e.msg);
    CHECK(d.n == 2 && d.c == 1 && d.h == 16 && d.w == 16);
    bf_dataset_free(&d);
    remove(path_in(p, sizeof p, sub, "data_batch_4.bin"));
    expect_fail(bf_dataset_load(dir, "train", 0, 0, 0, &d, &e), &d, &e, "data_batch_4.bin", NULL);

    /* Nothing recognisable. */
    path_in(dir, sizeof dir, root, "nothing");
    fresh_dir(dir);
    expect_fail(bf_dataset_load(dir, "train", 0, 0, 0, &d, &e), &d, &e, "no dataset found", "nothing");
    expect_fail(bf_dataset_load(path_in(p, sizeof p, root, "missing"), "train", 0, 0, 0, &d, &e), &d, &e,
                "No such file", "missing");
}

/* ---- subset, statistics, batches ---- */

static void test_subset_stats(void) {
    bf_dataset_t d, s;
    bf_err_t e = {{0}};
    /* 2 images of 2 channels × 1×2 pixels: channel 0 holds {0,255,255,255}, channel 1 {51,51,102,102}. */
    CHECK(bf_dataset_alloc(&d, 2, 2, 1, 2, 3, &e) == 0);
    const uint8_t px[8] = {0, 255, 51, 51, 255, 255, 102, 102};
    memcpy(d.pixels, px, 8);
    d.labels[0] = 1, d.labels[1] = 2;
    snprintf(d.class_names[2], BF_MAX_CLASS_NAME, "two");
    float mean[2], std[2];
    bf_dataset_channel_stats(&d, mean, std);
    CHECK_NEAR(mean[0], 0.75, 1e-7);
    CHECK_NEAR(std[0], sqrt(0.1875), 1e-7);
    CHECK_NEAR(mean[1], 0.3, 1e-7);
    CHECK_NEAR(std[1], 0.1, 1e-7);

    const int32_t idx[3] = {1, 0, 1};
    CHECK(bf_dataset_subset(&d, idx, 3, &s, &e) == 0);
    CHECK(s.n == 3 && s.c == 2 && s.h == 1 && s.w == 2 && s.classes == 3);
    CHECK(memcmp(s.pixels, px + 4, 4) == 0 && memcmp(s.pixels + 4, px, 4) == 0 && memcmp(s.pixels + 8, px + 4, 4) == 0);
    CHECK(s.labels[0] == 2 && s.labels[1] == 1 && strcmp(s.class_names[2], "two") == 0);
    bf_dataset_free(&s);
    const int32_t bad[2] = {0, 2};
    expect_fail(bf_dataset_subset(&d, bad, 2, &s, &e), &s, &e, "index 2 at position 1", NULL);
    bf_dataset_free(&d);
    expect_fail(bf_dataset_alloc(&d, 1000, 3, 65536, 65536, 10, &e), &d, &e, "exceeds", NULL);
    expect_fail(bf_dataset_alloc(&d, 1, 1, 1, 1, 257, &e), &d, &e, "class count", NULL);
}

static void test_batch_normalize(void) {
    /* c = 3 uses the lookup table, c = 5 the direct formula; both must equal the formula exactly. */
    for (int c = 3; c <= 5; c += 2) {
        bf_dataset_t d;
        bf_err_t e = {{0}};
        CHECK(bf_dataset_alloc(&d, 4, c, 2, 3, 10, &e) == 0);
        size_t chw = (size_t)c * 6;
        for (size_t k = 0; k < 4 * chw; k++) d.pixels[k] = (uint8_t)(k * 37 + 11);
        for (int i = 0; i < 4; i++) d.labels[i] = (uint8_t)(i + 5);
        float mean[5] = {0.5f, 0.25f, 0.125f, 0.2f, 0.3f}, std[5] = {0.5f, 0.3f, 0.7f, 0.1f, 1.0f};
        const int32_t idx[2] = {3, 1};
        float x[2 * 5 * 6];
        int32_t y[2];
        bf_batch_fill(&d, idx, 2, mean, std, NULL, x, y);
        int exact = 1;
        for (int i = 0; i < 2; i++)
            for (size_t k = 0; k < chw; k++) {
                int ch = (int)(k / 6);
                float want = ((float)d.pixels[idx[i] * chw + k] / 255.0f - mean[ch]) / std[ch];
                exact &= x[i * chw + k] == want;
            }
        CHECK_MSG(exact, "c=%d: normalized values differ from (p/255 - mean)/std", c);
        CHECK(y[0] == 8 && y[1] == 6);
        bf_dataset_free(&d);
    }
}

/* Reference augmentation: materialize the zero-padded image, crop at (dy,dx), optionally flip. */
static void ref_aug(const uint8_t *img, int c, int h, int w, int dy, int dx, int flip, uint8_t *out) {
    int ph = h + 8, pw = w + 8;
    uint8_t *pad = calloc((size_t)c * ph * pw, 1);
    for (int ch = 0; ch < c; ch++)
        for (int yy = 0; yy < h; yy++)
            for (int xx = 0; xx < w; xx++) pad[(ch * ph + yy + 4) * pw + xx + 4] = img[(ch * h + yy) * w + xx];
    for (int ch = 0; ch < c; ch++)
        for (int yy = 0; yy < h; yy++)
            for (int xx = 0; xx < w; xx++) {
                int cx = flip ? w - 1 - xx : xx;
                out[(ch * h + yy) * w + xx] = pad[(ch * ph + yy + dy) * pw + cx + dx];
            }
    free(pad);
}

static void test_batch_augment(void) {
    enum { C = 3, H = 6, W = 7, N = 40 };
    bf_dataset_t d;
    bf_err_t e = {{0}};
    CHECK(bf_dataset_alloc(&d, 3, C, H, W, 10, &e) == 0);
    for (size_t k = 0; k < 3u * C * H * W; k++) d.pixels[k] = (uint8_t)(1 + k % 251); /* no zeros */
    float mean[3] = {0.1f, 0.2f, 0.3f}, std[3] = {0.9f, 0.8f, 0.7f};
    int32_t idx[N], y1[N], y2[N];
    for (int i = 0; i < N; i++) idx[i] = i % 3;
    static float x1[N * C * H * W], x2[N * C * H * W];
    bf_rng_t r1, r2;
    bf_rng_seed(&r1, 7);
    bf_rng_seed(&r2, 7);
    bf_batch_fill(&d, idx, N, mean, std, &r1, x1, y1);
    bf_batch_fill(&d, idx, N, mean, std, &r2, x2, y2);
    CHECK(memcmp(x1, x2, sizeof x1) == 0 && memcmp(y1, y2, sizeof y1) == 0);
    bf_rng_seed(&r2, 8);
    bf_batch_fill(&d, idx, N, mean, std, &r2, x2, y2);
    CHECK(memcmp(x1, x2, sizeof x1) != 0);

    /* Each output must be exactly one crop/flip of the zero-padded original, normalized. */
    int seen_dy[9] = {0}, seen_flip[2] = {0}, all_match = 1;
    for (int i = 0; i < N; i++) {
        int found = 0;
        for (int dy = 0; dy <= 8 && !found; dy++)
            for (int dx = 0; dx <= 8 && !found; dx++)
                for (int fl = 0; fl < 2 && !found; fl++) {
                    uint8_t ref[C * H * W];
                    ref_aug(d.pixels + (size_t)idx[i] * C * H * W, C, H, W, dy, dx, fl, ref);
                    int same = 1;
                    for (int k = 0; k < C * H * W && same; k++) {
                        int ch = k / (H * W);
                        same = x1[i * C * H * W + k] == ((float)ref[k] / 255.0f - mean[ch]) / std[ch];
                    }
                    if (same) found = 1, seen_dy[dy]++, seen_flip[fl]++;
                }
        all_match &= found;
        CHECK(y1[i] == 0);
    }
    CHECK_MSG(all_match, "an augmented image is not a padded crop/flip of its source");
    int dys = 0;
    for (int k = 0; k < 9; k++) dys += seen_dy[k] > 0;
    CHECK_MSG(dys >= 6 && seen_flip[0] > 5 && seen_flip[1] > 5, "offsets/flips poorly spread: %d offsets, %d/%d flips",
              dys, seen_flip[0], seen_flip[1]);
    bf_dataset_free(&d);
}

int main(void) {
    snprintf(root, sizeof root, "%s/test_datasets", bf_test_tmpdir());
    fresh_dir(root);
    test_idx_valid();
    test_idx_corrupt();
    test_cifar();
    test_detect();
    test_subset_stats();
    test_batch_normalize();
    test_batch_augment();
    return bf_test_done("test_datasets");
}

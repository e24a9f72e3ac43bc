/* blockcache.c: verified data blocks (bf_blockcache.h): a BLOCK reply checked and copied into a
 * bf_block_t, and the block cache files in the profile: their path, the fully validated read,
 * and the atomic write. */
#include "bf_blockcache.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bf_datasets.h"

static const char magic[8] = {'B', 'F', 'B', 'L', 'K', '0', '1', '\n'};

void bf_block_free(bf_block_t *b) {
    if (!b) return;
    free(b->pixels);
    free(b->labels);
    memset(b, 0, sizeof *b);
}

static int check_shape(int64_t n, int64_t c, int64_t h, int64_t w, int64_t classes, bf_err_t *err) {
    if (n < 1 || n > 1000000 || c < 1 || c > 4 || h < 1 || h > 1024 || w < 1 || w > 1024 || classes < 2 ||
        classes > 256)
        return bf_err_set(err, "block shape out of range (n %lld, %lldx%lldx%lld, %lld classes)", (long long)n,
                          (long long)c, (long long)h, (long long)w, (long long)classes);
    return 0;
}

/* n*c*h*w; cannot overflow within check_shape's ranges (<= 2^42). */
static size_t pixel_bytes(const bf_block_t *b) { return (size_t)b->n * b->c * b->h * b->w; }

int bf_block_check(const bf_block_t *b, bf_err_t *err) {
    if (check_shape(b->n, b->c, b->h, b->w, b->classes, err)) return -1;
    for (int32_t i = 0; i < b->n; i++)
        if (b->labels[i] >= b->classes)
            return bf_err_set(err, "label %u of image %d is not below %d classes", b->labels[i], i, b->classes);
    char hex[65];
    bf_block_digest(b->n, b->c, b->h, b->w, b->pixels, b->labels, hex);
    if (strcmp(hex, b->sha256)) return bf_err_set(err, "digest mismatch (got %s, expected %s)", hex, b->sha256);
    return 0;
}

int bf_block_from_msg(const bf_msg_t *m, const char *task, uint64_t id, bf_block_t *out, bf_err_t *err) {
    memset(out, 0, sizeof *out);
    if (strcmp(bf_msg_type(m), "BLOCK")) return bf_err_set(err, "expected BLOCK, got %s", bf_msg_type(m));
    const char *t = bf_msg_str(m, "task"), *sha = bf_msg_str(m, "sha256");
    if (!t || strcmp(t, task) || bf_msg_uint(m, "block", UINT64_MAX) != id)
        return bf_err_set(err, "BLOCK reply is for another task or block");
    uint64_t n = bf_msg_uint(m, "n", 0), c = bf_msg_uint(m, "c", 0), h = bf_msg_uint(m, "h", 0),
             w = bf_msg_uint(m, "w", 0), k = bf_msg_uint(m, "classes", 0);
    if (check_shape((int64_t)n, (int64_t)c, (int64_t)h, (int64_t)w, (int64_t)k, err) || !sha || strlen(sha) != 64)
        return -1;
    *out = (bf_block_t){.n = (int32_t)n, .c = (int32_t)c, .h = (int32_t)h, .w = (int32_t)w, .classes = (int32_t)k};
    memcpy(out->sha256, sha, 65);
    size_t plen = 0, llen = 0;
    const uint8_t *px = bf_msg_frame(m, 0, &plen), *lb = bf_msg_frame(m, 1, &llen);
    if (!px || !lb || plen != pixel_bytes(out) || llen != n) {
        memset(out, 0, sizeof *out);
        return bf_err_set(err, "BLOCK frames are %zu + %zu bytes, the header says %zu + %llu", plen, llen,
                          pixel_bytes(out), (unsigned long long)n);
    }
    out->pixels = malloc(plen);
    out->labels = malloc(llen);
    if (!out->pixels || !out->labels) {
        bf_block_free(out);
        return bf_err_set(err, "out of memory");
    }
    memcpy(out->pixels, px, plen);
    memcpy(out->labels, lb, llen);
    if (bf_block_check(out, err)) {
        bf_block_free(out);
        return bf_err_prefix(err, "block %llu: ", (unsigned long long)id);
    }
    return 0;
}

int bf_blockcache_path(const char *home, const char *task, uint64_t id, char *out, size_t n) {
    int len = snprintf(out, n, "%s/blocks/%s/%llu.blk", home, task, (unsigned long long)id);
    return len < 0 || (size_t)len >= n ? -1 : 0;
}

static uint32_t get32(const uint8_t *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }
static void put32(uint8_t *p, uint32_t v) { p[0] = v, p[1] = v >> 8, p[2] = v >> 16, p[3] = v >> 24; }

/* FNV-1a over the header fields: the digest covers only pixels and labels, so a flipped bit in
 * `classes` would otherwise pass unnoticed. */
static uint32_t header_check(const uint8_t *h) {
    uint32_t x = 2166136261u;
    for (int i = 0; i < BF_BLOCK_HEADER - 4; i++) x = (x ^ h[i]) * 16777619u;
    return x;
}

int bf_blockcache_read(const char *path, bf_block_t *out, bf_err_t *err) {
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f) return bf_err_set(err, "%s: %s", path, strerror(errno));
    uint8_t h[BF_BLOCK_HEADER];
    struct stat st;
    int rc = -1;
    if (fstat(fileno(f), &st) || fread(h, 1, sizeof h, f) != sizeof h || memcmp(h, magic, 8) ||
        get32(h + BF_BLOCK_HEADER - 4) != header_check(h)) {
        bf_err_set(err, "%s: not a block cache file", path);
        goto done;
    }
    uint32_t v[5];
    for (int i = 0; i < 5; i++) v[i] = get32(h + 8 + 4 * i);
    if (check_shape(v[0], v[1], v[2], v[3], v[4], err)) goto done;
    *out = (bf_block_t){.n = (int32_t)v[0], .c = (int32_t)v[1], .h = (int32_t)v[2], .w = (int32_t)v[3],
                        .classes = (int32_t)v[4]};
    memcpy(out->sha256, h + 28, 64);
    out->sha256[64] = 0;
    size_t np = pixel_bytes(out);
    if ((uint64_t)st.st_size != BF_BLOCK_HEADER + np + (uint64_t)out->n) {
        bf_err_set(err, "%s: %lld bytes, expected %zu (truncated?)", path, (long long)st.st_size,
                   BF_BLOCK_HEADER + np + (size_t)out->n);
        goto done;
    }
    out->pixels = malloc(np);
    out->labels = malloc((size_t)out->n);
    if (!out->pixels || !out->labels) {
        bf_err_set(err, "out of memory");
        goto done;
    }
    if (fread(out->pixels, 1, np, f) != np || fread(out->labels, 1, (size_t)out->n, f) != (size_t)out->n) {
        bf_err_set(err, "%s: short read", path);
        goto done;
    }
    if (bf_block_check(out, err)) {
        bf_err_prefix(err, "%s: ", path);
        goto done;
    }
    rc = 0;
done:
    fclose(f);
    if (rc) bf_block_free(out);
    return rc;
}

/* mkdir -p of the directory part of path, mode 0700. */
static int make_parents(const char *path, bf_err_t *err) {
    char dir[PATH_MAX];
    if (snprintf(dir, sizeof dir, "%s", path) >= (int)sizeof dir) return bf_err_set(err, "path too long");
    char *slash = strrchr(dir, '/');
    if (!slash) return 0;
    *slash = 0;
    for (char *s = dir + 1; *s; s++) {
        if (*s != '/') continue;
        *s = 0;
        if (mkdir(dir, 0700) && errno != EEXIST) return bf_err_set(err, "mkdir %s: %s", dir, strerror(errno));
        *s = '/';
    }
    if (mkdir(dir, 0700) && errno != EEXIST) return bf_err_set(err, "mkdir %s: %s", dir, strerror(errno));
    return 0;
}

int bf_blockcache_write(const char *path, const bf_block_t *b, bf_err_t *err) {
    if (bf_block_check(b, err) || make_parents(path, err)) return -1;
    char tmp[PATH_MAX + 32];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    uint8_t h[BF_BLOCK_HEADER];
    memcpy(h, magic, 8);
    const int32_t v[5] = {b->n, b->c, b->h, b->w, b->classes};
    for (int i = 0; i < 5; i++) put32(h + 8 + 4 * i, (uint32_t)v[i]);
    memcpy(h + 28, b->sha256, 64);
    put32(h + BF_BLOCK_HEADER - 4, header_check(h));
    FILE *f = fopen(tmp, "wb");
    if (!f) return bf_err_set(err, "%s: %s", tmp, strerror(errno));
    size_t np = pixel_bytes(b);
    int bad = fwrite(h, 1, sizeof h, f) != sizeof h || fwrite(b->pixels, 1, np, f) != np ||
              fwrite(b->labels, 1, (size_t)b->n, f) != (size_t)b->n;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path)) {
        int e = errno;
        unlink(tmp);
        return bf_err_set(err, "cannot write %s: %s", path, strerror(e));
    }
    return 0;
}

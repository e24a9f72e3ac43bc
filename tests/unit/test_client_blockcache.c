/* test_client_blockcache.c: BLOCK replies are verified (digest, frame sizes, labels, task and
 * block number) before use; cache files round-trip and every corrupt or truncated one is refused
 * (the trainer then fetches the block again). */
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bf_blockcache.h"
#include "bf_datasets.h"
#include "test.h"

enum { N = 20, C = 1, H = 8, W = 8, K = 4 };

static void make_block(bf_block_t *b, uint64_t seed) {
    bf_rng_t r;
    bf_rng_seed(&r, seed);
    *b = (bf_block_t){.n = N, .c = C, .h = H, .w = W, .classes = K};
    b->pixels = malloc(N * C * H * W);
    b->labels = malloc(N);
    for (int i = 0; i < N * C * H * W; i++) b->pixels[i] = (uint8_t)bf_rng_below(&r, 256);
    for (int i = 0; i < N; i++) b->labels[i] = (uint8_t)bf_rng_below(&r, K);
    bf_block_digest(N, C, H, W, b->pixels, b->labels, b->sha256);
}

/* A BLOCK reply as the coordinator would send it (optionally with a wrong field). */
static bf_msg_t *block_msg(const bf_block_t *b, const char *task, uint64_t id, const char *sha, size_t pix_len) {
    bf_msg_t *m = bf_msg_new("BLOCK", 1);
    bf_msg_set_str(m, "task", task);
    bf_msg_set_uint(m, "block", id);
    bf_msg_set_str(m, "sha256", sha);
    bf_msg_set_uint(m, "n", (uint64_t)b->n);
    bf_msg_set_uint(m, "c", (uint64_t)b->c);
    bf_msg_set_uint(m, "h", (uint64_t)b->h);
    bf_msg_set_uint(m, "w", (uint64_t)b->w);
    bf_msg_set_uint(m, "classes", (uint64_t)b->classes);
    bf_msg_add_frame(m, b->pixels, pix_len);
    bf_msg_add_frame(m, b->labels, (size_t)b->n);
    return m;
}

static void test_from_msg(void) {
    bf_block_t b, got;
    bf_err_t err;
    make_block(&b, 1);
    size_t plen = N * C * H * W;
    bf_msg_t *m = block_msg(&b, "t1", 7, b.sha256, plen);
    CHECK_MSG(!bf_block_from_msg(m, "t1", 7, &got, &err), "%s", err.msg);
    CHECK(got.n == N && !memcmp(got.pixels, b.pixels, plen) && !memcmp(got.labels, b.labels, N));
    bf_block_free(&got);
    CHECK(bf_block_from_msg(m, "t2", 7, &got, &err)); /* another task */
    CHECK(bf_block_from_msg(m, "t1", 8, &got, &err)); /* another block */
    CHECK(got.pixels == NULL);
    bf_msg_destroy(&m);

    char wrong[65];
    memcpy(wrong, b.sha256, 65);
    wrong[0] = wrong[0] == 'a' ? 'b' : 'a';
    m = block_msg(&b, "t1", 7, wrong, plen);
    CHECK(bf_block_from_msg(m, "t1", 7, &got, &err) && strstr(err.msg, "digest"));
    bf_msg_destroy(&m);

    m = block_msg(&b, "t1", 7, b.sha256, plen - 1); /* pixels frame one byte short */
    CHECK(bf_block_from_msg(m, "t1", 7, &got, &err));
    bf_msg_destroy(&m);

    /* a label >= classes, with a digest that matches the bad data */
    b.labels[3] = K;
    bf_block_digest(N, C, H, W, b.pixels, b.labels, b.sha256);
    m = block_msg(&b, "t1", 7, b.sha256, plen);
    CHECK(bf_block_from_msg(m, "t1", 7, &got, &err) && strstr(err.msg, "label"));
    bf_msg_destroy(&m);
    bf_block_free(&b);
}

static long file_size(const char *p) {
    struct stat st;
    return stat(p, &st) ? -1 : (long)st.st_size;
}

static void patch(const char *path, long off, uint8_t xor) {
    FILE *f = fopen(path, "r+b");
    fseek(f, off, SEEK_SET);
    int c = fgetc(f);
    fseek(f, off, SEEK_SET);
    fputc(c ^ xor, f);
    fclose(f);
}

static void test_cache(void) {
    char home[512], path[700], copy[720];
    bf_err_t err;
    snprintf(home, sizeof home, "%s/client_blockcache_%d", bf_test_tmpdir(), (int)getpid());
    CHECK(!bf_blockcache_path(home, "task-1", 42, path, sizeof path));
    CHECK(strstr(path, "/blocks/task-1/42.blk") != NULL);
    bf_block_t b, got;
    make_block(&b, 2);
    CHECK(bf_blockcache_read(path, &got, &err)); /* missing */
    CHECK_MSG(!bf_blockcache_write(path, &b, &err), "%s", err.msg);
    long size = file_size(path);
    CHECK(size == BF_BLOCK_HEADER + N * C * H * W + N);
    CHECK_MSG(!bf_blockcache_read(path, &got, &err), "%s", err.msg);
    CHECK(got.n == N && got.c == C && got.h == H && got.w == W && got.classes == K && !strcmp(got.sha256, b.sha256));
    CHECK(!memcmp(got.pixels, b.pixels, N * C * H * W) && !memcmp(got.labels, b.labels, N));
    bf_block_free(&got);

    /* keep a good copy, then corrupt the file in every part */
    snprintf(copy, sizeof copy, "%s.good", path);
    FILE *in = fopen(path, "rb"), *out = fopen(copy, "wb");
    for (int c; (c = fgetc(in)) != EOF;) fputc(c, out);
    fclose(in), fclose(out);
    const long offsets[] = {0, 8, 12, 16, 20, 24, 28, 60, BF_BLOCK_HEADER - 1, BF_BLOCK_HEADER, BF_BLOCK_HEADER + 100, size - 1};
    for (size_t i = 0; i < sizeof offsets / sizeof *offsets; i++) {
        rename(copy, path);
        FILE *a = fopen(path, "rb"), *o = fopen(copy, "wb"); /* restore the copy for the next round */
        for (int c; (c = fgetc(a)) != EOF;) fputc(c, o);
        fclose(a), fclose(o);
        patch(path, offsets[i], 0x01);
        CHECK_MSG(bf_blockcache_read(path, &got, &err), "corruption at %ld accepted", offsets[i]);
        CHECK(got.pixels == NULL && got.labels == NULL);
    }
    /* truncated, extended, empty */
    rename(copy, path);
    CHECK(!bf_blockcache_read(path, &got, &err));
    bf_block_free(&got);
    CHECK(!truncate(path, size - 1));
    CHECK(bf_blockcache_read(path, &got, &err) && strstr(err.msg, "truncated"));
    CHECK(!truncate(path, size + 1));
    CHECK(bf_blockcache_read(path, &got, &err));
    CHECK(!truncate(path, 0));
    CHECK(bf_blockcache_read(path, &got, &err));
    /* a rewrite replaces it atomically */
    CHECK(!bf_blockcache_write(path, &b, &err));
    CHECK(!bf_blockcache_read(path, &got, &err));
    bf_block_free(&got);
    /* refuses to cache a block whose digest does not match */
    b.pixels[0] ^= 1;
    CHECK(bf_blockcache_write(path, &b, &err));
    bf_block_free(&b);
}

int main(void) {
    test_from_msg();
    test_cache();
    return bf_test_done("test_client_blockcache");
}

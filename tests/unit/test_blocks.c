/* test_blocks.c: data blocks are disjoint, deterministic from the seed, disjoint from the
 * validation split; Dirichlet blocks are label-skewed (and more so for smaller alpha); block
 * digests change with any byte. (The gamma and Dirichlet samplers are tested in test_util.c.) */
#include <string.h>

#include "bf_datasets.h"
#include "test.h"

static void make(bf_dataset_t *d, int n) {
    bf_err_t err;
    CHECK(bf_dataset_alloc(d, n, 1, 2, 2, 10, &err) == 0);
    for (int i = 0; i < n; i++) {
        d->labels[i] = (uint8_t)(i % 10);
        for (int j = 0; j < 4; j++) d->pixels[i * 4 + j] = (uint8_t)(i * 7 + j);
    }
}

/* Mean over blocks of the largest single-class fraction (0.1 = perfectly mixed for 10 classes). */
static double skew(const bf_dataset_t *d, const bf_blocks_t *b) {
    double s = 0;
    for (int k = 0; k < b->nblocks; k++) {
        int count[10] = {0}, mx = 0;
        for (int j = 0; j < b->block_size; j++) count[d->labels[b->index[k * b->block_size + j]]]++;
        for (int c = 0; c < 10; c++) mx = count[c] > mx ? count[c] : mx;
        s += (double)mx / b->block_size;
    }
    return s / b->nblocks;
}

static void check_disjoint(const bf_dataset_t *d, const bf_blocks_t *b) {
    char *seen = calloc(d->n, 1);
    int dup = 0;
    for (int i = 0; i < b->nval; i++) dup += seen[b->val[i]]++ > 0;
    for (int i = 0; i < b->nblocks * b->block_size; i++) {
        int v = b->index[i];
        CHECK(v >= 0 && v < d->n);
        if (v >= 0 && v < d->n) dup += seen[v]++ > 0;
    }
    CHECK_MSG(dup == 0, "%d images appear twice", dup);
    free(seen);
}

int main(void) {
    bf_dataset_t d;
    bf_err_t err;
    make(&d, 10000);
    bf_blocks_t a, b;
    CHECK(bf_blocks_partition(&d, 100, 1000, "iid", 7, &a, &err) == 0);
    CHECK(a.nblocks == 90 && a.block_size == 100 && a.nval == 1000);
    check_disjoint(&d, &a);
    CHECK(bf_blocks_partition(&d, 100, 1000, "iid", 7, &b, &err) == 0);
    CHECK(!memcmp(a.index, b.index, sizeof(int32_t) * 9000) && !memcmp(a.val, b.val, sizeof(int32_t) * 1000));
    bf_blocks_free(&b);
    CHECK(bf_blocks_partition(&d, 100, 1000, "iid", 8, &b, &err) == 0);
    CHECK(memcmp(a.index, b.index, sizeof(int32_t) * 9000) != 0);
    double s_iid = skew(&d, &a);
    bf_blocks_free(&b);

    /* bf_blocks_spread: distinct training images, from every one of the first blocks, capped */
    int32_t sp[1000];
    CHECK(bf_blocks_spread(&a, 5, 250, sp) == 250);
    int per_block[5] = {0}, in_val = 0;
    for (int i = 0; i < 250; i++)
        for (int k = 0; k < 500; k++)
            if (a.index[k] == sp[i]) per_block[k / 100]++;
    for (int i = 0; i < 250; i++)
        for (int k = 0; k < a.nval; k++) in_val += a.val[k] == sp[i];
    for (int k = 0; k < 5; k++) CHECK_MSG(per_block[k] == 50, "block %d gave %d of 250 images", k, per_block[k]);
    CHECK(in_val == 0);
    CHECK(bf_blocks_spread(&a, 5, 1000, sp) == 500 && sp[499] == a.index[499]);
    CHECK(bf_blocks_spread(&a, 1000, 3, sp) == 3 && sp[1] == a.index[3000]);
    CHECK(bf_blocks_spread(&a, 0, 3, sp) == 0);

    bf_blocks_t c1, c01;
    CHECK(bf_blocks_partition(&d, 100, 1000, "dirichlet:1", 7, &c1, &err) == 0);
    CHECK(bf_blocks_partition(&d, 100, 1000, "dirichlet:0.1", 7, &c01, &err) == 0);
    check_disjoint(&d, &c1);
    check_disjoint(&d, &c01);
    double s1 = skew(&d, &c1), s01 = skew(&d, &c01);
    printf("mean largest-class share per block: iid %.3f, dirichlet:1 %.3f, dirichlet:0.1 %.3f\n", s_iid, s1, s01);
    CHECK(s_iid < 0.25 && s1 > s_iid + 0.1 && s01 > s1 + 0.1);

    CHECK(bf_blocks_partition(&d, 100, 1000, "dirichlet:-1", 7, &b, &err) == -1 && strstr(err.msg, "partition"));
    CHECK(bf_blocks_partition(&d, 100, 1000, "zipf", 7, &b, &err) == -1);
    CHECK(bf_blocks_partition(&d, 20000, 0, "iid", 7, &b, &err) == -1);
    CHECK(bf_blocks_partition(&d, 10, 10000, "iid", 7, &b, &err) == -1);

    char h1[65], h2[65];
    bf_block_digest(2, 1, 2, 2, d.pixels, d.labels, h1);
    d.pixels[5] ^= 1;
    bf_block_digest(2, 1, 2, 2, d.pixels, d.labels, h2);
    CHECK(strcmp(h1, h2) != 0);
    d.pixels[5] ^= 1;
    bf_block_digest(2, 1, 2, 2, d.pixels, d.labels, h2);
    CHECK(!strcmp(h1, h2));
    d.labels[1] ^= 1; /* labels are covered too */
    bf_block_digest(2, 1, 2, 2, d.pixels, d.labels, h2);
    CHECK(strcmp(h1, h2) != 0);
    d.labels[1] ^= 1;

    bf_blocks_free(&a);
    bf_blocks_free(&c1);
    bf_blocks_free(&c01);
    bf_dataset_free(&d);
    return bf_test_done("test_blocks");
}

/* blocks.c: cutting a training split into data blocks (IID or Dirichlet label skew) and a
 * validation split, deterministically from a seed, and the digest blocks travel with. */
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bf_datasets.h"

void bf_blocks_free(bf_blocks_t *b) {
    if (!b) return;
    free(b->index);
    free(b->val);
    memset(b, 0, sizeof *b);
}

int32_t bf_blocks_spread(const bf_blocks_t *b, int32_t nblocks, int32_t n, int32_t *idx) {
    int64_t have = (int64_t)(nblocks < b->nblocks ? nblocks : b->nblocks) * b->block_size;
    if (n > have) n = (int32_t)have;
    for (int32_t i = 0; i < n; i++) idx[i] = b->index[(int64_t)i * have / n];
    return n > 0 ? n : 0;
}

/* Per-class pools of the images left after the validation split, each in shuffled order. */
typedef struct {
    int32_t *idx[BF_MAX_CLASSES];
    int32_t len[BF_MAX_CLASSES], next[BF_MAX_CLASSES];
} pools_t;

static int make_pools(const bf_dataset_t *d, const int32_t *rest, int32_t n, pools_t *p) {
    memset(p, 0, sizeof *p);
    for (int32_t i = 0; i < n; i++) p->len[d->labels[rest[i]]]++;
    for (int k = 0; k < d->classes; k++)
        if (!(p->idx[k] = malloc(sizeof(int32_t) * (p->len[k] ? p->len[k] : 1)))) return -1;
    int32_t fill[BF_MAX_CLASSES] = {0};
    for (int32_t i = 0; i < n; i++) {
        int k = d->labels[rest[i]];
        p->idx[k][fill[k]++] = rest[i];
    }
    return 0;
}

static void free_pools(pools_t *p) {
    for (int k = 0; k < BF_MAX_CLASSES; k++) free(p->idx[k]);
}

static int32_t take(pools_t *p, int k) { return p->idx[k][p->next[k]++]; }

/* Draws one image for a block whose label mix is prob: a class by prob among the classes with
 * images left (renormalised), then the next image of that class's pool. When the mix's classes
 * have run out, the fullest remaining class supplies it. */
static int32_t draw(pools_t *p, const double *prob, int classes, bf_rng_t *r) {
    double total = 0;
    int last = -1, fullest = -1;
    for (int k = 0; k < classes; k++)
        if (p->next[k] < p->len[k]) {
            total += prob[k];
            if (fullest < 0 || p->len[k] - p->next[k] > p->len[fullest] - p->next[fullest]) fullest = k;
        }
    if (!(total > 0)) return take(p, fullest);
    double u = bf_rng_uniform(r) * total;
    for (int k = 0; k < classes; k++) {
        if (p->next[k] >= p->len[k]) continue;
        last = k;
        if (u < prob[k]) return take(p, k);
        u -= prob[k];
    }
    return take(p, last); /* u landed past the end by rounding */
}

static int dirichlet_blocks(const bf_dataset_t *d, const int32_t *rest, int32_t n, double alpha, bf_rng_t *r,
                            bf_blocks_t *out) {
    pools_t p;
    double prob[BF_MAX_CLASSES];
    if (make_pools(d, rest, n, &p)) {
        free_pools(&p);
        return -1;
    }
    for (int32_t b = 0; b < out->nblocks; b++) {
        bf_rng_dirichlet(r, alpha, d->classes, prob);
        for (int32_t j = 0; j < out->block_size; j++) out->index[(size_t)b * out->block_size + j] = draw(&p, prob, d->classes, r);
    }
    free_pools(&p);
    return 0;
}

static int parse_partition(const char *spec, double *alpha, bf_err_t *err) {
    *alpha = 0;
    if (!strcmp(spec, "iid")) return 0;
    char *end;
    if (!strncmp(spec, "dirichlet:", 10)) {
        *alpha = strtod(spec + 10, &end);
        if (end != spec + 10 && !*end && *alpha > 0 && *alpha <= 1e6) return 0;
    }
    return bf_err_set(err, "unknown partition '%s' (iid or dirichlet:ALPHA with ALPHA > 0)", spec);
}

int bf_blocks_partition(const bf_dataset_t *d, int32_t block_size, int32_t nval, const char *partition,
                        uint64_t seed, bf_blocks_t *out, bf_err_t *err) {
    memset(out, 0, sizeof *out);
    double alpha;
    if (parse_partition(partition ? partition : "iid", &alpha, err)) return -1;
    if (block_size < 1 || nval < 0 || nval >= d->n)
        return bf_err_set(err, "bad block size %d or validation size %d for %d images", block_size, nval, d->n);
    int32_t rest = d->n - nval;
    if (rest / block_size < 1) return bf_err_set(err, "%d images do not fill one block of %d", rest, block_size);
    int32_t *perm = malloc(sizeof(int32_t) * d->n);
    out->nblocks = rest / block_size;
    out->block_size = block_size;
    out->nval = nval;
    out->index = malloc(sizeof(int32_t) * (size_t)out->nblocks * block_size);
    out->val = malloc(sizeof(int32_t) * (nval ? nval : 1));
    if (!perm || !out->index || !out->val) {
        free(perm);
        bf_blocks_free(out);
        return bf_err_set(err, "out of memory partitioning %d images", d->n);
    }
    bf_rng_t r;
    bf_rng_seed(&r, seed);
    for (int32_t i = 0; i < d->n; i++) perm[i] = i;
    bf_rng_shuffle(&r, perm, (size_t)d->n);
    memcpy(out->val, perm, sizeof(int32_t) * nval);
    int rc = 0;
    if (alpha == 0)
        memcpy(out->index, perm + nval, sizeof(int32_t) * (size_t)out->nblocks * block_size);
    else
        rc = dirichlet_blocks(d, perm + nval, rest, alpha, &r, out);
    free(perm);
    if (rc) {
        bf_blocks_free(out);
        return bf_err_set(err, "out of memory partitioning %d images", d->n);
    }
    return 0;
}

void bf_block_digest(int32_t n, int32_t c, int32_t h, int32_t w, const uint8_t *pixels, const uint8_t *labels,
                     char hex[65]) {
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    EVP_DigestUpdate(ctx, pixels, (size_t)n * c * h * w);
    EVP_DigestUpdate(ctx, labels, (size_t)n);
    unsigned char md[32];
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx, md, &len);
    EVP_MD_CTX_free(ctx);
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
}

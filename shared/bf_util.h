/* bf_util.h: small things every BlockFed library needs: error reporting, a seeded RNG and its
 * distributions, a clock, whole-file reading, SHA-256.
 *
 * Errors: functions that can fail on untrusted input return 0 on success and -1 on failure, and
 * describe the failure in a caller-owned bf_err_t. Nothing here keeps global mutable state. */
#ifndef BF_UTIL_H
#define BF_UTIL_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    char msg[512];
} bf_err_t;

/* Sets err->msg (printf-style) and returns -1, so `return bf_err_set(err, ...)` reads naturally.
 * err may be NULL. */
int bf_err_set(bf_err_t *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prefixes the existing message with more context ("loading model.bfm: " + msg); returns -1. */
int bf_err_prefix(bf_err_t *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* xoshiro256** seeded through splitmix64: fast, small state, and the same sequence on every
 * machine, which is what makes a training run reproducible bit for bit. */
typedef struct {
    uint64_t s[4];
} bf_rng_t;

void bf_rng_seed(bf_rng_t *r, uint64_t seed);
uint64_t bf_rng_u64(bf_rng_t *r);
/* Uniform integer in [0, n), without modulo bias. n > 0. */
uint32_t bf_rng_below(bf_rng_t *r, uint32_t n);
/* Uniform float in [0, 1). */
float bf_rng_uniform(bf_rng_t *r);
/* Standard normal (Box-Muller in double precision). */
double bf_rng_normal(bf_rng_t *r);
/* Fisher-Yates shuffle of n int32 values. */
void bf_rng_shuffle(bf_rng_t *r, int32_t *v, size_t n);
/* Gamma(shape, 1), shape > 0 (Marsaglia-Tsang; shape < 1 through Gamma(shape + 1) * U^(1/shape)).
 * Each attempt draws one bf_rng_normal and, unless that already rejects it, one bf_rng_uniform;
 * most attempts are accepted. shape < 1 draws one uniform first. The order of the draws is part
 * of the contract: seeded data partitions (bf_blocks_partition) depend on it. */
double bf_rng_gamma(bf_rng_t *r, double shape);
/* Dirichlet(alpha, ..., alpha) over k >= 1 categories into out[0..k): k gamma draws in order,
 * normalised to sum to 1 (all 1/k if every draw underflows to 0). alpha > 0. */
void bf_rng_dirichlet(bf_rng_t *r, double alpha, int k, double *out);

/* Monotonic wall clock in seconds. */
double bf_now(void);

/* Reads a whole regular file of 1..max bytes into a malloc'ed buffer (*buf, *len); errors name
 * the file (missing, not a regular file, empty, too large, short read). A FIFO, socket, device or
 * directory is refused at once, without waiting for a writer or reading a byte. */
int bf_file_read(const char *path, size_t max, uint8_t **buf, size_t *len, bf_err_t *err);

/* SHA-256 of a buffer, as 64 lowercase hex digits plus NUL (OpenSSL EVP). */
void bf_sha256_hex(const void *data, size_t n, char out[65]);

#endif

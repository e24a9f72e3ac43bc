/* util.c: error messages, the RNG and its distributions, clocks, file reading and hashing shared
 * by every BlockFed library. */
#include "bf_util.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int bf_err_set(bf_err_t *err, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int bf_err_prefix(bf_err_t *err, const char *fmt, ...) {
    if (err) {
        char prefix[256], old[sizeof err->msg];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(prefix, sizeof prefix, fmt, ap);
        va_end(ap);
        size_t pl = strlen(prefix);
        memcpy(old, err->msg, sizeof old);
        old[sizeof old - 1] = 0;
        if (pl >= sizeof err->msg) pl = sizeof err->msg - 1;
        memcpy(err->msg, prefix, pl);
        size_t ol = strlen(old);
        if (ol > sizeof err->msg - 1 - pl) ol = sizeof err->msg - 1 - pl;
        memcpy(err->msg + pl, old, ol);
        err->msg[pl + ol] = 0;
    }
    return -1;
}

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void bf_rng_seed(bf_rng_t *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t bf_rng_u64(bf_rng_t *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

uint32_t bf_rng_below(bf_rng_t *r, uint32_t n) {
    /* Lemire's multiply-shift with rejection: unbiased and division-free in the common case. */
    uint64_t m = (uint64_t)(uint32_t)(bf_rng_u64(r) >> 32) * n;
    uint32_t low = (uint32_t)m;
    if (low < n) {
        uint32_t threshold = -n % n;
        while (low < threshold) {
            m = (uint64_t)(uint32_t)(bf_rng_u64(r) >> 32) * n;
            low = (uint32_t)m;
        }
    }
    return (uint32_t)(m >> 32);
}

float bf_rng_uniform(bf_rng_t *r) { return (float)(bf_rng_u64(r) >> 40) * (1.0f / 16777216.0f); }

double bf_rng_normal(bf_rng_t *r) {
    /* 53-bit uniforms; u1 in (0,1] so log() is finite. */
    double u1 = ((bf_rng_u64(r) >> 11) + 1) * (1.0 / 9007199254740992.0);
    double u2 = (bf_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

void bf_rng_shuffle(bf_rng_t *r, int32_t *v, size_t n) {
    for (size_t i = n; i > 1; i--) {
        size_t j = bf_rng_below(r, (uint32_t)i);
        int32_t t = v[i - 1];
        v[i - 1] = v[j];
        v[j] = t;
    }
}

/* Marsaglia and Tsang's squeeze-and-reject method; log(0) is avoided by clamping u to 1e-300. */
double bf_rng_gamma(bf_rng_t *r, double shape) {
    if (shape < 1) { /* boost: Gamma(a) = Gamma(a+1) * U^(1/a) */
        double u = bf_rng_uniform(r);
        return bf_rng_gamma(r, shape + 1) * pow(u > 0 ? u : 1e-300, 1.0 / shape);
    }
    double d = shape - 1.0 / 3, c = 1.0 / sqrt(9 * d);
    for (;;) {
        double x = bf_rng_normal(r), v = 1 + c * x;
        if (v <= 0) continue;
        v = v * v * v;
        double u = bf_rng_uniform(r);
        if (u < 1 - 0.0331 * x * x * x * x || log(u > 0 ? u : 1e-300) < 0.5 * x * x + d * (1 - v + log(v))) return d * v;
    }
}

/* Normalised gammas; when every one underflows to 0 (tiny alpha), the uniform mix. */
void bf_rng_dirichlet(bf_rng_t *r, double alpha, int k, double *out) {
    double s = 0;
    for (int i = 0; i < k; i++) s += out[i] = bf_rng_gamma(r, alpha);
    for (int i = 0; i < k; i++) out[i] = s > 0 ? out[i] / s : 1.0 / k;
}

double bf_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

void bf_sha256_hex(const void *data, size_t n, char out[65]) {
    unsigned char md[32];
    unsigned int len = 0;
    EVP_Digest(data, n, md, &len, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++) snprintf(out + 2 * i, 3, "%02x", md[i]);
}

int bf_file_read(const char *path, size_t max, uint8_t **buf, size_t *len, bf_err_t *err) {
    *buf = NULL;
    *len = 0;
    /* O_NONBLOCK: opening a FIFO for reading otherwise waits for a writer, forever; a regular
     * file ignores the flag, and anything else is refused below before a byte is read. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) return bf_err_set(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    int rc = 0;
    if (fstat(fd, &st) != 0) rc = bf_err_set(err, "%s: %s", path, strerror(errno));
    else if (!S_ISREG(st.st_mode))
        rc = bf_err_set(err, "%s: not a regular file (a %s)", path,
                        S_ISDIR(st.st_mode)    ? "directory"
                        : S_ISFIFO(st.st_mode) ? "FIFO"
                        : S_ISSOCK(st.st_mode) ? "socket"
                        : S_ISCHR(st.st_mode)  ? "character device"
                        : S_ISBLK(st.st_mode)  ? "block device"
                                               : "special file");
    else if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) != 0) /* plain blocking reads from here on */
        rc = bf_err_set(err, "%s: %s", path, strerror(errno));
    else if (st.st_size == 0) rc = bf_err_set(err, "%s: empty file", path);
    else if ((uint64_t)st.st_size > max)
        rc = bf_err_set(err, "%s: %lld bytes, more than the limit of %zu bytes (%.1f MiB)", path, (long long)st.st_size,
                        max, (double)max / (1 << 20));
    size_t want = rc ? 0 : (size_t)st.st_size, got = 0;
    if (rc == 0 && !(*buf = malloc(want))) rc = bf_err_set(err, "%s: out of memory", path);
    while (rc == 0 && got < want) {
        ssize_t r = read(fd, *buf + got, want - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) rc = bf_err_set(err, "%s: read error: %s", path, strerror(errno));
        if (r == 0) rc = bf_err_set(err, "%s: file shrank while reading (%zu of %zu bytes)", path, got, want);
        if (r > 0) got += (size_t)r;
    }
    close(fd);
    if (rc) {
        free(*buf);
        *buf = NULL;
        return rc;
    }
    *len = got;
    return 0;
}

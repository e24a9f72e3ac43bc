/* bench_webauth.c: `blockfed-bench webauth [--json] [--rounds R] [--dir DIR]`. The web credential
 * store (coordinator/webauth.c) on a fresh DIR/bench-web.db (default /tmp):
 *   1. one PBKDF2-HMAC-SHA256 derivation at COORD_PBKDF2_ITER,
 *   2. a failed login for a known and for an unknown name, interleaved (they should cost the same),
 *   3. resolving a token already cached, and the first resolve of a token after a reopen (SQL
 *      lookup plus the last_used_at write, one commit at synchronous=FULL),
 *   4. resolves per second on one thread, alone and while two logins derive on two others (the
 *      derivation runs outside the store's mutex, so resolving should not stall).
 * R rounds of each (default 7), min and median. Prints figures only. */
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../coordinator/webauth.h"

#define TOKENS 1000 /* first resolves measured per round */

static double mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_d(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

/* Sorts v and reports min and median. */
static void stats(double *v, int n, double *min, double *med) {
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    *min = v[0];
    *med = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void make_key(int i, char key[41]) {
    static const char z85[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    for (int k = 0; k < 40; k++) key[k] = z85[(i * 7 + k * 13 + k * k * i) % 62];
    key[40] = 0;
}

typedef struct {
    coord_webauth_t *a;
    const char *tok;
    atomic_int *stop;
    long n;
} spin_t;

static void *spin(void *p) {
    spin_t *s = p;
    coord_cred_t c;
    bf_err_t err;
    while (!atomic_load(s->stop)) s->n += coord_webauth_resolve(s->a, s->tok, &c, &err) == COORD_WA_OK;
    return NULL;
}

typedef struct {
    coord_webauth_t *a;
    atomic_long *seq; /* fresh names and addresses stay under the failed-login limits */
} login_arg_t;

static void *bad_login(void *p) {
    login_arg_t *l = p;
    char tok[COORD_TOKEN_MAX], who[32];
    coord_cred_t c;
    bf_err_t err;
    snprintf(who, sizeof who, "spin-%ld", atomic_fetch_add(l->seq, 1));
    coord_webauth_login(l->a, who, "not the password", who, tok, &c, &err);
    return NULL;
}

/* The system clock plus *ctx seconds: each round's first resolves are due a last_used_at write. */
static int64_t shifted_now(void *ctx) { return (int64_t)time(NULL) + *(int64_t *)ctx; }

/* Resolves per second on one thread for about `seconds`, with `logins` threads each deriving
 * failed logins meanwhile (0: alone). */
static double resolve_rate(coord_webauth_t *a, const char *tok, int logins, double seconds) {
    atomic_int stop = 0;
    atomic_long seq = 0;
    spin_t s = {a, tok, &stop, 0};
    login_arg_t la = {a, &seq};
    pthread_t th;
    double t0 = mono();
    if (pthread_create(&th, NULL, spin, &s)) return 0;
    while (mono() - t0 < seconds) {
        pthread_t lt[4];
        int k = 0;
        for (; k < logins && k < 4; k++)
            if (pthread_create(&lt[k], NULL, bad_login, &la)) break;
        if (k == 0) usleep(50000);
        for (int i = 0; i < k; i++) pthread_join(lt[i], NULL);
    }
    atomic_store(&stop, 1);
    pthread_join(th, NULL);
    return s.n / (mono() - t0);
}

int bench_webauth_main(int argc, char **argv) {
    int json = 0, rounds = 7;
    const char *dir = "/tmp";
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'j'}, {"rounds", required_argument, NULL, 'r'}, {"dir", required_argument, NULL, 'd'}, {0}};
    for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        if (c == 'j') json = 1;
        else if (c == 'r') rounds = atoi(optarg);
        else if (c == 'd') dir = optarg;
        else return 2;
    }
    if (rounds < 1 || rounds > 1000) return fprintf(stderr, "webauth: --rounds 1..1000\n"), 2;
    char path[4096], p2[4120];
    snprintf(path, sizeof path, "%s/bench-web.db", dir);
    unlink(path);
    snprintf(p2, sizeof p2, "%s-wal", path);
    unlink(p2);
    bf_err_t err = {{0}};
    coord_webauth_t *a = coord_webauth_open(path, &err);
    if (!a) return fprintf(stderr, "webauth: %s\n", err.msg), 1;

    /* accounts bench-0..19 share one hash; 50 API tokens each */
    uint8_t salt[16] = {1, 2, 3}, hash[32];
    char key[41], name[32];
    if (coord_password_derive("bench password", 14, salt, 16, COORD_PBKDF2_ITER, hash)) return 1;
    static char tokens[TOKENS][COORD_TOKEN_MAX];
    for (int i = 0; i < TOKENS; i++) {
        int64_t id;
        make_key(i / 50, key);
        snprintf(name, sizeof name, "bench-%d", i / 50);
        if ((i % 50 == 0 && coord_webauth_set_hash(a, name, key, salt, COORD_PBKDF2_ITER, hash, &err) != COORD_WA_OK) ||
            coord_webauth_token_new(a, key, "bench", tokens[i], &id, &err) != COORD_WA_OK)
            return fprintf(stderr, "webauth: setup: %s\n", err.msg), 1;
    }

    double *derive = calloc((size_t)rounds, sizeof(double)), *known = calloc((size_t)rounds, sizeof(double)),
           *unknown = calloc((size_t)rounds, sizeof(double)), *cached = calloc((size_t)rounds, sizeof(double)),
           *first = calloc((size_t)rounds, sizeof(double));
    if (!derive || !known || !unknown || !cached || !first) return 1;
    coord_cred_t c;
    char tok[COORD_TOKEN_MAX];
    const long reps = 200000;
    int64_t shift = 0;
    for (int r = 0; r < rounds; r++) {
        uint8_t out[32];
        double t = mono();
        coord_password_derive("bench password", 14, salt, 16, COORD_PBKDF2_ITER, out);
        derive[r] = mono() - t;
        /* distinct addresses and names stay under the failed-login limits */
        char addr[32], who[32];
        snprintf(addr, sizeof addr, "k%d", r);
        snprintf(who, sizeof who, "bench-%d", r % 20);
        t = mono();
        coord_webauth_login(a, who, "wrong password", addr, tok, &c, &err);
        known[r] = mono() - t;
        snprintf(addr, sizeof addr, "u%d", r);
        snprintf(who, sizeof who, "nobody-%d", r);
        t = mono();
        coord_webauth_login(a, who, "wrong password", addr, tok, &c, &err);
        unknown[r] = mono() - t;

        coord_webauth_close(&a); /* a cold cache */
        if (!(a = coord_webauth_open(path, &err))) return fprintf(stderr, "webauth: %s\n", err.msg), 1;
        shift = 120 * (int64_t)(r + 1);
        coord_webauth_set_clock(a, shifted_now, &shift);
        long ok = 0;
        t = mono();
        for (int i = 0; i < TOKENS; i++) ok += coord_webauth_resolve(a, tokens[i], &c, &err) == COORD_WA_OK;
        first[r] = (mono() - t) / TOKENS;
        t = mono();
        for (long i = 0; i < reps; i++) ok += coord_webauth_resolve(a, tokens[i % 16], &c, &err) == COORD_WA_OK;
        cached[r] = (mono() - t) / reps;
        if (ok != TOKENS + reps) return fprintf(stderr, "webauth: a token did not resolve: %s\n", err.msg), 1;
    }
    double alone = resolve_rate(a, tokens[0], 0, 1.5), beside = resolve_rate(a, tokens[0], 2, 1.5);

    double dmin, dmed, kmin, kmed, umin, umed, cmin, cmed, fmin, fmed;
    stats(derive, rounds, &dmin, &dmed);
    stats(known, rounds, &kmin, &kmed);
    stats(unknown, rounds, &umin, &umed);
    stats(cached, rounds, &cmin, &cmed);
    stats(first, rounds, &fmin, &fmed);
    if (json)
        printf("{\"iterations\":%d,\"rounds\":%d,\"derive_ms\":[%.1f,%.1f],\"login_known_ms\":[%.1f,%.1f],"
               "\"login_unknown_ms\":[%.1f,%.1f],\"resolve_cached_ns\":[%.0f,%.0f],\"resolve_first_us\":[%.1f,%.1f],"
               "\"resolves_per_s_alone\":%.0f,\"resolves_per_s_beside_2_logins\":%.0f}\n",
               COORD_PBKDF2_ITER, rounds, dmin * 1e3, dmed * 1e3, kmin * 1e3, kmed * 1e3, umin * 1e3, umed * 1e3,
               cmin * 1e9, cmed * 1e9, fmin * 1e6, fmed * 1e6, alone, beside);
    else
        printf("webauth (%d rounds; min / median)\n"
               "  PBKDF2-HMAC-SHA256, %d iterations   %8.1f / %8.1f ms\n"
               "  failed login, known name           %8.1f / %8.1f ms\n"
               "  failed login, unknown name         %8.1f / %8.1f ms\n"
               "  resolve, cached                    %8.0f / %8.0f ns\n"
               "  resolve, first after reopen        %8.1f / %8.1f us  (SQL + last_used_at commit)\n"
               "  resolves/s on one thread: alone %.0f, beside two deriving logins %.0f (ratio %.2f)\n",
               rounds, COORD_PBKDF2_ITER, dmin * 1e3, dmed * 1e3, kmin * 1e3, kmed * 1e3, umin * 1e3, umed * 1e3,
               cmin * 1e9, cmed * 1e9, fmin * 1e6, fmed * 1e6, alone, beside, alone > 0 ? beside / alone : 0);
    free(derive), free(known), free(unknown), free(cached), free(first);
    coord_webauth_close(&a);
    unlink(path);
    return 0;
}

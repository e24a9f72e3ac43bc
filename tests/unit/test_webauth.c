/* test_webauth.c: the coordinator's web credential store (coordinator/webauth.c) on a real
 * SQLite file with real PBKDF2: passwords and hashes, the failed-login limits per user and per
 * address, sessions (CSRF, expiry, logout), API tokens, the operator token, the token cache's
 * invalidation, persistence across a reopen, concurrent logins, and what the file holds (no
 * password, no token in clear). Time is a per-handle test clock, so expiry and the login window
 * need no sleeping. Prints the time of one derivation and of a cached resolve (figures, not checks). */
#include <pthread.h>
#include <stdatomic.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../coordinator/webauth.h"
#include "test.h"

#define KEY_A "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID"
#define KEY_B "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
#define KEY_C "D:)Q[IlAW!ahhC2ac:9*A}h:p?([4%wOTJ%JR%cs"
#define PW_A "alice's long password"
#define PW_B "bob-password-2"
#define PW_C1 "carol derived elsewhere"
#define PW_C2 "carol's second password"

typedef struct {
    int64_t t;
} fake_clock_t;

static int64_t fake_now(void *ctx) { return ((fake_clock_t *)ctx)->t; }

static double mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* A second connection on the same file: what another process sees. */
static int64_t sql_int(const char *path, const char *sql, const char *arg) {
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int64_t v = -1;
    if (sqlite3_open(path, &db) == SQLITE_OK && sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK) {
        if (arg) sqlite3_bind_text(st, 1, arg, -1, SQLITE_TRANSIENT);
        if (sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

static int login(coord_webauth_t *a, const char *user, const char *pw, const char *addr, char tok[COORD_TOKEN_MAX],
                 coord_cred_t *cred) {
    bf_err_t err = {{0}};
    int rc = coord_webauth_login(a, user, pw, addr, tok, cred, &err);
    if (rc < 0) fprintf(stderr, "login %s: %s\n", user ? user : "(null)", err.msg);
    return rc;
}

static int64_t failures(const char *path, const char *scope, const char *subject) {
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM login_failures WHERE scope = '%s' AND subject = ?", scope);
    return sql_int(path, sql, subject);
}

static int contains(const uint8_t *buf, size_t n, const char *s) { return memmem(buf, n, s, strlen(s)) != NULL; }

static void test_derive_vectors(void) {
    /* RFC 7914 section 11 (PBKDF2-HMAC-SHA256, c = 1), and one more from Python's hashlib */
    static const uint8_t rfc[32] = {0x55, 0xac, 0x04, 0x6e, 0x56, 0xe3, 0x08, 0x9f, 0xec, 0x16, 0x91,
                                    0xc2, 0x25, 0x44, 0xb6, 0x05, 0xf9, 0x41, 0x85, 0x21, 0x6d, 0xde,
                                    0x04, 0x65, 0xe6, 0x8b, 0x9d, 0x57, 0xc2, 0x0d, 0xac, 0xbc};
    static const uint8_t py[32] = {0x02, 0x16, 0x9e, 0x67, 0x4d, 0x80, 0xc0, 0xfc, 0x72, 0x92, 0xe8,
                                   0x61, 0x0c, 0x8f, 0x17, 0xbe, 0x14, 0x0d, 0xf0, 0x62, 0xaf, 0x9a,
                                   0xa3, 0x3e, 0xa8, 0x5e, 0xaa, 0xbe, 0xcf, 0xfd, 0xf0, 0x8d};
    uint8_t out[32], salt16[16];
    for (int i = 0; i < 16; i++) salt16[i] = (uint8_t)i;
    CHECK(coord_password_derive("passwd", 6, (const uint8_t *)"salt", 4, 1, out) == 0);
    CHECK(memcmp(out, rfc, 32) == 0);
    CHECK(coord_password_derive("correct horse battery", 21, salt16, 16, 1000, out) == 0);
    CHECK(memcmp(out, py, 32) == 0);
    CHECK(coord_password_derive("x", 1, salt16, 16, 0, out) == -1);
    CHECK(coord_password_derive(NULL, 1, salt16, 16, 1, out) == -1);
}

typedef struct {
    coord_webauth_t *a;
    const char *user, *pw, *addr;
    int rc;
    char tok[COORD_TOKEN_MAX];
    coord_cred_t cred;
} login_job_t;

static void *login_thread(void *p) {
    login_job_t *j = p;
    j->rc = login(j->a, j->user, j->pw, j->addr, j->tok, &j->cred);
    return NULL;
}

typedef struct {
    coord_webauth_t *a;
    const char *tok;
    atomic_int *stop;
    long n, bad;
} resolve_job_t;

static void *resolve_thread(void *p) {
    resolve_job_t *j = p;
    bf_err_t err;
    coord_cred_t c;
    while (!*j->stop) {
        if (coord_webauth_resolve(j->a, j->tok, &c, &err) != COORD_WA_OK) j->bad++;
        j->n++;
    }
    return NULL;
}

int main(void) {
    char path[512], wal[520];
    snprintf(path, sizeof path, "%s/test_webauth.db", bf_test_tmpdir());
    snprintf(wal, sizeof wal, "%s-wal", path);
    unlink(path);
    unlink(wal);
    bf_err_t err = {{0}};
    test_derive_vectors();

    double t0 = mono();
    coord_webauth_t *a = coord_webauth_open(path, &err);
    CHECK_MSG(a != NULL, "%s", err.msg);
    if (!a) return bf_test_done("test_webauth");
    fake_clock_t clk = {(int64_t)time(NULL)}; /* later switched to the real clock: never behind it */
    coord_webauth_set_clock(a, fake_now, &clk);
    struct stat sb;
    CHECK(stat(path, &sb) == 0 && (sb.st_mode & 077) == 0);
    CHECK(sql_int(path, "PRAGMA user_version", NULL) == 1);

    /* ---- accounts ---- */
    double d0 = mono();
    CHECK(coord_webauth_set_password(a, "alice", KEY_A, PW_A, &err) == COORD_WA_OK);
    double derive_s = mono() - d0;
    CHECK(coord_webauth_set_password(a, "bob", KEY_B, PW_B, &err) == COORD_WA_OK);
    uint8_t salt[16], hash[32];
    for (int i = 0; i < 16; i++) salt[i] = (uint8_t)(7 * i + 1);
    CHECK(coord_password_derive(PW_C1, strlen(PW_C1), salt, 16, COORD_PBKDF2_ITER, hash) == 0);
    CHECK(coord_webauth_set_hash(a, "carol", KEY_C, salt, COORD_PBKDF2_ITER, hash, &err) == COORD_WA_OK);
    CHECK(coord_webauth_set_hash(a, "carol", KEY_C, salt, COORD_PBKDF2_ITER - 1, hash, &err) == COORD_WA_WEAK);
    CHECK(coord_webauth_set_password(a, "dave", "", "", &err) == -1); /* no key */
    CHECK(coord_webauth_set_password(a, "alice", KEY_A, "short", &err) == COORD_WA_WEAK);
    char longpw[COORD_PASSWORD_MAX + 2];
    memset(longpw, 'p', sizeof longpw - 1);
    longpw[sizeof longpw - 1] = 0;
    CHECK(coord_webauth_set_password(a, "alice", KEY_A, longpw, &err) == COORD_WA_WEAK);
    CHECK(coord_webauth_set_hash(a, "bob", KEY_A, salt, COORD_PBKDF2_ITER, hash, &err) == COORD_WA_EXISTS);
    CHECK(coord_webauth_set_hash(a, "dave", KEY_A, salt, COORD_PBKDF2_ITER, hash, &err) == COORD_WA_EXISTS);
    CHECK(coord_webauth_set_hash(a, "\xff\xfe", KEY_C, salt, COORD_PBKDF2_ITER, hash, &err) == -1);
    char name65[66];
    memset(name65, 'n', 65);
    name65[65] = 0;
    CHECK(coord_webauth_set_hash(a, name65, KEY_C, salt, COORD_PBKDF2_ITER, hash, &err) == -1);
    CHECK(coord_webauth_exists(a, "alice", &err) == 1);
    CHECK(coord_webauth_exists(a, "carol", &err) == 1);
    CHECK(coord_webauth_exists(a, "dave", &err) == 0);

    /* ---- login, resolve ---- */
    char sa[COORD_TOKEN_MAX], tok[COORD_TOKEN_MAX];
    coord_cred_t ca, c;
    int64_t login_at = clk.t;
    CHECK(login(a, "alice", PW_A, "10.0.0.1", sa, &ca) == COORD_WA_OK);
    CHECK(!strncmp(sa, "bfs_", 4) && strlen(sa) == 47);
    CHECK(ca.kind == COORD_CRED_SESSION && !strcmp(ca.key, KEY_A) && !strcmp(ca.username, "alice"));
    CHECK(strlen(ca.csrf) >= 32 && strcmp(ca.csrf, sa + 4) != 0);
    CHECK(ca.expires_at == login_at + COORD_SESSION_TTL_S);
    memset(&c, 0, sizeof c);
    CHECK(coord_webauth_resolve(a, sa, &c, &err) == COORD_WA_OK);
    CHECK(c.kind == COORD_CRED_SESSION && !strcmp(c.key, KEY_A) && !strcmp(c.username, "alice"));
    CHECK(!strcmp(c.csrf, ca.csrf) && c.expires_at == ca.expires_at);
    CHECK(login(a, "carol", PW_C1, "10.0.0.1", tok, &c) == COORD_WA_OK); /* a hash from set_hash */
    CHECK(!strcmp(c.key, KEY_C) && strcmp(tok, sa) != 0 && strcmp(c.csrf, ca.csrf) != 0);
    CHECK(coord_webauth_set_password(a, "carol", KEY_C, PW_C2, &err) == COORD_WA_OK);
    CHECK(login(a, "carol", PW_C1, "10.0.7.1", tok, &c) == COORD_WA_BAD); /* replaced */

    /* malformed tokens */
    char big[200];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = 0;
    memcpy(big, "bfs_", 4);
    const char *junk[] = {"", "bfs_", big, "bfx_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                          "bfs_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
                          "bfs_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}; /* the last: well formed, unknown */
    for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++)
        CHECK(coord_webauth_resolve(a, junk[i], &c, &err) == COORD_WA_BAD);
    CHECK(coord_webauth_resolve(a, NULL, &c, &err) == COORD_WA_BAD);
    char swapped[COORD_TOKEN_MAX]; /* the same body under another kind's prefix */
    snprintf(swapped, sizeof swapped, "bft_%s", sa + 4);
    CHECK(coord_webauth_resolve(a, swapped, &c, &err) == COORD_WA_BAD);

    /* ---- wrong password and unknown user: one answer; the limits ---- */
    double k0 = mono();
    CHECK(login(a, "alice", "not the password", "10.0.0.2", tok, &c) == COORD_WA_BAD);
    double known_s = mono() - k0;
    k0 = mono();
    CHECK(login(a, "mallory", "not the password", "10.0.0.3", tok, &c) == COORD_WA_BAD);
    double unknown_s = mono() - k0;
    CHECK(login(a, "alice", NULL, "10.0.0.2", tok, &c) == COORD_WA_BAD); /* these two count, without deriving */
    CHECK(login(a, "alice", longpw, "10.0.0.2", tok, &c) == COORD_WA_BAD);
    for (int i = 0; i < COORD_LOGIN_FAILS - 3; i++) {
        char addr[32];
        snprintf(addr, sizeof addr, "10.0.1.%d", i);
        CHECK(login(a, "alice", "guess", addr, tok, &c) == COORD_WA_BAD);
    }
    CHECK(failures(path, "user", "alice") == COORD_LOGIN_FAILS);
    CHECK(login(a, "alice", PW_A, "10.0.9.9", tok, &c) == COORD_WA_LIMITED); /* the right password too */
    CHECK(login(a, "alice", "guess", "10.0.9.9", tok, &c) == COORD_WA_LIMITED);
    CHECK(failures(path, "user", "alice") == COORD_LOGIN_FAILS); /* refusals are not counted */
    CHECK(failures(path, "addr", "10.0.9.9") == 0);
    /* one address failing for several names: then any name from it is refused */
    const char *names[] = {"u1", "", name65, "\xff", NULL}; /* impossible names count against the address only */
    for (int i = 0; i < COORD_LOGIN_FAILS; i++) CHECK(login(a, names[i], "guess", "10.6.6.6", tok, &c) == COORD_WA_BAD);
    CHECK(failures(path, "addr", "10.6.6.6") == COORD_LOGIN_FAILS);
    CHECK(login(a, "bob", PW_B, "10.6.6.6", tok, &c) == COORD_WA_LIMITED);
    CHECK(login(a, "bob", PW_B, "10.0.2.1", tok, &c) == COORD_WA_OK && !strcmp(c.username, "bob"));
    /* a success clears the user's count (not the other addresses' failures) and is no failure itself */
    CHECK(login(a, "bob", "guess", "10.0.3.1", tok, &c) == COORD_WA_BAD);
    CHECK(login(a, "bob", "guess", "10.0.3.2", tok, &c) == COORD_WA_BAD);
    CHECK(failures(path, "user", "bob") == 2);
    char sbob[COORD_TOKEN_MAX], sbob2[COORD_TOKEN_MAX]; /* one to log out, one live for the reopen */
    CHECK(login(a, "bob", PW_B, "10.0.3.3", sbob, &c) == COORD_WA_OK);
    CHECK(failures(path, "user", "bob") == 0);
    CHECK(failures(path, "addr", "10.0.3.3") == 0);
    CHECK(failures(path, "addr", "10.0.3.1") == 1);
    /* the window passes */
    clk.t += COORD_LOGIN_WINDOW_S + 1;
    CHECK(login(a, "alice", PW_A, "10.6.6.6", tok, &c) == COORD_WA_OK);
    CHECK(login(a, "bob", PW_B, "10.0.2.1", sbob2, &c) == COORD_WA_OK);

    /* ---- logout and expiry ---- */
    CHECK(coord_webauth_resolve(a, sbob, &c, &err) == COORD_WA_OK && !strcmp(c.username, "bob"));
    CHECK(coord_webauth_logout(a, sbob, &err) == COORD_WA_OK);
    CHECK(coord_webauth_resolve(a, sbob, &c, &err) == COORD_WA_BAD);
    CHECK(coord_webauth_logout(a, sbob, &err) == COORD_WA_BAD);
    clk.t = login_at + COORD_SESSION_TTL_S - 1;
    CHECK(coord_webauth_resolve(a, sa, &c, &err) == COORD_WA_OK);
    clk.t = login_at + COORD_SESSION_TTL_S;
    CHECK(coord_webauth_resolve(a, sa, &c, &err) == COORD_WA_BAD);
    CHECK(coord_webauth_logout(a, sa, &err) == COORD_WA_BAD); /* no live session */
    CHECK(coord_webauth_resolve(a, sbob2, &c, &err) == COORD_WA_OK); /* from later */

    /* ---- API tokens ---- */
    char t1[COORD_TOKEN_MAX], t2[COORD_TOKEN_MAX];
    int64_t id1 = 0, id2 = 0, idx = 0;
    CHECK(coord_webauth_token_new(a, KEY_A, "ci", t1, &id1, &err) == COORD_WA_OK);
    clk.t += 1;
    CHECK(coord_webauth_token_new(a, KEY_A, "laptop", t2, &id2, &err) == COORD_WA_OK);
    CHECK(!strncmp(t1, "bft_", 4) && strlen(t1) == 47 && id1 > 0 && id2 > id1);
    CHECK(coord_webauth_token_new(a, KEY_A, name65, tok, &idx, &err) == -1);
    CHECK(coord_webauth_token_new(a, KEY_A, "\xc0\x80", tok, &idx, &err) == -1);
    CHECK(coord_webauth_token_new(a, "Zne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID", "x", tok, &idx, &err) == COORD_WA_BAD);
    CHECK(idx == 0);
    CHECK(coord_webauth_logout(a, t1, &err) == COORD_WA_BAD); /* not a session */
    CHECK(coord_webauth_resolve(a, t1, &c, &err) == COORD_WA_OK);
    CHECK(c.kind == COORD_CRED_API && !strcmp(c.key, KEY_A) && !strcmp(c.username, "alice") && c.expires_at == 0);
    coord_token_info_t *list = NULL;
    size_t n = 0;
    CHECK(coord_webauth_tokens(a, KEY_A, &list, &n, &err) == COORD_WA_OK);
    CHECK(n == 2 && list && list[0].id == id2 && !strcmp(list[0].name, "laptop") && list[1].id == id1 &&
          !strcmp(list[1].name, "ci") && list[0].created_at == clk.t && list[1].last_used_at == clk.t);
    free(list);
    CHECK(coord_webauth_tokens(a, KEY_B, &list, &n, &err) == COORD_WA_OK && n == 0);
    free(list);
    CHECK(coord_webauth_token_revoke(a, KEY_B, id1, &err) == COORD_WA_BAD); /* another account's */
    CHECK(coord_webauth_resolve(a, t1, &c, &err) == COORD_WA_OK);
    CHECK(coord_webauth_token_revoke(a, KEY_A, id1, &err) == COORD_WA_OK);
    CHECK(coord_webauth_resolve(a, t1, &c, &err) == COORD_WA_BAD); /* it was cached */
    CHECK(coord_webauth_token_revoke(a, KEY_A, id1, &err) == COORD_WA_BAD);
    CHECK(coord_webauth_tokens(a, KEY_A, &list, &n, &err) == COORD_WA_OK && n == 1 && list[0].id == id2);
    free(list);

    /* last_used_at: written at most once a minute; a revocation by another process is seen then */
    CHECK(coord_webauth_resolve(a, t2, &c, &err) == COORD_WA_OK);
    int64_t used = clk.t;
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT last_used_at FROM credentials WHERE id = %lld", (long long)id2);
    CHECK(sql_int(path, sql, NULL) == used);
    clk.t += 30;
    CHECK(coord_webauth_resolve(a, t2, &c, &err) == COORD_WA_OK);
    CHECK(sql_int(path, sql, NULL) == used);
    clk.t += 31;
    CHECK(coord_webauth_resolve(a, t2, &c, &err) == COORD_WA_OK);
    CHECK(sql_int(path, sql, NULL) == clk.t);

    /* ---- the operator ---- */
    char o1[COORD_TOKEN_MAX], o2[COORD_TOKEN_MAX];
    CHECK(coord_webauth_operator_new(a, o1, &err) == COORD_WA_OK);
    CHECK(!strncmp(o1, "bfo_", 4) && strlen(o1) == 47);
    CHECK(coord_webauth_resolve(a, o1, &c, &err) == COORD_WA_OK);
    CHECK(c.kind == COORD_CRED_OPERATOR && c.key[0] == 0 && c.username[0] == 0 && c.expires_at == 0);
    CHECK(coord_webauth_operator_new(a, o2, &err) == COORD_WA_OK);
    CHECK(coord_webauth_resolve(a, o1, &c, &err) == COORD_WA_BAD);
    CHECK(coord_webauth_resolve(a, o2, &c, &err) == COORD_WA_OK && c.kind == COORD_CRED_OPERATOR);
    CHECK(sql_int(path, "SELECT COUNT(*) FROM credentials WHERE kind = 'operator' AND revoked_at = 0", NULL) == 1);

    /* ---- cached resolve speed (a figure) ---- */
    const long reps = 200000;
    double r0 = mono();
    long ok = 0;
    for (long i = 0; i < reps; i++) ok += coord_webauth_resolve(a, t2, &c, &err) == COORD_WA_OK;
    double resolve_ns = (mono() - r0) / reps * 1e9;
    CHECK(ok == reps);

    /* ---- concurrent logins, with a resolver running beside them ---- */
    coord_webauth_set_clock(a, NULL, NULL);
    atomic_int stop = 0;
    char live[COORD_TOKEN_MAX];
    snprintf(live, sizeof live, "%s", t2);
    resolve_job_t rj = {a, live, &stop, 0, 0};
    login_job_t j1 = {a, "alice", PW_A, "10.1.0.1", 0, {0}, {0}}, j2 = {a, "bob", PW_B, "10.1.0.2", 0, {0}, {0}};
    pthread_t th1, th2, thr;
    double c0 = mono();
    CHECK(pthread_create(&thr, NULL, resolve_thread, &rj) == 0);
    CHECK(pthread_create(&th1, NULL, login_thread, &j1) == 0);
    CHECK(pthread_create(&th2, NULL, login_thread, &j2) == 0);
    pthread_join(th1, NULL);
    pthread_join(th2, NULL);
    double both_s = mono() - c0;
    stop = 1;
    pthread_join(thr, NULL);
    CHECK(j1.rc == COORD_WA_OK && j2.rc == COORD_WA_OK);
    CHECK(!strcmp(j1.cred.username, "alice") && !strcmp(j2.cred.username, "bob") && strcmp(j1.tok, j2.tok) != 0);
    CHECK(rj.bad == 0 && rj.n > 0);
    CHECK(coord_webauth_resolve(a, j1.tok, &c, &err) == COORD_WA_OK && !strcmp(c.key, KEY_A));
    CHECK(coord_webauth_resolve(a, j2.tok, &c, &err) == COORD_WA_OK && !strcmp(c.key, KEY_B));

    /* ---- persistence ---- */
    coord_webauth_close(&a);
    CHECK(a == NULL);
    a = coord_webauth_open(path, &err);
    CHECK_MSG(a != NULL, "%s", err.msg);
    if (!a) return bf_test_done("test_webauth");
    CHECK(coord_webauth_resolve(a, j1.tok, &c, &err) == COORD_WA_OK && !strcmp(c.username, "alice") &&
          !strcmp(c.csrf, j1.cred.csrf));
    CHECK(coord_webauth_resolve(a, sbob2, &c, &err) == COORD_WA_OK && !strcmp(c.username, "bob"));
    CHECK(coord_webauth_resolve(a, t2, &c, &err) == COORD_WA_OK && c.kind == COORD_CRED_API);
    CHECK(coord_webauth_resolve(a, o2, &c, &err) == COORD_WA_OK && c.kind == COORD_CRED_OPERATOR);
    CHECK(coord_webauth_resolve(a, t1, &c, &err) == COORD_WA_BAD);
    CHECK(coord_webauth_resolve(a, o1, &c, &err) == COORD_WA_BAD);
    CHECK(coord_webauth_resolve(a, sbob, &c, &err) == COORD_WA_BAD);
    coord_webauth_close(&a);

    /* ---- what the file holds: hashes, never passwords or tokens ---- */
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    CHECK(sqlite3_prepare_v2(db, "SELECT salt, iter, hash FROM accounts WHERE username = 'alice'", -1, &st, NULL) ==
          SQLITE_OK);
    if (st && sqlite3_step(st) == SQLITE_ROW) {
        CHECK(sqlite3_column_bytes(st, 0) == 16 && sqlite3_column_bytes(st, 2) == 32);
        CHECK(sqlite3_column_int(st, 1) == COORD_PBKDF2_ITER);
        uint8_t want[32];
        CHECK(coord_password_derive(PW_A, strlen(PW_A), sqlite3_column_blob(st, 0), 16, COORD_PBKDF2_ITER, want) == 0);
        CHECK(memcmp(want, sqlite3_column_blob(st, 2), 32) == 0);
        CHECK(memcmp(PW_A, sqlite3_column_blob(st, 2), strlen(PW_A)) != 0);
    } else {
        CHECK(!"alice has an account row");
    }
    sqlite3_finalize(st);
    CHECK(sqlite3_prepare_v2(db, "SELECT COUNT(*) FROM credentials WHERE lower(hex(token_sha256)) = ?", -1, &st, NULL) ==
          SQLITE_OK);
    const char *stored[] = {sa, sbob, sbob2, t1, t2, o1, o2, j1.tok, j2.tok};
    for (size_t i = 0; i < sizeof stored / sizeof stored[0]; i++) {
        char hex[65];
        bf_sha256_hex(stored[i], strlen(stored[i]), hex);
        sqlite3_reset(st);
        sqlite3_bind_text(st, 1, hex, -1, SQLITE_TRANSIENT);
        CHECK(sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int(st, 0) == 1);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    const char *files[] = {path, wal};
    for (int f = 0; f < 2; f++) {
        uint8_t *buf = NULL;
        size_t len = 0;
        bf_err_t e;
        if (bf_file_read(files[f], (size_t)1 << 30, &buf, &len, &e)) {
            CHECK(f == 1); /* the database must exist; the WAL may be gone after the last close */
            continue;
        }
        CHECK(len > 0);
        for (size_t i = 0; i < sizeof stored / sizeof stored[0]; i++)
            CHECK_MSG(strlen(stored[i]) == 47 && !contains(buf, len, stored[i] + 4), "token %zu in clear in %s", i,
                      files[f]);
        CHECK(!contains(buf, len, PW_A) && !contains(buf, len, PW_B) && !contains(buf, len, PW_C2));
        if (f == 0) CHECK(contains(buf, len, KEY_A)); /* the scan does see the file's text */
        free(buf);
    }

    /* a file from a newer schema is refused, not migrated backwards */
    CHECK(sqlite3_open(path, &db) == SQLITE_OK && sqlite3_exec(db, "PRAGMA user_version = 2", NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);
    a = coord_webauth_open(path, &err);
    CHECK(a == NULL && strstr(err.msg, "newer") != NULL);
    coord_webauth_close(&a);

    printf("test_webauth: one PBKDF2-HMAC-SHA256 derivation (%d iterations) %.0f ms; login known user, wrong "
           "password %.0f ms, unknown user %.0f ms; cached resolve %.0f ns; two concurrent logins %.0f ms with %ld "
           "resolves beside them; whole test %.1f s\n",
           COORD_PBKDF2_ITER, derive_s * 1e3, known_s * 1e3, unknown_s * 1e3, resolve_ns, both_s * 1e3, rj.n,
           mono() - t0);
    return bf_test_done("test_webauth");
}

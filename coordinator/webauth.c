/* webauth.c: the web credential store of webauth.h, in HOME/web.db (SQLite, WAL).
 *
 * One handle is shared by the HTTP server's threads: one mutex guards the connection and a
 * direct-mapped cache of resolved tokens (SHA-256 of the token -> credential), so resolving a
 * token already seen costs no SQL. The cache is dropped for a credential when it is logged out,
 * revoked or replaced, and a cached credential is re-checked against the database whenever its
 * last_used_at is written (at most once a minute), which also bounds how long a revocation made
 * by another process goes unnoticed.
 *
 * A login derives PBKDF2 with the mutex released. Before deriving, it counts one failure against
 * the username and one against the address in the same locked step that checks the limits, so
 * concurrent attempts cannot slip past COORD_LOGIN_FAILS; a success takes those back. An unknown
 * username is derived against a per-handle dummy salt at COORD_PBKDF2_ITER, costing what a known
 * one costs. */
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bf_text.h"
#include "webauth.h"

#define SALT_LEN 16
#define HASH_LEN 32
#define TOKEN_RAW 32                  /* random bytes in a token or CSRF token */
#define TOKEN_B64 43                  /* their base64url without padding */
#define TOKEN_LEN (4 + TOKEN_B64)     /* "bfs_" + body */
#define USER_MAX 64
#define KEY_LEN 40                    /* Z85 of a CURVE public key */
#define NAME_MAX_BYTES 64
#define ADDR_MAX 128                  /* longer addresses are counted by their first 128 bytes */
#define ITER_MAX (16 * COORD_PBKDF2_ITER) /* a client-sent count beyond this would stall logins */
#define TOUCH_S 60                    /* last_used_at is written at most this often per token */
#define SESSION_KEEP_S 86400          /* dead sessions are deleted this long after they died */
#define API_TOKENS_MAX 100            /* live API tokens per account */
#define CACHE_SLOTS 1024

typedef struct {
    int used;
    uint8_t sha[32];
    int64_t id;      /* credentials.id */
    int64_t touched; /* the last_used_at last written */
    coord_cred_t cred;
} slot_t;

struct coord_webauth {
    sqlite3 *db;
    pthread_mutex_t mu;
    coord_webauth_clock_fn now;
    void *now_ctx;
    uint8_t dummy_salt[SALT_LEN];
    EVP_MD *sha256; /* fetched once: an implicit fetch per digest would double a cached resolve's cost */
    slot_t cache[CACHE_SLOTS];
};

/* Forward migrations by PRAGMA user_version (0: an empty file): never edit one, append. */
static const char *const migrations[] = {
    /* 0 -> 1 */
    "CREATE TABLE accounts("
    " id INTEGER PRIMARY KEY, username TEXT NOT NULL UNIQUE, key TEXT NOT NULL UNIQUE,"
    " salt BLOB NOT NULL, iter INTEGER NOT NULL, hash BLOB NOT NULL,"
    " created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL) STRICT;"
    "CREATE TABLE credentials("
    " id INTEGER PRIMARY KEY, kind TEXT NOT NULL CHECK(kind IN ('session','api','operator')),"
    " token_sha256 BLOB NOT NULL UNIQUE, key TEXT NOT NULL, name TEXT NOT NULL DEFAULT '',"
    " csrf TEXT NOT NULL DEFAULT '', created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL DEFAULT 0,"
    " revoked_at INTEGER NOT NULL DEFAULT 0, last_used_at INTEGER NOT NULL DEFAULT 0) STRICT;"
    "CREATE INDEX credentials_key ON credentials(key, kind);"
    "CREATE TABLE login_failures("
    " id INTEGER PRIMARY KEY, scope TEXT NOT NULL CHECK(scope IN ('user','addr')), subject TEXT NOT NULL,"
    " at INTEGER NOT NULL) STRICT;"
    "CREATE INDEX login_failures_subject ON login_failures(scope, subject, at);"
    "CREATE INDEX login_failures_at ON login_failures(at);",
};
#define SCHEMA_VERSION ((int)(sizeof migrations / sizeof migrations[0]))

static int migrate(sqlite3 *db, bf_err_t *err) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK) return -1;
    int v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int(st, 0) : -1;
    sqlite3_finalize(st);
    if (v > SCHEMA_VERSION) return bf_err_set(err, "schema version %d is newer than this program's %d", v, SCHEMA_VERSION);
    for (; v >= 0 && v < SCHEMA_VERSION; v++) {
        char bump[64];
        snprintf(bump, sizeof bump, "PRAGMA user_version = %d;", v + 1);
        if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) return -1;
        if (sqlite3_exec(db, migrations[v], NULL, NULL, NULL) != SQLITE_OK ||
            sqlite3_exec(db, bump, NULL, NULL, NULL) != SQLITE_OK ||
            sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
            sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
            return -1;
        }
    }
    return v < 0 ? -1 : 0;
}

coord_webauth_t *coord_webauth_open(const char *path, bf_err_t *err) {
    if (!path || !*path) return bf_err_set(err, "web credentials: no path"), NULL;
    coord_webauth_t *a = calloc(1, sizeof *a);
    if (!a) return bf_err_set(err, "out of memory"), NULL;
    if (pthread_mutex_init(&a->mu, NULL)) {
        free(a);
        return bf_err_set(err, "web credentials: cannot create a mutex"), NULL;
    }
    /* password hashes live here: a new file is the owner's alone (SQLite gives -wal and -shm the
     * database file's mode) */
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0) close(fd);
    bf_err_t e = {{0}};
    if (RAND_bytes(a->dummy_salt, SALT_LEN) != 1 || !(a->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL))) {
        bf_err_set(err, "%s: OpenSSL has no random bytes or no SHA-256", path);
        coord_webauth_close(&a);
        return NULL;
    }
    if (sqlite3_open_v2(path, &a->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL) !=
            SQLITE_OK ||
        sqlite3_busy_timeout(a->db, 5000) != SQLITE_OK ||
        sqlite3_exec(a->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;", NULL, NULL, NULL) != SQLITE_OK ||
        migrate(a->db, &e)) {
        bf_err_set(err, "%s: %s", path, e.msg[0] ? e.msg : a->db ? sqlite3_errmsg(a->db) : "cannot open");
        coord_webauth_close(&a);
        return NULL;
    }
    return a;
}

void coord_webauth_close(coord_webauth_t **p) {
    if (!p || !*p) return;
    coord_webauth_t *a = *p;
    sqlite3_close(a->db);
    EVP_MD_free(a->sha256);
    pthread_mutex_destroy(&a->mu);
    OPENSSL_cleanse(a, sizeof *a); /* the cache holds CSRF tokens */
    free(a);
    *p = NULL;
}

void coord_webauth_set_clock(coord_webauth_t *a, coord_webauth_clock_fn now, void *ctx) {
    pthread_mutex_lock(&a->mu);
    a->now = now;
    a->now_ctx = ctx;
    pthread_mutex_unlock(&a->mu);
}

/* Under the mutex. */
static int64_t now_s(const coord_webauth_t *a) { return a->now ? a->now(a->now_ctx) : (int64_t)time(NULL); }

/* ---- SQL helpers: parameters bound from a format, one letter each: t text, i int64, b blob
 * (pointer, int length) ---- */

static sqlite3_stmt *vprep(coord_webauth_t *a, bf_err_t *err, const char *sql, const char *fmt, va_list ap) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(a->db, sql, -1, &st, NULL) != SQLITE_OK) {
        bf_err_set(err, "web.db: %s", sqlite3_errmsg(a->db));
        return NULL;
    }
    for (int i = 0; fmt[i]; i++) {
        int rc;
        if (fmt[i] == 't') {
            rc = sqlite3_bind_text(st, i + 1, va_arg(ap, const char *), -1, SQLITE_TRANSIENT);
        } else if (fmt[i] == 'i') {
            rc = sqlite3_bind_int64(st, i + 1, va_arg(ap, int64_t));
        } else {
            const void *p = va_arg(ap, const void *);
            rc = sqlite3_bind_blob(st, i + 1, p, va_arg(ap, int), SQLITE_TRANSIENT);
        }
        if (rc != SQLITE_OK) {
            bf_err_set(err, "web.db: %s", sqlite3_errmsg(a->db));
            sqlite3_finalize(st);
            return NULL;
        }
    }
    return st;
}

static sqlite3_stmt *prep(coord_webauth_t *a, bf_err_t *err, const char *sql, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    sqlite3_stmt *st = vprep(a, err, sql, fmt, ap);
    va_end(ap);
    return st;
}

/* Runs a statement that returns no rows: the rows it changed, or -1. */
static int run(coord_webauth_t *a, bf_err_t *err, const char *sql, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    sqlite3_stmt *st = vprep(a, err, sql, fmt, ap);
    va_end(ap);
    if (!st) return -1;
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) return bf_err_set(err, "web.db: %s", sqlite3_errmsg(a->db));
    return sqlite3_changes(a->db);
}

/* The single integer a query returns (0 if no row), or -1. */
static int64_t scalar(coord_webauth_t *a, bf_err_t *err, const char *sql, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    sqlite3_stmt *st = vprep(a, err, sql, fmt, ap);
    va_end(ap);
    if (!st) return -1;
    int rc = sqlite3_step(st);
    int64_t v = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return bf_err_set(err, "web.db: %s", sqlite3_errmsg(a->db));
    return v;
}

static int begin(coord_webauth_t *a, bf_err_t *err) {
    if (sqlite3_exec(a->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return bf_err_set(err, "web.db: %s", sqlite3_errmsg(a->db));
    return 0;
}

/* Commits when ok is 0, else rolls back; returns ok, or -1 if the commit failed. */
static int end(coord_webauth_t *a, int ok, bf_err_t *err) {
    if (ok == 0 && sqlite3_exec(a->db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK) return 0;
    if (ok == 0) bf_err_set(err, "web.db: %s", sqlite3_errmsg(a->db));
    sqlite3_exec(a->db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

/* ---- inputs ---- */

static int username_ok(const char *u) {
    size_t n = u ? strnlen(u, USER_MAX + 1) : 0;
    return n >= 1 && n <= USER_MAX && bf_utf8_valid(u, n);
}

static int key_ok(const char *k) {
    static const char z85[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";
    if (!k || strnlen(k, KEY_LEN + 1) != KEY_LEN) return 0;
    for (int i = 0; i < KEY_LEN; i++)
        if (!strchr(z85, k[i])) return 0;
    return 1;
}

/* ---- tokens ---- */

static void sha256(const coord_webauth_t *a, const void *p, size_t n, uint8_t out[32]) {
    unsigned len = 32;
    if (EVP_Digest(p, n, out, &len, a->sha256, NULL) != 1) memset(out, 0, 32); /* never for SHA-256 */
}

/* TOKEN_RAW random bytes as prefix + base64url without padding into out[COORD_TOKEN_MAX]. */
static int random_text(const char *prefix, char out[COORD_TOKEN_MAX]) {
    uint8_t raw[TOKEN_RAW];
    char b64[4 * ((TOKEN_RAW + 2) / 3) + 1];
    if (RAND_bytes(raw, sizeof raw) != 1) return -1;
    EVP_EncodeBlock((unsigned char *)b64, raw, sizeof raw);
    OPENSSL_cleanse(raw, sizeof raw);
    for (char *c = b64; *c; c++) {
        if (*c == '+') *c = '-';
        else if (*c == '/') *c = '_';
        else if (*c == '=') *c = 0;
    }
    snprintf(out, COORD_TOKEN_MAX, "%s%s", prefix, b64);
    OPENSSL_cleanse(b64, sizeof b64);
    return 0;
}

static const char *kind_prefix(coord_cred_kind_t k) {
    return k == COORD_CRED_SESSION ? "bfs_" : k == COORD_CRED_API ? "bft_" : "bfo_";
}

static const char *kind_name(coord_cred_kind_t k) {
    return k == COORD_CRED_SESSION ? "session" : k == COORD_CRED_API ? "api" : "operator";
}

/* A presented token's kind and SHA-256; -1 if it is no well-formed token of ours. */
static int token_parse(const coord_webauth_t *a, const char *t, coord_cred_kind_t *kind, uint8_t sha[32]) {
    if (!t || strnlen(t, COORD_TOKEN_MAX) != TOKEN_LEN) return -1;
    if (!strncmp(t, "bfs_", 4)) *kind = COORD_CRED_SESSION;
    else if (!strncmp(t, "bft_", 4)) *kind = COORD_CRED_API;
    else if (!strncmp(t, "bfo_", 4)) *kind = COORD_CRED_OPERATOR;
    else return -1;
    for (int i = 4; i < TOKEN_LEN; i++) {
        char c = t[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_'))
            return -1;
    }
    sha256(a, t, TOKEN_LEN, sha);
    return 0;
}

/* A new token of this kind in token_out and its hash in sha. */
static int token_make(const coord_webauth_t *a, coord_cred_kind_t kind, char token_out[COORD_TOKEN_MAX],
                      uint8_t sha[32], bf_err_t *err) {
    if (random_text(kind_prefix(kind), token_out)) return bf_err_set(err, "web credentials: no random bytes");
    sha256(a, token_out, strlen(token_out), sha);
    return 0;
}

/* ---- the cache (under the mutex) ---- */

static slot_t *slot_of(coord_webauth_t *a, const uint8_t sha[32]) {
    uint32_t h;
    memcpy(&h, sha, sizeof h); /* the hash of 32 random bytes: its first bytes are uniform already */
    return &a->cache[h % CACHE_SLOTS];
}

static void slot_drop(slot_t *s) { OPENSSL_cleanse(s, sizeof *s); }

/* Drops every cached credential with this id (id > 0) or of this kind (id == 0). */
static void cache_drop(coord_webauth_t *a, int64_t id, coord_cred_kind_t kind) {
    for (int i = 0; i < CACHE_SLOTS; i++) {
        slot_t *s = &a->cache[i];
        if (s->used && (id > 0 ? s->id == id : s->cred.kind == kind)) slot_drop(s);
    }
}

/* Loads a live credential into slot s: COORD_WA_OK, COORD_WA_BAD, or -1. */
static int cache_load(coord_webauth_t *a, const uint8_t sha[32], coord_cred_kind_t kind, slot_t *s, bf_err_t *err) {
    sqlite3_stmt *st = prep(a, err,
                            "SELECT c.id, c.kind, c.key, c.csrf, c.expires_at, c.revoked_at, c.last_used_at, u.username "
                            "FROM credentials c LEFT JOIN accounts u ON u.key = c.key WHERE c.token_sha256 = ?",
                            "b", sha, 32);
    if (!st) return -1;
    int rc = sqlite3_step(st), out = COORD_WA_BAD;
    if (rc == SQLITE_ROW) {
        const char *k = (const char *)sqlite3_column_text(st, 1), *key = (const char *)sqlite3_column_text(st, 2),
                   *csrf = (const char *)sqlite3_column_text(st, 3), *user = (const char *)sqlite3_column_text(st, 7);
        int op = kind == COORD_CRED_OPERATOR;
        if (k && !strcmp(k, kind_name(kind)) && sqlite3_column_int64(st, 5) == 0 && key && csrf &&
            (op || (user && strlen(user) <= USER_MAX && strlen(key) == KEY_LEN)) &&
            strlen(csrf) < COORD_TOKEN_MAX) {
            slot_drop(s);
            s->used = 1;
            memcpy(s->sha, sha, 32);
            s->id = sqlite3_column_int64(st, 0);
            s->touched = sqlite3_column_int64(st, 6);
            s->cred.kind = kind;
            snprintf(s->cred.key, sizeof s->cred.key, "%s", op ? "" : key);
            snprintf(s->cred.username, sizeof s->cred.username, "%s", op ? "" : user);
            snprintf(s->cred.csrf, sizeof s->cred.csrf, "%s", csrf);
            s->cred.expires_at = sqlite3_column_int64(st, 4);
            out = COORD_WA_OK;
        }
    } else if (rc != SQLITE_DONE) {
        out = bf_err_set(err, "web.db: %s", sqlite3_errmsg(a->db));
    }
    sqlite3_finalize(st);
    return out;
}

/* ---- passwords and accounts ---- */

int coord_password_derive(const char *password, size_t len, const uint8_t *salt, size_t salt_len, int iter,
                          uint8_t out[32]) {
    if (!password || !salt || !out || len > COORD_PASSWORD_MAX || salt_len == 0 || salt_len > 1024 || iter < 1)
        return -1;
    return PKCS5_PBKDF2_HMAC(password, (int)len, salt, (int)salt_len, iter, EVP_sha256(), 32, out) == 1 ? 0 : -1;
}

/* Stores an account's hash (under the mutex): COORD_WA_OK, COORD_WA_EXISTS when the username
 * belongs to another key or the key to another username, or -1. */
static int account_store(coord_webauth_t *a, const char *username, const char *key, const uint8_t salt[16], int iter,
                         const uint8_t hash[32], bf_err_t *err) {
    int64_t now = now_s(a);
    sqlite3_stmt *st = prep(a, err,
                            "INSERT INTO accounts(username, key, salt, iter, hash, created_at, updated_at) "
                            "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?6) ON CONFLICT(username) DO UPDATE SET "
                            "salt = excluded.salt, iter = excluded.iter, hash = excluded.hash, "
                            "updated_at = excluded.updated_at WHERE key = excluded.key",
                            "ttbibi", username, key, salt, SALT_LEN, (int64_t)iter, hash, HASH_LEN, now);
    if (!st) return -1;
    int rc = sqlite3_step(st), ext = sqlite3_extended_errcode(a->db);
    sqlite3_finalize(st);
    if (rc == SQLITE_DONE) return sqlite3_changes(a->db) == 1 ? COORD_WA_OK : COORD_WA_EXISTS;
    if (ext == SQLITE_CONSTRAINT_UNIQUE) return COORD_WA_EXISTS;
    return bf_err_set(err, "web.db: %s", sqlite3_errmsg(a->db));
}

static int account_args(const char *username, const char *key, bf_err_t *err) {
    if (!username_ok(username)) return bf_err_set(err, "a username is 1..%d bytes of UTF-8", USER_MAX);
    if (!key_ok(key)) return bf_err_set(err, "an account key is %d characters of Z85", KEY_LEN);
    return 0;
}

int coord_webauth_set_password(coord_webauth_t *a, const char *username, const char *key, const char *password,
                               bf_err_t *err) {
    if (account_args(username, key, err)) return -1;
    size_t n = password ? strnlen(password, COORD_PASSWORD_MAX + 1) : 0;
    if (n < COORD_PASSWORD_MIN || n > COORD_PASSWORD_MAX) return COORD_WA_WEAK;
    uint8_t salt[SALT_LEN], hash[HASH_LEN];
    if (RAND_bytes(salt, sizeof salt) != 1) return bf_err_set(err, "web credentials: no random bytes");
    if (coord_password_derive(password, n, salt, sizeof salt, COORD_PBKDF2_ITER, hash))
        return bf_err_set(err, "web credentials: PBKDF2 failed");
    pthread_mutex_lock(&a->mu);
    int rc = account_store(a, username, key, salt, COORD_PBKDF2_ITER, hash, err);
    pthread_mutex_unlock(&a->mu);
    OPENSSL_cleanse(hash, sizeof hash);
    return rc;
}

int coord_webauth_set_hash(coord_webauth_t *a, const char *username, const char *key, const uint8_t salt[16], int iter,
                           const uint8_t hash[32], bf_err_t *err) {
    if (account_args(username, key, err)) return -1;
    if (!salt || !hash || iter < COORD_PBKDF2_ITER) return COORD_WA_WEAK;
    if (iter > ITER_MAX) return bf_err_set(err, "%d PBKDF2 iterations: at most %d are accepted", iter, ITER_MAX);
    pthread_mutex_lock(&a->mu);
    int rc = account_store(a, username, key, salt, iter, hash, err);
    pthread_mutex_unlock(&a->mu);
    return rc;
}

int coord_webauth_exists(coord_webauth_t *a, const char *username, bf_err_t *err) {
    if (!username_ok(username)) return 0;
    pthread_mutex_lock(&a->mu);
    int64_t v = scalar(a, err, "SELECT 1 FROM accounts WHERE username = ?", "t", username);
    pthread_mutex_unlock(&a->mu);
    return v < 0 ? -1 : v ? 1 : 0;
}

/* ---- login ---- */

typedef struct {
    int found;
    uint8_t salt[SALT_LEN], hash[HASH_LEN];
    int iter;
    char key[KEY_LEN + 1];
    int64_t addr_row; /* the failure counted in advance against the address */
} attempt_t;

/* Under the mutex, before deriving: the limits, the failures counted in advance, the account.
 * COORD_WA_OK (go on and derive), COORD_WA_LIMITED, or -1. */
static int login_begin(coord_webauth_t *a, const char *username, const char *addr, attempt_t *t, bf_err_t *err) {
    int64_t now = now_s(a), since = now - COORD_LOGIN_WINDOW_S;
    const char *count = "SELECT COUNT(*) FROM login_failures WHERE scope = ? AND subject = ? AND at > ?";
    const char *add = "INSERT INTO login_failures(scope, subject, at) VALUES(?, ?, ?)";
    if (begin(a, err)) return -1; /* the check and the count in one step, also across processes */
    int64_t nu = username ? scalar(a, err, count, "tti", "user", username, since) : 0;
    int64_t na = nu < 0 ? -1 : scalar(a, err, count, "tti", "addr", addr, since);
    int rc = nu < 0 || na < 0 ? -1 : nu >= COORD_LOGIN_FAILS || na >= COORD_LOGIN_FAILS ? COORD_WA_LIMITED : 0;
    if (rc == 0 && (run(a, err, "DELETE FROM login_failures WHERE at <= ?", "i", since) < 0 ||
                    (username && run(a, err, add, "tti", "user", username, now) < 0) ||
                    run(a, err, add, "tti", "addr", addr, now) < 0))
        rc = -1;
    t->addr_row = sqlite3_last_insert_rowid(a->db);
    if (rc == COORD_WA_LIMITED) {
        sqlite3_exec(a->db, "ROLLBACK", NULL, NULL, NULL);
        return rc;
    }
    if (end(a, rc, err)) return -1;
    if (!username) return COORD_WA_OK;
    sqlite3_stmt *st = prep(a, err, "SELECT salt, iter, hash, key FROM accounts WHERE username = ?", "t", username);
    if (!st) return -1;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW && sqlite3_column_bytes(st, 0) == SALT_LEN && sqlite3_column_bytes(st, 2) == HASH_LEN &&
        sqlite3_column_bytes(st, 3) == KEY_LEN) {
        t->found = 1;
        memcpy(t->salt, sqlite3_column_blob(st, 0), SALT_LEN);
        t->iter = sqlite3_column_int(st, 1);
        memcpy(t->hash, sqlite3_column_blob(st, 2), HASH_LEN);
        memcpy(t->key, sqlite3_column_text(st, 3), KEY_LEN + 1);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return bf_err_set(err, "web.db: %s", sqlite3_errmsg(a->db));
    return COORD_WA_OK;
}

/* Under the mutex, after the password matched: takes back the failures counted in advance and
 * opens a session. 0 or -1. */
static int login_finish(coord_webauth_t *a, const char *username, const attempt_t *t, char token_out[COORD_TOKEN_MAX],
                        coord_cred_t *cred, bf_err_t *err) {
    int64_t now = now_s(a);
    uint8_t sha[32];
    memset(cred, 0, sizeof *cred);
    if (token_make(a, COORD_CRED_SESSION, token_out, sha, err)) return -1;
    if (random_text("", cred->csrf)) return bf_err_set(err, "web credentials: no random bytes");
    cred->kind = COORD_CRED_SESSION;
    memcpy(cred->key, t->key, sizeof cred->key);
    snprintf(cred->username, sizeof cred->username, "%s", username);
    cred->expires_at = now + COORD_SESSION_TTL_S;
    if (begin(a, err)) return -1;
    int rc = run(a, err, "DELETE FROM login_failures WHERE scope = 'user' AND subject = ?", "t", username) < 0 ||
                     run(a, err, "DELETE FROM login_failures WHERE id = ?", "i", t->addr_row) < 0 ||
                     run(a, err,
                         "DELETE FROM credentials WHERE kind = 'session' AND "
                         "(expires_at <= ?1 OR (revoked_at <> 0 AND revoked_at <= ?1))",
                         "i", now - SESSION_KEEP_S) < 0 ||
                     run(a, err,
                         "INSERT INTO credentials(kind, token_sha256, key, csrf, created_at, expires_at) "
                         "VALUES('session', ?, ?, ?, ?, ?)",
                         "bttii", sha, 32, cred->key, cred->csrf, now, cred->expires_at) < 0
                 ? -1
                 : 0;
    return end(a, rc, err);
}

int coord_webauth_login(coord_webauth_t *a, const char *username, const char *password, const char *addr,
                        char token_out[COORD_TOKEN_MAX], coord_cred_t *cred, bf_err_t *err) {
    char where[ADDR_MAX + 1];
    snprintf(where, sizeof where, "%s", addr ? addr : "");
    const char *user = username_ok(username) ? username : NULL; /* an impossible name counts only against addr */
    size_t plen = password ? strnlen(password, COORD_PASSWORD_MAX + 1) : COORD_PASSWORD_MAX + 1;
    attempt_t t;
    memset(&t, 0, sizeof t);
    token_out[0] = 0;

    pthread_mutex_lock(&a->mu);
    int rc = login_begin(a, user, where, &t, err);
    pthread_mutex_unlock(&a->mu);
    if (rc != COORD_WA_OK) return rc;
    if (!user || plen > COORD_PASSWORD_MAX) return COORD_WA_BAD;

    /* the slow part, unlocked; an unknown name costs what a known one does */
    uint8_t got[HASH_LEN];
    if (coord_password_derive(password, plen, t.found ? t.salt : a->dummy_salt, SALT_LEN,
                              t.found ? t.iter : COORD_PBKDF2_ITER, got))
        return bf_err_set(err, "web credentials: PBKDF2 failed");
    int match = CRYPTO_memcmp(got, t.hash, HASH_LEN) == 0 && t.found;
    OPENSSL_cleanse(got, sizeof got);
    OPENSSL_cleanse(t.hash, sizeof t.hash);
    if (!match) return COORD_WA_BAD;

    pthread_mutex_lock(&a->mu);
    rc = login_finish(a, user, &t, token_out, cred, err);
    pthread_mutex_unlock(&a->mu);
    if (rc) {
        OPENSSL_cleanse(token_out, COORD_TOKEN_MAX);
        memset(cred, 0, sizeof *cred);
        return -1;
    }
    return COORD_WA_OK;
}

/* ---- resolving and ending tokens ---- */

int coord_webauth_resolve(coord_webauth_t *a, const char *token, coord_cred_t *cred, bf_err_t *err) {
    coord_cred_kind_t kind;
    uint8_t sha[32];
    if (token_parse(a, token, &kind, sha)) return COORD_WA_BAD;
    pthread_mutex_lock(&a->mu);
    int64_t now = now_s(a);
    slot_t *s = slot_of(a, sha);
    int rc = COORD_WA_OK;
    if (!s->used || CRYPTO_memcmp(s->sha, sha, 32) != 0) rc = cache_load(a, sha, kind, s, err);
    if (rc == COORD_WA_OK && s->cred.expires_at && now >= s->cred.expires_at) {
        slot_drop(s);
        rc = COORD_WA_BAD;
    }
    if (rc == COORD_WA_OK && (now - s->touched >= TOUCH_S || now < s->touched)) {
        /* also notices a revocation by another process. Bookkeeping, so no fsync of its own under
         * the mutex (WAL at synchronous=NORMAL): the next FULL commit makes it durable too. */
        sqlite3_exec(a->db, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL);
        int n = run(a, err, "UPDATE credentials SET last_used_at = ? WHERE id = ? AND revoked_at = 0", "ii", now, s->id);
        sqlite3_exec(a->db, "PRAGMA synchronous=FULL", NULL, NULL, NULL);
        if (n < 0) {
            rc = -1;
        } else if (n == 0) {
            slot_drop(s);
            rc = COORD_WA_BAD;
        } else {
            s->touched = now;
        }
    }
    if (rc == COORD_WA_OK) *cred = s->cred;
    pthread_mutex_unlock(&a->mu);
    return rc;
}

int coord_webauth_logout(coord_webauth_t *a, const char *token, bf_err_t *err) {
    coord_cred_kind_t kind;
    uint8_t sha[32];
    if (token_parse(a, token, &kind, sha) || kind != COORD_CRED_SESSION) return COORD_WA_BAD;
    pthread_mutex_lock(&a->mu);
    int64_t now = now_s(a);
    slot_t *s = slot_of(a, sha);
    if (s->used && !CRYPTO_memcmp(s->sha, sha, 32)) slot_drop(s);
    int n = run(a, err,
                "UPDATE credentials SET revoked_at = ?1 WHERE token_sha256 = ?2 AND kind = 'session' "
                "AND revoked_at = 0 AND expires_at > ?1",
                "ib", now, sha, 32);
    pthread_mutex_unlock(&a->mu);
    return n < 0 ? -1 : n ? COORD_WA_OK : COORD_WA_BAD;
}

/* ---- API tokens ---- */

int coord_webauth_token_new(coord_webauth_t *a, const char *key, const char *name, char token_out[COORD_TOKEN_MAX],
                            int64_t *id, bf_err_t *err) {
    token_out[0] = 0;
    if (!name) name = "";
    size_t n = strnlen(name, NAME_MAX_BYTES + 1);
    if (n > NAME_MAX_BYTES || !bf_utf8_valid(name, n))
        return bf_err_set(err, "a token name is at most %d bytes of UTF-8", NAME_MAX_BYTES);
    if (!key_ok(key)) return COORD_WA_BAD;
    uint8_t sha[32];
    if (token_make(a, COORD_CRED_API, token_out, sha, err)) return -1;
    pthread_mutex_lock(&a->mu);
    int64_t now = now_s(a);
    int64_t have = scalar(a, err, "SELECT COUNT(*) FROM accounts WHERE key = ?", "t", key);
    int64_t live = have <= 0 ? have
                             : scalar(a, err,
                                      "SELECT COUNT(*) FROM credentials WHERE kind = 'api' AND key = ? AND revoked_at = 0",
                                      "t", key);
    int rc = COORD_WA_OK;
    if (have < 0 || live < 0) rc = -1;
    else if (have == 0) rc = COORD_WA_BAD;
    else if (live >= API_TOKENS_MAX)
        rc = bf_err_set(err, "the account has %d live API tokens: revoke one first", API_TOKENS_MAX);
    else if (run(a, err, "INSERT INTO credentials(kind, token_sha256, key, name, created_at) VALUES('api', ?, ?, ?, ?)",
                 "btti", sha, 32, key, name, now) < 0)
        rc = -1;
    else if (id)
        *id = sqlite3_last_insert_rowid(a->db);
    pthread_mutex_unlock(&a->mu);
    if (rc != COORD_WA_OK) OPENSSL_cleanse(token_out, COORD_TOKEN_MAX);
    return rc;
}

int coord_webauth_tokens(coord_webauth_t *a, const char *key, coord_token_info_t **out, size_t *n, bf_err_t *err) {
    *out = NULL;
    *n = 0;
    if (!key_ok(key)) return COORD_WA_OK; /* no account has it, so it has no tokens */
    pthread_mutex_lock(&a->mu);
    sqlite3_stmt *st = prep(a, err,
                            "SELECT id, name, created_at, last_used_at FROM credentials "
                            "WHERE kind = 'api' AND key = ? AND revoked_at = 0 ORDER BY created_at DESC, id DESC",
                            "t", key);
    int rc = st ? 0 : -1;
    size_t cap = 0;
    while (st && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? 2 * cap : 8;
            coord_token_info_t *grown = realloc(*out, cap * sizeof **out);
            if (!grown) {
                rc = SQLITE_NOMEM;
                break;
            }
            *out = grown;
        }
        coord_token_info_t *t = &(*out)[(*n)++];
        memset(t, 0, sizeof *t);
        t->id = sqlite3_column_int64(st, 0);
        const char *name = (const char *)sqlite3_column_text(st, 1);
        snprintf(t->name, sizeof t->name, "%s", name ? name : "");
        t->created_at = sqlite3_column_int64(st, 2);
        t->last_used_at = sqlite3_column_int64(st, 3);
    }
    if (st && rc != SQLITE_DONE)
        rc = bf_err_set(err, "web.db: %s", rc == SQLITE_NOMEM ? "out of memory" : sqlite3_errmsg(a->db));
    else if (st)
        rc = COORD_WA_OK;
    sqlite3_finalize(st);
    pthread_mutex_unlock(&a->mu);
    if (rc) {
        free(*out);
        *out = NULL;
        *n = 0;
    }
    return rc;
}

int coord_webauth_token_revoke(coord_webauth_t *a, const char *key, int64_t id, bf_err_t *err) {
    if (!key_ok(key) || id <= 0) return COORD_WA_BAD;
    pthread_mutex_lock(&a->mu);
    int n = run(a, err,
                "UPDATE credentials SET revoked_at = ? WHERE id = ? AND key = ? AND kind = 'api' AND revoked_at = 0",
                "iit", now_s(a), id, key);
    if (n > 0) cache_drop(a, id, COORD_CRED_API);
    pthread_mutex_unlock(&a->mu);
    return n < 0 ? -1 : n ? COORD_WA_OK : COORD_WA_BAD;
}

/* ---- the operator ---- */

int coord_webauth_operator_new(coord_webauth_t *a, char token_out[COORD_TOKEN_MAX], bf_err_t *err) {
    uint8_t sha[32];
    if (token_make(a, COORD_CRED_OPERATOR, token_out, sha, err)) return -1;
    pthread_mutex_lock(&a->mu);
    int64_t now = now_s(a);
    int rc = begin(a, err);
    if (rc == 0) {
        int bad = run(a, err, "UPDATE credentials SET revoked_at = ? WHERE kind = 'operator' AND revoked_at = 0", "i",
                      now) < 0 ||
                  run(a, err, "INSERT INTO credentials(kind, token_sha256, key, created_at) VALUES('operator', ?, '', ?)",
                      "bi", sha, 32, now) < 0;
        rc = end(a, bad ? -1 : 0, err);
    }
    if (rc == 0) cache_drop(a, 0, COORD_CRED_OPERATOR);
    pthread_mutex_unlock(&a->mu);
    if (rc) OPENSSL_cleanse(token_out, COORD_TOKEN_MAX);
    return rc;
}

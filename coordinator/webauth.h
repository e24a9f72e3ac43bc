/* webauth.h: the web credentials of the coordinator's HTTPS API, kept in HOME/web.db (SQLite),
 * apart from the ledger: accounts (a ledger user's name and CURVE public key with a password
 * hash), sessions, API tokens, the operator credential and failed-login counters.
 *
 * Passwords: PBKDF2-HMAC-SHA256 (OpenSSL), COORD_PBKDF2_ITER iterations or more, a random 16-byte
 * salt per account, compared in constant time. Session and API tokens: 32 random bytes shown once
 * (base64url, with a prefix: "bfs_" session, "bft_" API token, "bfo_" operator), stored as their
 * SHA-256 only. Every call is thread-safe (the HTTP server's threads share one handle; one mutex
 * guards the database connection and the in-memory caches of resolved tokens). */
#ifndef BF_COORD_WEBAUTH_H
#define BF_COORD_WEBAUTH_H

#include <stddef.h>
#include <stdint.h>

#include "bf_util.h"

#define COORD_PBKDF2_ITER 600000          /* the least accepted for a stored hash */
#define COORD_SESSION_TTL_S (12 * 3600)   /* a session lasts this long after login */
#define COORD_LOGIN_FAILS 5               /* failed logins per user, or per address, ... */
#define COORD_LOGIN_WINDOW_S 900          /* ... within this window; then refused until it passes */
#define COORD_PASSWORD_MIN 8              /* bytes */
#define COORD_PASSWORD_MAX 256
#define COORD_TOKEN_MAX 64                /* a token's text with prefix and NUL fits in this */

typedef struct coord_webauth coord_webauth_t;

/* Outcomes; -1 is a storage failure (err set). */
enum {
    COORD_WA_OK = 0,
    COORD_WA_BAD = 1,     /* wrong user or password (one answer for both), unknown/expired/revoked token */
    COORD_WA_LIMITED = 2, /* too many failed logins for this user or address: refused without checking */
    COORD_WA_EXISTS = 3,  /* an account with that name already exists */
    COORD_WA_WEAK = 4,    /* password shorter than COORD_PASSWORD_MIN or longer than COORD_PASSWORD_MAX */
};

/* What a resolved token is. */
typedef enum { COORD_CRED_SESSION = 1, COORD_CRED_API = 2, COORD_CRED_OPERATOR = 3 } coord_cred_kind_t;

typedef struct {
    coord_cred_kind_t kind;
    char key[41];                /* the account's CURVE public key (Z85); "" for the operator */
    char username[65];           /* "" for the operator */
    char csrf[COORD_TOKEN_MAX];  /* sessions: the CSRF token state changes must send back */
    int64_t expires_at;          /* unix seconds; 0: does not expire (API and operator tokens) */
} coord_cred_t;

typedef struct {
    int64_t id;
    char name[65];
    int64_t created_at, last_used_at; /* unix seconds; last_used 0: never */
} coord_token_info_t;

coord_webauth_t *coord_webauth_open(const char *path, bf_err_t *err);
void coord_webauth_close(coord_webauth_t **p);

/* PBKDF2-HMAC-SHA256 of password with salt over iter iterations into out; 0, or -1. */
int coord_password_derive(const char *password, size_t len, const uint8_t *salt, size_t salt_len, int iter,
                          uint8_t out[32]);

/* Gives the account (username, key) a password, replacing any: derives a fresh salted hash (slow:
 * run it on an HTTP thread, never on the socket thread). COORD_WA_OK, COORD_WA_WEAK, or -1. */
int coord_webauth_set_password(coord_webauth_t *a, const char *username, const char *key, const char *password,
                               bf_err_t *err);
/* The same with a hash derived elsewhere (blockfed-client password derives it itself and sends
 * salt, iterations and hash over CURVE): iter must be >= COORD_PBKDF2_ITER and salt 16 bytes, else
 * COORD_WA_WEAK. Fast: the socket thread may call it. */
int coord_webauth_set_hash(coord_webauth_t *a, const char *username, const char *key, const uint8_t salt[16], int iter,
                           const uint8_t hash[32], bf_err_t *err);
/* 1 if an account has this username, 0 if not, -1 on failure. */
int coord_webauth_exists(coord_webauth_t *a, const char *username, bf_err_t *err);

/* A login attempt from address addr: COORD_WA_OK with *cred (a new session: token_out is its
 * token, cred->csrf its CSRF token, expiring COORD_SESSION_TTL_S from now), COORD_WA_BAD (counted
 * against the user and the address), COORD_WA_LIMITED, or -1. */
int coord_webauth_login(coord_webauth_t *a, const char *username, const char *password, const char *addr,
                        char token_out[COORD_TOKEN_MAX], coord_cred_t *cred, bf_err_t *err);
/* What a presented token (any kind) stands for: COORD_WA_OK with *cred, COORD_WA_BAD, or -1. */
int coord_webauth_resolve(coord_webauth_t *a, const char *token, coord_cred_t *cred, bf_err_t *err);
/* Ends a session (logout): COORD_WA_OK, COORD_WA_BAD if it was no live session, or -1. */
int coord_webauth_logout(coord_webauth_t *a, const char *token, bf_err_t *err);

/* API tokens of the account with CURVE key `key`. */
int coord_webauth_token_new(coord_webauth_t *a, const char *key, const char *name, char token_out[COORD_TOKEN_MAX],
                            int64_t *id, bf_err_t *err);
/* The account's live tokens, newest first (*out malloc'd, *n entries). */
int coord_webauth_tokens(coord_webauth_t *a, const char *key, coord_token_info_t **out, size_t *n, bf_err_t *err);
/* COORD_WA_OK, COORD_WA_BAD (no such live token of this account), or -1. */
int coord_webauth_token_revoke(coord_webauth_t *a, const char *key, int64_t id, bf_err_t *err);

/* The operator credential: a new "bfo_" token replacing any earlier one (init writes it to
 * HOME/operator.token, mode 0600). */
int coord_webauth_operator_new(coord_webauth_t *a, char token_out[COORD_TOKEN_MAX], bf_err_t *err);

/* ---- tests ----
 * The clock a handle reads (unix seconds; ctx is passed back), so a test can step past session
 * expiry and the failed-login window without sleeping; NULL restores the system clock. */
typedef int64_t (*coord_webauth_clock_fn)(void *ctx);
void coord_webauth_set_clock(coord_webauth_t *a, coord_webauth_clock_fn now, void *ctx);

#endif

/* cmd_web.c: the account's credentials for the HTTPS API, over CURVE: `password` (the client
 * derives the PBKDF2-HMAC-SHA256 hash itself, so the password never leaves this machine) and
 * `token create NAME` (an API token for programs, shown once). */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "client.h"

#define PBKDF2_ITER 600000 /* the coordinator's least (coordinator/webauth.h) */

static const char password_help[] =
    "usage: blockfed-client password [--json]\n"
    "\n"
    "Sets the password this account logs in with on the coordinator's HTTPS API (the web\n"
    "dashboard, curl). Reads it from standard input (without echo on a terminal), 8..256 bytes,\n"
    "derives its PBKDF2-HMAC-SHA256 hash (600,000 iterations, a random salt) and sends the hash\n"
    "over CURVE; the password itself is never sent.\n"
    "\n"
    "exit status: 0 set, 1 runtime or coordinator error, 2 usage error\n";

/* A line from stdin into buf (no echo on a terminal); its length, or -1. */
static int read_secret(char *buf, size_t cap) {
    struct termios old, quiet;
    int tty = isatty(0) && tcgetattr(0, &old) == 0;
    if (tty) {
        fputs("password: ", stderr);
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        tcsetattr(0, TCSAFLUSH, &quiet);
    }
    char *ok = fgets(buf, (int)cap, stdin);
    if (tty) tcsetattr(0, TCSAFLUSH, &old), fputc('\n', stderr);
    if (!ok) return -1;
    size_t n = strcspn(buf, "\r\n");
    if (buf[n] == 0 && n + 1 == cap) return -1; /* longer than the buffer */
    buf[n] = 0;
    return (int)n;
}

static void hex(const uint8_t *b, size_t n, char *out) {
    for (size_t i = 0; i < n; i++) snprintf(out + 2 * i, 3, "%02x", b[i]);
}

bf_cli_outcome_t bf_cmd_password(int argc, char **argv, bf_cli_ctx_t *ctx) {
    int json;
    bf_cli_args_t rc = bf_cli_parse_plain(argc, argv, ctx, &json, password_help);
    if (rc == CLIENT_ARGS_HELP) return CLIENT_OK;
    if (!rc && optind != argc) rc = bf_cli_error("password takes no arguments (it reads the password from stdin)");
    if (rc) return fputs("try 'blockfed-client password --help'\n", stderr), CLIENT_USAGE;
    char pw[260];
    int n = read_secret(pw, sizeof pw);
    if (n < 8 || n > 256) {
        OPENSSL_cleanse(pw, sizeof pw);
        return bf_cli_error("a password has 8..256 bytes"), CLIENT_USAGE;
    }
    uint8_t salt[16], hash[32];
    char salt_hex[33], hash_hex[65];
    int ok = RAND_bytes(salt, sizeof salt) == 1 &&
             PKCS5_PBKDF2_HMAC(pw, n, salt, sizeof salt, PBKDF2_ITER, EVP_sha256(), sizeof hash, hash) == 1;
    OPENSSL_cleanse(pw, sizeof pw);
    if (!ok) return bf_cli_fail("cannot derive the password's hash");
    hex(salt, sizeof salt, salt_hex);
    hex(hash, sizeof hash, hash_hex);
    bf_msg_t *req = bf_msg_new("PASSWORD_SET", 0);
    if (req && (bf_msg_set_str(req, "salt", salt_hex) || bf_msg_set_uint(req, "iterations", PBKDF2_ITER) ||
                bf_msg_set_str(req, "hash", hash_hex)))
        bf_msg_destroy(&req);
    return bf_cli_simple(ctx, req, "OK", NULL, 1, json);
}

static const char token_help[] =
    "usage: blockfed-client token create NAME [--json]\n"
    "\n"
    "Creates an API token for programs calling the coordinator's HTTPS API as this account\n"
    "(Authorization: Bearer TOKEN). It is printed once; the coordinator keeps only its hash.\n"
    "Revoke it with DELETE /api/v1/tokens/ID (docs/HTTP_API.md).\n"
    "\n"
    "exit status: 0 created, 1 runtime or coordinator error, 2 usage error\n";

bf_cli_outcome_t bf_cmd_token(int argc, char **argv, bf_cli_ctx_t *ctx) {
    int json;
    bf_cli_args_t rc = bf_cli_parse_plain(argc, argv, ctx, &json, token_help);
    if (rc == CLIENT_ARGS_HELP) return CLIENT_OK;
    if (!rc && (optind + 2 != argc || strcmp(argv[optind], "create"))) rc = bf_cli_error("usage: token create NAME");
    if (!rc && (!argv[optind + 1][0] || strlen(argv[optind + 1]) > 64)) rc = bf_cli_error("NAME has 1..64 bytes");
    if (rc) return fputs("try 'blockfed-client token --help'\n", stderr), CLIENT_USAGE;
    bf_msg_t *req = bf_msg_new("TOKEN_CREATE", 0);
    if (req && bf_msg_set_str(req, "name", argv[optind + 1])) bf_msg_destroy(&req);
    return bf_cli_simple(ctx, req, "OK", "result", 0, json); /* a retry would make a second token */
}

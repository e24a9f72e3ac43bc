/* client.h: what the blockfed-client subcommands share (argument parsing helpers, errors). */
#ifndef BF_CLIENT_H
#define BF_CLIENT_H

#include <limits.h>
#include <stdint.h>

#include "bf_conn.h"
#include "bf_profile.h"

/* Prints "blockfed-client: MSG" to stderr; returns -1 (usage errors) / 1 (runtime failures). */
int bf_cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int bf_cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Strict numeric parsing: the whole string, in [lo, hi], else a message naming the flag. */
int bf_cli_int(const char *s, long long lo, long long hi, long long *v, const char *flag);
int bf_cli_double(const char *s, double lo, double hi, double *v, const char *flag);

int bf_cmd_train(int argc, char **argv);

/* ---- participant commands (issue 4) ------------------------------------------------------ */

/* Global options, given before the command name (main.c) or after it (every command's parser). */
typedef struct {
    const char *home; /* --home DIR, else $BLOCKFED_HOME, else $HOME/.blockfed */
    int timeout_ms;   /* --timeout SECONDS for one request (default 10 s) */
} bf_cli_ctx_t;

/* getopt_long entries every participant command accepts, and their handling: 1 if c was one of
 * them (ctx updated; -1 stored in *rc on a bad value), 0 otherwise. */
#define BF_CLI_COMMON_OPTS {"home", required_argument, 0, 0x101}, {"timeout", required_argument, 0, 0x102}
int bf_cli_common_opt(int c, const char *arg, bf_cli_ctx_t *ctx, int *rc);

/* Loads the profile and opens the connection; on failure prints why and returns 1. */
int bf_cli_open(const bf_cli_ctx_t *ctx, bf_profile_t *p, bf_conn_t **conn);
/* One request/reply: sends *req (consumed), expects a reply of type expect. Idempotent requests
 * are retried (Lazy Pirate); others are sent once. Returns 0 with *reply, or 1 after printing
 * "coordinator: CODE: message" for an ERROR, or what else went wrong. */
int bf_cli_roundtrip(const bf_cli_ctx_t *ctx, bf_conn_t *conn, bf_msg_t **req, const char *expect, int idempotent,
                     bf_msg_t **reply);
/* Prints an `any` value: JSON (one line) or readable text. NULL prints {} / "ok". */
void bf_cli_print_any(const msgpack_object *o, int json);

/* The usual read/act command: one request, one reply of type expect, whose `any` field (NULL:
 * none) is printed. Returns the exit status. */
int bf_cli_simple(const bf_cli_ctx_t *ctx, bf_msg_t *req, const char *expect, const char *field, int idempotent,
                  int json);
/* Options: only the common ones plus --json/--help; positional arguments left from optind.
 * Returns 0, -1 (usage) or 3 (--help printed). */
int bf_cli_parse_plain(int argc, char **argv, bf_cli_ctx_t *ctx, int *json, const char *help);

int bf_cmd_register(int argc, char **argv, bf_cli_ctx_t *ctx);
int bf_cmd_recharge(int argc, char **argv, bf_cli_ctx_t *ctx);
int bf_cmd_assets(int argc, char **argv, bf_cli_ctx_t *ctx);
int bf_cmd_history(int argc, char **argv, bf_cli_ctx_t *ctx);
int bf_cmd_task(int argc, char **argv, bf_cli_ctx_t *ctx);
int bf_cmd_leave(int argc, char **argv, bf_cli_ctx_t *ctx);
int bf_cmd_blocks(int argc, char **argv, bf_cli_ctx_t *ctx);
int bf_cmd_model(int argc, char **argv, bf_cli_ctx_t *ctx);
int bf_cmd_join(int argc, char **argv, bf_cli_ctx_t *ctx);

#endif

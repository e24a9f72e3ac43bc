/* client.h: what the blockfed-client and blockfed-predict commands share: the outcomes a command
 * and a command-line parser come to, argument parsing helpers, error messages, the profile +
 * connection opening and the one-request/one-reply conventions (cli_common.c). */
#ifndef BF_CLIENT_H
#define BF_CLIENT_H

#include <limits.h>
#include <stdint.h>

#include "bf_conn.h"
#include "bf_profile.h"

/* What a command comes to. main() returns it as the process exit status, so the values are the
 * ones documented in every --help and in docs/CLIENT.md. */
typedef enum {
    CLIENT_OK = 0,    /* done */
    CLIENT_ERROR = 1, /* runtime or coordinator error (already reported on stderr) */
    CLIENT_USAGE = 2, /* bad command line (already reported on stderr) */
} bf_cli_outcome_t;

/* What parsing a command line comes to. */
typedef enum {
    CLIENT_ARGS_OK = 0, /* parsed; the command runs */
    CLIENT_ARGS_BAD,    /* a usage error, already reported on stderr */
    CLIENT_ARGS_HELP,   /* --help printed on stdout: the command is done (CLIENT_OK) */
} bf_cli_args_t;

/* Print "PROGRAM: MSG" to stderr. bf_cli_error is for usage errors, bf_cli_fail for runtime
 * failures; each returns the matching result so a caller can `return bf_cli_fail(...)`. */
bf_cli_args_t bf_cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
bf_cli_outcome_t bf_cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Strict numeric parsing: the whole string, in [lo, hi], else a message naming the flag. */
bf_cli_args_t bf_cli_int(const char *s, long long lo, long long hi, long long *v, const char *flag);
bf_cli_args_t bf_cli_double(const char *s, double lo, double hi, double *v, const char *flag);

bf_cli_outcome_t bf_cmd_train(int argc, char **argv);

/* ---- participant commands ---------------------------------------------------------------- */

/* Global options, given before the command name (main.c) or after it (every command's parser). */
typedef struct {
    const char *home; /* --home DIR, else $BLOCKFED_HOME, else $HOME/.blockfed */
    int timeout_ms;   /* --timeout SECONDS for one request (default 10 s) */
} bf_cli_ctx_t;

/* getopt_long entries every participant command accepts, and their handling: 1 if c was one of
 * them (ctx updated; CLIENT_ARGS_BAD stored in *rc on a bad value), 0 otherwise. */
#define BF_CLI_COMMON_OPTS {"home", required_argument, 0, 0x101}, {"timeout", required_argument, 0, 0x102}
int bf_cli_common_opt(int c, const char *arg, bf_cli_ctx_t *ctx, bf_cli_args_t *rc);

/* Loads the profile and opens the connection; on failure prints why and returns CLIENT_ERROR. */
bf_cli_outcome_t bf_cli_open(const bf_cli_ctx_t *ctx, bf_profile_t *p, bf_conn_t **conn);
/* One request/reply: sends *req (consumed), expects a reply of type expect. Idempotent requests
 * are retried (Lazy Pirate); others are sent once. Returns CLIENT_OK with *reply, or
 * CLIENT_ERROR after printing "coordinator: CODE: message" for an ERROR, or what else went wrong. */
bf_cli_outcome_t bf_cli_roundtrip(const bf_cli_ctx_t *ctx, bf_conn_t *conn, bf_msg_t **req, const char *expect,
                                  int idempotent, bf_msg_t **reply);
/* Prints an `any` value: JSON (one line) or readable text. NULL prints {} / "ok". */
void bf_cli_print_any(const msgpack_object *o, int json);

/* The usual read/act command: one request (NULL: out of memory, reported), one reply of type
 * expect, whose `any` field (NULL: none) is printed. */
bf_cli_outcome_t bf_cli_simple(const bf_cli_ctx_t *ctx, bf_msg_t *req, const char *expect, const char *field,
                               int idempotent, int json);
/* Options: only the common ones plus --json/--help (which prints help); positional arguments
 * left from optind. */
bf_cli_args_t bf_cli_parse_plain(int argc, char **argv, bf_cli_ctx_t *ctx, int *json, const char *help);

bf_cli_outcome_t bf_cmd_register(int argc, char **argv, bf_cli_ctx_t *ctx);
bf_cli_outcome_t bf_cmd_recharge(int argc, char **argv, bf_cli_ctx_t *ctx);
bf_cli_outcome_t bf_cmd_assets(int argc, char **argv, bf_cli_ctx_t *ctx);
bf_cli_outcome_t bf_cmd_history(int argc, char **argv, bf_cli_ctx_t *ctx);
/* cmd_web.c */
bf_cli_outcome_t bf_cmd_password(int argc, char **argv, bf_cli_ctx_t *ctx);
bf_cli_outcome_t bf_cmd_token(int argc, char **argv, bf_cli_ctx_t *ctx);
bf_cli_outcome_t bf_cmd_withdraw(int argc, char **argv, bf_cli_ctx_t *ctx);
bf_cli_outcome_t bf_cmd_withdrawals(int argc, char **argv, bf_cli_ctx_t *ctx);
bf_cli_outcome_t bf_cmd_statement(int argc, char **argv, bf_cli_ctx_t *ctx);
bf_cli_outcome_t bf_cmd_task(int argc, char **argv, bf_cli_ctx_t *ctx);
bf_cli_outcome_t bf_cmd_leave(int argc, char **argv, bf_cli_ctx_t *ctx);
bf_cli_outcome_t bf_cmd_blocks(int argc, char **argv, bf_cli_ctx_t *ctx);
bf_cli_outcome_t bf_cmd_model(int argc, char **argv, bf_cli_ctx_t *ctx);
bf_cli_outcome_t bf_cmd_join(int argc, char **argv, bf_cli_ctx_t *ctx);

#endif

/* main.c: blockfed-client, the participant's program: `blockfed-client [GLOBAL] COMMAND [options]`.
 * Owns the command table, the global options given before the command name and the top-level
 * usage text; each command (cmd_*.c) parses its own options and returns its outcome, which is
 * the process exit status. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bf_models.h"
#include "client.h"


static bf_cli_outcome_t run_train(int argc, char **argv, bf_cli_ctx_t *ctx) {
    (void)ctx;
    return bf_cmd_train(argc, argv);
}

static const struct {
    const char *name, *what;
    bf_cli_outcome_t (*run)(int, char **, bf_cli_ctx_t *);
} commands[] = {
    {"train", "train a model centrally on a dataset and write a model file", run_train},
    {"register", "create the profile (key pair) and register a user with a coordinator", bf_cmd_register},
    {"recharge", "add money to the account", bf_cmd_recharge},
    {"withdraw", "withdraw money from the account (held until the operator pays it out)", bf_cmd_withdraw},
    {"withdrawals", "the account's withdrawals and how each ended", bf_cmd_withdrawals},
    {"task", "task create|list|status|cancel", bf_cmd_task},
    {"join", "join a task and train its rounds until it ends", bf_cmd_join},
    {"leave", "leave a task", bf_cmd_leave},
    {"blocks", "blocks buy TASK N: buy extra data blocks (10 coins each)", bf_cmd_blocks},
    {"assets", "balances and shares", bf_cmd_assets},
    {"history", "ledger entries of the account, newest first", bf_cmd_history},
    {"statement", "movements with balances before and after, opening and closing (--csv)", bf_cmd_statement},
    {"model", "model download TASK --out FILE: the task's global model", bf_cmd_model},
    {"password", "set the password for the HTTPS API (read from stdin)", bf_cmd_password},
    {"token", "token create NAME: an API token for the HTTPS API", bf_cmd_token},
};

static bf_cli_outcome_t usage(FILE *f) {
    fprintf(f, "usage: blockfed-client [--home DIR] [--timeout S] COMMAND [options]   (COMMAND --help for its options)\n"
               "\n"
               "  --home DIR     profile directory (default $BLOCKFED_HOME, else ~/.blockfed)\n"
               "  --timeout S    seconds to wait for each reply of the coordinator (default 10)\n"
               "\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].what);
    fprintf(f, "\nexit status: 0 ok, 1 runtime or coordinator error, 2 usage error (docs/CLIENT.md)\n");
    return f == stdout ? CLIENT_OK : CLIENT_USAGE;
}


/* Global options before the command name: --home DIR, --home=DIR, --timeout S, --timeout=S. */
static bf_cli_args_t parse_globals(int argc, char **argv, bf_cli_ctx_t *ctx, int *i) {
    for (*i = 1; *i < argc && !strncmp(argv[*i], "--", 2); (*i)++) {
        const char *a = argv[*i], *val = NULL;
        int code = !strncmp(a, "--home", 6) ? 0x101 : !strncmp(a, "--timeout", 9) ? 0x102 : 0;
        size_t len = code == 0x101 ? 6 : 9;
        if (!code || (a[len] && a[len] != '=')) return CLIENT_ARGS_OK; /* --help and friends */
        if (a[len] == '=') val = a + len + 1;
        else if (*i + 1 < argc) val = argv[++(*i)];
        else return bf_cli_error("%s needs a value", a);
        bf_cli_args_t rc = CLIENT_ARGS_OK;
        bf_cli_common_opt(code, val, ctx, &rc);
        if (rc) return rc;
    }
    return CLIENT_ARGS_OK;
}

int main(int argc, char **argv) {
    bf_blas_init(argc, argv);
    bf_cli_ctx_t ctx = {.timeout_ms = 10000};
    int i;
    if (parse_globals(argc, argv, &ctx, &i)) return CLIENT_USAGE;
    if (i >= argc) return usage(stderr);
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h") || !strcmp(argv[i], "help")) return usage(stdout);
    for (size_t k = 0; k < sizeof commands / sizeof commands[0]; k++)
        if (!strcmp(argv[i], commands[k].name)) return commands[k].run(argc - i, argv + i, &ctx);
    fprintf(stderr, "blockfed-client: unknown command '%s'\n", argv[i]);
    return usage(stderr);
}

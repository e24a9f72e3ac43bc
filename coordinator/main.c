/* blockfed-coordinator: `blockfed-coordinator SUBCOMMAND [options]`. This file only dispatches;
 * each subcommand lives in its own file (cmd_*.c) so later ones (init, run) slot in beside ledger. */
#include <stdio.h>
#include <string.h>

#include "bf_models.h"
#include "commands.h"

static const struct {
    const char *name;
    int (*run)(int, char **);
    const char *what;
} commands[] = {
    {"init", cmd_init_main, "create a coordinator home: ledger, state, CURVE certificate"},
    {"run", cmd_run_main, "serve accounts, tasks and training rounds"},
    {"ledger", cmd_ledger_main, "inspect and verify the ledger (verify, balances, history, shares)"},
    {"routes", cmd_routes_main, "list the HTTPS API's routes (METHOD PATH)"},
};

static int usage(FILE *f) {
    fprintf(f,
            "usage: blockfed-coordinator SUBCOMMAND [options]\n"
            "       blockfed-coordinator SUBCOMMAND --help\n\nsubcommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].what);
    fprintf(f,
            "\nexit status: 0 success, 1 a check failed, 2 usage error, 3 runtime error,\n"
            "4 named user or task not found.\n");
    return f == stdout ? EXIT_OK : EXIT_USAGE;
}

int main(int argc, char **argv) {
    bf_blas_init(argc, argv); /* fast OpenBLAS kernels for evaluation */
    if (argc < 2) return usage(stderr);
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help"))
        return usage(stdout);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "blockfed-coordinator: unknown subcommand '%s'\n", argv[1]);
    return usage(stderr);
}

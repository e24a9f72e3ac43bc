/* commands.h: the coordinator's subcommands. Each takes argv with argv[0] = its own name and
 * returns the process exit status (codes listed in each subcommand's --help). */
#ifndef BF_COORDINATOR_COMMANDS_H
#define BF_COORDINATOR_COMMANDS_H

#include <stdio.h>

int cmd_ledger_main(int argc, char **argv);
int cmd_init_main(int argc, char **argv);
int cmd_run_main(int argc, char **argv);
int cmd_routes_main(int argc, char **argv);
/* `init|run --ledger URL` (cmd_init.c): makes HOME/ledger.db name the PostgreSQL ledger at url, or
 * checks that it does; refuses (EXIT_USAGE, saying why) a home whose ledger is another one. */
int cmd_ledger_select(const char *home, const char *url);

/* Exit statuses shared by every subcommand. */
enum {
    EXIT_OK = 0,
    EXIT_CHECK_FAILED = 1, /* the command ran and found a problem (e.g. verify found violations) */
    EXIT_USAGE = 2,        /* bad command line */
    EXIT_RUNTIME = 3,      /* could not open or read what it needed */
    EXIT_NOT_FOUND = 4,    /* the named user/task does not exist */
};

#endif

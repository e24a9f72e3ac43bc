/* cmd_init.c: `blockfed-coordinator init --home DIR`: the ledger database, the coordinator's CURVE
 * certificate and the federation state, created once; prints the public key participants need. */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "commands.h"
#include "coord.h"

static const char usage_text[] =
    "usage: blockfed-coordinator init --home DIR [--force]\n"
    "\n"
    "Creates DIR (mode 0700) with the ledger (ledger.db), the federation state (coordinator.db) and\n"
    "the coordinator's CURVE certificate (server.cert, server.cert_secret; czmq zcert files), then\n"
    "prints the certificate's public key: hand it to every participant (blockfed-client register\n"
    "--server-key KEY), over a channel you trust. Running init again keeps the existing key.\n"
    "\n"
    "exit status: 0 ready, 2 usage error, 3 could not create the files\n";

int cmd_init_main(int argc, char **argv) {
    static const struct option opts[] = {{"home", required_argument, 0, 'H'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *home = getenv("BLOCKFED_HOME");
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'H') home = optarg;
        else if (c == 'h') return fputs(usage_text, stdout), EXIT_OK;
        else return fputs(usage_text, stderr), EXIT_USAGE;
    }
    if (!home || optind < argc) return fputs(usage_text, stderr), EXIT_USAGE;
    if (mkdir(home, 0700) && errno != EEXIST) return fprintf(stderr, "blockfed-coordinator: %s: %s\n", home, strerror(errno)), EXIT_RUNTIME;
    char path[4096], secret[4200];
    bf_err_t err;
    snprintf(path, sizeof path, "%s/ledger.db", home);
    bf_ledger_t *ledger = bf_ledger_open(path, &err);
    if (!ledger) return fprintf(stderr, "blockfed-coordinator: %s\n", err.msg), EXIT_RUNTIME;
    bf_ledger_close(&ledger);
    snprintf(path, sizeof path, "%s/coordinator.db", home);
    coord_store_t *st = coord_store_open(path, &err);
    if (!st) return fprintf(stderr, "blockfed-coordinator: %s\n", err.msg), EXIT_RUNTIME;
    coord_store_close(&st);
    snprintf(path, sizeof path, "%s/server.cert", home);
    snprintf(secret, sizeof secret, "%s_secret", path);
    zcert_t *cert = zcert_load(secret);
    if (!cert) {
        cert = zcert_new();
        zcert_set_meta(cert, "role", "blockfed-coordinator");
        if (!cert || zcert_save(cert, path) != 0) {
            zcert_destroy(&cert);
            return fprintf(stderr, "blockfed-coordinator: cannot write %s\n", path), EXIT_RUNTIME;
        }
        chmod(secret, 0600);
    }
    printf("coordinator home: %s\nserver public key: %s\n", home, zcert_public_txt(cert));
    zcert_destroy(&cert);
    return EXIT_OK;
}

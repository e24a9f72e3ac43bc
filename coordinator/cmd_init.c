/* cmd_init.c: `blockfed-coordinator init --home DIR`: the ledger database, the coordinator's CURVE
 * certificate, the federation state, the HTTPS API's certificate and the operator's credential,
 * created once; prints the public key participants need. Also `routes`, the API's route list. */
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <unistd.h>
#include <getopt.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "commands.h"
#include "coord.h"

static const char usage_text[] =
    "usage: blockfed-coordinator init --home DIR [--ledger postgresql://...] [--http-name NAME]...\n"
    "\n"
    "Creates DIR (mode 0700) with the ledger (ledger.db), the federation state (coordinator.db) and\n"
    "the coordinator's CURVE certificate (server.cert, server.cert_secret; czmq zcert files), then\n"
    "prints the certificate's public key: hand it to every participant (blockfed-client register\n"
    "--server-key KEY), over a channel you trust. For the HTTPS API (run --http) it writes a\n"
    "self-signed certificate (https.crt; https.key, mode 0600) for localhost, 127.0.0.1 and each\n"
    "--http-name (a host name or IP address clients use), the web credentials (web.db) and the\n"
    "operator's credential (operator.token, mode 0600). Running init again keeps what exists;\n"
    "--http-name writes a new certificate.\n"
    "\n"
    "  --ledger URL  keep the ledger in that PostgreSQL database (postgresql://USER@HOST:PORT/DB),\n"
    "                shared with other coordinators, instead of the file: DIR/ledger.db then holds\n"
    "                the URL (mode 0600) and every part of the coordinator opens that database.\n"
    "                Refused for a home that already has another ledger. See docs/LEDGER.md\n"
    "\n"
    "exit status: 0 ready, 2 usage error, 3 could not create the files\n";

/* The operator's credential, made once: HOME/operator.token (0600) holds it, web.db its hash. */
static int operator_token(const char *home, bf_err_t *err) {
    char path[4096], token[COORD_TOKEN_MAX];
    snprintf(path, sizeof path, "%s/operator.token", home);
    struct stat st;
    if (stat(path, &st) == 0) return 0;
    snprintf(path, sizeof path, "%s/web.db", home);
    coord_webauth_t *a = coord_webauth_open(path, err);
    int rc = a ? coord_webauth_operator_new(a, token, err) : -1;
    coord_webauth_close(&a);
    if (rc) return -1;
    snprintf(path, sizeof path, "%s/operator.token", home);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    int ok = f && fprintf(f, "%s\n", token) > 0;
    if (f) ok = fclose(f) == 0 && ok;
    else if (fd >= 0) close(fd);
    OPENSSL_cleanse(token, sizeof token);
    return ok ? 0 : bf_err_set(err, "cannot write %s", path);
}

/* What HOME/ledger.db is: 0 none, 1 a redirect to *cur (a URL), 2 a SQLite ledger file, 3 a
 * malformed redirect (*cur: why). */
static int ledger_kind(const char *path, char *cur, size_t cap) {
    bf_err_t err;
    struct stat st;
    if (stat(path, &st) != 0) return 0;
    int r = bf_ledger_location(path, cur, cap, &err);
    if (r < 0) snprintf(cur, cap, "%s", err.msg);
    return r < 0 ? 3 : r == 1 ? 1 : 2;
}

int cmd_ledger_select(const char *home, const char *url) {
    char path[4096], cur[4096];
    bf_err_t err;
    if (strncmp(url, "postgresql://", 13) && strncmp(url, "postgres://", 11))
        return fprintf(stderr, "blockfed-coordinator: --ledger takes a postgresql://... connection URL\n"), EXIT_USAGE;
    if (snprintf(path, sizeof path, "%s/ledger.db", home) >= (int)sizeof path)
        return fprintf(stderr, "blockfed-coordinator: home path too long\n"), EXIT_USAGE;
    switch (ledger_kind(path, cur, sizeof cur)) {
    case 1:
        if (!strcmp(cur, url)) return EXIT_OK;
        return fprintf(stderr, "blockfed-coordinator: %s already uses another PostgreSQL ledger (named in %s); a home"
                               " keeps its ledger, where its accounts and money are\n", home, path),
               EXIT_USAGE;
    case 2:
        return fprintf(stderr, "blockfed-coordinator: %s already has a SQLite ledger (%s); a home keeps its ledger,"
                               " where its accounts and money are\n", home, path),
               EXIT_USAGE;
    case 3: return fprintf(stderr, "blockfed-coordinator: %s\n", cur), EXIT_RUNTIME;
    default:
        if (bf_ledger_redirect_write(path, url, &err))
            return fprintf(stderr, "blockfed-coordinator: %s\n", err.msg), EXIT_RUNTIME;
        return EXIT_OK;
    }
}

int cmd_routes_main(int argc, char **argv) {
    (void)argv;
    if (argc > 1) return fputs("usage: blockfed-coordinator routes\n", stderr), EXIT_USAGE;
    coord_http_routes(stdout);
    return EXIT_OK;
}

int cmd_init_main(int argc, char **argv) {
    static const struct option opts[] = {{"home", required_argument, 0, 'H'},
                                         {"http-name", required_argument, 0, 'N'},
                                         {"ledger", required_argument, 0, 'L'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *home = getenv("BLOCKFED_HOME");
    const char *names[16], *url = NULL;
    int c, nnames = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'H') home = optarg;
        else if (c == 'N' && nnames < 16) names[nnames++] = optarg;
        else if (c == 'L') url = optarg;
        else if (c == 'h') return fputs(usage_text, stdout), EXIT_OK;
        else return fputs(usage_text, stderr), EXIT_USAGE;
    }
    if (!home || optind < argc) return fputs(usage_text, stderr), EXIT_USAGE;
    if (url && strncmp(url, "postgresql://", 13) && strncmp(url, "postgres://", 11)) /* before anything is made */
        return fprintf(stderr, "blockfed-coordinator: --ledger takes a postgresql://... connection URL\n"), EXIT_USAGE;
    if (mkdir(home, 0700) && errno != EEXIST) return fprintf(stderr, "blockfed-coordinator: %s: %s\n", home, strerror(errno)), EXIT_RUNTIME;
    char path[4096], secret[4200];
    bf_err_t err;
    int src = url ? cmd_ledger_select(home, url) : EXIT_OK;
    if (src) return src;
    snprintf(path, sizeof path, "%s/ledger.db", home); /* the file, or the URL it names */
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
    snprintf(path, sizeof path, "%s/https.crt", home);
    struct stat sb;
    if ((nnames || stat(path, &sb) != 0) && coord_tls_selfsigned(home, names, nnames, &err)) {
        zcert_destroy(&cert);
        return fprintf(stderr, "blockfed-coordinator: %s\n", err.msg), EXIT_RUNTIME;
    }
    if (operator_token(home, &err)) {
        zcert_destroy(&cert);
        return fprintf(stderr, "blockfed-coordinator: %s\n", err.msg), EXIT_RUNTIME;
    }
    char fp[COORD_TLS_FP_MAX] = "?";
    snprintf(path, sizeof path, "%s/https.crt", home);
    coord_tls_fingerprint(path, fp, NULL);
    printf("coordinator home: %s\nserver public key: %s\nHTTPS certificate: %s (SHA-256 fingerprint %s)\n", home,
           zcert_public_txt(cert), path, fp);
    zcert_destroy(&cert);
    return EXIT_OK;
}

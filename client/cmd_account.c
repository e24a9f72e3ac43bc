/* cmd_account.c: the participant's account commands: `register` (creates or reuses the profile
 * and its key pair, then HELLO + REGISTER), `recharge`, `assets` and `history` (one request each).
 * Each parses its own options and returns its outcome (client.h). */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "bf_render.h"
#include "client.h"

static bf_cli_outcome_t usage_fail(const char *cmd) {
    fprintf(stderr, "try 'blockfed-client %s --help'\n", cmd);
    return CLIENT_USAGE;
}

/* ---- register ---------------------------------------------------------------------------- */

static const char register_help[] =
    "usage: blockfed-client [--home DIR] register USER --coordinator ENDPOINT --server-key KEY [options]\n"
    "\n"
    "Creates the profile (DIR, mode 0700) with a new CURVE key pair, and registers USER with the\n"
    "coordinator under that key. New users get 100 coins and 0 yuan. Running it again for the\n"
    "same user is harmless; after a refusal (name taken) the same key may register another name.\n"
    "\n"
    "  --coordinator ENDPOINT  e.g. tcp://coordinator.example.org:7700 (required)\n"
    "  --server-key KEY        the coordinator's public key, 40 characters of Z85, as printed by\n"
    "                          'blockfed-coordinator init' (required unless --insecure)\n"
    "  --insecure              plain TCP without CURVE (loopback endpoints only; for tests)\n"
    "  --force                 start over with a new key pair (replaces the profile's; needed\n"
    "                          when the profile belongs to another user)\n"
    "  --json                  print the result as JSON\n"
    "  --home DIR              profile directory (default $BLOCKFED_HOME, else ~/.blockfed)\n"
    "  --timeout S             seconds to wait for a reply (default 10)\n"
    "\n"
    "exit status: 0 registered (or already), 1 runtime or coordinator error, 2 usage error\n";

typedef struct {
    const char *user, *endpoint, *key;
    int insecure, force, json;
} register_args_t;

static bf_cli_args_t parse_register(int argc, char **argv, bf_cli_ctx_t *ctx, register_args_t *a) {
    static const struct option opts[] = {
        {"coordinator", required_argument, 0, 'c'}, {"server-key", required_argument, 0, 'k'},
        {"insecure", no_argument, 0, 'i'},          {"force", no_argument, 0, 'f'},
        {"json", no_argument, 0, 'j'},              {"help", no_argument, 0, 'h'},
        BF_CLI_COMMON_OPTS,                         {0, 0, 0, 0}};
    int c;
    bf_cli_args_t rc = CLIENT_ARGS_OK;
    bf_err_t err;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (bf_cli_common_opt(c, optarg, ctx, &rc)) {
            if (rc) return rc;
            continue;
        }
        switch (c) {
        case 'c': a->endpoint = optarg; break;
        case 'k': a->key = optarg; break;
        case 'i': a->insecure = 1; break;
        case 'f': a->force = 1; break;
        case 'j': a->json = 1; break;
        case 'h': fputs(register_help, stdout); return CLIENT_ARGS_HELP;
        default: return CLIENT_ARGS_BAD;
        }
    }
    if (optind + 1 != argc) return bf_cli_error("register takes exactly one USER");
    a->user = argv[optind];
    if (bf_check_name(a->user, 32, "USER", &err)) return bf_cli_error("%s", err.msg);
    if (!a->endpoint) return bf_cli_error("--coordinator ENDPOINT is required");
    if (bf_check_endpoint(a->endpoint, &err)) return bf_cli_error("%s", err.msg);
    if (a->insecure && !bf_endpoint_is_loopback(a->endpoint))
        return bf_cli_error("--insecure is allowed only for loopback endpoints (tcp://127.0.0.1:PORT, "
                            "tcp://localhost:PORT, ipc://, inproc://), not %s", a->endpoint);
    if (!a->insecure && !a->key) return bf_cli_error("--server-key KEY is required (or --insecure on loopback)");
    if (a->key && bf_check_server_key(a->key, &err)) return bf_cli_error("%s", err.msg);
    return CLIENT_ARGS_OK;
}

/* The profile and key pair to use: the existing ones when they belong to this user (or were
 * never registered), a new key pair otherwise. CLIENT_USAGE: the message is printed, the caller
 * adds the "try --help" line. */
static bf_cli_outcome_t prepare_profile(const register_args_t *a, const char *home, bf_profile_t *p, zcert_t **cert) {
    bf_err_t err;
    bf_profile_t old;
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/profile", home);
    struct stat st;
    int have_profile = !stat(path, &st), reuse_key = 1;
    if (have_profile) {
        if (bf_profile_load(home, &old, NULL, &err)) {
            if (!a->force) return bf_cli_fail("%s (use --force to replace the profile)", err.msg);
            reuse_key = 0;
        } else if (strcmp(old.user, a->user)) {
            if (old.registered && !a->force)
                return bf_cli_error("the profile in %s belongs to user '%s'; use another --home, or --force to "
                                    "replace it with a new key pair", home, old.user), CLIENT_USAGE;
            reuse_key = !old.registered;
        }
        if (a->force) reuse_key = 0; /* --force always means a new key pair */
    }
    *p = (bf_profile_t){.insecure = a->insecure};
    snprintf(p->home, sizeof p->home, "%s", home);
    snprintf(p->coordinator, sizeof p->coordinator, "%s", a->endpoint);
    snprintf(p->server_key, sizeof p->server_key, "%s", a->key ? a->key : "");
    snprintf(p->user, sizeof p->user, "%s", a->user);
    p->registered = have_profile && reuse_key && !strcmp(old.user, a->user) && old.registered;
    if (reuse_key && !bf_profile_load_cert(home, cert, &err)) return CLIENT_OK;
    if (bf_profile_new_cert(home, a->user, cert, &err)) return bf_cli_fail("%s", err.msg);
    p->registered = 0;
    return CLIENT_OK;
}

static void print_registered(const register_args_t *a, const char *home, zcert_t *cert, const msgpack_object *result,
                             int already) {
    if (a->json) {
        msgpack_object path = {.type = MSGPACK_OBJECT_STR, .via.str = {(uint32_t)strlen(home), home}};
        printf("{\"user\":\"%s\",\"public_key\":\"%s\",\"profile\":", a->user, zcert_public_txt(cert));
        bf_render_json(stdout, &path);
        printf(",\"already_registered\":%s,\"result\":", already ? "true" : "false");
        if (result) bf_render_json(stdout, result);
        else fputs("null", stdout);
        printf("}\n");
        return;
    }
    if (already) printf("user %s is already registered with this key\n", a->user);
    else printf("registered user %s\n", a->user);
    printf("public key: %s\nprofile: %s\n", zcert_public_txt(cert), home);
    if (result) bf_cli_print_any(result, 0);
}

bf_cli_outcome_t bf_cmd_register(int argc, char **argv, bf_cli_ctx_t *ctx) {
    register_args_t a = {0};
    bf_cli_args_t args = parse_register(argc, argv, ctx, &a);
    if (args == CLIENT_ARGS_HELP) return CLIENT_OK;
    if (args) return usage_fail("register");
    bf_err_t err;
    char home[PATH_MAX];
    if (bf_profile_home(ctx->home, home, sizeof home, &err)) return bf_cli_error("%s", err.msg), CLIENT_USAGE;
    if (bf_profile_mkdir(home, &err)) return bf_cli_fail("%s", err.msg);
    bf_profile_t p;
    zcert_t *cert = NULL;
    bf_cli_outcome_t rc = prepare_profile(&a, home, &p, &cert);
    if (rc == CLIENT_USAGE) return usage_fail("register");
    if (rc) return rc;
    if (bf_profile_save(&p, &err)) {
        zcert_destroy(&cert);
        return bf_cli_fail("%s", err.msg);
    }
    bf_conn_t *conn = bf_conn_new(p.coordinator, p.server_key, cert, p.insecure, &err);
    bf_msg_t *req = bf_msg_new("HELLO", 0), *reply = NULL;
    rc = conn ? bf_cli_roundtrip(ctx, conn, &req, "WELCOME", 1, &reply) : bf_cli_fail("%s", err.msg);
    const char *known = rc ? NULL : bf_msg_str(reply, "user");
    if (!rc && known && strcmp(known, a.user)) {
        rc = bf_cli_fail("this key is already registered as user '%s'", known);
    } else if (!rc && known) {
        p.registered = 1;
        print_registered(&a, home, cert, NULL, 1);
    } else if (!rc) {
        bf_msg_destroy(&reply);
        req = bf_msg_new("REGISTER", 0);
        if (!req || bf_msg_set_str(req, "name", a.user)) rc = bf_cli_fail("cannot build REGISTER");
        else rc = bf_cli_roundtrip(ctx, conn, &req, "OK", 0, &reply);
        if (!rc) {
            p.registered = 1;
            print_registered(&a, home, cert, bf_msg_any(reply, "result"), 0);
        }
    }
    if (!rc && bf_profile_save(&p, &err)) rc = bf_cli_fail("%s", err.msg);
    bf_msg_destroy(&req);
    bf_msg_destroy(&reply);
    bf_conn_destroy(&conn);
    zcert_destroy(&cert);
    return rc;
}

/* ---- recharge, assets, history ------------------------------------------------------------ */

static const char recharge_help[] =
    "usage: blockfed-client recharge AMOUNT [--json]\n"
    "\n"
    "Adds AMOUNT yuan to the account (a plain decimal with at most 2 decimals, e.g. 25.50) and\n"
    "prints the coordinator's result (the new balance).\n"
    "\n"
    "exit status: 0 ok, 1 runtime or coordinator error, 2 usage error\n";

bf_cli_outcome_t bf_cmd_recharge(int argc, char **argv, bf_cli_ctx_t *ctx) {
    int json;
    bf_cli_args_t rc = bf_cli_parse_plain(argc, argv, ctx, &json, recharge_help);
    bf_err_t err;
    if (rc == CLIENT_ARGS_HELP) return CLIENT_OK;
    if (!rc && optind + 1 != argc) rc = bf_cli_error("recharge takes exactly one AMOUNT");
    if (!rc && bf_check_amount(argv[optind], &err)) rc = bf_cli_error("%s", err.msg);
    if (rc) return usage_fail("recharge");
    /* one key for this command: its retries (same key) are applied once, the next command is new */
    char key[65];
    if (bf_conn_request_key(key, &err)) return bf_cli_fail("%s", err.msg);
    bf_msg_t *req = bf_msg_new("RECHARGE", 0);
    if (req && (bf_msg_set_str(req, "amount", argv[optind]) || bf_msg_set_str(req, "request", key))) bf_msg_destroy(&req);
    return bf_cli_simple(ctx, req, "OK", "result", 1, json);
}

static const char assets_help[] =
    "usage: blockfed-client assets [--json]\n"
    "\n"
    "Prints the account's balances (coins, yuan, amounts held) and shares.\n"
    "\n"
    "exit status: 0 ok, 1 runtime or coordinator error, 2 usage error\n";

bf_cli_outcome_t bf_cmd_assets(int argc, char **argv, bf_cli_ctx_t *ctx) {
    int json;
    bf_cli_args_t rc = bf_cli_parse_plain(argc, argv, ctx, &json, assets_help);
    if (rc == CLIENT_ARGS_HELP) return CLIENT_OK;
    if (!rc && optind != argc) rc = bf_cli_error("assets takes no arguments");
    if (rc) return usage_fail("assets");
    return bf_cli_simple(ctx, bf_msg_new("ASSETS_GET", 0), "ASSETS", "assets", 1, json);
}

static const char history_help[] =
    "usage: blockfed-client history [--limit N] [--json]\n"
    "\n"
    "Prints the account's ledger entries, newest first.\n"
    "\n"
    "  --limit N   at most N entries (1..10000; default: the coordinator's)\n"
    "\n"
    "exit status: 0 ok, 1 runtime or coordinator error, 2 usage error\n";

bf_cli_outcome_t bf_cmd_history(int argc, char **argv, bf_cli_ctx_t *ctx) {
    static const struct option opts[] = {{"limit", required_argument, 0, 'l'}, {"json", no_argument, 0, 'j'},
                                         {"help", no_argument, 0, 'h'},        BF_CLI_COMMON_OPTS,
                                         {0, 0, 0, 0}};
    int c, json = 0;
    bf_cli_args_t rc = CLIENT_ARGS_OK;
    long long limit = 0;
    optind = 1;
    while (!rc && (c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (bf_cli_common_opt(c, optarg, ctx, &rc)) continue;
        if (c == 'l') rc = bf_cli_int(optarg, 1, 10000, &limit, "--limit");
        else if (c == 'j') json = 1;
        else if (c == 'h') return fputs(history_help, stdout), CLIENT_OK;
        else rc = CLIENT_ARGS_BAD;
    }
    if (!rc && optind != argc) rc = bf_cli_error("history takes no arguments");
    if (rc) return usage_fail("history");
    bf_msg_t *req = bf_msg_new("HISTORY_GET", 0);
    if (req && limit && bf_msg_set_uint(req, "limit", (uint64_t)limit)) bf_msg_destroy(&req);
    return bf_cli_simple(ctx, req, "HISTORY", "entries", 1, json);
}

/* cmd_task.c: the commands about tasks: `task create|list|status|cancel`, `leave`, `blocks buy`
 * and `model download` (the model verified by SHA-256 and by loading it before it replaces
 * --out). Each parses its own options and returns its outcome (client.h). */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bf_money.h"
#include "bf_models.h"
#include "bf_render.h"
#include "client.h"

static bf_cli_outcome_t usage_fail(const char *cmd) {
    fprintf(stderr, "try 'blockfed-client %s --help'\n", cmd);
    return CLIENT_USAGE;
}

/* The outcome of a command whose parsing did not end in CLIENT_ARGS_OK. */
static bf_cli_outcome_t parse_ended(bf_cli_args_t args) { return args == CLIENT_ARGS_HELP ? CLIENT_OK : CLIENT_USAGE; }

/* ---- task create ------------------------------------------------------------------------- */

static const char create_help[] =
    "usage: blockfed-client task create --id ID --name NAME --model resnet8|cnn --dataset NAME --rounds N\n"
    "                                   --mode reward|shareholding [options]\n"
    "\n"
    "Creates a federated training task. A reward task escrows its pool from your balance.\n"
    "\n"
    "  --id ID               task id (1..64 of A-Z a-z 0-9 _ . -)\n"
    "  --name NAME           display name (up to 128 bytes)\n"
    "  --description TEXT    (up to 1024 bytes)\n"
    "  --model ARCH          resnet8 or cnn\n"
    "  --dataset NAME        a dataset the coordinator serves\n"
    "  --rounds N            federated rounds (1..10000)\n"
    "  --mode MODE           reward or shareholding\n"
    "  --fee AMOUNT          shareholding: fee per classified image of a paid prediction (e.g. 0.10)\n"
    "  --base-fee AMOUNT     shareholding: fee per paid request on top (default 0)\n"
    "  --rate R              shareholding: price multiplier, N/D or decimal (default 1); a request\n"
    "                        classifying k images costs ceil((base + fee * k) * R), rounded once\n"
    "  --pool AMOUNT         reward pool (reward mode)\n"
    "  --min-clients N       participants needed before training starts (default 1)\n"
    "  --local-epochs E      local epochs per round (default 1)\n"
    "  --batch B             batch size (default 64)\n"
    "  --lr LR               learning rate (default 0.05)\n"
    "  --round-timeout S     seconds a round waits for updates (default 300)\n"
    "  --partition P         iid (default) or dirichlet:ALPHA (non-IID label skew)\n"
    "  --strategy S          fedavg (default), fedprox, fedavgm, median, trimmed-mean\n"
    "  --mu MU               FedProx proximal coefficient (0..100)\n"
    "  --seed N              data partition and initialization seed\n"
    "  --value-images N      validation images each coalition is scored on when valuing updates\n"
    "                        with Shapley values (100..100000, default 2000)\n"
    "  --own-data-cap N      the most an update from a participant training on its own data\n"
    "                        weighs, in samples (1..10^9; default: the largest block holder's)\n"
    "  --json                print the result as JSON\n"
    "\n"
    "exit status: 0 created, 1 runtime or coordinator error, 2 usage error\n";

static int check_partition(const char *p) {
    if (!strcmp(p, "iid")) return 0;
    if (strncmp(p, "dirichlet:", 10)) return -1;
    char *end;
    errno = 0;
    double a = strtod(p + 10, &end);
    return p[10] && !*end && !errno && a > 0 && a <= 1e6 ? 0 : -1;
}

static bf_cli_args_t check_text(const char *s, size_t max, const char *flag) {
    if (strlen(s) > max) return bf_cli_error("%s is longer than %zu bytes", flag, max);
    return CLIENT_ARGS_OK;
}

/* A setter's result (bf_msg_set_*: 0, or -1 for a value the schema refuses) as a parse result. */
static bf_cli_args_t set(int setter_rc) { return setter_rc ? CLIENT_ARGS_BAD : CLIENT_ARGS_OK; }

/* Sets one TASK_CREATE field from a command-line option; CLIENT_ARGS_BAD on a bad value. */
static bf_cli_args_t create_opt(bf_msg_t *m, int c, const char *v) {
    bf_err_t err;
    long long n;
    double d;
    switch (c) {
    case 'i':
        if (bf_check_name(v, 64, "--id", &err)) return bf_cli_error("%s", err.msg);
        return set(bf_msg_set_str(m, "task", v));
    case 'n':
        if (!*v || check_text(v, 128, "--name")) return bf_cli_error("--name takes 1..128 bytes");
        return set(bf_msg_set_str(m, "name", v));
    case 'D':
        if (check_text(v, 1024, "--description")) return CLIENT_ARGS_BAD;
        return set(bf_msg_set_str(m, "description", v));
    case 'm':
        if (strcmp(v, "resnet8") && strcmp(v, "cnn")) return bf_cli_error("--model takes resnet8 or cnn");
        return set(bf_msg_set_str(m, "model", v));
    case 'd':
        if (bf_check_name(v, 64, "--dataset", &err)) return bf_cli_error("%s", err.msg);
        return set(bf_msg_set_str(m, "dataset", v));
    case 'r':
        if (bf_cli_int(v, 1, 10000, &n, "--rounds")) return CLIENT_ARGS_BAD;
        return set(bf_msg_set_uint(m, "rounds", (uint64_t)n));
    case 'M':
        if (strcmp(v, "reward") && strcmp(v, "shareholding")) return bf_cli_error("--mode takes reward or shareholding");
        return set(bf_msg_set_str(m, "mode", v));
    case 'f':
    case 'p':
        if (bf_check_amount(v, &err)) return bf_cli_error("%s: %s", c == 'f' ? "--fee" : "--pool", err.msg);
        return set(bf_msg_set_str(m, c == 'f' ? "fee" : "pool", v));
    case 'B':
        if (bf_check_amount(v, &err)) return bf_cli_error("--base-fee: %s", err.msg);
        return set(bf_msg_set_str(m, "base_fee", v));
    case 'R': {
        int64_t num, den;
        if (strlen(v) > 41 || bf_money_parse_rate(v, &num, &den, &err)) return bf_cli_error("--rate: %s", err.msg);
        return set(bf_msg_set_str(m, "rate", v));
    }
    case 'V':
        if (bf_cli_int(v, 100, 100000, &n, "--value-images")) return CLIENT_ARGS_BAD;
        return set(bf_msg_set_uint(m, "value_images", (uint64_t)n));
    case 'O':
        if (bf_cli_int(v, 1, 1000000000, &n, "--own-data-cap")) return CLIENT_ARGS_BAD;
        return set(bf_msg_set_uint(m, "own_data_cap", (uint64_t)n));
    case 'c':
        if (bf_cli_int(v, 1, 10000, &n, "--min-clients")) return CLIENT_ARGS_BAD;
        return set(bf_msg_set_uint(m, "min_clients", (uint64_t)n));
    case 'e':
        if (bf_cli_int(v, 1, 100, &n, "--local-epochs")) return CLIENT_ARGS_BAD;
        return set(bf_msg_set_uint(m, "local_epochs", (uint64_t)n));
    case 'b':
        if (bf_cli_int(v, 1, 1024, &n, "--batch")) return CLIENT_ARGS_BAD;
        return set(bf_msg_set_uint(m, "batch", (uint64_t)n));
    case 'l':
        if (bf_cli_double(v, 0, 10, &d, "--lr")) return CLIENT_ARGS_BAD;
        if (!(d > 0)) return bf_cli_error("--lr must be > 0");
        return set(bf_msg_set_double(m, "lr", d));
    case 't':
        if (bf_cli_int(v, 1, 86400, &n, "--round-timeout")) return CLIENT_ARGS_BAD;
        return set(bf_msg_set_uint(m, "round_timeout", (uint64_t)n));
    case 'P':
        if (strlen(v) > 32 || check_partition(v)) return bf_cli_error("--partition takes iid or dirichlet:ALPHA (ALPHA > 0)");
        return set(bf_msg_set_str(m, "partition", v));
    case 'S':
        if (bf_check_name(v, 32, "--strategy", &err)) return bf_cli_error("%s", err.msg);
        return set(bf_msg_set_str(m, "strategy", v));
    case 'u':
        if (bf_cli_double(v, 0, 100, &d, "--mu")) return CLIENT_ARGS_BAD;
        return set(bf_msg_set_double(m, "mu", d));
    case 's': {
        char *end;
        errno = 0;
        unsigned long long s = strtoull(v, &end, 10);
        if (!*v || *end || errno || *v == '-') return bf_cli_error("--seed takes an integer in [0, 2^64-1]");
        return set(bf_msg_set_uint(m, "seed", s));
    }
    default: return CLIENT_ARGS_BAD;
    }
}

static bf_cli_outcome_t task_create(int argc, char **argv, bf_cli_ctx_t *ctx) {
    static const struct option opts[] = {
        {"id", required_argument, 0, 'i'},           {"name", required_argument, 0, 'n'},
        {"description", required_argument, 0, 'D'},  {"model", required_argument, 0, 'm'},
        {"dataset", required_argument, 0, 'd'},      {"rounds", required_argument, 0, 'r'},
        {"mode", required_argument, 0, 'M'},         {"fee", required_argument, 0, 'f'},
        {"pool", required_argument, 0, 'p'},         {"min-clients", required_argument, 0, 'c'},
        {"local-epochs", required_argument, 0, 'e'}, {"batch", required_argument, 0, 'b'},
        {"lr", required_argument, 0, 'l'},           {"round-timeout", required_argument, 0, 't'},
        {"partition", required_argument, 0, 'P'},    {"strategy", required_argument, 0, 'S'},
        {"mu", required_argument, 0, 'u'},           {"seed", required_argument, 0, 's'},
        {"json", no_argument, 0, 'j'},               {"help", no_argument, 0, 'h'},
        {"base-fee", required_argument, 0, 'B'},     {"rate", required_argument, 0, 'R'},
        {"value-images", required_argument, 0, 'V'}, {"own-data-cap", required_argument, 0, 'O'},
        BF_CLI_COMMON_OPTS,                          {0, 0, 0, 0}};
    bf_msg_t *m = bf_msg_new("TASK_CREATE", 0);
    if (!m) return bf_cli_fail("out of memory");
    /* defaults first; options replace them */
    bf_msg_set_uint(m, "min_clients", 1), bf_msg_set_uint(m, "local_epochs", 1), bf_msg_set_uint(m, "batch", 64);
    bf_msg_set_double(m, "lr", 0.05), bf_msg_set_uint(m, "round_timeout", 300);
    bf_msg_set_str(m, "partition", "iid"), bf_msg_set_str(m, "strategy", "fedavg");
    int c, json = 0;
    bf_cli_args_t rc = CLIENT_ARGS_OK;
    optind = 1;
    while (!rc && (c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (bf_cli_common_opt(c, optarg, ctx, &rc)) continue;
        if (c == 'j') json = 1;
        else if (c == 'h') {
            bf_msg_destroy(&m);
            return fputs(create_help, stdout), CLIENT_OK;
        } else
            rc = create_opt(m, c, optarg);
    }
    static const char *const required[][2] = {{"task", "--id"}, {"name", "--name"}, {"model", "--model"},
                                              {"dataset", "--dataset"}, {"rounds", "--rounds"}, {"mode", "--mode"}};
    for (size_t i = 0; !rc && i < sizeof required / sizeof required[0]; i++)
        if (!bf_msg_has(m, required[i][0])) rc = bf_cli_error("%s is required", required[i][1]);
    if (!rc && optind != argc) rc = bf_cli_error("unexpected argument '%s'", argv[optind]);
    if (rc) {
        bf_msg_destroy(&m);
        return usage_fail("task create");
    }
    /* a request key makes the create (and its pool's escrow) safe to retry: applied once */
    char key[65];
    bf_err_t err;
    if (bf_conn_request_key(key, &err) || bf_msg_set_str(m, "request", key)) {
        bf_msg_destroy(&m);
        return bf_cli_fail("cannot build TASK_CREATE");
    }
    return bf_cli_simple(ctx, m, "OK", "result", 1, json);
}

/* ---- task list / status / cancel, leave, blocks buy ---------------------------------------- */

static const char task_help[] =
    "usage: blockfed-client task create [options]     create a task (task create --help)\n"
    "       blockfed-client task list [--json]        all tasks\n"
    "       blockfed-client task status ID [--json]   one task with per-round accuracy and loss\n"
    "       blockfed-client task cancel ID [--json]   cancel your task (refunds an unstarted one)\n"
    "\n"
    "exit status: 0 ok, 1 runtime or coordinator error, 2 usage error\n";

/* A command taking exactly `nargs` positional arguments after the common options. A usage error
 * is reported with the "try --help" line. */
static bf_cli_args_t plain_args(int argc, char **argv, bf_cli_ctx_t *ctx, int nargs, const char *help,
                                const char *cmd, int *json) {
    bf_cli_args_t rc = bf_cli_parse_plain(argc, argv, ctx, json, help);
    if (rc == CLIENT_ARGS_HELP) return rc;
    if (!rc && argc - optind != nargs)
        rc = bf_cli_error("%s takes %d argument%s", cmd, nargs, nargs == 1 ? "" : "s");
    bf_err_t err;
    if (!rc && nargs >= 1 && bf_check_name(argv[optind], 64, "task ID", &err)) rc = bf_cli_error("%s", err.msg);
    if (rc) usage_fail(cmd);
    return rc;
}

static bf_msg_t *task_msg(const char *type, const char *task) {
    bf_msg_t *m = bf_msg_new(type, 0);
    if (m && bf_msg_set_str(m, "task", task)) bf_msg_destroy(&m);
    return m;
}

bf_cli_outcome_t bf_cmd_task(int argc, char **argv, bf_cli_ctx_t *ctx) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fputs(task_help, argc < 2 ? stderr : stdout);
        return argc < 2 ? CLIENT_USAGE : CLIENT_OK;
    }
    const char *sub = argv[1];
    int json;
    bf_cli_args_t rc;
    if (!strcmp(sub, "create")) return task_create(argc - 1, argv + 1, ctx);
    if (!strcmp(sub, "list")) {
        if ((rc = plain_args(argc - 1, argv + 1, ctx, 0, task_help, "task list", &json))) return parse_ended(rc);
        return bf_cli_simple(ctx, bf_msg_new("TASK_LIST", 0), "TASKS", "tasks", 1, json);
    }
    if (!strcmp(sub, "status") || !strcmp(sub, "cancel")) {
        int status = sub[0] == 's';
        if ((rc = plain_args(argc - 1, argv + 1, ctx, 1, task_help, status ? "task status" : "task cancel", &json)))
            return parse_ended(rc);
        const char *id = argv[optind + 1];
        return status ? bf_cli_simple(ctx, task_msg("TASK_STATUS", id), "STATUS", "status", 1, json)
                      : bf_cli_simple(ctx, task_msg("TASK_CANCEL", id), "OK", "result", 0, json);
    }
    fprintf(stderr, "blockfed-client: unknown task command '%s'\n", sub);
    fputs(task_help, stderr);
    return CLIENT_USAGE;
}

static const char leave_help[] =
    "usage: blockfed-client leave ID [--json]\n"
    "\n"
    "Leaves task ID (no further rounds are sent to you).\n"
    "\n"
    "exit status: 0 ok, 1 runtime or coordinator error, 2 usage error\n";

bf_cli_outcome_t bf_cmd_leave(int argc, char **argv, bf_cli_ctx_t *ctx) {
    int json;
    bf_cli_args_t args = plain_args(argc, argv, ctx, 1, leave_help, "leave", &json);
    if (args) return parse_ended(args);
    return bf_cli_simple(ctx, task_msg("LEAVE", argv[optind]), "OK", "result", 0, json);
}

static const char blocks_help[] =
    "usage: blockfed-client blocks buy ID N [--json]\n"
    "\n"
    "Buys N extra data blocks of task ID (10 coins each; 1..1000) and prints the updated block\n"
    "list. The next 'join' fetches and trains on them.\n"
    "\n"
    "exit status: 0 ok, 1 runtime or coordinator error, 2 usage error\n";

bf_cli_outcome_t bf_cmd_blocks(int argc, char **argv, bf_cli_ctx_t *ctx) {
    if (argc < 2 || strcmp(argv[1], "buy")) {
        int help = argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"));
        fputs(blocks_help, help ? stdout : stderr);
        return help ? CLIENT_OK : CLIENT_USAGE;
    }
    int json;
    bf_cli_args_t args = plain_args(argc - 1, argv + 1, ctx, 2, blocks_help, "blocks buy", &json);
    if (args) return parse_ended(args);
    long long n;
    if (bf_cli_int(argv[optind + 2], 1, 1000, &n, "N")) return usage_fail("blocks buy");
    char key[65]; /* one purchase per command: its retries carry the same key and pay once */
    bf_err_t err;
    if (bf_conn_request_key(key, &err)) return bf_cli_fail("%s", err.msg);
    bf_msg_t *m = task_msg("BLOCKS_BUY", argv[optind + 1]);
    if (m && (bf_msg_set_uint(m, "n", (uint64_t)n) || bf_msg_set_str(m, "request", key))) bf_msg_destroy(&m);
    if (!m) return bf_cli_fail("out of memory");
    /* JOINED carries blocks and block_size at the top level: show them as one map */
    bf_profile_t p;
    bf_conn_t *conn;
    bf_msg_t *reply = NULL;
    bf_cli_outcome_t rc = bf_cli_open(ctx, &p, &conn);
    if (!rc) rc = bf_cli_roundtrip(ctx, conn, &m, "JOINED", 1, &reply);
    if (!rc) {
        const msgpack_object *blocks = bf_msg_any(reply, "blocks");
        if (json) {
            printf("{\"task\":\"%s\",\"block_size\":%llu,\"blocks\":", bf_msg_str(reply, "task"),
                   (unsigned long long)bf_msg_uint(reply, "block_size", 0));
            if (blocks) bf_render_json(stdout, blocks);
            else fputs("null", stdout);
            printf("}\n");
        } else {
            printf("task: %s\nblock_size: %llu\nblocks (%u): ", bf_msg_str(reply, "task"),
                   (unsigned long long)bf_msg_uint(reply, "block_size", 0),
                   blocks && blocks->type == MSGPACK_OBJECT_ARRAY ? blocks->via.array.size : 0);
            bf_cli_print_any(blocks, 0);
        }
    }
    bf_msg_destroy(&m);
    bf_msg_destroy(&reply);
    bf_conn_destroy(&conn);
    return rc;
}

/* ---- model download ---------------------------------------------------------------------- */

static const char model_help[] =
    "usage: blockfed-client model download ID --out FILE [--json]\n"
    "\n"
    "Downloads the global model of task ID, verifies its SHA-256 and that it loads, and writes it\n"
    "to FILE atomically (FILE is replaced only by a verified model).\n"
    "\n"
    "exit status: 0 written, 1 runtime or coordinator error (nothing written), 2 usage error\n";

/* Writes the model frame to out via a temporary file that must load as a model first. */
static bf_cli_outcome_t write_model(const uint8_t *data, size_t len, const char *out) {
    char tmp[4200];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%d", out, (int)getpid()) >= (int)sizeof tmp)
        return bf_cli_fail("--out path too long");
    FILE *f = fopen(tmp, "wb");
    if (!f) return bf_cli_fail("cannot write %s: %s", tmp, strerror(errno));
    int bad = fwrite(data, 1, len, f) != len;
    bad |= fflush(f) || fsync(fileno(f));
    bad |= fclose(f) != 0;
    if (bad) {
        unlink(tmp);
        return bf_cli_fail("cannot write %s: %s", tmp, strerror(errno));
    }
    bf_err_t err;
    bf_model_meta_t meta;
    bf_net_t *net = bf_model_load(tmp, 1, 1, &meta, &err);
    if (!net) {
        unlink(tmp);
        return bf_cli_fail("the coordinator's model does not load: %s", err.msg);
    }
    bf_net_destroy(&net);
    if (rename(tmp, out)) {
        int e = errno;
        unlink(tmp);
        return bf_cli_fail("cannot rename %s to %s: %s", tmp, out, strerror(e));
    }
    return CLIENT_OK;
}

bf_cli_outcome_t bf_cmd_model(int argc, char **argv, bf_cli_ctx_t *ctx) {
    if (argc < 2 || strcmp(argv[1], "download")) {
        int help = argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"));
        fputs(model_help, help ? stdout : stderr);
        return help ? CLIENT_OK : CLIENT_USAGE;
    }
    static const struct option opts[] = {{"out", required_argument, 0, 'o'}, {"json", no_argument, 0, 'j'},
                                         {"help", no_argument, 0, 'h'},      BF_CLI_COMMON_OPTS,
                                         {0, 0, 0, 0}};
    const char *out = NULL;
    int c, json = 0;
    bf_cli_args_t args = CLIENT_ARGS_OK;
    bf_err_t err;
    optind = 1;
    while (!args && (c = getopt_long(argc - 1, argv + 1, "", opts, NULL)) != -1) {
        if (bf_cli_common_opt(c, optarg, ctx, &args)) continue;
        if (c == 'o') out = optarg;
        else if (c == 'j') json = 1;
        else if (c == 'h') return fputs(model_help, stdout), CLIENT_OK;
        else args = CLIENT_ARGS_BAD;
    }
    if (!args && optind + 1 != argc - 1) args = bf_cli_error("model download takes one task ID");
    if (!args && bf_check_name(argv[optind + 1], 64, "task ID", &err)) args = bf_cli_error("%s", err.msg);
    if (!args && (!out || !*out)) args = bf_cli_error("--out FILE is required");
    if (args) return usage_fail("model download");
    bf_msg_t *m = task_msg("MODEL_GET", argv[optind + 1]), *reply = NULL;
    bf_profile_t p;
    bf_conn_t *conn = NULL;
    bf_cli_outcome_t rc = m ? bf_cli_open(ctx, &p, &conn) : bf_cli_fail("out of memory");
    if (!rc) rc = bf_cli_roundtrip(ctx, conn, &m, "MODEL", 1, &reply);
    if (!rc) {
        size_t len = 0;
        const uint8_t *data = bf_msg_frame(reply, 0, &len);
        const char *want = bf_msg_str(reply, "sha256");
        char hex[65];
        bf_sha256_hex(data, len, hex);
        if (!data || !want || strcmp(hex, want))
            rc = bf_cli_fail("model SHA-256 mismatch: the file hashes to %s, the coordinator says %s", hex,
                             want ? want : "-");
        else
            rc = write_model(data, len, out);
        if (!rc && json) {
            msgpack_object o = {.type = MSGPACK_OBJECT_STR, .via.str = {(uint32_t)strlen(out), out}};
            printf("{\"task\":\"%s\",\"out\":", argv[optind + 1]);
            bf_render_json(stdout, &o);
            printf(",\"bytes\":%zu,\"sha256\":\"%s\"}\n", len, hex);
        }
        if (!rc && !json) printf("wrote %s (%zu bytes, sha256 %s)\n", out, len, hex);
    }
    bf_msg_destroy(&m);
    bf_msg_destroy(&reply);
    bf_conn_destroy(&conn);
    return rc;
}

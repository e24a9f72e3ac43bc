/* cmd_ledger.c: `blockfed-coordinator ledger verify|balances|history|statement|shares|deposit|
 * withdrawals|payout|reject`. Read-only views of HOME/ledger.db for operators and auditors, as
 * text, JSON or CSV, and the operator's writes: a deposit of money received outside the platform
 * (idempotent on its external reference) and the settlement of withdrawals (paid under an
 * external reference, or rejected with a reason; both idempotent). */
#include <time.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bf_ledger.h"
#include "bf_statement.h"
#include "bf_text.h"
#include "commands.h"
#include "coord.h"

static const char usage_text[] =
    "usage: blockfed-coordinator ledger verify   --home DIR [--json]\n"
    "       blockfed-coordinator ledger balances --home DIR [--json]\n"
    "       blockfed-coordinator ledger history USER --home DIR [--json]\n"
    "       blockfed-coordinator ledger shares TASK --home DIR [--json]\n"
    "       blockfed-coordinator ledger deposit USER AMOUNT --ref REF --home DIR [--json]\n"
    "       blockfed-coordinator ledger statement USER [--from DATE] [--to DATE] --home DIR [--csv|--json]\n"
    "       blockfed-coordinator ledger withdrawals [--all] --home DIR [--json]\n"
    "       blockfed-coordinator ledger payout ID --ref REF --home DIR [--json]\n"
    "       blockfed-coordinator ledger reject ID --reason TEXT --home DIR [--json]\n"
    "\n"
    "  verify    replay every transfer and check the hash chain, cached balances, double entry,\n"
    "            escrow, shares, holds, payouts and rewards (see docs/LEDGER.md)\n"
    "  balances  posted / pending / available balance of every user and platform account\n"
    "  history   a user's transfers with balances before and after (USER: name or numeric id)\n"
    "  shares    a task's shareholders (ppm) and what each has received (TASK: the id it was\n"
    "            created with, or the ledger's task number)\n"
    "  deposit   credit AMOUNT yuan received outside the platform to USER's cash (the way money\n"
    "            enters under `run --recharge operator`). REF (1..100 printable characters, no\n"
    "            spaces) is the payment's external reference: the same REF again changes nothing,\n"
    "            the same REF with another user or amount is refused\n"
    "\n"
    "options:\n"
    "  --home DIR  coordinator home; the ledger is DIR/ledger.db (default: $BLOCKFED_HOME)\n"
    "  --ledger URL  a PostgreSQL ledger (postgresql://...) instead of DIR/ledger.db; `shares` still\n"
    "              reads task ids from DIR (see docs/LEDGER.md, \"PostgreSQL backend\")\n"
    "  --json      machine-readable output on stdout\n"
    "  --csv       statement as CSV (RFC 4180) on stdout\n"
    "  -h, --help  this text\n"
    "\n"
    "exit status:\n"
    "  0  success (verify: every invariant holds)\n"
    "  1  verify found at least one violation; deposit refused (REF used otherwise, overflow);\n"
    "     payout/reject refused (already paid or rejected, REF used for another withdrawal)\n"
    "  2  usage error\n"
    "  3  the ledger could not be opened or read\n"
    "  4  the named user, task or withdrawal does not exist\n"
    "Amounts: CNY in yuan with 2 decimals in text, integer cents in JSON (*_cents); coins are integers.\n";

typedef struct {
    const char *home, *ledger;
    int json, csv, all;
    const char *arg; /* USER, TASK or withdrawal ID */
    const char *amount, *ref; /* deposit, payout */
    const char *reason;       /* reject */
    const char *from, *to;    /* statement */
} opts_t;

/* What each subcommand takes besides --home/--json. */
enum { ARG_NONE, ARG_USER, ARG_TASK, ARG_DEPOSIT, ARG_STATEMENT, ARG_LIST, ARG_PAYOUT, ARG_REJECT };

static int parse(int argc, char **argv, int want_arg, opts_t *o) {
    static const struct option longopts[] = {
        {"home", required_argument, NULL, 'H'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {"ref", required_argument, NULL, 'r'},
        {"reason", required_argument, NULL, 'R'},
        {"from", required_argument, NULL, 'f'},
        {"to", required_argument, NULL, 't'},
        {"csv", no_argument, NULL, 'c'},
        {"all", no_argument, NULL, 'a'},
        {"ledger", required_argument, NULL, 'L'},
        {NULL, 0, NULL, 0},
    };
    memset(o, 0, sizeof *o);
    o->home = getenv("BLOCKFED_HOME");
    optind = 1;
    opterr = 1;
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'H': o->home = optarg; break;
        case 'j': o->json = 1; break;
        case 'r': o->ref = optarg; break;
        case 'R': o->reason = optarg; break;
        case 'f': o->from = optarg; break;
        case 't': o->to = optarg; break;
        case 'c': o->csv = 1; break;
        case 'a': o->all = 1; break;
        case 'L': o->ledger = optarg; break;
        case 'h': fputs(usage_text, stdout); return -1;
        default: fputs(usage_text, stderr); return EXIT_USAGE;
        }
    }
    /* Each option belongs to its subcommands: anything else is a usage error, not ignored. */
    const char *stray = o->ref && want_arg != ARG_DEPOSIT && want_arg != ARG_PAYOUT ? "--ref"
                        : o->reason && want_arg != ARG_REJECT                       ? "--reason"
                        : (o->from || o->to || o->csv) && want_arg != ARG_STATEMENT ? "--from/--to/--csv"
                        : o->all && want_arg != ARG_LIST                            ? "--all"
                                                                                    : NULL;
    if (stray) {
        fprintf(stderr, "ledger %s: %s does not belong to this command\n", argv[0], stray);
        return EXIT_USAGE;
    }
    if (o->csv && o->json) {
        fprintf(stderr, "ledger %s: --csv and --json exclude each other\n", argv[0]);
        return EXIT_USAGE;
    }
    if (want_arg != ARG_NONE && want_arg != ARG_LIST) {
        if (optind >= argc) {
            fprintf(stderr, "ledger %s: missing %s\n", argv[0],
                    want_arg == ARG_TASK                                ? "TASK"
                    : want_arg == ARG_PAYOUT || want_arg == ARG_REJECT ? "withdrawal ID"
                                                                        : "USER");
            return EXIT_USAGE;
        }
        o->arg = argv[optind++];
    }
    if (want_arg == ARG_DEPOSIT) { /* deposit: USER AMOUNT --ref REF */
        if (optind >= argc || !o->ref) {
            fprintf(stderr, "ledger deposit: USER AMOUNT --ref REF are required\n");
            return EXIT_USAGE;
        }
        o->amount = argv[optind++];
    }
    if ((want_arg == ARG_PAYOUT && !o->ref) || (want_arg == ARG_REJECT && !o->reason)) {
        fprintf(stderr, "ledger %s: %s is required\n", argv[0], want_arg == ARG_PAYOUT ? "--ref REF" : "--reason TEXT");
        return EXIT_USAGE;
    }
    if (optind < argc) {
        fprintf(stderr, "ledger %s: unexpected argument '%s'\n", argv[0], argv[optind]);
        return EXIT_USAGE;
    }
    if (o->ledger && strncmp(o->ledger, "postgresql://", 13) && strncmp(o->ledger, "postgres://", 11)) {
        fprintf(stderr, "ledger %s: --ledger takes a postgresql:// connection string\n", argv[0]);
        return EXIT_USAGE;
    }
    if ((!o->home || !*o->home) && !o->ledger) {
        fprintf(stderr, "ledger %s: --home DIR is required (or set BLOCKFED_HOME)\n", argv[0]);
        return EXIT_USAGE;
    }
    if (!o->home) o->home = "";
    return 0;
}

/* Opens HOME/ledger.db without creating it: inspecting a mistyped home must not leave an empty
 * ledger behind. */
static bf_ledger_t *open_existing(const char *home) {
    char path[4096];
    if (snprintf(path, sizeof path, "%s/ledger.db", home) >= (int)sizeof path) {
        fprintf(stderr, "ledger: home path too long\n");
        return NULL;
    }
    if (access(path, R_OK | W_OK) != 0) {
        fprintf(stderr, "ledger: no readable ledger at %s\n", path);
        return NULL;
    }
    bf_err_t err = {{0}};
    bf_ledger_t *L = bf_ledger_open(path, &err);
    if (!L) fprintf(stderr, "ledger: %s\n", err.msg);
    return L;
}

/* A PostgreSQL ledger: opening it creates its schema when missing, as init does for a file. */
static bf_ledger_t *open_url(const char *url) {
    bf_err_t err = {{0}};
    bf_ledger_t *L = bf_ledger_open(url, &err);
    if (!L) fprintf(stderr, "ledger: %s\n", err.msg);
    return L;
}

static const char *fmt_cny(int64_t v, char buf[32]) { return bf_money_format_amount(v, 2, buf); }

/* ---- verify ---------------------------------------------------------------------------------- */

static int do_verify(bf_ledger_t *L, const opts_t *o) {
    bf_ledger_report_t rep;
    bf_err_t err = {{0}};
    if (bf_ledger_verify(L, &rep, &err)) {
        fprintf(stderr, "ledger verify: %s\n", err.msg);
        return EXIT_RUNTIME;
    }
    if (o->json) {
        printf("{\"ok\":%s,\"transfers\":%lld,\"accounts\":%lld,\"users\":%lld,\"tasks\":%lld,"
               "\"holds_pending\":%lld,\"withdrawals_pending\":%lld,\"head_hash\":",
               rep.ok ? "true" : "false", (long long)rep.transfers, (long long)rep.accounts,
               (long long)rep.users, (long long)rep.tasks, (long long)rep.holds_pending,
               (long long)rep.withdrawals_pending);
        bf_json_cstring(stdout, rep.head_hash);
        printf(",\"checks\":[");
        for (int i = 0; i < BF_LEDGER_CHECK_COUNT; i++) {
            printf("%s{\"name\":", i ? "," : "");
            bf_json_cstring(stdout, rep.checks[i].name);
            printf(",\"ok\":%s,\"failures\":%lld,\"detail\":", rep.checks[i].ok ? "true" : "false",
                   (long long)rep.checks[i].failures);
            bf_json_cstring(stdout, rep.checks[i].detail);
            printf("}");
        }
        printf("]}\n");
    } else {
        printf("ledger: %lld transfers, %lld accounts, %lld users, %lld tasks, %lld pending holds, %lld pending "
               "withdrawals\n",
               (long long)rep.transfers, (long long)rep.accounts, (long long)rep.users, (long long)rep.tasks,
               (long long)rep.holds_pending, (long long)rep.withdrawals_pending);
        printf("chain head: %s\n", rep.head_hash[0] ? rep.head_hash : "(empty)");
        for (int i = 0; i < BF_LEDGER_CHECK_COUNT; i++) {
            printf("  %-13s %s", rep.checks[i].name, rep.checks[i].ok ? "ok" : "FAILED");
            if (!rep.checks[i].ok)
                printf(" (%lld violation%s; first: %s)", (long long)rep.checks[i].failures,
                       rep.checks[i].failures == 1 ? "" : "s", rep.checks[i].detail);
            printf("\n");
        }
        printf("%s\n", rep.ok ? "verify: OK" : "verify: FAILED");
    }
    return rep.ok ? EXIT_OK : EXIT_CHECK_FAILED;
}

/* ---- balances -------------------------------------------------------------------------------- */

static void json_balance(const char *name, const bf_ledger_balance_t *b, const char *unit) {
    printf("\"%s\":{\"posted%s\":%lld,\"pending_debits%s\":%lld,\"pending_credits%s\":%lld,"
           "\"available%s\":%lld}",
           name, unit, (long long)b->posted, unit, (long long)b->pending_debits, unit,
           (long long)b->pending_credits, unit, (long long)b->available);
}

static const char *kind_name(bf_ledger_account_kind_t k) {
    switch (k) {
    case BF_LEDGER_ACCT_USER_CASH: return "user_cash";
    case BF_LEDGER_ACCT_USER_COIN: return "user_coin";
    case BF_LEDGER_ACCT_TASK_ESCROW: return "task_escrow";
    case BF_LEDGER_ACCT_TASK_CLEARING: return "task_clearing";
    case BF_LEDGER_ACCT_PLATFORM_EXTERNAL: return "platform_external";
    case BF_LEDGER_ACCT_PLATFORM_REVENUE: return "platform_revenue";
    }
    return "?";
}

static int do_balances(bf_ledger_t *L, const opts_t *o) {
    bf_err_t err = {{0}};
    bf_ledger_user_t *u = NULL;
    bf_ledger_account_t *a = NULL;
    size_t nu = 0, na = 0;
    if (bf_ledger_users(L, &u, &nu, &err) || bf_ledger_accounts(L, &a, &na, &err)) {
        fprintf(stderr, "ledger balances: %s\n", err.msg);
        free(u);
        return EXIT_RUNTIME;
    }
    char b1[32], b2[32], b3[32];
    if (o->json) {
        printf("{\"users\":[");
        for (size_t i = 0; i < nu; i++) {
            printf("%s{\"id\":%lld,\"name\":", i ? "," : "", (long long)u[i].id);
            bf_json_cstring(stdout, u[i].name);
            printf(",");
            json_balance("cash", &u[i].cash, "_cents");
            printf(",");
            json_balance("coin", &u[i].coin, "");
            printf("}");
        }
        printf("],\"system_accounts\":[");
        int first = 1;
        for (size_t i = 0; i < na; i++) {
            if (a[i].kind == BF_LEDGER_ACCT_USER_CASH || a[i].kind == BF_LEDGER_ACCT_USER_COIN) continue;
            printf("%s{\"id\":%lld,\"kind\":\"%s\",\"currency\":\"%s\",\"owner\":%lld,", first ? "" : ",",
                   (long long)a[i].id, kind_name(a[i].kind), a[i].currency == BF_LEDGER_CNY ? "CNY" : "COIN",
                   (long long)a[i].owner);
            json_balance("balance", &a[i].balance, a[i].currency == BF_LEDGER_CNY ? "_cents" : "");
            printf("}");
            first = 0;
        }
        printf("]}\n");
    } else {
        printf("%-6s %-24s %14s %12s %14s %10s\n", "id", "user", "cash posted", "cash held", "cash available",
               "coins");
        for (size_t i = 0; i < nu; i++)
            printf("%-6lld %-24s %14s %12s %14s %10lld\n", (long long)u[i].id, u[i].name,
                   fmt_cny(u[i].cash.posted, b1), fmt_cny(u[i].cash.pending_debits, b2),
                   fmt_cny(u[i].cash.available, b3), (long long)u[i].coin.available);
        printf("\n%-6s %-18s %-5s %-6s %16s %14s\n", "acct", "kind", "cur", "owner", "posted", "pending in");
        for (size_t i = 0; i < na; i++) {
            if (a[i].kind == BF_LEDGER_ACCT_USER_CASH || a[i].kind == BF_LEDGER_ACCT_USER_COIN) continue;
            int scale = bf_ledger_currency_scale(a[i].currency);
            printf("%-6lld %-18s %-5s %-6lld %16s %14s\n", (long long)a[i].id, kind_name(a[i].kind),
                   a[i].currency == BF_LEDGER_CNY ? "CNY" : "COIN", (long long)a[i].owner,
                   bf_money_format_amount(a[i].balance.posted, scale, b1),
                   bf_money_format_amount(a[i].balance.pending_credits, scale, b2));
        }
    }
    free(u);
    free(a);
    return EXIT_OK;
}

/* ---- history --------------------------------------------------------------------------------- */

static int parse_id(const char *s, int64_t *id) {
    int64_t v;
    if (bf_money_parse_amount(s, 0, &v, NULL) || v <= 0) return -1;
    *id = v;
    return 0;
}

static int do_history(bf_ledger_t *L, const opts_t *o) {
    bf_err_t err = {{0}};
    int64_t uid;
    if (bf_ledger_user_find(L, o->arg, &uid, &err) != 0 && parse_id(o->arg, &uid) != 0) {
        fprintf(stderr, "ledger history: unknown user '%s'\n", o->arg);
        return EXIT_NOT_FOUND;
    }
    bf_ledger_user_t user;
    int rc = bf_ledger_user_get(L, uid, &user, &err);
    if (rc) {
        fprintf(stderr, "ledger history: %s\n", err.msg);
        return rc == BF_LEDGER_ENOTFOUND ? EXIT_NOT_FOUND : EXIT_RUNTIME;
    }
    bf_ledger_entry_t *e = NULL;
    size_t n = 0;
    if (bf_ledger_history(L, uid, &e, &n, &err)) {
        fprintf(stderr, "ledger history: %s\n", err.msg);
        return EXIT_RUNTIME;
    }
    char b1[32], b2[32], b3[32];
    if (o->json) {
        printf("{\"user\":{\"id\":%lld,\"name\":", (long long)uid);
        bf_json_cstring(stdout, user.name);
        printf("},\"entries\":[");
        for (size_t i = 0; i < n; i++) {
            printf("%s{\"transfer\":%lld,\"time\":%lld,\"op\":", i ? "," : "", (long long)e[i].transfer_id,
                   (long long)e[i].created_at);
            bf_json_cstring(stdout, e[i].op_id);
            printf(",\"type\":\"%s\",\"code\":\"%s\",\"currency\":\"%s\",\"amount\":%lld,"
                   "\"counterparty_account\":%lld,\"balance_before\":%lld,\"balance_after\":%lld}",
                   e[i].type, e[i].code, e[i].currency == BF_LEDGER_CNY ? "CNY" : "COIN", (long long)e[i].amount,
                   (long long)e[i].counterparty_account, (long long)e[i].balance_before,
                   (long long)e[i].balance_after);
        }
        printf("]}\n");
    } else {
        printf("history of %s (user %lld)\n", user.name, (long long)uid);
        printf("%-8s %-8s %-15s %-5s %12s %12s %12s  %s\n", "xfer", "type", "code", "cur", "amount", "before",
               "after", "op");
        for (size_t i = 0; i < n; i++) {
            int scale = bf_ledger_currency_scale(e[i].currency);
            printf("%-8lld %-8s %-15s %-5s %12s %12s %12s  %s\n", (long long)e[i].transfer_id, e[i].type,
                   e[i].code, e[i].currency == BF_LEDGER_CNY ? "CNY" : "COIN",
                   bf_money_format_amount(e[i].amount, scale, b1),
                   bf_money_format_amount(e[i].balance_before, scale, b2),
                   bf_money_format_amount(e[i].balance_after, scale, b3), e[i].op_id);
        }
    }
    free(e);
    return EXIT_OK;
}

/* ---- shares ---------------------------------------------------------------------------------- */

/* TASK as the user knows it: the id given to `task create` (HOME/coordinator.db maps it to the
 * ledger's number), or the ledger's number itself. 0 with *tid (and ref, the coordinator's id,
 * "" if none) set, or an exit status. */
static int resolve_task(const opts_t *o, int64_t *number, char ref[65], int64_t *tid) {
    char path[4096];
    bf_err_t err = {{0}};
    if (parse_id(o->arg, number)) *number = 0;
    snprintf(path, sizeof path, "%s/coordinator.db", o->home);
    int rc = coord_store_task_ref(path, o->arg, *number, ref, tid, &err);
    if (rc < 0) {
        fprintf(stderr, "ledger: %s\n", err.msg);
        return EXIT_RUNTIME;
    }
    if (rc == 0) return 0;
    if (*number) return *tid = *number, 0;
    fprintf(stderr, "ledger: no task '%s' (give the id it was created with, or the ledger's task number)\n", o->arg);
    return EXIT_NOT_FOUND;
}

static int do_shares(bf_ledger_t *L, const opts_t *o) {
    bf_err_t err = {{0}};
    int64_t tid = 0, number = 0;
    char ref[65] = "";
    bf_ledger_task_t task;
    int rc = resolve_task(o, &number, ref, &tid);
    if (rc) return rc;
    rc = bf_ledger_task_get(L, tid, &task, &err);
    if (rc) {
        fprintf(stderr, "ledger shares: %s\n", err.msg);
        return rc == BF_LEDGER_ENOTFOUND ? EXIT_NOT_FOUND : EXIT_RUNTIME;
    }
    bf_ledger_share_t *s = NULL;
    size_t n = 0;
    if (bf_ledger_task_shares(L, tid, &s, &n, &err)) {
        fprintf(stderr, "ledger shares: %s\n", err.msg);
        return EXIT_RUNTIME;
    }
    char b1[32];
    if (o->json) {
        printf("{\"task\":{\"id\":%lld,\"task_id\":", (long long)tid);
        bf_json_cstring(stdout, ref);
        printf(",\"name\":");
        bf_json_cstring(stdout, task.name);
        printf(",\"mode\":\"%s\",\"model_online\":%s,\"total_revenue_cents\":%lld,\"platform_fee_ppm\":%lld},"
               "\"shares\":[",
               task.mode == BF_LEDGER_MODE_REWARD ? "reward" : "shareholding", task.model_online ? "true" : "false",
               (long long)task.total_revenue, (long long)task.platform_fee_ppm);
        for (size_t i = 0; i < n; i++) {
            bf_ledger_user_t u;
            const char *name = bf_ledger_user_get(L, s[i].user_id, &u, NULL) == 0 ? u.name : "";
            printf("%s{\"user_id\":%lld,\"user\":", i ? "," : "", (long long)s[i].user_id);
            bf_json_cstring(stdout, name);
            printf(",\"weight\":%lld,\"ppm\":%lld,\"received_cents\":%lld}", (long long)s[i].weight,
                   (long long)s[i].ppm, (long long)s[i].received);
        }
        printf("]}\n");
    } else {
        printf("task %s%s(ledger %lld) '%s': %s, model %s, revenue %s\n", ref, ref[0] ? " " : "", (long long)tid, task.name,
               task.mode == BF_LEDGER_MODE_REWARD ? "reward" : "shareholding",
               task.model_online ? "online" : "offline", fmt_cny(task.total_revenue, b1));
        printf("%-8s %-24s %12s %10s %14s\n", "user", "name", "weight", "ppm", "received");
        for (size_t i = 0; i < n; i++) {
            bf_ledger_user_t u;
            const char *name = bf_ledger_user_get(L, s[i].user_id, &u, NULL) == 0 ? u.name : "?";
            printf("%-8lld %-24s %12lld %10lld %14s\n", (long long)s[i].user_id, name, (long long)s[i].weight,
                   (long long)s[i].ppm, fmt_cny(s[i].received, b1));
        }
    }
    free(s);
    return EXIT_OK;
}

/* ---- deposit --------------------------------------------------------------------------------- */

static int valid_ref(const char *r) {
    size_t n = strlen(r);
    for (size_t i = 0; i < n; i++)
        if (r[i] <= ' ' || r[i] >= 0x7f) return 0;
    return n >= 1 && n <= 100;
}

static int do_deposit(bf_ledger_t *L, const opts_t *o) {
    bf_err_t err = {{0}};
    int64_t uid, cents;
    if (!valid_ref(o->ref)) {
        fprintf(stderr, "ledger deposit: --ref must be 1..100 printable characters without spaces\n");
        return EXIT_USAGE;
    }
    if (bf_money_parse_amount(o->amount, 2, &cents, &err) || cents <= 0) {
        fprintf(stderr, "ledger deposit: AMOUNT must be a positive amount of yuan with at most 2 decimals\n");
        return EXIT_USAGE;
    }
    bf_ledger_user_t user;
    if ((bf_ledger_user_find(L, o->arg, &uid, &err) != 0 && parse_id(o->arg, &uid) != 0) ||
        bf_ledger_user_get(L, uid, &user, &err) != 0) {
        fprintf(stderr, "ledger deposit: unknown user '%s'\n", o->arg);
        return EXIT_NOT_FOUND;
    }
    /* the op id is the external reference alone: a payment is credited once, whoever repeats it */
    char op[BF_LEDGER_OP_ID_MAX + 1];
    snprintf(op, sizeof op, "deposit:%s", o->ref);
    int rc = bf_ledger_recharge(L, op, uid, cents, &err);
    if (rc == BF_LEDGER_ECONFLICT || rc == BF_LEDGER_EOVERFLOW) {
        fprintf(stderr, "ledger deposit: refused: %s\n",
                rc == BF_LEDGER_ECONFLICT ? "this --ref was used for another deposit (user or amount)" : err.msg);
        return EXIT_CHECK_FAILED;
    }
    if (rc || bf_ledger_user_get(L, uid, &user, &err)) {
        fprintf(stderr, "ledger deposit: %s\n", err.msg);
        return EXIT_RUNTIME;
    }
    char a[32], b[32];
    if (o->json) {
        printf("{\"user\":");
        bf_json_cstring(stdout, user.name);
        printf(",\"ref\":");
        bf_json_cstring(stdout, o->ref);
        printf(",\"amount_cents\":%lld,\"cash_cents\":%lld}\n", (long long)cents, (long long)user.cash.posted);
    } else {
        printf("deposited %s to %s (ref %s); cash now %s\n", fmt_cny(cents, a), user.name, o->ref,
               fmt_cny(user.cash.posted, b));
    }
    return EXIT_OK;
}

/* ---- statement ------------------------------------------------------------------------------ */

/* One currency's statement, as a table or CSV with the op column (the operator's view). */
static void print_statement(const bf_statement_fmt_t *f, const bf_ledger_statement_t *st, int64_t to_shown) {
    int scale = bf_ledger_currency_scale(st->currency);
    const char *cur = st->currency == BF_LEDGER_CNY ? "CNY" : "COIN";
    char a[32], h[32], bb[32], ba[32], hb[32], ha[32], id[32];
    bf_statement_opening(f, cur, st->from, bf_money_format_amount(st->opening, scale, ba),
                         bf_money_format_amount(st->opening_held, scale, ha));
    for (size_t i = 0; i < st->n; i++) {
        const bf_ledger_statement_line_t *l = &st->lines[i];
        snprintf(id, sizeof id, "%lld", (long long)l->transfer_id);
        const bf_statement_line_t line = {.time = l->created_at, .transfer = id, .type = l->type, .code = l->code,
                                          .op = l->op_id, .amount = bf_money_format_amount(l->amount, scale, a),
                                          .held = bf_money_format_amount(l->held, scale, h),
                                          .before = bf_money_format_amount(l->balance_before, scale, bb),
                                          .after = bf_money_format_amount(l->balance_after, scale, ba),
                                          .held_before = bf_money_format_amount(l->held_before, scale, hb),
                                          .held_after = bf_money_format_amount(l->held_after, scale, ha)};
        bf_statement_movement(f, cur, &line);
    }
    bf_statement_closing(f, cur, to_shown, bf_money_format_amount(st->closing, scale, ba),
                         bf_money_format_amount(st->closing_held, scale, ha));
}

static void print_statement_json(const bf_ledger_statement_t *st) {
    printf("{\"currency\":\"%s\",\"opening\":%lld,\"opening_held\":%lld,\"closing\":%lld,\"closing_held\":%lld,"
           "\"lines\":[",
           st->currency == BF_LEDGER_CNY ? "CNY" : "COIN", (long long)st->opening, (long long)st->opening_held,
           (long long)st->closing, (long long)st->closing_held);
    for (size_t i = 0; i < st->n; i++) {
        const bf_ledger_statement_line_t *l = &st->lines[i];
        printf("%s{\"transfer\":%lld,\"time\":%lld,\"op\":", i ? "," : "", (long long)l->transfer_id,
               (long long)l->created_at);
        bf_json_cstring(stdout, l->op_id);
        printf(",\"type\":\"%s\",\"code\":\"%s\",\"amount\":%lld,\"held\":%lld,\"balance_before\":%lld,"
               "\"balance_after\":%lld,\"held_before\":%lld,\"held_after\":%lld}",
               l->type, l->code, (long long)l->amount, (long long)l->held, (long long)l->balance_before,
               (long long)l->balance_after, (long long)l->held_before, (long long)l->held_after);
    }
    printf("]}");
}

static int do_statement(bf_ledger_t *L, const opts_t *o) {
    bf_err_t err = {{0}};
    int64_t uid, from = 0, to = INT64_MAX;
    if (o->from && (from = bf_statement_parse_date(o->from)) < 0) {
        fprintf(stderr, "ledger statement: --from must be a date YYYY-MM-DD\n");
        return EXIT_USAGE;
    }
    if (o->to) {
        if ((to = bf_statement_parse_date(o->to)) < 0) {
            fprintf(stderr, "ledger statement: --to must be a date YYYY-MM-DD\n");
            return EXIT_USAGE;
        }
        to += 86400; /* the whole day */
    }
    if (to <= from) {
        fprintf(stderr, "ledger statement: --to is before --from\n");
        return EXIT_USAGE;
    }
    bf_ledger_user_t user;
    if ((bf_ledger_user_find(L, o->arg, &uid, &err) != 0 && parse_id(o->arg, &uid) != 0) ||
        bf_ledger_user_get(L, uid, &user, &err) != 0) {
        fprintf(stderr, "ledger statement: unknown user '%s'\n", o->arg);
        return EXIT_NOT_FOUND;
    }
    bf_ledger_statement_t st[2];
    const bf_ledger_currency_t cur[2] = {BF_LEDGER_CNY, BF_LEDGER_COIN};
    for (int i = 0; i < 2; i++)
        if (bf_ledger_statement(L, uid, cur[i], from, to, &st[i], &err)) {
            fprintf(stderr, "ledger statement: %s\n", err.msg);
            if (i) bf_ledger_statement_free(&st[0]);
            return EXIT_RUNTIME;
        }
    int64_t now = (int64_t)time(NULL), shown = to < now ? to : now;
    const bf_statement_fmt_t fmt = {.out = stdout, .csv = o->csv, .with_op = 1};
    if (o->json) {
        printf("{\"user\":{\"id\":%lld,\"name\":", (long long)uid);
        bf_json_cstring(stdout, user.name);
        printf("},\"from\":%lld,\"to\":%lld,\"statements\":[", (long long)from, (long long)shown);
        for (int i = 0; i < 2; i++) {
            if (i) putchar(',');
            print_statement_json(&st[i]);
        }
        printf("]}\n");
    } else {
        char a[32], b[32];
        if (!o->csv)
            printf("statement of %s (user %lld) from %s to %s\n", user.name, (long long)uid, bf_statement_time(from, a),
                   bf_statement_time(shown, b));
        bf_statement_csv_header(&fmt);
        for (int i = 0; i < 2; i++) print_statement(&fmt, &st[i], shown);
    }
    for (int i = 0; i < 2; i++) bf_ledger_statement_free(&st[i]);
    return EXIT_OK;
}

/* ---- withdrawals, payout, reject ----------------------------------------------------------- */

static const char *wd_status(bf_ledger_withdrawal_status_t s) {
    return s == BF_LEDGER_WITHDRAWAL_PENDING ? "pending" : s == BF_LEDGER_WITHDRAWAL_PAID ? "paid" : "rejected";
}

static void json_withdrawal(bf_ledger_t *L, const bf_ledger_withdrawal_t *w) {
    bf_ledger_user_t u;
    const char *name = bf_ledger_user_get(L, w->user_id, &u, NULL) == 0 ? u.name : "";
    printf("{\"id\":%lld,\"user_id\":%lld,\"user\":", (long long)w->id, (long long)w->user_id);
    bf_json_cstring(stdout, name);
    printf(",\"amount_cents\":%lld,\"status\":\"%s\",\"created_at\":%lld,\"resolved_at\":%lld,\"ref\":",
           (long long)w->amount, wd_status(w->status), (long long)w->created_at, (long long)w->resolved_at);
    bf_json_cstring(stdout, w->external_ref);
    printf(",\"reason\":");
    bf_json_cstring(stdout, w->reason);
    printf("}");
}

static int do_withdrawals(bf_ledger_t *L, const opts_t *o) {
    bf_err_t err = {{0}};
    bf_ledger_withdrawal_t *w = NULL;
    size_t n = 0;
    if (bf_ledger_withdrawals(L, o->all ? 0 : BF_LEDGER_WITHDRAWAL_PENDING, 0, &w, &n, &err)) {
        fprintf(stderr, "ledger withdrawals: %s\n", err.msg);
        return EXIT_RUNTIME;
    }
    if (o->json) {
        printf("{\"withdrawals\":[");
        for (size_t i = 0; i < n; i++) {
            if (i) putchar(',');
            json_withdrawal(L, &w[i]);
        }
        printf("]}\n");
    } else {
        char a[32], t[32];
        printf("%-6s %-24s %14s %-9s %-20s %s\n", "id", "user", "amount", "status", "requested", "ref / reason");
        for (size_t i = 0; i < n; i++) {
            bf_ledger_user_t u;
            char name[80];
            /* names are the user's own text: shown through the JSON escaper's rules, never raw */
            snprintf(name, sizeof name, "%s", bf_ledger_user_get(L, w[i].user_id, &u, NULL) == 0 ? u.name : "?");
            for (char *p = name; *p; p++)
                if ((unsigned char)*p < ' ' || *p == 0x7f) *p = '?';
            printf("%-6lld %-24s %14s %-9s %-20s %s\n", (long long)w[i].id, name, fmt_cny(w[i].amount, a),
                   wd_status(w[i].status), bf_statement_time(w[i].created_at, t),
                   w[i].status == BF_LEDGER_WITHDRAWAL_PAID ? w[i].external_ref : w[i].reason);
        }
        if (!o->all) printf("%zu pending\n", n);
    }
    free(w);
    return EXIT_OK;
}

/* Payout or reject: the outcome as an exit status, and the withdrawal as it now stands. */
static int settle_withdrawal(bf_ledger_t *L, const opts_t *o, int pay) {
    const char *cmd = pay ? "payout" : "reject";
    bf_err_t err = {{0}};
    int64_t id;
    if (parse_id(o->arg, &id)) {
        fprintf(stderr, "ledger %s: ID must be a withdrawal number\n", cmd);
        return EXIT_USAGE;
    }
    int rc = pay ? bf_ledger_withdraw_payout(L, id, o->ref, &err) : bf_ledger_withdraw_reject(L, id, o->reason, &err);
    switch (rc) {
    case BF_LEDGER_OK: break;
    case BF_LEDGER_EINVAL: fprintf(stderr, "ledger %s: %s\n", cmd, err.msg); return EXIT_USAGE;
    case BF_LEDGER_ENOTFOUND: fprintf(stderr, "ledger %s: no withdrawal %lld\n", cmd, (long long)id); return EXIT_NOT_FOUND;
    case BF_LEDGER_ECONFLICT:
        fprintf(stderr, "ledger %s: refused: %s\n", cmd,
                pay ? "this --ref was used for another withdrawal" : "this rejection was made with other arguments");
        return EXIT_CHECK_FAILED;
    case BF_LEDGER_EPOSTED:
    case BF_LEDGER_EVOIDED: fprintf(stderr, "ledger %s: refused: %s\n", cmd, err.msg); return EXIT_CHECK_FAILED;
    default: fprintf(stderr, "ledger %s: %s\n", cmd, err.msg); return EXIT_RUNTIME;
    }
    bf_ledger_withdrawal_t w;
    if (bf_ledger_withdrawal_get(L, id, &w, &err)) {
        fprintf(stderr, "ledger %s: %s\n", cmd, err.msg);
        return EXIT_RUNTIME;
    }
    if (o->json) {
        json_withdrawal(L, &w);
        putchar('\n');
    } else {
        char a[32];
        printf("withdrawal %lld of %s %s", (long long)id, fmt_cny(w.amount, a), wd_status(w.status));
        if (pay) printf(" (ref %s)\n", w.external_ref);
        else printf("; the money is available to its user again\n");
    }
    return EXIT_OK;
}

static int do_payout(bf_ledger_t *L, const opts_t *o) { return settle_withdrawal(L, o, 1); }
static int do_reject(bf_ledger_t *L, const opts_t *o) { return settle_withdrawal(L, o, 0); }

int cmd_ledger_main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fputs(usage_text, argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : EXIT_OK;
    }
    static const struct {
        const char *name;
        int want_arg; /* ARG_* */
        int (*run)(bf_ledger_t *, const opts_t *);
    } subs[] = {
        {"verify", ARG_NONE, do_verify},
        {"balances", ARG_NONE, do_balances},
        {"history", ARG_USER, do_history},
        {"statement", ARG_STATEMENT, do_statement},
        {"shares", ARG_TASK, do_shares},
        {"deposit", ARG_DEPOSIT, do_deposit},
        {"withdrawals", ARG_LIST, do_withdrawals},
        {"payout", ARG_PAYOUT, do_payout},
        {"reject", ARG_REJECT, do_reject},
    };
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++) {
        if (strcmp(argv[1], subs[i].name)) continue;
        opts_t o;
        int rc = parse(argc - 1, argv + 1, subs[i].want_arg, &o);
        if (rc) return rc < 0 ? EXIT_OK : rc;
        bf_ledger_t *L = o.ledger ? open_url(o.ledger) : open_existing(o.home);
        if (!L) return EXIT_RUNTIME;
        rc = subs[i].run(L, &o);
        bf_ledger_close(&L);
        return rc;
    }
    fprintf(stderr, "ledger: unknown command '%s'\n", argv[1]);
    fputs(usage_text, stderr);
    return EXIT_USAGE;
}

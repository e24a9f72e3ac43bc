/* cmd_ledger.c: `blockfed-coordinator ledger verify|balances|history|shares|deposit`. Read-only
 * views of HOME/ledger.db for operators and auditors, as text or JSON, and the operator's one
 * write: a deposit of money received outside the platform, idempotent on its external reference. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bf_ledger.h"
#include "bf_text.h"
#include "commands.h"
#include "coord.h"

static const char usage_text[] =
    "usage: blockfed-coordinator ledger verify   --home DIR [--json]\n"
    "       blockfed-coordinator ledger balances --home DIR [--json]\n"
    "       blockfed-coordinator ledger history USER --home DIR [--json]\n"
    "       blockfed-coordinator ledger shares TASK --home DIR [--json]\n"
    "       blockfed-coordinator ledger deposit USER AMOUNT --ref REF --home DIR [--json]\n"
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
    "  --json      machine-readable output on stdout\n"
    "  -h, --help  this text\n"
    "\n"
    "exit status:\n"
    "  0  success (verify: every invariant holds)\n"
    "  1  verify found at least one violation; deposit refused (REF used otherwise, overflow)\n"
    "  2  usage error\n"
    "  3  the ledger could not be opened or read\n"
    "  4  the named user or task does not exist\n"
    "Amounts: CNY in yuan with 2 decimals in text, integer cents in JSON (*_cents); coins are integers.\n";

typedef struct {
    const char *home;
    int json;
    const char *arg; /* USER or TASK */
    const char *amount, *ref; /* deposit */
} opts_t;

static int parse(int argc, char **argv, int want_arg, opts_t *o) {
    static const struct option longopts[] = {
        {"home", required_argument, NULL, 'H'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {"ref", required_argument, NULL, 'r'},
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
        case 'h': fputs(usage_text, stdout); return -1;
        default: fputs(usage_text, stderr); return EXIT_USAGE;
        }
    }
    if (want_arg) {
        if (optind >= argc) {
            fprintf(stderr, "ledger %s: missing %s\n", argv[0], want_arg == 2 ? "TASK" : "USER");
            return EXIT_USAGE;
        }
        o->arg = argv[optind++];
    }
    if (want_arg == 3) { /* deposit: USER AMOUNT --ref REF */
        if (optind >= argc || !o->ref) {
            fprintf(stderr, "ledger deposit: USER AMOUNT --ref REF are required\n");
            return EXIT_USAGE;
        }
        o->amount = argv[optind++];
    } else if (o->ref) {
        fprintf(stderr, "ledger %s: --ref belongs to deposit\n", argv[0]);
        return EXIT_USAGE;
    }
    if (optind < argc) {
        fprintf(stderr, "ledger %s: unexpected argument '%s'\n", argv[0], argv[optind]);
        return EXIT_USAGE;
    }
    if (!o->home || !*o->home) {
        fprintf(stderr, "ledger %s: --home DIR is required (or set BLOCKFED_HOME)\n", argv[0]);
        return EXIT_USAGE;
    }
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
               "\"holds_pending\":%lld,\"head_hash\":",
               rep.ok ? "true" : "false", (long long)rep.transfers, (long long)rep.accounts,
               (long long)rep.users, (long long)rep.tasks, (long long)rep.holds_pending);
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
        printf("ledger: %lld transfers, %lld accounts, %lld users, %lld tasks, %lld pending holds\n",
               (long long)rep.transfers, (long long)rep.accounts, (long long)rep.users,
               (long long)rep.tasks, (long long)rep.holds_pending);
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

int cmd_ledger_main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fputs(usage_text, argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : EXIT_OK;
    }
    static const struct {
        const char *name;
        int want_arg; /* 0 none, 1 USER, 2 TASK, 3 USER AMOUNT (deposit) */
        int (*run)(bf_ledger_t *, const opts_t *);
    } subs[] = {
        {"verify", 0, do_verify},
        {"balances", 0, do_balances},
        {"history", 1, do_history},
        {"shares", 2, do_shares},
        {"deposit", 3, do_deposit},
    };
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++) {
        if (strcmp(argv[1], subs[i].name)) continue;
        opts_t o;
        int rc = parse(argc - 1, argv + 1, subs[i].want_arg, &o);
        if (rc) return rc < 0 ? EXIT_OK : rc;
        bf_ledger_t *L = open_existing(o.home);
        if (!L) return EXIT_RUNTIME;
        rc = subs[i].run(L, &o);
        bf_ledger_close(&L);
        return rc;
    }
    fprintf(stderr, "ledger: unknown command '%s'\n", argv[1]);
    fputs(usage_text, stderr);
    return EXIT_USAGE;
}

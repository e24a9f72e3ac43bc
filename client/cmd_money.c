/* cmd_money.c: money out and the account statement: `withdraw AMOUNT` (one WITHDRAW, with a
 * request key so its retries ask once, like `recharge`), `withdrawals` (WITHDRAWALS_GET) and `statement` (STATEMENT_GET pages for
 * cash and coins, printed as a table or as CSV). Everything in a reply is the coordinator's text:
 * checked for its shape and sanitised before it reaches the terminal or a CSV file. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bf_mp.h"
#include "bf_render.h"
#include "bf_statement.h"
#include "client.h"

static bf_cli_outcome_t usage_fail(const char *cmd) {
    fprintf(stderr, "try 'blockfed-client %s --help'\n", cmd);
    return CLIENT_USAGE;
}

/* ---- withdraw ------------------------------------------------------------------------------ */

static const char withdraw_help[] =
    "usage: blockfed-client withdraw AMOUNT [--json]\n"
    "\n"
    "Asks to withdraw AMOUNT yuan (a plain decimal with at most 2 decimals) from the account. The\n"
    "amount is held at once (it leaves the available balance); the coordinator's operator then\n"
    "pays it out or rejects it (the money is available again). Prints the withdrawal's number and\n"
    "the balance. A retry after a timeout asks once.\n"
    "\n"
    "exit status: 0 ok, 1 runtime or coordinator error (e.g. INSUFFICIENT_FUNDS), 2 usage error\n";

bf_cli_outcome_t bf_cmd_withdraw(int argc, char **argv, bf_cli_ctx_t *ctx) {
    int json;
    bf_cli_args_t rc = bf_cli_parse_plain(argc, argv, ctx, &json, withdraw_help);
    bf_err_t err;
    if (rc == CLIENT_ARGS_HELP) return CLIENT_OK;
    if (!rc && optind + 1 != argc) rc = bf_cli_error("withdraw takes exactly one AMOUNT");
    if (!rc && bf_check_amount(argv[optind], &err)) rc = bf_cli_error("%s", err.msg);
    if (rc) return usage_fail("withdraw");
    char key[65];
    if (bf_conn_request_key(key, &err)) return bf_cli_fail("%s", err.msg);
    bf_msg_t *req = bf_msg_new("WITHDRAW", 0);
    if (req && (bf_msg_set_str(req, "amount", argv[optind]) || bf_msg_set_str(req, "request", key))) bf_msg_destroy(&req);
    return bf_cli_simple(ctx, req, "OK", "result", 1, json);
}

static const char withdrawals_help[] =
    "usage: blockfed-client withdrawals [--json]\n"
    "\n"
    "Lists the account's withdrawals, newest first: number, amount, status (pending, paid,\n"
    "rejected), when asked and resolved, and the operator's payout reference or reason.\n"
    "\n"
    "exit status: 0 ok, 1 runtime or coordinator error, 2 usage error\n";

bf_cli_outcome_t bf_cmd_withdrawals(int argc, char **argv, bf_cli_ctx_t *ctx) {
    int json;
    bf_cli_args_t rc = bf_cli_parse_plain(argc, argv, ctx, &json, withdrawals_help);
    if (rc == CLIENT_ARGS_HELP) return CLIENT_OK;
    if (!rc && optind != argc) rc = bf_cli_error("withdrawals takes no arguments");
    if (rc) return usage_fail("withdrawals");
    return bf_cli_simple(ctx, bf_msg_new("WITHDRAWALS_GET", 0), "WITHDRAWALS", "withdrawals", 1, json);
}

/* ---- statement ----------------------------------------------------------------------------- */

static const char statement_help[] =
    "usage: blockfed-client statement [--from DATE] [--to DATE] [--csv | --json]\n"
    "\n"
    "Prints the account's statement: for cash (CNY) and then coins, the opening balance, every\n"
    "movement with the balance and the amount held before and after it, and the closing balance.\n"
    "Opening + the movements = closing.\n"
    "\n"
    "  --from DATE  first day (YYYY-MM-DD, UTC; default: the account's first entry)\n"
    "  --to DATE    last day, included (default: now)\n"
    "  --csv        CSV (RFC 4180) with a header line: record (opening, movement, closing),\n"
    "               currency, time, transfer, type, code, amount, held, balance_before,\n"
    "               balance_after, held_before, held_after\n"
    "  --json       each page of the coordinator's reply as one JSON line\n"
    "\n"
    "exit status: 0 ok, 1 runtime or coordinator error, 2 usage error\n";

#define MAX_PAGES 100000 /* a coordinator that never says `more: false` is cut off */

/* A string field of a reply map, sanitised ("" when absent or not a string). */
static void str_of(const msgpack_object *map, const char *key, char *out, size_t cap) {
    const char *s = NULL;
    size_t n = 0;
    out[0] = 0;
    if (map && bf_mp_get_str(map, key, &s, &n, NULL) == 0) bf_render_clean(out, cap, s, n);
}

static int64_t int_of(const msgpack_object *map, const char *key) {
    int64_t v = 0;
    if (map) bf_mp_get_int(map, key, 0, INT64_MAX, &v, NULL);
    return v;
}

typedef struct {
    bf_statement_fmt_t fmt;
    int json;
    int64_t from, to;
} stmt_opts_t;

/* One line of a STATEMENT reply, its strings sanitised (str_of). */
static void print_line(const stmt_opts_t *o, const char *cur, const msgpack_object *l) {
    char id[32], type[16], kind[32], v[6][32];
    static const char *const keys[6] = {"amount", "held", "before", "after", "held_before", "held_after"};
    snprintf(id, sizeof id, "%lld", (long long)int_of(l, "transfer"));
    str_of(l, "type", type, sizeof type);
    str_of(l, "kind", kind, sizeof kind);
    for (int i = 0; i < 6; i++) str_of(l, keys[i], v[i], sizeof v[i]);
    const bf_statement_line_t line = {.time = int_of(l, "time"), .transfer = id, .type = type, .code = kind,
                                      .amount = v[0], .held = v[1], .before = v[2], .after = v[3],
                                      .held_before = v[4], .held_after = v[5]};
    bf_statement_movement(&o->fmt, cur, &line);
}

/* Every page of one currency's statement. */
static bf_cli_outcome_t statement_of(const bf_cli_ctx_t *ctx, bf_conn_t *conn, const stmt_opts_t *o, const char *cur) {
    int64_t after = 0;
    char bal[32], held[32];
    for (int page = 0; page < MAX_PAGES; page++) {
        bf_msg_t *req = bf_msg_new("STATEMENT_GET", 0), *reply = NULL;
        if (!req || bf_msg_set_str(req, "currency", cur) || (o->from && bf_msg_set_uint(req, "from", (uint64_t)o->from)) ||
            (o->to && bf_msg_set_uint(req, "to", (uint64_t)o->to)) || (after && bf_msg_set_uint(req, "after", (uint64_t)after))) {
            bf_msg_destroy(&req);
            return bf_cli_fail("cannot build STATEMENT_GET");
        }
        bf_cli_outcome_t rc = bf_cli_roundtrip(ctx, conn, &req, "STATEMENT", 1, &reply);
        bf_msg_destroy(&req);
        if (rc) return rc;
        const msgpack_object *st = bf_msg_any(reply, "statement"), *lines = st ? bf_mp_get(st, "lines") : NULL,
                             *more = st ? bf_mp_get(st, "more") : NULL;
        if (!st || st->type != MSGPACK_OBJECT_MAP || !lines || lines->type != MSGPACK_OBJECT_ARRAY) {
            bf_msg_destroy(&reply);
            return bf_cli_fail("STATEMENT: the coordinator's reply has no statement");
        }
        if (o->json) {
            bf_cli_print_any(st, 1);
        } else {
            if (page == 0) {
                str_of(st, "opening", bal, sizeof bal);
                str_of(st, "opening_held", held, sizeof held);
                bf_statement_opening(&o->fmt, cur, int_of(st, "from"), bal, held);
            }
            for (uint32_t i = 0; i < lines->via.array.size; i++) print_line(o, cur, &lines->via.array.ptr[i]);
        }
        int64_t last = after;
        for (uint32_t i = 0; i < lines->via.array.size; i++) {
            int64_t id = int_of(&lines->via.array.ptr[i], "transfer");
            if (id <= last) {
                bf_msg_destroy(&reply);
                return bf_cli_fail("STATEMENT: the coordinator's lines go backwards");
            }
            last = id;
        }
        int again = more && more->type == MSGPACK_OBJECT_BOOLEAN && more->via.boolean && last > after;
        if (!again && !o->json) {
            str_of(st, "closing", bal, sizeof bal);
            str_of(st, "closing_held", held, sizeof held);
            int64_t to = int_of(st, "to"), now = (int64_t)time(NULL);
            bf_statement_closing(&o->fmt, cur, to < now ? to : now, bal, held);
        }
        bf_msg_destroy(&reply);
        if (!again) return CLIENT_OK;
        after = last;
    }
    return bf_cli_fail("STATEMENT: more than %d pages", MAX_PAGES);
}

bf_cli_outcome_t bf_cmd_statement(int argc, char **argv, bf_cli_ctx_t *ctx) {
    static const struct option opts[] = {{"from", required_argument, 0, 'f'}, {"to", required_argument, 0, 't'},
                                         {"csv", no_argument, 0, 'c'},        {"json", no_argument, 0, 'j'},
                                         {"help", no_argument, 0, 'h'},       BF_CLI_COMMON_OPTS,
                                         {0, 0, 0, 0}};
    stmt_opts_t o = {.fmt = {.out = stdout}};
    int c;
    bf_cli_args_t rc = CLIENT_ARGS_OK;
    optind = 1;
    while (!rc && (c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (bf_cli_common_opt(c, optarg, ctx, &rc)) continue;
        switch (c) {
        case 'f':
            if ((o.from = bf_statement_parse_date(optarg)) < 0) rc = bf_cli_error("--from must be a date YYYY-MM-DD");
            break;
        case 't':
            if ((o.to = bf_statement_parse_date(optarg)) < 0) rc = bf_cli_error("--to must be a date YYYY-MM-DD");
            else o.to += 86400; /* the whole day */
            break;
        case 'c': o.fmt.csv = 1; break;
        case 'j': o.json = 1; break;
        case 'h': return fputs(statement_help, stdout), CLIENT_OK;
        default: rc = CLIENT_ARGS_BAD;
        }
    }
    if (!rc && optind != argc) rc = bf_cli_error("statement takes no arguments");
    if (!rc && o.fmt.csv && o.json) rc = bf_cli_error("--csv and --json exclude each other");
    if (!rc && o.to && o.to <= o.from) rc = bf_cli_error("--to is before --from");
    if (rc) return usage_fail("statement");
    bf_profile_t p;
    bf_conn_t *conn;
    bf_cli_outcome_t out = bf_cli_open(ctx, &p, &conn);
    if (out) return out;
    bf_statement_csv_header(&o.fmt);
    out = statement_of(ctx, conn, &o, "CNY");
    if (!out) out = statement_of(ctx, conn, &o, "COIN");
    fflush(stdout);
    bf_conn_destroy(&conn);
    return out;
}

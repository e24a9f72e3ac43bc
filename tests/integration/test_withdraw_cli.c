/* test_withdraw_cli.c: money out and statements end to end, against the real blockfed-coordinator
 * on loopback with CURVE. `blockfed-client withdraw` holds the amount at once (a second one past
 * the available balance is INSUFFICIENT_FUNDS; one request key sent twice holds once); the
 * operator lists pending withdrawals and settles them with `ledger payout ID --ref` (the money
 * leaves once, the same ref again changes nothing, the ref of another or a second settlement is
 * refused) and `ledger reject ID --reason` (the money is available again). Then `blockfed-client
 * statement --csv` (paged: more lines than one reply carries) and `ledger statement USER --csv`
 * reconcile: opening + movements == closing, line by line, and closing == the account's balance;
 * and `ledger verify` passes. */
#include "bf_money.h"
#include "fed_profile.h"

/* A money string after `"KEY":` in the last output, in cents; INT64_MIN if absent. */
static int64_t json_cents(const fed_cli_t *f, const char *key) {
    char pat[64], num[32];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(bf_slurp(f->out), pat);
    if (!p) return INT64_MIN;
    p += strlen(pat);
    if (*p == '"') p++;
    size_t k = strspn(p, "0123456789.");
    if (k == 0 || k >= sizeof num) return INT64_MIN;
    memcpy(num, p, k), num[k] = 0;
    int64_t v;
    return bf_money_parse_amount(num, 2, &v, NULL) ? INT64_MIN : v;
}

static int64_t cash(const fed_cli_t *f, const char *home, const char *which) {
    return fed_cli_run(f, home, (const char *const[]){"assets", "--json", NULL}) ? INT64_MIN : json_cents(f, which);
}

static bf_msg_t *money_msg(const char *type, const char *amount, const char *key) {
    bf_msg_t *m = bf_msg_new(type, 1);
    bf_msg_set_str(m, "amount", amount);
    if (key) bf_msg_set_str(m, "request", key);
    return m;
}

/* Signed decimal with 2 places ("-30.00") to cents; CHECKs the format. */
static int64_t cents_of(const char *s) {
    int neg = *s == '-';
    int64_t v = 0;
    CHECK_MSG(bf_money_parse_amount(s + neg, 2, &v, NULL) == 0, "not an amount: '%s'", s);
    return neg ? -v : v;
}

/* Reconciles a statement CSV (the last output): for each currency, opening + every movement ==
 * closing, each movement starts where the one before ended, and the held column likewise. The
 * columns of amount, held, balance_before, balance_after, held_before, held_after are given.
 * Returns the CNY closing balance and held amount; *movements gets the CNY movement count. */
static void reconcile(const fed_cli_t *fx, const int col[6], int64_t *closing, int64_t *closing_held, int *movements) {
    char *text = strdup(bf_slurp(fx->out));
    int64_t bal = 0, held = 0;
    int lines = 0, seen_open = 0, seen_close = 0;
    *movements = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save), lines++) {
        if (lines == 0) {
            CHECK_MSG(!strncmp(line, "record,currency,time,transfer,type,code,", 40), "header: %s", line);
            continue;
        }
        CHECK_MSG(!strchr(line, '"'), "unexpected quoting: %s", line);
        char *f[16] = {0};
        int nf = 0;
        for (char *p = line; nf < 16;) {
            f[nf++] = p;
            char *c = strchr(p, ',');
            if (!c) break;
            *c = 0;
            p = c + 1;
        }
        if (nf < 12) {
            CHECK_MSG(0, "short CSV line (%d fields)", nf);
            continue;
        }
        int cny = !strcmp(f[1], "CNY");
        if (!strcmp(f[0], "opening")) {
            bal = cents_of(f[col[3]]), held = cents_of(f[col[5]]);
            seen_open += cny;
        } else if (!strcmp(f[0], "movement")) {
            int64_t a = cents_of(f[col[0]]), h = cents_of(f[col[1]]);
            CHECK_MSG(cents_of(f[col[2]]) == bal && cents_of(f[col[4]]) == held, "movement %s does not follow on", f[3]);
            bal += a, held += h;
            CHECK(cents_of(f[col[3]]) == bal && cents_of(f[col[5]]) == held);
            *movements += cny;
        } else if (!strcmp(f[0], "closing")) {
            CHECK_MSG(cents_of(f[col[3]]) == bal && cents_of(f[col[5]]) == held, "%s closing %s/%s, movements sum to %lld/%lld",
                      f[1], f[col[3]], f[col[5]], (long long)bal, (long long)held);
            if (cny) *closing = bal, *closing_held = held, seen_close++;
        } else {
            CHECK_MSG(0, "unknown record '%s'", f[0]);
        }
    }
    CHECK(seen_open == 1 && seen_close == 1);
    free(text);
}

static void test_withdraw(const fed_cli_t *f, const char *alice, const char *bob) {
    char key[65], type[64];
    bf_err_t err;
    CHECK(fed_cli_run(f, alice, (const char *const[]){"recharge", "100", NULL}) == 0);
    CHECK(fed_cli_run(f, alice, (const char *const[]){"withdraw", "30", "--json", NULL}) == 0);
    CHECK_MSG(strstr(bf_slurp(f->out), "\"withdrawal\":1") && strstr(bf_slurp(f->out), "\"status\":\"pending\""),
              "withdraw: %s", bf_slurp(f->out));
    CHECK(cash(f, alice, "cash") == 10000 && cash(f, alice, "cash_available") == 7000);
    /* the held 30 cannot be withdrawn again */
    CHECK(fed_cli_run(f, alice, (const char *const[]){"withdraw", "70.01", NULL}) == 1);
    CHECK_MSG(!strcmp(fed_profile_send(alice, money_msg("WITHDRAW", "70.01", NULL), type, sizeof type),
                      "INSUFFICIENT_FUNDS"),
              "over available: %s", type);
    CHECK(fed_cli_run(f, alice, (const char *const[]){"withdraw", "-1", NULL}) == 2);
    CHECK_MSG(!strcmp(fed_profile_send(alice, money_msg("WITHDRAW", "abc", NULL), type, sizeof type), "BAD_REQUEST"),
              "abc: %s", type);
    CHECK(fed_cli_run(f, bob, (const char *const[]){"withdraw", "1", NULL}) == 1); /* bob has nothing */
    /* one key on two connections: one withdrawal */
    CHECK(bf_conn_request_key(key, &err) == 0);
    CHECK(!strcmp(fed_profile_send(alice, money_msg("WITHDRAW", "20.00", key), type, sizeof type), "OK"));
    CHECK(!strcmp(fed_profile_send(alice, money_msg("WITHDRAW", "20.00", key), type, sizeof type), "OK"));
    CHECK_MSG(cash(f, alice, "cash_available") == 5000, "a retried withdrawal held twice");
    CHECK_MSG(!strcmp(fed_profile_send(alice, money_msg("WITHDRAW", "25.00", key), type, sizeof type), "CONFLICT"),
              "reused key: %s", type);

    /* the operator's view and settlement */
    CHECK(fed_cli_ledger(f, (const char *const[]){"withdrawals", "--json", NULL}) == 0);
    const char *o = bf_slurp(f->out);
    CHECK_MSG(strstr(o, "\"id\":1,") && strstr(o, "\"id\":2,") && !strstr(o, "\"id\":3,") &&
                  strstr(o, "\"amount_cents\":3000") && strstr(o, "\"user\":\"alice\""),
              "withdrawals: %s", o);
    CHECK(fed_cli_ledger(f, (const char *const[]){"payout", "1", "--ref", "BANK-0001", NULL}) == 0);
    CHECK(cash(f, alice, "cash") == 7000 && cash(f, alice, "cash_available") == 5000);
    CHECK(fed_cli_ledger(f, (const char *const[]){"payout", "1", "--ref", "BANK-0001", NULL}) == 0); /* reported twice */
    CHECK(cash(f, alice, "cash") == 7000);
    CHECK(fed_cli_ledger(f, (const char *const[]){"payout", "1", "--ref", "BANK-0002", NULL}) == 1); /* paid already */
    CHECK(fed_cli_ledger(f, (const char *const[]){"payout", "2", "--ref", "BANK-0001", NULL}) == 1); /* another's ref */
    CHECK(fed_cli_ledger(f, (const char *const[]){"reject", "1", "--reason", "changed my mind", NULL}) == 1);
    CHECK(fed_cli_ledger(f, (const char *const[]){"payout", "99", "--ref", "BANK-0099", NULL}) == 4);
    CHECK(fed_cli_ledger(f, (const char *const[]){"payout", "2", "--ref", "has space", NULL}) == 2);
    CHECK(fed_cli_ledger(f, (const char *const[]){"payout", "2", NULL}) == 2);
    CHECK(fed_cli_ledger(f, (const char *const[]){"reject", "2", "--reason", "name does not match the account", "--json",
                                                  NULL}) == 0);
    CHECK_MSG(strstr(bf_slurp(f->out), "\"status\":\"rejected\""), "reject: %s", bf_slurp(f->out));
    CHECK(cash(f, alice, "cash") == 7000 && cash(f, alice, "cash_available") == 7000);
    CHECK(fed_cli_ledger(f, (const char *const[]){"reject", "2", "--reason", "name does not match the account", NULL}) == 0);
    CHECK(fed_cli_ledger(f, (const char *const[]){"payout", "2", "--ref", "BANK-0003", NULL}) == 1);
    CHECK(cash(f, alice, "cash_available") == 7000);
    CHECK(fed_cli_ledger(f, (const char *const[]){"withdrawals", NULL}) == 0 && strstr(bf_slurp(f->out), "0 pending"));
    CHECK(fed_cli_ledger(f, (const char *const[]){"withdrawals", "--all", NULL}) == 0 && strstr(bf_slurp(f->out),
            "BANK-0001"));
    /* the user's own view: newest first, each with how it ended */
    CHECK(fed_cli_run(f, alice, (const char *const[]){"withdrawals", "--json", NULL}) == 0);
    o = bf_slurp(f->out);
    const char *w2 = strstr(o, "\"withdrawal\":2,"), *w1 = strstr(o, "\"withdrawal\":1,");
    CHECK_MSG(w2 && w1 && w2 < w1 && strstr(w1, "\"status\":\"paid\"") && strstr(w1, "\"ref\":\"BANK-0001\"") &&
                  strstr(w2, "\"status\":\"rejected\"") && strstr(w2, "name does not match the account"),
              "alice's withdrawals: %s", o);
    CHECK(fed_cli_run(f, alice, (const char *const[]){"withdrawals", NULL}) == 0 && strstr(bf_slurp(f->out), "BANK-0001"));
    CHECK(fed_cli_run(f, bob, (const char *const[]){"withdrawals", "--json", NULL}) == 0 &&
          !strstr(bf_slurp(f->out), "\"withdrawal\""));
    CHECK(fed_cli_run(f, alice, (const char *const[]){"withdrawals", "extra", NULL}) == 2);
    /* one left pending for the statement's held column */
    CHECK(fed_cli_run(f, alice, (const char *const[]){"withdraw", "5.55", NULL}) == 0);
}

static void test_statements(const fed_cli_t *f, const char *alice) {
    char key[65], type[64];
    bf_err_t err;
    /* more movements than one STATEMENT reply carries (128): the client pages */
    for (int i = 0; i < 150; i++) {
        CHECK(bf_conn_request_key(key, &err) == 0);
        CHECK(!strcmp(fed_profile_send(alice, money_msg("RECHARGE", "0.01", key), type, sizeof type), "OK"));
    }
    int64_t posted = cash(f, alice, "cash"), available = cash(f, alice, "cash_available"), closing = 0, held = 0;
    CHECK(posted == 7150 && available == 7150 - 555);
    int n = 0;
    /* client: record,currency,time,transfer,type,code,amount,held,before,after,held_before,held_after */
    CHECK(fed_cli_run(f, alice, (const char *const[]){"statement", "--csv", NULL}) == 0);
    reconcile(f, (const int[6]){6, 7, 8, 9, 10, 11}, &closing, &held, &n);
    CHECK_MSG(closing == posted && held == posted - available, "client statement closes at %lld held %lld",
              (long long)closing, (long long)held);
    /* recharge 100, hold 30, post 30, hold 20, void 20, hold 5.55, 150 recharges */
    CHECK_MSG(n == 156, "client statement: %d CNY movements", n);
    /* operator: the same, with the op column after code */
    CHECK(fed_cli_ledger(f, (const char *const[]){"statement", "alice", "--csv", NULL}) == 0);
    int n2 = 0;
    reconcile(f, (const int[6]){7, 8, 9, 10, 11, 12}, &closing, &held, &n2);
    CHECK(n2 == n && closing == posted && held == posted - available);
    /* a window before the account existed: nothing, opening == closing == 0 */
    CHECK(fed_cli_ledger(f, (const char *const[]){"statement", "alice", "--from", "2020-01-01", "--to", "2020-01-02",
                                                  "--csv", NULL}) == 0);
    reconcile(f, (const int[6]){7, 8, 9, 10, 11, 12}, &closing, &held, &n2);
    CHECK(n2 == 0 && closing == 0 && held == 0);
    CHECK(fed_cli_run(f, alice, (const char *const[]){"statement", "--from", "2020-01-01", "--to", "2020-01-02", "--csv",
                                                      NULL}) == 0);
    reconcile(f, (const int[6]){6, 7, 8, 9, 10, 11}, &closing, &held, &n2);
    CHECK(n2 == 0 && closing == 0);
    CHECK(fed_cli_run(f, alice, (const char *const[]){"statement", "--from", "2020-02-30", NULL}) == 2);
    CHECK(fed_cli_ledger(f, (const char *const[]){"statement", "alice", "--from", "2021-01-02", "--to", "2021-01-01",
                                                  NULL}) == 2);
    CHECK(fed_cli_ledger(f, (const char *const[]){"statement", "nobody", NULL}) == 4);
    CHECK(fed_cli_run(f, alice, (const char *const[]){"statement", NULL}) == 0);
    CHECK(strstr(bf_slurp(f->out), "CNY closing balance 71.50") != NULL);
}

int main(int argc, char **argv) {
    if (argc < 3) return fprintf(stderr, "usage: test_withdraw_cli CLIENT COORDINATOR\n"), 2;
    fed_cli_t f[1]; /* an array of one: f is the pointer every helper takes */
    char name[64], ep[64], alice[600], bob[600];
    snprintf(name, sizeof name, "withdraw_cli_%d", (int)getpid());
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", 20000 + (int)((getpid() + 3571) % 30000));
    CHECK_MSG(fed_cli_prepare(f, argv[2], argv[1], name, ep, 12, 400, 100, 1) == 0, "no coordinator home in %s", f->dir);
    snprintf(alice, sizeof alice, "%s/alice", f->dir);
    snprintf(bob, sizeof bob, "%s/bob", f->dir);
    pid_t pid = fed_cli_start(f, (const char *const[]){"--block-size", "100", "--blocks-per-join", "1", NULL});
    CHECK(pid > 0);
    CHECK(fed_cli_register(f, alice, "alice") == 0);
    CHECK(fed_cli_register(f, bob, "bob") == 0);
    test_withdraw(f, alice, bob);
    test_statements(f, alice);
    fed_stop(pid, SIGTERM);
    CHECK(fed_cli_ledger(f, (const char *const[]){"verify", NULL}) == 0);
    CHECK_MSG(strstr(bf_slurp(f->out), "withdrawals   ok") && strstr(bf_slurp(f->out), "1 pending withdrawals"),
              "verify: %s", bf_slurp(f->out));
    return bf_test_done("test_withdraw_cli");
}

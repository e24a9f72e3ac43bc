/* test_ledger_withdraw.c: withdrawals (two-phase: hold, then payout or rejection) and statements.
 * The hold is taken from the available balance at once and cannot be spent twice; payout and
 * rejection are idempotent on their ref / reason and exclusive; verify checks every withdrawal
 * and catches tampering with one; a statement's lines reconcile with its opening and closing
 * balances, and those with the account, over random windows. */
#include <sqlite3.h>
#include <stdlib.h>

#include "test_ledger_common.h"

static void raw_sql(const char *path, const char *sql) {
    sqlite3 *db;
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    CHECK_MSG(rc == SQLITE_OK, "%s: %s", sql, msg ? msg : "?");
    sqlite3_free(msg);
    sqlite3_close(db);
}

static int64_t external_posted(bf_ledger_t *L) {
    bf_ledger_account_t *a = NULL;
    size_t n = 0;
    int64_t v = 0;
    CHECK(bf_ledger_accounts(L, &a, &n, NULL) == 0 && n >= 1);
    for (size_t i = 0; i < n; i++)
        if (a[i].kind == BF_LEDGER_ACCT_PLATFORM_EXTERNAL && a[i].currency == BF_LEDGER_CNY) v = a[i].balance.posted;
    free(a);
    return v;
}

static void test_hold_and_resolve(bf_ledger_t *L) {
    bf_err_t err;
    int64_t alice = tl_user(L, "alice", 1), bob = tl_user(L, "bob", 2), w1 = 0, w2 = 0, w3 = 0, again = 0;
    CHECK(bf_ledger_recharge(L, "r-alice", alice, 100000, &err) == 0);
    int64_t ext0 = external_posted(L);

    /* The hold is on the available balance at once; the posted balance is unchanged. */
    CHECK(bf_ledger_withdraw(L, "w-1", alice, 60000, &w1, &err) == 0 && w1 > 0);
    CHECK(tl_cash(L, alice, 0) == 100000 && tl_cash(L, alice, 1) == 60000 && tl_cash(L, alice, 2) == 40000);
    /* Cannot be spent twice: neither a second withdrawal nor a task fund may use the held money. */
    CHECK(bf_ledger_withdraw(L, "w-2", alice, 40001, &w2, &err) == BF_LEDGER_EFUNDS);
    bf_ledger_task_spec_t spec = {"pool", BF_LEDGER_MODE_REWARD, 40001, 0};
    int64_t t = 0;
    CHECK(bf_ledger_create_task(L, "t-1", alice, &spec, &t, &err) == BF_LEDGER_EFUNDS);
    /* The same op id is the same withdrawal; other arguments under it are a conflict. */
    CHECK(bf_ledger_withdraw(L, "w-1", alice, 60000, &again, &err) == 0 && again == w1);
    CHECK(tl_cash(L, alice, 1) == 60000);
    CHECK(bf_ledger_withdraw(L, "w-1", alice, 50000, &again, &err) == BF_LEDGER_ECONFLICT);
    /* A refused request stays refused under its id, even once the money is there. */
    CHECK(bf_ledger_withdraw(L, "w-2", alice, 40001, &w2, &err) == BF_LEDGER_EFUNDS);
    CHECK(bf_ledger_withdraw(L, "w-bad", alice, 0, &w2, &err) == BF_LEDGER_EINVAL);
    CHECK(bf_ledger_withdraw(L, "w-nobody", 999, 1, &w2, &err) == BF_LEDGER_ENOTFOUND);
    CHECK(bf_ledger_withdraw(L, "w-bob", bob, 1, &w2, &err) == BF_LEDGER_EFUNDS);
    CHECK(bf_ledger_withdraw(L, "w-3", alice, 30000, &w2, &err) == 0);
    CHECK(bf_ledger_withdraw(L, "w-4", alice, 10000, &w3, &err) == 0 && tl_cash(L, alice, 2) == 0);

    bf_ledger_withdrawal_t *list = NULL;
    size_t n = 0;
    CHECK(bf_ledger_withdrawals(L, BF_LEDGER_WITHDRAWAL_PENDING, 0, &list, &n, &err) == 0 && n == 3);
    CHECK(n == 3 && list[0].id == w1 && list[0].amount == 60000 && list[0].user_id == alice && list[2].id == w3);
    free(list);

    /* Payout: the money leaves to the platform's external account, once. */
    CHECK(bf_ledger_withdraw_payout(L, w1, "bank:TX-1", &err) == 0);
    CHECK(tl_cash(L, alice, 0) == 40000 && tl_cash(L, alice, 1) == 40000);
    CHECK(external_posted(L) == ext0 + 60000);
    CHECK(bf_ledger_withdraw_payout(L, w1, "bank:TX-1", &err) == 0); /* reported twice */
    CHECK(tl_cash(L, alice, 0) == 40000 && external_posted(L) == ext0 + 60000);
    CHECK(bf_ledger_withdraw_payout(L, w1, "bank:TX-other", &err) == BF_LEDGER_EPOSTED);
    CHECK(bf_ledger_withdraw_payout(L, w2, "bank:TX-1", &err) == BF_LEDGER_ECONFLICT); /* ref of another */
    CHECK(bf_ledger_withdraw_reject(L, w1, "too late", &err) == BF_LEDGER_EPOSTED);
    CHECK(bf_ledger_withdraw_payout(L, w2, "bad ref", &err) == BF_LEDGER_EINVAL);
    CHECK(bf_ledger_withdraw_payout(L, w2, "", &err) == BF_LEDGER_EINVAL);
    CHECK(bf_ledger_withdraw_payout(L, 9999, "bank:TX-9", &err) == BF_LEDGER_ENOTFOUND);

    /* Rejection: the hold is released, once; a paid or rejected withdrawal stays so. */
    CHECK(bf_ledger_withdraw_reject(L, w2, "account closed", &err) == 0);
    CHECK(tl_cash(L, alice, 0) == 40000 && tl_cash(L, alice, 1) == 10000 && tl_cash(L, alice, 2) == 30000);
    CHECK(bf_ledger_withdraw_reject(L, w2, "account closed", &err) == 0);
    CHECK(tl_cash(L, alice, 1) == 10000);
    CHECK(bf_ledger_withdraw_reject(L, w2, "another reason", &err) == BF_LEDGER_EVOIDED);
    CHECK(bf_ledger_withdraw_payout(L, w2, "bank:TX-2", &err) == BF_LEDGER_EVOIDED);
    CHECK(bf_ledger_withdraw_reject(L, w3, "", &err) == BF_LEDGER_EINVAL);
    CHECK(bf_ledger_withdraw_reject(L, w3, "bad\nreason", &err) == BF_LEDGER_EINVAL);
    CHECK(tl_cash(L, alice, 1) == 10000);

    bf_ledger_withdrawal_t w;
    CHECK(bf_ledger_withdrawal_get(L, w1, &w, &err) == 0 && w.status == BF_LEDGER_WITHDRAWAL_PAID &&
          !strcmp(w.external_ref, "bank:TX-1") && w.resolve_transfer > w.hold_transfer);
    CHECK(bf_ledger_withdrawal_get(L, w2, &w, &err) == 0 && w.status == BF_LEDGER_WITHDRAWAL_REJECTED &&
          !strcmp(w.reason, "account closed") && !w.external_ref[0]);
    CHECK(bf_ledger_withdrawal_get(L, 9999, &w, &err) == BF_LEDGER_ENOTFOUND);
    CHECK(bf_ledger_withdrawals(L, 0, alice, &list, &n, &err) == 0 && n == 3);
    free(list);
    CHECK(bf_ledger_withdrawals(L, 0, bob, &list, &n, &err) == 0 && n == 0 && !list);

    /* Inside a group too: the hold counts at once against the next op of the group. */
    CHECK(bf_ledger_group_begin(L, &err) == 0);
    int64_t g1 = 0, g2 = 0;
    CHECK(bf_ledger_withdraw(L, "g-1", alice, 20000, &g1, &err) == 0);
    CHECK(bf_ledger_withdraw(L, "g-2", alice, 10001, &g2, &err) == BF_LEDGER_EFUNDS);
    CHECK(bf_ledger_withdraw_payout(L, g1, "bank:G-1", &err) == 0);
    CHECK(bf_ledger_group_commit(L, &err) == 0);
    CHECK(tl_cash(L, alice, 0) == 20000 && tl_cash(L, alice, 1) == 10000);

    bf_ledger_report_t rep;
    CHECK(bf_ledger_verify(L, &rep, &err) == 0 && rep.ok && rep.withdrawals_pending == 1);
    tl_verify_ok(L, "withdrawals");
}

static int check_fails(const char *path, int check) {
    bf_err_t err;
    bf_ledger_t *L = bf_ledger_open(path, &err);
    bf_ledger_report_t rep;
    int failed = 0;
    if (L && bf_ledger_verify(L, &rep, &err) == 0) failed = !rep.ok && !rep.checks[check].ok;
    bf_ledger_close(&L);
    return failed;
}

/* Each lie about a withdrawal is caught by verify (the table against the chain). */
static void test_tamper(const char *path) {
    char copy[1100];
    snprintf(copy, sizeof copy, "%s.tamper", path);
    static const struct {
        const char *sql;
        int check;
    } cases[] = {
        {"UPDATE withdrawals SET external_ref = 'bank:forged' WHERE id = (SELECT min(id) FROM withdrawals WHERE status = 2)", BF_LEDGER_CHECK_WITHDRAWALS},
        {"UPDATE withdrawals SET reason = 'forged' WHERE id = (SELECT min(id) FROM withdrawals WHERE status = 3)", BF_LEDGER_CHECK_WITHDRAWALS},
        {"UPDATE withdrawals SET amount = amount + 1 WHERE id = 1", BF_LEDGER_CHECK_WITHDRAWALS},
        {"UPDATE withdrawals SET user_id = (SELECT max(id) FROM users) WHERE id = 1", BF_LEDGER_CHECK_WITHDRAWALS},
        {"DELETE FROM withdrawals WHERE id = (SELECT min(id) FROM withdrawals WHERE status = 1)", BF_LEDGER_CHECK_WITHDRAWALS},
        {"UPDATE withdrawals SET status = 1, resolve_transfer = NULL, external_ref = NULL WHERE id = (SELECT min(id) FROM withdrawals WHERE status = 2)",
         BF_LEDGER_CHECK_WITHDRAWALS},
        {"UPDATE model_usage SET hold_transfer = (SELECT hold_transfer FROM withdrawals LIMIT 1),"
         " held = (SELECT amount FROM withdrawals LIMIT 1) WHERE id = 1", BF_LEDGER_CHECK_HOLDS},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tl_remove_db(copy);
        char sql[1300];
        snprintf(sql, sizeof sql, "VACUUM INTO '%s'", copy);
        raw_sql(path, sql);
        raw_sql(copy, cases[i].sql);
        CHECK_MSG(check_fails(copy, cases[i].check), "tampering '%s' not detected", cases[i].sql);
    }
    tl_remove_db(copy);
}

/* opening + lines == closing (posted and held), lines chain, and a window reaching now closes at
 * the account's balance. */
static void check_statement(bf_ledger_t *L, int64_t user, bf_ledger_currency_t cur, int64_t from, int64_t to,
                            int reaches_now) {
    bf_ledger_statement_t st;
    bf_err_t err;
    int rc = bf_ledger_statement(L, user, cur, from, to, &st, &err);
    CHECK_MSG(rc == 0, "statement: %s", err.msg);
    if (rc) return;
    int64_t posted = st.opening, held = st.opening_held;
    for (size_t i = 0; i < st.n; i++) {
        const bf_ledger_statement_line_t *l = &st.lines[i];
        CHECK_MSG(l->balance_before == posted && l->held_before == held, "line %zu does not follow the one before", i);
        CHECK(l->created_at >= from && l->created_at < to);
        CHECK(l->balance_after - l->balance_before == l->amount && l->held_after - l->held_before == l->held);
        posted += l->amount;
        held += l->held;
    }
    CHECK_MSG(posted == st.closing && held == st.closing_held, "user %lld [%lld,%lld): lines sum to %lld/%lld, closing %lld/%lld",
              (long long)user, (long long)from, (long long)to, (long long)posted, (long long)held, (long long)st.closing,
              (long long)st.closing_held);
    if (reaches_now) {
        bf_ledger_balance_t b;
        CHECK(bf_ledger_balance(L, user, cur, &b, &err) == 0);
        CHECK_MSG(st.closing == b.posted && st.closing_held == b.pending_debits, "closing %lld/%lld, account %lld/%lld",
                  (long long)st.closing, (long long)st.closing_held, (long long)b.posted, (long long)b.pending_debits);
    }
    bf_ledger_statement_free(&st);
}

static void test_statements(bf_ledger_t *L, tl_clock_t *clk) {
    bf_err_t err;
    bf_rng_t r;
    bf_rng_seed(&r, 4242);
    int64_t u[4], t0 = clk->now;
    char name[16], op[48];
    for (int i = 0; i < 4; i++) {
        snprintf(name, sizeof name, "st%d", i);
        u[i] = tl_user(L, name, 100 + (uint64_t)i);
    }
    int64_t w[4] = {u[1], u[2], u[3], 1};
    int64_t task = tl_share_task(L, "st-task", u[0], 3, u + 1, w);
    int64_t wd[256], holds[256];
    int nwd = 0, nh = 0;
    for (int k = 0; k < 1500; k++) {
        clk->now += bf_rng_below(&r, 3) == 0 ? 3600 : 1;
        int64_t who = u[bf_rng_below(&r, 4)], id = 0;
        snprintf(op, sizeof op, "st-%d", k);
        switch (bf_rng_below(&r, 7)) {
        case 0: bf_ledger_recharge(L, op, who, 1 + bf_rng_below(&r, 5000), &err); break;
        case 1:
            if (bf_ledger_withdraw(L, op, who, 1 + bf_rng_below(&r, 3000), &id, &err) == 0 && nwd < 256) wd[nwd++] = id;
            break;
        case 2:
            if (nwd) {
                snprintf(op, sizeof op, "ref-%d", k);
                bf_ledger_withdraw_payout(L, wd[bf_rng_below(&r, (uint32_t)nwd)], op, &err);
            }
            break;
        case 3:
            if (nwd) bf_ledger_withdraw_reject(L, wd[bf_rng_below(&r, (uint32_t)nwd)], "no", &err);
            break;
        case 4:
            if (bf_ledger_fee_hold(L, op, task, who, 1 + bf_rng_below(&r, 400), 0, &id, &err) == 0 && nh < 256) holds[nh++] = id;
            break;
        case 5:
            if (nh) bf_ledger_fee_capture(L, op, holds[bf_rng_below(&r, (uint32_t)nh)], bf_rng_below(&r, 50), &err);
            break;
        default: bf_ledger_fee_charge(L, op, task, who, 1 + bf_rng_below(&r, 300), &id, &err); break;
        }
    }
    tl_verify_ok(L, "statement ops");
    int64_t end = clk->now + 1;
    for (int i = 0; i < 4; i++) {
        check_statement(L, u[i], BF_LEDGER_CNY, 0, INT64_MAX, 1);
        check_statement(L, u[i], BF_LEDGER_COIN, 0, INT64_MAX, 1);
        for (int k = 0; k < 50; k++) {
            int64_t a = t0 + (int64_t)bf_rng_below(&r, (uint32_t)(end - t0)), b = a + (int64_t)bf_rng_below(&r, 20000);
            check_statement(L, u[i], BF_LEDGER_CNY, a, b, b > end);
        }
    }
    /* The windows tile: [a,b) then [b,c) continue each other. */
    bf_ledger_statement_t s1, s2;
    int64_t mid = t0 + (end - t0) / 2;
    CHECK(bf_ledger_statement(L, u[1], BF_LEDGER_CNY, t0, mid, &s1, &err) == 0);
    CHECK(bf_ledger_statement(L, u[1], BF_LEDGER_CNY, mid, end, &s2, &err) == 0);
    CHECK(s1.closing == s2.opening && s1.closing_held == s2.opening_held && s1.n > 0 && s2.n > 0);
    bf_ledger_statement_free(&s1);
    bf_ledger_statement_free(&s2);
    CHECK(bf_ledger_statement(L, u[1], BF_LEDGER_CNY, 10, 5, &s1, &err) == BF_LEDGER_EINVAL);
    CHECK(bf_ledger_statement(L, 99999, BF_LEDGER_CNY, 0, 5, &s1, &err) == BF_LEDGER_ENOTFOUND);
}

int main(void) {
    char path[1024];
    tl_db_path(path, sizeof path, "ledger-withdraw");
    bf_err_t err;
    bf_ledger_t *L = bf_ledger_open(path, &err);
    CHECK_MSG(L != NULL, "%s", err.msg);
    if (!L) return bf_test_done("test_ledger_withdraw");
    tl_clock_t clk = {1700000000};
    bf_ledger_set_clock(L, tl_clock_now, &clk);
    test_hold_and_resolve(L);
    /* a usage hold for the tamper case that passes a withdrawal hold off as a fee hold */
    int64_t carol = tl_user(L, "carol", 3), h = 0, w[1] = {1};
    CHECK(bf_ledger_recharge(L, "r-carol", carol, 1000, &err) == 0);
    int64_t t = tl_share_task(L, "tw", carol, 1, &carol, w);
    CHECK(bf_ledger_fee_hold(L, "hold-carol", t, carol, 10, 0, &h, &err) == 0 && h == 1);
    test_statements(L, &clk);
    tl_verify_ok(L, "withdrawals and statements");
    bf_ledger_close(&L);
    char base[512];
    if (!tl_pg_base(base, sizeof base)) test_tamper(path); /* SQLite file surgery: test_ledger_postgres tampers on PostgreSQL */
    tl_remove_db(path);
    return bf_test_done("test_ledger_withdraw");
}

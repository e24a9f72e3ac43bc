/* test_ledger_postgres.c: the PostgreSQL backend behind the same bf_ledger.h, on the throwaway
 * cluster the ctest fixture starts (tests/postgres/pg_cluster.sh; argv[1] is the file holding its
 * connection string). Without it the test fails and says why: it never skips. Each run makes its
 * own database. Covered: schema migration, registration, recharge, spend, idempotency (replay,
 * conflict, a failed id stays failed), withdrawals (hold, payout, reject, exclusivity), group
 * commit (a failed op inside, a rolled-back group), statements reconciling, the same op sequence
 * giving the same hash chain head on SQLite and PostgreSQL, paid predictions inside groups (the
 * batched fee path) with revenues and passwords compared call by call with SQLite, verify catching
 * tampering (the task-level checks included), ledger.db naming a database, and two processes
 * writing at once (one chain, exact balances, no EBUSY). */
#include <libpq-fe.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_ledger_common.h"

static char base_url[512], db_url[600], db_name[64];

static int sql(const char *url, const char *q) {
    PGconn *c = PQconnectdb(url);
    int ok = PQstatus(c) == CONNECTION_OK;
    if (ok) {
        PGresult *r = PQexec(c, q);
        ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
        CHECK_MSG(ok, "%s: %s", q, PQresultErrorMessage(r));
        PQclear(r);
    } else {
        CHECK_MSG(0, "connecting to %s: %s", url, PQerrorMessage(c));
    }
    PQfinish(c);
    return ok ? 0 : -1;
}

/* A fresh database on the cluster; db_url names it. */
static int fresh_db(const char *tag) {
    static int n;
    snprintf(db_name, sizeof db_name, "bf_%s_%d_%d", tag, (int)getpid(), n++);
    char q[160];
    snprintf(q, sizeof q, "CREATE DATABASE %s", db_name);
    if (sql(base_url, q)) return -1;
    const char *slash = strrchr(base_url, '/');
    snprintf(db_url, sizeof db_url, "%.*s/%s", (int)(slash - base_url), base_url, db_name);
    return 0;
}

/* The same sequence of operations on any backend (clock fixed): register, recharge, spend,
 * withdrawals paid and rejected, a refused one, a group. */
static void script(bf_ledger_t *L, tl_clock_t *clk) {
    bf_err_t err;
    int64_t a = tl_user(L, "alice", 1), b = tl_user(L, "bob", 2), w1 = 0, w2 = 0, w3 = 0;
    clk->now += 10;
    CHECK(bf_ledger_recharge(L, "r1", a, 50000, &err) == 0);
    CHECK(bf_ledger_recharge(L, "r2", b, 700, &err) == 0);
    CHECK(bf_ledger_spend_coins(L, "s1", a, 3, &err) == 0);
    clk->now += 10;
    CHECK(bf_ledger_withdraw(L, "w1", a, 20000, &w1, &err) == 0);
    CHECK(bf_ledger_withdraw(L, "w2", a, 30000, &w2, &err) == 0);
    CHECK(bf_ledger_withdraw(L, "w3", a, 1, &w3, &err) == BF_LEDGER_EFUNDS);
    CHECK(bf_ledger_withdraw_payout(L, w1, "BANK-1", &err) == 0);
    CHECK(bf_ledger_withdraw_reject(L, w2, "bank details wrong", &err) == 0);
    clk->now += 10;
    CHECK(bf_ledger_group_begin(L, &err) == 0);
    for (int i = 0; i < 20; i++) {
        char op[32];
        snprintf(op, sizeof op, "g%d", i);
        CHECK(bf_ledger_recharge(L, op, i % 2 ? a : b, 100 + i, &err) == 0);
    }
    CHECK(bf_ledger_withdraw(L, "gw", b, 99999, &w3, &err) == BF_LEDGER_EFUNDS); /* fails inside, the group goes on */
    CHECK(bf_ledger_withdraw(L, "gw2", b, 500, &w3, &err) == 0);
    CHECK(bf_ledger_group_commit(L, &err) == 0);
}

/* Paid predictions inside groups, where the PostgreSQL backend batches (docs/LEDGER.md, "Batched
 * fee path"): holds, captures, charges, settles with notes, voids, failures of every kind, replays
 * of ids from this group and from an earlier one, a conflict, a query and a non-fee op in the
 * middle, a hold captured a group later, an expiry sweep, a rolled-back group. Every return code
 * and result goes into out[] (n entries), so both backends can be compared call by call. */
static size_t fee_script(bf_ledger_t *L, tl_clock_t *clk, int64_t *out, size_t cap) {
    bf_err_t err;
    size_t n = 0;
#define REC(rc_, v_)                                                                                  \
    do {                                                                                              \
        int rc__ = (rc_);                                                                             \
        if (n + 2 <= cap) out[n++] = rc__, out[n++] = (v_);                                           \
    } while (0)
    int64_t own = tl_user(L, "owner", 11), pay = tl_user(L, "payer", 12), poor = tl_user(L, "poor", 13);
    int64_t h[3] = {tl_user(L, "h1", 14), tl_user(L, "h2", 15), tl_user(L, "h3", 16)}, w[3] = {5, 3, 2};
    CHECK(bf_ledger_set_platform_fee(L, "pfee", 70000, &err) == 0);
    int64_t t = tl_share_task(L, "fee", own, 3, h, w);
    CHECK(bf_ledger_recharge(L, "top", pay, 100000, &err) == 0);
    CHECK(bf_ledger_recharge(L, "top-poor", poor, 150, &err) == 0);
    int64_t hold = 0, keep[4] = {0}, v = 0;
    char op[32];
    clk->now += 5;
    CHECK(bf_ledger_group_begin(L, &err) == 0);
    for (int i = 0; i < 40; i++) {
        snprintf(op, sizeof op, "h%d", i);
        REC(bf_ledger_fee_hold(L, op, t, i % 7 ? pay : poor, 37 + i, i % 5 ? 0 : 30, &hold, &err), hold);
        if (i % 10 == 9) keep[i / 10] = hold; /* captured a group later */
        else if (i % 4 == 0) {
            snprintf(op, sizeof op, "v%d", i);
            REC(bf_ledger_fee_void(L, op, hold, &err), 0);
        } else if (i % 10 != 5) {
            snprintf(op, sizeof op, "c%d", i);
            REC(bf_ledger_fee_capture(L, op, hold, 37 + i - i % 3, &err), 0);
        }
    }
    REC(bf_ledger_fee_hold(L, "h3", t, pay, 40, 0, &hold, &err), hold);       /* replay, this group */
    REC(bf_ledger_fee_hold(L, "h3", t, pay, 41, 0, &hold, &err), 0);          /* conflict */
    REC(bf_ledger_fee_capture(L, "c1", 2, 999, &err), 0);                     /* a used id, other arguments */
    REC(bf_ledger_fee_capture(L, "cx", keep[0], 999, &err), 0);               /* exceeds the hold */
    REC(bf_ledger_fee_capture(L, "cx", keep[0], 999, &err), 0);               /* the failure, replayed */
    REC(bf_ledger_fee_hold(L, "hp", t, poor, 100000, 0, &hold, &err), 0);     /* no funds */
    REC(bf_ledger_fee_hold(L, "hz", t, pay, 0, 0, &hold, &err), 0);           /* bad amount */
    REC(bf_ledger_fee_hold(L, "hu", 999, pay, 5, 0, &hold, &err), 0);         /* unknown task */
    REC(bf_ledger_fee_capture(L, "cu", 99999, 1, &err), 0);                   /* unknown hold */
    REC(bf_ledger_fee_void(L, "vv", 2, &err), 0);                             /* captured already */
    REC(tl_cash(L, pay, 2), 0);                                               /* a query inside */
    REC(bf_ledger_recharge(L, "mid", pay, 333, &err), 0);                     /* another kind of op */
    for (int i = 0; i < 10; i++) {
        snprintf(op, sizeof op, "ch%d", i);
        REC(bf_ledger_fee_charge(L, op, t, pay, 11 * i + 1, &hold, &err), hold);
    }
    REC(bf_ledger_fee_hold(L, "hs", t, pay, 90, 0, &hold, &err), hold);
    bf_ledger_usage_note_t note = {3, 2, "two of three", 12}, none = {1, 0, NULL, 0};
    REC(bf_ledger_fee_settle(L, "s1", hold, 60, &note, &err), 0);
    REC(bf_ledger_fee_hold(L, "hs2", t, pay, 90, 0, &hold, &err), hold);
    REC(bf_ledger_fee_settle(L, "s2", hold, 0, &none, &err), 0);
    CHECK(bf_ledger_group_commit(L, &err) == 0);
    clk->now += 40; /* past the 30 s holds */
    CHECK(bf_ledger_group_begin(L, &err) == 0);
    for (int i = 0; i < 4; i++) {
        snprintf(op, sizeof op, "late%d", i);
        REC(bf_ledger_fee_capture(L, op, keep[i], 30, &err), 0);
    }
    REC(bf_ledger_fee_hold(L, "h7", t, pay, 44, 0, &hold, &err), hold);       /* replay, earlier group */
    REC(bf_ledger_fee_capture(L, "cx", keep[0], 999, &err), 0);               /* failure replayed from the table */
    REC(bf_ledger_sweep_expired(L, &v, &err), v);
    REC(bf_ledger_fee_charge(L, "ch-after", t, pay, 77, &hold, &err), hold);
    CHECK(bf_ledger_group_commit(L, &err) == 0);
    CHECK(bf_ledger_group_begin(L, &err) == 0);
    REC(bf_ledger_fee_charge(L, "gone", t, pay, 55, &hold, &err), hold);
    bf_ledger_group_rollback(L);
    REC(bf_ledger_op_lookup(L, "gone", (int *)&v, NULL, NULL, &err), v & 0xffffffff);
    REC(bf_ledger_fee_charge(L, "single", t, pay, 56, &hold, &err), hold);
    bf_ledger_task_t ti;
    CHECK(bf_ledger_task_get(L, t, &ti, &err) == 0);
    REC(0, ti.total_revenue);
    /* revenues: every payee of every payout, per task and per user, summing to the revenue */
    bf_ledger_revenue_t *rv = NULL;
    size_t nr = 0;
    int64_t sum = 0, mine = 0;
    REC(bf_ledger_revenues(L, t, 0, &rv, &nr, &err), (int64_t)nr);
    for (size_t i = 0; i < nr; i++) {
        sum += rv[i].amount;
        REC(0, rv[i].transfer_id * 1000003 + rv[i].usage_id * 101 + rv[i].user_id * 7 + rv[i].amount);
    }
    free(rv);
    CHECK_MSG(sum == ti.total_revenue, "revenues sum to %lld, the task's revenue is %lld", (long long)sum,
              (long long)ti.total_revenue);
    REC(bf_ledger_revenues(L, 0, h[0], &rv, &nr, &err), (int64_t)nr);
    for (size_t i = 0; i < nr; i++) mine += rv[i].amount;
    free(rv);
    REC(0, mine);
    CHECK(mine == tl_cash(L, h[0], 0) && mine > 0);
    /* passwords: stored hashed, checked, a replay with another password refused */
    char key[41];
    tl_key(key, 17);
    int64_t pu = 0;
    REC(bf_ledger_register_user(L, "reg-pw", "withpw", key, "s3cret pass", &pu, &err), pu);
    REC(bf_ledger_check_password(L, pu, "s3cret pass", &err), 0);
    REC(bf_ledger_check_password(L, pu, "s3cret pasS", &err), 0);
    REC(bf_ledger_check_password(L, own, "anything", &err), 0);
    REC(bf_ledger_register_user(L, "reg-pw", "withpw", key, "s3cret pass", &pu, &err), pu);
    REC(bf_ledger_register_user(L, "reg-pw", "withpw", key, "other", &pu, &err), 0);
    REC(bf_ledger_register_user(L, "reg-pw2", "withpw2", key, "", &pu, &err), 0);
    REC(bf_ledger_check_password(L, 9999, "x", &err), 0);
    for (int i = 0; i < 3; i++) REC(0, tl_cash(L, h[i], 0));
    REC(0, tl_cash(L, pay, 0));
    REC(0, tl_cash(L, poor, 0));
#undef REC
    return n;
}

static void test_same_fee_chain(void) {
    char path[1024];
    tl_db_path(path, sizeof path, "ledger-pg-fee");
    bf_err_t err;
    bf_ledger_report_t r1, r2;
    tl_clock_t c1 = {1700000000}, c2 = {1700000000};
    bf_ledger_t *S = bf_ledger_open(path, &err);
    CHECK(S != NULL);
    if (!S || fresh_db("fee")) return;
    bf_ledger_t *P = bf_ledger_open(db_url, &err);
    CHECK_MSG(P != NULL, "%s", err.msg);
    if (!P) return;
    bf_ledger_set_clock(S, tl_clock_now, &c1);
    bf_ledger_set_clock(P, tl_clock_now, &c2);
    static int64_t a[1200], b[1200];
    size_t na = fee_script(S, &c1, a, 1200), nb = fee_script(P, &c2, b, 1200);
    CHECK(na == nb && na > 150);
    for (size_t i = 0; i < na && i < nb; i++)
        CHECK_MSG(a[i] == b[i], "call %zu (%s): SQLite %lld, PostgreSQL %lld", i / 2, i % 2 ? "result" : "rc",
                  (long long)a[i], (long long)b[i]);
    CHECK(tl_verify_ok(S, "fee script, SQLite") && tl_verify_ok(P, "fee script, PostgreSQL"));
    CHECK(bf_ledger_verify(S, &r1, &err) == 0 && bf_ledger_verify(P, &r2, &err) == 0);
    CHECK_MSG(r1.transfers == r2.transfers && r1.transfers > 100 && !strcmp(r1.head_hash, r2.head_hash),
              "SQLite %lld transfers head %s, PostgreSQL %lld head %s", (long long)r1.transfers, r1.head_hash,
              (long long)r2.transfers, r2.head_hash);
    printf("fee path in groups, same chain on both backends: %zu calls, %lld transfers, head %.16s...\n", na / 2,
           (long long)r2.transfers, r2.head_hash);
    bf_ledger_close(&S);
    bf_ledger_close(&P);
    tl_remove_db(path);
}

static void test_ops(bf_ledger_t *L) {
    bf_err_t err;
    int64_t id = 0, w = 0, again = 0;
    CHECK(bf_ledger_schema_version(L) == 4);
    int64_t a, b;
    CHECK(bf_ledger_user_find(L, "alice", &a, &err) == 0 && bf_ledger_user_find(L, "bob", &b, &err) == 0);
    CHECK(bf_ledger_user_find(L, "nobody", &id, &err) == BF_LEDGER_ENOTFOUND);
    /* alice: 500.00 - 200.00 paid out + 10 group recharges (101+103+...+119 = 1100) */
    CHECK_MSG(tl_cash(L, a, 0) == 50000 - 20000 + 1100 && tl_cash(L, a, 1) == 0, "alice %lld", (long long)tl_cash(L, a, 0));
    CHECK(tl_coins(L, a) == 100 - 30);
    CHECK(tl_cash(L, b, 0) == 700 + 1090 && tl_cash(L, b, 1) == 500);
    /* idempotency */
    CHECK(bf_ledger_recharge(L, "r1", a, 50000, &err) == 0 && tl_cash(L, a, 0) == 31100);
    CHECK(bf_ledger_recharge(L, "r1", a, 1, &err) == BF_LEDGER_ECONFLICT);
    CHECK(bf_ledger_withdraw(L, "w3", a, 1, &w, &err) == BF_LEDGER_EFUNDS); /* failed stays failed */
    CHECK(bf_ledger_withdraw(L, "w1", a, 20000, &again, &err) == 0 && again == 1);
    int found = 0, rc = 0;
    int64_t result = 0;
    CHECK(bf_ledger_op_lookup(L, "w3", &found, &rc, &result, &err) == 0 && found && rc == BF_LEDGER_EFUNDS);
    CHECK(bf_ledger_op_lookup(L, "never", &found, &rc, &result, &err) == 0 && !found);
    char key[41];
    tl_key(key, 1);
    CHECK(bf_ledger_register_user(L, "reg:alice", "alice", key, NULL, &id, &err) == 0 && id == a);
    CHECK(bf_ledger_register_user(L, "reg:alice2", "alice", key, NULL, &id, &err) == BF_LEDGER_EEXISTS);
    CHECK(bf_ledger_register_user(L, "reg:bad", "x", "short", NULL, &id, &err) == BF_LEDGER_EINVAL);
    /* withdrawals: exclusive, idempotent on refs and reasons */
    CHECK(bf_ledger_withdraw_payout(L, 1, "BANK-1", &err) == 0);
    CHECK(bf_ledger_withdraw_payout(L, 1, "BANK-X", &err) == BF_LEDGER_EPOSTED);
    CHECK(bf_ledger_withdraw_payout(L, 2, "BANK-1", &err) == BF_LEDGER_ECONFLICT);
    CHECK(bf_ledger_withdraw_payout(L, 2, "BANK-2", &err) == BF_LEDGER_EVOIDED);
    CHECK(bf_ledger_withdraw_reject(L, 2, "bank details wrong", &err) == 0);
    CHECK(bf_ledger_withdraw_reject(L, 2, "other", &err) == BF_LEDGER_EVOIDED);
    CHECK(bf_ledger_withdraw_payout(L, 99, "BANK-99", &err) == BF_LEDGER_ENOTFOUND);
    bf_ledger_withdrawal_t *ws = NULL;
    size_t n = 0;
    CHECK(bf_ledger_withdrawals(L, BF_LEDGER_WITHDRAWAL_PENDING, 0, &ws, &n, &err) == 0 && n == 1 && ws[0].user_id == b);
    free(ws);
    bf_ledger_withdrawal_t wd;
    CHECK(bf_ledger_withdrawal_get(L, 1, &wd, &err) == 0 && !strcmp(wd.external_ref, "BANK-1"));
    /* a rolled-back group leaves nothing */
    CHECK(bf_ledger_group_begin(L, &err) == 0);
    CHECK(bf_ledger_recharge(L, "lost", a, 5, &err) == 0);
    bf_ledger_group_rollback(L);
    CHECK(bf_ledger_op_lookup(L, "lost", &found, &rc, &result, &err) == 0 && !found && tl_cash(L, a, 0) == 31100);
    /* a reward task escrows its pool (one more line on alice's statement) */
    bf_ledger_task_spec_t spec = {"t", BF_LEDGER_MODE_REWARD, 100, 0};
    CHECK(bf_ledger_create_task(L, "t1", a, &spec, &id, &err) == 0 && tl_cash(L, a, 0) == 31000);
    bf_ledger_task_t task;
    CHECK(bf_ledger_task_get(L, id, &task, &err) == 0 && task.escrow_balance == 100 && task.status == BF_LEDGER_TASK_CREATED);
    /* a reward task has no fee payouts */
    bf_ledger_revenue_t *rv = NULL;
    CHECK(bf_ledger_revenues(L, id, 0, &rv, &n, &err) == 0 && n == 0);
    free(rv);
    /* statements reconcile and close at the balance */
    bf_ledger_statement_t st;
    CHECK(bf_ledger_statement(L, a, BF_LEDGER_CNY, 0, INT64_MAX, &st, &err) == 0);
    int64_t bal = st.opening, held = st.opening_held;
    for (size_t i = 0; i < st.n; i++) {
        CHECK(st.lines[i].balance_before == bal && st.lines[i].held_before == held);
        bal += st.lines[i].amount, held += st.lines[i].held;
    }
    CHECK(bal == st.closing && held == st.closing_held && st.closing == tl_cash(L, a, 0) && st.n == 16);
    bf_ledger_statement_free(&st);
    bf_ledger_entry_t *h = NULL;
    CHECK(bf_ledger_history(L, b, &h, &n, &err) == 0 && n == 13);
    free(h);
    tl_verify_ok(L, "postgres ops");
    /* a paid prediction's hold, and verify catching its record altered behind the ledger's back */
    int64_t holders[1] = {b}, w1[1] = {1}, hold = 0;
    int64_t stask = tl_share_task(L, "pgshare", a, 1, holders, w1);
    CHECK(bf_ledger_fee_hold(L, "pg-hold", stask, a, 250, 0, &hold, &err) == 0 && tl_cash(L, a, 1) == 250);
    tl_verify_ok(L, "postgres hold");
    char q[160];
    snprintf(q, sizeof q, "UPDATE model_usage SET status = 3 WHERE id = %lld", (long long)hold);
    CHECK(sql(db_url, q) == 0);
    bf_ledger_report_t rep;
    CHECK(bf_ledger_verify(L, &rep, &err) == 0 && !rep.ok && !rep.checks[BF_LEDGER_CHECK_HOLDS].ok);
    snprintf(q, sizeof q, "UPDATE model_usage SET status = 1 WHERE id = %lld", (long long)hold);
    CHECK(sql(db_url, q) == 0);
    CHECK(bf_ledger_fee_capture(L, "pg-cap", hold, 200, &err) == 0 && tl_cash(L, b, 0) == 1790 + 200);
    tl_verify_ok(L, "postgres capture");
}

static void test_tamper(void) {
    static const struct {
        const char *sql;
        int check;
    } cases[] = {
        {"UPDATE accounts SET credits_posted = credits_posted + 1 WHERE id = 5", BF_LEDGER_CHECK_BALANCES},
        {"UPDATE accounts SET credits_posted = credits_posted + 1 WHERE id = 5", BF_LEDGER_CHECK_DOUBLE_ENTRY},
        {"ALTER TABLE transfers DISABLE TRIGGER transfers_no_change; UPDATE transfers SET amount = amount + 1 WHERE id = 4",
         BF_LEDGER_CHECK_CHAIN},
        {"ALTER TABLE transfers DISABLE TRIGGER transfers_no_change; DELETE FROM transfers WHERE id = 2",
         BF_LEDGER_CHECK_CHAIN},
        /* the tail cut off: the chain is whole but the accounts remember the hold */
        {"ALTER TABLE transfers DISABLE TRIGGER transfers_no_change; DELETE FROM withdrawals WHERE id = 3;"
         " DELETE FROM transfers WHERE id = (SELECT max(id) FROM transfers)", BF_LEDGER_CHECK_BALANCES},
        {"UPDATE withdrawals SET external_ref = 'BANK-forged' WHERE id = 1", BF_LEDGER_CHECK_WITHDRAWALS},
        {"DELETE FROM withdrawals WHERE id = 3", BF_LEDGER_CHECK_WITHDRAWALS},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (fresh_db("tamper")) return;
        tl_clock_t clk = {1700000000};
        bf_err_t err;
        bf_ledger_t *L = bf_ledger_open(db_url, &err);
        CHECK_MSG(L != NULL, "%s", err.msg);
        if (!L) return;
        bf_ledger_set_clock(L, tl_clock_now, &clk);
        script(L, &clk);
        tl_verify_ok(L, "before tampering");
        CHECK(sql(db_url, cases[i].sql) == 0);
        bf_ledger_report_t rep;
        CHECK(bf_ledger_verify(L, &rep, &err) == 0);
        CHECK_MSG(!rep.ok && !rep.checks[cases[i].check].ok, "tampering '%s' not detected", cases[i].sql);
        /* the append-only trigger refuses a plain edit */
        PGconn *c = PQconnectdb(db_url);
        PGresult *r = PQexec(c, "UPDATE transfers SET amount = 0 WHERE id = 1");
        CHECK(PQresultStatus(r) == PGRES_FATAL_ERROR || strstr(cases[i].sql, "DISABLE"));
        PQclear(r);
        PQfinish(c);
        bf_ledger_close(&L);
    }
}

/* The task-level checks on PostgreSQL (escrow, shares, payouts, rewards, holds): the fee script's
 * shareholding task, a settled reward task and a running one, then one tampering each. */
static void test_tamper_tasks(void) {
    static const struct {
        const char *sql;
        int check;
    } cases[] = {
        {"UPDATE tasks SET reward_pool = reward_pool + 5 WHERE payment_mode = 1 AND status = 2", BF_LEDGER_CHECK_ESCROW},
        {"UPDATE model_shareholdings SET ppm = ppm + 1 WHERE user_id = (SELECT min(user_id) FROM model_shareholdings)",
         BF_LEDGER_CHECK_SHARES},
        {"UPDATE tasks SET total_revenue = total_revenue + 1 WHERE payment_mode = 2", BF_LEDGER_CHECK_PAYOUTS},
        {"UPDATE tasks SET platform_paid = platform_paid - 1, total_revenue = total_revenue - 1 WHERE payment_mode = 2",
         BF_LEDGER_CHECK_PAYOUTS},
        {"UPDATE model_usage SET captured = captured - 1 WHERE id = (SELECT min(id) FROM model_usage WHERE status = 2)",
         BF_LEDGER_CHECK_PAYOUTS},
        {"UPDATE reward_distributions SET amount = amount + 1 WHERE id = 1", BF_LEDGER_CHECK_REWARDS},
        {"UPDATE model_usage SET status = 3 WHERE id = (SELECT min(id) FROM model_usage WHERE status = 2)",
         BF_LEDGER_CHECK_HOLDS},
    };
    static int64_t scratch[1200];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (fresh_db("tamper_tasks")) return;
        tl_clock_t clk = {1700000000};
        bf_err_t err;
        bf_ledger_t *L = bf_ledger_open(db_url, &err);
        CHECK_MSG(L != NULL, "%s", err.msg);
        if (!L) return;
        bf_ledger_set_clock(L, tl_clock_now, &clk);
        fee_script(L, &clk, scratch, 1200);
        int64_t own = 0, h[3] = {0}, w[3] = {1, 2, 3}, t1 = 0, t2 = 0;
        CHECK(bf_ledger_user_find(L, "owner", &own, &err) == 0 && bf_ledger_user_find(L, "h1", &h[0], &err) == 0 &&
              bf_ledger_user_find(L, "h2", &h[1], &err) == 0 && bf_ledger_user_find(L, "h3", &h[2], &err) == 0);
        CHECK(bf_ledger_recharge(L, "rw-top", own, 5000, &err) == 0);
        bf_ledger_task_spec_t spec = {"reward", BF_LEDGER_MODE_REWARD, 1000, 0}, spec2 = {"running", BF_LEDGER_MODE_REWARD, 500, 0};
        CHECK(bf_ledger_create_task(L, "rw1", own, &spec, &t1, &err) == 0 && bf_ledger_start_task(L, "rw1-s", t1, &err) == 0);
        CHECK(bf_ledger_settle_reward(L, "rw1-done", t1, 3, h, w, "r", &err) == 0);
        CHECK(bf_ledger_create_task(L, "rw2", own, &spec2, &t2, &err) == 0 && bf_ledger_start_task(L, "rw2-s", t2, &err) == 0);
        tl_verify_ok(L, "tasks, before tampering");
        CHECK(sql(db_url, cases[i].sql) == 0);
        bf_ledger_report_t rep;
        CHECK(bf_ledger_verify(L, &rep, &err) == 0);
        CHECK_MSG(!rep.ok && !rep.checks[cases[i].check].ok, "tampering '%s' not detected", cases[i].sql);
        bf_ledger_close(&L);
    }
}

/* A coordinator home's ledger.db naming the database (`init --ledger URL`): opening the file opens
 * the database; a malformed one is refused; a SQLite file is left alone. */
static void test_redirect(void) {
    char path[1024], url[4096];
    bf_err_t err;
    if (fresh_db("redirect")) return;
    snprintf(path, sizeof path, "%s/bf-redirect-%d.db", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (int)getpid());
    unlink(path);
    CHECK(bf_ledger_redirect_write(path, "not a url", &err) == -1);
    CHECK(bf_ledger_redirect_write(path, db_url, &err) == 0);
    struct stat st;
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
    CHECK(bf_ledger_location(path, url, sizeof url, &err) == 1 && !strcmp(url, db_url));
    bf_ledger_t *L = bf_ledger_open(path, &err);
    CHECK_MSG(L != NULL, "%s", err.msg);
    int64_t u = L ? tl_user(L, "via-file", 3) : -1;
    bf_ledger_close(&L);
    L = bf_ledger_open(db_url, &err); /* the user is in the database, not in a file */
    int64_t id = 0;
    CHECK(L && u > 0 && bf_ledger_user_find(L, "via-file", &id, &err) == 0 && id == u);
    bf_ledger_close(&L);
    FILE *f = fopen(path, "w");
    if (f) fprintf(f, "%s\nsecond line\n", db_url), fclose(f);
    CHECK(bf_ledger_open(path, &err) == NULL && strstr(err.msg, "one line"));
    unlink(path);
    L = bf_ledger_open(path, &err); /* no file: a SQLite ledger, as always */
    CHECK(L != NULL && bf_ledger_location(path, url, sizeof url, &err) == 0 && !strcmp(url, path));
    bf_ledger_close(&L);
    tl_remove_db(path);
}

/* The same script on SQLite and on PostgreSQL: the same chain, row for row. */
static void test_same_chain(void) {
    char path[1024];
    tl_db_path(path, sizeof path, "ledger-pg-same");
    bf_err_t err;
    bf_ledger_report_t r1, r2;
    tl_clock_t c1 = {1700000000}, c2 = {1700000000};
    bf_ledger_t *S = bf_ledger_open(path, &err);
    CHECK(S != NULL);
    if (!S || fresh_db("same")) return;
    bf_ledger_t *P = bf_ledger_open(db_url, &err);
    CHECK_MSG(P != NULL, "%s", err.msg);
    if (!P) return;
    bf_ledger_set_clock(S, tl_clock_now, &c1);
    bf_ledger_set_clock(P, tl_clock_now, &c2);
    script(S, &c1);
    script(P, &c2);
    CHECK(bf_ledger_verify(S, &r1, &err) == 0 && bf_ledger_verify(P, &r2, &err) == 0 && r1.ok && r2.ok);
    CHECK_MSG(r1.transfers == r2.transfers && r1.transfers > 20 && !strcmp(r1.head_hash, r2.head_hash),
              "SQLite %lld transfers head %s, PostgreSQL %lld head %s", (long long)r1.transfers, r1.head_hash,
              (long long)r2.transfers, r2.head_hash);
    printf("same chain on both backends: %lld transfers, head %.16s...\n", (long long)r2.transfers, r2.head_hash);
    test_ops(P);
    bf_ledger_close(&S);
    bf_ledger_close(&P);
    tl_remove_db(path);
}

/* Two processes on one database: recharges, withdrawals and payouts on the same users. */
static void test_concurrency(int ops) {
    if (fresh_db("conc")) return;
    bf_err_t err;
    bf_ledger_t *L = bf_ledger_open(db_url, &err);
    CHECK_MSG(L != NULL, "%s", err.msg);
    if (!L) return;
    int64_t u[2] = {tl_user(L, "p0", 10), tl_user(L, "p1", 11)};
    bf_ledger_close(&L);
    pid_t kids[2];
    for (int k = 0; k < 2; k++) {
        if ((kids[k] = fork()) == 0) {
            bf_ledger_t *C = bf_ledger_open(db_url, &err);
            if (!C) _exit(2);
            char op[48], ref[48];
            for (int i = 0; i < ops; i++) {
                int64_t w = 0;
                snprintf(op, sizeof op, "k%d-r%d", k, i);
                if (bf_ledger_recharge(C, op, u[i % 2], 10, &err)) _exit(3);
                snprintf(op, sizeof op, "k%d-w%d", k, i);
                if (bf_ledger_withdraw(C, op, u[(i + 1) % 2], 3, &w, &err) == 0 && i % 3 == 0) {
                    snprintf(ref, sizeof ref, "k%d-b%d", k, i);
                    if (bf_ledger_withdraw_payout(C, w, ref, &err)) _exit(4);
                }
            }
            bf_ledger_close(&C);
            _exit(0);
        }
    }
    for (int k = 0; k < 2; k++) {
        int st = 0;
        waitpid(kids[k], &st, 0);
        CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "writer %d exited %d", k, WEXITSTATUS(st));
    }
    L = bf_ledger_open(db_url, &err);
    if (!L) return;
    bf_ledger_withdrawal_t *ws = NULL;
    size_t n = 0;
    CHECK(bf_ledger_withdrawals(L, 0, 0, &ws, &n, &err) == 0);
    int64_t paid[2] = {0, 0}, held[2] = {0, 0};
    for (size_t i = 0; i < n; i++) {
        int who = ws[i].user_id == u[1];
        if (ws[i].status == BF_LEDGER_WITHDRAWAL_PAID) paid[who] += ws[i].amount;
        else held[who] += ws[i].amount;
    }
    free(ws);
    for (int i = 0; i < 2; i++)
        CHECK_MSG(tl_cash(L, u[i], 0) == (int64_t)ops * 10 - paid[i] && tl_cash(L, u[i], 1) == held[i],
                  "user %d: cash %lld held %lld, expected %lld and %lld", i, (long long)tl_cash(L, u[i], 0),
                  (long long)tl_cash(L, u[i], 1), (long long)ops * 10 - paid[i], (long long)held[i]);
    bf_ledger_report_t rep;
    CHECK(bf_ledger_verify(L, &rep, &err) == 0 && rep.ok);
    printf("two writers x %d rounds: %zu withdrawals, %lld transfers in one chain, verify %s\n", ops, n,
           (long long)rep.transfers, rep.ok ? "ok" : "FAILED");
    bf_ledger_close(&L);
}

int main(int argc, char **argv) {
    if (argc < 2) return fprintf(stderr, "usage: test_ledger_postgres URL-FILE [OPS]\n"), 2;
    FILE *f = fopen(argv[1], "r");
    if (!f || !fgets(base_url, sizeof base_url, f)) {
        fprintf(stderr, "test_ledger_postgres: FAILED: no PostgreSQL cluster (%s unreadable): the ctest fixture "
                        "ledger_postgres_start did not run or failed; see its output\n", argv[1]);
        if (f) fclose(f);
        return 1;
    }
    fclose(f);
    base_url[strcspn(base_url, "\r\n")] = 0;
    int ops = argc > 2 ? atoi(argv[2]) : 300;
    test_same_chain();
    test_same_fee_chain();
    test_tamper();
    test_tamper_tasks();
    test_redirect();
    test_concurrency(ops);
    return bf_test_done("test_ledger_postgres");
}

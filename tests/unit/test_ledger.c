/* test_ledger.c: unit tests of every ledger operation and every error path: exact decimals,
 * largest-remainder splits, the cumulative fee apportionment, users, recharges, coins, task
 * states, escrow, shares, holds (capture, void, expiry), idempotency, group commit, queries, and
 * verify detecting tampering with the database behind the ledger's back. */
#include <sqlite3.h>
#include <stdlib.h>

#include "ledger_internal.h" /* the split-row encoding, to forge rows behind the ledger's back */
#include "ledger_v2_fixture.h"
#include "test_ledger_common.h"

static void test_parse(void) {
    int64_t v = -1;
    bf_err_t err;
    CHECK(bf_money_parse_amount("0.50", 2, &v, &err) == 0 && v == 50);
    CHECK(bf_money_parse_amount("12", 2, &v, &err) == 0 && v == 1200);
    CHECK(bf_money_parse_amount("12.3", 2, &v, &err) == 0 && v == 1230);
    CHECK(bf_money_parse_amount("0", 2, &v, &err) == 0 && v == 0);
    CHECK(bf_money_parse_amount("007.05", 2, &v, &err) == 0 && v == 705);
    CHECK(bf_money_parse_amount("92233720368547758.07", 2, &v, &err) == 0 && v == INT64_MAX);
    CHECK(bf_money_parse_amount("7", 0, &v, &err) == 0 && v == 7);
    const char *bad[] = {"", "-5", "+5", "1e3", "0.001", " 1", "1 ", "1.", ".5", "1..2", "1.2.3", "abc",
                         "92233720368547758.08", "99999999999999999999", "0x10", "1,00"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK_MSG(bf_money_parse_amount(bad[i], 2, &v, &err) == -1, "'%s' accepted", bad[i]);
    CHECK(bf_money_parse_amount("1.5", 0, &v, &err) == -1);
    CHECK(bf_money_parse_amount(NULL, 2, &v, &err) == -1);

    char b[32];
    CHECK(!strcmp(bf_money_format_amount(50, 2, b), "0.50"));
    CHECK(!strcmp(bf_money_format_amount(5, 2, b), "0.05"));
    CHECK(!strcmp(bf_money_format_amount(-1205, 2, b), "-12.05"));
    CHECK(!strcmp(bf_money_format_amount(0, 2, b), "0.00"));
    CHECK(!strcmp(bf_money_format_amount(42, 0, b), "42"));
    CHECK(!strcmp(bf_money_format_amount(INT64_MIN, 2, b), "-92233720368547758.08"));
    /* Round trip over random values. */
    bf_rng_t r;
    bf_rng_seed(&r, 7);
    for (int i = 0; i < 10000; i++) {
        int64_t x = (int64_t)(bf_rng_u64(&r) >> (1 + bf_rng_u64(&r) % 63));
        CHECK(bf_money_parse_amount(bf_money_format_amount(x, 2, b), 2, &v, NULL) == 0 && v == x);
    }
}

static void test_split(void) {
    int64_t parts[4];
    int64_t w1[] = {80, 8, 12}, k1[] = {1, 2, 3};
    CHECK(bf_money_split(15, 3, w1, k1, parts) == 0 && parts[0] == 12 && parts[1] == 1 && parts[2] == 2);
    int64_t w2[] = {70, 30}, k2[] = {1, 2};
    CHECK(bf_money_split(5, 2, w2, k2, parts) == 0 && parts[0] == 4 && parts[1] == 1);
    int64_t w3[] = {1, 1, 1}, k3[] = {3, 1, 2};
    CHECK(bf_money_split(100, 3, w3, k3, parts) == 0 && parts[0] == 33 && parts[1] == 34 && parts[2] == 33);
    int64_t w4[] = {0, -5, 3, 0}, k4[] = {1, 2, 3, 4};
    CHECK(bf_money_split(10, 4, w4, k4, parts) == 0 && parts[0] == 0 && parts[1] == 0 && parts[2] == 10 &&
          parts[3] == 0);
    int64_t w5[] = {0, -1}, k5[] = {1, 2};
    CHECK(bf_money_split(10, 2, w5, k5, parts) == -1);
    CHECK(bf_money_split(-1, 2, w2, k2, parts) == -1);
    int64_t w6[] = {INT64_MAX, INT64_MAX, 1}, k6[] = {1, 2, 3};
    CHECK(bf_money_split(INT64_MAX, 3, w6, k6, parts) == 0 && parts[0] + parts[1] + parts[2] == INT64_MAX);
    /* Random: sum exact, each part within [floor, ceil] of its quota. */
    bf_rng_t r;
    bf_rng_seed(&r, 11);
    for (int it = 0; it < 20000; it++) {
        size_t n = 1 + bf_rng_below(&r, 12);
        int64_t w[12], k[12], p[12], total = (int64_t)(bf_rng_u64(&r) >> (1 + bf_rng_below(&r, 62)));
        unsigned __int128 W = 0;
        for (size_t i = 0; i < n; i++) {
            w[i] = (int64_t)bf_rng_below(&r, 1000) - 100;
            k[i] = (int64_t)i * 3 + 1;
            if (w[i] > 0) W += (uint64_t)w[i];
        }
        int rc = bf_money_split(total, n, w, k, p);
        if (W == 0) {
            CHECK(rc == -1);
            continue;
        }
        CHECK(rc == 0);
        int64_t sum = 0;
        for (size_t i = 0; i < n; i++) {
            sum += p[i];
            unsigned __int128 exact = w[i] > 0 ? (unsigned __int128)(uint64_t)total * (uint64_t)w[i] : 0;
            unsigned __int128 lo = exact / W, hi = (exact + W - 1) / W;
            CHECK((unsigned __int128)p[i] >= lo && (unsigned __int128)p[i] <= hi);
        }
        CHECK(sum == total);
    }
}

/* After every single unit, each holder is strictly within one unit of its exact entitlement, and
 * the result does not depend on how the total was chunked. */
static void test_apportion(void) {
    bf_rng_t r;
    bf_rng_seed(&r, 5);
    for (int it = 0; it < 300; it++) {
        size_t n = 1 + bf_rng_below(&r, 9);
        int64_t w[10], k[10], paid_a[10] = {0}, paid_b[10] = {0}, add[10];
        int64_t W = 0;
        for (size_t i = 0; i < n; i++) {
            w[i] = bf_rng_below(&r, 4) == 0 ? 0 : 1 + bf_rng_below(&r, 1000000);
            k[i] = 100 - (int64_t)i;
            W += w[i];
        }
        if (W == 0) {
            w[0] = 1;
            W = 1;
        }
        int64_t total = 0;
        for (int step = 0; step < 200; step++) {
            int64_t amount = bf_rng_below(&r, 4) == 0 ? bf_rng_below(&r, 500) : bf_rng_below(&r, 4);
            CHECK(bf_money_apportion(n, w, k, paid_a, total, amount, add) == 0);
            total += amount;
            int64_t sum = 0;
            for (size_t i = 0; i < n; i++) {
                paid_a[i] += add[i];
                sum += paid_a[i];
                __int128 diff = (__int128)paid_a[i] * W - (__int128)total * w[i];
                CHECK_MSG(diff < W && diff > -(__int128)W, "holder %zu off by a unit", i);
            }
            CHECK(sum == total);
        }
        /* The same total in unit steps gives the same vector. */
        for (int64_t t = 0; t < total; t++) {
            CHECK(bf_money_apportion(n, w, k, paid_b, t, 1, add) == 0);
            for (size_t i = 0; i < n; i++) paid_b[i] += add[i];
        }
        for (size_t i = 0; i < n; i++) CHECK(paid_a[i] == paid_b[i]);
    }
    int64_t w[2] = {1, 1}, k[2] = {1, 2}, paid[2] = {5, 0}, add[2];
    CHECK(bf_money_apportion(2, w, k, paid, 4, 1, add) == -1); /* paid does not sum to total */
    int64_t zero[2] = {0, 0};
    CHECK(bf_money_apportion(2, zero, k, zero, 0, 1, add) == -1);
}

static void test_users(bf_ledger_t *L, tl_clock_t *clk) {
    (void)clk;
    bf_err_t err;
    char key[41], key2[41];
    tl_key(key, 1);
    tl_key(key2, 2);
    int64_t id = 0, id2 = 0;
    CHECK(bf_ledger_register_user(L, "u1", "alice", key, "s3cret", &id, &err) == BF_LEDGER_OK);
    CHECK(id > 0 && tl_coins(L, id) == BF_LEDGER_REGISTER_COINS && tl_cash(L, id, 0) == 0);
    /* Replay: same outcome, nothing new. */
    CHECK(bf_ledger_register_user(L, "u1", "alice", key, "s3cret", &id2, &err) == BF_LEDGER_OK && id2 == id);
    CHECK(tl_coins(L, id) == BF_LEDGER_REGISTER_COINS);
    /* Same id, different content. */
    CHECK(bf_ledger_register_user(L, "u1", "alice2", key, "s3cret", &id2, &err) == BF_LEDGER_ECONFLICT);
    CHECK(bf_ledger_register_user(L, "u1", "alice", key, "other", &id2, &err) == BF_LEDGER_ECONFLICT);
    CHECK(bf_ledger_register_user(L, "u1", "alice", key, NULL, &id2, &err) == BF_LEDGER_ECONFLICT);
    CHECK(bf_ledger_check_password(L, id, "s3cret", &err) == 1);
    CHECK(bf_ledger_check_password(L, id, "s3cres", &err) == 0);
    CHECK(bf_ledger_check_password(L, 9999, "x", &err) == BF_LEDGER_ENOTFOUND);
    /* Name taken, recorded as failed. */
    CHECK(bf_ledger_register_user(L, "u1b", "alice", key2, NULL, &id2, &err) == BF_LEDGER_EEXISTS);
    CHECK(bf_ledger_register_user(L, "u1b", "alice", key2, NULL, &id2, &err) == BF_LEDGER_EEXISTS);
    int found = 0, rc = 0;
    int64_t res = 0;
    CHECK(bf_ledger_op_lookup(L, "u1b", &found, &rc, &res, &err) == 0 && found && rc == BF_LEDGER_EEXISTS);
    CHECK(bf_ledger_op_lookup(L, "never", &found, &rc, &res, &err) == 0 && !found);
    CHECK(bf_ledger_op_lookup(L, "u1", &found, &rc, &res, &err) == 0 && found && rc == 0 && res == id);
    /* Malformed input. */
    CHECK(bf_ledger_register_user(L, "u2", "bob", "short", NULL, &id2, &err) == BF_LEDGER_EINVAL);
    char badkey[41];
    memcpy(badkey, key2, 41);
    badkey[3] = '"'; /* not in the Z85 alphabet */
    CHECK(bf_ledger_register_user(L, "u3", "bob", badkey, NULL, &id2, &err) == BF_LEDGER_EINVAL);
    CHECK(bf_ledger_register_user(L, "u4", "", key2, NULL, &id2, &err) == BF_LEDGER_EINVAL);
    CHECK(bf_ledger_register_user(L, "u5", "bob", key2, "", &id2, &err) == BF_LEDGER_EINVAL);
    CHECK(bf_ledger_register_user(L, "", "bob", key2, NULL, &id2, &err) == BF_LEDGER_EINVAL);
    CHECK(bf_ledger_register_user(L, NULL, "bob", key2, NULL, &id2, &err) == BF_LEDGER_EINVAL);
    char longid[200];
    memset(longid, 'x', sizeof longid - 1);
    longid[sizeof longid - 1] = 0;
    CHECK(bf_ledger_register_user(L, longid, "bob", key2, NULL, &id2, &err) == BF_LEDGER_EINVAL);
    int64_t found_id = 0;
    CHECK(bf_ledger_user_find(L, "alice", &found_id, &err) == 0 && found_id == id);
    CHECK(bf_ledger_user_find(L, "nobody", &found_id, &err) == BF_LEDGER_ENOTFOUND);
    /* by CURVE key: alice's; key2 only ever failed to register */
    found_id = 0;
    CHECK(bf_ledger_user_find_key(L, key, &found_id, &err) == 0 && found_id == id);
    CHECK(bf_ledger_user_find_key(L, key2, &found_id, &err) == BF_LEDGER_ENOTFOUND);
}

static void test_cash_and_coins(bf_ledger_t *L) {
    bf_err_t err;
    int64_t u = tl_user(L, "carol", 3);
    CHECK(bf_ledger_recharge(L, "r1", u, 1050, &err) == BF_LEDGER_OK && tl_cash(L, u, 0) == 1050);
    CHECK(bf_ledger_recharge(L, "r1", u, 1050, &err) == BF_LEDGER_OK && tl_cash(L, u, 0) == 1050);
    CHECK(bf_ledger_recharge(L, "r1", u, 1051, &err) == BF_LEDGER_ECONFLICT);
    CHECK(bf_ledger_recharge(L, "r2", u, 0, &err) == BF_LEDGER_EINVAL);
    CHECK(bf_ledger_recharge(L, "r3", u, -5, &err) == BF_LEDGER_EINVAL);
    CHECK(bf_ledger_recharge(L, "r4", 12345, 5, &err) == BF_LEDGER_ENOTFOUND);
    CHECK(bf_ledger_recharge(L, "r5", u, INT64_MAX, &err) == BF_LEDGER_EOVERFLOW);
    CHECK(tl_cash(L, u, 0) == 1050);

    CHECK(bf_ledger_spend_coins(L, "s1", u, 3, &err) == BF_LEDGER_OK && tl_coins(L, u) == 70);
    CHECK(bf_ledger_spend_coins(L, "s2", u, 8, &err) == BF_LEDGER_EFUNDS && tl_coins(L, u) == 70);
    CHECK_MSG(strstr(err.msg, "70 coins available, 80 needed"), "%s", err.msg);
    CHECK(bf_ledger_spend_coins(L, "s3", u, 0, &err) == BF_LEDGER_EINVAL);
    CHECK(bf_ledger_spend_coins(L, "s4", u, INT64_MAX / 5, &err) == BF_LEDGER_EOVERFLOW);
    CHECK(bf_ledger_spend_coins(L, "s5", 999, 1, &err) == BF_LEDGER_ENOTFOUND);
    CHECK(bf_ledger_spend_coins(L, "s6", u, 7, &err) == BF_LEDGER_OK && tl_coins(L, u) == 0);
    CHECK(bf_ledger_spend_coins(L, "s7", u, 1, &err) == BF_LEDGER_EFUNDS);

    /* History shows each movement with consistent before/after. */
    bf_ledger_entry_t *e = NULL;
    size_t n = 0;
    CHECK(bf_ledger_history(L, u, &e, &n, &err) == 0 && n == 4);
    for (size_t i = 0; i < n; i++) CHECK(e[i].balance_after - e[i].balance_before == e[i].amount);
    if (n == 4) {
        CHECK(!strcmp(e[0].code, "register_bonus") && e[0].amount == 100 && e[0].balance_after == 100);
        CHECK(!strcmp(e[1].code, "recharge") && e[1].amount == 1050 && !strcmp(e[1].op_id, "r1"));
        CHECK(!strcmp(e[2].code, "spend_coins") && e[2].amount == -30 && e[2].balance_after == 70);
    }
    free(e);
    CHECK(bf_ledger_history(L, 4242, &e, &n, &err) == BF_LEDGER_ENOTFOUND);
}

static void test_failed_id_stays_failed(bf_ledger_t *L) {
    bf_err_t err;
    int64_t u = tl_user(L, "dave", 4);
    bf_ledger_task_spec_t spec = {"dave's task", BF_LEDGER_MODE_REWARD, 500, 0};
    int64_t task = 0;
    CHECK(bf_ledger_create_task(L, "t-dave", u, &spec, &task, &err) == BF_LEDGER_EFUNDS);
    CHECK_MSG(strstr(err.msg, "0.00 yuan available, 5.00 needed"), "%s", err.msg);
    CHECK(bf_ledger_recharge(L, "r-dave", u, 1000, &err) == BF_LEDGER_OK);
    /* The world changed, but the id keeps its first answer. */
    CHECK(bf_ledger_create_task(L, "t-dave", u, &spec, &task, &err) == BF_LEDGER_EFUNDS);
    CHECK(tl_cash(L, u, 0) == 1000);
    CHECK(bf_ledger_create_task(L, "t-dave-2", u, &spec, &task, &err) == BF_LEDGER_OK);
    CHECK(tl_cash(L, u, 0) == 500);
}

static void test_reward_task(bf_ledger_t *L) {
    bf_err_t err;
    int64_t boss = tl_user(L, "boss", 10), w1 = tl_user(L, "w1", 11), w2 = tl_user(L, "w2", 12),
            w3 = tl_user(L, "w3", 13);
    CHECK(bf_ledger_recharge(L, "r-boss", boss, 10000, &err) == 0);
    bf_ledger_task_spec_t spec = {"cifar", BF_LEDGER_MODE_REWARD, 1000, 0};
    int64_t t = 0, t2 = 0;
    CHECK(bf_ledger_create_task(L, "task-r", boss, &spec, &t, &err) == 0 && t > 0);
    bf_ledger_task_t info;
    CHECK(bf_ledger_task_get(L, t, &info, &err) == 0 && info.status == BF_LEDGER_TASK_CREATED &&
          info.escrow_balance == 1000 && info.mode == BF_LEDGER_MODE_REWARD);
    CHECK(tl_cash(L, boss, 0) == 9000);
    CHECK(bf_ledger_join_task(L, "j1", t, w1, &err) == 0);
    CHECK(bf_ledger_join_task(L, "j1b", t, w1, &err) == BF_LEDGER_EEXISTS);
    CHECK(bf_ledger_join_task(L, "j2", t, w2, &err) == 0);
    CHECK(bf_ledger_join_task(L, "j3", 777, w2, &err) == BF_LEDGER_ENOTFOUND);
    int64_t users[3] = {w1, w2, w3}, weights[3] = {1, 1, 1};
    CHECK(bf_ledger_settle_reward(L, "settle-early", t, 3, users, weights, NULL, &err) == BF_LEDGER_ESTATE);
    CHECK(bf_ledger_start_task(L, "start-r", t, &err) == 0);
    CHECK(bf_ledger_start_task(L, "start-r2", t, &err) == BF_LEDGER_ESTATE);
    CHECK(bf_ledger_start_task(L, "start-x", 888, &err) == BF_LEDGER_ENOTFOUND);
    CHECK(bf_ledger_allocate_shares(L, "alloc-wrong", t, 3, users, weights, NULL, &err) == BF_LEDGER_ESTATE);
    int64_t zero[3] = {0, -3, 0};
    CHECK(bf_ledger_settle_reward(L, "settle-zero", t, 3, users, zero, NULL, &err) == BF_LEDGER_EINVAL);
    int64_t dup[3] = {w1, w1, w2};
    CHECK(bf_ledger_settle_reward(L, "settle-dup", t, 3, dup, weights, NULL, &err) == BF_LEDGER_EINVAL);
    int64_t ghost[3] = {w1, 5555, w2};
    CHECK(bf_ledger_settle_reward(L, "settle-ghost", t, 3, ghost, weights, NULL, &err) == BF_LEDGER_ENOTFOUND);
    CHECK(bf_ledger_task_get(L, t, &info, &err) == 0 && info.status == BF_LEDGER_TASK_RUNNING &&
          info.escrow_balance == 1000);
    /* 1000 / 3: 333.33 each; the spare cent goes to the smallest account (w1 registered first). */
    CHECK(bf_ledger_settle_reward(L, "settle", t, 3, users, weights, "sha256:abc", &err) == 0);
    CHECK(tl_cash(L, w1, 0) == 334 && tl_cash(L, w2, 0) == 333 && tl_cash(L, w3, 0) == 333);
    CHECK(bf_ledger_task_get(L, t, &info, &err) == 0 && info.status == BF_LEDGER_TASK_COMPLETED &&
          info.escrow_balance == 0 && !strcmp(info.result_hash, "sha256:abc"));
    CHECK(bf_ledger_settle_reward(L, "settle-again", t, 3, users, weights, NULL, &err) == BF_LEDGER_ESTATE);
    CHECK(bf_ledger_refund_task(L, "refund-done", t, &err) == BF_LEDGER_ESTATE);
    CHECK(bf_ledger_join_task(L, "j-late", t, w3, &err) == BF_LEDGER_ESTATE);
    bf_ledger_reward_t *rw = NULL;
    size_t n = 0;
    CHECK(bf_ledger_rewards(L, t, 0, &rw, &n, &err) == 0 && n == 3);
    int64_t sum = 0;
    for (size_t i = 0; i < n; i++) sum += rw[i].amount;
    CHECK(sum == 1000);
    free(rw);
    bf_ledger_participation_t *pp = NULL;
    CHECK(bf_ledger_participations(L, t, 0, &pp, &n, &err) == 0 && n == 2);
    free(pp);

    /* Refund from CREATED and from RUNNING returns the whole escrow. */
    CHECK(bf_ledger_create_task(L, "task-r2", boss, &spec, &t2, &err) == 0 && tl_cash(L, boss, 0) == 8000);
    CHECK(bf_ledger_refund_task(L, "refund-2", t2, &err) == 0 && tl_cash(L, boss, 0) == 9000);
    CHECK(bf_ledger_refund_task(L, "refund-2b", t2, &err) == BF_LEDGER_ESTATE);
    CHECK(bf_ledger_start_task(L, "start-2", t2, &err) == BF_LEDGER_ESTATE);
    CHECK(bf_ledger_task_get(L, t2, &info, &err) == 0 && info.status == BF_LEDGER_TASK_REFUNDED &&
          info.escrow_balance == 0);
    CHECK(bf_ledger_create_task(L, "task-r3", boss, &spec, &t2, &err) == 0);
    CHECK(bf_ledger_start_task(L, "start-3", t2, &err) == 0);
    CHECK(bf_ledger_refund_task(L, "refund-3", t2, &err) == 0 && tl_cash(L, boss, 0) == 9000);

    bf_ledger_task_spec_t bad = {"x", BF_LEDGER_MODE_REWARD, 0, 0};
    CHECK(bf_ledger_create_task(L, "task-bad1", boss, &bad, &t2, &err) == BF_LEDGER_EINVAL);
    bad.mode = BF_LEDGER_MODE_SHAREHOLDING;
    bad.reward_pool = 5;
    CHECK(bf_ledger_create_task(L, "task-bad2", boss, &bad, &t2, &err) == BF_LEDGER_EINVAL);
    bad.mode = 9;
    CHECK(bf_ledger_create_task(L, "task-bad3", boss, &bad, &t2, &err) == BF_LEDGER_EINVAL);
    bad.name = "";
    bad.mode = BF_LEDGER_MODE_REWARD;
    CHECK(bf_ledger_create_task(L, "task-bad4", boss, &bad, &t2, &err) == BF_LEDGER_EINVAL);
    CHECK(bf_ledger_create_task(L, "task-bad5", 31337, &spec, &t2, &err) == BF_LEDGER_ENOTFOUND);
    CHECK(bf_ledger_task_get(L, 31337, &info, &err) == BF_LEDGER_ENOTFOUND);
}

static void test_holds(bf_ledger_t *L, tl_clock_t *clk) {
    bf_err_t err;
    int64_t boss = tl_user(L, "owner", 20), h1 = tl_user(L, "h1", 21), h2 = tl_user(L, "h2", 22),
            h3 = tl_user(L, "h3", 23), payer = tl_user(L, "payer", 24);
    int64_t holders[3] = {h1, h2, h3}, eq[3] = {1, 1, 1};
    bf_ledger_task_spec_t spec = {"model", BF_LEDGER_MODE_SHAREHOLDING, 0, 100};
    int64_t t = 0, hold = 0, hold2 = 0;
    CHECK(bf_ledger_create_task(L, "m-create", boss, &spec, &t, &err) == 0);
    CHECK(bf_ledger_fee_hold(L, "hold-early", t, payer, 10, 0, &hold, &err) == BF_LEDGER_ESTATE);
    CHECK(bf_ledger_set_model_online(L, "online-early", t, 1, &err) == BF_LEDGER_ESTATE);
    CHECK(bf_ledger_start_task(L, "m-start", t, &err) == 0);
    CHECK(bf_ledger_settle_reward(L, "m-wrong", t, 3, holders, eq, NULL, &err) == BF_LEDGER_ESTATE);
    CHECK(bf_ledger_allocate_shares(L, "m-alloc", t, 3, holders, eq, "hash", &err) == 0);
    bf_ledger_share_t *sh = NULL;
    size_t n = 0;
    CHECK(bf_ledger_task_shares(L, t, &sh, &n, &err) == 0 && n == 3);
    if (n == 3) CHECK(sh[0].ppm == 333334 && sh[1].ppm == 333333 && sh[2].ppm == 333333);
    free(sh);
    CHECK(bf_ledger_user_shares(L, h2, &sh, &n, &err) == 0 && n == 1 && sh[0].task_id == t);
    free(sh);
    /* Offline model: no charging. */
    CHECK(bf_ledger_fee_hold(L, "hold-offline", t, payer, 10, 0, &hold, &err) == BF_LEDGER_ESTATE);
    CHECK(bf_ledger_set_model_online(L, "m-online", t, 1, &err) == 0);
    CHECK(bf_ledger_fee_hold(L, "hold-poor", t, payer, 10, 0, &hold, &err) == BF_LEDGER_EFUNDS);
    CHECK(bf_ledger_recharge(L, "r-payer", payer, 1000, &err) == 0);
    CHECK(bf_ledger_fee_hold(L, "hold-0", t, payer, 0, 0, &hold, &err) == BF_LEDGER_EINVAL);
    CHECK(bf_ledger_fee_hold(L, "hold-neg-timeout", t, payer, 5, -1, &hold, &err) == BF_LEDGER_EINVAL);
    CHECK(bf_ledger_fee_hold(L, "hold-ghost", t, 9999, 5, 0, &hold, &err) == BF_LEDGER_ENOTFOUND);
    CHECK(bf_ledger_fee_hold(L, "hold-ghost-task", 9999, payer, 5, 0, &hold, &err) == BF_LEDGER_ENOTFOUND);
    CHECK(bf_ledger_fee_hold(L, "hold-too-much", t, payer, 1001, 0, &hold, &err) == BF_LEDGER_EFUNDS);

    /* Hold: available drops, posted does not. */
    CHECK(bf_ledger_fee_hold(L, "hold-1", t, payer, 600, 0, &hold, &err) == 0 && hold > 0);
    CHECK(tl_cash(L, payer, 0) == 1000 && tl_cash(L, payer, 1) == 600 && tl_cash(L, payer, 2) == 400);
    /* Pending debits count against the balance (pessimistic). */
    CHECK(bf_ledger_fee_hold(L, "hold-2-poor", t, payer, 401, 0, &hold2, &err) == BF_LEDGER_EFUNDS);
    CHECK(bf_ledger_fee_capture(L, "cap-too-much", hold, 601, &err) == BF_LEDGER_EEXCEEDS_HOLD);
    CHECK(bf_ledger_fee_capture(L, "cap-neg", hold, -1, &err) == BF_LEDGER_EINVAL);
    CHECK(bf_ledger_fee_capture(L, "cap-ghost", 99999, 1, &err) == BF_LEDGER_ENOTFOUND);
    /* Partial capture: 100 of 600 captured, 500 released. */
    CHECK(bf_ledger_fee_capture(L, "cap-1", hold, 100, &err) == 0);
    CHECK(tl_cash(L, payer, 0) == 900 && tl_cash(L, payer, 1) == 0 && tl_cash(L, payer, 2) == 900);
    CHECK(tl_cash(L, h1, 0) == 34 && tl_cash(L, h2, 0) == 33 && tl_cash(L, h3, 0) == 33);
    CHECK(bf_ledger_fee_capture(L, "cap-1", hold, 100, &err) == 0 && tl_cash(L, payer, 0) == 900);
    CHECK(bf_ledger_fee_capture(L, "cap-1-again", hold, 100, &err) == BF_LEDGER_EPOSTED);
    CHECK(bf_ledger_fee_void(L, "void-after-post", hold, &err) == BF_LEDGER_EPOSTED);
    bf_ledger_usage_t us;
    CHECK(bf_ledger_hold_get(L, hold, &us, &err) == 0 && us.status == BF_LEDGER_HOLD_CAPTURED && us.captured == 100 &&
          us.held == 600);

    /* Void releases everything; then nothing else resolves it. */
    CHECK(bf_ledger_fee_hold(L, "hold-2", t, payer, 50, 0, &hold2, &err) == 0);
    CHECK(tl_cash(L, payer, 2) == 850);
    CHECK(bf_ledger_fee_void(L, "void-2", hold2, &err) == 0 && tl_cash(L, payer, 2) == 900);
    CHECK(bf_ledger_fee_void(L, "void-2b", hold2, &err) == BF_LEDGER_EVOIDED);
    CHECK(bf_ledger_fee_capture(L, "cap-2", hold2, 50, &err) == BF_LEDGER_EVOIDED);
    CHECK(bf_ledger_fee_void(L, "void-ghost", 99999, &err) == BF_LEDGER_ENOTFOUND);

    /* Expiry: unusable at the deadline even before the sweep; the sweep releases it once. */
    int64_t hold3 = 0, hold4 = 0, swept = -1;
    CHECK(bf_ledger_fee_hold(L, "hold-3", t, payer, 70, 10, &hold3, &err) == 0);
    CHECK(bf_ledger_fee_hold(L, "hold-4", t, payer, 30, 100, &hold4, &err) == 0);
    CHECK(bf_ledger_sweep_expired(L, &swept, &err) == 0 && swept == 0);
    clk->now += 10;
    CHECK(bf_ledger_fee_capture(L, "cap-3", hold3, 70, &err) == BF_LEDGER_EEXPIRED);
    CHECK(bf_ledger_fee_void(L, "void-3", hold3, &err) == BF_LEDGER_EEXPIRED);
    CHECK(tl_cash(L, payer, 1) == 100);
    CHECK(bf_ledger_sweep_expired(L, &swept, &err) == 0 && swept == 1);
    CHECK(tl_cash(L, payer, 1) == 30 && tl_cash(L, payer, 0) == 900);
    CHECK(bf_ledger_sweep_expired(L, &swept, &err) == 0 && swept == 0);
    CHECK(bf_ledger_hold_get(L, hold3, &us, &err) == 0 && us.status == BF_LEDGER_HOLD_EXPIRED);
    CHECK(bf_ledger_fee_capture(L, "cap-3b", hold3, 70, &err) == BF_LEDGER_EEXPIRED);
    CHECK(bf_ledger_fee_capture(L, "cap-4", hold4, 30, &err) == 0);

    /* Fairness of 1-cent fees: each of three equal holders gets every third cent, not the first
     * holder every time. */
    int64_t f1 = tl_user(L, "f1", 31), f2 = tl_user(L, "f2", 32), f3 = tl_user(L, "f3", 33);
    int64_t fh[3] = {f1, f2, f3};
    int64_t tf = tl_share_task(L, "fair", boss, 3, fh, eq);
    for (int i = 0; i < 9; i++) {
        char op[32];
        snprintf(op, sizeof op, "fair-%d", i);
        CHECK(bf_ledger_fee_charge(L, op, tf, payer, 1, &hold, &err) == 0);
    }
    CHECK(tl_cash(L, f1, 0) == 3 && tl_cash(L, f2, 0) == 3 && tl_cash(L, f3, 0) == 3);
    bf_ledger_revenue_t *rv = NULL;
    CHECK(bf_ledger_revenues(L, tf, 0, &rv, &n, &err) == 0 && n == 9);
    free(rv);
    CHECK(bf_ledger_revenues(L, 0, f2, &rv, &n, &err) == 0 && n == 3);
    free(rv);
    bf_ledger_usage_t *ul = NULL;
    CHECK(bf_ledger_usage(L, tf, &ul, &n, &err) == 0 && n == 9);
    free(ul);
    CHECK(bf_ledger_fee_charge(L, "fair-poor", tf, payer, 100000, &hold, &err) == BF_LEDGER_EFUNDS);
    CHECK(bf_ledger_set_model_online(L, "fair-off", tf, 0, &err) == 0);
    CHECK(bf_ledger_fee_charge(L, "fair-offline", tf, payer, 1, &hold, &err) == BF_LEDGER_ESTATE);
}

static void test_platform_fee(bf_ledger_t *L) {
    bf_err_t err;
    CHECK(bf_ledger_set_platform_fee(L, "fee-bad", 1000001, &err) == BF_LEDGER_EINVAL);
    CHECK(bf_ledger_set_platform_fee(L, "fee-10pct", 100000, &err) == 0);
    int64_t boss = tl_user(L, "pf-owner", 40), a = tl_user(L, "pf-a", 41), payer = tl_user(L, "pf-payer", 42);
    CHECK(bf_ledger_recharge(L, "pf-r", payer, 100000, &err) == 0);
    int64_t one[1] = {a}, w[1] = {1}, hold;
    int64_t t = tl_share_task(L, "pf", boss, 1, one, w);
    bf_ledger_task_t info;
    CHECK(bf_ledger_task_get(L, t, &info, &err) == 0 && info.platform_fee_ppm == 100000);
    for (int i = 0; i < 10; i++) {
        char op[32];
        snprintf(op, sizeof op, "pf-%d", i);
        CHECK(bf_ledger_fee_charge(L, op, t, payer, 1001, &hold, &err) == 0);
    }
    /* 10010 cents: exactly 1001 to the platform and 9009 to the single holder. */
    CHECK(tl_cash(L, a, 0) == 9009);
    CHECK(bf_ledger_task_get(L, t, &info, &err) == 0 && info.total_revenue == 10010);
    CHECK(bf_ledger_set_platform_fee(L, "fee-zero", 0, &err) == 0);
}

static void test_group(bf_ledger_t *L) {
    bf_err_t err;
    int64_t u = tl_user(L, "grp", 50);
    CHECK(bf_ledger_group_begin(L, &err) == 0);
    CHECK(bf_ledger_recharge(L, "g1", u, 10, &err) == 0);
    CHECK(bf_ledger_spend_coins(L, "g2", u, 11, &err) == BF_LEDGER_EFUNDS);
    CHECK(bf_ledger_recharge(L, "g3", u, 20, &err) == 0);
    CHECK(bf_ledger_recharge(L, "g1", u, 10, &err) == 0); /* replay inside the group */
    CHECK(bf_ledger_group_commit(L, &err) == 0);
    CHECK(tl_cash(L, u, 0) == 30 && tl_coins(L, u) == 100);
    int found = 0, rc = 0;
    CHECK(bf_ledger_op_lookup(L, "g2", &found, &rc, NULL, &err) == 0 && found && rc == BF_LEDGER_EFUNDS);
    /* Rolled back groups leave nothing behind, not even the op ids. */
    CHECK(bf_ledger_group_begin(L, &err) == 0);
    CHECK(bf_ledger_recharge(L, "g4", u, 10, &err) == 0);
    bf_ledger_group_rollback(L);
    CHECK(tl_cash(L, u, 0) == 30);
    CHECK(bf_ledger_op_lookup(L, "g4", &found, &rc, NULL, &err) == 0 && !found);
    CHECK(bf_ledger_recharge(L, "g4", u, 10, &err) == 0 && tl_cash(L, u, 0) == 40);
}

/* Inside a group, accounts are written back lazily and fee ops cache the task: queries on the
 * handle see every committed op, a failed op or a state change in between is honoured, and a
 * rolled-back group leaves nothing behind in the caches. */
static void test_group_cache(bf_ledger_t *L) {
    bf_err_t err;
    int64_t boss = tl_user(L, "gc-owner", 60), h1 = tl_user(L, "gc-h1", 61), h2 = tl_user(L, "gc-h2", 62),
            payer = tl_user(L, "gc-payer", 63);
    int64_t hs[2] = {h1, h2}, w[2] = {3, 1}, hold = 0, hold2 = 0;
    int64_t t = tl_share_task(L, "gc", boss, 2, hs, w);
    CHECK(bf_ledger_recharge(L, "gc-r", payer, 1000, &err) == 0);
    CHECK(bf_ledger_group_begin(L, &err) == 0);
    CHECK(bf_ledger_fee_charge(L, "gc-1", t, payer, 100, &hold, &err) == 0);
    /* Read inside the group: the payout is visible before the group commits. */
    CHECK(tl_cash(L, h1, 0) == 75 && tl_cash(L, h2, 0) == 25 && tl_cash(L, payer, 0) == 900);
    bf_ledger_entry_t *e = NULL;
    size_t n = 0;
    CHECK(bf_ledger_history(L, h1, &e, &n, &err) == 0 && n == 2 && e[1].amount == 75 && e[1].balance_after == 75);
    free(e);
    CHECK(bf_ledger_fee_charge(L, "gc-poor", t, payer, 5000, &hold2, &err) == BF_LEDGER_EFUNDS);
    CHECK(bf_ledger_fee_hold(L, "gc-h", t, payer, 40, 0, &hold2, &err) == 0);
    CHECK(bf_ledger_set_model_online(L, "gc-off", t, 0, &err) == 0);
    CHECK(bf_ledger_fee_hold(L, "gc-h-off", t, payer, 10, 0, &hold, &err) == BF_LEDGER_ESTATE);
    CHECK(bf_ledger_fee_capture(L, "gc-c", hold2, 40, &err) == 0); /* an open hold still captures */
    CHECK(bf_ledger_set_model_online(L, "gc-on", t, 1, &err) == 0);
    CHECK(bf_ledger_fee_charge(L, "gc-2", t, payer, 60, &hold, &err) == 0);
    CHECK(bf_ledger_fee_charge(L, "gc-1", t, payer, 100, &hold, &err) == 0); /* replay */
    CHECK(bf_ledger_fee_charge(L, "gc-1", t, payer, 101, &hold, &err) == BF_LEDGER_ECONFLICT);
    CHECK(bf_ledger_group_commit(L, &err) == 0);
    CHECK(tl_cash(L, h1, 0) == 150 && tl_cash(L, h2, 0) == 50 && tl_cash(L, payer, 0) == 800);
    bf_ledger_task_t info;
    CHECK(bf_ledger_task_get(L, t, &info, &err) == 0 && info.total_revenue == 200);
    /* A rolled-back group: nothing stays, in the file or in the caches. */
    CHECK(bf_ledger_group_begin(L, &err) == 0);
    CHECK(bf_ledger_fee_charge(L, "gc-3", t, payer, 100, &hold, &err) == 0);
    bf_ledger_group_rollback(L);
    CHECK(tl_cash(L, h1, 0) == 150 && tl_cash(L, payer, 0) == 800);
    CHECK(bf_ledger_group_begin(L, &err) == 0);
    CHECK(bf_ledger_fee_charge(L, "gc-3", t, payer, 4, &hold, &err) == 0);
    CHECK(bf_ledger_group_commit(L, &err) == 0);
    CHECK(tl_cash(L, h1, 0) + tl_cash(L, h2, 0) == 204 && tl_cash(L, payer, 0) == 796);
    bf_ledger_share_t *sh = NULL;
    CHECK(bf_ledger_task_shares(L, t, &sh, &n, &err) == 0 && n == 2);
    if (n == 2) CHECK(sh[0].received + sh[1].received == 204);
    free(sh);
    /* Two tasks in one group: a task's pending revenue figures survive an op on another task that
     * wrote them out inside its savepoint and then failed (and was rolled back). */
    int64_t t2 = tl_share_task(L, "gc2", boss, 2, hs, w);
    int64_t poor = tl_user(L, "gc-poor", 64);
    CHECK(bf_ledger_group_begin(L, &err) == 0);
    CHECK(bf_ledger_fee_charge(L, "gc2-1", t, payer, 10, &hold, &err) == 0);
    CHECK(bf_ledger_fee_hold(L, "gc2-2", t2, poor, 10, 0, &hold, &err) == BF_LEDGER_EFUNDS);
    CHECK(bf_ledger_task_get(L, t, &info, &err) == 0 && info.total_revenue == 214); /* read in the group */
    CHECK(bf_ledger_fee_charge(L, "gc2-3", t, payer, 10, &hold, &err) == 0);
    CHECK(bf_ledger_fee_hold(L, "gc2-4", t2, poor, 10, 0, &hold, &err) == BF_LEDGER_EFUNDS);
    CHECK(bf_ledger_fee_charge(L, "gc2-5", t2, payer, 8, &hold, &err) == 0);
    CHECK(bf_ledger_fee_charge(L, "gc2-6", t, payer, 10, &hold, &err) == 0);
    CHECK(bf_ledger_group_commit(L, &err) == 0);
    CHECK(bf_ledger_task_get(L, t, &info, &err) == 0 && info.total_revenue == 234);
    CHECK(bf_ledger_task_get(L, t2, &info, &err) == 0 && info.total_revenue == 8);
    CHECK(bf_ledger_task_shares(L, t, &sh, &n, &err) == 0 && n == 2);
    if (n == 2) CHECK(sh[0].received + sh[1].received == 234);
    free(sh);
    tl_verify_ok(L, "group cache");
}

/* Each payee of each captured usage is one revenue entry; per holder they add up to what the
 * shares say it received, per usage to what was captured, and a user's history is a consistent
 * sequence of balances. Holds for legacy (one transfer per payee) and split payouts alike. */
static void check_payout_views(bf_ledger_t *L, int64_t task, const int64_t *users, size_t nu) {
    bf_err_t err;
    bf_ledger_revenue_t *rv = NULL;
    bf_ledger_usage_t *us = NULL;
    bf_ledger_share_t *sh = NULL;
    size_t nrv = 0, nus = 0, nsh = 0;
    bf_ledger_task_t info;
    CHECK(bf_ledger_task_get(L, task, &info, &err) == 0);
    CHECK(bf_ledger_revenues(L, task, 0, &rv, &nrv, &err) == 0);
    CHECK(bf_ledger_usage(L, task, &us, &nus, &err) == 0);
    CHECK(bf_ledger_task_shares(L, task, &sh, &nsh, &err) == 0);
    int64_t total = 0;
    for (size_t i = 0; i < nrv; i++) total += rv[i].amount;
    CHECK_MSG(total == info.total_revenue, "revenues %lld, task revenue %lld", (long long)total,
              (long long)info.total_revenue);
    for (size_t k = 0; k < nus; k++) {
        int64_t sum = 0;
        for (size_t i = 0; i < nrv; i++)
            if (rv[i].usage_id == us[k].hold_id) sum += rv[i].amount;
        CHECK(sum == (us[k].status == BF_LEDGER_HOLD_CAPTURED ? us[k].captured : 0));
    }
    for (size_t k = 0; k < nsh; k++) {
        int64_t sum = 0;
        for (size_t i = 0; i < nrv; i++)
            if (rv[i].user_id == sh[k].user_id) sum += rv[i].amount;
        CHECK_MSG(sum == sh[k].received, "user %lld: revenues %lld, received %lld", (long long)sh[k].user_id,
                  (long long)sum, (long long)sh[k].received);
        bf_ledger_revenue_t *mine = NULL;
        size_t nm = 0;
        CHECK(bf_ledger_revenues(L, 0, sh[k].user_id, &mine, &nm, &err) == 0);
        int64_t s2 = 0;
        for (size_t i = 0; i < nm; i++) s2 += mine[i].amount;
        CHECK(s2 == sum);
        free(mine);
    }
    for (size_t u = 0; u < nu; u++) {
        bf_ledger_entry_t *e = NULL;
        size_t n = 0;
        CHECK(bf_ledger_history(L, users[u], &e, &n, &err) == 0);
        int64_t cash = 0, coin = 0;
        for (size_t i = 0; i < n; i++) {
            int64_t *bal = e[i].currency == BF_LEDGER_CNY ? &cash : &coin;
            /* Holds and their releases leave the posted balance alone. */
            int posts = !strcmp(e[i].type, "posted") || !strcmp(e[i].type, "post");
            CHECK_MSG(e[i].balance_before == *bal && e[i].balance_after - e[i].balance_before == (posts ? e[i].amount : 0),
                      "user %lld transfer %lld: %lld -> %lld by %lld", (long long)users[u], (long long)e[i].transfer_id,
                      (long long)e[i].balance_before, (long long)e[i].balance_after, (long long)e[i].amount);
            *bal = e[i].balance_after;
        }
        CHECK(cash == tl_cash(L, users[u], 0) && coin == tl_coins(L, users[u]));
        free(e);
    }
    free(rv);
    free(us);
    free(sh);
}

/* A ledger written before schema 3 (payouts as one transfer per payee) migrates, verifies, and
 * keeps working with split payouts appended after its legacy ones. */
static void test_v2_migration(void) {
    char path[1024];
    tl_db_path(path, sizeof path, "ledger-v2");
    sqlite3 *db;
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    char *msg = NULL;
    CHECK_MSG(sqlite3_exec(db, ledger_v2_fixture_sql, NULL, NULL, &msg) == SQLITE_OK, "%s", msg ? msg : "?");
    CHECK(sqlite3_exec(db, "PRAGMA user_version = 2", NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_free(msg);
    sqlite3_close(db);
    bf_err_t err;
    bf_ledger_t *L = bf_ledger_open(path, &err);
    CHECK_MSG(L != NULL, "%s", err.msg);
    if (!L) return;
    CHECK(bf_ledger_schema_version(L) == 5);
    tl_verify_ok(L, "migrated v2");
    int64_t users[5];
    const char *names[5] = {"boss", "alice", "bob", "carol", "payer"};
    for (int i = 0; i < 5; i++) CHECK(bf_ledger_user_find(L, names[i], &users[i], &err) == 0);
    int64_t task = 1, hold = 0;
    bf_ledger_revenue_t *rv = NULL;
    size_t n = 0;
    CHECK(bf_ledger_revenues(L, task, 0, &rv, &n, &err) == 0 && n >= 5);
    int64_t legacy = n;
    free(rv);
    check_payout_views(L, task, users, 5);
    /* New captures: one split transfer each, on top of the legacy rows. */
    CHECK(bf_ledger_fee_charge(L, "v3-1", task, users[4], 57, &hold, &err) == 0);
    CHECK(bf_ledger_group_begin(L, &err) == 0);
    for (int i = 0; i < 20; i++) {
        char op[32];
        snprintf(op, sizeof op, "v3-g%d", i);
        CHECK(bf_ledger_fee_charge(L, op, task, users[4], 1 + i, &hold, &err) == 0);
    }
    CHECK(bf_ledger_group_commit(L, &err) == 0);
    CHECK(bf_ledger_revenues(L, task, 0, &rv, &n, &err) == 0 && (int64_t)n > legacy);
    /* The legs of one capture share its transfer id. */
    int shared = 0;
    for (size_t i = legacy + 1; i < n; i++) shared |= rv[i].transfer_id == rv[i - 1].transfer_id;
    CHECK(shared);
    free(rv);
    check_payout_views(L, task, users, 5);
    tl_verify_ok(L, "v2 + split payouts");
    bf_ledger_close(&L);
    tl_remove_db(path);
}

/* Runs one SQL statement on the file behind the ledger's back. */
static void raw_sql(const char *path, const char *sql) {
    sqlite3 *db;
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    CHECK_MSG(rc == SQLITE_OK, "%s: %s", sql, msg ? msg : "?");
    sqlite3_free(msg);
    sqlite3_close(db);
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

/* Rewrites the first split row with at least two legs (mutate edits its legs in place) and then
 * recomputes the whole hash chain, as an operator holding the file could: the chain check passes,
 * and the replay of the legs must still catch the lie. */
typedef void (*legs_fn)(unsigned char *legs);
static void forge_split(const char *copy, legs_fn mutate) {
    bf_err_t err;
    bf_ledger_t *L = bf_ledger_open(copy, &err);
    CHECK_MSG(L != NULL, "%s", err.msg);
    if (!L) return;
    sqlite3 *db = L->db;
    CHECK(sqlite3_exec(db, "DROP TRIGGER transfers_no_update", NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_stmt *s;
    CHECK(sqlite3_prepare_v2(db,
                             "SELECT id, legs FROM transfers WHERE length(legs) >= 64"
                             " AND substr(legs, 41, 8) > X'0000000000000001' ORDER BY id LIMIT 1",
                             -1, &s, NULL) == SQLITE_OK);
    unsigned char legs[4096];
    int64_t id = 0;
    int len = 0;
    if (sqlite3_step(s) == SQLITE_ROW && (len = sqlite3_column_bytes(s, 1)) <= (int)sizeof legs) {
        id = sqlite3_column_int64(s, 0);
        memcpy(legs, sqlite3_column_blob(s, 1), (size_t)len);
    }
    sqlite3_finalize(s);
    CHECK_MSG(id > 0, "no split row to forge");
    mutate(legs);
    CHECK(sqlite3_prepare_v2(db, "UPDATE transfers SET legs = ?2 WHERE id = ?1", -1, &s, NULL) == SQLITE_OK);
    sqlite3_bind_int64(s, 1, id);
    sqlite3_bind_blob(s, 2, legs, len, SQLITE_STATIC);
    CHECK(sqlite3_step(s) == SQLITE_DONE);
    sqlite3_finalize(s);
    /* Re-chain every row from genesis. */
    sqlite3_stmt *up;
    CHECK(sqlite3_prepare_v2(db,
                             "SELECT t.id, t.type, t.code, t.currency, t.debit_account, t.credit_account, t.amount,"
                             " coalesce(t.pending_id, 0), t.expires_at, t.created_at, t.debit_before, t.debit_after,"
                             " t.credit_before, t.credit_after, t.debit_prev, t.credit_prev, o.op_key, t.legs"
                             " FROM transfers t JOIN ops o ON o.id = t.op ORDER BY t.id",
                             -1, &s, NULL) == SQLITE_OK);
    CHECK(sqlite3_prepare_v2(db, "UPDATE transfers SET hash = ?2 WHERE id = ?1", -1, &up, NULL) == SQLITE_OK);
    CHECK(sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) == SQLITE_OK);
    unsigned char prev[32] = {0}, h[32];
    while (sqlite3_step(s) == SQLITE_ROW) {
        ledger_row_t r = {0};
        int64_t *f[16] = {&r.id, &r.type, &r.code, &r.currency, &r.debit, &r.credit, &r.amount, &r.pending_id,
                          &r.expires_at, &r.created_at, &r.debit_before, &r.debit_after, &r.credit_before,
                          &r.credit_after, &r.debit_prev, &r.credit_prev};
        for (int i = 0; i < 16; i++) *f[i] = sqlite3_column_int64(s, i);
        r.legs = sqlite3_column_blob(s, 17);
        r.legs_len = (size_t)sqlite3_column_bytes(s, 17);
        ledger_row_hash(L, prev, &r, (const char *)sqlite3_column_text(s, 16), h);
        sqlite3_bind_int64(up, 1, r.id);
        sqlite3_bind_blob(up, 2, h, 32, SQLITE_STATIC);
        CHECK(sqlite3_step(up) == SQLITE_DONE);
        sqlite3_reset(up);
        memcpy(prev, h, 32);
    }
    CHECK(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_finalize(s);
    sqlite3_finalize(up);
    bf_ledger_close(&L);
}

static void leg_add(unsigned char *legs, size_t leg, int field, int64_t delta) {
    unsigned char *p = legs + leg * LEDGER_LEG_BYTES + 8 * (size_t)field;
    ledger_put_be64(p, ledger_get_be64(p) + delta);
}
static void forge_more(unsigned char *l) { leg_add(l, 0, 1, 1); }                      /* legs > debit */
static void forge_shift(unsigned char *l) { leg_add(l, 0, 1, 1), leg_add(l, 1, 1, -1); } /* same sum */
static void forge_before(unsigned char *l) { leg_add(l, 1, 2, 5); }
static void forge_link(unsigned char *l) { leg_add(l, 0, 3, -1); }
static void forge_twice(unsigned char *l) { memcpy(l + LEDGER_LEG_BYTES, l, 8); } /* leg 1 pays leg 0's account */

static void test_forged_splits(const char *path) {
    char copy[1024];
    if (snprintf(copy, sizeof copy, "%s.forged", path) >= (int)sizeof copy) return;
    struct {
        legs_fn fn;
        int check;
        const char *what;
    } cases[] = {
        {forge_more, BF_LEDGER_CHECK_DOUBLE_ENTRY, "legs credit more than the debit"},
        {forge_shift, BF_LEDGER_CHECK_BALANCES, "a cent moved between two legs (cached balances)"},
        {forge_shift, BF_LEDGER_CHECK_PAYOUTS, "a cent moved between two legs (holder payouts)"},
        {forge_before, BF_LEDGER_CHECK_BALANCES, "a leg's balance before"},
        {forge_link, BF_LEDGER_CHECK_BALANCES, "a leg's history link"},
        {forge_twice, BF_LEDGER_CHECK_BALANCES, "one account credited by two legs"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tl_remove_db(copy);
        char sql[1300];
        snprintf(sql, sizeof sql, "VACUUM INTO '%s'", copy);
        raw_sql(path, sql);
        forge_split(copy, cases[i].fn);
        bf_err_t err;
        bf_ledger_t *L = bf_ledger_open(copy, &err);
        bf_ledger_report_t rep;
        if (L && bf_ledger_verify(L, &rep, &err) == 0) {
            CHECK_MSG(rep.checks[BF_LEDGER_CHECK_CHAIN].ok, "forging '%s': the re-chained chain should verify (%s)",
                      cases[i].what, rep.checks[BF_LEDGER_CHECK_CHAIN].detail);
            CHECK_MSG(!rep.ok && !rep.checks[cases[i].check].ok, "forged split not detected: %s", cases[i].what);
        } else {
            CHECK_MSG(0, "verify could not run: %s", err.msg);
        }
        bf_ledger_close(&L);
    }
    tl_remove_db(copy);
}

static void test_tamper(const char *path) {
    char copy[1024];
    if (snprintf(copy, sizeof copy, "%s.tamper", path) >= (int)sizeof copy) return;
    struct {
        const char *sql;
        int check;
    } cases[] = {
        {"DROP TRIGGER transfers_no_update; UPDATE transfers SET amount = amount + 1 WHERE id = 3", BF_LEDGER_CHECK_CHAIN},
        {"DROP TRIGGER transfers_no_delete; DELETE FROM transfers WHERE id = 2", BF_LEDGER_CHECK_CHAIN},
        {"UPDATE accounts SET credits_posted = credits_posted + 1 WHERE id = 6", BF_LEDGER_CHECK_BALANCES},
        {"UPDATE accounts SET credits_posted = credits_posted + 1 WHERE id = 6", BF_LEDGER_CHECK_DOUBLE_ENTRY},
        {"UPDATE model_shareholdings SET ppm = ppm + 1 WHERE (task_id, cash_account) ="
         " (SELECT task_id, cash_account FROM model_shareholdings LIMIT 1)", BF_LEDGER_CHECK_SHARES},
        {"UPDATE tasks SET payout_state = NULL WHERE payout_state IS NOT NULL", BF_LEDGER_CHECK_PAYOUTS},
        {"UPDATE tasks SET platform_paid = platform_paid + 1 WHERE platform_paid > 0", BF_LEDGER_CHECK_PAYOUTS},
        {"UPDATE accounts SET last_transfer = last_transfer + 1 WHERE id = 6", BF_LEDGER_CHECK_BALANCES},
        {"UPDATE tasks SET status = 2 WHERE payment_mode = 1 AND status = 3", BF_LEDGER_CHECK_ESCROW},
        {"UPDATE model_usage SET status = 1 WHERE status = 3", BF_LEDGER_CHECK_HOLDS},
        {"UPDATE reward_distributions SET amount = amount + 1 WHERE rowid = 1", BF_LEDGER_CHECK_REWARDS},
        /* Split payout rows: the legs are hashed with the row. */
        {"DROP TRIGGER transfers_no_update; UPDATE transfers SET legs = NULL"
         " WHERE id = (SELECT min(id) FROM transfers WHERE legs IS NOT NULL)", BF_LEDGER_CHECK_CHAIN},
        {"DROP TRIGGER transfers_no_update; UPDATE transfers SET legs = zeroblob(length(legs))"
         " WHERE id = (SELECT max(id) FROM transfers WHERE legs IS NOT NULL)", BF_LEDGER_CHECK_CHAIN},
        {"DROP TRIGGER transfers_no_update; UPDATE transfers SET amount = amount + 1"
         " WHERE id = (SELECT max(id) FROM transfers WHERE legs IS NOT NULL)", BF_LEDGER_CHECK_CHAIN},
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

int main(void) {
    test_parse();
    test_split();
    test_apportion();

    char path[1024];
    tl_db_path(path, sizeof path, "ledger-unit");
    bf_err_t err;
    bf_ledger_t *L = bf_ledger_open(path, &err);
    CHECK_MSG(L != NULL, "%s", err.msg);
    if (!L) return bf_test_done("test_ledger");
    /* The API-level tests run on either backend (BF_TEST_PG_URL_FILE: PostgreSQL, whose schema
     * counts its own versions); what follows them edits the SQLite file directly. */
    char base[512];
    int pg = tl_pg_base(base, sizeof base);
    CHECK(bf_ledger_schema_version(L) == (pg ? 4 : 5));
    tl_clock_t clk = {1700000000};
    bf_ledger_set_clock(L, tl_clock_now, &clk);
    tl_verify_ok(L, "empty");

    test_users(L, &clk);
    test_cash_and_coins(L);
    test_failed_id_stays_failed(L);
    test_reward_task(L);
    test_holds(L, &clk);
    test_platform_fee(L);
    test_group(L);
    test_group_cache(L);
    tl_verify_ok(L, "after unit ops");
    bf_ledger_close(&L);
    CHECK(L == NULL);
    bf_ledger_close(&L); /* NULL-safe */

    /* Reopening migrates nothing and keeps every invariant. */
    L = bf_ledger_open(path, &err);
    CHECK(L && bf_ledger_schema_version(L) == (pg ? 4 : 5));
    if (L) tl_verify_ok(L, "reopened");
    bf_ledger_close(&L);
    if (pg) {
        /* The newer-schema refusal, tampering, forged splits and the schema-2 file are SQLite file
         * surgery; test_ledger_postgres does their PostgreSQL counterparts. */
        printf("test_ledger on PostgreSQL: the API-level tests ran; file-level ones are SQLite's\n");
        tl_remove_db(path);
        return bf_test_done("test_ledger");
    }

    /* A database from a newer program is refused, not silently used. */
    char newer[1024];
    if (snprintf(newer, sizeof newer, "%s.newer", path) >= (int)sizeof newer) return 1;
    tl_remove_db(newer);
    char sql[1300];
    snprintf(sql, sizeof sql, "VACUUM INTO '%s'", newer);
    raw_sql(path, sql);
    raw_sql(newer, "PRAGMA user_version = 99");
    L = bf_ledger_open(newer, &err);
    CHECK(L == NULL && strstr(err.msg, "newer"));
    bf_ledger_close(&L);
    tl_remove_db(newer);

    test_tamper(path);
    test_forged_splits(path);
    tl_remove_db(path);
    test_v2_migration();
    return bf_test_done("test_ledger");
}

/* test_ledger_predict.c: the ledger side of paid predictions: the price formula, settling
 * a hold together with its usage record, and fee conservation over many random predictions with
 * random prices, image counts, failed images and shareholder sets.
 *
 * Usage: test_ledger_predict [PREDICTIONS] [SEED] (default 10000 1). */
#include <stdlib.h>

#include "test_ledger_common.h"

/* The price must be the exact ceiling: p*den >= (base+fee*k)*num > (p-1)*den. Checked in 128-bit
 * arithmetic independently of how bf_money_price computes it. */
static int price_is_ceiling(int64_t base, int64_t fee, int64_t k, int64_t num, int64_t den, int64_t p) {
    if (k == 0) return p == 0;
    __int128 exact = ((__int128)fee * k + base) * num;
    return (__int128)p * den >= exact && (__int128)(p - 1) * den < exact;
}

static void test_price(void) {
    bf_err_t err;
    int64_t p = -1;
    CHECK(bf_money_price(0, 10, 3, 1, 1, &p, &err) == 0 && p == 30);
    CHECK(bf_money_price(5, 10, 3, 3, 2, &p, &err) == 0 && p == 53); /* 52.5 rounds up once */
    CHECK(bf_money_price(1, 1, 1, 1, 3, &p, &err) == 0 && p == 1);   /* 2/3 -> 1 */
    CHECK(bf_money_price(100, 10, 0, 1, 1, &p, &err) == 0 && p == 0); /* nothing delivered */
    CHECK(bf_money_price(100, 10, 4, 0, 1, &p, &err) == 0 && p == 0); /* a free model */
    CHECK(bf_money_price(0, 1, 1, 1, 0, &p, &err) == -1);
    CHECK(bf_money_price(-1, 1, 1, 1, 1, &p, &err) == -1);
    CHECK(bf_money_price(0, -1, 1, 1, 1, &p, &err) == -1);
    CHECK(bf_money_price(0, 1, -1, 1, 1, &p, &err) == -1);
    CHECK(bf_money_price(0, 1, 1, -1, 1, &p, &err) == -1);
    CHECK(bf_money_price(0, INT64_MAX, 2, 1, 1, &p, &err) == -1 && strstr(err.msg, "overflow"));
    CHECK(bf_money_price(0, INT64_MAX, 2, 1, 2, &p, &err) == 0 && p == INT64_MAX);
    CHECK(bf_money_price(INT64_MAX, INT64_MAX, INT64_MAX, INT64_MAX, 1, &p, &err) == -1);
    /* Random inputs: exact ceiling, and monotone in the image count (a hold covers a capture). */
    bf_rng_t r;
    bf_rng_seed(&r, 5);
    for (int i = 0; i < 100000; i++) {
        int64_t base = bf_rng_below(&r, 1000), fee = bf_rng_below(&r, 100000), k = bf_rng_below(&r, 65);
        int64_t num = 1 + bf_rng_below(&r, 1000), den = 1 + bf_rng_below(&r, 1000), p1, p2;
        if (bf_money_price(base, fee, k, num, den, &p1, &err) ||
            bf_money_price(base, fee, k + 1, num, den, &p2, &err)) {
            CHECK_MSG(0, "price failed: %s", err.msg);
            break;
        }
        if (!price_is_ceiling(base, fee, k, num, den, p1) || p2 < p1) {
            CHECK_MSG(0, "price(%lld,%lld,%lld,%lld/%lld) = %lld", (long long)base, (long long)fee, (long long)k,
                      (long long)num, (long long)den, (long long)p1);
            break;
        }
    }
}

static void test_rate(void) {
    struct {
        const char *s;
        int64_t num, den; /* den 0: must be refused */
    } cases[] = {{"3/2", 3, 2},     {"1.5", 3, 2},      {"6/4", 3, 2},      {"2", 2, 1},         {"0", 0, 1},
                 {"0/7", 0, 1},     {"0.000001", 1, 1000000}, {"1000", 1000, 1}, {"999.999999", 999999999, 1000000},
                 {"1000.000001", 0, 0}, {"2001/2", 0, 0}, {"3/0", 0, 0},   {"/2", 0, 0},        {"3/", 0, 0},
                 {"-1", 0, 0},      {"1e3", 0, 0},      {"abc", 0, 0},      {"", 0, 0},          {"1.0000001", 0, 0},
                 {"1/2/3", 0, 0},   {"99999999999999999999/1", 0, 0}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int64_t n = -1, d = -1;
        bf_err_t err;
        int rc = bf_money_parse_rate(cases[i].s, &n, &d, &err);
        if (cases[i].den)
            CHECK_MSG(rc == 0 && n == cases[i].num && d == cases[i].den, "rate '%s' -> rc %d, %lld/%lld", cases[i].s, rc,
                      (long long)n, (long long)d);
        else
            CHECK_MSG(rc == -1, "rate '%s' accepted as %lld/%lld", cases[i].s, (long long)n, (long long)d);
    }
}


static void test_settle(bf_ledger_t *L) {
    bf_err_t err;
    int64_t boss = tl_user(L, "s-boss", 1), a = tl_user(L, "s-a", 2), b = tl_user(L, "s-b", 3),
            payer = tl_user(L, "s-payer", 4);
    int64_t holders[2] = {a, b}, w[2] = {3, 1};
    int64_t t = tl_share_task(L, "settle", boss, 2, holders, w);
    CHECK(bf_ledger_recharge(L, "s-r", payer, 1000, &err) == 0);

    /* Capture 3 of 4 images' price; the record is kept with the usage row. */
    int64_t hold = 0, images = -1, classified = -1;
    CHECK(bf_ledger_fee_hold(L, "s-h1", t, payer, 400, 60, &hold, &err) == 0);
    const char rec[] = "\x93\x01\x02\x03";
    bf_ledger_usage_note_t note = {4, 3, rec, 4};
    CHECK_MSG(bf_ledger_fee_settle(L, "s-s1", hold, 300, &note, &err) == 0, "%s", err.msg);
    CHECK(tl_cash(L, payer, 0) == 700 && tl_cash(L, payer, 1) == 0);
    CHECK(tl_cash(L, a, 0) == 225 && tl_cash(L, b, 0) == 75);
    void *got = NULL;
    size_t len = 0;
    CHECK(bf_ledger_usage_note(L, hold, &images, &classified, &got, &len, &err) == 0);
    CHECK(images == 4 && classified == 3 && len == 4 && got && !memcmp(got, rec, 4));
    free(got);
    /* Replay: same outcome, nothing moves; a different record under the same id is a conflict. */
    CHECK(bf_ledger_fee_settle(L, "s-s1", hold, 300, &note, &err) == 0 && tl_cash(L, payer, 0) == 700);
    bf_ledger_usage_note_t other = {4, 3, "\x93\x01\x02\x04", 4};
    CHECK(bf_ledger_fee_settle(L, "s-s1", hold, 300, &other, &err) == BF_LEDGER_ECONFLICT);
    CHECK(bf_ledger_fee_settle(L, "s-s1b", hold, 300, &note, &err) == BF_LEDGER_EPOSTED);

    /* Nothing classified: the hold is voided, the record still written. */
    CHECK(bf_ledger_fee_hold(L, "s-h2", t, payer, 100, 60, &hold, &err) == 0);
    bf_ledger_usage_note_t none = {1, 0, NULL, 0};
    CHECK(bf_ledger_fee_settle(L, "s-s2", hold, 0, &none, &err) == 0);
    bf_ledger_usage_t us;
    CHECK(bf_ledger_hold_get(L, hold, &us, &err) == 0 && us.status == BF_LEDGER_HOLD_VOIDED);
    CHECK(bf_ledger_usage_note(L, hold, &images, &classified, &got, &len, &err) == 0 && images == 1 &&
          classified == 0 && got == NULL && len == 0);
    CHECK(tl_cash(L, payer, 0) == 700 && tl_cash(L, payer, 2) == 700);

    /* Invalid notes and amounts change nothing. */
    CHECK(bf_ledger_fee_hold(L, "s-h3", t, payer, 100, 60, &hold, &err) == 0);
    bf_ledger_usage_note_t bad = {1, 2, NULL, 0};
    CHECK(bf_ledger_fee_settle(L, "s-bad1", hold, 10, &bad, &err) == BF_LEDGER_EINVAL);
    CHECK(bf_ledger_fee_settle(L, "s-bad2", hold, 10, NULL, &err) == BF_LEDGER_EINVAL);
    CHECK(bf_ledger_fee_settle(L, "s-bad3", hold, -1, &none, &err) == BF_LEDGER_EINVAL);
    CHECK(bf_ledger_fee_settle(L, "s-bad4", hold, 101, &note, &err) == BF_LEDGER_EEXCEEDS_HOLD);
    CHECK(bf_ledger_usage_note(L, 999999, &images, NULL, NULL, NULL, &err) == BF_LEDGER_ENOTFOUND);
    CHECK(tl_cash(L, payer, 1) == 100 && tl_cash(L, payer, 0) == 700);
    CHECK(bf_ledger_fee_settle(L, "s-s3", hold, 100, &note, &err) == 0 && tl_cash(L, payer, 0) == 600);
    tl_verify_ok(L, "settle");
}

/* ---- conservation over many random predictions ---------------------------------------------- */

#define N_TASKS 6
#define MAX_HOLDERS 12
#define N_PAYERS 8

typedef struct {
    int64_t id, n, holders[MAX_HOLDERS], fee_ppm;
    int64_t base, per_image, num, den;
} sim_task_t;

/* Every holder of t is within one cent of total*ppm*(1e6-fee)/1e12, and the payouts sum to the
 * task's revenue: checked from the ledger's own records, at this point. */
static int holders_within_a_cent(bf_ledger_t *L, const sim_task_t *t, int64_t *received_sum) {
    bf_err_t err;
    bf_ledger_task_t info;
    bf_ledger_share_t *sh = NULL;
    size_t n = 0;
    if (bf_ledger_task_get(L, t->id, &info, &err) || bf_ledger_task_shares(L, t->id, &sh, &n, &err)) return 0;
    int ok = 1;
    *received_sum = 0;
    for (size_t i = 0; i < n; i++) {
        __int128 exact = (__int128)info.total_revenue * sh[i].ppm * (BF_LEDGER_PPM - info.platform_fee_ppm);
        __int128 got = (__int128)sh[i].received * BF_LEDGER_PPM * BF_LEDGER_PPM;
        __int128 d = got - exact;
        if (d <= -(__int128)BF_LEDGER_PPM * BF_LEDGER_PPM || d >= (__int128)BF_LEDGER_PPM * BF_LEDGER_PPM) ok = 0;
        *received_sum += sh[i].received;
    }
    free(sh);
    return ok;
}

static void test_conservation(const char *dir_path, long predictions, uint64_t seed) {
    char path[1100];
    (void)dir_path;
    tl_db_path(path, sizeof path, "ledger-conservation");
    bf_err_t err;
    bf_ledger_t *L = bf_ledger_open(path, &err);
    CHECK_MSG(L != NULL, "%s", err.msg);
    if (!L) return;
    bf_rng_t r;
    bf_rng_seed(&r, seed);
    int64_t boss = tl_user(L, "boss", 100);
    int64_t payers[N_PAYERS], funded[N_PAYERS];
    for (int i = 0; i < N_PAYERS; i++) {
        char name[32], op[48];
        snprintf(name, sizeof name, "payer%d", i);
        payers[i] = tl_user(L, name, 200 + i);
        funded[i] = 5000000 + bf_rng_below(&r, 5000000);
        snprintf(op, sizeof op, "fund-%d", i);
        CHECK(bf_ledger_recharge(L, op, payers[i], funded[i], &err) == 0);
    }
    /* Random shareholder sets (a user may hold shares of several tasks, or pay and hold), random
     * weights, platform cuts and price parameters. */
    sim_task_t tasks[N_TASKS];
    int64_t next_key = 300;
    for (int k = 0; k < N_TASKS; k++) {
        sim_task_t *t = &tasks[k];
        t->n = 1 + bf_rng_below(&r, MAX_HOLDERS);
        int64_t w[MAX_HOLDERS];
        for (int i = 0; i < t->n; i++) {
            char name[32];
            snprintf(name, sizeof name, "h%d-%d", k, i);
            t->holders[i] = (i == 0 && k > 0) ? tasks[k - 1].holders[0]
                            : (i == 1 && k == 2) ? payers[0]
                                                 : tl_user(L, name, (uint64_t)next_key++);
            w[i] = 1 + bf_rng_below(&r, 1000);
        }
        t->fee_ppm = k % 2 ? bf_rng_below(&r, 300000) : 0;
        char op[48], tag[32];
        snprintf(op, sizeof op, "pf-%d", k);
        CHECK(bf_ledger_set_platform_fee(L, op, t->fee_ppm, &err) == 0);
        snprintf(tag, sizeof tag, "task%d", k);
        t->id = tl_share_task(L, tag, boss, (size_t)t->n, t->holders, w);
        t->base = bf_rng_below(&r, 50);
        t->per_image = 1 + bf_rng_below(&r, 200);
        t->num = 1 + bf_rng_below(&r, 7);
        t->den = 1 + bf_rng_below(&r, 5);
    }
    int64_t charged = 0, refused = 0, voided = 0;
    int64_t platform_before = 0;
    bf_ledger_account_t *acc = NULL;
    size_t nacc = 0;
    CHECK(bf_ledger_accounts(L, &acc, &nacc, &err) == 0);
    for (size_t i = 0; i < nacc; i++)
        if (acc[i].kind == BF_LEDGER_ACCT_PLATFORM_REVENUE && acc[i].currency == BF_LEDGER_CNY)
            platform_before = acc[i].balance.posted;
    free(acc);
    long failures = 0;
    for (long i = 0; i < predictions && failures < 5; i++) {
        sim_task_t *t = &tasks[bf_rng_below(&r, N_TASKS)];
        int p = (int)bf_rng_below(&r, N_PAYERS);
        int64_t images = 1 + bf_rng_below(&r, 64), ok_images = images;
        /* Some requests carry images that fail to decode: only the others are charged. */
        if (bf_rng_below(&r, 4) == 0) ok_images = bf_rng_below(&r, (uint32_t)images + 1);
        int64_t maxp, price, hold = 0;
        if (bf_money_price(t->base, t->per_image, images, t->num, t->den, &maxp, &err) ||
            bf_money_price(t->base, t->per_image, ok_images, t->num, t->den, &price, &err)) {
            CHECK_MSG(0, "price: %s", err.msg);
            break;
        }
        char op[64];
        snprintf(op, sizeof op, "p%ld:hold", i);
        int rc = bf_ledger_fee_hold(L, op, t->id, payers[p], maxp, 60, &hold, &err);
        if (rc == BF_LEDGER_EFUNDS) {
            refused++;
            continue;
        }
        if (rc) {
            CHECK_MSG(0, "hold: %s", err.msg);
            failures++;
            continue;
        }
        bf_ledger_usage_note_t note = {images, ok_images, &i, sizeof i};
        snprintf(op, sizeof op, "p%ld:settle", i);
        if ((rc = bf_ledger_fee_settle(L, op, hold, price, &note, &err))) {
            CHECK_MSG(0, "settle: %s", err.msg);
            failures++;
            continue;
        }
        price ? charged++ : voided++;
        /* Check the task just charged at this point, and everything every 500 predictions. */
        int64_t got;
        if (!holders_within_a_cent(L, t, &got)) {
            CHECK_MSG(0, "prediction %ld: a holder of task %lld is a cent or more off its entitlement", i,
                      (long long)t->id);
            failures++;
        }
        if (i % 500 != 499 && i != predictions - 1) continue;
        /* Conservation: what payers lost is exactly what holders and the platform gained. */
        int64_t paid = 0, received = 0, platform = 0;
        for (int k = 0; k < N_PAYERS; k++) paid += funded[k] - tl_cash(L, payers[k], 0);
        for (int k = 0; k < N_TASKS; k++) {
            if (!holders_within_a_cent(L, &tasks[k], &got)) failures++;
            received += got;
        }
        /* Payer 0 also holds shares of task 2: add back what it received. */
        bf_ledger_share_t *sh = NULL;
        size_t nsh = 0;
        CHECK(bf_ledger_user_shares(L, payers[0], &sh, &nsh, &err) == 0);
        for (size_t k = 0; k < nsh; k++) paid += sh[k].received;
        free(sh);
        CHECK(bf_ledger_accounts(L, &acc, &nacc, &err) == 0);
        for (size_t k = 0; k < nacc; k++)
            if (acc[k].kind == BF_LEDGER_ACCT_PLATFORM_REVENUE && acc[k].currency == BF_LEDGER_CNY)
                platform = acc[k].balance.posted - platform_before;
        free(acc);
        if (paid != received + platform) {
            CHECK_MSG(0, "after %ld predictions: payers paid %lld, holders got %lld + platform %lld", i + 1,
                      (long long)paid, (long long)received, (long long)platform);
            failures++;
        }
        for (int k = 0; k < N_PAYERS; k++) CHECK(tl_cash(L, payers[k], 1) == 0); /* no hold left open */
    }
    CHECK(charged > predictions / 2 && voided > 0);
    printf("conservation: %ld predictions, %lld charged, %lld voided (no image classified), %lld refused\n",
           predictions, (long long)charged, (long long)voided, (long long)refused);
    tl_verify_ok(L, "conservation");
    bf_ledger_close(&L);
    tl_remove_db(path);
}

int main(int argc, char **argv) {
    long predictions = argc > 1 ? atol(argv[1]) : 10000;
    uint64_t seed = argc > 2 ? strtoull(argv[2], NULL, 10) : 1;
    test_price();
    test_rate();
    char path[1024];
    tl_db_path(path, sizeof path, "ledger-predict");
    bf_err_t err;
    bf_ledger_t *L = bf_ledger_open(path, &err);
    CHECK_MSG(L != NULL, "%s", err.msg);
    if (L) test_settle(L);
    bf_ledger_close(&L);
    test_conservation(path, predictions, seed);
    tl_remove_db(path);
    return bf_test_done("test_ledger_predict");
}

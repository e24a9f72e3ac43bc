/* ledger_verify.c: replays the whole ledger from the first transfer and checks every invariant the
 * ledger promises. It trusts nothing cached: balances, pending amounts and payouts are recomputed
 * from the hash-chained transfer rows and compared with what the tables claim. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ledger_internal.h"

static const char *const check_names[BF_LEDGER_CHECK_COUNT] = {
    [BF_LEDGER_CHECK_INTEGRITY] = "integrity",   [BF_LEDGER_CHECK_CHAIN] = "chain",
    [BF_LEDGER_CHECK_BALANCES] = "balances",     [BF_LEDGER_CHECK_DOUBLE_ENTRY] = "double_entry",
    [BF_LEDGER_CHECK_ESCROW] = "escrow",         [BF_LEDGER_CHECK_SHARES] = "shares",
    [BF_LEDGER_CHECK_NONNEGATIVE] = "nonnegative", [BF_LEDGER_CHECK_HOLDS] = "holds",
    [BF_LEDGER_CHECK_PAYOUTS] = "payouts",       [BF_LEDGER_CHECK_REWARDS] = "rewards",
    [BF_LEDGER_CHECK_WITHDRAWALS] = "withdrawals",
};

__attribute__((format(printf, 3, 4))) static void fail(bf_ledger_report_t *rep, int check, const char *fmt, ...) {
    bf_ledger_check_result_t *c = &rep->checks[check];
    if (c->failures++ == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->detail, sizeof c->detail, fmt, ap);
        va_end(ap);
    }
    c->ok = 0;
    rep->ok = 0;
}

typedef struct {
    int kind, currency, present;
    int64_t owner;
    int64_t seen; /* id of the last split row that credited it (duplicate legs) */
    int64_t dp, cp, dpend, cpend, last;           /* replayed */
    int64_t c_dp, c_cp, c_dpend, c_cpend, c_last; /* cached */
} vacct_t;

typedef struct {
    int64_t amount, debit, credit; /* of a pending transfer */
    int type;                      /* XF_PENDING for holds, else 0 */
    int code;
    int resolved_by;               /* resolving transfer type, 0 if still pending */
    int64_t captured, resolved_id; /* resolved_id: the resolving transfer */
} vxfer_t;

typedef struct {
    int64_t debit, credit, amount;
} vpay_t;

typedef struct {
    bf_ledger_t *L;
    vpay_t *pay; /* every fee payout transfer, to sum per (clearing, holder) */
    size_t n_pay, cap_pay;
    int oom;
    bf_ledger_report_t *rep;
    vacct_t *acc;
    int64_t n_acc; /* acc is indexed by account id, 0..n_acc-1 */
    vxfer_t *xf;
    int64_t n_xf;
    int64_t wd_holds; /* pending transfers of code withdrawal */
    int64_t wd_rows;  /* withdrawal rows seen */
    unsigned char prev[32]; /* the chain so far: hash of the last row, next id expected */
    int64_t expect;
    int64_t ent_task, ent_slot; /* check_holding: the task of the last row, the holder's slot in it */
} vstate_t;

static int64_t scalar(bf_ledger_t *L, const char *sql) {
    sqlite3_stmt *s;
    int64_t v = -1;
    if (sqlite3_prepare_v2(L->db, sql, -1, &s, NULL) != SQLITE_OK) return -1;
    if (sqlite3_step(s) == SQLITE_ROW) v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return v;
}

static int check_integrity(vstate_t *v, bf_err_t *err) {
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(v->L->db, "PRAGMA integrity_check", -1, &s, NULL) != SQLITE_OK)
        return ledger_sqlerr(v->L, err, "integrity_check");
    while (sqlite3_step(s) == SQLITE_ROW) {
        const unsigned char *t = sqlite3_column_text(s, 0);
        if (!t || strcmp((const char *)t, "ok"))
            fail(v->rep, BF_LEDGER_CHECK_INTEGRITY, "integrity_check: %s", t ? (const char *)t : "?");
    }
    sqlite3_finalize(s);
    if (sqlite3_prepare_v2(v->L->db, "PRAGMA foreign_key_check", -1, &s, NULL) != SQLITE_OK)
        return ledger_sqlerr(v->L, err, "foreign_key_check");
    while (sqlite3_step(s) == SQLITE_ROW)
        fail(v->rep, BF_LEDGER_CHECK_INTEGRITY, "foreign key violation in %s row %lld",
             (const char *)sqlite3_column_text(s, 0), (long long)sqlite3_column_int64(s, 1));
    sqlite3_finalize(s);
    return 0;
}

static int load_accounts(vstate_t *v, bf_err_t *err) {
    int64_t max = scalar(v->L, "SELECT coalesce(max(id), 0) FROM accounts");
    if (max < 0) return ledger_sqlerr(v->L, err, "accounts");
    v->n_acc = max + 1;
    v->acc = calloc((size_t)v->n_acc, sizeof *v->acc);
    if (!v->acc) return bf_err_set(err, "out of memory"), -1;
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(v->L->db,
                           "SELECT id, kind, currency, owner, debits_posted, credits_posted, debits_pending,"
                           " credits_pending, last_transfer FROM accounts",
                           -1, &s, NULL) != SQLITE_OK)
        return ledger_sqlerr(v->L, err, "accounts");
    while (sqlite3_step(s) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(s, 0);
        if (id <= 0 || id >= v->n_acc) continue;
        vacct_t *a = &v->acc[id];
        a->present = 1;
        a->kind = sqlite3_column_int(s, 1);
        a->currency = sqlite3_column_int(s, 2);
        a->owner = sqlite3_column_int64(s, 3);
        a->c_dp = sqlite3_column_int64(s, 4);
        a->c_cp = sqlite3_column_int64(s, 5);
        a->c_dpend = sqlite3_column_int64(s, 6);
        a->c_cpend = sqlite3_column_int64(s, 7);
        a->c_last = sqlite3_column_int64(s, 8);
        v->rep->accounts++;
    }
    sqlite3_finalize(s);
    return 0;
}

static vacct_t *acct(vstate_t *v, int64_t id) {
    return id > 0 && id < v->n_acc && v->acc[id].present ? &v->acc[id] : NULL;
}

static void add_payout(vstate_t *v, int64_t debit, int64_t credit, int64_t amount) {
    if (v->n_pay == v->cap_pay) {
        size_t cap = v->cap_pay ? v->cap_pay * 2 : 1024;
        vpay_t *g = realloc(v->pay, cap * sizeof *g);
        if (!g) v->oom = 1;
        else {
            v->pay = g;
            v->cap_pay = cap;
        }
    }
    if (v->n_pay < v->cap_pay) v->pay[v->n_pay++] = (vpay_t){debit, credit, amount};
}

/* A split row: one posted fee payout debiting the clearing account by `amount` and crediting each
 * leg. Double entry within the row: the legs must sum to the amount. Every leg is checked like the
 * credit side of an ordinary transfer (account, currency, balance before, history link). */
static void replay_split(vstate_t *v, const ledger_row_t *r) {
    bf_ledger_report_t *rep = v->rep;
    vacct_t *d = acct(v, r->debit);
    size_t n = r->legs_len / LEDGER_LEG_BYTES;
    if (!d || n == 0 || d->currency != r->currency || r->legs_len % LEDGER_LEG_BYTES || r->type != XF_POSTED ||
        r->code != CODE_FEE_PAYOUT || r->credit != r->debit || r->credit_before || r->credit_after ||
        r->credit_prev || r->pending_id || r->expires_at) {
        fail(rep, BF_LEDGER_CHECK_BALANCES, "transfer %lld: malformed split", (long long)r->id);
        return;
    }
    if (r->debit_prev != d->last)
        fail(rep, BF_LEDGER_CHECK_BALANCES, "transfer %lld: broken per-account history link", (long long)r->id);
    if (r->debit_before != d->cp - d->dp)
        fail(rep, BF_LEDGER_CHECK_BALANCES, "transfer %lld: recorded balance before differs from replay",
             (long long)r->id);
    d->last = r->id;
    int64_t sum = 0;
    int ovf = 0;
    for (size_t i = 0; i < n; i++) {
        ledger_leg_t g;
        ledger_leg_get(r->legs, i, &g);
        vacct_t *c = acct(v, g.account);
        if (!c || c == d || c->currency != r->currency || g.amount <= 0 || c->seen == r->id) {
            fail(rep, BF_LEDGER_CHECK_BALANCES, "transfer %lld leg %zu: bad account, currency or amount",
                 (long long)r->id, i);
            continue;
        }
        c->seen = r->id;
        if (g.prev != c->last)
            fail(rep, BF_LEDGER_CHECK_BALANCES, "transfer %lld leg %zu: broken per-account history link",
                 (long long)r->id, i);
        if (g.before != c->cp - c->dp)
            fail(rep, BF_LEDGER_CHECK_BALANCES, "transfer %lld leg %zu: recorded balance before differs from replay",
                 (long long)r->id, i);
        c->last = r->id;
        ovf |= __builtin_add_overflow(sum, g.amount, &sum) | __builtin_add_overflow(c->cp, g.amount, &c->cp);
        add_payout(v, r->debit, g.account, g.amount);
    }
    if (sum != r->amount)
        fail(rep, BF_LEDGER_CHECK_DOUBLE_ENTRY, "transfer %lld: legs credit %lld, the debit is %lld", (long long)r->id,
             (long long)sum, (long long)r->amount);
    ovf |= __builtin_add_overflow(d->dp, r->amount, &d->dp);
    if (ovf) fail(rep, BF_LEDGER_CHECK_BALANCES, "transfer %lld overflows a counter", (long long)r->id);
    if (r->debit_after != d->cp - d->dp)
        fail(rep, BF_LEDGER_CHECK_BALANCES, "transfer %lld: recorded balance after differs from replay",
             (long long)r->id);
    if (ledger_acct_restricted(d->kind) && d->cp - d->dp - d->dpend < 0)
        fail(rep, BF_LEDGER_CHECK_NONNEGATIVE, "account %lld went below zero at transfer %lld",
             (long long)r->debit, (long long)r->id);
}

/* Applies one transfer row to the replayed counters, checking it against its own claims. */
static void replay_one(vstate_t *v, const ledger_row_t *r) {
    bf_ledger_report_t *rep = v->rep;
    if (r->legs) {
        replay_split(v, r);
        return;
    }
    vacct_t *d = acct(v, r->debit), *c = acct(v, r->credit);
    if (!d || !c || d == c || d->currency != r->currency || c->currency != r->currency) {
        fail(rep, BF_LEDGER_CHECK_BALANCES, "transfer %lld: bad accounts or currency", (long long)r->id);
        return;
    }
    if (r->debit_prev != d->last || r->credit_prev != c->last)
        fail(rep, BF_LEDGER_CHECK_BALANCES, "transfer %lld: broken per-account history link", (long long)r->id);
    d->last = c->last = r->id;
    if (r->code == CODE_FEE_PAYOUT && r->type == XF_POSTED) add_payout(v, r->debit, r->credit, r->amount);
    if (r->debit_before != d->cp - d->dp || r->credit_before != c->cp - c->dp)
        fail(rep, BF_LEDGER_CHECK_BALANCES, "transfer %lld: recorded balance before differs from replay",
             (long long)r->id);
    int64_t a = r->amount, p = 0;
    int ovf = 0;
    vxfer_t *pend = NULL;
    if (r->type == XF_POST || r->type == XF_VOID || r->type == XF_EXPIRE) {
        pend = r->pending_id > 0 && r->pending_id < r->id ? &v->xf[r->pending_id] : NULL;
        if (!pend || pend->type != XF_PENDING || pend->debit != r->debit || pend->credit != r->credit) {
            fail(rep, BF_LEDGER_CHECK_HOLDS, "transfer %lld resolves no matching hold", (long long)r->id);
            return;
        }
        if (pend->resolved_by) {
            fail(rep, BF_LEDGER_CHECK_HOLDS, "hold %lld resolved twice (again by %lld)",
                 (long long)r->pending_id, (long long)r->id);
            return;
        }
        p = pend->amount;
        if ((r->type == XF_POST && a > p) || (r->type != XF_POST && a != p))
            fail(rep, BF_LEDGER_CHECK_HOLDS, "transfer %lld moves %lld of a %lld hold", (long long)r->id,
                 (long long)a, (long long)p);
        pend->resolved_by = (int)r->type;
        pend->captured = r->type == XF_POST ? a : 0;
        pend->resolved_id = r->id;
        if (pend->code != r->code)
            fail(rep, BF_LEDGER_CHECK_HOLDS, "transfer %lld resolves a hold of another kind", (long long)r->id);
        d->dpend -= p;
        c->cpend -= p;
    }
    switch (r->type) {
    case XF_POSTED:
        if (r->code == CODE_WITHDRAWAL)
            fail(rep, BF_LEDGER_CHECK_WITHDRAWALS, "transfer %lld: money out without a withdrawal hold", (long long)r->id);
        /* fall through */
    case XF_POST:
        ovf |= __builtin_add_overflow(d->dp, a, &d->dp) | __builtin_add_overflow(c->cp, a, &c->cp);
        break;
    case XF_PENDING:
        ovf |= __builtin_add_overflow(d->dpend, a, &d->dpend) | __builtin_add_overflow(c->cpend, a, &c->cpend);
        v->xf[r->id] = (vxfer_t){.amount = a, .debit = r->debit, .credit = r->credit, .type = XF_PENDING,
                                 .code = (int)r->code};
        v->wd_holds += r->code == CODE_WITHDRAWAL;
        break;
    case XF_VOID:
    case XF_EXPIRE: break;
    default: fail(rep, BF_LEDGER_CHECK_BALANCES, "transfer %lld has unknown type", (long long)r->id);
    }
    if (ovf) fail(rep, BF_LEDGER_CHECK_BALANCES, "transfer %lld overflows a counter", (long long)r->id);
    if (r->debit_after != d->cp - d->dp || r->credit_after != c->cp - c->dp)
        fail(rep, BF_LEDGER_CHECK_BALANCES, "transfer %lld: recorded balance after differs from replay",
             (long long)r->id);
    /* Checked after every transfer, not only at the end: a user account may never have dipped. */
    if (ledger_acct_restricted(d->kind) && d->cp - d->dp - d->dpend < 0)
        fail(rep, BF_LEDGER_CHECK_NONNEGATIVE, "account %lld went below zero at transfer %lld",
             (long long)r->debit, (long long)r->id);
}

/* One transfer row in id order: the chain (gapless ids, each hash over the previous one), then
 * the replay. stored is the row's stored hash (NULL if it is not 32 bytes). */
static void replay_row(vstate_t *v, const ledger_row_t *r, const char *key, const unsigned char *stored) {
    unsigned char h[32];
    v->rep->transfers++;
    if (r->id != v->expect)
        fail(v->rep, BF_LEDGER_CHECK_CHAIN, "transfer ids jump from %lld to %lld", (long long)v->expect - 1,
             (long long)r->id);
    v->expect = r->id + 1;
    if (!key) fail(v->rep, BF_LEDGER_CHECK_CHAIN, "transfer %lld has no operation", (long long)r->id);
    ledger_row_hash(v->L, v->prev, r, key ? key : "", h);
    if (!stored || memcmp(stored, h, 32))
        fail(v->rep, BF_LEDGER_CHECK_CHAIN, "transfer %lld: hash mismatch (altered, inserted or removed row)",
             (long long)r->id);
    /* Continue the chain from the stored hash so one bad row is reported once, not forever. */
    memcpy(v->prev, stored ? stored : h, 32);
    if (r->id > 0 && r->id < v->n_xf) replay_one(v, r);
}

static void replay_end(vstate_t *v) {
    ledger_hex(v->prev, 32, v->rep->head_hash);
    if (v->rep->transfers == 0) v->rep->head_hash[0] = 0;
}

static int replay(vstate_t *v, bf_err_t *err) {
    bf_ledger_t *L = v->L;
    int64_t max = scalar(L, "SELECT coalesce(max(id), 0) FROM transfers");
    if (max < 0) return ledger_sqlerr(L, err, "transfers");
    v->n_xf = max + 1;
    v->xf = calloc((size_t)v->n_xf, sizeof *v->xf);
    if (!v->xf) return bf_err_set(err, "out of memory"), -1;
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(L->db,
                           "SELECT t.id, t.type, t.code, t.currency, t.debit_account, t.credit_account,"
                           " t.amount, coalesce(t.pending_id, 0), t.expires_at, t.created_at, t.debit_before,"
                           " t.debit_after, t.credit_before, t.credit_after, t.debit_prev, t.credit_prev,"
                           " t.hash, o.op_key, t.legs"
                           " FROM transfers t LEFT JOIN ops o ON o.id = t.op ORDER BY t.id",
                           -1, &s, NULL) != SQLITE_OK)
        return ledger_sqlerr(L, err, "transfers");
    int step;
    while ((step = sqlite3_step(s)) == SQLITE_ROW) {
        ledger_row_t r;
        int64_t *f[16] = {&r.id,         &r.type,         &r.code,        &r.currency,  &r.debit,
                          &r.credit,     &r.amount,       &r.pending_id,  &r.expires_at, &r.created_at,
                          &r.debit_before, &r.debit_after, &r.credit_before, &r.credit_after,
                          &r.debit_prev, &r.credit_prev};
        for (int i = 0; i < 16; i++) *f[i] = sqlite3_column_int64(s, i);
        const unsigned char *key = sqlite3_column_text(s, 17);
        /* A zero-length blob counts as legs too: it hashes as a split and fails the replay. */
        r.legs = sqlite3_column_type(s, 18) == SQLITE_NULL ? NULL : sqlite3_column_blob(s, 18);
        r.legs_len = (size_t)sqlite3_column_bytes(s, 18);
        if (sqlite3_column_type(s, 18) != SQLITE_NULL && !r.legs) r.legs = (const unsigned char *)"";
        replay_row(v, &r, (const char *)key, sqlite3_column_bytes(s, 16) == 32 ? sqlite3_column_blob(s, 16) : NULL);
    }
    sqlite3_finalize(s);
    if (step != SQLITE_DONE) return ledger_sqlerr(L, err, "transfers");
    replay_end(v);
    return 0;
}

static void check_accounts(vstate_t *v) {
    unsigned __int128 dp[3] = {0}, cp[3] = {0}, dpend[3] = {0}, cpend[3] = {0};
    for (int64_t id = 1; id < v->n_acc; id++) {
        vacct_t *a = &v->acc[id];
        if (!a->present) continue;
        if (a->last != a->c_last)
            fail(v->rep, BF_LEDGER_CHECK_BALANCES, "account %lld: last transfer %lld, replay says %lld", (long long)id,
                 (long long)a->c_last, (long long)a->last);
        if (a->dp != a->c_dp || a->cp != a->c_cp || a->dpend != a->c_dpend || a->cpend != a->c_cpend)
            fail(v->rep, BF_LEDGER_CHECK_BALANCES,
                 "account %lld: cached (%lld,%lld,%lld,%lld) != replayed (%lld,%lld,%lld,%lld)", (long long)id,
                 (long long)a->c_dp, (long long)a->c_cp, (long long)a->c_dpend, (long long)a->c_cpend,
                 (long long)a->dp, (long long)a->cp, (long long)a->dpend, (long long)a->cpend);
        if (ledger_acct_restricted(a->kind) && a->c_cp - a->c_dp - a->c_dpend < 0)
            fail(v->rep, BF_LEDGER_CHECK_NONNEGATIVE, "account %lld (kind %d) is below zero", (long long)id, a->kind);
        int c = a->currency == BF_LEDGER_COIN ? 2 : 1;
        dp[c] += (uint64_t)a->c_dp;
        cp[c] += (uint64_t)a->c_cp;
        dpend[c] += (uint64_t)a->c_dpend;
        cpend[c] += (uint64_t)a->c_cpend;
    }
    for (int c = 1; c <= 2; c++)
        if (dp[c] != cp[c] || dpend[c] != cpend[c])
            fail(v->rep, BF_LEDGER_CHECK_DOUBLE_ENTRY, "%s: total debits != total credits",
                 c == 1 ? "CNY" : "COIN");
}

/* Holds: model_usage rows agree with how their pending transfers resolved. */
/* One model_usage row: u = id, hold transfer, held, captured, status. */
static void check_hold(vstate_t *v, const int64_t u[5]) {
    static const int want_type[5] = {0, 0, XF_POST, XF_VOID, XF_EXPIRE};
    int64_t id = u[0], xid = u[1], held = u[2], captured = u[3];
    int status = (int)u[4];
    vxfer_t *x = xid > 0 && xid < v->n_xf ? &v->xf[xid] : NULL;
    if (!x || x->type != XF_PENDING || x->code != CODE_USAGE_FEE || x->amount != held || status < 1 || status > 4) {
        fail(v->rep, BF_LEDGER_CHECK_HOLDS, "hold %lld does not match its pending transfer", (long long)id);
        return;
    }
    if (x->resolved_by != want_type[status] || (status == BF_LEDGER_HOLD_CAPTURED && x->captured != captured))
        fail(v->rep, BF_LEDGER_CHECK_HOLDS, "hold %lld: status %d disagrees with its transfers", (long long)id, status);
    if (status == BF_LEDGER_HOLD_PENDING) v->rep->holds_pending++;
}

static int check_holds(vstate_t *v, bf_err_t *err) {
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(v->L->db, "SELECT id, hold_transfer, held, captured, status FROM model_usage", -1, &s,
                           NULL) != SQLITE_OK)
        return ledger_sqlerr(v->L, err, "model_usage");
    while (sqlite3_step(s) == SQLITE_ROW) {
        const int64_t u[5] = {sqlite3_column_int64(s, 0), sqlite3_column_int64(s, 1), sqlite3_column_int64(s, 2),
                              sqlite3_column_int64(s, 3), sqlite3_column_int64(s, 4)};
        check_hold(v, u);
    }
    sqlite3_finalize(s);
    return 0;
}

/* One withdrawal row: w = id, hold transfer, amount, status, resolve transfer; the user's cash
 * account; rkey: the resolving transfer's op id, as hashed into the chain (checked: resolve ==
 * the replayed resolution). */
static void check_withdrawal(vstate_t *v, const int64_t w[5], const char *ref, const char *reason, int64_t cash,
                             const char *rkey) {
    static const int want_type[4] = {0, 0, XF_POST, XF_VOID};
    int64_t id = w[0], xid = w[1], amount = w[2], resolve = w[4];
    int status = (int)w[3];
    vxfer_t *x = xid > 0 && xid < v->n_xf ? &v->xf[xid] : NULL;
    v->wd_rows++;
    if (!x || x->type != XF_PENDING || x->code != CODE_WITHDRAWAL || x->amount != amount || x->debit != cash ||
        x->credit != v->L->ext_cny || status < 1 || status > 3) {
        fail(v->rep, BF_LEDGER_CHECK_WITHDRAWALS, "withdrawal %lld does not match its hold", (long long)id);
        return;
    }
    if (x->resolved_by != want_type[status] || (status != 1 && x->resolved_id != resolve) ||
        (status == BF_LEDGER_WITHDRAWAL_PAID && x->captured != amount)) {
        fail(v->rep, BF_LEDGER_CHECK_WITHDRAWALS, "withdrawal %lld: status %d disagrees with its transfers", (long long)id,
             status);
        return;
    }
    char key[BF_LEDGER_OP_ID_MAX + 1] = "";
    if (status == BF_LEDGER_WITHDRAWAL_PAID) snprintf(key, sizeof key, "wpay:%s", ref ? ref : "");
    if (status == BF_LEDGER_WITHDRAWAL_REJECTED) ledger_withdraw_reject_key(v->L, id, reason ? reason : "", key);
    if (status != BF_LEDGER_WITHDRAWAL_PENDING && strcmp(key, rkey ? rkey : ""))
        fail(v->rep, BF_LEDGER_CHECK_WITHDRAWALS, "withdrawal %lld: its %s is not the one in the hash chain", (long long)id,
             status == BF_LEDGER_WITHDRAWAL_PAID ? "reference" : "reason");
    if (status == BF_LEDGER_WITHDRAWAL_PENDING) v->rep->withdrawals_pending++;
}

static void withdrawals_end(vstate_t *v) {
    if (v->wd_rows != v->wd_holds)
        fail(v->rep, BF_LEDGER_CHECK_WITHDRAWALS, "%lld withdrawal holds in the chain, %lld withdrawals recorded",
             (long long)v->wd_holds, (long long)v->wd_rows);
}

/* Withdrawals: each row is one withdrawal hold (its user's cash -> the platform's external CNY
 * account, its amount) resolved as its status says: pending unresolved; paid posted in full by the
 * op "wpay:REF" (the ref chained); rejected voided by the op naming the reason's hash. Every
 * withdrawal hold in the chain has its row. */
static int check_withdrawals(vstate_t *v, bf_err_t *err) {
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(v->L->db,
                           "SELECT w.id, w.hold_transfer, w.amount, w.status, coalesce(w.resolve_transfer, 0),"
                           " w.external_ref, w.reason, u.cash_account, o.op_key FROM withdrawals w"
                           " LEFT JOIN users u ON u.id = w.user_id LEFT JOIN transfers t ON t.id = w.resolve_transfer"
                           " LEFT JOIN ops o ON o.id = t.op ORDER BY w.id",
                           -1, &s, NULL) != SQLITE_OK)
        return ledger_sqlerr(v->L, err, "withdrawals");
    while (sqlite3_step(s) == SQLITE_ROW) {
        const int64_t w[5] = {sqlite3_column_int64(s, 0), sqlite3_column_int64(s, 1), sqlite3_column_int64(s, 2),
                              sqlite3_column_int64(s, 3), sqlite3_column_int64(s, 4)};
        check_withdrawal(v, w, (const char *)sqlite3_column_text(s, 5), (const char *)sqlite3_column_text(s, 6),
                         sqlite3_column_int64(s, 7), (const char *)sqlite3_column_text(s, 8));
    }
    sqlite3_finalize(s);
    withdrawals_end(v);
    return 0;
}

/* One tasks row: t = id, mode, status, pool, escrow account, clearing account, total revenue,
 * platform paid, number of shareholdings, their ppm sum, captured usage, rewards sum, number of
 * rewards; blob (nb bytes, NULL for none) its payout state. */
static void check_task(vstate_t *v, const int64_t t[13], const unsigned char *blob, int64_t nb) {
    int64_t id = t[0], pool = t[3], revenue = t[6], platform = t[7], n_shares = t[8], ppm = t[9], captured = t[10];
    int64_t rewards = t[11], n_rewards = t[12], received = 0;
    int mode = (int)t[1], status = (int)t[2];
    vacct_t *e = acct(v, t[4]), *c = acct(v, t[5]);
    if (blob && nb != 8 * n_shares)
        fail(v->rep, BF_LEDGER_CHECK_PAYOUTS, "task %lld: payout state of %lld bytes for %lld holders", (long long)id,
             (long long)nb, (long long)n_shares);
    for (int64_t k = 0; blob && k + 8 <= nb; k += 8) received += ledger_get_be64(blob + k);
    v->rep->tasks++;
    if (!e || !c || e->kind != BF_LEDGER_ACCT_TASK_ESCROW || c->kind != BF_LEDGER_ACCT_TASK_CLEARING) {
        fail(v->rep, BF_LEDGER_CHECK_ESCROW, "task %lld has no escrow/clearing account", (long long)id);
        return;
    }
    int funded = mode == BF_LEDGER_MODE_REWARD && (status == BF_LEDGER_TASK_CREATED || status == BF_LEDGER_TASK_RUNNING);
    int64_t want = funded ? pool : 0;
    if (e->cp - e->dp != want || e->dpend || e->cpend)
        fail(v->rep, BF_LEDGER_CHECK_ESCROW, "task %lld (status %d): escrow %lld, expected %lld", (long long)id, status,
             (long long)(e->cp - e->dp), (long long)want);
    if (c->cp - c->dp != 0)
        fail(v->rep, BF_LEDGER_CHECK_PAYOUTS, "task %lld: clearing account holds %lld undistributed", (long long)id,
             (long long)(c->cp - c->dp));
    int settled_shares = mode == BF_LEDGER_MODE_SHAREHOLDING && status == BF_LEDGER_TASK_COMPLETED;
    if (settled_shares ? ppm != BF_LEDGER_PPM : n_shares != 0)
        fail(v->rep, BF_LEDGER_CHECK_SHARES, "task %lld: %lld shareholdings summing to %lld ppm", (long long)id,
             (long long)n_shares, (long long)ppm);
    if (captured != revenue || received + platform != revenue)
        fail(v->rep, BF_LEDGER_CHECK_PAYOUTS, "task %lld: captured %lld, revenue %lld, paid out %lld", (long long)id,
             (long long)captured, (long long)revenue, (long long)(received + platform));
    int settled_reward = mode == BF_LEDGER_MODE_REWARD && status == BF_LEDGER_TASK_COMPLETED;
    if (settled_reward ? rewards != pool : n_rewards != 0)
        fail(v->rep, BF_LEDGER_CHECK_REWARDS, "task %lld: rewards %lld of pool %lld", (long long)id, (long long)rewards,
             (long long)pool);
}

/* The tasks query of both backends (the same SQL runs on SQLite and PostgreSQL). */
#define LEDGER_TASKS_SQL                                                                                            \
    "SELECT t.id, t.payment_mode, t.status, t.reward_pool, t.escrow_account, t.clearing_account, t.total_revenue,"  \
    " t.platform_paid, (SELECT count(*) FROM model_shareholdings WHERE task_id = t.id),"                             \
    " (SELECT coalesce(sum(ppm), 0) FROM model_shareholdings WHERE task_id = t.id),"                                 \
    " (SELECT coalesce(sum(captured), 0) FROM model_usage WHERE task_id = t.id AND status = 2),"                     \
    " (SELECT coalesce(sum(amount), 0) FROM reward_distributions WHERE task_id = t.id),"                             \
    " (SELECT count(*) FROM reward_distributions WHERE task_id = t.id), t.payout_state FROM tasks t ORDER BY t.id"

static int check_tasks(vstate_t *v, bf_err_t *err) {
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(v->L->db, LEDGER_TASKS_SQL, -1, &s, NULL) != SQLITE_OK) return ledger_sqlerr(v->L, err, "tasks");
    while (sqlite3_step(s) == SQLITE_ROW) {
        int64_t t[13];
        for (int i = 0; i < 13; i++) t[i] = sqlite3_column_int64(s, i);
        check_task(v, t, sqlite3_column_blob(s, 13), sqlite3_column_bytes(s, 13));
    }
    sqlite3_finalize(s);
    return 0;
}

static int pay_cmp(const void *a, const void *b) {
    const vpay_t *x = a, *y = b;
    if (x->debit != y->debit) return x->debit < y->debit ? -1 : 1;
    return (x->credit > y->credit) - (x->credit < y->credit);
}

/* Sum of fee payouts from one clearing account to one account (pay is sorted). */
static int64_t paid_to(const vstate_t *v, int64_t clearing, int64_t to) {
    size_t lo = 0, hi = v->n_pay;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        vpay_t key = {clearing, to, 0};
        if (pay_cmp(&v->pay[mid], &key) < 0) lo = mid + 1;
        else hi = mid;
    }
    int64_t sum = 0;
    for (size_t i = lo; i < v->n_pay && v->pay[i].debit == clearing && v->pay[i].credit == to; i++) sum += v->pay[i].amount;
    return sum;
}

/* Before the first check_holding: the fee payouts found by the replay, sorted for paid_to. */
static int entitlements_begin(vstate_t *v, bf_err_t *err) {
    if (v->oom) return bf_err_set(err, "out of memory"), -1;
    if (v->n_pay) qsort(v->pay, v->n_pay, sizeof *v->pay, pay_cmp);
    v->ent_task = -1;
    v->ent_slot = 0;
    return 0;
}

/* One shareholding row, in (task, cash account) order: h = task, user, ppm, cash account, the
 * task's total revenue, platform fee ppm, clearing account and platform paid; blob (nb bytes) the
 * task's payout state. Each holder's cumulative payout equals what its payout transfers say and
 * stays within one cent of its exact entitlement revenue * ppm * (1e6 - platform ppm) / 1e12;
 * likewise the platform. */
static void check_holding(vstate_t *v, const int64_t h[8], const unsigned char *blob, int64_t nb) {
    const unsigned __int128 W = (unsigned __int128)BF_LEDGER_PPM * BF_LEDGER_PPM;
    int64_t task = h[0], user = h[1], ppm = h[2], cash = h[3], revenue = h[4], fee = h[5], clearing = h[6];
    int64_t platform = h[7];
    if (task != v->ent_task) {
        v->ent_slot = 0;
        v->ent_task = task;
        if (platform != paid_to(v, clearing, v->L->rev_cny))
            fail(v->rep, BF_LEDGER_CHECK_PAYOUTS, "task %lld: platform cut %lld disagrees with transfers", (long long)task,
                 (long long)platform);
    }
    int64_t slot = v->ent_slot++;
    int64_t received = blob && (slot + 1) * 8 <= nb ? ledger_get_be64(blob + 8 * slot) : 0;
    int64_t transferred = paid_to(v, clearing, cash);
    if (received != transferred)
        fail(v->rep, BF_LEDGER_CHECK_PAYOUTS, "task %lld user %lld: received %lld but transfers say %lld", (long long)task,
             (long long)user, (long long)received, (long long)transferred);
    if (ppm < 0 || fee < 0 || fee > BF_LEDGER_PPM || revenue < 0 || received < 0) return;
    unsigned __int128 exact = (unsigned __int128)(uint64_t)revenue * (uint64_t)ppm * (uint64_t)(BF_LEDGER_PPM - fee);
    unsigned __int128 got = (unsigned __int128)(uint64_t)received * W;
    unsigned __int128 diff = got > exact ? got - exact : exact - got;
    if (diff >= W)
        fail(v->rep, BF_LEDGER_CHECK_PAYOUTS, "task %lld user %lld: received %lld, a cent or more off entitlement",
             (long long)task, (long long)user, (long long)received);
}

#define LEDGER_HOLDINGS_SQL                                                                                          \
    "SELECT h.task_id, h.user_id, h.ppm, h.cash_account, t.total_revenue, t.platform_fee_ppm, t.clearing_account,"  \
    " t.platform_paid, t.payout_state FROM model_shareholdings h JOIN tasks t ON t.id = h.task_id"                    \
    " ORDER BY h.task_id, h.cash_account"

static int check_entitlements(vstate_t *v, bf_err_t *err) {
    if (entitlements_begin(v, err)) return -1;
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(v->L->db, LEDGER_HOLDINGS_SQL, -1, &s, NULL) != SQLITE_OK)
        return ledger_sqlerr(v->L, err, "model_shareholdings");
    while (sqlite3_step(s) == SQLITE_ROW) {
        int64_t h[8];
        for (int i = 0; i < 8; i++) h[i] = sqlite3_column_int64(s, i);
        check_holding(v, h, sqlite3_column_blob(s, 8), sqlite3_column_bytes(s, 8));
    }
    sqlite3_finalize(s);
    return 0;
}

/* ---- The same replay over the PostgreSQL backend's rows (ledger_pg_scan) ----------------------- */

static void pgv_account(void *ctx, const int64_t a[9]) {
    vstate_t *v = ctx;
    int64_t id = a[0];
    if (id <= 0 || v->oom) return;
    if (id >= v->n_acc) {
        vacct_t *g = realloc(v->acc, (size_t)(id + 1) * sizeof *g);
        if (!g) {
            v->oom = 1;
            return;
        }
        memset(g + v->n_acc, 0, (size_t)(id + 1 - v->n_acc) * sizeof *g);
        v->acc = g;
        v->n_acc = id + 1;
    }
    vacct_t *x = &v->acc[id];
    *x = (vacct_t){.present = 1, .kind = (int)a[1], .currency = (int)a[2], .owner = a[3], .c_dp = a[4], .c_cp = a[5],
                   .c_dpend = a[6], .c_cpend = a[7], .c_last = a[8]};
    v->rep->accounts++;
}

static void pgv_transfer(void *ctx, const ledger_row_t *r, const char *key, const unsigned char *hash) {
    vstate_t *v = ctx;
    if (v->oom) return;
    if (r->id >= v->n_xf && r->id > 0 && r->id < INT64_MAX / 2) {
        int64_t cap = v->n_xf ? v->n_xf : 1024;
        while (cap <= r->id) cap *= 2;
        vxfer_t *g = realloc(v->xf, (size_t)cap * sizeof *g);
        if (!g) {
            v->oom = 1;
            return;
        }
        memset(g + v->n_xf, 0, (size_t)(cap - v->n_xf) * sizeof *g);
        v->xf = g;
        v->n_xf = cap;
    }
    replay_row(v, r, key, hash);
}

static void pgv_withdrawal(void *ctx, const int64_t w[5], const char *ref, const char *reason, int64_t cash,
                           const char *rkey) {
    check_withdrawal(ctx, w, ref, reason, cash, rkey);
}

static void pgv_users(void *ctx, int64_t n) { ((vstate_t *)ctx)->rep->users = n; }

static void pgv_hold(void *ctx, const int64_t u[5]) { check_hold(ctx, u); }

/* The task rows come after every transfer: the replay's state (accounts, payouts) is complete. */
static void pgv_task(void *ctx, const int64_t t[13], const unsigned char *blob, int64_t nb) {
    vstate_t *v = ctx;
    if (v->ent_task == -2) { /* the first task row: the replay is over */
        replay_end(v);
        check_accounts(v);
        v->ent_task = -1;
    }
    check_task(v, t, blob, nb);
}

static void pgv_holding(void *ctx, const int64_t h[8], const unsigned char *blob, int64_t nb) {
    vstate_t *v = ctx;
    if (v->ent_slot == -2 && !entitlements_begin(v, NULL)) v->ent_slot = 0;
    if (!v->oom) check_holding(v, h, blob, nb);
}

/* On PostgreSQL: the same checks over the same rows, streamed by ledger_pg_scan in one snapshot
 * (integrity is PostgreSQL's own: its constraints are always on). */
static int verify_pg(bf_ledger_t *L, vstate_t *v, bf_err_t *err) {
    static const ledger_pg_scan_t scan = {pgv_account, pgv_transfer, pgv_withdrawal, pgv_users,
                                          pgv_hold,    pgv_task,     pgv_holding};
    v->ent_task = v->ent_slot = -2;
    int rc = ledger_pg_scan(L, &scan, v, err);
    if (rc) return rc;
    if (v->oom) return bf_err_set(err, "out of memory"), -1;
    if (v->ent_task == -2) { /* no task at all */
        replay_end(v);
        check_accounts(v);
    }
    withdrawals_end(v);
    return 0;
}

const char *const ledger_tasks_sql = LEDGER_TASKS_SQL;
const char *const ledger_holdings_sql = LEDGER_HOLDINGS_SQL;

int bf_ledger_verify(bf_ledger_t *self, bf_ledger_report_t *rep, bf_err_t *err) {
    memset(rep, 0, sizeof *rep);
    rep->ok = 1;
    for (int i = 0; i < BF_LEDGER_CHECK_COUNT; i++) {
        rep->checks[i].name = check_names[i];
        rep->checks[i].ok = 1;
    }
    if (self->pg) {
        vstate_t v = {.L = self, .rep = rep, .expect = 1};
        int rc = verify_pg(self, &v, err);
        free(v.acc);
        free(v.xf);
        free(v.pay);
        return rc ? -1 : 0;
    }
    /* One read transaction: every query sees the same snapshot even if a writer is active. */
    if (sqlite3_exec(self->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) return ledger_sqlerr(self, err, "begin");
    vstate_t v = {.L = self, .rep = rep, .expect = 1};
    int rc = check_integrity(&v, err);
    if (!rc) rc = load_accounts(&v, err);
    if (!rc) rc = replay(&v, err);
    if (!rc) {
        check_accounts(&v);
        rc = check_holds(&v, err);
    }
    if (!rc) rc = check_withdrawals(&v, err);
    if (!rc) rc = check_tasks(&v, err);
    if (!rc) rc = check_entitlements(&v, err);
    if (!rc) rep->users = scalar(self, "SELECT count(*) FROM users");
    sqlite3_exec(self->db, "COMMIT", NULL, NULL, NULL);
    free(v.acc);
    free(v.xf);
    free(v.pay);
    return rc ? -1 : 0;
}

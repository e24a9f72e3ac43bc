/* ledger_withdraw.c: money out and statements. A withdrawal is a TigerBeetle two-phase transfer:
 * the request places a pending transfer from the user's cash to the platform's external account
 * (taken from the available balance at once), the operator posts it in full (paid, under the
 * payment's external reference) or voids it (rejected, with a reason). The withdrawals table
 * records which hold is which withdrawal; the transfers carry the money and the hash chain, and
 * the resolving op's id names the reference (or a hash of the reason), so both are chained too.
 * A statement is a user's account history over a time window with opening and closing balances.
 * Calls: ledger_tx.c (the frame), ledger_store.c, and bf_ledger_history (ledger_query.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ledger_internal.h"

/* ---- Rows ------------------------------------------------------------------------------------ */

typedef struct {
    int64_t id, user, hold_transfer, amount;
    int status;
} wd_row_t;

static int get_withdrawal(bf_ledger_t *L, int64_t id, wd_row_t *w, bf_err_t *err) {
    sqlite3_stmt *s = ledger_stmt(L, ST_WD_GET);
    if (!s) return ledger_sqlerr(L, err, "withdrawals");
    sqlite3_bind_int64(s, 1, id);
    int step = sqlite3_step(s);
    if (step == SQLITE_ROW) {
        w->id = id;
        w->user = sqlite3_column_int64(s, 0);
        w->hold_transfer = sqlite3_column_int64(s, 1);
        w->amount = sqlite3_column_int64(s, 2);
        w->status = sqlite3_column_int(s, 3);
    }
    sqlite3_reset(s);
    if (step == SQLITE_ROW) return 0;
    if (step == SQLITE_DONE) return bf_err_set(err, "unknown withdrawal %lld", (long long)id), BF_LEDGER_ENOTFOUND;
    return ledger_sqlerr(L, err, "withdrawals");
}

/* ---- Request --------------------------------------------------------------------------------- */

typedef struct {
    int64_t user, amount;
} wd_args_t;

static int do_withdraw(bf_ledger_t *L, ledger_op_t *op, const void *argp, bf_err_t *err) {
    const wd_args_t *a = argp;
    if (a->amount <= 0) return bf_err_set(err, "withdrawal amount must be positive"), BF_LEDGER_EINVAL;
    ledger_user_row_t u;
    int rc = ledger_user_row(L, a->user, &u, err);
    if (rc) return rc;
    ledger_xfer_t x = {.type = XF_PENDING, .code = CODE_WITHDRAWAL, .debit = u.cash, .credit = L->ext_cny,
                       .amount = a->amount};
    int64_t xid;
    if ((rc = ledger_transfer(L, op, &x, &xid, err))) return rc;
    sqlite3_stmt *s = ledger_stmt(L, ST_WD_INSERT);
    if (!s) return ledger_sqlerr(L, err, "withdrawals");
    sqlite3_bind_int64(s, 1, a->user);
    sqlite3_bind_int64(s, 2, xid);
    sqlite3_bind_int64(s, 3, a->amount);
    sqlite3_bind_int64(s, 4, op->now);
    if ((rc = ledger_exec_stmt(L, s, err))) return rc;
    op->result = sqlite3_last_insert_rowid(L->db);
    return 0;
}

int bf_ledger_withdraw(bf_ledger_t *self, const char *op_id, int64_t user_id, int64_t cents,
                       int64_t *withdrawal_id, bf_err_t *err) {
    bf_err_t e0;
    if (!err) err = &e0;
    LEDGER_PG(self, ledger_pg_amount_op(self, OP_WITHDRAW, op_id, user_id, cents, withdrawal_id, err));
    ledger_fp_t fp = {0};
    ledger_fp_i64(&fp, user_id);
    ledger_fp_i64(&fp, cents);
    ledger_op_t op = {.key = op_id, .kind = OP_WITHDRAW};
    wd_args_t a = {user_id, cents};
    return ledger_op_run(self, &op, &fp, do_withdraw, &a, withdrawal_id, NULL, err);
}

/* ---- Payout and rejection -------------------------------------------------------------------- */

typedef struct {
    int64_t id;
    const char *ref, *reason; /* exactly one set */
} wd_resolve_args_t;

static int do_resolve(bf_ledger_t *L, ledger_op_t *op, const void *argp, bf_err_t *err) {
    const wd_resolve_args_t *a = argp;
    wd_row_t w = {0};
    ledger_user_row_t u;
    int rc;
    if ((rc = get_withdrawal(L, a->id, &w, err))) return rc;
    if (w.status == BF_LEDGER_WITHDRAWAL_PAID)
        return bf_err_set(err, "withdrawal %lld was already paid", (long long)w.id), BF_LEDGER_EPOSTED;
    if (w.status == BF_LEDGER_WITHDRAWAL_REJECTED)
        return bf_err_set(err, "withdrawal %lld was already rejected", (long long)w.id), BF_LEDGER_EVOIDED;
    if ((rc = ledger_user_row(L, w.user, &u, err))) return rc;
    int pay = a->ref != NULL;
    /* All or nothing: a withdrawal is paid in full or not at all (no partial post). */
    ledger_xfer_t x = {.type = pay ? XF_POST : XF_VOID, .code = CODE_WITHDRAWAL, .debit = u.cash,
                       .credit = L->ext_cny, .amount = w.amount, .pending_id = w.hold_transfer,
                       .pending_amount = w.amount};
    int64_t xid;
    if ((rc = ledger_transfer(L, op, &x, &xid, err))) return rc;
    sqlite3_stmt *s = ledger_stmt(L, ST_WD_RESOLVE);
    if (!s) return ledger_sqlerr(L, err, "withdrawals");
    sqlite3_bind_int64(s, 1, w.id);
    sqlite3_bind_int(s, 2, pay ? BF_LEDGER_WITHDRAWAL_PAID : BF_LEDGER_WITHDRAWAL_REJECTED);
    sqlite3_bind_int64(s, 3, op->now);
    sqlite3_bind_int64(s, 4, xid);
    if (pay) sqlite3_bind_text(s, 5, a->ref, -1, SQLITE_STATIC);
    else sqlite3_bind_null(s, 5);
    if (pay) sqlite3_bind_null(s, 6);
    else sqlite3_bind_text(s, 6, a->reason, -1, SQLITE_STATIC);
    if ((rc = ledger_exec_stmt(L, s, err))) return rc;
    if (sqlite3_changes(L->db) != 1)
        return bf_err_set(err, "withdrawal %lld resolved concurrently", (long long)w.id), BF_LEDGER_EINTERNAL;
    op->result = xid;
    return 0;
}

static int valid_ref(const char *r) {
    size_t n = r ? strlen(r) : 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)r[i] <= ' ' || (unsigned char)r[i] >= 0x7f) return 0;
    return n >= 1 && n <= BF_LEDGER_REF_MAX;
}

static int valid_reason(const char *r) {
    size_t n = r ? strlen(r) : 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)r[i] < ' ' || r[i] == 0x7f) return 0;
    return n >= 1 && n <= BF_LEDGER_REASON_MAX;
}

int bf_ledger_withdraw_payout(bf_ledger_t *self, int64_t id, const char *ref, bf_err_t *err) {
    bf_err_t e0;
    if (!err) err = &e0;
    if (!valid_ref(ref))
        return bf_err_set(err, "an external reference is 1..%d printable characters without spaces", BF_LEDGER_REF_MAX),
               BF_LEDGER_EINVAL;
    char key[BF_LEDGER_OP_ID_MAX + 1];
    snprintf(key, sizeof key, "wpay:%s", ref);
    ledger_fp_t fp = {0};
    ledger_fp_i64(&fp, id);
    ledger_fp_str(&fp, ref);
    LEDGER_PG(self, ledger_pg_resolve(self, key, OP_WITHDRAW_PAYOUT, id, ref, NULL, err));
    ledger_op_t op = {.key = key, .kind = OP_WITHDRAW_PAYOUT};
    wd_resolve_args_t a = {id, ref, NULL};
    return ledger_op_run(self, &op, &fp, do_resolve, &a, NULL, NULL, err);
}

/* "wrej:ID:SHA256(reason)": the reason is chained through the op id like a payout's ref. */
void ledger_withdraw_reject_key(bf_ledger_t *L, int64_t id, const char *reason, char key[BF_LEDGER_OP_ID_MAX + 1]) {
    unsigned char h[32];
    char hx[65];
    ledger_sha256(L, reason, strlen(reason), NULL, 0, h);
    ledger_hex(h, 32, hx);
    snprintf(key, BF_LEDGER_OP_ID_MAX + 1, "wrej:%lld:%s", (long long)id, hx);
}

int bf_ledger_withdraw_reject(bf_ledger_t *self, int64_t id, const char *reason, bf_err_t *err) {
    bf_err_t e0;
    if (!err) err = &e0;
    if (!valid_reason(reason))
        return bf_err_set(err, "a reason is 1..%d bytes without control characters", BF_LEDGER_REASON_MAX),
               BF_LEDGER_EINVAL;
    char key[BF_LEDGER_OP_ID_MAX + 1];
    ledger_withdraw_reject_key(self, id, reason, key);
    ledger_fp_t fp = {0};
    ledger_fp_i64(&fp, id);
    ledger_fp_str(&fp, reason);
    LEDGER_PG(self, ledger_pg_resolve(self, key, OP_WITHDRAW_REJECT, id, NULL, reason, err));
    ledger_op_t op = {.key = key, .kind = OP_WITHDRAW_REJECT};
    wd_resolve_args_t a = {id, NULL, reason};
    return ledger_op_run(self, &op, &fp, do_resolve, &a, NULL, NULL, err);
}

/* ---- Queries --------------------------------------------------------------------------------- */

static void copy_col(char *dst, size_t cap, sqlite3_stmt *s, int col) {
    const unsigned char *t = sqlite3_column_text(s, col);
    snprintf(dst, cap, "%s", t ? (const char *)t : "");
}

int bf_ledger_withdrawals(bf_ledger_t *self, int status, int64_t user_id, bf_ledger_withdrawal_t **out,
                          size_t *n, bf_err_t *err) {
    LEDGER_PG(self, ledger_pg_withdrawals(self, status, user_id, out, n, err));
    *out = NULL;
    *n = 0;
    int rc = ledger_group_flush(self, err);
    if (rc) return rc;
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(self->db,
                           "SELECT id, user_id, amount, status, created_at, resolved_at, hold_transfer,"
                           " coalesce(resolve_transfer, 0), external_ref, reason FROM withdrawals"
                           " WHERE (?1 <= 0 OR status = ?1) AND (?2 <= 0 OR user_id = ?2) ORDER BY id",
                           -1, &s, NULL) != SQLITE_OK)
        return ledger_sqlerr(self, err, "withdrawals");
    sqlite3_bind_int(s, 1, status);
    sqlite3_bind_int64(s, 2, user_id);
    size_t cap = 0;
    int step;
    while ((step = sqlite3_step(s)) == SQLITE_ROW) {
        if (*n == cap) {
            size_t c = cap ? cap * 2 : 16;
            bf_ledger_withdrawal_t *g = realloc(*out, c * sizeof *g);
            if (!g) {
                rc = (bf_err_set(err, "out of memory"), BF_LEDGER_EINTERNAL);
                break;
            }
            *out = g;
            cap = c;
        }
        bf_ledger_withdrawal_t *w = &(*out)[(*n)++];
        memset(w, 0, sizeof *w);
        w->id = sqlite3_column_int64(s, 0);
        w->user_id = sqlite3_column_int64(s, 1);
        w->amount = sqlite3_column_int64(s, 2);
        w->status = (bf_ledger_withdrawal_status_t)sqlite3_column_int(s, 3);
        w->created_at = sqlite3_column_int64(s, 4);
        w->resolved_at = sqlite3_column_int64(s, 5);
        w->hold_transfer = sqlite3_column_int64(s, 6);
        w->resolve_transfer = sqlite3_column_int64(s, 7);
        copy_col(w->external_ref, sizeof w->external_ref, s, 8);
        copy_col(w->reason, sizeof w->reason, s, 9);
    }
    if (!rc && step != SQLITE_DONE) rc = ledger_sqlerr(self, err, "withdrawals");
    sqlite3_finalize(s);
    if (rc) {
        free(*out);
        *out = NULL;
        *n = 0;
    }
    return rc;
}

int bf_ledger_withdrawal_get(bf_ledger_t *self, int64_t id, bf_ledger_withdrawal_t *out, bf_err_t *err) {
    bf_ledger_withdrawal_t *all = NULL;
    size_t n = 0;
    /* A point lookup through the list query keeps one reader of the table. */
    int rc = bf_ledger_withdrawals(self, 0, 0, &all, &n, err);
    if (rc) return rc;
    rc = BF_LEDGER_ENOTFOUND;
    for (size_t i = 0; i < n; i++)
        if (all[i].id == id) {
            *out = all[i];
            rc = 0;
            break;
        }
    free(all);
    if (rc) bf_err_set(err, "unknown withdrawal %lld", (long long)id);
    return rc;
}

/* ---- Statements ------------------------------------------------------------------------------ */

/* The account a statement is of: the user's cash or coin account. */
static int statement_account(bf_ledger_t *L, int64_t user, bf_ledger_currency_t currency, int64_t *account,
                             bf_err_t *err) {
    if (L->pg) {
        int64_t cash = 0, coin = 0;
        int rc = ledger_pg_user_accounts(L, user, &cash, &coin, err);
        *account = currency == BF_LEDGER_CNY ? cash : coin;
        return rc;
    }
    ledger_user_row_t u;
    int rc = ledger_user_row(L, user, &u, err);
    if (rc) return rc;
    *account = currency == BF_LEDGER_CNY ? u.cash : u.coin;
    return 0;
}

void bf_ledger_statement_free(bf_ledger_statement_t *st) {
    if (!st) return;
    free(st->lines);
    st->lines = NULL;
    st->n = 0;
}

/* The hold a post, void or expire resolves: its amount, and whether `account` is its debit side
 * (a hold counts against the balance of the account it debits only). */
static int resolved_hold(sqlite3_stmt *q, int64_t transfer, int64_t account, int64_t *amount, int *debit,
                         bf_err_t *err) {
    sqlite3_bind_int64(q, 1, transfer);
    int step = sqlite3_step(q);
    if (step == SQLITE_ROW) {
        *amount = sqlite3_column_int64(q, 0);
        *debit = sqlite3_column_int64(q, 1) == account;
    }
    sqlite3_reset(q);
    if (step == SQLITE_ROW) return 0;
    return bf_err_set(err, "transfer %lld resolves no hold", (long long)transfer), BF_LEDGER_EINTERNAL;
}

int bf_ledger_statement(bf_ledger_t *self, int64_t user_id, bf_ledger_currency_t currency, int64_t from,
                        int64_t to, bf_ledger_statement_t *out, bf_err_t *err) {
    memset(out, 0, sizeof *out);
    out->user_id = user_id;
    out->currency = currency;
    out->from = from;
    out->to = to;
    if (to < from) return bf_err_set(err, "statement ends before it starts"), BF_LEDGER_EINVAL;
    if (currency != BF_LEDGER_CNY && currency != BF_LEDGER_COIN) return bf_err_set(err, "unknown currency"), BF_LEDGER_EINVAL;
    int64_t account = 0;
    int rc = statement_account(self, user_id, currency, &account, err);
    if (rc) return rc;
    bf_ledger_entry_t *e = NULL;
    size_t n = 0;
    if ((rc = bf_ledger_history(self, user_id, &e, &n, err))) return rc;
    sqlite3_stmt *q = NULL;
    if (!self->pg && sqlite3_prepare_v2(self->db,
                                        "SELECT p.amount, p.debit_account FROM transfers t JOIN transfers p ON"
                                        " p.id = t.pending_id WHERE t.id = ?1",
                                        -1, &q, NULL) != SQLITE_OK) {
        free(e);
        return ledger_sqlerr(self, err, "transfers");
    }
    out->lines = n ? malloc(n * sizeof *out->lines) : NULL;
    if (n && !out->lines) rc = (bf_err_set(err, "out of memory"), BF_LEDGER_EINTERNAL);
    /* The whole history in ledger order: the held amount at any point is the holds placed minus
     * those resolved before it, so it is replayed from the first entry. The window is the run of
     * entries from the first stamped at or after `from` to the first stamped at or after `to`, so
     * opening + lines == closing holds even if the clock ever stepped back. */
    int64_t held = 0;
    int in_window = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        if (e[i].currency != currency) continue;
        int64_t dheld = 0, p = 0;
        int debit = 0;
        if (!strcmp(e[i].type, "pending")) {
            dheld = e[i].amount < 0 ? -e[i].amount : 0;
        } else if (!strcmp(e[i].type, "post") || !strcmp(e[i].type, "void") || !strcmp(e[i].type, "expire")) {
            if (self->pg) {
                int64_t da = 0;
                if ((rc = ledger_pg_resolved_hold(self, e[i].transfer_id, &p, &da, err))) break;
                debit = da == account;
            } else if ((rc = resolved_hold(q, e[i].transfer_id, account, &p, &debit, err))) {
                break;
            }
            dheld = debit ? -p : 0;
        }
        if (!in_window && e[i].created_at >= from) in_window = 1;
        if (!in_window) {
            held += dheld;
            out->opening = out->closing = e[i].balance_after;
            out->opening_held = out->closing_held = held;
            continue;
        }
        if (e[i].created_at >= to) break;
        bf_ledger_statement_line_t *l = &out->lines[out->n++];
        memset(l, 0, sizeof *l);
        l->transfer_id = e[i].transfer_id;
        l->created_at = e[i].created_at;
        memcpy(l->op_id, e[i].op_id, sizeof l->op_id);
        l->type = e[i].type;
        l->code = e[i].code;
        l->balance_before = e[i].balance_before;
        l->balance_after = e[i].balance_after;
        l->amount = e[i].balance_after - e[i].balance_before;
        l->held_before = held;
        held += dheld;
        l->held = dheld;
        l->held_after = held;
        out->closing = l->balance_after;
        out->closing_held = held;
    }
    sqlite3_finalize(q);
    free(e);
    if (rc) bf_ledger_statement_free(out);
    return rc;
}

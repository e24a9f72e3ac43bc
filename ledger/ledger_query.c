/* ledger_query.c: read-only views for the coordinator and the CLI. Each query is one SQL statement
 * (one consistent WAL snapshot) copied into plain C structs the caller owns.
 * Calls: ledger_store.c, and ledger_group_flush (ledger_tx.c) so that inside a group what the
 * group has written behind is in the tables before SQL reads them. */
#include <stdlib.h>
#include <string.h>

#include "ledger_internal.h"

int bf_ledger_currency_scale(bf_ledger_currency_t c) { return c == BF_LEDGER_CNY ? 2 : 0; }

/* Grows a caller-owned array by one element; returns the new slot or NULL. */
static void *grow(void **arr, size_t *n, size_t *cap, size_t elem) {
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 16;
        void *p = realloc(*arr, c * elem);
        if (!p) return NULL;
        *arr = p;
        *cap = c;
    }
    return (char *)*arr + (*n)++ * elem;
}

typedef void (*row_fn)(sqlite3_stmt *s, void *out);

/* Runs sql with up to two int64 parameters and converts every row with fn. */
static int collect(bf_ledger_t *L, const char *sql, int nparams, int64_t p1, int64_t p2, size_t elem,
                   row_fn fn, void **out, size_t *n, bf_err_t *err) {
    sqlite3_stmt *s;
    *out = NULL;
    *n = 0;
    int rc0 = L->in_op ? 0 : ledger_group_flush(L, err); /* a group's accounts are written back lazily */
    if (rc0) return rc0;
    if (sqlite3_prepare_v2(L->db, sql, -1, &s, NULL) != SQLITE_OK) return ledger_sqlerr(L, err, "query");
    if (nparams >= 1) sqlite3_bind_int64(s, 1, p1);
    if (nparams >= 2) sqlite3_bind_int64(s, 2, p2);
    size_t cap = 0;
    int step;
    while ((step = sqlite3_step(s)) == SQLITE_ROW) {
        void *slot = grow(out, n, &cap, elem);
        if (!slot) {
            sqlite3_finalize(s);
            free(*out);
            *out = NULL;
            *n = 0;
            return bf_err_set(err, "out of memory"), BF_LEDGER_EINTERNAL;
        }
        memset(slot, 0, elem);
        fn(s, slot);
    }
    if (step != SQLITE_DONE) {
        int rc = ledger_sqlerr(L, err, "query");
        sqlite3_finalize(s);
        free(*out);
        *out = NULL;
        *n = 0;
        return rc;
    }
    sqlite3_finalize(s);
    return 0;
}

static void copy_text(char *dst, size_t cap, const unsigned char *src) {
    size_t n = src ? strlen((const char *)src) : 0;
    if (n >= cap) n = cap - 1;
    if (n) memcpy(dst, src, n);
    dst[n] = 0;
}

/* Columns dp, cp, dpend, cpend starting at column i. */
static void balance_from(sqlite3_stmt *s, int i, bf_ledger_balance_t *b) {
    int64_t dp = sqlite3_column_int64(s, i), cp = sqlite3_column_int64(s, i + 1);
    b->posted = cp - dp;
    b->pending_debits = sqlite3_column_int64(s, i + 2);
    b->pending_credits = sqlite3_column_int64(s, i + 3);
    b->available = b->posted - b->pending_debits;
}

int bf_ledger_user_find(bf_ledger_t *self, const char *name, int64_t *user_id, bf_err_t *err) {
    LEDGER_PG(self, ledger_pg_user_find(self, name, user_id, err));
    sqlite3_stmt *s = ledger_stmt(self, ST_USER_BY_NAME);
    if (!s) return ledger_sqlerr(self, err, "users");
    sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
    int step = sqlite3_step(s);
    if (step == SQLITE_ROW) *user_id = sqlite3_column_int64(s, 0);
    sqlite3_reset(s);
    if (step == SQLITE_ROW) return 0;
    if (step == SQLITE_DONE) return bf_err_set(err, "unknown user '%s'", name), BF_LEDGER_ENOTFOUND;
    return ledger_sqlerr(self, err, "users");
}

int bf_ledger_user_find_key(bf_ledger_t *self, const char *curve_key, int64_t *user_id, bf_err_t *err) {
    LEDGER_PG(self, ledger_pg_user_find_key(self, curve_key, user_id, err));
    sqlite3_stmt *s = ledger_stmt(self, ST_USER_BY_KEY);
    if (!s) return ledger_sqlerr(self, err, "users");
    sqlite3_bind_text(s, 1, curve_key, -1, SQLITE_STATIC);
    int step = sqlite3_step(s);
    if (step == SQLITE_ROW) *user_id = sqlite3_column_int64(s, 0);
    sqlite3_reset(s);
    if (step == SQLITE_ROW) return 0;
    if (step == SQLITE_DONE) return bf_err_set(err, "no user with this key"), BF_LEDGER_ENOTFOUND;
    return ledger_sqlerr(self, err, "users");
}

#define USER_SQL                                                                              \
    "SELECT u.id, u.name, u.curve_public_key, c.debits_posted, c.credits_posted,"             \
    " c.debits_pending, c.credits_pending, k.debits_posted, k.credits_posted, k.debits_pending," \
    " k.credits_pending FROM users u JOIN accounts c ON c.id = u.cash_account"               \
    " JOIN accounts k ON k.id = u.coin_account"

static void user_row(sqlite3_stmt *s, void *out) {
    bf_ledger_user_t *u = out;
    u->id = sqlite3_column_int64(s, 0);
    copy_text(u->name, sizeof u->name, sqlite3_column_text(s, 1));
    copy_text(u->curve_key, sizeof u->curve_key, sqlite3_column_text(s, 2));
    balance_from(s, 3, &u->cash);
    balance_from(s, 7, &u->coin);
}

int bf_ledger_users(bf_ledger_t *self, bf_ledger_user_t **out, size_t *n, bf_err_t *err) {
    LEDGER_PG(self, ledger_pg_users(self, 0, out, n, err));
    return collect(self, USER_SQL " ORDER BY u.id", 0, 0, 0, sizeof **out, user_row, (void **)out, n, err);
}

int bf_ledger_user_get(bf_ledger_t *self, int64_t user_id, bf_ledger_user_t *out, bf_err_t *err) {
    bf_ledger_user_t *u;
    size_t n;
    int rc = self->pg ? (user_id > 0 ? ledger_pg_users(self, user_id, &u, &n, err) : (u = NULL, n = 0, 0))
                      : collect(self, USER_SQL " WHERE u.id = ?1", 1, user_id, 0, sizeof *u, user_row, (void **)&u, &n, err);
    if (rc) return rc;
    if (n == 0) return bf_err_set(err, "unknown user %lld", (long long)user_id), BF_LEDGER_ENOTFOUND;
    *out = u[0];
    free(u);
    return 0;
}

int bf_ledger_balance(bf_ledger_t *self, int64_t user_id, bf_ledger_currency_t currency,
                      bf_ledger_balance_t *out, bf_err_t *err) {
    bf_ledger_user_t u;
    int rc = bf_ledger_user_get(self, user_id, &u, err);
    if (rc) return rc;
    *out = currency == BF_LEDGER_COIN ? u.coin : u.cash;
    return 0;
}

static void account_row(sqlite3_stmt *s, void *out) {
    bf_ledger_account_t *a = out;
    a->id = sqlite3_column_int64(s, 0);
    a->kind = (bf_ledger_account_kind_t)sqlite3_column_int(s, 1);
    a->currency = (bf_ledger_currency_t)sqlite3_column_int(s, 2);
    a->owner = sqlite3_column_int64(s, 3);
    balance_from(s, 4, &a->balance);
}

int bf_ledger_accounts(bf_ledger_t *self, bf_ledger_account_t **out, size_t *n, bf_err_t *err) {
    LEDGER_PG(self, ledger_pg_accounts(self, out, n, err));
    return collect(self,
                   "SELECT id, kind, currency, owner, debits_posted, credits_posted, debits_pending,"
                   " credits_pending FROM accounts ORDER BY id",
                   0, 0, 0, sizeof **out, account_row, (void **)out, n, err);
}

static void task_row(sqlite3_stmt *s, void *out) {
    bf_ledger_task_t *t = out;
    t->id = sqlite3_column_int64(s, 0);
    t->creator = sqlite3_column_int64(s, 1);
    copy_text(t->name, sizeof t->name, sqlite3_column_text(s, 2));
    t->mode = (bf_ledger_mode_t)sqlite3_column_int(s, 3);
    t->status = (bf_ledger_task_status_t)sqlite3_column_int(s, 4);
    t->model_online = sqlite3_column_int(s, 5);
    t->usage_fee = sqlite3_column_int64(s, 6);
    t->reward_pool = sqlite3_column_int64(s, 7);
    t->total_revenue = sqlite3_column_int64(s, 8);
    t->platform_fee_ppm = sqlite3_column_int64(s, 9);
    t->escrow_balance = sqlite3_column_int64(s, 10);
    copy_text(t->result_hash, sizeof t->result_hash, sqlite3_column_text(s, 11));
}

int bf_ledger_task_get(bf_ledger_t *self, int64_t task_id, bf_ledger_task_t *out, bf_err_t *err) {
    LEDGER_PG(self, ledger_pg_task_get(self, task_id, out, err));
    bf_ledger_task_t *t;
    size_t n;
    int rc = collect(self,
                     "SELECT t.id, t.creator, t.name, t.payment_mode, t.status, t.model_status, t.usage_fee,"
                     " t.reward_pool, t.total_revenue, t.platform_fee_ppm,"
                     " e.credits_posted - e.debits_posted, t.result_hash"
                     " FROM tasks t JOIN accounts e ON e.id = t.escrow_account WHERE t.id = ?1",
                     1, task_id, 0, sizeof *t, task_row, (void **)&t, &n, err);
    if (rc) return rc;
    if (n == 0) return bf_err_set(err, "unknown task %lld", (long long)task_id), BF_LEDGER_ENOTFOUND;
    *out = t[0];
    free(t);
    return 0;
}

static const char *type_name(int t) {
    static const char *const names[] = {"?", "posted", "pending", "post", "void", "expire"};
    return t >= 1 && t <= 5 ? names[t] : names[0];
}

static const char *code_name(int c) {
    static const char *const names[] = {"?",          "register_bonus", "recharge",   "spend_coins", "task_fund",
                                        "task_refund", "reward",        "usage_fee", "fee_payout", "withdrawal"};
    return c >= 1 && c <= 9 ? names[c] : names[0];
}

/* Walks one account's transfers newest first through the debit_prev/credit_prev links. */
static int walk_account(bf_ledger_t *L, int64_t account, bf_ledger_entry_t **out, size_t *n, size_t *cap,
                        bf_err_t *err) {
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(L->db,
                           "SELECT t.id, t.created_at, o.op_key, t.type, t.code, t.currency, t.debit_account,"
                           " t.amount, t.debit_account, t.credit_account, t.debit_before, t.debit_after,"
                           " t.credit_before, t.credit_after, t.debit_prev, t.credit_prev, t.legs"
                           " FROM transfers t JOIN ops o ON o.id = t.op WHERE t.id = ?1",
                           -1, &s, NULL) != SQLITE_OK)
        return ledger_sqlerr(L, err, "transfers");
    sqlite3_stmt *a;
    int64_t next = 0;
    if (sqlite3_prepare_v2(L->db, "SELECT last_transfer FROM accounts WHERE id = ?1", -1, &a, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(a, 1, account);
        if (sqlite3_step(a) == SQLITE_ROW) next = sqlite3_column_int64(a, 0);
        sqlite3_finalize(a);
    }
    int rc = 0;
    while (next > 0 && rc == 0) {
        sqlite3_bind_int64(s, 1, next);
        if (sqlite3_step(s) != SQLITE_ROW) {
            rc = (bf_err_set(err, "transfer %lld missing from account %lld's history", (long long)next,
                             (long long)account),
                  BF_LEDGER_EINTERNAL);
            break;
        }
        bf_ledger_entry_t *e = grow((void **)out, n, cap, sizeof *e);
        if (!e) {
            rc = (bf_err_set(err, "out of memory"), BF_LEDGER_EINTERNAL);
            break;
        }
        memset(e, 0, sizeof *e);
        int is_debit = sqlite3_column_int64(s, 8) == account;
        int64_t amount = sqlite3_column_int64(s, 7);
        e->transfer_id = sqlite3_column_int64(s, 0);
        e->created_at = sqlite3_column_int64(s, 1);
        copy_text(e->op_id, sizeof e->op_id, sqlite3_column_text(s, 2));
        e->type = type_name(sqlite3_column_int(s, 3));
        e->code = code_name(sqlite3_column_int(s, 4));
        e->currency = (bf_ledger_currency_t)sqlite3_column_int(s, 5);
        e->amount = is_debit ? -amount : amount;
        e->counterparty_account = sqlite3_column_int64(s, is_debit ? 9 : 8);
        e->balance_before = sqlite3_column_int64(s, is_debit ? 10 : 12);
        e->balance_after = sqlite3_column_int64(s, is_debit ? 11 : 13);
        int64_t prev = sqlite3_column_int64(s, is_debit ? 14 : 15);
        const unsigned char *legs = sqlite3_column_blob(s, 16);
        size_t nlegs = (size_t)sqlite3_column_bytes(s, 16) / LEDGER_LEG_BYTES;
        if (legs && nlegs) {
            /* A split: the debit side is the row's; a credit is one of its legs. */
            e->counterparty_account = is_debit ? 0 : sqlite3_column_int64(s, 8);
            int found = is_debit;
            for (size_t i = 0; i < nlegs && !found; i++) {
                ledger_leg_t g;
                ledger_leg_get(legs, i, &g);
                if (g.account != account) continue;
                found = 1;
                e->amount = g.amount;
                e->balance_before = g.before;
                e->balance_after = g.before + g.amount;
                prev = g.prev;
            }
            if (!found) prev = next; /* reported as a loop below */
        }
        if (prev >= next) rc = (bf_err_set(err, "history links of account %lld loop", (long long)account), BF_LEDGER_EINTERNAL);
        next = prev;
        sqlite3_reset(s);
    }
    sqlite3_finalize(s);
    return rc;
}

static int entry_cmp(const void *a, const void *b) {
    int64_t x = ((const bf_ledger_entry_t *)a)->transfer_id, y = ((const bf_ledger_entry_t *)b)->transfer_id;
    return (x > y) - (x < y);
}

int bf_ledger_history(bf_ledger_t *self, int64_t user_id, bf_ledger_entry_t **out, size_t *n,
                      bf_err_t *err) {
    LEDGER_PG(self, ledger_pg_history(self, user_id, out, n, err));
    *out = NULL;
    *n = 0;
    sqlite3_stmt *s = ledger_stmt(self, ST_USER_GET);
    if (!s) return ledger_sqlerr(self, err, "users");
    sqlite3_bind_int64(s, 1, user_id);
    int64_t acct[2] = {0, 0};
    int step = sqlite3_step(s);
    if (step == SQLITE_ROW) {
        acct[0] = sqlite3_column_int64(s, 3);
        acct[1] = sqlite3_column_int64(s, 4);
    }
    sqlite3_reset(s);
    if (step == SQLITE_DONE) return bf_err_set(err, "unknown user %lld", (long long)user_id), BF_LEDGER_ENOTFOUND;
    if (step != SQLITE_ROW) return ledger_sqlerr(self, err, "users");
    int rc0 = ledger_group_flush(self, err);
    if (rc0) return rc0;
    /* One read transaction so both walks see the same snapshot. */
    int own_tx = sqlite3_get_autocommit(self->db);
    if (own_tx) sqlite3_exec(self->db, "BEGIN", NULL, NULL, NULL);
    size_t cap = 0;
    int rc = walk_account(self, acct[0], out, n, &cap, err);
    if (!rc) rc = walk_account(self, acct[1], out, n, &cap, err);
    if (own_tx) sqlite3_exec(self->db, "COMMIT", NULL, NULL, NULL);
    if (rc) {
        free(*out);
        *out = NULL;
        *n = 0;
        return rc;
    }
    if (*n) qsort(*out, *n, sizeof **out, entry_cmp);
    return 0;
}

static void share_row(sqlite3_stmt *s, void *out) {
    bf_ledger_share_t *h = out;
    h->task_id = sqlite3_column_int64(s, 0);
    h->user_id = sqlite3_column_int64(s, 1);
    h->weight = sqlite3_column_int64(s, 2);
    h->ppm = sqlite3_column_int64(s, 3);
    /* received: the holder's slot (rank by cash account within its task) in tasks.payout_state. */
    int64_t slot = sqlite3_column_int64(s, 4);
    const unsigned char *b = sqlite3_column_blob(s, 5);
    int nb = sqlite3_column_bytes(s, 5);
    h->received = b && slot >= 0 && (slot + 1) * 8 <= nb ? ledger_get_be64(b + 8 * slot) : 0;
}

#define SHARE_SQL                                                                                 \
    "SELECT s.task_id, s.user_id, s.weight, s.ppm,"                                               \
    " (SELECT count(*) FROM model_shareholdings o WHERE o.task_id = s.task_id"                     \
    "   AND o.cash_account < s.cash_account), t.payout_state"                                      \
    " FROM model_shareholdings s JOIN tasks t ON t.id = s.task_id"

int bf_ledger_task_shares(bf_ledger_t *self, int64_t task_id, bf_ledger_share_t **out, size_t *n,
                          bf_err_t *err) {
    LEDGER_PG(self, ledger_pg_shares(self, task_id, 0, out, n, err));
    return collect(self, SHARE_SQL " WHERE s.task_id = ?1 ORDER BY s.user_id", 1, task_id, 0, sizeof **out,
                   share_row, (void **)out, n, err);
}

int bf_ledger_user_shares(bf_ledger_t *self, int64_t user_id, bf_ledger_share_t **out, size_t *n,
                          bf_err_t *err) {
    LEDGER_PG(self, ledger_pg_shares(self, 0, user_id, out, n, err));
    return collect(self, SHARE_SQL " WHERE s.user_id = ?1 ORDER BY s.task_id", 1, user_id, 0, sizeof **out,
                   share_row, (void **)out, n, err);
}

static void usage_row(sqlite3_stmt *s, void *out) {
    bf_ledger_usage_t *u = out;
    u->hold_id = sqlite3_column_int64(s, 0);
    u->task_id = sqlite3_column_int64(s, 1);
    u->payer_id = sqlite3_column_int64(s, 2);
    u->held = sqlite3_column_int64(s, 3);
    u->captured = sqlite3_column_int64(s, 4);
    u->status = (bf_ledger_hold_status_t)sqlite3_column_int(s, 5);
    u->created_at = sqlite3_column_int64(s, 6);
    u->expires_at = sqlite3_column_int64(s, 7);
}

#define USAGE_SQL "SELECT id, task_id, payer, held, captured, status, created_at, expires_at FROM model_usage"

int bf_ledger_hold_get(bf_ledger_t *self, int64_t hold_id, bf_ledger_usage_t *out, bf_err_t *err) {
    bf_ledger_usage_t *u;
    size_t n;
    int rc = self->pg ? (hold_id > 0 ? ledger_pg_usage(self, 0, hold_id, &u, &n, err) : (u = NULL, n = 0, 0))
                      : collect(self, USAGE_SQL " WHERE id = ?1", 1, hold_id, 0, sizeof *u, usage_row, (void **)&u, &n, err);
    if (rc) return rc;
    if (n == 0) return bf_err_set(err, "unknown hold %lld", (long long)hold_id), BF_LEDGER_ENOTFOUND;
    *out = u[0];
    free(u);
    return 0;
}

int bf_ledger_usage(bf_ledger_t *self, int64_t task_id, bf_ledger_usage_t **out, size_t *n,
                    bf_err_t *err) {
    if (self->pg && task_id <= 0) return *out = NULL, *n = 0, 0;
    LEDGER_PG(self, ledger_pg_usage(self, task_id, 0, out, n, err));
    return collect(self, USAGE_SQL " WHERE task_id = ?1 ORDER BY id", 1, task_id, 0, sizeof **out,
                   usage_row, (void **)out, n, err);
}

/* The note bf_ledger_fee_settle stored with a hold; reads no account, so no group flush. */
int bf_ledger_usage_note(bf_ledger_t *self, int64_t hold_id, int64_t *images, int64_t *classified,
                         void **result, size_t *len, bf_err_t *err) {
    bf_err_t e0;
    if (!err) err = &e0;
    if (result) *result = NULL;
    if (len) *len = 0;
    LEDGER_PG(self, ledger_pg_usage_note(self, hold_id, images, classified, result, len, err));
    sqlite3_stmt *s = ledger_stmt(self, ST_USAGE_NOTE_GET);
    if (!s) return ledger_sqlerr(self, err, "model_usage");
    sqlite3_bind_int64(s, 1, hold_id);
    int rc = 0, step = sqlite3_step(s);
    if (step == SQLITE_ROW) {
        if (images) *images = sqlite3_column_int64(s, 0);
        if (classified) *classified = sqlite3_column_int64(s, 1);
        const void *b = sqlite3_column_blob(s, 2);
        size_t n = (size_t)sqlite3_column_bytes(s, 2);
        if (result && b && n) {
            if (!(*result = malloc(n))) rc = (bf_err_set(err, "out of memory"), BF_LEDGER_EINTERNAL);
            else memcpy(*result, b, n), *len = n;
        }
    } else if (step == SQLITE_DONE) {
        rc = (bf_err_set(err, "unknown hold %lld", (long long)hold_id), BF_LEDGER_ENOTFOUND);
    } else {
        rc = ledger_sqlerr(self, err, "model_usage");
    }
    sqlite3_reset(s);
    return rc;
}

/* The payout transfers of every captured usage: ids resolve_transfer+1 .. payouts_end of code
 * fee_payout. Before schema 3 that is one transfer per payee; since, one split transfer whose legs
 * are the payees. Either way each payee of each usage is one bf_ledger_revenue_t. */
int bf_ledger_revenues(bf_ledger_t *self, int64_t task_id, int64_t user_id,
                       bf_ledger_revenue_t **out, size_t *n, bf_err_t *err) {
    LEDGER_PG(self, ledger_pg_revenues(self, task_id, user_id, out, n, err));
    *out = NULL;
    *n = 0;
    int rc = ledger_group_flush(self, err);
    if (rc) return rc;
    sqlite3_stmt *s = NULL, *own = NULL;
    if (sqlite3_prepare_v2(self->db,
                           "SELECT t.id, u.id, u.task_id, t.credit_account, t.amount, t.created_at, t.legs,"
                           " a.owner FROM model_usage u"
                           " JOIN transfers t ON t.id > u.resolve_transfer AND t.id <= u.payouts_end"
                           " JOIN accounts a ON a.id = t.credit_account"
                           " WHERE u.status = 2 AND t.code = 8 AND (?1 <= 0 OR u.task_id = ?1) ORDER BY t.id",
                           -1, &s, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(self->db, "SELECT owner FROM accounts WHERE id = ?1", -1, &own, NULL) != SQLITE_OK) {
        rc = ledger_sqlerr(self, err, "revenues");
        sqlite3_finalize(s);
        return rc;
    }
    int own_tx = sqlite3_get_autocommit(self->db);
    if (own_tx) sqlite3_exec(self->db, "BEGIN", NULL, NULL, NULL);
    sqlite3_bind_int64(s, 1, task_id);
    size_t cap = 0;
    int step = SQLITE_DONE;
    while (rc == 0 && (step = sqlite3_step(s)) == SQLITE_ROW) {
        bf_ledger_revenue_t base = {.transfer_id = sqlite3_column_int64(s, 0),
                                    .usage_id = sqlite3_column_int64(s, 1),
                                    .task_id = sqlite3_column_int64(s, 2),
                                    .created_at = sqlite3_column_int64(s, 5)};
        const unsigned char *legs = sqlite3_column_blob(s, 6);
        size_t nlegs = (size_t)sqlite3_column_bytes(s, 6) / LEDGER_LEG_BYTES;
        if (!legs) nlegs = 1;
        for (size_t i = 0; i < nlegs && rc == 0; i++) {
            bf_ledger_revenue_t r = base;
            if (legs) {
                ledger_leg_t g;
                ledger_leg_get(legs, i, &g);
                r.amount = g.amount;
                sqlite3_bind_int64(own, 1, g.account);
                int st = sqlite3_step(own);
                r.user_id = st == SQLITE_ROW ? sqlite3_column_int64(own, 0) : 0;
                sqlite3_reset(own);
                if (st != SQLITE_ROW) {
                    rc = (bf_err_set(err, "transfer %lld credits unknown account %lld", (long long)r.transfer_id,
                                     (long long)g.account),
                          BF_LEDGER_EINTERNAL);
                    break;
                }
            } else {
                r.amount = sqlite3_column_int64(s, 4);
                r.user_id = sqlite3_column_int64(s, 7);
            }
            if (user_id > 0 && r.user_id != user_id) continue;
            bf_ledger_revenue_t *slot = grow((void **)out, n, &cap, sizeof *slot);
            if (!slot) {
                rc = (bf_err_set(err, "out of memory"), BF_LEDGER_EINTERNAL);
                break;
            }
            *slot = r;
        }
    }
    if (rc == 0 && step != SQLITE_DONE) rc = ledger_sqlerr(self, err, "revenues");
    sqlite3_finalize(s);
    sqlite3_finalize(own);
    if (own_tx) sqlite3_exec(self->db, "COMMIT", NULL, NULL, NULL);
    if (rc) {
        free(*out);
        *out = NULL;
        *n = 0;
    }
    return rc;
}

static void reward_row(sqlite3_stmt *s, void *out) {
    bf_ledger_reward_t *r = out;
    r->task_id = sqlite3_column_int64(s, 0);
    r->user_id = sqlite3_column_int64(s, 1);
    r->weight = sqlite3_column_int64(s, 2);
    r->amount = sqlite3_column_int64(s, 3);
    r->transfer_id = sqlite3_column_int64(s, 4);
}

int bf_ledger_rewards(bf_ledger_t *self, int64_t task_id, int64_t user_id, bf_ledger_reward_t **out,
                      size_t *n, bf_err_t *err) {
    if (self->pg) {
        int64_t *v = NULL;
        int rc = ledger_pg_rows(self,
                                "SELECT task_id, user_id, weight, amount, coalesce(transfer, 0) FROM reward_distributions"
                                " WHERE ($1 <= 0 OR task_id = $1) AND ($2 <= 0 OR user_id = $2) ORDER BY id",
                                task_id, user_id, 5, &v, n, err);
        *out = rc || !*n ? NULL : malloc(*n * sizeof **out);
        if (!rc && *n && !*out) rc = (bf_err_set(err, "out of memory"), BF_LEDGER_EINTERNAL);
        for (size_t i = 0; !rc && i < *n; i++)
            (*out)[i] = (bf_ledger_reward_t){v[5 * i], v[5 * i + 1], v[5 * i + 2], v[5 * i + 3], v[5 * i + 4]};
        free(v);
        if (rc) *n = 0;
        return rc;
    }
    return collect(self,
                   "SELECT task_id, user_id, weight, amount, coalesce(transfer, 0) FROM reward_distributions"
                   " WHERE (?1 <= 0 OR task_id = ?1) AND (?2 <= 0 OR user_id = ?2) ORDER BY id",
                   2, task_id, user_id, sizeof **out, reward_row, (void **)out, n, err);
}

static void part_row(sqlite3_stmt *s, void *out) {
    bf_ledger_participation_t *p = out;
    p->task_id = sqlite3_column_int64(s, 0);
    p->user_id = sqlite3_column_int64(s, 1);
    p->joined_at = sqlite3_column_int64(s, 2);
}

int bf_ledger_participations(bf_ledger_t *self, int64_t task_id, int64_t user_id,
                             bf_ledger_participation_t **out, size_t *n, bf_err_t *err) {
    if (self->pg) {
        int64_t *v = NULL;
        int rc = ledger_pg_rows(self,
                                "SELECT task_id, user_id, joined_at FROM participations"
                                " WHERE ($1 <= 0 OR task_id = $1) AND ($2 <= 0 OR user_id = $2) ORDER BY task_id, user_id",
                                task_id, user_id, 3, &v, n, err);
        *out = rc || !*n ? NULL : malloc(*n * sizeof **out);
        if (!rc && *n && !*out) rc = (bf_err_set(err, "out of memory"), BF_LEDGER_EINTERNAL);
        for (size_t i = 0; !rc && i < *n; i++) (*out)[i] = (bf_ledger_participation_t){v[3 * i], v[3 * i + 1], v[3 * i + 2]};
        free(v);
        if (rc) *n = 0;
        return rc;
    }
    return collect(self,
                   "SELECT task_id, user_id, joined_at FROM participations"
                   " WHERE (?1 <= 0 OR task_id = ?1) AND (?2 <= 0 OR user_id = ?2) ORDER BY task_id, user_id",
                   2, task_id, user_id, sizeof **out, part_row, (void **)out, n, err);
}

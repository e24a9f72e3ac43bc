/* ledger_rcache.c: the fee path's cache (task row, holders, payout state, payers' cash accounts)
 * and the payout that reads and updates it. It lives no longer than one write transaction, and it
 * learns where transactions and ops begin and end only from the op frame (ledger_tx.c), which
 * calls ledger_rcache_op_start, _abort, _flush and _drop: storage never calls up into it, as
 * TigerBeetle's groove cache sits below its state machine.
 * Calls: ledger_store.c only (and bf_money_apportion from libbfshared). */
#include <stdlib.h>
#include <string.h>

#include "ledger_internal.h"

/* ---- The fee path's cache -------------------------------------------------------------------- */

/* Inside a group, consecutive fee ops read the same task, holders, payout state and payers. They
 * are read once per transaction and kept here. A capture's new revenue figures (total revenue,
 * platform cut, what each holder has received) are kept here too and written to the tasks row
 * once: before the group commits, before any query on the handle, before any op that is not a fee
 * op (such an op drops the cache: it may change the task), or when a fee op moves on to another
 * task. Alone (outside a group) the row is written at once and the cache dies with the op.
 *
 * A fee op that fails is rolled back to its savepoint, which may undo a write made inside it; so
 * the first time an op changes the cached entry it snapshots it, and a failed op restores the
 * snapshot. */
#define UCACHE_SLOTS 64
typedef struct {
    int64_t user, ppm, cash;
} holder_t;

typedef struct {
    int task_valid;
    ledger_task_row_t task;
    int64_t holders_task; /* task whose holders and paid[] are loaded; 0: none */
    size_t n;             /* holders; arrays hold n + 1 (the platform last) */
    int dirty;            /* task.total_revenue/platform_paid and paid[] not yet in the tasks row */
    holder_t *h;
    int64_t *w, *keys, *paid;
} rc_entry_t;

struct ledger_rcache {
    struct {
        int64_t id, cash;
    } users[UCACHE_SLOTS]; /* direct-mapped by id; id 0: empty */
    rc_entry_t cur, snap;
    int snap_valid; /* snap holds cur as it was when the current op started */
    size_t cap;     /* of every array below and in cur and snap */
    int64_t *add, *acct, *amt;
    unsigned char *blob; /* payout state scratch, 8 n bytes */
};

static void entry_clear(rc_entry_t *e) {
    e->task_valid = 0;
    e->holders_task = 0;
    e->n = 0;
    e->dirty = 0;
}

static void entry_copy(rc_entry_t *dst, const rc_entry_t *src) {
    dst->task_valid = src->task_valid;
    dst->task = src->task;
    dst->holders_task = src->holders_task;
    dst->n = src->n;
    dst->dirty = src->dirty;
    if (!src->holders_task) return;
    memcpy(dst->h, src->h, src->n * sizeof *src->h);
    memcpy(dst->w, src->w, (src->n + 1) * sizeof *src->w);
    memcpy(dst->keys, src->keys, (src->n + 1) * sizeof *src->keys);
    memcpy(dst->paid, src->paid, (src->n + 1) * sizeof *src->paid);
}

void ledger_rcache_drop(bf_ledger_t *L) {
    struct ledger_rcache *c = L->rc;
    if (!c) return;
    memset(c->users, 0, sizeof c->users);
    entry_clear(&c->cur);
    c->snap_valid = 0;
}

void ledger_rcache_free(bf_ledger_t *L) {
    struct ledger_rcache *c = L->rc;
    if (!c) return;
    rc_entry_t *es[2] = {&c->cur, &c->snap};
    for (int i = 0; i < 2; i++) {
        free(es[i]->h);
        free(es[i]->w);
        free(es[i]->keys);
        free(es[i]->paid);
    }
    free(c->add);
    free(c->acct);
    free(c->amt);
    free(c->blob);
    free(c);
    L->rc = NULL;
}

static struct ledger_rcache *rcache(bf_ledger_t *L) {
    if (!L->rc) L->rc = calloc(1, sizeof *L->rc);
    return L->rc;
}

static int rcache_reserve(struct ledger_rcache *c, size_t n) {
    if (n + 1 <= c->cap) return 0;
    size_t cap = n + 1 < 16 ? 16 : n + 1;
    int ok = 1;
    rc_entry_t *es[2] = {&c->cur, &c->snap};
    for (int k = 0; k < 2; k++) {
        holder_t *h = realloc(es[k]->h, cap * sizeof *h);
        if (h) es[k]->h = h;
        else ok = 0;
        int64_t **arr[] = {&es[k]->w, &es[k]->keys, &es[k]->paid};
        for (size_t i = 0; i < sizeof arr / sizeof arr[0]; i++) {
            int64_t *g = realloc(*arr[i], cap * sizeof **arr[i]);
            if (g) *arr[i] = g;
            else ok = 0;
        }
    }
    int64_t **arr[] = {&c->add, &c->acct, &c->amt};
    for (size_t i = 0; i < sizeof arr / sizeof arr[0]; i++) {
        int64_t *g = realloc(*arr[i], cap * sizeof **arr[i]);
        if (g) *arr[i] = g;
        else ok = 0;
    }
    unsigned char *b = realloc(c->blob, 8 * cap);
    if (b) c->blob = b;
    else ok = 0;
    if (!ok) return -1;
    c->cap = cap;
    return 0;
}

/* Before the current op first changes the cached entry. */
static void rcache_snapshot(bf_ledger_t *L, struct ledger_rcache *c) {
    if (!L->in_group || c->snap_valid) return;
    entry_copy(&c->snap, &c->cur);
    c->snap_valid = 1;
}

/* Writes the cached revenue figures of the task to its row. */
static int rcache_write(bf_ledger_t *L, struct ledger_rcache *c, bf_err_t *err) {
    rc_entry_t *e = &c->cur;
    for (size_t i = 0; i < e->n; i++) ledger_put_be64(c->blob + 8 * i, e->paid[i]);
    sqlite3_stmt *s = ledger_stmt(L, ST_TASK_SET_REVENUE);
    if (!s) return ledger_sqlerr(L, err, "tasks");
    sqlite3_bind_int64(s, 1, e->holders_task);
    sqlite3_bind_int64(s, 2, e->task.total_revenue);
    sqlite3_bind_int64(s, 3, e->paid[e->n]);
    sqlite3_bind_blob(s, 4, c->blob, (int)(8 * e->n), SQLITE_STATIC);
    int rc = ledger_exec_stmt(L, s, err);
    if (!rc) e->dirty = 0;
    return rc;
}

int ledger_rcache_flush(bf_ledger_t *L, bf_err_t *err) {
    struct ledger_rcache *c = L->rc;
    return c && c->cur.dirty ? rcache_write(L, c, err) : 0;
}

int ledger_rcache_op_start(bf_ledger_t *L, int fee_op, bf_err_t *err) {
    struct ledger_rcache *c = L->rc;
    if (!c) return 0;
    c->snap_valid = 0;
    if (fee_op) return 0;
    int rc = ledger_rcache_flush(L, err);
    ledger_rcache_drop(L);
    return rc;
}

void ledger_rcache_abort(bf_ledger_t *L) {
    struct ledger_rcache *c = L->rc;
    if (!c) return;
    if (L->in_group && c->snap_valid) entry_copy(&c->cur, &c->snap);
    else if (!L->in_group) ledger_rcache_drop(L);
    c->snap_valid = 0;
}

/* A payer's cash account: user rows never change once registered. */
int ledger_rcache_user_cash(bf_ledger_t *L, int64_t id, int64_t *cash, bf_err_t *err) {
    struct ledger_rcache *c = L->in_group ? rcache(L) : NULL;
    size_t slot = (size_t)((uint64_t)id % UCACHE_SLOTS);
    if (c && id != 0 && c->users[slot].id == id) {
        *cash = c->users[slot].cash;
        return 0;
    }
    ledger_user_row_t u;
    int rc = ledger_user_row(L, id, &u, err);
    if (rc) return rc;
    *cash = u.cash;
    if (c) {
        c->users[slot].id = id;
        c->users[slot].cash = u.cash;
    }
    return 0;
}

/* The task row for the fee path; *cached points at the cache's copy (NULL outside a group). */
int ledger_rcache_task(bf_ledger_t *L, int64_t id, ledger_task_row_t *t, ledger_task_row_t **cached,
                      bf_err_t *err) {
    struct ledger_rcache *c = L->in_group ? rcache(L) : NULL;
    *cached = NULL;
    if (c && c->cur.task_valid && c->cur.task.id == id) {
        *t = c->cur.task;
        *cached = &c->cur.task;
        return 0;
    }
    int rc;
    if (c) {
        /* Moving on to another task: the previous one's revenue goes to its row first. */
        rcache_snapshot(L, c);
        if ((rc = ledger_rcache_flush(L, err))) return rc;
        entry_clear(&c->cur);
    }
    if ((rc = ledger_task_row(L, id, t, err)) || !c) return rc;
    c->cur.task = *t;
    c->cur.task_valid = 1;
    *cached = &c->cur.task;
    return 0;
}

/* ---- The payout ------------------------------------------------------------------------------ */

/* The task's holders in cash-account order, into the read cache; their accounts go straight into
 * the op's cache. */
static int load_holders(bf_ledger_t *L, int64_t task, struct ledger_rcache *c, bf_err_t *err) {
    sqlite3_stmt *s = ledger_stmt(L, ST_SHARES_OF_TASK);
    if (!s) return ledger_sqlerr(L, err, "model_shareholdings");
    sqlite3_bind_int64(s, 1, task);
    size_t k = 0;
    int rc = 0, step;
    while ((step = sqlite3_step(s)) == SQLITE_ROW) {
        if (rcache_reserve(c, k + 1)) {
            rc = (bf_err_set(err, "out of memory"), BF_LEDGER_EINTERNAL);
            break;
        }
        c->cur.h[k].user = sqlite3_column_int64(s, 0);
        c->cur.h[k].ppm = sqlite3_column_int64(s, 1);
        c->cur.h[k].cash = sqlite3_column_int64(s, 2);
        ledger_acct_t row = {.id = c->cur.h[k].cash,
                             .kind = sqlite3_column_int(s, 3),
                             .currency = sqlite3_column_int(s, 4),
                             .owner = sqlite3_column_int64(s, 5),
                             .dp = sqlite3_column_int64(s, 6),
                             .cp = sqlite3_column_int64(s, 7),
                             .dpend = sqlite3_column_int64(s, 8),
                             .cpend = sqlite3_column_int64(s, 9),
                             .last = sqlite3_column_int64(s, 10)};
        if (!ledger_acct_seed(L, &row, err)) {
            rc = BF_LEDGER_EINTERNAL;
            break;
        }
        k++;
    }
    sqlite3_reset(s);
    if (rc) return rc;
    if (step != SQLITE_DONE) return ledger_sqlerr(L, err, "model_shareholdings");
    if (rcache_reserve(c, k)) return bf_err_set(err, "out of memory"), BF_LEDGER_EINTERNAL;
    c->cur.n = k;
    return 0;
}

/* Reads what each of the n holders has received so far (tasks.payout_state; NULL: nothing yet). */
static int load_payout_state(bf_ledger_t *L, int64_t task, size_t n, int64_t *paid, bf_err_t *err) {
    sqlite3_stmt *s = ledger_stmt(L, ST_TASK_PAYOUT_STATE);
    if (!s) return ledger_sqlerr(L, err, "tasks");
    sqlite3_bind_int64(s, 1, task);
    int rc = 0, step = sqlite3_step(s);
    if (step == SQLITE_ROW) {
        const unsigned char *b = sqlite3_column_blob(s, 0);
        int nb = sqlite3_column_bytes(s, 0);
        if (!b || nb == 0) {
            for (size_t i = 0; i < n; i++) paid[i] = 0;
        } else if ((size_t)nb != 8 * n) {
            rc = (bf_err_set(err, "task %lld: payout state has %d bytes for %zu holders", (long long)task, nb, n),
                  BF_LEDGER_EINTERNAL);
        } else {
            for (size_t i = 0; i < n; i++) paid[i] = ledger_get_be64(b + 8 * i);
        }
    } else {
        rc = ledger_sqlerr(L, err, "tasks");
    }
    sqlite3_reset(s);
    return rc;
}

/* Pays `amount` (already in the task's clearing account) to the shareholders and the platform so
 * that everyone's cumulative receipts track total_revenue * weight exactly to within one cent. The
 * payout is one split transfer: the clearing account debited once, one leg per payee. *t (and the
 * cached copy tc, if any) get the new revenue figures. */
int ledger_rcache_distribute(bf_ledger_t *L, ledger_op_t *op, ledger_task_row_t *t, ledger_task_row_t *tc,
                             int64_t amount, bf_err_t *err) {
    if (amount == 0) return 0;
    struct ledger_rcache *c = rcache(L);
    if (!c) return bf_err_set(err, "out of memory"), BF_LEDGER_EINTERNAL;
    rc_entry_t *e = &c->cur;
    int rc;
    rcache_snapshot(L, c);
    if (e->holders_task != t->id) {
        if ((rc = ledger_rcache_flush(L, err))) return rc;
        e->holders_task = 0;
        if ((rc = load_holders(L, t->id, c, err)) || (rc = load_payout_state(L, t->id, e->n, e->paid, err)))
            return rc;
        /* Holder weight ppm*(1e6 - platform ppm), platform weight platform_ppm*1e6: total 1e12. */
        for (size_t i = 0; i < e->n; i++) {
            e->w[i] = e->h[i].ppm * (BF_LEDGER_PPM - t->fee_ppm);
            e->keys[i] = e->h[i].cash;
        }
        e->w[e->n] = t->fee_ppm * BF_LEDGER_PPM;
        e->keys[e->n] = L->rev_cny;
        e->paid[e->n] = t->platform_paid;
        e->holders_task = t->id;
    }
    size_t n = e->n;
    int64_t total_after;
    if (__builtin_add_overflow(t->total_revenue, amount, &total_after))
        return bf_err_set(err, "task revenue overflows"), BF_LEDGER_EOVERFLOW;
    if (bf_money_apportion(n + 1, e->w, e->keys, e->paid, t->total_revenue, amount, c->add))
        return bf_err_set(err, "task %lld: shares or payout state inconsistent", (long long)t->id), BF_LEDGER_EINTERNAL;
    size_t legs = 0;
    for (size_t i = 0; i <= n; i++) {
        if (c->add[i] <= 0) continue;
        c->acct[legs] = e->keys[i];
        c->amt[legs++] = c->add[i];
    }
    if ((rc = ledger_transfer_split(L, op, CODE_FEE_PAYOUT, t->clearing, legs, c->acct, c->amt, NULL, err)))
        return rc;
    for (size_t i = 0; i <= n; i++) e->paid[i] += c->add[i];
    t->total_revenue = total_after;
    t->platform_paid = e->paid[n];
    if (tc) {
        tc->total_revenue = total_after;
        tc->platform_paid = e->paid[n];
    }
    if (L->in_group && tc == &e->task) {
        e->dirty = 1; /* written once, later (see the cache's comment) */
        return 0;
    }
    /* Alone: written now, and the entry lives no longer than the op. */
    e->task = *t;
    rc = rcache_write(L, c, err);
    entry_clear(e);
    return rc;
}

/* ledger_tx.c: transactions. The per-operation frame (fingerprint, idempotency record, savepoint,
 * recorded failures), group commit (many operations in one write transaction) and closing the
 * handle. Starting and ending every transaction, it is the layer that drives the fee cache:
 * flushing it before a group commits or a query reads, dropping it when an op that is not a fee op
 * starts or a transaction ends, restoring it after a rollback.
 * Calls: ledger_store.c and ledger_rcache.c only. */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ledger_internal.h"

/* ---- Group commit ---------------------------------------------------------------------------- */

/* Inside a group: writes back what the group has written behind (the fee cache's revenue figures,
 * then the accounts) before SQL reads the tables or the group commits. Each half is written by
 * its owner: the cache's here, the accounts' by storage (ledger_acct_group_write), so storage never
 * calls up into the cache. */
int ledger_group_flush(bf_ledger_t *L, bf_err_t *err) {
    if (!L->in_group) return 0;
    int rc0 = ledger_rcache_flush(L, err);
    return rc0 ? rc0 : ledger_acct_group_write(L, err);
}

int bf_ledger_group_begin(bf_ledger_t *self, bf_err_t *err) {
    LEDGER_PG(self, ledger_pg_group_begin(self, err));
    assert(!self->in_group && !self->in_op);
    int rc = ledger_exec(self, ST_BEGIN, err);
    if (rc) return rc;
    self->in_group = 1;
    self->head_valid = 0;
    self->next_usage = 0;
    ledger_acct_group_reset(self);
    ledger_rcache_drop(self);
    return 0;
}

int bf_ledger_group_commit(bf_ledger_t *self, bf_err_t *err) {
    LEDGER_PG(self, ledger_pg_group_commit(self, err));
    assert(self->in_group && !self->in_op);
    int rc = ledger_group_flush(self, err);
    if (!rc) rc = ledger_exec(self, ST_COMMIT, err);
    if (rc) bf_ledger_group_rollback(self);
    self->in_group = 0;
    self->head_valid = 0;
    self->next_usage = 0;
    ledger_acct_group_reset(self);
    ledger_rcache_drop(self);
    return rc;
}

void bf_ledger_group_rollback(bf_ledger_t *self) {
    if (self->pg) {
        ledger_pg_group_rollback(self);
        return;
    }
    if (!sqlite3_get_autocommit(self->db)) ledger_exec(self, ST_ROLLBACK, NULL);
    self->in_group = 0;
    self->head_valid = 0;
    self->next_usage = 0;
    ledger_acct_group_reset(self);
    ledger_rcache_drop(self);
}

/* ---- Fingerprints and the op frame ----------------------------------------------------------- */

static void fp_put(ledger_fp_t *f, const void *p, size_t n) {
    if (f->oom) return;
    if (!f->buf) {
        f->buf = f->inl;
        f->cap = sizeof f->inl;
    }
    if (f->len + n > f->cap) {
        size_t cap = f->cap * 2;
        while (cap < f->len + n) cap *= 2;
        unsigned char *b = f->buf == f->inl ? malloc(cap) : realloc(f->buf, cap);
        if (!b) {
            f->oom = 1;
            return;
        }
        if (f->buf == f->inl) memcpy(b, f->inl, f->len);
        f->buf = b;
        f->cap = cap;
    }
    memcpy(f->buf + f->len, p, n);
    f->len += n;
}

static void fp_free(ledger_fp_t *f) {
    if (f->buf != f->inl) free(f->buf);
    f->buf = NULL;
}

void ledger_fp_i64(ledger_fp_t *f, int64_t v) {
    unsigned char b[8];
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)v >> (56 - 8 * i));
    fp_put(f, b, 8);
}

void ledger_fp_bytes(ledger_fp_t *f, const void *b, size_t n) {
    ledger_fp_i64(f, (int64_t)n);
    if (n) fp_put(f, b, n);
}

void ledger_fp_str(ledger_fp_t *f, const char *s) {
    /* NULL and "" differ: length -1 marks NULL. */
    if (!s) {
        ledger_fp_i64(f, -1);
        return;
    }
    size_t n = strlen(s);
    ledger_fp_i64(f, (int64_t)n);
    fp_put(f, s, n);
}

static void drop_op_state(bf_ledger_t *L) {
    L->n_acc = 0;
    L->in_op = 0;
}

/* Ends the transaction the op opened: a savepoint inside a group, or the whole transaction. */
static int end_tx(bf_ledger_t *L, int commit, bf_err_t *err) {
    int rc = 0;
    if (!commit) {
        ledger_exec(L, ST_ROLLBACK_TO, NULL);
        L->head_valid = 0;
        L->next_usage = 0;
        ledger_rcache_abort(L);
    }
    if (!L->in_group) ledger_rcache_drop(L);
    if (ledger_exec(L, ST_RELEASE, err)) rc = BF_LEDGER_EINTERNAL;
    if (!L->in_group) {
        if (commit && !rc) {
            rc = ledger_exec(L, ST_COMMIT, err);
            if (rc) ledger_exec(L, ST_ROLLBACK, NULL);
        } else if (!sqlite3_get_autocommit(L->db)) {
            ledger_exec(L, ST_ROLLBACK, NULL);
        }
        L->head_valid = 0;
        L->next_usage = 0;
    }
    return rc;
}

static int insert_op_row(bf_ledger_t *L, ledger_op_t *op, int rc, const char *msg, bf_err_t *err) {
    sqlite3_stmt *s = ledger_stmt(L, ST_OP_INSERT);
    if (!s) return ledger_sqlerr(L, err, "ops");
    sqlite3_bind_text(s, 1, op->key, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 2, op->kind);
    sqlite3_bind_blob(s, 3, op->fp, 32, SQLITE_STATIC);
    sqlite3_bind_int(s, 4, rc);
    sqlite3_bind_int64(s, 5, op->result);
    if (msg) sqlite3_bind_text(s, 6, msg, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 7, op->now);
    int r = ledger_exec_stmt(L, s, err);
    if (!r) op->row = sqlite3_last_insert_rowid(L->db);
    return r;
}

int ledger_op_start(bf_ledger_t *L, ledger_op_t *op, ledger_fp_t *fp, int *replay_rc,
                    bf_err_t *err) {
    assert(!L->in_op);
    size_t klen = op->key ? strlen(op->key) : 0;
    if (klen == 0 || klen > BF_LEDGER_OP_ID_MAX) {
        fp_free(fp);
        return bf_err_set(err, "op id must be 1..%d bytes", BF_LEDGER_OP_ID_MAX), BF_LEDGER_EINVAL;
    }
    if (fp->oom) {
        fp_free(fp);
        return bf_err_set(err, "out of memory"), BF_LEDGER_EINTERNAL;
    }
    ledger_sha256(L, fp->buf ? (const void *)fp->buf : "", fp->len, NULL, 0, op->fp);
    fp_free(fp);

    int rc;
    if (!L->in_group) {
        if ((rc = ledger_exec(L, ST_BEGIN, err))) return rc;
        L->head_valid = 0;
        L->next_usage = 0;
    }
    /* Only fee operations keep the fee cache: every other op may change a task or its shares. Its
     * pending writes go out here, before the savepoint, so no rollback of this op can undo them. */
    int fee_op = op->kind == OP_FEE_HOLD || op->kind == OP_FEE_CAPTURE || op->kind == OP_FEE_VOID ||
                 op->kind == OP_FEE_CHARGE || op->kind == OP_FEE_SETTLE || op->kind == OP_EXPIRE;
    if ((rc = ledger_rcache_op_start(L, fee_op, err))) {
        if (!L->in_group) ledger_exec(L, ST_ROLLBACK, NULL);
        return rc;
    }
    if ((rc = ledger_exec(L, ST_SAVEPOINT, err))) {
        if (!L->in_group) ledger_exec(L, ST_ROLLBACK, NULL);
        return rc;
    }
    L->in_op = 1;
    L->n_acc = 0;
    op->now = ledger_now(L);
    op->result = 0;

    /* A hold's result is the id of the usage row it will insert; knowing it now lets the op row be
     * written once. Inside a write transaction nobody else inserts usage rows. */
    if (op->usage_result) {
        if (!L->next_usage) {
            sqlite3_stmt *q = ledger_stmt(L, ST_USAGE_NEXT);
            int step = q ? sqlite3_step(q) : SQLITE_ERROR;
            if (step == SQLITE_ROW) L->next_usage = sqlite3_column_int64(q, 0);
            if (q) sqlite3_reset(q);
            if (step != SQLITE_ROW) {
                rc = ledger_sqlerr(L, err, "model_usage");
                end_tx(L, 0, NULL);
                drop_op_state(L);
                return rc;
            }
        }
        op->result0 = L->next_usage;
    }

    /* A new id (the common case) is recorded by one insert; only a known id is read back. */
    sqlite3_stmt *s = ledger_stmt(L, ST_OP_TRY_INSERT);
    if (!s) {
        rc = ledger_sqlerr(L, err, "ops");
        end_tx(L, 0, NULL);
        drop_op_state(L);
        return rc;
    }
    sqlite3_bind_text(s, 1, op->key, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 2, op->kind);
    sqlite3_bind_blob(s, 3, op->fp, 32, SQLITE_STATIC);
    sqlite3_bind_int64(s, 4, op->now);
    sqlite3_bind_int64(s, 5, op->result0);
    if ((rc = ledger_exec_stmt(L, s, err))) {
        end_tx(L, 0, NULL);
        drop_op_state(L);
        return rc;
    }
    if (sqlite3_changes(L->db) == 1) {
        op->row = sqlite3_last_insert_rowid(L->db);
        return 1;
    }
    if (!(s = ledger_stmt(L, ST_OP_GET))) {
        rc = ledger_sqlerr(L, err, "ops");
        end_tx(L, 0, NULL);
        drop_op_state(L);
        return rc;
    }
    sqlite3_bind_text(s, 1, op->key, -1, SQLITE_STATIC);
    int step = sqlite3_step(s);
    if (step == SQLITE_ROW) {
        /* Seen before: same arguments get the recorded outcome, different ones a conflict. */
        const void *fpb = sqlite3_column_blob(s, 2);
        int same = sqlite3_column_int(s, 1) == op->kind && sqlite3_column_bytes(s, 2) == 32 &&
                   fpb && memcmp(fpb, op->fp, 32) == 0;
        if (same) {
            *replay_rc = sqlite3_column_int(s, 3);
            op->result = sqlite3_column_int64(s, 4);
            const unsigned char *m = sqlite3_column_text(s, 5);
            if (*replay_rc != BF_LEDGER_OK) bf_err_set(err, "%s", m ? (const char *)m : "failed");
        } else {
            bf_err_set(err, "op id '%s' was already used with different arguments", op->key);
        }
        sqlite3_reset(s);
        end_tx(L, 0, NULL);
        drop_op_state(L);
        return same ? 0 : BF_LEDGER_ECONFLICT;
    }
    sqlite3_reset(s);
    rc = step == SQLITE_DONE ? (bf_err_set(err, "ops: op id '%s' neither inserted nor found", op->key), BF_LEDGER_EINTERNAL)
                             : ledger_sqlerr(L, err, "ops");
    end_tx(L, 0, NULL);
    drop_op_state(L);
    return rc;
}

static int is_recorded_failure(int rc) {
    return rc != BF_LEDGER_OK && rc != BF_LEDGER_EINTERNAL && rc != BF_LEDGER_EBUSY &&
           rc != BF_LEDGER_ECONFLICT;
}

int ledger_op_finish(bf_ledger_t *L, ledger_op_t *op, int rc, bf_err_t *err) {
    assert(L->in_op);
    if (rc == BF_LEDGER_OK) {
        sqlite3_stmt *s;
        if (op->result != op->result0) {
            if (!(s = ledger_stmt(L, ST_OP_SET_RESULT))) {
                rc = ledger_sqlerr(L, err, "ops");
            } else {
                sqlite3_bind_int64(s, 1, op->row);
                sqlite3_bind_int64(s, 2, op->result);
                rc = ledger_exec_stmt(L, s, err);
            }
        }
        if (rc == 0) rc = ledger_acct_op_write(L, err); /* last: inside a group it cannot be undone */
        if (rc == 0) {
            rc = end_tx(L, 1, err);
            drop_op_state(L);
            return rc;
        }
        /* Storage failed mid-op: fall through to a full rollback, nothing recorded. */
        rc = BF_LEDGER_EINTERNAL;
    }
    ledger_rcache_abort(L);
    if (is_recorded_failure(rc)) {
        /* Undo everything the op did, then remember that this id failed and why, so a retry
         * with the same id gets the same answer even if the world has changed since. */
        char msg[sizeof err->msg];
        snprintf(msg, sizeof msg, "%s", err->msg);
        ledger_exec(L, ST_ROLLBACK_TO, NULL);
        L->head_valid = 0;
        L->next_usage = 0;
        op->result = 0;
        int r = insert_op_row(L, op, rc, msg, NULL);
        if (r == 0) r = end_tx(L, 1, NULL);
        else end_tx(L, 0, NULL);
        bf_err_set(err, "%s", msg);
        drop_op_state(L);
        return r == 0 ? rc : BF_LEDGER_EINTERNAL;
    }
    end_tx(L, 0, NULL);
    drop_op_state(L);
    return rc;
}

/* Runs body once per op_id. *replayed (may be NULL) tells whether the outcome was recorded earlier. */
int ledger_op_run(bf_ledger_t *L, ledger_op_t *op, ledger_fp_t *fp, ledger_op_body_fn body,
                  const void *args, int64_t *result, int *replayed, bf_err_t *err) {
    int replay_rc = 0;
    if (replayed) *replayed = 0;
    int rc = ledger_op_start(L, op, fp, &replay_rc, err);
    if (rc == 0) {
        if (replayed) *replayed = 1;
        if (replay_rc == BF_LEDGER_OK && result) *result = op->result;
        return replay_rc;
    }
    if (rc < 0) return rc;
    rc = body(L, op, args, err);
    rc = ledger_op_finish(L, op, rc, err);
    if (rc == BF_LEDGER_OK && result) *result = op->result;
    return rc;
}

int bf_ledger_op_lookup(bf_ledger_t *self, const char *op_id, int *found, int *rc, int64_t *result,
                        bf_err_t *err) {
    LEDGER_PG(self, ledger_pg_op_lookup(self, op_id, found, rc, result, err));
    sqlite3_stmt *s = ledger_stmt(self, ST_OP_GET);
    if (!s) return ledger_sqlerr(self, err, "ops");
    sqlite3_bind_text(s, 1, op_id, -1, SQLITE_STATIC);
    int step = sqlite3_step(s);
    *found = step == SQLITE_ROW;
    if (*found) {
        if (rc) *rc = sqlite3_column_int(s, 3);
        if (result) *result = sqlite3_column_int64(s, 4);
    }
    sqlite3_reset(s);
    if (step != SQLITE_ROW && step != SQLITE_DONE) return ledger_sqlerr(self, err, "ops");
    return 0;
}

/* ---- Closing the handle ---------------------------------------------------------------------- */

/* Top-down: the fee cache first (storage may not call it), then everything storage owns. */
void bf_ledger_close(bf_ledger_t **self_p) {
    if (!self_p || !*self_p) return;
    ledger_rcache_free(*self_p);
    ledger_pg_close(*self_p);
    ledger_store_free(*self_p);
    *self_p = NULL;
}

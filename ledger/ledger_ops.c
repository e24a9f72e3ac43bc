/* ledger_ops.c: the operations the coordinator calls. Each one fingerprints its arguments, runs its
 * body inside the op frame (ledger_op_run: idempotency, savepoint, recorded failures) and
 * moves money only through ledger_transfer. Bodies return a bf_ledger_rc_t; any non-OK return
 * undoes everything the body did.
 * Calls: ledger_tx.c (the frame), ledger_rcache.c (the fee path's task, payers and payout),
 * ledger_store.c, and bf_ledger_user_find from ledger_query.c. */
#include <assert.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ledger_internal.h"

#define PBKDF2_ITERATIONS 200000

/* ---- Rows the bodies read -------------------------------------------------------------------- */

typedef struct {
    int64_t id, task_id, payer, hold_transfer, held, captured, created_at, expires_at;
    int status;
} usage_row_t;

static int get_usage(bf_ledger_t *L, int64_t id, usage_row_t *u, bf_err_t *err) {
    sqlite3_stmt *s = ledger_stmt(L, ST_USAGE_GET);
    if (!s) return ledger_sqlerr(L, err, "model_usage");
    sqlite3_bind_int64(s, 1, id);
    int step = sqlite3_step(s);
    if (step == SQLITE_ROW) {
        u->id = id;
        u->task_id = sqlite3_column_int64(s, 0);
        u->payer = sqlite3_column_int64(s, 1);
        u->hold_transfer = sqlite3_column_int64(s, 2);
        u->held = sqlite3_column_int64(s, 3);
        u->captured = sqlite3_column_int64(s, 4);
        u->status = sqlite3_column_int(s, 5);
        u->created_at = sqlite3_column_int64(s, 6);
        u->expires_at = sqlite3_column_int64(s, 7);
    }
    sqlite3_reset(s);
    if (step == SQLITE_ROW) return 0;
    if (step == SQLITE_DONE) return bf_err_set(err, "unknown hold %lld", (long long)id), BF_LEDGER_ENOTFOUND;
    return ledger_sqlerr(L, err, "model_usage");
}

/* Compare-and-set of a task's status: exactly one row must change, or the transition is illegal. */
static int task_cas(bf_ledger_t *L, ledger_op_t *op, int64_t task, int from, int to, bf_err_t *err) {
    sqlite3_stmt *s = ledger_stmt(L, ST_TASK_CAS);
    if (!s) return ledger_sqlerr(L, err, "tasks");
    sqlite3_bind_int64(s, 1, task);
    sqlite3_bind_int(s, 2, from);
    sqlite3_bind_int(s, 3, to);
    sqlite3_bind_int64(s, 4, op->now);
    int rc = ledger_exec_stmt(L, s, err);
    if (rc) return rc;
    if (sqlite3_changes(L->db) != 1)
        return bf_err_set(err, "task %lld: illegal transition %d -> %d", (long long)task, from, to),
               BF_LEDGER_ESTATE;
    return 0;
}

static int set_result_hash(bf_ledger_t *L, int64_t task, const char *h, bf_err_t *err) {
    if (!h) return 0;
    sqlite3_stmt *s = ledger_stmt(L, ST_TASK_SET_RESULT);
    if (!s) return ledger_sqlerr(L, err, "tasks");
    sqlite3_bind_int64(s, 1, task);
    sqlite3_bind_text(s, 2, h, -1, SQLITE_STATIC);
    return ledger_exec_stmt(L, s, err);
}

static int posted_transfer(bf_ledger_t *L, ledger_op_t *op, int code, int64_t debit, int64_t credit,
                           int64_t amount, int64_t *id, bf_err_t *err) {
    ledger_xfer_t x = {.type = XF_POSTED, .code = code, .debit = debit, .credit = credit, .amount = amount};
    return ledger_transfer(L, op, &x, id, err);
}

/* ---- Users ----------------------------------------------------------------------------------- */

static int valid_z85_key(const char *k) {
    static const char z85[] =
        "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";
    if (!k || strlen(k) != 40) return 0;
    for (const char *p = k; *p; p++)
        if (!strchr(z85, *p)) return 0;
    return 1;
}

/* "pbkdf2-sha256$ITER$SALTHEX$HASHHEX" so the cost can be raised later without a migration. */
static int hash_password(const char *pw, const unsigned char salt[16], int iter, char out[160]) {
    unsigned char dk[32];
    if (!PKCS5_PBKDF2_HMAC(pw, (int)strlen(pw), salt, 16, iter, EVP_sha256(), 32, dk)) return -1;
    char sh[33], dh[65];
    ledger_hex(salt, 16, sh);
    ledger_hex(dk, 32, dh);
    snprintf(out, 160, "pbkdf2-sha256$%d$%s$%s", iter, sh, dh);
    return 0;
}

static int unhex(const char *s, unsigned char *out, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned v = 0;
        for (int j = 0; j < 2; j++) {
            char c = s[2 * i + j];
            v <<= 4;
            if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
            else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
            else return -1;
        }
        out[i] = (unsigned char)v;
    }
    return s[2 * n] == 0 || s[2 * n] == '$' ? 0 : -1;
}

static int password_matches(const char *stored, const char *pw) {
    int iter = 0;
    char salthex[33];
    if (!pw || sscanf(stored, "pbkdf2-sha256$%d$%32[0-9a-f]$", &iter, salthex) != 2 || iter <= 0) return 0;
    unsigned char salt[16];
    if (unhex(salthex, salt, 16)) return 0;
    char again[160];
    if (hash_password(pw, salt, iter, again)) return 0;
    /* Constant-time compare: the stored hash is a secret an attacker could otherwise probe. */
    size_t a = strlen(again), b = strlen(stored);
    unsigned char diff = (unsigned char)(a != b);
    for (size_t i = 0; i < a && i < b; i++) diff |= (unsigned char)(again[i] ^ stored[i]);
    return diff == 0;
}

typedef struct {
    const char *name, *key, *pw_hash;
} register_args_t;

static int do_register(bf_ledger_t *L, ledger_op_t *op, const void *argp, bf_err_t *err) {
    const register_args_t *a = argp;
    size_t nl = a->name ? strlen(a->name) : 0;
    if (nl == 0 || nl > 64) return bf_err_set(err, "user name must be 1..64 bytes"), BF_LEDGER_EINVAL;
    if (!valid_z85_key(a->key))
        return bf_err_set(err, "CURVE public key must be 40 Z85 characters"), BF_LEDGER_EINVAL;
    int64_t existing, uid, cash, coin;
    if (bf_ledger_user_find(L, a->name, &existing, NULL) == 0)
        return bf_err_set(err, "user name '%s' is taken", a->name), BF_LEDGER_EEXISTS;
    sqlite3_stmt *s = ledger_stmt(L, ST_USER_INSERT);
    if (!s) return ledger_sqlerr(L, err, "users");
    sqlite3_bind_text(s, 1, a->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, a->key, -1, SQLITE_STATIC);
    if (a->pw_hash) sqlite3_bind_text(s, 3, a->pw_hash, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 4, op->now);
    int rc = ledger_exec_stmt(L, s, err);
    if (rc) return rc;
    uid = sqlite3_last_insert_rowid(L->db);
    if ((rc = ledger_acct_create(L, BF_LEDGER_ACCT_USER_CASH, BF_LEDGER_CNY, uid, &cash, err)) ||
        (rc = ledger_acct_create(L, BF_LEDGER_ACCT_USER_COIN, BF_LEDGER_COIN, uid, &coin, err)))
        return rc;
    if (!(s = ledger_stmt(L, ST_USER_SET_ACCOUNTS))) return ledger_sqlerr(L, err, "users");
    sqlite3_bind_int64(s, 1, uid);
    sqlite3_bind_int64(s, 2, cash);
    sqlite3_bind_int64(s, 3, coin);
    if ((rc = ledger_exec_stmt(L, s, err))) return rc;
    if ((rc = posted_transfer(L, op, CODE_REGISTER_BONUS, L->ext_coin, coin, BF_LEDGER_REGISTER_COINS,
                              NULL, err)))
        return rc;
    op->result = uid;
    return 0;
}

int bf_ledger_register_user(bf_ledger_t *self, const char *op_id, const char *name,
                            const char *curve_key, const char *password, int64_t *user_id,
                            bf_err_t *err) {
    bf_err_t e0;
    if (!err) err = &e0;
    if (password && !*password) return bf_err_set(err, "empty password"), BF_LEDGER_EINVAL;
    /* The salted hash is computed before taking the write lock: PBKDF2 is slow on purpose. The
     * fingerprint covers whether a password was given; the password itself is re-checked against
     * the stored hash on replay. */
    char pw_hash[160];
    if (password) {
        unsigned char salt[16];
        if (RAND_bytes(salt, sizeof salt) != 1 || hash_password(password, salt, PBKDF2_ITERATIONS, pw_hash))
            return bf_err_set(err, "password hashing failed"), BF_LEDGER_EINTERNAL;
    }
    ledger_fp_t fp = {0};
    ledger_fp_str(&fp, name);
    ledger_fp_str(&fp, curve_key);
    ledger_fp_i64(&fp, password != NULL);
    ledger_op_t op = {.key = op_id, .kind = OP_REGISTER};
    register_args_t a = {name, curve_key, password ? pw_hash : NULL};
    int replayed = 0;
    int64_t uid = 0;
    int rc = self->pg ? ledger_pg_register(self, op_id, name, curve_key, a.pw_hash, &fp, &uid, &replayed, err)
                      : ledger_op_run(self, &op, &fp, do_register, &a, &uid, &replayed, err);
    if (rc == BF_LEDGER_OK && replayed && password && bf_ledger_check_password(self, uid, password, err) != 1)
        return bf_err_set(err, "op id '%s' was already used with a different password", op_id),
               BF_LEDGER_ECONFLICT;
    if (rc == BF_LEDGER_OK && user_id) *user_id = uid;
    return rc;
}

int bf_ledger_check_password(bf_ledger_t *self, int64_t user_id, const char *password, bf_err_t *err) {
    ledger_user_row_t u;
    int rc = self->pg ? ledger_pg_password(self, user_id, u.pw, sizeof u.pw, err) : ledger_user_row(self, user_id, &u, err);
    if (rc) return rc;
    return u.pw[0] ? password_matches(u.pw, password) : 0;
}

/* ---- Cash and coins -------------------------------------------------------------------------- */

typedef struct {
    int64_t user, amount;
} user_amount_args_t;

static int do_recharge(bf_ledger_t *L, ledger_op_t *op, const void *argp, bf_err_t *err) {
    const user_amount_args_t *a = argp;
    if (a->amount <= 0) return bf_err_set(err, "recharge amount must be positive"), BF_LEDGER_EINVAL;
    ledger_user_row_t u;
    int rc = ledger_user_row(L, a->user, &u, err);
    if (rc) return rc;
    return posted_transfer(L, op, CODE_RECHARGE, L->ext_cny, u.cash, a->amount, &op->result, err);
}

int bf_ledger_recharge(bf_ledger_t *self, const char *op_id, int64_t user_id, int64_t cents,
                       bf_err_t *err) {
    bf_err_t e0;
    if (!err) err = &e0;
    LEDGER_PG(self, ledger_pg_amount_op(self, OP_RECHARGE, op_id, user_id, cents, NULL, err));
    ledger_fp_t fp = {0};
    ledger_fp_i64(&fp, user_id);
    ledger_fp_i64(&fp, cents);
    ledger_op_t op = {.key = op_id, .kind = OP_RECHARGE};
    user_amount_args_t a = {user_id, cents};
    return ledger_op_run(self, &op, &fp, do_recharge, &a, NULL, NULL, err);
}

static int do_spend(bf_ledger_t *L, ledger_op_t *op, const void *argp, bf_err_t *err) {
    const user_amount_args_t *a = argp;
    int64_t coins;
    if (a->amount <= 0) return bf_err_set(err, "block count must be positive"), BF_LEDGER_EINVAL;
    if (__builtin_mul_overflow(a->amount, BF_LEDGER_COINS_PER_BLOCK, &coins))
        return bf_err_set(err, "%lld blocks overflow the coin count", (long long)a->amount),
               BF_LEDGER_EOVERFLOW;
    ledger_user_row_t u;
    int rc = ledger_user_row(L, a->user, &u, err);
    if (rc) return rc;
    op->result = coins;
    return posted_transfer(L, op, CODE_SPEND_COINS, u.coin, L->rev_coin, coins, NULL, err);
}

int bf_ledger_spend_coins(bf_ledger_t *self, const char *op_id, int64_t user_id, int64_t blocks,
                          bf_err_t *err) {
    bf_err_t e0;
    if (!err) err = &e0;
    LEDGER_PG(self, ledger_pg_amount_op(self, OP_SPEND, op_id, user_id, blocks, NULL, err));
    ledger_fp_t fp = {0};
    ledger_fp_i64(&fp, user_id);
    ledger_fp_i64(&fp, blocks);
    ledger_op_t op = {.key = op_id, .kind = OP_SPEND};
    user_amount_args_t a = {user_id, blocks};
    return ledger_op_run(self, &op, &fp, do_spend, &a, NULL, NULL, err);
}

static int do_platform_fee(bf_ledger_t *L, ledger_op_t *op, const void *argp, bf_err_t *err) {
    (void)op;
    int64_t ppm = *(const int64_t *)argp;
    if (ppm < 0 || ppm > BF_LEDGER_PPM) return bf_err_set(err, "platform fee must be 0..1000000 ppm"), BF_LEDGER_EINVAL;
    sqlite3_stmt *s = ledger_stmt(L, ST_META_SET);
    if (!s) return ledger_sqlerr(L, err, "meta");
    sqlite3_bind_text(s, 1, "platform_fee_ppm", -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, ppm);
    return ledger_exec_stmt(L, s, err);
}

int bf_ledger_set_platform_fee(bf_ledger_t *self, const char *op_id, int64_t ppm, bf_err_t *err) {
    bf_err_t e0;
    if (!err) err = &e0;
    LEDGER_PG(self, ledger_pg_set_platform_fee(self, op_id, ppm, err));
    ledger_fp_t fp = {0};
    ledger_fp_i64(&fp, ppm);
    ledger_op_t op = {.key = op_id, .kind = OP_PLATFORM_FEE};
    return ledger_op_run(self, &op, &fp, do_platform_fee, &ppm, NULL, NULL, err);
}

/* ---- Tasks ----------------------------------------------------------------------------------- */

typedef struct {
    int64_t creator;
    const bf_ledger_task_spec_t *spec;
} create_args_t;

static int do_create_task(bf_ledger_t *L, ledger_op_t *op, const void *argp, bf_err_t *err) {
    const create_args_t *a = argp;
    const bf_ledger_task_spec_t *t = a->spec;
    size_t nl = t->name ? strlen(t->name) : 0;
    if (nl == 0 || nl > 128) return bf_err_set(err, "task name must be 1..128 bytes"), BF_LEDGER_EINVAL;
    if (t->mode != BF_LEDGER_MODE_REWARD && t->mode != BF_LEDGER_MODE_SHAREHOLDING)
        return bf_err_set(err, "unknown payment mode %d", (int)t->mode), BF_LEDGER_EINVAL;
    if (t->usage_fee < 0 || t->reward_pool < 0)
        return bf_err_set(err, "usage fee and reward pool must not be negative"), BF_LEDGER_EINVAL;
    if (t->mode == BF_LEDGER_MODE_REWARD && t->reward_pool == 0)
        return bf_err_set(err, "a reward task needs a positive reward pool"), BF_LEDGER_EINVAL;
    if (t->mode == BF_LEDGER_MODE_SHAREHOLDING && t->reward_pool != 0)
        return bf_err_set(err, "a shareholding task has no reward pool"), BF_LEDGER_EINVAL;
    ledger_user_row_t u;
    int64_t fee_ppm, tid, escrow, clearing;
    int rc;
    if ((rc = ledger_user_row(L, a->creator, &u, err)) || (rc = ledger_meta_get(L, "platform_fee_ppm", &fee_ppm, err)))
        return rc;
    sqlite3_stmt *s = ledger_stmt(L, ST_TASK_INSERT);
    if (!s) return ledger_sqlerr(L, err, "tasks");
    sqlite3_bind_int64(s, 1, a->creator);
    sqlite3_bind_text(s, 2, t->name, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 3, t->mode);
    sqlite3_bind_int64(s, 4, t->usage_fee);
    sqlite3_bind_int64(s, 5, t->reward_pool);
    sqlite3_bind_int64(s, 6, fee_ppm);
    sqlite3_bind_int64(s, 7, op->now);
    if ((rc = ledger_exec_stmt(L, s, err))) return rc;
    tid = sqlite3_last_insert_rowid(L->db);
    if ((rc = ledger_acct_create(L, BF_LEDGER_ACCT_TASK_ESCROW, BF_LEDGER_CNY, tid, &escrow, err)) ||
        (rc = ledger_acct_create(L, BF_LEDGER_ACCT_TASK_CLEARING, BF_LEDGER_CNY, tid, &clearing, err)))
        return rc;
    if (!(s = ledger_stmt(L, ST_TASK_SET_ACCOUNTS))) return ledger_sqlerr(L, err, "tasks");
    sqlite3_bind_int64(s, 1, tid);
    sqlite3_bind_int64(s, 2, escrow);
    sqlite3_bind_int64(s, 3, clearing);
    if ((rc = ledger_exec_stmt(L, s, err))) return rc;
    /* The pool moves in the same transaction that creates the task: no task without its money. */
    if (t->mode == BF_LEDGER_MODE_REWARD &&
        (rc = posted_transfer(L, op, CODE_TASK_FUND, u.cash, escrow, t->reward_pool, NULL, err)))
        return rc;
    op->result = tid;
    return 0;
}

int bf_ledger_create_task(bf_ledger_t *self, const char *op_id, int64_t creator_id,
                          const bf_ledger_task_spec_t *spec, int64_t *task_id, bf_err_t *err) {
    bf_err_t e0;
    if (!err) err = &e0;
    LEDGER_PG(self, ledger_pg_create_task(self, op_id, creator_id, spec, task_id, err));
    assert(spec);
    ledger_fp_t fp = {0};
    ledger_fp_i64(&fp, creator_id);
    ledger_fp_str(&fp, spec->name);
    ledger_fp_i64(&fp, spec->mode);
    ledger_fp_i64(&fp, spec->reward_pool);
    ledger_fp_i64(&fp, spec->usage_fee);
    ledger_op_t op = {.key = op_id, .kind = OP_CREATE_TASK};
    create_args_t a = {creator_id, spec};
    return ledger_op_run(self, &op, &fp, do_create_task, &a, task_id, NULL, err);
}

static int do_start_task(bf_ledger_t *L, ledger_op_t *op, const void *argp, bf_err_t *err) {
    ledger_task_row_t t;
    int rc = ledger_task_row(L, *(const int64_t *)argp, &t, err);
    if (rc) return rc;
    return task_cas(L, op, t.id, BF_LEDGER_TASK_CREATED, BF_LEDGER_TASK_RUNNING, err);
}

static int task_op(bf_ledger_t *self, const char *op_id, int kind, int64_t task_id, ledger_op_body_fn body,
                   bf_err_t *err) {
    bf_err_t e0;
    if (!err) err = &e0;
    ledger_fp_t fp = {0};
    ledger_fp_i64(&fp, task_id);
    ledger_op_t op = {.key = op_id, .kind = kind};
    return ledger_op_run(self, &op, &fp, body, &task_id, NULL, NULL, err);
}

int bf_ledger_start_task(bf_ledger_t *self, const char *op_id, int64_t task_id, bf_err_t *err) {
    LEDGER_PG(self, ledger_pg_task_op(self, OP_START_TASK, op_id, task_id, 0, err));
    return task_op(self, op_id, OP_START_TASK, task_id, do_start_task, err);
}

static int do_refund_task(bf_ledger_t *L, ledger_op_t *op, const void *argp, bf_err_t *err) {
    ledger_task_row_t t;
    ledger_user_row_t u;
    int rc = ledger_task_row(L, *(const int64_t *)argp, &t, err);
    if (rc) return rc;
    if (t.status != BF_LEDGER_TASK_CREATED && t.status != BF_LEDGER_TASK_RUNNING)
        return bf_err_set(err, "task %lld cannot be refunded in status %d", (long long)t.id, t.status),
               BF_LEDGER_ESTATE;
    if ((rc = task_cas(L, op, t.id, t.status, BF_LEDGER_TASK_REFUNDED, err)) ||
        (rc = ledger_user_row(L, t.creator, &u, err)))
        return rc;
    ledger_acct_t *e = ledger_acct(L, t.escrow, err);
    if (!e) return BF_LEDGER_EINTERNAL;
    int64_t left = ledger_posted(e);
    if (left > 0 && (rc = posted_transfer(L, op, CODE_TASK_REFUND, t.escrow, u.cash, left, NULL, err)))
        return rc;
    return 0;
}

int bf_ledger_refund_task(bf_ledger_t *self, const char *op_id, int64_t task_id, bf_err_t *err) {
    LEDGER_PG(self, ledger_pg_task_op(self, OP_REFUND_TASK, op_id, task_id, 0, err));
    return task_op(self, op_id, OP_REFUND_TASK, task_id, do_refund_task, err);
}

typedef struct {
    int64_t task, user;
    int64_t flag;
} task_user_args_t;

static int do_join(bf_ledger_t *L, ledger_op_t *op, const void *argp, bf_err_t *err) {
    const task_user_args_t *a = argp;
    ledger_task_row_t t;
    ledger_user_row_t u;
    int rc;
    if ((rc = ledger_task_row(L, a->task, &t, err)) || (rc = ledger_user_row(L, a->user, &u, err))) return rc;
    if (t.status != BF_LEDGER_TASK_CREATED && t.status != BF_LEDGER_TASK_RUNNING)
        return bf_err_set(err, "task %lld no longer accepts participants", (long long)t.id), BF_LEDGER_ESTATE;
    sqlite3_stmt *s = ledger_stmt(L, ST_PART_GET);
    if (!s) return ledger_sqlerr(L, err, "participations");
    sqlite3_bind_int64(s, 1, a->task);
    sqlite3_bind_int64(s, 2, a->user);
    int step = sqlite3_step(s);
    sqlite3_reset(s);
    if (step == SQLITE_ROW)
        return bf_err_set(err, "user %lld already takes part in task %lld", (long long)a->user, (long long)a->task),
               BF_LEDGER_EEXISTS;
    if (step != SQLITE_DONE) return ledger_sqlerr(L, err, "participations");
    if (!(s = ledger_stmt(L, ST_PART_INSERT))) return ledger_sqlerr(L, err, "participations");
    sqlite3_bind_int64(s, 1, a->task);
    sqlite3_bind_int64(s, 2, a->user);
    sqlite3_bind_int64(s, 3, op->now);
    return ledger_exec_stmt(L, s, err);
}

int bf_ledger_join_task(bf_ledger_t *self, const char *op_id, int64_t task_id, int64_t user_id,
                        bf_err_t *err) {
    bf_err_t e0;
    if (!err) err = &e0;
    LEDGER_PG(self, ledger_pg_task_op(self, OP_JOIN_TASK, op_id, task_id, user_id, err));
    ledger_fp_t fp = {0};
    ledger_fp_i64(&fp, task_id);
    ledger_fp_i64(&fp, user_id);
    ledger_op_t op = {.key = op_id, .kind = OP_JOIN_TASK};
    task_user_args_t a = {task_id, user_id, 0};
    return ledger_op_run(self, &op, &fp, do_join, &a, NULL, NULL, err);
}

static int do_model_status(bf_ledger_t *L, ledger_op_t *op, const void *argp, bf_err_t *err) {
    const task_user_args_t *a = argp;
    ledger_task_row_t t;
    int rc = ledger_task_row(L, a->task, &t, err);
    if (rc) return rc;
    if (t.mode != BF_LEDGER_MODE_SHAREHOLDING || t.status != BF_LEDGER_TASK_COMPLETED)
        return bf_err_set(err, "task %lld has no completed shareholding model", (long long)t.id),
               BF_LEDGER_ESTATE;
    sqlite3_stmt *s = ledger_stmt(L, ST_TASK_SET_MODEL);
    if (!s) return ledger_sqlerr(L, err, "tasks");
    sqlite3_bind_int64(s, 1, t.id);
    sqlite3_bind_int(s, 2, a->flag ? 1 : 0);
    sqlite3_bind_int64(s, 3, op->now);
    return ledger_exec_stmt(L, s, err);
}

int bf_ledger_set_model_online(bf_ledger_t *self, const char *op_id, int64_t task_id, int online,
                               bf_err_t *err) {
    bf_err_t e0;
    if (!err) err = &e0;
    LEDGER_PG(self, ledger_pg_task_op(self, OP_MODEL_STATUS, op_id, task_id, online ? 1 : 0, err));
    ledger_fp_t fp = {0};
    ledger_fp_i64(&fp, task_id);
    ledger_fp_i64(&fp, online ? 1 : 0);
    ledger_op_t op = {.key = op_id, .kind = OP_MODEL_STATUS};
    task_user_args_t a = {task_id, 0, online ? 1 : 0};
    return ledger_op_run(self, &op, &fp, do_model_status, &a, NULL, NULL, err);
}

/* ---- Completion: reward split or share allocation -------------------------------------------- */

typedef struct {
    int64_t task;
    size_t n;
    const int64_t *users, *weights;
    const char *result_hash;
    int mode;
} complete_args_t;

/* Checks the participant list and returns each user's cash account (the tie-break key). */
static int load_recipients(bf_ledger_t *L, const complete_args_t *a, int64_t *cash, bf_err_t *err) {
    if (a->n == 0) return bf_err_set(err, "no recipients"), BF_LEDGER_EINVAL;
    if (a->result_hash && strlen(a->result_hash) > 128)
        return bf_err_set(err, "result hash longer than 128 bytes"), BF_LEDGER_EINVAL;
    for (size_t i = 0; i < a->n; i++) {
        for (size_t j = 0; j < i; j++)
            if (a->users[j] == a->users[i])
                return bf_err_set(err, "user %lld listed twice", (long long)a->users[i]), BF_LEDGER_EINVAL;
        ledger_user_row_t u;
        int rc = ledger_user_row(L, a->users[i], &u, err);
        if (rc) return rc;
        cash[i] = u.cash;
    }
    return 0;
}

static int complete_common(bf_ledger_t *L, ledger_op_t *op, const complete_args_t *a, ledger_task_row_t *t,
                           int64_t **cash, int64_t **parts, bf_err_t *err) {
    int rc = ledger_task_row(L, a->task, t, err);
    if (rc) return rc;
    if (t->mode != a->mode)
        return bf_err_set(err, "task %lld is not a %s task", (long long)t->id,
                          a->mode == BF_LEDGER_MODE_REWARD ? "reward" : "shareholding"),
               BF_LEDGER_ESTATE;
    *cash = calloc(a->n ? a->n : 1, sizeof **cash);
    *parts = calloc(a->n ? a->n : 1, sizeof **parts);
    if (!*cash || !*parts) return bf_err_set(err, "out of memory"), BF_LEDGER_EINTERNAL;
    if ((rc = load_recipients(L, a, *cash, err))) return rc;
    if ((rc = task_cas(L, op, t->id, BF_LEDGER_TASK_RUNNING, BF_LEDGER_TASK_COMPLETED, err))) return rc;
    return set_result_hash(L, t->id, a->result_hash, err);
}

static int do_settle_reward(bf_ledger_t *L, ledger_op_t *op, const void *argp, bf_err_t *err) {
    const complete_args_t *a = argp;
    ledger_task_row_t t;
    int64_t *cash = NULL, *parts = NULL;
    int rc = complete_common(L, op, a, &t, &cash, &parts, err);
    if (rc) goto done;
    ledger_acct_t *e = ledger_acct(L, t.escrow, err);
    if (!e) {
        rc = BF_LEDGER_EINTERNAL;
        goto done;
    }
    int64_t pool = ledger_posted(e);
    if (bf_money_split(pool, a->n, a->weights, cash, parts)) {
        rc = (bf_err_set(err, "no positive contribution weight"), BF_LEDGER_EINVAL);
        goto done;
    }
    sqlite3_stmt *s = ledger_stmt(L, ST_REWARD_INSERT);
    if (!s) {
        rc = ledger_sqlerr(L, err, "reward_distributions");
        goto done;
    }
    for (size_t i = 0; i < a->n && !rc; i++) {
        int64_t xid = 0;
        if (parts[i] > 0 && (rc = posted_transfer(L, op, CODE_REWARD, t.escrow, cash[i], parts[i], &xid, err)))
            break;
        sqlite3_bind_int64(s, 1, t.id);
        sqlite3_bind_int64(s, 2, a->users[i]);
        sqlite3_bind_int64(s, 3, a->weights[i]);
        sqlite3_bind_int64(s, 4, parts[i]);
        if (xid) sqlite3_bind_int64(s, 5, xid);
        rc = ledger_exec_stmt(L, s, err);
    }
    if (!rc && (e = ledger_acct(L, t.escrow, err)) && ledger_posted(e) != 0)
        rc = (bf_err_set(err, "escrow not empty after settlement"), BF_LEDGER_EINTERNAL);
done:
    free(cash);
    free(parts);
    return rc;
}

static int do_allocate_shares(bf_ledger_t *L, ledger_op_t *op, const void *argp, bf_err_t *err) {
    const complete_args_t *a = argp;
    ledger_task_row_t t;
    int64_t *cash = NULL, *parts = NULL;
    int rc = complete_common(L, op, a, &t, &cash, &parts, err);
    if (rc) goto done;
    if (bf_money_split(BF_LEDGER_PPM, a->n, a->weights, cash, parts)) {
        rc = (bf_err_set(err, "no positive contribution weight"), BF_LEDGER_EINVAL);
        goto done;
    }
    sqlite3_stmt *s = ledger_stmt(L, ST_SHARE_INSERT);
    if (!s) {
        rc = ledger_sqlerr(L, err, "model_shareholdings");
        goto done;
    }
    for (size_t i = 0; i < a->n && !rc; i++) {
        sqlite3_bind_int64(s, 1, t.id);
        sqlite3_bind_int64(s, 2, cash[i]);
        sqlite3_bind_int64(s, 3, a->users[i]);
        sqlite3_bind_int64(s, 4, a->weights[i]);
        sqlite3_bind_int64(s, 5, parts[i]);
        rc = ledger_exec_stmt(L, s, err);
    }
done:
    free(cash);
    free(parts);
    return rc;
}

static int complete_op(bf_ledger_t *self, const char *op_id, int kind, ledger_op_body_fn body,
                       const complete_args_t *a, bf_err_t *err) {
    bf_err_t e0;
    if (!err) err = &e0;
    if (a->n && (!a->users || !a->weights)) return bf_err_set(err, "missing arrays"), BF_LEDGER_EINVAL;
    ledger_fp_t fp = {0};
    ledger_fp_i64(&fp, a->task);
    ledger_fp_i64(&fp, (int64_t)a->n);
    for (size_t i = 0; i < a->n; i++) {
        ledger_fp_i64(&fp, a->users[i]);
        ledger_fp_i64(&fp, a->weights[i]);
    }
    ledger_fp_str(&fp, a->result_hash);
    ledger_op_t op = {.key = op_id, .kind = kind};
    return ledger_op_run(self, &op, &fp, body, a, NULL, NULL, err);
}

int bf_ledger_settle_reward(bf_ledger_t *self, const char *op_id, int64_t task_id, size_t n,
                            const int64_t *user_ids, const int64_t *weights, const char *result_hash,
                            bf_err_t *err) {
    LEDGER_PG(self, ledger_pg_complete(self, OP_SETTLE_REWARD, op_id, task_id, n, user_ids, weights, result_hash, err));
    complete_args_t a = {task_id, n, user_ids, weights, result_hash, BF_LEDGER_MODE_REWARD};
    return complete_op(self, op_id, OP_SETTLE_REWARD, do_settle_reward, &a, err);
}

int bf_ledger_allocate_shares(bf_ledger_t *self, const char *op_id, int64_t task_id, size_t n,
                              const int64_t *user_ids, const int64_t *weights,
                              const char *result_hash, bf_err_t *err) {
    LEDGER_PG(self, ledger_pg_complete(self, OP_ALLOCATE_SHARES, op_id, task_id, n, user_ids, weights, result_hash, err));
    complete_args_t a = {task_id, n, user_ids, weights, result_hash, BF_LEDGER_MODE_SHAREHOLDING};
    return complete_op(self, op_id, OP_ALLOCATE_SHARES, do_allocate_shares, &a, err);
}

/* ---- Paid predictions: hold, capture + payout, void, expiry ---------------------------------- */

typedef struct {
    int64_t task, payer, amount, timeout, hold;
} fee_args_t;

static int hold_body(bf_ledger_t *L, ledger_op_t *op, const fee_args_t *a, int64_t *hold_id, bf_err_t *err) {
    if (a->amount <= 0) return bf_err_set(err, "fee must be positive"), BF_LEDGER_EINVAL;
    if (a->timeout < 0) return bf_err_set(err, "negative hold timeout"), BF_LEDGER_EINVAL;
    ledger_task_row_t t, *tc;
    int64_t cash;
    int rc;
    if ((rc = ledger_rcache_task(L, a->task, &t, &tc, err)) || (rc = ledger_rcache_user_cash(L, a->payer, &cash, err))) return rc;
    if (t.mode != BF_LEDGER_MODE_SHAREHOLDING || t.status != BF_LEDGER_TASK_COMPLETED || !t.model_online)
        return bf_err_set(err, "task %lld has no online model", (long long)t.id), BF_LEDGER_ESTATE;
    int64_t expires = 0;
    if (a->timeout && __builtin_add_overflow(op->now, a->timeout, &expires))
        return bf_err_set(err, "hold timeout overflows"), BF_LEDGER_EOVERFLOW;
    ledger_xfer_t x = {.type = XF_PENDING, .code = CODE_USAGE_FEE, .debit = cash, .credit = t.clearing,
                       .amount = a->amount, .expires_at = expires};
    int64_t xid;
    if ((rc = ledger_transfer(L, op, &x, &xid, err))) return rc;
    sqlite3_stmt *s = ledger_stmt(L, ST_USAGE_INSERT);
    if (!s) return ledger_sqlerr(L, err, "model_usage");
    sqlite3_bind_int64(s, 1, t.id);
    sqlite3_bind_int64(s, 2, a->payer);
    sqlite3_bind_int64(s, 3, xid);
    sqlite3_bind_int64(s, 4, a->amount);
    sqlite3_bind_int64(s, 5, op->now);
    sqlite3_bind_int64(s, 6, expires);
    if (L->next_usage) sqlite3_bind_int64(s, 7, L->next_usage); /* the id ledger_op_start recorded */
    if ((rc = ledger_exec_stmt(L, s, err))) return rc;
    *hold_id = sqlite3_last_insert_rowid(L->db);
    L->next_usage = *hold_id + 1;
    return 0;
}

/* Which resolutions are still possible for a hold at time `now`. */
static int check_open_hold(const usage_row_t *u, int64_t now, bf_err_t *err) {
    switch (u->status) {
    case BF_LEDGER_HOLD_CAPTURED: return bf_err_set(err, "hold %lld already captured", (long long)u->id), BF_LEDGER_EPOSTED;
    case BF_LEDGER_HOLD_VOIDED: return bf_err_set(err, "hold %lld already voided", (long long)u->id), BF_LEDGER_EVOIDED;
    case BF_LEDGER_HOLD_EXPIRED: return bf_err_set(err, "hold %lld expired", (long long)u->id), BF_LEDGER_EEXPIRED;
    default: break;
    }
    if (u->expires_at > 0 && now >= u->expires_at)
        return bf_err_set(err, "hold %lld expired", (long long)u->id), BF_LEDGER_EEXPIRED;
    return 0;
}

static int resolve_usage(bf_ledger_t *L, int64_t id, int status, int64_t captured, int64_t xid,
                         int64_t payouts_end, bf_err_t *err) {
    sqlite3_stmt *s = ledger_stmt(L, ST_USAGE_RESOLVE);
    if (!s) return ledger_sqlerr(L, err, "model_usage");
    sqlite3_bind_int64(s, 1, id);
    sqlite3_bind_int(s, 2, status);
    sqlite3_bind_int64(s, 3, captured);
    sqlite3_bind_int64(s, 4, xid);
    sqlite3_bind_int64(s, 5, payouts_end);
    int rc = ledger_exec_stmt(L, s, err);
    if (!rc && sqlite3_changes(L->db) != 1)
        return bf_err_set(err, "hold %lld resolved concurrently", (long long)id), BF_LEDGER_EINTERNAL;
    return rc;
}

static int capture_body(bf_ledger_t *L, ledger_op_t *op, int64_t hold_id, int64_t amount, bf_err_t *err) {
    usage_row_t u;
    ledger_task_row_t t, *tc;
    int64_t cash;
    int rc;
    if ((rc = get_usage(L, hold_id, &u, err)) || (rc = check_open_hold(&u, op->now, err))) return rc;
    if (amount < 0) return bf_err_set(err, "negative capture"), BF_LEDGER_EINVAL;
    if (amount > u.held)
        return bf_err_set(err, "capture %lld exceeds hold %lld", (long long)amount, (long long)u.held),
               BF_LEDGER_EEXCEEDS_HOLD;
    if ((rc = ledger_rcache_task(L, u.task_id, &t, &tc, err)) || (rc = ledger_rcache_user_cash(L, u.payer, &cash, err))) return rc;
    ledger_xfer_t x = {.type = XF_POST, .code = CODE_USAGE_FEE, .debit = cash, .credit = t.clearing,
                       .amount = amount, .pending_id = u.hold_transfer, .pending_amount = u.held};
    int64_t post_id;
    if ((rc = ledger_transfer(L, op, &x, &post_id, err)) || (rc = ledger_rcache_distribute(L, op, &t, tc, amount, err)))
        return rc;
    ledger_acct_t *c = ledger_acct(L, t.clearing, err);
    if (!c) return BF_LEDGER_EINTERNAL;
    if (ledger_posted(c) != 0)
        return bf_err_set(err, "clearing account not empty after payout"), BF_LEDGER_EINTERNAL;
    return resolve_usage(L, hold_id, BF_LEDGER_HOLD_CAPTURED, amount, post_id, L->head_id, err);
}

static int do_fee_hold(bf_ledger_t *L, ledger_op_t *op, const void *argp, bf_err_t *err) {
    return hold_body(L, op, argp, &op->result, err);
}

int bf_ledger_fee_hold(bf_ledger_t *self, const char *op_id, int64_t task_id, int64_t payer_id,
                       int64_t amount, int64_t timeout_s, int64_t *hold_id, bf_err_t *err) {
    bf_err_t e0;
    if (!err) err = &e0;
    LEDGER_PG(self, ledger_pg_fee(self, 0, op_id, task_id, payer_id, amount, timeout_s, 0, NULL, hold_id, err));
    ledger_fp_t fp = {0};
    ledger_fp_i64(&fp, task_id);
    ledger_fp_i64(&fp, payer_id);
    ledger_fp_i64(&fp, amount);
    ledger_fp_i64(&fp, timeout_s);
    ledger_op_t op = {.key = op_id, .kind = OP_FEE_HOLD, .usage_result = 1};
    fee_args_t a = {task_id, payer_id, amount, timeout_s, 0};
    return ledger_op_run(self, &op, &fp, do_fee_hold, &a, hold_id, NULL, err);
}

static int do_fee_capture(bf_ledger_t *L, ledger_op_t *op, const void *argp, bf_err_t *err) {
    const fee_args_t *a = argp;
    int rc = capture_body(L, op, a->hold, a->amount, err);
    if (!rc) op->result = a->amount;
    return rc;
}

int bf_ledger_fee_capture(bf_ledger_t *self, const char *op_id, int64_t hold_id, int64_t amount,
                          bf_err_t *err) {
    bf_err_t e0;
    if (!err) err = &e0;
    LEDGER_PG(self, ledger_pg_fee(self, 1, op_id, 0, 0, amount, 0, hold_id, NULL, NULL, err));
    ledger_fp_t fp = {0};
    ledger_fp_i64(&fp, hold_id);
    ledger_fp_i64(&fp, amount);
    ledger_op_t op = {.key = op_id, .kind = OP_FEE_CAPTURE, .result0 = amount};
    fee_args_t a = {0, 0, amount, 0, hold_id};
    return ledger_op_run(self, &op, &fp, do_fee_capture, &a, NULL, NULL, err);
}

/* Void (caller) and expire (sweep) differ only in the transfer type, the final status and whether
 * the hold must already be past its expiry. */
static int release_hold(bf_ledger_t *L, ledger_op_t *op, int64_t hold_id, int expire, bf_err_t *err) {
    usage_row_t u;
    ledger_task_row_t t, *tc;
    int64_t cash;
    int rc;
    if ((rc = get_usage(L, hold_id, &u, err))) return rc;
    if (expire) {
        if (u.status != BF_LEDGER_HOLD_PENDING || u.expires_at == 0 || op->now < u.expires_at)
            return bf_err_set(err, "hold %lld is not an expired pending hold", (long long)hold_id),
                   BF_LEDGER_ESTATE;
    } else if ((rc = check_open_hold(&u, op->now, err))) {
        return rc;
    }
    if ((rc = ledger_rcache_task(L, u.task_id, &t, &tc, err)) || (rc = ledger_rcache_user_cash(L, u.payer, &cash, err))) return rc;
    ledger_xfer_t x = {.type = expire ? XF_EXPIRE : XF_VOID, .code = CODE_USAGE_FEE, .debit = cash,
                       .credit = t.clearing, .amount = u.held, .pending_id = u.hold_transfer,
                       .pending_amount = u.held};
    int64_t xid;
    if ((rc = ledger_transfer(L, op, &x, &xid, err))) return rc;
    return resolve_usage(L, hold_id, expire ? BF_LEDGER_HOLD_EXPIRED : BF_LEDGER_HOLD_VOIDED, 0, xid,
                         xid, err);
}

static int do_fee_void(bf_ledger_t *L, ledger_op_t *op, const void *argp, bf_err_t *err) {
    return release_hold(L, op, ((const fee_args_t *)argp)->hold, 0, err);
}

int bf_ledger_fee_void(bf_ledger_t *self, const char *op_id, int64_t hold_id, bf_err_t *err) {
    bf_err_t e0;
    if (!err) err = &e0;
    LEDGER_PG(self, ledger_pg_fee(self, 2, op_id, 0, 0, 0, 0, hold_id, NULL, NULL, err));
    ledger_fp_t fp = {0};
    ledger_fp_i64(&fp, hold_id);
    ledger_op_t op = {.key = op_id, .kind = OP_FEE_VOID};
    fee_args_t a = {0, 0, 0, 0, hold_id};
    return ledger_op_run(self, &op, &fp, do_fee_void, &a, NULL, NULL, err);
}

/* ---- Settling a paid request: capture or void plus its usage record, one operation ------------ */

typedef struct {
    int64_t hold, amount;
    const bf_ledger_usage_note_t *note;
} settle_args_t;

static int write_note(bf_ledger_t *L, int64_t hold_id, const bf_ledger_usage_note_t *n, bf_err_t *err) {
    sqlite3_stmt *s = ledger_stmt(L, ST_USAGE_NOTE_SET);
    if (!s) return ledger_sqlerr(L, err, "model_usage");
    sqlite3_bind_int64(s, 1, hold_id);
    sqlite3_bind_int64(s, 2, n->images);
    sqlite3_bind_int64(s, 3, n->classified);
    if (n->result_len) sqlite3_bind_blob(s, 4, n->result, (int)n->result_len, SQLITE_STATIC);
    else sqlite3_bind_null(s, 4);
    return ledger_exec_stmt(L, s, err);
}

static int do_fee_settle(bf_ledger_t *L, ledger_op_t *op, const void *argp, bf_err_t *err) {
    const settle_args_t *a = argp;
    int rc = a->amount > 0 ? capture_body(L, op, a->hold, a->amount, err) : release_hold(L, op, a->hold, 0, err);
    if (!rc) rc = write_note(L, a->hold, a->note, err);
    if (!rc) op->result = a->amount;
    return rc;
}

int bf_ledger_fee_settle(bf_ledger_t *self, const char *op_id, int64_t hold_id, int64_t amount,
                         const bf_ledger_usage_note_t *note, bf_err_t *err) {
    bf_err_t e0;
    if (!err) err = &e0;
    if (!note || note->images < 0 || note->classified < 0 || note->classified > note->images ||
        note->result_len > BF_LEDGER_NOTE_MAX || (note->result_len && !note->result))
        return bf_err_set(err, "invalid usage note"), BF_LEDGER_EINVAL;
    if (amount < 0) return bf_err_set(err, "negative capture"), BF_LEDGER_EINVAL;
    LEDGER_PG(self, ledger_pg_fee(self, 4, op_id, 0, 0, amount, 0, hold_id, note, NULL, err));
    ledger_fp_t fp = {0};
    ledger_fp_i64(&fp, hold_id);
    ledger_fp_i64(&fp, amount);
    ledger_fp_i64(&fp, note->images);
    ledger_fp_i64(&fp, note->classified);
    ledger_fp_bytes(&fp, note->result, note->result_len);
    ledger_op_t op = {.key = op_id, .kind = OP_FEE_SETTLE, .result0 = amount};
    settle_args_t a = {hold_id, amount, note};
    return ledger_op_run(self, &op, &fp, do_fee_settle, &a, NULL, NULL, err);
}

static int do_fee_charge(bf_ledger_t *L, ledger_op_t *op, const void *argp, bf_err_t *err) {
    int64_t hold;
    int rc = hold_body(L, op, argp, &hold, err);
    if (!rc) rc = capture_body(L, op, hold, ((const fee_args_t *)argp)->amount, err);
    if (!rc) op->result = hold;
    return rc;
}

int bf_ledger_fee_charge(bf_ledger_t *self, const char *op_id, int64_t task_id, int64_t payer_id,
                         int64_t amount, int64_t *hold_id, bf_err_t *err) {
    bf_err_t e0;
    if (!err) err = &e0;
    LEDGER_PG(self, ledger_pg_fee(self, 3, op_id, task_id, payer_id, amount, 0, 0, NULL, hold_id, err));
    ledger_fp_t fp = {0};
    ledger_fp_i64(&fp, task_id);
    ledger_fp_i64(&fp, payer_id);
    ledger_fp_i64(&fp, amount);
    ledger_op_t op = {.key = op_id, .kind = OP_FEE_CHARGE, .usage_result = 1};
    fee_args_t a = {task_id, payer_id, amount, 0, 0};
    return ledger_op_run(self, &op, &fp, do_fee_charge, &a, hold_id, NULL, err);
}

static int do_expire(bf_ledger_t *L, ledger_op_t *op, const void *argp, bf_err_t *err) {
    return release_hold(L, op, *(const int64_t *)argp, 1, err);
}

int bf_ledger_sweep_expired(bf_ledger_t *self, int64_t *n_expired, bf_err_t *err) {
    bf_err_t e0;
    if (!err) err = &e0;
    if (n_expired) *n_expired = 0;
    LEDGER_PG(self, ledger_pg_sweep(self, n_expired, err));
    /* Collect first (a read), then expire each hold in its own op: the op id "expire:<hold>"
     * makes a sweep that runs twice, or in two processes at once, expire each hold once. */
    sqlite3_stmt *s = ledger_stmt(self, ST_USAGE_EXPIRED);
    if (!s) return ledger_sqlerr(self, err, "model_usage");
    sqlite3_bind_int64(s, 1, ledger_now(self));
    size_t n = 0, cap = 0;
    int64_t *ids = NULL;
    int step;
    while ((step = sqlite3_step(s)) == SQLITE_ROW) {
        if (n == cap) {
            int64_t *g = realloc(ids, (cap = cap ? cap * 2 : 64) * sizeof *ids);
            if (!g) break;
            ids = g;
        }
        ids[n++] = sqlite3_column_int64(s, 0);
    }
    sqlite3_reset(s);
    if (step != SQLITE_DONE) {
        free(ids);
        return ledger_sqlerr(self, err, "model_usage");
    }
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        char key[64];
        snprintf(key, sizeof key, "expire:%lld", (long long)ids[i]);
        ledger_fp_t fp = {0};
        ledger_fp_i64(&fp, ids[i]);
        ledger_op_t op = {.key = key, .kind = OP_EXPIRE};
        int r = ledger_op_run(self, &op, &fp, do_expire, &ids[i], NULL, NULL, err);
        if (r == BF_LEDGER_OK) {
            if (n_expired) (*n_expired)++;
        } else if (r == BF_LEDGER_EINTERNAL || r == BF_LEDGER_EBUSY) {
            rc = r;
        }
        /* Other outcomes (e.g. captured meanwhile by another process) need no action. */
    }
    free(ids);
    return rc;
}

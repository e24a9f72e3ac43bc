/* ledger_internal.h: what the ledger's .c files share and nobody else sees. The ledger is a stack of
 * layers; each calls only the layers below it:
 *   ledger_store.c, ledger_schema.c  storage: the handle, statements, accounts, transfers, hash chain
 *   ledger_rcache.c                  the fee path's cache                          (calls storage)
 *   ledger_tx.c                      op frame, idempotency, group commit   (calls the cache, storage)
 *   ledger_query.c, ledger_ops.c, ledger_withdraw.c, ledger_verify.c   the public API (bf_ledger.h),
 *                                    over all of the above; ledger_ops.c also uses bf_ledger_user_find
 *                                    and ledger_withdraw.c bf_ledger_history (query).
 * First the types every layer uses, then one section per file naming what that file defines. */
#ifndef BF_LEDGER_INTERNAL_H
#define BF_LEDGER_INTERNAL_H

#include <openssl/evp.h>
#include <sqlite3.h>

#include "bf_ledger.h"

/* ==== Types and constants shared by every layer ================================================ */

#define LEDGER_SCHEMA_VERSION 5

/* Transfer types (TigerBeetle's flags as one small integer). */
enum { XF_POSTED = 1, XF_PENDING = 2, XF_POST = 3, XF_VOID = 4, XF_EXPIRE = 5 };
/* Why money moved. */
enum {
    CODE_REGISTER_BONUS = 1,
    CODE_RECHARGE = 2,
    CODE_SPEND_COINS = 3,
    CODE_TASK_FUND = 4,
    CODE_TASK_REFUND = 5,
    CODE_REWARD = 6,
    CODE_USAGE_FEE = 7,
    CODE_FEE_PAYOUT = 8,
    CODE_WITHDRAWAL = 9,
};
/* Operation kinds, part of every idempotency fingerprint. */
enum {
    OP_REGISTER = 1,
    OP_RECHARGE,
    OP_SPEND,
    OP_PLATFORM_FEE,
    OP_CREATE_TASK,
    OP_START_TASK,
    OP_JOIN_TASK,
    OP_REFUND_TASK,
    OP_SETTLE_REWARD,
    OP_ALLOCATE_SHARES,
    OP_MODEL_STATUS,
    OP_FEE_HOLD,
    OP_FEE_CAPTURE,
    OP_FEE_VOID,
    OP_FEE_CHARGE,
    OP_EXPIRE,
    OP_FEE_SETTLE,
    OP_WITHDRAW,
    OP_WITHDRAW_PAYOUT,
    OP_WITHDRAW_REJECT,
};

/* Every cached statement; SQL text lives in ledger_store.c. */
enum {
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_SAVEPOINT,
    ST_RELEASE,
    ST_ROLLBACK_TO,
    ST_OP_GET,
    ST_OP_INSERT,
    ST_OP_TRY_INSERT,
    ST_OP_SET_RESULT,
    ST_ACCT_GET,
    ST_ACCT_UPDATE,
    ST_ACCT_INSERT,
    ST_ACCT_FIND,
    ST_XF_HEAD,
    ST_XF_INSERT,
    ST_XF_GET,
    ST_META_GET,
    ST_META_SET,
    ST_USER_INSERT,
    ST_USER_SET_ACCOUNTS,
    ST_USER_GET,
    ST_USER_BY_NAME,
    ST_USER_BY_KEY,
    ST_TASK_INSERT,
    ST_TASK_SET_ACCOUNTS,
    ST_TASK_GET,
    ST_TASK_CAS,
    ST_TASK_SET_RESULT,
    ST_TASK_SET_MODEL,
    ST_TASK_SET_REVENUE,
    ST_SHARE_INSERT,
    ST_SHARES_OF_TASK,
    ST_TASK_PAYOUT_STATE,
    ST_USAGE_INSERT,
    ST_USAGE_NEXT,
    ST_USAGE_GET,
    ST_USAGE_RESOLVE,
    ST_USAGE_NOTE_SET,
    ST_USAGE_NOTE_GET,
    ST_USAGE_EXPIRED,
    ST_REWARD_INSERT,
    ST_PART_INSERT,
    ST_PART_GET,
    ST_WD_INSERT,
    ST_WD_GET,
    ST_WD_RESOLVE,
    ST_COUNT
};

typedef struct {
    int64_t id, owner;
    int kind, currency;
    int64_t dp, cp, dpend, cpend; /* debits/credits posted, debits/credits pending */
    int64_t last;                 /* id of the last transfer touching the account, 0 if none */
    int dirty;
} ledger_acct_t;

/* The fee path's cache, private to ledger_rcache.c. */
struct ledger_rcache;

struct _bf_ledger_t {
    sqlite3 *db;
    sqlite3_stmt *st[ST_COUNT];
    int in_group; /* bf_ledger_group_begin() opened the write transaction */
    int in_op;
    int64_t (*clock)(void *);
    void *clock_ctx;
    int64_t ext_cny, ext_coin, rev_cny, rev_coin; /* platform account ids, fixed at open */
    EVP_MD *sha256;
    EVP_MD_CTX *md;
    /* Chain head, valid only inside the current write transaction (another process may append
     * between our transactions). */
    int head_valid;
    int64_t head_id;
    unsigned char head_hash[32];
    int64_t next_usage; /* id the next model_usage row gets; 0: unknown. Valid like the head. */
    /* Accounts touched by the current op: loaded once, written back once at the end. */
    ledger_acct_t *acc;
    size_t n_acc, cap_acc;
    /* Inside a group: the accounts committed ops of the group have touched (write-behind; dirty
     * ones are written back before the group commits or anything on this handle reads them).
     * gidx is an open-addressing table of indexes into gacc (-1: empty). */
    ledger_acct_t *gacc;
    size_t n_gacc, cap_gacc;
    int32_t *gidx;
    size_t cap_gidx;
    int g_dirty;
    struct ledger_rcache *rc; /* NULL until a fee op inside a group needs it */
    struct ledger_pg *pg;     /* the PostgreSQL backend (ledger_pg.c); NULL: SQLite (db) */
};

/* The operation being executed: its key, fingerprint of its arguments and its ops row. */
typedef struct {
    const char *key;
    int kind;
    unsigned char fp[32];
    int64_t row;    /* ops.id */
    int64_t now;    /* one timestamp for everything the op writes */
    int64_t result; /* what the op returns (user id, hold id, ...) */
    int64_t result0; /* the result when known from the arguments: recorded with the op row at its
                        start, which saves rewriting the row at the end */
    int usage_result; /* the result is the id of the model_usage row the op inserts (a hold):
                         ledger_op_start predicts it into result0 */
    int replayed;     /* PostgreSQL: the outcome was recorded earlier (set by its op frame) */
} ledger_op_t;

/* Fingerprint builder: canonical big-endian integers and length-prefixed strings. */
typedef struct {
    unsigned char *buf; /* inl while it fits, else malloc'ed */
    size_t len, cap;
    int oom;
    unsigned char inl[128];
} ledger_fp_t;

typedef struct {
    int type, code;
    int64_t debit, credit, amount;
    int64_t pending_id, pending_amount; /* for post/void/expire */
    int64_t expires_at;
} ledger_xfer_t;

/* Canonical encoding of a transfer row, hashed after the previous row's hash. */
typedef struct {
    int64_t id, type, code, currency, debit, credit, amount, pending_id, expires_at, created_at;
    int64_t debit_before, debit_after, credit_before, credit_after;
    int64_t debit_prev, credit_prev;
    /* A split row (schema 3): credit == debit, credit_before/after/prev are 0, and the credits are
     * legs_len/LEDGER_LEG_BYTES legs of (account, amount, balance before, previous transfer), each
     * a big-endian int64. NULL/0 for an ordinary row. */
    const unsigned char *legs;
    size_t legs_len;
} ledger_row_t;
#define LEDGER_LEG_BYTES 32
typedef struct {
    int64_t account, amount, before, prev;
} ledger_leg_t;

/* A users row and a tasks row as the operations and the fee cache read them. */
typedef struct {
    int64_t id, cash, coin;
    char pw[256];
} ledger_user_row_t;

typedef struct {
    int64_t id, creator, usage_fee, reward_pool, total_revenue, fee_ppm, platform_paid;
    int64_t escrow, clearing;
    int mode, status, model_online;
} ledger_task_row_t;

/* ==== ledger_schema.c ========================================================================== */

/* Migration i takes the schema from version i to i+1 (LEDGER_SCHEMA_VERSION entries). */
extern const char *const ledger_migrations[];

/* ==== ledger_store.c =========================================================================== */

sqlite3_stmt *ledger_stmt(bf_ledger_t *L, int which);
/* Steps a statement that returns no row (or whose rows are ignored) and resets it. */
int ledger_exec_stmt(bf_ledger_t *L, sqlite3_stmt *s, bf_err_t *err);
/* ledger_exec_stmt on the cached statement `which` (BEGIN, COMMIT, SAVEPOINT, ...). */
int ledger_exec(bf_ledger_t *L, int which, bf_err_t *err);
int ledger_sqlerr(bf_ledger_t *L, bf_err_t *err, const char *what);
int64_t ledger_now(bf_ledger_t *L);
void ledger_sha256(bf_ledger_t *L, const void *a, size_t na, const void *b, size_t nb,
                   unsigned char out[32]);
void ledger_hex(const unsigned char *b, size_t n, char *out);
/* Meta key/value (integers). */
int ledger_meta_get(bf_ledger_t *L, const char *key, int64_t *v, bf_err_t *err);
/* Frees the handle and all it holds except the fee cache (see bf_ledger_close in ledger_tx.c). */
void ledger_store_free(bf_ledger_t *L);

/* Accounts. */
ledger_acct_t *ledger_acct(bf_ledger_t *L, int64_t id, bf_err_t *err);
/* Puts an account row read by another query into the op's cache (no-op if already cached). */
ledger_acct_t *ledger_acct_seed(bf_ledger_t *L, const ledger_acct_t *row, bf_err_t *err);
int ledger_acct_create(bf_ledger_t *L, int kind, int currency, int64_t owner, int64_t *id,
                       bf_err_t *err);
int ledger_acct_find(bf_ledger_t *L, int kind, int currency, int64_t owner, int64_t *id,
                     bf_err_t *err);
int64_t ledger_posted(const ledger_acct_t *a);
int ledger_acct_restricted(int kind);
/* EFUNDS, with what the account has available and what was needed in its currency's units. */
int ledger_funds_error(bf_err_t *err, int currency, int64_t available, int64_t need);
/* At the end of a successful op: alone, its changed accounts are written now; inside a group they
 * join the group's write-behind copies. */
int ledger_acct_op_write(bf_ledger_t *L, bf_err_t *err);
/* The group's write-behind copies: forgotten (group begin and end), written back (before SQL
 * reads the accounts table or the group commits). */
void ledger_acct_group_reset(bf_ledger_t *L);
int ledger_acct_group_write(bf_ledger_t *L, bf_err_t *err);

/* Rows. ENOTFOUND if there is no such user or task. */
int ledger_user_row(bf_ledger_t *L, int64_t id, ledger_user_row_t *u, bf_err_t *err);
int ledger_task_row(bf_ledger_t *L, int64_t id, ledger_task_row_t *t, bf_err_t *err);

/* Applies a transfer to the cached accounts and appends its hash-chained row. */
int ledger_transfer(bf_ledger_t *L, ledger_op_t *op, const ledger_xfer_t *x, int64_t *id,
                    bf_err_t *err);
/* A split: one posted transfer row debiting `debit` by the sum of amounts[] and crediting each of
 * the n distinct accounts[i] (none equal to debit, all amounts > 0) with amounts[i]. Stored as one
 * hash-chained row whose credit side is the legs blob (LEDGER_LEG_BYTES per leg). */
int ledger_transfer_split(bf_ledger_t *L, ledger_op_t *op, int code, int64_t debit, size_t n,
                          const int64_t *accounts, const int64_t *amounts, int64_t *id, bf_err_t *err);
void ledger_leg_get(const unsigned char *legs, size_t i, ledger_leg_t *out);
/* Payout state blob: n big-endian int64. */
void ledger_put_be64(unsigned char *p, int64_t v);
int64_t ledger_get_be64(const unsigned char *p);
void ledger_row_hash(bf_ledger_t *L, const unsigned char prev[32], const ledger_row_t *r,
                     const char *op_key, unsigned char out[32]);

/* ==== ledger_rcache.c ========================================================================== */
/* The fee path's cache (task row, holders, payout state, payers). Valid only inside one write
 * transaction; the op frame (ledger_tx.c) tells it where ops and transactions begin and end. */

/* Forgets everything (nothing may be pending: see ledger_rcache_flush). */
void ledger_rcache_drop(bf_ledger_t *L);
void ledger_rcache_free(bf_ledger_t *L);
/* Writes pending task revenue figures (inside a group) to the tasks row. */
int ledger_rcache_flush(bf_ledger_t *L, bf_err_t *err);
/* At the start of an op, before its savepoint: any op but a fee op flushes and drops the cache. */
int ledger_rcache_op_start(bf_ledger_t *L, int fee_op, bf_err_t *err);
/* After an op failed and was rolled back to its savepoint: the cache as it was before the op. */
void ledger_rcache_abort(bf_ledger_t *L);
/* A payer's cash account (cached inside a group). */
int ledger_rcache_user_cash(bf_ledger_t *L, int64_t id, int64_t *cash, bf_err_t *err);
/* The task row for the fee path; *cached points at the cache's copy (NULL outside a group). */
int ledger_rcache_task(bf_ledger_t *L, int64_t id, ledger_task_row_t *t, ledger_task_row_t **cached,
                      bf_err_t *err);
/* Pays `amount` (already in the task's clearing account) to the task's shareholders and the
 * platform as one split transfer; *t (and the cached copy tc, if any) get the new revenue figures. */
int ledger_rcache_distribute(bf_ledger_t *L, ledger_op_t *op, ledger_task_row_t *t, ledger_task_row_t *tc,
                             int64_t amount, bf_err_t *err);

/* ==== ledger_tx.c ============================================================================== */

void ledger_fp_i64(ledger_fp_t *f, int64_t v);
void ledger_fp_str(ledger_fp_t *f, const char *s);
void ledger_fp_bytes(ledger_fp_t *f, const void *b, size_t n);

/* Op frame. ledger_op_start returns 1 if the op must run now, 0 if it was replayed (the recorded
 * rc is in *replay_rc), or a negative rc (conflict, busy, internal). ledger_op_finish records the
 * outcome, commits or rolls back, and returns the rc to hand to the caller. */
int ledger_op_start(bf_ledger_t *L, ledger_op_t *op, ledger_fp_t *fp, int *replay_rc,
                    bf_err_t *err);
int ledger_op_finish(bf_ledger_t *L, ledger_op_t *op, int rc, bf_err_t *err);
/* An op's body: returns a bf_ledger_rc_t; any non-OK return undoes everything it did. */
typedef int (*ledger_op_body_fn)(bf_ledger_t *L, ledger_op_t *op, const void *args, bf_err_t *err);
/* Runs body once per op id, inside ledger_op_start/finish. *result gets op->result on success;
 * *replayed (may be NULL) tells whether the outcome was recorded earlier. */
int ledger_op_run(bf_ledger_t *L, ledger_op_t *op, ledger_fp_t *fp, ledger_op_body_fn body,
                  const void *args, int64_t *result, int *replayed, bf_err_t *err);
/* Inside a group: writes back what the group has written behind (the fee cache's revenue figures,
 * the accounts) before SQL reads the tables. A no-op outside a group. */
int ledger_group_flush(bf_ledger_t *L, bf_err_t *err);

/* ==== ledger_query.c, ledger_ops.c, ledger_withdraw.c, ledger_verify.c ========================= */
/* These define the bf_ledger_* functions of bf_ledger.h, and ledger_withdraw.c the op id of a
 * rejection, which verify recomputes: "wrej:ID:" + hex SHA-256 of the reason. */
void ledger_withdraw_reject_key(bf_ledger_t *L, int64_t id, const char *reason, char key[BF_LEDGER_OP_ID_MAX + 1]);

/* ==== ledger_pg.c: the PostgreSQL backend ====================================================== */
/* Each public function of the SQLite layers starts with LEDGER_PG(...): on a PostgreSQL handle it
 * returns the PostgreSQL implementation's answer instead. */
#define LEDGER_PG(L, call)                                                                        \
    do {                                                                                          \
        if ((L)->pg) return (call);                                                               \
    } while (0)

int ledger_pg_url(const char *path);
/* A file at path that names a PostgreSQL ledger (its one line a postgresql:// URL, see
 * bf_ledger_redirect_write): 1 and the URL in url; 0 if path is anything else (a SQLite file, no
 * file, a URL); -1 if the file names one badly. */
int ledger_pg_redirect(const char *path, char *url, size_t cap, bf_err_t *err);
int ledger_pg_open(bf_ledger_t *L, const char *url, bf_err_t *err);
void ledger_pg_close(bf_ledger_t *L);
int ledger_pg_schema_version(bf_ledger_t *L);
int ledger_pg_unsupported(bf_err_t *err, const char *what);
int ledger_pg_group_begin(bf_ledger_t *L, bf_err_t *err);
int ledger_pg_flush(bf_ledger_t *L, bf_err_t *err);
int ledger_pg_group_commit(bf_ledger_t *L, bf_err_t *err);
void ledger_pg_group_rollback(bf_ledger_t *L);
/* pw_hash: the stored form (ledger_ops.c hashes), NULL for none; fp: the op's fingerprint (consumed). */
int ledger_pg_register(bf_ledger_t *L, const char *op_id, const char *name, const char *key, const char *pw_hash,
                       ledger_fp_t *fp, int64_t *user_id, int *replayed, bf_err_t *err);
/* The user's stored password hash ("" when none) into pw. */
int ledger_pg_password(bf_ledger_t *L, int64_t user_id, char *pw, size_t cap, bf_err_t *err);
/* OP_RECHARGE, OP_SPEND (amount: blocks) or OP_WITHDRAW (*result: the withdrawal id). */
int ledger_pg_amount_op(bf_ledger_t *L, int kind, const char *op_id, int64_t user_id, int64_t amount, int64_t *result,
                        bf_err_t *err);
/* A payout (ref) or rejection (reason) of withdrawal id under op id key. */
int ledger_pg_resolve(bf_ledger_t *L, const char *key, int kind, int64_t id, const char *ref, const char *reason,
                      bf_err_t *err);
int ledger_pg_op_lookup(bf_ledger_t *L, const char *op_id, int *found, int *rc, int64_t *result, bf_err_t *err);
int ledger_pg_user_find(bf_ledger_t *L, const char *name, int64_t *id, bf_err_t *err);
int ledger_pg_user_find_key(bf_ledger_t *L, const char *key, int64_t *id, bf_err_t *err);
/* Every user (only <= 0) or the one with id `only`. */
int ledger_pg_users(bf_ledger_t *L, int64_t only, bf_ledger_user_t **out, size_t *n, bf_err_t *err);
int ledger_pg_accounts(bf_ledger_t *L, bf_ledger_account_t **out, size_t *n, bf_err_t *err);
int ledger_pg_user_accounts(bf_ledger_t *L, int64_t id, int64_t *cash, int64_t *coin, bf_err_t *err);
int ledger_pg_history(bf_ledger_t *L, int64_t user_id, bf_ledger_entry_t **out, size_t *n, bf_err_t *err);
int ledger_pg_withdrawals(bf_ledger_t *L, int status, int64_t user_id, bf_ledger_withdrawal_t **out, size_t *n,
                          bf_err_t *err);
int ledger_pg_resolved_hold(bf_ledger_t *L, int64_t transfer, int64_t *amount, int64_t *debit, bf_err_t *err);
/* Verify's rows, streamed in one snapshot: accounts (id, kind, currency, owner, dp, cp, dpend,
 * cpend, last), transfers in id order (op_key and hash NULL when missing), withdrawals (id, hold,
 * amount, status, resolve; ref, reason, the user's cash account, the resolving op's key), the
 * user count, the paid-prediction holds. */
typedef struct {
    void (*account)(void *ctx, const int64_t v[9]);
    void (*transfer)(void *ctx, const ledger_row_t *r, const char *op_key, const unsigned char *hash);
    void (*withdrawal)(void *ctx, const int64_t v[5], const char *ref, const char *reason, int64_t cash,
                       const char *resolve_key);
    void (*users)(void *ctx, int64_t n);
    void (*hold)(void *ctx, const int64_t u[5]); /* model_usage: id, hold transfer, held, captured, status */
    /* then the rows of ledger_tasks_sql and ledger_holdings_sql (ledger_verify.c): 13 integers and
     * the payout state; 8 integers and the payout state (blob NULL when there is none) */
    void (*task)(void *ctx, const int64_t t[13], const unsigned char *blob, int64_t nb);
    void (*holding)(void *ctx, const int64_t h[8], const unsigned char *blob, int64_t nb);
} ledger_pg_scan_t;
extern const char *const ledger_tasks_sql, *const ledger_holdings_sql;
int ledger_pg_scan(bf_ledger_t *L, const ledger_pg_scan_t *s, void *ctx, bf_err_t *err);
int ledger_pg_create_task(bf_ledger_t *L, const char *op_id, int64_t creator, const bf_ledger_task_spec_t *spec,
                          int64_t *task_id, bf_err_t *err);
/* OP_START_TASK, OP_REFUND_TASK, OP_JOIN_TASK (user), OP_MODEL_STATUS (user: 1 online, 0 offline). */
int ledger_pg_task_op(bf_ledger_t *L, int kind, const char *op_id, int64_t task, int64_t user, bf_err_t *err);
/* OP_SETTLE_REWARD or OP_ALLOCATE_SHARES. */
int ledger_pg_complete(bf_ledger_t *L, int kind, const char *op_id, int64_t task, size_t n, const int64_t *users,
                       const int64_t *weights, const char *result_hash, bf_err_t *err);
int ledger_pg_set_platform_fee(bf_ledger_t *L, const char *op_id, int64_t ppm, bf_err_t *err);
/* what: 0 hold, 1 capture, 2 void, 3 charge, 4 settle (note), 5 expire. */
int ledger_pg_fee(bf_ledger_t *L, int what, const char *op_id, int64_t task, int64_t payer, int64_t amount, int64_t timeout,
                  int64_t hold, const bf_ledger_usage_note_t *note, int64_t *result, bf_err_t *err);
int ledger_pg_sweep(bf_ledger_t *L, int64_t *n_expired, bf_err_t *err);
int ledger_pg_task_get(bf_ledger_t *L, int64_t id, bf_ledger_task_t *out, bf_err_t *err);
int ledger_pg_shares(bf_ledger_t *L, int64_t task, int64_t user, bf_ledger_share_t **out, size_t *n, bf_err_t *err);
/* Usage rows of a task (task > 0) or the one hold (hold > 0). */
int ledger_pg_usage(bf_ledger_t *L, int64_t task, int64_t hold, bf_ledger_usage_t **out, size_t *n, bf_err_t *err);
int ledger_pg_rows(bf_ledger_t *L, const char *sql, int64_t p1, int64_t p2, int ncols, int64_t **rows, size_t *n,
                   bf_err_t *err);
int ledger_pg_revenues(bf_ledger_t *L, int64_t task, int64_t user, bf_ledger_revenue_t **out, size_t *n, bf_err_t *err);
int ledger_pg_usage_note(bf_ledger_t *L, int64_t hold, int64_t *images, int64_t *classified, void **result, size_t *len,
                         bf_err_t *err);

#endif

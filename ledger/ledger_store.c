/* ledger_store.c: the storage layer of the ledger, the bottom of its stack. Opening and migrating
 * the database (the migrations are in ledger_schema.c), the statement cache and its SQL, the
 * handle's helpers (errors, clock, SHA-256), the account cache (the op's accounts and a group's
 * write-behind copies), the user and task rows the layers above read, and the one function that
 * moves money (ledger_transfer) together with the hash chain it extends.
 * Calls: SQLite, OpenSSL and libbfshared only. Never the fee cache (ledger_rcache.c), the op frame
 * (ledger_tx.c) or the operations, queries and checks above them: those layers drive storage, and
 * whatever must happen around a transaction (the fee cache's flush, drop and rollback) is done by
 * ledger_tx.c, which starts and ends them. */
#include <assert.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ledger_internal.h"

/* ---- Statements ------------------------------------------------------------------------------ */

/* The SQL of every cached statement, prepared once per handle by ledger_stmt. */
static const char *const sql[ST_COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_SAVEPOINT] = "SAVEPOINT op",
    [ST_RELEASE] = "RELEASE op",
    [ST_ROLLBACK_TO] = "ROLLBACK TO op",
    [ST_OP_GET] = "SELECT id, kind, fingerprint, rc, result, message FROM ops WHERE op_key = ?1",
    [ST_OP_INSERT] = "INSERT INTO ops(op_key, kind, fingerprint, rc, result, message, created_at)"
                     " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    /* The common case (a new op id) in one statement; no row changed means the id is known. */
    [ST_OP_TRY_INSERT] = "INSERT INTO ops(op_key, kind, fingerprint, rc, result, message, created_at)"
                         " VALUES(?1, ?2, ?3, 0, ?5, NULL, ?4) ON CONFLICT(op_key) DO NOTHING",
    [ST_OP_SET_RESULT] = "UPDATE ops SET result = ?2 WHERE id = ?1",
    [ST_ACCT_GET] = "SELECT kind, currency, owner, debits_posted, credits_posted, debits_pending,"
                    " credits_pending, last_transfer FROM accounts WHERE id = ?1",
    [ST_ACCT_UPDATE] = "UPDATE accounts SET debits_posted = ?2, credits_posted = ?3,"
                       " debits_pending = ?4, credits_pending = ?5, last_transfer = ?6 WHERE id = ?1",
    [ST_ACCT_INSERT] = "INSERT INTO accounts(kind, currency, owner) VALUES(?1, ?2, ?3)",
    [ST_ACCT_FIND] = "SELECT id FROM accounts WHERE kind = ?1 AND currency = ?2 AND owner = ?3",
    [ST_XF_HEAD] = "SELECT id, hash FROM transfers ORDER BY id DESC LIMIT 1",
    [ST_XF_INSERT] = "INSERT INTO transfers(id, op, type, code, currency, debit_account,"
                     " credit_account, amount, pending_id, expires_at, created_at, debit_before,"
                     " debit_after, credit_before, credit_after, debit_prev, credit_prev, hash, legs)"
                     " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
    [ST_XF_GET] = "SELECT type, code, currency, debit_account, credit_account, amount, expires_at"
                  " FROM transfers WHERE id = ?1",
    [ST_META_GET] = "SELECT value FROM meta WHERE key = ?1",
    [ST_META_SET] = "INSERT INTO meta(key, value) VALUES(?1, ?2)"
                    " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    [ST_USER_INSERT] = "INSERT INTO users(name, curve_public_key, password_hash, cash_account,"
                       " coin_account, created_at) VALUES(?1, ?2, ?3, 0, 0, ?4)",
    [ST_USER_SET_ACCOUNTS] = "UPDATE users SET cash_account = ?2, coin_account = ?3 WHERE id = ?1",
    [ST_USER_GET] = "SELECT name, curve_public_key, password_hash, cash_account, coin_account"
                    " FROM users WHERE id = ?1",
    [ST_USER_BY_NAME] = "SELECT id FROM users WHERE name = ?1",
    [ST_USER_BY_KEY] = "SELECT id FROM users WHERE curve_public_key = ?1 ORDER BY id LIMIT 1",
    [ST_TASK_INSERT] = "INSERT INTO tasks(creator, name, payment_mode, usage_fee, reward_pool, status,"
                       " model_status, total_revenue, platform_fee_ppm, platform_paid, result_hash,"
                       " escrow_account, clearing_account, created_at, updated_at)"
                       " VALUES(?1, ?2, ?3, ?4, ?5, 1, 0, 0, ?6, 0, NULL, 0, 0, ?7, ?7)",
    [ST_TASK_SET_ACCOUNTS] = "UPDATE tasks SET escrow_account = ?2, clearing_account = ?3 WHERE id = ?1",
    [ST_TASK_GET] = "SELECT creator, name, payment_mode, usage_fee, reward_pool, status, model_status,"
                    " total_revenue, platform_fee_ppm, platform_paid, result_hash, escrow_account,"
                    " clearing_account FROM tasks WHERE id = ?1",
    [ST_TASK_CAS] = "UPDATE tasks SET status = ?3, updated_at = ?4 WHERE id = ?1 AND status = ?2",
    [ST_TASK_SET_RESULT] = "UPDATE tasks SET result_hash = ?2 WHERE id = ?1",
    [ST_TASK_SET_MODEL] = "UPDATE tasks SET model_status = ?2, updated_at = ?3 WHERE id = ?1",
    [ST_TASK_SET_REVENUE] = "UPDATE tasks SET total_revenue = ?2, platform_paid = ?3, payout_state = ?4"
                            " WHERE id = ?1",
    [ST_SHARE_INSERT] = "INSERT INTO model_shareholdings(task_id, cash_account, user_id, weight, ppm)"
                        " VALUES(?1, ?2, ?3, ?4, ?5)",
    /* Holders with their cash accounts, so a payout loads every account in one statement. */
    [ST_SHARES_OF_TASK] = "SELECT s.user_id, s.ppm, s.cash_account, a.kind, a.currency, a.owner,"
                          " a.debits_posted, a.credits_posted, a.debits_pending, a.credits_pending,"
                          " a.last_transfer FROM model_shareholdings s JOIN accounts a ON a.id = s.cash_account"
                          " WHERE s.task_id = ?1 ORDER BY s.cash_account",
    [ST_TASK_PAYOUT_STATE] = "SELECT payout_state FROM tasks WHERE id = ?1",
    [ST_USAGE_INSERT] = "INSERT INTO model_usage(id, task_id, payer, hold_transfer, held, captured, status,"
                        " created_at, expires_at) VALUES(?7, ?1, ?2, ?3, ?4, 0, 1, ?5, ?6)",
    [ST_USAGE_NEXT] = "SELECT coalesce(max(id), 0) + 1 FROM model_usage",
    [ST_USAGE_GET] = "SELECT task_id, payer, hold_transfer, held, captured, status, created_at,"
                     " expires_at FROM model_usage WHERE id = ?1",
    [ST_USAGE_RESOLVE] = "UPDATE model_usage SET status = ?2, captured = ?3, resolve_transfer = ?4,"
                         " payouts_end = ?5 WHERE id = ?1 AND status = 1",
    [ST_USAGE_NOTE_SET] = "UPDATE model_usage SET images = ?2, classified = ?3, result = ?4 WHERE id = ?1",
    [ST_USAGE_NOTE_GET] = "SELECT images, classified, result FROM model_usage WHERE id = ?1",
    [ST_USAGE_EXPIRED] = "SELECT id FROM model_usage WHERE status = 1 AND expires_at > 0"
                         " AND expires_at <= ?1 ORDER BY id",
    [ST_REWARD_INSERT] = "INSERT INTO reward_distributions(task_id, user_id, weight, amount, transfer)"
                         " VALUES(?1, ?2, ?3, ?4, ?5)",
    [ST_PART_INSERT] = "INSERT INTO participations(task_id, user_id, joined_at) VALUES(?1, ?2, ?3)",
    [ST_PART_GET] = "SELECT 1 FROM participations WHERE task_id = ?1 AND user_id = ?2",
    [ST_WD_INSERT] = "INSERT INTO withdrawals(user_id, hold_transfer, amount, status, created_at)"
                     " VALUES(?1, ?2, ?3, 1, ?4)",
    [ST_WD_GET] = "SELECT user_id, hold_transfer, amount, status FROM withdrawals WHERE id = ?1",
    [ST_WD_RESOLVE] = "UPDATE withdrawals SET status = ?2, resolved_at = ?3, resolve_transfer = ?4,"
                      " external_ref = ?5, reason = ?6 WHERE id = ?1 AND status = 1",
};

/* ---- Small helpers --------------------------------------------------------------------------- */

int ledger_sqlerr(bf_ledger_t *L, bf_err_t *err, const char *what) {
    bf_err_set(err, "%s: %s", what, sqlite3_errmsg(L->db));
    int code = sqlite3_errcode(L->db) & 0xff;
    return code == SQLITE_BUSY || code == SQLITE_LOCKED ? BF_LEDGER_EBUSY : BF_LEDGER_EINTERNAL;
}

sqlite3_stmt *ledger_stmt(bf_ledger_t *L, int which) {
    assert(which >= 0 && which < ST_COUNT && sql[which]);
    if (!L->st[which] &&
        sqlite3_prepare_v3(L->db, sql[which], -1, SQLITE_PREPARE_PERSISTENT, &L->st[which], NULL) !=
            SQLITE_OK)
        return NULL;
    return L->st[which];
}

int ledger_exec_stmt(bf_ledger_t *L, sqlite3_stmt *s, bf_err_t *err) {
    int rc = sqlite3_step(s);
    while (rc == SQLITE_ROW) rc = sqlite3_step(s);
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    if (rc != SQLITE_DONE) return ledger_sqlerr(L, err, sqlite3_sql(s));
    return 0;
}

int ledger_exec(bf_ledger_t *L, int which, bf_err_t *err) {
    sqlite3_stmt *s = ledger_stmt(L, which);
    if (!s) return ledger_sqlerr(L, err, sql[which]);
    return ledger_exec_stmt(L, s, err);
}

static int64_t system_clock(void *ctx) {
    (void)ctx;
    return (int64_t)time(NULL);
}

int64_t ledger_now(bf_ledger_t *L) { return L->clock(L->clock_ctx); }

void bf_ledger_set_clock(bf_ledger_t *self, int64_t (*now)(void *ctx), void *ctx) {
    self->clock = now ? now : system_clock;
    self->clock_ctx = now ? ctx : NULL;
}

void ledger_sha256(bf_ledger_t *L, const void *a, size_t na, const void *b, size_t nb,
                   unsigned char out[32]) {
    unsigned int len = 0;
    /* One digest context per handle: allocating one per transfer would dominate the cost. */
    EVP_DigestInit_ex(L->md, L->sha256, NULL);
    EVP_DigestUpdate(L->md, a, na);
    if (nb) EVP_DigestUpdate(L->md, b, nb);
    EVP_DigestFinal_ex(L->md, out, &len);
}

void ledger_hex(const unsigned char *b, size_t n, char *out) {
    static const char hx[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hx[b[i] >> 4];
        out[2 * i + 1] = hx[b[i] & 15];
    }
    out[2 * n] = 0;
}

const char *bf_ledger_rc_name(int rc) {
    switch (rc) {
    case BF_LEDGER_OK: return "OK";
    case BF_LEDGER_EINTERNAL: return "EINTERNAL";
    case BF_LEDGER_EINVAL: return "EINVAL";
    case BF_LEDGER_ENOTFOUND: return "ENOTFOUND";
    case BF_LEDGER_EEXISTS: return "EEXISTS";
    case BF_LEDGER_EFUNDS: return "EFUNDS";
    case BF_LEDGER_ECONFLICT: return "ECONFLICT";
    case BF_LEDGER_ESTATE: return "ESTATE";
    case BF_LEDGER_EPOSTED: return "EPOSTED";
    case BF_LEDGER_EVOIDED: return "EVOIDED";
    case BF_LEDGER_EEXPIRED: return "EEXPIRED";
    case BF_LEDGER_EEXCEEDS_HOLD: return "EEXCEEDS_HOLD";
    case BF_LEDGER_EOVERFLOW: return "EOVERFLOW";
    case BF_LEDGER_EBUSY: return "EBUSY";
    default: return "E?";
    }
}

int ledger_meta_get(bf_ledger_t *L, const char *key, int64_t *v, bf_err_t *err) {
    sqlite3_stmt *s = ledger_stmt(L, ST_META_GET);
    if (!s) return ledger_sqlerr(L, err, "meta");
    sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) *v = sqlite3_column_int64(s, 0);
    sqlite3_reset(s);
    if (rc == SQLITE_ROW) return 0;
    if (rc == SQLITE_DONE) return bf_err_set(err, "meta key %s missing", key), BF_LEDGER_EINTERNAL;
    return ledger_sqlerr(L, err, "meta");
}

/* ---- Open, migrate, free --------------------------------------------------------------------- */

static int user_version(bf_ledger_t *L, int *v) {
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(L->db, "PRAGMA user_version", -1, &s, NULL) != SQLITE_OK) return -1;
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) *v = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
    return rc == SQLITE_ROW ? 0 : -1;
}

/* Applies pending migrations, each in its own IMMEDIATE transaction so two processes opening a
 * fresh file at once cannot both create the schema. */
static int migrate(bf_ledger_t *L, bf_err_t *err) {
    for (;;) {
        if (sqlite3_exec(L->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
            return ledger_sqlerr(L, err, "begin migration");
        int v = 0;
        if (user_version(L, &v)) {
            sqlite3_exec(L->db, "ROLLBACK", NULL, NULL, NULL);
            return ledger_sqlerr(L, err, "user_version");
        }
        if (v > LEDGER_SCHEMA_VERSION) {
            sqlite3_exec(L->db, "ROLLBACK", NULL, NULL, NULL);
            return bf_err_set(err, "database schema version %d is newer than this program's %d", v,
                              LEDGER_SCHEMA_VERSION);
        }
        if (v == LEDGER_SCHEMA_VERSION) return sqlite3_exec(L->db, "COMMIT", NULL, NULL, NULL) ? -1 : 0;
        char bump[64];
        snprintf(bump, sizeof bump, "PRAGMA user_version = %d", v + 1);
        if (sqlite3_exec(L->db, ledger_migrations[v], NULL, NULL, NULL) != SQLITE_OK ||
            sqlite3_exec(L->db, bump, NULL, NULL, NULL) != SQLITE_OK ||
            sqlite3_exec(L->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
            int r = ledger_sqlerr(L, err, "migration");
            sqlite3_exec(L->db, "ROLLBACK", NULL, NULL, NULL);
            return r;
        }
    }
}

int bf_ledger_schema_version(bf_ledger_t *self) {
    LEDGER_PG(self, ledger_pg_schema_version(self));
    int v = -1;
    user_version(self, &v);
    return v;
}

bf_ledger_t *bf_ledger_open(const char *path, bf_err_t *err) {
    bf_ledger_t *L = calloc(1, sizeof *L);
    if (!L) return bf_err_set(err, "out of memory"), NULL;
    L->clock = system_clock;
    char url[4096];
    int redirect = ledger_pg_redirect(path, url, sizeof url, err);
    if (redirect < 0) return ledger_store_free(L), NULL;
    if (redirect) path = url;
    if (ledger_pg_url(path)) {
        L->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
        L->md = EVP_MD_CTX_new();
        if (!L->sha256 || !L->md) bf_err_set(err, "OpenSSL SHA-256 unavailable");
        if (!L->sha256 || !L->md || ledger_pg_open(L, path, err)) {
            ledger_pg_close(L);
            ledger_store_free(L);
            return NULL;
        }
        return L;
    }
    if (sqlite3_open_v2(path, &L->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        bf_err_set(err, "opening %s: %s", path, L->db ? sqlite3_errmsg(L->db) : "out of memory");
        ledger_store_free(L);
        return NULL;
    }
    sqlite3_extended_result_codes(L->db, 1);
    sqlite3_busy_timeout(L->db, 10000);
    /* WAL: readers never block the writer. FULL: a commit is on disk before we report it, so an
     * acknowledged charge survives power loss, not only a process crash. temp_store = FILE: each
     * op's savepoint journal then lives in one in-memory buffer until it passes SQLite's 64 KiB
     * spill threshold; with MEMORY it is kept in ~1 KiB chunks malloc'ed and freed on every op,
     * which cost about a fifth of a grouped settlement (measured). */
    char *msg = NULL;
    if (sqlite3_exec(L->db,
                     "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;"
                     " PRAGMA temp_store = FILE; PRAGMA cache_size = -65536;",
                     NULL, NULL, &msg) != SQLITE_OK) {
        bf_err_set(err, "configuring %s: %s", path, msg ? msg : "?");
        sqlite3_free(msg);
        ledger_store_free(L);
        return NULL;
    }
    L->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    L->md = EVP_MD_CTX_new();
    if (!L->sha256 || !L->md) {
        bf_err_set(err, "OpenSSL SHA-256 unavailable");
        ledger_store_free(L);
        return NULL;
    }
    if (migrate(L, err) ||
        ledger_acct_find(L, BF_LEDGER_ACCT_PLATFORM_EXTERNAL, BF_LEDGER_CNY, 0, &L->ext_cny, err) ||
        ledger_acct_find(L, BF_LEDGER_ACCT_PLATFORM_EXTERNAL, BF_LEDGER_COIN, 0, &L->ext_coin, err) ||
        ledger_acct_find(L, BF_LEDGER_ACCT_PLATFORM_REVENUE, BF_LEDGER_CNY, 0, &L->rev_cny, err) ||
        ledger_acct_find(L, BF_LEDGER_ACCT_PLATFORM_REVENUE, BF_LEDGER_COIN, 0, &L->rev_coin, err)) {
        bf_err_prefix(err, "%s: ", path);
        ledger_store_free(L);
        return NULL;
    }
    return L;
}

/* Everything of the handle but the fee cache, which bf_ledger_close (ledger_tx.c) frees first.
 * bf_ledger_open's failure paths call this directly (no cache exists yet): storage does not call
 * bf_ledger_close, which sits above it. */
void ledger_store_free(bf_ledger_t *L) {
    if (L->db && !sqlite3_get_autocommit(L->db)) sqlite3_exec(L->db, "ROLLBACK", NULL, NULL, NULL);
    for (int i = 0; i < ST_COUNT; i++) sqlite3_finalize(L->st[i]);
    if (L->db) sqlite3_close(L->db);
    EVP_MD_CTX_free(L->md);
    EVP_MD_free(L->sha256);
    free(L->acc);
    free(L->gacc);
    free(L->gidx);
    free(L);
}

/* ---- Accounts -------------------------------------------------------------------------------- */

/* The group's account cache: accounts the group's committed ops have touched, with the counters
 * those ops left. Dirty entries are written back once, before the group commits (or before a
 * query on this handle reads the accounts table), instead of once per op. Another process cannot
 * write meanwhile: the group holds the write lock from BEGIN IMMEDIATE to COMMIT. */
void ledger_acct_group_reset(bf_ledger_t *L) {
    L->n_gacc = 0;
    L->g_dirty = 0;
    if (L->gidx) memset(L->gidx, 0xff, L->cap_gidx * sizeof *L->gidx);
}

static size_t gslot(int64_t id, size_t cap) {
    return (size_t)(((uint64_t)id * 0x9E3779B97F4A7C15ull) >> 17) & (cap - 1);
}

static ledger_acct_t *gmap_find(bf_ledger_t *L, int64_t id) {
    if (!L->cap_gidx) return NULL;
    for (size_t i = gslot(id, L->cap_gidx);; i = (i + 1) & (L->cap_gidx - 1)) {
        int32_t k = L->gidx[i];
        if (k < 0) return NULL;
        if (L->gacc[k].id == id) return &L->gacc[k];
    }
}

static int gmap_rehash(bf_ledger_t *L, size_t cap) {
    int32_t *g = malloc(cap * sizeof *g);
    if (!g) return -1;
    memset(g, 0xff, cap * sizeof *g);
    for (size_t k = 0; k < L->n_gacc; k++) {
        size_t i = gslot(L->gacc[k].id, cap);
        while (g[i] >= 0) i = (i + 1) & (cap - 1);
        g[i] = (int32_t)k;
    }
    free(L->gidx);
    L->gidx = g;
    L->cap_gidx = cap;
    return 0;
}

/* Records the state an op left an account in (dirty if any op of the group changed it). */
static int gmap_put(bf_ledger_t *L, const ledger_acct_t *a, bf_err_t *err) {
    ledger_acct_t *g = gmap_find(L, a->id);
    if (!g) {
        if (L->n_gacc >= INT32_MAX - 1) return bf_err_set(err, "too many accounts in one group"), BF_LEDGER_EINTERNAL;
        if (L->n_gacc == L->cap_gacc) {
            size_t cap = L->cap_gacc ? L->cap_gacc * 2 : 64;
            ledger_acct_t *n = realloc(L->gacc, cap * sizeof *n);
            if (!n) return bf_err_set(err, "out of memory"), BF_LEDGER_EINTERNAL;
            L->gacc = n;
            L->cap_gacc = cap;
        }
        if ((L->n_gacc + 1) * 2 > L->cap_gidx && gmap_rehash(L, L->cap_gidx ? L->cap_gidx * 2 : 128))
            return bf_err_set(err, "out of memory"), BF_LEDGER_EINTERNAL;
        size_t i = gslot(a->id, L->cap_gidx);
        while (L->gidx[i] >= 0) i = (i + 1) & (L->cap_gidx - 1);
        L->gidx[i] = (int32_t)L->n_gacc;
        g = &L->gacc[L->n_gacc++];
        *g = *a;
    } else {
        int dirty = g->dirty | a->dirty;
        *g = *a;
        g->dirty = dirty;
    }
    if (g->dirty) L->g_dirty = 1;
    return 0;
}

static int write_account(bf_ledger_t *L, sqlite3_stmt *s, const ledger_acct_t *a, bf_err_t *err) {
    sqlite3_bind_int64(s, 1, a->id);
    sqlite3_bind_int64(s, 2, a->dp);
    sqlite3_bind_int64(s, 3, a->cp);
    sqlite3_bind_int64(s, 4, a->dpend);
    sqlite3_bind_int64(s, 5, a->cpend);
    sqlite3_bind_int64(s, 6, a->last);
    return ledger_exec_stmt(L, s, err);
}

/* Writes back the accounts the group has changed (ledger_group_flush, in ledger_tx.c, calls this
 * after the fee cache's own write-back). */
int ledger_acct_group_write(bf_ledger_t *L, bf_err_t *err) {
    if (!L->g_dirty) return 0;
    sqlite3_stmt *s = ledger_stmt(L, ST_ACCT_UPDATE);
    if (!s) return ledger_sqlerr(L, err, "accounts");
    for (size_t i = 0; i < L->n_gacc; i++) {
        ledger_acct_t *a = &L->gacc[i];
        if (!a->dirty) continue;
        int rc = write_account(L, s, a, err);
        if (rc) return rc;
        a->dirty = 0;
    }
    L->g_dirty = 0;
    return 0;
}

/* At the end of a successful op: alone, its changed accounts are written now; inside a group they
 * join the group's cache and are written once before the group commits. */
int ledger_acct_op_write(bf_ledger_t *L, bf_err_t *err) {
    if (L->in_group) {
        for (size_t i = 0; i < L->n_acc; i++) {
            int rc = gmap_put(L, &L->acc[i], err);
            if (rc) return rc;
        }
        return 0;
    }
    sqlite3_stmt *s = ledger_stmt(L, ST_ACCT_UPDATE);
    if (!s) return ledger_sqlerr(L, err, "accounts");
    for (size_t i = 0; i < L->n_acc; i++) {
        ledger_acct_t *a = &L->acc[i];
        if (!a->dirty) continue;
        int rc = write_account(L, s, a, err);
        if (rc) return rc;
        a->dirty = 0;
    }
    return 0;
}

int64_t ledger_posted(const ledger_acct_t *a) { return a->cp - a->dp; }

/* Only the platform's external account (the outside world) may go negative. */
int ledger_acct_restricted(int kind) { return kind != BF_LEDGER_ACCT_PLATFORM_EXTERNAL; }

int ledger_funds_error(bf_err_t *err, int currency, int64_t available, int64_t need) {
    char have[32], want[32];
    int coins = currency == BF_LEDGER_COIN;
    bf_money_format_amount(available, coins ? 0 : 2, have);
    bf_money_format_amount(need, coins ? 0 : 2, want);
    bf_err_set(err, "insufficient funds: %s %s available, %s needed", have, coins ? "coins" : "yuan", want);
    return BF_LEDGER_EFUNDS;
}

ledger_acct_t *ledger_acct(bf_ledger_t *L, int64_t id, bf_err_t *err) {
    for (size_t i = 0; i < L->n_acc; i++)
        if (L->acc[i].id == id) return &L->acc[i];
    if (L->n_acc == L->cap_acc) {
        size_t cap = L->cap_acc ? L->cap_acc * 2 : 32;
        ledger_acct_t *a = realloc(L->acc, cap * sizeof *a);
        if (!a) return bf_err_set(err, "out of memory"), NULL;
        L->acc = a;
        L->cap_acc = cap;
    }
    ledger_acct_t *g = L->in_group ? gmap_find(L, id) : NULL;
    if (g) {
        L->acc[L->n_acc] = *g;
        L->acc[L->n_acc].dirty = 0;
        return &L->acc[L->n_acc++];
    }
    sqlite3_stmt *s = ledger_stmt(L, ST_ACCT_GET);
    if (!s) return ledger_sqlerr(L, err, "accounts"), NULL;
    sqlite3_bind_int64(s, 1, id);
    int step = sqlite3_step(s);
    ledger_acct_t *a = NULL;
    if (step == SQLITE_ROW) {
        a = &L->acc[L->n_acc++];
        a->id = id;
        a->kind = sqlite3_column_int(s, 0);
        a->currency = sqlite3_column_int(s, 1);
        a->owner = sqlite3_column_int64(s, 2);
        a->dp = sqlite3_column_int64(s, 3);
        a->cp = sqlite3_column_int64(s, 4);
        a->dpend = sqlite3_column_int64(s, 5);
        a->cpend = sqlite3_column_int64(s, 6);
        a->last = sqlite3_column_int64(s, 7);
        a->dirty = 0;
    } else if (step == SQLITE_DONE) {
        bf_err_set(err, "unknown account %lld", (long long)id);
    } else {
        ledger_sqlerr(L, err, "accounts");
    }
    sqlite3_reset(s);
    return a;
}

ledger_acct_t *ledger_acct_seed(bf_ledger_t *L, const ledger_acct_t *row, bf_err_t *err) {
    for (size_t i = 0; i < L->n_acc; i++)
        if (L->acc[i].id == row->id) return &L->acc[i]; /* the cached copy may be newer */
    if (L->n_acc == L->cap_acc) {
        size_t cap = L->cap_acc ? L->cap_acc * 2 : 32;
        ledger_acct_t *a = realloc(L->acc, cap * sizeof *a);
        if (!a) return bf_err_set(err, "out of memory"), NULL;
        L->acc = a;
        L->cap_acc = cap;
    }
    ledger_acct_t *g = L->in_group ? gmap_find(L, row->id) : NULL; /* newer than the row read */
    L->acc[L->n_acc] = g ? *g : *row;
    L->acc[L->n_acc].dirty = 0;
    return &L->acc[L->n_acc++];
}

int ledger_acct_create(bf_ledger_t *L, int kind, int currency, int64_t owner, int64_t *id,
                       bf_err_t *err) {
    sqlite3_stmt *s = ledger_stmt(L, ST_ACCT_INSERT);
    if (!s) return ledger_sqlerr(L, err, "accounts");
    sqlite3_bind_int(s, 1, kind);
    sqlite3_bind_int(s, 2, currency);
    sqlite3_bind_int64(s, 3, owner);
    int rc = ledger_exec_stmt(L, s, err);
    if (!rc) *id = sqlite3_last_insert_rowid(L->db);
    return rc;
}

int ledger_acct_find(bf_ledger_t *L, int kind, int currency, int64_t owner, int64_t *id,
                     bf_err_t *err) {
    sqlite3_stmt *s = ledger_stmt(L, ST_ACCT_FIND);
    if (!s) return ledger_sqlerr(L, err, "accounts");
    sqlite3_bind_int(s, 1, kind);
    sqlite3_bind_int(s, 2, currency);
    sqlite3_bind_int64(s, 3, owner);
    int step = sqlite3_step(s);
    if (step == SQLITE_ROW) *id = sqlite3_column_int64(s, 0);
    sqlite3_reset(s);
    if (step == SQLITE_ROW) return 0;
    if (step == SQLITE_DONE)
        return bf_err_set(err, "no account of kind %d currency %d owner %lld", kind, currency,
                          (long long)owner),
               BF_LEDGER_ENOTFOUND;
    return ledger_sqlerr(L, err, "accounts");
}

/* ---- Rows the operations and the fee cache read ---------------------------------------------- */

int ledger_user_row(bf_ledger_t *L, int64_t id, ledger_user_row_t *u, bf_err_t *err) {
    sqlite3_stmt *s = ledger_stmt(L, ST_USER_GET);
    if (!s) return ledger_sqlerr(L, err, "users");
    sqlite3_bind_int64(s, 1, id);
    int step = sqlite3_step(s);
    if (step == SQLITE_ROW) {
        u->id = id;
        const unsigned char *pw = sqlite3_column_text(s, 2);
        snprintf(u->pw, sizeof u->pw, "%s", pw ? (const char *)pw : "");
        u->cash = sqlite3_column_int64(s, 3);
        u->coin = sqlite3_column_int64(s, 4);
    }
    sqlite3_reset(s);
    if (step == SQLITE_ROW) return 0;
    if (step == SQLITE_DONE) return bf_err_set(err, "unknown user %lld", (long long)id), BF_LEDGER_ENOTFOUND;
    return ledger_sqlerr(L, err, "users");
}

int ledger_task_row(bf_ledger_t *L, int64_t id, ledger_task_row_t *t, bf_err_t *err) {
    sqlite3_stmt *s = ledger_stmt(L, ST_TASK_GET);
    if (!s) return ledger_sqlerr(L, err, "tasks");
    sqlite3_bind_int64(s, 1, id);
    int step = sqlite3_step(s);
    if (step == SQLITE_ROW) {
        t->id = id;
        t->creator = sqlite3_column_int64(s, 0);
        t->mode = sqlite3_column_int(s, 2);
        t->usage_fee = sqlite3_column_int64(s, 3);
        t->reward_pool = sqlite3_column_int64(s, 4);
        t->status = sqlite3_column_int(s, 5);
        t->model_online = sqlite3_column_int(s, 6);
        t->total_revenue = sqlite3_column_int64(s, 7);
        t->fee_ppm = sqlite3_column_int64(s, 8);
        t->platform_paid = sqlite3_column_int64(s, 9);
        t->escrow = sqlite3_column_int64(s, 11);
        t->clearing = sqlite3_column_int64(s, 12);
    }
    sqlite3_reset(s);
    if (step == SQLITE_ROW) return 0;
    if (step == SQLITE_DONE) return bf_err_set(err, "unknown task %lld", (long long)id), BF_LEDGER_ENOTFOUND;
    return ledger_sqlerr(L, err, "tasks");
}

/* ---- Transfers and the hash chain ------------------------------------------------------------ */

void ledger_put_be64(unsigned char *p, int64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)((uint64_t)v >> (56 - 8 * i));
}

int64_t ledger_get_be64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
    return (int64_t)v;
}

void ledger_leg_get(const unsigned char *legs, size_t i, ledger_leg_t *out) {
    const unsigned char *p = legs + i * LEDGER_LEG_BYTES;
    out->account = ledger_get_be64(p);
    out->amount = ledger_get_be64(p + 8);
    out->before = ledger_get_be64(p + 16);
    out->prev = ledger_get_be64(p + 24);
}

/* SHA-256(prev || "BFLT1" || 16 big-endian int64 fields || len(op_key) || op_key). Fixed-width,
 * length-prefixed, no text formatting: one byte string per row, whatever the platform. A split
 * row is SHA-256(prev || "BFLT2" || 16 fields || len(legs) || legs || len(op_key) || op_key), so
 * removing, adding or altering a leg (or the tag) breaks the chain. */
void ledger_row_hash(bf_ledger_t *L, const unsigned char prev[32], const ledger_row_t *r,
                     const char *op_key, unsigned char out[32]) {
    unsigned char buf[32 + 5 + 18 * 8 + BF_LEDGER_OP_ID_MAX];
    size_t n = 0;
    memcpy(buf, prev, 32);
    n = 32;
    memcpy(buf + n, r->legs_len ? "BFLT2" : "BFLT1", 5);
    n += 5;
    const int64_t f[16] = {r->id,         r->type,       r->code,          r->currency,
                           r->debit,      r->credit,     r->amount,        r->pending_id,
                           r->expires_at, r->created_at, r->debit_before,  r->debit_after,
                           r->credit_before, r->credit_after, r->debit_prev, r->credit_prev};
    for (int i = 0; i < 16; i++, n += 8) ledger_put_be64(buf + n, f[i]);
    size_t kl = strlen(op_key);
    if (kl > BF_LEDGER_OP_ID_MAX) kl = BF_LEDGER_OP_ID_MAX;
    if (!r->legs_len) {
        ledger_put_be64(buf + n, (int64_t)kl);
        n += 8;
        memcpy(buf + n, op_key, kl);
        n += kl;
        ledger_sha256(L, buf, n, NULL, 0, out);
        return;
    }
    unsigned char tail[8 + BF_LEDGER_OP_ID_MAX];
    ledger_put_be64(buf + n, (int64_t)r->legs_len);
    n += 8;
    ledger_put_be64(tail, (int64_t)kl);
    memcpy(tail + 8, op_key, kl);
    unsigned int len = 0;
    EVP_DigestInit_ex(L->md, L->sha256, NULL);
    EVP_DigestUpdate(L->md, buf, n);
    EVP_DigestUpdate(L->md, r->legs, r->legs_len);
    EVP_DigestUpdate(L->md, tail, 8 + kl);
    EVP_DigestFinal_ex(L->md, out, &len);
}

static int load_head(bf_ledger_t *L, bf_err_t *err) {
    if (L->head_valid) return 0;
    sqlite3_stmt *s = ledger_stmt(L, ST_XF_HEAD);
    if (!s) return ledger_sqlerr(L, err, "transfers");
    int step = sqlite3_step(s);
    if (step == SQLITE_ROW) {
        L->head_id = sqlite3_column_int64(s, 0);
        if (sqlite3_column_bytes(s, 1) != 32) {
            sqlite3_reset(s);
            return bf_err_set(err, "transfer %lld has a malformed hash", (long long)L->head_id),
                   BF_LEDGER_EINTERNAL;
        }
        memcpy(L->head_hash, sqlite3_column_blob(s, 1), 32);
    } else if (step == SQLITE_DONE) {
        L->head_id = 0;
        memset(L->head_hash, 0, 32);
    }
    sqlite3_reset(s);
    if (step != SQLITE_ROW && step != SQLITE_DONE) return ledger_sqlerr(L, err, "transfers");
    L->head_valid = 1;
    return 0;
}

static int add_checked(int64_t a, int64_t b, int64_t *out, bf_err_t *err) {
    if (__builtin_add_overflow(a, b, out))
        return bf_err_set(err, "amount overflows a 64-bit counter"), BF_LEDGER_EOVERFLOW;
    return 0;
}

static int insert_row(bf_ledger_t *L, ledger_op_t *op, const ledger_row_t *r, const unsigned char h[32],
                      bf_err_t *err);

int ledger_transfer(bf_ledger_t *L, ledger_op_t *op, const ledger_xfer_t *x, int64_t *id,
                    bf_err_t *err) {
    assert(L->in_op);
    if (x->amount < 0) return bf_err_set(err, "negative amount"), BF_LEDGER_EINVAL;
    if (x->debit == x->credit) return bf_err_set(err, "debit and credit are one account"), BF_LEDGER_EINVAL;
    /* Load both first: loading may grow the cache and move earlier pointers. */
    if (!ledger_acct(L, x->debit, err) || !ledger_acct(L, x->credit, err))
        return BF_LEDGER_ENOTFOUND;
    ledger_acct_t *d = ledger_acct(L, x->debit, err), *c = ledger_acct(L, x->credit, err);
    if (d->currency != c->currency)
        return bf_err_set(err, "accounts %lld and %lld hold different currencies", (long long)d->id,
                          (long long)c->id),
               BF_LEDGER_EINVAL;

    ledger_acct_t nd = *d, nc = *c;
    int rc = 0;
    switch (x->type) {
    case XF_POSTED:
    case XF_PENDING:
        /* Pessimistic, like TigerBeetle's debits_must_not_exceed_credits: holds already placed
         * count against the balance. */
        if (ledger_acct_restricted(d->kind) && d->cp - d->dp - d->dpend < x->amount)
            return ledger_funds_error(err, d->currency, d->cp - d->dp - d->dpend, x->amount);
        if (x->type == XF_POSTED) {
            if ((rc = add_checked(d->dp, x->amount, &nd.dp, err)) ||
                (rc = add_checked(c->cp, x->amount, &nc.cp, err)))
                return rc;
        } else {
            if ((rc = add_checked(d->dpend, x->amount, &nd.dpend, err)) ||
                (rc = add_checked(c->cpend, x->amount, &nc.cpend, err)))
                return rc;
        }
        break;
    case XF_POST:
        assert(x->amount <= x->pending_amount);
        nd.dpend -= x->pending_amount;
        nc.cpend -= x->pending_amount;
        if ((rc = add_checked(d->dp, x->amount, &nd.dp, err)) ||
            (rc = add_checked(c->cp, x->amount, &nc.cp, err)))
            return rc;
        break;
    case XF_VOID:
    case XF_EXPIRE:
        assert(x->amount == x->pending_amount);
        nd.dpend -= x->pending_amount;
        nc.cpend -= x->pending_amount;
        break;
    default:
        assert(!"unknown transfer type");
    }
    if (nd.dpend < 0 || nc.cpend < 0)
        return bf_err_set(err, "pending counters would go negative"), BF_LEDGER_EINTERNAL;
    /* The posted balance (credits - debits) must itself fit in int64. */
    int64_t db_after, cb_after;
    if (__builtin_sub_overflow(nd.cp, nd.dp, &db_after) || __builtin_sub_overflow(nc.cp, nc.dp, &cb_after))
        return bf_err_set(err, "balance overflows"), BF_LEDGER_EOVERFLOW;

    if ((rc = load_head(L, err))) return rc;
    ledger_row_t r = {
        .id = L->head_id + 1,
        .type = x->type,
        .code = x->code,
        .currency = d->currency,
        .debit = d->id,
        .credit = c->id,
        .amount = x->amount,
        .pending_id = x->pending_id,
        .expires_at = x->expires_at,
        .created_at = op->now,
        .debit_before = ledger_posted(d),
        .debit_after = db_after,
        .credit_before = ledger_posted(c),
        .credit_after = cb_after,
        .debit_prev = d->last,
        .credit_prev = c->last,
    };
    unsigned char h[32];
    ledger_row_hash(L, L->head_hash, &r, op->key, h);
    if ((rc = insert_row(L, op, &r, h, err))) return rc;

    L->head_id = r.id;
    memcpy(L->head_hash, h, 32);
    nd.dirty = nc.dirty = 1;
    nd.last = nc.last = r.id;
    *d = nd;
    *c = nc;
    if (id) *id = r.id;
    return 0;
}

static int insert_row(bf_ledger_t *L, ledger_op_t *op, const ledger_row_t *rp, const unsigned char h[32],
                      bf_err_t *err) {
    const ledger_row_t r = *rp;
    sqlite3_stmt *s = ledger_stmt(L, ST_XF_INSERT);
    if (!s) return ledger_sqlerr(L, err, "transfers");
    sqlite3_bind_int64(s, 1, r.id);
    sqlite3_bind_int64(s, 2, op->row);
    sqlite3_bind_int64(s, 3, r.type);
    sqlite3_bind_int64(s, 4, r.code);
    sqlite3_bind_int64(s, 5, r.currency);
    sqlite3_bind_int64(s, 6, r.debit);
    sqlite3_bind_int64(s, 7, r.credit);
    sqlite3_bind_int64(s, 8, r.amount);
    if (r.pending_id) sqlite3_bind_int64(s, 9, r.pending_id);
    else sqlite3_bind_null(s, 9);
    sqlite3_bind_int64(s, 10, r.expires_at);
    sqlite3_bind_int64(s, 11, r.created_at);
    sqlite3_bind_int64(s, 12, r.debit_before);
    sqlite3_bind_int64(s, 13, r.debit_after);
    sqlite3_bind_int64(s, 14, r.credit_before);
    sqlite3_bind_int64(s, 15, r.credit_after);
    sqlite3_bind_int64(s, 16, r.debit_prev);
    sqlite3_bind_int64(s, 17, r.credit_prev);
    sqlite3_bind_blob(s, 18, h, 32, SQLITE_STATIC);
    if (r.legs_len) sqlite3_bind_blob(s, 19, r.legs, (int)r.legs_len, SQLITE_STATIC);
    else sqlite3_bind_null(s, 19);
    return ledger_exec_stmt(L, s, err);
}

int ledger_transfer_split(bf_ledger_t *L, ledger_op_t *op, int code, int64_t debit, size_t n,
                          const int64_t *accounts, const int64_t *amounts, int64_t *id, bf_err_t *err) {
    assert(L->in_op);
    if (n == 0 || n > (size_t)INT_MAX / LEDGER_LEG_BYTES)
        return bf_err_set(err, "a split needs 1..%d legs", INT_MAX / LEDGER_LEG_BYTES), BF_LEDGER_EINVAL;
    int64_t total = 0;
    int rc;
    for (size_t i = 0; i < n; i++) {
        if (amounts[i] <= 0) return bf_err_set(err, "split leg %zu: amount must be positive", i), BF_LEDGER_EINVAL;
        if (accounts[i] == debit) return bf_err_set(err, "split leg %zu credits the debit account", i), BF_LEDGER_EINVAL;
        for (size_t j = 0; j < i; j++)
            if (accounts[j] == accounts[i])
                return bf_err_set(err, "split credits account %lld twice", (long long)accounts[i]), BF_LEDGER_EINVAL;
        if ((rc = add_checked(total, amounts[i], &total, err))) return rc;
    }
    /* Load every account first: loading may grow the cache and move earlier pointers. */
    if (!ledger_acct(L, debit, err)) return BF_LEDGER_ENOTFOUND;
    for (size_t i = 0; i < n; i++)
        if (!ledger_acct(L, accounts[i], err)) return BF_LEDGER_ENOTFOUND;
    ledger_acct_t *d = ledger_acct(L, debit, err);
    if (ledger_acct_restricted(d->kind) && d->cp - d->dp - d->dpend < total)
        return ledger_funds_error(err, d->currency, d->cp - d->dp - d->dpend, total);
    int64_t d_dp, d_after;
    if ((rc = add_checked(d->dp, total, &d_dp, err))) return rc;
    if (__builtin_sub_overflow(d->cp, d_dp, &d_after)) return bf_err_set(err, "balance overflows"), BF_LEDGER_EOVERFLOW;
    unsigned char *legs = malloc(n * LEDGER_LEG_BYTES);
    if (!legs) return bf_err_set(err, "out of memory"), BF_LEDGER_EINTERNAL;
    for (size_t i = 0; i < n; i++) {
        ledger_acct_t *c = ledger_acct(L, accounts[i], err);
        int64_t cp, after;
        if (c->currency != d->currency) {
            free(legs);
            return bf_err_set(err, "accounts %lld and %lld hold different currencies", (long long)d->id,
                              (long long)c->id),
                   BF_LEDGER_EINVAL;
        }
        if ((rc = add_checked(c->cp, amounts[i], &cp, err)) || __builtin_sub_overflow(cp, c->dp, &after)) {
            free(legs);
            return rc ? rc : (bf_err_set(err, "balance overflows"), BF_LEDGER_EOVERFLOW);
        }
        unsigned char *p = legs + i * LEDGER_LEG_BYTES;
        ledger_put_be64(p, c->id);
        ledger_put_be64(p + 8, amounts[i]);
        ledger_put_be64(p + 16, ledger_posted(c));
        ledger_put_be64(p + 24, c->last);
    }
    if ((rc = load_head(L, err))) {
        free(legs);
        return rc;
    }
    ledger_row_t r = {
        .id = L->head_id + 1,
        .type = XF_POSTED,
        .code = code,
        .currency = d->currency,
        .debit = d->id,
        .credit = d->id, /* the credits are the legs */
        .amount = total,
        .created_at = op->now,
        .debit_before = ledger_posted(d),
        .debit_after = d_after,
        .debit_prev = d->last,
        .legs = legs,
        .legs_len = n * LEDGER_LEG_BYTES,
    };
    unsigned char h[32];
    ledger_row_hash(L, L->head_hash, &r, op->key, h);
    rc = insert_row(L, op, &r, h, err);
    free(legs);
    if (rc) return rc;
    L->head_id = r.id;
    memcpy(L->head_hash, h, 32);
    d->dp = d_dp;
    d->last = r.id;
    d->dirty = 1;
    for (size_t i = 0; i < n; i++) {
        ledger_acct_t *c = ledger_acct(L, accounts[i], err);
        c->cp += amounts[i];
        c->last = r.id;
        c->dirty = 1;
    }
    if (id) *id = r.id;
    return 0;
}

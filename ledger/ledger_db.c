/* ledger_db.c: the storage layer of the ledger. Opening and migrating the database, the statement
 * cache, transactions and the per-operation idempotency frame, the account cache, and the one
 * function that moves money (ledger_transfer) together with the hash chain it extends. */
#include <assert.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ledger_internal.h"

/* ---- Schema ---------------------------------------------------------------------------------- */

/* Migration i takes the schema from version i to i+1. Never edit a shipped migration: append one. */
static const char *const migrations[] = {
    /* 0 -> 1 */
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL) STRICT;"
    "INSERT INTO meta(key, value) VALUES('platform_fee_ppm', 0);"
    "CREATE TABLE accounts("
    "  id INTEGER PRIMARY KEY,"
    "  kind INTEGER NOT NULL CHECK(kind BETWEEN 1 AND 6),"
    "  currency INTEGER NOT NULL CHECK(currency IN (1, 2)),"
    "  owner INTEGER NOT NULL,"
    "  debits_posted INTEGER NOT NULL DEFAULT 0 CHECK(debits_posted >= 0),"
    "  credits_posted INTEGER NOT NULL DEFAULT 0 CHECK(credits_posted >= 0),"
    "  debits_pending INTEGER NOT NULL DEFAULT 0 CHECK(debits_pending >= 0),"
    "  credits_pending INTEGER NOT NULL DEFAULT 0 CHECK(credits_pending >= 0),"
    "  last_transfer INTEGER NOT NULL DEFAULT 0,"
    "  UNIQUE(kind, currency, owner)) STRICT;"
    "INSERT INTO accounts(kind, currency, owner) VALUES (5, 1, 0), (5, 2, 0), (6, 1, 0), (6, 2, 0);"
    "CREATE TABLE users("
    "  id INTEGER PRIMARY KEY,"
    "  name TEXT NOT NULL UNIQUE CHECK(length(name) BETWEEN 1 AND 64),"
    "  curve_public_key TEXT NOT NULL CHECK(length(curve_public_key) = 40),"
    "  password_hash TEXT,"
    "  cash_account INTEGER NOT NULL REFERENCES accounts(id) DEFERRABLE INITIALLY DEFERRED,"
    "  coin_account INTEGER NOT NULL REFERENCES accounts(id) DEFERRABLE INITIALLY DEFERRED,"
    "  created_at INTEGER NOT NULL) STRICT;"
    "CREATE TABLE ops("
    "  id INTEGER PRIMARY KEY,"
    "  op_key TEXT NOT NULL UNIQUE,"
    "  kind INTEGER NOT NULL,"
    "  fingerprint BLOB NOT NULL,"
    "  rc INTEGER NOT NULL,"
    "  result INTEGER NOT NULL,"
    "  message TEXT,"
    "  created_at INTEGER NOT NULL) STRICT;"
    /* The seed's "transactions": every movement, with both accounts' posted balance before and
     * after, hash-chained in id order. debit_prev/credit_prev link each account's previous
     * transfer (0: none), so an account's history is a walk from accounts.last_transfer; this
     * replaces two secondary indexes that cost more than half of every insert. */
    "CREATE TABLE transfers("
    "  id INTEGER PRIMARY KEY,"
    "  op INTEGER NOT NULL REFERENCES ops(id),"
    "  type INTEGER NOT NULL CHECK(type BETWEEN 1 AND 5),"
    "  code INTEGER NOT NULL,"
    "  currency INTEGER NOT NULL CHECK(currency IN (1, 2)),"
    "  debit_account INTEGER NOT NULL REFERENCES accounts(id),"
    "  credit_account INTEGER NOT NULL REFERENCES accounts(id),"
    "  amount INTEGER NOT NULL CHECK(amount >= 0),"
    "  pending_id INTEGER REFERENCES transfers(id),"
    "  expires_at INTEGER NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  debit_before INTEGER NOT NULL, debit_after INTEGER NOT NULL,"
    "  credit_before INTEGER NOT NULL, credit_after INTEGER NOT NULL,"
    "  debit_prev INTEGER NOT NULL, credit_prev INTEGER NOT NULL,"
    "  hash BLOB NOT NULL CHECK(length(hash) = 32)) STRICT;"
    /* A hold resolves at most once: the database refuses a second post/void/expire outright. */
    "CREATE UNIQUE INDEX transfers_resolution ON transfers(pending_id) WHERE pending_id IS NOT NULL;"
    "CREATE TRIGGER transfers_no_update BEFORE UPDATE ON transfers"
    "  BEGIN SELECT RAISE(ABORT, 'transfers are append-only'); END;"
    "CREATE TRIGGER transfers_no_delete BEFORE DELETE ON transfers"
    "  BEGIN SELECT RAISE(ABORT, 'transfers are append-only'); END;"
    "CREATE TABLE tasks("
    "  id INTEGER PRIMARY KEY,"
    "  creator INTEGER NOT NULL REFERENCES users(id),"
    "  name TEXT NOT NULL,"
    "  payment_mode INTEGER NOT NULL CHECK(payment_mode IN (1, 2)),"
    "  usage_fee INTEGER NOT NULL CHECK(usage_fee >= 0),"
    "  reward_pool INTEGER NOT NULL CHECK(reward_pool >= 0),"
    "  status INTEGER NOT NULL CHECK(status BETWEEN 1 AND 4),"
    "  model_status INTEGER NOT NULL CHECK(model_status IN (0, 1)),"
    "  total_revenue INTEGER NOT NULL CHECK(total_revenue >= 0),"
    "  platform_fee_ppm INTEGER NOT NULL CHECK(platform_fee_ppm BETWEEN 0 AND 1000000),"
    "  platform_paid INTEGER NOT NULL CHECK(platform_paid >= 0),"
    "  payout_state BLOB,"
    "  result_hash TEXT,"
    "  escrow_account INTEGER NOT NULL REFERENCES accounts(id) DEFERRABLE INITIALLY DEFERRED,"
    "  clearing_account INTEGER NOT NULL REFERENCES accounts(id) DEFERRABLE INITIALLY DEFERRED,"
    "  created_at INTEGER NOT NULL,"
    "  updated_at INTEGER NOT NULL) STRICT;"
    /* Holders of a task in cash-account order (the payout tie-break order). What each has
     * received so far is tasks.payout_state: one big-endian int64 per holder in this order, so a
     * payout rewrites one row instead of one per holder. */
    "CREATE TABLE model_shareholdings("
    "  task_id INTEGER NOT NULL REFERENCES tasks(id),"
    "  cash_account INTEGER NOT NULL REFERENCES accounts(id),"
    "  user_id INTEGER NOT NULL REFERENCES users(id),"
    "  weight INTEGER NOT NULL,"
    "  ppm INTEGER NOT NULL CHECK(ppm BETWEEN 0 AND 1000000),"
    "  PRIMARY KEY(task_id, cash_account)) STRICT, WITHOUT ROWID;"
    "CREATE INDEX shareholdings_user ON model_shareholdings(user_id);"
    /* One row per paid prediction: the hold and how it resolved. Payout transfers of a capture are
     * the ids resolve_transfer+1 .. payouts_end (one operation appends them contiguously). */
    "CREATE TABLE model_usage("
    "  id INTEGER PRIMARY KEY,"
    "  task_id INTEGER NOT NULL REFERENCES tasks(id),"
    "  payer INTEGER NOT NULL REFERENCES users(id),"
    "  hold_transfer INTEGER NOT NULL REFERENCES transfers(id),"
    "  held INTEGER NOT NULL CHECK(held > 0),"
    "  captured INTEGER NOT NULL CHECK(captured >= 0 AND captured <= held),"
    "  status INTEGER NOT NULL CHECK(status BETWEEN 1 AND 4),"
    "  created_at INTEGER NOT NULL,"
    "  expires_at INTEGER NOT NULL,"
    "  resolve_transfer INTEGER REFERENCES transfers(id),"
    "  payouts_end INTEGER) STRICT;"
    "CREATE INDEX usage_task ON model_usage(task_id);"
    "CREATE INDEX usage_open ON model_usage(expires_at) WHERE status = 1 AND expires_at > 0;"
    "CREATE VIEW revenue_distributions AS"
    "  SELECT t.id AS transfer_id, u.id AS usage_id, u.task_id AS task_id, a.owner AS user_id,"
    "         t.amount AS amount, t.created_at AS created_at"
    "  FROM model_usage u JOIN transfers t ON t.id > u.resolve_transfer AND t.id <= u.payouts_end"
    "  JOIN accounts a ON a.id = t.credit_account WHERE u.status = 2 AND t.code = 8;"
    "CREATE TABLE reward_distributions("
    "  id INTEGER PRIMARY KEY,"
    "  task_id INTEGER NOT NULL REFERENCES tasks(id),"
    "  user_id INTEGER NOT NULL REFERENCES users(id),"
    "  weight INTEGER NOT NULL,"
    "  amount INTEGER NOT NULL CHECK(amount >= 0),"
    "  transfer INTEGER REFERENCES transfers(id)) STRICT;"
    "CREATE INDEX rewards_task ON reward_distributions(task_id);"
    "CREATE INDEX rewards_user ON reward_distributions(user_id);"
    "CREATE TABLE participations("
    "  task_id INTEGER NOT NULL REFERENCES tasks(id),"
    "  user_id INTEGER NOT NULL REFERENCES users(id),"
    "  joined_at INTEGER NOT NULL,"
    "  PRIMARY KEY(task_id, user_id)) STRICT;"
    "CREATE INDEX participations_user ON participations(user_id);",
    /* 1 -> 2: what a paid request produced, stored with its usage record in the operation that
     * resolves the hold (images asked for, images classified, the reply's results as sent). */
    "ALTER TABLE model_usage ADD COLUMN images INTEGER NOT NULL DEFAULT 0 CHECK(images >= 0);"
    "ALTER TABLE model_usage ADD COLUMN classified INTEGER NOT NULL DEFAULT 0"
    "  CHECK(classified >= 0 AND classified <= images);"
    "ALTER TABLE model_usage ADD COLUMN result BLOB;",
    /* 2 -> 3: split transfers. A capture's payout to every holder (and the platform cut) is one
     * hash-chained row: debit the clearing account, credit each leg of `legs` (n x 32 bytes:
     * account, amount, balance before, previous transfer of that account, big-endian int64).
     * Such a row has credit_account = debit_account and zero credit fields. The view
     * revenue_distributions listed one row per payout transfer and cannot see legs:
     * bf_ledger_revenues expands them instead. */
    "ALTER TABLE transfers ADD COLUMN legs BLOB"
    "  CHECK(legs IS NULL OR (length(legs) >= 32 AND length(legs) % 32 = 0));"
    "DROP VIEW revenue_distributions;",
};
#define N_MIGRATIONS (sizeof migrations / sizeof migrations[0])
_Static_assert(N_MIGRATIONS == LEDGER_SCHEMA_VERSION, "one migration per schema version");

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

static int exec_simple(bf_ledger_t *L, int which, bf_err_t *err) {
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

/* ---- Open, migrate, close -------------------------------------------------------------------- */

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
        if (sqlite3_exec(L->db, migrations[v], NULL, NULL, NULL) != SQLITE_OK ||
            sqlite3_exec(L->db, bump, NULL, NULL, NULL) != SQLITE_OK ||
            sqlite3_exec(L->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
            int r = ledger_sqlerr(L, err, "migration");
            sqlite3_exec(L->db, "ROLLBACK", NULL, NULL, NULL);
            return r;
        }
    }
}

int bf_ledger_schema_version(bf_ledger_t *self) {
    int v = -1;
    user_version(self, &v);
    return v;
}

bf_ledger_t *bf_ledger_open(const char *path, bf_err_t *err) {
    bf_ledger_t *L = calloc(1, sizeof *L);
    if (!L) return bf_err_set(err, "out of memory"), NULL;
    L->clock = system_clock;
    if (sqlite3_open_v2(path, &L->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        bf_err_set(err, "opening %s: %s", path, L->db ? sqlite3_errmsg(L->db) : "out of memory");
        bf_ledger_close(&L);
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
        bf_ledger_close(&L);
        return NULL;
    }
    L->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    L->md = EVP_MD_CTX_new();
    if (!L->sha256 || !L->md) {
        bf_err_set(err, "OpenSSL SHA-256 unavailable");
        bf_ledger_close(&L);
        return NULL;
    }
    if (migrate(L, err) ||
        ledger_acct_find(L, BF_LEDGER_ACCT_PLATFORM_EXTERNAL, BF_LEDGER_CNY, 0, &L->ext_cny, err) ||
        ledger_acct_find(L, BF_LEDGER_ACCT_PLATFORM_EXTERNAL, BF_LEDGER_COIN, 0, &L->ext_coin, err) ||
        ledger_acct_find(L, BF_LEDGER_ACCT_PLATFORM_REVENUE, BF_LEDGER_CNY, 0, &L->rev_cny, err) ||
        ledger_acct_find(L, BF_LEDGER_ACCT_PLATFORM_REVENUE, BF_LEDGER_COIN, 0, &L->rev_coin, err)) {
        bf_err_prefix(err, "%s: ", path);
        bf_ledger_close(&L);
        return NULL;
    }
    return L;
}

void bf_ledger_close(bf_ledger_t **self_p) {
    if (!self_p || !*self_p) return;
    bf_ledger_t *L = *self_p;
    if (L->db && !sqlite3_get_autocommit(L->db)) sqlite3_exec(L->db, "ROLLBACK", NULL, NULL, NULL);
    for (int i = 0; i < ST_COUNT; i++) sqlite3_finalize(L->st[i]);
    if (L->db) sqlite3_close(L->db);
    EVP_MD_CTX_free(L->md);
    EVP_MD_free(L->sha256);
    free(L->acc);
    free(L->gacc);
    free(L->gidx);
    ledger_rcache_free(L);
    free(L);
    *self_p = NULL;
}

/* ---- Group commit ---------------------------------------------------------------------------- */

/* The group's account cache: accounts the group's committed ops have touched, with the counters
 * those ops left. Dirty entries are written back once, before the group commits (or before a
 * query on this handle reads the accounts table), instead of once per op. Another process cannot
 * write meanwhile: the group holds the write lock from BEGIN IMMEDIATE to COMMIT. */
static void gmap_reset(bf_ledger_t *L) {
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

int ledger_group_flush(bf_ledger_t *L, bf_err_t *err) {
    if (!L->in_group) return 0;
    int rc0 = ledger_rcache_flush(L, err);
    if (rc0 || !L->g_dirty) return rc0;
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

int bf_ledger_group_begin(bf_ledger_t *self, bf_err_t *err) {
    assert(!self->in_group && !self->in_op);
    int rc = exec_simple(self, ST_BEGIN, err);
    if (rc) return rc;
    self->in_group = 1;
    self->head_valid = 0;
    self->next_usage = 0;
    gmap_reset(self);
    ledger_rcache_drop(self);
    return 0;
}

int bf_ledger_group_commit(bf_ledger_t *self, bf_err_t *err) {
    assert(self->in_group && !self->in_op);
    int rc = ledger_group_flush(self, err);
    if (!rc) rc = exec_simple(self, ST_COMMIT, err);
    if (rc) bf_ledger_group_rollback(self);
    self->in_group = 0;
    self->head_valid = 0;
    self->next_usage = 0;
    gmap_reset(self);
    ledger_rcache_drop(self);
    return rc;
}

void bf_ledger_group_rollback(bf_ledger_t *self) {
    if (!sqlite3_get_autocommit(self->db)) exec_simple(self, ST_ROLLBACK, NULL);
    self->in_group = 0;
    self->head_valid = 0;
    self->next_usage = 0;
    gmap_reset(self);
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
        exec_simple(L, ST_ROLLBACK_TO, NULL);
        L->head_valid = 0;
        L->next_usage = 0;
        ledger_rcache_abort(L);
    }
    if (!L->in_group) ledger_rcache_drop(L);
    if (exec_simple(L, ST_RELEASE, err)) rc = BF_LEDGER_EINTERNAL;
    if (!L->in_group) {
        if (commit && !rc) {
            rc = exec_simple(L, ST_COMMIT, err);
            if (rc) exec_simple(L, ST_ROLLBACK, NULL);
        } else if (!sqlite3_get_autocommit(L->db)) {
            exec_simple(L, ST_ROLLBACK, NULL);
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
        if ((rc = exec_simple(L, ST_BEGIN, err))) return rc;
        L->head_valid = 0;
        L->next_usage = 0;
    }
    /* Only fee operations keep the fee cache: every other op may change a task or its shares. Its
     * pending writes go out here, before the savepoint, so no rollback of this op can undo them. */
    int fee_op = op->kind == OP_FEE_HOLD || op->kind == OP_FEE_CAPTURE || op->kind == OP_FEE_VOID ||
                 op->kind == OP_FEE_CHARGE || op->kind == OP_FEE_SETTLE || op->kind == OP_EXPIRE;
    if ((rc = ledger_rcache_op_start(L, fee_op, err))) {
        if (!L->in_group) exec_simple(L, ST_ROLLBACK, NULL);
        return rc;
    }
    if ((rc = exec_simple(L, ST_SAVEPOINT, err))) {
        if (!L->in_group) exec_simple(L, ST_ROLLBACK, NULL);
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

/* At the end of a successful op: alone, its changed accounts are written now; inside a group they
 * join the group's cache and are written once before the group commits. */
static int flush_accounts(bf_ledger_t *L, bf_err_t *err) {
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
        if (rc == 0) rc = flush_accounts(L, err); /* last: inside a group it cannot be undone */
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
        exec_simple(L, ST_ROLLBACK_TO, NULL);
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

int bf_ledger_op_lookup(bf_ledger_t *self, const char *op_id, int *found, int *rc, int64_t *result,
                        bf_err_t *err) {
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

/* ---- Accounts -------------------------------------------------------------------------------- */

int64_t ledger_posted(const ledger_acct_t *a) { return a->cp - a->dp; }

/* Only the platform's external account (the outside world) may go negative. */
int ledger_acct_restricted(int kind) { return kind != BF_LEDGER_ACCT_PLATFORM_EXTERNAL; }

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
            return bf_err_set(err, "insufficient funds: available %lld, need %lld",
                              (long long)(d->cp - d->dp - d->dpend), (long long)x->amount),
                   BF_LEDGER_EFUNDS;
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
        return bf_err_set(err, "insufficient funds: available %lld, need %lld",
                          (long long)(d->cp - d->dp - d->dpend), (long long)total),
               BF_LEDGER_EFUNDS;
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

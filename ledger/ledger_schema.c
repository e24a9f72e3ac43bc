/* ledger_schema.c: the ledger's schema history, one SQL migration per schema version. Part of the
 * storage layer: ledger_store.c applies these when it opens a database. Data only; it calls nothing.
 * The SQL of the statements the code runs is next to the statement cache, in ledger_store.c. */
#include "ledger_internal.h"

/* Migration i takes the schema from version i to i+1. Never edit a shipped migration: append one. */
const char *const ledger_migrations[] = {
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
    /* 3 -> 4: withdrawals. Each is a pending transfer (code withdrawal) from the user's cash to the
     * platform's external CNY account, held at once; the operator posts it (paid, under an
     * external reference) or voids it (rejected, with a reason). The transfers carry the money
     * and the hash chain; this table says which hold is which withdrawal and how it ended. */
    "CREATE TABLE withdrawals("
    "  id INTEGER PRIMARY KEY,"
    "  user_id INTEGER NOT NULL REFERENCES users(id),"
    "  hold_transfer INTEGER NOT NULL UNIQUE REFERENCES transfers(id),"
    "  amount INTEGER NOT NULL CHECK(amount > 0),"
    "  status INTEGER NOT NULL CHECK(status BETWEEN 1 AND 3),"
    "  created_at INTEGER NOT NULL,"
    "  resolved_at INTEGER NOT NULL DEFAULT 0,"
    "  resolve_transfer INTEGER UNIQUE REFERENCES transfers(id),"
    "  external_ref TEXT UNIQUE CHECK(external_ref IS NULL OR length(external_ref) BETWEEN 1 AND 100),"
    "  reason TEXT CHECK(reason IS NULL OR length(reason) BETWEEN 1 AND 256),"
    "  CHECK((status = 1) = (resolve_transfer IS NULL)),"
    "  CHECK((status = 2) = (external_ref IS NOT NULL)),"
    "  CHECK((status = 3) = (reason IS NOT NULL))) STRICT;"
    "CREATE INDEX withdrawals_user ON withdrawals(user_id);"
    "CREATE INDEX withdrawals_open ON withdrawals(id) WHERE status = 1;",
    /* 4 -> 5: users found by the CURVE key they registered with: a coordinator sharing the ledger
     * with others learns of a user another one registered when that user first connects. */
    "CREATE INDEX users_curve_key ON users(curve_public_key);",
};
#define N_MIGRATIONS (sizeof ledger_migrations / sizeof ledger_migrations[0])
_Static_assert(N_MIGRATIONS == LEDGER_SCHEMA_VERSION, "one migration per schema version");

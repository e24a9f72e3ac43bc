/* ledger_pg.c: the PostgreSQL backend (libpq), selected by opening a "postgresql://" or
 * "postgres://" connection string instead of a file path; bf_ledger.h is the same for callers.
 * Same schema semantics, op ids, fingerprints, transfer rows and hash chain as the SQLite backend
 * (ledger_row_hash is shared), so verify replays either the same way.
 *
 * One chain for every coordinator on the database: a write transaction first locks the single
 * chain_head row (SELECT ... FOR UPDATE), so writers serialise on it, each appends at head + 1
 * with the head's hash, and every invariant is checked under that lock (READ COMMITTED is then
 * enough: no two writers interleave, so no serialisation failure can occur and no retry loop is
 * needed). A group (bf_ledger_group_begin) takes the lock once for all its ops; each op is a
 * savepoint, as on SQLite.
 *
 * Every operation and query of bf_ledger.h is here, and verify runs the same checks over the same
 * rows. Inside a group, the fee operations take the batched path (see "Batched fee path"): no
 * round trip per op, the group's rows sent as multi-row statements in one pipeline at its end.
 * Calls: libpq, ledger_store.c's hashing helpers (ledger_row_hash, ledger_sha256, ledger_hex),
 * ledger_tx.c's fingerprint builder. */
#include <assert.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ledger_internal.h"

#define PG_SCHEMA_VERSION 4

typedef struct {
    int64_t id, owner, dp, cp, dpend, cpend, last;
    int kind, currency, dirty;
} pg_acct_t;

/* The batched fee path (see "Batched fee path" below): what a group's fee ops have written and
 * not yet sent, and what they read, kept in memory under the chain lock. */
typedef struct {
    uint64_t *w;  /* nbits bits */
    size_t nbits; /* a power of two */
    size_t n;     /* keys added */
} pg_bloom_t;

typedef struct { /* an ops row */
    int64_t id, result, at;
    char *key, *msg;
    int kind, rc;
    unsigned char fp[32];
} pg_pop_t;

typedef struct { /* a transfers row */
    ledger_row_t r;
    int64_t op;
    unsigned char hash[32];
    unsigned char *legs; /* owned copy of r.legs */
} pg_ptx_t;

typedef struct { /* a model_usage row */
    int64_t id, task, payer, hold_transfer, held, captured, created_at, expires_at, resolve, end;
    int64_t images, classified;
    unsigned char *result; /* owned */
    size_t result_len;
    int status, fresh /* not in the table yet */, dirty, noted;
} pg_use_t;

/* One column of a multi-row statement, as a PostgreSQL array literal. */
typedef struct {
    char *p;
    size_t n, cap;
    int oom;
} pg_col_t;

#define PG_MAX_COLS 20

typedef struct pg_cols {
    pg_col_t col[PG_MAX_COLS];
    const char *v[PG_MAX_COLS];
    int n;
} pg_cols_t;

typedef struct { /* a task with its holders (model_shareholdings order) and payout state */
    ledger_task_row_t t;
    size_t n;
    int64_t *ppm, *cash, *paid;
    int dirty;
} pg_tc_t;

struct ledger_pg {
    PGconn *c;
    int in_group, in_tx;
    int64_t head_id, head_id0;
    unsigned char head_hash[32], head_hash0[32];
    /* Accounts the current op touches, written back at its end; inside a group they stay here
     * for the whole group (write-behind: a row updated by every op of a group would grow a chain
     * of row versions that each later read walks) and go out before the commit or a query. acc0
     * is their state when the current op began, restored if it fails. */
    pg_acct_t *acc, *acc0;
    int n_acc, cap_acc, n_acc0, cap_acc0;
    int64_t head_group; /* head when the group began: chain_head is written once, at its commit */
    /* Batched fee path. */
    int defer;  /* pg_transfer keeps its row in ptx instead of inserting it */
    int synced; /* bloom, ops_max and usage_max agree with the tables under the current lock */
    int64_t ops_max, ops_max_tx, usage_max;
    pg_bloom_t bloom; /* every op key in the table (and some that are not: false positives) */
    pg_pop_t *pops;
    int n_pops, cap_pops;
    pg_ptx_t *ptx;
    int n_ptx, cap_ptx;
    pg_use_t *use;
    int n_use, cap_use;
    pg_tc_t *tc;
    int n_tc, cap_tc;
    int64_t *uc; /* pairs (user id, cash account) */
    int n_uc, cap_uc;
    struct pg_cols *cols[2]; /* column buffers of the flush's statements */
    int64_t *scr; /* scratch for the apportionment */
    size_t cap_scr;
    /* The op's undo journal: where the lists stood, and the one older usage row and task it changed. */
    int j_ptx, j_pops, j_nuse, j_use, j_tc, j_tc_dirty;
    int64_t j_usage_max, j_rev, j_pp;
    pg_use_t j_use_row;
    int64_t *j_paid;
    size_t cap_j_paid;
};

/* ---- Parameters and statements --------------------------------------------------------------- */

typedef struct {
    const char *v[12];
    int len[12], fmt[12];
    char buf[12][24];
    int n;
} pp_t;

static void pp_i64(pp_t *p, int64_t v) {
    snprintf(p->buf[p->n], sizeof p->buf[p->n], "%lld", (long long)v);
    p->v[p->n] = p->buf[p->n], p->len[p->n] = 0, p->fmt[p->n] = 0;
    p->n++;
}
static void pp_str(pp_t *p, const char *s) {
    p->v[p->n] = s, p->len[p->n] = 0, p->fmt[p->n] = 0;
    p->n++;
}
static void pp_bin(pp_t *p, const void *b, size_t n) {
    p->v[p->n] = n ? b : "", p->len[p->n] = (int)n, p->fmt[p->n] = 1;
    p->n++;
}

static int pg_fail(bf_ledger_t *L, PGresult *r, bf_err_t *err, const char *what) {
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    bf_err_set(err, "%s: %s", what, r ? PQresultErrorMessage(r) : PQerrorMessage(L->pg->c));
    size_t n = err ? strlen(err->msg) : 0;
    while (n && err->msg[n - 1] == '\n') err->msg[--n] = 0;
    int busy = state && (!strcmp(state, "40001") || !strcmp(state, "40P01") || !strcmp(state, "55P03"));
    if (r) PQclear(r);
    return busy ? BF_LEDGER_EBUSY : BF_LEDGER_EINTERNAL;
}

/* Runs sql; *out gets the result when the caller wants rows (else it is cleared). */
static int pgx(bf_ledger_t *L, const char *sql, const pp_t *p, PGresult **out, bf_err_t *err) {
    PGresult *r = PQexecParams(L->pg->c, sql, p ? p->n : 0, NULL, p ? p->v : NULL, p ? p->len : NULL,
                               p ? p->fmt : NULL, 0);
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) return pg_fail(L, r, err, "postgresql");
    if (out) *out = r;
    else PQclear(r);
    return 0;
}

static int64_t col_i64(PGresult *r, int row, int col) {
    return PQgetisnull(r, row, col) ? 0 : strtoll(PQgetvalue(r, row, col), NULL, 10);
}

/* A bytea column in text form ("\x0a1b..."): into out (cap bytes); the length, or -1. */
static long col_bytes(PGresult *r, int row, int col, unsigned char *out, size_t cap) {
    if (PQgetisnull(r, row, col)) return -1;
    size_t n = 0;
    unsigned char *b = PQunescapeBytea((const unsigned char *)PQgetvalue(r, row, col), &n);
    if (!b) return -1;
    long rc = n <= cap ? (long)n : -1;
    if (rc >= 0) memcpy(out, b, n);
    PQfreemem(b);
    return rc;
}

/* ---- Schema ---------------------------------------------------------------------------------- */

/* Migration i takes the schema from version i to i+1; version 2 is the SQLite schema 4. */
static const char *const pg_migrations[PG_SCHEMA_VERSION] = {
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value BIGINT NOT NULL);"
    "INSERT INTO meta(key, value) VALUES('platform_fee_ppm', 0);"
    /* The single row every writer locks first: the chain's head (one chain for all writers). */
    "CREATE TABLE chain_head(one INT PRIMARY KEY CHECK(one = 1), head_id BIGINT NOT NULL,"
    "  head_hash BYTEA NOT NULL CHECK(length(head_hash) = 32));"
    "INSERT INTO chain_head VALUES(1, 0, decode(repeat('00', 32), 'hex'));"
    "CREATE TABLE accounts(id BIGSERIAL PRIMARY KEY, kind INT NOT NULL CHECK(kind BETWEEN 1 AND 6),"
    "  currency INT NOT NULL CHECK(currency IN (1, 2)), owner BIGINT NOT NULL,"
    "  debits_posted BIGINT NOT NULL DEFAULT 0 CHECK(debits_posted >= 0),"
    "  credits_posted BIGINT NOT NULL DEFAULT 0 CHECK(credits_posted >= 0),"
    "  debits_pending BIGINT NOT NULL DEFAULT 0 CHECK(debits_pending >= 0),"
    "  credits_pending BIGINT NOT NULL DEFAULT 0 CHECK(credits_pending >= 0),"
    "  last_transfer BIGINT NOT NULL DEFAULT 0, UNIQUE(kind, currency, owner));"
    "INSERT INTO accounts(kind, currency, owner) VALUES (5, 1, 0), (5, 2, 0), (6, 1, 0), (6, 2, 0);"
    "CREATE TABLE users(id BIGSERIAL PRIMARY KEY,"
    "  name TEXT NOT NULL UNIQUE CHECK(length(name) BETWEEN 1 AND 64),"
    "  curve_public_key TEXT NOT NULL CHECK(length(curve_public_key) = 40), password_hash TEXT,"
    "  cash_account BIGINT NOT NULL, coin_account BIGINT NOT NULL, created_at BIGINT NOT NULL);"
    "CREATE TABLE ops(id BIGSERIAL PRIMARY KEY, op_key TEXT NOT NULL UNIQUE, kind INT NOT NULL,"
    "  fingerprint BYTEA NOT NULL, rc INT NOT NULL, result BIGINT NOT NULL, message TEXT,"
    "  created_at BIGINT NOT NULL);"
    "CREATE TABLE transfers(id BIGINT PRIMARY KEY, op BIGINT NOT NULL REFERENCES ops(id),"
    "  type INT NOT NULL CHECK(type BETWEEN 1 AND 5), code INT NOT NULL,"
    "  currency INT NOT NULL CHECK(currency IN (1, 2)),"
    "  debit_account BIGINT NOT NULL REFERENCES accounts(id),"
    "  credit_account BIGINT NOT NULL REFERENCES accounts(id),"
    "  amount BIGINT NOT NULL CHECK(amount >= 0), pending_id BIGINT REFERENCES transfers(id),"
    "  expires_at BIGINT NOT NULL, created_at BIGINT NOT NULL,"
    "  debit_before BIGINT NOT NULL, debit_after BIGINT NOT NULL,"
    "  credit_before BIGINT NOT NULL, credit_after BIGINT NOT NULL,"
    "  debit_prev BIGINT NOT NULL, credit_prev BIGINT NOT NULL,"
    "  hash BYTEA NOT NULL CHECK(length(hash) = 32),"
    "  legs BYTEA CHECK(legs IS NULL OR (length(legs) >= 32 AND length(legs) % 32 = 0)));"
    "CREATE UNIQUE INDEX transfers_resolution ON transfers(pending_id) WHERE pending_id IS NOT NULL;"
    "CREATE FUNCTION transfers_append_only() RETURNS trigger LANGUAGE plpgsql AS"
    "  $$BEGIN RAISE EXCEPTION 'transfers are append-only'; END$$;"
    "CREATE TRIGGER transfers_no_change BEFORE UPDATE OR DELETE ON transfers"
    "  FOR EACH ROW EXECUTE FUNCTION transfers_append_only();"
    "CREATE TABLE withdrawals(id BIGSERIAL PRIMARY KEY, user_id BIGINT NOT NULL REFERENCES users(id),"
    "  hold_transfer BIGINT NOT NULL UNIQUE REFERENCES transfers(id),"
    "  amount BIGINT NOT NULL CHECK(amount > 0), status INT NOT NULL CHECK(status BETWEEN 1 AND 3),"
    "  created_at BIGINT NOT NULL, resolved_at BIGINT NOT NULL DEFAULT 0,"
    "  resolve_transfer BIGINT UNIQUE REFERENCES transfers(id),"
    "  external_ref TEXT UNIQUE CHECK(external_ref IS NULL OR length(external_ref) BETWEEN 1 AND 100),"
    "  reason TEXT CHECK(reason IS NULL OR length(reason) BETWEEN 1 AND 256),"
    "  CHECK((status = 1) = (resolve_transfer IS NULL)), CHECK((status = 2) = (external_ref IS NOT NULL)),"
    "  CHECK((status = 3) = (reason IS NOT NULL)));"
    "CREATE INDEX withdrawals_user ON withdrawals(user_id);",
    /* 1 -> 2: tasks, shares, paid-prediction usage, rewards, participations (SQLite's schema). */
    "CREATE TABLE tasks(id BIGSERIAL PRIMARY KEY, creator BIGINT NOT NULL REFERENCES users(id), name TEXT NOT NULL,"
    "  payment_mode INT NOT NULL CHECK(payment_mode IN (1, 2)), usage_fee BIGINT NOT NULL CHECK(usage_fee >= 0),"
    "  reward_pool BIGINT NOT NULL CHECK(reward_pool >= 0), status INT NOT NULL CHECK(status BETWEEN 1 AND 4),"
    "  model_status INT NOT NULL CHECK(model_status IN (0, 1)), total_revenue BIGINT NOT NULL CHECK(total_revenue >= 0),"
    "  platform_fee_ppm BIGINT NOT NULL CHECK(platform_fee_ppm BETWEEN 0 AND 1000000),"
    "  platform_paid BIGINT NOT NULL CHECK(platform_paid >= 0), payout_state BYTEA, result_hash TEXT,"
    "  escrow_account BIGINT NOT NULL, clearing_account BIGINT NOT NULL, created_at BIGINT NOT NULL,"
    "  updated_at BIGINT NOT NULL);"
    "CREATE TABLE model_shareholdings(task_id BIGINT NOT NULL REFERENCES tasks(id),"
    "  cash_account BIGINT NOT NULL REFERENCES accounts(id), user_id BIGINT NOT NULL REFERENCES users(id),"
    "  weight BIGINT NOT NULL, ppm BIGINT NOT NULL CHECK(ppm BETWEEN 0 AND 1000000), PRIMARY KEY(task_id, cash_account));"
    "CREATE INDEX shareholdings_user ON model_shareholdings(user_id);"
    "CREATE TABLE model_usage(id BIGSERIAL PRIMARY KEY, task_id BIGINT NOT NULL REFERENCES tasks(id),"
    "  payer BIGINT NOT NULL REFERENCES users(id), hold_transfer BIGINT NOT NULL REFERENCES transfers(id),"
    "  held BIGINT NOT NULL CHECK(held > 0), captured BIGINT NOT NULL CHECK(captured >= 0 AND captured <= held),"
    "  status INT NOT NULL CHECK(status BETWEEN 1 AND 4), created_at BIGINT NOT NULL, expires_at BIGINT NOT NULL,"
    "  resolve_transfer BIGINT REFERENCES transfers(id), payouts_end BIGINT,"
    "  images BIGINT NOT NULL DEFAULT 0 CHECK(images >= 0),"
    "  classified BIGINT NOT NULL DEFAULT 0 CHECK(classified >= 0 AND classified <= images), result BYTEA);"
    "CREATE INDEX usage_task ON model_usage(task_id);"
    "CREATE INDEX usage_open ON model_usage(expires_at) WHERE status = 1 AND expires_at > 0;"
    "CREATE TABLE reward_distributions(id BIGSERIAL PRIMARY KEY, task_id BIGINT NOT NULL REFERENCES tasks(id),"
    "  user_id BIGINT NOT NULL REFERENCES users(id), weight BIGINT NOT NULL, amount BIGINT NOT NULL CHECK(amount >= 0),"
    "  transfer BIGINT REFERENCES transfers(id));"
    "CREATE INDEX rewards_task ON reward_distributions(task_id);"
    "CREATE TABLE participations(task_id BIGINT NOT NULL REFERENCES tasks(id),"
    "  user_id BIGINT NOT NULL REFERENCES users(id), joined_at BIGINT NOT NULL, PRIMARY KEY(task_id, user_id));",
    /* 2 -> 3: no foreign keys on the two tables every paid prediction appends to. PostgreSQL checks
     * each reference of each row with a query of its own; on transfers (4 per row) and model_usage
     * (4 per row) that was two thirds of a grouped settlement's time on the server. What they
     * guarded is what verify checks on every row: each transfer's op, its accounts (balances),
     * each resolution's hold and each usage row's hold (holds). */
    "ALTER TABLE transfers DROP CONSTRAINT transfers_op_fkey, DROP CONSTRAINT transfers_debit_account_fkey,"
    "  DROP CONSTRAINT transfers_credit_account_fkey, DROP CONSTRAINT transfers_pending_id_fkey;"
    "ALTER TABLE model_usage DROP CONSTRAINT model_usage_task_id_fkey, DROP CONSTRAINT model_usage_payer_fkey,"
    "  DROP CONSTRAINT model_usage_hold_transfer_fkey, DROP CONSTRAINT model_usage_resolve_transfer_fkey;",
    /* 3 -> 4: users found by their CURVE key (as SQLite's 4 -> 5) */
    "CREATE INDEX users_curve_key ON users(curve_public_key);",
};

/* Applies pending migrations under a transaction-scoped advisory lock, so coordinators opening a
 * fresh database at once create the schema once. */
static int pg_migrate(bf_ledger_t *L, bf_err_t *err) {
    int rc;
    if ((rc = pgx(L, "BEGIN", NULL, NULL, err))) return rc;
    PGresult *r = NULL;
    if ((rc = pgx(L, "SELECT pg_advisory_xact_lock(7202604)", NULL, NULL, err)) ||
        (rc = pgx(L, "CREATE TABLE IF NOT EXISTS ledger_schema(version INT NOT NULL)", NULL, NULL, err)) ||
        (rc = pgx(L, "SELECT coalesce(max(version), 0) FROM ledger_schema", NULL, &r, err))) {
        pgx(L, "ROLLBACK", NULL, NULL, NULL);
        return rc;
    }
    int v = (int)col_i64(r, 0, 0);
    PQclear(r);
    if (v > PG_SCHEMA_VERSION) {
        pgx(L, "ROLLBACK", NULL, NULL, NULL);
        return bf_err_set(err, "database schema version %d is newer than this program's %d", v, PG_SCHEMA_VERSION),
               BF_LEDGER_EINTERNAL;
    }
    for (; v < PG_SCHEMA_VERSION; v++) {
        PGresult *m = PQexec(L->pg->c, pg_migrations[v]);
        if (!m || PQresultStatus(m) != PGRES_COMMAND_OK) {
            rc = pg_fail(L, m, err, "migration");
            pgx(L, "ROLLBACK", NULL, NULL, NULL);
            return rc;
        }
        PQclear(m);
        pp_t p = {0};
        pp_i64(&p, v + 1);
        if ((rc = pgx(L, "DELETE FROM ledger_schema", NULL, NULL, err)) ||
            (rc = pgx(L, "INSERT INTO ledger_schema(version) VALUES($1)", &p, NULL, err))) {
            pgx(L, "ROLLBACK", NULL, NULL, NULL);
            return rc;
        }
    }
    return pgx(L, "COMMIT", NULL, NULL, err);
}

static int pg_find_account(bf_ledger_t *L, int kind, int currency, int64_t *id, bf_err_t *err) {
    pp_t p = {0};
    pp_i64(&p, kind), pp_i64(&p, currency);
    PGresult *r;
    int rc = pgx(L, "SELECT id FROM accounts WHERE kind = $1 AND currency = $2 AND owner = 0", &p, &r, err);
    if (rc) return rc;
    rc = PQntuples(r) == 1 ? (*id = col_i64(r, 0, 0), 0) : (bf_err_set(err, "platform account missing"), BF_LEDGER_EINTERNAL);
    PQclear(r);
    return rc;
}

static void pg_batch_free(struct ledger_pg *g);

int ledger_pg_url(const char *path) {
    return path && (!strncmp(path, "postgresql://", 13) || !strncmp(path, "postgres://", 11));
}

int ledger_pg_redirect(const char *path, char *url, size_t cap, bf_err_t *err) {
    if (!path || ledger_pg_url(path)) return 0;
    /* Only a small file is read. A SQLite ledger is empty or at least one 4 KiB page, and it must
     * never be opened here: closing any descriptor of a file drops every POSIX lock this process
     * holds on it, the locks of the SQLite handles already open on the ledger included. */
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size == 0 || st.st_size >= 4096 ||
        (size_t)st.st_size >= cap)
        return 0;
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    size_t n = fread(url, 1, cap - 1, f);
    int bad = n == cap - 1 && fgetc(f) != EOF; /* longer than any URL we write */
    fclose(f);
    url[n] = 0;
    if (!ledger_pg_url(url)) return 0; /* a SQLite file starts "SQLite format 3" */
    size_t len = strcspn(url, "\r\n");
    for (size_t i = len; i < n; i++)
        if (url[i] != '\r' && url[i] != '\n') bad = 1; /* a second line, or a NUL */
    url[len] = 0;
    if (bad) return bf_err_set(err, "%s: not one line naming a PostgreSQL ledger", path), -1;
    return 1;
}

int bf_ledger_redirect_write(const char *path, const char *url, bf_err_t *err) {
    if (!ledger_pg_url(url) || strlen(url) >= 4000 || strpbrk(url, "\r\n"))
        return bf_err_set(err, "not a PostgreSQL connection URL (postgresql://...)"), -1;
    char tmp[4200];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) return bf_err_set(err, "path too long"), -1;
    /* 0600: the URL may carry a password */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    int ok = f && fprintf(f, "%s\n", url) > 0 && fflush(f) == 0 && fsync(fileno(f)) == 0;
    if (f) ok = fclose(f) == 0 && ok;
    else if (fd >= 0) close(fd);
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return bf_err_set(err, "cannot write %s", path), -1;
    }
    return 0;
}

int bf_ledger_location(const char *path, char *out, size_t cap, bf_err_t *err) {
    char url[4096];
    int r = ledger_pg_redirect(path, url, sizeof url, err);
    if (r < 0) return -1;
    if ((size_t)snprintf(out, cap, "%s", r ? url : path) >= cap) return bf_err_set(err, "path too long"), -1;
    return r;
}

int ledger_pg_open(bf_ledger_t *L, const char *url, bf_err_t *err) {
    if (!(L->pg = calloc(1, sizeof *L->pg))) return bf_err_set(err, "out of memory"), -1;
    L->pg->c = PQconnectdb(url);
    if (!L->pg->c || PQstatus(L->pg->c) != CONNECTION_OK)
        return bf_err_set(err, "connecting to PostgreSQL: %s", L->pg->c ? PQerrorMessage(L->pg->c) : "out of memory"), -1;
    PQclear(PQexec(L->pg->c, "SET client_min_messages = warning"));
    if (pg_migrate(L, err) || pg_find_account(L, BF_LEDGER_ACCT_PLATFORM_EXTERNAL, BF_LEDGER_CNY, &L->ext_cny, err) ||
        pg_find_account(L, BF_LEDGER_ACCT_PLATFORM_EXTERNAL, BF_LEDGER_COIN, &L->ext_coin, err) ||
        pg_find_account(L, BF_LEDGER_ACCT_PLATFORM_REVENUE, BF_LEDGER_CNY, &L->rev_cny, err) ||
        pg_find_account(L, BF_LEDGER_ACCT_PLATFORM_REVENUE, BF_LEDGER_COIN, &L->rev_coin, err))
        return -1;
    return 0;
}

void ledger_pg_close(bf_ledger_t *L) {
    if (!L->pg) return;
    if (L->pg->c) PQfinish(L->pg->c);
    free(L->pg->acc);
    free(L->pg->acc0);
    pg_batch_free(L->pg);
    free(L->pg);
    L->pg = NULL;
}

int ledger_pg_schema_version(bf_ledger_t *L) {
    PGresult *r;
    if (pgx(L, "SELECT coalesce(max(version), -1) FROM ledger_schema", NULL, &r, NULL)) return -1;
    int v = (int)col_i64(r, 0, 0);
    PQclear(r);
    return v;
}

int ledger_pg_unsupported(bf_err_t *err, const char *what) {
    return bf_err_set(err, "%s is not on the PostgreSQL backend yet", what), BF_LEDGER_EINTERNAL;
}

/* ---- Transactions: the chain lock, groups ---------------------------------------------------- */

/* Begins a write transaction and takes the chain lock (see the file's header). */
static int pg_begin(bf_ledger_t *L, bf_err_t *err) {
    struct ledger_pg *g = L->pg;
    int rc;
    PGresult *r;
    if ((rc = pgx(L, "BEGIN", NULL, NULL, err))) return rc;
    if ((rc = pgx(L, "SELECT head_id, head_hash FROM chain_head WHERE one = 1 FOR UPDATE", NULL, &r, err))) {
        pgx(L, "ROLLBACK", NULL, NULL, NULL);
        return rc;
    }
    g->head_id = col_i64(r, 0, 0);
    long n = col_bytes(r, 0, 1, g->head_hash, 32);
    PQclear(r);
    if (n != 32) {
        pgx(L, "ROLLBACK", NULL, NULL, NULL);
        return bf_err_set(err, "chain head has a malformed hash"), BF_LEDGER_EINTERNAL;
    }
    g->in_tx = 1;
    return 0;
}

static int pg_end(bf_ledger_t *L, int commit, bf_err_t *err) {
    int rc = pgx(L, commit ? "COMMIT" : "ROLLBACK", NULL, NULL, err);
    L->pg->in_tx = 0;
    return rc;
}

static int pg_acct_write(bf_ledger_t *L, bf_err_t *err);

static int pg_batch_flush(bf_ledger_t *L, int commit, bf_err_t *err);
static void pg_batch_end(struct ledger_pg *g, int keep);
static void pg_batch_drop(struct ledger_pg *g);

/* Before a query reads the tables inside a group: what the group has written behind (pending rows,
 * accounts, the chain head), into the tables. */
int ledger_pg_flush(bf_ledger_t *L, bf_err_t *err) { return L->pg->in_group ? pg_batch_flush(L, 0, err) : 0; }

int ledger_pg_group_begin(bf_ledger_t *L, bf_err_t *err) {
    assert(!L->pg->in_group);
    int rc = pg_begin(L, err);
    if (rc) return rc;
    L->pg->in_group = 1;
    L->pg->n_acc = 0;
    L->pg->head_group = L->pg->head_id;
    L->pg->ops_max_tx = L->pg->ops_max;
    L->pg->synced = 0;
    return 0;
}

int ledger_pg_group_commit(bf_ledger_t *L, bf_err_t *err) {
    int rc = pg_batch_flush(L, 1, err);
    if (rc) pg_end(L, 0, NULL);
    L->pg->in_tx = 0;
    L->pg->in_group = 0;
    L->pg->n_acc = 0;
    pg_batch_end(L->pg, !rc);
    return rc;
}

void ledger_pg_group_rollback(bf_ledger_t *L) {
    if (L->pg->in_tx) pg_end(L, 0, NULL);
    L->pg->in_group = 0;
    L->pg->n_acc = 0;
    pg_batch_end(L->pg, 0);
}

/* The op's starting point inside a group (the accounts as they were), and back to it. */
static int pg_snapshot(struct ledger_pg *g) {
    if (g->n_acc > g->cap_acc0) {
        pg_acct_t *a = realloc(g->acc0, (size_t)g->cap_acc * sizeof *a);
        if (!a) return -1;
        g->acc0 = a, g->cap_acc0 = g->cap_acc;
    }
    if (g->n_acc) memcpy(g->acc0, g->acc, (size_t)g->n_acc * sizeof *g->acc);
    g->n_acc0 = g->n_acc;
    return 0;
}

static void pg_restore(struct ledger_pg *g) {
    if (!g->in_group) return;
    if (g->n_acc0) memcpy(g->acc, g->acc0, (size_t)g->n_acc0 * sizeof *g->acc);
    g->n_acc = g->n_acc0;
}

/* ---- Accounts and transfers ------------------------------------------------------------------ */

static pg_acct_t *pg_acct(bf_ledger_t *L, int64_t id, bf_err_t *err) {
    struct ledger_pg *g = L->pg;
    for (int i = 0; i < g->n_acc; i++)
        if (g->acc[i].id == id) return &g->acc[i];
    if (g->n_acc == g->cap_acc) {
        int cap = g->cap_acc ? 2 * g->cap_acc : 32;
        pg_acct_t *a = realloc(g->acc, (size_t)cap * sizeof *a);
        if (!a) return bf_err_set(err, "out of memory"), NULL;
        g->acc = a, g->cap_acc = cap;
    }
    pp_t p = {0};
    pp_i64(&p, id);
    PGresult *r;
    if (pgx(L,
            "SELECT kind, currency, owner, debits_posted, credits_posted, debits_pending, credits_pending,"
            " last_transfer FROM accounts WHERE id = $1",
            &p, &r, err))
        return NULL;
    if (PQntuples(r) != 1) {
        PQclear(r);
        return bf_err_set(err, "unknown account %lld", (long long)id), NULL;
    }
    pg_acct_t *a = &g->acc[g->n_acc++];
    *a = (pg_acct_t){.id = id,
                     .kind = (int)col_i64(r, 0, 0),
                     .currency = (int)col_i64(r, 0, 1),
                     .owner = col_i64(r, 0, 2),
                     .dp = col_i64(r, 0, 3),
                     .cp = col_i64(r, 0, 4),
                     .dpend = col_i64(r, 0, 5),
                     .cpend = col_i64(r, 0, 6),
                     .last = col_i64(r, 0, 7)};
    PQclear(r);
    return a;
}

static int pg_acct_write(bf_ledger_t *L, bf_err_t *err) {
    struct ledger_pg *g = L->pg;
    for (int i = 0; i < g->n_acc; i++) {
        pg_acct_t *a = &g->acc[i];
        if (!a->dirty) continue;
        pp_t p = {0};
        pp_i64(&p, a->id), pp_i64(&p, a->dp), pp_i64(&p, a->cp), pp_i64(&p, a->dpend), pp_i64(&p, a->cpend);
        pp_i64(&p, a->last);
        int rc = pgx(L,
                     "UPDATE accounts SET debits_posted = $2, credits_posted = $3, debits_pending = $4,"
                     " credits_pending = $5, last_transfer = $6 WHERE id = $1",
                     &p, NULL, err);
        if (rc) return rc;
        a->dirty = 0;
    }
    return 0;
}

static int add_checked(int64_t a, int64_t b, int64_t *out, bf_err_t *err) {
    if (__builtin_add_overflow(a, b, out)) return bf_err_set(err, "amount overflows a 64-bit counter"), BF_LEDGER_EOVERFLOW;
    return 0;
}

static int pg_defer_row(bf_ledger_t *L, ledger_op_t *op, const ledger_row_t *r, const unsigned char h[32], bf_err_t *err);
static int pg_insert_row(bf_ledger_t *L, ledger_op_t *op, const ledger_row_t *r, const unsigned char h[32], bf_err_t *err);

/* The same rules and the same row as ledger_transfer (ledger_store.c), hashed the same way. */
static int pg_transfer(bf_ledger_t *L, ledger_op_t *op, const ledger_xfer_t *x, int64_t *id, bf_err_t *err) {
    struct ledger_pg *g = L->pg;
    if (x->amount < 0) return bf_err_set(err, "negative amount"), BF_LEDGER_EINVAL;
    if (x->debit == x->credit) return bf_err_set(err, "debit and credit are one account"), BF_LEDGER_EINVAL;
    if (!pg_acct(L, x->debit, err) || !pg_acct(L, x->credit, err)) return BF_LEDGER_ENOTFOUND;
    pg_acct_t *d = pg_acct(L, x->debit, err), *c = pg_acct(L, x->credit, err);
    if (d->currency != c->currency) return bf_err_set(err, "accounts hold different currencies"), BF_LEDGER_EINVAL;
    pg_acct_t nd = *d, nc = *c;
    int rc = 0;
    switch (x->type) {
    case XF_POSTED:
    case XF_PENDING:
        if (ledger_acct_restricted(d->kind) && d->cp - d->dp - d->dpend < x->amount)
            return ledger_funds_error(err, d->currency, d->cp - d->dp - d->dpend, x->amount);
        if (x->type == XF_POSTED) {
            if ((rc = add_checked(d->dp, x->amount, &nd.dp, err)) || (rc = add_checked(c->cp, x->amount, &nc.cp, err)))
                return rc;
        } else if ((rc = add_checked(d->dpend, x->amount, &nd.dpend, err)) ||
                   (rc = add_checked(c->cpend, x->amount, &nc.cpend, err))) {
            return rc;
        }
        break;
    case XF_POST:
        nd.dpend -= x->pending_amount;
        nc.cpend -= x->pending_amount;
        if ((rc = add_checked(d->dp, x->amount, &nd.dp, err)) || (rc = add_checked(c->cp, x->amount, &nc.cp, err)))
            return rc;
        break;
    default: /* void, expire */
        nd.dpend -= x->pending_amount;
        nc.cpend -= x->pending_amount;
        break;
    }
    if (nd.dpend < 0 || nc.cpend < 0) return bf_err_set(err, "pending counters would go negative"), BF_LEDGER_EINTERNAL;
    int64_t db_after, cb_after;
    if (__builtin_sub_overflow(nd.cp, nd.dp, &db_after) || __builtin_sub_overflow(nc.cp, nc.dp, &cb_after))
        return bf_err_set(err, "balance overflows"), BF_LEDGER_EOVERFLOW;
    ledger_row_t r = {.id = g->head_id + 1,
                      .type = x->type,
                      .code = x->code,
                      .currency = d->currency,
                      .debit = d->id,
                      .credit = c->id,
                      .amount = x->amount,
                      .pending_id = x->pending_id,
                      .expires_at = x->expires_at,
                      .created_at = op->now,
                      .debit_before = d->cp - d->dp,
                      .debit_after = db_after,
                      .credit_before = c->cp - c->dp,
                      .credit_after = cb_after,
                      .debit_prev = d->last,
                      .credit_prev = c->last};
    unsigned char h[32];
    ledger_row_hash(L, g->head_hash, &r, op->key, h);
    if (g->defer) {
        if ((rc = pg_defer_row(L, op, &r, h, err))) return rc;
    } else if ((rc = pg_insert_row(L, op, &r, h, err))) {
        return rc;
    }
    g->head_id = r.id;
    memcpy(g->head_hash, h, 32);
    nd.dirty = nc.dirty = 1;
    nd.last = nc.last = r.id;
    *d = nd;
    *c = nc;
    if (id) *id = r.id;
    return 0;
}

static int pg_insert_row(bf_ledger_t *L, ledger_op_t *op, const ledger_row_t *rp, const unsigned char h[32], bf_err_t *err) {
    ledger_row_t r = *rp;
    int rc;
    pp_t p = {0};
    int64_t f[16] = {r.id,       op->row,   r.type,     r.code,         r.currency,    r.debit,
                     r.credit,   r.amount,  r.expires_at, r.created_at, r.debit_before, r.debit_after,
                     r.credit_before, r.credit_after, r.debit_prev, r.credit_prev};
    for (int i = 0; i < 8; i++) pp_i64(&p, f[i]);
    if (r.pending_id) pp_i64(&p, r.pending_id);
    else pp_str(&p, NULL);
    pp_bin(&p, h, 32);
    /* the remaining integers go in as one array to stay within the builder's 12 slots */
    char tail[200];
    snprintf(tail, sizeof tail, "{%lld,%lld,%lld,%lld,%lld,%lld,%lld,%lld}", (long long)f[8], (long long)f[9],
             (long long)f[10], (long long)f[11], (long long)f[12], (long long)f[13], (long long)f[14], (long long)f[15]);
    pp_str(&p, tail);
    if ((rc = pgx(L,
                  "INSERT INTO transfers(id, op, type, code, currency, debit_account, credit_account, amount,"
                  " pending_id, hash, expires_at, created_at, debit_before, debit_after, credit_before, credit_after,"
                  " debit_prev, credit_prev)"
                  " SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8]"
                  " FROM (SELECT $11::bigint[] AS a) t",
                  &p, NULL, err)))
        return rc;
    return 0;
}

/* ---- The op frame ---------------------------------------------------------------------------- */

typedef int (*pg_body_fn)(bf_ledger_t *L, ledger_op_t *op, const void *args, bf_err_t *err);

static int recorded(int rc) {
    return rc != BF_LEDGER_OK && rc != BF_LEDGER_EINTERNAL && rc != BF_LEDGER_EBUSY && rc != BF_LEDGER_ECONFLICT;
}

/* Like ledger_op_run: one op id runs once; its outcome (success or business failure) is recorded
 * in ops with the same fingerprint encoding as on SQLite. */
static int pg_op_run(bf_ledger_t *L, ledger_op_t *op, ledger_fp_t *fp, pg_body_fn body, const void *args,
                     int64_t *result, bf_err_t *err) {
    struct ledger_pg *g = L->pg;
    bf_err_t e0;
    if (!err) err = &e0;
    size_t klen = op->key ? strlen(op->key) : 0;
    int oom = fp->oom;
    if (!oom) ledger_sha256(L, fp->buf ? (const void *)fp->buf : "", fp->len, NULL, 0, op->fp);
    if (fp->buf && fp->buf != fp->inl) free(fp->buf);
    if (klen == 0 || klen > BF_LEDGER_OP_ID_MAX)
        return bf_err_set(err, "op id must be 1..%d bytes", BF_LEDGER_OP_ID_MAX), BF_LEDGER_EINVAL;
    if (oom) return bf_err_set(err, "out of memory"), BF_LEDGER_EINTERNAL;
    int rc, own = !g->in_group;
    if (!own) {
        /* the batched fee path's pending rows go first; this op may change what it cached, and it
         * adds ops rows the filter must learn (pg_batch_sync) */
        if ((rc = pg_batch_flush(L, 0, err))) return rc;
        pg_batch_drop(g);
        g->synced = 0;
    }
    if (own && (rc = pg_begin(L, err))) return rc;
    g->head_id0 = g->head_id;
    memcpy(g->head_hash0, g->head_hash, 32);
    if (own) g->n_acc = 0;
    else if (pg_snapshot(g)) return bf_err_set(err, "out of memory"), BF_LEDGER_EINTERNAL;
    op->now = ledger_now(L);
    op->result = 0;
    PGresult *r = NULL;
    pp_t p = {0};
    pp_str(&p, op->key), pp_i64(&p, op->kind), pp_bin(&p, op->fp, 32), pp_i64(&p, op->now);
    if ((rc = pgx(L, "SAVEPOINT op", NULL, NULL, err)) ||
        (rc = pgx(L,
                  "INSERT INTO ops(id, op_key, kind, fingerprint, rc, result, message, created_at)"
                  " SELECT coalesce(max(id), 0) + 1, $1, $2, $3, 0, 0, NULL, $4 FROM ops"
                  " ON CONFLICT(op_key) DO NOTHING RETURNING id",
                  &p, &r, err)))
        goto abort;
    if (PQntuples(r) == 1) {
        op->row = col_i64(r, 0, 0);
        PQclear(r);
    } else {
        PQclear(r);
        pp_t q = {0};
        pp_str(&q, op->key);
        if ((rc = pgx(L, "SELECT kind, fingerprint, rc, result, message FROM ops WHERE op_key = $1", &q, &r, err)))
            goto abort;
        unsigned char fpr[32];
        int same = PQntuples(r) == 1 && col_i64(r, 0, 0) == op->kind && col_bytes(r, 0, 1, fpr, 32) == 32 &&
                   !memcmp(fpr, op->fp, 32);
        if (same) {
            rc = (int)col_i64(r, 0, 2);
            op->result = col_i64(r, 0, 3);
            if (rc) bf_err_set(err, "%s", PQgetisnull(r, 0, 4) ? "failed" : PQgetvalue(r, 0, 4));
            if (!rc && result) *result = op->result;
        } else {
            rc = (bf_err_set(err, "op id '%s' was already used with different arguments", op->key), BF_LEDGER_ECONFLICT);
        }
        PQclear(r);
        pgx(L, "RELEASE SAVEPOINT op", NULL, NULL, NULL);
        if (own) pg_end(L, 0, NULL);
        op->replayed = 1;
        return rc;
    }
    rc = body(L, op, args, err);
    if (rc == 0) {
        pp_t u = {0};
        pp_i64(&u, op->row), pp_i64(&u, op->result);
        pp_t h = {0};
        pp_i64(&h, g->head_id), pp_bin(&h, g->head_hash, 32);
        if ((own && (rc = pg_acct_write(L, err))) ||
            (op->result && (rc = pgx(L, "UPDATE ops SET result = $2 WHERE id = $1", &u, NULL, err))) ||
            (own && g->head_id != g->head_id0 &&
             (rc = pgx(L, "UPDATE chain_head SET head_id = $1, head_hash = $2 WHERE one = 1", &h, NULL, err))) ||
            (rc = pgx(L, "RELEASE SAVEPOINT op", NULL, NULL, err)) || (own && (rc = pg_end(L, 1, err)))) {
            rc = rc == BF_LEDGER_EBUSY ? rc : BF_LEDGER_EINTERNAL;
            goto abort;
        }
        if (result) *result = op->result;
        return 0;
    }
    if (recorded(rc)) {
        /* Undo the body, then remember that this id failed and why. */
        char msg[sizeof err->msg];
        snprintf(msg, sizeof msg, "%s", err->msg);
        g->head_id = g->head_id0;
        memcpy(g->head_hash, g->head_hash0, 32);
        pg_restore(g);
        /* the rollback undoes the op's row too: it is written again, with the outcome */
        pp_t f = {0};
        pp_str(&f, op->key), pp_i64(&f, op->kind), pp_bin(&f, op->fp, 32), pp_i64(&f, rc), pp_str(&f, msg);
        pp_i64(&f, op->now);
        int r2;
        if ((r2 = pgx(L, "ROLLBACK TO SAVEPOINT op", NULL, NULL, err)) ||
            (r2 = pgx(L,
                      "INSERT INTO ops(id, op_key, kind, fingerprint, rc, result, message, created_at)"
                      " SELECT coalesce(max(id), 0) + 1, $1, $2, $3, $4, 0, $5, $6 FROM ops",
                      &f, NULL, err)) ||
            (r2 = pgx(L, "RELEASE SAVEPOINT op", NULL, NULL, err)) || (own && (r2 = pg_end(L, 1, err)))) {
            rc = r2;
            goto abort;
        }
        bf_err_set(err, "%s", msg);
        return rc;
    }
abort:
    g->head_id = g->head_id0;
    memcpy(g->head_hash, g->head_hash0, 32);
    pg_restore(g);
    if (own) {
        pg_end(L, 0, NULL);
    } else {
        pgx(L, "ROLLBACK TO SAVEPOINT op", NULL, NULL, NULL);
        pgx(L, "RELEASE SAVEPOINT op", NULL, NULL, NULL);
    }
    return rc;
}

/* ---- Operations ------------------------------------------------------------------------------ */
/* Row ids are max(id) + 1, taken under the chain lock (every writer holds it), so they are dense
 * and a rolled-back op leaves no gap: the same ids as SQLite's rowids for the same operations. */

typedef struct {
    int64_t cash, coin;
} pg_user_t;

static int pg_user_row(bf_ledger_t *L, int64_t id, pg_user_t *u, bf_err_t *err) {
    pp_t p = {0};
    pp_i64(&p, id);
    PGresult *r;
    int rc = pgx(L, "SELECT cash_account, coin_account FROM users WHERE id = $1", &p, &r, err);
    if (rc) return rc;
    if (PQntuples(r) != 1) rc = (bf_err_set(err, "unknown user %lld", (long long)id), BF_LEDGER_ENOTFOUND);
    else u->cash = col_i64(r, 0, 0), u->coin = col_i64(r, 0, 1);
    PQclear(r);
    return rc;
}

static int pg_new_account(bf_ledger_t *L, int kind, int currency, int64_t owner, int64_t *id, bf_err_t *err) {
    pp_t p = {0};
    pp_i64(&p, kind), pp_i64(&p, currency), pp_i64(&p, owner);
    PGresult *r;
    int rc = pgx(L, "INSERT INTO accounts(id, kind, currency, owner) SELECT coalesce(max(id), 0) + 1, $1, $2, $3 FROM accounts"
                 " RETURNING id", &p, &r, err);
    if (rc) return rc;
    *id = col_i64(r, 0, 0);
    PQclear(r);
    return 0;
}

int ledger_pg_user_accounts(bf_ledger_t *L, int64_t id, int64_t *cash, int64_t *coin, bf_err_t *err) {
    int frc = ledger_pg_flush(L, err);
    if (frc) return frc;
    pg_user_t u;
    int rc = pg_user_row(L, id, &u, err);
    if (!rc) *cash = u.cash, *coin = u.coin;
    return rc;
}

typedef struct {
    const char *name, *key, *pw_hash;
} pg_reg_args_t;

static int pg_valid_key(const char *k) {
    static const char z85[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";
    if (!k || strlen(k) != 40) return 0;
    for (const char *p = k; *p; p++)
        if (!strchr(z85, *p)) return 0;
    return 1;
}

static int pg_do_register(bf_ledger_t *L, ledger_op_t *op, const void *argp, bf_err_t *err) {
    const pg_reg_args_t *a = argp;
    size_t nl = a->name ? strlen(a->name) : 0;
    if (nl == 0 || nl > 64) return bf_err_set(err, "user name must be 1..64 bytes"), BF_LEDGER_EINVAL;
    if (!pg_valid_key(a->key)) return bf_err_set(err, "CURVE public key must be 40 Z85 characters"), BF_LEDGER_EINVAL;
    pp_t p = {0};
    pp_str(&p, a->name);
    PGresult *r;
    int rc = pgx(L, "SELECT 1 FROM users WHERE name = $1", &p, &r, err);
    if (rc) return rc;
    int taken = PQntuples(r) > 0;
    PQclear(r);
    if (taken) return bf_err_set(err, "user name '%s' is taken", a->name), BF_LEDGER_EEXISTS;
    pp_i64(&p, op->now);
    pp_str(&p, a->key);
    pp_str(&p, a->pw_hash);
    if ((rc = pgx(L,
                  "INSERT INTO users(id, name, curve_public_key, password_hash, cash_account, coin_account, created_at)"
                  " SELECT coalesce(max(id), 0) + 1, $1, $3, $4, 0, 0, $2 FROM users RETURNING id",
                  &p, &r, err)))
        return rc;
    int64_t uid = col_i64(r, 0, 0), cash, coin;
    PQclear(r);
    if ((rc = pg_new_account(L, BF_LEDGER_ACCT_USER_CASH, BF_LEDGER_CNY, uid, &cash, err)) ||
        (rc = pg_new_account(L, BF_LEDGER_ACCT_USER_COIN, BF_LEDGER_COIN, uid, &coin, err)))
        return rc;
    pp_t q = {0};
    pp_i64(&q, uid), pp_i64(&q, cash), pp_i64(&q, coin);
    if ((rc = pgx(L, "UPDATE users SET cash_account = $2, coin_account = $3 WHERE id = $1", &q, NULL, err))) return rc;
    ledger_xfer_t x = {.type = XF_POSTED, .code = CODE_REGISTER_BONUS, .debit = L->ext_coin, .credit = coin,
                       .amount = BF_LEDGER_REGISTER_COINS};
    if ((rc = pg_transfer(L, op, &x, NULL, err))) return rc;
    op->result = uid;
    return 0;
}

int ledger_pg_register(bf_ledger_t *L, const char *op_id, const char *name, const char *key, const char *pw_hash,
                       ledger_fp_t *fp, int64_t *user_id, int *replayed, bf_err_t *err) {
    ledger_op_t op = {.key = op_id, .kind = OP_REGISTER};
    pg_reg_args_t a = {name, key, pw_hash};
    int rc = pg_op_run(L, &op, fp, pg_do_register, &a, user_id, err);
    if (replayed) *replayed = op.replayed;
    return rc;
}

int ledger_pg_password(bf_ledger_t *L, int64_t user_id, char *pw, size_t cap, bf_err_t *err) {
    int frc = ledger_pg_flush(L, err);
    if (frc) return frc;
    pp_t p = {0};
    pp_i64(&p, user_id);
    PGresult *r;
    int rc = pgx(L, "SELECT coalesce(password_hash, '') FROM users WHERE id = $1", &p, &r, err);
    if (rc) return rc;
    if (PQntuples(r) != 1) rc = (bf_err_set(err, "unknown user %lld", (long long)user_id), BF_LEDGER_ENOTFOUND);
    else if ((size_t)snprintf(pw, cap, "%s", PQgetvalue(r, 0, 0)) >= cap)
        rc = (bf_err_set(err, "user %lld: stored password hash too long", (long long)user_id), BF_LEDGER_EINTERNAL);
    PQclear(r);
    return rc;
}

typedef struct {
    int64_t user, amount;
    int kind; /* OP_RECHARGE, OP_SPEND, OP_WITHDRAW */
} pg_amount_args_t;

static int pg_do_amount(bf_ledger_t *L, ledger_op_t *op, const void *argp, bf_err_t *err) {
    const pg_amount_args_t *a = argp;
    pg_user_t u;
    int rc;
    if (a->amount <= 0)
        return bf_err_set(err, a->kind == OP_SPEND ? "block count must be positive" : "amount must be positive"), BF_LEDGER_EINVAL;
    int64_t coins = 0;
    if (a->kind == OP_SPEND && __builtin_mul_overflow(a->amount, BF_LEDGER_COINS_PER_BLOCK, &coins))
        return bf_err_set(err, "too many blocks"), BF_LEDGER_EOVERFLOW;
    if ((rc = pg_user_row(L, a->user, &u, err))) return rc;
    if (a->kind == OP_RECHARGE) {
        ledger_xfer_t x = {.type = XF_POSTED, .code = CODE_RECHARGE, .debit = L->ext_cny, .credit = u.cash, .amount = a->amount};
        return pg_transfer(L, op, &x, &op->result, err);
    }
    if (a->kind == OP_SPEND) {
        op->result = coins;
        ledger_xfer_t x = {.type = XF_POSTED, .code = CODE_SPEND_COINS, .debit = u.coin, .credit = L->rev_coin, .amount = coins};
        return pg_transfer(L, op, &x, NULL, err);
    }
    ledger_xfer_t x = {.type = XF_PENDING, .code = CODE_WITHDRAWAL, .debit = u.cash, .credit = L->ext_cny, .amount = a->amount};
    int64_t xid;
    if ((rc = pg_transfer(L, op, &x, &xid, err))) return rc;
    pp_t p = {0};
    pp_i64(&p, a->user), pp_i64(&p, xid), pp_i64(&p, a->amount), pp_i64(&p, op->now);
    PGresult *r;
    if ((rc = pgx(L,
                  "INSERT INTO withdrawals(id, user_id, hold_transfer, amount, status, created_at)"
                  " SELECT coalesce(max(id), 0) + 1, $1, $2, $3, 1, $4 FROM withdrawals RETURNING id",
                  &p, &r, err)))
        return rc;
    op->result = col_i64(r, 0, 0);
    PQclear(r);
    return 0;
}

int ledger_pg_amount_op(bf_ledger_t *L, int kind, const char *op_id, int64_t user_id, int64_t amount, int64_t *result,
                        bf_err_t *err) {
    ledger_fp_t fp = {0};
    ledger_fp_i64(&fp, user_id);
    ledger_fp_i64(&fp, amount);
    ledger_op_t op = {.key = op_id, .kind = kind};
    pg_amount_args_t a = {user_id, amount, kind};
    return pg_op_run(L, &op, &fp, pg_do_amount, &a, result, err);
}

typedef struct {
    int64_t id;
    const char *ref, *reason;
} pg_resolve_args_t;

static int pg_do_resolve(bf_ledger_t *L, ledger_op_t *op, const void *argp, bf_err_t *err) {
    const pg_resolve_args_t *a = argp;
    pp_t p = {0};
    pp_i64(&p, a->id);
    PGresult *r;
    int rc = pgx(L, "SELECT user_id, hold_transfer, amount, status FROM withdrawals WHERE id = $1 FOR UPDATE", &p, &r, err);
    if (rc) return rc;
    if (PQntuples(r) != 1) {
        PQclear(r);
        return bf_err_set(err, "unknown withdrawal %lld", (long long)a->id), BF_LEDGER_ENOTFOUND;
    }
    int64_t user = col_i64(r, 0, 0), hold = col_i64(r, 0, 1), amount = col_i64(r, 0, 2);
    int status = (int)col_i64(r, 0, 3);
    PQclear(r);
    if (status == BF_LEDGER_WITHDRAWAL_PAID)
        return bf_err_set(err, "withdrawal %lld was already paid", (long long)a->id), BF_LEDGER_EPOSTED;
    if (status == BF_LEDGER_WITHDRAWAL_REJECTED)
        return bf_err_set(err, "withdrawal %lld was already rejected", (long long)a->id), BF_LEDGER_EVOIDED;
    pg_user_t u;
    if ((rc = pg_user_row(L, user, &u, err))) return rc;
    int pay = a->ref != NULL;
    ledger_xfer_t x = {.type = pay ? XF_POST : XF_VOID, .code = CODE_WITHDRAWAL, .debit = u.cash, .credit = L->ext_cny,
                       .amount = amount, .pending_id = hold, .pending_amount = amount};
    int64_t xid;
    if ((rc = pg_transfer(L, op, &x, &xid, err))) return rc;
    pp_t q = {0};
    pp_i64(&q, a->id), pp_i64(&q, pay ? 2 : 3), pp_i64(&q, op->now), pp_i64(&q, xid);
    pp_str(&q, pay ? a->ref : NULL), pp_str(&q, pay ? NULL : a->reason);
    if ((rc = pgx(L,
                  "UPDATE withdrawals SET status = $2, resolved_at = $3, resolve_transfer = $4, external_ref = $5,"
                  " reason = $6 WHERE id = $1 AND status = 1 RETURNING id",
                  &q, &r, err)))
        return rc;
    int changed = PQntuples(r);
    PQclear(r);
    if (changed != 1) return bf_err_set(err, "withdrawal %lld resolved concurrently", (long long)a->id), BF_LEDGER_EINTERNAL;
    op->result = xid;
    return 0;
}

int ledger_pg_resolve(bf_ledger_t *L, const char *key, int kind, int64_t id, const char *ref, const char *reason,
                      bf_err_t *err) {
    ledger_fp_t fp = {0};
    ledger_fp_i64(&fp, id);
    ledger_fp_str(&fp, ref ? ref : reason);
    ledger_op_t op = {.key = key, .kind = kind};
    pg_resolve_args_t a = {id, ref, reason};
    return pg_op_run(L, &op, &fp, pg_do_resolve, &a, NULL, err);
}

/* ---- Queries --------------------------------------------------------------------------------- */

int ledger_pg_op_lookup(bf_ledger_t *L, const char *op_id, int *found, int *rc, int64_t *result, bf_err_t *err) {
    int frc = ledger_pg_flush(L, err);
    if (frc) return frc;
    pp_t p = {0};
    pp_str(&p, op_id);
    PGresult *r;
    int e = pgx(L, "SELECT rc, result FROM ops WHERE op_key = $1", &p, &r, err);
    if (e) return e;
    *found = PQntuples(r) == 1;
    if (*found && rc) *rc = (int)col_i64(r, 0, 0);
    if (*found && result) *result = col_i64(r, 0, 1);
    PQclear(r);
    return 0;
}

int ledger_pg_user_find(bf_ledger_t *L, const char *name, int64_t *id, bf_err_t *err) {
    int frc = ledger_pg_flush(L, err);
    if (frc) return frc;
    pp_t p = {0};
    pp_str(&p, name);
    PGresult *r;
    int rc = pgx(L, "SELECT id FROM users WHERE name = $1", &p, &r, err);
    if (rc) return rc;
    rc = PQntuples(r) == 1 ? (*id = col_i64(r, 0, 0), 0) : (bf_err_set(err, "unknown user '%s'", name), BF_LEDGER_ENOTFOUND);
    PQclear(r);
    return rc;
}

int ledger_pg_user_find_key(bf_ledger_t *L, const char *key, int64_t *id, bf_err_t *err) {
    int frc = ledger_pg_flush(L, err);
    if (frc) return frc;
    pp_t p = {0};
    pp_str(&p, key);
    PGresult *r;
    int rc = pgx(L, "SELECT id FROM users WHERE curve_public_key = $1 ORDER BY id LIMIT 1", &p, &r, err);
    if (rc) return rc;
    rc = PQntuples(r) == 1 ? (*id = col_i64(r, 0, 0), 0) : (bf_err_set(err, "no user with this key"), BF_LEDGER_ENOTFOUND);
    PQclear(r);
    return rc;
}

static void balance_of(PGresult *r, int row, int col, bf_ledger_balance_t *b) {
    int64_t dp = col_i64(r, row, col), cp = col_i64(r, row, col + 1), dpend = col_i64(r, row, col + 2);
    b->posted = cp - dp;
    b->pending_debits = dpend;
    b->pending_credits = col_i64(r, row, col + 3);
    b->available = cp - dp - dpend;
}

#define PG_USER_SQL                                                                                         \
    "SELECT u.id, u.name, u.curve_public_key, c.debits_posted, c.credits_posted, c.debits_pending,"         \
    " c.credits_pending, k.debits_posted, k.credits_posted, k.debits_pending, k.credits_pending FROM users u" \
    " JOIN accounts c ON c.id = u.cash_account JOIN accounts k ON k.id = u.coin_account"

static void user_of(PGresult *r, int i, bf_ledger_user_t *u) {
    memset(u, 0, sizeof *u);
    u->id = col_i64(r, i, 0);
    snprintf(u->name, sizeof u->name, "%s", PQgetvalue(r, i, 1));
    snprintf(u->curve_key, sizeof u->curve_key, "%s", PQgetvalue(r, i, 2));
    balance_of(r, i, 3, &u->cash);
    balance_of(r, i, 7, &u->coin);
}

int ledger_pg_users(bf_ledger_t *L, int64_t only, bf_ledger_user_t **out, size_t *n, bf_err_t *err) {
    *out = NULL;
    *n = 0;
    int frc = ledger_pg_flush(L, err);
    if (frc) return frc;
    pp_t p = {0};
    pp_i64(&p, only);
    PGresult *r;
    int rc = pgx(L, PG_USER_SQL " WHERE $1 <= 0 OR u.id = $1 ORDER BY u.id", &p, &r, err);
    if (rc) return rc;
    int k = PQntuples(r);
    if (k && !(*out = calloc((size_t)k, sizeof **out))) rc = (bf_err_set(err, "out of memory"), BF_LEDGER_EINTERNAL);
    for (int i = 0; !rc && i < k; i++) user_of(r, i, &(*out)[i]);
    if (!rc) *n = (size_t)k;
    PQclear(r);
    return rc;
}

int ledger_pg_accounts(bf_ledger_t *L, bf_ledger_account_t **out, size_t *n, bf_err_t *err) {
    *out = NULL;
    *n = 0;
    int frc = ledger_pg_flush(L, err);
    if (frc) return frc;
    PGresult *r;
    int rc = pgx(L,
                 "SELECT id, kind, currency, owner, debits_posted, credits_posted, debits_pending, credits_pending"
                 " FROM accounts ORDER BY id",
                 NULL, &r, err);
    if (rc) return rc;
    int k = PQntuples(r);
    if (k && !(*out = calloc((size_t)k, sizeof **out))) rc = (bf_err_set(err, "out of memory"), BF_LEDGER_EINTERNAL);
    for (int i = 0; !rc && i < k; i++) {
        bf_ledger_account_t *a = &(*out)[i];
        a->id = col_i64(r, i, 0);
        a->kind = (bf_ledger_account_kind_t)col_i64(r, i, 1);
        a->currency = (bf_ledger_currency_t)col_i64(r, i, 2);
        a->owner = col_i64(r, i, 3);
        balance_of(r, i, 4, &a->balance);
    }
    if (!rc) *n = (size_t)k;
    PQclear(r);
    return rc;
}

static const char *pg_type_name(int t) {
    static const char *const names[] = {"?", "posted", "pending", "post", "void", "expire"};
    return t >= 1 && t <= 5 ? names[t] : names[0];
}

static const char *pg_code_name(int c) {
    static const char *const names[] = {"?",           "register_bonus", "recharge",  "spend_coins", "task_fund",
                                        "task_refund", "reward",         "usage_fee", "fee_payout",  "withdrawal"};
    return c >= 1 && c <= 9 ? names[c] : names[0];
}

/* A user's transfers in ledger order (both of its accounts), split payouts included: a split row
 * credits the user through one of its legs, and only the clearing accounts of tasks the user holds
 * shares in are debited by splits that can. (SQLite walks each account's history links instead;
 * here one query finds the rows.) */
int ledger_pg_history(bf_ledger_t *L, int64_t user_id, bf_ledger_entry_t **out, size_t *n, bf_err_t *err) {
    *out = NULL;
    *n = 0;
    int frc = ledger_pg_flush(L, err);
    if (frc) return frc;
    pg_user_t u;
    int rc = pg_user_row(L, user_id, &u, err);
    if (rc) return rc;
    pp_t p = {0};
    pp_i64(&p, u.cash), pp_i64(&p, u.coin);
    PGresult *r;
    if ((rc = pgx(L,
                  "SELECT t.id, t.created_at, o.op_key, t.type, t.code, t.currency, t.amount, t.debit_account,"
                  " t.credit_account, t.debit_before, t.debit_after, t.credit_before, t.credit_after, t.legs"
                  " FROM transfers t JOIN ops o ON o.id = t.op"
                  " WHERE t.debit_account IN ($1, $2) OR t.credit_account IN ($1, $2)"
                  " OR (t.legs IS NOT NULL AND t.debit_account IN (SELECT k.clearing_account FROM tasks k"
                  " JOIN model_shareholdings s ON s.task_id = k.id WHERE s.cash_account = $1)) ORDER BY t.id",
                  &p, &r, err)))
        return rc;
    int k = PQntuples(r);
    if (k && !(*out = calloc((size_t)k, sizeof **out))) rc = (bf_err_set(err, "out of memory"), BF_LEDGER_EINTERNAL);
    size_t m = 0;
    for (int i = 0; !rc && i < k; i++) {
        bf_ledger_entry_t *e = &(*out)[m];
        int64_t debit = col_i64(r, i, 7), amount = col_i64(r, i, 6);
        int is_debit = debit == u.cash || debit == u.coin;
        e->transfer_id = col_i64(r, i, 0);
        e->created_at = col_i64(r, i, 1);
        snprintf(e->op_id, sizeof e->op_id, "%s", PQgetvalue(r, i, 2));
        e->type = pg_type_name((int)col_i64(r, i, 3));
        e->code = pg_code_name((int)col_i64(r, i, 4));
        e->currency = (bf_ledger_currency_t)col_i64(r, i, 5);
        e->amount = is_debit ? -amount : amount;
        e->counterparty_account = col_i64(r, i, is_debit ? 8 : 7);
        e->balance_before = col_i64(r, i, is_debit ? 9 : 11);
        e->balance_after = col_i64(r, i, is_debit ? 10 : 12);
        if (!PQgetisnull(r, i, 13) && !is_debit) {
            /* a split: the user's leg, if it has one (a holder may get nothing from a payout) */
            size_t nb = 0;
            unsigned char *legs = PQunescapeBytea((const unsigned char *)PQgetvalue(r, i, 13), &nb);
            int found = 0;
            for (size_t j = 0; legs && j < nb / LEDGER_LEG_BYTES && !found; j++) {
                ledger_leg_t g;
                ledger_leg_get(legs, j, &g);
                if (g.account != u.cash) continue;
                found = 1;
                e->amount = g.amount, e->balance_before = g.before, e->balance_after = g.before + g.amount;
                e->counterparty_account = debit;
            }
            if (legs) PQfreemem(legs);
            else rc = (bf_err_set(err, "out of memory"), BF_LEDGER_EINTERNAL);
            if (!found) continue;
        }
        m++;
    }
    if (!rc) *n = m;
    else free(*out), *out = NULL;
    PQclear(r);
    return rc;
}

int ledger_pg_withdrawals(bf_ledger_t *L, int status, int64_t user_id, bf_ledger_withdrawal_t **out, size_t *n,
                          bf_err_t *err) {
    *out = NULL;
    *n = 0;
    int frc = ledger_pg_flush(L, err);
    if (frc) return frc;
    pp_t p = {0};
    pp_i64(&p, status), pp_i64(&p, user_id);
    PGresult *r;
    int rc = pgx(L,
                 "SELECT id, user_id, amount, status, created_at, resolved_at, hold_transfer,"
                 " coalesce(resolve_transfer, 0), coalesce(external_ref, ''), coalesce(reason, '') FROM withdrawals"
                 " WHERE ($1 <= 0 OR status = $1) AND ($2 <= 0 OR user_id = $2) ORDER BY id",
                 &p, &r, err);
    if (rc) return rc;
    int k = PQntuples(r);
    if (k && !(*out = calloc((size_t)k, sizeof **out))) rc = (bf_err_set(err, "out of memory"), BF_LEDGER_EINTERNAL);
    for (int i = 0; !rc && i < k; i++) {
        bf_ledger_withdrawal_t *w = &(*out)[i];
        w->id = col_i64(r, i, 0);
        w->user_id = col_i64(r, i, 1);
        w->amount = col_i64(r, i, 2);
        w->status = (bf_ledger_withdrawal_status_t)col_i64(r, i, 3);
        w->created_at = col_i64(r, i, 4);
        w->resolved_at = col_i64(r, i, 5);
        w->hold_transfer = col_i64(r, i, 6);
        w->resolve_transfer = col_i64(r, i, 7);
        snprintf(w->external_ref, sizeof w->external_ref, "%s", PQgetvalue(r, i, 8));
        snprintf(w->reason, sizeof w->reason, "%s", PQgetvalue(r, i, 9));
    }
    if (!rc) *n = (size_t)k;
    PQclear(r);
    return rc;
}

/* The hold a post/void/expire resolves (for statements): its amount and debit account. */
int ledger_pg_resolved_hold(bf_ledger_t *L, int64_t transfer, int64_t *amount, int64_t *debit, bf_err_t *err) {
    int frc = ledger_pg_flush(L, err);
    if (frc) return frc;
    pp_t p = {0};
    pp_i64(&p, transfer);
    PGresult *r;
    int rc = pgx(L, "SELECT p.amount, p.debit_account FROM transfers t JOIN transfers p ON p.id = t.pending_id WHERE t.id = $1",
                 &p, &r, err);
    if (rc) return rc;
    if (PQntuples(r) != 1) rc = (bf_err_set(err, "transfer %lld resolves no hold", (long long)transfer), BF_LEDGER_EINTERNAL);
    else *amount = col_i64(r, 0, 0), *debit = col_i64(r, 0, 1);
    PQclear(r);
    return rc;
}

/* ---- Verify's row source --------------------------------------------------------------------- */

/* Calls fn for every account row, then every transfer row in id order (with its op key and stored
 * hash), then every withdrawal, inside one REPEATABLE READ snapshot: verify's replay
 * (ledger_verify.c) runs over these exactly as over SQLite's rows. */
int ledger_pg_scan(bf_ledger_t *L, const ledger_pg_scan_t *s, void *ctx, bf_err_t *err) {
    int rc;
    PGresult *r;
    if (L->pg->in_group) return bf_err_set(err, "verify inside a group"), BF_LEDGER_EINTERNAL;
    if ((rc = pgx(L, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", NULL, NULL, err))) return rc;
    if ((rc = pgx(L,
                  "SELECT id, kind, currency, owner, debits_posted, credits_posted, debits_pending, credits_pending,"
                  " last_transfer FROM accounts ORDER BY id",
                  NULL, &r, err)))
        goto out;
    for (int i = 0; i < PQntuples(r); i++) {
        int64_t v[9];
        for (int k = 0; k < 9; k++) v[k] = col_i64(r, i, k);
        s->account(ctx, v);
    }
    PQclear(r);
    /* Transfers in batches of 10,000 rows (a cursor would pin one huge result otherwise). */
    for (int64_t after = 0;;) {
        pp_t p = {0};
        pp_i64(&p, after);
        if ((rc = pgx(L,
                      "SELECT t.id, t.type, t.code, t.currency, t.debit_account, t.credit_account, t.amount,"
                      " coalesce(t.pending_id, 0), t.expires_at, t.created_at, t.debit_before, t.debit_after,"
                      " t.credit_before, t.credit_after, t.debit_prev, t.credit_prev, t.hash, o.op_key, t.legs"
                      " FROM transfers t LEFT JOIN ops o ON o.id = t.op WHERE t.id > $1 ORDER BY t.id LIMIT 10000",
                      &p, &r, err)))
            goto out;
        int k = PQntuples(r);
        for (int i = 0; i < k; i++) {
            ledger_row_t row = {0};
            int64_t *f[16] = {&row.id,         &row.type,        &row.code,          &row.currency,
                              &row.debit,      &row.credit,      &row.amount,        &row.pending_id,
                              &row.expires_at, &row.created_at,  &row.debit_before,  &row.debit_after,
                              &row.credit_before, &row.credit_after, &row.debit_prev, &row.credit_prev};
            for (int c = 0; c < 16; c++) *f[c] = col_i64(r, i, c);
            unsigned char hash[32];
            long hn = col_bytes(r, i, 16, hash, 32);
            size_t ln = 0;
            unsigned char *legs = PQgetisnull(r, i, 18) ? NULL : PQunescapeBytea((const unsigned char *)PQgetvalue(r, i, 18), &ln);
            row.legs = legs ? (legs && ln ? legs : (const unsigned char *)"") : NULL;
            row.legs_len = ln;
            s->transfer(ctx, &row, PQgetisnull(r, i, 17) ? NULL : PQgetvalue(r, i, 17), hn == 32 ? hash : NULL);
            if (legs) PQfreemem(legs);
            after = row.id;
        }
        PQclear(r);
        if (k < 10000) break;
    }
    if ((rc = pgx(L,
                  "SELECT w.id, w.hold_transfer, w.amount, w.status, coalesce(w.resolve_transfer, 0),"
                  " w.external_ref, w.reason, u.cash_account, o.op_key FROM withdrawals w"
                  " LEFT JOIN users u ON u.id = w.user_id LEFT JOIN transfers t ON t.id = w.resolve_transfer"
                  " LEFT JOIN ops o ON o.id = t.op ORDER BY w.id",
                  NULL, &r, err)))
        goto out;
    for (int i = 0; i < PQntuples(r); i++) {
        int64_t v[5] = {col_i64(r, i, 0), col_i64(r, i, 1), col_i64(r, i, 2), col_i64(r, i, 3), col_i64(r, i, 4)};
        s->withdrawal(ctx, v, PQgetisnull(r, i, 5) ? NULL : PQgetvalue(r, i, 5), PQgetisnull(r, i, 6) ? NULL : PQgetvalue(r, i, 6),
                      col_i64(r, i, 7), PQgetisnull(r, i, 8) ? NULL : PQgetvalue(r, i, 8));
    }
    PQclear(r);
    if ((rc = pgx(L, "SELECT count(*) FROM users", NULL, &r, err))) goto out;
    s->users(ctx, col_i64(r, 0, 0));
    PQclear(r);
    if ((rc = pgx(L, "SELECT id, hold_transfer, held, captured, status FROM model_usage ORDER BY id", NULL, &r, err))) goto out;
    for (int i = 0; i < PQntuples(r); i++) {
        int64_t u[5];
        for (int k = 0; k < 5; k++) u[k] = col_i64(r, i, k);
        s->hold(ctx, u);
    }
    PQclear(r);
    /* the task-level rows: the same SQL as on SQLite, with the payout state as the last column */
    for (int q = 0; q < 2; q++) {
        int nint = q ? 8 : 13;
        if ((rc = pgx(L, q ? ledger_holdings_sql : ledger_tasks_sql, NULL, &r, err))) goto out;
        for (int i = 0; i < PQntuples(r); i++) {
            int64_t t[13];
            for (int k = 0; k < nint; k++) t[k] = col_i64(r, i, k);
            size_t nb = 0;
            unsigned char *b =
                PQgetisnull(r, i, nint) ? NULL : PQunescapeBytea((const unsigned char *)PQgetvalue(r, i, nint), &nb);
            const unsigned char *blob = b ? (nb ? b : (const unsigned char *)"") : NULL;
            if (q) s->holding(ctx, t, blob, (int64_t)nb);
            else s->task(ctx, t, blob, (int64_t)nb);
            if (b) PQfreemem(b);
        }
        PQclear(r);
    }
out:
    pgx(L, "COMMIT", NULL, NULL, NULL);
    return rc;
}

/* ---- Tasks ----------------------------------------------------------------------------------- */

static int pg_task_row(bf_ledger_t *L, int64_t id, ledger_task_row_t *t, bf_err_t *err) {
    pp_t p = {0};
    pp_i64(&p, id);
    PGresult *r;
    int rc = pgx(L,
                 "SELECT creator, payment_mode, usage_fee, reward_pool, status, model_status, total_revenue,"
                 " platform_fee_ppm, platform_paid, escrow_account, clearing_account FROM tasks WHERE id = $1",
                 &p, &r, err);
    if (rc) return rc;
    if (PQntuples(r) != 1) {
        PQclear(r);
        return bf_err_set(err, "unknown task %lld", (long long)id), BF_LEDGER_ENOTFOUND;
    }
    *t = (ledger_task_row_t){.id = id,
                             .creator = col_i64(r, 0, 0),
                             .mode = (int)col_i64(r, 0, 1),
                             .usage_fee = col_i64(r, 0, 2),
                             .reward_pool = col_i64(r, 0, 3),
                             .status = (int)col_i64(r, 0, 4),
                             .model_online = (int)col_i64(r, 0, 5),
                             .total_revenue = col_i64(r, 0, 6),
                             .fee_ppm = col_i64(r, 0, 7),
                             .platform_paid = col_i64(r, 0, 8),
                             .escrow = col_i64(r, 0, 9),
                             .clearing = col_i64(r, 0, 10)};
    PQclear(r);
    return 0;
}

static int pg_task_cas(bf_ledger_t *L, ledger_op_t *op, int64_t task, int from, int to, bf_err_t *err) {
    pp_t p = {0};
    pp_i64(&p, task), pp_i64(&p, from), pp_i64(&p, to), pp_i64(&p, op->now);
    PGresult *r;
    int rc = pgx(L, "UPDATE tasks SET status = $3, updated_at = $4 WHERE id = $1 AND status = $2 RETURNING id", &p, &r, err);
    if (rc) return rc;
    int n = PQntuples(r);
    PQclear(r);
    if (n != 1) return bf_err_set(err, "task %lld: illegal transition %d -> %d", (long long)task, from, to), BF_LEDGER_ESTATE;
    return 0;
}

static int pg_posted(bf_ledger_t *L, ledger_op_t *op, int code, int64_t debit, int64_t credit, int64_t amount, int64_t *id,
                     bf_err_t *err) {
    ledger_xfer_t x = {.type = XF_POSTED, .code = code, .debit = debit, .credit = credit, .amount = amount};
    return pg_transfer(L, op, &x, id, err);
}

typedef struct {
    int64_t creator;
    const bf_ledger_task_spec_t *spec;
} pg_create_args_t;

static int pg_do_create(bf_ledger_t *L, ledger_op_t *op, const void *argp, bf_err_t *err) {
    const pg_create_args_t *a = argp;
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
    pg_user_t u;
    int rc = pg_user_row(L, a->creator, &u, err);
    if (rc) return rc;
    PGresult *r;
    pp_t p = {0};
    pp_i64(&p, a->creator), pp_str(&p, t->name), pp_i64(&p, t->mode), pp_i64(&p, t->usage_fee), pp_i64(&p, t->reward_pool);
    pp_i64(&p, op->now);
    if ((rc = pgx(L,
                  "INSERT INTO tasks(id, creator, name, payment_mode, usage_fee, reward_pool, status, model_status,"
                  " total_revenue, platform_fee_ppm, platform_paid, escrow_account, clearing_account, created_at,"
                  " updated_at) SELECT (SELECT coalesce(max(id), 0) + 1 FROM tasks), $1, $2, $3, $4, $5, 1, 0, 0, value,"
                  " 0, 0, 0, $6, $6 FROM meta WHERE key = 'platform_fee_ppm' RETURNING id",
                  &p, &r, err)))
        return rc;
    int64_t tid = col_i64(r, 0, 0), escrow, clearing;
    PQclear(r);
    if ((rc = pg_new_account(L, BF_LEDGER_ACCT_TASK_ESCROW, BF_LEDGER_CNY, tid, &escrow, err)) ||
        (rc = pg_new_account(L, BF_LEDGER_ACCT_TASK_CLEARING, BF_LEDGER_CNY, tid, &clearing, err)))
        return rc;
    pp_t q = {0};
    pp_i64(&q, tid), pp_i64(&q, escrow), pp_i64(&q, clearing);
    if ((rc = pgx(L, "UPDATE tasks SET escrow_account = $2, clearing_account = $3 WHERE id = $1", &q, NULL, err))) return rc;
    if (t->mode == BF_LEDGER_MODE_REWARD && (rc = pg_posted(L, op, CODE_TASK_FUND, u.cash, escrow, t->reward_pool, NULL, err)))
        return rc;
    op->result = tid;
    return 0;
}

int ledger_pg_create_task(bf_ledger_t *L, const char *op_id, int64_t creator, const bf_ledger_task_spec_t *spec,
                          int64_t *task_id, bf_err_t *err) {
    ledger_fp_t fp = {0};
    ledger_fp_i64(&fp, creator);
    ledger_fp_str(&fp, spec->name);
    ledger_fp_i64(&fp, spec->mode);
    ledger_fp_i64(&fp, spec->reward_pool);
    ledger_fp_i64(&fp, spec->usage_fee);
    ledger_op_t op = {.key = op_id, .kind = OP_CREATE_TASK};
    pg_create_args_t a = {creator, spec};
    return pg_op_run(L, &op, &fp, pg_do_create, &a, task_id, err);
}

typedef struct {
    int64_t task, user, flag;
} pg_task_args_t;

/* start (flag 0), refund (1), join (2: user), model status (3: user = online). */
static int pg_do_task(bf_ledger_t *L, ledger_op_t *op, const void *argp, bf_err_t *err) {
    const pg_task_args_t *a = argp;
    ledger_task_row_t t;
    pg_user_t u;
    int rc = pg_task_row(L, a->task, &t, err);
    if (rc) return rc;
    if (a->flag == 0) return pg_task_cas(L, op, t.id, BF_LEDGER_TASK_CREATED, BF_LEDGER_TASK_RUNNING, err);
    if (a->flag == 1) {
        if (t.status != BF_LEDGER_TASK_CREATED && t.status != BF_LEDGER_TASK_RUNNING)
            return bf_err_set(err, "task %lld cannot be refunded in status %d", (long long)t.id, t.status), BF_LEDGER_ESTATE;
        if ((rc = pg_task_cas(L, op, t.id, t.status, BF_LEDGER_TASK_REFUNDED, err)) || (rc = pg_user_row(L, t.creator, &u, err)))
            return rc;
        pg_acct_t *e = pg_acct(L, t.escrow, err);
        if (!e) return BF_LEDGER_EINTERNAL;
        int64_t left = e->cp - e->dp;
        return left > 0 ? pg_posted(L, op, CODE_TASK_REFUND, t.escrow, u.cash, left, NULL, err) : 0;
    }
    pp_t p = {0};
    pp_i64(&p, t.id), pp_i64(&p, a->user), pp_i64(&p, op->now);
    if (a->flag == 2) {
        if ((rc = pg_user_row(L, a->user, &u, err))) return rc;
        if (t.status != BF_LEDGER_TASK_CREATED && t.status != BF_LEDGER_TASK_RUNNING)
            return bf_err_set(err, "task %lld no longer accepts participants", (long long)t.id), BF_LEDGER_ESTATE;
        PGresult *r;
        if ((rc = pgx(L,
                      "INSERT INTO participations(task_id, user_id, joined_at) VALUES($1, $2, $3)"
                      " ON CONFLICT DO NOTHING RETURNING 1",
                      &p, &r, err)))
            return rc;
        int n = PQntuples(r);
        PQclear(r);
        return n == 1 ? 0
                      : (bf_err_set(err, "user %lld already takes part in task %lld", (long long)a->user, (long long)t.id),
                         BF_LEDGER_EEXISTS);
    }
    if (t.mode != BF_LEDGER_MODE_SHAREHOLDING || t.status != BF_LEDGER_TASK_COMPLETED)
        return bf_err_set(err, "task %lld has no completed shareholding model", (long long)t.id), BF_LEDGER_ESTATE;
    return pgx(L, "UPDATE tasks SET model_status = $2, updated_at = $3 WHERE id = $1", &p, NULL, err);
}

int ledger_pg_task_op(bf_ledger_t *L, int kind, const char *op_id, int64_t task, int64_t user, bf_err_t *err) {
    ledger_fp_t fp = {0};
    ledger_fp_i64(&fp, task);
    if (kind == OP_JOIN_TASK || kind == OP_MODEL_STATUS) ledger_fp_i64(&fp, user);
    ledger_op_t op = {.key = op_id, .kind = kind};
    pg_task_args_t a = {task, user, kind == OP_START_TASK ? 0 : kind == OP_REFUND_TASK ? 1 : kind == OP_JOIN_TASK ? 2 : 3};
    return pg_op_run(L, &op, &fp, pg_do_task, &a, NULL, err);
}

typedef struct {
    int64_t task;
    size_t n;
    const int64_t *users, *weights;
    const char *result_hash;
    int mode;
} pg_complete_args_t;

static int pg_do_complete(bf_ledger_t *L, ledger_op_t *op, const void *argp, bf_err_t *err) {
    const pg_complete_args_t *a = argp;
    ledger_task_row_t t;
    int rc = pg_task_row(L, a->task, &t, err);
    if (rc) return rc;
    if (t.mode != a->mode)
        return bf_err_set(err, "task %lld is not a %s task", (long long)t.id,
                          a->mode == BF_LEDGER_MODE_REWARD ? "reward" : "shareholding"),
               BF_LEDGER_ESTATE;
    if (a->n == 0) return bf_err_set(err, "no recipients"), BF_LEDGER_EINVAL;
    if (a->result_hash && strlen(a->result_hash) > 128) return bf_err_set(err, "result hash longer than 128 bytes"), BF_LEDGER_EINVAL;
    int64_t *cash = calloc(a->n, sizeof *cash), *parts = calloc(a->n, sizeof *parts);
    if (!cash || !parts) {
        rc = (bf_err_set(err, "out of memory"), BF_LEDGER_EINTERNAL);
        goto done;
    }
    for (size_t i = 0; i < a->n && !rc; i++) {
        for (size_t j = 0; j < i && !rc; j++)
            if (a->users[j] == a->users[i]) rc = (bf_err_set(err, "user %lld listed twice", (long long)a->users[i]), BF_LEDGER_EINVAL);
        pg_user_t u;
        if (!rc && !(rc = pg_user_row(L, a->users[i], &u, err))) cash[i] = u.cash;
    }
    if (rc || (rc = pg_task_cas(L, op, t.id, BF_LEDGER_TASK_RUNNING, BF_LEDGER_TASK_COMPLETED, err))) goto done;
    if (a->result_hash) {
        pp_t h = {0};
        pp_i64(&h, t.id), pp_str(&h, a->result_hash);
        if ((rc = pgx(L, "UPDATE tasks SET result_hash = $2 WHERE id = $1", &h, NULL, err))) goto done;
    }
    int64_t total = BF_LEDGER_PPM;
    if (a->mode == BF_LEDGER_MODE_REWARD) {
        pg_acct_t *e = pg_acct(L, t.escrow, err);
        if (!e) {
            rc = BF_LEDGER_EINTERNAL;
            goto done;
        }
        total = e->cp - e->dp;
    }
    if (bf_money_split(total, a->n, a->weights, cash, parts)) {
        rc = (bf_err_set(err, "no positive contribution weight"), BF_LEDGER_EINVAL);
        goto done;
    }
    for (size_t i = 0; i < a->n && !rc; i++) {
        pp_t p = {0};
        pp_i64(&p, t.id), pp_i64(&p, a->users[i]), pp_i64(&p, a->weights[i]), pp_i64(&p, parts[i]), pp_i64(&p, cash[i]);
        if (a->mode == BF_LEDGER_MODE_SHAREHOLDING) {
            rc = pgx(L, "INSERT INTO model_shareholdings(task_id, cash_account, user_id, weight, ppm) VALUES($1, $5, $2, $3, $4)",
                     &p, NULL, err);
            continue;
        }
        int64_t xid = 0;
        if (parts[i] > 0 && (rc = pg_posted(L, op, CODE_REWARD, t.escrow, cash[i], parts[i], &xid, err))) break;
        p.n = 4;
        if (xid) pp_i64(&p, xid);
        else pp_str(&p, NULL);
        rc = pgx(L, "INSERT INTO reward_distributions(task_id, user_id, weight, amount, transfer) VALUES($1, $2, $3, $4, $5)",
                 &p, NULL, err);
    }
    if (!rc && a->mode == BF_LEDGER_MODE_REWARD) {
        pg_acct_t *e = pg_acct(L, t.escrow, err);
        if (!e || e->cp - e->dp != 0) rc = (bf_err_set(err, "escrow not empty after settlement"), BF_LEDGER_EINTERNAL);
    }
done:
    free(cash);
    free(parts);
    return rc;
}

int ledger_pg_complete(bf_ledger_t *L, int kind, const char *op_id, int64_t task, size_t n, const int64_t *users,
                       const int64_t *weights, const char *result_hash, bf_err_t *err) {
    if (n && (!users || !weights)) return bf_err_set(err, "missing arrays"), BF_LEDGER_EINVAL;
    ledger_fp_t fp = {0};
    ledger_fp_i64(&fp, task);
    ledger_fp_i64(&fp, (int64_t)n);
    for (size_t i = 0; i < n; i++) {
        ledger_fp_i64(&fp, users[i]);
        ledger_fp_i64(&fp, weights[i]);
    }
    ledger_fp_str(&fp, result_hash);
    ledger_op_t op = {.key = op_id, .kind = kind};
    pg_complete_args_t a = {task, n, users, weights, result_hash,
                            kind == OP_SETTLE_REWARD ? BF_LEDGER_MODE_REWARD : BF_LEDGER_MODE_SHAREHOLDING};
    return pg_op_run(L, &op, &fp, pg_do_complete, &a, NULL, err);
}

static int pg_do_fee_ppm(bf_ledger_t *L, ledger_op_t *op, const void *argp, bf_err_t *err) {
    (void)op;
    int64_t ppm = *(const int64_t *)argp;
    if (ppm < 0 || ppm > BF_LEDGER_PPM) return bf_err_set(err, "platform fee must be 0..1000000 ppm"), BF_LEDGER_EINVAL;
    pp_t p = {0};
    pp_i64(&p, ppm);
    return pgx(L, "UPDATE meta SET value = $1 WHERE key = 'platform_fee_ppm'", &p, NULL, err);
}

int ledger_pg_set_platform_fee(bf_ledger_t *L, const char *op_id, int64_t ppm, bf_err_t *err) {
    ledger_fp_t fp = {0};
    ledger_fp_i64(&fp, ppm);
    ledger_op_t op = {.key = op_id, .kind = OP_PLATFORM_FEE};
    return pg_op_run(L, &op, &fp, pg_do_fee_ppm, &ppm, NULL, err);
}

/* ---- Paid predictions ------------------------------------------------------------------------ */

/* A split transfer: the same rules and row as ledger_transfer_split (ledger_store.c). */
static int pg_transfer_split(bf_ledger_t *L, ledger_op_t *op, int code, int64_t debit, size_t n, const int64_t *accounts,
                             const int64_t *amounts, bf_err_t *err) {
    struct ledger_pg *g = L->pg;
    int64_t total = 0;
    int rc;
    if (n == 0 || n > 100000) return bf_err_set(err, "a split needs 1..100000 legs"), BF_LEDGER_EINVAL;
    for (size_t i = 0; i < n; i++) {
        if (amounts[i] <= 0 || accounts[i] == debit) return bf_err_set(err, "bad split leg %zu", i), BF_LEDGER_EINVAL;
        for (size_t j = 0; j < i; j++)
            if (accounts[j] == accounts[i]) return bf_err_set(err, "split credits an account twice"), BF_LEDGER_EINVAL;
        if ((rc = add_checked(total, amounts[i], &total, err))) return rc;
    }
    if (!pg_acct(L, debit, err)) return BF_LEDGER_ENOTFOUND;
    for (size_t i = 0; i < n; i++)
        if (!pg_acct(L, accounts[i], err)) return BF_LEDGER_ENOTFOUND;
    pg_acct_t *d = pg_acct(L, debit, err);
    if (ledger_acct_restricted(d->kind) && d->cp - d->dp - d->dpend < total)
        return bf_err_set(err, "insufficient funds in the split's debit account"), BF_LEDGER_EFUNDS;
    int64_t d_dp, d_after;
    if ((rc = add_checked(d->dp, total, &d_dp, err))) return rc;
    if (__builtin_sub_overflow(d->cp, d_dp, &d_after)) return bf_err_set(err, "balance overflows"), BF_LEDGER_EOVERFLOW;
    unsigned char *legs = malloc(n * LEDGER_LEG_BYTES);
    if (!legs) return bf_err_set(err, "out of memory"), BF_LEDGER_EINTERNAL;
    for (size_t i = 0; i < n; i++) {
        pg_acct_t *c = pg_acct(L, accounts[i], err);
        int64_t cp;
        if (c->currency != d->currency || (rc = add_checked(c->cp, amounts[i], &cp, err))) {
            free(legs);
            return rc ? rc : (bf_err_set(err, "split across currencies"), BF_LEDGER_EINVAL);
        }
        unsigned char *q = legs + i * LEDGER_LEG_BYTES;
        ledger_put_be64(q, c->id);
        ledger_put_be64(q + 8, amounts[i]);
        ledger_put_be64(q + 16, c->cp - c->dp);
        ledger_put_be64(q + 24, c->last);
    }
    ledger_row_t r = {.id = g->head_id + 1,
                      .type = XF_POSTED,
                      .code = code,
                      .currency = d->currency,
                      .debit = d->id,
                      .credit = d->id,
                      .amount = total,
                      .created_at = op->now,
                      .debit_before = d->cp - d->dp,
                      .debit_after = d_after,
                      .debit_prev = d->last,
                      .legs = legs,
                      .legs_len = n * LEDGER_LEG_BYTES};
    unsigned char h[32];
    ledger_row_hash(L, g->head_hash, &r, op->key, h);
    if (g->defer) {
        rc = pg_defer_row(L, op, &r, h, err);
        free(legs);
        if (rc) return rc;
        goto applied;
    }
    pp_t p = {0};
    pp_i64(&p, r.id), pp_i64(&p, op->row), pp_i64(&p, r.code), pp_i64(&p, r.currency), pp_i64(&p, r.debit);
    pp_i64(&p, r.amount), pp_i64(&p, r.created_at), pp_i64(&p, r.debit_before), pp_i64(&p, r.debit_after);
    pp_i64(&p, r.debit_prev), pp_bin(&p, h, 32), pp_bin(&p, legs, r.legs_len);
    rc = pgx(L,
             "INSERT INTO transfers(id, op, type, code, currency, debit_account, credit_account, amount, pending_id,"
             " expires_at, created_at, debit_before, debit_after, credit_before, credit_after, debit_prev, credit_prev,"
             " hash, legs) VALUES($1, $2, 1, $3, $4, $5, $5, $6, NULL, 0, $7, $8, $9, 0, 0, $10, 0, $11, $12)",
             &p, NULL, err);
    free(legs);
    if (rc) return rc;
applied:
    g->head_id = r.id;
    memcpy(g->head_hash, h, 32);
    d->dp = d_dp, d->last = r.id, d->dirty = 1;
    for (size_t i = 0; i < n; i++) {
        pg_acct_t *c = pg_acct(L, accounts[i], err);
        c->cp += amounts[i], c->last = r.id, c->dirty = 1;
    }
    return 0;
}

/* Pays `amount` (in the task's clearing account) to its holders and the platform by cumulative
 * entitlement, as ledger_rcache_distribute does, and writes the task's new revenue figures. */
static int pg_distribute(bf_ledger_t *L, ledger_op_t *op, ledger_task_row_t *t, int64_t amount, bf_err_t *err) {
    if (amount == 0) return 0;
    pp_t p = {0};
    pp_i64(&p, t->id);
    PGresult *r;
    int rc = pgx(L,
                 "SELECT s.ppm, s.cash_account, t.payout_state FROM model_shareholdings s JOIN tasks t ON t.id = s.task_id"
                 " WHERE s.task_id = $1 ORDER BY s.cash_account",
                 &p, &r, err);
    if (rc) return rc;
    size_t n = (size_t)PQntuples(r);
    int64_t *w = calloc(n + 1, sizeof *w), *keys = calloc(n + 1, sizeof *keys), *paid = calloc(n + 1, sizeof *paid);
    int64_t *add = calloc(n + 1, sizeof *add), *acct = calloc(n + 1, sizeof *acct), *amt = calloc(n + 1, sizeof *amt);
    unsigned char *blob = calloc(n ? n : 1, 8);
    if (!w || !keys || !paid || !add || !acct || !amt || !blob) {
        rc = (bf_err_set(err, "out of memory"), BF_LEDGER_EINTERNAL);
        goto done;
    }
    long nb = n ? col_bytes(r, 0, 2, blob, 8 * n) : -1;
    if (nb > 0 && (size_t)nb != 8 * n) {
        rc = (bf_err_set(err, "task %lld: payout state inconsistent", (long long)t->id), BF_LEDGER_EINTERNAL);
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        w[i] = col_i64(r, (int)i, 0) * (BF_LEDGER_PPM - t->fee_ppm);
        keys[i] = col_i64(r, (int)i, 1);
        paid[i] = nb > 0 ? ledger_get_be64(blob + 8 * i) : 0;
    }
    w[n] = t->fee_ppm * BF_LEDGER_PPM;
    keys[n] = L->rev_cny;
    paid[n] = t->platform_paid;
    int64_t total_after;
    if (__builtin_add_overflow(t->total_revenue, amount, &total_after)) {
        rc = (bf_err_set(err, "task revenue overflows"), BF_LEDGER_EOVERFLOW);
        goto done;
    }
    if (bf_money_apportion(n + 1, w, keys, paid, t->total_revenue, amount, add)) {
        rc = (bf_err_set(err, "task %lld: shares or payout state inconsistent", (long long)t->id), BF_LEDGER_EINTERNAL);
        goto done;
    }
    size_t legs = 0;
    for (size_t i = 0; i <= n; i++)
        if (add[i] > 0) acct[legs] = keys[i], amt[legs++] = add[i];
    if ((rc = pg_transfer_split(L, op, CODE_FEE_PAYOUT, t->clearing, legs, acct, amt, err))) goto done;
    for (size_t i = 0; i < n; i++) ledger_put_be64(blob + 8 * i, paid[i] + add[i]);
    t->total_revenue = total_after;
    t->platform_paid = paid[n] + add[n];
    pp_t u = {0};
    pp_i64(&u, t->id), pp_i64(&u, t->total_revenue), pp_i64(&u, t->platform_paid), pp_bin(&u, blob, 8 * n);
    rc = pgx(L, "UPDATE tasks SET total_revenue = $2, platform_paid = $3, payout_state = $4 WHERE id = $1", &u, NULL, err);
done:
    PQclear(r);
    free(w), free(keys), free(paid), free(add), free(acct), free(amt), free(blob);
    return rc;
}

typedef struct {
    int64_t id, task, payer, hold_transfer, held, expires_at;
    int status;
} pg_usage_t;

static int pg_usage_row(bf_ledger_t *L, int64_t id, pg_usage_t *u, bf_err_t *err) {
    pp_t p = {0};
    pp_i64(&p, id);
    PGresult *r;
    int rc = pgx(L, "SELECT task_id, payer, hold_transfer, held, status, expires_at FROM model_usage WHERE id = $1", &p, &r, err);
    if (rc) return rc;
    if (PQntuples(r) != 1) rc = (bf_err_set(err, "unknown hold %lld", (long long)id), BF_LEDGER_ENOTFOUND);
    else
        *u = (pg_usage_t){id, col_i64(r, 0, 0), col_i64(r, 0, 1), col_i64(r, 0, 2), col_i64(r, 0, 3), col_i64(r, 0, 5),
                          (int)col_i64(r, 0, 4)};
    PQclear(r);
    return rc;
}

static int pg_open_hold(const pg_usage_t *u, int64_t now, bf_err_t *err) {
    switch (u->status) {
    case BF_LEDGER_HOLD_CAPTURED: return bf_err_set(err, "hold %lld already captured", (long long)u->id), BF_LEDGER_EPOSTED;
    case BF_LEDGER_HOLD_VOIDED: return bf_err_set(err, "hold %lld already voided", (long long)u->id), BF_LEDGER_EVOIDED;
    case BF_LEDGER_HOLD_EXPIRED: return bf_err_set(err, "hold %lld expired", (long long)u->id), BF_LEDGER_EEXPIRED;
    default: break;
    }
    if (u->expires_at > 0 && now >= u->expires_at) return bf_err_set(err, "hold %lld expired", (long long)u->id), BF_LEDGER_EEXPIRED;
    return 0;
}

static int pg_resolve_usage(bf_ledger_t *L, int64_t id, int status, int64_t captured, int64_t xid, int64_t end, bf_err_t *err) {
    pp_t p = {0};
    pp_i64(&p, id), pp_i64(&p, status), pp_i64(&p, captured), pp_i64(&p, xid), pp_i64(&p, end);
    PGresult *r;
    int rc = pgx(L,
                 "UPDATE model_usage SET status = $2, captured = $3, resolve_transfer = $4, payouts_end = $5"
                 " WHERE id = $1 AND status = 1 RETURNING id",
                 &p, &r, err);
    if (rc) return rc;
    int n = PQntuples(r);
    PQclear(r);
    return n == 1 ? 0 : (bf_err_set(err, "hold %lld resolved concurrently", (long long)id), BF_LEDGER_EINTERNAL);
}

typedef struct {
    int64_t task, payer, amount, timeout, hold;
    const bf_ledger_usage_note_t *note;
    int what; /* 0 hold, 1 capture, 2 void, 3 charge, 4 settle, 5 expire */
} pg_fee_args_t;

static int pg_hold(bf_ledger_t *L, ledger_op_t *op, const pg_fee_args_t *a, int64_t *hold, bf_err_t *err) {
    if (a->amount <= 0) return bf_err_set(err, "fee must be positive"), BF_LEDGER_EINVAL;
    if (a->timeout < 0) return bf_err_set(err, "negative hold timeout"), BF_LEDGER_EINVAL;
    ledger_task_row_t t;
    pg_user_t u;
    int rc;
    if ((rc = pg_task_row(L, a->task, &t, err)) || (rc = pg_user_row(L, a->payer, &u, err))) return rc;
    if (t.mode != BF_LEDGER_MODE_SHAREHOLDING || t.status != BF_LEDGER_TASK_COMPLETED || !t.model_online)
        return bf_err_set(err, "task %lld has no online model", (long long)t.id), BF_LEDGER_ESTATE;
    int64_t expires = 0, xid;
    if (a->timeout && __builtin_add_overflow(op->now, a->timeout, &expires))
        return bf_err_set(err, "hold timeout overflows"), BF_LEDGER_EOVERFLOW;
    ledger_xfer_t x = {.type = XF_PENDING, .code = CODE_USAGE_FEE, .debit = u.cash, .credit = t.clearing, .amount = a->amount,
                       .expires_at = expires};
    if ((rc = pg_transfer(L, op, &x, &xid, err))) return rc;
    pp_t p = {0};
    pp_i64(&p, t.id), pp_i64(&p, a->payer), pp_i64(&p, xid), pp_i64(&p, a->amount), pp_i64(&p, op->now), pp_i64(&p, expires);
    PGresult *r;
    if ((rc = pgx(L,
                  "INSERT INTO model_usage(id, task_id, payer, hold_transfer, held, captured, status, created_at,"
                  " expires_at) SELECT coalesce(max(id), 0) + 1, $1, $2, $3, $4, 0, 1, $5, $6 FROM model_usage RETURNING id",
                  &p, &r, err)))
        return rc;
    *hold = col_i64(r, 0, 0);
    PQclear(r);
    return 0;
}

static int pg_capture(bf_ledger_t *L, ledger_op_t *op, int64_t hold, int64_t amount, bf_err_t *err) {
    pg_usage_t u;
    ledger_task_row_t t;
    pg_user_t p;
    int rc;
    if ((rc = pg_usage_row(L, hold, &u, err)) || (rc = pg_open_hold(&u, op->now, err))) return rc;
    if (amount < 0) return bf_err_set(err, "negative capture"), BF_LEDGER_EINVAL;
    if (amount > u.held)
        return bf_err_set(err, "capture %lld exceeds hold %lld", (long long)amount, (long long)u.held), BF_LEDGER_EEXCEEDS_HOLD;
    if ((rc = pg_task_row(L, u.task, &t, err)) || (rc = pg_user_row(L, u.payer, &p, err))) return rc;
    ledger_xfer_t x = {.type = XF_POST, .code = CODE_USAGE_FEE, .debit = p.cash, .credit = t.clearing, .amount = amount,
                       .pending_id = u.hold_transfer, .pending_amount = u.held};
    int64_t post;
    if ((rc = pg_transfer(L, op, &x, &post, err)) || (rc = pg_distribute(L, op, &t, amount, err))) return rc;
    pg_acct_t *c = pg_acct(L, t.clearing, err);
    if (!c || c->cp - c->dp != 0) return bf_err_set(err, "clearing account not empty after payout"), BF_LEDGER_EINTERNAL;
    return pg_resolve_usage(L, hold, BF_LEDGER_HOLD_CAPTURED, amount, post, L->pg->head_id, err);
}

static int pg_release(bf_ledger_t *L, ledger_op_t *op, int64_t hold, int expire, bf_err_t *err) {
    pg_usage_t u;
    ledger_task_row_t t;
    pg_user_t p;
    int rc;
    if ((rc = pg_usage_row(L, hold, &u, err))) return rc;
    if (expire) {
        if (u.status != BF_LEDGER_HOLD_PENDING || u.expires_at == 0 || op->now < u.expires_at)
            return bf_err_set(err, "hold %lld is not an expired pending hold", (long long)hold), BF_LEDGER_ESTATE;
    } else if ((rc = pg_open_hold(&u, op->now, err))) {
        return rc;
    }
    if ((rc = pg_task_row(L, u.task, &t, err)) || (rc = pg_user_row(L, u.payer, &p, err))) return rc;
    ledger_xfer_t x = {.type = expire ? XF_EXPIRE : XF_VOID, .code = CODE_USAGE_FEE, .debit = p.cash, .credit = t.clearing,
                       .amount = u.held, .pending_id = u.hold_transfer, .pending_amount = u.held};
    int64_t xid;
    if ((rc = pg_transfer(L, op, &x, &xid, err))) return rc;
    return pg_resolve_usage(L, hold, expire ? BF_LEDGER_HOLD_EXPIRED : BF_LEDGER_HOLD_VOIDED, 0, xid, xid, err);
}

static int pg_do_fee(bf_ledger_t *L, ledger_op_t *op, const void *argp, bf_err_t *err) {
    const pg_fee_args_t *a = argp;
    int64_t hold = 0;
    int rc;
    switch (a->what) {
    case 0: return pg_hold(L, op, a, &op->result, err);
    case 1:
        if ((rc = pg_capture(L, op, a->hold, a->amount, err))) return rc;
        op->result = a->amount;
        return 0;
    case 2: return pg_release(L, op, a->hold, 0, err);
    case 3:
        if ((rc = pg_hold(L, op, a, &hold, err)) || (rc = pg_capture(L, op, hold, a->amount, err))) return rc;
        op->result = hold;
        return 0;
    case 4: {
        rc = a->amount > 0 ? pg_capture(L, op, a->hold, a->amount, err) : pg_release(L, op, a->hold, 0, err);
        if (rc) return rc;
        pp_t p = {0};
        pp_i64(&p, a->hold), pp_i64(&p, a->note->images), pp_i64(&p, a->note->classified);
        if (a->note->result_len) pp_bin(&p, a->note->result, a->note->result_len);
        else pp_str(&p, NULL);
        if ((rc = pgx(L, "UPDATE model_usage SET images = $2, classified = $3, result = $4 WHERE id = $1", &p, NULL, err)))
            return rc;
        op->result = a->amount;
        return 0;
    }
    default: return pg_release(L, op, a->hold, 1, err);
    }
}

/* hold (what 0), capture (1), void (2), charge (3), settle (4), expire (5): the same fingerprints
 * as the SQLite operations. */
static int pg_batch_run(bf_ledger_t *L, ledger_op_t *op, ledger_fp_t *fp, const pg_fee_args_t *args, int64_t *result,
                        bf_err_t *err);

int ledger_pg_fee(bf_ledger_t *L, int what, const char *op_id, int64_t task, int64_t payer, int64_t amount, int64_t timeout,
                  int64_t hold, const bf_ledger_usage_note_t *note, int64_t *result, bf_err_t *err) {
    static const int kinds[6] = {OP_FEE_HOLD, OP_FEE_CAPTURE, OP_FEE_VOID, OP_FEE_CHARGE, OP_FEE_SETTLE, OP_EXPIRE};
    ledger_fp_t fp = {0};
    if (what == 0 || what == 3) {
        ledger_fp_i64(&fp, task);
        ledger_fp_i64(&fp, payer);
        ledger_fp_i64(&fp, amount);
        if (what == 0) ledger_fp_i64(&fp, timeout);
    } else {
        ledger_fp_i64(&fp, hold);
        if (what == 1 || what == 4) ledger_fp_i64(&fp, amount);
        if (what == 4) {
            ledger_fp_i64(&fp, note->images);
            ledger_fp_i64(&fp, note->classified);
            ledger_fp_bytes(&fp, note->result, note->result_len);
        }
    }
    ledger_op_t op = {.key = op_id, .kind = kinds[what]};
    pg_fee_args_t a = {task, payer, amount, timeout, hold, note, what};
    if (L->pg->in_group) return pg_batch_run(L, &op, &fp, &a, result, err);
    return pg_op_run(L, &op, &fp, pg_do_fee, &a, result, err);
}

int ledger_pg_sweep(bf_ledger_t *L, int64_t *n_expired, bf_err_t *err) {
    int frc = ledger_pg_flush(L, err);
    if (frc) return frc;
    pp_t p = {0};
    pp_i64(&p, ledger_now(L));
    PGresult *r;
    int rc = pgx(L, "SELECT id FROM model_usage WHERE status = 1 AND expires_at > 0 AND expires_at <= $1 ORDER BY id", &p, &r, err);
    if (rc) return rc;
    for (int i = 0; i < PQntuples(r) && rc == 0; i++) {
        int64_t id = col_i64(r, i, 0);
        char key[64];
        snprintf(key, sizeof key, "expire:%lld", (long long)id);
        int x = ledger_pg_fee(L, 5, key, 0, 0, 0, 0, id, NULL, NULL, err);
        if (x == BF_LEDGER_OK && n_expired) (*n_expired)++;
        else if (x == BF_LEDGER_EINTERNAL || x == BF_LEDGER_EBUSY) rc = x;
    }
    PQclear(r);
    return rc;
}

/* ---- Batched fee path ------------------------------------------------------------------------ */
/* Inside a group, a fee op (hold, capture, void, charge, settle, expire) sends nothing to the
 * server. Everything it reads comes from memory, valid because the group holds the chain lock for
 * its whole transaction (no other writer can change a row meanwhile): the task with its holders
 * and payout state, payers' cash accounts, usage rows, accounts. Everything it writes (its ops
 * row, its transfer rows, usage rows, the task's revenue figures, accounts) is kept in lists and
 * sent at the group's commit, or before a query or an op of another kind, as a few multi-row
 * statements in one pipeline (one round trip). An op that fails is undone in memory from its
 * journal; its ops row (with the failure) is kept like a success's.
 *
 * The one question memory cannot answer is whether an op key was used before, by this or another
 * coordinator. A Bloom filter over every key in ops answers "certainly not" for a new key; it is
 * brought up to date (the keys with an id above the last one seen) once per group, under the lock;
 * ids are max(id) + 1 under the lock, so no key can appear below that id later. A "maybe" looks
 * at the group's pending rows and then asks the server, as before. */

#define PG_BLOOM_PROBES 7

static void pg_key_hash(const char *k, uint64_t *h1, uint64_t *h2) {
    uint64_t h = 1469598103934665603ULL; /* FNV-1a, then two finalisers */
    for (const unsigned char *p = (const unsigned char *)k; *p; p++) h = (h ^ *p) * 1099511628211ULL;
    uint64_t a = h ^ (h >> 33);
    a *= 0xff51afd7ed558ccdULL;
    a ^= a >> 33;
    uint64_t b = (h + 0x9e3779b97f4a7c15ULL) ^ (h >> 29);
    b *= 0xc4ceb9fe1a85ec53ULL;
    b ^= b >> 32;
    *h1 = a, *h2 = b | 1;
}

static void pg_bloom_add(pg_bloom_t *b, const char *key) {
    uint64_t h1, h2;
    pg_key_hash(key, &h1, &h2);
    for (int i = 0; i < PG_BLOOM_PROBES; i++) {
        uint64_t bit = (h1 + (uint64_t)i * h2) & (b->nbits - 1);
        b->w[bit >> 6] |= 1ULL << (bit & 63);
    }
    b->n++;
}

static int pg_bloom_maybe(const pg_bloom_t *b, const char *key) {
    uint64_t h1, h2;
    pg_key_hash(key, &h1, &h2);
    for (int i = 0; i < PG_BLOOM_PROBES; i++) {
        uint64_t bit = (h1 + (uint64_t)i * h2) & (b->nbits - 1);
        if (!(b->w[bit >> 6] & (1ULL << (bit & 63)))) return 0;
    }
    return 1;
}

static int pg_grow(void *pp, int *cap, int need, size_t size) {
    void **p = pp;
    if (need <= *cap) return 0;
    int c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    void *q = realloc(*p, (size_t)c * size);
    if (!q) return -1;
    *p = q, *cap = c;
    return 0;
}

/* The filter and the id counters, up to date under the current lock (once per transaction). The
 * filter is rebuilt from every key at twice the size when it holds more than 1 key per 16 bits. */
static int pg_batch_sync(bf_ledger_t *L, bf_err_t *err) {
    struct ledger_pg *g = L->pg;
    if (g->synced) return 0;
    if (!g->bloom.w || g->bloom.n > g->bloom.nbits / 16) {
        size_t nb = (size_t)1 << 20;
        while (nb / 32 < g->bloom.n) nb *= 2;
        uint64_t *w = calloc(nb / 64, sizeof *w);
        if (!w) return bf_err_set(err, "out of memory"), BF_LEDGER_EINTERNAL;
        free(g->bloom.w);
        g->bloom = (pg_bloom_t){w, nb, 0};
        g->ops_max = 0;
    }
    int rc;
    PGresult *r;
    for (;;) {
        pp_t p = {0};
        pp_i64(&p, g->ops_max);
        if ((rc = pgx(L, "SELECT id, op_key FROM ops WHERE id > $1 ORDER BY id LIMIT 100000", &p, &r, err))) return rc;
        int k = PQntuples(r);
        for (int i = 0; i < k; i++) pg_bloom_add(&g->bloom, PQgetvalue(r, i, 1));
        if (k) g->ops_max = col_i64(r, k - 1, 0);
        PQclear(r);
        if (k < 100000) break;
    }
    if ((rc = pgx(L, "SELECT coalesce(max(id), 0) FROM model_usage", NULL, &r, err))) return rc;
    g->usage_max = col_i64(r, 0, 0);
    PQclear(r);
    g->synced = 1;
    return 0;
}

static void pg_use_free(pg_use_t *u) {
    free(u->result);
    u->result = NULL;
}

/* Forgets the caches (not the pending lists: see pg_batch_flush). */
static void pg_batch_drop(struct ledger_pg *g) {
    for (int i = 0; i < g->n_use; i++) pg_use_free(&g->use[i]);
    for (int i = 0; i < g->n_tc; i++) free(g->tc[i].ppm), free(g->tc[i].cash), free(g->tc[i].paid);
    g->n_use = g->n_tc = g->n_uc = 0;
}

/* Forgets the pending rows (after they were sent, or with a rolled-back transaction). */
static void pg_batch_clear(struct ledger_pg *g) {
    for (int i = 0; i < g->n_pops; i++) free(g->pops[i].key), free(g->pops[i].msg);
    for (int i = 0; i < g->n_ptx; i++) free(g->ptx[i].legs);
    g->n_pops = g->n_ptx = 0;
}

/* The end of a write transaction: committed (keep = 1) or rolled back. */
static void pg_batch_end(struct ledger_pg *g, int keep) {
    pg_batch_clear(g);
    pg_batch_drop(g);
    if (!keep) g->ops_max = g->ops_max_tx;
    g->synced = 0;
}

static void pg_batch_free(struct ledger_pg *g) {
    pg_batch_end(g, 1);
    free(g->pops), free(g->ptx), free(g->use), free(g->tc), free(g->uc), free(g->scr), free(g->j_paid);
    free(g->bloom.w);
    for (int c = 0; c < 2; c++) {
        for (int i = 0; g->cols[c] && i < PG_MAX_COLS; i++) free(g->cols[c]->col[i].p);
        free(g->cols[c]);
    }
}

static int pg_defer_row(bf_ledger_t *L, ledger_op_t *op, const ledger_row_t *r, const unsigned char h[32], bf_err_t *err) {
    struct ledger_pg *g = L->pg;
    if (pg_grow(&g->ptx, &g->cap_ptx, g->n_ptx + 1, sizeof *g->ptx)) return bf_err_set(err, "out of memory"), BF_LEDGER_EINTERNAL;
    pg_ptx_t *t = &g->ptx[g->n_ptx];
    t->r = *r;
    t->op = op->row;
    memcpy(t->hash, h, 32);
    t->legs = NULL;
    if (r->legs) {
        if (!(t->legs = malloc(r->legs_len ? r->legs_len : 1))) return bf_err_set(err, "out of memory"), BF_LEDGER_EINTERNAL;
        memcpy(t->legs, r->legs, r->legs_len);
        t->r.legs = t->legs;
    }
    g->n_ptx++;
    return 0;
}

/* ---- Batched fee path: reads ---- */

static int pg_batch_cash(bf_ledger_t *L, int64_t user, int64_t *cash, bf_err_t *err) {
    struct ledger_pg *g = L->pg;
    for (int i = 0; i < g->n_uc; i++)
        if (g->uc[2 * i] == user) return *cash = g->uc[2 * i + 1], 0;
    pg_user_t u;
    int rc = pg_user_row(L, user, &u, err);
    if (rc) return rc;
    if (pg_grow(&g->uc, &g->cap_uc, 2 * (g->n_uc + 1), sizeof *g->uc)) return bf_err_set(err, "out of memory"), BF_LEDGER_EINTERNAL;
    g->uc[2 * g->n_uc] = user, g->uc[2 * g->n_uc + 1] = u.cash;
    g->n_uc++;
    *cash = u.cash;
    return 0;
}

/* The task with its holders; NULL and *rc set if unknown or on error. */
static pg_tc_t *pg_batch_task(bf_ledger_t *L, int64_t id, int *rc, bf_err_t *err) {
    struct ledger_pg *g = L->pg;
    for (int i = 0; i < g->n_tc; i++)
        if (g->tc[i].t.id == id) return &g->tc[i];
    if (pg_grow(&g->tc, &g->cap_tc, g->n_tc + 1, sizeof *g->tc)) return *rc = (bf_err_set(err, "out of memory"), BF_LEDGER_EINTERNAL), NULL;
    pg_tc_t c = {0};
    if ((*rc = pg_task_row(L, id, &c.t, err))) return NULL;
    pp_t p = {0};
    pp_i64(&p, id);
    PGresult *r;
    if ((*rc = pgx(L,
                   "SELECT s.ppm, s.cash_account, t.payout_state FROM model_shareholdings s JOIN tasks t ON t.id = s.task_id"
                   " WHERE s.task_id = $1 ORDER BY s.cash_account",
                   &p, &r, err)))
        return NULL;
    size_t n = (size_t)PQntuples(r);
    c.n = n;
    c.ppm = calloc(n + 1, sizeof *c.ppm), c.cash = calloc(n + 1, sizeof *c.cash), c.paid = calloc(n + 1, sizeof *c.paid);
    unsigned char *blob = calloc(n + 1, 8);
    long nb = n && blob ? col_bytes(r, 0, 2, blob, 8 * n) : -1;
    if (!c.ppm || !c.cash || !c.paid || !blob || (nb > 0 && (size_t)nb != 8 * n)) {
        *rc = !blob || !c.ppm || !c.cash || !c.paid ? (bf_err_set(err, "out of memory"), BF_LEDGER_EINTERNAL)
                                                    : (bf_err_set(err, "task %lld: payout state inconsistent", (long long)id), BF_LEDGER_EINTERNAL);
        free(c.ppm), free(c.cash), free(c.paid), free(blob);
        PQclear(r);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        c.ppm[i] = col_i64(r, (int)i, 0);
        c.cash[i] = col_i64(r, (int)i, 1);
        c.paid[i] = nb > 0 ? ledger_get_be64(blob + 8 * i) : 0;
    }
    free(blob);
    PQclear(r);
    g->tc[g->n_tc] = c;
    return &g->tc[g->n_tc++];
}

/* The index of usage row id in the cache (loaded if needed), or -1 with *rc set. */
static int pg_batch_usage(bf_ledger_t *L, int64_t id, int *rc, bf_err_t *err) {
    struct ledger_pg *g = L->pg;
    for (int i = g->n_use - 1; i >= 0; i--)
        if (g->use[i].id == id) return i;
    if (pg_grow(&g->use, &g->cap_use, g->n_use + 1, sizeof *g->use)) return *rc = (bf_err_set(err, "out of memory"), BF_LEDGER_EINTERNAL), -1;
    pg_usage_t u;
    if ((*rc = pg_usage_row(L, id, &u, err))) return -1;
    /* a row from the table: only what an op may change is written back, so the rest need not be read */
    g->use[g->n_use] = (pg_use_t){.id = id, .task = u.task, .payer = u.payer, .hold_transfer = u.hold_transfer,
                                  .held = u.held, .expires_at = u.expires_at, .status = u.status};
    return g->n_use++;
}

/* ---- Batched fee path: the op journal ---- */

static int pg_journal_begin(struct ledger_pg *g) {
    g->j_ptx = g->n_ptx, g->j_pops = g->n_pops, g->j_nuse = g->n_use, g->j_use = -1, g->j_tc = -1;
    g->j_usage_max = g->usage_max;
    return pg_snapshot(g);
}

static void pg_touch_use(struct ledger_pg *g, int i) {
    if (i >= g->j_nuse || g->j_use == i) return; /* new in this op, or saved already */
    assert(g->j_use < 0);
    g->j_use = i;
    g->j_use_row = g->use[i];
}

static int pg_touch_task(struct ledger_pg *g, pg_tc_t *c) {
    int i = (int)(c - g->tc);
    if (g->j_tc == i) return 0;
    assert(g->j_tc < 0);
    if (c->n + 1 > g->cap_j_paid) {
        int64_t *p = realloc(g->j_paid, (c->n + 1) * sizeof *p);
        if (!p) return -1;
        g->j_paid = p, g->cap_j_paid = c->n + 1;
    }
    memcpy(g->j_paid, c->paid, (c->n + 1) * sizeof *c->paid);
    g->j_tc = i, g->j_rev = c->t.total_revenue, g->j_pp = c->t.platform_paid, g->j_tc_dirty = c->dirty;
    return 0;
}

/* Undoes the op: its rows, its usage and task changes, its accounts and the chain head. */
static void pg_journal_undo(struct ledger_pg *g) {
    for (int i = g->j_ptx; i < g->n_ptx; i++) free(g->ptx[i].legs);
    g->n_ptx = g->j_ptx;
    for (int i = g->j_nuse; i < g->n_use; i++) pg_use_free(&g->use[i]);
    g->n_use = g->j_nuse;
    g->usage_max = g->j_usage_max;
    if (g->j_use >= 0) {
        if (g->use[g->j_use].result != g->j_use_row.result) free(g->use[g->j_use].result);
        g->use[g->j_use] = g->j_use_row;
    }
    if (g->j_tc >= 0) {
        pg_tc_t *c = &g->tc[g->j_tc];
        memcpy(c->paid, g->j_paid, (c->n + 1) * sizeof *c->paid);
        c->t.total_revenue = g->j_rev, c->t.platform_paid = g->j_pp, c->dirty = g->j_tc_dirty;
    }
    g->head_id = g->head_id0;
    memcpy(g->head_hash, g->head_hash0, 32);
    pg_restore(g);
}

/* ---- Batched fee path: the ops (the same checks, in the same order, as pg_hold and friends) ---- */

static int pg_b_hold(bf_ledger_t *L, ledger_op_t *op, const pg_fee_args_t *a, int64_t *hold, bf_err_t *err) {
    struct ledger_pg *g = L->pg;
    if (a->amount <= 0) return bf_err_set(err, "fee must be positive"), BF_LEDGER_EINVAL;
    if (a->timeout < 0) return bf_err_set(err, "negative hold timeout"), BF_LEDGER_EINVAL;
    int rc = 0;
    int64_t cash;
    pg_tc_t *c = pg_batch_task(L, a->task, &rc, err);
    if (!c || (rc = pg_batch_cash(L, a->payer, &cash, err))) return rc;
    const ledger_task_row_t *t = &c->t;
    if (t->mode != BF_LEDGER_MODE_SHAREHOLDING || t->status != BF_LEDGER_TASK_COMPLETED || !t->model_online)
        return bf_err_set(err, "task %lld has no online model", (long long)t->id), BF_LEDGER_ESTATE;
    int64_t expires = 0, xid;
    if (a->timeout && __builtin_add_overflow(op->now, a->timeout, &expires))
        return bf_err_set(err, "hold timeout overflows"), BF_LEDGER_EOVERFLOW;
    ledger_xfer_t x = {.type = XF_PENDING, .code = CODE_USAGE_FEE, .debit = cash, .credit = t->clearing, .amount = a->amount,
                       .expires_at = expires};
    if ((rc = pg_transfer(L, op, &x, &xid, err))) return rc;
    if (pg_grow(&g->use, &g->cap_use, g->n_use + 1, sizeof *g->use)) return bf_err_set(err, "out of memory"), BF_LEDGER_EINTERNAL;
    g->use[g->n_use++] = (pg_use_t){.id = ++g->usage_max, .task = t->id, .payer = a->payer, .hold_transfer = xid,
                                    .held = a->amount, .created_at = op->now, .expires_at = expires,
                                    .status = BF_LEDGER_HOLD_PENDING, .fresh = 1};
    *hold = g->usage_max;
    return 0;
}

/* Pays amount (in the clearing account) to the holders and the platform, as pg_distribute. */
static int pg_b_distribute(bf_ledger_t *L, ledger_op_t *op, pg_tc_t *c, int64_t amount, bf_err_t *err) {
    struct ledger_pg *g = L->pg;
    if (amount == 0) return 0;
    size_t n = c->n, m = n + 1;
    if (6 * m > g->cap_scr) {
        int64_t *s = realloc(g->scr, 6 * m * sizeof *s);
        if (!s) return bf_err_set(err, "out of memory"), BF_LEDGER_EINTERNAL;
        g->scr = s, g->cap_scr = 6 * m;
    }
    int64_t *w = g->scr, *keys = w + m, *paid = keys + m, *add = paid + m, *acct = add + m, *amt = acct + m;
    for (size_t i = 0; i < n; i++) w[i] = c->ppm[i] * (BF_LEDGER_PPM - c->t.fee_ppm), keys[i] = c->cash[i], paid[i] = c->paid[i];
    w[n] = c->t.fee_ppm * BF_LEDGER_PPM;
    keys[n] = L->rev_cny;
    paid[n] = c->t.platform_paid;
    int64_t total_after;
    if (__builtin_add_overflow(c->t.total_revenue, amount, &total_after))
        return bf_err_set(err, "task revenue overflows"), BF_LEDGER_EOVERFLOW;
    if (bf_money_apportion(m, w, keys, paid, c->t.total_revenue, amount, add))
        return bf_err_set(err, "task %lld: shares or payout state inconsistent", (long long)c->t.id), BF_LEDGER_EINTERNAL;
    size_t legs = 0;
    for (size_t i = 0; i < m; i++)
        if (add[i] > 0) acct[legs] = keys[i], amt[legs++] = add[i];
    int rc = pg_transfer_split(L, op, CODE_FEE_PAYOUT, c->t.clearing, legs, acct, amt, err);
    if (rc) return rc;
    if (pg_touch_task(g, c)) return bf_err_set(err, "out of memory"), BF_LEDGER_EINTERNAL;
    for (size_t i = 0; i < n; i++) c->paid[i] += add[i];
    c->t.total_revenue = total_after;
    c->t.platform_paid += add[n];
    c->dirty = 1;
    return 0;
}

static int pg_b_capture(bf_ledger_t *L, ledger_op_t *op, int64_t hold, int64_t amount, bf_err_t *err) {
    struct ledger_pg *g = L->pg;
    int rc = 0;
    int ui = pg_batch_usage(L, hold, &rc, err);
    if (ui < 0) return rc;
    pg_usage_t u = {g->use[ui].id, g->use[ui].task, g->use[ui].payer, g->use[ui].hold_transfer, g->use[ui].held,
                    g->use[ui].expires_at, g->use[ui].status};
    if ((rc = pg_open_hold(&u, op->now, err))) return rc;
    if (amount < 0) return bf_err_set(err, "negative capture"), BF_LEDGER_EINVAL;
    if (amount > u.held)
        return bf_err_set(err, "capture %lld exceeds hold %lld", (long long)amount, (long long)u.held), BF_LEDGER_EEXCEEDS_HOLD;
    int64_t cash, post;
    pg_tc_t *c = pg_batch_task(L, u.task, &rc, err);
    if (!c || (rc = pg_batch_cash(L, u.payer, &cash, err))) return rc;
    ledger_xfer_t x = {.type = XF_POST, .code = CODE_USAGE_FEE, .debit = cash, .credit = c->t.clearing, .amount = amount,
                       .pending_id = u.hold_transfer, .pending_amount = u.held};
    if ((rc = pg_transfer(L, op, &x, &post, err)) || (rc = pg_b_distribute(L, op, c, amount, err))) return rc;
    pg_acct_t *cl = pg_acct(L, c->t.clearing, err);
    if (!cl || cl->cp - cl->dp != 0) return bf_err_set(err, "clearing account not empty after payout"), BF_LEDGER_EINTERNAL;
    pg_touch_use(g, ui);
    pg_use_t *w = &g->use[ui];
    w->status = BF_LEDGER_HOLD_CAPTURED, w->captured = amount, w->resolve = post, w->end = g->head_id, w->dirty = 1;
    return 0;
}

static int pg_b_release(bf_ledger_t *L, ledger_op_t *op, int64_t hold, int expire, bf_err_t *err) {
    struct ledger_pg *g = L->pg;
    int rc = 0;
    int ui = pg_batch_usage(L, hold, &rc, err);
    if (ui < 0) return rc;
    pg_usage_t u = {g->use[ui].id, g->use[ui].task, g->use[ui].payer, g->use[ui].hold_transfer, g->use[ui].held,
                    g->use[ui].expires_at, g->use[ui].status};
    if (expire) {
        if (u.status != BF_LEDGER_HOLD_PENDING || u.expires_at == 0 || op->now < u.expires_at)
            return bf_err_set(err, "hold %lld is not an expired pending hold", (long long)hold), BF_LEDGER_ESTATE;
    } else if ((rc = pg_open_hold(&u, op->now, err))) {
        return rc;
    }
    int64_t cash, xid;
    pg_tc_t *c = pg_batch_task(L, u.task, &rc, err);
    if (!c || (rc = pg_batch_cash(L, u.payer, &cash, err))) return rc;
    ledger_xfer_t x = {.type = expire ? XF_EXPIRE : XF_VOID, .code = CODE_USAGE_FEE, .debit = cash, .credit = c->t.clearing,
                       .amount = u.held, .pending_id = u.hold_transfer, .pending_amount = u.held};
    if ((rc = pg_transfer(L, op, &x, &xid, err))) return rc;
    pg_touch_use(g, ui);
    pg_use_t *w = &g->use[ui];
    w->status = expire ? BF_LEDGER_HOLD_EXPIRED : BF_LEDGER_HOLD_VOIDED, w->captured = 0, w->resolve = xid, w->end = xid;
    w->dirty = 1;
    return 0;
}

static int pg_b_fee(bf_ledger_t *L, ledger_op_t *op, const void *argp, bf_err_t *err) {
    const pg_fee_args_t *a = argp;
    struct ledger_pg *g = L->pg;
    int64_t hold = 0;
    int rc;
    switch (a->what) {
    case 0: return pg_b_hold(L, op, a, &op->result, err);
    case 1:
        if ((rc = pg_b_capture(L, op, a->hold, a->amount, err))) return rc;
        op->result = a->amount;
        return 0;
    case 2: return pg_b_release(L, op, a->hold, 0, err);
    case 3:
        if ((rc = pg_b_hold(L, op, a, &hold, err)) || (rc = pg_b_capture(L, op, hold, a->amount, err))) return rc;
        op->result = hold;
        return 0;
    case 4: {
        rc = a->amount > 0 ? pg_b_capture(L, op, a->hold, a->amount, err) : pg_b_release(L, op, a->hold, 0, err);
        if (rc) return rc;
        int ui = pg_batch_usage(L, a->hold, &rc, err);
        if (ui < 0) return rc;
        pg_touch_use(g, ui);
        pg_use_t *w = &g->use[ui];
        unsigned char *res = NULL;
        if (a->note->result_len) {
            if (!(res = malloc(a->note->result_len))) return bf_err_set(err, "out of memory"), BF_LEDGER_EINTERNAL;
            memcpy(res, a->note->result, a->note->result_len);
        }
        if (w->result != g->j_use_row.result || g->j_use != ui) free(w->result);
        w->result = res, w->result_len = a->note->result_len;
        w->images = a->note->images, w->classified = a->note->classified, w->noted = 1, w->dirty = 1;
        op->result = a->amount;
        return 0;
    }
    default: return pg_b_release(L, op, a->hold, 1, err);
    }
}

static int pg_batch_pop(struct ledger_pg *g, const ledger_op_t *op, int rc, const char *msg) {
    if (pg_grow(&g->pops, &g->cap_pops, g->n_pops + 1, sizeof *g->pops)) return -1;
    pg_pop_t *p = &g->pops[g->n_pops];
    *p = (pg_pop_t){.id = op->row, .result = rc ? 0 : op->result, .at = op->now, .kind = op->kind, .rc = rc};
    memcpy(p->fp, op->fp, 32);
    if (!(p->key = strdup(op->key)) || (msg && !(p->msg = strdup(msg)))) {
        free(p->key);
        return -1;
    }
    g->n_pops++;
    g->ops_max = op->row;
    pg_bloom_add(&g->bloom, op->key);
    return 0;
}

/* A recorded outcome for op->key, or 0 with *found = 0. */
static int pg_batch_replay(bf_ledger_t *L, ledger_op_t *op, int64_t *result, int *found, bf_err_t *err) {
    struct ledger_pg *g = L->pg;
    *found = 0;
    if (!pg_bloom_maybe(&g->bloom, op->key)) return 0;
    for (int i = g->n_pops - 1; i >= 0; i--) {
        const pg_pop_t *p = &g->pops[i];
        if (strcmp(p->key, op->key)) continue;
        *found = 1;
        if (p->kind != op->kind || memcmp(p->fp, op->fp, 32))
            return bf_err_set(err, "op id '%s' was already used with different arguments", op->key), BF_LEDGER_ECONFLICT;
        if (p->rc) return bf_err_set(err, "%s", p->msg ? p->msg : "failed"), p->rc;
        if (result) *result = p->result;
        return 0;
    }
    pp_t q = {0};
    pp_str(&q, op->key);
    PGresult *r;
    int rc = pgx(L, "SELECT kind, fingerprint, rc, result, message FROM ops WHERE op_key = $1", &q, &r, err);
    if (rc) return rc;
    if (PQntuples(r) == 1) {
        *found = 1;
        unsigned char fpr[32];
        if (col_i64(r, 0, 0) == op->kind && col_bytes(r, 0, 1, fpr, 32) == 32 && !memcmp(fpr, op->fp, 32)) {
            rc = (int)col_i64(r, 0, 2);
            if (rc) bf_err_set(err, "%s", PQgetisnull(r, 0, 4) ? "failed" : PQgetvalue(r, 0, 4));
            else if (result) *result = col_i64(r, 0, 3);
        } else {
            rc = (bf_err_set(err, "op id '%s' was already used with different arguments", op->key), BF_LEDGER_ECONFLICT);
        }
    }
    PQclear(r);
    return rc;
}

/* pg_op_run for a fee op inside a group: nothing goes to the server unless a read misses the cache
 * or the filter says a key may have been used. */
static int pg_batch_run(bf_ledger_t *L, ledger_op_t *op, ledger_fp_t *fp, const pg_fee_args_t *args, int64_t *result,
                        bf_err_t *err) {
    struct ledger_pg *g = L->pg;
    bf_err_t e0;
    if (!err) err = &e0;
    size_t klen = op->key ? strlen(op->key) : 0;
    int oom = fp->oom;
    if (!oom) ledger_sha256(L, fp->buf ? (const void *)fp->buf : "", fp->len, NULL, 0, op->fp);
    if (fp->buf && fp->buf != fp->inl) free(fp->buf);
    if (klen == 0 || klen > BF_LEDGER_OP_ID_MAX)
        return bf_err_set(err, "op id must be 1..%d bytes", BF_LEDGER_OP_ID_MAX), BF_LEDGER_EINVAL;
    if (oom) return bf_err_set(err, "out of memory"), BF_LEDGER_EINTERNAL;
    int rc, found;
    if ((rc = pg_batch_sync(L, err))) return rc;
    if ((rc = pg_batch_replay(L, op, result, &found, err)) || found) return rc;
    op->now = ledger_now(L);
    op->result = 0;
    op->row = g->ops_max + 1;
    g->head_id0 = g->head_id;
    memcpy(g->head_hash0, g->head_hash, 32);
    if (pg_journal_begin(g)) return bf_err_set(err, "out of memory"), BF_LEDGER_EINTERNAL;
    g->defer = 1;
    rc = pg_b_fee(L, op, args, err);
    g->defer = 0;
    if (rc == 0) {
        if (pg_batch_pop(g, op, 0, NULL)) return bf_err_set(err, "out of memory"), BF_LEDGER_EINTERNAL;
        if (result) *result = op->result;
        return 0;
    }
    pg_journal_undo(g);
    if (recorded(rc) && pg_batch_pop(g, op, rc, err->msg)) return bf_err_set(err, "out of memory"), BF_LEDGER_EINTERNAL;
    return rc;
}

/* ---- Batched fee path: sending the pending rows ---- */


static void cv_put(pg_col_t *c, const char *b, size_t n) {
    if (c->oom) return;
    if (c->n + n + 2 > c->cap) {
        size_t cap = c->cap ? c->cap : 256;
        while (cap < c->n + n + 2) cap *= 2;
        char *q = realloc(c->p, cap);
        if (!q) {
            c->oom = 1;
            return;
        }
        c->p = q, c->cap = cap;
    }
    memcpy(c->p + c->n, b, n);
    c->n += n;
}

static void cv_sep(pg_col_t *c) { cv_put(c, c->n ? "," : "{", 1); }

static void cv_i64(pg_col_t *c, int64_t v) {
    char b[24], *e = b + sizeof b, *q = e; /* digits backwards: snprintf was a tenth of the client's time */
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    do *--q = (char)('0' + u % 10);
    while (u /= 10);
    if (v < 0) *--q = '-';
    cv_sep(c);
    cv_put(c, q, (size_t)(e - q));
}

static void cv_null(pg_col_t *c) {
    cv_sep(c);
    cv_put(c, "NULL", 4);
}

/* bytea in hex form, quoted: "\\x0a1b" (the array parser turns \\ into \). */
static void cv_bytea(pg_col_t *c, const unsigned char *b, size_t n) {
    static const char hex[] = "0123456789abcdef";
    cv_sep(c);
    cv_put(c, "\"\\\\x", 4);
    char buf[128];
    for (size_t i = 0; i < n;) {
        size_t k = 0;
        for (; i < n && k < sizeof buf; i++) buf[k++] = hex[b[i] >> 4], buf[k++] = hex[b[i] & 15];
        cv_put(c, buf, k);
    }
    cv_put(c, "\"", 1);
}

static void cv_text(pg_col_t *c, const char *s) {
    cv_sep(c);
    cv_put(c, "\"", 1);
    for (const char *p = s; *p; p++) {
        if (*p == '"' || *p == '\\') cv_put(c, "\\", 1);
        cv_put(c, p, 1);
    }
    cv_put(c, "\"", 1);
}

static const char *cv_end(pg_col_t *c) {
    if (!c->n) cv_put(c, "{", 1);
    cv_put(c, "}", 1);
    if (!c->oom) c->p[c->n] = 0;
    return c->oom ? NULL : c->p;
}


/* The handle's column buffers, emptied (kept allocated: growing them anew for every flush cost
 * page faults and copies). */
static pg_cols_t *cols_get(bf_ledger_t *L, int which) {
    pg_cols_t *k = L->pg->cols[which];
    if (!k && !(k = L->pg->cols[which] = calloc(1, sizeof *k))) return NULL;
    for (int i = 0; i < PG_MAX_COLS; i++) k->col[i].n = 0, k->col[i].oom = 0;
    return k;
}



/* Sends sql with the n columns as its parameters $1..$n; nothing when there are no rows. */
static int pipe_send(bf_ledger_t *L, pg_cols_t *k, int n, const char *sql, int *sent, bf_err_t *err) {
    for (int i = 0; i < n; i++) {
        k->v[i] = cv_end(&k->col[i]);
        if (!k->v[i]) return bf_err_set(err, "out of memory"), BF_LEDGER_EINTERNAL;
    }
    if (!PQsendQueryParams(L->pg->c, sql, n, NULL, k->v, NULL, NULL, 0))
        return bf_err_set(err, "postgresql: %s", PQerrorMessage(L->pg->c)), BF_LEDGER_EINTERNAL;
    (*sent)++;
    return 0;
}

static int pipe_send_params(bf_ledger_t *L, const char *sql, const pp_t *p, int *sent, bf_err_t *err) {
    if (!PQsendQueryParams(L->pg->c, sql, p->n, NULL, p->v, p->len, p->fmt, 0))
        return bf_err_set(err, "postgresql: %s", PQerrorMessage(L->pg->c)), BF_LEDGER_EINTERNAL;
    (*sent)++;
    return 0;
}

/* Collects the results of the pipeline up to its sync point; the first error is the answer. */
static int pipe_finish(bf_ledger_t *L, int sent, int rc, bf_err_t *err) {
    PGconn *c = L->pg->c;
    if (!PQpipelineSync(c)) {
        if (!rc) rc = (bf_err_set(err, "postgresql: %s", PQerrorMessage(c)), BF_LEDGER_EINTERNAL);
    } else {
        for (int nulls = 0; nulls <= sent + 1;) {
            PGresult *r = PQgetResult(c);
            if (!r) {
                nulls++;
                continue;
            }
            ExecStatusType st = PQresultStatus(r);
            if (st == PGRES_PIPELINE_SYNC) {
                PQclear(r);
                break;
            }
            if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_PIPELINE_ABORTED || rc) PQclear(r);
            else rc = pg_fail(L, r, err, "postgresql");
        }
    }
    if (!PQexitPipelineMode(c) && !rc) rc = (bf_err_set(err, "postgresql: %s", PQerrorMessage(c)), BF_LEDGER_EINTERNAL);
    return rc;
}

static int pipe_ops(bf_ledger_t *L, int *sent, bf_err_t *err) {
    struct ledger_pg *g = L->pg;
    if (!g->n_pops) return 0;
    pg_cols_t *kp = cols_get(L, 0);
    if (!kp) return bf_err_set(err, "out of memory"), BF_LEDGER_EINTERNAL;
    for (int i = 0; i < g->n_pops; i++) {
        const pg_pop_t *p = &g->pops[i];
        cv_i64(&kp->col[0], p->id), cv_text(&kp->col[1], p->key), cv_i64(&kp->col[2], p->kind), cv_bytea(&kp->col[3], p->fp, 32);
        cv_i64(&kp->col[4], p->rc), cv_i64(&kp->col[5], p->result);
        if (p->msg) cv_text(&kp->col[6], p->msg);
        else cv_null(&kp->col[6]);
        cv_i64(&kp->col[7], p->at);
    }
    int rc = pipe_send(L, kp, 8,
                       "INSERT INTO ops(id, op_key, kind, fingerprint, rc, result, message, created_at)"
                       " SELECT * FROM unnest($1::bigint[], $2::text[], $3::int[], $4::bytea[], $5::int[], $6::bigint[],"
                       " $7::text[], $8::bigint[])",
                       sent, err);
    return rc;
}

static int pipe_transfers(bf_ledger_t *L, int *sent, bf_err_t *err) {
    struct ledger_pg *g = L->pg;
    if (!g->n_ptx) return 0;
    pg_cols_t *kp = cols_get(L, 0);
    if (!kp) return bf_err_set(err, "out of memory"), BF_LEDGER_EINTERNAL;
    for (int i = 0; i < g->n_ptx; i++) {
        const pg_ptx_t *t = &g->ptx[i];
        const ledger_row_t *r = &t->r;
        int64_t f[16] = {r->id,         t->op,         r->type,          r->code,         r->currency,   r->debit,
                         r->credit,     r->amount,     r->expires_at,    r->created_at,   r->debit_before, r->debit_after,
                         r->credit_before, r->credit_after, r->debit_prev, r->credit_prev};
        for (int c = 0; c < 16; c++) cv_i64(&kp->col[c], f[c]);
        if (r->pending_id) cv_i64(&kp->col[16], r->pending_id);
        else cv_null(&kp->col[16]);
        cv_bytea(&kp->col[17], t->hash, 32);
        if (t->legs) cv_bytea(&kp->col[18], t->legs, r->legs_len);
        else cv_null(&kp->col[18]);
    }
    int rc = pipe_send(L, kp, 19,
                       "INSERT INTO transfers(id, op, type, code, currency, debit_account, credit_account, amount, expires_at,"
                       " created_at, debit_before, debit_after, credit_before, credit_after, debit_prev, credit_prev,"
                       " pending_id, hash, legs) SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::int[], $4::int[],"
                       " $5::int[], $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[],"
                       " $12::bigint[], $13::bigint[], $14::bigint[], $15::bigint[], $16::bigint[], $17::bigint[],"
                       " $18::bytea[], $19::bytea[])",
                       sent, err);
    return rc;
}

static void cv_opt(pg_col_t *c, int64_t v) {
    if (v) cv_i64(c, v);
    else cv_null(c);
}

/* New usage rows with their final state, then the changed older ones. */
static int pipe_usage(bf_ledger_t *L, int *sent, bf_err_t *err) {
    struct ledger_pg *g = L->pg;
    pg_cols_t *kp = cols_get(L, 0), *up = cols_get(L, 1);
    if (!kp || !up) return bf_err_set(err, "out of memory"), BF_LEDGER_EINTERNAL;
    int nk = 0, nu = 0, rc = 0;
    for (int i = 0; i < g->n_use; i++) {
        const pg_use_t *w = &g->use[i];
        if (w->fresh) {
            int64_t f[9] = {w->id, w->task, w->payer, w->hold_transfer, w->held, w->captured, w->status, w->created_at,
                            w->expires_at};
            for (int c = 0; c < 9; c++) cv_i64(&kp->col[c], f[c]);
            cv_opt(&kp->col[9], w->resolve), cv_opt(&kp->col[10], w->end);
            cv_i64(&kp->col[11], w->images), cv_i64(&kp->col[12], w->classified);
            if (w->result_len) cv_bytea(&kp->col[13], w->result, w->result_len);
            else cv_null(&kp->col[13]);
            nk++;
        } else if (w->dirty) {
            int64_t f[8] = {w->id, w->status, w->captured, w->resolve, w->end, w->noted, w->images, w->classified};
            for (int c = 0; c < 8; c++) cv_i64(&up->col[c], f[c]);
            if (w->result_len) cv_bytea(&up->col[8], w->result, w->result_len);
            else cv_null(&up->col[8]);
            nu++;
        }
    }
    if (nk)
        rc = pipe_send(L, kp, 14,
                       "INSERT INTO model_usage(id, task_id, payer, hold_transfer, held, captured, status, created_at,"
                       " expires_at, resolve_transfer, payouts_end, images, classified, result)"
                       " SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[],"
                       " $6::bigint[], $7::int[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[],"
                       " $13::bigint[], $14::bytea[])",
                       sent, err);
    if (!rc && nu)
        rc = pipe_send(L, up, 9,
                       "UPDATE model_usage m SET status = v.s, captured = v.c, resolve_transfer = v.r, payouts_end = v.e,"
                       " images = CASE WHEN v.n = 1 THEN v.i ELSE m.images END,"
                       " classified = CASE WHEN v.n = 1 THEN v.k ELSE m.classified END,"
                       " result = CASE WHEN v.n = 1 THEN v.res ELSE m.result END"
                       " FROM unnest($1::bigint[], $2::int[], $3::bigint[], $4::bigint[], $5::bigint[], $6::int[],"
                       " $7::bigint[], $8::bigint[], $9::bytea[]) AS v(id, s, c, r, e, n, i, k, res)"
                       " WHERE m.id = v.id AND m.status = 1",
                       sent, err);
    return rc;
}

static int pipe_tasks(bf_ledger_t *L, int *sent, bf_err_t *err) {
    struct ledger_pg *g = L->pg;
    for (int i = 0; i < g->n_tc; i++) {
        pg_tc_t *c = &g->tc[i];
        if (!c->dirty) continue;
        unsigned char *blob = malloc(8 * c->n + 1);
        if (!blob) return bf_err_set(err, "out of memory"), BF_LEDGER_EINTERNAL;
        for (size_t h = 0; h < c->n; h++) ledger_put_be64(blob + 8 * h, c->paid[h]);
        pp_t u = {0};
        pp_i64(&u, c->t.id), pp_i64(&u, c->t.total_revenue), pp_i64(&u, c->t.platform_paid), pp_bin(&u, blob, 8 * c->n);
        int rc = pipe_send_params(L, "UPDATE tasks SET total_revenue = $2, platform_paid = $3, payout_state = $4 WHERE id = $1",
                                  &u, sent, err);
        free(blob);
        if (rc) return rc;
    }
    return 0;
}

static int pipe_accounts(bf_ledger_t *L, int *sent, bf_err_t *err) {
    struct ledger_pg *g = L->pg;
    pg_cols_t *kp = cols_get(L, 0);
    if (!kp) return bf_err_set(err, "out of memory"), BF_LEDGER_EINTERNAL;
    int n = 0;
    for (int i = 0; i < g->n_acc; i++) {
        const pg_acct_t *a = &g->acc[i];
        if (!a->dirty) continue;
        int64_t f[6] = {a->id, a->dp, a->cp, a->dpend, a->cpend, a->last};
        for (int c = 0; c < 6; c++) cv_i64(&kp->col[c], f[c]);
        n++;
    }
    int rc = !n ? 0
                : pipe_send(L, kp, 6,
                            "UPDATE accounts a SET debits_posted = v.dp, credits_posted = v.cp, debits_pending = v.dpend,"
                            " credits_pending = v.cpend, last_transfer = v.last FROM unnest($1::bigint[], $2::bigint[],"
                            " $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[]) AS v(id, dp, cp, dpend, cpend, last)"
                            " WHERE a.id = v.id",
                            sent, err);
    return rc;
}

/* Everything pending (rows, usage, tasks, accounts, the chain head), and with commit the COMMIT,
 * as one pipeline: one round trip. On success the caches stay valid (they now equal the tables). */
static int pg_batch_pending(const struct ledger_pg *g) {
    if (g->n_pops || g->n_ptx || g->head_id != g->head_group) return 1;
    for (int i = 0; i < g->n_use; i++)
        if (g->use[i].fresh || g->use[i].dirty) return 1;
    for (int i = 0; i < g->n_tc; i++)
        if (g->tc[i].dirty) return 1;
    for (int i = 0; i < g->n_acc; i++)
        if (g->acc[i].dirty) return 1;
    return 0;
}

static int pg_batch_flush(bf_ledger_t *L, int commit, bf_err_t *err) {
    struct ledger_pg *g = L->pg;
    if (!commit && !pg_batch_pending(g)) return 0;
    if (!PQenterPipelineMode(g->c)) return bf_err_set(err, "postgresql: %s", PQerrorMessage(g->c)), BF_LEDGER_EINTERNAL;
    int sent = 0, rc;
    pp_t h = {0};
    pp_i64(&h, g->head_id), pp_bin(&h, g->head_hash, 32);
    (void)((rc = pipe_ops(L, &sent, err)) || (rc = pipe_transfers(L, &sent, err)) || (rc = pipe_usage(L, &sent, err)) ||
           (rc = pipe_tasks(L, &sent, err)) || (rc = pipe_accounts(L, &sent, err)) ||
           (g->head_id != g->head_group &&
            (rc = pipe_send_params(L, "UPDATE chain_head SET head_id = $1, head_hash = $2 WHERE one = 1", &h, &sent, err))));
    if (!rc && commit) {
        pp_t none = {0};
        rc = pipe_send_params(L, "COMMIT", &none, &sent, err);
    }
    rc = pipe_finish(L, sent, rc, err);
    if (rc) return rc;
    pg_batch_clear(g);
    for (int i = 0; i < g->n_use; i++) g->use[i].fresh = g->use[i].dirty = 0;
    for (int i = 0; i < g->n_tc; i++) g->tc[i].dirty = 0;
    for (int i = 0; i < g->n_acc; i++) g->acc[i].dirty = 0;
    g->head_group = g->head_id;
    return 0;
}

/* ---- Task queries ---------------------------------------------------------------------------- */

int ledger_pg_task_get(bf_ledger_t *L, int64_t id, bf_ledger_task_t *out, bf_err_t *err) {
    int frc = ledger_pg_flush(L, err);
    if (frc) return frc;
    pp_t p = {0};
    pp_i64(&p, id);
    PGresult *r;
    int rc = pgx(L,
                 "SELECT t.creator, t.name, t.payment_mode, t.status, t.model_status, t.usage_fee, t.reward_pool,"
                 " t.total_revenue, t.platform_fee_ppm, e.credits_posted - e.debits_posted, coalesce(t.result_hash, '')"
                 " FROM tasks t JOIN accounts e ON e.id = t.escrow_account WHERE t.id = $1",
                 &p, &r, err);
    if (rc) return rc;
    if (PQntuples(r) != 1) {
        PQclear(r);
        return bf_err_set(err, "unknown task %lld", (long long)id), BF_LEDGER_ENOTFOUND;
    }
    memset(out, 0, sizeof *out);
    out->id = id;
    out->creator = col_i64(r, 0, 0);
    snprintf(out->name, sizeof out->name, "%s", PQgetvalue(r, 0, 1));
    out->mode = (bf_ledger_mode_t)col_i64(r, 0, 2);
    out->status = (bf_ledger_task_status_t)col_i64(r, 0, 3);
    out->model_online = (int)col_i64(r, 0, 4);
    out->usage_fee = col_i64(r, 0, 5);
    out->reward_pool = col_i64(r, 0, 6);
    out->total_revenue = col_i64(r, 0, 7);
    out->platform_fee_ppm = col_i64(r, 0, 8);
    out->escrow_balance = col_i64(r, 0, 9);
    snprintf(out->result_hash, sizeof out->result_hash, "%s", PQgetvalue(r, 0, 10));
    PQclear(r);
    return 0;
}

/* Holders of a task (task > 0) or holdings of a user, with what each has received. */
int ledger_pg_shares(bf_ledger_t *L, int64_t task, int64_t user, bf_ledger_share_t **out, size_t *n, bf_err_t *err) {
    *out = NULL;
    *n = 0;
    int frc = ledger_pg_flush(L, err);
    if (frc) return frc;
    pp_t p = {0};
    pp_i64(&p, task), pp_i64(&p, user);
    PGresult *r;
    int rc = pgx(L,
                 "SELECT s.task_id, s.user_id, s.weight, s.ppm,"
                 " (SELECT count(*) FROM model_shareholdings o WHERE o.task_id = s.task_id AND o.cash_account < s.cash_account),"
                 " t.payout_state FROM model_shareholdings s JOIN tasks t ON t.id = s.task_id"
                 " WHERE ($1 <= 0 OR s.task_id = $1) AND ($2 <= 0 OR s.user_id = $2) ORDER BY s.task_id, s.user_id",
                 &p, &r, err);
    if (rc) return rc;
    int k = PQntuples(r);
    if (k && !(*out = calloc((size_t)k, sizeof **out))) rc = (bf_err_set(err, "out of memory"), BF_LEDGER_EINTERNAL);
    for (int i = 0; !rc && i < k; i++) {
        bf_ledger_share_t *h = &(*out)[i];
        h->task_id = col_i64(r, i, 0), h->user_id = col_i64(r, i, 1), h->weight = col_i64(r, i, 2), h->ppm = col_i64(r, i, 3);
        int64_t slot = col_i64(r, i, 4);
        size_t nb = 0;
        unsigned char *b = PQgetisnull(r, i, 5) ? NULL : PQunescapeBytea((const unsigned char *)PQgetvalue(r, i, 5), &nb);
        h->received = b && slot >= 0 && (size_t)(slot + 1) * 8 <= nb ? ledger_get_be64(b + 8 * slot) : 0;
        if (b) PQfreemem(b);
    }
    if (!rc) *n = (size_t)k;
    PQclear(r);
    return rc;
}

int ledger_pg_usage(bf_ledger_t *L, int64_t task, int64_t hold, bf_ledger_usage_t **out, size_t *n, bf_err_t *err) {
    *out = NULL;
    *n = 0;
    int frc = ledger_pg_flush(L, err);
    if (frc) return frc;
    pp_t p = {0};
    pp_i64(&p, task), pp_i64(&p, hold);
    PGresult *r;
    int rc = pgx(L,
                 "SELECT id, task_id, payer, held, captured, status, created_at, expires_at FROM model_usage"
                 " WHERE ($1 <= 0 OR task_id = $1) AND ($2 <= 0 OR id = $2) ORDER BY id",
                 &p, &r, err);
    if (rc) return rc;
    int k = PQntuples(r);
    if (k && !(*out = calloc((size_t)k, sizeof **out))) rc = (bf_err_set(err, "out of memory"), BF_LEDGER_EINTERNAL);
    for (int i = 0; !rc && i < k; i++)
        (*out)[i] = (bf_ledger_usage_t){col_i64(r, i, 0), col_i64(r, i, 1), col_i64(r, i, 2), col_i64(r, i, 3),
                                        col_i64(r, i, 4), (bf_ledger_hold_status_t)col_i64(r, i, 5), col_i64(r, i, 6),
                                        col_i64(r, i, 7)};
    if (!rc) *n = (size_t)k;
    PQclear(r);
    return rc;
}

/* Rows of integers: sql with parameters $1, $2 (p1, p2) and ncols BIGINT columns, flattened into
 * *rows (malloc'ed, *n rows). For the simple listings (rewards, participations). */
int ledger_pg_rows(bf_ledger_t *L, const char *sql, int64_t p1, int64_t p2, int ncols, int64_t **rows, size_t *n,
                   bf_err_t *err) {
    *rows = NULL;
    *n = 0;
    int frc = ledger_pg_flush(L, err);
    if (frc) return frc;
    pp_t p = {0};
    pp_i64(&p, p1), pp_i64(&p, p2);
    PGresult *r;
    int rc = pgx(L, sql, &p, &r, err);
    if (rc) return rc;
    int k = PQntuples(r);
    if (k && !(*rows = calloc((size_t)k * (size_t)ncols, sizeof **rows))) rc = (bf_err_set(err, "out of memory"), BF_LEDGER_EINTERNAL);
    for (int i = 0; !rc && i < k; i++)
        for (int c = 0; c < ncols; c++) (*rows)[(size_t)i * (size_t)ncols + (size_t)c] = col_i64(r, i, c);
    if (!rc) *n = (size_t)k;
    PQclear(r);
    return rc;
}

/* An account's owner, from the table of the holders' cash accounts (and the platform's) read
 * first, else one query (a leg that credits anything else). */
static int pg_owner(bf_ledger_t *L, PGresult *own, int64_t account, int64_t *owner, bf_err_t *err) {
    for (int i = 0; i < PQntuples(own); i++)
        if (col_i64(own, i, 0) == account) return *owner = col_i64(own, i, 1), 0;
    pp_t p = {0};
    pp_i64(&p, account);
    PGresult *r;
    int rc = pgx(L, "SELECT owner FROM accounts WHERE id = $1", &p, &r, err);
    if (rc) return rc;
    if (PQntuples(r) == 1) *owner = col_i64(r, 0, 0);
    else rc = (bf_err_set(err, "a payout credits unknown account %lld", (long long)account), BF_LEDGER_EINTERNAL);
    PQclear(r);
    return rc;
}

/* As bf_ledger_revenues on SQLite: each payee of each captured usage's payout transfers (one row
 * per payee before schema 3 on SQLite; split rows, their legs, here). */
int ledger_pg_revenues(bf_ledger_t *L, int64_t task, int64_t user, bf_ledger_revenue_t **out, size_t *n, bf_err_t *err) {
    *out = NULL;
    *n = 0;
    int rc = ledger_pg_flush(L, err);
    if (rc) return rc;
    pp_t p = {0}, q = {0};
    pp_i64(&p, task);
    pp_i64(&q, task), pp_i64(&q, L->rev_cny);
    PGresult *r = NULL, *own = NULL;
    int in_tx = L->pg->in_tx;
    /* one snapshot for both queries */
    if (!in_tx && (rc = pgx(L, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", NULL, NULL, err))) return rc;
    if ((rc = pgx(L,
                  "SELECT t.id, u.id, u.task_id, t.credit_account, t.amount, t.created_at, t.legs, a.owner FROM model_usage u"
                  " JOIN transfers t ON t.id > u.resolve_transfer AND t.id <= u.payouts_end"
                  " JOIN accounts a ON a.id = t.credit_account"
                  " WHERE u.status = 2 AND t.code = 8 AND ($1 <= 0 OR u.task_id = $1) ORDER BY t.id",
                  &p, &r, err)) ||
        (rc = pgx(L,
                  "SELECT id, owner FROM accounts WHERE id = $2 OR id IN (SELECT cash_account FROM model_shareholdings"
                  " WHERE $1 <= 0 OR task_id = $1)",
                  &q, &own, err)))
        goto done;
    size_t cap = 0;
    for (int i = 0; !rc && i < PQntuples(r); i++) {
        bf_ledger_revenue_t base = {.transfer_id = col_i64(r, i, 0), .usage_id = col_i64(r, i, 1),
                                    .task_id = col_i64(r, i, 2), .created_at = col_i64(r, i, 5)};
        size_t nl = 0;
        unsigned char *legs = PQgetisnull(r, i, 6) ? NULL : PQunescapeBytea((const unsigned char *)PQgetvalue(r, i, 6), &nl);
        size_t k = legs ? nl / LEDGER_LEG_BYTES : 1;
        for (size_t j = 0; !rc && j < k; j++) {
            bf_ledger_revenue_t v = base;
            if (legs) {
                ledger_leg_t g;
                ledger_leg_get(legs, j, &g);
                v.amount = g.amount;
                if ((rc = pg_owner(L, own, g.account, &v.user_id, err))) break;
            } else {
                v.amount = col_i64(r, i, 4), v.user_id = col_i64(r, i, 7);
            }
            if (user > 0 && v.user_id != user) continue;
            if (*n == cap) {
                size_t nc = cap ? 2 * cap : 64;
                bf_ledger_revenue_t *q = realloc(*out, nc * sizeof *q);
                if (!q) {
                    rc = (bf_err_set(err, "out of memory"), BF_LEDGER_EINTERNAL);
                    break;
                }
                *out = q, cap = nc;
            }
            (*out)[(*n)++] = v;
        }
        if (legs) PQfreemem(legs);
    }
done:
    if (r) PQclear(r);
    if (own) PQclear(own);
    if (!in_tx) pgx(L, "COMMIT", NULL, NULL, NULL);
    if (rc) free(*out), *out = NULL, *n = 0;
    return rc;
}

int ledger_pg_usage_note(bf_ledger_t *L, int64_t hold, int64_t *images, int64_t *classified, void **result, size_t *len,
                         bf_err_t *err) {
    int frc = ledger_pg_flush(L, err);
    if (frc) return frc;
    pp_t p = {0};
    pp_i64(&p, hold);
    PGresult *r;
    int rc = pgx(L, "SELECT images, classified, result FROM model_usage WHERE id = $1", &p, &r, err);
    if (rc) return rc;
    if (PQntuples(r) != 1) {
        PQclear(r);
        return bf_err_set(err, "unknown hold %lld", (long long)hold), BF_LEDGER_ENOTFOUND;
    }
    if (images) *images = col_i64(r, 0, 0);
    if (classified) *classified = col_i64(r, 0, 1);
    if (result && !PQgetisnull(r, 0, 2)) {
        size_t nb = 0;
        unsigned char *b = PQunescapeBytea((const unsigned char *)PQgetvalue(r, 0, 2), &nb);
        if (b && nb && (*result = malloc(nb))) memcpy(*result, b, nb), *len = nb;
        else if (nb) rc = (bf_err_set(err, "out of memory"), BF_LEDGER_EINTERNAL);
        if (b) PQfreemem(b);
    }
    PQclear(r);
    return rc;
}

/* store.c: the federation's durable state (HOME/coordinator.db): task specifications and progress,
 * participants and their data blocks, per-round metrics and per-round contribution values
 * (a round's row says whether its values are in yet). The ledger keeps the money in its own
 * database; every ledger call the coordinator makes carries a deterministic op id, so replaying
 * an intent after a crash is safe. Checkpoints are model files next to this database. */
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coord.h"

struct coord_store {
    sqlite3 *db;
};

static const char schema[] =
    "PRAGMA journal_mode=WAL;"
    "PRAGMA synchronous=FULL;"
    "CREATE TABLE IF NOT EXISTS task("
    " id TEXT PRIMARY KEY, ledger_id INTEGER NOT NULL, creator TEXT NOT NULL, name TEXT NOT NULL,"
    " description TEXT NOT NULL, model TEXT NOT NULL, dataset TEXT NOT NULL, mode TEXT NOT NULL,"
    " partition TEXT NOT NULL, strategy TEXT NOT NULL, fee_cents INTEGER NOT NULL, pool_cents INTEGER NOT NULL,"
    " rounds INTEGER NOT NULL, min_clients INTEGER NOT NULL, local_epochs INTEGER NOT NULL, batch INTEGER NOT NULL,"
    " round_timeout INTEGER NOT NULL, lr REAL NOT NULL, mu REAL NOT NULL, seed INTEGER NOT NULL,"
    " state TEXT NOT NULL, round INTEGER NOT NULL, checkpoint_sha TEXT NOT NULL DEFAULT '',"
    " result_hash TEXT NOT NULL DEFAULT '', seq INTEGER NOT NULL, created_at INTEGER NOT NULL) STRICT;"
    "CREATE TABLE IF NOT EXISTS participant("
    " task TEXT NOT NULL REFERENCES task(id), key TEXT NOT NULL, user_id INTEGER NOT NULL, own_data INTEGER NOT NULL,"
    " samples INTEGER NOT NULL, left INTEGER NOT NULL DEFAULT 0, seq INTEGER NOT NULL, PRIMARY KEY(task, key)) STRICT;"
    "CREATE TABLE IF NOT EXISTS block("
    " task TEXT NOT NULL REFERENCES task(id), block INTEGER NOT NULL, key TEXT NOT NULL, PRIMARY KEY(task, block)) STRICT;"
    "CREATE TABLE IF NOT EXISTS round("
    " task TEXT NOT NULL REFERENCES task(id), round INTEGER NOT NULL, participants INTEGER NOT NULL,"
    " samples INTEGER NOT NULL, val_acc REAL NOT NULL, val_loss REAL NOT NULL, test_acc REAL NOT NULL,"
    " seconds REAL NOT NULL, sha256 TEXT NOT NULL, PRIMARY KEY(task, round)) STRICT;"
    "CREATE TABLE IF NOT EXISTS contribution("
    " task TEXT NOT NULL REFERENCES task(id), round INTEGER NOT NULL, key TEXT NOT NULL, value REAL NOT NULL,"
    " PRIMARY KEY(task, round, key)) STRICT;";

/* Forward migrations of the schema above, by PRAGMA user_version: never edit one, append. */
static const char *const migrations[] = {
    /* 0 -> 1: pricing of paid predictions */
    "ALTER TABLE task ADD COLUMN base_fee_cents INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE task ADD COLUMN rate_num INTEGER NOT NULL DEFAULT 1;"
    "ALTER TABLE task ADD COLUMN rate_den INTEGER NOT NULL DEFAULT 1;",
    /* 1 -> 2: the validation images a task's coalitions are scored on */
    "ALTER TABLE task ADD COLUMN value_images INTEGER NOT NULL DEFAULT 2000;",
    /* 2 -> 3: the samples each accepted update carried, so a restart restores `contributed`
     * (rows from before count 0) */
    "ALTER TABLE contribution ADD COLUMN samples INTEGER NOT NULL DEFAULT 0;",
    /* 3 -> 4: the creator's cap on an own-data update's weight (0: the default rule) */
    "ALTER TABLE task ADD COLUMN own_data_cap INTEGER NOT NULL DEFAULT 0;",
    /* 4 -> 5: rounds valued after they are aggregated: whether a round's contribution values are in
     * yet, and its aggregation and valuation times apart (rows from before were valued with the
     * round; their times are unknown, 0) */
    "ALTER TABLE round ADD COLUMN valued INTEGER NOT NULL DEFAULT 1;"
    "ALTER TABLE round ADD COLUMN aggregate_seconds REAL NOT NULL DEFAULT 0;"
    "ALTER TABLE round ADD COLUMN value_seconds REAL NOT NULL DEFAULT 0;",
};

static int migrate(sqlite3 *db) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK) return -1;
    int v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int(st, 0) : -1;
    sqlite3_finalize(st);
    for (; v >= 0 && v < (int)(sizeof migrations / sizeof migrations[0]); v++) {
        char bump[64];
        snprintf(bump, sizeof bump, "PRAGMA user_version = %d;", v + 1);
        if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) return -1;
        if (sqlite3_exec(db, migrations[v], NULL, NULL, NULL) != SQLITE_OK ||
            sqlite3_exec(db, bump, NULL, NULL, NULL) != SQLITE_OK ||
            sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
            sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
            return -1;
        }
    }
    return v < 0 ? -1 : 0;
}

coord_store_t *coord_store_open(const char *path, bf_err_t *err) {
    coord_store_t *s = calloc(1, sizeof *s);
    if (!s) return bf_err_set(err, "out of memory"), NULL;
    if (sqlite3_open(path, &s->db) != SQLITE_OK || sqlite3_busy_timeout(s->db, 5000) != SQLITE_OK ||
        sqlite3_exec(s->db, "PRAGMA foreign_keys=ON;", NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_exec(s->db, schema, NULL, NULL, NULL) != SQLITE_OK || migrate(s->db)) {
        bf_err_set(err, "%s: %s", path, s->db ? sqlite3_errmsg(s->db) : "cannot open");
        coord_store_close(&s);
        return NULL;
    }
    return s;
}

void coord_store_close(coord_store_t **p) {
    if (!p || !*p) return;
    sqlite3_close((*p)->db);
    free(*p);
    *p = NULL;
}

/* Runs one statement with bound parameters given as a format: t = text, i = int64, d = double. */
static int run(coord_store_t *s, bf_err_t *err, const char *sql, const char *fmt, ...) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK)
        return bf_err_set(err, "state: %s", sqlite3_errmsg(s->db));
    va_list ap;
    va_start(ap, fmt);
    for (int i = 0; fmt[i]; i++) {
        if (fmt[i] == 't') sqlite3_bind_text(st, i + 1, va_arg(ap, const char *), -1, SQLITE_TRANSIENT);
        else if (fmt[i] == 'i') sqlite3_bind_int64(st, i + 1, va_arg(ap, int64_t));
        else sqlite3_bind_double(st, i + 1, va_arg(ap, double));
    }
    va_end(ap);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) return bf_err_set(err, "state: %s", sqlite3_errmsg(s->db));
    return 0;
}

int coord_store_add_task(coord_store_t *s, const coord_task_spec_t *t, int64_t ledger_id, bf_err_t *err) {
    return run(s, err,
               "INSERT INTO task VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,'waiting',0,'','',"
               "(SELECT COUNT(*) FROM task), unixepoch(),?,?,?,?,?)",
               "ti" "tttttttt" "iiiiiii" "dd" "i" "iiiii", /* one letter per parameter: t text, i int64, d double */
               t->id, ledger_id, t->creator, t->name, t->description, t->model, t->dataset, coord_mode_name(t->mode), t->partition,
               t->strategy, t->fee_cents, t->pool_cents, (int64_t)t->rounds, (int64_t)t->min_clients,
               (int64_t)t->local_epochs, (int64_t)t->batch, (int64_t)t->round_timeout, t->lr, t->mu, (int64_t)t->seed,
               t->base_fee_cents, t->rate_num, t->rate_den, (int64_t)t->value_images, t->own_data_cap);
}

int coord_store_set_progress(coord_store_t *s, const char *task, coord_task_state_t state, int round,
                             const char *checkpoint_sha, const char *result_hash, bf_err_t *err) {
    if (state == COORD_TASK_AGGREGATING) state = COORD_TASK_RUNNING; /* a restart reopens the round */
    return run(s, err, "UPDATE task SET state=?, round=?, checkpoint_sha=?, result_hash=? WHERE id=?", "tittt",
               coord_task_state_name(state),
               (int64_t)round, checkpoint_sha ? checkpoint_sha : "", result_hash ? result_hash : "", task);
}

int coord_store_add_participant(coord_store_t *s, const char *task, const char *key, int64_t user_id, int own_data,
                                int64_t samples, bf_err_t *err) {
    return run(s, err,
               "INSERT INTO participant(task,key,user_id,own_data,samples,seq) VALUES(?,?,?,?,?,"
               "(SELECT COUNT(*) FROM participant)) ON CONFLICT(task,key) DO UPDATE SET left=0",
               "ttiii", task, key, user_id, (int64_t)own_data, samples);
}

int coord_store_add_blocks(coord_store_t *s, const char *task, const char *key, const int32_t *blocks, int n, bf_err_t *err) {
    if (sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return bf_err_set(err, "state: %s", sqlite3_errmsg(s->db));
    for (int i = 0; i < n; i++)
        if (run(s, err, "INSERT INTO block VALUES(?,?,?)", "tit", task, (int64_t)blocks[i], key)) {
            sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
            return -1;
        }
    if (sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        return bf_err_set(err, "state: %s", sqlite3_errmsg(s->db));
    return 0;
}

int coord_store_leave(coord_store_t *s, const char *task, const char *key, bf_err_t *err) {
    return run(s, err, "UPDATE participant SET left=1 WHERE task=? AND key=?", "tt", task, key);
}

int coord_store_add_round(coord_store_t *s, const char *task, int round, const coord_round_metric_t *m,
                          const char *sha, bf_err_t *err) {
    return run(s, err,
               "INSERT OR REPLACE INTO round(task,round,participants,samples,val_acc,val_loss,test_acc,seconds,sha256,"
               "valued,aggregate_seconds,value_seconds) VALUES(?,?,?,?,?,?,?,?,?,?,?,?)",
               "tiiiddddtidd", task, (int64_t)round, (int64_t)m->participants, m->samples, m->val_acc, m->val_loss,
               m->test_acc, m->seconds, sha, (int64_t)(m->valued != 0), m->aggregate_seconds, m->value_seconds);
}

int coord_store_round_valued(coord_store_t *s, const char *task, int round, int k, const char (*keys)[41],
                             const double *values, double value_seconds, bf_err_t *err) {
    if (sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return bf_err_set(err, "state: %s", sqlite3_errmsg(s->db));
    int rc = 0;
    for (int i = 0; i < k && !rc; i++)
        rc = run(s, err, "UPDATE contribution SET value=? WHERE task=? AND round=? AND key=?", "dtit", values[i], task,
                 (int64_t)round, keys[i]);
    if (!rc)
        rc = run(s, err, "UPDATE round SET valued=1, value_seconds=? WHERE task=? AND round=?", "dti", value_seconds,
                 task, (int64_t)round);
    if (rc || sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        if (!rc) bf_err_set(err, "state: %s", sqlite3_errmsg(s->db));
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    return 0;
}

int coord_store_add_contribution(coord_store_t *s, const char *task, int round, const char *key, double value,
                                 int64_t samples, bf_err_t *err) {
    return run(s, err, "INSERT OR REPLACE INTO contribution(task,round,key,value,samples) VALUES(?,?,?,?,?)", "titdi",
               task, (int64_t)round, key, value, samples);
}

/* Read-only, for `ledger` subcommands: never creates or migrates the database. */
int coord_store_task_ref(const char *path, const char *task, int64_t number, char id[65], int64_t *ledger_id,
                         bf_err_t *err) {
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        sqlite3_close(db);
        return 1; /* no coordinator.db beside the ledger: nothing to resolve */
    }
    /* the id the user created first: a task named "7" is task "7", not ledger task 7 */
    int rc = sqlite3_prepare_v2(db,
                                "SELECT id, ledger_id FROM task WHERE id=?1 OR ledger_id=?2 "
                                "ORDER BY id=?1 DESC LIMIT 1",
                                -1, &st, NULL);
    if (rc != SQLITE_OK) {
        /* a home whose coordinator never ran has no task table yet */
        sqlite3_close(db);
        return 1;
    }
    sqlite3_bind_text(st, 1, task ? task : "", -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, number > 0 ? number : -1);
    rc = sqlite3_step(st);
    int out = 1;
    if (rc == SQLITE_ROW) {
        snprintf(id, 65, "%s", (const char *)sqlite3_column_text(st, 0) ? (const char *)sqlite3_column_text(st, 0) : "");
        *ledger_id = sqlite3_column_int64(st, 1);
        out = 0;
    } else if (rc != SQLITE_DONE) {
        out = bf_err_set(err, "%s: %s", path, sqlite3_errmsg(db));
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return out;
}

static const char *col_text(sqlite3_stmt *st, int i) {
    const char *v = (const char *)sqlite3_column_text(st, i);
    return v ? v : "";
}

static void copy(char *dst, size_t cap, const char *src) { snprintf(dst, cap, "%s", src); }

static int load_tasks(coord_store_t *s, const coord_load_cb_t *cb, void *u, bf_err_t *err) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "SELECT * FROM task ORDER BY seq", -1, &st, NULL) != SQLITE_OK)
        return bf_err_set(err, "state: %s", sqlite3_errmsg(s->db));
    while (sqlite3_step(st) == SQLITE_ROW) {
        coord_task_spec_t t;
        memset(&t, 0, sizeof t);
        copy(t.id, sizeof t.id, col_text(st, 0));
        int64_t ledger_id = sqlite3_column_int64(st, 1);
        copy(t.creator, sizeof t.creator, col_text(st, 2));
        copy(t.name, sizeof t.name, col_text(st, 3));
        copy(t.description, sizeof t.description, col_text(st, 4));
        copy(t.model, sizeof t.model, col_text(st, 5));
        copy(t.dataset, sizeof t.dataset, col_text(st, 6));
        coord_task_state_t state;
        if (coord_mode_parse(col_text(st, 7), &t.mode) || coord_task_state_parse(col_text(st, 20), &state)) {
            bf_err_set(err, "state: task %s has mode '%s', state '%s'", t.id, col_text(st, 7), col_text(st, 20));
            sqlite3_finalize(st);
            return -1;
        }
        copy(t.partition, sizeof t.partition, col_text(st, 8));
        copy(t.strategy, sizeof t.strategy, col_text(st, 9));
        t.fee_cents = sqlite3_column_int64(st, 10);
        t.pool_cents = sqlite3_column_int64(st, 11);
        t.rounds = sqlite3_column_int(st, 12);
        t.min_clients = sqlite3_column_int(st, 13);
        t.local_epochs = sqlite3_column_int(st, 14);
        t.batch = sqlite3_column_int(st, 15);
        t.round_timeout = sqlite3_column_int(st, 16);
        t.lr = sqlite3_column_double(st, 17);
        t.mu = sqlite3_column_double(st, 18);
        t.seed = (uint64_t)sqlite3_column_int64(st, 19);
        t.created_at = sqlite3_column_int64(st, 25);
        t.base_fee_cents = sqlite3_column_int64(st, 26);
        t.rate_num = sqlite3_column_int64(st, 27);
        t.rate_den = sqlite3_column_int64(st, 28);
        t.value_images = sqlite3_column_int(st, 29);
        t.own_data_cap = sqlite3_column_int64(st, 30);
        cb->task(u, &t, ledger_id, state, sqlite3_column_int(st, 21), col_text(st, 22), col_text(st, 23));
    }
    if (sqlite3_finalize(st) != SQLITE_OK) return bf_err_set(err, "state: %s", sqlite3_errmsg(s->db));
    return 0;
}

int coord_store_load(coord_store_t *s, const coord_load_cb_t *cb, void *u, bf_err_t *err) {
    sqlite3_stmt *st = NULL;
    if (load_tasks(s, cb, u, err)) return -1;
    if (sqlite3_prepare_v2(s->db, "SELECT task,key,user_id,own_data,samples,left FROM participant ORDER BY seq", -1, &st,
                           NULL) != SQLITE_OK)
        goto fail;
    while (sqlite3_step(st) == SQLITE_ROW)
        cb->participant(u, col_text(st, 0), col_text(st, 1), sqlite3_column_int64(st, 2), sqlite3_column_int(st, 3),
                        sqlite3_column_int64(st, 4), sqlite3_column_int(st, 5));
    sqlite3_finalize(st);
    if (sqlite3_prepare_v2(s->db, "SELECT task,key,block FROM block ORDER BY task, block", -1, &st, NULL) != SQLITE_OK)
        goto fail;
    while (sqlite3_step(st) == SQLITE_ROW) cb->block(u, col_text(st, 0), col_text(st, 1), sqlite3_column_int(st, 2));
    sqlite3_finalize(st);
    if (sqlite3_prepare_v2(s->db, "SELECT task,round,participants,samples,val_acc,val_loss,test_acc,seconds,valued,"
                                  "aggregate_seconds,value_seconds FROM round ORDER BY task, round",
                           -1, &st, NULL) != SQLITE_OK)
        goto fail;
    while (sqlite3_step(st) == SQLITE_ROW) {
        coord_round_metric_t m = {.participants = sqlite3_column_int(st, 2),
                                  .samples = sqlite3_column_int64(st, 3),
                                  .val_acc = sqlite3_column_double(st, 4),
                                  .val_loss = sqlite3_column_double(st, 5),
                                  .test_acc = sqlite3_column_double(st, 6),
                                  .seconds = sqlite3_column_double(st, 7),
                                  .valued = sqlite3_column_int(st, 8) != 0,
                                  .aggregate_seconds = sqlite3_column_double(st, 9),
                                  .value_seconds = sqlite3_column_double(st, 10)};
        cb->round(u, col_text(st, 0), sqlite3_column_int(st, 1), &m);
    }
    sqlite3_finalize(st);
    if (sqlite3_prepare_v2(s->db, "SELECT task,round,key,value,samples FROM contribution ORDER BY task, round, key", -1,
                           &st, NULL) != SQLITE_OK)
        goto fail;
    while (sqlite3_step(st) == SQLITE_ROW)
        cb->contribution(u, col_text(st, 0), sqlite3_column_int(st, 1), col_text(st, 2), sqlite3_column_double(st, 3),
                         sqlite3_column_int64(st, 4));
    sqlite3_finalize(st);
    return 0;
fail:
    return bf_err_set(err, "state: %s", sqlite3_errmsg(s->db));
}

/* test_ledger_common.h: helpers shared by the ledger tests: a fresh database path per test, a
 * controllable clock and valid CURVE keys. */
#ifndef BF_TEST_LEDGER_COMMON_H
#define BF_TEST_LEDGER_COMMON_H

#include <libpq-fe.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bf_ledger.h"
#include "test.h"

/* With BF_TEST_PG_URL_FILE set (the file the ctest PostgreSQL fixture writes), the ledger tests
 * run on the PostgreSQL backend: tl_db_path gives a fresh database's connection string instead of
 * a file, and tl_remove_db drops it. */
static inline int tl_pg_exec(const char *url, const char *sql) {
    PGconn *c = PQconnectdb(url);
    PGresult *r = PQstatus(c) == CONNECTION_OK ? PQexec(c, sql) : NULL;
    int ok = r && PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok) fprintf(stderr, "%s: %s\n", sql, r ? PQresultErrorMessage(r) : PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
    return ok ? 0 : -1;
}

static inline int tl_pg_base(char *out, size_t cap) {
    const char *file = getenv("BF_TEST_PG_URL_FILE");
    if (!file) return 0;
    FILE *f = fopen(file, "r");
    int ok = f && fgets(out, (int)cap, f);
    if (f) fclose(f);
    if (!ok) {
        fprintf(stderr, "BF_TEST_PG_URL_FILE=%s: no PostgreSQL cluster (the fixture did not start it)\n", file);
        exit(1); /* never a silent fall back to SQLite */
    }
    out[strcspn(out, "\r\n")] = 0;
    return 1;
}

/* Removes DB and its WAL/SHM side files (or drops the PostgreSQL database). */
static inline void tl_remove_db(const char *path) {
    char p[1200];
    if (!strncmp(path, "postgresql://", 13)) {
        char base[600], sql[300];
        const char *slash = strrchr(path, '/');
        if (tl_pg_base(base, sizeof base) && slash) {
            snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", slash + 1);
            tl_pg_exec(base, sql);
        }
        return;
    }
    unlink(path);
    snprintf(p, sizeof p, "%s-wal", path);
    unlink(p);
    snprintf(p, sizeof p, "%s-shm", path);
    unlink(p);
}

/* A fresh database path under the test's scratch directory. */
static inline void tl_db_path(char *out, size_t cap, const char *name) {
    char base[600];
    if (tl_pg_base(base, sizeof base)) {
        static int n;
        char db[128], sql[200];
        snprintf(db, sizeof db, "t_%d_%d", (int)getpid(), n++);
        size_t k = strlen(db);
        for (const char *q = name; *q && k < 100; q++) /* the test's name, as far as it is an identifier */
            if ((*q >= 'a' && *q <= 'z') || (*q >= '0' && *q <= '9')) db[k++] = *q;
        db[k] = 0;
        snprintf(sql, sizeof sql, "CREATE DATABASE %s", db);
        if (tl_pg_exec(base, sql)) exit(1);
        const char *slash = strrchr(base, '/');
        snprintf(out, cap, "%.*s/%s", (int)(slash ? slash - base : 0), base, db);
        return;
    }
    snprintf(out, cap, "%s/%s-%d.db", bf_test_tmpdir(), name, (int)getpid());
    tl_remove_db(out);
}

/* 40 Z85 characters derived from n: distinct keys for distinct users. */
static inline void tl_key(char out[41], uint64_t n) {
    static const char z85[] =
        "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";
    for (int i = 0; i < 40; i++) {
        out[i] = z85[n % 85];
        n = n / 85 + (uint64_t)i * 7919u;
    }
    out[40] = 0;
}

typedef struct {
    int64_t now;
} tl_clock_t;

static inline int64_t tl_clock_now(void *ctx) { return ((tl_clock_t *)ctx)->now; }

/* Registers a user named `name` with op id "reg:<name>"; returns its id (or -1). */
static inline int64_t tl_user(bf_ledger_t *L, const char *name, uint64_t keyseed) {
    char key[41], op[160];
    int64_t id = -1;
    tl_key(key, keyseed);
    snprintf(op, sizeof op, "reg:%s", name);
    bf_err_t err;
    int rc = bf_ledger_register_user(L, op, name, key, NULL, &id, &err);
    CHECK_MSG(rc == BF_LEDGER_OK, "register %s: %s", name, err.msg);
    return rc == BF_LEDGER_OK ? id : -1;
}

static inline int tl_verify_ok(bf_ledger_t *L, const char *where) {
    bf_ledger_report_t rep;
    bf_err_t err;
    if (bf_ledger_verify(L, &rep, &err)) {
        CHECK_MSG(0, "%s: verify could not run: %s", where, err.msg);
        return 0;
    }
    for (int i = 0; i < BF_LEDGER_CHECK_COUNT; i++)
        CHECK_MSG(rep.checks[i].ok, "%s: check %s failed: %s", where, rep.checks[i].name, rep.checks[i].detail);
    return rep.ok;
}

static inline int64_t tl_cash(bf_ledger_t *L, int64_t user, int what) {
    bf_ledger_balance_t b = {0};
    bf_ledger_balance(L, user, BF_LEDGER_CNY, &b, NULL);
    return what == 0 ? b.posted : what == 1 ? b.pending_debits : b.available;
}

static inline int64_t tl_coins(bf_ledger_t *L, int64_t user) {
    bf_ledger_balance_t b = {0};
    bf_ledger_balance(L, user, BF_LEDGER_COIN, &b, NULL);
    return b.posted;
}

/* A completed shareholding task with these holders and weights, model online (ops "TAG-..."). */
static inline int64_t tl_share_task(bf_ledger_t *L, const char *tag, int64_t creator, size_t n, const int64_t *holders,
                                      const int64_t *weights) {
    bf_err_t err;
    char op[64];
    bf_ledger_task_spec_t spec = {tag, BF_LEDGER_MODE_SHAREHOLDING, 0, 100};
    int64_t t = 0;
    snprintf(op, sizeof op, "%s-create", tag);
    CHECK(bf_ledger_create_task(L, op, creator, &spec, &t, &err) == 0);
    snprintf(op, sizeof op, "%s-start", tag);
    CHECK(bf_ledger_start_task(L, op, t, &err) == 0);
    snprintf(op, sizeof op, "%s-alloc", tag);
    CHECK_MSG(bf_ledger_allocate_shares(L, op, t, n, holders, weights, "h", &err) == 0, "%s", err.msg);
    snprintf(op, sizeof op, "%s-online", tag);
    CHECK(bf_ledger_set_model_online(L, op, t, 1, &err) == 0);
    return t;
}

#endif

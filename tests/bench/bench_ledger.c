/* bench_ledger.c: `blockfed-bench ledger [--backend sqlite|postgresql] [--pg URL] [--json]
 * [--single N] [--grouped N] [--group G] [--fee C] [--holders H] [--dir DIR]`. Paid-prediction
 * settlements per second: a hold on the payer, its capture, and the payout to H (default 10)
 * shareholders, with durable commits (SQLite synchronous=FULL; PostgreSQL synchronous_commit on),
 * measured
 *   1. with one commit per operation (hold and capture each commit: two fsyncs per settlement),
 *   2. with group commit (G settlements per transaction, every op still atomic and idempotent).
 * On PostgreSQL the bench makes a fresh database on the server at --pg (dropped afterwards), or,
 * without --pg, starts a throwaway cluster as the tests do (tests/postgres/pg_cluster.sh).
 * Prints figures only; the final verify result is reported, not judged. */
#include <libpq-fe.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bf_ledger.h"

typedef struct {
    int json, pg;
    long single, grouped, group, holders;
    int64_t fee;
    const char *dir, *url;
} bench_opts_t;

typedef struct {
    bf_ledger_t *L;
    int64_t task, payer;
    long next; /* op id counter */
} bench_ctx_t;

static void remove_db(const char *path) {
    char p[4200];
    unlink(path);
    snprintf(p, sizeof p, "%s-wal", path);
    unlink(p);
    snprintf(p, sizeof p, "%s-shm", path);
    unlink(p);
}

static int setup(bench_ctx_t *c, const bench_opts_t *o, bf_err_t *err) {
    static const char z85[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    char key[41], name[32], op[64];
    int64_t *holders = calloc((size_t)o->holders, sizeof *holders), *weights = calloc((size_t)o->holders, sizeof *weights);
    int64_t owner = 0;
    int rc = holders && weights ? 0 : -1;
    for (long i = 0; i <= o->holders + 1 && !rc; i++) {
        for (int k = 0; k < 40; k++) key[k] = z85[(i * 7 + k * 13) % 62];
        key[40] = 0;
        snprintf(name, sizeof name, "bench-user-%ld", i);
        snprintf(op, sizeof op, "reg-%ld", i);
        int64_t id;
        rc = bf_ledger_register_user(c->L, op, name, key, NULL, &id, err);
        if (i == 0) owner = id;
        else if (i == 1) c->payer = id;
        else {
            holders[i - 2] = id;
            weights[i - 2] = 1 + (i * 37) % 11; /* unequal shares, as after a real contribution split */
        }
    }
    bf_ledger_task_spec_t spec = {"bench model", BF_LEDGER_MODE_SHAREHOLDING, 0, o->fee};
    if (!rc) rc = bf_ledger_recharge(c->L, "recharge", c->payer, INT64_MAX / 4, err);
    if (!rc) rc = bf_ledger_create_task(c->L, "task", owner, &spec, &c->task, err);
    if (!rc) rc = bf_ledger_start_task(c->L, "start", c->task, err);
    if (!rc) rc = bf_ledger_allocate_shares(c->L, "alloc", c->task, (size_t)o->holders, holders, weights, "bench", err);
    if (!rc) rc = bf_ledger_set_model_online(c->L, "online", c->task, 1, err);
    free(holders);
    free(weights);
    return rc;
}

/* One paid prediction: hold the fee, capture it, pay the shareholders. */
static int settle(bench_ctx_t *c, int64_t fee, bf_err_t *err) {
    char op[48];
    int64_t hold;
    long n = c->next++;
    snprintf(op, sizeof op, "hold-%ld", n);
    int rc = bf_ledger_fee_hold(c->L, op, c->task, c->payer, fee, 60, &hold, err);
    if (rc) return rc;
    snprintf(op, sizeof op, "capture-%ld", n);
    return bf_ledger_fee_capture(c->L, op, hold, fee, err);
}

static double run_single(bench_ctx_t *c, long n, int64_t fee, bf_err_t *err) {
    double t0 = bf_now();
    for (long i = 0; i < n; i++)
        if (settle(c, fee, err)) return -1;
    return n / (bf_now() - t0);
}

/* The same settlement as one op (bf_ledger_fee_charge): hold, capture and payout in one frame. */
static int settle_one_op(bench_ctx_t *c, int64_t fee, bf_err_t *err) {
    char op[48];
    int64_t hold;
    snprintf(op, sizeof op, "charge-%ld", c->next++);
    return bf_ledger_fee_charge(c->L, op, c->task, c->payer, fee, &hold, err);
}

static double run_grouped(bench_ctx_t *c, long n, long group, int64_t fee, int one_op, bf_err_t *err) {
    double t0 = bf_now();
    for (long done = 0; done < n;) {
        if (bf_ledger_group_begin(c->L, err)) return -1;
        for (long k = 0; k < group && done < n; k++, done++)
            if (one_op ? settle_one_op(c, fee, err) : settle(c, fee, err)) {
                bf_ledger_group_rollback(c->L);
                return -1;
            }
        if (bf_ledger_group_commit(c->L, err)) return -1;
    }
    return n / (bf_now() - t0);
}

static int parse_opts(int argc, char **argv, bench_opts_t *o) {
    static const struct option longopts[] = {
        {"json", no_argument, NULL, 'j'},         {"single", required_argument, NULL, 's'},
        {"grouped", required_argument, NULL, 'g'}, {"group", required_argument, NULL, 'G'},
        {"fee", required_argument, NULL, 'f'},     {"holders", required_argument, NULL, 'H'},
        {"dir", required_argument, NULL, 'd'},     {"help", no_argument, NULL, 'h'},
        {"backend", required_argument, NULL, 'b'}, {"pg", required_argument, NULL, 'p'},
        {NULL, 0, NULL, 0},
    };
    *o = (bench_opts_t){0, 0, 2000, 50000, 500, 10, 100, NULL, NULL};
    int set_single = 0, set_grouped = 0;
    const char *tmp = getenv("TMPDIR");
    o->dir = tmp && *tmp ? tmp : "/tmp";
    optind = 1;
    int ch;
    while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'j': o->json = 1; break;
        case 's': o->single = atol(optarg), set_single = 1; break;
        case 'g': o->grouped = atol(optarg), set_grouped = 1; break;
        case 'b':
            if (strcmp(optarg, "sqlite") && strcmp(optarg, "postgresql")) {
                fprintf(stderr, "bench ledger: --backend is sqlite or postgresql\n");
                return 2;
            }
            o->pg = !strcmp(optarg, "postgresql");
            break;
        case 'p': o->url = optarg; break;
        case 'G': o->group = atol(optarg); break;
        case 'f': o->fee = atoll(optarg); break;
        case 'H': o->holders = atol(optarg); break;
        case 'd': o->dir = optarg; break;
        case 'h':
            printf("usage: blockfed-bench ledger [--backend sqlite|postgresql] [--pg URL] [--json] [--single N]\n"
                   "                             [--grouped N] [--group G] [--fee CENTS] [--holders H] [--dir DIR]\n"
                   "defaults: --backend sqlite --single 2000 --grouped 50000 (postgresql: 500 and 10000) --group 500\n"
                   "          --fee 100 --holders 10 --dir $TMPDIR|/tmp; postgresql without --pg starts its own cluster\n");
            return 1;
        default: return 2;
        }
    }
    if (o->url && !o->pg) {
        fprintf(stderr, "bench ledger: --pg belongs to --backend postgresql\n");
        return 2;
    }
    if (o->pg && !set_single) o->single = 500;
    if (o->pg && !set_grouped) o->grouped = 10000;
    if (o->single < 1 || o->grouped < 1 || o->group < 1 || o->fee < 1 || o->holders < 1 || o->holders > 10000) {
        fprintf(stderr, "bench ledger: counts, fee and holders must be positive\n");
        return 2;
    }
    return 0;
}

/* PostgreSQL: the server at o->url, or a throwaway cluster started here (its directory in
 * cluster); a fresh database on it, whose connection string goes to url. */
static int pg_exec(const char *url, const char *sql, bf_err_t *err) {
    PGconn *c = PQconnectdb(url);
    PGresult *r = PQstatus(c) == CONNECTION_OK ? PQexec(c, sql) : NULL;
    int ok = r && PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok) bf_err_set(err, "%s: %s", sql, r ? PQresultErrorMessage(r) : PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
    return ok ? 0 : -1;
}

static char pg_base[1024];

static int pg_prepare(const bench_opts_t *o, char *url, size_t cap, char *cluster, size_t ccap, bf_err_t *err) {
    url[0] = 0;
    if (o->url) {
        snprintf(pg_base, sizeof pg_base, "%s", o->url);
    } else {
        char cmd[5000];
        snprintf(cluster, ccap, "%s/blockfed-bench-pg-%d", o->dir, (int)getpid());
        snprintf(cmd, sizeof cmd, "'%s' start '%s' >&2", BF_PG_CLUSTER_SCRIPT, cluster);
        if (system(cmd) != 0) return bf_err_set(err, "could not start a PostgreSQL cluster (%s)", BF_PG_CLUSTER_SCRIPT), -1;
        char f[4300];
        snprintf(f, sizeof f, "%s/url", cluster);
        FILE *in = fopen(f, "r");
        int ok = in && fgets(pg_base, sizeof pg_base, in);
        if (in) fclose(in);
        if (!ok) return bf_err_set(err, "the cluster wrote no connection string"), -1;
        pg_base[strcspn(pg_base, "\r\n")] = 0;
    }
    char sql[128];
    snprintf(sql, sizeof sql, "CREATE DATABASE blockfed_bench_%d", (int)getpid());
    if (pg_exec(pg_base, sql, err)) return -1;
    const char *q = strchr(pg_base, '?'), *slash = strrchr(pg_base, '/');
    if (!slash || (q && slash > q)) return bf_err_set(err, "--pg needs a URL with a database: postgresql://HOST:PORT/DB"), -1;
    snprintf(url, cap, "%.*s/blockfed_bench_%d%s", (int)(slash - pg_base), pg_base, (int)getpid(), q ? q : "");
    return 0;
}

static void pg_finish(const char *url, const char *cluster) {
    char sql[128];
    bf_err_t err;
    if (url[0]) {
        snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS blockfed_bench_%d WITH (FORCE)", (int)getpid());
        pg_exec(pg_base, sql, &err);
    }
    if (cluster[0]) {
        char cmd[5000];
        snprintf(cmd, sizeof cmd, "'%s' stop '%s' >&2; rmdir '%s' 2>/dev/null", BF_PG_CLUSTER_SCRIPT, cluster, cluster);
        if (system(cmd)) fprintf(stderr, "bench ledger: stopping the cluster failed\n");
    }
}

int bench_ledger_main(int argc, char **argv) {
    bench_opts_t o;
    int prc = parse_opts(argc, argv, &o);
    if (prc) return prc == 1 ? 0 : 2;
    char path[4096], cluster[4200] = "";
    bf_err_t err = {{0}};
    if (o.pg) {
        if (pg_prepare(&o, path, sizeof path, cluster, sizeof cluster, &err)) {
            fprintf(stderr, "bench ledger: %s\n", err.msg);
            pg_finish(path, cluster);
            return 1;
        }
    } else {
        snprintf(path, sizeof path, "%s/blockfed-bench-ledger-%d.db", o.dir, (int)getpid());
        remove_db(path);
    }
    bench_ctx_t c = {0};
    c.L = bf_ledger_open(path, &err);
    if (!c.L || setup(&c, &o, &err)) {
        fprintf(stderr, "bench ledger: setup: %s\n", err.msg);
        bf_ledger_close(&c.L);
        o.pg ? pg_finish(path, cluster) : remove_db(path);
        return 1;
    }
    double single = run_single(&c, o.single, o.fee, &err);
    double grouped = single < 0 ? -1 : run_grouped(&c, o.grouped, o.group, o.fee, 0, &err);
    double charged = grouped < 0 ? -1 : run_grouped(&c, o.grouped, o.group, o.fee, 1, &err);
    if (single < 0 || grouped < 0 || charged < 0) {
        fprintf(stderr, "bench ledger: %s\n", err.msg);
        bf_ledger_close(&c.L);
        o.pg ? pg_finish(path, cluster) : remove_db(path);
        return 1;
    }
    double t0 = bf_now();
    bf_ledger_report_t rep;
    int vrc = bf_ledger_verify(c.L, &rep, &err);
    double verify_s = bf_now() - t0;
    bf_ledger_close(&c.L);
    o.pg ? pg_finish(path, cluster) : remove_db(path);
    if (o.json) {
        printf("{\"bench\":\"ledger\",\"backend\":\"%s\",\"durable_commit\":\"%s\",\"holders\":%ld,"
               "\"fee_cents\":%lld,\"single_commit\":{\"settlements\":%ld,\"settlements_per_s\":%.0f,"
               "\"commits_per_settlement\":2},\"group_commit\":{\"settlements\":%ld,\"settlements_per_txn\":%ld,"
               "\"settlements_per_s\":%.0f},\"group_commit_one_op\":{\"settlements\":%ld,\"settlements_per_txn\":%ld,"
               "\"settlements_per_s\":%.0f},\"verify\":{\"transfers\":%lld,\"seconds\":%.3f,\"ok\":%s}}\n",
               o.pg ? "postgresql" : "sqlite", o.pg ? "synchronous_commit=on" : "synchronous=FULL, WAL", o.holders,
               (long long)o.fee, o.single, single, o.grouped, o.group, grouped, o.grouped, o.group, charged,
               (long long)(vrc ? 0 : rep.transfers), verify_s, !vrc && rep.ok ? "true" : "false");
    } else {
        printf("ledger settlements on %s (hold + capture + payout to %ld holders, fee %lld cents, %s)\n",
               o.pg ? "PostgreSQL" : "SQLite", o.holders, (long long)o.fee,
               o.pg ? "synchronous_commit=on" : "WAL, synchronous=FULL");
        printf("  one commit per op : %8.0f settlements/s  (%ld settlements, 2 commits each)\n", single, o.single);
        printf("  group commit      : %8.0f settlements/s  (%ld settlements, %ld per transaction)\n", grouped,
               o.grouped, o.group);
        printf("  group, 1 op each  : %8.0f settlements/s  (bf_ledger_fee_charge: hold+capture+payout as one op)\n",
               charged);
        printf("  verify            : %lld transfers replayed in %.3f s, %s\n", (long long)(vrc ? 0 : rep.transfers),
               verify_s, !vrc && rep.ok ? "all invariants hold" : "INVARIANT VIOLATED");
    }
    return 0;
}

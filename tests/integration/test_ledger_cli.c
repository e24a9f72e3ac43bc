/* test_ledger_cli.c: `blockfed-coordinator ledger ...` end to end: verify/balances/history/shares
 * in text and JSON, their exit statuses, JSON escaping of hostile names, and verify failing (exit 1)
 * once the database is tampered with. argv[1] is the coordinator binary. */
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "unit/test_ledger_common.h"

static const char *bin;
static char home[1024];

/* Runs the coordinator with args; returns its exit status and its stdout in out (caller frees). */
static int run(const char *args, char **out) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s' %s 2>/dev/null", bin, args);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t n = 0, cap = 1 << 16;
    char *buf = malloc(cap);
    size_t k;
    while ((k = fread(buf + n, 1, cap - n - 1, p)) > 0) {
        n += k;
        if (n + 1 >= cap) buf = realloc(buf, cap *= 2);
    }
    buf[n] = 0;
    int st = pclose(p);
    if (out) *out = buf;
    else free(buf);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_ledger_cli PATH-TO-blockfed-coordinator\n");
        return 2;
    }
    bin = argv[1];
    snprintf(home, sizeof home, "%s/ledger-cli-%d", bf_test_tmpdir(), (int)getpid());
    mkdir(home, 0700);
    char path[1200];
    snprintf(path, sizeof path, "%s/ledger.db", home);
    tl_remove_db(path);

    bf_err_t err;
    bf_ledger_t *L = bf_ledger_open(path, &err);
    CHECK_MSG(L != NULL, "%s", err.msg);
    if (!L) return bf_test_done("test_ledger_cli");
    int64_t alice = tl_user(L, "alice", 1), evil = tl_user(L, "ev\"il\\\n\x01", 2), bob = tl_user(L, "bob", 3);
    CHECK(bf_ledger_recharge(L, "r1", alice, 12345, &err) == 0);
    bf_ledger_task_spec_t spec = {"model", BF_LEDGER_MODE_SHAREHOLDING, 0, 50};
    int64_t t, hold, users[2] = {evil, bob}, w[2] = {1, 3};
    CHECK(bf_ledger_create_task(L, "t", alice, &spec, &t, &err) == 0);
    CHECK(bf_ledger_start_task(L, "s", t, &err) == 0);
    CHECK(bf_ledger_allocate_shares(L, "a", t, 2, users, w, "h", &err) == 0);
    CHECK(bf_ledger_set_model_online(L, "o", t, 1, &err) == 0);
    CHECK(bf_ledger_fee_charge(L, "c", t, alice, 101, &hold, &err) == 0);
    bf_ledger_close(&L);

    char args[2048], *out = NULL;
    snprintf(args, sizeof args, "ledger verify --home '%s' --json", home);
    CHECK(run(args, &out) == 0);
    CHECK_MSG(strstr(out, "\"ok\":true") && strstr(out, "\"name\":\"chain\""), "verify json: %s", out);
    free(out);
    snprintf(args, sizeof args, "ledger verify --home '%s'", home);
    CHECK(run(args, &out) == 0 && strstr(out, "verify: OK"));
    free(out);

    snprintf(args, sizeof args, "ledger balances --home '%s' --json", home);
    CHECK(run(args, &out) == 0);
    /* alice: 123.45 recharged, 1.01 paid. The hostile name is escaped, never raw. */
    CHECK_MSG(strstr(out, "\"posted_cents\":12244"), "balances: %s", out);
    CHECK_MSG(strstr(out, "\"ev\\\"il\\\\\\n\\u0001\""), "escaping: %s", out);
    CHECK(!strchr(out, '\x01'));
    free(out);
    snprintf(args, sizeof args, "ledger balances --home '%s'", home);
    CHECK(run(args, &out) == 0 && strstr(out, "122.44"));
    free(out);

    snprintf(args, sizeof args, "ledger history alice --home '%s' --json", home);
    CHECK(run(args, &out) == 0);
    CHECK_MSG(strstr(out, "\"code\":\"recharge\"") && strstr(out, "\"balance_after\":12345"), "history: %s", out);
    free(out);
    snprintf(args, sizeof args, "ledger history 1 --home '%s'", home);
    CHECK(run(args, &out) == 0 && strstr(out, "recharge"));
    free(out);
    snprintf(args, sizeof args, "ledger history nobody --home '%s'", home);
    CHECK(run(args, NULL) == 4);

    snprintf(args, sizeof args, "ledger shares %lld --home '%s' --json", (long long)t, home);
    CHECK(run(args, &out) == 0);
    CHECK_MSG(strstr(out, "\"ppm\":250000") && strstr(out, "\"ppm\":750000") && strstr(out, "\"total_revenue_cents\":101"),
              "shares: %s", out);
    free(out);
    snprintf(args, sizeof args, "ledger shares 99 --home '%s'", home);
    CHECK(run(args, NULL) == 4);

    /* Usage errors and a missing ledger. */
    CHECK(run("ledger verify", NULL) == 2);
    CHECK(run("ledger frobnicate --home /tmp", NULL) == 2);
    CHECK(run("ledger verify --home /nonexistent/dir", NULL) == 3);
    CHECK(run("ledger --help", NULL) == 0);
    CHECK(run("ledger verify --help", NULL) == 0);
    CHECK(run("--help", NULL) == 0);
    CHECK(run("nosuch", NULL) == 2);

    /* Tampering: one transfer amount changed behind the ledger's back. */
    sqlite3 *db;
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    CHECK(sqlite3_exec(db, "DROP TRIGGER transfers_no_update; UPDATE transfers SET amount = amount + 100 WHERE id = 4",
                       NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);
    snprintf(args, sizeof args, "ledger verify --home '%s' --json", home);
    CHECK(run(args, &out) == 1);
    CHECK_MSG(strstr(out, "\"ok\":false"), "tampered verify: %s", out);
    free(out);

    tl_remove_db(path);
    rmdir(home);
    return bf_test_done("test_ledger_cli");
}

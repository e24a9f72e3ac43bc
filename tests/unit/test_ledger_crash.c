/* test_ledger_crash.c: SQLite-style crash testing of the ledger. A child process runs random
 * operations and reports every committed op id (and its outcome) through a pipe; the parent
 * SIGKILLs it at a random moment. After each kill: PRAGMA integrity_check is ok and every other
 * verify invariant holds (so nothing is half-applied: a hold without its usage row, a capture
 * without its payouts, a task without its escrow...), and every reported op is in the ledger with
 * the reported outcome. Usage: test_ledger_crash [KILLS [SEED [WINDOW_MS]]] (default 200, 1234, 30). */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>

#include "test_ledger_common.h"

#define HOLDERS 5

static void setup(const char *path) {
    bf_err_t err;
    bf_ledger_t *L = bf_ledger_open(path, &err);
    CHECK_MSG(L != NULL, "%s", err.msg);
    if (!L) return;
    int64_t ids[HOLDERS + 2];
    char name[32];
    for (int i = 0; i < HOLDERS + 2; i++) {
        snprintf(name, sizeof name, "crash%d", i);
        ids[i] = tl_user(L, name, (uint64_t)i + 900);
    }
    CHECK(bf_ledger_recharge(L, "setup-r", ids[0], 1000000000, &err) == 0);
    CHECK(bf_ledger_recharge(L, "setup-r2", ids[1], 1000000000, &err) == 0);
    bf_ledger_task_spec_t spec = {"crash model", BF_LEDGER_MODE_SHAREHOLDING, 0, 10};
    int64_t t, w[HOLDERS] = {5, 3, 2, 7, 1};
    CHECK(bf_ledger_create_task(L, "setup-t", ids[0], &spec, &t, &err) == 0 && t == 1);
    CHECK(bf_ledger_start_task(L, "setup-s", t, &err) == 0);
    CHECK(bf_ledger_allocate_shares(L, "setup-a", t, HOLDERS, ids + 2, w, "h", &err) == 0);
    CHECK(bf_ledger_set_model_online(L, "setup-o", t, 1, &err) == 0);
    bf_ledger_close(&L);
}

static void report(int fd, const char *op, int rc) {
    char line[64];
    int n = snprintf(line, sizeof line, "%s %d\n", op, rc);
    if (write(fd, line, (size_t)n) != n) _exit(3);
}

/* The child: open after fork (never carry a connection across fork), then random ops forever. */
static void child(const char *path, int fd, int run, uint64_t seed) {
    bf_err_t err;
    bf_ledger_t *L = bf_ledger_open(path, &err);
    if (!L) _exit(2);
    bf_rng_t r;
    bf_rng_seed(&r, seed * 1000003u + (uint64_t)run);
    int64_t holds[64], wds[64];
    int n_holds = 0, n_wds = 0;
    char op[48];
    for (int k = 0; k < 100000; k++) {
        snprintf(op, sizeof op, "c%d-%d", run, k);
        int64_t payer = 1 + bf_rng_below(&r, 2), id = 0;
        int rc;
        switch (bf_rng_below(&r, 10)) {
        case 0: rc = bf_ledger_recharge(L, op, 1 + bf_rng_below(&r, HOLDERS + 2), 1 + bf_rng_below(&r, 1000), &err); break;
        case 1:
        case 2:
            rc = bf_ledger_fee_hold(L, op, 1, payer, 1 + bf_rng_below(&r, 500), bf_rng_below(&r, 2), &id, &err);
            if (rc == 0 && n_holds < 64) holds[n_holds++] = id;
            break;
        case 3:
        case 4:
            rc = n_holds ? bf_ledger_fee_capture(L, op, holds[bf_rng_below(&r, (uint32_t)n_holds)], bf_rng_below(&r, 100), &err)
                         : bf_ledger_fee_charge(L, op, 1, payer, 1 + bf_rng_below(&r, 100), &id, &err);
            break;
        case 5:
            if (!n_holds) continue;
            rc = bf_ledger_fee_void(L, op, holds[bf_rng_below(&r, (uint32_t)n_holds)], &err);
            break;
        case 6: {
            /* A whole reward-task life in three ops: fund, start, settle. */
            bf_ledger_task_spec_t spec = {"reward", BF_LEDGER_MODE_REWARD, 1 + bf_rng_below(&r, 10000), 0};
            int64_t users[3] = {3, 4, 5}, w[3] = {1 + bf_rng_below(&r, 9), 2, 3}, t = 0;
            rc = bf_ledger_create_task(L, op, payer, &spec, &t, &err);
            report(fd, op, rc);
            if (rc) continue;
            snprintf(op, sizeof op, "c%d-%d-start", run, k);
            rc = bf_ledger_start_task(L, op, t, &err);
            report(fd, op, rc);
            snprintf(op, sizeof op, "c%d-%d-settle", run, k);
            rc = bf_ledger_settle_reward(L, op, t, 3, users, w, "crash", &err);
            break;
        }
        case 7:
            rc = bf_ledger_withdraw(L, op, payer, 1 + bf_rng_below(&r, 2000), &id, &err);
            if (rc == 0 && n_wds < 64) wds[n_wds++] = id;
            break;
        case 8: {
            if (!n_wds) continue;
            /* The ref is this op's name; the payout's op id is derived from it ("wpay:REF"), and a
             * rejection's from a hash of its reason, so only payouts are reported for lookup. */
            int64_t w = wds[bf_rng_below(&r, (uint32_t)n_wds)];
            if (bf_rng_below(&r, 3) == 0) {
                rc = bf_ledger_withdraw_reject(L, w, op, &err);
                if (rc == BF_LEDGER_EINTERNAL || rc == BF_LEDGER_EBUSY) _exit(5);
                continue;
            }
            rc = bf_ledger_withdraw_payout(L, w, op, &err);
            char key[64];
            snprintf(key, sizeof key, "wpay:%s", op);
            if (rc == BF_LEDGER_EINTERNAL || rc == BF_LEDGER_EBUSY) _exit(5);
            report(fd, key, rc);
            continue;
        }
        default: {
            int64_t n = 0;
            if (bf_ledger_sweep_expired(L, &n, &err)) _exit(4);
            continue;
        }
        }
        if (rc == BF_LEDGER_EINTERNAL || rc == BF_LEDGER_EBUSY) _exit(5);
        report(fd, op, rc);
    }
    bf_ledger_close(&L);
    _exit(0);
}

static char *read_all(int fd) {
    size_t n = 0, cap = 4096;
    char *buf = malloc(cap);
    for (;;) {
        if (n + 1024 > cap) buf = realloc(buf, cap *= 2);
        ssize_t k = read(fd, buf + n, cap - n - 1);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) break;
        n += (size_t)k;
    }
    buf[n] = 0;
    return buf;
}

/* Every committed op the child reported is in the ledger with the same outcome. */
static long check_reported(bf_ledger_t *L, char *lines) {
    long n = 0;
    for (char *line = strtok(lines, "\n"); line; line = strtok(NULL, "\n")) {
        char op[48];
        int rc = 0, found = 0, got = 0;
        if (sscanf(line, "%47s %d", op, &rc) != 2) continue; /* a line cut by the kill */
        bf_err_t err;
        CHECK(bf_ledger_op_lookup(L, op, &found, &got, NULL, &err) == 0);
        CHECK_MSG(found && got == rc, "reported op %s (rc %d) missing or different after the kill", op, rc);
        n++;
    }
    return n;
}

int main(int argc, char **argv) {
    int kills = argc > 1 ? atoi(argv[1]) : 200;
    uint64_t seed = argc > 2 ? strtoull(argv[2], NULL, 10) : 1234;
    /* the kill lands 0..WINDOW ms after the fork; a database server needs longer than a file to
     * open a connection, so its run passes a wider window */
    long window_ms = argc > 3 ? atol(argv[3]) : 30;
    char path[1024];
    tl_db_path(path, sizeof path, "ledger-crash");
    setup(path);
    bf_rng_t r;
    bf_rng_seed(&r, seed);
    long reported = 0, killed_midway = 0;
    for (int run = 0; run < kills && bf_test_failures == 0; run++) {
        int fds[2];
        if (pipe(fds)) return 1;
        pid_t pid = fork();
        if (pid == 0) {
            close(fds[0]);
            child(path, fds[1], run, seed);
        }
        close(fds[1]);
        /* 0..30 ms: some kills land while opening, most mid-operation or mid-commit. */
        long us = (long)bf_rng_below(&r, (uint32_t)(window_ms * 1000));
        struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int status = 0;
        waitpid(pid, &status, 0);
        CHECK_MSG(WIFSIGNALED(status) || WEXITSTATUS(status) == 0, "child exited with %d", WEXITSTATUS(status));
        killed_midway += WIFSIGNALED(status);
        char *lines = read_all(fds[0]);
        close(fds[0]);
        bf_err_t err;
        bf_ledger_t *L = bf_ledger_open(path, &err);
        CHECK_MSG(L != NULL, "reopen after kill %d: %s", run, err.msg);
        if (L) {
            tl_verify_ok(L, "after kill");
            reported += check_reported(L, lines);
        }
        bf_ledger_close(&L);
        free(lines);
    }
    printf("crash: %d kills (%ld mid-run), %ld committed ops reported and found\n", kills, killed_midway, reported);
    CHECK(reported > kills / 4); /* the children did get work done between kills */
    tl_remove_db(path);
    return bf_test_done("test_ledger_crash");
}

/* test_ledger_concurrency.c: two processes hammer one ledger file with holds, captures, voids,
 * one-shot charges and expiry sweeps on the same payers and the same model. Writers serialise on
 * SQLite's write lock (BEGIN IMMEDIATE + busy timeout); afterwards every verify invariant holds,
 * no op failed for lack of the lock, and the money adds up: each payer lost exactly what the two
 * processes captured from it, and the model's revenue is everything both captured.
 * Usage: test_ledger_concurrency [OPS_PER_PROCESS] (default 1000). */
#include <stdlib.h>
#include <sys/wait.h>

#include "test_ledger_common.h"

#define PAYERS 2
#define START_CASH 100000

typedef struct {
    int64_t captured[PAYERS + 1]; /* by payer id */
    long ok, busy, other_errors;
} tally_t;

static void worker(const char *path, int id, long ops, int fd) {
    bf_err_t err;
    bf_ledger_t *L = bf_ledger_open(path, &err);
    if (!L) _exit(2);
    bf_rng_t r;
    bf_rng_seed(&r, 4242u + (uint64_t)id);
    tally_t t = {{0}, 0, 0, 0};
    int64_t holds[32], held_by[32];
    int n = 0;
    char op[48];
    for (long k = 0; k < ops; k++) {
        snprintf(op, sizeof op, "w%d-%ld", id, k);
        int64_t payer = 1 + bf_rng_below(&r, PAYERS), hid = 0, amount = 1 + bf_rng_below(&r, 50);
        int rc = 0;
        switch (bf_rng_below(&r, 6)) {
        case 0:
        case 1:
            rc = bf_ledger_fee_hold(L, op, 1, payer, amount, bf_rng_below(&r, 3) == 0, &hid, &err);
            if (rc == 0 && n < 32) {
                holds[n] = hid;
                held_by[n++] = payer;
            }
            break;
        case 2:
        case 3:
            if (n == 0) continue;
            {
                int i = (int)bf_rng_below(&r, (uint32_t)n);
                rc = bf_ledger_fee_capture(L, op, holds[i], amount, &err);
                if (rc == 0) t.captured[held_by[i]] += amount;
                /* Resolved (or not capturable): forget it either way. */
                holds[i] = holds[--n];
                held_by[i] = held_by[n];
            }
            break;
        case 4:
            rc = bf_ledger_fee_charge(L, op, 1, payer, amount, &hid, &err);
            if (rc == 0) t.captured[payer] += amount;
            break;
        default: {
            int64_t swept;
            rc = bf_ledger_sweep_expired(L, &swept, &err);
            break;
        }
        }
        if (rc == 0) t.ok++;
        else if (rc == BF_LEDGER_EBUSY) t.busy++;
        else if (rc != BF_LEDGER_EEXPIRED && rc != BF_LEDGER_EFUNDS && rc != BF_LEDGER_EEXCEEDS_HOLD) t.other_errors++;
    }
    bf_ledger_close(&L);
    if (write(fd, &t, sizeof t) != (ssize_t)sizeof t) _exit(3);
    _exit(0);
}

int main(int argc, char **argv) {
    long ops = argc > 1 ? atol(argv[1]) : 1000;
    char path[1024];
    tl_db_path(path, sizeof path, "ledger-concurrency");
    bf_err_t err;
    bf_ledger_t *L = bf_ledger_open(path, &err);
    CHECK_MSG(L != NULL, "%s", err.msg);
    if (!L) return bf_test_done("test_ledger_concurrency");
    int64_t ids[PAYERS + 3];
    char name[32];
    for (int i = 0; i < PAYERS + 3; i++) {
        snprintf(name, sizeof name, "conc%d", i);
        ids[i] = tl_user(L, name, (uint64_t)i + 500);
    }
    for (int i = 0; i < PAYERS; i++) {
        char op[32];
        snprintf(op, sizeof op, "fund%d", i);
        CHECK(bf_ledger_recharge(L, op, ids[i], START_CASH, &err) == 0);
    }
    bf_ledger_task_spec_t spec = {"shared model", BF_LEDGER_MODE_SHAREHOLDING, 0, 10};
    int64_t t, w[3] = {1, 2, 4};
    CHECK(bf_ledger_create_task(L, "ct", ids[0], &spec, &t, &err) == 0 && t == 1);
    CHECK(bf_ledger_start_task(L, "st", t, &err) == 0);
    CHECK(bf_ledger_allocate_shares(L, "al", t, 3, ids + PAYERS, w, "h", &err) == 0);
    CHECK(bf_ledger_set_model_online(L, "on", t, 1, &err) == 0);
    bf_ledger_close(&L); /* never fork with an open connection */

    int fds[2][2];
    pid_t pid[2];
    for (int i = 0; i < 2; i++) {
        if (pipe(fds[i])) return 1;
        pid[i] = fork();
        if (pid[i] == 0) {
            close(fds[i][0]);
            worker(path, i, ops, fds[i][1]);
        }
        close(fds[i][1]);
    }
    tally_t sum = {{0}, 0, 0, 0};
    for (int i = 0; i < 2; i++) {
        tally_t t1;
        CHECK(read(fds[i][0], &t1, sizeof t1) == (ssize_t)sizeof t1);
        close(fds[i][0]);
        int status;
        waitpid(pid[i], &status, 0);
        CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "worker %d failed", i);
        for (int p = 0; p <= PAYERS; p++) sum.captured[p] += t1.captured[p];
        sum.ok += t1.ok;
        sum.busy += t1.busy;
        sum.other_errors += t1.other_errors;
    }
    CHECK_MSG(sum.busy == 0 && sum.other_errors == 0, "%ld busy, %ld unexpected errors", sum.busy, sum.other_errors);
    CHECK(sum.ok > ops / 2);

    L = bf_ledger_open(path, &err);
    CHECK(L != NULL);
    if (L) {
        int64_t n = 0;
        CHECK(bf_ledger_sweep_expired(L, &n, &err) == 0);
        tl_verify_ok(L, "after concurrent writers");
        int64_t total = 0;
        for (int p = 1; p <= PAYERS; p++) {
            bf_ledger_balance_t b;
            CHECK(bf_ledger_balance(L, p, BF_LEDGER_CNY, &b, &err) == 0);
            CHECK_MSG(b.posted == START_CASH - sum.captured[p], "payer %d: %lld, expected %lld", p, (long long)b.posted,
                      (long long)(START_CASH - sum.captured[p]));
            total += sum.captured[p];
        }
        bf_ledger_task_t info;
        CHECK(bf_ledger_task_get(L, 1, &info, &err) == 0 && info.total_revenue == total);
        printf("concurrency: 2 x %ld ops, %ld succeeded, %lld cents captured\n", ops, sum.ok, (long long)total);
    }
    bf_ledger_close(&L);
    tl_remove_db(path);
    return bf_test_done("test_ledger_concurrency");
}

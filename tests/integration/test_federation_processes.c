/* test_federation_processes.c: the federation as it runs for real: a coordinator process and
 * three `blockfed-client join` processes on loopback with CURVE.
 *  - round 1 (0-based 0): everyone; the checkpoint equals the sample-weighted mean of the three
 *    updates the clients saved (--save-updates);
 *  - carol's process is SIGKILLed mid-round: the round closes without her (liveness 8 s; the clients heartbeat every 5 s) and its
 *    checkpoint is the mean of alice's and bob's updates;
 *  - the coordinator is SIGKILLed mid-round and restarted on the same home: the two remaining
 *    clients reconnect by themselves and the task finishes (both exit 0 with the result hash);
 *  - the ledger verifies. usage: test_federation_processes COORDINATOR CLIENT */
#include "fed_common.h"
#include "bf_models.h"

#define EP "tcp://127.0.0.1:27714"

static bf_net_t *load(const char *path) {
    bf_err_t err;
    bf_model_meta_t meta;
    bf_net_t *n = bf_model_load(path, 1, 1, &meta, &err);
    if (!n) fprintf(stderr, "%s\n", err.msg);
    return n;
}

/* checkpoint == mean of the given clients' saved updates for that round (equal data: 300 each) */
static void check_mean(const fed_cli_t *fx, const char *ckpt, const char *const *users, int k, int round) {
    bf_net_t *g = load(ckpt), *u[3] = {0};
    char path[800];
    for (int i = 0; i < k; i++) {
        snprintf(path, sizeof path, "%s/%s-updates/round-%d.bfm", fx->dir, users[i], round);
        u[i] = load(path);
    }
    CHECK(g && u[0] && u[k - 1]);
    if (!g || !u[0] || !u[k - 1]) return;
    double worst = 0;
    for (size_t j = 0; j < bf_net_num_params(g); j++) {
        double s = 0;
        for (int i = 0; i < k; i++) s += bf_net_params(u[i])[j];
        worst = fmax(worst, fabs(s / k - bf_net_params(g)[j]));
    }
    for (size_t j = 0; j < bf_net_num_buffers(g); j++) {
        double s = 0;
        for (int i = 0; i < k; i++) s += bf_net_buffers(u[i])[j];
        worst = fmax(worst, fabs(s / k - bf_net_buffers(g)[j]));
    }
    printf("round %d: checkpoint vs mean of %d clients' updates: max |diff| %.3g\n", round, k, worst);
    CHECK(worst < 1e-5);
    bf_net_destroy(&g);
    for (int i = 0; i < k; i++) bf_net_destroy(&u[i]);
}

int main(int argc, char **argv) {
    if (argc < 3) return fprintf(stderr, "usage: test_federation_processes COORDINATOR CLIENT\n"), 2;
    fed_cli_t fx;
    char log[800];
    CHECK(fed_cli_prepare(&fx, argv[1], argv[2], "fedp", EP, 16, 1100, 200, 7) == 0);
    const char *extra[] = {"--block-size", "100", "--blocks-per-join", "3", "--liveness", "8", NULL};
    pid_t cp = fed_cli_start(&fx, extra);

    const char *users[3] = {"alice", "bob", "carol"};
    for (int i = 0; i < 3; i++) {
        const char *r[] = {"register", users[i], "--coordinator", EP, "--server-key", fx.key, NULL};
        CHECK(fed_cli_user(&fx, users[i], r) == 0);
    }
    const char *rc[] = {"recharge", "10.00", NULL};
    CHECK(fed_cli_user(&fx, "alice", rc) == 0);
    const char *tc[] = {"task", "create", "--id", "t", "--name", "processes", "--model", "cnn", "--dataset", "tiny",
                        "--rounds", "4", "--mode", "reward", "--pool", "6.00", "--min-clients", "2", "--local-epochs",
                        "1", "--batch", "32", "--lr", "0.05", "--round-timeout", "120", NULL};
    CHECK(fed_cli_user(&fx, "alice", tc) == 0);
    pid_t jp[3];
    for (int i = 0; i < 3; i++) jp[i] = fed_cli_join_bg(&fx, users[i], "t");
    char ck[900], f[900];
    snprintf(ck, sizeof ck, "%s/checkpoints/t/round-0000.bfm", fx.home);
    CHECK_MSG(bf_wait_file(ck, 60) == 0, "round 0 never closed");
    zclock_sleep(300); /* the worker writes the file, then the coordinator records it */
    check_mean(&fx, ck, users, 3, 0);

    /* carol dies as soon as she has the next round */
    snprintf(f, sizeof f, "%s/carol-updates/round-0.bfm", fx.dir);
    CHECK(bf_wait_file(f, 30) == 0);
    zclock_sleep(200);
    kill(jp[2], SIGKILL);
    waitpid(jp[2], NULL, 0);
    snprintf(ck, sizeof ck, "%s/checkpoints/t/round-0001.bfm", fx.home);
    CHECK_MSG(bf_wait_file(ck, 60) == 0, "round 1 never closed after carol died");
    zclock_sleep(300);
    snprintf(f, sizeof f, "%s/carol-updates/round-1.bfm", fx.dir);
    struct stat st;
    if (stat(f, &st) == 0) { /* she had already sent round 1 before dying: then all three count */
        check_mean(&fx, ck, users, 3, 1);
        printf("carol sent her round-1 update before she was killed\n");
    } else {
        check_mean(&fx, ck, users, 2, 1);
    }

    /* the coordinator dies during round 2 and comes back */
    snprintf(f, sizeof f, "%s/alice-updates/round-2.bfm", fx.dir);
    CHECK(bf_wait_file(f, 60) == 0);
    fed_stop(cp, SIGKILL);
    zclock_sleep(500);
    cp = fed_cli_start(&fx, extra);
    for (int i = 0; i < 2; i++) {
        int status = -1;
        double t0 = bf_now();
        while (bf_now() - t0 < 120 && waitpid(jp[i], &status, WNOHANG) == 0) zclock_sleep(100);
        CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s's join did not finish cleanly", users[i]);
        snprintf(log, sizeof log, "%s/%s.join", fx.dir, users[i]);
        CHECK_MSG(strstr(bf_slurp(log), "result hash") != NULL, "%s: %s", users[i], bf_slurp(log));
    }
    fed_cli_finish(&fx, cp);
    return bf_test_done("test_federation_processes");
}

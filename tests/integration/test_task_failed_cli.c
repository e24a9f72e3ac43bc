/* test_task_failed_cli.c: `blockfed-client join` processes of a task that fails. A coordinator
 * process and three join processes on loopback with CURVE, min_clients 3, round timeout 3 s;
 * carol's process is SIGKILLed once round 1 is done. Round 2 cannot close, the task fails, and the
 * two waiting joins exit 1 with a message saying the task failed and why (not 0, not forever).
 * A fourth user's join, with no block left and no data of its own, exits 1 at once, saying so.
 * usage: test_task_failed_cli COORDINATOR CLIENT */
#include "fed_common.h"

#define EP "tcp://127.0.0.1:27768"

int main(int argc, char **argv) {
    if (argc < 3) return fprintf(stderr, "usage: test_task_failed_cli COORDINATOR CLIENT\n"), 2;
    zsys_init();
    zsys_set_logstream(NULL);
    fed_cli_t fx;
    char log[800];
    CHECK(fed_cli_prepare(&fx, argv[1], argv[2], "tfailcli", EP, 16, 1100, 100, 17) == 0);
    const char *extra[] = {"--block-size", "100", "--blocks-per-join", "3", "--liveness", "2", NULL};
    pid_t cp = fed_cli_start(&fx, extra);

    const char *users[4] = {"alice", "bob", "carol", "dave"};
    for (int i = 0; i < 4; i++) {
        const char *r[] = {"register", users[i], "--coordinator", EP, "--server-key", fx.key, NULL};
        CHECK(fed_cli_user(&fx, users[i], r) == 0);
    }
    const char *tc[] = {"task", "create", "--id", "t", "--name", "fails", "--model", "cnn", "--dataset", "tiny",
                        "--rounds", "3", "--mode", "shareholding", "--min-clients", "3", "--local-epochs", "1",
                        "--batch", "32", "--lr", "0.05", "--round-timeout", "3", NULL};
    CHECK(fed_cli_user(&fx, "alice", tc) == 0);
    pid_t jp[3];
    for (int i = 0; i < 3; i++) jp[i] = fed_cli_join_bg(&fx, users[i], "t");
    char ck[900];
    snprintf(ck, sizeof ck, "%s/checkpoints/t/round-0000.bfm", fx.home);
    CHECK_MSG(bf_wait_file(ck, 60) == 0, "round 1 never closed");
    kill(jp[2], SIGKILL);
    waitpid(jp[2], NULL, 0);

    /* the nine blocks are taken: a data-less join is refused */
    char h[700], jl[700];
    snprintf(h, sizeof h, "%s/dave", fx.dir);
    snprintf(jl, sizeof jl, "%s/dave.join", fx.dir);
    const char *ja[] = {"--home", h, "join", "t", "--quiet", NULL};
    int rc = bf_spawn_wait(bf_spawn_bg(fx.client, ja, jl), 60);
    CHECK_MSG(rc == 1 && strstr(bf_slurp(jl), "no free data block"), "dave's join: exit %d: %s", rc, bf_slurp(jl));

    for (int i = 0; i < 2; i++) {
        rc = bf_spawn_wait(jp[i], 90);
        snprintf(log, sizeof log, "%s/%s.join", fx.dir, users[i]);
        CHECK_MSG(rc == 1 && strstr(bf_slurp(log), "task t failed: round"), "%s's join: exit %d: %s", users[i], rc,
                  bf_slurp(log));
    }
    fed_cli_finish(&fx, cp);
    return bf_test_done("test_task_failed_cli");
}

/* test_task_failed_cli.c: `blockfed-client join` processes of a task that fails. A coordinator
 * process and three join processes on loopback with CURVE, min_clients 3, round timeout 3 s;
 * carol's process is SIGKILLed once round 1 is done. Round 2 cannot close, the task fails, and the
 * two waiting joins exit 1 with a message saying the task failed and why (not 0, not forever).
 * A fourth user's join, with no block left and no data of its own, exits 1 at once, saying so.
 * usage: test_task_failed_cli COORDINATOR CLIENT */
#include "fed_common.h"

#define EP "tcp://127.0.0.1:27768"

static const char *coord, *client;
static char tmp[600];

static int cli(const char *user, const char *const *rest) { return bf_spawn_user(client, tmp, user, rest); }

int main(int argc, char **argv) {
    if (argc < 3) return fprintf(stderr, "usage: test_task_failed_cli COORDINATOR CLIENT\n"), 2;
    coord = argv[1], client = argv[2];
    zsys_init();
    zsys_set_logstream(NULL);
    snprintf(tmp, sizeof tmp, "%s/tfailcli", bf_test_tmpdir());
    char cmd[1400], data[700], home[700], spec[800], key[41], log[800];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s/data'", tmp, tmp);
    CHECK(system(cmd) == 0);
    snprintf(data, sizeof data, "%s/data", tmp);
    fed_write_split(data, "train", 1100, 17);
    fed_write_split(data, "t10k", 100, 18);
    snprintf(home, sizeof home, "%s/coordinator", tmp);
    CHECK(fed_init_home(coord, home, key) == 0);
    snprintf(spec, sizeof spec, "tiny=%s", data);
    const char *extra[] = {"--block-size", "100", "--blocks-per-join", "3", "--liveness", "2", NULL};
    pid_t cp = fed_start(coord, home, EP, spec, extra);

    const char *users[4] = {"alice", "bob", "carol", "dave"};
    for (int i = 0; i < 4; i++) {
        const char *r[] = {"register", users[i], "--coordinator", EP, "--server-key", key, NULL};
        CHECK(cli(users[i], r) == 0);
    }
    const char *tc[] = {"task", "create", "--id", "t", "--name", "fails", "--model", "cnn", "--dataset", "tiny",
                        "--rounds", "3", "--mode", "shareholding", "--min-clients", "3", "--local-epochs", "1",
                        "--batch", "32", "--lr", "0.05", "--round-timeout", "3", NULL};
    CHECK(cli("alice", tc) == 0);
    pid_t jp[3];
    for (int i = 0; i < 3; i++) {
        char h[700], upd[700], jl[700];
        snprintf(h, sizeof h, "%s/%s", tmp, users[i]);
        snprintf(upd, sizeof upd, "%s/%s-updates", tmp, users[i]);
        snprintf(jl, sizeof jl, "%s/%s.join", tmp, users[i]);
        mkdir(upd, 0755);
        const char *ja[] = {"--home", h, "join", "t", "--threads", "1", "--quiet", "--save-updates", upd, NULL};
        jp[i] = bf_spawn_bg(client, ja, jl);
    }
    char ck[900];
    snprintf(ck, sizeof ck, "%s/checkpoints/t/round-0000.bfm", home);
    CHECK_MSG(bf_wait_file(ck, 60) == 0, "round 1 never closed");
    kill(jp[2], SIGKILL);
    waitpid(jp[2], NULL, 0);

    /* the nine blocks are taken: a data-less join is refused */
    char h[700], jl[700];
    snprintf(h, sizeof h, "%s/dave", tmp);
    snprintf(jl, sizeof jl, "%s/dave.join", tmp);
    const char *ja[] = {"--home", h, "join", "t", "--quiet", NULL};
    int rc = bf_spawn_wait(bf_spawn_bg(client, ja, jl), 60);
    CHECK_MSG(rc == 1 && strstr(bf_slurp(jl), "no free data block"), "dave's join: exit %d: %s", rc, bf_slurp(jl));

    for (int i = 0; i < 2; i++) {
        rc = bf_spawn_wait(jp[i], 90);
        snprintf(log, sizeof log, "%s/%s.join", tmp, users[i]);
        CHECK_MSG(rc == 1 && strstr(bf_slurp(log), "task t failed: round"), "%s's join: exit %d: %s", users[i], rc,
                  bf_slurp(log));
    }
    fed_stop(cp, SIGTERM);
    char out[900];
    snprintf(out, sizeof out, "%s/verify.out", tmp);
    const char *va[] = {"ledger", "verify", "--home", home, NULL};
    CHECK(bf_spawn(coord, va, out, 1) == 0);
    if (bf_test_failures) {
        snprintf(log, sizeof log, "%s.log", home);
        fprintf(stderr, "--- coordinator ---\n%s\n", bf_slurp(log));
    }
    return bf_test_done("test_task_failed_cli");
}

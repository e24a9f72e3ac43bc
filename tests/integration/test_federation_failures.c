/* test_federation_failures.c: failures during training, with a real coordinator process:
 *  - a participant that vanishes mid-round (fetched the round, then silence) does not stop it:
 *    the round closes once its liveness window (5 s) passes, and the checkpoint is the weighted mean of
 *    the two updates that arrived; its late update is refused as STALE; it returns next round;
 *  - the coordinator SIGKILLed in the middle of a round and restarted on the same home resumes the
 *    task from its last completed round (checkpoint verified) and finishes it; the participants'
 *    sockets reconnect by themselves; the ledger verifies afterwards (nothing lost, nothing twice);
 *  - the model is a ResNet8: every checkpoint's BatchNorm statistics are re-estimated on the
 *    coordinator's training images (its default --bn-recalibrate), restarted coordinator included.
 * usage: test_federation_failures COORDINATOR_BINARY */
#include "fed_participant.h"

#define ENDPOINT "tcp://127.0.0.1:27712"

static const char *server_key_g;

/* The participants train one after another in this process, so the ones waiting their turn say
 * they are alive first (a real client heartbeats while it trains): on a loaded machine the others'
 * training can outlast the 5 s liveness window, and the round would rightly close without them. */
static void train_all(part_t *p, int n, const char *task, int round) {
    for (int i = 0; i < n; i++) {
        for (int j = i; j < n; j++) {
            bf_msg_t *pong = call(&p[j].c, fed_req(&p[j].c, "PING"));
            CHECK(fed_is(pong, "PONG"));
            bf_msg_destroy(&pong);
        }
        train_round(&p[i], task, round);
    }
}

static bf_msg_t *round_get(part_t *p, const char *task) {
    bf_msg_t *r = fed_req(&p->c, "ROUND_GET");
    bf_msg_set_str(r, "task", task);
    return call(&p->c, r);
}

/* A participant whose process died: its socket closes without a word. */
static void vanish(part_t *p) { zsock_destroy(&p->c.sock); }

static void come_back(part_t *p) {
    p->c.sock = zsock_new(ZMQ_DEALER);
    zcert_apply(p->c.cert, p->c.sock);
    zsock_set_curve_serverkey(p->c.sock, server_key_g);
    zsock_set_rcvtimeo(p->c.sock, 20000);
    zsock_connect(p->c.sock, "%s", ENDPOINT);
}

int main(int argc, char **argv) {
    if (argc < 2) return fprintf(stderr, "usage: test_federation_failures COORDINATOR\n"), 2;
    zsys_init();
    zsys_set_logstream(NULL);
    char home[600], spec[700], key[41];
    CHECK(fed_prepare(argv[1], "fedf", 1100, 200, 3, home, sizeof home, spec, sizeof spec, key) == 0);
    server_key_g = key;
    const char *extra[] = {"--block-size", "100", "--blocks-per-join", "3", "--liveness", "5", NULL};
    pid_t coord = fed_start(argv[1], home, ENDPOINT, spec, extra);

    part_t p[3];
    const char *names[3] = {"alice", "bob", "carol"};
    for (int i = 0; i < 3; i++) {
        memset(&p[i], 0, sizeof p[i]);
        fed_client_open(&p[i].c, ENDPOINT, key);
        reg(&p[i].c, names[i]);
    }
    bf_msg_t *r = fed_req(&p[0].c, "TASK_CREATE");
    bf_msg_set_str(r, "task", "t2"), bf_msg_set_str(r, "name", "failures"), bf_msg_set_str(r, "model", "resnet8");
    bf_msg_set_str(r, "dataset", "tiny"), bf_msg_set_uint(r, "rounds", 3), bf_msg_set_str(r, "mode", "shareholding");
    bf_msg_set_str(r, "fee", "0.10"), bf_msg_set_uint(r, "min_clients", 2), bf_msg_set_uint(r, "local_epochs", 1);
    bf_msg_set_uint(r, "batch", 32), bf_msg_set_double(r, "lr", 0.05), bf_msg_set_uint(r, "round_timeout", 60);
    bf_msg_set_str(r, "partition", "dirichlet:0.5"), bf_msg_set_str(r, "strategy", "fedavg");
    bf_msg_t *rep = call(&p[0].c, r);
    expect_ok(rep, "task create");
    bf_msg_destroy(&rep);
    for (int i = 0; i < 3; i++) join_and_fetch(&p[i], "t2");
    const fed_recal_t rc = {spec + strlen("tiny="), "dirichlet:0.5", 100, FED_BN_RECALIBRATE_IMAGES, 1};

    /* round 0: everyone */
    train_all(p, 3, "t2", 0);
    const int all[3] = {0, 1, 2}, two[2] = {0, 1};
    check_fedavg_subset(home, "t2", p, all, 3, 0, &rc);
    /* round 0 started from the seeded model with its statistics re-estimated too, so a coalition
     * that returns it unchanged is worth nothing (not what re-estimation alone gains) */
    bf_err_t err;
    bf_net_t *start = bf_net_new("resnet8", 1, 16, 16, 10, 256, 1, &err);
    memcpy(bf_net_params(start), p[0].global, sizeof(float) * p[0].np);
    fed_recalibrate(start, &rc);
    double sd = 0;
    for (size_t j = 0; j < p[0].nb; j++) sd = fmax(sd, fabs(bf_net_buffers(start)[j] - p[0].global_b[j]));
    printf("round 0's starting statistics vs re-estimated: max |diff| %.3g\n", sd);
    CHECK(sd < 1e-5);
    bf_net_destroy(&start);

    /* round 1: carol takes the round and dies; the two others finish it without her */
    bf_msg_t *got = NULL;
    for (int tries = 0; tries < 100 && !fed_is(got, "ROUND"); tries++) {
        bf_msg_destroy(&got);
        got = round_get(&p[2], "t2");
        if (!fed_is(got, "ROUND")) zclock_sleep(100);
    }
    CHECK(fed_is(got, "ROUND") && bf_msg_uint(got, "round", 9) == 1);
    bf_msg_destroy(&got);
    vanish(&p[2]);
    double t0 = bf_now();
    train_all(p, 2, "t2", 1);
    check_fedavg_subset(home, "t2", p, two, 2, 1, &rc);
    printf("round 1 closed %.1f s after carol vanished (liveness window 5 s)\n", bf_now() - t0);

    /* carol returns: her update for the closed round is stale, the next round is hers again */
    come_back(&p[2]);
    bf_msg_t *u = fed_req(&p[2].c, "UPDATE");
    bf_msg_set_str(u, "task", "t2"), bf_msg_set_uint(u, "round", 1), bf_msg_set_uint(u, "samples", 300);
    bf_msg_set_double(u, "loss", 1.0);
    bf_msg_add_f32(u, p[2].params, p[2].np), bf_msg_add_f32(u, p[2].buffers, p[2].nb);
    rep = call(&p[2].c, u);
    CHECK_MSG(!strcmp(fed_code(rep), "STALE"), "late update: %s", rep ? bf_msg_type(rep) : "timeout");
    bf_msg_destroy(&rep);

    /* round 2: alice reports, then the coordinator is killed mid-round and restarted */
    train_round(&p[0], "t2", 2);
    fed_stop(coord, SIGKILL);
    coord = fed_start(argv[1], home, ENDPOINT, spec, extra);
    for (int i = 0; i < 3; i++) { /* everyone is back (real clients also heartbeat while training) */
        bf_msg_t *pong = call(&p[i].c, fed_req(&p[i].c, "PING"));
        CHECK(fed_is(pong, "PONG"));
        bf_msg_destroy(&pong);
    }
    train_all(p, 3, "t2", 2); /* the open round starts over */
    check_fedavg_subset(home, "t2", p, all, 3, 2, &rc);
    bf_msg_t *done = NULL;
    for (int tries = 0; tries < 100 && !fed_is(done, "DONE"); tries++) {
        bf_msg_destroy(&done);
        done = round_get(&p[1], "t2");
        if (!fed_is(done, "DONE")) zclock_sleep(100);
    }
    CHECK(fed_is(done, "DONE") && bf_msg_has(done, "result_hash"));
    bf_msg_destroy(&done);
    fed_stop(coord, SIGTERM);

    char out[700];
    snprintf(out, sizeof out, "%s.verify", home);
    const char *vargs[] = {"ledger", "verify", "--home", home, NULL};
    int vrc = bf_spawn(argv[1], vargs, out, 1);
    CHECK_MSG(vrc == 0, "ledger verify exit %d:\n%s", vrc, bf_slurp(out));
    for (int i = 0; i < 3; i++) {
        fed_client_close(&p[i].c);
        bf_dataset_free(&p[i].data);
        free(p[i].params), free(p[i].buffers), free(p[i].global), free(p[i].global_b);
    }
    if (bf_test_failures) {
        snprintf(out, sizeof out, "%s.log", home);
        fprintf(stderr, "--- coordinator log ---\n%s\n", bf_slurp(out));
    }
    return bf_test_done("test_federation_failures");
}

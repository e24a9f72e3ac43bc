/* test_fedavgm_resume.c: a strategy with server state survives a coordinator crash. With
 * fedavgm:BETA the coordinator keeps a momentum v: v_r = BETA v_{r-1} + (g_r - avg_r) and
 * g_{r+1} = g_r - v_r, where g_r is the global model sent for round r and avg_r the mean of the
 * updates. The test checks that recurrence on every round from the checkpoints and the updates,
 * across a SIGKILL + restart between rounds 1 and 2 (the momentum is restored from beside the
 * checkpoint, not restarted from zero). usage: test_fedavgm_resume COORDINATOR */
#include "fed_participant.h"

#define ENDPOINT "tcp://127.0.0.1:27715"
#define BETA 0.5

static const char *server_key_g;

static float *load_params(const char *home, int round, size_t n) {
    char path[800];
    snprintf(path, sizeof path, "%s/checkpoints/m/round-%04d.bfm", home, round);
    bf_err_t err;
    bf_model_meta_t meta;
    bf_net_t *g = NULL;
    for (int i = 0; i < 100 && !g; i++)
        if (!(g = bf_model_load(path, 1, 1, &meta, &err))) zclock_sleep(100);
    if (!g) return NULL;
    float *v = malloc(sizeof(float) * n);
    memcpy(v, bf_net_params(g), sizeof(float) * n);
    bf_net_destroy(&g);
    return v;
}

/* Until TASK_STATUS counts `rounds` rounds done: the checkpoint is written before the round is
 * stored, so a crash right after the file appears could still reopen the round. */
static void wait_rounds(fed_client_t *c, int rounds) {
    for (int i = 0; i < 600; i++) {
        bf_msg_t *r = fed_req(c, "TASK_STATUS");
        bf_msg_set_str(r, "task", "m");
        bf_msg_t *st = call(c, r);
        const msgpack_object *n = st ? bf_mp_get(bf_msg_any(st, "status"), "round") : NULL;
        int done = n && n->type == MSGPACK_OBJECT_POSITIVE_INTEGER && (int)n->via.u64 >= rounds;
        bf_msg_destroy(&st);
        if (done) return;
        zclock_sleep(50);
    }
    CHECK_MSG(0, "round %d was never stored", rounds);
}

int main(int argc, char **argv) {
    if (argc < 2) return fprintf(stderr, "usage: test_fedavgm_resume COORDINATOR\n"), 2;
    zsys_init();
    zsys_set_logstream(NULL);
    char home[600], spec[700], key[41];
    CHECK(fed_prepare(argv[1], "fedm", 800, 100, 9, home, sizeof home, spec, sizeof spec, key) == 0);
    server_key_g = key;
    const char *extra[] = {"--block-size", "100", "--blocks-per-join", "3", "--liveness", "10", NULL};
    pid_t coord = fed_start(argv[1], home, ENDPOINT, spec, extra);
    part_t p[2];
    for (int i = 0; i < 2; i++) {
        memset(&p[i], 0, sizeof p[i]);
        fed_client_open(&p[i].c, ENDPOINT, key);
        reg(&p[i].c, i ? "bob" : "alice");
    }
    bf_msg_t *r = fed_req(&p[0].c, "TASK_CREATE");
    bf_msg_set_str(r, "task", "m"), bf_msg_set_str(r, "name", "momentum"), bf_msg_set_str(r, "model", "cnn");
    bf_msg_set_str(r, "dataset", "tiny"), bf_msg_set_uint(r, "rounds", 3), bf_msg_set_str(r, "mode", "shareholding");
    bf_msg_set_uint(r, "min_clients", 2), bf_msg_set_uint(r, "local_epochs", 1), bf_msg_set_uint(r, "batch", 32);
    bf_msg_set_double(r, "lr", 0.05), bf_msg_set_uint(r, "round_timeout", 60), bf_msg_set_str(r, "partition", "iid");
    bf_msg_set_str(r, "strategy", "fedavgm:0.5");
    bf_msg_t *rep = call(&p[0].c, r);
    expect_ok(rep, "task create");
    bf_msg_destroy(&rep);
    for (int i = 0; i < 2; i++) join_and_fetch(&p[i], "m");

    size_t n = 0;
    float *v = NULL;
    for (int round = 0; round < 3; round++) {
        if (round == 2) { /* crash between rounds 1 and 2 */
            fed_stop(coord, SIGKILL);
            coord = fed_start(argv[1], home, ENDPOINT, spec, extra);
        }
        for (int i = 0; i < 2; i++) train_round(&p[i], "m", round);
        wait_rounds(&p[0].c, round + 1);
        n = p[0].np;
        float *g_next = load_params(home, round, n);
        CHECK(g_next != NULL);
        if (!g_next) break;
        if (!v) v = calloc(n, sizeof(float));
        double worst = 0;
        for (size_t j = 0; j < n; j++) {
            /* equal data (300 each): avg = mean of the two updates */
            double avg = 0.5 * ((double)p[0].params[j] + p[1].params[j]);
            double v_new = BETA * v[j] + ((double)p[0].global[j] - avg);
            double expect = (double)p[0].global[j] - v_new;
            worst = fmax(worst, fabs(expect - g_next[j]));
            v[j] = (float)v_new;
        }
        printf("round %d%s: checkpoint vs FedAvgM recurrence: max |diff| %.3g\n", round,
               round == 2 ? " (after the restart)" : "", worst);
        CHECK(worst < 1e-5);
        free(g_next);
    }
    fed_stop(coord, SIGTERM);
    for (int i = 0; i < 2; i++) {
        fed_client_close(&p[i].c);
        bf_dataset_free(&p[i].data);
        free(p[i].params), free(p[i].buffers), free(p[i].global), free(p[i].global_b);
    }
    free(v);
    return bf_test_done("test_fedavgm_resume");
}

/* test_client_cli.c: blockfed-client against the real blockfed-coordinator on loopback with
 * CURVE: register (twice: idempotent; another user in the same profile: usage error), recharge,
 * task create/list/status, two participants `join` a 2-round task to the end, the downloaded
 * global model equals the sample-weighted average of the updates the clients sent
 * (--save-updates), ERROR replies map to exit 1 and bad input to exit 2. */
#include "bf_models.h"
#include "fed_common.h"

static int max_diff(const float *a, const float *b, const float *c, size_t n, double wa, double wb, double *worst) {
    *worst = 0;
    for (size_t i = 0; i < n; i++) {
        double want = (wa * a[i] + wb * b[i]) / (wa + wb), d = fabs(want - c[i]);
        if (d > *worst) *worst = d;
    }
    return *worst <= 1e-5;
}

static void check_fedavg(const char *a_dir, const char *b_dir, const char *global) {
    char pa[700], pb[700];
    snprintf(pa, sizeof pa, "%s/round-1.bfm", a_dir); /* wire round 1 = the second (last) round */
    snprintf(pb, sizeof pb, "%s/round-1.bfm", b_dir);
    bf_err_t err;
    bf_model_meta_t meta;
    bf_net_t *na = bf_model_load(pa, 1, 1, &meta, &err), *nb = bf_model_load(pb, 1, 1, &meta, &err),
             *ng = bf_model_load(global, 1, 1, &meta, &err);
    CHECK_MSG(na && nb && ng, "%s", err.msg);
    if (na && nb && ng) {
        double worst;
        /* both participants hold 2 blocks of 100 images: equal weights */
        CHECK_MSG(max_diff(bf_net_params(na), bf_net_params(nb), bf_net_params(ng), bf_net_num_params(ng), 200, 200, &worst),
                  "params differ from the average by %g", worst);
        CHECK_MSG(max_diff(bf_net_buffers(na), bf_net_buffers(nb), bf_net_buffers(ng), bf_net_num_buffers(ng), 200, 200, &worst),
                  "buffers differ from the average by %g", worst);
        CHECK(meta.classes == 10 && meta.channels == 1);
    }
    bf_net_destroy(&na), bf_net_destroy(&nb), bf_net_destroy(&ng);
}

int main(int argc, char **argv) {
    if (argc < 3) return fprintf(stderr, "usage: test_client_cli CLIENT COORDINATOR\n"), 2;
    fed_cli_t f[1]; /* an array of one: f is the pointer every helper takes */
    char name[64], ep[64], alice[600], bob[600], upa[600], upb[600], model[600];
    snprintf(name, sizeof name, "client_cli_%d", (int)getpid());
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", 20000 + (int)(getpid() % 30000));
    /* the coordinator: init prints the key, run serves it */
    CHECK_MSG(fed_cli_prepare(f, argv[2], argv[1], name, ep, 12, 700, 100, 1) == 0, "no key in init output (%s)", f->dir);
    f->timeout = "5";
    snprintf(alice, sizeof alice, "%s/alice", f->dir);
    snprintf(bob, sizeof bob, "%s/bob", f->dir);
    snprintf(upa, sizeof upa, "%s/upd-alice", f->dir);
    snprintf(upb, sizeof upb, "%s/upd-bob", f->dir);
    snprintf(model, sizeof model, "%s/global.bfm", f->dir);
    pid_t cpid = fed_cli_start(f, (const char *const[]){"--block-size", "100", "--blocks-per-join", "2", NULL});
    CHECK(cpid > 0);

    /* usage errors exit 2 before anything touches the network */
    CHECK(fed_cli_run(f, alice, (const char *const[]){"register", "alice", "--coordinator", f->ep, "--server-key", "short",
                                                      NULL}) == 2);
    CHECK(fed_cli_run(f, alice, (const char *const[]){"register", "alice", "--coordinator", "tcp://10.9.9.9:7700",
                                                      "--insecure", NULL}) == 2);
    CHECK(fed_cli_run(f, alice, (const char *const[]){"recharge", "1e5", NULL}) == 2);
    CHECK(fed_cli_run(f, alice, (const char *const[]){"frobnicate", NULL}) == 2);
    CHECK(fed_cli_run(f, alice, (const char *const[]){"task", "create", "--id", "x", NULL}) == 2);
    /* no profile yet: a runtime error */
    CHECK(fed_cli_run(f, alice, (const char *const[]){"assets", NULL}) == 1);

    CHECK(fed_cli_register(f, alice, "alice") == 0);
    CHECK_MSG(strstr(bf_slurp(f->out), "registered user alice") && strstr(bf_slurp(f->out), "coins: 100"), "%s",
              bf_slurp(f->out));
    CHECK(fed_cli_run(f, alice, (const char *const[]){"register", "alice", "--coordinator", f->ep, "--server-key", f->key,
                                                      "--json", NULL}) == 0);
    CHECK(strstr(bf_slurp(f->out), "\"already_registered\":true") != NULL);
    CHECK(fed_cli_run(f, alice, (const char *const[]){"register", "mallory", "--coordinator", f->ep, "--server-key", f->key,
                                                      NULL}) == 2);
    CHECK(fed_cli_register(f, bob, "bob") == 0);
    /* a name cannot be registered twice (another key): the coordinator's ERROR is exit 1 */
    char eve[600];
    snprintf(eve, sizeof eve, "%s/eve", f->dir);
    CHECK(fed_cli_register(f, eve, "bob") == 1);

    CHECK(fed_cli_run(f, alice, (const char *const[]){"recharge", "10.50", "--json", NULL}) == 0);
    CHECK_MSG(strstr(bf_slurp(f->out), "10.50") != NULL, "%s", bf_slurp(f->out));
    CHECK(fed_cli_run(f, alice, (const char *const[]){"task", "create", "--id", "t1", "--name", "Toy \"quoted\" task",
                                                      "--model", "cnn", "--dataset", "tiny", "--rounds", "2", "--mode",
                                                      "shareholding", "--min-clients", "2", "--batch", "32", "--lr", "0.05",
                                                      "--seed", "7", "--fee", "0.10", "--base-fee", "0.02", "--rate", "1.25",
                                                      "--value-images", "500", NULL}) == 0);
    CHECK(fed_cli_run(f, alice, (const char *const[]){"task", "create", "--id", "t9", "--name", "n", "--model", "cnn",
                                                      "--dataset", "tiny", "--rounds", "1", "--mode", "shareholding",
                                                      "--rate", "-1", NULL}) == 2);
    CHECK(fed_cli_run(f, alice, (const char *const[]){"task", "status", "t1", "--json", NULL}) == 0);
    CHECK_MSG(strstr(bf_slurp(f->out), "\"rate\":\"5/4\"") && strstr(bf_slurp(f->out), "\"base_fee\":\"0.02\"") &&
                  strstr(bf_slurp(f->out), "\"value_images\":500"), "%s",
              bf_slurp(f->out));
    CHECK(fed_cli_run(f, alice, (const char *const[]){"task", "list", "--json", NULL}) == 0);
    CHECK_MSG(strstr(bf_slurp(f->out), "\"task\":\"t1\"") && strstr(bf_slurp(f->out), "Toy \\\"quoted\\\" task"), "%s",
              bf_slurp(f->out));
    CHECK(fed_cli_run(f, alice, (const char *const[]){"task", "status", "nope", NULL}) == 1);

    /* two trainers to the end of the task */
    char oa[700], ob[700];
    snprintf(oa, sizeof oa, "%s/alice.join", f->dir);
    snprintf(ob, sizeof ob, "%s/bob.join", f->dir);
    const char *ja[] = {"--home", alice, "join", "t1", "--threads", "1", "--save-updates", upa, NULL};
    const char *jb[] = {"join", "t1", "--home", bob, "--threads", "1", "--save-updates", upb, NULL};
    pid_t pa = bf_spawn_bg(f->client, ja, oa), pb = bf_spawn_bg(f->client, jb, ob);
    int ra = bf_spawn_wait(pa, 300), rb = bf_spawn_wait(pb, 300);
    char sa[1 << 16];
    snprintf(sa, sizeof sa, "%s", bf_slurp(oa));
    CHECK_MSG(ra == 0 && rb == 0, "join exit %d/%d; alice: %s", ra, rb, sa);
    CHECK_MSG(strstr(sa, "round 1/2: loss") && strstr(sa, "round 2/2: loss") && strstr(sa, "finished; result hash"), "%s",
              sa);
    CHECK(strstr(bf_slurp(ob), "finished; result hash") != NULL);
    /* the blocks were cached: 2 per participant */
    char blk[700];
    struct stat st;
    snprintf(blk, sizeof blk, "%s/blocks/t1", alice);
    CHECK(!stat(blk, &st) && S_ISDIR(st.st_mode));

    CHECK(fed_cli_run(f, bob, (const char *const[]){"model", "download", "t1", "--out", model, NULL}) == 0);
    CHECK(strstr(bf_slurp(f->out), "sha256") != NULL);
    const char *hash = strstr(sa, "result hash ");
    char want[65] = "";
    if (hash) snprintf(want, sizeof want, "%.64s", hash + 12);
    CHECK_MSG(strlen(want) == 64 && strstr(bf_slurp(f->out), want), "the model's SHA-256 is not the result hash");
    check_fedavg(upa, upb, model);

    /* after the task: status renders, a finished task cannot be cancelled (exit 1) */
    CHECK(fed_cli_run(f, alice, (const char *const[]){"task", "status", "t1", NULL}) == 0);
    CHECK(strstr(bf_slurp(f->out), "state: completed") != NULL);
    CHECK(fed_cli_run(f, alice, (const char *const[]){"task", "cancel", "t1", NULL}) == 1);
    CHECK(fed_cli_run(f, alice, (const char *const[]){"assets", "--json", NULL}) == 0);
    CHECK(fed_cli_run(f, alice, (const char *const[]){"history", "--limit", "5", NULL}) == 0);

    fed_stop(cpid, SIGTERM);
    return bf_test_done("test_client_cli");
}

/* test_client_cli.c: blockfed-client against the real blockfed-coordinator on loopback with
 * CURVE: register (twice: idempotent; another user in the same profile: usage error), recharge,
 * task create/list/status, two participants `join` a 2-round task to the end, the downloaded
 * global model equals the sample-weighted average of the updates the clients sent
 * (--save-updates), ERROR replies map to exit 1 and bad input to exit 2. */
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bf_models.h"
#include "bf_spawn.h"
#include "test.h"

static const char *client, *coordinator;
static char tmp[512];

static void put_be32(FILE *f, uint32_t v) {
    uint8_t b[4] = {v >> 24, v >> 16, v >> 8, v};
    fwrite(b, 1, 4, f);
}

/* 12x12 images, 4 classes: a bright quadrant per class, plus noise. */
static void write_split(const char *dir, const char *prefix, int n, uint64_t seed) {
    char path[700];
    bf_rng_t r;
    bf_rng_seed(&r, seed);
    snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte", dir, prefix);
    FILE *fi = fopen(path, "wb");
    snprintf(path, sizeof path, "%s/%s-labels-idx1-ubyte", dir, prefix);
    FILE *fl = fopen(path, "wb");
    put_be32(fi, 0x803), put_be32(fi, n), put_be32(fi, 12), put_be32(fi, 12);
    put_be32(fl, 0x801), put_be32(fl, n);
    for (int i = 0; i < n; i++) {
        int c = (int)bf_rng_below(&r, 4);
        fputc(c, fl);
        for (int h = 0; h < 12; h++)
            for (int w = 0; w < 12; w++) fputc(((h < 6) == (c < 2) && (w < 6) == (c % 2 == 0) ? 170 : 40) + (int)bf_rng_below(&r, 60), fi);
    }
    fclose(fi), fclose(fl);
}

/* Starts prog in the background, stdout and stderr to files. */
static pid_t spawn_bg(const char *prog, const char *const *args, const char *out, const char *err) {
    char *argv[64];
    int n = 0;
    argv[n++] = (char *)prog;
    while (n < 63 && args[n - 1]) argv[n] = (char *)args[n - 1], n++;
    argv[n] = NULL;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, err, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    pid_t pid = -1;
    if (posix_spawn(&pid, prog, &fa, NULL, argv, environ)) pid = -1;
    posix_spawn_file_actions_destroy(&fa);
    return pid;
}

static int wait_exit(pid_t pid) {
    int st = -1;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static char out_path[700];

/* blockfed-client --home HOME args... ; returns the exit status, stdout in out_path. */
static int cli(const char *home, const char *const *args) {
    const char *all[40] = {"--home", home, "--timeout", "5"};
    int n = 4;
    for (int i = 0; args[i] && n < 39; i++) all[n++] = args[i];
    all[n] = NULL;
    return bf_spawn(client, all, out_path, 0);
}

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
    client = argv[1], coordinator = argv[2];
    snprintf(tmp, sizeof tmp, "%s/client_cli_%d", bf_test_tmpdir(), (int)getpid());
    mkdir(tmp, 0700);
    snprintf(out_path, sizeof out_path, "%s/out.txt", tmp);
    char data[600], chome[600], alice[600], bob[600], ep[64], cout[600], cerr[600], upa[600], upb[600], model[600];
    snprintf(data, sizeof data, "%s/toy", tmp);
    mkdir(data, 0755);
    write_split(data, "train", 700, 1);
    write_split(data, "t10k", 100, 2);
    snprintf(chome, sizeof chome, "%s/coord", tmp);
    snprintf(alice, sizeof alice, "%s/alice", tmp);
    snprintf(bob, sizeof bob, "%s/bob", tmp);
    snprintf(upa, sizeof upa, "%s/upd-alice", tmp);
    snprintf(upb, sizeof upb, "%s/upd-bob", tmp);
    snprintf(model, sizeof model, "%s/global.bfm", tmp);
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", 20000 + (int)(getpid() % 30000));

    /* the coordinator: init prints the key, run serves it */
    CHECK(bf_spawn(coordinator, (const char *const[]){"init", "--home", chome, NULL}, out_path, 0) == 0);
    char key[64] = "";
    const char *k = strstr(bf_slurp(out_path), "server public key: ");
    if (k) snprintf(key, sizeof key, "%.40s", k + 19);
    CHECK_MSG(strlen(key) == 40, "no key in init output");
    char dataset[700];
    snprintf(dataset, sizeof dataset, "toy=%s", data);
    snprintf(cout, sizeof cout, "%s/coord.out", tmp);
    snprintf(cerr, sizeof cerr, "%s/coord.err", tmp);
    pid_t cpid = spawn_bg(coordinator, (const char *const[]){"run", "--home", chome, "--bind", ep, "--dataset", dataset,
                                                             "--block-size", "100", "--blocks-per-join", "2", NULL},
                          cout, cerr);
    CHECK(cpid > 0);

    /* usage errors exit 2 before anything touches the network */
    CHECK(cli(alice, (const char *const[]){"register", "alice", "--coordinator", ep, "--server-key", "short", NULL}) == 2);
    CHECK(cli(alice, (const char *const[]){"register", "alice", "--coordinator", "tcp://10.9.9.9:7700", "--insecure", NULL}) == 2);
    CHECK(cli(alice, (const char *const[]){"recharge", "1e5", NULL}) == 2);
    CHECK(cli(alice, (const char *const[]){"frobnicate", NULL}) == 2);
    CHECK(cli(alice, (const char *const[]){"task", "create", "--id", "x", NULL}) == 2);
    /* no profile yet: a runtime error */
    CHECK(cli(alice, (const char *const[]){"assets", NULL}) == 1);

    CHECK(cli(alice, (const char *const[]){"register", "alice", "--coordinator", ep, "--server-key", key, NULL}) == 0);
    CHECK_MSG(strstr(bf_slurp(out_path), "registered user alice") && strstr(bf_slurp(out_path), "coins: 100"), "%s",
              bf_slurp(out_path));
    CHECK(cli(alice, (const char *const[]){"register", "alice", "--coordinator", ep, "--server-key", key, "--json", NULL}) == 0);
    CHECK(strstr(bf_slurp(out_path), "\"already_registered\":true") != NULL);
    CHECK(cli(alice, (const char *const[]){"register", "mallory", "--coordinator", ep, "--server-key", key, NULL}) == 2);
    CHECK(cli(bob, (const char *const[]){"register", "bob", "--coordinator", ep, "--server-key", key, NULL}) == 0);
    /* a name cannot be registered twice (another key): the coordinator's ERROR is exit 1 */
    char eve[600];
    snprintf(eve, sizeof eve, "%s/eve", tmp);
    CHECK(cli(eve, (const char *const[]){"register", "bob", "--coordinator", ep, "--server-key", key, NULL}) == 1);

    CHECK(cli(alice, (const char *const[]){"recharge", "10.50", "--json", NULL}) == 0);
    CHECK_MSG(strstr(bf_slurp(out_path), "10.50") != NULL, "%s", bf_slurp(out_path));
    CHECK(cli(alice, (const char *const[]){"task", "create", "--id", "t1", "--name", "Toy \"quoted\" task", "--model", "cnn",
                                           "--dataset", "toy", "--rounds", "2", "--mode", "shareholding", "--min-clients",
                                           "2", "--batch", "32", "--lr", "0.05", "--seed", "7", "--fee", "0.10",
                                           "--base-fee", "0.02", "--rate", "1.25", "--value-images", "500", NULL}) == 0);
    CHECK(cli(alice, (const char *const[]){"task", "create", "--id", "t9", "--name", "n", "--model", "cnn", "--dataset",
                                           "toy", "--rounds", "1", "--mode", "shareholding", "--rate", "-1", NULL}) == 2);
    CHECK(cli(alice, (const char *const[]){"task", "status", "t1", "--json", NULL}) == 0);
    CHECK_MSG(strstr(bf_slurp(out_path), "\"rate\":\"5/4\"") && strstr(bf_slurp(out_path), "\"base_fee\":\"0.02\"") &&
                  strstr(bf_slurp(out_path), "\"value_images\":500"), "%s",
              bf_slurp(out_path));
    CHECK(cli(alice, (const char *const[]){"task", "list", "--json", NULL}) == 0);
    CHECK_MSG(strstr(bf_slurp(out_path), "\"task\":\"t1\"") && strstr(bf_slurp(out_path), "Toy \\\"quoted\\\" task"), "%s",
              bf_slurp(out_path));
    CHECK(cli(alice, (const char *const[]){"task", "status", "nope", NULL}) == 1);

    /* two trainers to the end of the task */
    char oa[700], ob[700], ea[700], eb[700];
    snprintf(oa, sizeof oa, "%s/alice.out", tmp), snprintf(ea, sizeof ea, "%s/alice.err", tmp);
    snprintf(ob, sizeof ob, "%s/bob.out", tmp), snprintf(eb, sizeof eb, "%s/bob.err", tmp);
    pid_t ja = spawn_bg(client, (const char *const[]){"--home", alice, "join", "t1", "--threads", "1", "--save-updates", upa, NULL}, oa, ea);
    pid_t jb = spawn_bg(client, (const char *const[]){"join", "t1", "--home", bob, "--threads", "1", "--save-updates", upb, NULL}, ob, eb);
    int ra = wait_exit(ja), rb = wait_exit(jb);
    char sa[4096];
    snprintf(sa, sizeof sa, "%s", bf_slurp(oa));
    CHECK_MSG(ra == 0 && rb == 0, "join exit %d/%d; alice: %s", ra, rb, sa);
    CHECK_MSG(strstr(sa, "round 1/2: loss") && strstr(sa, "round 2/2: loss") && strstr(sa, "finished; result hash"), "%s", sa);
    CHECK(strstr(bf_slurp(ob), "finished; result hash") != NULL);
    /* the blocks were cached: 2 per participant */
    char blk[700];
    struct stat st;
    snprintf(blk, sizeof blk, "%s/blocks/t1", alice);
    CHECK(!stat(blk, &st) && S_ISDIR(st.st_mode));

    CHECK(cli(bob, (const char *const[]){"model", "download", "t1", "--out", model, NULL}) == 0);
    CHECK(strstr(bf_slurp(out_path), "sha256") != NULL);
    const char *hash = strstr(sa, "result hash ");
    char want[65] = "";
    if (hash) snprintf(want, sizeof want, "%.64s", hash + 12);
    CHECK_MSG(strlen(want) == 64 && strstr(bf_slurp(out_path), want), "the model's SHA-256 is not the result hash");
    check_fedavg(upa, upb, model);

    /* after the task: status renders, a finished task cannot be cancelled (exit 1) */
    CHECK(cli(alice, (const char *const[]){"task", "status", "t1", NULL}) == 0);
    CHECK(strstr(bf_slurp(out_path), "state: completed") != NULL);
    CHECK(cli(alice, (const char *const[]){"task", "cancel", "t1", NULL}) == 1);
    CHECK(cli(alice, (const char *const[]){"assets", "--json", NULL}) == 0);
    CHECK(cli(alice, (const char *const[]){"history", "--limit", "5", NULL}) == 0);

    kill(cpid, SIGTERM);
    wait_exit(cpid);
    return bf_test_done("test_client_cli");
}

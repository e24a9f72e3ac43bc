/* bench_predict.c: `blockfed-bench predict [--json] [--requests N] [--clients C] [--coordinator PATH]`
 * Paid single-image predictions end to end: one real coordinator process (CURVE on, loopback)
 * serving a ResNet8 (1x28x28) shareholding model trained for one round by 10 participants of this
 * process (so the fee of every prediction is paid out to up to 10 shareholders). Measures
 *   - local: bf_predictor_run on the model file (PNG decode + preprocessing + forward), with
 *     BF_PREDICT_THREADS threads as the coordinator runs it;
 *   - remote, one client: PREDICT -> PREDICTION latency (p50/p99) and rate, one at a time;
 *   - remote, C concurrent clients (own keys and connections): paid predictions per second.
 * Every paid prediction holds, captures and pays out through the ledger (synchronous=FULL); the
 * bench checks that the fees it was told add up to the task's revenue in the ledger. */
#include <czmq.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bf_ledger.h"
#include "bf_mp.h"
#include "bf_predictor.h"
#include "bf_proto.h"
#include "bf_trainer.h"
#include "bench_common.h"
#include "test_images.h"

#define SIDE 28
#define PARTICIPANTS 10

typedef struct {
    zcert_t *cert;
    zsock_t *sock;
    uint64_t id;
} cli_t;

static void cli_open(cli_t *c, const char *endpoint, const char *key) {
    bench_cli_t b;
    bench_cli_open(&b, endpoint, key, 60000);
    c->cert = b.cert, c->sock = b.sock, c->id = 1;
}

static void cli_close(cli_t *c) {
    zsock_destroy(&c->sock);
    zcert_destroy(&c->cert);
}

static bf_msg_t *rpc(cli_t *c, bf_msg_t *m) {
    bench_cli_t b = {c->cert, c->sock};
    return bench_rpc(&b, m);
}

static bf_msg_t *req(cli_t *c, const char *type) {
    bf_msg_t *m = bf_msg_new(type, c->id++);
    if (strcmp(type, "REGISTER") && strcmp(type, "RECHARGE")) bf_msg_set_str(m, "task", "pb");
    return m;
}

static int is(const bf_msg_t *m, const char *type) { return m && !strcmp(bf_msg_type(m), type); }

static int call_ok(cli_t *c, bf_msg_t *r, const char *expect) {
    bf_msg_t *rep = rpc(c, r);
    int ok = is(rep, expect);
    if (!ok) fprintf(stderr, "bench predict: expected %s, got %s %s\n", expect, rep ? bf_msg_type(rep) : "timeout",
                     rep && is(rep, "ERROR") ? bf_msg_str(rep, "message") : "");
    bf_msg_destroy(&rep);
    return ok;
}

static int register_user(cli_t *c, const char *name, const char *money) {
    bf_msg_t *r = req(c, "REGISTER");
    bf_msg_set_str(r, "name", name);
    if (!call_ok(c, r, "OK")) return 0;
    if (!money) return 1;
    r = req(c, "RECHARGE");
    bf_msg_set_str(r, "amount", money);
    return call_ok(c, r, "OK");
}

/* n images of the quadrant classes (4 of 10 labels used), as a dataset and as IDX files. */
static void make_data(bf_dataset_t *d, int n, uint32_t seed) {
    bf_dataset_alloc(d, n, 1, SIDE, SIDE, 10, NULL);
    for (int i = 0; i < n; i++) {
        int cls = (int)((seed + (uint32_t)i * 2654435761u) >> 7) % 4;
        uint8_t *px = ti_pattern(cls, SIDE, SIDE, 1, seed * 31 + (uint32_t)i);
        memcpy(d->pixels + (size_t)i * SIDE * SIDE, px, SIDE * SIDE);
        d->labels[i] = (uint8_t)cls;
        free(px);
    }
}


static void write_idx(const char *dir, const char *prefix, int n, uint32_t seed) {
    bf_dataset_t d;
    make_data(&d, n, seed);
    char path[700];
    snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte", dir, prefix);
    FILE *fi = fopen(path, "wb");
    bench_put_be32(fi, 0x803), bench_put_be32(fi, (uint32_t)n), bench_put_be32(fi, SIDE), bench_put_be32(fi, SIDE);
    fwrite(d.pixels, 1, (size_t)n * SIDE * SIDE, fi);
    fclose(fi);
    snprintf(path, sizeof path, "%s/%s-labels-idx1-ubyte", dir, prefix);
    FILE *fl = fopen(path, "wb");
    bench_put_be32(fl, 0x801), bench_put_be32(fl, (uint32_t)n);
    fwrite(d.labels, 1, (size_t)n, fl);
    fclose(fl);
    bf_dataset_free(&d);
}

/* A participant with its own data: takes the round, trains one epoch, sends its update. */
static int participate(cli_t *c, int k) {
    bf_msg_t *round = NULL;
    for (int tries = 0; tries < 1200; tries++) {
        round = rpc(c, req(c, "ROUND_GET"));
        if (!is(round, "WAIT")) break;
        bf_msg_destroy(&round);
        zclock_sleep(50);
    }
    if (!is(round, "ROUND")) return bf_msg_destroy(&round), 0;
    bf_err_t err;
    bf_net_t *net = bf_net_new("resnet8", 1, SIDE, SIDE, 10, 32, 1, &err);
    size_t np = bf_net_num_params(net), nb = bf_net_num_buffers(net);
    bf_msg_frame_f32(round, 0, bf_net_params(net), np);
    bf_msg_frame_f32(round, 1, bf_net_buffers(net), nb);
    const msgpack_object *pre = bf_msg_any(round, "preprocess");
    double m = 0, s = 1;
    bf_mp_as_double(&bf_mp_get(pre, "mean")->via.array.ptr[0], &m);
    bf_mp_as_double(&bf_mp_get(pre, "std")->via.array.ptr[0], &s);
    float mean = (float)m, std = (float)s;
    bf_dataset_t d;
    make_data(&d, 256, 1000 + (uint32_t)k);
    bf_train_opts_t o = {.batch = 32, .lr = 0.05, .schedule = "constant", .momentum = 0.9, .seed = (uint64_t)k + 1};
    bf_trainer_t *tr = bf_trainer_new(net, &o, &d, &mean, &std, 1, &err);
    bf_progress_t pr = {0};
    int ok = tr && bf_trainer_epoch(tr, NULL, NULL, &pr) == 0;
    bf_msg_t *u = req(c, "UPDATE");
    bf_msg_set_uint(u, "round", 0), bf_msg_set_uint(u, "samples", (uint64_t)d.n), bf_msg_set_double(u, "loss", pr.loss);
    bf_msg_add_f32(u, bf_net_params(net), np), bf_msg_add_f32(u, bf_net_buffers(net), nb);
    ok = ok && call_ok(c, u, "OK");
    bf_trainer_destroy(&tr);
    bf_net_destroy(&net);
    bf_dataset_free(&d);
    bf_msg_destroy(&round);
    return ok;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *v, int n, double p) {
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n ? v[(int)(p * (n - 1) + 0.5)] : 0;
}

typedef struct {
    const char *endpoint, *key;
    const uint8_t *img;
    size_t len;
    int k, n, failures;
    int64_t paid;
    double *lat_ms;
} payer_t;

/* One paid single-image prediction; its fee (cents) added to p->paid. */
static int paid_once(cli_t *c, payer_t *p, int i) {
    bf_msg_t *r = req(c, "PREDICT");
    bf_msg_set_uint(r, "top", 3);
    bf_msg_add_frame(r, p->img, p->len);
    int64_t t0 = zclock_usecs();
    bf_msg_t *rep = rpc(c, r);
    p->lat_ms[i] = (double)(zclock_usecs() - t0) / 1000.0;
    int64_t fee = 0;
    int ok = is(rep, "PREDICTION") && bf_money_parse_amount(bf_msg_str(rep, "fee"), 2, &fee, NULL) == 0;
    if (ok) p->paid += fee;
    else p->failures++;
    bf_msg_destroy(&rep);
    return ok;
}

static void *payer_main(void *arg) {
    payer_t *p = arg;
    cli_t c;
    char name[32];
    cli_open(&c, p->endpoint, p->key);
    snprintf(name, sizeof name, "payer%d", p->k);
    /* enough for every request at 0.10 (at most 10000 requests), within the default open:10000 a day */
    if (!register_user(&c, name, "1000.00")) p->failures = p->n;
    for (int i = 0; i < p->n && !p->failures; i++) paid_once(&c, p, i);
    cli_close(&c);
    return NULL;
}

/* Runs C payers of n predictions each at once; returns the wall seconds. */
static double run_payers(payer_t *ps, int C) {
    pthread_t th[64];
    double t0 = bf_now();
    for (int k = 0; k < C; k++) pthread_create(&th[k], NULL, payer_main, &ps[k]);
    for (int k = 0; k < C; k++) pthread_join(th[k], NULL);
    return bf_now() - t0;
}

int bench_predict_main(int argc, char **argv) {
    bench_load_opts_t lo = {.requests = 2000, .clients = 8};
    int arc = bench_load_args(argc, argv, "predict", 10000, &lo);
    if (arc) return arc == 1 ? 0 : 2;
    int json = lo.json, requests = lo.requests, clients = lo.clients;
    const char *coord = lo.coord;
    zsys_init();
    zsys_set_logstream(NULL);
    char dir[] = "/tmp/blockfed-bench-predict-XXXXXX", home[700], cmd[9000], key[41] = {0};
    if (!mkdtemp(dir)) return 1;
    write_idx(dir, "train", 500, 1); /* validation = 10%: exact Shapley of 10 stays quick */
    write_idx(dir, "t10k", 500, 2);
    snprintf(home, sizeof home, "%s/home", dir);
    const char *endpoint = "tcp://127.0.0.1:27890";
    char spec[800];
    snprintf(spec, sizeof spec, "sim=%s", dir);
    /* loss: every participant's update lowers it, so all 10 become shareholders */
    const char *extra[] = {"--block-size", "100", "--utility", "loss", NULL};
    pid_t pid = bench_coord_start(coord, home, endpoint, spec, extra, key);
    if (pid < 0) return fprintf(stderr, "bench predict: %s init failed\n", coord), 1;

    /* The model: 10 participants, one round, shareholding, 0.10 per image. */
    cli_t parts[PARTICIPANTS];
    int ok = 1;
    for (int k = 0; k < PARTICIPANTS && ok; k++) {
        char name[32];
        snprintf(name, sizeof name, "holder%d", k);
        cli_open(&parts[k], endpoint, key);
        ok = register_user(&parts[k], name, NULL);
    }
    bf_msg_t *t = req(&parts[0], "TASK_CREATE");
    bf_msg_set_str(t, "name", "predict bench"), bf_msg_set_str(t, "model", "resnet8"), bf_msg_set_str(t, "dataset", "sim");
    bf_msg_set_uint(t, "rounds", 1), bf_msg_set_str(t, "mode", "shareholding"), bf_msg_set_str(t, "fee", "0.10");
    bf_msg_set_uint(t, "min_clients", PARTICIPANTS), bf_msg_set_uint(t, "local_epochs", 1), bf_msg_set_uint(t, "batch", 32);
    bf_msg_set_double(t, "lr", 0.05), bf_msg_set_uint(t, "round_timeout", 3600), bf_msg_set_str(t, "partition", "iid");
    bf_msg_set_str(t, "strategy", "fedavg");
    ok = ok && call_ok(&parts[0], t, "OK");
    for (int k = 0; k < PARTICIPANTS && ok; k++) {
        bf_msg_t *j = req(&parts[k], "JOIN");
        bf_msg_set_bool(j, "own_data", 1), bf_msg_set_uint(j, "samples", 256);
        ok = call_ok(&parts[k], j, "JOINED");
    }
    for (int k = 0; k < PARTICIPANTS && ok; k++) ok = participate(&parts[k], k);
    int done = 0;
    for (int tries = 0; tries < 3000 && ok && !done; tries++) {
        bf_msg_t *rep = rpc(&parts[0], req(&parts[0], "ROUND_GET"));
        done = is(rep, "DONE");
        bf_msg_destroy(&rep);
        if (!done) zclock_sleep(20);
    }
    for (int k = 0; k < PARTICIPANTS; k++) cli_close(&parts[k]);
    if (!ok || !done) {
        kill(pid, SIGTERM), waitpid(pid, NULL, 0);
        return fprintf(stderr, "bench predict: setting up the model failed (see %s.log)\n", home), 1;
    }
    zclock_sleep(300); /* settlement and going online follow DONE on the coordinator's thread */

    /* Local: the same code path the coordinator runs, on the model file it serves. */
    size_t img_len;
    uint8_t *img = ti_encode('p', 2, SIDE, SIDE, 1, 77, &img_len);
    char model[900];
    snprintf(model, sizeof model, "%s/checkpoints/pb/round-0000.bfm", home);
    bf_err_t err;
    bf_predictor_t *pr = bf_predictor_load(model, BF_PREDICT_THREADS, &err);
    int nl = requests;
    double *lat = calloc((size_t)(requests > nl ? requests : nl) * (clients + 1), sizeof *lat), probs[10];
    double local_p50 = 0, local_p99 = 0;
    if (pr) {
        for (int i = 0; i < 50; i++) bf_predictor_run(pr, img, img_len, probs, &err);
        for (int i = 0; i < nl; i++) {
            double t0 = bf_now();
            bf_predictor_run(pr, img, img_len, probs, &err);
            lat[i] = (bf_now() - t0) * 1000;
        }
        local_p50 = pct(lat, nl, 0.5), local_p99 = pct(lat, nl, 0.99);
        bf_predictor_destroy(&pr);
    } else {
        fprintf(stderr, "bench predict: %s\n", err.msg);
    }

    /* Remote, one client at a time. */
    payer_t one = {.endpoint = endpoint, .key = key, .img = img, .len = img_len, .k = 0, .n = requests, .lat_ms = lat};
    double seq_s = run_payers(&one, 1);
    double seq_p50 = pct(lat, requests, 0.5), seq_p99 = pct(lat, requests, 0.99);

    /* Remote, C clients at once. */
    payer_t ps[64];
    int per = requests / clients > 50 ? requests / clients : 50;
    for (int k = 0; k < clients; k++)
        ps[k] = (payer_t){.endpoint = endpoint, .key = key, .img = img, .len = img_len, .k = k + 1, .n = per,
                          .lat_ms = lat + (size_t)(k + 1) * requests};
    double con_s = run_payers(ps, clients);
    int con_n = 0, failures = one.failures;
    int64_t paid = one.paid;
    double *all = calloc((size_t)per * clients, sizeof *all);
    for (int k = 0; k < clients; k++) {
        memcpy(all + con_n, ps[k].lat_ms, (size_t)per * sizeof *all);
        con_n += per;
        failures += ps[k].failures;
        paid += ps[k].paid;
    }
    double con_p50 = pct(all, con_n, 0.5), con_p99 = pct(all, con_n, 0.99);

    /* The ledger's side: revenue of the task == the fees reported; holders paid. */
    snprintf(cmd, sizeof cmd, "%s/ledger.db", home);
    bf_ledger_t *L = bf_ledger_open(cmd, &err);
    bf_ledger_task_t info = {0};
    bf_ledger_share_t *sh = NULL;
    size_t nsh = 0;
    for (int64_t id = 1; L && id < 4; id++)
        if (bf_ledger_task_get(L, id, &info, NULL) == 0 && info.mode == BF_LEDGER_MODE_SHAREHOLDING) break;
    if (L) bf_ledger_task_shares(L, info.id, &sh, &nsh, NULL);
    int64_t received = 0;
    for (size_t i = 0; i < nsh; i++) received += sh[i].received;
    int exact = L && info.total_revenue == paid && received == paid;
    free(sh);
    bf_ledger_close(&L);
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);

    double seq_rate = requests / seq_s, con_rate = con_n / con_s;
    if (json)
        printf("{\"bench\":\"predict\",\"model\":\"resnet8\",\"input\":\"1x28x28\",\"shareholders\":%zu,"
               "\"local_p50_ms\":%.3f,\"local_p99_ms\":%.3f,\"remote_p50_ms\":%.3f,\"remote_p99_ms\":%.3f,"
               "\"remote_sequential_per_s\":%.0f,\"clients\":%d,\"concurrent_per_s\":%.0f,\"concurrent_p50_ms\":%.3f,"
               "\"concurrent_p99_ms\":%.3f,\"requests\":%d,\"failures\":%d,\"fees_cents\":%lld,\"ledger_exact\":%s}\n",
               nsh, local_p50, local_p99, seq_p50, seq_p99, seq_rate, clients, con_rate, con_p50, con_p99,
               requests + con_n, failures, (long long)paid, exact ? "true" : "false");
    else
        printf("ResNet8 1x28x28, fee paid out to %zu shareholders per prediction\n"
               "  local (decode + preprocess + forward, BF_PREDICT_THREADS=%d): p50 %.3f ms, p99 %.3f ms\n"
               "  remote, 1 client:  p50 %.3f ms, p99 %.3f ms, %.0f paid predictions/s\n"
               "  remote, %d clients: %.0f paid predictions/s (p50 %.3f ms, p99 %.3f ms)\n"
               "  %d requests, %d failed; fees %lld cents; ledger revenue == fees == payouts: %s\n",
               nsh, BF_PREDICT_THREADS, local_p50, local_p99, seq_p50, seq_p99, seq_rate, clients, con_rate, con_p50,
               con_p99, requests + con_n, failures, (long long)paid, exact ? "yes" : "NO");
    free(all);
    free(lat);
    free(img);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd)) return 1;
    return failures ? 1 : 0;
}

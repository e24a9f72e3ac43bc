/* bench_fed.c: `blockfed-bench fed [--json] [--clients 10,100,1000] [--coordinator PATH]`
 * One real coordinator process (CURVE on, loopback) and N simulated participants in this process,
 * each with its own key and connection: all register, join one ResNet8 task with their own data,
 * fetch the round, and send back a ResNet8-sized update (the global model, perturbed; no training,
 * so the figures are the coordinator's). Reports round latency (first update sent -> DONE),
 * coordinator CPU seconds and peak memory per client, and in-process aggregation throughput. */
#include <czmq.h>
#include <getopt.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bf_models.h"
#include "bf_proto.h"
#include "bench_common.h"


static void write_idx(const char *dir, const char *prefix, int n) {
    char path[700];
    snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte", dir, prefix);
    FILE *fi = fopen(path, "wb");
    snprintf(path, sizeof path, "%s/%s-labels-idx1-ubyte", dir, prefix);
    FILE *fl = fopen(path, "wb");
    bench_put_be32(fi, 0x803), bench_put_be32(fi, n), bench_put_be32(fi, 16), bench_put_be32(fi, 16);
    bench_put_be32(fl, 0x801), bench_put_be32(fl, n);
    for (int i = 0; i < n; i++) {
        fputc(i % 10, fl);
        for (int k = 0; k < 256; k++) fputc((i * 7 + k * 13) & 255, fi);
    }
    fclose(fi);
    fclose(fl);
}

static double proc_cpu(pid_t pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    if (p) sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st);
    return (double)(ut + st) / sysconf(_SC_CLK_TCK);
}

static long proc_kb(pid_t pid, const char *field) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    long v = 0;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, field, strlen(field))) v = atol(line + strlen(field) + 1);
    if (f) fclose(f);
    return v;
}

typedef bench_cli_t sim_t;
#define rpc bench_rpc

static bf_msg_t *task_req(const char *type, uint64_t id) {
    bf_msg_t *m = bf_msg_new(type, id);
    bf_msg_set_str(m, "task", "bench");
    return m;
}

typedef struct {
    double round_s, cpu_s, mb_per_client, peak_mb;
    int ok;
} result_t;

static int run_one(const char *coord, const char *dir, int N, result_t *res) {
    char home[600], endpoint[64], spec[700], key[41];
    snprintf(home, sizeof home, "%s/home-%d", dir, N);
    snprintf(endpoint, sizeof endpoint, "tcp://127.0.0.1:%d", 27800 + N % 97);
    snprintf(spec, sizeof spec, "sim=%s", dir);
    pid_t pid = bench_coord_start(coord, home, endpoint, spec, NULL, key);
    if (pid < 0) return -1;
    sim_t *c = calloc(N, sizeof *c);
    for (int i = 0; i < N; i++) bench_cli_open(&c[i], endpoint, key, 120000);
    uint64_t id = 1;
    int ok = 1;
    for (int i = 0; i < N && ok; i++) {
        char name[32];
        snprintf(name, sizeof name, "sim%d", i);
        bf_msg_t *r = bf_msg_new("REGISTER", id++);
        bf_msg_set_str(r, "name", name);
        bf_msg_t *rep = rpc(&c[i], r);
        ok = rep && !strcmp(bf_msg_type(rep), "OK");
        bf_msg_destroy(&rep);
    }
    bf_msg_t *t = task_req("TASK_CREATE", id++);
    bf_msg_set_str(t, "name", "bench"), bf_msg_set_str(t, "model", "resnet8"), bf_msg_set_str(t, "dataset", "sim");
    bf_msg_set_uint(t, "rounds", 1), bf_msg_set_str(t, "mode", "shareholding"), bf_msg_set_uint(t, "min_clients", N);
    bf_msg_set_uint(t, "local_epochs", 1), bf_msg_set_uint(t, "batch", 32), bf_msg_set_double(t, "lr", 0.05);
    bf_msg_set_uint(t, "round_timeout", 3600), bf_msg_set_str(t, "partition", "iid"), bf_msg_set_str(t, "strategy", "fedavg");
    bf_msg_t *rep = ok ? rpc(&c[0], t) : (bf_msg_destroy(&t), NULL);
    ok = rep && !strcmp(bf_msg_type(rep), "OK");
    bf_msg_destroy(&rep);
    for (int i = 0; i < N && ok; i++) {
        bf_msg_t *j = task_req("JOIN", id++);
        bf_msg_set_bool(j, "own_data", 1), bf_msg_set_uint(j, "samples", 100 + i % 7);
        rep = rpc(&c[i], j);
        ok = rep && !strcmp(bf_msg_type(rep), "JOINED");
        bf_msg_destroy(&rep);
    }
    /* everyone takes the round (the task starts once all N are in) */
    bf_msg_t **rounds = calloc(N, sizeof *rounds);
    for (int i = 0; i < N && ok; i++) {
        for (int tries = 0; tries < 600; tries++) {
            rounds[i] = rpc(&c[i], task_req("ROUND_GET", id++));
            if (!rounds[i] || strcmp(bf_msg_type(rounds[i]), "WAIT")) break;
            bf_msg_destroy(&rounds[i]);
            zclock_sleep(50);
        }
        ok = rounds[i] && !strcmp(bf_msg_type(rounds[i]), "ROUND");
    }
    double cpu0 = proc_cpu(pid), t0 = bf_now();
    long base_kb = proc_kb(pid, "VmRSS:"); /* datasets, model, N connections: before any update */
    size_t np = 0, nb = 0;
    if (ok) bf_msg_frame(rounds[0], 0, &np), bf_msg_frame(rounds[0], 1, &nb);
    float *params = malloc(np + 4), *buffers = malloc(nb + 4);
    for (int i = 0; i < N && ok; i++) {
        bf_msg_frame_f32(rounds[i], 0, params, np / 4);
        bf_msg_frame_f32(rounds[i], 1, buffers, nb / 4);
        params[i % (np / 4)] += 0.001f;
        bf_msg_t *u = task_req("UPDATE", id++);
        bf_msg_set_uint(u, "round", 0), bf_msg_set_uint(u, "samples", 100), bf_msg_set_double(u, "loss", 1.0);
        bf_msg_add_f32(u, params, np / 4), bf_msg_add_f32(u, buffers, nb / 4);
        rep = rpc(&c[i], u);
        ok = rep && !strcmp(bf_msg_type(rep), "OK");
        bf_msg_destroy(&rep);
    }
    for (int tries = 0; tries < 6000 && ok; tries++) {
        rep = rpc(&c[0], task_req("ROUND_GET", id++));
        int done = rep && !strcmp(bf_msg_type(rep), "DONE");
        bf_msg_destroy(&rep);
        if (done) break;
        zclock_sleep(20);
    }
    res->round_s = bf_now() - t0;
    res->cpu_s = proc_cpu(pid) - cpu0;
    res->peak_mb = proc_kb(pid, "VmHWM:") / 1024.0;
    res->mb_per_client = (proc_kb(pid, "VmHWM:") - base_kb) / 1024.0 / N;
    res->ok = ok;
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    for (int i = 0; i < N; i++) {
        bf_msg_destroy(&rounds[i]);
        zsock_destroy(&c[i].sock);
        zcert_destroy(&c[i].cert);
    }
    free(rounds), free(c), free(params), free(buffers);
    return ok ? 0 : -1;
}

/* FedAvg over k ResNet8-sized updates, in process: bytes of updates read per second. */
static double agg_gbps(int k) {
    bf_err_t err;
    bf_net_t *net = bf_net_new("resnet8", 1, 28, 28, 10, 1, 1, &err);
    size_t np = bf_net_num_params(net), nb = bf_net_num_buffers(net);
    float **p = malloc(sizeof(float *) * k), **b = malloc(sizeof(float *) * k);
    int64_t *n = malloc(sizeof(int64_t) * k);
    for (int i = 0; i < k; i++) {
        p[i] = malloc(sizeof(float) * np), b[i] = malloc(sizeof(float) * nb), n[i] = 100 + i;
        memcpy(p[i], bf_net_params(net), sizeof(float) * np), memcpy(b[i], bf_net_buffers(net), sizeof(float) * nb);
    }
    bf_agg_opts_t o;
    bf_agg_parse("fedavg", &o, &err);
    bf_agg_t *a = bf_agg_new(&o, np, nb);
    double t0 = bf_now();
    int reps = 0;
    while (bf_now() - t0 < 1.0 || reps < 2) {
        bf_agg_apply(a, bf_net_params(net), bf_net_buffers(net), (const float *const *)p, (const float *const *)b, n, k, &err);
        reps++;
    }
    double gbps = (double)reps * k * (np + nb) * sizeof(float) / (bf_now() - t0) / 1e9;
    for (int i = 0; i < k; i++) free(p[i]), free(b[i]);
    free(p), free(b), free(n);
    bf_agg_destroy(&a);
    bf_net_destroy(&net);
    return gbps;
}

int bench_fed_main(int argc, char **argv) {
    static const struct option opts[] = {{"json", no_argument, 0, 'j'},
                                         {"clients", required_argument, 0, 'c'},
                                         {"coordinator", required_argument, 0, 'C'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    int json = 0, c;
    const char *list = "10,100,1000";
    char coord[4096] = "";
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 'j') json = 1;
        else if (c == 'c') list = optarg;
        else if (c == 'C') snprintf(coord, sizeof coord, "%s", optarg);
        else if (c == 'h')
            return printf("usage: blockfed-bench fed [--json] [--clients 10,100,1000] [--coordinator PATH]\n"), 0;
        else return 2;
    }
    if (!coord[0]) { /* beside this binary in the build tree */
        ssize_t n = readlink("/proc/self/exe", coord, sizeof coord - 64);
        coord[n > 0 ? n : 0] = 0;
        char *slash = strrchr(coord, '/');
        if (slash) strcpy(slash, "/../../coordinator/blockfed-coordinator");
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) rl.rlim_cur = rl.rlim_max, setrlimit(RLIMIT_NOFILE, &rl);
    zsys_set_max_sockets(0);
    zsys_init();
    zsys_set_logstream(NULL);
    char dir[] = "/tmp/blockfed-bench-fed-XXXXXX";
    if (!mkdtemp(dir)) return 1;
    write_idx(dir, "train", 2000);
    write_idx(dir, "t10k", 500);
    for (const char *p = list; *p;) {
        int N = atoi(p);
        result_t r = {0};
        if (N > 0 && run_one(coord, dir, N, &r) == 0) {
            double g = agg_gbps(N < 200 ? N : 200);
            if (json)
                printf("{\"bench\":\"fed\",\"clients\":%d,\"model\":\"resnet8\",\"round_s\":%.3f,\"coordinator_cpu_s\":%.3f,"
                       "\"coordinator_peak_mb\":%.1f,\"mb_per_client\":%.3f,\"aggregation_gb_per_s\":%.2f}\n",
                       N, r.round_s, r.cpu_s, r.peak_mb, r.mb_per_client, g);
            else
                printf("%5d clients: round %.2f s (first update -> DONE, incl. evaluation), coordinator CPU %.2f s, peak "
                       "%.0f MB (+%.2f MB per client for its update), FedAvg %.2f GB/s\n",
                       N, r.round_s, r.cpu_s, r.peak_mb, r.mb_per_client, g);
        } else {
            fprintf(stderr, "bench fed: %d clients failed (see %s/home-%d.log)\n", N, dir, N);
        }
        fflush(stdout);
        p = strchr(p, ',');
        if (!p) break;
        p++;
    }
    return 0;
}

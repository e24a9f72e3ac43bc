/* bench_web.c: `blockfed-bench web [--json] [--requests N] [--clients C] [--coordinator PATH]`
 * Paid single-image predictions over the HTTPS API beside the same over ZeroMQ + CURVE, in one
 * run against one real coordinator process (loopback, TLS verified against the certificate `init`
 * wrote): a ResNet8 (1x28x28) shareholding model whose fee is paid out to 10 shareholders. Each
 * of C clients (own account, own connection kept alive) sends N/C predictions one after another;
 * per transport: predictions per second, p50/p99 latency. The ledger must end with the task's
 * revenue equal to every fee reported.
 * The model's round: the 10 holders return the round's model unchanged (the bench measures
 * serving, not training), so the round is valued as truncated and the equal-split rule makes all
 * 10 shareholders. */
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>

#include "bf_ledger.h"
#include "bf_mp.h"
#include "bf_money.h"
#include "bf_util.h"
#include "bench_common.h"
#include "test_images.h"

#define SIDE 28
#define HOLDERS 10
#define ENDPOINT "tcp://127.0.0.1:27892"
#define HTTP_ADDR "127.0.0.1:27893"

typedef struct {
    bench_cli_t c;
    uint64_t id;
} zcli_t;

static bf_msg_t *zreq(zcli_t *c, const char *type) {
    bf_msg_t *m = bf_msg_new(type, ++c->id);
    if (strcmp(type, "REGISTER") && strcmp(type, "RECHARGE")) bf_msg_set_str(m, "task", "wb");
    return m;
}

static int zcall(zcli_t *c, bf_msg_t *m, const char *want) {
    bf_msg_t *rep = bench_rpc(&c->c, m);
    int ok = rep && !strcmp(bf_msg_type(rep), want);
    if (!ok) fprintf(stderr, "bench web: expected %s, got %s %s\n", want, rep ? bf_msg_type(rep) : "timeout",
                     rep && bf_msg_str(rep, "message") ? bf_msg_str(rep, "message") : "");
    bf_msg_destroy(&rep);
    return ok;
}

static void write_idx(const char *dir, const char *prefix, int n) {
    char path[700];
    snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte", dir, prefix);
    FILE *fi = fopen(path, "wb");
    snprintf(path, sizeof path, "%s/%s-labels-idx1-ubyte", dir, prefix);
    FILE *fl = fopen(path, "wb");
    bench_put_be32(fi, 0x803), bench_put_be32(fi, (uint32_t)n), bench_put_be32(fi, SIDE), bench_put_be32(fi, SIDE);
    bench_put_be32(fl, 0x801), bench_put_be32(fl, (uint32_t)n);
    for (int i = 0; i < n; i++) {
        uint8_t *px = ti_pattern(i % 4, SIDE, SIDE, 1, (uint32_t)i);
        fwrite(px, 1, SIDE * SIDE, fi);
        fputc(i % 4, fl);
        free(px);
    }
    fclose(fi), fclose(fl);
}

/* A holder's round: the model as it came, 256 samples claimed (own data). */
static int hold(zcli_t *c) {
    bf_msg_t *round = NULL;
    for (int tries = 0; tries < 2000; tries++) {
        round = bench_rpc(&c->c, zreq(c, "ROUND_GET"));
        if (!round || strcmp(bf_msg_type(round), "WAIT")) break;
        bf_msg_destroy(&round);
        zclock_sleep(20);
    }
    if (!round || strcmp(bf_msg_type(round), "ROUND")) return bf_msg_destroy(&round), 0;
    bf_msg_t *u = zreq(c, "UPDATE");
    size_t lp, lb;
    const uint8_t *p = bf_msg_frame(round, 0, &lp), *b = bf_msg_frame(round, 1, &lb);
    bf_msg_set_uint(u, "round", 0), bf_msg_set_uint(u, "samples", 256), bf_msg_set_double(u, "loss", 1);
    bf_msg_add_frame(u, p, lp), bf_msg_add_frame(u, b, lb);
    bf_msg_destroy(&round);
    return zcall(c, u, "OK");
}

typedef struct {
    int http, k, n, failures, run;
    pthread_barrier_t *go; /* set-up (register, login, recharge) done by all: the timed part starts */
    pthread_mutex_t *login; /* one login at a time: the coordinator counts logins in progress per address */
    const char *key, *cafile;
    const uint8_t *img;
    size_t len;
    int64_t paid;
    double *lat_ms;
} payer_t;

typedef struct {
    char *buf;
    size_t len;
} body_t;

static size_t sink(char *p, size_t s, size_t n, void *u) {
    body_t *b = u;
    char *nb = realloc(b->buf, b->len + s * n + 1);
    if (!nb) return 0;
    memcpy(nb + b->len, p, s * n);
    b->buf = nb, b->len += s * n, nb[b->len] = 0;
    return s * n;
}

/* One HTTPS request on a kept-alive handle; the HTTP status, the body in b. */
static long https(CURL *h, const char *method, const char *path, const char *bearer, const char *json, const uint8_t *raw,
                  size_t rawlen, body_t *b) {
    char url[256], auth[200];
    snprintf(url, sizeof url, "https://" HTTP_ADDR "%s", path);
    struct curl_slist *hs = NULL;
    if (bearer) snprintf(auth, sizeof auth, "Authorization: Bearer %s", bearer), hs = curl_slist_append(hs, auth);
    hs = curl_slist_append(hs, json ? "Content-Type: application/json" : "Content-Type: image/png");
    b->len = 0;
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hs);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, json ? json : (const char *)raw);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, json ? (long)strlen(json) : (long)rawlen);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, b);
    long status = 0;
    if (curl_easy_perform(h) == CURLE_OK) curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(hs);
    return status;
}

static void *payer_http(payer_t *p) {
    CURL *h = curl_easy_init();
    curl_easy_setopt(h, CURLOPT_CAINFO, p->cafile);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sink);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 60L);
    body_t b = {0};
    char json[200], token[128] = "";
    snprintf(json, sizeof json, "{\"username\":\"web%d-%d\",\"password\":\"bench password\"}", p->run, p->k);
    pthread_mutex_lock(p->login);
    long st1 = https(h, "POST", "/api/v1/auth/register", NULL, json, NULL, 0, &b);
    long st2 = st1 == 201 ? https(h, "POST", "/api/v1/auth/login", NULL, json, NULL, 0, &b) : 0;
    pthread_mutex_unlock(p->login);
    int ok = st1 == 201 && st2 == 200;
    if (!ok) fprintf(stderr, "bench web: register %ld, login %ld: %s\n", st1, st2, b.buf ? b.buf : "");
    cJSON *j = ok ? cJSON_Parse(b.buf) : NULL;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "token");
    if (cJSON_IsString(t)) snprintf(token, sizeof token, "%s", t->valuestring);
    cJSON_Delete(j);
    ok = ok && token[0] && https(h, "POST", "/api/v1/account/recharge", token, "{\"amount\":\"1000.00\"}", NULL, 0, &b) == 200;
    pthread_barrier_wait(p->go);
    for (int i = 0; i < p->n && ok; i++) {
        int64_t t0 = zclock_usecs();
        long st = https(h, "POST", "/api/v1/tasks/wb/predict?top=3", token, NULL, p->img, p->len, &b);
        p->lat_ms[i] = (double)(zclock_usecs() - t0) / 1000.0;
        cJSON *r = st == 200 ? cJSON_Parse(b.buf) : NULL;
        const cJSON *fee = cJSON_GetObjectItemCaseSensitive(r, "fee");
        int64_t cents = 0;
        if (cJSON_IsString(fee) && !bf_money_parse_amount(fee->valuestring, 2, &cents, NULL)) p->paid += cents;
        else p->failures++;
        cJSON_Delete(r);
    }
    if (!ok) p->failures = p->n;
    free(b.buf);
    curl_easy_cleanup(h);
    return NULL;
}

static void *payer_zmq(payer_t *p) {
    zcli_t c = {0};
    bench_cli_open(&c.c, ENDPOINT, p->key, 60000);
    char name[32];
    snprintf(name, sizeof name, "zmq%d-%d", p->run, p->k);
    bf_msg_t *r = zreq(&c, "REGISTER");
    bf_msg_set_str(r, "name", name);
    int ok = zcall(&c, r, "OK");
    r = zreq(&c, "RECHARGE");
    bf_msg_set_str(r, "amount", "1000.00");
    ok = ok && zcall(&c, r, "OK");
    pthread_barrier_wait(p->go);
    for (int i = 0; i < p->n && ok; i++) {
        bf_msg_t *m = zreq(&c, "PREDICT");
        bf_msg_set_uint(m, "top", 3);
        bf_msg_add_frame(m, p->img, p->len);
        int64_t t0 = zclock_usecs();
        bf_msg_t *rep = bench_rpc(&c.c, m);
        p->lat_ms[i] = (double)(zclock_usecs() - t0) / 1000.0;
        int64_t cents = 0;
        if (rep && !strcmp(bf_msg_type(rep), "PREDICTION") && !bf_money_parse_amount(bf_msg_str(rep, "fee"), 2, &cents, NULL))
            p->paid += cents;
        else p->failures++;
        bf_msg_destroy(&rep);
    }
    if (!ok) p->failures = p->n;
    zsock_destroy(&c.c.sock);
    zcert_destroy(&c.c.cert);
    return NULL;
}

static void *payer_main(void *arg) {
    payer_t *p = arg;
    return p->http ? payer_http(p) : payer_zmq(p);
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct {
    double per_s, p50, p99;
    double coord_cpu_us, client_cpu_us; /* CPU time per request: the coordinator's, the payers' */
    int failures;
    int64_t paid;
} figures_t;

/* CPU seconds (user + system) a process has used so far; 0 if unreadable. */
static double proc_cpu_s(pid_t pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f) fclose(f);
    buf[n] = 0;
    const char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    unsigned long long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2) return 0;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static double self_cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* C payers of n predictions each on one transport, all at once; the clock runs from when every
 * payer has set up its account to when the last is done. */
static figures_t run(pid_t coord, int runs, int http, int C, int n, const char *key, const char *cafile,
                     const uint8_t *img, size_t len) {
    payer_t ps[64];
    pthread_t th[64];
    pthread_barrier_t go;
    pthread_mutex_t login = PTHREAD_MUTEX_INITIALIZER;
    pthread_barrier_init(&go, NULL, (unsigned)C + 1);
    double *lat = calloc((size_t)C * n, sizeof *lat);
    for (int k = 0; k < C; k++)
        ps[k] = (payer_t){.http = http, .k = k, .n = n, .run = runs, .go = &go, .login = &login, .key = key, .cafile = cafile, .img = img,
                          .len = len, .lat_ms = lat + (size_t)k * n};
    for (int k = 0; k < C; k++) pthread_create(&th[k], NULL, payer_main, &ps[k]);
    pthread_barrier_wait(&go);
    double t0 = bf_now(), c0 = proc_cpu_s(coord), s0 = self_cpu_s();
    for (int k = 0; k < C; k++) pthread_join(th[k], NULL);
    double secs = bf_now() - t0, ccpu = proc_cpu_s(coord) - c0, scpu = self_cpu_s() - s0;
    pthread_barrier_destroy(&go);
    figures_t f = {0};
    for (int k = 0; k < C; k++) f.failures += ps[k].failures, f.paid += ps[k].paid;
    qsort(lat, (size_t)C * n, sizeof *lat, cmp_d);
    f.per_s = C * n / secs;
    f.coord_cpu_us = ccpu / (C * n) * 1e6;
    f.client_cpu_us = scpu / (C * n) * 1e6;
    f.p50 = lat[(size_t)(0.5 * (C * n - 1))];
    f.p99 = lat[(size_t)(0.99 * (C * n - 1))];
    free(lat);
    return f;
}

int bench_web_main(int argc, char **argv) {
    bench_load_opts_t lo = {.requests = 4000, .clients = 8};
    int arc = bench_load_args(argc, argv, "web", 1000000, &lo);
    if (arc) return arc == 1 ? 0 : 2;
    int json = lo.json, requests = lo.requests, clients = lo.clients;
    const char *coord = lo.coord;
    zsys_init();
    zsys_set_logstream(NULL);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    char dir[] = "/tmp/blockfed-bench-web-XXXXXX", home[700], spec[800], cafile[800], path[900], key[41] = {0};
    if (!mkdtemp(dir)) return 1;
    write_idx(dir, "train", 600);
    write_idx(dir, "t10k", 200);
    snprintf(home, sizeof home, "%s/home", dir);
    snprintf(spec, sizeof spec, "sim=%s", dir);
    snprintf(cafile, sizeof cafile, "%s/https.crt", home);
    const char *extra[] = {"--block-size", "100", "--http", HTTP_ADDR, "--recharge", "open:1000000", NULL};
    pid_t pid = bench_coord_start(coord, home, ENDPOINT, spec, extra, key);
    if (pid < 0) return fprintf(stderr, "bench web: %s init failed\n", coord), 1;

    zcli_t h[HOLDERS];
    int ok = 1;
    for (int k = 0; k < HOLDERS && ok; k++) {
        char name[32];
        snprintf(name, sizeof name, "holder%d", k);
        memset(&h[k], 0, sizeof h[k]);
        bench_cli_open(&h[k].c, ENDPOINT, key, 60000);
        bf_msg_t *r = zreq(&h[k], "REGISTER");
        bf_msg_set_str(r, "name", name);
        ok = zcall(&h[k], r, "OK");
    }
    bf_msg_t *t = zreq(&h[0], "TASK_CREATE");
    bf_msg_set_str(t, "name", "web bench"), bf_msg_set_str(t, "model", "resnet8"), bf_msg_set_str(t, "dataset", "sim");
    bf_msg_set_uint(t, "rounds", 1), bf_msg_set_str(t, "mode", "shareholding"), bf_msg_set_str(t, "fee", "0.10");
    bf_msg_set_uint(t, "min_clients", HOLDERS), bf_msg_set_uint(t, "local_epochs", 1), bf_msg_set_uint(t, "batch", 32);
    bf_msg_set_double(t, "lr", 0.05), bf_msg_set_uint(t, "round_timeout", 3600), bf_msg_set_str(t, "partition", "iid");
    bf_msg_set_str(t, "strategy", "fedavg");
    ok = ok && zcall(&h[0], t, "OK");
    for (int k = 0; k < HOLDERS && ok; k++) {
        bf_msg_t *j = zreq(&h[k], "JOIN");
        bf_msg_set_bool(j, "own_data", 1), bf_msg_set_uint(j, "samples", 256);
        ok = zcall(&h[k], j, "JOINED");
    }
    for (int k = 0; k < HOLDERS && ok; k++) ok = hold(&h[k]);
    int online = 0;
    for (int tries = 0; ok && tries < 3000 && !online; tries++) { /* settled and online */
        bf_msg_t *rep = bench_rpc(&h[0].c, zreq(&h[0], "TASK_STATUS"));
        const msgpack_object *st = rep ? bf_msg_any(rep, "status") : NULL;
        const msgpack_object *s = st ? bf_mp_get(st, "state") : NULL;
        online = s && s->type == MSGPACK_OBJECT_STR && s->via.str.size == 9 && !memcmp(s->via.str.ptr, "completed", 9);
        bf_msg_destroy(&rep);
        if (!online) zclock_sleep(20);
    }
    for (int k = 0; k < HOLDERS; k++) zsock_destroy(&h[k].c.sock), zcert_destroy(&h[k].c.cert);
    if (!ok || !online) {
        kill(pid, SIGTERM), waitpid(pid, NULL, 0);
        return fprintf(stderr, "bench web: setting up the model failed (see %s.log)\n", home), 1;
    }
    size_t len;
    uint8_t *img = ti_encode('p', 2, SIDE, SIDE, 1, 77, &len);
    int per = requests / clients;
    figures_t warm = run(pid, 1, 1, 1, 50, key, cafile, img, len); /* first-touch costs out of the figures */
    figures_t z1 = run(pid, 2, 0, 1, per, key, cafile, img, len), w1 = run(pid, 3, 1, 1, per, key, cafile, img, len);
    figures_t z = run(pid, 4, 0, clients, per, key, cafile, img, len);
    figures_t w = run(pid, 5, 1, clients, per, key, cafile, img, len);
    /* the ledger: the task's revenue is every fee reported */
    snprintf(path, sizeof path, "%s/ledger.db", home);
    bf_err_t err;
    bf_ledger_t *L = bf_ledger_open(path, &err);
    bf_ledger_task_t info = {0};
    bf_ledger_share_t *sh = NULL;
    size_t nsh = 0;
    for (int64_t id = 1; L && id < 4; id++)
        if (bf_ledger_task_get(L, id, &info, NULL) == 0 && info.mode == BF_LEDGER_MODE_SHAREHOLDING) break;
    if (L) bf_ledger_task_shares(L, info.id, &sh, &nsh, NULL);
    int64_t paid = warm.paid + z1.paid + w1.paid + z.paid + w.paid;
    int exact = L && info.total_revenue == paid;
    free(sh);
    bf_ledger_close(&L);
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    double ratio = z.per_s > 0 ? w.per_s / z.per_s : 0;
    int failures = warm.failures + z1.failures + w1.failures + z.failures + w.failures;
    if (json)
        printf("{\"bench\":\"web\",\"model\":\"resnet8\",\"input\":\"1x28x28\",\"shareholders\":%zu,\"clients\":%d,"
               "\"requests_per_client\":%d,"
               "\"zmq\":{\"per_s\":%.0f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"one_client_p50_ms\":%.3f,\"one_client_p99_ms\":%.3f,"
               "\"coordinator_cpu_us\":%.0f,\"client_cpu_us\":%.0f},"
               "\"https\":{\"per_s\":%.0f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"one_client_p50_ms\":%.3f,\"one_client_p99_ms\":%.3f,"
               "\"coordinator_cpu_us\":%.0f,\"client_cpu_us\":%.0f},"
               "\"https_vs_zmq\":%.3f,\"failures\":%d,\"fees_cents\":%lld,\"ledger_exact\":%s}\n",
               nsh, clients, per, z.per_s, z.p50, z.p99, z1.p50, z1.p99, z.coord_cpu_us, z.client_cpu_us, w.per_s, w.p50,
               w.p99, w1.p50, w1.p99, w.coord_cpu_us, w.client_cpu_us, ratio, failures, (long long)paid,
               exact ? "true" : "false");
    else
        printf("ResNet8 1x28x28, paid single-image predictions, fee paid out to %zu shareholders\n"
               "                    %d clients x %d: throughput, p50, p99   CPU per request: coordinator, payers"
               "   1 client: p50, p99\n"
               "  ZeroMQ + CURVE:   %6.0f/s %7.3f ms %7.3f ms   %6.0f us %6.0f us   %7.3f ms %7.3f ms\n"
               "  HTTPS keep-alive: %6.0f/s %7.3f ms %7.3f ms   %6.0f us %6.0f us   %7.3f ms %7.3f ms\n"
               "  HTTPS / ZeroMQ throughput: %.2f; %d failed; fees %lld cents; ledger revenue == fees: %s\n",
               nsh, clients, per, z.per_s, z.p50, z.p99, z.coord_cpu_us, z.client_cpu_us, z1.p50, z1.p99, w.per_s, w.p50,
               w.p99, w.coord_cpu_us, w.client_cpu_us, w1.p50, w1.p99, ratio, failures, (long long)paid,
               exact ? "yes" : "NO");
    free(img);
    curl_global_cleanup();
    snprintf(path, sizeof path, "rm -rf '%s'", dir);
    if (system(path)) return 1;
    return failures || !exact ? 1 : 0;
}

/* bench_common.h: what the benchmarks that drive a real coordinator share: a simulated client
 * (its own CURVE key and DEALER socket) and one request/reply, and big-endian IDX headers. */
#ifndef BF_BENCH_COMMON_H
#define BF_BENCH_COMMON_H

#include <czmq.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "bf_proto.h"

typedef struct {
    zcert_t *cert;
    zsock_t *sock;
} bench_cli_t;

/* A fresh client key on a DEALER socket connected with CURVE to the coordinator at endpoint. */
static inline void bench_cli_open(bench_cli_t *c, const char *endpoint, const char *server_key, int rcvtimeo_ms) {
    c->cert = zcert_new();
    c->sock = zsock_new(ZMQ_DEALER);
    zcert_apply(c->cert, c->sock);
    zsock_set_curve_serverkey(c->sock, server_key);
    zsock_set_rcvtimeo(c->sock, rcvtimeo_ms);
    zsock_connect(c->sock, "%s", endpoint);
}

/* Makes a fresh coordinator home (key[41] receives its public key) and starts
 * `coord run --home HOME --bind ENDPOINT --dataset SPEC --liveness 600 EXTRA...` with its output
 * in HOME.log. extra: NULL-terminated, at most 8 arguments. Returns the pid, or -1. */
static inline pid_t bench_coord_start(const char *coord, const char *home, const char *endpoint, const char *spec,
                                      const char *const *extra, char key[41]) {
    char cmd[9000], path[720], line[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && '%s' init --home '%s' > '%s.key'", home, coord, home, home);
    if (system(cmd)) return -1;
    snprintf(path, sizeof path, "%s.key", home);
    FILE *f = fopen(path, "r");
    memset(key, 0, 41);
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "server public key: ", 19)) memcpy(key, line + 19, 40);
    if (f) fclose(f);
    const char *argv[20] = {coord, "run", "--home", home, "--bind", endpoint, "--dataset", spec, "--liveness", "600"};
    for (int i = 0, k = 10; extra && extra[i] && i < 8; i++) argv[k++] = extra[i];
    snprintf(path, sizeof path, "%s.log", home);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, 1), dup2(fd, 2);
        execv(coord, (char *const *)argv);
        _exit(127);
    }
    return pid;
}

/* Sends req (consumed) and returns the decoded reply carrying its id, or NULL on timeout. */
static inline bf_msg_t *bench_rpc(bench_cli_t *c, bf_msg_t *req) {
    bf_err_t err;
    uint64_t id = bf_msg_id(req);
    zmsg_t *z = bf_msg_encode(req, &err);
    bf_msg_destroy(&req);
    if (!z) return NULL;
    zmsg_send(&z, c->sock);
    for (;;) {
        zmsg_t *in = zmsg_recv(c->sock);
        if (!in) return NULL;
        bf_msg_t *m = bf_msg_decode(&in, NULL, &err);
        if (m && bf_msg_id(m) == id) return m;
        bf_msg_destroy(&m);
    }
}

/* The options of the benches that drive a coordinator with paying clients:
 * --json --requests N --clients C --coordinator PATH (default: the build tree's, beside this
 * binary). */
typedef struct {
    int json, requests, clients;
    char coord[4096];
} bench_load_opts_t;

/* Parses them over the defaults in o (requests in 100..max_requests, clients 1..64). 0 to run,
 * 1 after printing the help, 2 on a usage error (printed). */
static inline int bench_load_args(int argc, char **argv, const char *name, int max_requests, bench_load_opts_t *o) {
    static const struct option opts[] = {{"json", no_argument, 0, 'j'},          {"requests", required_argument, 0, 'n'},
                                         {"clients", required_argument, 0, 'c'}, {"coordinator", required_argument, 0, 'C'},
                                         {"help", no_argument, 0, 'h'},         {0, 0, 0, 0}};
    int c, dflt = o->requests;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 'j') o->json = 1;
        else if (c == 'n') o->requests = atoi(optarg);
        else if (c == 'c') o->clients = atoi(optarg);
        else if (c == 'C') snprintf(o->coord, sizeof o->coord, "%s", optarg);
        else if (c == 'h')
            return printf("usage: blockfed-bench %s [--json] [--requests N (%d)] [--clients C (8)] [--coordinator PATH]\n",
                          name, dflt),
                   1;
        else return 2;
    }
    if (o->requests < 100 || o->requests > max_requests || o->clients < 1 || o->clients > 64)
        return fprintf(stderr, "bench %s: --requests 100..%d, --clients 1..64\n", name, max_requests), 2;
    if (!o->coord[0]) { /* beside this binary in the build tree */
        ssize_t n = readlink("/proc/self/exe", o->coord, sizeof o->coord - 64);
        o->coord[n > 0 ? n : 0] = 0;
        char *slash = strrchr(o->coord, '/');
        if (slash) strcpy(slash, "/../../coordinator/blockfed-coordinator");
    }
    return 0;
}

static inline void bench_put_be32(FILE *f, uint32_t v) {
    uint8_t b[4] = {v >> 24, v >> 16, v >> 8, v};
    fwrite(b, 1, 4, f);
}

#endif

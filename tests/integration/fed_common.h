/* fed_common.h: what the federation integration tests share: a small generated IDX dataset, a
 * coordinator home and process, a CURVE client speaking the protocol, and (fed_cli_*) the fixture
 * of the tests that drive blockfed-coordinator and blockfed-client as processes. */
#ifndef BF_FED_COMMON_H
#define BF_FED_COMMON_H

#include <czmq.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bf_datasets.h"
#include "bf_proto.h"
#include "bf_spawn.h"
#include "test.h"

static inline void fed_put_be32(FILE *f, uint32_t v) {
    uint8_t b[4] = {v >> 24, v >> 16, v >> 8, v};
    fwrite(b, 1, 4, f);
}

/* side x side images, 4 classes: a bright (side/2)-square in the class's quadrant plus noise. */
static inline void fed_write_split_sized(const char *dir, const char *prefix, int n, uint64_t seed, int side) {
    char path[700];
    bf_rng_t r;
    bf_rng_seed(&r, seed);
    snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte", dir, prefix);
    FILE *fi = fopen(path, "wb");
    snprintf(path, sizeof path, "%s/%s-labels-idx1-ubyte", dir, prefix);
    FILE *fl = fopen(path, "wb");
    if (!fi || !fl) { /* the test's directory is missing or read-only: nothing to test with */
        fprintf(stderr, "cannot write %s (BF_TEST_TMP=%s)\n", path, bf_test_tmpdir());
        exit(1);
    }
    fed_put_be32(fi, 0x803), fed_put_be32(fi, n), fed_put_be32(fi, side), fed_put_be32(fi, side);
    fed_put_be32(fl, 0x801), fed_put_be32(fl, n);
    int half = side / 2;
    for (int i = 0; i < n; i++) {
        int c = (int)bf_rng_below(&r, 4);
        fputc(c, fl);
        for (int h = 0; h < side; h++)
            for (int w = 0; w < side; w++) {
                int on = (h < half) == (c < 2) && (w < half) == (c % 2 == 0);
                fputc((on ? 170 : 40) + (int)bf_rng_below(&r, 60), fi);
            }
    }
    fclose(fi);
    fclose(fl);
}

/* 16x16 images (what the in-process participants train on). */
static inline void fed_write_split(const char *dir, const char *prefix, int n, uint64_t seed) {
    fed_write_split_sized(dir, prefix, n, seed, 16);
}

/* With BF_TEST_PG_URL_FILE set (the ctest PostgreSQL fixture's connection-string file), the home's
 * ledger is a fresh database on that cluster (`init --ledger URL`), named after the home: the same
 * test then runs against PostgreSQL. Without it: the SQLite file, as always. 0, or -1 (no cluster
 * or no database: the test fails, it does not fall back). */
static inline int fed_pg_ledger(const char *home, char *url, size_t cap) {
    const char *file = getenv("BF_TEST_PG_URL_FILE");
    url[0] = 0;
    if (!file) return 0;
    char base[512], db[64], cmd[1200];
    FILE *f = fopen(file, "r");
    int ok = f && fgets(base, sizeof base, f);
    if (f) fclose(f);
    if (!ok) return fprintf(stderr, "BF_TEST_PG_URL_FILE=%s: no PostgreSQL cluster\n", file), -1;
    base[strcspn(base, "\r\n")] = 0;
    const char *name = strrchr(home, '/') ? strrchr(home, '/') + 1 : home;
    snprintf(db, sizeof db, "bf_%.*s_%d", 40, name, (int)getpid());
    for (char *c = db; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9'))) *c = '_';
    snprintf(cmd, sizeof cmd, "psql -qX '%s' -c 'DROP DATABASE IF EXISTS %s' -c 'CREATE DATABASE %s' >/dev/null", base, db, db);
    if (system(cmd) != 0) return fprintf(stderr, "could not create database %s on %s\n", db, base), -1;
    snprintf(url, cap, "%.*s/%s", (int)(strrchr(base, '/') - base), base, db);
    return 0;
}

/* Runs `blockfed-coordinator init` and reads the server key from its output. */
static inline int fed_init_home(const char *coord, const char *home, char key[41]) {
    char out[1024], url[700];
    snprintf(out, sizeof out, "%s.init.out", home);
    if (fed_pg_ledger(home, url, sizeof url)) return -1;
    const char *args[] = {"init", "--home", home, url[0] ? "--ledger" : NULL, url, NULL};
    if (bf_spawn(coord, args, out, 1) != 0) return -1;
    const char *k = strstr(bf_slurp(out), "server public key: ");
    if (!k) return -1;
    memcpy(key, k + 19, 40);
    key[40] = 0;
    return 0;
}

/* A fresh data directory NAME-data (ntrain / ntest generated images, seeded) and an initialized
 * coordinator home NAME-home under the test scratch directory; spec becomes "tiny=DATA". */
static inline int fed_prepare(const char *coord, const char *name, int ntrain, int ntest, uint64_t seed, char *home,
                              size_t hcap, char *spec, size_t scap, char key[41]) {
    char dir[512], cmd[1400];
    snprintf(dir, sizeof dir, "%s/%s-data", bf_test_tmpdir(), name);
    snprintf(home, hcap, "%s/%s-home", bf_test_tmpdir(), name);
    mkdir(dir, 0755);
    fed_write_split(dir, "train", ntrain, seed);
    fed_write_split(dir, "t10k", ntest, seed + 1);
    snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s.log'", home, home);
    if (system(cmd) != 0) return -1;
    snprintf(spec, scap, "tiny=%s", dir);
    return fed_init_home(coord, home, key);
}

/* Starts `blockfed-coordinator run` in the background (stdout to home.log). */
static inline pid_t fed_start(const char *coord, const char *home, const char *endpoint, const char *dataset_spec,
                       const char *const *extra) {
    char log[1024];
    snprintf(log, sizeof log, "%s.log", home);
    struct stat st0;
    off_t from = stat(log, &st0) == 0 ? st0.st_size : 0; /* a restart appends to the same log */
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* a test that dies must not leave its coordinator running */
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        dup2(fd, 1), dup2(fd, 2);
        const char *argv[32] = {coord, "run", "--home", home, "--bind", endpoint, "--dataset", dataset_spec};
        int n = 8;
        for (int i = 0; extra && extra[i] && n < 31; i++) argv[n++] = extra[i];
        argv[n] = NULL;
        execv(coord, (char **)argv);
        _exit(127);
    }
    /* Until it says it listens: a coordinator that exits first (the port taken by another run, a
     * bad flag) stops the test now, with its log, instead of every call timing out in turn. */
    for (int i = 0; i < 300 && pid > 0; i++) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            fprintf(stderr, "the coordinator exited at start:\n%s\n", bf_slurp(log));
            exit(1);
        }
        FILE *f = fopen(log, "r");
        char line[512];
        int up = 0;
        if (f && fseeko(f, from, SEEK_SET) == 0)
            while (!up && fgets(line, sizeof line, f)) up = strstr(line, "listening on") != NULL;
        if (f) fclose(f);
        if (up) break;
        usleep(100 * 1000);
    }
    return pid;
}

static inline void fed_stop(pid_t pid, int sig) {
    if (pid <= 0) return;
    kill(pid, sig);
    int st;
    waitpid(pid, &st, 0);
}

/* What a test driving the real programs needs: a scratch directory holding a generated dataset
 * and an initialized coordinator home, the coordinator's endpoint and key, and a file for the
 * last command's output. */
typedef struct {
    const char *coord, *client; /* blockfed-coordinator, blockfed-client */
    const char *timeout;        /* blockfed-client --timeout for fed_cli_run ("10" unless changed) */
    char dir[512];              /* the scratch directory: the users' homes go in it */
    char home[600];             /* the coordinator's home: DIR/coordinator */
    char spec[700];             /* --dataset: tiny=DIR/data */
    char out[700];              /* stdout of the last fed_cli_run / fed_cli_ledger */
    char ep[64];                /* the coordinator's endpoint */
    char key[41];               /* its server public key */
} fed_cli_t;

/* DIR = the test scratch directory's NAME, made afresh, with DIR/data (ntrain / ntest generated
 * side x side images, seeds seed and seed + 1) and DIR/coordinator initialized. 0, or -1. */
static inline int fed_cli_prepare(fed_cli_t *f, const char *coord, const char *client, const char *name, const char *ep,
                                  int side, int ntrain, int ntest, uint64_t seed) {
    char data[600], cmd[1400];
    memset(f, 0, sizeof *f);
    f->coord = coord, f->client = client, f->timeout = "10";
    snprintf(f->dir, sizeof f->dir, "%s/%s", bf_test_tmpdir(), name);
    snprintf(data, sizeof data, "%s/data", f->dir);
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", f->dir, data);
    if (system(cmd) != 0) return -1;
    fed_write_split_sized(data, "train", ntrain, seed, side);
    fed_write_split_sized(data, "t10k", ntest, seed + 1, side);
    snprintf(f->home, sizeof f->home, "%s/coordinator", f->dir);
    snprintf(f->spec, sizeof f->spec, "tiny=%s", data);
    snprintf(f->out, sizeof f->out, "%s/out.txt", f->dir);
    snprintf(f->ep, sizeof f->ep, "%s", ep);
    return fed_init_home(coord, f->home, f->key);
}

/* fed_start on the fixture's home, endpoint and dataset. */
static inline pid_t fed_cli_start(const fed_cli_t *f, const char *const *extra) {
    return fed_start(f->coord, f->home, f->ep, f->spec, extra);
}

/* blockfed-client --home HOME --timeout T args... ; its exit status, stdout in f->out. */
static inline int fed_cli_run(const fed_cli_t *f, const char *home, const char *const *args) {
    const char *all[40] = {"--home", home, "--timeout", f->timeout};
    int n = 4;
    for (int i = 0; args[i] && n < 39; i++) all[n++] = args[i];
    all[n] = NULL;
    return bf_spawn(f->client, all, f->out, 0);
}

/* blockfed-client register NAME with the fixture's coordinator, into HOME. */
static inline int fed_cli_register(const fed_cli_t *f, const char *home, const char *name) {
    const char *args[] = {"register", name, "--coordinator", f->ep, "--server-key", f->key, NULL};
    return fed_cli_run(f, home, args);
}

/* blockfed-coordinator ledger args... --home HOME; its exit status, stdout in f->out. */
static inline int fed_cli_ledger(const fed_cli_t *f, const char *const *args) {
    const char *all[40] = {"ledger"};
    int n = 1;
    for (int i = 0; args[i] && n < 37; i++) all[n++] = args[i];
    all[n++] = "--home";
    all[n++] = f->home;
    all[n] = NULL;
    return bf_spawn(f->coord, all, f->out, 0);
}

/* blockfed-client --home DIR/USER rest... (bf_spawn_user: output into DIR/USER.cli, printed if it
 * fails); its exit status. */
static inline int fed_cli_user(const fed_cli_t *f, const char *user, const char *const *rest) {
    return bf_spawn_user(f->client, f->dir, user, rest);
}

/* `blockfed-client join TASK --threads 1 --quiet --save-updates DIR/USER-updates` as USER in the
 * background, its output into DIR/USER.join; its pid. */
static inline pid_t fed_cli_join_bg(const fed_cli_t *f, const char *user, const char *task) {
    char h[700], upd[700], log[700];
    snprintf(h, sizeof h, "%s/%s", f->dir, user);
    snprintf(upd, sizeof upd, "%s/%s-updates", f->dir, user);
    snprintf(log, sizeof log, "%s/%s.join", f->dir, user);
    mkdir(upd, 0755);
    const char *args[] = {"--home", h, "join", task, "--threads", "1", "--quiet", "--save-updates", upd, NULL};
    return bf_spawn_bg(f->client, args, log);
}

/* The end of a run: the coordinator stopped, `ledger verify` on its home must pass (its stderr
 * shown), and the coordinator's log printed if any check failed. */
static inline void fed_cli_finish(const fed_cli_t *f, pid_t coordinator) {
    char out[900];
    fed_stop(coordinator, SIGTERM);
    snprintf(out, sizeof out, "%s/verify.out", f->dir);
    CHECK(bf_spawn(f->coord, (const char *const[]){"ledger", "verify", "--home", f->home, NULL}, out, 1) == 0);
    if (bf_test_failures) {
        snprintf(out, sizeof out, "%s.log", f->home);
        fprintf(stderr, "--- coordinator ---\n%s\n", bf_slurp(out));
    }
}

/* A participant: its own CURVE certificate and DEALER socket. */
typedef struct {
    zcert_t *cert;
    zsock_t *sock;
    uint64_t next_id;
} fed_client_t;

static inline void fed_client_open(fed_client_t *c, const char *endpoint, const char *server_key) {
    memset(c, 0, sizeof *c);
    c->cert = zcert_new();
    c->sock = zsock_new(ZMQ_DEALER);
    zcert_apply(c->cert, c->sock);
    zsock_set_curve_serverkey(c->sock, server_key);
    zsock_set_rcvtimeo(c->sock, 20000);
    zsock_connect(c->sock, "%s", endpoint);
    c->next_id = 1000;
}

static inline void fed_client_close(fed_client_t *c) {
    zsock_destroy(&c->sock);
    zcert_destroy(&c->cert);
}

/* Sends req (consumed) and returns the decoded reply with the same id, or NULL on timeout. */
static inline bf_msg_t *fed_call(fed_client_t *c, bf_msg_t *req) {
    bf_err_t err;
    uint64_t id = bf_msg_id(req);
    zmsg_t *z = bf_msg_encode(req, &err);
    bf_msg_destroy(&req);
    if (!z) {
        fprintf(stderr, "encode: %s\n", err.msg);
        return NULL;
    }
    zmsg_send(&z, c->sock);
    for (;;) {
        zmsg_t *in = zmsg_recv(c->sock);
        if (!in) return NULL;
        bf_msg_t *rep = bf_msg_decode(&in, NULL, &err);
        if (rep && bf_msg_id(rep) == id) return rep;
        bf_msg_destroy(&rep);
    }
}

static inline bf_msg_t *fed_req(fed_client_t *c, const char *type) { return bf_msg_new(type, c->next_id++); }

static inline int fed_is(const bf_msg_t *m, const char *type) { return m && !strcmp(bf_msg_type(m), type); }

static inline const char *fed_code(const bf_msg_t *m) { return fed_is(m, "ERROR") ? bf_msg_str(m, "code") : ""; }

#endif

/* cmd_join.c: `blockfed-client join ID`: the trainer. Joins a task, fetches (or reuses cached)
 * data blocks, then loops ROUND_GET -> train -> UPDATE until the task is DONE
 * (docs/PROTOCOL.md section 9). Everything the coordinator sends is checked against the model
 * and the data before use; requests that time out are retried on a fresh socket.
 *
 * Each step (HELLO, JOIN, a block, a round) comes to a join_step_t: go on, retry after a backoff,
 * stop on an error, or stop because the task is done; only bf_cmd_join turns that into the
 * command's outcome. */
#include <dirent.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bf_blockcache.h"
#include "bf_mp.h"
#include "bf_render.h"
#include "bf_trainer.h"
#include "client.h"

#define MAX_BLOCKS 100000   /* blocks one participant may be assigned */
#define RETRY_MIN_MS 1000
#define RETRY_MAX_MS 30000

typedef struct {
    const char *task, *data, *save_dir;
    int threads, quiet;
} join_args_t;

typedef struct {
    const bf_cli_ctx_t *ctx;
    const join_args_t *a;
    bf_profile_t prof;
    bf_conn_t *conn;
    int session;          /* bf_conn_reconnects() when HELLO last succeeded; -1: never */
    uint64_t salt;        /* mixes the participant's key into ROUND.seed */
    bf_dataset_t data;
    int shaped;           /* own data: converted to the model's input already */
    bf_net_t *net;
    int net_batch;
    float *center;        /* the round's global parameters (FedProx) */
    int retry_ms;
} join_t;

static const char join_help[] =
    "usage: blockfed-client join ID [--data PATH] [--threads T] [--save-updates DIR] [--quiet]\n"
    "\n"
    "Joins task ID and trains its rounds until the task ends: fetches the assigned data blocks\n"
    "(verified by SHA-256, cached in the profile) or uses your own data, then for every round\n"
    "trains the global model locally and sends the update. Reconnects by itself; Ctrl-C stops.\n"
    "\n"
    "  --data PATH          train on your own dataset (IDX, CIFAR-10 binary or image folder)\n"
    "                       instead of the coordinator's blocks\n"
    "  --threads T          worker threads (default: all cores)\n"
    "  --save-updates DIR   also write each update sent as DIR/round-R.bfm (a model file)\n"
    "  --quiet              no progress bar\n"
    "\n"
    "Prints one line per round: 'round r/R: loss L, N images, T s', and the result hash at the end.\n"
    "exit status: 0 the task finished, 1 runtime or coordinator error or interrupted, 2 usage error\n";

static bf_cli_args_t parse_join(int argc, char **argv, bf_cli_ctx_t *ctx, join_args_t *a) {
    static const struct option opts[] = {
        {"data", required_argument, 0, 'd'},   {"threads", required_argument, 0, 't'},
        {"save-updates", required_argument, 0, 's'}, {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'},         BF_CLI_COMMON_OPTS, {0, 0, 0, 0}};
    *a = (join_args_t){.threads = (int)sysconf(_SC_NPROCESSORS_ONLN)};
    if (a->threads < 1) a->threads = 1;
    int c;
    bf_cli_args_t rc = CLIENT_ARGS_OK;
    long long v;
    bf_err_t err;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (bf_cli_common_opt(c, optarg, ctx, &rc)) {
            if (rc) return rc;
            continue;
        }
        switch (c) {
        case 'd': a->data = optarg; break;
        case 't': if (bf_cli_int(optarg, 1, 256, &v, "--threads")) return CLIENT_ARGS_BAD; a->threads = (int)v; break;
        case 's': a->save_dir = optarg; break;
        case 'q': a->quiet = 1; break;
        case 'h': fputs(join_help, stdout); return CLIENT_ARGS_HELP;
        default: return CLIENT_ARGS_BAD;
        }
    }
    if (optind + 1 != argc) return bf_cli_error("join takes exactly one task ID");
    a->task = argv[optind];
    if (bf_check_name(a->task, 64, "task ID", &err)) return bf_cli_error("%s", err.msg);
    return CLIENT_ARGS_OK;
}

static uint64_t fnv1a(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static void say(const join_t *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(const join_t *j, const char *fmt, ...) {
    (void)j;
    va_list ap;
    va_start(ap, fmt);
    char msg[2048]; /* may quote the coordinator: sanitised for the terminal (bf_render.h) */
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "blockfed-client: ");
    bf_render_string(stderr, msg);
    fprintf(stderr, "\n");
}

/* ---- requests ---------------------------------------------------------------------------- */

/* Status of a request in the loop: a reply, a coordinator ERROR (its code: code_of), no usable
 * reply (reported), or Ctrl-C. */
typedef enum { REQ_OK, REQ_ERROR, REQ_FAILED, REQ_INTERRUPTED } req_status_t;

/* What a step of the trainer comes to. */
typedef enum {
    STEP_OK,        /* done: go on */
    STEP_FATAL,     /* an error asking again cannot help, or Ctrl-C (reported): stop, exit status 1 */
    STEP_RETRY,     /* no usable answer now: back off and try again */
    STEP_TASK_DONE, /* the coordinator says the task is DONE: stop, exit status 0 */
} join_step_t;

static bf_msg_t *task_req(const join_t *j, const char *type) {
    bf_msg_t *m = bf_msg_new(type, 0);
    if (m && bf_msg_set_str(m, "task", j->a->task)) bf_msg_destroy(&m);
    return m;
}

/* One idempotent request with retries; an ERROR reply is returned too (status REQ_ERROR). */
static req_status_t ask(join_t *j, bf_msg_t **req, bf_msg_t **reply, int quiet_timeout) {
    bf_err_t err;
    if (!*req) return say(j, "out of memory"), REQ_FAILED;
    char type[32];
    snprintf(type, sizeof type, "%s", bf_msg_type(*req));
    *reply = bf_conn_call(j->conn, req, j->ctx->timeout_ms, 2, &err);
    if (!*reply) {
        if (bf_conn_status(j->conn) == BF_CONN_INTERRUPTED || zsys_interrupted) return REQ_INTERRUPTED;
        if (!quiet_timeout || bf_conn_status(j->conn) != BF_CONN_TIMEOUT) say(j, "%s: %s", type, err.msg);
        return REQ_FAILED;
    }
    return strcmp(bf_msg_type(*reply), "ERROR") ? REQ_OK : REQ_ERROR;
}

/* An ERROR's code as sent, for messages. */
static const char *code_text(const bf_msg_t *m) { return bf_msg_str(m, "code") ? bf_msg_str(m, "code") : "INTERNAL"; }

/* An ERROR's code; one this client does not know (a newer coordinator's) counts as INTERNAL,
 * which is retried. */
static bf_proto_code_t code_of(const bf_msg_t *m) {
    int code = bf_proto_code_parse(bf_msg_str(m, "code"));
    return code < 0 ? BF_PROTO_INTERNAL : (bf_proto_code_t)code;
}

static void say_error(const join_t *j, const char *what, const bf_msg_t *m) {
    char msg[600];
    const char *s = bf_msg_str(m, "message");
    size_t i = 0;
    for (; s && s[i] && i + 1 < sizeof msg; i++) msg[i] = (unsigned char)s[i] < 0x20 ? '?' : s[i];
    msg[i] = 0;
    say(j, "%s: coordinator: %s: %s", what, code_text(m), msg);
}

/* HELLO after every new socket: the coordinator wants to see it, and it tells us whether the key
 * is registered. */
static join_step_t ensure_session(join_t *j) {
    if (j->session == bf_conn_reconnects(j->conn)) return STEP_OK;
    bf_msg_t *req = bf_msg_new("HELLO", 0), *rep = NULL;
    req_status_t st = ask(j, &req, &rep, 0);
    join_step_t rc = st == REQ_OK ? STEP_OK : st == REQ_FAILED ? STEP_RETRY : STEP_FATAL;
    if (st == REQ_ERROR) {
        say_error(j, "HELLO", rep);
    } else if (st == REQ_OK && strcmp(bf_msg_type(rep), "WELCOME")) {
        say(j, "HELLO: unexpected %s", bf_msg_type(rep));
        rc = STEP_RETRY;
    } else if (st == REQ_OK && !bf_msg_has(rep, "user")) {
        say(j, "this key is not registered with %s; run 'blockfed-client register' first", j->prof.coordinator);
        rc = STEP_FATAL;
    }
    if (rc == STEP_OK) j->session = bf_conn_reconnects(j->conn);
    bf_msg_destroy(&req);
    bf_msg_destroy(&rep);
    return rc;
}

/* ---- data -------------------------------------------------------------------------------- */

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* JOINED.blocks: an array of distinct block numbers 0..10^7. */
static int parse_blocks(const msgpack_object *o, uint64_t **ids, size_t *n, bf_err_t *err) {
    *ids = NULL, *n = 0;
    if (!o || o->type != MSGPACK_OBJECT_ARRAY) return bf_err_set(err, "JOINED.blocks is not an array");
    if (o->via.array.size > MAX_BLOCKS) return bf_err_set(err, "JOINED lists %u blocks (at most %d)", o->via.array.size, MAX_BLOCKS);
    uint64_t *v = malloc(sizeof *v * (o->via.array.size + 1));
    if (!v) return bf_err_set(err, "out of memory");
    for (uint32_t i = 0; i < o->via.array.size; i++) {
        const msgpack_object *e = &o->via.array.ptr[i];
        if (e->type != MSGPACK_OBJECT_POSITIVE_INTEGER || e->via.u64 > 10000000) {
            free(v);
            return bf_err_set(err, "JOINED.blocks[%u] is not a block number", i);
        }
        v[i] = e->via.u64;
    }
    qsort(v, o->via.array.size, sizeof *v, cmp_u64);
    for (uint32_t i = 1; i < o->via.array.size; i++)
        if (v[i] == v[i - 1]) {
            unsigned long long dup = v[i];
            free(v);
            return bf_err_set(err, "JOINED.blocks lists block %llu twice", dup);
        }
    *ids = v, *n = o->via.array.size;
    return 0;
}

/* Block ids found in the cache directory (used when the coordinator says we joined already and
 * so does not repeat the block list); none when the directory is missing. -1 (reported): out of
 * memory. */
static int cached_blocks(const join_t *j, uint64_t **ids, size_t *n) {
    char dir[PATH_MAX + 80];
    snprintf(dir, sizeof dir, "%s/blocks/%s", j->prof.home, j->a->task);
    *ids = malloc(sizeof **ids * MAX_BLOCKS), *n = 0;
    if (!*ids) return say(j, "out of memory"), -1;
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *e;
    while ((e = readdir(d)) && *n < MAX_BLOCKS) {
        char *end;
        unsigned long long b = strtoull(e->d_name, &end, 10);
        if (end != e->d_name && !strcmp(end, ".blk") && b <= 10000000) (*ids)[(*n)++] = b;
    }
    closedir(d);
    qsort(*ids, *n, sizeof **ids, cmp_u64);
    return 0;
}

/* A block from the cache, or fetched (BLOCK_GET), verified and cached. */
static join_step_t get_block(join_t *j, uint64_t id, bf_block_t *b) {
    char path[PATH_MAX + 128];
    bf_err_t err;
    if (bf_blockcache_path(j->prof.home, j->a->task, id, path, sizeof path)) return say(j, "path too long"), STEP_FATAL;
    if (!bf_blockcache_read(path, b, &err)) return STEP_OK;
    if (access(path, F_OK) == 0) say(j, "cached block rejected (%s); fetching it again", err.msg);
    bf_msg_t *req = task_req(j, "BLOCK_GET"), *rep = NULL;
    if (req && bf_msg_set_uint(req, "block", id)) bf_msg_destroy(&req);
    req_status_t st = ask(j, &req, &rep, 0);
    join_step_t rc = st == REQ_OK ? STEP_OK : st == REQ_INTERRUPTED ? STEP_FATAL : STEP_RETRY;
    if (st == REQ_ERROR) {
        say_error(j, "BLOCK_GET", rep);
        rc = STEP_FATAL;
    } else if (rc == STEP_OK && bf_block_from_msg(rep, j->a->task, id, b, &err)) {
        say(j, "block %llu: %s; discarded", (unsigned long long)id, err.msg);
        rc = STEP_RETRY;
    } else if (rc == STEP_OK && bf_blockcache_write(path, b, &err)) {
        say(j, "warning: cannot cache block: %s", err.msg); /* training can go on */
    }
    bf_msg_destroy(&req);
    bf_msg_destroy(&rep);
    return rc;
}

/* Every assigned block, concatenated into j->data. block_size 0: not checked (cache fallback).
 * STEP_OK or STEP_FATAL: a block still unavailable after 5 retries ends the command. */
static join_step_t load_blocks(join_t *j, const uint64_t *ids, size_t n, uint64_t block_size) {
    if (!n) {
        say(j, "no data blocks assigned (buy some with 'blockfed-client blocks buy', or use --data)");
        return STEP_FATAL;
    }
    bf_block_t *blocks = calloc(n, sizeof *blocks);
    if (!blocks) return say(j, "out of memory"), STEP_FATAL;
    int64_t total = 0;
    join_step_t rc = STEP_OK;
    int fetch_failures = 0;
    for (size_t i = 0; i < n && rc == STEP_OK; i++) {
        rc = get_block(j, ids[i], &blocks[i]);
        if (rc == STEP_RETRY && ++fetch_failures <= 5 && !bf_conn_nap(RETRY_MIN_MS * fetch_failures)) {
            rc = STEP_OK, i--; /* retry this block */
            continue;
        }
        if (rc != STEP_OK) break;
        const bf_block_t *b = &blocks[i], *f = &blocks[0];
        if (b->c != f->c || b->h != f->h || b->w != f->w || b->classes != f->classes)
            rc = STEP_FATAL, say(j, "block %llu has another shape than block %llu", (unsigned long long)ids[i],
                                 (unsigned long long)ids[0]);
        else if (block_size && (uint64_t)b->n != block_size)
            rc = STEP_FATAL, say(j, "block %llu holds %d images, JOINED says %llu", (unsigned long long)ids[i], b->n,
                                 (unsigned long long)block_size);
        total += b->n;
    }
    bf_err_t err;
    if (rc == STEP_OK && total > INT32_MAX) rc = STEP_FATAL, say(j, "too many images in the blocks");
    if (rc == STEP_OK &&
        bf_dataset_alloc(&j->data, (int32_t)total, blocks[0].c, blocks[0].h, blocks[0].w, blocks[0].classes, &err))
        rc = STEP_FATAL, say(j, "%s", err.msg);
    size_t off = 0;
    for (size_t i = 0; rc == STEP_OK && i < n; i++) {
        size_t chw = (size_t)blocks[i].c * blocks[i].h * blocks[i].w;
        memcpy(j->data.pixels + off * chw, blocks[i].pixels, (size_t)blocks[i].n * chw);
        memcpy(j->data.labels + off, blocks[i].labels, (size_t)blocks[i].n);
        off += (size_t)blocks[i].n;
    }
    for (size_t i = 0; i < n; i++) bf_block_free(&blocks[i]);
    free(blocks);
    if (rc == STEP_OK && !j->a->quiet)
        say(j, "%zu data blocks, %d images of %dx%dx%d, %d classes", n, j->data.n, j->data.c, j->data.h, j->data.w,
            j->data.classes);
    return rc == STEP_OK ? STEP_OK : STEP_FATAL;
}

/* JOIN, then the training data. */
static join_step_t join_task(join_t *j) {
    bf_msg_t *req = task_req(j, "JOIN"), *rep = NULL;
    if (req) bf_msg_set_bool(req, "own_data", j->a->data != NULL);
    if (req && j->a->data && bf_msg_set_uint(req, "samples", (uint64_t)j->data.n)) bf_msg_destroy(&req);
    req_status_t st = ask(j, &req, &rep, 0);
    join_step_t rc = st == REQ_OK ? STEP_OK : st == REQ_FAILED ? STEP_RETRY : STEP_FATAL;
    uint64_t *ids = NULL;
    size_t n = 0;
    bf_err_t err;
    int conflict = st == REQ_ERROR && code_of(rep) == BF_PROTO_CONFLICT;
    if (st == REQ_ERROR && !conflict) say_error(j, "JOIN", rep);
    else if (st == REQ_OK && strcmp(bf_msg_type(rep), "JOINED"))
        rc = STEP_RETRY, say(j, "JOIN: unexpected %s", bf_msg_type(rep));
    else if (st == REQ_OK && (!bf_msg_str(rep, "task") || strcmp(bf_msg_str(rep, "task"), j->a->task)))
        rc = STEP_FATAL, say(j, "JOIN: reply for another task");
    if (conflict) rc = STEP_OK; /* already joined (e.g. we were restarted): carry on */
    if (rc != STEP_OK) {
        /* reported above */
    } else if (j->a->data) {
        if (!j->a->quiet) say(j, "joined %s with own data (%d images)", j->a->task, j->data.n);
    } else if (j->data.pixels) {
        /* a re-JOIN during the loop: the data we have stays */
    } else if (conflict) {
        if (cached_blocks(j, &ids, &n)) {
            rc = STEP_FATAL;
        } else {
            if (!j->a->quiet) say(j, "already joined %s; training on the %zu cached blocks", j->a->task, n);
            rc = load_blocks(j, ids, n, 0);
        }
    } else if (parse_blocks(bf_msg_any(rep, "blocks"), &ids, &n, &err)) {
        rc = STEP_FATAL, say(j, "%s", err.msg);
    } else {
        rc = load_blocks(j, ids, n, bf_msg_uint(rep, "block_size", 0));
    }
    free(ids);
    bf_msg_destroy(&req);
    bf_msg_destroy(&rep);
    return rc;
}

/* ---- one round --------------------------------------------------------------------------- */

typedef struct {
    uint64_t round, rounds, c, h, w, classes, epochs, batch, seed, deadline_ms;
    double lr, mu;
    const char *arch;
    float mean[4], std[4];
} round_t;

static int parse_preprocess(const msgpack_object *o, int c, float *mean, float *std, bf_err_t *err) {
    const msgpack_object *m = o ? bf_mp_get(o, "mean") : NULL, *s = o ? bf_mp_get(o, "std") : NULL;
    if (!m || !s || m->type != MSGPACK_OBJECT_ARRAY || s->type != MSGPACK_OBJECT_ARRAY ||
        m->via.array.size != (uint32_t)c || s->via.array.size != (uint32_t)c)
        return bf_err_set(err, "ROUND.preprocess must be {mean: [%d numbers], std: [%d numbers]}", c, c);
    for (int k = 0; k < c; k++) {
        double mv, sv;
        if (bf_mp_as_double(&m->via.array.ptr[k], &mv) || bf_mp_as_double(&s->via.array.ptr[k], &sv) ||
            !isfinite(mv) || !isfinite(sv) || fabs(mv) > 1e3 || !(sv > 1e-6) || sv > 1e3)
            return bf_err_set(err, "ROUND.preprocess channel %d: mean/std out of range", k);
        mean[k] = (float)mv, std[k] = (float)sv;
    }
    return 0;
}

static int parse_round(const join_t *j, const bf_msg_t *m, round_t *r, bf_err_t *err) {
    const char *task = bf_msg_str(m, "task");
    if (!task || strcmp(task, j->a->task)) return bf_err_set(err, "ROUND is for another task");
    *r = (round_t){.round = bf_msg_uint(m, "round", 0), .rounds = bf_msg_uint(m, "rounds", 1),
                   .c = bf_msg_uint(m, "c", 0), .h = bf_msg_uint(m, "h", 0), .w = bf_msg_uint(m, "w", 0),
                   .classes = bf_msg_uint(m, "classes", 0), .epochs = bf_msg_uint(m, "local_epochs", 1),
                   .batch = bf_msg_uint(m, "batch", 1), .seed = bf_msg_uint(m, "seed", 0),
                   .deadline_ms = bf_msg_uint(m, "deadline_ms", 0), .lr = bf_msg_double(m, "lr", 0),
                   .mu = bf_msg_double(m, "mu", 0), .arch = bf_msg_str(m, "arch")};
    if (!r->arch) return bf_err_set(err, "ROUND without arch");
    if (bf_msg_frame_count(m) != 2) return bf_err_set(err, "ROUND needs 2 frames");
    return parse_preprocess(bf_msg_any(m, "preprocess"), (int)r->c, r->mean, r->std, err);
}

/* The training data in the round's shape: blocks must match exactly; own data is converted once. */
static int fit_data(join_t *j, const round_t *r, bf_err_t *err) {
    bf_dataset_t *d = &j->data;
    if (j->a->data && !j->shaped) {
        if ((d->c != (int)r->c || d->h != (int)r->h || d->w != (int)r->w) &&
            bf_dataset_convert(d, (int)r->c, (int)r->h, (int)r->w, err))
            return bf_err_prefix(err, "converting --data to %llux%llux%llu: ", (unsigned long long)r->c,
                                 (unsigned long long)r->h, (unsigned long long)r->w);
        j->shaped = 1;
    }
    if (d->c != (int)r->c || d->h != (int)r->h || d->w != (int)r->w)
        return bf_err_set(err, "ROUND wants %llux%llux%llu images, the data is %dx%dx%d", (unsigned long long)r->c,
                          (unsigned long long)r->h, (unsigned long long)r->w, d->c, d->h, d->w);
    if (!j->a->data && d->classes != (int)r->classes)
        return bf_err_set(err, "ROUND has %llu classes, the blocks %d", (unsigned long long)r->classes, d->classes);
    for (int32_t i = 0; i < d->n; i++)
        if (d->labels[i] >= r->classes)
            return bf_err_set(err, "label %u of image %d is not below the round's %llu classes", d->labels[i], i,
                              (unsigned long long)r->classes);
    return 0;
}

/* The network for this round (reused while arch, shape and batch stay) with the global model in
 * it; every frame must hold exactly as many floats as the network has, and all finite. */
static int load_global(join_t *j, const round_t *r, const bf_msg_t *m, bf_err_t *err) {
    bf_net_t *n = j->net;
    int C, H, W;
    if (n) bf_net_input(n, &C, &H, &W);
    if (!n || strcmp(bf_net_arch(n), r->arch) || C != (int)r->c || H != (int)r->h || W != (int)r->w ||
        bf_net_classes(n) != (int)r->classes || j->net_batch != (int)r->batch) {
        bf_net_destroy(&j->net);
        free(j->center);
        j->center = NULL;
        j->net = bf_net_new(r->arch, (int)r->c, (int)r->h, (int)r->w, (int)r->classes, (int)r->batch, j->a->threads, err);
        if (!j->net) return bf_err_prefix(err, "ROUND model: ");
        j->net_batch = (int)r->batch;
        j->center = malloc(sizeof(float) * (bf_net_num_params(j->net) + 1));
        if (!j->center) return bf_err_set(err, "out of memory");
    }
    size_t np = bf_net_num_params(j->net), nb = bf_net_num_buffers(j->net), plen = 0, blen = 0;
    bf_msg_frame(m, 0, &plen), bf_msg_frame(m, 1, &blen);
    if (plen != np * 4 || blen != nb * 4)
        return bf_err_set(err, "ROUND frames hold %zu + %zu bytes; %s needs %zu + %zu", plen, blen, r->arch, np * 4, nb * 4);
    if (bf_msg_frame_f32(m, 0, bf_net_params(j->net), np) || bf_msg_frame_f32(m, 1, bf_net_buffers(j->net), nb))
        return bf_err_set(err, "ROUND frames do not fit the model");
    const float *p = bf_net_params(j->net), *b = bf_net_buffers(j->net);
    for (size_t i = 0; i < np; i++)
        if (!isfinite(p[i])) return bf_err_set(err, "ROUND parameter %zu is not finite", i);
    for (size_t i = 0; i < nb; i++)
        if (!isfinite(b[i])) return bf_err_set(err, "ROUND buffer %zu is not finite", i);
    memcpy(j->center, p, np * sizeof(float));
    return 0;
}

typedef struct {
    int tty;
    double last;
    uint64_t round, rounds;
} bar_t;

/* round r/R, epoch, batch, loss, img/s on one redrawn stderr line (terminals only). */
static void show_progress(const bf_progress_t *p, void *user) {
    bar_t *st = user;
    double now = bf_now();
    if (!st->tty || (now - st->last < 0.1 && p->step != p->steps)) return;
    st->last = now;
    int width = 24, fill = (int)(width * p->step / p->steps);
    char bar[64];
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '=' : i == fill ? '>' : ' ';
    bar[width] = 0;
    fprintf(stderr, "\rround %llu/%llu epoch %d/%d [%s] %lld/%lld loss %.4f %5.0f img/s ", (unsigned long long)st->round,
            (unsigned long long)st->rounds, p->epoch, p->epochs, bar, (long long)p->step, (long long)p->steps, p->loss,
            p->img_per_s);
    if (p->step == p->steps) fprintf(stderr, "\r%*s\r", 100, "");
}

static int save_update(join_t *j, const round_t *r, bf_err_t *err) {
    bf_model_meta_t meta;
    memset(&meta, 0, sizeof meta);
    meta.classes = (int)r->classes;
    meta.channels = (int)r->c;
    for (int k = 0; k < meta.classes; k++) snprintf(meta.class_names[k], sizeof meta.class_names[k], "%d", k);
    memcpy(meta.mean, r->mean, sizeof meta.mean);
    memcpy(meta.std, r->std, sizeof meta.std);
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/round-%llu.bfm", j->a->save_dir, (unsigned long long)r->round) >= (int)sizeof path)
        return bf_err_set(err, "--save-updates path too long");
    mkdir(j->a->save_dir, 0755);
    return bf_model_save(j->net, &meta, path, err);
}

/* Trains the round on the local data; *loss = the last epoch's mean loss. 0, or -1 with *err set
 * (interrupted, diverged, or a loss out of range). */
static int train_round(join_t *j, const round_t *r, double *loss, bf_err_t *err) {
    bf_train_opts_t opts = {.batch = (int)r->batch, .lr = r->lr, .schedule = "constant", .momentum = 0.9,
                            .weight_decay = 5e-4, .nesterov = 0, .augment = 0, .seed = r->seed ^ j->salt,
                            .mu = r->mu, .prox_center = r->mu > 0 ? j->center : NULL, .cancel = &zsys_interrupted};
    bf_trainer_t *tr = bf_trainer_new(j->net, &opts, &j->data, r->mean, r->std, (int)r->epochs, err);
    if (!tr) return -1;
    bar_t bar = {.tty = !j->a->quiet && isatty(2), .round = r->round + 1, .rounds = r->rounds};
    int failed = 0;
    bf_err_t herr;
    if (bf_conn_heartbeat_start(j->conn, &herr)) say(j, "warning: %s", herr.msg);
    for (uint64_t e = 0; e < r->epochs && !failed; e++) {
        bf_progress_t p;
        int erc = bf_trainer_epoch(tr, show_progress, &bar, &p); /* 0, -1 diverged, -2 cancelled */
        if (erc == -2) bf_err_set(err, "interrupted");
        else if (erc)
            bf_err_set(err, "training diverged in round %llu (loss is not finite)", (unsigned long long)r->round + 1);
        failed = erc != 0;
        *loss = p.loss;
    }
    bf_conn_heartbeat_stop(j->conn);
    bf_trainer_destroy(&tr);
    if (!failed && !(*loss >= 0 && *loss <= 1e6)) return bf_err_set(err, "training loss %g is out of range", *loss);
    return failed ? -1 : 0;
}

/* ROUND -> train -> UPDATE. STEP_OK: the update was accepted, or was stale (the round closed
 * without us); STEP_RETRY: no usable answer to UPDATE (any ERROR but STALE included, since a
 * repeated UPDATE is safe); STEP_FATAL: a ROUND we cannot train on, training failed, or Ctrl-C. */
static join_step_t run_round(join_t *j, const bf_msg_t *m) {
    round_t r;
    bf_err_t err;
    double t0 = bf_now(), loss = 0;
    if (parse_round(j, m, &r, &err) || fit_data(j, &r, &err) || load_global(j, &r, m, &err))
        return say(j, "%s", err.msg), STEP_FATAL;
    if (train_round(j, &r, &loss, &err)) return say(j, "%s", err.msg), STEP_FATAL;
    double secs = bf_now() - t0;
    if (r.deadline_ms && secs * 1000 > (double)r.deadline_ms)
        say(j, "round %llu took %.1f s, over its deadline of %.1f s; the update may be late", (unsigned long long)r.round + 1,
            secs, r.deadline_ms / 1000.0);
    if (j->a->save_dir && save_update(j, &r, &err)) say(j, "warning: --save-updates: %s", err.msg);
    bf_msg_t *req = task_req(j, "UPDATE"), *rep = NULL;
    if (req && (bf_msg_set_uint(req, "round", r.round) || bf_msg_set_uint(req, "samples", (uint64_t)j->data.n) ||
                bf_msg_set_double(req, "loss", loss) ||
                bf_msg_add_f32(req, bf_net_params(j->net), bf_net_num_params(j->net)) ||
                bf_msg_add_f32(req, bf_net_buffers(j->net), bf_net_num_buffers(j->net))))
        bf_msg_destroy(&req);
    /* a repeated UPDATE is answered STALE, so retrying a lost one is safe */
    req_status_t st = ask(j, &req, &rep, 0);
    join_step_t rc = st == REQ_OK ? STEP_OK : st == REQ_INTERRUPTED ? STEP_FATAL : STEP_RETRY;
    if (st == REQ_OK && strcmp(bf_msg_type(rep), "OK")) {
        say(j, "UPDATE: unexpected %s", bf_msg_type(rep));
        rc = STEP_RETRY;
    } else if (st == REQ_OK) {
        printf("round %llu/%llu: loss %.4f, %d images, %.1f s\n", (unsigned long long)r.round + 1,
               (unsigned long long)r.rounds, loss, j->data.n, secs);
    } else if (st == REQ_ERROR && code_of(rep) == BF_PROTO_STALE) {
        printf("round %llu/%llu: update not taken (the round closed without us); going on\n",
               (unsigned long long)r.round + 1, (unsigned long long)r.rounds);
        rc = STEP_OK;
    } else if (st == REQ_ERROR) {
        say_error(j, "UPDATE", rep);
    }
    fflush(stdout);
    bf_msg_destroy(&req);
    bf_msg_destroy(&rep);
    return rc;
}

/* ---- the loop ---------------------------------------------------------------------------- */

/* Waits the current retry delay, then doubles it (up to RETRY_MAX_MS). STEP_OK, or STEP_FATAL
 * when Ctrl-C cut the wait short. */
static join_step_t backoff(join_t *j) {
    int ms = j->retry_ms;
    j->retry_ms = j->retry_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : j->retry_ms * 2;
    return bf_conn_nap(ms) ? STEP_FATAL : STEP_OK;
}

/* Codes after which asking again cannot help. Every code is listed, so a new one is a decision
 * here (the compiler says so). */
static int fatal_code(bf_proto_code_t code) {
    switch (code) {
    case BF_PROTO_NOT_FOUND:
    case BF_PROTO_FORBIDDEN:
    case BF_PROTO_UNAUTHORIZED:
    case BF_PROTO_BAD_REQUEST:
    case BF_PROTO_UNKNOWN_TYPE:
    case BF_PROTO_LIMIT: return 1;
    case BF_PROTO_CONFLICT:
    case BF_PROTO_INSUFFICIENT_FUNDS:
    case BF_PROTO_STALE:
    case BF_PROTO_TOO_LARGE:
    case BF_PROTO_BAD_STATE:
    case BF_PROTO_RATE_LIMITED:
    case BF_PROTO_INTERNAL:
    case BF_PROTO_CODE_COUNT: return 0;
    }
    return 0;
}

/* ROUND_GET until the task is DONE: STEP_TASK_DONE, or STEP_FATAL (reported). */
static join_step_t round_loop(join_t *j) {
    for (;;) {
        if (zsys_interrupted) return STEP_FATAL;
        join_step_t rc = ensure_session(j);
        if (rc == STEP_FATAL) return STEP_FATAL;
        if (rc == STEP_RETRY) {
            if (backoff(j) != STEP_OK) return STEP_FATAL;
            continue;
        }
        bf_msg_t *req = task_req(j, "ROUND_GET"), *rep = NULL;
        req_status_t st = ask(j, &req, &rep, 1);
        const char *type = rep ? bf_msg_type(rep) : "";
        rc = STEP_OK;
        if (st == REQ_INTERRUPTED) rc = STEP_FATAL;
        else if (st == REQ_FAILED) {
            say(j, "no answer from %s; retrying", j->prof.coordinator);
            rc = backoff(j);
        } else if (st == REQ_ERROR) {
            say_error(j, "ROUND_GET", rep);
            bf_proto_code_t code = code_of(rep);
            if (fatal_code(code)) rc = STEP_FATAL;
            else if (code == BF_PROTO_BAD_STATE) rc = join_task(j) == STEP_FATAL ? STEP_FATAL : backoff(j);
            else rc = backoff(j);
        } else if (!strcmp(type, "WAIT")) {
            j->retry_ms = RETRY_MIN_MS;
            rc = bf_conn_nap((int)bf_msg_uint(rep, "retry_ms", 1000)) ? STEP_FATAL : STEP_OK;
        } else if (!strcmp(type, "DONE")) {
            const char *h = bf_msg_str(rep, "result_hash");
            printf("task %s finished%s%s\n", j->a->task, h ? "; result hash " : "", h ? h : "");
            fflush(stdout);
            rc = STEP_TASK_DONE;
        } else if (!strcmp(type, "ROUND")) {
            j->retry_ms = RETRY_MIN_MS;
            rc = run_round(j, rep);
            if (rc == STEP_RETRY) rc = backoff(j);
        } else {
            say(j, "ROUND_GET: unexpected %s", type);
            rc = backoff(j);
        }
        bf_msg_destroy(&req);
        bf_msg_destroy(&rep);
        if (rc != STEP_OK) return rc == STEP_TASK_DONE ? STEP_TASK_DONE : STEP_FATAL;
    }
}

static join_step_t load_own_data(join_t *j) {
    bf_err_t err;
    /* the file's own shape for now: the first ROUND says which shape the model wants */
    if (bf_dataset_load(j->a->data, "train", 0, 0, 0, &j->data, &err))
        return say(j, "--data %s: %s", j->a->data, err.msg), STEP_FATAL;
    if (j->data.n < 1) return say(j, "--data %s: no images", j->a->data), STEP_FATAL;
    return STEP_OK;
}

bf_cli_outcome_t bf_cmd_join(int argc, char **argv, bf_cli_ctx_t *ctx) {
    join_args_t a;
    bf_cli_args_t args = parse_join(argc, argv, ctx, &a);
    if (args == CLIENT_ARGS_HELP) return CLIENT_OK;
    if (args) return fprintf(stderr, "try 'blockfed-client join --help'\n"), CLIENT_USAGE;
    join_t j = {.ctx = ctx, .a = &a, .session = -1, .retry_ms = RETRY_MIN_MS};
    zcert_t *cert = NULL;
    bf_cli_outcome_t opened = bf_cli_open(ctx, &j.prof, &j.conn);
    if (opened) return opened;
    bf_err_t err;
    char home[PATH_MAX];
    if (!bf_profile_home(ctx->home, home, sizeof home, &err) && !bf_profile_load_cert(home, &cert, &err)) {
        j.salt = fnv1a(zcert_public_txt(cert));
        zcert_destroy(&cert);
    }
    join_step_t step = a.data ? load_own_data(&j) : STEP_OK;
    /* HELLO + JOIN, retried while the coordinator is unreachable */
    while (step == STEP_OK) {
        step = ensure_session(&j);
        if (step == STEP_OK) step = join_task(&j);
        if (step != STEP_RETRY) break;
        step = backoff(&j);
    }
    if (step == STEP_OK) step = round_loop(&j);
    if (zsys_interrupted) say(&j, "interrupted");
    bf_net_destroy(&j.net);
    free(j.center);
    bf_dataset_free(&j.data);
    bf_conn_destroy(&j.conn);
    return step == STEP_TASK_DONE ? CLIENT_OK : CLIENT_ERROR;
}

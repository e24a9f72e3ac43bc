/* coord.h: the coordinator's internal pieces (not a library API), one section per file:
 *
 *   server.c    the socket thread: ROUTER socket, poller loop, sending, per-peer limits, restore
 *   handlers.c  one handler per request type behind one preamble; replies are built, never sent
 *   task.c      task and participant lifecycle, blocks, rounds closing, settlement (socket thread)
 *   worker.c    the aggregation actor: aggregation, BN re-estimation, checkpoints; its valuer
 *               thread: the Shapley game of each round, from the round's valuation file
 *   predict.c   the prediction actor: paid predictions against the ledger
 *   store.c     the federation's durable state, HOME/coordinator.db
 *   log.c       the log
 *
 * Threads: the socket thread owns server_t, every task_t and the ledger handle; the worker sees
 * only the coord_job_t it was handed and the model fields of that job's task (which the socket
 * thread leaves alone while the task is AGGREGATING); the worker's valuer thread sees only its
 * job, its valuation file and the task's immutable spec, data and blocks; the prediction actor
 * has its own ledger handle and sees only its coord_predict_job_t. */
#ifndef BF_COORD_H
#define BF_COORD_H

#include <czmq.h>
#include <stdint.h>
#include <string.h>

#include "bf_datasets.h"
#include "bf_ledger.h"
#include "bf_models.h"
#include "bf_proto.h"
#include "bf_util.h"
#include "webauth.h"

#define COORD_MAX_DATASETS 16
#define COORD_BLOCK_SIZE 1000     /* images per data block */
#define COORD_BLOCKS_PER_JOIN 5   /* blocks a participant gets when it joins */
#define COORD_MAX_OPEN_TASKS 8    /* tasks one user may have waiting or running at once */
#define COORD_FORGET_MS 300000    /* a silent connection's counters are kept this long */
#define COORD_VAL_SIZE 5000       /* validation images the coordinator keeps (capped at 10% of train) */
#define COORD_VALUE_IMAGES 2000   /* default validation images a coalition is scored on */
#define COORD_BN_RECALIBRATE_IMAGES 1280 /* default training images BN statistics are re-estimated on */
/* An UPDATE value's bound: a trained model's parameters and BN statistics are orders of magnitude
 * below, while values near FLT_MAX make every sum, and so the aggregate, overflow */
#define COORD_UPDATE_MAX_ABS 1e6f

/* A buffer shared by the replies that send it (zero-copy frames): the worker makes it, the socket
 * thread hands it to libzmq, whose I/O thread may drop the last reference, hence the atomic count. */
typedef struct coord_blob coord_blob_t;
/* Drops one reference (handlers.c); the last one frees it. NULL is fine. */
void coord_blob_unref(coord_blob_t *b);
/* A net's parameters then buffers as ROUND's two frames carry them (little-endian float32), with
 * one reference; NULL if out of memory. Touches nothing but net, so the worker may call it. */
coord_blob_t *coord_blob_of_model(bf_net_t *net);

/* ---- task states and modes ----------------------------------------------------------------- */

/* A task's life (docs/COORDINATOR.md has the same table):
 *   WAITING -> RUNNING      min_clients participants are live (the ledger task starts)
 *   WAITING -> CANCELLED    the creator cancelled, or --start-deadline passed: the pool is refunded
 *   RUNNING -> AGGREGATING  the open round closed (every live participant reported, or its timeout
 *                           passed with min_clients reports): the updates are on the worker; in
 *                           memory only, stored as RUNNING (a restart reopens the round)
 *   AGGREGATING -> RUNNING  the worker gave the round back (the next round opens; a failed
 *                           aggregation reopens the same round)
 *   A RUNNING task's model exists only while it trains: the worker builds it when the task starts
 *   or is restored (seeded start, or the last checkpoint), and it is freed when the task ends.
 *   Until it is built no round is open to ROUND_GET (WAIT), though UPDATEs are taken.
 *   RUNNING -> COMPLETED    every round done and settled: reward pool paid out, or shares allocated
 *                           and the model online. RUNNING with every round done has not been
 *                           settled yet (a crash between the two): it settles at the next tick
 *   RUNNING -> FAILED       the open round still has fewer than min_clients reports one more round
 *                           timeout after its own (twice round_timeout since it opened): a reward
 *                           pool is refunded in full, a shareholding task allocates nothing and
 *                           never goes online; ROUND_GET and JOIN answer BAD_STATE saying why
 * COMPLETED, CANCELLED and FAILED are final. Strings appear only in the store and on the wire
 * (coord_task_state_name). */
typedef enum {
    COORD_TASK_WAITING,
    COORD_TASK_RUNNING,
    COORD_TASK_AGGREGATING,
    COORD_TASK_COMPLETED,
    COORD_TASK_CANCELLED,
    COORD_TASK_FAILED,
} coord_task_state_t;

static inline const char *coord_task_state_name(coord_task_state_t s) {
    switch (s) {
    case COORD_TASK_WAITING: return "waiting";
    case COORD_TASK_RUNNING: return "running";
    case COORD_TASK_AGGREGATING: return "aggregating";
    case COORD_TASK_COMPLETED: return "completed";
    case COORD_TASK_CANCELLED: return "cancelled";
    case COORD_TASK_FAILED: return "failed";
    }
    return "?";
}

/* 0 and *out set, or -1 for a name that is no state. */
static inline int coord_task_state_parse(const char *name, coord_task_state_t *out) {
    for (int s = COORD_TASK_WAITING; s <= COORD_TASK_FAILED; s++)
        if (name && !strcmp(name, coord_task_state_name((coord_task_state_t)s))) return *out = (coord_task_state_t)s, 0;
    return -1;
}

/* The ledger's status of a task in each coordinator state. The coordinator moves the ledger at
 * each transition (start -> RUNNING, settlement -> COMPLETED, refund -> REFUNDED) before it
 * changes its own state, so after a crash the ledger is at most one step ahead, never behind,
 * and every ledger step is idempotent (op ids from the task id). */
static inline bf_ledger_task_status_t coord_task_ledger_status(coord_task_state_t s) {
    switch (s) {
    case COORD_TASK_WAITING: return BF_LEDGER_TASK_CREATED;
    case COORD_TASK_RUNNING:
    case COORD_TASK_AGGREGATING: return BF_LEDGER_TASK_RUNNING;
    case COORD_TASK_COMPLETED: return BF_LEDGER_TASK_COMPLETED;
    case COORD_TASK_CANCELLED:
    case COORD_TASK_FAILED: return BF_LEDGER_TASK_REFUNDED;
    }
    return BF_LEDGER_TASK_CREATED;
}

/* A task's mode on the wire and in the store: "reward" | "shareholding". */
static inline const char *coord_mode_name(bf_ledger_mode_t m) {
    return m == BF_LEDGER_MODE_REWARD ? "reward" : m == BF_LEDGER_MODE_SHAREHOLDING ? "shareholding" : "?";
}
static inline int coord_mode_parse(const char *name, bf_ledger_mode_t *out) {
    if (name && !strcmp(name, "reward")) return *out = BF_LEDGER_MODE_REWARD, 0;
    if (name && !strcmp(name, "shareholding")) return *out = BF_LEDGER_MODE_SHAREHOLDING, 0;
    return -1;
}

/* The ERROR code a ledger return code is answered with (INTERNAL for storage failures). */
static inline bf_proto_code_t coord_ledger_code(int rc) {
    return rc == BF_LEDGER_EFUNDS      ? BF_PROTO_INSUFFICIENT_FUNDS
           : rc == BF_LEDGER_ESTATE    ? BF_PROTO_BAD_STATE
           : rc == BF_LEDGER_EEXISTS   ? BF_PROTO_CONFLICT
           : rc == BF_LEDGER_ECONFLICT ? BF_PROTO_CONFLICT
           : rc == BF_LEDGER_ENOTFOUND ? BF_PROTO_NOT_FOUND
           : rc == BF_LEDGER_EEXPIRED  ? BF_PROTO_BAD_STATE
           : rc == BF_LEDGER_EINVAL    ? BF_PROTO_BAD_REQUEST
           : rc == BF_LEDGER_EOVERFLOW ? BF_PROTO_LIMIT /* a refusal, not a failure */
                                       : BF_PROTO_INTERNAL;
}

/* ---- task specification, as TASK_CREATE carries it ------------------------------------------ */
typedef struct {
    char id[65], name[129], description[1025], model[17], dataset[65], partition[33], strategy[33];
    bf_ledger_mode_t mode;
    char creator[41];   /* CURVE key of the creator */
    int64_t fee_cents, pool_cents;
    int64_t base_fee_cents, rate_num, rate_den; /* paid use: price = ceil((base + fee*images) * num/den) */
    int value_images;   /* validation images a coalition is scored on (default COORD_VALUE_IMAGES) */
    int64_t own_data_cap; /* the most an own-data update weighs, in samples (0: coord_own_data_cap's default) */
    int rounds, min_clients, local_epochs, batch, round_timeout;
    double lr, mu;
    uint64_t seed;
    int64_t created_at; /* unix seconds, set by the store */
} coord_task_spec_t;

/* ---- options of `blockfed-coordinator run` --------------------------------------------------- */
typedef struct {
    const char *home, *bind;
    int insecure;
    int ndatasets;
    const char *dataset_names[COORD_MAX_DATASETS], *dataset_paths[COORD_MAX_DATASETS];
    int liveness_ms;    /* a participant silent this long is not waited for (default 15000) */
    int threads;        /* evaluation threads */
    int verbose;
    int block_size;     /* images per data block (default COORD_BLOCK_SIZE) */
    int block_size_auto;/* --block-size not given: each task's adapts to its data and min_clients */
    int blocks_per_join;/* blocks a participant gets on JOIN (default COORD_BLOCKS_PER_JOIN) */
    int start_deadline; /* seconds a task may wait for its minimum participants before it is
                           refunded (default 86400) */
    int max_open_tasks; /* tasks one user may have waiting or running (default COORD_MAX_OPEN_TASKS) */
    int forget_ms;      /* a connection silent this long with nothing queued is forgotten (default
                           COORD_FORGET_MS) */
    int shapley_exact_max; /* exact Shapley up to this many updates per round (default 6) */
    int shapley_budget;    /* coalition evaluations per round for the estimator (default 100) */
    int shapley_sample;    /* the sampled surrogate's valuation images (0, the default: off) */
    int value_every;       /* value every K rounds, and the last (default 1) */
    int utility_loss;      /* 1: coalition utility = -validation loss; 0: validation accuracy */
    int bn_recalibrate;    /* training images every aggregated model's BN statistics are re-estimated
                              on (default COORD_BN_RECALIBRATE_IMAGES; 0: kept as averaged) */
    int recharge_operator;   /* --recharge operator: money enters only by `ledger deposit` */
#define COORD_RECHARGE_OPEN_MAX_CENTS 1000000 /* default --recharge open:10000 (yuan a day) */
    int64_t recharge_max_cents; /* --recharge open:MAX: self-service cents per user per UTC day */
    const char *http;        /* --http ADDR:PORT: serve the HTTPS API there (NULL: off) */
    int http_insecure;       /* --http-insecure: plain HTTP, loopback only */
    const char *tls_cert, *tls_key; /* PEM files (default HOME/https.crt, HOME/https.key) */
    int metrics_public;      /* --metrics-public: /metrics without the operator credential */
    int fault_before_settle; /* tests only (BLOCKFED_COORD_FAULT=before-settle): the process exits
                                right after the last round's values are stored, before settlement */
    int value_inline;        /* --valuation inline: a round is valued on the worker before it is
                                aggregated (the next round waits); default: in the background */
#define COORD_VALUE_BACKLOG 4 /* default --value-backlog */
    int value_backlog;       /* a task's rounds waiting for their values at most; one more round
                                that is to be valued does not close until one is valued */
    int value_threads;       /* threads of a background valuation's model (0: threads) */
} coord_opts_t;

/* ---- the coordinator's in-memory state (socket thread) --------------------------------------- */

typedef struct {
    char name[65];
    bf_dataset_t train, test;
    float mean[4], std[4];
} coord_dataset_t;

typedef struct {
    char key[41];
    int64_t user_id;
    int own_data, left;
    int64_t samples;         /* images it trains on (blocks x block size, or declared own data) */
    int32_t *blocks;
    int nblocks;
    int update_round;        /* round of the update it holds (-1: none) */
    float *params, *buffers; /* that update */
    int64_t upd_samples;
    double upd_loss;
    int64_t contributed;     /* samples over all accepted updates */
    double shapley;          /* cumulative Shapley value (validation accuracy points) over the rounds */
} coord_part_t;

/* One completed round. Its values (a Shapley value per participant whose update it took) come
 * with it when it is valued inline or not valued at all, later from the valuer otherwise. */
typedef struct {
    int participants;
    int64_t samples;
    double val_acc, val_loss, test_acc;
    double seconds;           /* wall time: the round opened -> its new model published */
    double aggregate_seconds; /* the worker's part of it: aggregation, BN, evaluation, checkpoint */
    double value_seconds;     /* valuing it (inline: inside seconds; background: after it) */
    int valued;               /* its values are in (and counted in the participants' shapley) */
    int valuing;              /* a valuation of it is on the worker */
    int nvalues;
    int *value_part;          /* participant index of each value */
    double *value;
} coord_round_metric_t;

typedef struct {
    coord_task_spec_t spec;
    int64_t ledger_id;
    coord_task_state_t state;
    int round;               /* completed rounds; the open round's number while running */
    int64_t round_start;
    coord_dataset_t *ds;
    bf_blocks_t blocks;
    int32_t *owner;          /* per block: participant index, -1 free */
    /* the model fields: NULL until the worker builds them for a running task, the worker's while
     * it builds them or the task is AGGREGATING, freed when the task ends */
    bf_dataset_t val;
    bf_net_t *global;
    coord_blob_t *round_model; /* the open round's global model as ROUND sends it, made by the worker */
    bf_agg_t *agg;
    bf_agg_opts_t agg_opts;
    bf_net_t *coalition;     /* scratch model for valuing coalitions */
    float *recal_x;          /* BN recalibration images (normalized, from the task's blocks) */
    int nrecal;
    /* participants and history */
    coord_part_t *parts;
    int nparts;
    coord_round_metric_t *metrics;
    int nmetrics;
    char checkpoint_sha[65], result_hash[65];
    size_t np, nb;           /* parameter and buffer counts of the task's model (bf_net_plan) */
    int building;            /* the worker is building the model fields (they are its meanwhile) */
    int64_t build_after;     /* ms: a failed build is retried no sooner */
    int unvalued;            /* completed rounds whose values are still to come (settlement waits) */
    int64_t value_after;     /* ms: a failed valuation is retried no sooner */
    int backlog_logged;      /* the open round waits for the valuation backlog (logged once) */
    int files_swept;         /* valuation files of valued rounds (a crash after the store) deleted */
} coord_task_t;

typedef struct coord_store coord_store_t;
typedef struct coord_job coord_job_t;

/* How a request reached the socket thread: the ROUTER (ZeroMQ + CURVE), or the HTTP bridge, an
 * inproc socket the HTTPS API's threads send the same requests on (http.c), each with the key of
 * the account its credential resolved to. */
typedef enum { COORD_VIA_ZMQ, COORD_VIA_HTTP } coord_via_t;

typedef struct {
    coord_opts_t o;
    bf_ledger_t *ledger;
    coord_store_t *store;
    zsock_t *router;
    zsock_t *bridge;         /* the HTTP bridge's inproc ROUTER (NULL without --http) */
    struct coord_http *http; /* the HTTPS API (http.c), NULL without --http */
    coord_webauth_t *webauth; /* web credentials, HOME/web.db (webauth.h) */
    zactor_t *zap, *worker, *predict;
    int64_t last_sweep;      /* ms: expired prediction holds are released every COORD_SWEEP_MS */
    coord_dataset_t ds[COORD_MAX_DATASETS];
    int nds;
    coord_task_t **tasks;
    int ntasks;
    zhashx_t *seen;          /* CURVE key -> last message time (ms), as int64_t* */
    zhashx_t *peers;         /* routing id (hex) -> its counters (server.c): garbage, queued replies */
    int64_t last_forget;     /* ms: idle peers and stale seen keys were last expired */
    int64_t last_full_sweep; /* ms: the peers table was last swept because it was full */
    /* the fee path's ledger work, for /metrics: holds + settlements, group commits and their sizes
     * (requests per commit: <= 1, 2, 4, 8, 16, 32, 64) */
    int64_t fee_ops, group_commits, group_requests, group_hist[7];
    zhashx_t *users;         /* CURVE key -> user id (int64_t*): a key's account never changes */
    zhashx_t *strangers;     /* CURVE key -> when the ledger last had no user for it (int64_t* ms) */
    zhashx_t *inflight;      /* payer id (decimal) -> PREDICT requests queued or running (int*) */
    zhashx_t *recharged;     /* user id (decimal) -> its self-service recharges today (int64_t[2]:
                                UTC day, cents), read from the ledger once a day, then kept here */
    int inflight_total;
} coord_server_t;

/* ---- server.c ------------------------------------------------------------------------------- */

/* Runs until SIGINT/SIGTERM; returns an exit status. */
int coord_serve(const coord_opts_t *o);

/* ---- log.c ---------------------------------------------------------------------------------- */

/* A timestamped line on stdout (the coordinator's log). */
void coord_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline int64_t coord_now_ms(void) { return zclock_mono(); }

/* ---- handlers.c ----------------------------------------------------------------------------- */

/* Answers one decoded request from the connection authenticated as key (NULL: none), which came
 * by via. Returns the reply to send, or NULL when the request was handed to the prediction actor,
 * which answers it later (then *req and *rid were taken). Never sends anything itself. */
bf_msg_t *coord_handle(coord_server_t *s, bf_msg_t **req, zframe_t **rid, const char *key, coord_via_t via);
/* A PREDICT the actor answered no longer counts against its payer's in-flight limit. */
void coord_inflight_release(coord_server_t *s, int64_t payer);

/* ---- http.c: the HTTPS API ------------------------------------------------------------------- */

#define COORD_HTTP_BRIDGE "inproc://blockfed-http"
typedef struct coord_http coord_http_t;
/* Starts the HTTPS API on o->http with TLS from o->tls_cert / o->tls_key (or plain HTTP on
 * loopback with o->http_insecure); its threads authenticate each request with auth and send it to
 * the socket thread on COORD_HTTP_BRIDGE. NULL with err if it cannot listen. */
coord_http_t *coord_http_start(const coord_opts_t *o, coord_webauth_t *auth, bf_err_t *err);
void coord_http_stop(coord_http_t **p);
/* Every route the API serves, "METHOD PATH" a line (`blockfed-coordinator routes`). */
void coord_http_routes(FILE *out);

/* ---- tls.c ---------------------------------------------------------------------------------- */

#define COORD_TLS_DAYS 825 /* the self-signed certificate's validity */
/* Writes HOME/https.key (0600) and HOME/https.crt, self-signed for localhost, 127.0.0.1 and the n
 * names (host names or IP addresses). 0, or -1 with err. */
int coord_tls_selfsigned(const char *home, const char *const *names, int n, bf_err_t *err);
/* The certificate's SHA-256 fingerprint as browsers show it: 32 hex pairs joined by ':'. */
#define COORD_TLS_FP_MAX 96
int coord_tls_fingerprint(const char *crt_path, char out[COORD_TLS_FP_MAX], bf_err_t *err);

/* ---- task.c --------------------------------------------------------------------------------- */

coord_task_t *coord_task_find(coord_server_t *s, const char *id);
coord_part_t *coord_part_find(coord_task_t *t, const char *key);
coord_dataset_t *coord_dataset_find(coord_server_t *s, const char *name);
/* Liveness: a key's last message time; a participant is live if it has not left and was heard
 * from within the liveness window. */
void coord_touch(coord_server_t *s, const char *key);
/* Forgets keys not heard from within the liveness window (they are not live either way); returns
 * how many. */
int coord_seen_sweep(coord_server_t *s);
int coord_is_live(coord_server_t *s, const coord_part_t *p);
/* Tasks created by this key that are not over yet (waiting, running or aggregating). */
int coord_open_tasks(const coord_server_t *s, const char *key);
/* The in-memory task: its spec checked (dataset, strategy, model against the data), blocks cut
 * from the seed; no model (the worker builds it when the task starts: coord_job_t.build). */
coord_task_t *coord_task_new(coord_server_t *s, const coord_task_spec_t *spec, int64_t ledger_id, bf_err_t *err);
void coord_task_free(coord_task_t **t);
/* Frees the model fields (not while the worker holds them): the task has ended, or its build failed. */
void coord_task_release_model(coord_task_t *t);
int coord_task_add(coord_server_t *s, coord_task_t *t);
coord_part_t *coord_part_add(coord_task_t *t, const char *key, int64_t user_id, int own_data, int64_t samples);
int coord_block_give(coord_task_t *t, coord_part_t *p, int32_t b);
/* Up to n free blocks, lowest numbers first (deterministic); returns how many. */
int coord_blocks_free(const coord_task_t *t, int n, int32_t *out);
/* How many free blocks a new participant without own data gets on JOIN now: blocks per join, but
 * before the task starts at most its fair part of the free blocks (free / participants still
 * expected to reach min_clients, at least 1); 0 when none is free. */
int coord_join_blocks(const coord_server_t *s, const coord_task_t *t);
/* Gives p up to want free blocks and records them; returns how many, or -1 with err. */
int coord_blocks_assign(coord_server_t *s, coord_task_t *t, coord_part_t *p, int want, bf_err_t *err);
/* The most an own-data participant's update weighs in FedAvg (its declared samples are not
 * verifiable): the task's own_data_cap if its creator set one, else the samples of the task's
 * largest block holder, or, with no block holder yet, what one JOIN hands out (blocks per join x
 * block size). */
int64_t coord_own_data_cap(const coord_server_t *s, const coord_task_t *t);
/* Sets the task's state and stores it with its progress (logged if the store fails). */
void coord_task_set_state(coord_server_t *s, coord_task_t *t, coord_task_state_t state);
/* Refunds the pool and cancels a WAITING task; 0, or a ledger rc with err set. */
int coord_task_cancel(coord_server_t *s, coord_task_t *t, bf_err_t *err);
/* Why a FAILED task failed, for the replies that refuse it. */
void coord_task_fail_reason(const coord_task_t *t, char *buf, size_t cap);
/* Per-task periodic work: start, expire, close a round or fail it, settle after a restart. */
void coord_task_tick(coord_server_t *s, coord_task_t *t);
/* Takes back a job the worker finished: a built model opens the task's round; a closed round gives
 * contributions, metrics, the next round, settlement. */
void coord_job_done(coord_server_t *s, coord_job_t *j);
/* Restoring from the store (server.c's load callbacks): a completed round's metrics, then each
 * contribution (counted in its participant's totals, and, valued, in the round's values). Rows of
 * a round not counted as done (a crash between storing it and moving on) are ignored. */
void coord_task_restore_round(coord_task_t *t, int round, const coord_round_metric_t *m);
void coord_task_restore_contribution(coord_task_t *t, int round, const char *key, double value, int64_t samples);
/* Logs a failed coord_store_* call; returns rc. */
int coord_stored(int rc, const bf_err_t *err);

/* ---- worker.c: the aggregation actor -------------------------------------------------------- */

/* A job handed to the worker, which fills the results: a closed round, (build) the model fields
 * of a task that starts or resumes, or (valuation) the values of a completed round. */
struct coord_job {
    coord_task_t *t;
    int build;            /* build t's model: seeded when path is "", else from checkpoint path */
    int valuation;        /* value round `round` from its valuation file `value_path` (background) */
    int round;            /* the round the job is about (0-based) */
    char expect_sha[65];  /* build: the checkpoint's recorded digest */
    int threads, recal;   /* build: evaluation threads, BN re-estimation images wanted */
    int k;
    const float **params, **buffers;
    int64_t *samples;
    int value, exact_max, budget, utility_loss; /* valuation: this round?, exact up to, estimator budget */
    int sample;           /* valuation: the sampled surrogate's images (0: off; run --shapley-sample) */
    int value_inline;     /* round: value it here, before aggregating; else write value_path */
    char (*keys)[41];     /* the k updates' participants (round: given; valuation: read back) */
    char path[4096];                            /* the checkpoint to write (build: to read) */
    char value_path[4096];                      /* the round's valuation file (coord_value_path) */
    /* results */
    int ok;
    char err[4600], sha[65];
    double *phi;           /* Shapley value of each of the k updates this round */
    int shapley_evals;
    const char *estimator; /* how the round was valued: "exact", "surrogate", "layers", "truncated" */
    int kept_previous;     /* the aggregate was not finite: the global model stayed as it was */
    double val_acc, val_loss, test_acc, seconds;
    double aggregate_seconds, value_seconds;
    int lost;             /* valuation: its file is missing or unreadable: it can never be valued */
    coord_blob_t *round_model; /* the global model for the next round's ROUND replies (one reference) */
    char note[256];            /* build: something the socket thread should log */
};

/* The actor. Pipe protocol: "JOB" + coord_job_t* -> the same pointer back once the model is built,
 * the round aggregated, evaluated and checkpointed (and valued, inline), or the round valued
 * (j->ok, or j->err). Builds and rounds run one at a time, in order, on the actor's thread;
 * valuations queue, in order, for its valuer thread, so a round aggregates while earlier ones
 * are valued, and their answers come back between the others'.
 * "$TERM" ends it (a valuation under way is abandoned: its file stays for the next start). */
zactor_t *coord_worker_new(void);
int coord_worker_submit(zactor_t *w, coord_job_t *j);
coord_job_t *coord_worker_recv(zactor_t *w);
void coord_job_free(coord_job_t **j);
/* HOME/checkpoints/TASK/round-NNNN.bfm */
char *coord_checkpoint_path(const char *home, const char *task, int round, char *buf, size_t cap);
/* HOME/checkpoints/TASK/value-NNNN.bin: what valuing round NNNN needs (its starting model, the
 * strategy's state, the updates), kept from its aggregation until its values are stored. */
char *coord_value_path(const char *home, const char *task, int round, char *buf, size_t cap);
/* SHA-256 (hex) of a whole file; "" if it cannot be read. */
void coord_file_sha(const char *path, char hex[65]);
/* A strategy's server state (fedavgm's momentum) saved beside a checkpoint: 0, or -1 if missing
 * or of another size. */
int coord_agg_state_read(const char *checkpoint, float *v, size_t n);

/* ---- predict.c: paid predictions ------------------------------------------------------------ */

/* One PREDICT request, checked by the socket thread (user, task, mode, state), settled by the
 * prediction actor, sent back to the socket thread with its reply. */
typedef struct {
    zframe_t *rid;     /* routing id of the requester, for the reply */
    coord_via_t via;   /* and the socket it is on */
    int batch_size, batch_first; /* set by the actor: the batch (one ledger group commit) it was in */
    bf_msg_t *req;     /* the request; its frames are the images */
    uint64_t id;
    int64_t payer, ledger_task;
    char task[65], model_path[4096], model_sha[65];
    char request[65];  /* the client's idempotency id ("" if none) */
    int64_t base, per_image, rate_num, rate_den;
    bf_msg_t *rep;     /* set by the actor */
} coord_predict_job_t;

void coord_predict_job_free(coord_predict_job_t **j);
/* The actor; it opens its own handle on the ledger at ledger_path (which must outlive the call
 * only until it returns). */
zactor_t *coord_predict_new(const char *ledger_path);
/* Hands *j to the actor (*j set to NULL on success). */
int coord_predict_submit(zactor_t *a, coord_predict_job_t **j);
/* A job the actor finished (its rep set); NULL on interruption. */
coord_predict_job_t *coord_predict_recv(zactor_t *a);

/* ---- store.c: persistent federation state (HOME/coordinator.db) ----------------------------- */

coord_store_t *coord_store_open(const char *path, bf_err_t *err);
void coord_store_close(coord_store_t **p);
int coord_store_add_task(coord_store_t *s, const coord_task_spec_t *t, int64_t ledger_id, bf_err_t *err);
/* state: WAITING | RUNNING | COMPLETED | CANCELLED (AGGREGATING is stored as RUNNING);
 * round = completed rounds. */
int coord_store_set_progress(coord_store_t *s, const char *task, coord_task_state_t state, int round,
                             const char *checkpoint_sha, const char *result_hash, bf_err_t *err);
int coord_store_add_participant(coord_store_t *s, const char *task, const char *key, int64_t user_id, int own_data,
                                int64_t samples, bf_err_t *err);
int coord_store_add_blocks(coord_store_t *s, const char *task, const char *key, const int32_t *blocks, int n, bf_err_t *err);
int coord_store_leave(coord_store_t *s, const char *task, const char *key, bf_err_t *err);
int coord_store_add_round(coord_store_t *s, const char *task, int round, const coord_round_metric_t *m,
                          const char *sha, bf_err_t *err);
/* A round's values came: each key's contribution value and the round's valued flag and valuation
 * time, in one transaction. */
int coord_store_round_valued(coord_store_t *s, const char *task, int round, int k, const char (*keys)[41],
                             const double *values, double value_seconds, bf_err_t *err);
/* A participant's Shapley value for one round and the samples its accepted update carried. */
int coord_store_add_contribution(coord_store_t *s, const char *task, int round, const char *key, double value,
                                 int64_t samples, bf_err_t *err);

/* The task the user created as id, or else the one whose ledger number is number (> 0), in the
 * coordinator.db at path, opened read-only: 0 with *id and *ledger_id set, 1 if no such task (or
 * no database), -1 with err on a read failure. */
int coord_store_task_ref(const char *path, const char *task, int64_t number, char id[65], int64_t *ledger_id,
                         bf_err_t *err);

/* Loading everything back at start (callbacks per row, tasks first). */
typedef struct {
    void (*task)(void *u, const coord_task_spec_t *t, int64_t ledger_id, coord_task_state_t state, int round,
                 const char *checkpoint_sha, const char *result_hash);
    void (*participant)(void *u, const char *task, const char *key, int64_t user_id, int own_data, int64_t samples, int left);
    void (*block)(void *u, const char *task, const char *key, int32_t block);
    void (*round)(void *u, const char *task, int round, const coord_round_metric_t *m); /* no values yet */
    void (*contribution)(void *u, const char *task, int round, const char *key, double value, int64_t samples);
} coord_load_cb_t;
int coord_store_load(coord_store_t *s, const coord_load_cb_t *cb, void *u, bf_err_t *err);

#endif

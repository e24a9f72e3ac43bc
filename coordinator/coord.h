/* coord.h: the coordinator's internal pieces (not a library API): the federation state store,
 * tasks and rounds, and the server loop that serves them over the protocol. */
#ifndef BF_COORD_H
#define BF_COORD_H

#include <czmq.h>
#include <stdint.h>

#include "bf_datasets.h"
#include "bf_ledger.h"
#include "bf_models.h"
#include "bf_proto.h"
#include "bf_util.h"

#define COORD_MAX_DATASETS 16
#define COORD_BLOCK_SIZE 1000     /* images per data block */
#define COORD_BLOCKS_PER_JOIN 5   /* blocks a participant gets when it joins */
#define COORD_VAL_SIZE 5000       /* validation images the coordinator keeps (capped at 10% of train) */
#define COORD_VALUE_IMAGES 2000   /* default validation images a coalition is scored on */

/* ---- task specification, as TASK_CREATE carries it ------------------------------------------ */
typedef struct {
    char id[65], name[129], description[1025], model[17], dataset[65], mode[17], partition[33], strategy[33];
    char creator[41];   /* CURVE key of the creator */
    int64_t fee_cents, pool_cents;
    int64_t base_fee_cents, rate_num, rate_den; /* paid use: price = ceil((base + fee*images) * num/den) */
    int value_images;   /* validation images a coalition is scored on (default COORD_VALUE_IMAGES) */
    int rounds, min_clients, local_epochs, batch, round_timeout;
    double lr, mu;
    uint64_t seed;
    int64_t created_at; /* unix seconds, set by the store */
} task_spec_t;

/* ---- persistent federation state (state.c, HOME/coordinator.db) ---------------------------- */
typedef struct coord_store coord_store_t;

coord_store_t *coord_store_open(const char *path, bf_err_t *err);
void coord_store_close(coord_store_t **p);
int coord_store_add_task(coord_store_t *s, const task_spec_t *t, int64_t ledger_id, bf_err_t *err);
/* state: waiting | running | completed | cancelled; round = completed rounds. */
int coord_store_set_progress(coord_store_t *s, const char *task, const char *state, int round, const char *checkpoint_sha,
                             const char *result_hash, bf_err_t *err);
int coord_store_add_participant(coord_store_t *s, const char *task, const char *key, int64_t user_id, int own_data,
                                int64_t samples, bf_err_t *err);
int coord_store_add_blocks(coord_store_t *s, const char *task, const char *key, const int32_t *blocks, int n, bf_err_t *err);
int coord_store_leave(coord_store_t *s, const char *task, const char *key, bf_err_t *err);
int coord_store_add_round(coord_store_t *s, const char *task, int round, int participants, int64_t samples,
                          double val_acc, double val_loss, double test_acc, double seconds, const char *sha,
                          bf_err_t *err);

/* A participant's Shapley value for one round. */
int coord_store_add_contribution(coord_store_t *s, const char *task, int round, const char *key, double value,
                                 bf_err_t *err);

/* Loading everything back at start (callbacks per row). */
typedef struct {
    void (*task)(void *u, const task_spec_t *t, int64_t ledger_id, const char *state, int round, const char *checkpoint_sha,
                 const char *result_hash);
    void (*participant)(void *u, const char *task, const char *key, int64_t user_id, int own_data, int64_t samples, int left);
    void (*block)(void *u, const char *task, const char *key, int32_t block);
    void (*round)(void *u, const char *task, int round, int participants, int64_t samples, double val_acc,
                  double val_loss, double test_acc, double seconds);
    void (*contribution)(void *u, const char *task, int round, const char *key, double value);
} coord_load_cb_t;
int coord_store_load(coord_store_t *s, const coord_load_cb_t *cb, void *u, bf_err_t *err);

/* ---- paid predictions (predict.c) ----------------------------------------------------------- */

/* One PREDICT request, checked by the socket thread (user, task, mode, state), settled by the
 * prediction actor, sent back to the socket thread with its reply. */
typedef struct {
    zframe_t *rid;     /* routing id of the requester, for the reply */
    bf_msg_t *req;     /* the request; its frames are the images */
    uint64_t id;
    int64_t payer, ledger_task;
    char task[65], model_path[4096], model_sha[65];
    char request[65];  /* the client's idempotency id ("" if none) */
    int64_t base, per_image, rate_num, rate_den;
    bf_msg_t *rep;     /* set by the actor */
} coord_predict_job_t;

void coord_predict_job_free(coord_predict_job_t **j);
/* The ERROR code a ledger return code is answered with (INTERNAL for storage failures). */
bf_proto_code_t coord_ledger_code(int rc);
/* The actor; it opens its own handle on the ledger at ledger_path (which must outlive the call
 * only until it returns). */
zactor_t *coord_predict_new(const char *ledger_path);
/* Hands *j to the actor (*j set to NULL on success). */
int coord_predict_submit(zactor_t *a, coord_predict_job_t **j);
/* A job the actor finished (its rep set); NULL on interruption. */
coord_predict_job_t *coord_predict_recv(zactor_t *a);

/* ---- the server (server.c) ------------------------------------------------------------------ */
typedef struct {
    const char *home, *bind;
    int insecure;
    int ndatasets;
    const char *dataset_names[COORD_MAX_DATASETS], *dataset_paths[COORD_MAX_DATASETS];
    int liveness_ms;    /* a participant silent this long is not waited for (default 15000) */
    int threads;        /* evaluation threads */
    int verbose;
    int block_size;     /* images per data block (default COORD_BLOCK_SIZE) */
    int blocks_per_join;/* blocks a participant gets on JOIN (default COORD_BLOCKS_PER_JOIN) */
    int start_deadline; /* seconds a task may wait for its minimum participants before it is
                           refunded (default 86400) */
    int shapley_exact_max; /* exact Shapley up to this many updates per round (default 10) */
    int shapley_budget;    /* coalition evaluations per round for the estimator (default 100) */
    int value_every;       /* value every K rounds, and the last (default 1) */
    int utility_loss;      /* 1: coalition utility = -validation loss; 0: validation accuracy */
    int bn_recalibrate;    /* training images every aggregated model's BN statistics are re-estimated
                              on (cmd_run's default BF_BN_RECALIBRATE_IMAGES; 0: kept as averaged) */
} coord_opts_t;

/* Runs until SIGINT/SIGTERM; returns an exit status. */
int coord_serve(const coord_opts_t *o);

#endif

/* fed_participant.h: an in-process participant for the federation tests: registers, joins,
 * fetches and verifies its blocks, trains rounds locally with the real engine and sends updates;
 * and the check that a checkpoint is the sample-weighted mean of the updates. */
#ifndef BF_FED_PARTICIPANT_H
#define BF_FED_PARTICIPANT_H

#include <math.h>

#include "bf_mp.h"
#include "bf_trainer.h"
#include "fed_common.h"

/* blockfed-coordinator run's default --bn-recalibrate (docs/COORDINATOR.md), restated here. */
#define FED_BN_RECALIBRATE_IMAGES 1280


static inline bf_msg_t *call(fed_client_t *c, bf_msg_t *req) { return fed_call(c, req); }

static inline void expect_ok(bf_msg_t *rep, const char *what) {
    CHECK_MSG(rep && !fed_is(rep, "ERROR"), "%s: %s %s", what, rep ? fed_code(rep) : "timeout",
              rep && fed_is(rep, "ERROR") ? bf_msg_str(rep, "message") : "");
}

static inline void reg(fed_client_t *c, const char *name) {
    bf_msg_t *r = fed_req(c, "REGISTER");
    bf_msg_set_str(r, "name", name);
    bf_msg_t *rep = call(c, r);
    expect_ok(rep, "register");
    bf_msg_destroy(&rep);
}

typedef struct {
    fed_client_t c;
    bf_dataset_t data;
    float *params, *buffers; /* the update sent in the current round */
    float *global;           /* the global parameters received for that round */
    float *global_b;         /* and the global buffers */
    size_t np, nb;
    int64_t samples;
    float poison; /* nonzero: the update sent is the trained one times this (a poisoner) */
    int64_t claim; /* nonzero: the samples UPDATE claims instead of the data trained on */
} part_t;

/* JOIN, then every assigned block with its digest checked, concatenated into one dataset. */
static inline void join_and_fetch(part_t *p, const char *task) {
    bf_msg_t *r = fed_req(&p->c, "JOIN");
    bf_msg_set_str(r, "task", task);
    bf_msg_set_bool(r, "own_data", 0);
    bf_msg_t *joined = call(&p->c, r);
    CHECK(fed_is(joined, "JOINED"));
    const msgpack_object *blocks = joined ? bf_msg_any(joined, "blocks") : NULL;
    int nb = blocks && blocks->type == MSGPACK_OBJECT_ARRAY ? (int)blocks->via.array.size : 0;
    CHECK(nb == 3);
    bf_err_t err;
    CHECK(bf_dataset_alloc(&p->data, nb * 100, 1, 16, 16, 10, &err) == 0);
    for (int i = 0; i < nb; i++) {
        bf_msg_t *g = fed_req(&p->c, "BLOCK_GET");
        bf_msg_set_str(g, "task", task);
        bf_msg_set_uint(g, "block", blocks->via.array.ptr[i].via.u64);
        bf_msg_t *b = call(&p->c, g);
        CHECK(fed_is(b, "BLOCK") && bf_msg_uint(b, "n", 0) == 100);
        if (!fed_is(b, "BLOCK")) {
            bf_msg_destroy(&b);
            continue;
        }
        size_t lp, ll;
        const uint8_t *px = bf_msg_frame(b, 0, &lp), *lb = bf_msg_frame(b, 1, &ll);
        char hex[65];
        bf_block_digest(100, 1, 16, 16, px, lb, hex);
        CHECK(!strcmp(hex, bf_msg_str(b, "sha256")));
        memcpy(p->data.pixels + (size_t)i * 100 * 256, px, lp);
        memcpy(p->data.labels + (size_t)i * 100, lb, ll);
        bf_msg_destroy(&b);
    }
    bf_msg_destroy(&joined);
}

/* One participant's round: ROUND_GET until ROUND, train one epoch locally, UPDATE. */
static inline int train_round(part_t *p, const char *task, int expect_round) {
    bf_msg_t *rep = NULL;
    for (int tries = 0; tries < 200; tries++) {
        bf_msg_t *r = fed_req(&p->c, "ROUND_GET");
        bf_msg_set_str(r, "task", task);
        rep = call(&p->c, r);
        if (!fed_is(rep, "WAIT")) break;
        bf_msg_destroy(&rep);
        zclock_sleep(100);
    }
    CHECK_MSG(fed_is(rep, "ROUND"), "expected ROUND, got %s", rep ? bf_msg_type(rep) : "timeout");
    if (!fed_is(rep, "ROUND")) return bf_msg_destroy(&rep), -1;
    CHECK((int)bf_msg_uint(rep, "round", 99) == expect_round);
    bf_err_t err;
    bf_net_t *net = bf_net_new(bf_msg_str(rep, "arch"), 1, 16, 16, 10, 32, 1, &err);
    p->np = bf_net_num_params(net);
    p->nb = bf_net_num_buffers(net);
    CHECK(bf_msg_frame_f32(rep, 0, bf_net_params(net), p->np) == 0);
    free(p->global);
    p->global = malloc(sizeof(float) * p->np);
    memcpy(p->global, bf_net_params(net), sizeof(float) * p->np);
    CHECK(bf_msg_frame_f32(rep, 1, bf_net_buffers(net), p->nb) == 0);
    free(p->global_b);
    p->global_b = malloc(sizeof(float) * (p->nb + 1));
    memcpy(p->global_b, bf_net_buffers(net), sizeof(float) * p->nb);
    float mean = 0, std = 1;
    const msgpack_object *pre = bf_msg_any(rep, "preprocess");
    double v;
    if (!bf_mp_as_double(&bf_mp_get(pre, "mean")->via.array.ptr[0], &v)) mean = (float)v;
    if (!bf_mp_as_double(&bf_mp_get(pre, "std")->via.array.ptr[0], &v)) std = (float)v;
    bf_train_opts_t o = {.batch = 32, .lr = bf_msg_double(rep, "lr", 0.05), .schedule = "constant", .momentum = 0.9,
                         .weight_decay = 5e-4, .seed = bf_msg_uint(rep, "seed", 1)};
    bf_trainer_t *tr = bf_trainer_new(net, &o, &p->data, &mean, &std, 1, &err);
    bf_progress_t pr;
    CHECK(tr && bf_trainer_epoch(tr, NULL, NULL, &pr) == 0);
    free(p->params), free(p->buffers);
    p->params = malloc(sizeof(float) * p->np);
    p->buffers = malloc(sizeof(float) * (p->nb + 1));
    memcpy(p->params, bf_net_params(net), sizeof(float) * p->np);
    for (size_t j = 0; p->poison && j < p->np; j++) p->params[j] *= p->poison;
    memcpy(p->buffers, bf_net_buffers(net), sizeof(float) * p->nb);
    p->samples = p->data.n;
    bf_msg_t *u = fed_req(&p->c, "UPDATE");
    bf_msg_set_str(u, "task", task);
    bf_msg_set_uint(u, "round", (uint64_t)expect_round);
    bf_msg_set_uint(u, "samples", (uint64_t)(p->claim ? p->claim : p->samples));
    bf_msg_set_double(u, "loss", pr.loss);
    bf_msg_add_f32(u, p->params, p->np);
    bf_msg_add_f32(u, p->buffers, p->nb);
    bf_msg_t *ok = call(&p->c, u);
    expect_ok(ok, "update");
    bf_msg_destroy(&ok);
    bf_trainer_destroy(&tr);
    bf_net_destroy(&net);
    bf_msg_destroy(&rep);
    return 0;
}

/* A participant's cash in cents (ASSETS), or -1. */
static inline double fed_cash_cents(fed_client_t *c) {
    bf_msg_t *rep = call(c, fed_req(c, "ASSETS_GET"));
    const msgpack_object *o = fed_is(rep, "ASSETS") ? bf_mp_get(bf_msg_any(rep, "assets"), "cash") : NULL;
    char v[32];
    snprintf(v, sizeof v, "%.*s", o && o->type == MSGPACK_OBJECT_STR ? (int)o->via.str.size : 0, o ? o->via.str.ptr : "");
    bf_msg_destroy(&rep);
    return o ? (double)llround(atof(v) * 100) : -1;
}

/* The creator recharges 10.00 and opens a reward task with that pool on the "tiny" dataset: a
 * cnn, ROUNDS rounds of one local epoch, starting with MIN_CLIENTS participants. */
static inline void fed_reward_task(fed_client_t *c, const char *task, const char *strategy, int min_clients, int rounds) {
    bf_msg_t *r = fed_req(c, "RECHARGE");
    bf_msg_set_str(r, "amount", "10.00");
    bf_msg_t *rep = call(c, r);
    expect_ok(rep, "recharge");
    bf_msg_destroy(&rep);
    r = fed_req(c, "TASK_CREATE");
    bf_msg_set_str(r, "task", task), bf_msg_set_str(r, "name", task), bf_msg_set_str(r, "model", "cnn");
    bf_msg_set_str(r, "dataset", "tiny"), bf_msg_set_uint(r, "rounds", (uint64_t)rounds), bf_msg_set_str(r, "mode", "reward");
    bf_msg_set_str(r, "pool", "10.00"), bf_msg_set_uint(r, "min_clients", (uint64_t)min_clients);
    bf_msg_set_uint(r, "local_epochs", 1), bf_msg_set_uint(r, "batch", 32), bf_msg_set_double(r, "lr", 0.05);
    bf_msg_set_uint(r, "round_timeout", 120), bf_msg_set_str(r, "partition", "iid"), bf_msg_set_str(r, "strategy", strategy);
    rep = call(c, r);
    expect_ok(rep, "task create");
    bf_msg_destroy(&rep);
}

/* Polls ROUND_GET until the task answers DONE. */
static inline void fed_wait_done(fed_client_t *c, const char *task) {
    bf_msg_t *done = NULL;
    for (int tries = 0; tries < 200 && !fed_is(done, "DONE"); tries++) {
        bf_msg_destroy(&done);
        bf_msg_t *r = fed_req(c, "ROUND_GET");
        bf_msg_set_str(r, "task", task);
        done = call(c, r);
        if (!fed_is(done, "DONE")) zclock_sleep(100);
    }
    CHECK(fed_is(done, "DONE"));
    bf_msg_destroy(&done);
}

/* The participants' cumulative Shapley values from TASK_STATUS (NaN where missing). */
static inline void fed_values(fed_client_t *c, const char *task, double *value, int n) {
    bf_msg_t *r = fed_req(c, "TASK_STATUS");
    bf_msg_set_str(r, "task", task);
    bf_msg_t *rep = call(c, r);
    const msgpack_object *parts = rep ? bf_mp_get(bf_msg_any(rep, "status"), "participants") : NULL;
    CHECK(parts && parts->type == MSGPACK_OBJECT_ARRAY && parts->via.array.size == (uint32_t)n);
    for (int i = 0; i < n; i++) value[i] = NAN;
    for (uint32_t i = 0; parts && i < parts->via.array.size && i < (uint32_t)n; i++)
        bf_mp_as_double(bf_mp_get(&parts->via.array.ptr[i], "shapley"), &value[i]);
    bf_msg_destroy(&rep);
}

/* After the coordinator stopped: the ledger replays (`ledger verify`), the participants' and the
 * creator's sockets and data are freed, and on any failed check the coordinator's log is shown. */
static inline void fed_finish(const char *coord, const char *home, part_t *p, int n, fed_client_t *creator) {
    char out[700];
    snprintf(out, sizeof out, "%s.verify", home);
    const char *vargs[] = {"ledger", "verify", "--home", home, NULL};
    int rc = bf_spawn(coord, vargs, out, 1);
    CHECK_MSG(rc == 0, "ledger verify exit %d:\n%s", rc, bf_slurp(out));
    for (int i = 0; i < n; i++) {
        fed_client_close(&p[i].c);
        bf_dataset_free(&p[i].data);
        free(p[i].params), free(p[i].buffers), free(p[i].global), free(p[i].global_b);
    }
    fed_client_close(creator);
    if (bf_test_failures) {
        snprintf(out, sizeof out, "%s.log", home);
        fprintf(stderr, "--- coordinator log ---\n%s\n", bf_slurp(out));
    }
}

/* How the coordinator re-estimates an aggregated model's BatchNorm statistics (run --bn-recalibrate,
 * default FED_BN_RECALIBRATE_IMAGES), restated independently of its code: the first images of its
 * training split's blocks, spread evenly, normalized with the split's channel statistics, in
 * batches of 256 (its models' max_batch; the net given must have the same). */
typedef struct {
    const char *data_dir, *partition;
    int block_size, images;
    uint64_t seed;
} fed_recal_t;

/* buffers := BN statistics re-estimated on the images rc describes (the net's parameters as they are). */
static inline void fed_recalibrate(bf_net_t *g, const fed_recal_t *rc) {
    bf_dataset_t d;
    bf_blocks_t b;
    bf_err_t err;
    float mean, std;
    CHECK(bf_dataset_load(rc->data_dir, "train", 0, 0, 0, &d, &err) == 0);
    bf_dataset_channel_stats(&d, &mean, &std);
    int nval = d.n / 10 < 5000 ? d.n / 10 : 5000; /* COORD_VAL_SIZE, capped at 10% */
    CHECK(bf_blocks_partition(&d, rc->block_size, nval, rc->partition, rc->seed, &b, &err) == 0);
    int32_t *idx = malloc(sizeof(int32_t) * rc->images);
    float *x = malloc(sizeof(float) * rc->images * d.c * d.h * d.w);
    int n = bf_blocks_spread(&b, b.nblocks, rc->images, idx);
    CHECK(n == rc->images || n == b.nblocks * b.block_size);
    bf_batch_fill(&d, idx, n, &mean, &std, NULL, x, NULL);
    bf_net_recalibrate_bn(g, x, n);
    free(idx), free(x);
    bf_blocks_free(&b);
    bf_dataset_free(&d);
}

/* The checkpoint of round r: its parameters the sample-weighted mean of the updates of parts[i]
 * for i in idx[0..k); its buffers (BN statistics) their mean too if rc is NULL (coordinator run
 * with --bn-recalibrate 0, or a model without BN), else re-estimated as rc says. */
static inline void check_fedavg_subset(const char *home, const char *task, part_t *parts, const int *idx, int k, int round,
                                       const fed_recal_t *rc) {
    char path[700];
    snprintf(path, sizeof path, "%s/checkpoints/%s/round-%04d.bfm", home, task, round);
    bf_err_t err;
    bf_model_meta_t meta;
    bf_net_t *g = NULL;
    for (int tries = 0; tries < 100 && !g; tries++) { /* written by the coordinator's worker */
        g = bf_model_load(path, 256, 1, &meta, &err); /* recalibration batches: the coordinator's 256 */
        if (!g) zclock_sleep(100);
    }
    CHECK_MSG(g != NULL, "%s", err.msg);
    if (!g) return;
    double worst = 0, worst_b = 0, total = 0, moved = 0;
    for (int i = 0; i < k; i++) total += (double)parts[idx[i]].samples;
    for (size_t j = 0; j < parts[idx[0]].np; j++) {
        double s = 0;
        for (int i = 0; i < k; i++) s += (double)parts[idx[i]].samples * parts[idx[i]].params[j];
        worst = fmax(worst, fabs(s / total - bf_net_params(g)[j]));
    }
    size_t nb = bf_net_num_buffers(g);
    float *expect = malloc(sizeof(float) * (nb + 1)), *got = bf_net_buffers(g);
    for (size_t j = 0; j < nb; j++) {
        double s = 0;
        for (int i = 0; i < k; i++) s += (double)parts[idx[i]].samples * parts[idx[i]].buffers[j];
        expect[j] = (float)(s / total);
    }
    if (rc) { /* the averaged statistics must have been replaced: by what recalibration gives */
        float *kept = malloc(sizeof(float) * (nb + 1));
        memcpy(kept, got, sizeof(float) * nb);
        for (size_t j = 0; j < nb; j++) moved = fmax(moved, fabs(expect[j] - kept[j]));
        fed_recalibrate(g, rc);
        memcpy(expect, got, sizeof(float) * nb), memcpy(got, kept, sizeof(float) * nb);
        free(kept);
    }
    for (size_t j = 0; j < nb; j++) worst_b = fmax(worst_b, fabs(expect[j] - got[j]) / fmax(1.0, fabs(expect[j])));
    printf("round %d: checkpoint vs weighted mean of %d updates: params max |diff| %.3g; %zu buffers vs %s: max rel. "
           "diff %.3g\n", round, k, worst, nb, rc ? "recalibrated" : "weighted mean", worst_b);
    if (rc) printf("  averaged statistics vs the checkpoint's: max |diff| %.3g (recalibration moved them)\n", moved);
    CHECK(worst < 1e-6);
    CHECK(worst_b < 1e-5);
    CHECK(!rc || moved > 1e-3);
    free(expect);
    bf_net_destroy(&g);
}


#endif

/* predict.c: paid predictions, served by an actor beside the socket thread.
 *
 * The socket thread checks who asks and for which task, then hands the request over; this actor
 * owns its own ledger handle and a cache of loaded models. Requests that arrive together form a
 * batch: their images are classified first, then the batch is charged in one short ledger group
 * with the card-network discipline: hold the most each request can cost, capture what its images
 * actually classified cost (void the rest), pay that out to the shareholders and write the usage
 * record with the results, in the capture's own ledger operation.
 *
 * One write transaction per batch, and no inference inside it: each hold and each settlement is
 * its own atomic, idempotent operation (a savepoint), the group is committed once, and only then
 * are the requests answered. Hold and settlement sit in the same transaction, so nobody sees the
 * hold between them, and the write lock (SQLite's, or the shared chain lock of a PostgreSQL
 * ledger that several coordinators write) is held for the ledger work only, not while images are
 * classified. One commit (one fsync) per batch instead of two per request halves the latency and
 * lets throughput grow with load. Because images are classified before the hold, a read first
 * checks that the payer can afford the request: an unfunded payer costs no inference; the hold
 * stays the authoritative check.
 *
 * Crash safety: a crash before the commit leaves nothing (no hold, no charge); after it, a
 * complete, paid-out charge with its usage record. Holds carry HOLD_TIMEOUT_S all the same, and
 * the coordinator sweeps expired ones (at start and periodically), so a hold that some other
 * path left pending can never lock money forever. Idempotency: ledger op ids derive from the
 * payer and the request id the client chose, so a retried request is answered from its usage
 * record and never charged twice. */
#include <math.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bf_mp.h"
#include "bf_predictor.h"
#include "coord.h"

#define HOLD_TIMEOUT_S 60 /* a hold left by a crash is released after this */
#define BATCH_MAX 64      /* requests settled per commit */

_Static_assert(BF_PREDICT_MAX_IMAGE_BYTES == BF_PROTO_MAX_IMAGE, "one image limit on both layers");

typedef struct {
    char task[65], sha[65];
    bf_predictor_t *p;
} model_t;

typedef struct {
    bf_ledger_t *ledger;
    model_t *models;
    int nmodels;
    uint64_t auto_ids; /* request ids for clients that sent none */
} svc_t;

/* One request's progress through a batch. */
typedef struct {
    coord_predict_job_t *j;
    char op[256];           /* op id prefix: pred:<payer>:<request> */
    int64_t hold, max_price, price;
    int held, done;
    int settled_before;     /* already settled when the batch began: a retry */
    int unfunded;           /* less available cash than max_price when the batch began */
    int64_t classified;
    msgpack_sbuffer results;
    char fail[512]; /* nothing could be classified: answered with this error, nothing charged */
} work_t;

void coord_predict_job_free(coord_predict_job_t **pj) {
    if (!pj || !*pj) return;
    zframe_destroy(&(*pj)->rid);
    bf_msg_destroy(&(*pj)->req);
    bf_msg_destroy(&(*pj)->rep);
    free(*pj);
    *pj = NULL;
}

static void reply_error(work_t *w, bf_proto_code_t code, const char *fmt, const char *detail) {
    w->j->rep = bf_msg_error(w->j->id, code, fmt, detail);
    w->done = 1;
}

/* ---- models ------------------------------------------------------------------------------ */

/* The task's model, loaded once; the file must still be the checkpoint the task completed with. */
static bf_predictor_t *model_of(svc_t *s, const coord_predict_job_t *j, bf_err_t *err) {
    for (int i = 0; i < s->nmodels; i++)
        if (!strcmp(s->models[i].task, j->task) && !strcmp(s->models[i].sha, j->model_sha)) return s->models[i].p;
    size_t n;
    uint8_t *b;
    if (bf_file_read(j->model_path, BF_MODEL_FILE_MAX, &b, &n, err))
        return bf_err_prefix(err, "the model of task %s: ", j->task), NULL;
    char hex[65];
    bf_sha256_hex(b, n, hex);
    bf_predictor_t *p = NULL;
    if (strcmp(hex, j->model_sha)) bf_err_set(err, "the model file of task %s does not match its checkpoint digest", j->task);
    else p = bf_predictor_new(b, n, BF_PREDICT_THREADS, err);
    free(b);
    model_t *g = p ? realloc(s->models, (size_t)(s->nmodels + 1) * sizeof *g) : NULL;
    if (!g) {
        bf_predictor_destroy(&p);
        return NULL;
    }
    s->models = g;
    model_t *m = &s->models[s->nmodels++];
    snprintf(m->task, sizeof m->task, "%s", j->task);
    snprintf(m->sha, sizeof m->sha, "%s", j->model_sha);
    m->p = p;
    return p;
}

/* ---- one batch ----------------------------------------------------------------------------- */

/* Classifies every image of the request into w->results (msgpack array, one map per image):
 * {top: [{class, label, p}...]} or {error: "..."}; counts the classified images. */
static void classify(bf_predictor_t *p, work_t *w) {
    const bf_msg_t *req = w->j->req;
    size_t n = bf_msg_frame_count(req);
    int classes = bf_predictor_classes(p), top = (int)bf_msg_uint(req, "top", 1);
    double probs[256];
    int idx[256];
    msgpack_packer pk;
    msgpack_packer_init(&pk, &w->results, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, n);
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const uint8_t *img = bf_msg_frame(req, i, &len);
        bf_err_t err;
        msgpack_pack_map(&pk, 1);
        int finite = 1;
        if (bf_predictor_run(p, img, len, probs, &err) == 0)
            for (int k = 0; k < classes; k++) finite &= isfinite(probs[k]) != 0;
        else
            finite = -1;
        if (finite != 1) { /* a failed image: not counted, so not charged */
            bf_mp_pack_str(&pk, "error");
            bf_mp_pack_str(&pk, finite < 0 ? err.msg : "the model's output for this image is not finite");
            continue;
        }
        w->classified++;
        int k = bf_predictor_topk(probs, classes, top, idx);
        bf_mp_pack_str(&pk, "top");
        msgpack_pack_array(&pk, (size_t)k);
        for (int r = 0; r < k; r++) {
            msgpack_pack_map(&pk, 3);
            bf_mp_pack_str(&pk, "class");
            msgpack_pack_int(&pk, idx[r]);
            bf_mp_pack_str(&pk, "label");
            bf_mp_pack_str(&pk, bf_predictor_label(p, idx[r]));
            bf_mp_pack_str(&pk, "p");
            msgpack_pack_double(&pk, probs[idx[r]]);
        }
    }
}

static void reply_prediction(svc_t *s, work_t *w, const void *results, size_t len, int64_t fee) {
    const coord_predict_job_t *j = w->j;
    bf_ledger_balance_t bal = {0};
    bf_err_t err;
    bf_ledger_balance(s->ledger, j->payer, BF_LEDGER_CNY, &bal, &err);
    char fee_s[32], bal_s[32];
    bf_money_format_amount(fee, 2, fee_s);
    bf_money_format_amount(bal.available, 2, bal_s);
    bf_msg_t *r = bf_msg_new("PREDICTION", j->id);
    bf_msg_set_any(r, "results", results, len);
    bf_msg_set_str(r, "fee", fee_s);
    bf_msg_set_str(r, "balance", bal_s);
    bf_msg_set_uint(r, "usage", (uint64_t)w->hold);
    bf_msg_set_str(r, "model", j->model_sha);
    w->j->rep = r;
    w->done = 1;
}

/* Whether w's request was held and resolved before (a retry): its hold id in *hold. */
static int settled_before(bf_ledger_t *L, const work_t *w, int64_t *hold, bf_ledger_usage_t *u) {
    char op[300];
    int found = 0, rc = 0;
    bf_err_t err;
    snprintf(op, sizeof op, "%s:hold", w->op);
    if (!L || bf_ledger_op_lookup(L, op, &found, &rc, hold, &err) || !found || rc != BF_LEDGER_OK) return 0;
    return bf_ledger_hold_get(L, *hold, u, &err) == 0 && u->status != BF_LEDGER_HOLD_PENDING;
}

/* A request already settled (a retry): answered from its usage record, nothing charged again. */
static int replay(svc_t *s, work_t *w) {
    int64_t hold = 0;
    bf_ledger_usage_t u;
    bf_err_t err;
    if (!settled_before(s->ledger, w, &hold, &u)) return 0;
    void *res = NULL;
    size_t len = 0;
    if (u.status == BF_LEDGER_HOLD_EXPIRED || bf_ledger_usage_note(s->ledger, hold, NULL, NULL, &res, &len, &err) ||
        !res) {
        free(res);
        reply_error(w, BF_PROTO_BAD_STATE, "%s", "this request expired without a result and was not charged; send it again");
        return 1;
    }
    w->hold = hold;
    reply_prediction(s, w, res, len, u.captured);
    free(res);
    return 1;
}

static void reply_unfunded(work_t *w) {
    char price[32], msg[256];
    bf_money_format_amount(w->max_price, 2, price);
    snprintf(msg, sizeof msg, "this request may cost up to %s and the available balance is lower; nothing was "
                              "charged (recharge with blockfed-client recharge)", price);
    reply_error(w, BF_PROTO_INSUFFICIENT_FUNDS, "%s", msg);
}

/* Inside the batch's group: on a storage failure the group is rolled back and -1 returned. */
static int hold_all(svc_t *s, work_t *w, int n, bf_err_t *err) {
    for (int i = 0; i < n; i++) {
        if (w[i].done) continue;
        if (w[i].fail[0]) {
            reply_error(&w[i], BF_PROTO_INTERNAL, "%s; nothing was charged", w[i].fail);
            continue;
        }
        if (w[i].unfunded) {
            reply_unfunded(&w[i]);
            continue;
        }
        if (w[i].max_price == 0) { /* a free model: nothing to hold */
            w[i].held = 1;
            continue;
        }
        const coord_predict_job_t *j = w[i].j;
        char op[300];
        snprintf(op, sizeof op, "%s:hold", w[i].op);
        int rc = bf_ledger_fee_hold(s->ledger, op, j->ledger_task, j->payer, w[i].max_price, HOLD_TIMEOUT_S,
                                    &w[i].hold, err);
        if (rc == BF_LEDGER_EINTERNAL || rc == BF_LEDGER_EBUSY) {
            bf_ledger_group_rollback(s->ledger);
            return -1;
        }
        if (rc == BF_LEDGER_EFUNDS) {
            reply_unfunded(&w[i]);
            continue;
        }
        if (rc != BF_LEDGER_OK) {
            reply_error(&w[i], coord_ledger_code(rc), "%s", err->msg);
            continue;
        }
        w[i].held = 1;
    }
    return 0;
}

/* Settles inside the batch's group and commits it; -1 after a rollback (nothing charged). */
static int settle_all(svc_t *s, work_t *w, int n, bf_err_t *err) {
    for (int i = 0; i < n; i++) {
        if (w[i].done || !w[i].held) continue;
        if (!w[i].hold) continue; /* free model: no ledger movement */
        bf_ledger_usage_note_t note = {(int64_t)bf_msg_frame_count(w[i].j->req), w[i].classified, w[i].results.data,
                                       w[i].results.size};
        char op[300];
        snprintf(op, sizeof op, "%s:settle", w[i].op);
        int rc = bf_ledger_fee_settle(s->ledger, op, w[i].hold, w[i].price, &note, err);
        if (rc == BF_LEDGER_EINTERNAL || rc == BF_LEDGER_EBUSY) {
            bf_ledger_group_rollback(s->ledger);
            return -1;
        }
        if (rc != BF_LEDGER_OK) reply_error(&w[i], coord_ledger_code(rc), "settlement: %s", err->msg);
    }
    if (bf_ledger_group_commit(s->ledger, err)) {
        bf_ledger_group_rollback(s->ledger);
        return -1;
    }
    /* Replies only after the commit: a client never sees a result the ledger could still lose. */
    for (int i = 0; i < n; i++) {
        if (w[i].done || !w[i].held) continue;
        reply_prediction(s, &w[i], w[i].results.data, w[i].results.size, w[i].price);
    }
    return 0;
}

/* ---- one batch ----------------------------------------------------------------------------- */

/* Prices, checks (reads) and classifies one request, before any ledger write. */
static void prepare(svc_t *s, work_t *w, coord_predict_job_t *j) {
    memset(w, 0, sizeof *w);
    w->j = j;
    msgpack_sbuffer_init(&w->results);
    if (!s->ledger) {
        reply_error(w, BF_PROTO_INTERNAL, "%s", "the ledger cannot be opened for predictions");
        return;
    }
    if (j->request[0]) snprintf(w->op, sizeof w->op, "pred:%lld:%s", (long long)j->payer, j->request);
    else snprintf(w->op, sizeof w->op, "pred:%lld:auto-%lld-%llu", (long long)j->payer, (long long)zclock_time(),
                  (unsigned long long)++s->auto_ids);
    bf_err_t err;
    int64_t images = (int64_t)bf_msg_frame_count(j->req), hold = 0;
    bf_ledger_usage_t u;
    if (bf_money_price(j->base, j->per_image, images, j->rate_num, j->rate_den, &w->max_price, &err)) {
        snprintf(w->fail, sizeof w->fail, "pricing: %.400s", err.msg);
        return;
    }
    if (j->request[0] && settled_before(s->ledger, w, &hold, &u)) { /* a retry: answered from its record */
        w->settled_before = 1;
        return;
    }
    bf_ledger_balance_t bal;
    if (w->max_price > 0 && bf_ledger_balance(s->ledger, j->payer, BF_LEDGER_CNY, &bal, &err) == 0 &&
        bal.available < w->max_price) {
        w->unfunded = 1;
        return;
    }
    bf_predictor_t *p = model_of(s, j, &err);
    if (!p) {
        snprintf(w->fail, sizeof w->fail, "%s", err.msg);
        return;
    }
    classify(p, w);
    if (bf_money_price(j->base, j->per_image, w->classified, j->rate_num, j->rate_den, &w->price, &err))
        w->price = w->max_price; /* unreachable: the price is monotone and the maximum fit */
}

static void run_batch(svc_t *s, coord_predict_job_t **jobs, int n) {
    work_t w[BATCH_MAX];
    bf_err_t err = {{0}};
    for (int i = 0; i < n; i++) prepare(s, &w[i], jobs[i]);
    for (int i = 0; i < n; i++)
        if (w[i].settled_before && !replay(s, &w[i])) /* (a duplicate within the batch is idempotent) */
            reply_error(&w[i], BF_PROTO_INTERNAL, "%s", "this request's record changed while it was retried; send it again");
    if (s->ledger && (bf_ledger_group_begin(s->ledger, &err) || hold_all(s, w, n, &err) || settle_all(s, w, n, &err)))
        for (int i = 0; i < n; i++)
            if (!w[i].done) reply_error(&w[i], BF_PROTO_INTERNAL, "ledger unavailable, nothing was charged: %s", err.msg);
    for (int i = 0; i < n; i++) msgpack_sbuffer_destroy(&w[i].results);
}

/* ---- the actor ----------------------------------------------------------------------------- */

static void predict_actor(zsock_t *pipe, void *args) {
    svc_t s = {0};
    bf_err_t err;
    s.ledger = bf_ledger_open((const char *)args, &err); /* NULL: every request gets INTERNAL */
    zsock_signal(pipe, 0);
    coord_predict_job_t *jobs[BATCH_MAX];
    int term = 0;
    while (!term) {
        int n = 0;
        /* Block for one request, then take whatever else is already queued. */
        do {
            char *cmd = NULL;
            void *p = NULL;
            if (zsock_recv(pipe, "sp", &cmd, &p) < 0 || !cmd || strcmp(cmd, "JOB") || !p) term = 1;
            else jobs[n++] = p;
            zstr_free(&cmd);
        } while (!term && n < BATCH_MAX && (zsock_events(pipe) & ZMQ_POLLIN));
        if (n) run_batch(&s, jobs, n);
        for (int i = 0; i < n; i++) {
            jobs[i]->batch_size = n, jobs[i]->batch_first = i == 0;
            zsock_send(pipe, "p", jobs[i]);
        }
    }
    for (int i = 0; i < s.nmodels; i++) bf_predictor_destroy(&s.models[i].p);
    free(s.models);
    bf_ledger_close(&s.ledger);
}

zactor_t *coord_predict_new(const char *ledger_path) { return zactor_new(predict_actor, (void *)ledger_path); }

int coord_predict_submit(zactor_t *a, coord_predict_job_t **pj) {
    int rc = zsock_send(a, "sp", "JOB", *pj);
    if (rc == 0) *pj = NULL; /* the actor owns it until it sends it back */
    return rc;
}

coord_predict_job_t *coord_predict_recv(zactor_t *a) {
    void *p = NULL;
    return zsock_recv(a, "p", &p) == 0 ? p : NULL;
}

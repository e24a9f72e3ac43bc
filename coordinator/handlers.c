/* handlers.c: the answer to every request. One table names each request type with what must hold
 * before its handler runs (a registered caller, the task the request names, the caller being one
 * of its participants) and one preamble checks that, as redis's processCommand does; each h_*
 * then keeps only its own logic and returns its reply. Replies are built here and never sent:
 * the socket thread (server.c) sends them. PREDICT is the one ASYNC request: checked here, then
 * handed to the prediction actor, which answers it. Identity is the CURVE key the connection
 * authenticated with; registration binds a user name to that key once. */
#include <assert.h>
#include <math.h>
#include <msgpack.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bf_mp.h"
#include "bf_predictor.h" /* BF_PREDICT_MAX_IMAGES: the most a request can cost */
#include "coord.h"

#define SERVER_NAME "blockfed-coordinator/0.1"
/* A PREDICT can carry 64 images of 16 MiB: bound what one payer, and everyone, may queue. */
#define MAX_INFLIGHT_PER_USER 16
#define MAX_INFLIGHT_TOTAL 512

/* ---- msgpack builders for the "any" reply fields ------------------------------------------- */

typedef struct {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} mp_t;

static msgpack_packer *mp_begin(mp_t *m) {
    msgpack_sbuffer_init(&m->sb);
    msgpack_packer_init(&m->pk, &m->sb, msgpack_sbuffer_write);
    return &m->pk;
}

static void mp_kv_str(msgpack_packer *pk, const char *k, const char *v) { bf_mp_pack_str(pk, k), bf_mp_pack_str(pk, v); }
static void mp_kv_int(msgpack_packer *pk, const char *k, int64_t v) { bf_mp_pack_str(pk, k), msgpack_pack_int64(pk, v); }
static void mp_kv_dbl(msgpack_packer *pk, const char *k, double v) { bf_mp_pack_str(pk, k), msgpack_pack_double(pk, v); }

static void money(char buf[32], int64_t cents) { bf_money_format_amount(cents, 2, buf); }
static void mp_kv_money(msgpack_packer *pk, const char *k, int64_t cents) {
    char b[32];
    money(b, cents);
    mp_kv_str(pk, k, b);
}

/* Sets an any field from the builder and frees the builder. */
static void mp_set(mp_t *m, bf_msg_t *msg, const char *key) {
    bf_msg_set_any(msg, key, m->sb.data, m->sb.size);
    msgpack_sbuffer_destroy(&m->sb);
}

/* ---- callers ------------------------------------------------------------------------------- */

static void remember_user(coord_server_t *s, const char *key, int64_t id) {
    int64_t *v = malloc(sizeof *v);
    if (!v) return;
    *v = id;
    zhashx_update(s->users, key, v);
}

/* The registered user behind a CURVE key, or 0. Every user's key is loaded at start and REGISTER
 * adds its own; a key not in the index may still belong to a user another coordinator sharing the
 * ledger registered since, so the ledger is asked (one indexed read), at most once per
 * STRANGER_RECHECK_MS for a key it did not know: a stranger cycling through keys costs a bounded
 * read each, never more. */
#define STRANGER_RECHECK_MS 10000
#define STRANGERS_MAX 100000 /* the negative cache starts over beyond this many keys */
static int64_t user_of(coord_server_t *s, const char *key) {
    if (!key) return 0;
    int64_t *id = zhashx_lookup(s->users, key);
    if (id) return *id;
    int64_t now = zclock_mono(), *seen = zhashx_lookup(s->strangers, key);
    if (seen && now - *seen < STRANGER_RECHECK_MS) return 0;
    int64_t uid = 0;
    bf_err_t err;
    if (strlen(key) == 40 && bf_ledger_user_find_key(s->ledger, key, &uid, &err) == 0 && uid > 0) {
        zhashx_delete(s->strangers, key);
        remember_user(s, key, uid);
        return uid;
    }
    if (zhashx_size(s->strangers) >= STRANGERS_MAX) zhashx_purge(s->strangers);
    int64_t *t = seen ? seen : malloc(sizeof *t);
    if (t) *t = now;
    if (t && !seen) zhashx_insert(s->strangers, key, t);
    return 0;
}

static bf_msg_t *ledger_error(uint64_t id, int rc, const bf_err_t *err) {
    return bf_msg_error(id, coord_ledger_code(rc), "%s", err->msg);
}

/* ---- the request context and the preamble's guarantees ------------------------------------ */

typedef struct {
    coord_server_t *s;
    const bf_msg_t *req;
    uint64_t id;
    const char *key;    /* authenticated CURVE key (or the insecure stand-in), may be NULL */
    int64_t user;       /* registered user id, 0 if none; set when NEED_USER */
    coord_task_t *t;    /* the task the request names; set when NEED_TASK or NEED_PART */
    coord_part_t *p;    /* the caller as its participant; set when NEED_PART */
    zframe_t **rid;     /* ASYNC only: the requester's routing id and the request, to hand over */
    bf_msg_t **reqp;
    coord_via_t via;    /* the transport the request came by (an ASYNC reply goes back by it) */
} ctx_t;

enum {
    NEED_USER = 1, /* a registered caller: c->user != 0 */
    NEED_TASK = 2, /* the task named by the request's "task" field: c->t */
    NEED_PART = 4, /* the caller is a participant of that task: c->t, c->p */
    ASYNC = 8,     /* may hand the request over and return NULL (answered later) */
};

static bf_msg_t *h_hello(const ctx_t *c) {
    bf_msg_t *r = bf_msg_new("WELCOME", c->id);
    bf_msg_set_str(r, "server", SERVER_NAME);
    bf_ledger_user_t u;
    bf_err_t err;
    if (c->user && bf_ledger_user_get(c->s->ledger, c->user, &u, &err) == 0) bf_msg_set_str(r, "user", u.name);
    return r;
}

static bf_msg_t *user_result(const ctx_t *c, int64_t user) {
    bf_ledger_user_t u;
    bf_err_t err;
    if (bf_ledger_user_get(c->s->ledger, user, &u, &err)) return bf_msg_error(c->id, BF_PROTO_INTERNAL, "%s", err.msg);
    bf_msg_t *r = bf_msg_new("OK", c->id);
    mp_t m;
    msgpack_packer *pk = mp_begin(&m);
    msgpack_pack_map(pk, 3);
    mp_kv_str(pk, "user", u.name);
    mp_kv_int(pk, "coins", u.coin.posted);
    mp_kv_money(pk, "cash", u.cash.posted);
    mp_set(&m, r, "result");
    return r;
}

static bf_msg_t *h_register(const ctx_t *c) {
    if (!c->key) return bf_msg_error(c->id, BF_PROTO_UNAUTHORIZED, "registration needs a CURVE key");
    const char *name = bf_msg_str(c->req, "name");
    bf_err_t err;
    if (c->user) { /* the key is bound: the same name again is a retry, another name a conflict */
        bf_ledger_user_t u;
        if (bf_ledger_user_get(c->s->ledger, c->user, &u, &err)) return bf_msg_error(c->id, BF_PROTO_INTERNAL, "%s", err.msg);
        if (strcmp(u.name, name))
            return bf_msg_error(c->id, BF_PROTO_CONFLICT, "this key is already registered under another name");
        return user_result(c, c->user);
    }
    /* The op id names the key and the name: a refused name (taken) is recorded under its own id,
     * so it binds nothing and the same key may register a free name next. */
    char op[128];
    snprintf(op, sizeof op, "register:%s:%s", c->key, name);
    int64_t uid = 0;
    int rc = bf_ledger_register_user(c->s->ledger, op, name, c->key, NULL, &uid, &err);
    if (rc == BF_LEDGER_ECONFLICT)
        return bf_msg_error(c->id, BF_PROTO_CONFLICT, "this key is already registered under another name");
    if (rc != BF_LEDGER_OK) return ledger_error(c->id, rc, &err);
    remember_user(c->s, c->key, uid);
    coord_log("user %s registered (key %.8s...)", name, c->key);
    return user_result(c, uid);
}

/* The ledger op id of a money-moving request (RECHARGE, BLOCKS_BUY, TASK_CREATE): the caller's
 * user id, the task it is about (scope, 0: none) and the `request` key the client chose. The
 * same key is the same operation, applied once, whichever connection or request id carries it;
 * a new key is a new one. Without a key (older clients) the request gets a fresh random id:
 * applied every time it is sent, so not safe to retry. */
static int money_op(const ctx_t *c, const char *kind, int64_t scope, char op[BF_LEDGER_OP_ID_MAX + 1]) {
    const char *request = bf_msg_str(c->req, "request");
    char fresh[66];
    if (!request) {
        unsigned char b[32];
        if (RAND_bytes(b, sizeof b) != 1) return -1;
        fresh[0] = '~'; /* never a client's key: those are hex */
        for (int i = 0; i < 32; i++) snprintf(fresh + 1 + 2 * i, 3, "%02x", b[i]);
        request = fresh;
    }
    if (scope) snprintf(op, BF_LEDGER_OP_ID_MAX + 1, "%s:%lld:%lld:%s", kind, (long long)c->user, (long long)scope, request);
    else snprintf(op, BF_LEDGER_OP_ID_MAX + 1, "%s:%lld:%s", kind, (long long)c->user, request);
    return 0;
}

/* The caller's self-service recharges since the UTC day began, saturating at INT64_MAX, as
 * [day, cents]. Only RECHARGE's op ids ("recharge:...") count: an operator's deposits are not
 * self-service. Read from the user's history the first time a day (this coordinator is the only
 * one making RECHARGE ops), then kept in s->recharged and added to as recharges are applied, so a
 * recharge does not read a long history every time. NULL on failure. */
static int64_t *recharged_today(const ctx_t *c, bf_err_t *err) {
    char uid[32];
    snprintf(uid, sizeof uid, "%lld", (long long)c->user);
    int64_t now = (int64_t)time(NULL), day = now - now % 86400;
    int64_t *v = zhashx_lookup(c->s->recharged, uid);
    if (v && v[0] == day) return v;
    bf_ledger_entry_t *h = NULL;
    size_t n = 0;
    if (bf_ledger_history(c->s->ledger, c->user, &h, &n, err)) return NULL;
    if (!v && (v = malloc(2 * sizeof *v))) zhashx_insert(c->s->recharged, uid, v);
    if (!v) return free(h), bf_err_set(err, "out of memory"), NULL;
    v[0] = day, v[1] = 0;
    for (size_t i = 0; i < n; i++)
        if (h[i].created_at >= day && h[i].amount > 0 && h[i].code && !strcmp(h[i].code, "recharge") &&
            !strncmp(h[i].op_id, "recharge:", 9))
            v[1] = h[i].amount > INT64_MAX - v[1] ? INT64_MAX : v[1] + h[i].amount;
    free(h);
    return v;
}

static bf_msg_t *h_recharge(const ctx_t *c) {
    int64_t cents = 0;
    bf_err_t err;
    if (c->s->o.recharge_operator)
        return bf_msg_error(c->id, BF_PROTO_FORBIDDEN, "self-service recharge is off on this coordinator: money comes in "
                                                       "through its operator (blockfed-coordinator ledger deposit)");
    int bad = bf_money_parse_amount(bf_msg_str(c->req, "amount"), 2, &cents, &err);
    if (bad || cents <= 0) return bf_msg_error(c->id, BF_PROTO_BAD_REQUEST, "amount: %s", bad ? err.msg : "must be positive");
    char op[BF_LEDGER_OP_ID_MAX + 1];
    if (money_op(c, "recharge", 0, op)) return bf_msg_error(c->id, BF_PROTO_INTERNAL, "no random bytes for an op id");
    int found = 0;
    int64_t *day = NULL, max = c->s->o.recharge_max_cents;
    if (bf_ledger_op_lookup(c->s->ledger, op, &found, NULL, NULL, &err) || (!found && !(day = recharged_today(c, &err))))
        return bf_msg_error(c->id, BF_PROTO_INTERNAL, "%s", err.msg);
    int64_t today = day ? day[1] : 0;
    if (!found && cents > max - (today < max ? today : max)) { /* a retry (found) is answered as it was */
        char m[32], left[32];
        money(m, max), money(left, today < max ? max - today : 0);
        return bf_msg_error(c->id, BF_PROTO_LIMIT, "a user may recharge at most %s a day here; %s left today", m, left);
    }
    int rc = bf_ledger_recharge(c->s->ledger, op, c->user, cents, &err);
    if (rc != BF_LEDGER_OK) return ledger_error(c->id, rc, &err);
    if (day) day[1] = cents > INT64_MAX - day[1] ? INT64_MAX : day[1] + cents;
    return user_result(c, c->user);
}

static int copy_field(const bf_msg_t *m, const char *k, char *dst, size_t cap) {
    const char *v = bf_msg_str(m, k);
    snprintf(dst, cap, "%s", v ? v : "");
    return v != NULL;
}

static bf_msg_t *created_reply(const ctx_t *c, const coord_task_t *t) {
    bf_msg_t *r = bf_msg_new("OK", c->id);
    mp_t m;
    msgpack_packer *pk = mp_begin(&m);
    msgpack_pack_map(pk, 2);
    mp_kv_str(pk, "task", t->spec.id);
    mp_kv_int(pk, "blocks", t->blocks.nblocks);
    mp_set(&m, r, "result");
    return r;
}

static bf_msg_t *h_task_create(const ctx_t *c) {
    coord_server_t *s = c->s;
    coord_task_spec_t t;
    memset(&t, 0, sizeof t);
    copy_field(c->req, "task", t.id, sizeof t.id);
    copy_field(c->req, "name", t.name, sizeof t.name);
    copy_field(c->req, "description", t.description, sizeof t.description);
    copy_field(c->req, "model", t.model, sizeof t.model);
    copy_field(c->req, "dataset", t.dataset, sizeof t.dataset);
    copy_field(c->req, "partition", t.partition, sizeof t.partition);
    copy_field(c->req, "strategy", t.strategy, sizeof t.strategy);
    snprintf(t.creator, sizeof t.creator, "%s", c->key);
    t.rounds = (int)bf_msg_uint(c->req, "rounds", 1);
    t.min_clients = (int)bf_msg_uint(c->req, "min_clients", 1);
    t.local_epochs = (int)bf_msg_uint(c->req, "local_epochs", 1);
    t.batch = (int)bf_msg_uint(c->req, "batch", 64);
    t.round_timeout = (int)bf_msg_uint(c->req, "round_timeout", 300);
    t.lr = bf_msg_double(c->req, "lr", 0.05);
    t.mu = bf_msg_double(c->req, "mu", 0);
    t.seed = bf_msg_uint(c->req, "seed", 1);
    t.value_images = (int)bf_msg_uint(c->req, "value_images", COORD_VALUE_IMAGES);
    t.own_data_cap = (int64_t)bf_msg_uint(c->req, "own_data_cap", 0);
    bf_err_t err;
    if (strcmp(t.model, "resnet8") && strcmp(t.model, "cnn"))
        return bf_msg_error(c->id, BF_PROTO_BAD_REQUEST, "model must be resnet8 or cnn");
    if (coord_mode_parse(bf_msg_str(c->req, "mode"), &t.mode))
        return bf_msg_error(c->id, BF_PROTO_BAD_REQUEST, "mode must be reward or shareholding");
    if (!coord_dataset_find(s, t.dataset)) return bf_msg_error(c->id, BF_PROTO_NOT_FOUND, "no dataset '%s' here", t.dataset);
    if (!t.name[0]) return bf_msg_error(c->id, BF_PROTO_BAD_REQUEST, "name must not be empty");
    char op[BF_LEDGER_OP_ID_MAX + 1];
    if (money_op(c, "task", 0, op)) return bf_msg_error(c->id, BF_PROTO_INTERNAL, "no random bytes for an op id");
    int found = 0, was = 0;
    int64_t made = 0;
    if (bf_ledger_op_lookup(s->ledger, op, &found, &was, &made, &err)) return ledger_error(c->id, BF_LEDGER_EINTERNAL, &err);
    coord_task_t *have = coord_task_find(s, t.id);
    if (have) { /* a retry of the create that made it is answered as that create was */
        if (found && was == BF_LEDGER_OK && made == have->ledger_id && !strcmp(have->spec.creator, c->key))
            return created_reply(c, have);
        return bf_msg_error(c->id, BF_PROTO_CONFLICT, "task '%s' exists", t.id);
    }
    if (found && was == BF_LEDGER_OK) /* the key made another task: it names that create only */
        return bf_msg_error(c->id, BF_PROTO_CONFLICT, "this request key already created another task");
    const char *fee = bf_msg_str(c->req, "fee"), *pool = bf_msg_str(c->req, "pool");
    if ((fee && bf_money_parse_amount(fee, 2, &t.fee_cents, &err)) || (pool && bf_money_parse_amount(pool, 2, &t.pool_cents, &err)))
        return bf_msg_error(c->id, BF_PROTO_BAD_REQUEST, "fee/pool: %s", err.msg);
    t.rate_num = t.rate_den = 1;
    const char *base = bf_msg_str(c->req, "base_fee"), *rate = bf_msg_str(c->req, "rate");
    if ((base && bf_money_parse_amount(base, 2, &t.base_fee_cents, &err)) ||
        (rate && bf_money_parse_rate(rate, &t.rate_num, &t.rate_den, &err)))
        return bf_msg_error(c->id, BF_PROTO_BAD_REQUEST, "base fee/rate: %s", err.msg);
    int64_t max_price;
    if (bf_money_price(t.base_fee_cents, t.fee_cents, BF_PREDICT_MAX_IMAGES, t.rate_num, t.rate_den, &max_price, &err))
        return bf_msg_error(c->id, BF_PROTO_BAD_REQUEST, "pricing: %s", err.msg);
    if (t.mode == BF_LEDGER_MODE_REWARD && t.pool_cents <= 0)
        return bf_msg_error(c->id, BF_PROTO_BAD_REQUEST, "a reward task needs a positive --pool");
    if (t.mode == BF_LEDGER_MODE_SHAREHOLDING && t.pool_cents)
        return bf_msg_error(c->id, BF_PROTO_BAD_REQUEST, "a shareholding task has no pool (it earns usage fees)");
    /* a task costs its model and data views until it ends: no user may pile them up */
    if (coord_open_tasks(s, c->key) >= s->o.max_open_tasks)
        return bf_msg_error(c->id, BF_PROTO_RATE_LIMITED, "you have %d open tasks, the most allowed here: wait for one to end",
                            s->o.max_open_tasks);
    coord_task_t *probe = coord_task_new(s, &t, 0, &err); /* validates partition, strategy, model vs data */
    if (!probe) return bf_msg_error(c->id, BF_PROTO_BAD_REQUEST, "%s", err.msg);
    bf_ledger_task_spec_t ls = {t.name, t.mode, t.pool_cents, t.fee_cents};
    int64_t lid = 0;
    int rc = bf_ledger_create_task(s->ledger, op, c->user, &ls, &lid, &err);
    if (rc != BF_LEDGER_OK) {
        coord_task_free(&probe);
        return ledger_error(c->id, rc, &err);
    }
    probe->ledger_id = lid;
    probe->spec.created_at = (int64_t)time(NULL);
    if (coord_stored(coord_store_add_task(s->store, &t, lid, &err), &err) || coord_task_add(s, probe)) {
        coord_task_free(&probe);
        return bf_msg_error(c->id, BF_PROTO_INTERNAL, "%s", err.msg);
    }
    coord_log("task %s created by %.8s...: %s on %s, %d rounds, %s, %d blocks of %d", t.id, c->key, t.model, t.dataset,
              t.rounds, coord_mode_name(t.mode), probe->blocks.nblocks, probe->blocks.block_size);
    return created_reply(c, probe);
}

static void pack_task_summary(msgpack_packer *pk, const coord_task_t *t) {
    msgpack_pack_map(pk, 9);
    mp_kv_str(pk, "task", t->spec.id);
    mp_kv_str(pk, "name", t->spec.name);
    mp_kv_str(pk, "model", t->spec.model);
    mp_kv_str(pk, "dataset", t->spec.dataset);
    mp_kv_str(pk, "mode", coord_mode_name(t->spec.mode));
    mp_kv_str(pk, "state", coord_task_state_name(t->state));
    mp_kv_int(pk, "round", t->round);
    mp_kv_int(pk, "rounds", t->spec.rounds);
    mp_kv_int(pk, "participants", t->nparts);
}

static bf_msg_t *h_task_list(const ctx_t *c) {
    bf_msg_t *r = bf_msg_new("TASKS", c->id);
    mp_t m;
    msgpack_packer *pk = mp_begin(&m);
    msgpack_pack_array(pk, c->s->ntasks);
    for (int i = 0; i < c->s->ntasks; i++) pack_task_summary(pk, c->s->tasks[i]);
    mp_set(&m, r, "tasks");
    return r;
}

static const char *user_name(coord_server_t *s, int64_t uid, char *buf, size_t cap) {
    bf_ledger_user_t u;
    bf_err_t err;
    snprintf(buf, cap, "%s", bf_ledger_user_get(s->ledger, uid, &u, &err) == 0 ? u.name : "?");
    return buf;
}

/* STATUS.history: per completed round its metrics, its aggregation and valuation times apart, and
 * (once valued) each participant's value in it. Names are looked up once per participant. */
static void pack_history(coord_server_t *s, const coord_task_t *t, msgpack_packer *pk) {
    char (*names)[65] = calloc(t->nparts ? t->nparts : 1, sizeof *names);
    for (int i = 0; names && i < t->nparts; i++) user_name(s, t->parts[i].user_id, names[i], sizeof names[i]);
    msgpack_pack_array(pk, t->nmetrics);
    for (int i = 0; i < t->nmetrics; i++) {
        const coord_round_metric_t *x = &t->metrics[i];
        msgpack_pack_map(pk, 11);
        mp_kv_int(pk, "round", i + 1);
        mp_kv_int(pk, "participants", x->participants);
        mp_kv_int(pk, "samples", x->samples);
        mp_kv_dbl(pk, "val_acc", x->val_acc);
        mp_kv_dbl(pk, "val_loss", x->val_loss);
        mp_kv_dbl(pk, "test_acc", x->test_acc);
        mp_kv_dbl(pk, "seconds", x->seconds);
        mp_kv_dbl(pk, "aggregate_seconds", x->aggregate_seconds);
        mp_kv_dbl(pk, "value_seconds", x->value_seconds);
        bf_mp_pack_str(pk, "valued");
        if (x->valued) msgpack_pack_true(pk);
        else msgpack_pack_false(pk);
        bf_mp_pack_str(pk, "values");
        int n = x->valued ? x->nvalues : 0;
        msgpack_pack_array(pk, n);
        for (int v = 0; v < n; v++) {
            int p = x->value_part[v];
            msgpack_pack_map(pk, 2);
            mp_kv_str(pk, "user", names && p >= 0 && p < t->nparts ? names[p] : "?");
            mp_kv_dbl(pk, "shapley", x->value[v]);
        }
    }
    free(names);
}

static bf_msg_t *h_task_status(const ctx_t *c) {
    const coord_task_t *t = c->t;
    bf_msg_t *r = bf_msg_new("STATUS", c->id);
    mp_t m;
    msgpack_packer *pk = mp_begin(&m);
    msgpack_pack_map(pk, 23);
    mp_kv_str(pk, "task", t->spec.id);
    mp_kv_str(pk, "name", t->spec.name);
    mp_kv_str(pk, "description", t->spec.description);
    mp_kv_str(pk, "model", t->spec.model);
    mp_kv_str(pk, "dataset", t->spec.dataset);
    mp_kv_str(pk, "mode", coord_mode_name(t->spec.mode));
    mp_kv_str(pk, "state", coord_task_state_name(t->state));
    mp_kv_str(pk, "strategy", t->spec.strategy);
    mp_kv_str(pk, "partition", t->spec.partition);
    mp_kv_int(pk, "round", t->round);
    mp_kv_int(pk, "rounds", t->spec.rounds);
    mp_kv_int(pk, "min_clients", t->spec.min_clients);
    mp_kv_money(pk, "fee", t->spec.fee_cents);
    mp_kv_money(pk, "pool", t->spec.pool_cents);
    mp_kv_money(pk, "base_fee", t->spec.base_fee_cents);
    char rate[48];
    snprintf(rate, sizeof rate, "%lld/%lld", (long long)t->spec.rate_num, (long long)t->spec.rate_den);
    mp_kv_str(pk, "rate", rate);
    mp_kv_int(pk, "value_images", t->spec.value_images);
    mp_kv_int(pk, "own_data_cap", coord_own_data_cap(c->s, t));
    int nfree = 0;
    for (int b = 0; b < t->blocks.nblocks; b++) nfree += t->owner[b] < 0;
    mp_kv_int(pk, "blocks_free", nfree);
    mp_kv_str(pk, "result_hash", t->result_hash);
    bf_mp_pack_str(pk, "participants");
    msgpack_pack_array(pk, t->nparts);
    for (int i = 0; i < t->nparts; i++) {
        const coord_part_t *p = &t->parts[i];
        char name[65];
        msgpack_pack_map(pk, 7);
        mp_kv_str(pk, "user", user_name(c->s, p->user_id, name, sizeof name));
        mp_kv_dbl(pk, "shapley", p->shapley);
        mp_kv_int(pk, "blocks", p->nblocks);
        mp_kv_int(pk, "samples", p->samples);
        mp_kv_int(pk, "contributed", p->contributed);
        mp_kv_str(pk, "status", p->left ? "left" : coord_is_live(c->s, p) ? "live" : "away");
        mp_kv_int(pk, "reported_round", p->update_round);
    }
    bf_mp_pack_str(pk, "history");
    pack_history(c->s, t, pk);
    mp_kv_str(pk, "checkpoint_sha", t->checkpoint_sha);
    mp_set(&m, r, "status");
    return r;
}

static bf_msg_t *h_task_cancel(const ctx_t *c) {
    coord_task_t *t = c->t;
    if (strcmp(t->spec.creator, c->key)) return bf_msg_error(c->id, BF_PROTO_FORBIDDEN, "only the creator may cancel");
    if (t->state != COORD_TASK_WAITING)
        return bf_msg_error(c->id, BF_PROTO_BAD_STATE, "task is %s, not waiting", coord_task_state_name(t->state));
    bf_err_t err;
    int rc = coord_task_cancel(c->s, t, &err);
    if (rc != BF_LEDGER_OK) return ledger_error(c->id, rc, &err);
    coord_log("task %s cancelled and refunded", t->spec.id);
    return bf_msg_new("OK", c->id);
}

static bf_msg_t *joined_reply(const ctx_t *c, const coord_task_t *t, const coord_part_t *p) {
    bf_msg_t *r = bf_msg_new("JOINED", c->id);
    bf_msg_set_str(r, "task", t->spec.id);
    bf_msg_set_uint(r, "block_size", (uint64_t)t->blocks.block_size);
    mp_t m;
    msgpack_packer *pk = mp_begin(&m);
    msgpack_pack_array(pk, p->nblocks);
    for (int i = 0; i < p->nblocks; i++) msgpack_pack_uint32(pk, (uint32_t)p->blocks[i]);
    mp_set(&m, r, "blocks");
    return r;
}

/* Adds the caller to t (ledger participation, state, initial blocks); *out is the participant. */
static bf_msg_t *join_task(const ctx_t *c, coord_task_t *t, int own, int64_t declared, coord_part_t **out) {
    coord_server_t *s = c->s;
    bf_err_t err;
    if (own && declared < 1) return bf_msg_error(c->id, BF_PROTO_BAD_REQUEST, "own data needs samples >= 1");
    /* a participant with no data could never report: refused before anything is recorded */
    int want = own ? 0 : coord_join_blocks(s, t);
    if (!own && want < 1)
        return bf_msg_error(c->id, BF_PROTO_BAD_STATE,
                            "task %s has no free data block left: join with your own data (blockfed-client join --data)",
                            t->spec.id);
    char op[192];
    snprintf(op, sizeof op, "join:%s:%s", t->spec.id, c->key);
    int rc = bf_ledger_join_task(s->ledger, op, t->ledger_id, c->user, &err);
    if (rc != BF_LEDGER_OK) return ledger_error(c->id, rc, &err);
    coord_part_t *p = coord_part_add(t, c->key, c->user, own, own ? declared : 0);
    if (!p ||
        coord_stored(coord_store_add_participant(s->store, t->spec.id, c->key, c->user, own, own ? declared : 0, &err), &err))
        return bf_msg_error(c->id, BF_PROTO_INTERNAL, "cannot record the participant");
    if (!own && coord_blocks_assign(s, t, p, want, &err) < 0)
        return bf_msg_error(c->id, BF_PROTO_INTERNAL, "%s", err.msg);
    coord_log("task %s: %.8s... joined with %d blocks (%lld images)%s", t->spec.id, c->key, p->nblocks,
              (long long)p->samples, own ? " of its own data" : "");
    *out = p;
    return NULL;
}

static int joinable(const coord_task_t *t) {
    return t->state == COORD_TASK_WAITING || t->state == COORD_TASK_RUNNING || t->state == COORD_TASK_AGGREGATING;
}

static bf_msg_t *h_join(const ctx_t *c) {
    coord_task_t *t = c->t;
    if (t->state == COORD_TASK_FAILED) {
        char why[512];
        coord_task_fail_reason(t, why, sizeof why);
        return bf_msg_error(c->id, BF_PROTO_BAD_STATE, "%s", why);
    }
    if (!joinable(t)) return bf_msg_error(c->id, BF_PROTO_BAD_STATE, "task is %s", coord_task_state_name(t->state));
    coord_part_t *p = coord_part_find(t, c->key);
    bf_err_t err;
    if (p) { /* a returning participant: same blocks, back in from the next round */
        if (p->left &&
            !coord_stored(coord_store_add_participant(c->s->store, t->spec.id, c->key, c->user, p->own_data, p->samples,
                                                      &err),
                          &err))
            p->left = 0;
        return joined_reply(c, t, p);
    }
    bf_msg_t *e = join_task(c, t, bf_msg_bool(c->req, "own_data", 0), (int64_t)bf_msg_uint(c->req, "samples", 0), &p);
    return e ? e : joined_reply(c, t, p);
}

static bf_msg_t *h_leave(const ctx_t *c) {
    const coord_task_t *t = c->t;
    bf_err_t err;
    c->p->left = 1;
    coord_stored(coord_store_leave(c->s->store, t->spec.id, c->key, &err), &err);
    coord_log("task %s: %.8s... left", t->spec.id, c->key);
    return bf_msg_new("OK", c->id);
}

static bf_msg_t *h_blocks_buy(const ctx_t *c) {
    coord_task_t *t = c->t;
    bf_msg_t *e;
    if (!joinable(t)) return bf_msg_error(c->id, BF_PROTO_BAD_STATE, "task is %s", coord_task_state_name(t->state));
    coord_part_t *p = coord_part_find(t, c->key);
    if (!p && (e = join_task(c, t, 0, 0, &p))) return e; /* buying blocks joins the task */
    int n = (int)bf_msg_uint(c->req, "n", 1);
    char op[BF_LEDGER_OP_ID_MAX + 1];
    bf_err_t err;
    if (money_op(c, "buy", t->ledger_id, op)) return bf_msg_error(c->id, BF_PROTO_INTERNAL, "no random bytes for an op id");
    int found = 0, was = 0;
    if (bf_ledger_op_lookup(c->s->ledger, op, &found, &was, NULL, &err)) return ledger_error(c->id, BF_LEDGER_EINTERNAL, &err);
    if (found && was == BF_LEDGER_OK) return joined_reply(c, t, p); /* a retry: paid and assigned already */
    int32_t pick[1000];
    if (coord_blocks_free(t, n, pick) < n) return bf_msg_error(c->id, BF_PROTO_CONFLICT, "fewer than %d free blocks left", n);
    int rc = bf_ledger_spend_coins(c->s->ledger, op, c->user, n, &err);
    if (rc != BF_LEDGER_OK) return ledger_error(c->id, rc, &err);
    if (coord_blocks_assign(c->s, t, p, n, &err) < 0) return bf_msg_error(c->id, BF_PROTO_INTERNAL, "%s", err.msg);
    coord_log("task %s: %.8s... bought %d blocks (now %d)", t->spec.id, c->key, n, p->nblocks);
    return joined_reply(c, t, p);
}

static bf_msg_t *h_block_get(const ctx_t *c) {
    const coord_task_t *t = c->t;
    const coord_part_t *p = c->p;
    int64_t b = (int64_t)bf_msg_uint(c->req, "block", 0);
    if (b >= t->blocks.nblocks || t->owner[b] != (int32_t)(p - t->parts))
        return bf_msg_error(c->id, BF_PROTO_FORBIDDEN, "block %lld is not assigned to you", (long long)b);
    const bf_dataset_t *d = &t->ds->train;
    int32_t n = t->blocks.block_size;
    size_t chw = (size_t)d->c * d->h * d->w;
    uint8_t *px = malloc(chw * n), *lb = malloc(n);
    if (!px || !lb) {
        free(px), free(lb);
        return bf_msg_error(c->id, BF_PROTO_INTERNAL, "out of memory");
    }
    for (int32_t i = 0; i < n; i++) {
        int32_t img = t->blocks.index[(size_t)b * n + i];
        memcpy(px + i * chw, d->pixels + img * chw, chw);
        lb[i] = d->labels[img];
    }
    char hex[65];
    bf_block_digest(n, d->c, d->h, d->w, px, lb, hex);
    bf_msg_t *r = bf_msg_new("BLOCK", c->id);
    bf_msg_set_str(r, "task", t->spec.id);
    bf_msg_set_uint(r, "block", (uint64_t)b);
    bf_msg_set_str(r, "sha256", hex);
    bf_msg_set_uint(r, "n", (uint64_t)n);
    bf_msg_set_uint(r, "c", (uint64_t)d->c);
    bf_msg_set_uint(r, "h", (uint64_t)d->h);
    bf_msg_set_uint(r, "w", (uint64_t)d->w);
    bf_msg_set_uint(r, "classes", (uint64_t)d->classes);
    bf_msg_add_frame_owned(r, px, chw * n);
    bf_msg_add_frame_owned(r, lb, n);
    return r;
}

static bf_msg_t *wait_reply(uint64_t id, int ms, const char *why) {
    bf_msg_t *r = bf_msg_new("WAIT", id);
    bf_msg_set_uint(r, "retry_ms", (uint64_t)ms);
    bf_msg_set_str(r, "reason", why);
    return r;
}

static void pack_floats(msgpack_packer *pk, const float *v, int n) {
    msgpack_pack_array(pk, n);
    for (int i = 0; i < n; i++) msgpack_pack_float(pk, v[i]);
}

/* ---- the round's model, encoded once and shared by every ROUND reply ----------------------- */

struct coord_blob {
    atomic_int refs;
    size_t len;
    uint8_t data[];
};

void coord_blob_unref(coord_blob_t *b) {
    if (b && atomic_fetch_sub(&b->refs, 1) == 1) free(b);
}

static void blob_release(void *data, void *hint) {
    (void)data;
    coord_blob_unref(hint);
}

static void f32_le(uint8_t *dst, const float *v, size_t n) {
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(dst, v, n * 4);
#else
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &v[i], 4);
        u = __builtin_bswap32(u);
        memcpy(dst + 4 * i, &u, 4);
    }
#endif
}

coord_blob_t *coord_blob_of_model(bf_net_t *net) {
    size_t np = bf_net_num_params(net), nb = bf_net_num_buffers(net);
    coord_blob_t *b = malloc(sizeof *b + (np + nb) * 4);
    if (!b) return NULL;
    atomic_init(&b->refs, 1);
    b->len = (np + nb) * 4;
    f32_le(b->data, bf_net_params(net), np);
    f32_le(b->data + np * 4, bf_net_buffers(net), nb);
    return b;
}

static bf_msg_t *h_round_get(const ctx_t *c) {
    coord_task_t *t = c->t;
    coord_part_t *p = c->p;
    if (t->state == COORD_TASK_FAILED) { /* not DONE: a participant's join must not end as a success */
        char why[512];
        coord_task_fail_reason(t, why, sizeof why);
        return bf_msg_error(c->id, BF_PROTO_BAD_STATE, "%s", why);
    }
    if (t->state == COORD_TASK_COMPLETED || t->state == COORD_TASK_CANCELLED) {
        bf_msg_t *r = bf_msg_new("DONE", c->id);
        bf_msg_set_str(r, "task", t->spec.id);
        if (t->result_hash[0]) bf_msg_set_str(r, "result_hash", t->result_hash);
        return r;
    }
    if (t->state == COORD_TASK_WAITING) return wait_reply(c->id, 1000, "waiting for participants");
    /* while AGGREGATING the global model is the worker's */
    if (t->state == COORD_TASK_AGGREGATING || p->update_round == t->round)
        return wait_reply(c->id, 500, "waiting for the round to close");
    if (t->round >= t->spec.rounds) /* trained: settlement waits for the last rounds' values */
        return wait_reply(c->id, 1000, "every round is trained; the last rounds are being valued");
    coord_blob_t *b = t->round_model; /* made by the worker with the model: none while it builds */
    if (!b) return wait_reply(c->id, 500, "preparing the task's model");
    p->left = 0;
    bf_msg_t *r = bf_msg_new("ROUND", c->id);
    const bf_dataset_t *d = &t->ds->train;
    bf_msg_set_str(r, "task", t->spec.id);
    bf_msg_set_uint(r, "round", (uint64_t)t->round);
    bf_msg_set_uint(r, "rounds", (uint64_t)t->spec.rounds);
    bf_msg_set_str(r, "arch", t->spec.model);
    bf_msg_set_uint(r, "c", (uint64_t)d->c);
    bf_msg_set_uint(r, "h", (uint64_t)d->h);
    bf_msg_set_uint(r, "w", (uint64_t)d->w);
    bf_msg_set_uint(r, "classes", (uint64_t)d->classes);
    bf_msg_set_uint(r, "local_epochs", (uint64_t)t->spec.local_epochs);
    bf_msg_set_uint(r, "batch", (uint64_t)t->spec.batch);
    /* the task's lr decays over the rounds (cosine), as a central one-cycle/cosine run would: late
     * rounds fine-tune instead of undoing each other's steps */
    double lr = t->spec.lr * 0.5 * (1 + cos(M_PI * t->round / t->spec.rounds));
    bf_msg_set_double(r, "lr", lr > 1e-6 ? lr : 1e-6);
    bf_msg_set_double(r, "mu", !strncmp(t->spec.strategy, "fedprox", 7) ? (t->spec.mu > 0 ? t->spec.mu : 0.01) : 0);
    bf_msg_set_uint(r, "seed", t->spec.seed * 1000003u + (uint64_t)t->round);
    int64_t left = (int64_t)t->spec.round_timeout * 1000 - (coord_now_ms() - t->round_start);
    bf_msg_set_uint(r, "deadline_ms", (uint64_t)(left > 0 ? left : 1));
    mp_t m;
    msgpack_packer *pk = mp_begin(&m);
    msgpack_pack_map(pk, 2);
    bf_mp_pack_str(pk, "mean");
    pack_floats(pk, t->ds->mean, d->c);
    bf_mp_pack_str(pk, "std");
    pack_floats(pk, t->ds->std, d->c);
    mp_set(&m, r, "preprocess");
    size_t np = t->np * 4, nb = t->nb * 4;
    atomic_fetch_add(&b->refs, 2); /* one per frame, released when libzmq has sent it */
    bf_msg_add_frame_ref(r, b->data, np, blob_release, b);
    bf_msg_add_frame_ref(r, b->data + np, nb, blob_release, b);
    return r;
}

/* 1 if every value is finite and within +-COORD_UPDATE_MAX_ABS (NaN fails the comparison too) */
static int all_bounded(const float *v, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!(fabsf(v[i]) <= COORD_UPDATE_MAX_ABS)) return 0;
    return 1;
}

static bf_msg_t *h_update(const ctx_t *c) {
    const coord_task_t *t = c->t;
    coord_part_t *p = c->p;
    int round = (int)bf_msg_uint(c->req, "round", 0);
    if (t->state != COORD_TASK_RUNNING || round != t->round || p->update_round == t->round)
        return bf_msg_error(c->id, BF_PROTO_STALE, "round %d is not open for an update from you (open: %d, %s)", round,
                            t->round, coord_task_state_name(t->state));
    size_t np = t->np, nb = t->nb;
    float *params = malloc(sizeof(float) * (np + 1)), *buffers = malloc(sizeof(float) * (nb + 1));
    if (!params || !buffers || bf_msg_frame_f32(c->req, 0, params, np) || bf_msg_frame_f32(c->req, 1, buffers, nb) ||
        !all_bounded(params, np) || !all_bounded(buffers, nb)) {
        free(params), free(buffers);
        return bf_msg_error(c->id, BF_PROTO_BAD_REQUEST,
                            "update frames must hold %zu parameters and %zu buffers, all finite and within +-%g", np, nb,
                            (double)COORD_UPDATE_MAX_ABS);
    }
    free(p->params), free(p->buffers);
    p->params = params;
    p->buffers = buffers;
    /* the weight is capped at the data the participant actually holds: claiming more buys nothing;
     * declared own data cannot be checked, so it weighs at most what the largest block holder's does */
    int64_t claimed = (int64_t)bf_msg_uint(c->req, "samples", 1);
    p->upd_samples = claimed < p->samples ? claimed : p->samples;
    if (p->own_data) {
        int64_t cap = coord_own_data_cap(c->s, t);
        if (p->upd_samples > cap) p->upd_samples = cap;
    }
    if (p->upd_samples < 1) p->upd_samples = 1;
    p->upd_loss = bf_msg_double(c->req, "loss", 0);
    p->update_round = t->round;
    if (c->s->o.verbose)
        coord_log("task %s round %d: update from %.8s... (%lld samples, loss %.4f)", t->spec.id, t->round + 1, c->key,
                  (long long)p->upd_samples, p->upd_loss);
    return bf_msg_new("OK", c->id);
}

static bf_msg_t *h_assets(const ctx_t *c) {
    coord_server_t *s = c->s;
    bf_ledger_user_t u;
    bf_err_t err;
    bf_ledger_share_t *sh = NULL;
    bf_ledger_reward_t *rw = NULL;
    size_t nsh = 0, nrw = 0;
    if (bf_ledger_user_get(s->ledger, c->user, &u, &err) || bf_ledger_user_shares(s->ledger, c->user, &sh, &nsh, &err) ||
        bf_ledger_rewards(s->ledger, 0, c->user, &rw, &nrw, &err)) {
        free(sh);
        return bf_msg_error(c->id, BF_PROTO_INTERNAL, "%s", err.msg);
    }
    bf_msg_t *r = bf_msg_new("ASSETS", c->id);
    mp_t m;
    msgpack_packer *pk = mp_begin(&m);
    msgpack_pack_map(pk, 7);
    mp_kv_str(pk, "user", u.name);
    mp_kv_money(pk, "cash", u.cash.posted);
    mp_kv_money(pk, "cash_available", u.cash.available);
    mp_kv_money(pk, "cash_held", u.cash.posted - u.cash.available); /* by predictions in flight */
    mp_kv_int(pk, "coins", u.coin.posted);
    bf_mp_pack_str(pk, "shares");
    msgpack_pack_array(pk, nsh);
    for (size_t i = 0; i < nsh; i++) {
        msgpack_pack_map(pk, 3);
        mp_kv_int(pk, "task_ledger_id", sh[i].task_id);
        mp_kv_int(pk, "ppm", sh[i].ppm);
        mp_kv_money(pk, "received", sh[i].received);
    }
    bf_mp_pack_str(pk, "rewards");
    msgpack_pack_array(pk, nrw);
    for (size_t i = 0; i < nrw; i++) {
        msgpack_pack_map(pk, 2);
        mp_kv_int(pk, "task_ledger_id", rw[i].task_id);
        mp_kv_money(pk, "amount", rw[i].amount);
    }
    mp_set(&m, r, "assets");
    free(sh);
    free(rw);
    return r;
}

static bf_msg_t *h_history(const ctx_t *c) {
    bf_ledger_entry_t *h = NULL;
    size_t n = 0;
    bf_err_t err;
    if (bf_ledger_history(c->s->ledger, c->user, &h, &n, &err)) return bf_msg_error(c->id, BF_PROTO_INTERNAL, "%s", err.msg);
    size_t limit = (size_t)bf_msg_uint(c->req, "limit", 100);
    /* entries are numbered 1.. in the user's history (seq); a page ends before `before` */
    uint64_t before = bf_msg_uint(c->req, "before", 0);
    size_t top = before && before - 1 < n ? (size_t)(before - 1) : n; /* entries 1..top are eligible */
    size_t k = top < limit ? top : limit;
    bf_msg_t *r = bf_msg_new("HISTORY", c->id);
    mp_t m;
    msgpack_packer *pk = mp_begin(&m);
    msgpack_pack_array(pk, k);
    for (size_t i = 0; i < k; i++) {
        const bf_ledger_entry_t *x = &h[top - 1 - i]; /* newest first */
        int cash = x->currency == BF_LEDGER_CNY;
        char a[32], b[32], d[32];
        msgpack_pack_map(pk, 8);
        mp_kv_int(pk, "seq", (int64_t)(top - i));
        mp_kv_int(pk, "time", x->created_at);
        /* posted | pending (a hold: the posted balance is unchanged) | post | void | expire */
        mp_kv_str(pk, "type", x->type ? x->type : "");
        mp_kv_str(pk, "kind", x->code ? x->code : "");
        mp_kv_str(pk, "currency", cash ? "CNY" : "COIN");
        if (cash) {
            money(a, x->amount), money(b, x->balance_before), money(d, x->balance_after);
        } else {
            snprintf(a, sizeof a, "%lld", (long long)x->amount);
            snprintf(b, sizeof b, "%lld", (long long)x->balance_before);
            snprintf(d, sizeof d, "%lld", (long long)x->balance_after);
        }
        mp_kv_str(pk, "amount", a);
        mp_kv_str(pk, "before", b);
        mp_kv_str(pk, "after", d);
    }
    mp_set(&m, r, "entries");
    free(h);
    return r;
}

/* 1 if user holds a positive share of the task in the ledger, 0 if not, -1 if the ledger failed. */
static int holds_shares(coord_server_t *s, const coord_task_t *t, int64_t user) {
    bf_ledger_share_t *sh = NULL;
    size_t n = 0;
    bf_err_t err;
    if (bf_ledger_task_shares(s->ledger, t->ledger_id, &sh, &n, &err)) return -1;
    int holds = 0;
    for (size_t i = 0; i < n; i++) holds |= sh[i].user_id == user && sh[i].ppm > 0;
    free(sh);
    return holds;
}

/* Who may download a final model (docs/COORDINATOR.md): in reward mode the creator, who paid the
 * pool for it; in shareholding mode its shareholders, who own it and earn every paid prediction
 * of it, so a download by anyone else (a participant who earned 0 ppm included) would be a free
 * copy of what the others sell. */
static bf_msg_t *h_model_get(const ctx_t *c) {
    coord_task_t *t = c->t;
    if (t->state != COORD_TASK_COMPLETED) return bf_msg_error(c->id, BF_PROTO_BAD_STATE, "the task has not completed");
    if (t->spec.mode == BF_LEDGER_MODE_REWARD && strcmp(t->spec.creator, c->key))
        return bf_msg_error(c->id, BF_PROTO_FORBIDDEN, "only the task's creator may download a reward task's model");
    if (t->spec.mode == BF_LEDGER_MODE_SHAREHOLDING) {
        int holds = holds_shares(c->s, t, c->user);
        if (holds < 0) return bf_msg_error(c->id, BF_PROTO_INTERNAL, "cannot read the task's shares");
        if (!holds)
            return bf_msg_error(c->id, BF_PROTO_FORBIDDEN,
                                "only the task's shareholders may download its model (you hold no share of it)");
    }
    char path[4096];
    coord_checkpoint_path(c->s->o.home, t->spec.id, t->round - 1, path, sizeof path);
    struct stat st;
    if (stat(path, &st)) return bf_msg_error(c->id, BF_PROTO_INTERNAL, "model file missing");
    uint8_t *b = NULL;
    size_t n = 0;
    bf_err_t err;
    if (bf_file_read(path, BF_MODEL_FILE_MAX, &b, &n, &err))
        return bf_msg_error(c->id, BF_PROTO_INTERNAL, "cannot read the model file");
    char hex[65];
    bf_sha256_hex(b, n, hex);
    bf_msg_t *r = bf_msg_new("MODEL", c->id);
    bf_msg_set_str(r, "task", t->spec.id);
    bf_msg_set_str(r, "sha256", hex);
    bf_msg_add_frame_owned(r, b, n);
    return r;
}

/* PREDICT: who and which task are checked here; holding, classifying and settling happen on the
 * prediction actor, which sends the job back with its reply (NULL return: handed over). */
static bf_msg_t *h_predict(const ctx_t *c) {
    const coord_task_t *t = c->t;
    zframe_t **rid = c->rid;
    bf_msg_t **req = c->reqp;
    if (t->spec.mode == BF_LEDGER_MODE_REWARD)
        return bf_msg_error(c->id, BF_PROTO_BAD_STATE,
                            "task %s is a reward-mode task: its model belongs to its creator and is not offered for "
                            "paid predictions (the owner downloads it with blockfed-client model download)",
                            t->spec.id);
    if (t->state != COORD_TASK_COMPLETED)
        return bf_msg_error(c->id, BF_PROTO_BAD_STATE, "task %s is %s: its model is not online yet", t->spec.id,
                            coord_task_state_name(t->state));
    char payer[32];
    snprintf(payer, sizeof payer, "%lld", (long long)c->user);
    int *mine = zhashx_lookup(c->s->inflight, payer);
    if ((mine && *mine >= MAX_INFLIGHT_PER_USER) || c->s->inflight_total >= MAX_INFLIGHT_TOTAL)
        return bf_msg_error(c->id, BF_PROTO_RATE_LIMITED, "too many predictions in flight; retry when earlier ones are answered");
    if (!mine && (mine = calloc(1, sizeof *mine))) zhashx_insert(c->s->inflight, payer, mine);
    coord_predict_job_t *j = mine ? calloc(1, sizeof *j) : NULL;
    if (!j) return bf_msg_error(c->id, BF_PROTO_INTERNAL, "out of memory");
    j->id = c->id;
    j->payer = c->user;
    j->ledger_task = t->ledger_id;
    snprintf(j->task, sizeof j->task, "%s", t->spec.id);
    coord_checkpoint_path(c->s->o.home, t->spec.id, t->round - 1, j->model_path, sizeof j->model_path);
    snprintf(j->model_sha, sizeof j->model_sha, "%s", t->checkpoint_sha);
    const char *request = bf_msg_str(*req, "request");
    snprintf(j->request, sizeof j->request, "%s", request ? request : "");
    j->base = t->spec.base_fee_cents;
    j->per_image = t->spec.fee_cents;
    j->rate_num = t->spec.rate_num;
    j->rate_den = t->spec.rate_den;
    j->via = c->via;
    j->rid = *rid, *rid = NULL;
    j->req = *req, *req = NULL;
    if (coord_predict_submit(c->s->predict, &j) == 0) {
        ++*mine, c->s->inflight_total++;
        return NULL;
    }
    *rid = j->rid, j->rid = NULL; /* not handed over: answer here */
    *req = j->req, j->req = NULL;
    coord_predict_job_free(&j);
    return bf_msg_error(c->id, BF_PROTO_INTERNAL, "the prediction service is unavailable");
}

void coord_inflight_release(coord_server_t *s, int64_t payer) {
    char key[32];
    snprintf(key, sizeof key, "%lld", (long long)payer);
    int *n = zhashx_lookup(s->inflight, key);
    if (n && *n > 0) --*n;
    if (s->inflight_total > 0) s->inflight_total--;
}

static bf_msg_t *h_ping(const ctx_t *c) { return bf_msg_new("PONG", c->id); }

/* n bytes from 2n lowercase hex digits; 0, or -1. */
static int unhex(const char *s, uint8_t *out, size_t n) {
    if (!s || strlen(s) != 2 * n) return -1;
    for (size_t i = 0; i < 2 * n; i++) {
        int v = s[i] >= '0' && s[i] <= '9' ? s[i] - '0' : s[i] >= 'a' && s[i] <= 'f' ? s[i] - 'a' + 10 : -1;
        if (v < 0) return -1;
        out[i / 2] = (uint8_t)(i % 2 ? out[i / 2] | v : v << 4);
    }
    return 0;
}

/* The account's password for the HTTPS API, as a hash the client derived (PBKDF2-HMAC-SHA256 of
 * the password with its salt): the password never leaves the client, and the socket thread does
 * not spend the derivation's time. */
static bf_msg_t *h_password_set(const ctx_t *c) {
    uint8_t salt[16], hash[32];
    bf_ledger_user_t u;
    bf_err_t err;
    if (unhex(bf_msg_str(c->req, "salt"), salt, sizeof salt) || unhex(bf_msg_str(c->req, "hash"), hash, sizeof hash))
        return bf_msg_error(c->id, BF_PROTO_BAD_REQUEST, "salt is 16 bytes and hash 32 bytes, in lowercase hex");
    if (bf_ledger_user_get(c->s->ledger, c->user, &u, &err)) return bf_msg_error(c->id, BF_PROTO_INTERNAL, "%s", err.msg);
    int rc = coord_webauth_set_hash(c->s->webauth, u.name, c->key, salt, (int)bf_msg_uint(c->req, "iterations", 0), hash, &err);
    if (rc == COORD_WA_WEAK) return bf_msg_error(c->id, BF_PROTO_BAD_REQUEST, "at least %d PBKDF2 iterations", COORD_PBKDF2_ITER);
    if (rc) return bf_msg_error(c->id, BF_PROTO_INTERNAL, "%s", err.msg);
    return bf_msg_new("OK", c->id);
}

/* Gauges of the coordinator's state for the HTTPS API's /metrics (an operator route); refused on
 * the ROUTER, where there is no operator. */
static bf_msg_t *h_stats(const ctx_t *c) {
    const coord_server_t *s = c->s;
    if (c->via != COORD_VIA_HTTP) return bf_msg_error(c->id, BF_PROTO_FORBIDDEN, "the coordinator's gauges are the operator's");
    int64_t by_state[COORD_TASK_FAILED + 1] = {0}, rounds = 0, live = 0, parts = 0;
    for (int i = 0; i < s->ntasks; i++) {
        const coord_task_t *t = s->tasks[i];
        by_state[t->state]++;
        rounds += t->round;
        for (int k = 0; k < t->nparts; k++) {
            parts++;
            if (t->state == COORD_TASK_RUNNING || t->state == COORD_TASK_AGGREGATING)
                live += coord_is_live((coord_server_t *)s, &t->parts[k]);
        }
    }
    bf_msg_t *r = bf_msg_new("OK", c->id);
    mp_t m;
    msgpack_packer *pk = mp_begin(&m);
    msgpack_pack_map(pk, 11);
    mp_kv_int(pk, "ledger_fee_operations", s->fee_ops);
    mp_kv_int(pk, "ledger_group_commits", s->group_commits);
    mp_kv_int(pk, "ledger_group_requests", s->group_requests);
    bf_mp_pack_str(pk, "ledger_group_sizes"); /* commits of <= 1, 2, 4 ... 64 requests */
    msgpack_pack_array(pk, 7);
    for (int b = 0; b < 7; b++) msgpack_pack_int64(pk, s->group_hist[b]);
    bf_mp_pack_str(pk, "tasks");
    msgpack_pack_map(pk, COORD_TASK_FAILED + 1);
    for (int st = COORD_TASK_WAITING; st <= COORD_TASK_FAILED; st++)
        mp_kv_int(pk, coord_task_state_name((coord_task_state_t)st), by_state[st]);
    mp_kv_int(pk, "rounds", rounds);
    mp_kv_int(pk, "participants", parts);
    mp_kv_int(pk, "participants_live", live);
    mp_kv_int(pk, "predictions_in_flight", s->inflight_total);
    mp_kv_int(pk, "connections", (int64_t)zhashx_size(s->peers));
    mp_kv_int(pk, "users", (int64_t)zhashx_size(s->users));
    mp_set(&m, r, "result");
    return r;
}

static bf_msg_t *h_token_create(const ctx_t *c) {
    char token[COORD_TOKEN_MAX];
    int64_t id;
    bf_err_t err;
    const char *name = bf_msg_str(c->req, "name");
    if (!name || !name[0]) return bf_msg_error(c->id, BF_PROTO_BAD_REQUEST, "a token needs a name");
    if (coord_webauth_token_new(c->s->webauth, c->key, name, token, &id, &err))
        return bf_msg_error(c->id, BF_PROTO_INTERNAL, "%s", err.msg);
    bf_msg_t *r = bf_msg_new("OK", c->id);
    mp_t m;
    msgpack_packer *pk = mp_begin(&m);
    msgpack_pack_map(pk, 3);
    mp_kv_int(pk, "id", id);
    mp_kv_str(pk, "name", name);
    mp_kv_str(pk, "token", token);
    mp_set(&m, r, "result");
    OPENSSL_cleanse(token, sizeof token);
    return r;
}

/* ---- money out and statements -------------------------------------------------------------- */

/* WITHDRAW: a two-phase transfer, held on the caller's available cash at once; the operator pays
 * it out (`ledger payout ID --ref REF`) or rejects it (`ledger reject ID --reason TEXT`). The op id
 * derives from the request key like RECHARGE's, so a retry asks once. */
static bf_msg_t *h_withdraw(const ctx_t *c) {
    int64_t cents = 0, wid = 0;
    bf_err_t err;
    int bad = bf_money_parse_amount(bf_msg_str(c->req, "amount"), 2, &cents, &err);
    if (bad || cents <= 0) return bf_msg_error(c->id, BF_PROTO_BAD_REQUEST, "amount: %s", bad ? err.msg : "must be positive");
    char op[BF_LEDGER_OP_ID_MAX + 1];
    if (money_op(c, "withdraw", 0, op)) return bf_msg_error(c->id, BF_PROTO_INTERNAL, "no random bytes for an op id");
    int rc = bf_ledger_withdraw(c->s->ledger, op, c->user, cents, &wid, &err);
    if (rc != BF_LEDGER_OK) return ledger_error(c->id, rc, &err);
    bf_ledger_user_t u;
    if (bf_ledger_user_get(c->s->ledger, c->user, &u, &err)) return bf_msg_error(c->id, BF_PROTO_INTERNAL, "%s", err.msg);
    char m[32];
    coord_log("withdrawal %lld of %s requested by %s", (long long)wid, (money(m, cents), m), u.name);
    bf_msg_t *r = bf_msg_new("OK", c->id);
    mp_t mp;
    msgpack_packer *pk = mp_begin(&mp);
    msgpack_pack_map(pk, 6);
    mp_kv_int(pk, "withdrawal", wid);
    mp_kv_money(pk, "amount", cents);
    mp_kv_str(pk, "status", "pending");
    mp_kv_str(pk, "user", u.name);
    mp_kv_money(pk, "cash", u.cash.posted);
    mp_kv_money(pk, "cash_available", u.cash.available);
    mp_set(&mp, r, "result");
    return r;
}

/* STATEMENT_GET: the caller's statement for one currency over [from, to), in pages of at most
 * STATEMENT_PAGE lines (a reply header is capped at 64 KiB): lines after transfer `after`, and
 * `more` when the window has further lines. */
#define STATEMENT_PAGE 128
static bf_msg_t *h_statement(const ctx_t *c) {
    const char *cur = bf_msg_str(c->req, "currency");
    if (cur && strcmp(cur, "CNY") && strcmp(cur, "COIN"))
        return bf_msg_error(c->id, BF_PROTO_BAD_REQUEST, "currency must be CNY or COIN");
    int cash = !cur || !strcmp(cur, "CNY");
    uint64_t from = bf_msg_uint(c->req, "from", 0), to = bf_msg_uint(c->req, "to", INT64_MAX);
    uint64_t after = bf_msg_uint(c->req, "after", 0);
    if (from > INT64_MAX || to > INT64_MAX || to < from) return bf_msg_error(c->id, BF_PROTO_BAD_REQUEST, "bad time window");
    bf_ledger_statement_t st;
    bf_err_t err;
    int rc = bf_ledger_statement(c->s->ledger, c->user, cash ? BF_LEDGER_CNY : BF_LEDGER_COIN, (int64_t)from, (int64_t)to,
                                 &st, &err);
    if (rc) return ledger_error(c->id, rc, &err);
    size_t first = 0;
    while (first < st.n && (uint64_t)st.lines[first].transfer_id <= after) first++;
    size_t k = st.n - first < STATEMENT_PAGE ? st.n - first : STATEMENT_PAGE;
    int scale = cash ? 2 : 0;
    char b[32];
#define KV_AMOUNT(key, v) (bf_mp_pack_str(pk, key), bf_mp_pack_str(pk, bf_money_format_amount((v), scale, b)))
    bf_msg_t *r = bf_msg_new("STATEMENT", c->id);
    mp_t m;
    msgpack_packer *pk = mp_begin(&m);
    msgpack_pack_map(pk, 9);
    mp_kv_str(pk, "currency", cash ? "CNY" : "COIN");
    mp_kv_int(pk, "from", (int64_t)from);
    mp_kv_int(pk, "to", (int64_t)to);
    KV_AMOUNT("opening", st.opening);
    KV_AMOUNT("opening_held", st.opening_held);
    KV_AMOUNT("closing", st.closing);
    KV_AMOUNT("closing_held", st.closing_held);
    bf_mp_pack_str(pk, "more");
    if (first + k < st.n) msgpack_pack_true(pk);
    else msgpack_pack_false(pk);
    bf_mp_pack_str(pk, "lines");
    msgpack_pack_array(pk, k);
    for (size_t i = first; i < first + k; i++) {
        const bf_ledger_statement_line_t *l = &st.lines[i];
        msgpack_pack_map(pk, 10);
        mp_kv_int(pk, "transfer", l->transfer_id);
        mp_kv_int(pk, "time", l->created_at);
        mp_kv_str(pk, "type", l->type);
        mp_kv_str(pk, "kind", l->code);
        KV_AMOUNT("amount", l->amount);
        KV_AMOUNT("held", l->held);
        KV_AMOUNT("before", l->balance_before);
        KV_AMOUNT("after", l->balance_after);
        KV_AMOUNT("held_before", l->held_before);
        KV_AMOUNT("held_after", l->held_after);
    }
#undef KV_AMOUNT
    mp_set(&m, r, "statement");
    bf_ledger_statement_free(&st);
    return r;
}

/* ---- what a user has across tasks --------------------------------------------------------- */

static const coord_task_t *task_of_ledger_id(const coord_server_t *s, int64_t ledger_id) {
    for (int i = 0; i < s->ntasks; i++)
        if (s->tasks[i]->ledger_id == ledger_id) return s->tasks[i];
    return NULL;
}

/* PARTICIPATIONS_GET: every task the caller has joined, with its blocks, samples, value and status
 * there — one request instead of a STATUS per task. */
static bf_msg_t *h_participations(const ctx_t *c) {
    const coord_server_t *s = c->s;
    uint32_t n = 0;
    for (int i = 0; i < s->ntasks; i++)
        for (int j = 0; j < s->tasks[i]->nparts; j++) n += s->tasks[i]->parts[j].user_id == c->user;
    bf_msg_t *r = bf_msg_new("PARTICIPATIONS", c->id);
    mp_t m;
    msgpack_packer *pk = mp_begin(&m);
    msgpack_pack_array(pk, n);
    for (int i = 0; i < s->ntasks; i++) {
        const coord_task_t *t = s->tasks[i];
        for (int j = 0; j < t->nparts; j++) {
            const coord_part_t *p = &t->parts[j];
            if (p->user_id != c->user) continue;
            msgpack_pack_map(pk, 10);
            mp_kv_str(pk, "task", t->spec.id);
            mp_kv_str(pk, "name", t->spec.name);
            mp_kv_str(pk, "mode", coord_mode_name(t->spec.mode));
            mp_kv_str(pk, "task_state", coord_task_state_name(t->state));
            mp_kv_dbl(pk, "shapley", p->shapley);
            mp_kv_int(pk, "blocks", p->nblocks);
            mp_kv_int(pk, "samples", p->samples);
            mp_kv_int(pk, "contributed", p->contributed);
            mp_kv_str(pk, "status", p->left ? "left" : coord_is_live(c->s, p) ? "live" : "away");
            mp_kv_int(pk, "reported_round", p->update_round);
        }
    }
    mp_set(&m, r, "participations");
    return r;
}

/* REVENUES_GET: fee payouts the caller received, per task (share and total) and one by one,
 * newest first, at most `limit` (1..1000, default 100) of them: a revenue curve over time. */
static bf_msg_t *h_revenues(const ctx_t *c) {
    coord_server_t *s = c->s;
    uint64_t limit = bf_msg_uint(c->req, "limit", 100);
    if (limit < 1 || limit > 1000) return bf_msg_error(c->id, BF_PROTO_BAD_REQUEST, "limit must be 1..1000");
    bf_ledger_share_t *sh = NULL;
    bf_ledger_revenue_t *rv = NULL;
    size_t nsh = 0, nrv = 0;
    bf_err_t err;
    if (bf_ledger_user_shares(s->ledger, c->user, &sh, &nsh, &err) || bf_ledger_revenues(s->ledger, 0, c->user, &rv, &nrv, &err)) {
        free(sh);
        return bf_msg_error(c->id, BF_PROTO_INTERNAL, "%s", err.msg);
    }
    bf_msg_t *r = bf_msg_new("REVENUES", c->id);
    mp_t m;
    msgpack_packer *pk = mp_begin(&m);
    msgpack_pack_map(pk, 2);
    bf_mp_pack_str(pk, "tasks");
    msgpack_pack_array(pk, nsh);
    for (size_t i = 0; i < nsh; i++) {
        const coord_task_t *t = task_of_ledger_id(s, sh[i].task_id);
        int64_t count = 0;
        for (size_t k = 0; k < nrv; k++) count += rv[k].task_id == sh[i].task_id;
        msgpack_pack_map(pk, 6);
        mp_kv_str(pk, "task", t ? t->spec.id : "");
        mp_kv_str(pk, "name", t ? t->spec.name : "");
        mp_kv_int(pk, "task_ledger_id", sh[i].task_id);
        mp_kv_int(pk, "ppm", sh[i].ppm);
        mp_kv_money(pk, "received", sh[i].received);
        mp_kv_int(pk, "payouts", count);
    }
    size_t k = nrv < limit ? nrv : (size_t)limit;
    bf_mp_pack_str(pk, "payouts");
    msgpack_pack_array(pk, k);
    for (size_t i = 0; i < k; i++) {
        const bf_ledger_revenue_t *x = &rv[nrv - 1 - i];
        const coord_task_t *t = task_of_ledger_id(s, x->task_id);
        msgpack_pack_map(pk, 3);
        mp_kv_str(pk, "task", t ? t->spec.id : "");
        mp_kv_money(pk, "amount", x->amount);
        mp_kv_int(pk, "time", x->created_at);
    }
    mp_set(&m, r, "revenues");
    free(sh);
    free(rv);
    return r;
}

static const char *withdrawal_status_name(bf_ledger_withdrawal_status_t st) {
    return st == BF_LEDGER_WITHDRAWAL_PAID ? "paid" : st == BF_LEDGER_WITHDRAWAL_REJECTED ? "rejected" : "pending";
}

/* WITHDRAWALS_GET: the caller's withdrawals, newest first, with their state and the operator's
 * reference or reason once resolved. */
static bf_msg_t *h_withdrawals(const ctx_t *c) {
    bf_ledger_withdrawal_t *w = NULL;
    size_t n = 0;
    bf_err_t err;
    if (bf_ledger_withdrawals(c->s->ledger, 0, c->user, &w, &n, &err)) return bf_msg_error(c->id, BF_PROTO_INTERNAL, "%s", err.msg);
    bf_msg_t *r = bf_msg_new("WITHDRAWALS", c->id);
    mp_t m;
    msgpack_packer *pk = mp_begin(&m);
    msgpack_pack_array(pk, n);
    for (size_t i = 0; i < n; i++) {
        const bf_ledger_withdrawal_t *x = &w[n - 1 - i];
        msgpack_pack_map(pk, 7);
        mp_kv_int(pk, "withdrawal", x->id);
        mp_kv_money(pk, "amount", x->amount);
        mp_kv_str(pk, "status", withdrawal_status_name(x->status));
        mp_kv_int(pk, "created", x->created_at);
        mp_kv_int(pk, "resolved", x->resolved_at);
        mp_kv_str(pk, "ref", x->external_ref);
        mp_kv_str(pk, "reason", x->reason);
    }
    mp_set(&m, r, "withdrawals");
    free(w);
    return r;
}

/* ---- the command table and its preamble ---------------------------------------------------- */

typedef struct {
    const char *type;
    bf_msg_t *(*fn)(const ctx_t *);
    int flags;
} command_t;

static const command_t commands[] = {
    {"PING", h_ping, 0},
    {"HELLO", h_hello, 0},
    {"REGISTER", h_register, 0}, /* needs a key, not an account */
    {"RECHARGE", h_recharge, NEED_USER},
    {"TASK_CREATE", h_task_create, NEED_USER},
    {"TASK_LIST", h_task_list, 0},
    {"TASK_STATUS", h_task_status, NEED_TASK},
    {"TASK_CANCEL", h_task_cancel, NEED_USER | NEED_TASK},
    {"JOIN", h_join, NEED_USER | NEED_TASK},
    {"LEAVE", h_leave, NEED_PART},
    {"BLOCKS_BUY", h_blocks_buy, NEED_USER | NEED_TASK},
    {"BLOCK_GET", h_block_get, NEED_PART},
    {"ROUND_GET", h_round_get, NEED_PART},
    {"UPDATE", h_update, NEED_PART},
    {"ASSETS_GET", h_assets, NEED_USER},
    {"HISTORY_GET", h_history, NEED_USER},
    {"MODEL_GET", h_model_get, NEED_USER | NEED_TASK},
    {"PREDICT", h_predict, NEED_USER | NEED_TASK | ASYNC},
    {"PASSWORD_SET", h_password_set, NEED_USER},
    {"TOKEN_CREATE", h_token_create, NEED_USER},
    {"STATS_GET", h_stats, 0},
    {"WITHDRAW", h_withdraw, NEED_USER},
    {"STATEMENT_GET", h_statement, NEED_USER},
    {"PARTICIPATIONS_GET", h_participations, NEED_USER},
    {"REVENUES_GET", h_revenues, NEED_USER},
    {"WITHDRAWALS_GET", h_withdrawals, NEED_USER},
};

static const command_t *command_of(const char *type) {
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(type, commands[i].type)) return &commands[i];
    return NULL;
}

/* What the table's flags promise, checked once for every handler. */
static bf_msg_t *preamble(ctx_t *c, int flags) {
    if (flags & NEED_USER) {
        if (!c->key) return bf_msg_error(c->id, BF_PROTO_UNAUTHORIZED, "no authenticated key on this connection");
        if (!c->user) return bf_msg_error(c->id, BF_PROTO_UNAUTHORIZED, "this key has no account: register first");
    }
    if (flags & (NEED_TASK | NEED_PART)) c->t = coord_task_find(c->s, bf_msg_str(c->req, "task"));
    if (flags & NEED_PART) {
        c->p = c->t ? coord_part_find(c->t, c->key) : NULL;
        if (!c->p) return bf_msg_error(c->id, BF_PROTO_NOT_FOUND, "not a participant of this task");
    } else if ((flags & NEED_TASK) && !c->t) {
        return bf_msg_error(c->id, BF_PROTO_NOT_FOUND, "no such task");
    }
    return NULL;
}

bf_msg_t *coord_handle(coord_server_t *s, bf_msg_t **req, zframe_t **rid, const char *key, coord_via_t via) {
    ctx_t c = {.s = s, .req = *req, .id = bf_msg_id(*req), .key = key, .via = via};
    const char *type = bf_msg_type(*req);
    if (!bf_proto_is_request(type)) return bf_msg_error(c.id, BF_PROTO_UNKNOWN_TYPE, "'%s' is a reply, not a request", type);
    if (key) {
        coord_touch(s, key);
        c.user = user_of(s, key);
    }
    const command_t *cmd = command_of(type);
    if (!cmd) return bf_msg_error(c.id, BF_PROTO_UNKNOWN_TYPE, "'%s' is not a request", type);
    bf_msg_t *e = preamble(&c, cmd->flags);
    if (e) return e;
    if (cmd->flags & ASYNC) c.rid = rid, c.reqp = req;
    bf_msg_t *r = cmd->fn(&c);
    assert(r || (cmd->flags & ASYNC)); /* only an ASYNC handler hands a request over */
    return r;
}

/* test_ledger_property.c: random operations against a simple in-memory reference model (the
 * TigerBeetle auditor idea). Every op's return code must be the one the model predicts; after
 * every batch all balances, task states and holds must match the model and bf_ledger_verify must
 * pass. Usage: test_ledger_property [OPS [BATCH [SEED]]] (default 100000 ops, batches of 10000). */
#include <stdlib.h>

#include "test_ledger_common.h"

#define MAX_USERS 4096
#define MAX_TASKS 4096
#define MAX_HOLDS 200000
#define MAX_REPLAYS 4096

typedef struct {
    int64_t id, cash_acct, cash, held, coins;
} m_user_t;

typedef struct {
    int64_t id, creator, pool, escrow, fee_ppm, revenue, platform_paid;
    int mode, status, online, n_holders;
    int64_t holder[8], holder_key[8], ppm[8], paid[8];
} m_task_t;

typedef struct {
    int64_t task, payer, amount, expires;
    int status;
} m_hold_t;

typedef struct {
    char op[32];
    int64_t user, amount;
    int rc;
} m_replay_t;

typedef struct {
    int64_t user, amount;
    int status; /* bf_ledger_withdrawal_status_t */
    char ref[32]; /* the ref it was paid under */
    int reason;   /* rejected: which of the two reasons (1, 2) */
} m_wd_t;

typedef struct {
    bf_ledger_t *L;
    bf_rng_t rng;
    tl_clock_t clk;
    m_user_t users[MAX_USERS];
    int n_users;
    m_task_t tasks[MAX_TASKS];
    int n_tasks;
    m_hold_t *holds; /* index = hold id */
    int64_t n_holds;
    m_wd_t *wds; /* index = withdrawal id */
    int64_t n_wds;
    m_replay_t replays[MAX_REPLAYS];
    int n_replays;
    int64_t next_acct, fee_ppm, platform_revenue, coin_revenue;
    long op_seq;
    long mismatches;
} model_t;

static uint32_t rnd(model_t *m, uint32_t n) { return bf_rng_below(&m->rng, n); }

static void next_op(model_t *m, char *op, const char *kind) { snprintf(op, 32, "%s-%ld", kind, m->op_seq++); }

static void expect(model_t *m, int got, int want, const char *what, const bf_err_t *err) {
    if (got != want) {
        m->mismatches++;
        CHECK_MSG(got == want, "%s: got %s, model says %s (%s)", what, bf_ledger_rc_name(got), bf_ledger_rc_name(want),
                  err->msg);
    }
}

/* A user id: usually a real one, sometimes one that does not exist. */
static int64_t pick_user(model_t *m, m_user_t **u) {
    if (m->n_users == 0 || rnd(m, 50) == 0) {
        *u = NULL;
        return 100000 + rnd(m, 1000);
    }
    *u = &m->users[rnd(m, (uint32_t)m->n_users)];
    return (*u)->id;
}

static int64_t pick_task(model_t *m, m_task_t **t) {
    if (m->n_tasks == 0 || rnd(m, 50) == 0) {
        *t = NULL;
        return 100000 + rnd(m, 1000);
    }
    *t = &m->tasks[rnd(m, (uint32_t)m->n_tasks)];
    return (*t)->id;
}

static void op_register(model_t *m) {
    if (m->n_users >= MAX_USERS || (m->n_users >= 40 && rnd(m, 10))) return;
    char op[32], name[32], key[41];
    int reuse = m->n_users > 0 && rnd(m, 20) == 0;
    snprintf(name, sizeof name, "user%d", reuse ? (int)rnd(m, (uint32_t)m->n_users) : m->n_users);
    tl_key(key, (uint64_t)m->op_seq * 31 + 7);
    next_op(m, op, "reg");
    int64_t id = 0;
    bf_err_t err;
    int rc = bf_ledger_register_user(m->L, op, name, key, NULL, &id, &err);
    expect(m, rc, reuse ? BF_LEDGER_EEXISTS : BF_LEDGER_OK, "register", &err);
    if (rc == BF_LEDGER_OK && !reuse) {
        m_user_t *u = &m->users[m->n_users++];
        *u = (m_user_t){.id = id, .cash_acct = m->next_acct, .coins = BF_LEDGER_REGISTER_COINS};
        CHECK(id == m->n_users);
        m->next_acct += 2;
    }
}

static void op_recharge(model_t *m) {
    m_user_t *u;
    int64_t uid = pick_user(m, &u);
    int64_t amount = rnd(m, 30) == 0 ? -(int64_t)rnd(m, 3) : 1 + rnd(m, 100000);
    char op[32];
    next_op(m, op, "rch");
    bf_err_t err;
    int want = amount <= 0 ? BF_LEDGER_EINVAL : !u ? BF_LEDGER_ENOTFOUND : BF_LEDGER_OK;
    int rc = bf_ledger_recharge(m->L, op, uid, amount, &err);
    expect(m, rc, want, "recharge", &err);
    if (want == BF_LEDGER_OK) u->cash += amount;
    if (m->n_replays < MAX_REPLAYS) {
        m_replay_t *r = &m->replays[m->n_replays++];
        snprintf(r->op, sizeof r->op, "%s", op);
        r->user = uid;
        r->amount = amount;
        r->rc = want;
    }
}

/* Same id + same arguments: the recorded answer and no effect; different arguments: conflict. */
static void op_replay(model_t *m) {
    if (m->n_replays == 0) return;
    m_replay_t *r = &m->replays[rnd(m, (uint32_t)m->n_replays)];
    bf_err_t err;
    expect(m, bf_ledger_recharge(m->L, r->op, r->user, r->amount, &err), r->rc, "replay", &err);
    expect(m, bf_ledger_recharge(m->L, r->op, r->user, r->amount + 1, &err), BF_LEDGER_ECONFLICT, "conflict", &err);
}

static void op_spend(model_t *m) {
    m_user_t *u;
    int64_t uid = pick_user(m, &u);
    int64_t blocks = rnd(m, 13);
    char op[32];
    next_op(m, op, "spd");
    bf_err_t err;
    int want = blocks <= 0 ? BF_LEDGER_EINVAL
               : !u ? BF_LEDGER_ENOTFOUND
               : u->coins < blocks * BF_LEDGER_COINS_PER_BLOCK ? BF_LEDGER_EFUNDS
                                                               : BF_LEDGER_OK;
    expect(m, bf_ledger_spend_coins(m->L, op, uid, blocks, &err), want, "spend", &err);
    if (want == BF_LEDGER_OK) {
        u->coins -= blocks * BF_LEDGER_COINS_PER_BLOCK;
        m->coin_revenue += blocks * BF_LEDGER_COINS_PER_BLOCK;
    }
}

static void op_create(model_t *m) {
    if (m->n_tasks >= MAX_TASKS || (m->n_tasks >= 20 && rnd(m, 4))) return;
    m_user_t *u;
    int64_t uid = pick_user(m, &u);
    int mode = rnd(m, 2) ? BF_LEDGER_MODE_REWARD : BF_LEDGER_MODE_SHAREHOLDING;
    int64_t pool = mode == BF_LEDGER_MODE_REWARD ? (rnd(m, 20) == 0 ? 0 : 1 + rnd(m, 200000)) : 0;
    bf_ledger_task_spec_t spec = {"task", mode, pool, rnd(m, 100)};
    char op[32];
    next_op(m, op, "crt");
    bf_err_t err;
    int want = mode == BF_LEDGER_MODE_REWARD && pool == 0 ? BF_LEDGER_EINVAL
               : !u                                         ? BF_LEDGER_ENOTFOUND
               : u->cash - u->held < pool                   ? BF_LEDGER_EFUNDS
                                                            : BF_LEDGER_OK;
    int64_t tid = 0;
    expect(m, bf_ledger_create_task(m->L, op, uid, &spec, &tid, &err), want, "create", &err);
    if (want != BF_LEDGER_OK) return;
    m_task_t *t = &m->tasks[m->n_tasks++];
    memset(t, 0, sizeof *t);
    t->id = tid;
    CHECK(tid == m->n_tasks);
    t->creator = uid;
    t->mode = mode;
    t->pool = t->escrow = pool;
    t->status = BF_LEDGER_TASK_CREATED;
    t->fee_ppm = m->fee_ppm;
    u->cash -= pool;
    m->next_acct += 2;
}

static m_user_t *user_by_id(model_t *m, int64_t id) {
    return id >= 1 && id <= m->n_users ? &m->users[id - 1] : NULL;
}

static void op_start(model_t *m) {
    m_task_t *t;
    int64_t tid = pick_task(m, &t);
    char op[32];
    next_op(m, op, "st");
    bf_err_t err;
    int want = !t ? BF_LEDGER_ENOTFOUND : t->status != BF_LEDGER_TASK_CREATED ? BF_LEDGER_ESTATE : BF_LEDGER_OK;
    expect(m, bf_ledger_start_task(m->L, op, tid, &err), want, "start", &err);
    if (want == BF_LEDGER_OK) t->status = BF_LEDGER_TASK_RUNNING;
}

static void op_refund(model_t *m) {
    m_task_t *t;
    int64_t tid = pick_task(m, &t);
    if (t && rnd(m, 3)) return; /* refunds are rarer than other transitions */
    char op[32];
    next_op(m, op, "rf");
    bf_err_t err;
    int want = !t ? BF_LEDGER_ENOTFOUND
               : t->status != BF_LEDGER_TASK_CREATED && t->status != BF_LEDGER_TASK_RUNNING ? BF_LEDGER_ESTATE
                                                                                             : BF_LEDGER_OK;
    expect(m, bf_ledger_refund_task(m->L, op, tid, &err), want, "refund", &err);
    if (want != BF_LEDGER_OK) return;
    user_by_id(m, t->creator)->cash += t->escrow;
    t->escrow = 0;
    t->status = BF_LEDGER_TASK_REFUNDED;
}

/* Settle (reward) or allocate (shareholding) a task with 1..8 random participants. */
static void op_complete(model_t *m) {
    m_task_t *t;
    int64_t tid = pick_task(m, &t);
    if (m->n_users == 0) return;
    int settle = t ? t->mode == BF_LEDGER_MODE_REWARD : (int)rnd(m, 2);
    if (rnd(m, 15) == 0) settle = !settle; /* wrong kind of completion */
    int n = 1 + (int)rnd(m, m->n_users < 8 ? (uint32_t)m->n_users : 8);
    int64_t users[8], weights[8], keys[8], parts[8];
    int ghost = 0, positive = 0;
    uint32_t start = rnd(m, (uint32_t)m->n_users);
    for (int i = 0; i < n; i++) { /* distinct users */
        users[i] = (int64_t)((start + (uint32_t)i) % (uint32_t)m->n_users) + 1;
        weights[i] = rnd(m, 6) == 0 ? -(int64_t)rnd(m, 3) : (int64_t)rnd(m, 1000);
        positive |= weights[i] > 0;
    }
    if (rnd(m, 40) == 0) {
        users[n - 1] = 100000;
        ghost = 1;
    }
    for (int i = 0; i < n; i++) keys[i] = ghost && i == n - 1 ? 0 : user_by_id(m, users[i])->cash_acct;
    char op[32];
    next_op(m, op, settle ? "set" : "alc");
    bf_err_t err;
    int mode = settle ? BF_LEDGER_MODE_REWARD : BF_LEDGER_MODE_SHAREHOLDING;
    int want = !t                                 ? BF_LEDGER_ENOTFOUND
               : t->mode != mode                  ? BF_LEDGER_ESTATE
               : ghost                            ? BF_LEDGER_ENOTFOUND
               : t->status != BF_LEDGER_TASK_RUNNING ? BF_LEDGER_ESTATE
               : !positive                        ? BF_LEDGER_EINVAL
                                                  : BF_LEDGER_OK;
    int rc = settle ? bf_ledger_settle_reward(m->L, op, tid, (size_t)n, users, weights, "r", &err)
                    : bf_ledger_allocate_shares(m->L, op, tid, (size_t)n, users, weights, "r", &err);
    expect(m, rc, want, settle ? "settle" : "allocate", &err);
    if (want != BF_LEDGER_OK) return;
    t->status = BF_LEDGER_TASK_COMPLETED;
    if (settle) {
        CHECK(bf_money_split(t->escrow, (size_t)n, weights, keys, parts) == 0);
        for (int i = 0; i < n; i++) user_by_id(m, users[i])->cash += parts[i];
        t->escrow = 0;
    } else {
        CHECK(bf_money_split(BF_LEDGER_PPM, (size_t)n, weights, keys, parts) == 0);
        /* Holders in cash-account order, as the ledger pays them. */
        int idx[8];
        for (int i = 0; i < n; i++) idx[i] = i;
        for (int i = 1; i < n; i++)
            for (int j = i; j > 0 && keys[idx[j]] < keys[idx[j - 1]]; j--) {
                int x = idx[j];
                idx[j] = idx[j - 1];
                idx[j - 1] = x;
            }
        t->n_holders = n;
        for (int i = 0; i < n; i++) {
            t->holder[i] = users[idx[i]];
            t->holder_key[i] = keys[idx[i]];
            t->ppm[i] = parts[idx[i]];
        }
    }
}

static void op_online(model_t *m) {
    m_task_t *t;
    int64_t tid = pick_task(m, &t);
    int on = rnd(m, 5) != 0;
    char op[32];
    next_op(m, op, "on");
    bf_err_t err;
    int want = !t ? BF_LEDGER_ENOTFOUND
               : t->mode != BF_LEDGER_MODE_SHAREHOLDING || t->status != BF_LEDGER_TASK_COMPLETED ? BF_LEDGER_ESTATE
                                                                                                 : BF_LEDGER_OK;
    expect(m, bf_ledger_set_model_online(m->L, op, tid, on, &err), want, "online", &err);
    if (want == BF_LEDGER_OK) t->online = on;
}

static void op_hold(model_t *m) {
    m_task_t *t;
    m_user_t *u;
    /* Mostly aim at chargeable tasks so holds and captures are common. */
    int64_t tid = pick_task(m, &t);
    for (int tries = 0; tries < 4 && t && !(t->online && t->status == BF_LEDGER_TASK_COMPLETED); tries++)
        tid = pick_task(m, &t);
    int64_t uid = pick_user(m, &u);
    int64_t amount = rnd(m, 40) == 0 ? 0 : 1 + rnd(m, rnd(m, 2) ? 300 : 20000);
    int64_t timeout = rnd(m, 3) == 0 ? 1 + rnd(m, 10) : 0;
    char op[32];
    next_op(m, op, "hld");
    bf_err_t err;
    int want = amount <= 0 ? BF_LEDGER_EINVAL
               : !t        ? BF_LEDGER_ENOTFOUND
               : !u        ? BF_LEDGER_ENOTFOUND
               : t->mode != BF_LEDGER_MODE_SHAREHOLDING || t->status != BF_LEDGER_TASK_COMPLETED || !t->online
                   ? BF_LEDGER_ESTATE
               : u->cash - u->held < amount ? BF_LEDGER_EFUNDS
                                            : BF_LEDGER_OK;
    int64_t hid = 0;
    expect(m, bf_ledger_fee_hold(m->L, op, tid, uid, amount, timeout, &hid, &err), want, "hold", &err);
    if (want != BF_LEDGER_OK || m->n_holds + 1 >= MAX_HOLDS) return;
    m->n_holds++;
    CHECK(hid == m->n_holds);
    m->holds[m->n_holds] = (m_hold_t){tid, uid, amount, timeout ? m->clk.now + timeout : 0, BF_LEDGER_HOLD_PENDING};
    u->held += amount;
}

static int hold_state_rc(const model_t *m, const m_hold_t *h) {
    if (h->status == BF_LEDGER_HOLD_CAPTURED) return BF_LEDGER_EPOSTED;
    if (h->status == BF_LEDGER_HOLD_VOIDED) return BF_LEDGER_EVOIDED;
    if (h->status == BF_LEDGER_HOLD_EXPIRED) return BF_LEDGER_EEXPIRED;
    if (h->expires && m->clk.now >= h->expires) return BF_LEDGER_EEXPIRED;
    return BF_LEDGER_OK;
}

static int64_t pick_hold(model_t *m, m_hold_t **h) {
    if (m->n_holds == 0 || rnd(m, 60) == 0) {
        *h = NULL;
        return MAX_HOLDS + 1 + rnd(m, 10);
    }
    /* Recent holds are the ones still open. */
    int64_t back = rnd(m, 4) ? rnd(m, 8) : rnd(m, (uint32_t)m->n_holds);
    int64_t id = m->n_holds - (back < m->n_holds ? back : 0);
    *h = &m->holds[id];
    return id;
}

static void pay_out(model_t *m, m_task_t *t, int64_t amount) {
    int n = t->n_holders;
    int64_t w[9], keys[9], paid[9], add[9];
    for (int i = 0; i < n; i++) {
        w[i] = t->ppm[i] * (BF_LEDGER_PPM - t->fee_ppm);
        keys[i] = t->holder_key[i];
        paid[i] = t->paid[i];
    }
    w[n] = t->fee_ppm * BF_LEDGER_PPM;
    keys[n] = 3; /* platform revenue CNY account */
    paid[n] = t->platform_paid;
    CHECK(bf_money_apportion((size_t)n + 1, w, keys, paid, t->revenue, amount, add) == 0);
    for (int i = 0; i < n; i++) {
        t->paid[i] += add[i];
        user_by_id(m, t->holder[i])->cash += add[i];
    }
    t->platform_paid += add[n];
    m->platform_revenue += add[n];
    t->revenue += amount;
}

static void op_capture(model_t *m) {
    m_hold_t *h;
    int64_t hid = pick_hold(m, &h);
    int64_t amount = h ? (rnd(m, 15) == 0 ? h->amount + 1 : rnd(m, 10) == 0 ? -1 : (int64_t)rnd(m, (uint32_t)h->amount + 1)) : 5;
    char op[32];
    next_op(m, op, "cap");
    bf_err_t err;
    int want = !h ? BF_LEDGER_ENOTFOUND : hold_state_rc(m, h);
    if (want == BF_LEDGER_OK) want = amount < 0 ? BF_LEDGER_EINVAL : amount > h->amount ? BF_LEDGER_EEXCEEDS_HOLD : 0;
    expect(m, bf_ledger_fee_capture(m->L, op, hid, amount, &err), want, "capture", &err);
    if (want != BF_LEDGER_OK) return;
    m_user_t *p = user_by_id(m, h->payer);
    p->held -= h->amount;
    p->cash -= amount;
    h->status = BF_LEDGER_HOLD_CAPTURED;
    pay_out(m, &m->tasks[h->task - 1], amount);
}

static void op_void(model_t *m) {
    m_hold_t *h;
    int64_t hid = pick_hold(m, &h);
    char op[32];
    next_op(m, op, "vd");
    bf_err_t err;
    int want = !h ? BF_LEDGER_ENOTFOUND : hold_state_rc(m, h);
    expect(m, bf_ledger_fee_void(m->L, op, hid, &err), want, "void", &err);
    if (want != BF_LEDGER_OK) return;
    user_by_id(m, h->payer)->held -= h->amount;
    h->status = BF_LEDGER_HOLD_VOIDED;
}

static void op_withdraw(model_t *m) {
    m_user_t *u;
    int64_t uid = pick_user(m, &u), id = 0;
    int64_t amount = rnd(m, 40) == 0 ? 0 : 1 + rnd(m, rnd(m, 2) ? 500 : 50000);
    char op[32];
    next_op(m, op, "wd");
    bf_err_t err;
    int want = amount <= 0 ? BF_LEDGER_EINVAL : !u ? BF_LEDGER_ENOTFOUND : u->cash - u->held < amount ? BF_LEDGER_EFUNDS : 0;
    expect(m, bf_ledger_withdraw(m->L, op, uid, amount, &id, &err), want, "withdraw", &err);
    if (want != BF_LEDGER_OK || m->n_wds + 1 >= MAX_HOLDS) return;
    m->n_wds++;
    CHECK(id == m->n_wds);
    m->wds[m->n_wds] = (m_wd_t){uid, amount, BF_LEDGER_WITHDRAWAL_PENDING, "", 0};
    u->held += amount;
}

static int64_t pick_wd(model_t *m, m_wd_t **w) {
    if (m->n_wds == 0 || rnd(m, 40) == 0) {
        *w = NULL;
        return MAX_HOLDS + 1 + rnd(m, 10);
    }
    int64_t back = rnd(m, 3) ? rnd(m, 6) : rnd(m, (uint32_t)m->n_wds);
    int64_t id = m->n_wds - (back < m->n_wds ? back : 0);
    *w = &m->wds[id];
    return id;
}

static int wd_state_rc(const m_wd_t *w) {
    return !w ? BF_LEDGER_ENOTFOUND
           : w->status == BF_LEDGER_WITHDRAWAL_PAID ? BF_LEDGER_EPOSTED
           : w->status == BF_LEDGER_WITHDRAWAL_REJECTED ? BF_LEDGER_EVOIDED
                                                        : 0;
}

/* Payout under a new ref, or (sometimes) a paid one reported again under its own ref. */
static void op_payout(model_t *m) {
    m_wd_t *w;
    int64_t id = pick_wd(m, &w);
    bf_err_t err;
    if (w && w->status == BF_LEDGER_WITHDRAWAL_PAID && rnd(m, 2)) {
        expect(m, bf_ledger_withdraw_payout(m->L, id, w->ref, &err), 0, "payout again", &err);
        return;
    }
    char ref[32];
    next_op(m, ref, "bank");
    int want = wd_state_rc(w);
    expect(m, bf_ledger_withdraw_payout(m->L, id, ref, &err), want, "payout", &err);
    if (want != BF_LEDGER_OK) return;
    m_user_t *u = user_by_id(m, w->user);
    u->held -= w->amount;
    u->cash -= w->amount;
    w->status = BF_LEDGER_WITHDRAWAL_PAID;
    snprintf(w->ref, sizeof w->ref, "%s", ref);
}

static void op_reject(model_t *m) {
    m_wd_t *w;
    int64_t id = pick_wd(m, &w);
    bf_err_t err;
    /* Two reasons: the same one again is a replay, the other one an attempt to reject twice. */
    int second = rnd(m, 2);
    int want = wd_state_rc(w);
    if (w && w->status == BF_LEDGER_WITHDRAWAL_REJECTED && w->reason == 1 + second) want = 0; /* a replay */
    expect(m, bf_ledger_withdraw_reject(m->L, id, second ? "limit exceeded" : "bank refused", &err), want, "reject", &err);
    if (want != BF_LEDGER_OK || w->status != BF_LEDGER_WITHDRAWAL_PENDING) return;
    user_by_id(m, w->user)->held -= w->amount;
    w->status = BF_LEDGER_WITHDRAWAL_REJECTED;
    w->reason = 1 + second;
}

static void op_tick(model_t *m) {
    m->clk.now += 1 + rnd(m, 3);
    if (rnd(m, 2)) return;
    int64_t want = 0, got = -1;
    for (int64_t i = 1; i <= m->n_holds; i++) {
        m_hold_t *h = &m->holds[i];
        if (h->status == BF_LEDGER_HOLD_PENDING && h->expires && m->clk.now >= h->expires) {
            h->status = BF_LEDGER_HOLD_EXPIRED;
            user_by_id(m, h->payer)->held -= h->amount;
            want++;
        }
    }
    bf_err_t err;
    CHECK(bf_ledger_sweep_expired(m->L, &got, &err) == 0);
    CHECK_MSG(got == want, "sweep expired %lld, model %lld", (long long)got, (long long)want);
}

/* Everything the model knows must be what the ledger says. */
static void compare(model_t *m, long done) {
    bf_err_t err;
    bf_ledger_user_t *us = NULL;
    size_t n = 0;
    CHECK(bf_ledger_users(m->L, &us, &n, &err) == 0 && n == (size_t)m->n_users);
    for (size_t i = 0; i < n && i < (size_t)m->n_users; i++) {
        m_user_t *u = &m->users[i];
        CHECK_MSG(us[i].cash.posted == u->cash && us[i].cash.pending_debits == u->held && us[i].coin.posted == u->coins,
                  "after %ld ops user %lld: ledger cash %lld held %lld coins %lld, model %lld %lld %lld", done,
                  (long long)u->id, (long long)us[i].cash.posted, (long long)us[i].cash.pending_debits,
                  (long long)us[i].coin.posted, (long long)u->cash, (long long)u->held, (long long)u->coins);
    }
    free(us);
    for (int i = 0; i < m->n_tasks; i++) {
        bf_ledger_task_t t;
        m_task_t *mt = &m->tasks[i];
        CHECK(bf_ledger_task_get(m->L, mt->id, &t, &err) == 0);
        CHECK_MSG(t.status == (bf_ledger_task_status_t)mt->status && t.escrow_balance == mt->escrow &&
                      t.total_revenue == mt->revenue && t.model_online == mt->online,
                  "task %lld differs from the model", (long long)mt->id);
    }
    for (int64_t i = 1; i <= m->n_holds; i += 1 + (int64_t)rnd(m, 5)) {
        bf_ledger_usage_t u;
        CHECK(bf_ledger_hold_get(m->L, i, &u, &err) == 0 && u.status == (bf_ledger_hold_status_t)m->holds[i].status);
    }
    bf_ledger_withdrawal_t *wl = NULL;
    CHECK(bf_ledger_withdrawals(m->L, 0, 0, &wl, &n, &err) == 0 && n == (size_t)m->n_wds);
    for (size_t i = 0; i < n && i < (size_t)m->n_wds; i++)
        CHECK_MSG(wl[i].status == (bf_ledger_withdrawal_status_t)m->wds[i + 1].status && wl[i].amount == m->wds[i + 1].amount,
                  "withdrawal %lld differs from the model", (long long)wl[i].id);
    free(wl);
    bf_ledger_account_t *a = NULL;
    CHECK(bf_ledger_accounts(m->L, &a, &n, &err) == 0 && n == (size_t)(m->next_acct - 1));
    if (n >= 4) {
        CHECK(a[2].balance.posted == m->platform_revenue);
        CHECK(a[3].balance.posted == m->coin_revenue);
    }
    free(a);
    tl_verify_ok(m->L, "property batch");
}

int main(int argc, char **argv) {
    long ops = argc > 1 ? atol(argv[1]) : 100000, batch = argc > 2 ? atol(argv[2]) : 10000;
    uint64_t seed = argc > 3 ? strtoull(argv[3], NULL, 10) : 20240601;
    char path[1024];
    tl_db_path(path, sizeof path, "ledger-property");
    bf_err_t err;
    model_t *m = calloc(1, sizeof *m);
    m->holds = calloc(MAX_HOLDS + 1, sizeof *m->holds);
    m->wds = calloc(MAX_HOLDS + 1, sizeof *m->wds);
    m->L = bf_ledger_open(path, &err);
    CHECK_MSG(m->L != NULL, "%s", err.msg);
    if (!m->L) return bf_test_done("test_ledger_property");
    bf_rng_seed(&m->rng, seed);
    m->clk.now = 1700000000;
    m->next_acct = 5;
    bf_ledger_set_clock(m->L, tl_clock_now, &m->clk);
    /* A 5% platform cut on tasks created in the first half exercises the platform payout path. */
    CHECK(bf_ledger_set_platform_fee(m->L, "fee", 50000, &err) == 0);
    m->fee_ppm = 50000;
    static void (*const table[])(model_t *) = {
        op_register, op_register, op_recharge, op_recharge, op_recharge, op_spend, op_create, op_create,
        op_start, op_start, op_refund, op_complete, op_complete, op_online, op_online, op_hold, op_hold,
        op_hold, op_hold, op_hold, op_capture, op_capture, op_capture, op_capture, op_void, op_void,
        op_tick, op_replay, op_withdraw, op_withdraw, op_payout, op_reject,
    };
    const uint32_t n_table = sizeof table / sizeof table[0];
    for (long done = 0; done < ops && m->mismatches < 20;) {
        CHECK(bf_ledger_group_begin(m->L, &err) == 0);
        for (long k = 0; k < batch && done < ops; k++, done++) {
            if (done == ops / 2 && m->fee_ppm) {
                CHECK(bf_ledger_set_platform_fee(m->L, "fee-off", 0, &err) == 0);
                m->fee_ppm = 0;
            }
            table[rnd(m, n_table)](m);
        }
        CHECK(bf_ledger_group_commit(m->L, &err) == 0);
        compare(m, done);
    }
    printf("property: %ld ops, %d users, %d tasks, %lld holds, %lld withdrawals, %ld model mismatches\n", ops, m->n_users,
           m->n_tasks, (long long)m->n_holds, (long long)m->n_wds, m->mismatches);
    bf_ledger_close(&m->L);
    tl_remove_db(path);
    free(m->holds);
    free(m->wds);
    free(m);
    return bf_test_done("test_ledger_property");
}

/* bf_ledger.h: BlockFed's accounting core. Double-entry transfers in integer minor units over one
 * embedded database file, with TigerBeetle-style two-phase holds, caller-chosen idempotency ids,
 * escrowed task funding, share allocation and exact pro-rata fee payouts, and a SHA-256 hash chain
 * over every transfer that bf_ledger_verify() replays.
 *
 * Conventions (see docs/LEDGER.md for the full contract):
 * - Money is int64: CNY in cents (fen), COIN in whole coins. No floating point anywhere.
 * - Every write operation takes an op_id chosen by the caller (1..128 bytes). Repeating an op_id with
 *   the same arguments returns the original outcome (success or failure) and changes nothing;
 *   repeating it with different arguments returns BF_LEDGER_ECONFLICT. Only BF_LEDGER_EINTERNAL,
 *   BF_LEDGER_EBUSY and BF_LEDGER_ECONFLICT outcomes are not recorded (a retry may succeed).
 * - Operations return BF_LEDGER_OK (0) or a negative bf_ledger_rc_t and describe failures in err.
 * - A handle is not thread-safe; use one handle per thread or process. Several processes may share a
 *   database file: writes serialise on SQLite's write lock (BEGIN IMMEDIATE + busy timeout).
 * - The storage engine (SQLite) is an implementation detail: no SQLite type appears here. */
#ifndef BF_LEDGER_H
#define BF_LEDGER_H

#include <stddef.h>
#include <stdint.h>

#include "bf_money.h"
#include "bf_util.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct _bf_ledger_t bf_ledger_t;

typedef enum {
    BF_LEDGER_OK = 0,
    BF_LEDGER_EINTERNAL = -1,      /* storage failure; nothing recorded, the whole op rolled back */
    BF_LEDGER_EINVAL = -2,         /* malformed argument (negative amount, bad key, empty name...) */
    BF_LEDGER_ENOTFOUND = -3,      /* unknown user, task, account or hold */
    BF_LEDGER_EEXISTS = -4,        /* user name already registered */
    BF_LEDGER_EFUNDS = -5,         /* available balance too low */
    BF_LEDGER_ECONFLICT = -6,      /* op_id reused with different arguments */
    BF_LEDGER_ESTATE = -7,         /* illegal task state transition or task not in a usable state */
    BF_LEDGER_EPOSTED = -8,        /* hold already captured */
    BF_LEDGER_EVOIDED = -9,        /* hold already voided */
    BF_LEDGER_EEXPIRED = -10,      /* hold expired (or already expired by the sweep) */
    BF_LEDGER_EEXCEEDS_HOLD = -11, /* capture larger than the hold */
    BF_LEDGER_EOVERFLOW = -12,     /* an amount or counter would overflow int64 */
    BF_LEDGER_EBUSY = -13,         /* database write lock not obtained within the busy timeout */
} bf_ledger_rc_t;

/* Symbolic name of a return code ("EFUNDS"), for logs and JSON. */
const char *bf_ledger_rc_name(int rc);

typedef enum { BF_LEDGER_CNY = 1, BF_LEDGER_COIN = 2 } bf_ledger_currency_t;
typedef enum { BF_LEDGER_MODE_REWARD = 1, BF_LEDGER_MODE_SHAREHOLDING = 2 } bf_ledger_mode_t;
typedef enum {
    BF_LEDGER_TASK_CREATED = 1,
    BF_LEDGER_TASK_RUNNING = 2,
    BF_LEDGER_TASK_COMPLETED = 3,
    BF_LEDGER_TASK_REFUNDED = 4,
} bf_ledger_task_status_t;
typedef enum {
    BF_LEDGER_HOLD_PENDING = 1,
    BF_LEDGER_HOLD_CAPTURED = 2,
    BF_LEDGER_HOLD_VOIDED = 3,
    BF_LEDGER_HOLD_EXPIRED = 4,
} bf_ledger_hold_status_t;
typedef enum {
    BF_LEDGER_ACCT_USER_CASH = 1,
    BF_LEDGER_ACCT_USER_COIN = 2,
    BF_LEDGER_ACCT_TASK_ESCROW = 3,
    BF_LEDGER_ACCT_TASK_CLEARING = 4, /* transit account of a task's captured usage fees */
    BF_LEDGER_ACCT_PLATFORM_EXTERNAL = 5,
    BF_LEDGER_ACCT_PLATFORM_REVENUE = 6,
} bf_ledger_account_kind_t;

#define BF_LEDGER_REGISTER_COINS 100 /* coins granted to every new user */
#define BF_LEDGER_COINS_PER_BLOCK 10 /* price of one data block */
#define BF_LEDGER_PPM 1000000        /* shares are parts per million */
#define BF_LEDGER_OP_ID_MAX 128

/* Scale of a currency: 2 for CNY, 0 for COIN. */
int bf_ledger_currency_scale(bf_ledger_currency_t c);

/* ---- Lifetime ------------------------------------------------------------------------------ */

/* Opens (creating if needed) the ledger database at path and migrates its schema forward. */
bf_ledger_t *bf_ledger_open(const char *path, bf_err_t *err);
/* A coordinator home's ledger file may instead name a PostgreSQL ledger: a file whose one line is a
 * postgresql:// (or postgres://) URL. bf_ledger_open(path) then opens that database, so every
 * component that opens HOME/ledger.db follows the home's choice. bf_ledger_redirect_write writes
 * such a file at path (mode 0600: the URL may hold a password; atomically, by rename). */
int bf_ledger_redirect_write(const char *path, const char *url, bf_err_t *err);
/* What bf_ledger_open(path) would open, into out: the URL a redirect names (returns 1), else path
 * itself (0); -1 if path is a malformed redirect. */
int bf_ledger_location(const char *path, char *out, size_t cap, bf_err_t *err);
/* Closes the handle (rolling back an open group) and sets *self_p to NULL. NULL-safe. */
void bf_ledger_close(bf_ledger_t **self_p);
/* Replaces the wall clock (unix seconds) used for timestamps and hold expiry; NULL restores
 * time(NULL). Tests use this to make expiry deterministic. */
void bf_ledger_set_clock(bf_ledger_t *self, int64_t (*now)(void *ctx), void *ctx);
/* Schema version of the open database (SQLite user_version). */
int bf_ledger_schema_version(bf_ledger_t *self);

/* ---- Group commit -------------------------------------------------------------------------- */

/* Opens one write transaction for many operations. Each operation inside still commits or rolls
 * back atomically on its own (a savepoint) and keeps its idempotency; nothing is durable until
 * bf_ledger_group_commit(). If an op returns BF_LEDGER_EINTERNAL inside a group, call
 * bf_ledger_group_rollback(). */
int bf_ledger_group_begin(bf_ledger_t *self, bf_err_t *err);
int bf_ledger_group_commit(bf_ledger_t *self, bf_err_t *err);
void bf_ledger_group_rollback(bf_ledger_t *self);

/* ---- Operations (each atomic, idempotent by op_id) ------------------------------------------ */

/* Registers a user: name (1..64 bytes, unique), CURVE public key (40 Z85 characters), optional
 * password (NULL: none; stored as PBKDF2-HMAC-SHA256 with a random salt). Grants
 * BF_LEDGER_REGISTER_COINS coins from the platform's external account. */
int bf_ledger_register_user(bf_ledger_t *self, const char *op_id, const char *name,
                            const char *curve_key, const char *password, int64_t *user_id,
                            bf_err_t *err);
/* 1 if password matches the user's stored hash, 0 if not (or no password set), <0 on error. */
int bf_ledger_check_password(bf_ledger_t *self, int64_t user_id, const char *password, bf_err_t *err);
/* Simulated top-up: moves `cents` > 0 from the platform's external CNY account to the user's cash. */
int bf_ledger_recharge(bf_ledger_t *self, const char *op_id, int64_t user_id, int64_t cents,
                       bf_err_t *err);
/* Buys `blocks` > 0 data blocks at BF_LEDGER_COINS_PER_BLOCK coins each (to platform revenue). */
int bf_ledger_spend_coins(bf_ledger_t *self, const char *op_id, int64_t user_id, int64_t blocks,
                          bf_err_t *err);
/* Sets the platform's cut of usage fees (ppm) for tasks created from now on (default 0). */
int bf_ledger_set_platform_fee(bf_ledger_t *self, const char *op_id, int64_t ppm, bf_err_t *err);

typedef struct {
    const char *name;          /* 1..128 bytes */
    bf_ledger_mode_t mode;     /* reward: pool escrowed now; shareholding: pool must be 0 */
    int64_t reward_pool;       /* cents moved from the creator's cash into the task's escrow */
    int64_t usage_fee;         /* cents per paid prediction (informational for the coordinator) */
} bf_ledger_task_spec_t;

/* Creates a task in state CREATED; a reward task's pool moves creator cash -> escrow atomically. */
int bf_ledger_create_task(bf_ledger_t *self, const char *op_id, int64_t creator_id,
                          const bf_ledger_task_spec_t *spec, int64_t *task_id, bf_err_t *err);
/* CREATED -> RUNNING. */
int bf_ledger_start_task(bf_ledger_t *self, const char *op_id, int64_t task_id, bf_err_t *err);
/* Records that a user takes part in a task (CREATED or RUNNING). */
int bf_ledger_join_task(bf_ledger_t *self, const char *op_id, int64_t task_id, int64_t user_id,
                        bf_err_t *err);
/* CREATED|RUNNING -> REFUNDED; the whole escrow returns to the creator. */
int bf_ledger_refund_task(bf_ledger_t *self, const char *op_id, int64_t task_id, bf_err_t *err);
/* Reward task RUNNING -> COMPLETED: the escrowed pool is split over users by integer weights with
 * bf_money_split (ties to the smaller cash account id) and paid out. result_hash may be NULL. */
int bf_ledger_settle_reward(bf_ledger_t *self, const char *op_id, int64_t task_id, size_t n,
                            const int64_t *user_ids, const int64_t *weights, const char *result_hash,
                            bf_err_t *err);
/* Shareholding task RUNNING -> COMPLETED: 1,000,000 ppm split over users by integer weights. The
 * model starts offline. */
int bf_ledger_allocate_shares(bf_ledger_t *self, const char *op_id, int64_t task_id, size_t n,
                              const int64_t *user_ids, const int64_t *weights,
                              const char *result_hash, bf_err_t *err);
/* Model status of a completed shareholding task: online (1) accepts paid predictions. */
int bf_ledger_set_model_online(bf_ledger_t *self, const char *op_id, int64_t task_id, int online,
                               bf_err_t *err);

/* Paid predictions. Hold: a pending transfer of `amount` > 0 cents from the payer's cash (reducing
 * its available balance), optionally expiring `timeout_s` seconds from now (0: never). */
int bf_ledger_fee_hold(bf_ledger_t *self, const char *op_id, int64_t task_id, int64_t payer_id,
                       int64_t amount, int64_t timeout_s, int64_t *hold_id, bf_err_t *err);
/* Capture 0 <= amount <= held (the rest is released) and pay it out to the task's shareholders
 * (and the platform cut) by cumulative entitlement, all in one transaction. */
int bf_ledger_fee_capture(bf_ledger_t *self, const char *op_id, int64_t hold_id, int64_t amount,
                          bf_err_t *err);
/* Releases the whole hold. */
int bf_ledger_fee_void(bf_ledger_t *self, const char *op_id, int64_t hold_id, bf_err_t *err);
/* What a paid request produced, stored on its usage record by bf_ledger_fee_settle. */
#define BF_LEDGER_NOTE_MAX (1u << 20) /* bytes of result */
typedef struct {
    int64_t images;      /* units asked for (e.g. images in the request) */
    int64_t classified;  /* units delivered and charged for, <= images */
    const void *result;  /* opaque record of the outcome (the coordinator: its reply's results) */
    size_t result_len;   /* <= BF_LEDGER_NOTE_MAX; 0 for none */
} bf_ledger_usage_note_t;

/* Resolves a hold and writes its usage record in one operation: amount > 0 captures `amount`
 * (<= held) and pays it out exactly like bf_ledger_fee_capture; amount == 0 voids the hold. The
 * note (required) is part of the idempotency fingerprint. */
int bf_ledger_fee_settle(bf_ledger_t *self, const char *op_id, int64_t hold_id, int64_t amount,
                         const bf_ledger_usage_note_t *note, bf_err_t *err);
/* The note of a usage record: *result is a malloc'ed copy (NULL and *len 0 when none was
 * written); any out pointer may be NULL. */
int bf_ledger_usage_note(bf_ledger_t *self, int64_t hold_id, int64_t *images, int64_t *classified,
                         void **result, size_t *len, bf_err_t *err);
/* Hold, capture and payout as one operation (one op_id, one transaction). */
int bf_ledger_fee_charge(bf_ledger_t *self, const char *op_id, int64_t task_id, int64_t payer_id,
                         int64_t amount, int64_t *hold_id, bf_err_t *err);
/* Expires every pending hold whose expiry has passed (each as its own op "expire:<hold id>").
 * *n_expired may be NULL. */
int bf_ledger_sweep_expired(bf_ledger_t *self, int64_t *n_expired, bf_err_t *err);

/* ---- Withdrawals: money out, as a two-phase transfer ---------------------------------------- */

typedef enum {
    BF_LEDGER_WITHDRAWAL_PENDING = 1,  /* held on the user's cash, waiting for the operator */
    BF_LEDGER_WITHDRAWAL_PAID = 2,     /* posted: the money left to the platform's external account */
    BF_LEDGER_WITHDRAWAL_REJECTED = 3, /* voided: the hold released, the money stays with the user */
} bf_ledger_withdrawal_status_t;

#define BF_LEDGER_REF_MAX 100    /* bytes of an external payout reference */
#define BF_LEDGER_REASON_MAX 256 /* bytes of a rejection reason */

/* Asks to withdraw `cents` > 0: a pending transfer of that amount from the user's cash to the
 * platform's external account, taken from the available balance at once (EFUNDS if it is not
 * there). *withdrawal_id (may be NULL) gets the withdrawal's id. Idempotent on op_id. */
int bf_ledger_withdraw(bf_ledger_t *self, const char *op_id, int64_t user_id, int64_t cents,
                       int64_t *withdrawal_id, bf_err_t *err);
/* The operator paid withdrawal `id` outside the platform under external reference `ref`
 * (1..BF_LEDGER_REF_MAX printable bytes, no spaces): the hold is posted in full. The op id is
 * derived from ref ("wpay:REF"), so reporting a payment twice changes nothing, the same ref for
 * another withdrawal is ECONFLICT, and a withdrawal already paid (under another ref) is EPOSTED,
 * one already rejected EVOIDED. */
int bf_ledger_withdraw_payout(bf_ledger_t *self, int64_t id, const char *ref, bf_err_t *err);
/* The operator refuses withdrawal `id` for `reason` (1..BF_LEDGER_REASON_MAX bytes, no control
 * characters): the hold is voided. The op id is derived from the id and a hash of the reason, so
 * repeating it changes nothing; a withdrawal already paid is EPOSTED, already rejected (for
 * another reason) EVOIDED. */
int bf_ledger_withdraw_reject(bf_ledger_t *self, int64_t id, const char *reason, bf_err_t *err);

/* Outcome of an earlier op: BF_LEDGER_OK and *found=1 with its recorded rc and result (user id,
 * task id, hold id, captured amount...), or *found=0 if the op_id was never recorded. */
int bf_ledger_op_lookup(bf_ledger_t *self, const char *op_id, int *found, int *rc, int64_t *result,
                        bf_err_t *err);

/* ---- Queries ------------------------------------------------------------------------------- */

typedef struct {
    int64_t posted;          /* credits_posted - debits_posted */
    int64_t pending_debits;  /* held, not yet captured or released */
    int64_t pending_credits; /* incoming holds */
    int64_t available;       /* posted - pending_debits */
} bf_ledger_balance_t;

typedef struct {
    int64_t id;
    char name[65];
    char curve_key[41];
    bf_ledger_balance_t cash; /* cents */
    bf_ledger_balance_t coin; /* coins */
} bf_ledger_user_t;

typedef struct {
    int64_t id;
    bf_ledger_account_kind_t kind;
    bf_ledger_currency_t currency;
    int64_t owner; /* user id or task id; 0 for platform accounts */
    bf_ledger_balance_t balance;
} bf_ledger_account_t;

typedef struct {
    int64_t id;
    int64_t creator;
    char name[129];
    bf_ledger_mode_t mode;
    bf_ledger_task_status_t status;
    int model_online;
    int64_t usage_fee, reward_pool, total_revenue, platform_fee_ppm;
    int64_t escrow_balance;
    char result_hash[129];
} bf_ledger_task_t;

typedef struct {
    int64_t transfer_id;
    int64_t created_at;
    char op_id[BF_LEDGER_OP_ID_MAX + 1];
    const char *type; /* "posted", "pending", "post", "void", "expire" */
    const char *code; /* "register_bonus", "recharge", "spend_coins", "task_fund", ... */
    bf_ledger_currency_t currency;
    int64_t amount;   /* signed from the user's side: negative leaves the account */
    int64_t counterparty_account;
    int64_t balance_before, balance_after; /* posted balance of the user's account */
} bf_ledger_entry_t;

typedef struct {
    int64_t task_id, user_id;
    int64_t weight;   /* contribution weight the allocation was computed from */
    int64_t ppm;
    int64_t received; /* cumulative fee payouts, cents */
} bf_ledger_share_t;

typedef struct {
    int64_t hold_id, task_id, payer_id;
    int64_t held, captured;
    bf_ledger_hold_status_t status;
    int64_t created_at, expires_at;
} bf_ledger_usage_t;

typedef struct {
    int64_t transfer_id, usage_id, task_id, user_id; /* user_id 0: platform cut */
    int64_t amount, created_at;
} bf_ledger_revenue_t;

typedef struct {
    int64_t task_id, user_id, weight, amount, transfer_id;
} bf_ledger_reward_t;

typedef struct {
    int64_t task_id, user_id, joined_at;
} bf_ledger_participation_t;

typedef struct {
    int64_t id, user_id, amount;
    bf_ledger_withdrawal_status_t status;
    int64_t created_at, resolved_at;        /* resolved_at 0 while pending */
    int64_t hold_transfer, resolve_transfer; /* resolve_transfer 0 while pending */
    char external_ref[BF_LEDGER_REF_MAX + 1]; /* paid: the operator's reference */
    char reason[BF_LEDGER_REASON_MAX + 1];    /* rejected: why */
} bf_ledger_withdrawal_t;

/* A user's statement for one currency over [from, to) (unix seconds): every transfer touching the
 * account in that window in ledger order. Balances are the posted balance; `held` is what is
 * pending against the account (holds placed and not yet resolved). */
typedef struct {
    int64_t transfer_id, created_at;
    char op_id[BF_LEDGER_OP_ID_MAX + 1];
    const char *type, *code;
    int64_t amount;                        /* change of the posted balance: after - before */
    int64_t held;                          /* change of the held amount (+ hold placed, - released) */
    int64_t balance_before, balance_after; /* posted */
    int64_t held_before, held_after;
} bf_ledger_statement_line_t;

typedef struct {
    int64_t user_id, from, to;
    bf_ledger_currency_t currency;
    int64_t opening, opening_held; /* at `from` */
    int64_t closing, closing_held; /* at `to` (or now, if earlier) */
    size_t n;
    bf_ledger_statement_line_t *lines; /* malloc'ed; bf_ledger_statement_free */
} bf_ledger_statement_t;

/* Lists below are malloc'ed arrays the caller free()s; *n is the count (0 gives NULL). */
int bf_ledger_user_find(bf_ledger_t *self, const char *name, int64_t *user_id, bf_err_t *err);
/* The user who registered with CURVE key curve_key (40 Z85 characters): ENOTFOUND if none. */
int bf_ledger_user_find_key(bf_ledger_t *self, const char *curve_key, int64_t *user_id, bf_err_t *err);
int bf_ledger_user_get(bf_ledger_t *self, int64_t user_id, bf_ledger_user_t *out, bf_err_t *err);
int bf_ledger_users(bf_ledger_t *self, bf_ledger_user_t **out, size_t *n, bf_err_t *err);
int bf_ledger_balance(bf_ledger_t *self, int64_t user_id, bf_ledger_currency_t currency,
                      bf_ledger_balance_t *out, bf_err_t *err);
int bf_ledger_accounts(bf_ledger_t *self, bf_ledger_account_t **out, size_t *n, bf_err_t *err);
int bf_ledger_task_get(bf_ledger_t *self, int64_t task_id, bf_ledger_task_t *out, bf_err_t *err);
int bf_ledger_history(bf_ledger_t *self, int64_t user_id, bf_ledger_entry_t **out, size_t *n,
                      bf_err_t *err);
int bf_ledger_task_shares(bf_ledger_t *self, int64_t task_id, bf_ledger_share_t **out, size_t *n,
                          bf_err_t *err);
int bf_ledger_user_shares(bf_ledger_t *self, int64_t user_id, bf_ledger_share_t **out, size_t *n,
                          bf_err_t *err);
int bf_ledger_hold_get(bf_ledger_t *self, int64_t hold_id, bf_ledger_usage_t *out, bf_err_t *err);
int bf_ledger_usage(bf_ledger_t *self, int64_t task_id, bf_ledger_usage_t **out, size_t *n,
                    bf_err_t *err);
/* Revenue payouts of a task (task_id > 0) or received by a user (user_id > 0). */
int bf_ledger_revenues(bf_ledger_t *self, int64_t task_id, int64_t user_id,
                       bf_ledger_revenue_t **out, size_t *n, bf_err_t *err);
int bf_ledger_rewards(bf_ledger_t *self, int64_t task_id, int64_t user_id, bf_ledger_reward_t **out,
                      size_t *n, bf_err_t *err);
int bf_ledger_participations(bf_ledger_t *self, int64_t task_id, int64_t user_id,
                             bf_ledger_participation_t **out, size_t *n, bf_err_t *err);

/* Withdrawals in a state (0: any) of a user (0: any), oldest first. */
int bf_ledger_withdrawals(bf_ledger_t *self, int status, int64_t user_id, bf_ledger_withdrawal_t **out,
                          size_t *n, bf_err_t *err);
int bf_ledger_withdrawal_get(bf_ledger_t *self, int64_t id, bf_ledger_withdrawal_t *out, bf_err_t *err);
/* Fills *out (lines malloc'ed) for user and currency over [from, to); opening + the sum of the
 * lines' amounts == closing, likewise for held. ENOTFOUND for an unknown user, EINVAL if to < from. */
int bf_ledger_statement(bf_ledger_t *self, int64_t user_id, bf_ledger_currency_t currency, int64_t from,
                        int64_t to, bf_ledger_statement_t *out, bf_err_t *err);
void bf_ledger_statement_free(bf_ledger_statement_t *st);

/* ---- Verification -------------------------------------------------------------------------- */

typedef enum {
    BF_LEDGER_CHECK_INTEGRITY,    /* PRAGMA integrity_check + foreign_key_check */
    BF_LEDGER_CHECK_CHAIN,        /* ids gapless, every hash = SHA-256(prev || encoding) */
    BF_LEDGER_CHECK_BALANCES,     /* cached counters == replayed; before/after fields consistent */
    BF_LEDGER_CHECK_DOUBLE_ENTRY, /* per currency: sum debits == sum credits (posted and pending) */
    BF_LEDGER_CHECK_ESCROW,       /* escrow == funding while created/running, 0 after */
    BF_LEDGER_CHECK_SHARES,       /* ppm sum to 1,000,000 per completed shareholding task */
    BF_LEDGER_CHECK_NONNEGATIVE,  /* no user/escrow/clearing/revenue account below zero */
    BF_LEDGER_CHECK_HOLDS,        /* each hold resolved at most once, capture <= hold, pending sums */
    BF_LEDGER_CHECK_PAYOUTS,      /* payouts == captured; each holder within one cent of entitlement */
    BF_LEDGER_CHECK_REWARDS,      /* reward payouts sum to the pool of every settled reward task */
    BF_LEDGER_CHECK_WITHDRAWALS,  /* each withdrawal is one hold on its user's cash, resolved as its
                                     status says (paid: posted in full under its ref; rejected: void) */
    BF_LEDGER_CHECK_COUNT
} bf_ledger_check_t;

typedef struct {
    const char *name;  /* "chain", "balances", ... */
    int ok;
    int64_t failures;  /* number of violations found */
    char detail[256];  /* first violation, or empty */
} bf_ledger_check_result_t;

typedef struct {
    int ok; /* every check passed */
    int64_t transfers, accounts, users, tasks, holds_pending, withdrawals_pending;
    char head_hash[65]; /* hash of the last transfer (hex), "" if none */
    bf_ledger_check_result_t checks[BF_LEDGER_CHECK_COUNT];
} bf_ledger_report_t;

/* Replays the whole ledger and fills rep. Returns 0 if the replay ran (rep->ok tells whether every
 * invariant holds), -1 if it could not run (err says why). */
int bf_ledger_verify(bf_ledger_t *self, bf_ledger_report_t *rep, bf_err_t *err);

#ifdef __cplusplus
}
#endif
#endif

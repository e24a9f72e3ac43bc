/* bf_conn.h: the participant's connection to the coordinator: one DEALER socket (CURVE by
 * default), request/reply with ids, Lazy-Pirate retries, and a heartbeat actor for long rounds.
 *
 * @discuss
 * Ids: every request leaves with the next id of a per-connection counter starting at 1,
 * whatever id it was built with (the header is re-packed on the wire). A reply whose id is not
 * the one we are waiting for is a leftover of an earlier, timed-out request and is discarded
 * (docs/PROTOCOL.md section 8). An ERROR with id 0 (the coordinator could not read our id, e.g.
 * TOO_LARGE) is taken as the answer, since we have one request outstanding at a time.
 *
 * Lazy Pirate (zguide ch. 4): a DEALER that lost its peer keeps queueing, and a reply may never
 * come; so on a timeout bf_conn_call closes the socket, waits (1 s doubling up to 30 s by
 * default), opens a new one and sends the same request again. Only idempotent requests may be
 * retried this way: a money-moving request is, because it carries its `request` key
 * (bf_conn_request_key) and the coordinator applies a key once.
 *
 * Every reply goes through bf_msg_decode: a coordinator that sends garbage gets an error, never
 * a crash. Replies of a request type are refused too.
 *
 * Instances are owned by one thread (czmq CLASS rules); the heartbeat actor has its own socket. */
#ifndef BF_CONN_H
#define BF_CONN_H

#include <czmq.h>

#include "bf_proto.h"
#include "bf_util.h"

typedef struct bf_conn bf_conn_t;

typedef enum {
    BF_CONN_OK,
    BF_CONN_TIMEOUT,     /* no reply within the time limit (after every retry) */
    BF_CONN_INTERRUPTED, /* SIGINT/SIGTERM (zsys_interrupted) */
    BF_CONN_BAD_REPLY,   /* the coordinator sent something invalid */
    BF_CONN_ERROR        /* local failure (encoding, socket) */
} bf_conn_status_t;

/* A connection to endpoint. With cert (the participant's key pair, duplicated) and server_key
 * (40-char Z85) it uses CURVE. insecure = 1 means plain TCP: cert and server_key are ignored,
 * the endpoint must be loopback (else NULL with err set), and a warning goes to stderr. */
bf_conn_t *bf_conn_new(const char *endpoint, const char *server_key, zcert_t *cert, int insecure, bf_err_t *err);
void bf_conn_destroy(bf_conn_t **p);

/* Lazy-Pirate backoff between attempts (default 1000 ms doubling to 30000 ms). */
void bf_conn_set_backoff(bf_conn_t *c, int initial_ms, int max_ms);
/* Heartbeat interval (default 5000 ms) and the silence after which its socket is rebuilt
 * (default 30000 ms); call before bf_conn_heartbeat_start. */
void bf_conn_set_heartbeat(bf_conn_t *c, int interval_ms, int timeout_ms);

/* Sends *req (consumed: destroyed and set to NULL) with the next id and waits up to timeout_ms
 * for its reply. Returns the decoded reply (caller destroys) or NULL with *err set and
 * bf_conn_status telling why. */
bf_msg_t *bf_conn_request(bf_conn_t *c, bf_msg_t **req, int timeout_ms, bf_err_t *err);
/* bf_conn_request with up to `retries` further attempts, each on a fresh socket after the
 * backoff (Lazy Pirate). For idempotent requests only. */
bf_msg_t *bf_conn_call(bf_conn_t *c, bf_msg_t **req, int timeout_ms, int retries, bf_err_t *err);

bf_conn_status_t bf_conn_status(const bf_conn_t *c);
/* Closes the socket and opens a new one (no waiting). */
int bf_conn_reconnect(bf_conn_t *c, bf_err_t *err);
/* How many times the socket was rebuilt; callers that keep session state (HELLO) compare it. */
int bf_conn_reconnects(const bf_conn_t *c);
/* Replies discarded because their id was not the one awaited. */
int bf_conn_discarded(const bf_conn_t *c);
/* The id the last request went out with. */
uint64_t bf_conn_last_id(const bf_conn_t *c);
const char *bf_conn_endpoint(const bf_conn_t *c);

/* Starts/stops a background actor with its own DEALER socket (same key pair) that sends PING
 * every interval and expects PONG, so the coordinator sees the participant alive while a round
 * trains. Start is a no-op if already running; stop is idempotent. */
int bf_conn_heartbeat_start(bf_conn_t *c, bf_err_t *err);
void bf_conn_heartbeat_stop(bf_conn_t *c);
/* PONGs the heartbeat actor received so far (asks the actor; 0 when it is not running). */
int bf_conn_heartbeat_pongs(bf_conn_t *c);

/* A fresh `request` key for a money-moving request (RECHARGE, BLOCKS_BUY, TASK_CREATE, PREDICT):
 * 64 lowercase hex characters from OpenSSL's RAND. The coordinator applies one key once, so a
 * command draws one key and sends it again only when it retries that same request. */
int bf_conn_request_key(char out[65], bf_err_t *err);

/* Sleeps ms in small slices; -1 as soon as zsys_interrupted is set. */
int bf_conn_nap(int ms);

#endif

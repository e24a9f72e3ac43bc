/* bf_proto.h: the BlockFed wire protocol: build, encode, decode and validate messages.
 *
 * @header
 * A message is one msgpack header frame, a map {v: 1, type: STR, id: UINT64, ...fields}, followed
 * by zero or more raw payload frames (little-endian float32 tensors, data-block bytes, image or
 * model file bytes). Every type has a fixed schema (proto.c, `schemas[]`, documented in
 * docs/PROTOCOL.md): field kinds, ranges, string lengths and charsets, and the number and kind of
 * payload frames. Unknown fields, unknown types, duplicate keys, NUL bytes or invalid UTF-8 in
 * strings, non-finite floats and frames of the wrong count or size are all rejected.
 *
 * @discuss
 * Decoding untrusted bytes runs in this order, so that nothing is allocated from a count the
 * sender declared before that count is checked against bytes actually present:
 *   1. frame count (<= BF_PROTO_MAX_FRAMES) and sizes (header <= BF_PROTO_MAX_HEADER, payload
 *      frames <= BF_PROTO_MAX_FRAME)                                  -> TOO_LARGE
 *   2. bf_mp_parse on the header (depth <= 8, <= 100,000 objects)      -> BAD_REQUEST
 *   3. v == 1, id is a uint64, type is known                           -> BAD_REQUEST / UNKNOWN_TYPE
 *   4. every field against the schema, then the payload frames         -> BAD_REQUEST
 * bf_msg_encode runs the very same checks on what it is about to send: we never send what we
 * would reject. Setters check their value immediately too; the first setter failure is kept in
 * the message and reported by bf_msg_encode, so a caller may chain setters and check once.
 *
 * Direction: one decoder serves both sides. A coordinator must also refuse replies sent as
 * requests: `if (!bf_proto_is_request(bf_msg_type(m))) -> ERROR UNKNOWN_TYPE`.
 *
 * Transport (see docs/PROTOCOL.md): clients use a DEALER, the coordinator a ROUTER, no empty
 * delimiter frame. A ROUTER receives [routing-id, header, payload...]: pop the routing-id frame
 * before bf_msg_decode and push it back before sending the reply (zmsg_prepend).
 *
 * Identity under CURVE (libzmq 4.3.4 / czmq 4.2.1; tests/unit/test_proto_curve.c checks it):
 * libzmq copies the User-Id of the ZAP reply onto the frames received on that connection and
 * zframe_meta(frame, "User-Id") reads it. Two catches:
 *   1. Which handler: czmq zauth with "CURVE" + CURVE_ALLOW_ANY accepts every key but replies
 *      with an EMPTY User-Id, so clients cannot be told apart; zauth with a certificate
 *      directory sets User-Id to the client's Z85 key but only admits keys already on disk, so a
 *      new user could never REGISTER. bf_proto_zap_new() (below) accepts every CURVE key and
 *      sets User-Id to its Z85 text (40 characters, equal to zcert_public_txt of the client's
 *      certificate). The coordinator runs it instead of zauth, with
 *      zsock_set_zap_domain(router, "global"); authorization (which key may act for which
 *      account) is the ledger's job, not ZAP's.
 *   2. Which frame: a ROUTER's routing-id frame carries the metadata only if zmsg_recv was not
 *      preceded by a poll (zpoller/zloop make libzmq prefetch the message and the routing-id
 *      frame then has none). The payload frames always carry it. bf_msg_decode therefore reads
 *      User-Id from the header frame and keeps it: bf_msg_user_id(m).
 * Without CURVE (--insecure, NULL mechanism) there is no key: User-Id is empty or absent and
 * bf_msg_user_id returns NULL.
 *
 * Coordinator receive path, in short:
 *     zmsg_t *z = zmsg_recv(router);
 *     zframe_t *rid = zmsg_pop(z);                       // routing id, kept for the reply
 *     bf_proto_reject_t rej; bf_err_t err;
 *     bf_msg_t *req = bf_msg_decode(&z, &rej, &err);     // z is consumed either way
 *     bf_msg_t *rep = !req ? bf_msg_error_reject(&rej, &err)
 *                   : !bf_proto_is_request(bf_msg_type(req)) ? bf_msg_error(bf_msg_id(req), BF_PROTO_UNKNOWN_TYPE, "...")
 *                   : handle(req, bf_msg_user_id(req));   // reply built with bf_msg_new(TYPE, bf_msg_id(req))
 *     zmsg_t *out = bf_msg_encode(rep, &err);            // NULL: a bug in handle(); send INTERNAL instead
 *     zmsg_prepend(out, &rid); zmsg_send(&out, router);
 *
 * Type names are unique across both directions, so ASSETS and HISTORY are the replies; their
 * requests are ASSETS_GET and HISTORY_GET (like MODEL_GET -> MODEL, ROUND_GET -> ROUND).
 *
 * Payload frames: floats travel as little-endian IEEE-754 binary32; frame data is not aligned,
 * so use bf_msg_add_f32 / bf_msg_frame_f32 (memcpy + byte order) rather than casting.
 *
 * Instances are not thread-safe; each is owned by one thread (czmq CLASS rules). Nothing here
 * keeps global mutable state.
 */
#ifndef BF_PROTO_H
#define BF_PROTO_H

#include <czmq.h>
#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

#include "bf_util.h"

#define BF_PROTO_VERSION 1
#define BF_PROTO_MAX_HEADER (64u << 10)  /* bytes in the msgpack header frame */
#define BF_PROTO_MAX_FRAME (64u << 20)   /* bytes in one payload frame */
#define BF_PROTO_MAX_FRAMES 66           /* frames per message, header included */
#define BF_PROTO_MAX_DEPTH 8             /* msgpack nesting depth of the header (the map is level 1) */
#define BF_PROTO_MAX_OBJECTS 100000      /* msgpack objects in the header */
#define BF_PROTO_MAX_IMAGE (16u << 20)   /* bytes of one encoded image in PREDICT */
#define BF_PROTO_MAX_MESSAGE (128u << 20) /* payload bytes of one whole message (two full frames) */

/* ERROR codes. On the wire they travel as their names (bf_proto_code_name). */
typedef enum {
    BF_PROTO_BAD_REQUEST,        /* malformed header, field of the wrong kind/range, bad frames */
    BF_PROTO_UNKNOWN_TYPE,       /* type not in the schema table (or a reply sent as a request) */
    BF_PROTO_UNAUTHORIZED,       /* no registered account for this CURVE key */
    BF_PROTO_FORBIDDEN,          /* the account may not do this (e.g. cancel someone else's task) */
    BF_PROTO_NOT_FOUND,          /* no such task / block / model */
    BF_PROTO_CONFLICT,           /* already exists (name taken, already joined, ...) */
    BF_PROTO_INSUFFICIENT_FUNDS, /* the ledger refused for lack of balance */
    BF_PROTO_STALE,              /* update for a round that is closed or was already accepted */
    BF_PROTO_TOO_LARGE,          /* frame count or a frame size over the limits */
    BF_PROTO_BAD_STATE,          /* valid request, wrong moment (task not running, not joined) */
    BF_PROTO_RATE_LIMITED,       /* too many requests / too much garbage from this peer */
    BF_PROTO_INTERNAL,           /* the coordinator failed; the request may be retried */
    BF_PROTO_LIMIT,              /* over a documented limit (a daily recharge cap, an amount too large) */
    BF_PROTO_CODE_COUNT
} bf_proto_code_t;

/* "BAD_REQUEST", ...; "INTERNAL" for an out-of-range value. */
const char *bf_proto_code_name(bf_proto_code_t code);
/* The code with that name, or -1 when the name is unknown (a newer peer may send new codes). */
int bf_proto_code_parse(const char *name);

/* Why bf_msg_decode refused a message: the ERROR code to answer with and, when the header got
 * far enough to contain a valid id, that id so the ERROR reply can echo it (has_id = 1). */
typedef struct {
    bf_proto_code_t code;
    uint64_t id;
    int has_id;
} bf_proto_reject_t;

typedef struct bf_msg bf_msg_t;

/* ---- building ---------------------------------------------------------------------------- */

/* A message of a type from the schema table ("HELLO", "UPDATE", ...); NULL if the type is unknown
 * or memory runs out. */
bf_msg_t *bf_msg_new(const char *type, uint64_t id);
/* Frees the message and its frames; sets *p to NULL. Idempotent; p or *p may be NULL. */
void bf_msg_destroy(bf_msg_t **p);

const char *bf_msg_type(const bf_msg_t *m);
uint64_t bf_msg_id(const bf_msg_t *m);
/* The ZAP User-Id (with bf_proto_zap: the client's 40-character Z85 CURVE public key) of the
 * connection a message decoded by bf_msg_decode arrived on; NULL if empty, absent, or the
 * message was built or came from bf_msg_decode_bytes. This, never a name inside the message, is
 * who sent it. */
const char *bf_msg_user_id(const bf_msg_t *m);

/* Setters: 0, or -1 if key is not a field of this type, the kind does not match, or the value
 * breaks the field's rule (length, charset, range, finiteness). set_uint and set_int are
 * interchangeable on uint and int fields when the value fits. Setting a field twice replaces it. */
int bf_msg_set_str(bf_msg_t *m, const char *key, const char *v);
int bf_msg_set_uint(bf_msg_t *m, const char *key, uint64_t v);
int bf_msg_set_int(bf_msg_t *m, const char *key, int64_t v);
int bf_msg_set_double(bf_msg_t *m, const char *key, double v);
int bf_msg_set_bool(bf_msg_t *m, const char *key, int v);
/* An "any" field from one pre-packed msgpack value (checked by bf_mp_parse, copied). */
int bf_msg_set_any(bf_msg_t *m, const char *key, const void *msgpack_bytes, size_t len);
/* Removes a field (optional ones); 0 if it was present, -1 otherwise. */
int bf_msg_unset(bf_msg_t *m, const char *key);

/* Payload frames, appended in order. -1 if the type takes no more frames, len exceeds
 * BF_PROTO_MAX_FRAME, or (f32 frames) len is not a multiple of 4. add_frame copies data;
 * add_frame_owned takes ownership of a malloc'ed buffer (freed with free(), also on failure). */
int bf_msg_add_frame(bf_msg_t *m, const void *data, size_t len);
int bf_msg_add_frame_owned(bf_msg_t *m, void *data, size_t len);
/* n floats as one little-endian f32 frame (copies). */
int bf_msg_add_f32(bf_msg_t *m, const float *v, size_t n);
/* A frame over memory shared with others (zero-copy: one encoded model sent to many peers). m
 * does not copy data; release(data, hint) is called exactly once when m no longer needs it (on
 * destroy, at once if the frame is refused, or by whoever took it with bf_msg_frame_take). */
typedef void(bf_msg_free_fn)(void *data, void *hint);
int bf_msg_add_frame_ref(bf_msg_t *m, const void *data, size_t len, bf_msg_free_fn *release, void *hint);
/* Hands frame i's buffer to the caller for a zero-copy send (zmq_msg_init_data takes exactly
 * this pair): the caller must call (*release)(*data, *hint) once. The frame keeps its length
 * (bf_msg_encode_header still works) but has no data any more: take frames after encoding the
 * header. -1 if i is out of range or memory runs out. */
int bf_msg_frame_take(bf_msg_t *m, size_t i, void **data, size_t *len, bf_msg_free_fn **release, void **hint);

/* ---- reading (a decoded, validated message, or one being built) --------------------------- */

int bf_msg_has(const bf_msg_t *m, const char *key);
/* NUL-terminated copy owned by m (valid until the field changes or m is destroyed); NULL if
 * absent or not a str field. */
const char *bf_msg_str(const bf_msg_t *m, const char *key);
/* The value, or dflt if absent or of another kind (uint/int convert when the value fits). */
uint64_t bf_msg_uint(const bf_msg_t *m, const char *key, uint64_t dflt);
int64_t bf_msg_int(const bf_msg_t *m, const char *key, int64_t dflt);
double bf_msg_double(const bf_msg_t *m, const char *key, double dflt);
int bf_msg_bool(const bf_msg_t *m, const char *key, int dflt);
/* An "any" field, owned by m; NULL if absent. Its str/bin bodies are not NUL-terminated. */
const msgpack_object *bf_msg_any(const bf_msg_t *m, const char *key);

size_t bf_msg_frame_count(const bf_msg_t *m);
/* Frame i (owned by m, not aligned), its size in *len (len may be NULL); NULL if i is out of
 * range. A zero-length frame returns a non-NULL pointer. */
const uint8_t *bf_msg_frame(const bf_msg_t *m, size_t i, size_t *len);
/* Frame i as floats: 0 and n floats in out if the frame holds exactly 4*n bytes, else -1. */
int bf_msg_frame_f32(const bf_msg_t *m, size_t i, float *out, size_t n);

/* ---- wire --------------------------------------------------------------------------------- */

/* The message as [header, payload...] (payload copied), after the full validation decode
 * applies; NULL with *err set if it fails (including an earlier failed setter). */
zmsg_t *bf_msg_encode(const bf_msg_t *m, bf_err_t *err);
/* Just the header frame bytes (malloc'ed, *len set), same validation; for tests and non-czmq
 * transports. */
uint8_t *bf_msg_encode_header(const bf_msg_t *m, size_t *len, bf_err_t *err);

/* Decodes and validates [header, payload...]. Always consumes *zm (destroys it, sets it to
 * NULL); payload frames are kept without copying. NULL on rejection: *err holds a message fit
 * for an ERROR reply, *rej (may be NULL) the code and, if known, the request id. */
bf_msg_t *bf_msg_decode(zmsg_t **zm, bf_proto_reject_t *rej, bf_err_t *err);
/* The same validation on plain buffers (copied), without czmq frames; used by the fuzzer. */
bf_msg_t *bf_msg_decode_bytes(const uint8_t *header, size_t hlen, const uint8_t *const *frames,
                              const size_t *flens, size_t nframes, bf_proto_reject_t *rej, bf_err_t *err);

/* An ERROR reply {code, message}. The message is printf-formatted, cut to 512 bytes at a UTF-8
 * boundary, and any byte that is not valid UTF-8 (or a control character other than tab) is
 * replaced by '?', so it never fails validation. NULL only if memory runs out. */
bf_msg_t *bf_msg_error(uint64_t id, bf_proto_code_t code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The ERROR reply for a rejected decode (echoes rej->id when known, else id 0). */
bf_msg_t *bf_msg_error_reject(const bf_proto_reject_t *rej, const bf_err_t *err);

/* The most payload bytes (all frames after the header) a message of the type named in this
 * header may carry: frames allowed x the per-frame cap of the type, at most BF_PROTO_MAX_MESSAGE;
 * 0 for a type without payload frames or a header that does not parse. For a receiver that reads
 * a message frame by frame and stops keeping frames once the cap is passed. */
size_t bf_proto_max_payload(const uint8_t *header, size_t hlen);

/* 1 for a request type (client -> coordinator), 0 for a reply type or an unknown name. */
int bf_proto_is_request(const char *type);
/* 1 if type names a message in the schema table. */
int bf_proto_is_type(const char *type);

/* ---- ZAP handler (zap.c) ------------------------------------------------------------------ */

/* A ZAP (RFC 27) handler actor on inproc://zeromq.zap.01 for this process's czmq context: every
 * CURVE client is accepted with User-Id = its Z85 public key, unless that key was denied;
 * NULL-mechanism clients are accepted with an empty User-Id; PLAIN and others are refused (400).
 * NULL with *err set if the endpoint is taken (one ZAP handler per context: do not run zauth at
 * the same time). It serves until zactor_destroy, also after SIGINT/SIGTERM.
 *
 * Pipe protocol (what bf_proto_zap_deny and zactor_destroy send; czmq zauth's conventions):
 *   "DENY" KEY  -> the actor adds KEY (40 Z85 characters; a key of another length is not
 *                  added) to its refused set, then answers with zsock_signal(pipe, 0); the
 *                  sender waits for that with zsock_wait.
 *   "$TERM"     -> the actor ends (zactor_destroy sends it and waits).
 * Any other command is ignored and not answered. One ZAP request costs one hash lookup; the
 * refused set lives as long as the actor (it is not persisted). */
zactor_t *bf_proto_zap_new(bf_err_t *err);

/* Refuses every future connection (CURVE handshake) by this Z85 public key: the coordinator's
 * answer to a peer that keeps sending garbage. Returns once the handler has acknowledged, so a
 * handshake that starts after the return is refused. Connections already open are not affected.
 * Does nothing when zap or key is NULL or key is not 40 characters. Blocks for one inproc round
 * trip; call it from the thread that owns the actor. */
void bf_proto_zap_deny(zactor_t *zap, const char *key);

#endif

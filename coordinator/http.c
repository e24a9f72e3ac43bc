/* http.c: the HTTPS API (docs/HTTP_API.md), served by libmicrohttpd with TLS (GnuTLS inside
 * libmicrohttpd; the certificate and key are PEM files, by default the ones `init` writes with
 * OpenSSL). One thread per connection, at most HTTP_MAX_CONNS of them, each idle connection closed
 * after HTTP_IDLE_S.
 *
 * One behaviour, two transports: a route turns its HTTP request into the wire request the CLI
 * would send (bf_msg_t), sends it to the socket thread on the HTTP bridge (COORD_HTTP_BRIDGE) with
 * the CURVE key of the account the caller's credential resolved to, and turns the reply into
 * JSON. Validation, ledger operations and op ids are the ZeroMQ handlers' own (handlers.c); what
 * is here is HTTP: routing, credentials (webauth.h), body caps, JSON and multipart parsing, the
 * event stream, security headers and the error mapping. Replies are built in one place
 * (respond()). */
#include <arpa/inet.h>
#include <math.h>
#include <stdarg.h>
#include <strings.h>
#include <cjson/cJSON.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bf_money.h"
#include "bf_mp.h"
#include "bf_text.h"
#include "coord.h"
#include "openapi_json.h"
#include "pages.h"

#define HTTP_MAX_CONNS 128          /* connections (threads) at once */
#define HTTP_MAX_CONNS_PER_IP 32
#define HTTP_IDLE_S 30              /* an idle or stalled connection is closed after this */
#define HTTP_BODY_S 120             /* a body still arriving this long after its headers: closed */
#define HTTP_REPLY_MS 30000         /* the socket thread's answer is waited for this long */
#define HTTP_INFLIGHT_PER_USER 16   /* requests one account may have in flight; more: 429 */
#define HTTP_JSON_MAX (64u << 10)   /* a JSON body */
#define HTTP_UPLOAD_MAX (96u << 20) /* a prediction upload, multipart framing included */
#define HTTP_EVENTS_POLL_MS 1000    /* the event stream reads the task's status this often */
#define HTTP_KEEPALIVE_S 15         /* and sends a comment when nothing happened for this long */
#define HTTP_PREDICT_MAX 64         /* images per paid prediction (BF_PREDICT_MAX_IMAGES) */
#define HTTP_DISCARD_MAX (1u << 20) /* body bytes read and dropped after an early refusal */
#define COOKIE "bf_session"

struct coord_http {
    struct MHD_Daemon *d;
    char ledger_path[4200]; /* the operator routes open their own handle on it */
    coord_webauth_t *auth;
    int tls, metrics_public;
    char *cert_pem, *key_pem;
    atomic_uint_least64_t next_id;
    atomic_int stopping;
    pthread_key_t sock_key; /* each connection thread's own DEALER to the bridge */
    int sock_key_ok;
    pthread_mutex_t mu; /* guards inflight */
    zhashx_t *inflight; /* account key -> requests in flight (int*) */
    /* metrics */
    atomic_ullong requests[64][6]; /* per route, per status class 1xx..5xx (index 1..5), 0 unused */
    atomic_ullong predict_hist[12]; /* latency buckets (ms): predict_bounds, then +Inf */
    atomic_ullong predict_count, predict_sum_us;
};

/* ---- requests ------------------------------------------------------------------------------- */

typedef struct route route_t;

typedef struct {
    uint8_t *data;
    size_t len, cap;
} buf_t;

/* One request's state across libmicrohttpd's calls: the body arrives in pieces. */
typedef struct {
    const route_t *route;
    char seg[6][129]; /* path segments */
    int nseg;
    buf_t body;
    size_t body_max;
    int overflow;
    struct MHD_PostProcessor *pp;
    buf_t images[HTTP_PREDICT_MAX];
    int nimages, bad_part;
    /* who */
    coord_cred_t cred;
    int authed, inflight; /* inflight: counted against the account (given back when done) */
    /* refused before the body was read: the answer waits until the body is in (read and dropped,
     * up to HTTP_DISCARD_MAX, past which the connection is closed), so the client sees it */
    cJSON *early;
    int early_status;
    size_t discarded, received;
    int bad_body, too_big; /* the body could not be taken (malformed multipart; too many or too big images) */
    char token[COORD_TOKEN_MAX]; /* the presented credential */
    char addr[64];
    int64_t t0_us;
} hreq_t;

/* What a route answers: a status and a JSON body (or an error), built into a response by respond(). */
typedef struct {
    coord_http_t *h;
    struct MHD_Connection *conn;
    hreq_t *r;
    const cJSON *in; /* the parsed JSON body, when the route takes one */
    int status;
    cJSON *out;
    char cookie[256]; /* a Set-Cookie value, if any */
    int queued;       /* the route queued its own response (the event stream) */
} hctx_t;

static int64_t now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int buf_append(buf_t *b, const void *data, size_t n, size_t max) {
    if (b->len + n > max) return -1;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1) cap *= 2;
        uint8_t *p = realloc(b->data, cap);
        if (!p) return -1;
        b->data = p, b->cap = cap;
    }
    memcpy(b->data + b->len, data, n);
    b->len += n;
    b->data[b->len] = 0; /* JSON bodies are parsed as text */
    return 0;
}

/* ---- replies -------------------------------------------------------------------------------- */

static void error_to(hctx_t *c, int status, const char *code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void error_to(hctx_t *c, int status, const char *code, const char *fmt, ...) {
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cJSON_Delete(c->out);
    c->out = cJSON_CreateObject();
    cJSON *e = cJSON_AddObjectToObject(c->out, "error");
    cJSON_AddStringToObject(e, "code", code);
    cJSON_AddStringToObject(e, "message", msg);
    c->status = status;
}

/* The HTTP status a wire ERROR code is answered with. */
static int status_of(const char *code) {
    static const struct {
        const char *code;
        int status;
    } map[] = {{"BAD_REQUEST", 400},      {"UNKNOWN_TYPE", 400},       {"UNAUTHORIZED", 401}, {"FORBIDDEN", 403},
               {"NOT_FOUND", 404},        {"CONFLICT", 409},           {"STALE", 409},        {"BAD_STATE", 409},
               {"INSUFFICIENT_FUNDS", 402}, {"TOO_LARGE", 413},        {"RATE_LIMITED", 429}, {"LIMIT", 403},
               {"INTERNAL", 500}};
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (code && !strcmp(code, map[i].code)) return map[i].status;
    return 500;
}

static int status_class(int status) { return status >= 100 && status < 600 ? status / 100 : 5; }

/* Sends c's answer with the headers every response carries. */
static enum MHD_Result respond(hctx_t *c) {
    char *text = c->out ? cJSON_PrintUnformatted(c->out) : strdup("{}");
    if (!text) return MHD_NO;
    size_t n = strlen(text);
    text = realloc(text, n + 2);
    text[n++] = '\n';
    struct MHD_Response *resp = MHD_create_response_from_buffer(n, text, MHD_RESPMEM_MUST_FREE);
    if (!resp) return free(text), MHD_NO;
    MHD_add_response_header(resp, "Content-Type", "application/json; charset=utf-8");
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(resp, "Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'");
    if (c->h->tls) MHD_add_response_header(resp, "Strict-Transport-Security", "max-age=31536000");
    if (c->cookie[0]) MHD_add_response_header(resp, "Set-Cookie", c->cookie);
    enum MHD_Result rc = MHD_queue_response(c->conn, (unsigned)c->status, resp);
    MHD_destroy_response(resp);
    return rc;
}

/* ---- msgpack -> JSON ------------------------------------------------------------------------ */

static cJSON *json_of(const msgpack_object *o) {
    char tmp[256];
    switch (o ? o->type : MSGPACK_OBJECT_NIL) {
    case MSGPACK_OBJECT_BOOLEAN: return cJSON_CreateBool(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER: return cJSON_CreateNumber((double)o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return cJSON_CreateNumber((double)o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: return isfinite(o->via.f64) ? cJSON_CreateNumber(o->via.f64) : cJSON_CreateNull();
    case MSGPACK_OBJECT_STR: {
        char *s = strndup(o->via.str.ptr, o->via.str.size);
        cJSON *j = s && bf_utf8_valid(s, o->via.str.size) ? cJSON_CreateString(s) : cJSON_CreateNull();
        free(s);
        return j;
    }
    case MSGPACK_OBJECT_ARRAY: {
        cJSON *a = cJSON_CreateArray();
        for (uint32_t i = 0; a && i < o->via.array.size; i++) cJSON_AddItemToArray(a, json_of(&o->via.array.ptr[i]));
        return a;
    }
    case MSGPACK_OBJECT_MAP: {
        cJSON *m = cJSON_CreateObject();
        for (uint32_t i = 0; m && i < o->via.map.size; i++) {
            const msgpack_object *k = &o->via.map.ptr[i].key;
            if (k->type != MSGPACK_OBJECT_STR || k->via.str.size >= sizeof tmp) continue;
            memcpy(tmp, k->via.str.ptr, k->via.str.size);
            tmp[k->via.str.size] = 0;
            cJSON_AddItemToObject(m, tmp, json_of(&o->via.map.ptr[i].val));
        }
        return m;
    }
    default: return cJSON_CreateNull();
    }
}

/* ---- the bridge ----------------------------------------------------------------------------- */

static bf_msg_t *new_req(coord_http_t *h, const char *type) {
    return bf_msg_new(type, atomic_fetch_add(&h->next_id, 1) + 1);
}

static void bridge_sock_free(void *p) {
    zsock_t *s = p;
    zsock_destroy(&s);
}

/* The calling thread's DEALER to the bridge, made on its first call and closed when the thread
 * ends (libmicrohttpd runs a thread per connection): a socket per request would cost a connect,
 * a handshake and a reap each time. */
static zsock_t *bridge_sock(coord_http_t *h) {
    zsock_t *s = pthread_getspecific(h->sock_key);
    if (s) return s;
    s = zsock_new(ZMQ_DEALER);
    if (!s) return NULL;
    zsock_set_linger(s, 0);
    if (zsock_connect(s, "%s", COORD_HTTP_BRIDGE) < 0 || pthread_setspecific(h->sock_key, s)) {
        zsock_destroy(&s);
        return NULL;
    }
    return s;
}

/* Sends req (taken) to the socket thread as the account key (NULL: none) and returns its reply,
 * or NULL if none came within HTTP_REPLY_MS. A reply that comes after its request gave up waits
 * on the thread's socket; the next call drops it by its id. */
static bf_msg_t *bridge_call(coord_http_t *h, const char *key, bf_msg_t *req) {
    bf_err_t err;
    uint64_t id = req ? bf_msg_id(req) : 0;
    zmsg_t *z = req ? bf_msg_encode(req, &err) : NULL;
    bf_msg_destroy(&req);
    zsock_t *s = z ? bridge_sock(h) : NULL;
    if (!s) return zmsg_destroy(&z), NULL;
    zmsg_pushmem(z, key ? key : "", key ? strlen(key) : 0);
    bf_msg_t *rep = NULL;
    if (zmsg_send(&z, s) == 0) {
        int64_t deadline = zclock_mono() + HTTP_REPLY_MS;
        for (int64_t left; !rep && (left = deadline - zclock_mono()) > 0;) {
            zsock_set_rcvtimeo(s, (int)left);
            zmsg_t *in = zmsg_recv(s);
            if (!in) break;
            bf_proto_reject_t rej;
            rep = bf_msg_decode(&in, &rej, &err);
            zmsg_destroy(&in);
            if (rep && bf_msg_id(rep) != id) bf_msg_destroy(&rep); /* a late answer to an earlier call */
        }
    }
    zmsg_destroy(&z);
    return rep;
}

/* Calls the socket thread as the caller; 0 with *rep of type want, else the error is set in c. */
static int call_as(hctx_t *c, const char *key, bf_msg_t *req, const char *want, bf_msg_t **rep) {
    *rep = bridge_call(c->h, key, req);
    if (!*rep) return error_to(c, 503, "UNAVAILABLE", "the coordinator did not answer in time"), -1;
    if (!strcmp(bf_msg_type(*rep), "ERROR")) {
        const char *code = bf_msg_str(*rep, "code");
        error_to(c, status_of(code), code ? code : "INTERNAL", "%s", bf_msg_str(*rep, "message") ? bf_msg_str(*rep, "message") : "");
        bf_msg_destroy(rep);
        return -1;
    }
    if (want && strcmp(bf_msg_type(*rep), want)) {
        error_to(c, 500, "INTERNAL", "unexpected %s reply", bf_msg_type(*rep));
        bf_msg_destroy(rep);
        return -1;
    }
    return 0;
}

static int call(hctx_t *c, bf_msg_t *req, const char *want, bf_msg_t **rep) {
    return call_as(c, c->r->cred.key[0] ? c->r->cred.key : NULL, req, want, rep);
}

/* The reply's field as the whole JSON answer (status 200 unless set). */
static void answer_any(hctx_t *c, const bf_msg_t *rep, const char *field, int status) {
    cJSON_Delete(c->out);
    c->out = json_of(bf_msg_any(rep, field));
    c->status = status;
}

/* ---- JSON body -> wire fields ---------------------------------------------------------------- */

/* J_KEY: an idempotency key, any string; not copied (request_key derives the wire's key from it) */
typedef enum { J_STR, J_UINT, J_NUM, J_BOOL, J_KEY } jkind_t;
typedef struct {
    const char *name;
    jkind_t kind;
} jfield_t;

/* Copies body's fields into m by kind; any other field, or one of the wrong kind, is an error
 * (400). Ranges and lengths are the protocol's (checked when the socket thread decodes). */
static int fields_to(hctx_t *c, const cJSON *body, const jfield_t *f, size_t nf, bf_msg_t *m) {
    if (!cJSON_IsObject(body)) return error_to(c, 400, "BAD_REQUEST", "the body must be a JSON object"), -1;
    for (const cJSON *it = body->child; it; it = it->next) {
        size_t i = 0;
        while (i < nf && strcmp(f[i].name, it->string)) i++;
        if (i == nf) return error_to(c, 400, "BAD_REQUEST", "unknown field '%.64s'", it->string), -1;
        int ok = 1;
        switch (f[i].kind) {
        case J_STR: ok = cJSON_IsString(it) && !bf_msg_set_str(m, f[i].name, it->valuestring); break;
        case J_KEY: ok = cJSON_IsString(it); break;
        case J_NUM: ok = cJSON_IsNumber(it) && !bf_msg_set_double(m, f[i].name, it->valuedouble); break;
        case J_BOOL: ok = cJSON_IsBool(it) && !bf_msg_set_bool(m, f[i].name, cJSON_IsTrue(it)); break;
        case J_UINT:
            ok = cJSON_IsNumber(it) && it->valuedouble >= 0 && it->valuedouble <= 9007199254740992.0 &&
                 it->valuedouble == (double)(uint64_t)it->valuedouble &&
                 !bf_msg_set_uint(m, f[i].name, (uint64_t)it->valuedouble);
            break;
        }
        if (!ok)
            return error_to(c, 400, "BAD_REQUEST", "field '%s' must be %s", f[i].name,
                            f[i].kind == J_STR || f[i].kind == J_KEY ? "a string"
                            : f[i].kind == J_UINT ? "a non-negative integer"
                            : f[i].kind == J_NUM  ? "a number"
                                                  : "true or false"),
                   -1;
    }
    return 0;
}

/* The wire's idempotency key for a money-moving request: the body's `request` or the
 * Idempotency-Key header (any text up to 200 bytes: 64 hex digits are used as they are, anything
 * else by its SHA-256), or a random one (then a retry is a new request). */
static int request_key(hctx_t *c, const char *given, char out[65]) {
    if (!given) given = MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, "Idempotency-Key");
    if (given) {
        size_t n = strlen(given), hex = 0;
        if (!n || n > 200) return error_to(c, 400, "BAD_REQUEST", "an idempotency key has 1..200 bytes"), -1;
        for (size_t i = 0; i < n; i++) hex += (given[i] >= '0' && given[i] <= '9') || (given[i] >= 'a' && given[i] <= 'f');
        if (n == 64 && hex == 64) memcpy(out, given, 65);
        else bf_sha256_hex(given, n, out);
        return 0;
    }
    uint8_t r[32];
    if (RAND_bytes(r, sizeof r) != 1) return error_to(c, 500, "INTERNAL", "no random bytes"), -1;
    for (int i = 0; i < 32; i++) snprintf(out + 2 * i, 3, "%02x", r[i]);
    return 0;
}

static const char *json_str(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* ---- routes: auth --------------------------------------------------------------------------- */

static void r_register(hctx_t *c) {
    const char *user = json_str(c->in, "username"), *pw = json_str(c->in, "password");
    if (!user || !pw || cJSON_GetArraySize((cJSON *)c->in) != 2)
        return error_to(c, 400, "BAD_REQUEST", "the body is {\"username\": ..., \"password\": ...}");
    size_t pl = strlen(pw);
    if (pl < COORD_PASSWORD_MIN || pl > COORD_PASSWORD_MAX)
        return error_to(c, 400, "BAD_REQUEST", "a password has %d..%d bytes", COORD_PASSWORD_MIN, COORD_PASSWORD_MAX);
    bf_err_t err;
    bf_msg_t *req = new_req(c->h, "REGISTER"), *rep;
    size_t hlen;
    uint8_t *hdr = req && !bf_msg_set_str(req, "name", user) ? bf_msg_encode_header(req, &hlen, &err) : NULL;
    free(hdr);
    if (!hdr) { /* the protocol's rule for names, checked before anything else */
        bf_msg_destroy(&req);
        return error_to(c, 400, "BAD_REQUEST", "username: 1..32 letters, digits, '.', '_' or '-', not starting with '.' or '-'");
    }
    int have = coord_webauth_exists(c->h->auth, user, &err);
    if (have) bf_msg_destroy(&req);
    if (have < 0) return error_to(c, 500, "INTERNAL", "%s", err.msg);
    if (have) return error_to(c, 409, "CONFLICT", "the name '%.64s' is taken", user);
    /* a web account's CURVE key pair: its public key is the account's identity, as a CLI user's;
     * the secret is not kept, so the account can do everything but train */
    zcert_t *cert = zcert_new();
    if (!cert) return bf_msg_destroy(&req), error_to(c, 500, "INTERNAL", "cannot make a key");
    char key[41];
    snprintf(key, sizeof key, "%s", zcert_public_txt(cert));
    zcert_destroy(&cert);
    if (call_as(c, key, req, "OK", &rep)) return;
    int rc = coord_webauth_set_password(c->h->auth, user, key, pw, &err);
    if (rc) {
        bf_msg_destroy(&rep);
        return error_to(c, 500, "INTERNAL", "%s", rc < 0 ? err.msg : "password refused");
    }
    answer_any(c, rep, "result", 201);
    bf_msg_destroy(&rep);
}

static void session_cookie(hctx_t *c, const char *token, int64_t max_age) {
    snprintf(c->cookie, sizeof c->cookie, COOKIE "=%s; Path=/; Max-Age=%lld; HttpOnly;%s SameSite=Strict", token,
             (long long)max_age, c->h->tls ? " Secure;" : "");
}

static void r_login(hctx_t *c) {
    const char *user = json_str(c->in, "username"), *pw = json_str(c->in, "password");
    if (!user || !pw) return error_to(c, 400, "BAD_REQUEST", "the body is {\"username\": ..., \"password\": ...}");
    char token[COORD_TOKEN_MAX];
    coord_cred_t cred;
    bf_err_t err;
    int rc = coord_webauth_login(c->h->auth, user, pw, c->r->addr, token, &cred, &err);
    if (rc == COORD_WA_LIMITED)
        return error_to(c, 429, "RATE_LIMITED", "too many failed logins for this user or address: wait %d minutes",
                        COORD_LOGIN_WINDOW_S / 60);
    if (rc == COORD_WA_BAD) return error_to(c, 401, "UNAUTHORIZED", "wrong username or password");
    if (rc) return error_to(c, 500, "INTERNAL", "%s", err.msg);
    c->out = cJSON_CreateObject();
    cJSON_AddStringToObject(c->out, "token", token);
    cJSON_AddStringToObject(c->out, "csrf", cred.csrf);
    cJSON_AddNumberToObject(c->out, "expires_at", (double)cred.expires_at);
    cJSON_AddStringToObject(c->out, "user", cred.username);
    c->status = 200;
    session_cookie(c, token, COORD_SESSION_TTL_S);
}

static void r_logout(hctx_t *c) {
    bf_err_t err;
    if (c->r->cred.kind != COORD_CRED_SESSION) return error_to(c, 400, "BAD_REQUEST", "that credential is no session");
    if (coord_webauth_logout(c->h->auth, c->r->token, &err) < 0) return error_to(c, 500, "INTERNAL", "%s", err.msg);
    c->out = cJSON_CreateObject();
    cJSON_AddBoolToObject(c->out, "ok", 1);
    c->status = 200;
    session_cookie(c, "", 0);
}

static void r_token_new(hctx_t *c) {
    const char *name = json_str(c->in, "name");
    if (!name || !name[0] || strlen(name) > 64) return error_to(c, 400, "BAD_REQUEST", "the body is {\"name\": 1..64 bytes}");
    char token[COORD_TOKEN_MAX];
    int64_t id;
    bf_err_t err;
    if (coord_webauth_token_new(c->h->auth, c->r->cred.key, name, token, &id, &err))
        return error_to(c, 500, "INTERNAL", "%s", err.msg);
    c->out = cJSON_CreateObject();
    cJSON_AddNumberToObject(c->out, "id", (double)id);
    cJSON_AddStringToObject(c->out, "name", name);
    cJSON_AddStringToObject(c->out, "token", token);
    c->status = 201;
}

static void r_tokens(hctx_t *c) {
    coord_token_info_t *t = NULL;
    size_t n = 0;
    bf_err_t err;
    if (coord_webauth_tokens(c->h->auth, c->r->cred.key, &t, &n, &err)) return error_to(c, 500, "INTERNAL", "%s", err.msg);
    c->out = cJSON_CreateArray();
    for (size_t i = 0; i < n; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "id", (double)t[i].id);
        cJSON_AddStringToObject(o, "name", t[i].name);
        cJSON_AddNumberToObject(o, "created_at", (double)t[i].created_at);
        cJSON_AddNumberToObject(o, "last_used_at", (double)t[i].last_used_at);
        cJSON_AddItemToArray(c->out, o);
    }
    free(t);
    c->status = 200;
}

static void r_token_revoke(hctx_t *c) {
    char *end;
    long long id = strtoll(c->r->seg[3], &end, 10);
    bf_err_t err;
    if (*end || id <= 0) return error_to(c, 400, "BAD_REQUEST", "a token id is a positive integer");
    int rc = coord_webauth_token_revoke(c->h->auth, c->r->cred.key, id, &err);
    if (rc == COORD_WA_BAD) return error_to(c, 404, "NOT_FOUND", "you have no live token %lld", id);
    if (rc) return error_to(c, 500, "INTERNAL", "%s", err.msg);
    c->out = cJSON_CreateObject();
    cJSON_AddBoolToObject(c->out, "ok", 1);
    c->status = 200;
}

/* ---- routes: account ------------------------------------------------------------------------ */

static void r_account(hctx_t *c) {
    bf_msg_t *rep;
    if (call(c, new_req(c->h, "ASSETS_GET"), "ASSETS", &rep)) return;
    answer_any(c, rep, "assets", 200);
    bf_msg_destroy(&rep);
}

/* {amount, request} to a money-moving request (RECHARGE, WITHDRAW) under one idempotency key. */
static void amount_request(hctx_t *c, const char *type, int status) {
    static const jfield_t f[] = {{"amount", J_STR}, {"request", J_KEY}};
    bf_msg_t *req = new_req(c->h, type), *rep;
    char key[65];
    if (fields_to(c, c->in, f, 2, req) || request_key(c, json_str(c->in, "request"), key))
        return bf_msg_destroy(&req);
    bf_msg_set_str(req, "request", key);
    if (call(c, req, "OK", &rep)) return;
    answer_any(c, rep, "result", status);
    bf_msg_destroy(&rep);
}

static void r_recharge(hctx_t *c) { amount_request(c, "RECHARGE", 200); }

/* A query argument as an integer in [lo, hi] (dflt when absent); -1 with the error set if bad. */
static int64_t query_int(hctx_t *c, const char *name, int64_t lo, int64_t hi, int64_t dflt) {
    const char *v = MHD_lookup_connection_value(c->conn, MHD_GET_ARGUMENT_KIND, name);
    if (!v) return dflt;
    char *end;
    long long x = strtoll(v, &end, 10);
    if (!*v || *end || x < lo || x > hi) return error_to(c, 400, "BAD_REQUEST", "%s must be %lld..%lld", name, (long long)lo, (long long)hi), -1;
    return x;
}

static void r_history(hctx_t *c) {
    int64_t limit = query_int(c, "limit", 1, 10000, 100), before = query_int(c, "before", 1, INT64_MAX, 0);
    if (limit < 0 || before < 0) return;
    bf_msg_t *req = new_req(c->h, "HISTORY_GET"), *rep;
    bf_msg_set_uint(req, "limit", (uint64_t)limit);
    if (before) bf_msg_set_uint(req, "before", (uint64_t)before);
    if (call(c, req, "HISTORY", &rep)) return;
    answer_any(c, rep, "entries", 200);
    bf_msg_destroy(&rep);
}

/* Fee payouts received: per task, and the newest `limit` one by one (a revenue curve). */
static void r_revenues(hctx_t *c) {
    int64_t limit = query_int(c, "limit", 1, 1000, 100);
    if (limit < 0) return;
    bf_msg_t *req = new_req(c->h, "REVENUES_GET"), *rep;
    bf_msg_set_uint(req, "limit", (uint64_t)limit);
    if (call(c, req, "REVENUES", &rep)) return;
    answer_any(c, rep, "revenues", 200);
    bf_msg_destroy(&rep);
}

/* The tasks the caller takes part in, with its blocks, samples, Shapley value and status in each. */
static void r_participations(hctx_t *c) {
    bf_msg_t *rep;
    if (call(c, new_req(c->h, "PARTICIPATIONS_GET"), "PARTICIPATIONS", &rep)) return;
    answer_any(c, rep, "participations", 200);
    bf_msg_destroy(&rep);
}

static void r_withdrawals(hctx_t *c) {
    bf_msg_t *rep;
    if (call(c, new_req(c->h, "WITHDRAWALS_GET"), "WITHDRAWALS", &rep)) return;
    answer_any(c, rep, "withdrawals", 200);
    bf_msg_destroy(&rep);
}

/* Money out: held on the available cash at once, paid or rejected by the operator later. */
static void r_withdraw(hctx_t *c) { amount_request(c, "WITHDRAW", 201); }

/* ---- routes: tasks -------------------------------------------------------------------------- */

static void r_tasks(hctx_t *c) {
    bf_msg_t *rep;
    if (call(c, new_req(c->h, "TASK_LIST"), "TASKS", &rep)) return;
    answer_any(c, rep, "tasks", 200);
    bf_msg_destroy(&rep);
}

static void r_task_create(hctx_t *c) {
    static const jfield_t f[] = {
        {"task", J_STR},         {"name", J_STR},          {"description", J_STR},  {"model", J_STR},
        {"dataset", J_STR},      {"rounds", J_UINT},       {"mode", J_STR},         {"fee", J_STR},
        {"pool", J_STR},         {"base_fee", J_STR},      {"rate", J_STR},         {"value_images", J_UINT},
        {"own_data_cap", J_UINT}, {"min_clients", J_UINT}, {"local_epochs", J_UINT}, {"batch", J_UINT},
        {"lr", J_NUM},           {"round_timeout", J_UINT}, {"partition", J_STR},   {"strategy", J_STR},
        {"mu", J_NUM},           {"seed", J_UINT},         {"request", J_KEY}};
    bf_msg_t *req = new_req(c->h, "TASK_CREATE"), *rep;
    /* the CLI's defaults (blockfed-client task create), then what the body gives */
    bf_msg_set_uint(req, "min_clients", 1), bf_msg_set_uint(req, "local_epochs", 1), bf_msg_set_uint(req, "batch", 64);
    bf_msg_set_double(req, "lr", 0.05), bf_msg_set_uint(req, "round_timeout", 300);
    bf_msg_set_str(req, "partition", "iid"), bf_msg_set_str(req, "strategy", "fedavg");
    char key[65];
    if (fields_to(c, c->in, f, sizeof f / sizeof f[0], req) || request_key(c, json_str(c->in, "request"), key))
        return bf_msg_destroy(&req);
    bf_msg_set_str(req, "request", key);
    if (call(c, req, "OK", &rep)) return;
    answer_any(c, rep, "result", 201);
    bf_msg_destroy(&rep);
}

static bf_msg_t *task_req(hctx_t *c, const char *type) {
    bf_msg_t *req = new_req(c->h, type);
    bf_msg_set_str(req, "task", c->r->seg[3]);
    return req;
}

static void r_task(hctx_t *c) {
    bf_msg_t *rep;
    if (call(c, task_req(c, "TASK_STATUS"), "STATUS", &rep)) return;
    answer_any(c, rep, "status", 200);
    bf_msg_destroy(&rep);
}

static void r_task_cancel(hctx_t *c) {
    bf_msg_t *rep;
    if (call(c, task_req(c, "TASK_CANCEL"), "OK", &rep)) return;
    bf_msg_destroy(&rep);
    c->out = cJSON_CreateObject();
    cJSON_AddBoolToObject(c->out, "ok", 1);
    c->status = 200;
}

/* ---- the event stream ----------------------------------------------------------------------- */

/* GET /tasks/{id}/events: Server-Sent Events read off the task's STATUS once a second: `status`
 * first (the whole STATUS), then `round` for each round closed (its history entry), `state` when
 * the state changes, `settled` once it is completed (the whole STATUS, with the result hash and
 * the participants' values), `valued` when a round's values are known (`{round, values}`: rounds
 * are valued in order, after they close); the stream ends after a final state. */
typedef struct {
    coord_http_t *h;
    char key[41], task[129];
    int sent_first, rounds, valued, done;
    char state[32];
    int64_t last_write_us;
    char *pending; /* text not yet handed to libmicrohttpd */
    size_t plen, poff;
} events_t;

static void ev_add(events_t *e, const char *event, const cJSON *data) {
    char *d = data ? cJSON_PrintUnformatted(data) : strdup("{}");
    if (!d) return;
    size_t n = strlen(event) + strlen(d) + 32;
    char *p = realloc(e->pending, e->plen + n);
    if (p) {
        e->pending = p;
        e->plen += (size_t)snprintf(p + e->plen, n, "event: %s\ndata: %s\n\n", event, d);
    }
    free(d);
}

/* One look at the task: appends what changed since the last. 0, or -1 when the task is gone. */
static int ev_poll(events_t *e) {
    bf_msg_t *req = new_req(e->h, "TASK_STATUS");
    bf_msg_set_str(req, "task", e->task);
    bf_msg_t *rep = bridge_call(e->h, e->key[0] ? e->key : NULL, req);
    if (!rep || strcmp(bf_msg_type(rep), "STATUS")) return bf_msg_destroy(&rep), -1;
    cJSON *st = json_of(bf_msg_any(rep, "status"));
    bf_msg_destroy(&rep);
    const char *state = json_str(st, "state");
    cJSON *hist = cJSON_GetObjectItemCaseSensitive(st, "history");
    int n = cJSON_GetArraySize(hist);
    if (!e->sent_first) {
        ev_add(e, "status", st);
        e->sent_first = 1, e->rounds = n;
        while (e->valued < n && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(hist, e->valued), "valued")))
            e->valued++; /* the status event carried those */
    }
    for (; e->rounds < n; e->rounds++) ev_add(e, "round", cJSON_GetArrayItem(hist, e->rounds));
    for (; e->valued < n; e->valued++) {
        const cJSON *x = cJSON_GetArrayItem(hist, e->valued);
        if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(x, "valued"))) break;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "round", e->valued + 1);
        cJSON_AddItemToObject(o, "values", cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(x, "values"), 1));
        ev_add(e, "valued", o);
        cJSON_Delete(o);
    }
    if (state && strcmp(state, e->state)) {
        if (e->state[0]) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "task", e->task);
            cJSON_AddStringToObject(o, "from", e->state);
            cJSON_AddStringToObject(o, "to", state);
            ev_add(e, "state", o);
            cJSON_Delete(o);
        }
        snprintf(e->state, sizeof e->state, "%s", state);
        if (!strcmp(state, "completed")) ev_add(e, "settled", st);
        e->done = !strcmp(state, "completed") || !strcmp(state, "cancelled") || !strcmp(state, "failed");
    }
    cJSON_Delete(st);
    return 0;
}

static ssize_t ev_read(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    events_t *e = cls;
    while (e->poff >= e->plen) {
        free(e->pending), e->pending = NULL, e->plen = e->poff = 0;
        if (e->done || atomic_load(&e->h->stopping)) return MHD_CONTENT_READER_END_OF_STREAM;
        if (e->sent_first) zclock_sleep(HTTP_EVENTS_POLL_MS);
        if (atomic_load(&e->h->stopping) || ev_poll(e)) return MHD_CONTENT_READER_END_OF_STREAM;
        if (e->plen == 0 && now_us() - e->last_write_us > HTTP_KEEPALIVE_S * 1000000LL) {
            e->pending = strdup(": keep-alive\n\n");
            e->plen = e->pending ? strlen(e->pending) : 0;
        }
    }
    size_t n = e->plen - e->poff < max ? e->plen - e->poff : max;
    memcpy(buf, e->pending + e->poff, n);
    e->poff += n;
    e->last_write_us = now_us();
    return (ssize_t)n;
}

static void ev_free(void *cls) {
    events_t *e = cls;
    free(e->pending);
    free(e);
}

static void r_task_events(hctx_t *c) {
    events_t *e = calloc(1, sizeof *e);
    if (!e) return error_to(c, 500, "INTERNAL", "out of memory");
    e->h = c->h;
    snprintf(e->key, sizeof e->key, "%s", c->r->cred.key);
    snprintf(e->task, sizeof e->task, "%s", c->r->seg[3]);
    if (ev_poll(e)) { /* the first look answers a missing task with a plain 404 */
        free(e->pending), free(e);
        return error_to(c, 404, "NOT_FOUND", "no such task");
    }
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, ev_read, e, ev_free);
    if (!resp) return ev_free(e), error_to(c, 500, "INTERNAL", "out of memory");
    MHD_add_response_header(resp, "Content-Type", "text/event-stream");
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    if (c->h->tls) MHD_add_response_header(resp, "Strict-Transport-Security", "max-age=31536000");
    MHD_queue_response(c->conn, 200, resp);
    MHD_destroy_response(resp);
    c->queued = 1;
}

/* ---- paid predictions ----------------------------------------------------------------------- */

static const double predict_bounds[11] = {1, 2, 3, 5, 10, 20, 50, 100, 250, 1000, 5000}; /* ms */

static void r_predict(hctx_t *c) {
    hreq_t *r = c->r;
    if (r->bad_part) return error_to(c, 400, "BAD_REQUEST", "multipart fields other than 'image' are not taken");
    if (!r->pp) { /* one raw image as the body */
        if (!r->body.len) return error_to(c, 400, "BAD_REQUEST", "no image: send multipart/form-data 'image' fields or one image as the body");
        r->images[0] = r->body, r->nimages = 1;
        memset(&r->body, 0, sizeof r->body);
    }
    if (!r->nimages) return error_to(c, 400, "BAD_REQUEST", "no 'image' field in the form");
    int64_t top = query_int(c, "top", 1, 256, 5);
    if (top < 0) return;
    char key[65];
    if (request_key(c, NULL, key)) return;
    bf_msg_t *req = task_req(c, "PREDICT"), *rep;
    bf_msg_set_uint(req, "top", (uint64_t)top);
    bf_msg_set_str(req, "request", key);
    for (int i = 0; i < r->nimages; i++)
        if (bf_msg_add_frame(req, r->images[i].data, r->images[i].len)) {
            bf_msg_destroy(&req);
            return error_to(c, 413, "TOO_LARGE", "image %d is over %u MiB", i + 1, BF_PROTO_MAX_IMAGE >> 20);
        }
    int64_t t0 = now_us();
    if (call(c, req, "PREDICTION", &rep)) return;
    double ms = (now_us() - t0) / 1000.0;
    int b = 0;
    while (b < 11 && ms > predict_bounds[b]) b++;
    atomic_fetch_add(&c->h->predict_hist[b], 1);
    atomic_fetch_add(&c->h->predict_count, 1);
    atomic_fetch_add(&c->h->predict_sum_us, (unsigned long long)(ms * 1000));
    c->out = cJSON_CreateObject();
    cJSON_AddItemToObject(c->out, "results", json_of(bf_msg_any(rep, "results")));
    cJSON_AddStringToObject(c->out, "fee", bf_msg_str(rep, "fee"));
    cJSON_AddStringToObject(c->out, "balance", bf_msg_str(rep, "balance"));
    if (bf_msg_has(rep, "usage")) cJSON_AddNumberToObject(c->out, "usage", (double)bf_msg_uint(rep, "usage", 0));
    if (bf_msg_str(rep, "model")) cJSON_AddStringToObject(c->out, "model", bf_msg_str(rep, "model"));
    bf_msg_destroy(&rep);
    c->status = 200;
}

/* ---- routes: service ------------------------------------------------------------------------ */

static void r_health(hctx_t *c) {
    bf_msg_t *rep;
    if (call_as(c, NULL, new_req(c->h, "PING"), "PONG", &rep)) return;
    bf_msg_destroy(&rep);
    c->out = cJSON_CreateObject();
    cJSON_AddBoolToObject(c->out, "ok", 1);
    c->status = 200;
}

static void r_openapi(hctx_t *c) {
    c->out = cJSON_ParseWithLength((const char *)coord_openapi_json, coord_openapi_json_len);
    c->status = c->out ? 200 : 500;
}

static void r_metrics(hctx_t *c);

/* ---- routes: the operator ------------------------------------------------------------------- */

static bf_ledger_t *op_ledger(hctx_t *c) {
    bf_err_t err;
    bf_ledger_t *L = bf_ledger_open(c->h->ledger_path, &err);
    if (!L) error_to(c, 500, "INTERNAL", "%s", err.msg);
    return L;
}

/* The ledger replayed (`blockfed-coordinator ledger verify`): each check's result, the chain head. */
/* The ledger replayed into *rep, and when a is given every account into *a (n of them); -1 with
 * the error answered. */
static int op_replay(hctx_t *c, bf_ledger_report_t *rep, bf_ledger_account_t **a, size_t *n) {
    bf_ledger_t *L = op_ledger(c);
    bf_err_t err;
    if (!L) return -1;
    int rc = bf_ledger_verify(L, rep, &err);
    if (!rc && a) rc = bf_ledger_accounts(L, a, n, &err);
    bf_ledger_close(&L);
    if (rc) return error_to(c, 500, "INTERNAL", "%s", err.msg), -1;
    return 0;
}

static void r_op_verify(hctx_t *c) {
    bf_ledger_report_t rep;
    if (op_replay(c, &rep, NULL, NULL)) return;
    c->out = cJSON_CreateObject();
    cJSON_AddBoolToObject(c->out, "ok", rep.ok);
    cJSON_AddStringToObject(c->out, "head_hash", rep.head_hash);
    cJSON_AddNumberToObject(c->out, "transfers", (double)rep.transfers);
    cJSON_AddNumberToObject(c->out, "accounts", (double)rep.accounts);
    cJSON_AddNumberToObject(c->out, "users", (double)rep.users);
    cJSON_AddNumberToObject(c->out, "tasks", (double)rep.tasks);
    cJSON_AddNumberToObject(c->out, "holds_pending", (double)rep.holds_pending);
    cJSON *checks = cJSON_AddArrayToObject(c->out, "checks");
    for (int i = 0; i < BF_LEDGER_CHECK_COUNT; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", rep.checks[i].name ? rep.checks[i].name : "");
        cJSON_AddBoolToObject(o, "ok", rep.checks[i].ok);
        cJSON_AddNumberToObject(o, "failures", (double)rep.checks[i].failures);
        cJSON_AddStringToObject(o, "detail", rep.checks[i].detail);
        cJSON_AddItemToArray(checks, o);
    }
    c->status = 200;
}

/* Every account's balance summed per currency and kind (the platform's books at a glance). */
static cJSON *totals_json(const bf_ledger_account_t *a, size_t n) {
    static const char *const kinds[] = {"", "user_cash", "user_coin", "task_escrow", "task_clearing",
                                        "platform_external", "platform_revenue"};
    int64_t posted[2][16] = {{0}}, avail[2][16] = {{0}};
    for (size_t i = 0; i < n; i++) {
        int cur = a[i].currency == BF_LEDGER_CNY ? 0 : 1, k = (int)a[i].kind & 15;
        posted[cur][k] += a[i].balance.posted;
        avail[cur][k] += a[i].balance.available;
    }
    cJSON *tot = cJSON_CreateArray();
    for (int cur = 0; cur < 2; cur++)
        for (int k = 0; k < 16; k++) {
            if (!posted[cur][k] && !avail[cur][k]) continue;
            char p[32], v[32], kn[32];
            int scale = cur == 0 ? 2 : 0;
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "currency", cur == 0 ? "CNY" : "COIN");
            if (k > 0 && k < 7) snprintf(kn, sizeof kn, "%s", kinds[k]);
            else snprintf(kn, sizeof kn, "kind_%d", k);
            cJSON_AddStringToObject(o, "kind", kn);
            cJSON_AddStringToObject(o, "posted", bf_money_format_amount(posted[cur][k], scale, p));
            cJSON_AddStringToObject(o, "available", bf_money_format_amount(avail[cur][k], scale, v));
            cJSON_AddStringToObject(o, "held", bf_money_format_amount(posted[cur][k] - avail[cur][k], scale, v));
            cJSON_AddItemToArray(tot, o);
        }
    return tot;
}

static void r_op_balances(hctx_t *c) {
    bf_ledger_t *L = op_ledger(c);
    bf_ledger_account_t *a = NULL;
    size_t n = 0;
    bf_err_t err;
    if (!L) return;
    int rc = bf_ledger_accounts(L, &a, &n, &err);
    bf_ledger_close(&L);
    if (rc) return error_to(c, 500, "INTERNAL", "%s", err.msg);
    c->out = cJSON_CreateObject();
    cJSON_AddNumberToObject(c->out, "accounts", (double)n);
    cJSON_AddItemToObject(c->out, "totals", totals_json(a, n));
    free(a);
    c->status = 200;
}

/* The operator page's header: the chain head and counts from a replay of the ledger (as verify),
 * the totals per currency and kind, what is pending. */
static void r_op_summary(hctx_t *c) {
    bf_ledger_report_t rep;
    bf_ledger_account_t *a = NULL;
    size_t n = 0;
    if (op_replay(c, &rep, &a, &n)) return;
    c->out = cJSON_CreateObject();
    cJSON_AddBoolToObject(c->out, "ok", rep.ok);
    cJSON_AddStringToObject(c->out, "chain_head", rep.head_hash);
    cJSON_AddNumberToObject(c->out, "entries", (double)rep.transfers);
    cJSON_AddNumberToObject(c->out, "accounts", (double)rep.accounts);
    cJSON_AddNumberToObject(c->out, "users", (double)rep.users);
    cJSON_AddNumberToObject(c->out, "tasks", (double)rep.tasks);
    cJSON_AddNumberToObject(c->out, "pending_holds", (double)rep.holds_pending);
    cJSON_AddNumberToObject(c->out, "pending_withdrawals", (double)rep.withdrawals_pending);
    cJSON_AddItemToObject(c->out, "totals", totals_json(a, n));
    free(a);
    c->status = 200;
}

/* Money received outside the platform, credited to a user once per external reference (the op id
 * is deposit:REF, as `blockfed-coordinator ledger deposit` makes it). */
static void r_op_deposit(hctx_t *c) {
    const char *user = json_str(c->in, "user"), *amount = json_str(c->in, "amount"), *ref = json_str(c->in, "ref");
    if (!user || !amount || !ref || cJSON_GetArraySize((cJSON *)c->in) != 3)
        return error_to(c, 400, "BAD_REQUEST", "the body is {\"user\", \"amount\", \"ref\"}");
    size_t rl = strlen(ref);
    for (size_t i = 0; i < rl; i++)
        if (ref[i] <= ' ' || ref[i] >= 0x7f) rl = 0;
    if (rl < 1 || rl > 100) return error_to(c, 400, "BAD_REQUEST", "ref is 1..100 printable characters without spaces");
    int64_t cents, uid;
    bf_err_t err;
    if (bf_money_parse_amount(amount, 2, &cents, &err) || cents <= 0)
        return error_to(c, 400, "BAD_REQUEST", "amount is a positive amount of yuan with at most 2 decimals");
    bf_ledger_t *L = op_ledger(c);
    if (!L) return;
    bf_ledger_user_t u;
    if (bf_ledger_user_find(L, user, &uid, &err) || bf_ledger_user_get(L, uid, &u, &err)) {
        bf_ledger_close(&L);
        return error_to(c, 404, "NOT_FOUND", "no user '%.64s'", user);
    }
    char op[BF_LEDGER_OP_ID_MAX + 1];
    snprintf(op, sizeof op, "deposit:%s", ref);
    int rc = bf_ledger_recharge(L, op, uid, cents, &err);
    if (!rc) rc = bf_ledger_user_get(L, uid, &u, &err) ? BF_LEDGER_EINTERNAL : 0;
    bf_ledger_close(&L);
    if (rc == BF_LEDGER_ECONFLICT) return error_to(c, 409, "CONFLICT", "this ref was used for another deposit");
    if (rc == BF_LEDGER_EOVERFLOW) return error_to(c, 403, "LIMIT", "%s", err.msg);
    if (rc) return error_to(c, 500, "INTERNAL", "%s", err.msg);
    char a[32];
    c->out = cJSON_CreateObject();
    cJSON_AddStringToObject(c->out, "user", u.name);
    cJSON_AddStringToObject(c->out, "ref", ref);
    cJSON_AddStringToObject(c->out, "cash", bf_money_format_amount(u.cash.posted, 2, a));
    c->status = 200;
}

/* The dashboard's pages and static files (pages.c). */
static void r_page(hctx_t *c) {
    if (!coord_pages_answer(c->conn, c->r->nseg ? c->r->seg[0] : "", c->r->nseg > 1 ? c->r->seg[1] : "", c->h->tls)) c->queued = 1;
    else error_to(c, 404, "NOT_FOUND", "no such page");
}

/* ---- the route table ------------------------------------------------------------------------ */

enum {
    R_USER = 1,     /* a user's session or API token */
    R_CHANGE = 2,   /* changes state: with a session cookie, the X-CSRF-Token header must match */
    R_JSON = 4,     /* takes a JSON body (HTTP_JSON_MAX) */
    R_UPLOAD = 8,   /* takes images (HTTP_UPLOAD_MAX): multipart/form-data or one raw image */
    R_OPERATOR = 16,/* the operator's credential */
    R_LIMITED = 32, /* counts against the account's in-flight requests */
};

struct route {
    const char *method, *path; /* "*" in a path matches one segment */
    int flags;
    void (*fn)(hctx_t *);
};

#define API "/api/v1"
static const route_t routes[] = {
    {"POST", API "/auth/register", R_JSON, r_register},
    {"POST", API "/auth/login", R_JSON, r_login},
    {"POST", API "/auth/logout", R_USER | R_CHANGE, r_logout},
    {"GET", API "/tokens", R_USER, r_tokens},
    {"POST", API "/tokens", R_USER | R_CHANGE | R_JSON, r_token_new},
    {"DELETE", API "/tokens/*", R_USER | R_CHANGE, r_token_revoke},
    {"GET", API "/account", R_USER | R_LIMITED, r_account},
    {"POST", API "/account/recharge", R_USER | R_CHANGE | R_JSON | R_LIMITED, r_recharge},
    {"GET", API "/account/history", R_USER | R_LIMITED, r_history},
    {"GET", API "/account/revenues", R_USER | R_LIMITED, r_revenues},
    {"GET", API "/account/participations", R_USER | R_LIMITED, r_participations},
    {"GET", API "/account/withdrawals", R_USER | R_LIMITED, r_withdrawals},
    {"POST", API "/account/withdrawals", R_USER | R_CHANGE | R_JSON | R_LIMITED, r_withdraw},
    {"GET", API "/tasks", R_USER | R_LIMITED, r_tasks},
    {"POST", API "/tasks", R_USER | R_CHANGE | R_JSON | R_LIMITED, r_task_create},
    {"GET", API "/tasks/*", R_USER | R_LIMITED, r_task},
    {"POST", API "/tasks/*/cancel", R_USER | R_CHANGE | R_LIMITED, r_task_cancel},
    {"GET", API "/tasks/*/events", R_USER, r_task_events},
    {"POST", API "/tasks/*/predict", R_USER | R_CHANGE | R_UPLOAD | R_LIMITED, r_predict},
    {"GET", API "/openapi.json", 0, r_openapi},
    {"GET", "/healthz", 0, r_health},
    {"GET", "/", 0, r_page},
    {"GET", "/login", 0, r_page},
    {"GET", "/predict", 0, r_page},
    {"GET", "/profile", 0, r_page},
    {"GET", "/operator", 0, r_page},
    {"GET", "/tasks/*", 0, r_page},
    {"GET", "/static/*", 0, r_page},
    {"GET", "/metrics", R_OPERATOR, r_metrics},
    {"GET", API "/operator/ledger/verify", R_OPERATOR, r_op_verify},
    {"GET", API "/operator/balances", R_OPERATOR, r_op_balances},
    {"GET", API "/operator/summary", R_OPERATOR, r_op_summary},
    {"POST", API "/operator/deposit", R_OPERATOR | R_CHANGE | R_JSON, r_op_deposit},
};
#define NROUTES (sizeof routes / sizeof routes[0])

void coord_http_routes(FILE *out) {
    for (size_t i = 0; i < NROUTES; i++) {
        fprintf(out, "%s ", routes[i].method);
        for (const char *p = routes[i].path; *p; p++) fputs(*p == '*' ? "{id}" : (char[]){*p, 0}, out);
        fputc('\n', out);
    }
}

/* Splits url into r->seg; -1 if a segment is empty or too long, or there are too many. */
static int split_path(const char *url, hreq_t *r) {
    r->nseg = 0;
    for (const char *p = url; *p == '/';) {
        const char *q = strchr(p + 1, '/');
        size_t n = q ? (size_t)(q - p - 1) : strlen(p + 1);
        if (!n && !q) break; /* a trailing slash */
        if (!n || n >= sizeof r->seg[0] || r->nseg == 6) return -1;
        memcpy(r->seg[r->nseg], p + 1, n);
        r->seg[r->nseg++][n] = 0;
        if (!q) break;
        p = q;
    }
    return 0;
}

static int path_matches(const char *pattern, const hreq_t *r) {
    hreq_t pr;
    if (split_path(pattern, &pr) || pr.nseg != r->nseg) return 0;
    for (int i = 0; i < r->nseg; i++)
        if (strcmp(pr.seg[i], "*") && strcmp(pr.seg[i], r->seg[i])) return 0;
    return 1;
}

/* The route for method and path; NULL with *path_known set if the path exists for other methods. */
static const route_t *route_of(const char *method, const hreq_t *r, int *path_known) {
    *path_known = 0;
    const route_t *star = NULL;
    for (size_t i = 0; i < NROUTES; i++) {
        if (!path_matches(routes[i].path, r)) continue;
        *path_known = 1;
        if (strcmp(routes[i].method, method)) continue;
        if (!strchr(routes[i].path, '*')) return &routes[i]; /* a literal path beats a pattern */
        if (!star) star = &routes[i];
    }
    return star;
}

/* ---- metrics -------------------------------------------------------------------------------- */

static void r_metrics(hctx_t *c) {
    coord_http_t *h = c->h;
    size_t cap = 1 << 16, n = 0;
    char *t = malloc(cap);
    if (!t) return error_to(c, 500, "INTERNAL", "out of memory");
#define OUT(...) (n += (size_t)snprintf(t + n, n < cap ? cap - n : 0, __VA_ARGS__))
    OUT("# HELP blockfed_http_requests_total HTTP requests answered, by route and status class.\n"
        "# TYPE blockfed_http_requests_total counter\n");
    for (size_t i = 0; i < NROUTES; i++)
        for (int k = 1; k <= 5; k++) {
            unsigned long long v = atomic_load(&h->requests[i][k]);
            if (v) OUT("blockfed_http_requests_total{method=\"%s\",route=\"%s\",status=\"%dxx\"} %llu\n", routes[i].method, routes[i].path, k, v);
        }
    OUT("# HELP blockfed_predict_seconds Paid prediction latency over HTTP (request to reply).\n"
        "# TYPE blockfed_predict_seconds histogram\n");
    unsigned long long cum = 0;
    for (int b = 0; b < 11; b++) {
        cum += atomic_load(&h->predict_hist[b]);
        OUT("blockfed_predict_seconds_bucket{le=\"%g\"} %llu\n", predict_bounds[b] / 1000, cum);
    }
    cum += atomic_load(&h->predict_hist[11]);
    OUT("blockfed_predict_seconds_bucket{le=\"+Inf\"} %llu\n", cum);
    OUT("blockfed_predict_seconds_sum %.6f\nblockfed_predict_seconds_count %llu\n",
        atomic_load(&h->predict_sum_us) / 1e6, atomic_load(&h->predict_count));
    bf_msg_t *rep = bridge_call(h, NULL, new_req(h, "STATS_GET"));
    const msgpack_object *st = rep && !strcmp(bf_msg_type(rep), "OK") ? bf_msg_any(rep, "result") : NULL;
    const msgpack_object *tasks = st ? bf_mp_get(st, "tasks") : NULL;
    if (tasks && tasks->type == MSGPACK_OBJECT_MAP) {
        OUT("# HELP blockfed_tasks Tasks by state.\n# TYPE blockfed_tasks gauge\n");
        for (uint32_t i = 0; i < tasks->via.map.size; i++) {
            const msgpack_object_kv *kv = &tasks->via.map.ptr[i];
            if (kv->key.type == MSGPACK_OBJECT_STR && kv->val.type == MSGPACK_OBJECT_POSITIVE_INTEGER)
                OUT("blockfed_tasks{state=\"%.*s\"} %llu\n", (int)kv->key.via.str.size, kv->key.via.str.ptr,
                    (unsigned long long)kv->val.via.u64);
        }
    }
    static const struct {
        const char *field, *name, *type, *help;
    } gauges[] = {{"rounds", "blockfed_rounds_total", "counter", "Rounds completed over every task."},
                  {"participants", "blockfed_participants", "gauge", "Participants of every task."},
                  {"participants_live", "blockfed_participants_live", "gauge", "Participants of running tasks heard from within the liveness window."},
                  {"predictions_in_flight", "blockfed_predictions_in_flight", "gauge", "Paid predictions queued or running."},
                  {"connections", "blockfed_connections", "gauge", "ZeroMQ connections tracked."},
                  {"users", "blockfed_users", "gauge", "Registered users."},
                  {"ledger_fee_operations", "blockfed_ledger_fee_operations_total", "counter", "Ledger operations of paid predictions (a hold and a settlement each)."},
                  {"ledger_group_commits", "blockfed_ledger_group_commits_total", "counter", "Ledger commits of the prediction service (one per batch)."}};
    for (size_t i = 0; st && i < sizeof gauges / sizeof gauges[0]; i++) {
        const msgpack_object *v = bf_mp_get(st, gauges[i].field);
        if (v && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
            OUT("# HELP %s %s\n# TYPE %s %s\n%s %llu\n", gauges[i].name, gauges[i].help, gauges[i].name, gauges[i].type,
                gauges[i].name, (unsigned long long)v->via.u64);
    }
    const msgpack_object *gs = st ? bf_mp_get(st, "ledger_group_sizes") : NULL, *gc = st ? bf_mp_get(st, "ledger_group_commits") : NULL,
                         *gr = st ? bf_mp_get(st, "ledger_group_requests") : NULL;
    if (gs && gs->type == MSGPACK_OBJECT_ARRAY && gs->via.array.size == 7 && gc && gr) {
        OUT("# HELP blockfed_ledger_group_size Paid-prediction requests settled per ledger commit.\n"
            "# TYPE blockfed_ledger_group_size histogram\n");
        unsigned long long cum = 0;
        for (int b = 0; b < 7; b++) {
            cum += gs->via.array.ptr[b].via.u64;
            OUT("blockfed_ledger_group_size_bucket{le=\"%d\"} %llu\n", 1 << b, cum);
        }
        OUT("blockfed_ledger_group_size_bucket{le=\"+Inf\"} %llu\nblockfed_ledger_group_size_sum %llu\n"
            "blockfed_ledger_group_size_count %llu\n", cum, (unsigned long long)gr->via.u64, (unsigned long long)gc->via.u64);
    }
    bf_msg_destroy(&rep);
#undef OUT
    if (n >= cap) n = cap - 1;
    struct MHD_Response *resp = MHD_create_response_from_buffer(n, t, MHD_RESPMEM_MUST_FREE);
    if (!resp) return free(t), error_to(c, 500, "INTERNAL", "out of memory");
    MHD_add_response_header(resp, "Content-Type", "text/plain; version=0.0.4");
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_queue_response(c->conn, 200, resp);
    MHD_destroy_response(resp);
    c->queued = 1;
}

/* ---- credentials and limits ----------------------------------------------------------------- */

/* The caller's credential: "Authorization: Bearer TOKEN", else the session cookie (then a state
 * change needs X-CSRF-Token). 0, or the error is set. */
static int authenticate(hctx_t *c, int flags) {
    hreq_t *r = c->r;
    const char *auth = MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, "Authorization");
    const char *cookie = MHD_lookup_connection_value(c->conn, MHD_COOKIE_KIND, COOKIE);
    int by_cookie = 0;
    if (auth && !strncasecmp(auth, "Bearer ", 7)) snprintf(r->token, sizeof r->token, "%s", auth + 7);
    else if (cookie && cookie[0]) snprintf(r->token, sizeof r->token, "%s", cookie), by_cookie = 1;
    else return error_to(c, 401, "UNAUTHORIZED", "log in first (a session cookie or an Authorization: Bearer token)"), -1;
    bf_err_t err;
    int rc = strlen(r->token) + 1 >= COORD_TOKEN_MAX ? COORD_WA_BAD : coord_webauth_resolve(c->h->auth, r->token, &r->cred, &err);
    if (rc < 0) return error_to(c, 500, "INTERNAL", "%s", err.msg), -1;
    if (rc) return error_to(c, 401, "UNAUTHORIZED", "the credential is unknown, expired or revoked"), -1;
    if ((flags & R_OPERATOR) && r->cred.kind != COORD_CRED_OPERATOR)
        return error_to(c, 403, "FORBIDDEN", "this needs the operator's credential"), -1;
    if (!(flags & R_OPERATOR) && r->cred.kind == COORD_CRED_OPERATOR)
        return error_to(c, 403, "FORBIDDEN", "the operator's credential is not a user's"), -1;
    if ((flags & R_CHANGE) && by_cookie) {
        const char *csrf = MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, "X-CSRF-Token");
        size_t n = strlen(r->cred.csrf);
        if (!csrf || strlen(csrf) != n || CRYPTO_memcmp(csrf, r->cred.csrf, n))
            return error_to(c, 403, "FORBIDDEN", "a change made with the session cookie needs its X-CSRF-Token header"), -1;
    }
    r->authed = 1;
    return 0;
}

static int inflight_take(coord_http_t *h, const char *key) {
    pthread_mutex_lock(&h->mu);
    int *n = zhashx_lookup(h->inflight, key);
    if (!n && (n = calloc(1, sizeof *n))) zhashx_insert(h->inflight, key, n);
    int ok = n && *n < HTTP_INFLIGHT_PER_USER;
    if (ok) ++*n;
    pthread_mutex_unlock(&h->mu);
    return ok ? 0 : -1;
}

static void inflight_give(coord_http_t *h, const char *key) {
    pthread_mutex_lock(&h->mu);
    int *n = zhashx_lookup(h->inflight, key);
    if (n && --*n <= 0) zhashx_delete(h->inflight, key);
    pthread_mutex_unlock(&h->mu);
}

/* ---- libmicrohttpd callbacks ---------------------------------------------------------------- */

static enum MHD_Result on_part(void *cls, enum MHD_ValueKind kind, const char *key, const char *filename,
                               const char *content_type, const char *encoding, const char *data, uint64_t off,
                               size_t size) {
    (void)kind, (void)filename, (void)content_type, (void)encoding;
    hreq_t *r = cls;
    if (!key || strcmp(key, "image")) {
        r->bad_part = 1;
        return MHD_YES; /* answered once the body is in */
    }
    if (off == 0) {
        if (r->nimages == HTTP_PREDICT_MAX) return r->too_big = 1, MHD_NO; /* one image too many */
        r->nimages++;
    }
    buf_t *b = &r->images[r->nimages - 1];
    if (size && buf_append(b, data, size, BF_PROTO_MAX_IMAGE)) return r->too_big = 1, MHD_NO;
    return MHD_YES;
}

static void client_addr(struct MHD_Connection *conn, char *out, size_t cap) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = ci ? ci->client_addr : NULL;
    snprintf(out, cap, "?");
    if (sa && sa->sa_family == AF_INET) inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, (socklen_t)cap);
    else if (sa && sa->sa_family == AF_INET6) inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, out, (socklen_t)cap);
}

/* The first call for a request: route, credential, limits and the declared body size, all before
 * any of the body is read. 0 to go on reading, else the error is in c. */
static int admit(hctx_t *c, const char *method, const char *url) {
    hreq_t *r = c->r;
    int known;
    if (split_path(url, r)) return error_to(c, 404, "NOT_FOUND", "no such path"), -1;
    r->route = route_of(method, r, &known);
    if (!r->route && known) return error_to(c, 405, "METHOD_NOT_ALLOWED", "%.8s is not served on this path", method), -1;
    if (!r->route) return error_to(c, 404, "NOT_FOUND", "no such path"), -1;
    int flags = r->route->flags;
    if (flags & R_OPERATOR && c->h->metrics_public && r->route->fn == r_metrics) flags &= ~R_OPERATOR;
    else if ((flags & (R_USER | R_OPERATOR)) && authenticate(c, flags)) return -1;
    if ((flags & R_LIMITED) && inflight_take(c->h, r->cred.key))
        return error_to(c, 429, "RATE_LIMITED", "at most %d requests in flight per account", HTTP_INFLIGHT_PER_USER), -1;
    r->inflight = (flags & R_LIMITED) != 0;
    r->body_max = flags & R_UPLOAD ? HTTP_UPLOAD_MAX : flags & R_JSON ? HTTP_JSON_MAX : 0;
    const char *cl = MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, "Content-Length");
    if (cl && strtoull(cl, NULL, 10) > r->body_max)
        return error_to(c, 413, "TOO_LARGE", "this route takes at most %zu bytes of body", r->body_max), -1;
    const char *ct = MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, "Content-Type");
    if ((flags & R_UPLOAD) && ct && !strncasecmp(ct, "multipart/form-data", 19) &&
        !(r->pp = MHD_create_post_processor(c->conn, 64 << 10, on_part, r)))
        return error_to(c, 400, "BAD_REQUEST", "unreadable multipart/form-data (no boundary?)"), -1;
    return 0;
}

static void finish(hctx_t *c) {
    hreq_t *r = c->r;
    if (r->route && (r->route->flags & R_JSON)) {
        c->in = cJSON_ParseWithLength(r->body.len ? (const char *)r->body.data : "", r->body.len);
        if (!c->in) return error_to(c, 400, "BAD_REQUEST", "the body is not JSON");
    }
    r->route->fn(c);
    cJSON_Delete((cJSON *)c->in);
    c->in = NULL;
    if (!c->status) c->status = 200;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **req_cls) {
    (void)version;
    coord_http_t *h = cls;
    hreq_t *r = *req_cls;
    hctx_t c = {.h = h, .conn = conn, .r = r};
    if (!r) { /* first call: headers only */
        if (!(r = calloc(1, sizeof *r))) return MHD_NO;
        *req_cls = r;
        c.r = r;
        r->t0_us = now_us();
        client_addr(conn, r->addr, sizeof r->addr);
        if (admit(&c, method, url)) { /* answered once the body (if any) is in */
            r->early = c.out, r->early_status = c.status;
            return MHD_YES;
        }
        return MHD_YES;
    }
    if (r->early) {
        if (*upload_size) {
            r->discarded += *upload_size;
            *upload_size = 0;
            return r->discarded > HTTP_DISCARD_MAX ? MHD_NO : MHD_YES;
        }
        c.out = r->early, c.status = r->early_status;
        r->early = NULL;
        goto answer;
    }
    if (*upload_size && now_us() - r->t0_us > HTTP_BODY_S * 1000000LL) {
        coord_log("http: %s sent a body for more than %d s: closed", r->addr, HTTP_BODY_S);
        return MHD_NO; /* a slow drip that never idles long enough for HTTP_IDLE_S */
    }
    if (*upload_size) { /* a piece of the body */
        r->received += *upload_size;
        if (r->received > r->body_max) r->overflow = 1;
        else if (!r->bad_body && (r->pp ? MHD_post_process(r->pp, upload, *upload_size) != MHD_YES
                                        : buf_append(&r->body, upload, *upload_size, r->body_max)))
            r->bad_body = 1;
        *upload_size = 0;
        /* over the cap (a chunked body declares no length): the connection is closed */
        return r->overflow ? MHD_NO : MHD_YES;
    }
    if (r->overflow) return MHD_NO;
    if (r->bad_body && r->too_big)
        error_to(&c, 413, "TOO_LARGE", "at most %d images of %u MiB each", HTTP_PREDICT_MAX, BF_PROTO_MAX_IMAGE >> 20);
    else if (r->bad_body)
        error_to(&c, 400, "BAD_REQUEST", "the body could not be read as %s", r->pp ? "multipart/form-data" : "sent");
    else finish(&c);
answer:;
    size_t ri = r->route ? (size_t)(r->route - routes) : 0;
    enum MHD_Result rc = c.queued ? MHD_YES : respond(&c);
    if (r->route && ri < 64) atomic_fetch_add(&h->requests[ri][status_class(c.queued ? 200 : c.status)], 1);
    cJSON_Delete(c.out);
    return rc;
}

static void on_done(void *cls, struct MHD_Connection *conn, void **req_cls, enum MHD_RequestTerminationCode why) {
    (void)conn, (void)why;
    coord_http_t *h = cls;
    hreq_t *r = *req_cls;
    if (!r) return;
    if (r->inflight) inflight_give(h, r->cred.key);
    if (r->pp) MHD_destroy_post_processor(r->pp);
    cJSON_Delete(r->early);
    free(r->body.data);
    for (int i = 0; i < r->nimages; i++) free(r->images[i].data);
    free(r);
    *req_cls = NULL;
}

static void on_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    line[strcspn(line, "\n")] = 0;
    coord_log("http: %s", line);
}

/* ---- start and stop ------------------------------------------------------------------------- */

static char *read_pem(const char *path, bf_err_t *err) {
    uint8_t *b = NULL;
    size_t n = 0;
    if (bf_file_read(path, 1 << 20, &b, &n, err)) return NULL;
    char *s = realloc(b, n + 1);
    if (!s) return free(b), bf_err_set(err, "out of memory"), NULL;
    s[n] = 0;
    return s;
}

/* ADDR:PORT (IPv4) into sa; 0, or -1. */
static int parse_addr(const char *spec, struct sockaddr_in *sa) {
    char host[64];
    const char *colon = strrchr(spec, ':');
    if (!colon || (size_t)(colon - spec) >= sizeof host) return -1;
    memcpy(host, spec, (size_t)(colon - spec));
    host[colon - spec] = 0;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    if (!strcmp(host, "*") || !strcmp(host, "0.0.0.0")) sa->sin_addr.s_addr = htonl(INADDR_ANY);
    else if (!strcmp(host, "localhost")) sa->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    else if (inet_pton(AF_INET, host, &sa->sin_addr) != 1) return -1;
    return *end || port < 0 || port > 65535 ? -1 : 0;
}

coord_http_t *coord_http_start(const coord_opts_t *o, coord_webauth_t *auth, bf_err_t *err) {
    struct sockaddr_in sa;
    if (parse_addr(o->http, &sa)) return bf_err_set(err, "--http %s: want ADDR:PORT (IPv4)", o->http), NULL;
    int loopback = (ntohl(sa.sin_addr.s_addr) >> 24) == 127;
    if (o->http_insecure && !loopback)
        return bf_err_set(err, "--http-insecure serves plain HTTP, so only on a loopback address (127.x.x.x)"), NULL;
    coord_http_t *h = calloc(1, sizeof *h);
    if (!h) return bf_err_set(err, "out of memory"), NULL;
    h->auth = auth;
    snprintf(h->ledger_path, sizeof h->ledger_path, "%s/ledger.db", o->home);
    h->tls = !o->http_insecure;
    h->metrics_public = o->metrics_public;
    pthread_mutex_init(&h->mu, NULL);
    if (pthread_key_create(&h->sock_key, bridge_sock_free)) {
        bf_err_set(err, "cannot make the HTTP threads' socket key");
        coord_http_stop(&h);
        return NULL;
    }
    h->sock_key_ok = 1;
    h->inflight = zhashx_new();
    zhashx_set_destructor(h->inflight, (zhashx_destructor_fn *)zstr_free);
    char cert[4200], key[4200];
    snprintf(cert, sizeof cert, "%s", o->tls_cert ? o->tls_cert : "");
    snprintf(key, sizeof key, "%s", o->tls_key ? o->tls_key : "");
    if (!cert[0]) snprintf(cert, sizeof cert, "%s/https.crt", o->home);
    if (!key[0]) snprintf(key, sizeof key, "%s/https.key", o->home);
    if (h->tls && (!(h->cert_pem = read_pem(cert, err)) || !(h->key_pem = read_pem(key, err)))) {
        bf_err_prefix(err, "TLS (blockfed-coordinator init writes a certificate, or give --tls-cert/--tls-key): ");
        coord_http_stop(&h);
        return NULL;
    }
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL_INTERNAL_THREAD | MHD_USE_ERROR_LOG;
    if (h->tls) flags |= MHD_USE_TLS;
    struct MHD_OptionItem tls[] = {
        {MHD_OPTION_HTTPS_MEM_CERT, 0, h->cert_pem},
        {MHD_OPTION_HTTPS_MEM_KEY, 0, h->key_pem},
        /* TLS 1.2 and 1.3 only */
        {MHD_OPTION_HTTPS_PRIORITIES, 0, "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"},
        {MHD_OPTION_END, 0, NULL}};
    h->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, h, MHD_OPTION_EXTERNAL_LOGGER, on_log, NULL,
                            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                            MHD_OPTION_NOTIFY_COMPLETED, on_done, h, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)HTTP_IDLE_S,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)HTTP_MAX_CONNS, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
                            (unsigned)HTTP_MAX_CONNS_PER_IP, MHD_OPTION_ARRAY, h->tls ? tls : tls + 3, MHD_OPTION_END);
    if (!h->d) {
        bf_err_set(err, "cannot serve HTTP%s on %s (address in use, or a bad certificate/key)", h->tls ? "S" : "", o->http);
        coord_http_stop(&h);
        return NULL;
    }
    char fp[COORD_TLS_FP_MAX] = "";
    if (h->tls && coord_tls_fingerprint(cert, fp, NULL) == 0)
        coord_log("HTTPS API on %s; dashboard: https://%s/ (certificate SHA-256 fingerprint %s)", o->http, o->http, fp);
    else
        coord_log("HTTP%s API on %s%s; dashboard: http%s://%s/", h->tls ? "S" : "", o->http,
                  h->tls ? "" : " (plain HTTP: --http-insecure)", h->tls ? "s" : "", o->http);
    return h;
}

void coord_http_stop(coord_http_t **p) {
    coord_http_t *h = p ? *p : NULL;
    if (!h) return;
    atomic_store(&h->stopping, 1);
    if (h->d) MHD_stop_daemon(h->d); /* joins the connection threads: their sockets close with them */
    if (h->sock_key_ok) pthread_key_delete(h->sock_key);
    zhashx_destroy(&h->inflight);
    pthread_mutex_destroy(&h->mu);
    if (h->key_pem) OPENSSL_cleanse(h->key_pem, strlen(h->key_pem));
    free(h->cert_pem);
    free(h->key_pem);
    free(h);
    *p = NULL;
}

/* proto.c: the BlockFed wire protocol: schema table, message class, encoder and decoder (the
 * ZAP handler is zap.c).
 *
 * One validation path serves both directions: decode_core checks a header buffer plus the
 * payload frame sizes against the schema, and bf_msg_encode runs it on the bytes it just packed,
 * so what we send and what we accept cannot drift apart. */
#include "bf_proto.h"

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bf_mp.h"
#include "bf_text.h"

/* ---- schema ------------------------------------------------------------------------------ */

typedef enum { K_STR, K_UINT, K_INT, K_FLOAT, K_BOOL, K_ANY } kind_t;
/* TEXT: any UTF-8 without NUL. NAME: [A-Za-z0-9_.-], not starting with '.' or '-' (names end up
 * in file paths and command lines, so "..", ".hidden" and "-rf" are refused). HEX: lowercase hex. */
typedef enum { CS_TEXT, CS_NAME, CS_HEX } charset_t;
typedef enum { FR_BYTES, FR_F32 } frame_kind_t;

typedef struct {
    const char *key;
    uint8_t kind, cs, opt, lo_open; /* lo_open: float lower bound is exclusive */
    uint64_t lo, hi;                /* str: length in bytes; uint: value */
    int64_t ilo, ihi;
    double flo, fhi;
} field_t;

#define MAX_FIELDS 24
#define MAX_PAYLOAD (BF_PROTO_MAX_FRAMES - 1)

typedef struct bf_msg bf_msg_t;
typedef struct schema schema_t;
/* Rules that span fields and frames (BLOCK: frame sizes follow the declared shape). */
typedef int (*cross_check_fn)(const bf_msg_t *m, const size_t *flens, size_t nframes, bf_err_t *err);

struct schema {
    const char *type;
    uint8_t request;
    uint8_t fmin, fmax, fkind; /* payload frames: count range and kind */
    cross_check_fn check;
    field_t f[MAX_FIELDS];     /* ends at the first NULL key */
};

#define F_TEXT(k, max) {.key = k, .kind = K_STR, .cs = CS_TEXT, .hi = max}
#define F_TEXT_OPT(k, max) {.key = k, .kind = K_STR, .cs = CS_TEXT, .opt = 1, .hi = max}
#define F_NAME(k) {.key = k, .kind = K_STR, .cs = CS_NAME, .lo = 1, .hi = 64}
#define F_NAME_MAX(k, max) {.key = k, .kind = K_STR, .cs = CS_NAME, .lo = 1, .hi = max}
#define F_HEX64(k) {.key = k, .kind = K_STR, .cs = CS_HEX, .lo = 64, .hi = 64}
#define F_HEX64_OPT(k) {.key = k, .kind = K_STR, .cs = CS_HEX, .opt = 1, .lo = 64, .hi = 64}
#define F_UINT(k, l, h) {.key = k, .kind = K_UINT, .lo = l, .hi = h}
#define F_UINT_OPT(k, l, h) {.key = k, .kind = K_UINT, .opt = 1, .lo = l, .hi = h}
#define F_U64(k) F_UINT(k, 0, UINT64_MAX)
#define F_U64_OPT(k) F_UINT_OPT(k, 0, UINT64_MAX)
#define F_FLOAT(k, l, h) {.key = k, .kind = K_FLOAT, .flo = l, .fhi = h}
#define F_FLOAT_OPT(k, l, h) {.key = k, .kind = K_FLOAT, .opt = 1, .flo = l, .fhi = h}
#define F_FLOAT_LO_OPEN(k, l, h) {.key = k, .kind = K_FLOAT, .lo_open = 1, .flo = l, .fhi = h}
#define F_BOOL(k) {.key = k, .kind = K_BOOL}
#define F_ANY(k) {.key = k, .kind = K_ANY}
#define F_ANY_OPT(k) {.key = k, .kind = K_ANY, .opt = 1}

static int check_block_shape(const bf_msg_t *m, const size_t *flens, size_t nframes, bf_err_t *err);
static int check_image_frames(const bf_msg_t *m, const size_t *flens, size_t nframes, bf_err_t *err);

/* The protocol. docs/PROTOCOL.md mirrors this table; keep them in step. Ranges on the replies
 * match the requests that set them, so a client can size buffers from a validated ROUND/BLOCK. */
static const schema_t schemas[] = {
    /* requests: client -> coordinator */
    {"HELLO", 1, 0, 0, FR_BYTES, NULL, {{0}}},
    {"PING", 1, 0, 0, FR_BYTES, NULL, {{0}}},
    {"REGISTER", 1, 0, 0, FR_BYTES, NULL, {F_NAME_MAX("name", 32)}},
    {"RECHARGE", 1, 0, 0, FR_BYTES, NULL, {F_TEXT("amount", 24), F_HEX64_OPT("request")}},
    {"TASK_CREATE", 1, 0, 0, FR_BYTES, NULL,
     {F_NAME("task"), F_TEXT("name", 128), F_TEXT_OPT("description", 1024), F_TEXT("model", 16), F_NAME("dataset"),
      F_UINT("rounds", 1, 10000), F_TEXT("mode", 16), F_TEXT_OPT("fee", 24), F_TEXT_OPT("pool", 24),
      F_UINT("min_clients", 1, 10000), F_UINT("local_epochs", 1, 100), F_UINT("batch", 1, 1024),
      F_FLOAT_LO_OPEN("lr", 0, 10), F_UINT("round_timeout", 1, 86400), F_TEXT("partition", 32), F_TEXT("strategy", 32),
      F_FLOAT_OPT("mu", 0, 100), F_U64_OPT("seed"), F_TEXT_OPT("base_fee", 24), F_TEXT_OPT("rate", 41),
      F_UINT_OPT("value_images", 100, 100000), F_UINT_OPT("own_data_cap", 1, 1000000000), F_HEX64_OPT("request")}},
    {"TASK_LIST", 1, 0, 0, FR_BYTES, NULL, {{0}}},
    {"TASK_STATUS", 1, 0, 0, FR_BYTES, NULL, {F_NAME("task")}},
    {"TASK_CANCEL", 1, 0, 0, FR_BYTES, NULL, {F_NAME("task")}},
    {"JOIN", 1, 0, 0, FR_BYTES, NULL, {F_NAME("task"), F_BOOL("own_data"), F_UINT_OPT("samples", 0, 1000000000)}},
    {"LEAVE", 1, 0, 0, FR_BYTES, NULL, {F_NAME("task")}},
    {"BLOCKS_BUY", 1, 0, 0, FR_BYTES, NULL, {F_NAME("task"), F_UINT("n", 1, 1000), F_HEX64_OPT("request")}},
    {"BLOCK_GET", 1, 0, 0, FR_BYTES, NULL, {F_NAME("task"), F_UINT("block", 0, 10000000)}},
    {"ROUND_GET", 1, 0, 0, FR_BYTES, NULL, {F_NAME("task")}},
    {"UPDATE", 1, 2, 2, FR_F32, NULL,
     {F_NAME("task"), F_UINT("round", 0, 1000000), F_UINT("samples", 1, 1000000000), F_FLOAT("loss", 0, 1e6)}},
    {"ASSETS_GET", 1, 0, 0, FR_BYTES, NULL, {{0}}},
    {"HISTORY_GET", 1, 0, 0, FR_BYTES, NULL, {F_UINT_OPT("limit", 1, 10000), F_U64_OPT("before")}},
    {"MODEL_GET", 1, 0, 0, FR_BYTES, NULL, {F_NAME("task")}},
    {"PREDICT", 1, 1, 64, FR_BYTES, check_image_frames,
     {F_NAME("task"), F_UINT("top", 1, 256), F_HEX64_OPT("request")}},
    /* web credentials of the account (docs/HTTP_API.md): a PBKDF2 hash the client derived, an API token */
    {"PASSWORD_SET", 1, 0, 0, FR_BYTES, NULL,
     {F_TEXT("salt", 32), F_UINT("iterations", 600000, 100000000), F_HEX64("hash")}},
    {"TOKEN_CREATE", 1, 0, 0, FR_BYTES, NULL, {F_TEXT("name", 64)}},
    /* the coordinator's gauges for /metrics: answered only on the HTTP bridge (operator route) */
    {"STATS_GET", 1, 0, 0, FR_BYTES, NULL, {{0}}},
    {"WITHDRAW", 1, 0, 0, FR_BYTES, NULL, {F_TEXT("amount", 24), F_HEX64_OPT("request")}},
    {"STATEMENT_GET", 1, 0, 0, FR_BYTES, NULL,
     {F_TEXT_OPT("currency", 8), F_U64_OPT("from"), F_U64_OPT("to"), F_U64_OPT("after")}},
    {"PARTICIPATIONS_GET", 1, 0, 0, FR_BYTES, NULL, {{0}}},
    {"REVENUES_GET", 1, 0, 0, FR_BYTES, NULL, {F_UINT_OPT("limit", 1, 1000)}},
    {"WITHDRAWALS_GET", 1, 0, 0, FR_BYTES, NULL, {{0}}},
    /* replies: coordinator -> client */
    {"WELCOME", 0, 0, 0, FR_BYTES, NULL, {F_TEXT("server", 64), F_TEXT_OPT("user", 32)}},
    {"PONG", 0, 0, 0, FR_BYTES, NULL, {{0}}},
    {"OK", 0, 0, 0, FR_BYTES, NULL, {F_ANY_OPT("result")}},
    {"TASKS", 0, 0, 0, FR_BYTES, NULL, {F_ANY("tasks")}},
    {"STATUS", 0, 0, 0, FR_BYTES, NULL, {F_ANY("status")}},
    {"JOINED", 0, 0, 0, FR_BYTES, NULL, {F_NAME("task"), F_ANY("blocks"), F_UINT("block_size", 1, 1000000)}},
    {"BLOCK", 0, 2, 2, FR_BYTES, check_block_shape,
     {F_NAME("task"), F_UINT("block", 0, 10000000), F_HEX64("sha256"), F_UINT("n", 1, 1000000), F_UINT("c", 1, 4),
      F_UINT("h", 1, 1024), F_UINT("w", 1, 1024), F_UINT("classes", 2, 256)}},
    {"ROUND", 0, 2, 2, FR_F32, NULL,
     {F_NAME("task"), F_UINT("round", 0, 1000000), F_UINT("rounds", 1, 10000), F_TEXT("arch", 16), F_UINT("c", 1, 4),
      F_UINT("h", 1, 1024), F_UINT("w", 1, 1024), F_UINT("classes", 2, 256), F_UINT("local_epochs", 1, 100),
      F_UINT("batch", 1, 1024), F_FLOAT_LO_OPEN("lr", 0, 10), F_FLOAT("mu", 0, 100), F_U64("seed"), F_U64("deadline_ms"),
      F_ANY("preprocess")}},
    {"WAIT", 0, 0, 0, FR_BYTES, NULL, {F_UINT("retry_ms", 1, 600000), F_TEXT_OPT("reason", 128)}},
    {"DONE", 0, 0, 0, FR_BYTES, NULL, {F_NAME("task"), F_HEX64_OPT("result_hash")}},
    {"ASSETS", 0, 0, 0, FR_BYTES, NULL, {F_ANY("assets")}},
    {"HISTORY", 0, 0, 0, FR_BYTES, NULL, {F_ANY("entries")}},
    {"STATEMENT", 0, 0, 0, FR_BYTES, NULL, {F_ANY("statement")}},
    {"PARTICIPATIONS", 0, 0, 0, FR_BYTES, NULL, {F_ANY("participations")}},
    {"REVENUES", 0, 0, 0, FR_BYTES, NULL, {F_ANY("revenues")}},
    {"WITHDRAWALS", 0, 0, 0, FR_BYTES, NULL, {F_ANY("withdrawals")}},
    {"MODEL", 0, 1, 1, FR_BYTES, NULL, {F_NAME("task"), F_HEX64("sha256")}},
    {"PREDICTION", 0, 0, 0, FR_BYTES, NULL,
     {F_ANY("results"), F_TEXT("fee", 24), F_TEXT("balance", 24), F_U64_OPT("usage"), F_HEX64_OPT("model")}},
    {"ERROR", 0, 0, 0, FR_BYTES, NULL, {F_NAME_MAX("code", 32), F_TEXT("message", 512)}},
};
#define NSCHEMAS (sizeof schemas / sizeof schemas[0])

static const char *const code_names[BF_PROTO_CODE_COUNT] = {
    "BAD_REQUEST", "UNKNOWN_TYPE", "UNAUTHORIZED", "FORBIDDEN", "NOT_FOUND", "CONFLICT",
    "INSUFFICIENT_FUNDS", "STALE", "TOO_LARGE", "BAD_STATE", "RATE_LIMITED", "INTERNAL", "LIMIT"};

/* ---- the message ------------------------------------------------------------------------- */

typedef struct {
    int set;
    uint64_t u;
    int64_t i;
    double d;
    int b;
    char *s;                    /* str: NUL-terminated copy */
    const msgpack_object *any;  /* any: into hdr_u (decoded) or any_u (built) */
    uint8_t *any_buf;           /* built any: the packed bytes any_u references */
    msgpack_unpacked any_u;
} slot_t;

typedef struct {
    uint8_t *data; /* NULL for an empty owned frame */
    size_t len;
    zframe_t *zf;  /* decoded from czmq: the frame that owns data */
    bf_msg_free_fn *release; /* a shared frame (bf_msg_add_frame_ref): release(data, hint) */
    void *hint;
} frame_t;

struct bf_msg {
    const schema_t *s;
    uint64_t id;
    slot_t slot[MAX_FIELDS];
    frame_t fr[MAX_PAYLOAD];
    size_t nfr;
    uint8_t *hdr;            /* decoded: header copy that hdr_u's objects point into */
    msgpack_unpacked hdr_u;
    int has_hdr;
    char *user_id;           /* decoded from a socket: the connection's ZAP User-Id, if not empty */
    bf_err_t set_err;        /* first setter failure, reported by encode */
};

static const uint8_t empty_frame[1] = {0};

static const schema_t *find_schema(const char *type, size_t n) {
    for (size_t i = 0; i < NSCHEMAS; i++)
        if (strlen(schemas[i].type) == n && !memcmp(schemas[i].type, type, n)) return &schemas[i];
    return NULL;
}

static int find_field(const schema_t *s, const char *key, size_t n) {
    for (int i = 0; i < MAX_FIELDS && s->f[i].key; i++)
        if (strlen(s->f[i].key) == n && !memcmp(s->f[i].key, key, n)) return i;
    return -1;
}

/* Untrusted bytes quoted in an error message: printable ASCII, at most 40 of them. */
static const char *quote(char *out, size_t cap, const char *p, size_t n) {
    size_t o = 0;
    for (size_t i = 0; i < n && o + 5 < cap; i++) {
        if (i == 40) {
            memcpy(out + o, "...", 3);
            o += 3;
            break;
        }
        unsigned char c = (unsigned char)p[i];
        if (c >= 0x20 && c < 0x7f && c != '\\') out[o++] = (char)c;
        else o += (size_t)snprintf(out + o, cap - o, "\\x%02x", c);
    }
    out[o] = 0;
    return out;
}

static bool name_char(uint8_t c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
           c == '-';
}

/* ---- value rules (shared by setters and the decoder) -------------------------------------- */

static int check_str(const schema_t *s, const field_t *f, const char *p, size_t n, bf_err_t *err) {
    if (n < f->lo || n > f->hi)
        return bf_err_set(err, "%s.%s: string of %zu bytes, must be %llu..%llu", s->type, f->key, n,
                          (unsigned long long)f->lo, (unsigned long long)f->hi);
    const uint8_t *u = (const uint8_t *)p;
    for (size_t i = 0; i < n;) {
        if (u[i] == 0) return bf_err_set(err, "%s.%s: NUL byte at offset %zu", s->type, f->key, i);
        size_t k = bf_utf8_len(u + i, n - i);
        if (!k) return bf_err_set(err, "%s.%s: invalid UTF-8 at offset %zu", s->type, f->key, i);
        if (f->cs == CS_NAME && !(name_char(u[i]) && (i > 0 || (u[i] != '.' && u[i] != '-'))))
            return bf_err_set(err, "%s.%s: byte %zu is not allowed in a name ([A-Za-z0-9_.-], not starting with . or -)",
                              s->type, f->key, i);
        if (f->cs == CS_HEX && !((u[i] >= '0' && u[i] <= '9') || (u[i] >= 'a' && u[i] <= 'f')))
            return bf_err_set(err, "%s.%s: byte %zu is not lowercase hex", s->type, f->key, i);
        i += k;
    }
    return 0;
}

static int check_uint(const schema_t *s, const field_t *f, uint64_t v, bf_err_t *err) {
    if (v < f->lo || v > f->hi)
        return bf_err_set(err, "%s.%s: %llu out of range [%llu, %llu]", s->type, f->key, (unsigned long long)v,
                          (unsigned long long)f->lo, (unsigned long long)f->hi);
    return 0;
}

/* No int field is in the table today; an int field without bounds takes all of int64. */
static int check_int(const schema_t *s, const field_t *f, int64_t v, bf_err_t *err) {
    if ((f->ilo || f->ihi) && (v < f->ilo || v > f->ihi))
        return bf_err_set(err, "%s.%s: %lld out of range [%lld, %lld]", s->type, f->key, (long long)v,
                          (long long)f->ilo, (long long)f->ihi);
    return 0;
}

static int check_float(const schema_t *s, const field_t *f, double v, bf_err_t *err) {
    if (!isfinite(v)) return bf_err_set(err, "%s.%s: not a finite number", s->type, f->key);
    if ((f->lo_open ? v <= f->flo : v < f->flo) || v > f->fhi)
        return bf_err_set(err, "%s.%s: %g out of range %c%g, %g]", s->type, f->key, v, f->lo_open ? '(' : '[', f->flo,
                          f->fhi);
    return 0;
}

static int check_block_shape(const bf_msg_t *m, const size_t *flens, size_t nframes, bf_err_t *err) {
    (void)nframes;
    uint64_t n = bf_msg_uint(m, "n", 0), px;
    if (__builtin_mul_overflow(n, bf_msg_uint(m, "c", 0), &px) || __builtin_mul_overflow(px, bf_msg_uint(m, "h", 0), &px) ||
        __builtin_mul_overflow(px, bf_msg_uint(m, "w", 0), &px))
        return bf_err_set(err, "BLOCK: shape overflows");
    if (flens[0] != px)
        return bf_err_set(err, "BLOCK: pixel frame has %zu bytes, shape n*c*h*w needs %llu", flens[0], (unsigned long long)px);
    if (flens[1] != n)
        return bf_err_set(err, "BLOCK: label frame has %zu bytes, n = %llu", flens[1], (unsigned long long)n);
    return 0;
}

/* An encoded image larger than BF_PROTO_MAX_IMAGE is refused before anyone tries to decode it. */
static int check_image_frames(const bf_msg_t *m, const size_t *flens, size_t nframes, bf_err_t *err) {
    (void)m;
    for (size_t i = 0; i < nframes; i++)
        if (flens[i] > BF_PROTO_MAX_IMAGE)
            return bf_err_set(err, "PREDICT: image %zu has %zu bytes, more than the %u-byte limit", i + 1, flens[i],
                              BF_PROTO_MAX_IMAGE);
    return 0;
}

/* ---- construction ------------------------------------------------------------------------ */

static bf_msg_t *msg_alloc(const schema_t *s, uint64_t id) {
    bf_msg_t *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->s = s;
    m->id = id;
    return m;
}

bf_msg_t *bf_msg_new(const char *type, uint64_t id) {
    const schema_t *s = type ? find_schema(type, strlen(type)) : NULL;
    return s ? msg_alloc(s, id) : NULL;
}

static void slot_clear(slot_t *sl) {
    free(sl->s);
    if (sl->any_buf) {
        msgpack_unpacked_destroy(&sl->any_u);
        free(sl->any_buf);
    }
    memset(sl, 0, sizeof *sl);
}

static void frame_clear(frame_t *f) {
    if (f->zf) zframe_destroy(&f->zf);
    else if (f->release) f->release(f->data, f->hint);
    else free(f->data);
    memset(f, 0, sizeof *f);
}

void bf_msg_destroy(bf_msg_t **p) {
    if (!p || !*p) return;
    bf_msg_t *m = *p;
    for (int i = 0; i < MAX_FIELDS; i++) slot_clear(&m->slot[i]);
    for (size_t i = 0; i < m->nfr; i++) frame_clear(&m->fr[i]);
    if (m->has_hdr) msgpack_unpacked_destroy(&m->hdr_u);
    free(m->hdr);
    free(m->user_id);
    free(m);
    *p = NULL;
}

const char *bf_msg_type(const bf_msg_t *m) { return m->s->type; }
const char *bf_msg_user_id(const bf_msg_t *m) { return m->user_id; }
uint64_t bf_msg_id(const bf_msg_t *m) { return m->id; }

/* Records the first setter failure so that encode can report it; returns -1. */
static int set_fail(bf_msg_t *m, const char *key, const bf_err_t *e) {
    if (!m->set_err.msg[0]) bf_err_set(&m->set_err, "setting '%s': %s", key, e->msg);
    return -1;
}

/* The slot for key if it has the wanted kind (uint and int count as one family here). */
static slot_t *slot_for(bf_msg_t *m, const char *key, int kind, const field_t **fp) {
    bf_err_t e;
    int i = find_field(m->s, key, strlen(key));
    if (i < 0) {
        bf_err_set(&e, "%s has no field '%s'", m->s->type, key);
        set_fail(m, key, &e);
        return NULL;
    }
    const field_t *f = &m->s->f[i];
    bool intish = (kind == K_UINT || kind == K_INT) && (f->kind == K_UINT || f->kind == K_INT);
    if (f->kind != kind && !intish) {
        bf_err_set(&e, "%s.%s has another kind", m->s->type, key);
        set_fail(m, key, &e);
        return NULL;
    }
    *fp = f;
    return &m->slot[i];
}

int bf_msg_set_str(bf_msg_t *m, const char *key, const char *v) {
    const field_t *f;
    slot_t *sl = slot_for(m, key, K_STR, &f);
    bf_err_t e;
    if (!sl) return -1;
    if (!v) return set_fail(m, key, &(bf_err_t){"NULL string"});
    if (check_str(m->s, f, v, strlen(v), &e)) return set_fail(m, key, &e);
    char *copy = strdup(v);
    if (!copy) return set_fail(m, key, &(bf_err_t){"out of memory"});
    slot_clear(sl);
    sl->s = copy;
    sl->set = 1;
    return 0;
}

/* Stores an integer into a uint or int slot after checking it against that field's rule. */
static int set_integer(bf_msg_t *m, const char *key, bool negative, uint64_t u, int64_t i) {
    const field_t *f;
    slot_t *sl = slot_for(m, key, K_UINT, &f);
    bf_err_t e;
    if (!sl) return -1;
    if (f->kind == K_UINT) {
        if (negative) return set_fail(m, key, &(bf_err_t){"negative value for a uint field"});
        if (check_uint(m->s, f, u, &e)) return set_fail(m, key, &e);
    } else {
        if (!negative && u > INT64_MAX) return set_fail(m, key, &(bf_err_t){"value above INT64_MAX"});
        if (!negative) i = (int64_t)u;
        if (check_int(m->s, f, i, &e)) return set_fail(m, key, &e);
    }
    slot_clear(sl);
    sl->u = negative ? 0 : u;
    sl->i = negative ? i : (int64_t)u;
    sl->set = 1;
    return 0;
}

int bf_msg_set_uint(bf_msg_t *m, const char *key, uint64_t v) { return set_integer(m, key, false, v, 0); }

int bf_msg_set_int(bf_msg_t *m, const char *key, int64_t v) {
    return v < 0 ? set_integer(m, key, true, 0, v) : set_integer(m, key, false, (uint64_t)v, 0);
}

int bf_msg_set_double(bf_msg_t *m, const char *key, double v) {
    const field_t *f;
    slot_t *sl = slot_for(m, key, K_FLOAT, &f);
    bf_err_t e;
    if (!sl) return -1;
    if (check_float(m->s, f, v, &e)) return set_fail(m, key, &e);
    slot_clear(sl);
    sl->d = v;
    sl->set = 1;
    return 0;
}

int bf_msg_set_bool(bf_msg_t *m, const char *key, int v) {
    const field_t *f;
    slot_t *sl = slot_for(m, key, K_BOOL, &f);
    if (!sl) return -1;
    slot_clear(sl);
    sl->b = v ? 1 : 0;
    sl->set = 1;
    return 0;
}

int bf_msg_set_any(bf_msg_t *m, const char *key, const void *bytes, size_t len) {
    const field_t *f;
    slot_t *sl = slot_for(m, key, K_ANY, &f);
    bf_err_t e;
    if (!sl) return -1;
    if (len > BF_PROTO_MAX_HEADER) return set_fail(m, key, &(bf_err_t){"value larger than a header"});
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) return set_fail(m, key, &(bf_err_t){"out of memory"});
    if (len) memcpy(buf, bytes, len);
    msgpack_unpacked u;
    /* The value sits one level below the header map. */
    if (bf_mp_parse(buf, len, BF_PROTO_MAX_DEPTH - 1, BF_PROTO_MAX_OBJECTS, &u, &e)) {
        msgpack_unpacked_destroy(&u);
        free(buf);
        return set_fail(m, key, &e);
    }
    slot_clear(sl);
    sl->any_buf = buf;
    sl->any_u = u;
    sl->any = &sl->any_u.data;
    sl->set = 1;
    return 0;
}

int bf_msg_unset(bf_msg_t *m, const char *key) {
    int i = find_field(m->s, key, strlen(key));
    if (i < 0 || !m->slot[i].set) return -1;
    slot_clear(&m->slot[i]);
    return 0;
}

/* ---- frames ------------------------------------------------------------------------------ */

static int frame_ok(bf_msg_t *m, size_t len) {
    bf_err_t e;
    if (m->nfr >= m->s->fmax) {
        bf_err_set(&e, "%s takes at most %u payload frames", m->s->type, m->s->fmax);
        return set_fail(m, "frame", &e);
    }
    if (len > BF_PROTO_MAX_FRAME) {
        bf_err_set(&e, "frame of %zu bytes exceeds %u", len, BF_PROTO_MAX_FRAME);
        return set_fail(m, "frame", &e);
    }
    if (m->s->fkind == FR_F32 && len % 4) {
        bf_err_set(&e, "f32 frame of %zu bytes is not a multiple of 4", len);
        return set_fail(m, "frame", &e);
    }
    return 0;
}

int bf_msg_add_frame_owned(bf_msg_t *m, void *data, size_t len) {
    if (frame_ok(m, len)) {
        free(data);
        return -1;
    }
    m->fr[m->nfr++] = (frame_t){data, len, NULL, NULL, NULL};
    return 0;
}

int bf_msg_add_frame_ref(bf_msg_t *m, const void *data, size_t len, bf_msg_free_fn *release, void *hint) {
    if (frame_ok(m, len)) {
        release((void *)data, hint);
        return -1;
    }
    m->fr[m->nfr++] = (frame_t){(uint8_t *)data, len, NULL, release, hint};
    return 0;
}

static void free_owned(void *data, void *hint) {
    (void)hint;
    free(data);
}

static void free_zframe(void *data, void *hint) {
    (void)data;
    zframe_t *f = hint;
    zframe_destroy(&f);
}

int bf_msg_frame_take(bf_msg_t *m, size_t i, void **data, size_t *len, bf_msg_free_fn **release, void **hint) {
    if (i >= m->nfr) return -1;
    frame_t *f = &m->fr[i];
    *data = f->data;
    *len = f->len;
    if (f->zf) *release = free_zframe, *hint = f->zf;
    else if (f->release) *release = f->release, *hint = f->hint;
    else *release = free_owned, *hint = NULL;
    if (!*data) { /* an empty frame still needs a buffer to hand over */
        if (f->zf) zframe_destroy(&f->zf);
        if (!(*data = malloc(1))) return -1;
        *release = free_owned, *hint = NULL;
    }
    /* the frame keeps its length (for a later encode of the header) but no longer its buffer */
    f->zf = NULL, f->release = NULL, f->hint = NULL, f->data = NULL;
    return 0;
}

size_t bf_proto_max_payload(const uint8_t *header, size_t hlen) {
    msgpack_unpacked u;
    bf_err_t err;
    if (hlen > BF_PROTO_MAX_HEADER || bf_mp_parse(header, hlen, BF_PROTO_MAX_DEPTH, BF_PROTO_MAX_OBJECTS, &u, &err))
        return 0;
    const msgpack_object *t = u.data.type == MSGPACK_OBJECT_MAP ? bf_mp_get(&u.data, "type") : NULL;
    const schema_t *s = t && t->type == MSGPACK_OBJECT_STR ? find_schema(t->via.str.ptr, t->via.str.size) : NULL;
    msgpack_unpacked_destroy(&u);
    if (!s) return 0;
    size_t per = s->check == check_image_frames ? BF_PROTO_MAX_IMAGE : BF_PROTO_MAX_FRAME;
    size_t cap = (size_t)s->fmax * per;
    return cap < BF_PROTO_MAX_MESSAGE ? cap : BF_PROTO_MAX_MESSAGE;
}

int bf_msg_add_frame(bf_msg_t *m, const void *data, size_t len) {
    if (frame_ok(m, len)) return -1;
    uint8_t *copy = NULL;
    if (len) {
        if (!(copy = malloc(len))) return set_fail(m, "frame", &(bf_err_t){"out of memory"});
        memcpy(copy, data, len);
    }
    m->fr[m->nfr++] = (frame_t){copy, len, NULL, NULL, NULL};
    return 0;
}

static void f32_le_copy(void *dst, const void *src, size_t n) {
    memcpy(dst, src, n * 4);
    if (__BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__) {
        uint8_t *b = dst;
        for (size_t i = 0; i < n; i++) {
            uint8_t t = b[4 * i];
            b[4 * i] = b[4 * i + 3], b[4 * i + 3] = t;
            t = b[4 * i + 1];
            b[4 * i + 1] = b[4 * i + 2], b[4 * i + 2] = t;
        }
    }
}

int bf_msg_add_f32(bf_msg_t *m, const float *v, size_t n) {
    if (n > BF_PROTO_MAX_FRAME / 4) return frame_ok(m, (size_t)BF_PROTO_MAX_FRAME + 1);
    if (frame_ok(m, n * 4)) return -1;
    uint8_t *buf = NULL;
    if (n) {
        if (!(buf = malloc(n * 4))) return set_fail(m, "frame", &(bf_err_t){"out of memory"});
        f32_le_copy(buf, v, n);
    }
    m->fr[m->nfr++] = (frame_t){buf, n * 4, NULL, NULL, NULL};
    return 0;
}

size_t bf_msg_frame_count(const bf_msg_t *m) { return m->nfr; }

const uint8_t *bf_msg_frame(const bf_msg_t *m, size_t i, size_t *len) {
    if (i >= m->nfr) return NULL;
    if (len) *len = m->fr[i].len;
    return m->fr[i].data ? m->fr[i].data : empty_frame;
}

int bf_msg_frame_f32(const bf_msg_t *m, size_t i, float *out, size_t n) {
    size_t len;
    const uint8_t *p = bf_msg_frame(m, i, &len);
    if (!p || len / 4 != n || len % 4) return -1;
    if (n) f32_le_copy(out, p, n);
    return 0;
}

/* ---- getters ----------------------------------------------------------------------------- */

static const slot_t *get_slot(const bf_msg_t *m, const char *key, const field_t **fp) {
    int i = find_field(m->s, key, strlen(key));
    if (i < 0 || !m->slot[i].set) return NULL;
    if (fp) *fp = &m->s->f[i];
    return &m->slot[i];
}

int bf_msg_has(const bf_msg_t *m, const char *key) { return get_slot(m, key, NULL) != NULL; }

const char *bf_msg_str(const bf_msg_t *m, const char *key) {
    const field_t *f;
    const slot_t *sl = get_slot(m, key, &f);
    return sl && f->kind == K_STR ? sl->s : NULL;
}

uint64_t bf_msg_uint(const bf_msg_t *m, const char *key, uint64_t dflt) {
    const field_t *f;
    const slot_t *sl = get_slot(m, key, &f);
    if (!sl) return dflt;
    if (f->kind == K_UINT) return sl->u;
    if (f->kind == K_INT && sl->i >= 0) return (uint64_t)sl->i;
    return dflt;
}

int64_t bf_msg_int(const bf_msg_t *m, const char *key, int64_t dflt) {
    const field_t *f;
    const slot_t *sl = get_slot(m, key, &f);
    if (!sl) return dflt;
    if (f->kind == K_INT) return sl->i;
    if (f->kind == K_UINT && sl->u <= INT64_MAX) return (int64_t)sl->u;
    return dflt;
}

double bf_msg_double(const bf_msg_t *m, const char *key, double dflt) {
    const field_t *f;
    const slot_t *sl = get_slot(m, key, &f);
    return sl && f->kind == K_FLOAT ? sl->d : dflt;
}

int bf_msg_bool(const bf_msg_t *m, const char *key, int dflt) {
    const field_t *f;
    const slot_t *sl = get_slot(m, key, &f);
    return sl && f->kind == K_BOOL ? sl->b : dflt;
}

const msgpack_object *bf_msg_any(const bf_msg_t *m, const char *key) {
    const field_t *f;
    const slot_t *sl = get_slot(m, key, &f);
    return sl && f->kind == K_ANY ? sl->any : NULL;
}

/* ---- decoding ---------------------------------------------------------------------------- */

static void reject(bf_proto_reject_t *rej, bf_proto_code_t code) { if (rej) rej->code = code; }

/* Checks one header value against its field and stores it into the slot. */
static int take_value(bf_msg_t *m, int fi, const msgpack_object *o, bf_err_t *err) {
    const schema_t *s = m->s;
    const field_t *f = &s->f[fi];
    slot_t *sl = &m->slot[fi];
    switch (f->kind) {
    case K_STR:
        if (o->type != MSGPACK_OBJECT_STR) return bf_err_set(err, "%s.%s: expected a string", s->type, f->key);
        if (check_str(s, f, o->via.str.ptr, o->via.str.size, err)) return -1;
        if (!(sl->s = malloc(o->via.str.size + 1))) return bf_err_set(err, "out of memory");
        memcpy(sl->s, o->via.str.ptr, o->via.str.size);
        sl->s[o->via.str.size] = 0;
        break;
    case K_UINT:
        if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
            return bf_err_set(err, "%s.%s: expected a non-negative integer", s->type, f->key);
        if (check_uint(s, f, o->via.u64, err)) return -1;
        sl->u = o->via.u64;
        break;
    case K_INT:
        if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) sl->i = o->via.i64;
        else if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= INT64_MAX) sl->i = (int64_t)o->via.u64;
        else return bf_err_set(err, "%s.%s: expected a 64-bit signed integer", s->type, f->key);
        if (check_int(s, f, sl->i, err)) return -1;
        break;
    case K_FLOAT:
        /* Integers are accepted: many msgpack libraries pack 0 or 1.0 as an int. */
        if (bf_mp_as_double(o, &sl->d)) return bf_err_set(err, "%s.%s: expected a number", s->type, f->key);
        if (check_float(s, f, sl->d, err)) return -1;
        break;
    case K_BOOL:
        if (o->type != MSGPACK_OBJECT_BOOLEAN) return bf_err_set(err, "%s.%s: expected a boolean", s->type, f->key);
        sl->b = o->via.boolean ? 1 : 0;
        break;
    default:
        sl->any = o;
        break;
    }
    sl->set = 1;
    return 0;
}

/* Reads v, id and type from the header map. Sets rej->id as soon as a valid id is seen, so even
 * a request with a bad version or type gets its id echoed. */
static const schema_t *read_envelope(const msgpack_object *root, uint64_t *id, bf_proto_reject_t *rej, bf_err_t *err) {
    char q[200];
    const msgpack_object *v = bf_mp_get(root, "v"), *ido = bf_mp_get(root, "id"), *t = bf_mp_get(root, "type");
    if (ido && ido->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        *id = ido->via.u64;
        if (rej) rej->id = *id, rej->has_id = 1;
    }
    if (!v || v->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return reject(rej, BF_PROTO_BAD_REQUEST), bf_err_set(err, "header: 'v' missing or not an integer"), NULL;
    if (v->via.u64 != BF_PROTO_VERSION)
        return reject(rej, BF_PROTO_BAD_REQUEST),
               bf_err_set(err, "header: protocol version %llu not supported (this peer speaks %d)",
                          (unsigned long long)v->via.u64, BF_PROTO_VERSION),
               NULL;
    if (!ido || ido->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return reject(rej, BF_PROTO_BAD_REQUEST), bf_err_set(err, "header: 'id' missing or not a uint64"), NULL;
    if (!t || t->type != MSGPACK_OBJECT_STR)
        return reject(rej, BF_PROTO_BAD_REQUEST), bf_err_set(err, "header: 'type' missing or not a string"), NULL;
    const schema_t *s = find_schema(t->via.str.ptr, t->via.str.size);
    if (!s)
        return reject(rej, BF_PROTO_UNKNOWN_TYPE),
               bf_err_set(err, "header: unknown message type '%s'", quote(q, sizeof q, t->via.str.ptr, t->via.str.size)),
               NULL;
    return s;
}

/* Every key of the header map: envelope keys once each, schema fields once each, nothing else. */
static int read_fields(bf_msg_t *m, const msgpack_object *root, bf_err_t *err) {
    char q[200];
    int env_seen[3] = {0};
    static const char *const env[3] = {"v", "type", "id"};
    for (uint32_t k = 0; k < root->via.map.size; k++) {
        const msgpack_object *key = &root->via.map.ptr[k].key;
        if (key->type != MSGPACK_OBJECT_STR) return bf_err_set(err, "header: a key is not a string");
        const char *p = key->via.str.ptr;
        size_t n = key->via.str.size;
        int e = -1;
        for (int j = 0; j < 3; j++)
            if (bf_mp_str_eq(key, env[j])) e = j;
        if (e >= 0) {
            if (env_seen[e]++) return bf_err_set(err, "header: duplicate key '%s'", env[e]);
            continue;
        }
        int fi = find_field(m->s, p, n);
        if (fi < 0) return bf_err_set(err, "%s: unknown field '%s'", m->s->type, quote(q, sizeof q, p, n));
        if (m->slot[fi].set) return bf_err_set(err, "%s: duplicate field '%s'", m->s->type, m->s->f[fi].key);
        if (take_value(m, fi, &root->via.map.ptr[k].val, err)) return -1;
    }
    for (int i = 0; i < MAX_FIELDS && m->s->f[i].key; i++)
        if (!m->s->f[i].opt && !m->slot[i].set)
            return bf_err_set(err, "%s: missing field '%s'", m->s->type, m->s->f[i].key);
    return 0;
}

static int check_payload(const bf_msg_t *m, const size_t *flens, size_t nframes, bf_err_t *err) {
    const schema_t *s = m->s;
    if (nframes < s->fmin || nframes > s->fmax) {
        if (s->fmin == s->fmax)
            return bf_err_set(err, "%s: %zu payload frames, must be %u", s->type, nframes, s->fmin);
        return bf_err_set(err, "%s: %zu payload frames, must be %u..%u", s->type, nframes, s->fmin, s->fmax);
    }
    for (size_t i = 0; i < nframes; i++)
        if (s->fkind == FR_F32 && flens[i] % 4)
            return bf_err_set(err, "%s: f32 frame %zu has %zu bytes, not a multiple of 4", s->type, i, flens[i]);
    return s->check ? s->check(m, flens, nframes, err) : 0;
}

/* Size limits come first: they need nothing but lengths. */
static int check_sizes(size_t hlen, const size_t *flens, size_t nframes, bf_proto_reject_t *rej, bf_err_t *err) {
    reject(rej, BF_PROTO_TOO_LARGE);
    if (nframes + 1 > BF_PROTO_MAX_FRAMES)
        return bf_err_set(err, "message has %zu frames, at most %d allowed", nframes + 1, BF_PROTO_MAX_FRAMES);
    if (hlen > BF_PROTO_MAX_HEADER)
        return bf_err_set(err, "header frame has %zu bytes, at most %u allowed", hlen, BF_PROTO_MAX_HEADER);
    size_t total = 0;
    for (size_t i = 0; i < nframes; i++) {
        if (flens[i] > BF_PROTO_MAX_FRAME)
            return bf_err_set(err, "payload frame %zu has %zu bytes, at most %u allowed", i, flens[i], BF_PROTO_MAX_FRAME);
        total += flens[i];
    }
    if (total > BF_PROTO_MAX_MESSAGE)
        return bf_err_set(err, "payload of %zu bytes, at most %u allowed in one message", total, BF_PROTO_MAX_MESSAGE);
    reject(rej, BF_PROTO_BAD_REQUEST);
    return 0;
}

/* The header checked and parsed into a new message (no payload attached yet). */
static bf_msg_t *decode_core(const uint8_t *hdr, size_t hlen, const size_t *flens, size_t nframes, bf_proto_reject_t *rej,
                             bf_err_t *err) {
    if (rej) *rej = (bf_proto_reject_t){BF_PROTO_BAD_REQUEST, 0, 0};
    if (check_sizes(hlen, flens, nframes, rej, err)) return NULL;
    uint8_t *copy = malloc(hlen ? hlen : 1);
    bf_msg_t *m = copy ? msg_alloc(NULL, 0) : NULL;
    if (!m) {
        free(copy);
        reject(rej, BF_PROTO_INTERNAL);
        bf_err_set(err, "out of memory");
        return NULL;
    }
    if (hlen) memcpy(copy, hdr, hlen);
    m->hdr = copy;
    m->has_hdr = 1;
    if (bf_mp_parse(copy, hlen, BF_PROTO_MAX_DEPTH, BF_PROTO_MAX_OBJECTS, &m->hdr_u, err)) {
        bf_err_prefix(err, "header: ");
        goto fail;
    }
    const msgpack_object *root = &m->hdr_u.data;
    if (root->type != MSGPACK_OBJECT_MAP) {
        bf_err_set(err, "header: not a msgpack map");
        goto fail;
    }
    if (!(m->s = read_envelope(root, &m->id, rej, err))) goto fail;
    if (read_fields(m, root, err) || check_payload(m, flens, nframes, err)) goto fail;
    return m;
fail:
    bf_msg_destroy(&m);
    return NULL;
}

bf_msg_t *bf_msg_decode_bytes(const uint8_t *header, size_t hlen, const uint8_t *const *frames, const size_t *flens,
                              size_t nframes, bf_proto_reject_t *rej, bf_err_t *err) {
    bf_msg_t *m = decode_core(header, hlen, flens, nframes, rej, err);
    if (!m) return NULL;
    for (size_t i = 0; i < nframes; i++) {
        uint8_t *copy = NULL;
        if (flens[i] && !(copy = malloc(flens[i]))) {
            bf_msg_destroy(&m);
            reject(rej, BF_PROTO_INTERNAL);
            bf_err_set(err, "out of memory");
            return NULL;
        }
        if (flens[i]) memcpy(copy, frames[i], flens[i]);
        m->fr[m->nfr++] = (frame_t){copy, flens[i], NULL, NULL, NULL};
    }
    return m;
}

bf_msg_t *bf_msg_decode(zmsg_t **zm, bf_proto_reject_t *rej, bf_err_t *err) {
    zmsg_t *z = zm ? *zm : NULL;
    if (zm) *zm = NULL;
    if (rej) *rej = (bf_proto_reject_t){BF_PROTO_BAD_REQUEST, 0, 0};
    size_t n = z ? zmsg_size(z) : 0;
    if (n == 0) {
        zmsg_destroy(&z);
        bf_err_set(err, "empty message");
        return NULL;
    }
    if (n > BF_PROTO_MAX_FRAMES) {
        zmsg_destroy(&z);
        reject(rej, BF_PROTO_TOO_LARGE);
        bf_err_set(err, "message has %zu frames, at most %d allowed", n, BF_PROTO_MAX_FRAMES);
        return NULL;
    }
    size_t flens[MAX_PAYLOAD];
    zframe_t *h = zmsg_first(z);
    for (size_t i = 0; i + 1 < n; i++) flens[i] = zframe_size(zmsg_next(z));
    bf_msg_t *m = decode_core(zframe_data(h), zframe_size(h), flens, n - 1, rej, err);
    /* The header frame always carries the connection metadata (a ROUTER's routing-id frame
     * loses it when the socket was polled before the receive). */
    const char *uid = m ? zframe_meta(h, "User-Id") : NULL;
    if (uid && uid[0] && !(m->user_id = strdup(uid))) bf_msg_destroy(&m), bf_err_set(err, "out of memory");
    if (m) {
        zframe_t *f = zmsg_pop(z);
        zframe_destroy(&f);
        /* Payload frames change owner, not place: a 64 MiB frame is never copied. */
        while ((f = zmsg_pop(z))) m->fr[m->nfr++] = (frame_t){zframe_data(f), zframe_size(f), f, NULL, NULL};
    }
    zmsg_destroy(&z);
    return m;
}

/* ---- encoding ---------------------------------------------------------------------------- */

static int pack_slot(msgpack_packer *pk, const field_t *f, const slot_t *sl) {
    int r = msgpack_pack_str_with_body(pk, f->key, strlen(f->key));
    switch (f->kind) {
    case K_STR: return r | msgpack_pack_str_with_body(pk, sl->s, strlen(sl->s));
    case K_UINT: return r | msgpack_pack_uint64(pk, sl->u);
    case K_INT: return r | msgpack_pack_int64(pk, sl->i);
    case K_FLOAT: return r | msgpack_pack_double(pk, sl->d);
    case K_BOOL: return r | (sl->b ? msgpack_pack_true(pk) : msgpack_pack_false(pk));
    default: return r | msgpack_pack_object(pk, *sl->any);
    }
}

uint8_t *bf_msg_encode_header(const bf_msg_t *m, size_t *len, bf_err_t *err) {
    if (m->set_err.msg[0]) return bf_err_set(err, "%s: %s", m->s->type, m->set_err.msg), NULL;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    uint32_t n = 3;
    for (int i = 0; i < MAX_FIELDS; i++) n += m->slot[i].set ? 1 : 0;
    int r = msgpack_pack_map(&pk, n);
    r |= msgpack_pack_str_with_body(&pk, "v", 1) | msgpack_pack_uint64(&pk, BF_PROTO_VERSION);
    r |= msgpack_pack_str_with_body(&pk, "type", 4) | msgpack_pack_str_with_body(&pk, m->s->type, strlen(m->s->type));
    r |= msgpack_pack_str_with_body(&pk, "id", 2) | msgpack_pack_uint64(&pk, m->id);
    for (int i = 0; i < MAX_FIELDS && m->s->f[i].key; i++)
        if (m->slot[i].set) r |= pack_slot(&pk, &m->s->f[i], &m->slot[i]);
    if (r) {
        msgpack_sbuffer_destroy(&sb);
        return bf_err_set(err, "%s: out of memory while packing", m->s->type), NULL;
    }
    /* The same checks a receiver runs, on the exact bytes it will receive. */
    size_t flens[MAX_PAYLOAD];
    for (size_t i = 0; i < m->nfr; i++) flens[i] = m->fr[i].len;
    bf_msg_t *check = decode_core((const uint8_t *)sb.data, sb.size, flens, m->nfr, NULL, err);
    if (!check) {
        msgpack_sbuffer_destroy(&sb);
        return bf_err_prefix(err, "refusing to send: "), NULL;
    }
    bf_msg_destroy(&check);
    *len = sb.size;
    return (uint8_t *)msgpack_sbuffer_release(&sb);
}

zmsg_t *bf_msg_encode(const bf_msg_t *m, bf_err_t *err) {
    size_t hlen;
    uint8_t *hdr = bf_msg_encode_header(m, &hlen, err);
    if (!hdr) return NULL;
    zmsg_t *z = zmsg_new();
    int r = z ? zmsg_addmem(z, hdr, hlen) : -1;
    free(hdr);
    for (size_t i = 0; i < m->nfr && !r; i++) r = zmsg_addmem(z, m->fr[i].data, m->fr[i].len);
    if (r) {
        zmsg_destroy(&z);
        bf_err_set(err, "%s: out of memory while framing", m->s->type);
    }
    return z;
}

/* ---- errors and helpers ------------------------------------------------------------------ */

const char *bf_proto_code_name(bf_proto_code_t code) {
    return (unsigned)code < BF_PROTO_CODE_COUNT ? code_names[code] : "INTERNAL";
}

int bf_proto_code_parse(const char *name) {
    for (int i = 0; name && i < BF_PROTO_CODE_COUNT; i++)
        if (!strcmp(code_names[i], name)) return i;
    return -1;
}

/* Text made safe for a str field: valid UTF-8, no control characters but tab, at most max bytes
 * (cut between characters). out must hold max + 1 bytes. */
static void sanitize_text(char *out, size_t max, const char *in) {
    const uint8_t *p = (const uint8_t *)in;
    size_t n = strlen(in), o = 0;
    for (size_t i = 0; i < n;) {
        size_t k = bf_utf8_len(p + i, n - i);
        bool bad = !k || (k == 1 && ((p[i] < 0x20 && p[i] != '\t') || p[i] == 0x7f));
        if (o + (bad ? 1 : k) > max) break;
        if (bad) {
            out[o++] = '?';
            i++;
        } else {
            memcpy(out + o, p + i, k);
            o += k;
            i += k;
        }
    }
    out[o] = 0;
}

bf_msg_t *bf_msg_error(uint64_t id, bf_proto_code_t code, const char *fmt, ...) {
    char raw[1024], clean[513];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(raw, sizeof raw, fmt, ap);
    va_end(ap);
    sanitize_text(clean, 512, raw);
    bf_msg_t *m = bf_msg_new("ERROR", id);
    if (m && (bf_msg_set_str(m, "code", bf_proto_code_name(code)) || bf_msg_set_str(m, "message", clean)))
        bf_msg_destroy(&m);
    return m;
}

bf_msg_t *bf_msg_error_reject(const bf_proto_reject_t *rej, const bf_err_t *err) {
    return bf_msg_error(rej && rej->has_id ? rej->id : 0, rej ? rej->code : BF_PROTO_BAD_REQUEST, "%s",
                        err ? err->msg : "bad request");
}

int bf_proto_is_request(const char *type) {
    const schema_t *s = type ? find_schema(type, strlen(type)) : NULL;
    return s && s->request;
}

int bf_proto_is_type(const char *type) { return type && find_schema(type, strlen(type)) != NULL; }

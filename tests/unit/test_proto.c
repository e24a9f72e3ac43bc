/* test_proto: the wire protocol's codec. Round trips of every message type, every rejection path
 * of the decoder, setter and encoder refusals. (CURVE and the ZAP handler over loopback TCP are
 * test_proto_curve.c.)
 *
 * `test_proto --write-seeds DIR` writes the libFuzzer seed corpus (tests/fuzz/seeds) in the
 * length-prefix format tests/fuzz/fuzz_proto.c reads. */
#include <czmq.h>
#include <msgpack.h>
#include <stdint.h>

#include "bf_mp.h"
#include "bf_proto.h"
#include "test.h"

typedef struct {
    uint8_t *p;
    size_t n;
} buf_t;

static const char *const all_types[] = {
    "HELLO", "PING", "REGISTER", "RECHARGE", "TASK_CREATE", "TASK_LIST", "TASK_STATUS", "TASK_CANCEL", "JOIN",
    "LEAVE", "BLOCKS_BUY", "BLOCK_GET", "ROUND_GET", "UPDATE", "ASSETS_GET", "HISTORY_GET", "MODEL_GET", "PREDICT",
    "WITHDRAW", "STATEMENT_GET", "WELCOME", "PONG", "OK", "TASKS", "STATUS", "JOINED", "BLOCK", "ROUND", "WAIT", "DONE", "ASSETS", "HISTORY",
    "STATEMENT", "MODEL", "PREDICTION", "ERROR"};
#define NTYPES (sizeof all_types / sizeof all_types[0])
#define HEX64 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

/* ---- msgpack value builders (trusted, for crafting headers) ------------------------------- */

typedef struct {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} pk_t;

static msgpack_packer *pk_begin(pk_t *b) {
    msgpack_sbuffer_init(&b->sb);
    msgpack_packer_init(&b->pk, &b->sb, msgpack_sbuffer_write);
    return &b->pk;
}

static buf_t pk_end(pk_t *b) {
    buf_t r = {(uint8_t *)b->sb.data, b->sb.size};
    b->sb.data = NULL;
    return r;
}

static buf_t v_uint(uint64_t u) {
    pk_t b;
    msgpack_pack_uint64(pk_begin(&b), u);
    return pk_end(&b);
}
static buf_t v_int(int64_t i) {
    pk_t b;
    msgpack_pack_int64(pk_begin(&b), i);
    return pk_end(&b);
}
static buf_t v_dbl(double d) {
    pk_t b;
    msgpack_pack_double(pk_begin(&b), d);
    return pk_end(&b);
}
static buf_t v_f32(float f) {
    pk_t b;
    msgpack_pack_float(pk_begin(&b), f);
    return pk_end(&b);
}
static buf_t v_strn(const char *s, size_t n) {
    pk_t b;
    msgpack_pack_str_with_body(pk_begin(&b), s, n);
    return pk_end(&b);
}
static buf_t v_str(const char *s) { return v_strn(s, strlen(s)); }
static buf_t v_bool(int v) {
    pk_t b;
    msgpack_packer *pk = pk_begin(&b);
    v ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
    return pk_end(&b);
}
static buf_t v_raw(const void *p, size_t n) {
    buf_t r = {malloc(n ? n : 1), n};
    memcpy(r.p, p, n);
    return r;
}
/* n nested arrays around a nil: depth n below the header map. */
static buf_t v_nested(int n) {
    pk_t b;
    msgpack_packer *pk = pk_begin(&b);
    for (int i = 0; i < n; i++) msgpack_pack_array(pk, 1);
    msgpack_pack_nil(pk);
    return pk_end(&b);
}
static buf_t v_bin(size_t n) {
    pk_t b;
    msgpack_packer *pk = pk_begin(&b);
    uint8_t *z = calloc(1, n ? n : 1);
    msgpack_pack_bin_with_body(pk, z, n);
    free(z);
    return pk_end(&b);
}
static buf_t v_repeat(char c, size_t n) {
    char *s = malloc(n + 1);
    memset(s, c, n);
    buf_t r = v_strn(s, n);
    free(s);
    return r;
}

/* ---- sample messages: every field set to something valid ---------------------------------- */

static void add_floats(bf_msg_t *m, size_t n, float base) {
    float *v = malloc((n ? n : 1) * sizeof *v);
    for (size_t i = 0; i < n; i++) v[i] = base + (float)i * 0.5f;
    CHECK(bf_msg_add_f32(m, v, n) == 0);
    free(v);
}

static void set_any_map(bf_msg_t *m, const char *key) {
    pk_t b;
    msgpack_packer *pk = pk_begin(&b);
    msgpack_pack_map(pk, 2);
    msgpack_pack_str_with_body(pk, "list", 4);
    msgpack_pack_array(pk, 3);
    msgpack_pack_uint64(pk, 1);
    msgpack_pack_int64(pk, -2);
    msgpack_pack_float(pk, 0.25f);
    msgpack_pack_str_with_body(pk, "name", 4);
    msgpack_pack_str_with_body(pk, "x\xc3\xa9", 3);
    buf_t v = pk_end(&b);
    CHECK(bf_msg_set_any(m, key, v.p, v.n) == 0);
    free(v.p);
}

/* A valid message of type; full = also every optional field. */
static bf_msg_t *sample(const char *t, int full) {
    bf_msg_t *m = bf_msg_new(t, 42);
    int r = 0;
    if (!m) return NULL;
    if (!strcmp(t, "REGISTER")) r |= bf_msg_set_str(m, "name", "alice_1");
    if (!strcmp(t, "RECHARGE") || !strcmp(t, "WITHDRAW")) r |= bf_msg_set_str(m, "amount", "12.50");
    if (!strcmp(t, "STATEMENT_GET") && full)
        r |= bf_msg_set_str(m, "currency", "CNY") | bf_msg_set_uint(m, "from", 1) | bf_msg_set_uint(m, "to", 2) |
             bf_msg_set_uint(m, "after", 3);
    if (!strcmp(t, "TASK_CREATE")) {
        r |= bf_msg_set_str(m, "task", "fmnist-1") | bf_msg_set_str(m, "name", "Fashion MNIST \xe2\x9c\x93");
        r |= bf_msg_set_str(m, "model", "resnet8") | bf_msg_set_str(m, "dataset", "fashion-mnist");
        r |= bf_msg_set_uint(m, "rounds", 5) | bf_msg_set_str(m, "mode", "reward");
        r |= bf_msg_set_uint(m, "min_clients", 3) | bf_msg_set_uint(m, "local_epochs", 2);
        r |= bf_msg_set_uint(m, "batch", 64) | bf_msg_set_double(m, "lr", 0.05);
        r |= bf_msg_set_uint(m, "round_timeout", 600) | bf_msg_set_str(m, "partition", "dirichlet:0.5");
        r |= bf_msg_set_str(m, "strategy", "fedprox");
        if (full) {
            r |= bf_msg_set_str(m, "description", "line one\nline two") | bf_msg_set_str(m, "fee", "0.10");
            r |= bf_msg_set_str(m, "pool", "100") | bf_msg_set_double(m, "mu", 0.01);
            r |= bf_msg_set_uint(m, "seed", UINT64_MAX);
        }
    }
    if (!strcmp(t, "TASK_STATUS") || !strcmp(t, "TASK_CANCEL") || !strcmp(t, "LEAVE") || !strcmp(t, "ROUND_GET") ||
        !strcmp(t, "MODEL_GET"))
        r |= bf_msg_set_str(m, "task", "t1");
    if (!strcmp(t, "JOIN")) {
        r |= bf_msg_set_str(m, "task", "t1") | bf_msg_set_bool(m, "own_data", full);
        if (full) r |= bf_msg_set_uint(m, "samples", 1000000000);
    }
    if (!strcmp(t, "BLOCKS_BUY")) r |= bf_msg_set_str(m, "task", "t1") | bf_msg_set_uint(m, "n", 1000);
    if (!strcmp(t, "BLOCK_GET")) r |= bf_msg_set_str(m, "task", "t1") | bf_msg_set_uint(m, "block", 0);
    if (!strcmp(t, "UPDATE")) {
        r |= bf_msg_set_str(m, "task", "t1") | bf_msg_set_uint(m, "round", 3);
        r |= bf_msg_set_uint(m, "samples", 6000) | bf_msg_set_double(m, "loss", 0.4375);
        add_floats(m, 10, 1.0f);
        add_floats(m, full ? 4 : 0, -2.0f);
    }
    if (!strcmp(t, "HISTORY_GET") && full) r |= bf_msg_set_uint(m, "limit", 10000);
    if (!strcmp(t, "PREDICT")) {
        r |= bf_msg_set_str(m, "task", "t1") | bf_msg_set_uint(m, "top", 3);
        r |= bf_msg_add_frame(m, "\x89PNG....", 8);
        if (full) r |= bf_msg_add_frame(m, "BM..", 4);
    }
    if (!strcmp(t, "WELCOME")) {
        r |= bf_msg_set_str(m, "server", "blockfed-coordinator 0.1.0");
        if (full) r |= bf_msg_set_str(m, "user", "alice_1");
    }
    if (!strcmp(t, "OK") && full) set_any_map(m, "result");
    if (!strcmp(t, "TASKS")) set_any_map(m, "tasks");
    if (!strcmp(t, "STATUS")) set_any_map(m, "status");
    if (!strcmp(t, "ASSETS")) set_any_map(m, "assets");
    if (!strcmp(t, "HISTORY")) set_any_map(m, "entries");
    if (!strcmp(t, "STATEMENT")) set_any_map(m, "statement");
    if (!strcmp(t, "JOINED")) {
        r |= bf_msg_set_str(m, "task", "t1") | bf_msg_set_uint(m, "block_size", 500);
        set_any_map(m, "blocks");
    }
    if (!strcmp(t, "BLOCK")) {
        r |= bf_msg_set_str(m, "task", "t1") | bf_msg_set_uint(m, "block", 7) | bf_msg_set_str(m, "sha256", HEX64);
        r |= bf_msg_set_uint(m, "n", 2) | bf_msg_set_uint(m, "c", 1) | bf_msg_set_uint(m, "h", 3);
        r |= bf_msg_set_uint(m, "w", 2) | bf_msg_set_uint(m, "classes", 10);
        r |= bf_msg_add_frame(m, "abcdefghijkl", 12) | bf_msg_add_frame(m, "\x01\x09", 2);
    }
    if (!strcmp(t, "ROUND")) {
        r |= bf_msg_set_str(m, "task", "t1") | bf_msg_set_uint(m, "round", 0) | bf_msg_set_uint(m, "rounds", 5);
        r |= bf_msg_set_str(m, "arch", "resnet8") | bf_msg_set_uint(m, "c", 1) | bf_msg_set_uint(m, "h", 28);
        r |= bf_msg_set_uint(m, "w", 28) | bf_msg_set_uint(m, "classes", 10) | bf_msg_set_uint(m, "local_epochs", 1);
        r |= bf_msg_set_uint(m, "batch", 32) | bf_msg_set_double(m, "lr", 10) | bf_msg_set_double(m, "mu", 0);
        r |= bf_msg_set_uint(m, "seed", 7) | bf_msg_set_uint(m, "deadline_ms", 1700000000000ull);
        set_any_map(m, "preprocess");
        add_floats(m, 6, 0.5f);
        add_floats(m, 2, 3.0f);
    }
    if (!strcmp(t, "WAIT")) {
        r |= bf_msg_set_uint(m, "retry_ms", 600000);
        if (full) r |= bf_msg_set_str(m, "reason", "waiting for 2 more participants");
    }
    if (!strcmp(t, "DONE")) {
        r |= bf_msg_set_str(m, "task", "t1");
        if (full) r |= bf_msg_set_str(m, "result_hash", HEX64);
    }
    if (!strcmp(t, "MODEL"))
        r |= bf_msg_set_str(m, "task", "t1") | bf_msg_set_str(m, "sha256", HEX64) | bf_msg_add_frame(m, "BFM\0\1", 5);
    if (!strcmp(t, "PREDICTION")) {
        set_any_map(m, "results");
        r |= bf_msg_set_str(m, "fee", "0.10") | bf_msg_set_str(m, "balance", "99.90");
    }
    if (!strcmp(t, "ERROR")) r |= bf_msg_set_str(m, "code", "NOT_FOUND") | bf_msg_set_str(m, "message", "no task 'x'");
    CHECK_MSG(r == 0, "sample %s", t);
    return m;
}

/* ---- helpers around the decoder ----------------------------------------------------------- */

static buf_t header_of(const bf_msg_t *m) {
    bf_err_t e = {{0}};
    buf_t b = {0};
    b.p = bf_msg_encode_header(m, &b.n, &e);
    CHECK_MSG(b.p != NULL, "%s: %s", bf_msg_type(m), e.msg);
    return b;
}

/* The header of base with key replaced by raw value val (added if absent, removed if val.p is
 * NULL); dup = write the key a second time. Consumes val. */
static buf_t mutate(const bf_msg_t *base, const char *key, buf_t val, int dup) {
    buf_t h = header_of(base);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    CHECK(msgpack_unpack_next(&u, (const char *)h.p, h.n, &off) == MSGPACK_UNPACK_SUCCESS);
    const msgpack_object_map *mp = &u.data.via.map;
    int found = 0;
    for (uint32_t i = 0; i < mp->size; i++) found |= bf_mp_str_eq(&mp->ptr[i].key, key);
    uint32_t n = mp->size + (found ? (val.p ? 0 : -1u) : (val.p ? 1 : 0)) + (dup ? 1 : 0);
    pk_t b;
    msgpack_packer *pk = pk_begin(&b);
    msgpack_pack_map(pk, n);
    for (uint32_t i = 0; i < mp->size; i++) {
        if (bf_mp_str_eq(&mp->ptr[i].key, key)) continue;
        msgpack_pack_object(pk, mp->ptr[i].key);
        msgpack_pack_object(pk, mp->ptr[i].val);
    }
    for (int k = 0; val.p && k < 1 + dup; k++) {
        msgpack_pack_str_with_body(pk, key, strlen(key));
        msgpack_sbuffer_write(&b.sb, (const char *)val.p, val.n);
    }
    msgpack_unpacked_destroy(&u);
    free(h.p);
    free(val.p);
    return pk_end(&b);
}

static const buf_t REMOVE = {NULL, 0};

/* Decodes header + frames through both entry points; returns the decode_bytes result. */
static bf_msg_t *decode_both(buf_t h, const uint8_t *const *fr, const size_t *fl, size_t nf, bf_proto_reject_t *rej,
                             bf_err_t *err) {
    bf_proto_reject_t rej2;
    bf_err_t err2;
    zmsg_t *z = zmsg_new();
    zmsg_addmem(z, h.p, h.n);
    for (size_t i = 0; i < nf; i++) zmsg_addmem(z, fr[i], fl[i]);
    bf_msg_t *a = bf_msg_decode(&z, &rej2, &err2);
    CHECK(z == NULL);
    bf_msg_t *b = bf_msg_decode_bytes(h.p, h.n, fr, fl, nf, rej, err);
    CHECK_MSG(!a == !b, "decode paths disagree: %s | %s", err2.msg, err->msg);
    if (!a && !b) {
        CHECK(rej2.code == rej->code && rej2.has_id == rej->has_id && rej2.id == rej->id);
        CHECK(!strcmp(err2.msg, err->msg));
    }
    bf_msg_destroy(&a);
    return b;
}

static int rejections;

/* Expects header h (consumed) with the frames of frames_of (or none) to be refused with code and
 * an error message containing needle. */
static void expect_reject_at(int line, buf_t h, const bf_msg_t *frames_of, bf_proto_code_t code, const char *needle) {
    const uint8_t *fr[66];
    size_t fl[66], nf = frames_of ? bf_msg_frame_count(frames_of) : 0;
    for (size_t i = 0; i < nf; i++) fr[i] = bf_msg_frame(frames_of, i, &fl[i]);
    bf_proto_reject_t rej;
    bf_err_t err = {{0}};
    bf_msg_t *m = decode_both(h, fr, fl, nf, &rej, &err);
    CHECK_MSG(m == NULL, "line %d: accepted", line);
    CHECK_MSG(!m && rej.code == code, "line %d: code %s, expected %s (%s)", line, bf_proto_code_name(rej.code),
              bf_proto_code_name(code), err.msg);
    CHECK_MSG(!m && strstr(err.msg, needle), "line %d: error '%s' lacks '%s'", line, err.msg, needle);
    /* The ERROR reply for it always encodes. */
    bf_msg_t *e = bf_msg_error_reject(&rej, &err);
    zmsg_t *z = e ? bf_msg_encode(e, &err) : NULL;
    CHECK_MSG(z != NULL, "line %d: error reply does not encode", line);
    zmsg_destroy(&z);
    bf_msg_destroy(&e);
    bf_msg_destroy(&m);
    free(h.p);
    rejections++;
}
#define expect_reject(...) expect_reject_at(__LINE__, __VA_ARGS__)

static void expect_accept_at(int line, buf_t h, const bf_msg_t *frames_of) {
    const uint8_t *fr[66];
    size_t fl[66], nf = frames_of ? bf_msg_frame_count(frames_of) : 0;
    for (size_t i = 0; i < nf; i++) fr[i] = bf_msg_frame(frames_of, i, &fl[i]);
    bf_proto_reject_t rej;
    bf_err_t err = {{0}};
    bf_msg_t *m = decode_both(h, fr, fl, nf, &rej, &err);
    CHECK_MSG(m != NULL, "line %d: rejected: %s", line, err.msg);
    bf_msg_destroy(&m);
    free(h.p);
}
#define expect_accept(...) expect_accept_at(__LINE__, __VA_ARGS__)

/* ---- round trips ------------------------------------------------------------------------- */

static void test_round_trips(void) {
    for (size_t t = 0; t < NTYPES; t++) {
        CHECK(bf_proto_is_type(all_types[t]));
        CHECK(bf_proto_is_request(all_types[t]) == (t < 20)); /* the 20 requests come first */
        for (int full = 0; full < 2; full++) {
            bf_msg_t *m = sample(all_types[t], full);
            CHECK_MSG(m != NULL, "%s", all_types[t]);
            if (!m) continue;
            bf_err_t err = {{0}};
            zmsg_t *z = bf_msg_encode(m, &err);
            CHECK_MSG(z != NULL, "%s: %s", all_types[t], err.msg);
            CHECK(z && zmsg_size(z) == 1 + bf_msg_frame_count(m));
            bf_proto_reject_t rej;
            bf_msg_t *d = bf_msg_decode(&z, &rej, &err);
            CHECK_MSG(d != NULL, "%s: %s", all_types[t], err.msg);
            if (d) {
                CHECK(!strcmp(bf_msg_type(d), all_types[t]) && bf_msg_id(d) == 42);
                /* Same fields, same values: re-encoding gives the same bytes. */
                buf_t h1 = header_of(m), h2 = header_of(d);
                CHECK_MSG(h1.n == h2.n && !memcmp(h1.p, h2.p, h1.n), "%s re-encodes differently", all_types[t]);
                CHECK(bf_msg_frame_count(d) == bf_msg_frame_count(m));
                for (size_t i = 0; i < bf_msg_frame_count(m); i++) {
                    size_t a, b;
                    const uint8_t *pa = bf_msg_frame(m, i, &a), *pb = bf_msg_frame(d, i, &b);
                    CHECK(pa && pb && a == b && !memcmp(pa, pb, a));
                }
                free(h1.p);
                free(h2.p);
            }
            bf_msg_destroy(&d);
            bf_msg_destroy(&m);
            CHECK(m == NULL && d == NULL);
        }
    }
    bf_msg_destroy(NULL);
}

/* Getters on a decoded message: values, kinds, defaults, frames as floats. */
static void test_getters(void) {
    bf_msg_t *m = sample("TASK_CREATE", 1);
    bf_err_t err;
    zmsg_t *z = bf_msg_encode(m, &err);
    bf_msg_t *d = bf_msg_decode(&z, NULL, &err);
    CHECK(d != NULL);
    if (d) {
        CHECK(!strcmp(bf_msg_str(d, "task"), "fmnist-1"));
        CHECK(!strcmp(bf_msg_str(d, "description"), "line one\nline two"));
        CHECK(bf_msg_uint(d, "rounds", 0) == 5 && bf_msg_int(d, "rounds", 0) == 5);
        CHECK(bf_msg_uint(d, "seed", 0) == UINT64_MAX && bf_msg_int(d, "seed", -1) == -1);
        CHECK(bf_msg_double(d, "lr", 0) == 0.05 && bf_msg_double(d, "mu", 1) == 0.01);
        CHECK(bf_msg_str(d, "rounds") == NULL && bf_msg_uint(d, "task", 9) == 9 && bf_msg_double(d, "nope", 3) == 3);
        CHECK(bf_msg_has(d, "pool") && !bf_msg_has(d, "nope"));
    }
    bf_msg_destroy(&d);
    bf_msg_destroy(&m);

    m = sample("UPDATE", 1);
    z = bf_msg_encode(m, &err);
    d = bf_msg_decode(&z, NULL, &err);
    float p[10], b[4];
    CHECK(d && bf_msg_frame_f32(d, 0, p, 10) == 0 && bf_msg_frame_f32(d, 1, b, 4) == 0);
    CHECK(p[0] == 1.0f && p[9] == 5.5f && b[3] == -0.5f);
    CHECK(d && bf_msg_frame_f32(d, 0, p, 9) == -1 && bf_msg_frame_f32(d, 2, p, 1) == -1);
    CHECK(d && bf_msg_uint(d, "samples", 0) == 6000 && bf_msg_double(d, "loss", 0) == 0.4375);
    /* Frame bytes are little-endian f32 at unaligned offsets: check the wire bytes directly. */
    size_t len;
    const uint8_t *f = d ? bf_msg_frame(d, 0, &len) : NULL;
    CHECK(f && len == 40 && f[0] == 0x00 && f[1] == 0x00 && f[2] == 0x80 && f[3] == 0x3f);
    CHECK(d && bf_msg_frame(d, 5, NULL) == NULL);
    bf_msg_destroy(&d);
    bf_msg_destroy(&m);

    m = sample("OK", 1);
    z = bf_msg_encode(m, &err);
    d = bf_msg_decode(&z, NULL, &err);
    const msgpack_object *o = d ? bf_msg_any(d, "result") : NULL;
    CHECK(o && o->type == MSGPACK_OBJECT_MAP && o->via.map.size == 2);
    const msgpack_object *l = bf_mp_get(o, "list");
    CHECK(l && l->type == MSGPACK_OBJECT_ARRAY && l->via.array.size == 3 && l->via.array.ptr[1].via.i64 == -2);
    CHECK(l && l->via.array.ptr[2].type == MSGPACK_OBJECT_FLOAT32);
    bf_msg_destroy(&d);
    bf_msg_destroy(&m);

    m = sample("JOIN", 1);
    CHECK(bf_msg_bool(m, "own_data", 0) == 1 && bf_msg_bool(m, "task", 7) == 7);
    CHECK(bf_msg_unset(m, "samples") == 0 && bf_msg_unset(m, "samples") == -1 && !bf_msg_has(m, "samples"));
    bf_msg_destroy(&m);

    /* Floats may arrive as msgpack float32 or as integers. */
    m = sample("UPDATE", 0);
    expect_accept(mutate(m, "loss", v_f32(0.5f), 0), m);
    expect_accept(mutate(m, "loss", v_uint(3), 0), m);
    bf_msg_t *ct = sample("TASK_CREATE", 0);
    expect_accept(mutate(ct, "lr", v_uint(10), 0), NULL);
    expect_accept(mutate(ct, "description", v_repeat('d', 1024), 0), NULL);
    expect_accept(mutate(ct, "task", v_repeat('a', 64), 0), NULL);
    expect_accept(mutate(ct, "task", v_str("a.b-c_D9"), 0), NULL);
    /* Field order on the wire does not matter. */
    pk_t pb;
    msgpack_packer *pk = pk_begin(&pb);
    msgpack_pack_map(pk, 4);
    msgpack_pack_str_with_body(pk, "name", 4);
    msgpack_pack_str_with_body(pk, "bob", 3);
    msgpack_pack_str_with_body(pk, "id", 2);
    msgpack_pack_uint64(pk, 9);
    msgpack_pack_str_with_body(pk, "type", 4);
    msgpack_pack_str_with_body(pk, "REGISTER", 8);
    msgpack_pack_str_with_body(pk, "v", 1);
    msgpack_pack_uint64(pk, 1);
    expect_accept(pk_end(&pb), NULL);
    bf_msg_destroy(&ct);
    bf_msg_destroy(&m);
}

/* ---- rejections -------------------------------------------------------------------------- */

static void test_envelope_rejections(void) {
    bf_msg_t *ping = sample("PING", 0);
    expect_reject(mutate(ping, "v", v_uint(2), 0), NULL, BF_PROTO_BAD_REQUEST, "version 2 not supported");
    expect_reject(mutate(ping, "v", v_uint(0), 0), NULL, BF_PROTO_BAD_REQUEST, "version 0");
    expect_reject(mutate(ping, "v", REMOVE, 0), NULL, BF_PROTO_BAD_REQUEST, "'v' missing");
    expect_reject(mutate(ping, "v", v_str("1"), 0), NULL, BF_PROTO_BAD_REQUEST, "'v' missing or not an integer");
    expect_reject(mutate(ping, "id", REMOVE, 0), NULL, BF_PROTO_BAD_REQUEST, "'id' missing");
    expect_reject(mutate(ping, "id", v_int(-1), 0), NULL, BF_PROTO_BAD_REQUEST, "'id' missing or not a uint64");
    expect_reject(mutate(ping, "id", v_dbl(3.0), 0), NULL, BF_PROTO_BAD_REQUEST, "'id'");
    expect_reject(mutate(ping, "type", REMOVE, 0), NULL, BF_PROTO_BAD_REQUEST, "'type' missing");
    expect_reject(mutate(ping, "type", v_uint(1), 0), NULL, BF_PROTO_BAD_REQUEST, "'type' missing or not a string");
    expect_reject(mutate(ping, "type", v_str("FOO"), 0), NULL, BF_PROTO_UNKNOWN_TYPE, "unknown message type 'FOO'");
    expect_reject(mutate(ping, "type", v_str("ping"), 0), NULL, BF_PROTO_UNKNOWN_TYPE, "'ping'");
    expect_reject(mutate(ping, "type", v_strn("PING\0", 5), 0), NULL, BF_PROTO_UNKNOWN_TYPE, "'PING\\x00'");
    expect_reject(mutate(ping, "type", v_str("ASSETS_GE"), 0), NULL, BF_PROTO_UNKNOWN_TYPE, "ASSETS_GE");
    expect_reject(mutate(ping, "v", v_uint(1), 1), NULL, BF_PROTO_BAD_REQUEST, "duplicate key 'v'");
    expect_reject(mutate(ping, "id", v_uint(1), 1), NULL, BF_PROTO_BAD_REQUEST, "duplicate key 'id'");

    /* The id of a refused request is echoed when it was readable. */
    bf_proto_reject_t rej;
    bf_err_t err;
    buf_t h = mutate(ping, "type", v_str("NOPE"), 0);
    bf_msg_t *m = bf_msg_decode_bytes(h.p, h.n, NULL, NULL, 0, &rej, &err);
    CHECK(!m && rej.has_id && rej.id == 42 && rej.code == BF_PROTO_UNKNOWN_TYPE);
    bf_msg_t *e = bf_msg_error_reject(&rej, &err);
    CHECK(e && bf_msg_id(e) == 42 && !strcmp(bf_msg_str(e, "code"), "UNKNOWN_TYPE"));
    CHECK(e && strstr(bf_msg_str(e, "message"), "NOPE"));
    bf_msg_destroy(&e);
    free(h.p);
    h = mutate(ping, "v", v_uint(7), 0);
    m = bf_msg_decode_bytes(h.p, h.n, NULL, NULL, 0, &rej, &err);
    CHECK(!m && rej.has_id && rej.id == 42);
    free(h.p);
    h = mutate(ping, "id", v_str("x"), 0);
    m = bf_msg_decode_bytes(h.p, h.n, NULL, NULL, 0, &rej, &err);
    CHECK(!m && !rej.has_id && rej.id == 0);
    e = bf_msg_error_reject(&rej, &err);
    CHECK(e && bf_msg_id(e) == 0);
    bf_msg_destroy(&e);
    free(h.p);

    /* Headers that are not maps, not msgpack, or not one whole object. */
    static const uint8_t bomb[] = {0xdd, 0xff, 0xff, 0xff, 0xff};
    expect_reject(v_raw(bomb, 5), NULL, BF_PROTO_BAD_REQUEST, "container declares 4294967295 elements");
    static const uint8_t mapbomb[] = {0xdf, 0xff, 0xff, 0xff, 0xff, 0xa1, 'v'};
    expect_reject(v_raw(mapbomb, sizeof mapbomb), NULL, BF_PROTO_BAD_REQUEST, "container declares");
    static const uint8_t strbomb[] = {0x81, 0xa1, 'v', 0xdb, 0xff, 0xff, 0xff, 0xf0};
    expect_reject(v_raw(strbomb, sizeof strbomb), NULL, BF_PROTO_BAD_REQUEST, "truncated");
    expect_reject(mutate(ping, "x", v_raw(bomb, 5), 0), NULL, BF_PROTO_BAD_REQUEST, "container declares");
    expect_reject(v_raw("", 0), NULL, BF_PROTO_BAD_REQUEST, "empty input");
    expect_reject(v_raw("\xc1", 1), NULL, BF_PROTO_BAD_REQUEST, "invalid marker byte 0xc1");
    expect_reject(v_raw("\x91\x01", 2), NULL, BF_PROTO_BAD_REQUEST, "not a msgpack map");
    expect_reject(v_str("PING"), NULL, BF_PROTO_BAD_REQUEST, "not a msgpack map");
    h = header_of(ping);
    buf_t t = {malloc(h.n + 1), h.n + 1};
    memcpy(t.p, h.p, h.n);
    t.p[h.n] = 0xc0;
    expect_reject(t, NULL, BF_PROTO_BAD_REQUEST, "1 trailing bytes");
    h.n--;
    expect_reject(h, NULL, BF_PROTO_BAD_REQUEST, "truncated");
    /* Non-string key. */
    pk_t b;
    msgpack_packer *pk = pk_begin(&b);
    msgpack_pack_map(pk, 4);
    msgpack_pack_str_with_body(pk, "v", 1), msgpack_pack_uint64(pk, 1);
    msgpack_pack_str_with_body(pk, "type", 4), msgpack_pack_str_with_body(pk, "PING", 4);
    msgpack_pack_str_with_body(pk, "id", 2), msgpack_pack_uint64(pk, 1);
    msgpack_pack_uint64(pk, 5), msgpack_pack_nil(pk);
    expect_reject(pk_end(&b), NULL, BF_PROTO_BAD_REQUEST, "a key is not a string");

    /* Nesting: the header map is level 1, so 7 more levels pass and 8 do not. */
    bf_msg_t *ok = sample("OK", 0);
    expect_accept(mutate(ok, "result", v_nested(7), 0), NULL);
    expect_reject(mutate(ok, "result", v_nested(8), 0), NULL, BF_PROTO_BAD_REQUEST, "nested deeper than 8");
    expect_reject(mutate(ok, "result", v_nested(5000), 0), NULL, BF_PROTO_BAD_REQUEST, "nested deeper than 8");
    /* Header size: just under 64 KiB passes, just over is TOO_LARGE before any parsing. */
    expect_accept(mutate(ok, "result", v_bin(65000), 0), NULL);
    expect_reject(mutate(ok, "result", v_bin(65536), 0), NULL, BF_PROTO_TOO_LARGE, "header frame has 655");
    expect_reject((buf_t){calloc(1, 65537), 65537}, NULL, BF_PROTO_TOO_LARGE, "header frame has 65537 bytes");
    bf_msg_destroy(&ok);
    bf_msg_destroy(&ping);
}

static void test_field_rejections(void) {
    const bf_proto_code_t BAD = BF_PROTO_BAD_REQUEST;
    bf_msg_t *ping = sample("PING", 0), *reg = sample("REGISTER", 0), *ct = sample("TASK_CREATE", 0);
    bf_msg_t *join = sample("JOIN", 0), *buy = sample("BLOCKS_BUY", 0), *up = sample("UPDATE", 0);
    bf_msg_t *blk = sample("BLOCK", 0), *mdl = sample("MODEL", 0), *err = sample("ERROR", 0);
    /* missing / unknown / duplicate */
    expect_reject(mutate(reg, "name", REMOVE, 0), NULL, BAD, "REGISTER: missing field 'name'");
    expect_reject(mutate(ct, "lr", REMOVE, 0), NULL, BAD, "missing field 'lr'");
    expect_reject(mutate(ping, "x", v_uint(1), 0), NULL, BAD, "PING: unknown field 'x'");
    expect_reject(mutate(reg, "Name", v_str("bob"), 0), NULL, BAD, "unknown field 'Name'");
    expect_reject(mutate(reg, "name\n\xff", v_str("bob"), 0), NULL, BAD, "unknown field 'name\\x0a\\xff'");
    expect_reject(mutate(reg, "name", v_str("bob"), 1), NULL, BAD, "duplicate field 'name'");
    /* mistyped */
    expect_reject(mutate(reg, "name", v_uint(5), 0), NULL, BAD, "REGISTER.name: expected a string");
    expect_reject(mutate(reg, "name", v_bin(3), 0), NULL, BAD, "expected a string");
    expect_reject(mutate(buy, "n", v_str("5"), 0), NULL, BAD, "BLOCKS_BUY.n: expected a non-negative integer");
    expect_reject(mutate(buy, "n", v_int(-1), 0), NULL, BAD, "expected a non-negative integer");
    expect_reject(mutate(buy, "n", v_dbl(5.0), 0), NULL, BAD, "expected a non-negative integer");
    expect_reject(mutate(join, "own_data", v_uint(1), 0), NULL, BAD, "JOIN.own_data: expected a boolean");
    expect_reject(mutate(up, "loss", v_str("0.5"), 0), up, BAD, "UPDATE.loss: expected a number");
    expect_reject(mutate(up, "loss", v_bool(0), 0), up, BAD, "expected a number");
    expect_reject(mutate(ct, "seed", v_raw("\xc0", 1), 0), NULL, BAD, "TASK_CREATE.seed");
    /* strings: length, NUL, UTF-8, NAME and hex charsets */
    expect_reject(mutate(reg, "name", v_repeat('a', 33), 0), NULL, BAD, "string of 33 bytes, must be 1..32");
    expect_reject(mutate(reg, "name", v_str(""), 0), NULL, BAD, "string of 0 bytes");
    expect_reject(mutate(ct, "task", v_repeat('a', 65), 0), NULL, BAD, "TASK_CREATE.task: string of 65 bytes");
    expect_reject(mutate(ct, "description", v_repeat('d', 1025), 0), NULL, BAD, "string of 1025 bytes");
    expect_reject(mutate(ct, "name", v_repeat('n', 129), 0), NULL, BAD, "TASK_CREATE.name");
    expect_reject(mutate(ct, "fee", v_repeat('1', 25), 0), NULL, BAD, "TASK_CREATE.fee");
    expect_reject(mutate(reg, "name", v_strn("ab\0cd", 5), 0), NULL, BAD, "REGISTER.name: NUL byte at offset 2");
    expect_reject(mutate(ct, "name", v_strn("ok\0", 3), 0), NULL, BAD, "NUL byte");
    expect_reject(mutate(ct, "name", v_str("caf\xc3"), 0), NULL, BAD, "invalid UTF-8 at offset 3");
    expect_reject(mutate(ct, "name", v_str("\xc0\xaf"), 0), NULL, BAD, "invalid UTF-8");      /* overlong '/' */
    expect_reject(mutate(ct, "name", v_str("\xed\xa0\x80"), 0), NULL, BAD, "invalid UTF-8"); /* surrogate */
    expect_reject(mutate(ct, "name", v_str("\xf4\x90\x80\x80"), 0), NULL, BAD, "invalid UTF-8");
    static const char *const bad_names[] = {"a/b", "..", ".", ".hidden", "-rf", "a b", "caf\xc3\xa9", "a:b", "x\\y"};
    for (size_t i = 0; i < sizeof bad_names / sizeof *bad_names; i++)
        expect_reject(mutate(reg, "name", v_str(bad_names[i]), 0), NULL, BAD, "not allowed in a name");
    expect_reject(mutate(ct, "dataset", v_str("../etc"), 0), NULL, BAD, "TASK_CREATE.dataset");
    expect_reject(mutate(mdl, "sha256", v_repeat('A', 64), 0), mdl, BAD, "MODEL.sha256: byte 0 is not lowercase hex");
    expect_reject(mutate(mdl, "sha256", v_repeat('a', 63), 0), mdl, BAD, "string of 63 bytes, must be 64..64");
    expect_reject(mutate(mdl, "sha256", v_repeat('g', 64), 0), mdl, BAD, "not lowercase hex");
    expect_reject(mutate(err, "code", v_str("bad code"), 0), NULL, BAD, "ERROR.code");
    /* numbers: ranges, open bounds, non-finite */
    expect_reject(mutate(ct, "rounds", v_uint(0), 0), NULL, BAD, "TASK_CREATE.rounds: 0 out of range [1, 10000]");
    expect_reject(mutate(ct, "rounds", v_uint(10001), 0), NULL, BAD, "10001 out of range");
    expect_reject(mutate(ct, "rounds", v_uint(UINT64_MAX), 0), NULL, BAD, "18446744073709551615 out of range");
    expect_reject(mutate(buy, "n", v_uint(1001), 0), NULL, BAD, "BLOCKS_BUY.n: 1001 out of range [1, 1000]");
    expect_reject(mutate(ct, "lr", v_dbl(0), 0), NULL, BAD, "TASK_CREATE.lr: 0 out of range (0, 10]");
    expect_reject(mutate(ct, "lr", v_dbl(-1e-9), 0), NULL, BAD, "out of range (0, 10]");
    expect_reject(mutate(ct, "lr", v_dbl(10.000001), 0), NULL, BAD, "out of range (0, 10]");
    expect_reject(mutate(ct, "mu", v_dbl(-0.5), 0), NULL, BAD, "TASK_CREATE.mu: -0.5 out of range [0, 100]");
    expect_reject(mutate(ct, "lr", v_dbl(NAN), 0), NULL, BAD, "TASK_CREATE.lr: not a finite number");
    expect_reject(mutate(ct, "lr", v_dbl(INFINITY), 0), NULL, BAD, "not a finite number");
    expect_reject(mutate(up, "loss", v_dbl(-INFINITY), 0), up, BAD, "UPDATE.loss: not a finite number");
    expect_reject(mutate(up, "loss", v_f32(NAN), 0), up, BAD, "not a finite number");
    expect_reject(mutate(up, "loss", v_dbl(1e7), 0), up, BAD, "out of range [0, 1e+06]");
    expect_reject(mutate(up, "samples", v_uint(0), 0), up, BAD, "UPDATE.samples: 0 out of range");
    expect_reject(mutate(join, "samples", v_uint(1000000001), 0), NULL, BAD, "JOIN.samples");
    expect_reject(mutate(blk, "c", v_uint(5), 0), blk, BAD, "BLOCK.c: 5 out of range [1, 4]");
    expect_reject(mutate(blk, "classes", v_uint(1), 0), blk, BAD, "BLOCK.classes");
    bf_msg_t *wait = sample("WAIT", 0);
    expect_reject(mutate(wait, "retry_ms", v_uint(0), 0), NULL, BAD, "WAIT.retry_ms");
    expect_reject(mutate(wait, "retry_ms", v_uint(600001), 0), NULL, BAD, "WAIT.retry_ms");
    bf_msg_destroy(&wait);
    bf_msg_destroy(&ping), bf_msg_destroy(&reg), bf_msg_destroy(&ct), bf_msg_destroy(&join);
    bf_msg_destroy(&buy), bf_msg_destroy(&up), bf_msg_destroy(&blk), bf_msg_destroy(&mdl), bf_msg_destroy(&err);
}

/* A message built from hdr plus explicit frames; checks the refusal. */
static void reject_frames_at(int line, const bf_msg_t *base, const uint8_t *const *fr, const size_t *fl, size_t nf,
                             bf_proto_code_t code, const char *needle) {
    bf_proto_reject_t rej;
    bf_err_t err = {{0}};
    buf_t h = header_of(base);
    bf_msg_t *m = decode_both(h, fr, fl, nf, &rej, &err);
    CHECK_MSG(!m && rej.code == code && strstr(err.msg, needle), "line %d: %s / %s (wanted %s)", line,
              m ? "accepted" : bf_proto_code_name(rej.code), err.msg, needle);
    bf_msg_destroy(&m);
    free(h.p);
    rejections++;
}
#define reject_frames(...) reject_frames_at(__LINE__, __VA_ARGS__)

static void test_frame_rejections(void) {
    static uint8_t bytes[64];
    const uint8_t *fr[70];
    size_t fl[70];
    for (int i = 0; i < 70; i++) fr[i] = bytes, fl[i] = 8;
    bf_msg_t *ping = sample("PING", 0), *up = sample("UPDATE", 0), *pred = sample("PREDICT", 0);
    bf_msg_t *blk = sample("BLOCK", 0), *mdl = sample("MODEL", 0);
    reject_frames(ping, fr, fl, 1, BF_PROTO_BAD_REQUEST, "PING: 1 payload frames, must be 0");
    reject_frames(up, fr, fl, 1, BF_PROTO_BAD_REQUEST, "UPDATE: 1 payload frames, must be 2");
    reject_frames(up, fr, fl, 3, BF_PROTO_BAD_REQUEST, "UPDATE: 3 payload frames, must be 2");
    reject_frames(mdl, fr, fl, 0, BF_PROTO_BAD_REQUEST, "MODEL: 0 payload frames, must be 1");
    reject_frames(pred, fr, fl, 0, BF_PROTO_BAD_REQUEST, "PREDICT: 0 payload frames, must be 1..64");
    reject_frames(pred, fr, fl, 65, BF_PROTO_BAD_REQUEST, "PREDICT: 65 payload frames, must be 1..64");
    reject_frames(pred, fr, fl, 66, BF_PROTO_TOO_LARGE, "message has 67 frames, at most 66");
    reject_frames(ping, fr, fl, 69, BF_PROTO_TOO_LARGE, "message has 70 frames");
    size_t odd[2] = {8, 7};
    reject_frames(up, fr, odd, 2, BF_PROTO_BAD_REQUEST, "UPDATE: f32 frame 1 has 7 bytes, not a multiple of 4");
    /* BLOCK: n=2 c=1 h=3 w=2 -> 12 pixel bytes, 2 label bytes. */
    size_t shape[2] = {12, 2};
    const uint8_t *bf[2] = {bytes, bytes};
    expect_accept(header_of(blk), blk);
    shape[0] = 11;
    reject_frames(blk, bf, shape, 2, BF_PROTO_BAD_REQUEST, "pixel frame has 11 bytes, shape n*c*h*w needs 12");
    shape[0] = 13;
    reject_frames(blk, bf, shape, 2, BF_PROTO_BAD_REQUEST, "needs 12");
    shape[0] = 12, shape[1] = 3;
    reject_frames(blk, bf, shape, 2, BF_PROTO_BAD_REQUEST, "label frame has 3 bytes, n = 2");
    /* The biggest shape the schema allows (1e6*4*1024*1024) fits in 64 bits; the frame does not. */
    bf_msg_t *big = sample("BLOCK", 0);
    bf_msg_set_uint(big, "n", 1000000), bf_msg_set_uint(big, "c", 4), bf_msg_set_uint(big, "h", 1024);
    bf_msg_set_uint(big, "w", 1024);
    buf_t bh = {0};
    bf_err_t err;
    bh.p = bf_msg_encode_header(big, &bh.n, &err);
    CHECK(bh.p == NULL && strstr(err.msg, "refusing to send: BLOCK: pixel frame has 12 bytes"));
    bf_msg_destroy(&big);
    /* A payload frame over 64 MiB is TOO_LARGE before anything is parsed (the header here is
     * garbage on purpose: sizes are checked first). */
    zmsg_t *z = zmsg_new();
    zmsg_addmem(z, "\xc1", 1);
    zframe_t *huge = zframe_new(NULL, (size_t)BF_PROTO_MAX_FRAME + 1);
    zmsg_append(z, &huge);
    bf_proto_reject_t rej;
    bf_msg_t *m = bf_msg_decode(&z, &rej, &err);
    CHECK(!m && !z && rej.code == BF_PROTO_TOO_LARGE && strstr(err.msg, "payload frame 0 has 67108865 bytes"));
    z = zmsg_new();
    m = bf_msg_decode(&z, &rej, &err);
    CHECK(!m && !z && rej.code == BF_PROTO_BAD_REQUEST && strstr(err.msg, "empty message"));
    m = bf_msg_decode(NULL, &rej, &err);
    CHECK(!m);
    bf_msg_destroy(&ping), bf_msg_destroy(&up), bf_msg_destroy(&pred), bf_msg_destroy(&blk), bf_msg_destroy(&mdl);
}

/* Shared frames are released exactly once, whoever ends up holding them; a taken frame's header
 * still encodes; the whole-message cap per type comes from the header alone. */
static void count_release(void *data, void *hint) {
    (void)data;
    ++*(int *)hint;
}

static void test_shared_frames_and_caps(void) {
    static const uint8_t model[16] = {1, 2, 3, 4};
    int released = 0;
    bf_msg_t *m = sample("PREDICT", 0); /* frame 0: its own copy */
    CHECK(bf_msg_add_frame_ref(m, model, 8, count_release, &released) == 0);
    CHECK(bf_msg_add_frame_ref(m, model + 8, 8, count_release, &released) == 0);
    CHECK(bf_msg_add_frame_ref(m, model, (size_t)BF_PROTO_MAX_FRAME + 1, count_release, &released) == -1 && released == 1);
    size_t len = 0;
    CHECK(bf_msg_frame(m, 2, &len) == model + 8 && len == 8);
    bf_msg_destroy(&m);
    CHECK(released == 3);
    m = sample("PREDICT", 0);
    released = 0;
    bf_msg_add_frame_ref(m, model, 8, count_release, &released);
    bf_err_t err;
    size_t hlen = 0;
    uint8_t *h = bf_msg_encode_header(m, &hlen, &err);
    CHECK(h != NULL);
    void *data, *hint;
    bf_msg_free_fn *rel;
    CHECK(bf_msg_frame_take(m, 1, &data, &len, &rel, &hint) == 0 && data == model && len == 8 && hint == &released);
    rel(data, hint);
    CHECK(bf_msg_frame_take(m, 0, &data, &len, &rel, &hint) == 0 && len == 8 && !memcmp(data, "\x89PNG", 4));
    rel(data, hint); /* the message's own copy, freed by its release */
    CHECK(bf_msg_frame_take(m, 2, &data, &len, &rel, &hint) == -1);
    uint8_t *h2 = bf_msg_encode_header(m, &len, &err); /* lengths are kept */
    CHECK(h2 && len == hlen && !memcmp(h, h2, hlen));
    free(h), free(h2);
    bf_msg_destroy(&m);
    CHECK(released == 1);
    /* caps per type, from the header alone */
    const struct {
        const char *type;
        size_t cap;
    } caps[] = {{"PING", 0}, {"TASK_STATUS", 0}, {"UPDATE", BF_PROTO_MAX_MESSAGE}, {"PREDICT", BF_PROTO_MAX_MESSAGE},
                {"MODEL", BF_PROTO_MAX_FRAME}};
    for (size_t i = 0; i < sizeof caps / sizeof caps[0]; i++) {
        bf_msg_t *s = sample(caps[i].type, 0);
        buf_t b = header_of(s);
        CHECK_MSG(bf_proto_max_payload(b.p, b.n) == caps[i].cap, "%s: cap %zu", caps[i].type,
                  bf_proto_max_payload(b.p, b.n));
        free(b.p);
        bf_msg_destroy(&s);
    }
    CHECK(bf_proto_max_payload((const uint8_t *)"\xc1", 1) == 0);
}

/* Setters refuse at once; encode reports the first refusal and never sends what decode rejects. */
static void test_setters_and_encode(void) {
    bf_err_t err;
    CHECK(bf_msg_new("NOPE", 1) == NULL && bf_msg_new(NULL, 1) == NULL && bf_msg_new("ping", 1) == NULL);
    bf_msg_t *m = bf_msg_new("REGISTER", 5);
    CHECK(bf_msg_set_str(m, "name", "bad name") == -1);
    CHECK(bf_msg_set_str(m, "name", "ok") == 0);
    CHECK(bf_msg_encode(m, &err) == NULL && strstr(err.msg, "setting 'name': REGISTER.name: byte 3 is not allowed"));
    bf_msg_destroy(&m);

    m = bf_msg_new("REGISTER", 5);
    zmsg_t *z = bf_msg_encode(m, &err);
    CHECK(!z && strstr(err.msg, "refusing to send: REGISTER: missing field 'name'"));
    CHECK(bf_msg_set_uint(m, "name", 1) == -1);
    bf_msg_destroy(&m);

    m = bf_msg_new("TASK_CREATE", 1);
    CHECK(bf_msg_set_double(m, "lr", 0) == -1 && bf_msg_set_double(m, "lr", NAN) == -1);
    CHECK(bf_msg_set_double(m, "lr", 10) == 0 && bf_msg_set_double(m, "rounds", 1) == -1);
    CHECK(bf_msg_set_uint(m, "rounds", 0) == -1 && bf_msg_set_int(m, "rounds", -5) == -1);
    CHECK(bf_msg_set_int(m, "rounds", 5) == 0 && bf_msg_uint(m, "rounds", 0) == 5);
    CHECK(bf_msg_set_str(m, "nope", "x") == -1 && bf_msg_set_str(m, "task", NULL) == -1);
    CHECK(bf_msg_set_bool(m, "task", 1) == -1 && bf_msg_set_any(m, "task", "\xc0", 1) == -1);
    CHECK(bf_msg_add_frame(m, "x", 1) == -1);
    bf_msg_destroy(&m);

    m = bf_msg_new("OK", 1);
    CHECK(bf_msg_set_any(m, "result", "\xdd\xff\xff\xff\xff", 5) == -1);
    CHECK(bf_msg_set_any(m, "result", "\xc0\xc0", 2) == -1);
    CHECK(bf_msg_set_any(m, "result", "\xa2hi", 3) == 0);
    CHECK(bf_msg_set_any(m, "result", "\x93\x01\x02\x03", 4) == 0); /* replaces */
    const msgpack_object *o = bf_msg_any(m, "result");
    CHECK(o && o->type == MSGPACK_OBJECT_ARRAY && o->via.array.size == 3);
    bf_msg_destroy(&m);

    m = sample("UPDATE", 0);
    CHECK(bf_msg_add_frame(m, "abcd", 4) == -1); /* a third frame */
    bf_msg_destroy(&m);
    m = bf_msg_new("UPDATE", 1);
    CHECK(bf_msg_add_frame(m, "abcdefg", 7) == -1);
    void *owned = malloc(6);
    CHECK(bf_msg_add_frame_owned(m, owned, 6) == -1); /* freed on failure */
    owned = malloc(8);
    CHECK(bf_msg_add_frame_owned(m, owned, 8) == 0 && bf_msg_frame_count(m) == 1);
    bf_msg_destroy(&m);

    /* ERROR replies: control bytes and broken UTF-8 replaced, cut at 512 bytes on a boundary. */
    char longmsg[700];
    memset(longmsg, 'x', sizeof longmsg);
    memcpy(longmsg + 503, "\xc3\xa9\xc3\xa9", 4); /* the 512-byte cut falls inside the first */
    longmsg[sizeof longmsg - 1] = 0;
    m = bf_msg_error(9, BF_PROTO_STALE, "bad \x01 \xff %s", longmsg);
    CHECK(m != NULL);
    const char *msg = m ? bf_msg_str(m, "message") : "";
    CHECK(strlen(msg) == 511 && !strncmp(msg, "bad ? ? xx", 10) && !strcmp(bf_msg_str(m, "code"), "STALE"));
    z = m ? bf_msg_encode(m, &err) : NULL;
    CHECK(z != NULL);
    zmsg_destroy(&z);
    bf_msg_destroy(&m);

    for (int c = 0; c < BF_PROTO_CODE_COUNT; c++) CHECK(bf_proto_code_parse(bf_proto_code_name(c)) == c);
    CHECK(bf_proto_code_parse("NOPE") == -1 && bf_proto_code_parse(NULL) == -1);
    CHECK(!strcmp(bf_proto_code_name(BF_PROTO_INSUFFICIENT_FUNDS), "INSUFFICIENT_FUNDS"));
    CHECK(!strcmp(bf_proto_code_name((bf_proto_code_t)99), "INTERNAL"));
    CHECK(!bf_proto_is_request("WELCOME") && bf_proto_is_request("UPDATE") && !bf_proto_is_request(NULL));
}

/* ---- fuzz seeds -------------------------------------------------------------------------- */

/* The fuzz input format (tests/fuzz/fuzz_proto.c): u16 LE header length, header, then for each
 * payload frame a u24 LE length and the frame. */
static int write_seed(const char *dir, const char *name, const bf_msg_t *m) {
    char path[1024];
    size_t hl;
    bf_err_t err;
    uint8_t *h = bf_msg_encode_header(m, &hl, &err);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = h ? fopen(path, "wb") : NULL;
    if (!f) {
        free(h);
        return -1;
    }
    uint8_t p2[2] = {(uint8_t)hl, (uint8_t)(hl >> 8)};
    fwrite(p2, 1, 2, f), fwrite(h, 1, hl, f);
    for (size_t i = 0; i < bf_msg_frame_count(m); i++) {
        size_t fl;
        const uint8_t *fr = bf_msg_frame(m, i, &fl);
        uint8_t p3[3] = {(uint8_t)fl, (uint8_t)(fl >> 8), (uint8_t)(fl >> 16)};
        fwrite(p3, 1, 3, f), fwrite(fr, 1, fl, f);
    }
    free(h);
    return fclose(f);
}

static int write_seeds(const char *dir) {
    static const char *const types[] = {"HELLO", "REGISTER", "TASK_CREATE", "JOIN", "UPDATE", "PREDICT",
                                        "JOINED", "BLOCK", "ROUND", "DONE", "MODEL", "PREDICTION", "ERROR", "OK"};
    int r = 0;
    for (size_t i = 0; i < sizeof types / sizeof *types; i++) {
        bf_msg_t *m = sample(types[i], 1);
        char name[64];
        snprintf(name, sizeof name, "%s.bin", types[i]);
        for (char *c = name; *c; c++) *c = (char)(*c >= 'A' && *c <= 'Z' ? *c - 'A' + 'a' : *c);
        r |= write_seed(dir, name, m);
        bf_msg_destroy(&m);
    }
    return r ? 1 : 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "--write-seeds")) return write_seeds(argv[2]);
    double t0 = bf_now();
    test_round_trips();
    test_getters();
    test_envelope_rejections();
    test_field_rejections();
    test_frame_rejections();
    test_setters_and_encode();
    test_shared_frames_and_caps();
    printf("test_proto: %d rejection cases; codec %.2f s\n", rejections, bf_now() - t0);
    return bf_test_done("test_proto");
}

/* mp.c: a bounds-checking walk over msgpack bytes, and small lookups on parsed objects. */
#include "bf_mp.h"

#include <string.h>

typedef struct {
    const uint8_t *p, *end;
    size_t objects, max_objects;
    int max_depth;
    bf_err_t *err;
} walk_t;

static int need(walk_t *w, size_t n) {
    if ((size_t)(w->end - w->p) < n)
        return bf_err_set(w->err, "msgpack: truncated (needs %zu more bytes, %zu left)", n, (size_t)(w->end - w->p));
    return 0;
}

static uint64_t be(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = v << 8 | p[i];
    return v;
}

/* Reads an n-byte big-endian length after the marker and skips that many payload bytes. */
static int skip_sized(walk_t *w, int n, size_t extra) {
    if (need(w, n)) return -1;
    uint64_t len = be(w->p, n);
    w->p += n;
    if (len + extra < len || need(w, len + extra)) return -1;
    w->p += len + extra;
    return 0;
}

static int walk(walk_t *w, int depth);

/* Containers: each element takes at least one byte, so a count above the bytes left is a lie. */
static int walk_container(walk_t *w, uint64_t count, int per_item, int depth) {
    if (depth >= w->max_depth) return bf_err_set(w->err, "msgpack: nested deeper than %d", w->max_depth);
    if (count > (uint64_t)(w->end - w->p) / per_item)
        return bf_err_set(w->err, "msgpack: container declares %llu elements but only %zu bytes follow",
                          (unsigned long long)count, (size_t)(w->end - w->p));
    for (uint64_t i = 0; i < count * per_item; i++)
        if (walk(w, depth + 1)) return -1;
    return 0;
}

static int walk(walk_t *w, int depth) {
    if (++w->objects > w->max_objects) return bf_err_set(w->err, "msgpack: more than %zu objects", w->max_objects);
    if (need(w, 1)) return -1;
    uint8_t m = *w->p++;
    if (m <= 0x7f || m >= 0xe0 || m == 0xc0 || m == 0xc2 || m == 0xc3) return 0;
    if ((m & 0xf0) == 0x80) return walk_container(w, m & 0x0f, 2, depth);
    if ((m & 0xf0) == 0x90) return walk_container(w, m & 0x0f, 1, depth);
    if ((m & 0xe0) == 0xa0) return need(w, m & 0x1f) ? -1 : (w->p += m & 0x1f, 0);
    switch (m) {
    case 0xc4: case 0xd9: return skip_sized(w, 1, 0);  /* bin8, str8 */
    case 0xc5: case 0xda: return skip_sized(w, 2, 0);  /* bin16, str16 */
    case 0xc6: case 0xdb: return skip_sized(w, 4, 0);  /* bin32, str32 */
    case 0xc7: return skip_sized(w, 1, 1);             /* ext8: length, type, data */
    case 0xc8: return skip_sized(w, 2, 1);
    case 0xc9: return skip_sized(w, 4, 1);
    case 0xca: case 0xce: case 0xd2: return need(w, 4) ? -1 : (w->p += 4, 0);
    case 0xcb: case 0xcf: case 0xd3: return need(w, 8) ? -1 : (w->p += 8, 0);
    case 0xcc: case 0xd0: return need(w, 1) ? -1 : (w->p += 1, 0);
    case 0xcd: case 0xd1: return need(w, 2) ? -1 : (w->p += 2, 0);
    case 0xd4: return need(w, 2) ? -1 : (w->p += 2, 0); /* fixext: type + data */
    case 0xd5: return need(w, 3) ? -1 : (w->p += 3, 0);
    case 0xd6: return need(w, 5) ? -1 : (w->p += 5, 0);
    case 0xd7: return need(w, 9) ? -1 : (w->p += 9, 0);
    case 0xd8: return need(w, 17) ? -1 : (w->p += 17, 0);
    case 0xdc: case 0xde:
    case 0xdd: case 0xdf: {
        int n = (m == 0xdc || m == 0xde) ? 2 : 4;
        if (need(w, n)) return -1;
        uint64_t count = be(w->p, n);
        w->p += n;
        return walk_container(w, count, m >= 0xde ? 2 : 1, depth);
    }
    default: return bf_err_set(w->err, "msgpack: invalid marker byte 0x%02x", m);
    }
}

int bf_mp_check(const uint8_t *buf, size_t len, int max_depth, size_t max_objects, bf_err_t *err) {
    walk_t w = {buf, buf + len, 0, max_objects, max_depth, err};
    if (!buf || len == 0) return bf_err_set(err, "msgpack: empty input");
    if (walk(&w, 0)) return -1;
    if (w.p != w.end) return bf_err_set(err, "msgpack: %zu trailing bytes after the object", (size_t)(w.end - w.p));
    return 0;
}

int bf_mp_parse(const uint8_t *buf, size_t len, int max_depth, size_t max_objects, msgpack_unpacked *u,
                bf_err_t *err) {
    msgpack_unpacked_init(u);
    if (bf_mp_check(buf, len, max_depth, max_objects, err)) return -1;
    size_t off = 0;
    if (msgpack_unpack_next(u, (const char *)buf, len, &off) != MSGPACK_UNPACK_SUCCESS || off != len) {
        msgpack_unpacked_destroy(u);
        msgpack_unpacked_init(u);
        return bf_err_set(err, "msgpack: cannot decode");
    }
    return 0;
}

int bf_mp_str_eq(const msgpack_object *o, const char *s) {
    size_t n = strlen(s);
    return o && o->type == MSGPACK_OBJECT_STR && o->via.str.size == n && !memcmp(o->via.str.ptr, s, n);
}

const msgpack_object *bf_mp_get(const msgpack_object *map, const char *key) {
    if (!map || map->type != MSGPACK_OBJECT_MAP) return NULL;
    for (uint32_t i = 0; i < map->via.map.size; i++)
        if (bf_mp_str_eq(&map->via.map.ptr[i].key, key)) return &map->via.map.ptr[i].val;
    return NULL;
}

int bf_mp_get_str(const msgpack_object *map, const char *key, const char **s, size_t *len, bf_err_t *err) {
    const msgpack_object *o = bf_mp_get(map, key);
    if (!o || o->type != MSGPACK_OBJECT_STR) return bf_err_set(err, "'%s' missing or not a string", key);
    *s = o->via.str.ptr;
    *len = o->via.str.size;
    return 0;
}

int bf_mp_get_int(const msgpack_object *map, const char *key, int64_t lo, int64_t hi, int64_t *v, bf_err_t *err) {
    const msgpack_object *o = bf_mp_get(map, key);
    int64_t x;
    if (o && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= INT64_MAX)
        x = (int64_t)o->via.u64;
    else if (o && o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        x = o->via.i64;
    else
        return bf_err_set(err, "'%s' missing or not an integer", key);
    if (x < lo || x > hi) return bf_err_set(err, "'%s' = %lld out of range [%lld, %lld]", key, (long long)x, (long long)lo, (long long)hi);
    *v = x;
    return 0;
}

int bf_mp_as_double(const msgpack_object *o, double *v) {
    if (!o) return -1;
    switch (o->type) {
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: *v = o->via.f64; return 0;
    case MSGPACK_OBJECT_POSITIVE_INTEGER: *v = (double)o->via.u64; return 0;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: *v = (double)o->via.i64; return 0;
    default: return -1;
    }
}

void bf_mp_pack_str(msgpack_packer *pk, const char *s) {
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

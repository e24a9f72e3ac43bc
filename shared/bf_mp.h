/* bf_mp.h: msgpack input that cannot be trusted.
 *
 * msgpack-c allocates from the counts a message declares before reading its elements (5 bytes
 * "dd ff ff ff ff" make it try ~96 GB), so every untrusted buffer goes through bf_mp_check first:
 * a walk that proves every array/map count and str/bin length fits in the bytes present, bounds
 * nesting depth and the total number of objects, and requires exactly one object spanning the
 * buffer. After it passes, msgpack_unpack_next can allocate at most a small multiple of len. */
#ifndef BF_MP_H
#define BF_MP_H

#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

#include "bf_util.h"

int bf_mp_check(const uint8_t *buf, size_t len, int max_depth, size_t max_objects, bf_err_t *err);

/* bf_mp_check + msgpack_unpack_next into u (caller destroys with msgpack_unpacked_destroy). */
int bf_mp_parse(const uint8_t *buf, size_t len, int max_depth, size_t max_objects, msgpack_unpacked *u,
                bf_err_t *err);

/* Map lookups on a parsed object; NULL when absent or when map is not a map. */
const msgpack_object *bf_mp_get(const msgpack_object *map, const char *key);
/* Typed getters: 0 on success, -1 with a message naming key when absent or of the wrong type. */
int bf_mp_get_str(const msgpack_object *map, const char *key, const char **s, size_t *len, bf_err_t *err);
int bf_mp_get_int(const msgpack_object *map, const char *key, int64_t lo, int64_t hi, int64_t *v, bf_err_t *err);
/* A number (int or float) as double. */
int bf_mp_as_double(const msgpack_object *o, double *v);
/* Packs a NUL-terminated string as a msgpack str. */
void bf_mp_pack_str(msgpack_packer *pk, const char *s);
int bf_mp_str_eq(const msgpack_object *o, const char *s);

#endif

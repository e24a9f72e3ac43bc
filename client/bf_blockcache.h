/* bf_blockcache.h: data blocks as they arrive in BLOCK replies, verified, and their cache in the
 * profile (DIR/blocks/TASK/BLOCK.blk).
 *
 * Cache file format (little-endian), validated completely on every read:
 *   8 bytes   magic "BFBLK01\n"
 *   5 x u32   n, c, h, w, classes      (ranges as in the BLOCK message: n 1..10^6, c 1..4,
 *                                       h, w 1..1024, classes 2..256)
 *   64 bytes  SHA-256 hex of pixels || labels (bf_block_digest)
 *   u32       FNV-1a (32-bit) of the 92 bytes before it
 *   n*c*h*w   pixels (uint8, NCHW), then n labels (each < classes)
 * The file size must be exactly header + pixels + labels and the digest must match; anything
 * else (truncated, corrupt, foreign file) is refused and the caller fetches the block again. */
#ifndef BF_BLOCKCACHE_H
#define BF_BLOCKCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "bf_proto.h"
#include "bf_util.h"

#define BF_BLOCK_HEADER 96

typedef struct {
    int32_t n, c, h, w, classes;
    char sha256[65];
    uint8_t *pixels; /* n*c*h*w bytes, owned */
    uint8_t *labels; /* n bytes, owned */
} bf_block_t;

void bf_block_free(bf_block_t *b);
/* Ranges, label values and digest (recomputed, compared with b->sha256). */
int bf_block_check(const bf_block_t *b, bf_err_t *err);
/* A BLOCK reply for block `id` of `task` as a verified block (copies the frames). Refuses a reply
 * for another task or block, frames of the wrong size, labels >= classes, a digest mismatch. */
int bf_block_from_msg(const bf_msg_t *m, const char *task, uint64_t id, bf_block_t *out, bf_err_t *err);

/* DIR/blocks/TASK/ID.blk */
int bf_blockcache_path(const char *home, const char *task, uint64_t id, char *out, size_t n);
/* Reads and validates a cache file; -1 (out left empty) for a missing or invalid one. */
int bf_blockcache_read(const char *path, bf_block_t *out, bf_err_t *err);
/* Writes atomically (temporary file + rename), creating DIR/blocks/TASK as needed (0700). */
int bf_blockcache_write(const char *path, const bf_block_t *b, bf_err_t *err);

#endif

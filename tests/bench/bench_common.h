/* bench_common.h: what the benchmarks that drive a real coordinator share: a simulated client
 * (its own CURVE key and DEALER socket) and one request/reply, and big-endian IDX headers. */
#ifndef BF_BENCH_COMMON_H
#define BF_BENCH_COMMON_H

#include <czmq.h>
#include <stdio.h>

#include "bf_proto.h"

typedef struct {
    zcert_t *cert;
    zsock_t *sock;
} bench_cli_t;

/* Sends req (consumed) and returns the decoded reply carrying its id, or NULL on timeout. */
static inline bf_msg_t *bench_rpc(bench_cli_t *c, bf_msg_t *req) {
    bf_err_t err;
    uint64_t id = bf_msg_id(req);
    zmsg_t *z = bf_msg_encode(req, &err);
    bf_msg_destroy(&req);
    if (!z) return NULL;
    zmsg_send(&z, c->sock);
    for (;;) {
        zmsg_t *in = zmsg_recv(c->sock);
        if (!in) return NULL;
        bf_msg_t *m = bf_msg_decode(&in, NULL, &err);
        if (m && bf_msg_id(m) == id) return m;
        bf_msg_destroy(&m);
    }
}

static inline void bench_put_be32(FILE *f, uint32_t v) {
    uint8_t b[4] = {v >> 24, v >> 16, v >> 8, v};
    fwrite(b, 1, 4, f);
}

#endif

/* fuzz_proto: libFuzzer target for the wire-protocol decoder.
 *
 * Input format (also what `test_proto --write-seeds DIR` writes): a u16 little-endian header
 * length and that many header bytes, then for each payload frame a u24 little-endian length and
 * that many bytes, until the input ends. A length larger than what is left is cut to what is
 * left; at most 80 frames are read, so the too-many-frames path is reachable.
 *
 * Beyond "no crash, no leak, no UB", every accepted message must survive encode -> decode ->
 * encode with byte-identical headers (we never send what we would reject), and every refusal
 * must turn into an ERROR reply that encodes. Violations abort(). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bf_proto.h"

#define MAX_FUZZ_FRAMES 80

static size_t take(const uint8_t **p, size_t *left, int nbytes) {
    size_t v = 0;
    for (int i = 0; i < nbytes && *left; i++, (*p)++, (*left)--) v |= (size_t)(**p) << (8 * i);
    return v;
}

/* Accepted: re-encode, decode the result through czmq frames, re-encode again, compare. */
static void check_round_trip(const bf_msg_t *m) {
    bf_err_t err;
    size_t h1n, h2n;
    uint8_t *h1 = bf_msg_encode_header(m, &h1n, &err);
    if (!h1) abort(); /* accepted but would refuse to send */
    zmsg_t *z = bf_msg_encode(m, &err);
    if (!z) abort();
    bf_proto_reject_t rej;
    bf_msg_t *d = bf_msg_decode(&z, &rej, &err);
    if (!d || z) abort();
    uint8_t *h2 = bf_msg_encode_header(d, &h2n, &err);
    if (!h2 || h1n != h2n || memcmp(h1, h2, h1n)) abort();
    if (bf_msg_frame_count(d) != bf_msg_frame_count(m)) abort();
    for (size_t i = 0; i < bf_msg_frame_count(m); i++) {
        size_t a, b;
        const uint8_t *pa = bf_msg_frame(m, i, &a), *pb = bf_msg_frame(d, i, &b);
        if (!pa || !pb || a != b || memcmp(pa, pb, a)) abort();
    }
    free(h1);
    free(h2);
    bf_msg_destroy(&d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *p = data;
    size_t left = size;
    size_t hlen = take(&p, &left, 2);
    if (hlen > left) hlen = left;
    const uint8_t *hdr = p;
    p += hlen, left -= hlen;
    const uint8_t *frames[MAX_FUZZ_FRAMES];
    size_t flens[MAX_FUZZ_FRAMES], n = 0;
    while (left && n < MAX_FUZZ_FRAMES) {
        size_t fl = take(&p, &left, 3);
        if (fl > left) fl = left;
        frames[n] = p, flens[n] = fl, n++;
        p += fl, left -= fl;
    }
    bf_proto_reject_t rej;
    bf_err_t err;
    bf_msg_t *m = bf_msg_decode_bytes(hdr, hlen, frames, flens, n, &rej, &err);
    if (m) {
        check_round_trip(m);
        bf_msg_destroy(&m);
    } else {
        if (rej.code != BF_PROTO_BAD_REQUEST && rej.code != BF_PROTO_UNKNOWN_TYPE && rej.code != BF_PROTO_TOO_LARGE)
            abort();
        bf_msg_t *e = bf_msg_error_reject(&rej, &err);
        zmsg_t *z = e ? bf_msg_encode(e, &err) : NULL;
        if (!z) abort();
        zmsg_destroy(&z);
        bf_msg_destroy(&e);
    }
    return 0;
}

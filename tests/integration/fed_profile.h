/* fed_profile.h: for the CLI tests that link the client library (bfclient): a request the CLI
 * itself would not send (a retry with the same key, a malformed argument), sent with a
 * blockfed-client profile's key pair as the CLI would, on a new connection. */
#ifndef BF_FED_PROFILE_H
#define BF_FED_PROFILE_H

#include "bf_conn.h"
#include "bf_profile.h"
#include "fed_common.h"

/* Sends req (consumed) with home's key pair; the reply's type (an ERROR's code), or "" on none. */
static inline const char *fed_profile_send(const char *home, bf_msg_t *req, char *type, size_t cap) {
    bf_profile_t p;
    zcert_t *cert = NULL;
    bf_err_t err;
    snprintf(type, cap, "%s", "");
    if (bf_profile_load(home, &p, &cert, &err) == 0) {
        bf_conn_t *c = bf_conn_new(p.coordinator, p.server_key, cert, p.insecure, &err);
        bf_msg_t *r = c ? bf_conn_request(c, &req, 10000, &err) : NULL;
        if (r) snprintf(type, cap, "%s", !strcmp(bf_msg_type(r), "ERROR") ? bf_msg_str(r, "code") : bf_msg_type(r));
        bf_msg_destroy(&r);
        bf_conn_destroy(&c);
    }
    zcert_destroy(&cert);
    bf_msg_destroy(&req);
    return type;
}

#endif

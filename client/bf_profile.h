/* bf_profile.h: the participant's profile directory (default ~/.blockfed) and the local checks
 * that do not need a coordinator.
 *
 * Layout of a profile DIR (created with mode 0700):
 *   DIR/profile              `key = value` lines: coordinator, server_key, user, insecure, registered
 *   DIR/client.cert          the participant's CURVE public certificate (czmq zcert_save)
 *   DIR/client.cert_secret   the secret half (mode 0600); refused when group/others can read it
 *   DIR/blocks/TASK/B.blk    cached data blocks (bf_blockcache.h)
 * The participant's identity is the key pair, so the files are created once and reused. */
#ifndef BF_PROFILE_H
#define BF_PROFILE_H

#include <czmq.h>
#include <limits.h>

#include "bf_util.h"

#define BF_PROFILE_MAX_ENDPOINT 256
#define BF_PROFILE_KEY_LEN 40 /* Z85 text of a 32-byte CURVE key */

typedef struct {
    char home[PATH_MAX];
    char coordinator[BF_PROFILE_MAX_ENDPOINT];
    char server_key[BF_PROFILE_KEY_LEN + 1];
    char user[33];
    int insecure;   /* plain TCP (loopback only) */
    int registered; /* the coordinator confirmed REGISTER for user with this key */
} bf_profile_t;

/* The profile directory: home if given, else $BLOCKFED_HOME, else $HOME/.blockfed. */
int bf_profile_home(const char *home, char *out, size_t n, bf_err_t *err);

/* Loads DIR/profile and DIR/client.cert(+_secret) into *p and *cert (cert may be NULL when not
 * wanted). Every field is validated as on the command line; the secret file must not be readable
 * by group or others. */
int bf_profile_load(const char *home, bf_profile_t *p, zcert_t **cert, bf_err_t *err);
/* Just the key pair (same checks as bf_profile_load). */
int bf_profile_load_cert(const char *home, zcert_t **cert, bf_err_t *err);
/* Writes DIR/profile atomically (temporary file + rename), mode 0600. */
int bf_profile_save(const bf_profile_t *p, bf_err_t *err);
/* Creates DIR (mode 0700; parents as needed) if missing; refuses a DIR that group/others may write. */
int bf_profile_mkdir(const char *home, bf_err_t *err);
/* A new key pair saved as DIR/client.cert + DIR/client.cert_secret (0600); *cert owns it. */
int bf_profile_new_cert(const char *home, const char *user, zcert_t **cert, bf_err_t *err);

/* Checks ---------------------------------------------------------------------------------- */

/* A 40-character Z85 CURVE public key (decodes to 32 bytes). */
int bf_check_server_key(const char *key, bf_err_t *err);
/* A ZeroMQ endpoint we can connect to: tcp://HOST:PORT, ipc://PATH or inproc://NAME, at most
 * BF_PROFILE_MAX_ENDPOINT-1 bytes, no spaces or control characters. */
int bf_check_endpoint(const char *endpoint, bf_err_t *err);
/* 1 if the endpoint never leaves this machine: tcp://127.x.x.x, tcp://localhost, tcp://[::1],
 * ipc://, inproc://. Plain TCP (--insecure) is allowed only there. */
int bf_endpoint_is_loopback(const char *endpoint);
/* A user or task name as the protocol's `name` kind: 1..max bytes of A-Z a-z 0-9 _ . -, not
 * starting with '.' or '-'. */
int bf_check_name(const char *s, size_t max, const char *what, bf_err_t *err);
/* A money amount as the ledger takes it: digits, optionally '.' and 1..2 digits; no sign,
 * exponent or spaces; at most 15 integer digits. */
int bf_check_amount(const char *s, bf_err_t *err);

#endif

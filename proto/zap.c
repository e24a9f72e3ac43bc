/* zap.c: the ZAP (RFC 27) handler actor behind CURVE authentication (bf_proto.h, "ZAP handler"):
 * it accepts every CURVE key and names the connection by it (User-Id = the key's Z85 text), and
 * refuses the keys it was told to deny. Authorization (which key acts for which account) is the
 * ledger's business, not this handler's. */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "bf_proto.h"

#define ZAP_ENDPOINT "inproc://zeromq.zap.01"
#define KEY_LEN 40 /* a Z85 CURVE public key */

/* One ZAP request (RFC 27: version, request id, domain, address, identity, mechanism,
 * credentials...) answered with (version, request id, status, text, user id, metadata). */
static void zap_answer(zsock_t *h, zhashx_t *denied) {
    zmsg_t *req = zmsg_recv(h);
    if (!req) return;
    char *version = zmsg_popstr(req);
    zframe_t *seq = zmsg_pop(req);
    for (int i = 0; i < 3; i++) {  /* domain, address, identity: no policy depends on them */
        zframe_t *skip = zmsg_pop(req);
        zframe_destroy(&skip);
    }
    char *mech = zmsg_popstr(req);
    zframe_t *cred = zmsg_pop(req);
    const char *status = "400", *text = "mechanism not accepted";
    char user[KEY_LEN + 1] = "";
    if (!version || strcmp(version, "1.0") || !seq || !mech)
        status = "500", text = "malformed ZAP request";
    else if (!strcmp(mech, "CURVE") && cred && zframe_size(cred) == 32) {
        zmq_z85_encode(user, zframe_data(cred), 32);
        if (zhashx_lookup(denied, user))
            status = "400", text = "key refused", user[0] = 0;
        else
            status = "200", text = "OK";
    } else if (!strcmp(mech, "NULL"))
        status = "200", text = "OK";
    zmsg_t *rep = zmsg_new();
    zmsg_addstr(rep, "1.0");
    if (seq) zmsg_append(rep, &seq);
    else zmsg_addstr(rep, "");
    zmsg_addstr(rep, status);
    zmsg_addstr(rep, text);
    zmsg_addstr(rep, user);
    zmsg_addmem(rep, NULL, 0);
    zmsg_send(&rep, h);
    zframe_destroy(&seq);
    zframe_destroy(&cred);
    free(version);
    free(mech);
    zmsg_destroy(&req);
}

/* One command from the pipe (the protocol is in bf_proto.h); true when the actor must end. */
static bool zap_command(zsock_t *pipe, zhashx_t *denied) {
    zmsg_t *cmd = zmsg_recv(pipe);
    char *verb = cmd ? zmsg_popstr(cmd) : NULL;
    bool term = !verb || !strcmp(verb, "$TERM");
    if (verb && !strcmp(verb, "DENY")) {
        char *key = zmsg_popstr(cmd);
        if (key && strlen(key) == KEY_LEN) zhashx_update(denied, key, (void *)1);
        free(key);
        /* Acknowledged once the key is in the set, as czmq's zauth acknowledges its commands: a
         * handshake answered after this point is refused. */
        zsock_signal(pipe, 0);
    }
    free(verb);
    zmsg_destroy(&cmd);
    return term;
}

/* The actor owns the REP socket bf_proto_zap_new bound in the caller's thread. It ends on $TERM
 * or when the context terminates, not when the process gets SIGINT/SIGTERM (the poller ignores
 * zsys_interrupted): until its owner destroys it, every handshake is still checked and every
 * DENY still acknowledged, so a DENY sent during shutdown cannot wait forever. */
static void zap_actor(zsock_t *pipe, void *args) {
    zsock_t *h = args;
    zpoller_t *poller = zpoller_new(pipe, h, NULL);
    zhashx_t *denied = zhashx_new(); /* keys refused from now on (bf_proto_zap_deny) */
    if (poller) zpoller_set_nonstop(poller, true);
    zsock_signal(pipe, 0);
    bool done = !poller || !denied;
    while (!done) {
        void *which = zpoller_wait(poller, -1);
        if (which == h) zap_answer(h, denied);
        else if (which == pipe) done = zap_command(pipe, denied);
        else done = errno != EINTR; /* a signal interrupted the poll: carry on */
    }
    zhashx_destroy(&denied);
    zpoller_destroy(&poller);
    /* Closing a socket frees its inproc endpoint only later, on libzmq's reaper thread; unbinding
     * frees it now, so once zactor_destroy returns a new handler can bind it. */
    zsock_unbind(h, "%s", ZAP_ENDPOINT);
    zsock_destroy(&h);
}

void bf_proto_zap_deny(zactor_t *zap, const char *key) {
    if (!zap || !key || strlen(key) != KEY_LEN) return;
    if (zstr_sendx(zap, "DENY", key, NULL) == 0) zsock_wait(zap);
}

zactor_t *bf_proto_zap_new(bf_err_t *err) {
    zsock_t *h = zsock_new(ZMQ_REP);
    if (!h) return bf_err_set(err, "ZAP handler: cannot create a socket"), NULL;
    if (zsock_bind(h, ZAP_ENDPOINT)) {
        zsock_destroy(&h);
        return bf_err_set(err, "ZAP handler: cannot bind %s (is zauth or another handler running?)", ZAP_ENDPOINT), NULL;
    }
    zactor_t *a = zactor_new(zap_actor, h);
    if (!a) {
        zsock_destroy(&h);
        bf_err_set(err, "ZAP handler: cannot start the actor");
    }
    return a;
}

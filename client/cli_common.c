/* cli_common.c: what the participant commands share (client.h): the messages and outcomes of
 * usage and runtime errors, strict number parsing, the common options, opening the profile and
 * its connection, one request/reply with the error conventions, printing structured replies. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bf_render.h"
#include "client.h"

#define IDEMPOTENT_RETRIES 2 /* Lazy Pirate: three attempts in all */

static void vsay(const char *fmt, va_list ap) {
    /* The program name (blockfed-client, blockfed-predict), so messages say who speaks. A message
     * may quote the coordinator, a file or an argument: it reaches the terminal sanitised. */
    char msg[2048];
    vsnprintf(msg, sizeof msg, fmt, ap);
    fprintf(stderr, "%s: ", program_invocation_short_name);
    bf_render_string(stderr, msg);
    fprintf(stderr, "\n");
}

bf_cli_args_t bf_cli_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsay(fmt, ap);
    va_end(ap);
    return CLIENT_ARGS_BAD;
}

bf_cli_outcome_t bf_cli_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsay(fmt, ap);
    va_end(ap);
    return CLIENT_ERROR;
}

bf_cli_args_t bf_cli_int(const char *s, long long lo, long long hi, long long *v, const char *flag) {
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (!*s || *end || errno || x < lo || x > hi)
        return bf_cli_error("%s takes an integer in [%lld, %lld], got '%s'", flag, lo, hi, s);
    *v = x;
    return CLIENT_ARGS_OK;
}

bf_cli_args_t bf_cli_double(const char *s, double lo, double hi, double *v, const char *flag) {
    char *end;
    errno = 0;
    double x = strtod(s, &end);
    if (!*s || *end || errno || !isfinite(x) || x < lo || x > hi)
        return bf_cli_error("%s takes a number in [%g, %g], got '%s'", flag, lo, hi, s);
    *v = x;
    return CLIENT_ARGS_OK;
}

int bf_cli_common_opt(int c, const char *arg, bf_cli_ctx_t *ctx, bf_cli_args_t *rc) {
    long long v;
    if (c == 0x101) ctx->home = arg;
    else if (c == 0x102) {
        if (bf_cli_int(arg, 1, 86400, &v, "--timeout")) *rc = CLIENT_ARGS_BAD;
        else ctx->timeout_ms = (int)(v * 1000);
    } else
        return 0;
    return 1;
}

bf_cli_outcome_t bf_cli_open(const bf_cli_ctx_t *ctx, bf_profile_t *p, bf_conn_t **conn) {
    bf_err_t err;
    char home[PATH_MAX];
    zcert_t *cert = NULL;
    *conn = NULL;
    if (bf_profile_home(ctx->home, home, sizeof home, &err) || bf_profile_load(home, p, &cert, &err))
        return bf_cli_fail("%s", err.msg);
    *conn = bf_conn_new(p->coordinator, p->server_key, cert, p->insecure, &err);
    zcert_destroy(&cert);
    if (!*conn) return bf_cli_fail("%s", err.msg);
    return CLIENT_OK;
}

/* The coordinator's text, safe for a terminal. */
static void clean(const char *in, char *out, size_t n) { bf_render_clean(out, n, in, in ? strlen(in) : 0); }

bf_cli_outcome_t bf_cli_roundtrip(const bf_cli_ctx_t *ctx, bf_conn_t *conn, bf_msg_t **req, const char *expect,
                                  int idempotent, bf_msg_t **reply) {
    bf_err_t err;
    char type[32];
    snprintf(type, sizeof type, "%s", *req ? bf_msg_type(*req) : "?");
    int timeout = ctx->timeout_ms > 0 ? ctx->timeout_ms : 10000;
    *reply = bf_conn_call(conn, req, timeout, idempotent ? IDEMPOTENT_RETRIES : 0, &err);
    if (!*reply) {
        if (bf_conn_status(conn) == BF_CONN_TIMEOUT && !idempotent)
            return bf_cli_fail("%s: %s (the request may or may not have been applied; check before repeating it)", type,
                               err.msg);
        return bf_cli_fail("%s: %s", type, err.msg);
    }
    const char *t = bf_msg_type(*reply);
    if (!strcmp(t, "ERROR")) {
        char code[64], msg[600];
        clean(bf_msg_str(*reply, "code"), code, sizeof code);
        clean(bf_msg_str(*reply, "message"), msg, sizeof msg);
        bf_msg_destroy(reply);
        return bf_cli_fail("coordinator: %s: %s", code, msg);
    }
    if (strcmp(t, expect)) {
        bf_cli_fail("%s: unexpected reply %s (expected %s)", type, t, expect);
        bf_msg_destroy(reply);
        return CLIENT_ERROR;
    }
    return CLIENT_OK;
}

void bf_cli_print_any(const msgpack_object *o, int json) {
    if (json) {
        if (o) bf_render_json(stdout, o);
        else fputs("{}", stdout);
        fputc('\n', stdout);
    } else if (o)
        bf_render_text(stdout, o);
    else
        puts("ok");
    fflush(stdout);
}

bf_cli_outcome_t bf_cli_simple(const bf_cli_ctx_t *ctx, bf_msg_t *req, const char *expect, const char *field,
                               int idempotent, int json) {
    if (!req) return bf_cli_fail("out of memory");
    bf_profile_t p;
    bf_conn_t *conn;
    bf_msg_t *reply = NULL;
    bf_cli_outcome_t rc = bf_cli_open(ctx, &p, &conn);
    if (!rc) rc = bf_cli_roundtrip(ctx, conn, &req, expect, idempotent, &reply);
    if (!rc) bf_cli_print_any(field ? bf_msg_any(reply, field) : NULL, json);
    bf_msg_destroy(&req);
    bf_msg_destroy(&reply);
    bf_conn_destroy(&conn);
    return rc;
}

bf_cli_args_t bf_cli_parse_plain(int argc, char **argv, bf_cli_ctx_t *ctx, int *json, const char *help) {
    static const struct option opts[] = {{"json", no_argument, 0, 'j'}, {"help", no_argument, 0, 'h'},
                                         BF_CLI_COMMON_OPTS, {0, 0, 0, 0}};
    int c;
    bf_cli_args_t rc = CLIENT_ARGS_OK;
    *json = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (bf_cli_common_opt(c, optarg, ctx, &rc)) {
            if (rc) return rc;
        } else if (c == 'j')
            *json = 1;
        else if (c == 'h') {
            fputs(help, stdout);
            return CLIENT_ARGS_HELP;
        } else
            return CLIENT_ARGS_BAD;
    }
    return CLIENT_ARGS_OK;
}

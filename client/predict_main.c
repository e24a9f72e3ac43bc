/* predict_main.c: blockfed-predict, classifying images with a trained model, either paid through
 * the coordinator (--task, over the profile's CURVE connection, in requests of up to
 * BF_PREDICT_MAX_IMAGES images) or locally from a model file (--model, no fee, no network). Owns
 * the options, the PREDICT requests and the checks of their replies, and the output (text or
 * JSON); both paths decode and classify with the same code (bf_predictor.h). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "bf_datasets.h"
#include "bf_money.h"
#include "bf_mp.h"
#include "bf_models.h"
#include "bf_predictor.h"
#include "bf_render.h"
#include "client.h"

static const char help[] =
    "usage: blockfed-predict [--home DIR] [--timeout S] --task ID IMAGE... [--top K] [--json]\n"
    "       blockfed-predict --model FILE IMAGE... [--top K] [--json]\n"
    "\n"
    "Classifies each IMAGE (PNG, JPEG, BMP, GIF first frame, PNM): converted to the model's channels,\n"
    "resized bilinearly to its input and normalized with its mean/std, exactly as training data.\n"
    "\n"
    "  --task ID      paid prediction with the task's online model through the coordinator of the\n"
    "                 profile (blockfed-client register); the price is held first, only the images\n"
    "                 actually classified are charged, and the fee goes to the model's shareholders\n"
    "  --model FILE   local prediction from a model file: no fee, no network\n"
    "  --top K        labels per image, most probable first (default 3)\n"
    "  --json         one JSON object on stdout\n"
    "  --home DIR     profile directory (default $BLOCKFED_HOME, else ~/.blockfed)\n"
    "  --timeout S    seconds to wait for each reply (default 10)\n"
    "\n"
    "Up to 64 images go in one request; more are sent as several requests, each priced on its own.\n"
    "exit status: 0 every image classified, 1 an image or the request failed, 2 usage error\n";

typedef struct {
    const char *task, *model;
    int top, json;
    char **images;
    int nimages;
} opts_t;

/* What each image came to: an error, or the top-k (class, label, p). */
typedef struct {
    char error[512];
    int k;
    int cls[BF_PREDICT_MAX_TOP];
    char label[BF_PREDICT_MAX_TOP][64];
    double p[BF_PREDICT_MAX_TOP];
} result_t;

typedef struct {
    int64_t fee; /* cents, summed over the requests */
    char balance[32], model[65];
    int64_t usage[(4096 + BF_PREDICT_MAX_IMAGES - 1) / BF_PREDICT_MAX_IMAGES];
    int nusage;
} bill_t;

static bf_cli_args_t parse(int argc, char **argv, opts_t *o, bf_cli_ctx_t *ctx) {
    static const struct option opts[] = {{"task", required_argument, 0, 't'}, {"model", required_argument, 0, 'm'},
                                         {"top", required_argument, 0, 'k'},  {"json", no_argument, 0, 'j'},
                                         {"help", no_argument, 0, 'h'},      BF_CLI_COMMON_OPTS,
                                         {0, 0, 0, 0}};
    int c;
    bf_cli_args_t rc = CLIENT_ARGS_OK;
    long long v;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (bf_cli_common_opt(c, optarg, ctx, &rc)) {
            if (rc) return rc;
            continue;
        }
        switch (c) {
        case 't': o->task = optarg; break;
        case 'm': o->model = optarg; break;
        case 'j': o->json = 1; break;
        case 'k':
            if (bf_cli_int(optarg, 1, BF_PREDICT_MAX_TOP, &v, "--top")) return CLIENT_ARGS_BAD;
            o->top = (int)v;
            break;
        case 'h': fputs(help, stdout); return CLIENT_ARGS_HELP;
        default: return CLIENT_ARGS_BAD;
        }
    }
    if (!o->task == !o->model) return bf_cli_error("give exactly one of --task ID (paid) or --model FILE (local)");
    o->images = argv + optind;
    o->nimages = argc - optind;
    if (o->nimages < 1) return bf_cli_error("no IMAGE given");
    if (o->nimages > 4096) return bf_cli_error("at most 4096 images per run");
    bf_err_t err;
    if (o->task && bf_check_name(o->task, 64, "--task", &err)) return bf_cli_error("%s", err.msg);
    return CLIENT_ARGS_OK;
}

/* ---- local ----------------------------------------------------------------------------------- */

static void fill(result_t *r, const bf_predictor_t *p, const double *probs, int top) {
    int idx[BF_PREDICT_MAX_TOP];
    r->k = bf_predictor_topk(probs, bf_predictor_classes(p), top, idx);
    for (int i = 0; i < r->k; i++) {
        r->cls[i] = idx[i];
        r->p[i] = probs[idx[i]];
        snprintf(r->label[i], sizeof r->label[i], "%s", bf_predictor_label(p, idx[i]));
    }
}

static bf_cli_outcome_t run_local(const opts_t *o, result_t *res, bill_t *bill) {
    bf_err_t err;
    uint8_t *file = NULL;
    size_t len = 0;
    /* The file's SHA-256 names the model, as the coordinator's PREDICTION and MODEL do. */
    if (bf_file_read(o->model, BF_MODEL_FILE_MAX, &file, &len, &err)) return bf_cli_fail("%s", err.msg);
    bf_sha256_hex(file, len, bill->model);
    bf_predictor_t *p = bf_predictor_new(file, len, BF_PREDICT_THREADS, &err);
    free(file);
    if (!p) return bf_cli_fail("%s: %s", o->model, err.msg);
    double probs[256];
    for (int i = 0; i < o->nimages; i++) {
        uint8_t *buf = NULL;
        size_t n = 0;
        if (bf_image_file_read(o->images[i], &buf, &n, &err) || bf_predictor_run(p, buf, n, probs, &err))
            snprintf(res[i].error, sizeof res[i].error, "%s", err.msg);
        else
            fill(&res[i], p, probs, o->top);
        free(buf);
    }
    bf_predictor_destroy(&p);
    return CLIENT_OK;
}

/* ---- remote ---------------------------------------------------------------------------------- */

static int random_hex(char out[65]) {
    unsigned char b[32];
    if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b) return -1;
    for (int i = 0; i < 32; i++) snprintf(out + 2 * i, 3, "%02x", b[i]);
    return 0;
}

static int str_of(const msgpack_object *o, char *out, size_t cap) {
    if (!o || o->type != MSGPACK_OBJECT_STR) return -1;
    size_t n = o->via.str.size < cap - 1 ? o->via.str.size : cap - 1;
    memcpy(out, o->via.str.ptr, n);
    out[n] = 0;
    return 0;
}

/* One image's entry of PREDICTION.results, checked: {error: str} or {top: [{class, label, p}]}. */
static int read_entry(const msgpack_object *e, int top, result_t *r) {
    if (e->type != MSGPACK_OBJECT_MAP) return -1;
    const msgpack_object *er = bf_mp_get(e, "error"), *t = bf_mp_get(e, "top");
    if (er) return str_of(er, r->error, sizeof r->error);
    if (!t || t->type != MSGPACK_OBJECT_ARRAY || t->via.array.size > (uint32_t)top) return -1;
    r->k = (int)t->via.array.size;
    for (int i = 0; i < r->k; i++) {
        const msgpack_object *x = &t->via.array.ptr[i], *c = bf_mp_get(x, "class"), *p = bf_mp_get(x, "p");
        if (!c || c->type != MSGPACK_OBJECT_POSITIVE_INTEGER || c->via.u64 > 255 || !p ||
            p->type != MSGPACK_OBJECT_FLOAT64 || str_of(bf_mp_get(x, "label"), r->label[i], sizeof r->label[i]))
            return -1;
        r->cls[i] = (int)c->via.u64;
        r->p[i] = p->via.f64;
    }
    return 0;
}

/* Sends images [from, to) that could be read (others already carry their error) as one PREDICT. */
static bf_cli_outcome_t request(const opts_t *o, const bf_cli_ctx_t *ctx, bf_conn_t *conn, int from, int to,
                                uint8_t **bufs, size_t *lens, result_t *res, bill_t *bill) {
    char rid[65];
    bf_msg_t *req = bf_msg_new("PREDICT", 0), *rep = NULL;
    if (!req || random_hex(rid)) return bf_msg_destroy(&req), bf_cli_fail("cannot build the request");
    bf_msg_set_str(req, "task", o->task);
    bf_msg_set_uint(req, "top", (uint64_t)o->top);
    bf_msg_set_str(req, "request", rid);
    int sent[BF_PREDICT_MAX_IMAGES], nsent = 0;
    for (int i = from; i < to; i++)
        if (bufs[i]) {
            bf_msg_add_frame_owned(req, bufs[i], lens[i]);
            bufs[i] = NULL;
            sent[nsent++] = i;
        }
    if (!nsent) return bf_msg_destroy(&req), CLIENT_OK;
    /* A request id makes the retry safe: the coordinator answers it from its usage record. */
    bf_cli_outcome_t rc = bf_cli_roundtrip(ctx, conn, &req, "PREDICTION", 1, &rep);
    bf_msg_destroy(&req);
    if (rc) {
        for (int k = 0; k < nsent; k++) snprintf(res[sent[k]].error, sizeof res[sent[k]].error, "request failed");
        return rc;
    }
    const msgpack_object *r = bf_msg_any(rep, "results");
    int64_t fee;
    bf_err_t err;
    if (!r || r->type != MSGPACK_OBJECT_ARRAY || r->via.array.size != (uint32_t)nsent ||
        bf_money_parse_amount(bf_msg_str(rep, "fee"), 2, &fee, &err)) {
        bf_msg_destroy(&rep);
        return bf_cli_fail("the coordinator's PREDICTION does not match the request");
    }
    for (int k = 0; k < nsent; k++)
        if (read_entry(&r->via.array.ptr[k], o->top, &res[sent[k]]))
            snprintf(res[sent[k]].error, sizeof res[sent[k]].error, "malformed result from the coordinator");
    bill->fee += fee;
    snprintf(bill->balance, sizeof bill->balance, "%s", bf_msg_str(rep, "balance"));
    if (bf_msg_str(rep, "model")) snprintf(bill->model, sizeof bill->model, "%s", bf_msg_str(rep, "model"));
    if (bf_msg_has(rep, "usage")) bill->usage[bill->nusage++] = (int64_t)bf_msg_uint(rep, "usage", 0);
    bf_msg_destroy(&rep);
    return CLIENT_OK;
}

static bf_cli_outcome_t run_remote(const opts_t *o, const bf_cli_ctx_t *ctx, result_t *res, bill_t *bill) {
    bf_profile_t prof;
    bf_conn_t *conn;
    if (bf_cli_open(ctx, &prof, &conn)) return CLIENT_ERROR;
    uint8_t **bufs = calloc((size_t)o->nimages, sizeof *bufs);
    size_t *lens = calloc((size_t)o->nimages, sizeof *lens);
    bf_cli_outcome_t rc = bufs && lens ? CLIENT_OK : bf_cli_fail("out of memory");
    /* Files that cannot be read (missing, empty, too large) are reported here and never sent. */
    for (int i = 0; i < o->nimages && !rc; i++) {
        bf_err_t err;
        if (bf_image_file_read(o->images[i], &bufs[i], &lens[i], &err))
            snprintf(res[i].error, sizeof res[i].error, "%s", err.msg);
        else if (lens[i] > BF_PREDICT_MAX_IMAGE_BYTES) {
            snprintf(res[i].error, sizeof res[i].error, "%s: %zu bytes, more than the %u-byte limit of a paid prediction",
                     o->images[i], lens[i], BF_PREDICT_MAX_IMAGE_BYTES);
            free(bufs[i]);
            bufs[i] = NULL;
        }
    }
    for (int i = 0; i < o->nimages && !rc; i += BF_PREDICT_MAX_IMAGES) {
        int to = i + BF_PREDICT_MAX_IMAGES < o->nimages ? i + BF_PREDICT_MAX_IMAGES : o->nimages;
        rc = request(o, ctx, conn, i, to, bufs, lens, res, bill);
    }
    for (int i = 0; bufs && i < o->nimages; i++) free(bufs[i]);
    free(bufs);
    free(lens);
    bf_conn_destroy(&conn);
    return rc;
}

/* ---- output ---------------------------------------------------------------------------------- */

static void json_str(const char *s) {
    msgpack_object o = {.type = MSGPACK_OBJECT_STR, .via.str = {(uint32_t)strlen(s), s}};
    bf_render_json(stdout, &o);
}

static void print_json(const opts_t *o, const result_t *res, const bill_t *bill) {
    printf("{");
    if (o->task) printf("\"task\":"), json_str(o->task), printf(",");
    printf("\"model\":"), json_str(bill->model), printf(",\"results\":[");
    for (int i = 0; i < o->nimages; i++) {
        printf("%s{\"image\":", i ? "," : "");
        json_str(o->images[i]);
        if (res[i].error[0]) {
            printf(",\"error\":"), json_str(res[i].error), printf("}");
            continue;
        }
        printf(",\"top\":[");
        for (int k = 0; k < res[i].k; k++) {
            printf("%s{\"class\":%d,\"label\":", k ? "," : "", res[i].cls[k]);
            json_str(res[i].label[k]);
            printf(",\"p\":%.17g}", res[i].p[k]);
        }
        printf("]}");
    }
    printf("]");
    if (o->task) {
        char fee[32];
        printf(",\"fee\":\"%s\",\"balance\":", bf_money_format_amount(bill->fee, 2, fee));
        json_str(bill->balance);
        printf(",\"usage\":[");
        for (int k = 0; k < bill->nusage; k++) printf("%s%lld", k ? "," : "", (long long)bill->usage[k]);
        printf("]");
    }
    printf("}\n");
}

/* Labels, errors and the balance come from a model file or the coordinator, image names from the
 * command line: every one is printed through the terminal sanitiser (bf_render.h). */
static void print_text(const opts_t *o, const result_t *res, const bill_t *bill) {
    for (int i = 0; i < o->nimages; i++) {
        bf_render_string(stdout, o->images[i]);
        printf(":");
        if (res[i].error[0]) printf(" error: "), bf_render_string(stdout, res[i].error);
        for (int k = 0; k < res[i].k; k++) {
            printf("%s ", k ? "," : "");
            bf_render_string(stdout, res[i].label[k]);
            printf(" %.4f", res[i].p[k]);
        }
        printf("\n");
    }
    if (o->task) {
        char fee[32];
        printf("fee %s, balance ", bf_money_format_amount(bill->fee, 2, fee));
        bf_render_string(stdout, bill->balance[0] ? bill->balance : "?");
        printf("\n");
    }
}

int main(int argc, char **argv) {
    bf_blas_init(argc, argv);
    bf_cli_ctx_t ctx = {.timeout_ms = 10000};
    opts_t o = {.top = 3};
    bf_cli_args_t args = parse(argc, argv, &o, &ctx);
    if (args) return args == CLIENT_ARGS_HELP ? CLIENT_OK : CLIENT_USAGE;
    result_t *res = calloc((size_t)o.nimages, sizeof *res);
    bill_t bill = {0};
    if (!res) return bf_cli_fail("out of memory");
    bf_cli_outcome_t rc = o.model ? run_local(&o, res, &bill) : run_remote(&o, &ctx, res, &bill);
    if (!rc || bill.nusage) {
        if (o.json) print_json(&o, res, &bill);
        else print_text(&o, res, &bill);
    }
    for (int i = 0; !rc && i < o.nimages; i++) rc = res[i].error[0] ? CLIENT_ERROR : CLIENT_OK;
    free(res);
    fflush(stdout);
    return rc;
}

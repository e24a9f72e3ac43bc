/* test_predict_files.c: blockfed-predict facing hostile files and a hostile coordinator.
 *   - a FIFO given as --model or as an image is refused at once (exit 1, "not a regular file"),
 *     where opening it used to wait for a writer forever;
 *   - a model file declaring a 4x512x512 or 3x512x512 input is refused from its declared shape;
 *   - class labels from a model file, and labels, errors, the balance and an ERROR message from a
 *     coordinator (a fake one here: a CURVE ROUTER on loopback answering what the test chooses)
 *     reach the terminal with every C0 and C1 control and DEL replaced, in text and in JSON.
 * Usage: test_predict_files PREDICT */
#include <czmq.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bf_models.h"
#include "bf_mp.h"
#include "bf_proto.h"
#include "bf_spawn.h"
#include "test.h"

#define ENDPOINT "tcp://127.0.0.1:27731"
#define HOSTILE "\x1b[2J\xc2\x9b" "31m\x7f"

static const char *predict_g;

/* Runs blockfed-predict with args, stdout to out and stderr to err (files); a run that has not
 * ended after 60 s (a hang) is killed and returns -2. */
static int run(const char *const *args, const char *out, const char *err) {
    char *argv[32];
    int n = 0;
    argv[n++] = (char *)predict_g;
    for (int i = 0; args[i] && n < 31; i++) argv[n++] = (char *)args[i];
    argv[n] = NULL;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, err, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    pid_t pid;
    int st = 0, rc = -1, done = 0;
    if (posix_spawn(&pid, predict_g, &fa, NULL, argv, environ) == 0) {
        for (int i = 0; i < 600 && !done; i++) {
            done = waitpid(pid, &st, WNOHANG) == pid;
            if (!done) usleep(100 * 1000);
        }
        if (!done) { /* hung: it would wait forever */
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
        }
        rc = !done ? -2 : WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    }
    posix_spawn_file_actions_destroy(&fa);
    return rc;
}

/* The file holds none of ESC, DEL, other C0 controls but newline, or C1 controls (C2 80..C2 9F). */
static int terminal_safe(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    int ok = 1, prev = -1, c;
    while ((c = fgetc(f)) != EOF) {
        if ((c < 0x20 && c != '\n') || c == 0x7f || (prev == 0xc2 && c >= 0x80 && c <= 0x9f)) ok = 0;
        prev = c;
    }
    fclose(f);
    return ok;
}

static void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    CHECK(f && fwrite(data, 1, n, f) == n);
    if (f) fclose(f);
}

/* A 16x16 gray PGM. */
static void write_image(const char *path) {
    uint8_t img[15 + 256];
    memcpy(img, "P5 16 16 255\n", 13);
    for (int i = 0; i < 256; i++) img[13 + i] = (uint8_t)i;
    write_file(path, img, 13 + 256);
}

/* A CNN for 1x16x16 with 4 classes; label 1 is hostile. */
static void write_model(const char *path) {
    bf_err_t err;
    bf_net_t *net = bf_net_new("cnn", 1, 16, 16, 4, 1, 1, &err);
    CHECK(net != NULL);
    if (!net) return;
    bf_net_init(net, 3);
    bf_model_meta_t meta;
    memset(&meta, 0, sizeof meta);
    meta.classes = 4, meta.channels = 1, meta.mean[0] = 0.5f, meta.std[0] = 0.25f;
    for (int i = 0; i < 4; i++) snprintf(meta.class_names[i], sizeof meta.class_names[i], "c%d", i);
    snprintf(meta.class_names[1], sizeof meta.class_names[1], "%s", "x" HOSTILE);
    CHECK_MSG(bf_model_save(net, &meta, path, &err) == 0, "%s", err.msg);
    bf_net_destroy(&net);
}

static void test_local(const char *dir) {
    char model[600], img[600], fifo[600], out[600], err[600], big[600];
    snprintf(model, sizeof model, "%s/hostile.bfm", dir);
    snprintf(img, sizeof img, "%s/img.pgm", dir);
    snprintf(fifo, sizeof fifo, "%s/pipe", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    snprintf(err, sizeof err, "%s/err", dir);
    write_model(model);
    write_image(img);
    unlink(fifo);
    CHECK(mkfifo(fifo, 0600) == 0);

    /* a FIFO as the model, then as an image: refused, the run ends */
    const char *a1[] = {"--model", fifo, img, NULL};
    int rc = run(a1, out, err);
    CHECK_MSG(rc == 1 && strstr(bf_slurp(err), "not a regular file"), "--model FIFO: exit %d, %s", rc, bf_slurp(err));
    const char *a2[] = {"--model", model, fifo, img, NULL};
    rc = run(a2, out, err);
    CHECK_MSG(rc == 1 && strstr(bf_slurp(out), "not a regular file"), "image FIFO: exit %d, %s", rc, bf_slurp(out));

    /* labels from the file: shown with their controls replaced, text and JSON */
    const char *a3[] = {"--model", model, img, "--top", "4", NULL};
    rc = run(a3, out, err);
    CHECK_MSG(rc == 0 && strstr(bf_slurp(out), "x?[2J?31m?"), "exit %d, %s", rc, bf_slurp(out));
    CHECK_MSG(terminal_safe(out), "control characters on stdout: %s", bf_slurp(out));
    const char *a4[] = {"--model", model, img, "--top", "4", "--json", NULL};
    rc = run(a4, out, err);
    CHECK_MSG(rc == 0 && strstr(bf_slurp(out), "x\\u001b[2J\\u009b31m\\u007f"), "exit %d, %s", rc, bf_slurp(out));
    CHECK(terminal_safe(out));
    /* an image name with controls (from the command line, echoed back) */
    char odd[700];
    snprintf(odd, sizeof odd, "%s/\x1b]0;t\x07.pgm", dir);
    write_image(odd);
    const char *a5[] = {"--model", model, odd, NULL};
    rc = run(a5, out, err);
    CHECK_MSG(rc == 0 && terminal_safe(out), "exit %d, %s", rc, bf_slurp(out));

    /* a few hundred bytes declaring a huge input: refused from the declared shape */
    bf_err_t e;
    bf_net_t *net = bf_net_new("resnet8", 1, 16, 16, 4, 1, 1, &e);
    bf_model_meta_t meta = {.classes = 4, .channels = 1, .mean = {0.5f}, .std = {0.5f}};
    for (int i = 0; i < 4; i++) snprintf(meta.class_names[i], sizeof meta.class_names[i], "c%d", i);
    uint8_t *buf;
    size_t len;
    CHECK(net && bf_model_encode(net, &meta, &buf, &len, &e) == 0);
    bf_net_destroy(&net);
    const uint8_t input[] = {0xa5, 'i', 'n', 'p', 'u', 't', 0x93, 0x01, 0x10, 0x10};
    uint8_t *at = memmem(buf, len, input, sizeof input);
    CHECK(at != NULL);
    if (at) { /* input 1x16x16 -> 1x512x512 (two 1-byte ints become 3-byte ones), signed again */
        uint8_t *m = malloc(len + 4);
        size_t off = (size_t)(at - buf) + 8;
        memcpy(m, buf, off);
        const uint8_t dims[] = {0xcd, 0x02, 0x00, 0xcd, 0x02, 0x00};
        memcpy(m + off, dims, sizeof dims);
        memcpy(m + off + 6, buf + off + 2, len - off - 2);
        size_t n = len + 4;
        char hex[65];
        bf_sha256_hex(m, n - 73, hex);
        memcpy(m + n - 64, hex, 64);
        snprintf(big, sizeof big, "%s/big.bfm", dir);
        write_file(big, m, n);
        free(m);
        const char *a6[] = {"--model", big, img, NULL};
        rc = run(a6, out, err);
        CHECK_MSG(rc == 1 && strstr(bf_slurp(err), "MiB a model file may ask for"), "1x512x512: exit %d, %s", rc,
                  bf_slurp(err));
    }
    free(buf);
    unlink(fifo);
}

/* ---- a fake coordinator -------------------------------------------------------------------- */

/* Answers every PREDICT with a PREDICTION whose strings are hostile (the first request) or with
 * an ERROR whose message is (the second), until $TERM. */
static void fake_coordinator(zsock_t *pipe, void *args) {
    zcert_t *server = (zcert_t *)args;
    zsock_t *r = zsock_new(ZMQ_ROUTER);
    zsock_set_curve_server(r, 1);
    zcert_apply(server, r);
    int bound = zsock_bind(r, "%s", ENDPOINT);
    zsock_signal(pipe, bound < 0 ? 1 : 0);
    zpoller_t *p = zpoller_new(pipe, r, NULL);
    int served = 0;
    while (bound >= 0) {
        void *which = zpoller_wait(p, 1000);
        if (which == pipe) break;
        if (which != r) continue;
        zmsg_t *z = zmsg_recv(r);
        zframe_t *who = z ? zmsg_pop(z) : NULL;
        bf_proto_reject_t rej = {0};
        bf_err_t err;
        bf_msg_t *req = z ? bf_msg_decode(&z, &rej, &err) : NULL;
        zmsg_destroy(&z);
        bf_msg_t *rep = NULL;
        if (req && !strcmp(bf_msg_type(req), "PREDICT") && served++ == 0) {
            msgpack_sbuffer sb;
            msgpack_sbuffer_init(&sb);
            msgpack_packer pk;
            msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
            size_t n = bf_msg_frame_count(req);
            msgpack_pack_array(&pk, n);
            for (size_t i = 0; i < n; i++) {
                msgpack_pack_map(&pk, 1);
                if (i == 0) {
                    bf_mp_pack_str(&pk, "top");
                    msgpack_pack_array(&pk, 1);
                    msgpack_pack_map(&pk, 3);
                    bf_mp_pack_str(&pk, "class"), msgpack_pack_uint64(&pk, 1);
                    bf_mp_pack_str(&pk, "label"), bf_mp_pack_str(&pk, "lbl" HOSTILE);
                    bf_mp_pack_str(&pk, "p"), msgpack_pack_double(&pk, 0.75);
                } else {
                    bf_mp_pack_str(&pk, "error"), bf_mp_pack_str(&pk, "err" HOSTILE "\x1b]0;title\x07");
                }
            }
            rep = bf_msg_new("PREDICTION", bf_msg_id(req));
            bf_msg_set_any(rep, "results", sb.data, sb.size);
            bf_msg_set_str(rep, "fee", "0.10");
            bf_msg_set_str(rep, "balance", "9.90" HOSTILE);
            msgpack_sbuffer_destroy(&sb);
        } else if (req) {
            rep = bf_msg_new("ERROR", bf_msg_id(req));
            bf_msg_set_str(rep, "code", "NOT_FOUND");
            bf_msg_set_str(rep, "message", "msg" HOSTILE "\xc2\x85" "end");
        }
        bf_msg_destroy(&req);
        zmsg_t *out = rep ? bf_msg_encode(rep, &err) : NULL;
        bf_msg_destroy(&rep);
        if (out && who) {
            zmsg_prepend(out, &who);
            zmsg_send(&out, r);
        }
        zmsg_destroy(&out);
        zframe_destroy(&who);
    }
    zpoller_destroy(&p);
    zsock_destroy(&r);
}

static void test_remote(const char *dir) {
    char home[600], path[700], out[600], err[600], img[600];
    snprintf(home, sizeof home, "%s/home", dir);
    snprintf(out, sizeof out, "%s/rout", dir);
    snprintf(err, sizeof err, "%s/rerr", dir);
    snprintf(img, sizeof img, "%s/img.pgm", dir);
    mkdir(home, 0700);
    zcert_t *server = zcert_new(), *client = zcert_new();
    snprintf(path, sizeof path, "%s/client.cert", home);
    CHECK(zcert_save(client, path) == 0);
    snprintf(path, sizeof path, "%s/client.cert_secret", home);
    chmod(path, 0600);
    snprintf(path, sizeof path, "%s/profile", home);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (f) {
        fprintf(f, "coordinator = %s\nserver_key = %s\nuser = eve\ninsecure = 0\nregistered = 1\n", ENDPOINT,
                zcert_public_txt(server));
        fclose(f);
    }
    zactor_t *fake = zactor_new(fake_coordinator, server);
    CHECK(fake != NULL);

    /* PREDICTION: a hostile label, error and balance */
    const char *a1[] = {"--home", home, "--timeout", "20", "--task", "t1", img, img, NULL};
    int rc = run(a1, out, err);
    const char *o = bf_slurp(out);
    CHECK_MSG(rc == 1 && strstr(o, "lbl?[2J?31m?") && strstr(o, "err?[2J?31m??]0;title?") &&
                  strstr(o, "balance 9.90?[2J?31m?"),
              "exit %d: %s / %s", rc, o, bf_slurp(err));
    CHECK_MSG(terminal_safe(out), "control characters on stdout: %s", bf_slurp(out));
    /* the same in JSON: escaped, nothing raw */
    const char *a2[] = {"--home", home, "--timeout", "20", "--task", "t1", img, "--json", NULL};
    rc = run(a2, out, err);
    CHECK_MSG(rc == 1 && terminal_safe(err) && strstr(bf_slurp(err), "coordinator: NOT_FOUND: msg?[2J?31m??end"),
              "exit %d: %s", rc, bf_slurp(err));
    zactor_destroy(&fake);
    zcert_destroy(&server);
    zcert_destroy(&client);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_predict_files PREDICT\n");
        return 2;
    }
    predict_g = argv[1];
    char dir[512];
    snprintf(dir, sizeof dir, "%s/predict-files", bf_test_tmpdir());
    mkdir(dir, 0755);
    test_local(dir);
    test_remote(dir);
    return bf_test_done("test_predict_files");
}

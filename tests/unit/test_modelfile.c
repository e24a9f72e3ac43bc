/* test_modelfile.c: model files round-trip bit-exactly; truncated, bit-flipped, wrong-shape,
 * lying-length and oversized files are rejected with a message (run under ASan in CI to prove no
 * memory error on any of them). Version 2's digest covers every field (a flipped byte anywhere
 * is refused), version 1 files are still read and verified as before, a declared shape the
 * tensors do not fill or whose network is too large is refused before the network is built, and
 * a FIFO given as the model file is refused at once. */
#include <fcntl.h>
#include <openssl/evp.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bf_models.h"
#include "bf_mp.h"
#include "test.h"

static bf_model_meta_t meta_for(int C, int classes) {
    bf_model_meta_t m;
    memset(&m, 0, sizeof m);
    m.classes = classes;
    m.channels = C;
    for (int i = 0; i < classes; i++) snprintf(m.class_names[i], sizeof m.class_names[i], "class-%d", i);
    for (int c = 0; c < C; c++) m.mean[c] = 0.25f + 0.1f * c, m.std[c] = 0.5f - 0.05f * c;
    return m;
}

static bf_net_t *trained_net(const char *arch, int C, int H) {
    bf_err_t err;
    bf_net_t *net = bf_net_new(arch, C, H, H, 10, 4, 1, &err);
    bf_net_init(net, 5);
    /* one step so BN running statistics are not the trivial 0/1 */
    float x[4 * 3 * 32 * 32];
    int32_t y[4] = {1, 2, 3, 4};
    bf_rng_t r;
    bf_rng_seed(&r, 1);
    for (int i = 0; i < 4 * C * H * H; i++) x[i] = (float)bf_rng_normal(&r);
    bf_net_train_step(net, x, y, 4, NULL);
    return net;
}

static void test_round_trip(const char *arch, int C, int H) {
    bf_net_t *net = trained_net(arch, C, H);
    bf_model_meta_t meta = meta_for(C, 10), back;
    bf_err_t err;
    char path[512];
    snprintf(path, sizeof path, "%s/rt-%s.bfm", bf_test_tmpdir(), arch);
    CHECK_MSG(bf_model_save(net, &meta, path, &err) == 0, "%s", err.msg);
    bf_net_t *got = bf_model_load(path, 8, 1, &back, &err); /* same threads as net: bit-exact */
    CHECK_MSG(got != NULL, "%s", err.msg);
    if (!got) return;
    CHECK(!strcmp(bf_net_arch(got), arch));
    CHECK(bf_net_num_params(got) == bf_net_num_params(net));
    CHECK(!memcmp(bf_net_params(got), bf_net_params(net), sizeof(float) * bf_net_num_params(net)));
    CHECK(!memcmp(bf_net_buffers(got), bf_net_buffers(net), sizeof(float) * bf_net_num_buffers(net)));
    CHECK(back.classes == 10 && !strcmp(back.class_names[9], "class-9"));
    CHECK(back.channels == C && back.mean[0] == meta.mean[0] && back.std[C - 1] == meta.std[C - 1]);
    char a[65], b[65];
    CHECK(bf_model_digest(net, &meta, a, &err) == 0 && bf_model_digest(got, &back, b, &err) == 0);
    CHECK(!strcmp(a, b));
    uint8_t *enc;
    size_t elen;
    CHECK(bf_model_encode(net, &meta, &enc, &elen, &err) == 0);
    CHECK(elen > 64 && !memcmp(enc + elen - 64, a, 64)); /* the digest the file stores */
    free(enc);
    /* same predictions */
    float x[3 * 32 * 32], la[10], lb[10];
    for (int i = 0; i < C * H * H; i++) x[i] = (float)(i % 17) / 17.0f;
    bf_net_predict(net, x, 1, la);
    bf_net_predict(got, x, 1, lb);
    CHECK(!memcmp(la, lb, sizeof la));
    /* with 2 threads a single image is split by channel: same math, GEMM blocking may round differently */
    bf_net_t *two = bf_model_load(path, 8, 2, &back, &err);
    CHECK(two != NULL);
    if (two) {
        bf_net_predict(two, x, 1, lb);
        for (int k = 0; k < 10; k++) CHECK_NEAR(la[k], lb[k], 1e-4);
        bf_net_destroy(&two);
    }
    bf_net_destroy(&got);
    bf_net_destroy(&net);
}

static int decodes(const uint8_t *buf, size_t len, bf_err_t *err) {
    bf_model_meta_t meta;
    bf_net_t *net = bf_model_decode(buf, len, 1, 1, &meta, err);
    int ok = net != NULL;
    bf_net_destroy(&net);
    return ok;
}

/* Signs an edited version-2 file again (its digest over every byte before the last 73), so the
 * checks behind the digest see the edit. */
static void resign(uint8_t *m, size_t len) {
    char hex[65];
    bf_sha256_hex(m, len - 73, hex);
    memcpy(m + len - 64, hex, 64);
}

/* Offset of the first occurrence of needle in hay, or -1. */
static long find(const uint8_t *hay, size_t n, const void *needle, size_t m) {
    for (size_t i = 0; i + m <= n; i++)
        if (!memcmp(hay + i, needle, m)) return (long)i;
    return -1;
}

static void test_rejections(void) {
    bf_net_t *net = trained_net("resnet8", 3, 32);
    bf_model_meta_t meta = meta_for(3, 10);
    bf_err_t err;
    uint8_t *buf;
    size_t len;
    CHECK(bf_model_encode(net, &meta, &buf, &len, &err) == 0);
    CHECK(decodes(buf, len, &err));
    uint8_t *m = malloc(len + 16);

    /* every truncation in the first 4 KiB, then every 97th length */
    int bad = 0;
    for (size_t cut = 0; cut < len; cut += cut < 4096 ? 1 : 97)
        if (decodes(buf, cut, &err)) bad++;
    CHECK_MSG(bad == 0, "%d truncated files decoded", bad);
    CHECK(!decodes(buf, len - 1, &err));

    /* trailing garbage */
    memcpy(m, buf, len);
    m[len] = 0xc0;
    CHECK(!decodes(m, len + 1, &err) && strstr(err.msg, "trailing"));

    /* bit flips in tensor data: the digest catches them */
    long data = find(buf, len, "conv1.weight", 12);
    CHECK(data > 0);
    int accepted = 0;
    for (long off = data + 40; off < (long)len - 100; off += 1013) {
        memcpy(m, buf, len);
        m[off] ^= 0x10;
        if (decodes(m, len, &err)) accepted++;
    }
    CHECK_MSG(accepted == 0, "%d bit-flipped files decoded", accepted);
    /* single-bit flips anywhere never crash (ASan checks memory), and the digest covers every
     * byte: not one of them decodes */
    accepted = 0;
    for (size_t off = 0; off < len; off += off < 4096 ? 1 : 499) {
        memcpy(m, buf, len);
        m[off] ^= 1u << (off % 8);
        if (decodes(m, len, &err)) accepted++;
    }
    CHECK_MSG(accepted == 0, "%d files with a flipped bit decoded", accepted);

    /* wrong shape: claim 1 input channel where the file has 3 */
    const uint8_t input3[] = {0xa5, 'i', 'n', 'p', 'u', 't', 0x93, 0x03, 0x20, 0x20};
    long at = find(buf, len, input3, sizeof input3);
    CHECK(at > 0);
    memcpy(m, buf, len);
    m[at + 7] = 0x01;
    CHECK(!decodes(m, len, &err) && strstr(err.msg, "sha256 mismatch"));
    resign(m, len);
    CHECK(!decodes(m, len, &err));
    printf("wrong input shape: %s\n", err.msg);
    /* wrong tensor shape: conv1.weight [16,3,3,3] declared as [16,3,3,4] */
    const uint8_t shape[] = {0xa5, 's', 'h', 'a', 'p', 'e', 0x94, 0x10, 0x03, 0x03, 0x03};
    at = find(buf, len, shape, sizeof shape);
    CHECK(at > 0);
    memcpy(m, buf, len);
    m[at + 10] = 0x04;
    resign(m, len);
    CHECK(!decodes(m, len, &err) && strstr(err.msg, "conv1.weight"));
    printf("wrong tensor shape: %s\n", err.msg);

    /* unknown version and format */
    const uint8_t version2[] = {0xa7, 'v', 'e', 'r', 's', 'i', 'o', 'n', 0x02};
    at = find(buf, len, version2, sizeof version2);
    CHECK(at > 0);
    memcpy(m, buf, len);
    m[at + 8] = 0x03;
    CHECK(!decodes(m, len, &err) && strstr(err.msg, "version 3"));
    at = find(buf, len, "blockfed-model", 14);
    memcpy(m, buf, len);
    m[at] = 'X';
    CHECK(!decodes(m, len, &err) && strstr(err.msg, "not a model file"));

    /* a bin length that claims more bytes than the file holds */
    const uint8_t data_key[] = {0xa4, 'd', 'a', 't', 'a'};
    at = find(buf, len, data_key, sizeof data_key);
    memcpy(m, buf, len);
    CHECK(m[at + 5] == 0xc5 || m[at + 5] == 0xc6 || m[at + 5] == 0xc4);
    m[at + 6] = 0x7f; /* raise the high byte of the declared length */
    CHECK(!decodes(m, len, &err));
    printf("lying length: %s\n", err.msg);

    /* msgpack-c's 96 GB array: refused before any allocation */
    const uint8_t bomb[] = {0xdd, 0xff, 0xff, 0xff, 0xff};
    CHECK(!decodes(bomb, sizeof bomb, &err) && strstr(err.msg, "declares"));
    const uint8_t deep[] = {0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0xc0};
    CHECK(!decodes(deep, sizeof deep, &err) && strstr(err.msg, "deeper"));
    CHECK(!decodes(NULL, 0, &err));

    /* an oversized file is refused from its size alone */
    char path[512];
    snprintf(path, sizeof path, "%s/huge.bfm", bf_test_tmpdir());
    int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0644);
    CHECK(fd >= 0 && ftruncate(fd, (off_t)300 << 20) == 0);
    close(fd);
    bf_model_meta_t back;
    CHECK(bf_model_load(path, 1, 1, &back, &err) == NULL && strstr(err.msg, "MiB"));
    unlink(path);
    CHECK(bf_model_load("/nonexistent/model.bfm", 1, 1, &back, &err) == NULL && strstr(err.msg, "nonexistent"));

    free(m);
    free(buf);
    bf_net_destroy(&net);
}

/* ---- files written field by field: other versions, declared shapes, class names -------------- */

/* What to change while re-writing a file: its version (the digest written to match it), its input,
 * class 0's name. */
typedef struct {
    int version;
    const int *input;  /* C, H, W or NULL */
    const char *label0; /* NULL: unchanged */
    size_t label0_len;
} rewrite_t;

/* A well-signed file from a decoded one, with the changes of rw: version 1 takes SHA-256 of the
 * tensor data in the map's (name) order, version 2 SHA-256 of every byte before its sha256 entry. */
static uint8_t *rewrite(const uint8_t *buf, size_t len, const rewrite_t *rw, size_t *out_len) {
    msgpack_unpacked u;
    bf_err_t err;
    if (bf_mp_parse(buf, len, 8, 100000, &u, &err)) return NULL;
    const msgpack_object *root = &u.data;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, root->via.map.size);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    for (uint32_t i = 0; i < root->via.map.size; i++) {
        const msgpack_object *k = &root->via.map.ptr[i].key, *v = &root->via.map.ptr[i].val;
        if (bf_mp_str_eq(k, "sha256")) continue; /* last, below */
        msgpack_pack_object(&pk, *k);
        if (bf_mp_str_eq(k, "version")) msgpack_pack_int(&pk, rw->version);
        else if (bf_mp_str_eq(k, "input") && rw->input) {
            msgpack_pack_array(&pk, 3);
            for (int d = 0; d < 3; d++) msgpack_pack_int(&pk, rw->input[d]);
        } else if (bf_mp_str_eq(k, "preprocess") && rw->input) { /* C values each */
            msgpack_pack_map(&pk, 2);
            for (int j = 0; j < 2; j++) {
                bf_mp_pack_str(&pk, j ? "std" : "mean");
                msgpack_pack_array(&pk, rw->input[0]);
                for (int c = 0; c < rw->input[0]; c++) msgpack_pack_float(&pk, 0.5f);
            }
        } else if (bf_mp_str_eq(k, "classes") && rw->label0) {
            msgpack_pack_array(&pk, v->via.array.size);
            msgpack_pack_str(&pk, rw->label0_len);
            msgpack_pack_str_body(&pk, rw->label0, rw->label0_len);
            for (uint32_t c = 1; c < v->via.array.size; c++) msgpack_pack_object(&pk, v->via.array.ptr[c]);
        } else
            msgpack_pack_object(&pk, *v);
        if (bf_mp_str_eq(k, "tensors"))
            for (uint32_t t = 0; t < v->via.map.size; t++) {
                const msgpack_object *d = bf_mp_get(&v->via.map.ptr[t].val, "data");
                EVP_DigestUpdate(ctx, d->via.bin.ptr, d->via.bin.size);
            }
    }
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_DigestFinal_ex(ctx, md, &mdlen);
    EVP_MD_CTX_free(ctx);
    char hex[65];
    if (rw->version == 1)
        for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
    else
        bf_sha256_hex(sb.data, sb.size, hex);
    bf_mp_pack_str(&pk, "sha256");
    bf_mp_pack_str(&pk, hex);
    msgpack_unpacked_destroy(&u);
    *out_len = sb.size;
    return (uint8_t *)sb.data;
}

static void test_versions_and_names(void) {
    bf_net_t *net = trained_net("resnet8", 3, 32);
    bf_model_meta_t meta = meta_for(3, 10), back;
    bf_err_t err;
    uint8_t *buf, *f;
    size_t len, n;
    CHECK(bf_model_encode(net, &meta, &buf, &len, &err) == 0);

    /* version 2 (what is written): a label changed to other valid text is caught by the digest, an
     * invalid UTF-8 byte too; a preprocess value as well */
    long at = find(buf, len, "class-7", 7);
    CHECK(at > 0);
    uint8_t *m = malloc(len);
    memcpy(m, buf, len);
    m[at] = 'C';
    CHECK(!decodes(m, len, &err) && strstr(err.msg, "sha256 mismatch"));
    memcpy(m, buf, len);
    m[at + 1] = 0xff;
    CHECK(!decodes(m, len, &err));
    const uint8_t mean_key[] = {0xa4, 'm', 'e', 'a', 'n', 0x93, 0xca};
    at = find(buf, len, mean_key, sizeof mean_key);
    CHECK(at > 0);
    memcpy(m, buf, len);
    m[at + 8] ^= 0x01;
    CHECK(!decodes(m, len, &err) && strstr(err.msg, "sha256 mismatch"));
    free(m);

    /* a version-2 file whose sha256 is not its last entry, as written, is refused */
    rewrite_t rw2 = {.version = 2};
    f = rewrite(buf, len, &rw2, &n);
    CHECK(f && n == len && !memcmp(f, buf, len)); /* the rewriter writes what the writer writes */
    free(f);

    /* version 1: read and verified as before (the digest covers the tensors only) */
    rewrite_t rw1 = {.version = 1};
    f = rewrite(buf, len, &rw1, &n);
    bf_net_t *got = f ? bf_model_decode(f, n, 1, 1, &back, &err) : NULL;
    CHECK_MSG(got != NULL, "version 1: %s", err.msg);
    if (got) CHECK(!memcmp(bf_net_params(got), bf_net_params(net), sizeof(float) * bf_net_num_params(net)));
    bf_net_destroy(&got);
    long d = f ? find(f, n, "conv1.weight", 12) : -1;
    CHECK(d > 0);
    if (d > 0) {
        f[d + 60] ^= 0x10; /* a tensor byte: the version-1 digest catches it */
        CHECK(!decodes(f, n, &err) && strstr(err.msg, "sha256 mismatch"));
    }
    free(f);
    rw1.label0 = "sneaker", rw1.label0_len = 7; /* a label is not covered in version 1: accepted */
    f = rewrite(buf, len, &rw1, &n);
    got = f ? bf_model_decode(f, n, 1, 1, &back, &err) : NULL;
    CHECK(got && !strcmp(back.class_names[0], "sneaker"));
    bf_net_destroy(&got);
    free(f);

    /* class names must be text, in either version: invalid UTF-8, a NUL, an overlong form */
    const char *bad[] = {"cl\xffss", "cl\0ss", "cl\xc0\xafss"};
    const size_t bad_len[] = {5, 5, 6};
    for (int v = 1; v <= 2; v++)
        for (int i = 0; i < 3; i++) {
            rewrite_t rw = {.version = v, .label0 = bad[i], .label0_len = bad_len[i]};
            f = rewrite(buf, len, &rw, &n);
            CHECK_MSG(f && !decodes(f, n, &err) && strstr(err.msg, "UTF-8"), "version %d, label %d: %s", v, i, err.msg);
            free(f);
        }
    /* and the writer refuses to write one */
    bf_model_meta_t bm = meta;
    memcpy(bm.class_names[3], "a\xfe", 3);
    CHECK(bf_model_encode(net, &bm, &f, &n, &err) != 0 && strstr(err.msg, "UTF-8"));
    free(buf);
    bf_net_destroy(&net);
}

/* A few hundred bytes declaring a huge input: refused from the declared shape, before the network
 * for it is built (before the check, 3x512x512 decoded and 4x512x512 was refused only after
 * ~700 MiB were allocated). Both are written as consistent files of either version. */
static void test_declared_shape(void) {
    bf_net_t *net = trained_net("resnet8", 3, 32);
    bf_model_meta_t meta = meta_for(3, 10), back;
    bf_err_t err;
    uint8_t *buf, *f;
    size_t len, n;
    CHECK(bf_model_encode(net, &meta, &buf, &len, &err) == 0);
    bf_net_plan_t plan;
    CHECK(bf_net_plan("resnet8", 3, 512, 512, 10, 1, 1, &plan, &err) == 0 && plan.bytes > BF_MODEL_NET_MAX);
    CHECK(bf_net_plan("resnet8", 3, 32, 32, 10, 1, 1, &plan, &err) == 0 && plan.bytes < BF_MODEL_NET_MAX);
    CHECK(plan.nparams == bf_net_num_params(net) && plan.nbuffers == bf_net_num_buffers(net));
    for (int v = 1; v <= 2; v++) {
        /* C = 4: conv1.weight would need 4 input channels, the file holds 3 */
        const int in4[3] = {4, 512, 512}, in3[3] = {3, 512, 512}, ok[3] = {3, 40, 40};
        rewrite_t rw = {.version = v, .input = in4};
        f = rewrite(buf, len, &rw, &n);
        CHECK_MSG(f && !decodes(f, n, &err) && strstr(err.msg, "bytes of data"), "v%d 4x512x512: %s", v, err.msg);
        printf("4x512x512 (v%d): %s\n", v, err.msg);
        free(f);
        /* the tensors fit 3x512x512 (ResNet8's do not depend on H, W): the cap refuses it */
        rw.input = in3;
        f = rewrite(buf, len, &rw, &n);
        CHECK_MSG(f && !decodes(f, n, &err) && strstr(err.msg, "MiB a model file may ask for"), "v%d 3x512x512: %s", v,
                  err.msg);
        printf("3x512x512 (v%d): %s\n", v, err.msg);
        free(f);
        /* a modest size under the cap still loads */
        rw.input = ok;
        f = rewrite(buf, len, &rw, &n);
        bf_net_t *got = f ? bf_model_decode(f, n, 1, 1, &back, &err) : NULL;
        CHECK_MSG(got != NULL, "v%d 3x40x40: %s", v, err.msg);
        bf_net_destroy(&got);
        free(f);
    }
    free(buf);
    bf_net_destroy(&net);
}

/* A FIFO as the model file: refused at once (opening it for reading would wait for a writer). A
 * hang ends the test through the alarm. */
static void test_fifo(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/model.fifo", bf_test_tmpdir());
    unlink(path);
    CHECK(mkfifo(path, 0600) == 0);
    bf_model_meta_t back;
    bf_err_t err;
    alarm(20);
    CHECK(bf_model_load(path, 1, 1, &back, &err) == NULL && strstr(err.msg, "not a regular file"));
    printf("fifo: %s\n", err.msg);
    uint8_t *b;
    size_t n;
    CHECK(bf_file_read(bf_test_tmpdir(), 1 << 20, &b, &n, &err) != 0 && strstr(err.msg, "directory"));
    alarm(0);
    unlink(path);
}

int main(void) {
    signal(SIGALRM, SIG_DFL); /* a read that hangs kills the test: a failure, not a stall */
    test_fifo();
    test_round_trip("resnet8", 3, 32);
    test_round_trip("resnet8", 1, 28);
    test_round_trip("cnn", 1, 28);
    test_rejections();
    test_versions_and_names();
    test_declared_shape();
    return bf_test_done("test_modelfile");
}

/* test_modelfile.c: model files round-trip bit-exactly; truncated, bit-flipped, wrong-shape,
 * lying-length and oversized files are rejected with a message (run under ASan in CI to prove no
 * memory error on any of them). */
#include <fcntl.h>
#include <string.h>
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
    bf_model_digest(net, a);
    bf_model_digest(got, b);
    CHECK(!strcmp(a, b));
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
    /* single-bit flips anywhere never crash (ASan checks memory); each either fails or decodes */
    for (size_t off = 0; off < len; off += off < 512 ? 1 : 499) {
        memcpy(m, buf, len);
        m[off] ^= 1u << (off % 8);
        decodes(m, len, &err);
    }

    /* wrong shape: claim 1 input channel where the file has 3 */
    const uint8_t input3[] = {0xa5, 'i', 'n', 'p', 'u', 't', 0x93, 0x03, 0x20, 0x20};
    long at = find(buf, len, input3, sizeof input3);
    CHECK(at > 0);
    memcpy(m, buf, len);
    m[at + 7] = 0x01;
    CHECK(!decodes(m, len, &err));
    printf("wrong input shape: %s\n", err.msg);
    /* wrong tensor shape: conv1.weight [16,3,3,3] declared as [16,3,3,4] */
    const uint8_t shape[] = {0xa5, 's', 'h', 'a', 'p', 'e', 0x94, 0x10, 0x03, 0x03, 0x03};
    at = find(buf, len, shape, sizeof shape);
    CHECK(at > 0);
    memcpy(m, buf, len);
    m[at + 10] = 0x04;
    CHECK(!decodes(m, len, &err) && strstr(err.msg, "conv1.weight"));
    printf("wrong tensor shape: %s\n", err.msg);

    /* unknown version and format */
    const uint8_t version1[] = {0xa7, 'v', 'e', 'r', 's', 'i', 'o', 'n', 0x01};
    at = find(buf, len, version1, sizeof version1);
    memcpy(m, buf, len);
    m[at + 8] = 0x02;
    CHECK(!decodes(m, len, &err) && strstr(err.msg, "version 2"));
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

int main(void) {
    test_round_trip("resnet8", 3, 32);
    test_round_trip("resnet8", 1, 28);
    test_round_trip("cnn", 1, 28);
    test_rejections();
    return bf_test_done("test_modelfile");
}

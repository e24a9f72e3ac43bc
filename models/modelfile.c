/* modelfile.c: the BlockFed model file (docs/MODEL_FORMAT.md): one msgpack map holding the
 * architecture, input shape, class names, preprocessing and every tensor as little-endian float32
 * under its PyTorch state_dict name, plus a SHA-256 of every byte before it (version 2; version 1
 * files, whose digest covers the tensor bytes only, are still read and verified as they were).
 *
 * Loading trusts nothing: the bytes pass bf_mp_check before msgpack-c sees them, the declared shape
 * is checked against the tensor bytes present and against BF_MODEL_NET_MAX before the network is
 * built, and every field is checked against what the architecture expects before a single float is
 * copied. */
#include <errno.h>
#include <math.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bf_models.h"
#include "bf_mp.h"
#include "bf_text.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "model files store little-endian float32; add byte swapping for this target"
#endif

#define FORMAT_NAME "blockfed-model"
#define FORMAT_VERSION 2 /* written; 1 is still read */
/* A version-2 file ends with its sha256 entry, exactly these 9 bytes (fixstr "sha256", then the
 * str8 header of 64 bytes) and the 64 hex digits; the digest covers every byte before them. */
static const uint8_t DIGEST_ENTRY[9] = {0xa6, 's', 'h', 'a', '2', '5', '6', 0xd9, 0x40};
#define DIGEST_TAIL (sizeof DIGEST_ENTRY + 64)
#define MAX_FILE_BYTES BF_MODEL_FILE_MAX

static float *tensor_data(bf_net_t *net, const bf_tensor_view_t *v) {
    return (v->is_buffer ? bf_net_buffers(net) : bf_net_params(net)) + v->offset;
}

/* Tensor indices sorted by name: the order of the digest and of the file's tensor map. */
static void sorted_views(const bf_net_t *net, int *order) {
    int n = bf_net_num_tensors(net);
    for (int i = 0; i < n; i++) order[i] = i;
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && strcmp(bf_net_tensor(net, order[j - 1])->name, bf_net_tensor(net, order[j])->name) > 0; j--) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
}

/* Version 1's digest: the tensor bytes in name order. */
static void tensor_digest(bf_net_t *net, char hex[65]) {
    int order[256], n = bf_net_num_tensors(net);
    sorted_views(net, order);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    for (int i = 0; i < n; i++) {
        const bf_tensor_view_t *v = bf_net_tensor(net, order[i]);
        EVP_DigestUpdate(ctx, tensor_data(net, v), v->count * sizeof(float));
    }
    unsigned char md[32];
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx, md, &len);
    EVP_MD_CTX_free(ctx);
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
}

/* The file's bytes and their digest (hex). */
static int encode(bf_net_t *net, const bf_model_meta_t *meta, uint8_t **out, size_t *len, char hex[65], bf_err_t *err) {
    int C, H, W, order[256], n = bf_net_num_tensors(net);
    bf_net_input(net, &C, &H, &W);
    if (meta->classes != bf_net_classes(net))
        return bf_err_set(err, "model has %d classes but %d class names were given", bf_net_classes(net), meta->classes);
    for (int i = 0; i < meta->classes; i++) /* what a reader would refuse is never written */
        if (!bf_utf8_valid(meta->class_names[i], strnlen(meta->class_names[i], sizeof meta->class_names[i])) ||
            strnlen(meta->class_names[i], sizeof meta->class_names[i]) >= sizeof meta->class_names[i])
            return bf_err_set(err, "class name %d is not valid UTF-8 text", i);
    sorted_views(net, order);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 8);
    bf_mp_pack_str(&pk, "format");
    bf_mp_pack_str(&pk, FORMAT_NAME);
    bf_mp_pack_str(&pk, "version");
    msgpack_pack_int(&pk, FORMAT_VERSION);
    bf_mp_pack_str(&pk, "arch");
    bf_mp_pack_str(&pk, bf_net_arch(net));
    bf_mp_pack_str(&pk, "input");
    msgpack_pack_array(&pk, 3);
    msgpack_pack_int(&pk, C);
    msgpack_pack_int(&pk, H);
    msgpack_pack_int(&pk, W);
    bf_mp_pack_str(&pk, "classes");
    msgpack_pack_array(&pk, meta->classes);
    for (int i = 0; i < meta->classes; i++) bf_mp_pack_str(&pk, meta->class_names[i]);
    bf_mp_pack_str(&pk, "preprocess");
    msgpack_pack_map(&pk, 2);
    bf_mp_pack_str(&pk, "mean");
    msgpack_pack_array(&pk, C);
    for (int c = 0; c < C; c++) msgpack_pack_float(&pk, meta->mean[c]);
    bf_mp_pack_str(&pk, "std");
    msgpack_pack_array(&pk, C);
    for (int c = 0; c < C; c++) msgpack_pack_float(&pk, meta->std[c]);
    bf_mp_pack_str(&pk, "tensors");
    msgpack_pack_map(&pk, n);
    for (int i = 0; i < n; i++) {
        const bf_tensor_view_t *v = bf_net_tensor(net, order[i]);
        bf_mp_pack_str(&pk, v->name);
        msgpack_pack_map(&pk, 2);
        bf_mp_pack_str(&pk, "shape");
        msgpack_pack_array(&pk, v->ndim);
        for (int d = 0; d < v->ndim; d++) msgpack_pack_int(&pk, v->shape[d]);
        bf_mp_pack_str(&pk, "data");
        msgpack_pack_bin_with_body(&pk, tensor_data(net, v), v->count * sizeof(float));
    }
    bf_sha256_hex(sb.data, sb.size, hex); /* everything written so far: every field */
    msgpack_sbuffer_write(&sb, (const char *)DIGEST_ENTRY, sizeof DIGEST_ENTRY);
    msgpack_sbuffer_write(&sb, hex, 64);
    *out = (uint8_t *)sb.data; /* ownership passes to the caller (free()) */
    *len = sb.size;
    return 0;
}

int bf_model_encode(bf_net_t *net, const bf_model_meta_t *meta, uint8_t **out, size_t *len, bf_err_t *err) {
    char hex[65];
    return encode(net, meta, out, len, hex, err);
}

int bf_model_digest(bf_net_t *net, const bf_model_meta_t *meta, char hex[65], bf_err_t *err) {
    uint8_t *buf;
    size_t len;
    if (encode(net, meta, &buf, &len, hex, err)) return -1;
    free(buf);
    return 0;
}

int bf_model_save(bf_net_t *net, const bf_model_meta_t *meta, const char *path, bf_err_t *err) {
    uint8_t *buf;
    size_t len;
    char hex[65];
    if (encode(net, meta, &buf, &len, hex, err)) return -1;
    /* write to a temporary name and rename, so a crash never leaves half a model under path */
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    int ok = f && fwrite(buf, 1, len, f) == len;
    if (f) ok = (fflush(f) == 0) & ok, ok = (fclose(f) == 0) & ok;
    free(buf);
    if (!ok || rename(tmp, path)) {
        int e = errno;
        remove(tmp);
        return bf_err_set(err, "cannot write model file %s: %s", path, strerror(e));
    }
    return 0;
}

/* ---- decoding ----------------------------------------------------------------------------- */

static int get_input(const msgpack_object *root, int *C, int *H, int *W, bf_err_t *err) {
    const msgpack_object *in = bf_mp_get(root, "input");
    if (!in || in->type != MSGPACK_OBJECT_ARRAY || in->via.array.size != 3)
        return bf_err_set(err, "'input' must be an array [C, H, W]");
    int dims[3];
    for (int i = 0; i < 3; i++) {
        const msgpack_object *o = &in->via.array.ptr[i];
        if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER || o->via.u64 > 4096)
            return bf_err_set(err, "'input' entries must be integers in [1, 4096]");
        dims[i] = (int)o->via.u64;
    }
    *C = dims[0], *H = dims[1], *W = dims[2];
    return 0;
}

static int get_classes(const msgpack_object *root, bf_model_meta_t *meta, bf_err_t *err) {
    const msgpack_object *cl = bf_mp_get(root, "classes");
    if (!cl || cl->type != MSGPACK_OBJECT_ARRAY || cl->via.array.size < 2 || cl->via.array.size > 256)
        return bf_err_set(err, "'classes' must be an array of 2 to 256 label names");
    meta->classes = (int)cl->via.array.size;
    for (int i = 0; i < meta->classes; i++) {
        const msgpack_object *o = &cl->via.array.ptr[i];
        if (o->type != MSGPACK_OBJECT_STR || o->via.str.size >= sizeof meta->class_names[0])
            return bf_err_set(err, "class name %d must be a string shorter than %zu bytes", i, sizeof meta->class_names[0]);
        /* text, as msgpack's str promises: a NUL would cut the label short, invalid UTF-8 is a
         * corrupt byte (version 1's digest does not cover names) */
        if (!bf_utf8_valid(o->via.str.ptr, o->via.str.size) || memchr(o->via.str.ptr, 0, o->via.str.size))
            return bf_err_set(err, "class name %d is not valid UTF-8 text", i);
        memcpy(meta->class_names[i], o->via.str.ptr, o->via.str.size);
        meta->class_names[i][o->via.str.size] = 0;
    }
    return 0;
}

static int get_floats(const msgpack_object *map, const char *key, int n, float *out, int positive, bf_err_t *err) {
    const msgpack_object *a = bf_mp_get(map, key);
    if (!a || a->type != MSGPACK_OBJECT_ARRAY || (int)a->via.array.size != n)
        return bf_err_set(err, "'preprocess.%s' must be an array of %d numbers", key, n);
    for (int i = 0; i < n; i++) {
        double v;
        if (bf_mp_as_double(&a->via.array.ptr[i], &v) || !isfinite(v) || (positive && !(v > 0)) || fabs(v) > 1e6)
            return bf_err_set(err, "'preprocess.%s[%d]' is not a valid %s number", key, i, positive ? "positive" : "finite");
        out[i] = (float)v;
    }
    return 0;
}

/* Copies one tensor after checking its shape and byte length against the architecture's view. */
static int load_tensor(bf_net_t *net, const bf_tensor_view_t *v, const msgpack_object *t, bf_err_t *err) {
    const msgpack_object *shape = bf_mp_get(t, "shape"), *data = bf_mp_get(t, "data");
    if (!shape || shape->type != MSGPACK_OBJECT_ARRAY || (int)shape->via.array.size != v->ndim)
        return bf_err_set(err, "tensor %s: shape must have %d dimensions", v->name, v->ndim);
    for (int d = 0; d < v->ndim; d++) {
        const msgpack_object *o = &shape->via.array.ptr[d];
        if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER || o->via.u64 != (uint64_t)v->shape[d])
            return bf_err_set(err, "tensor %s: dimension %d should be %d", v->name, d, v->shape[d]);
    }
    if (!data || data->type != MSGPACK_OBJECT_BIN)
        return bf_err_set(err, "tensor %s: 'data' missing or not binary", v->name);
    if (data->via.bin.size != v->count * sizeof(float))
        return bf_err_set(err, "tensor %s: %u data bytes, expected %zu", v->name, data->via.bin.size, v->count * sizeof(float));
    float *dst = tensor_data(net, v);
    memcpy(dst, data->via.bin.ptr, data->via.bin.size);
    for (size_t i = 0; i < v->count; i++)
        if (!isfinite(dst[i])) return bf_err_set(err, "tensor %s: value %zu is not finite", v->name, i);
    return 0;
}

static int load_tensors(bf_net_t *net, const msgpack_object *root, bf_err_t *err) {
    const msgpack_object *tensors = bf_mp_get(root, "tensors");
    if (!tensors || tensors->type != MSGPACK_OBJECT_MAP) return bf_err_set(err, "'tensors' missing or not a map");
    int n = bf_net_num_tensors(net);
    if ((int)tensors->via.map.size != n)
        return bf_err_set(err, "%u tensors in the file, %s has %d", tensors->via.map.size, bf_net_arch(net), n);
    for (int i = 0; i < n; i++) {
        const bf_tensor_view_t *v = bf_net_tensor(net, i);
        const msgpack_object *t = bf_mp_get(tensors, v->name);
        if (!t) return bf_err_set(err, "tensor %s is missing", v->name);
        if (load_tensor(net, v, t, err)) return -1;
    }
    return 0; /* equal counts and every expected name present: no unknown names either */
}

/* The bytes of every tensor's data in the file, counted before anything is built: what the declared
 * shape needs must be there. Entries that are not {.., data: bin} count nothing (refused later). */
static size_t data_bytes_present(const msgpack_object *root) {
    const msgpack_object *tensors = bf_mp_get(root, "tensors");
    size_t total = 0;
    for (uint32_t i = 0; tensors && tensors->type == MSGPACK_OBJECT_MAP && i < tensors->via.map.size; i++) {
        const msgpack_object *d = bf_mp_get(&tensors->via.map.ptr[i].val, "data");
        if (d && d->type == MSGPACK_OBJECT_BIN) total += d->via.bin.size;
    }
    return total;
}

/* The declared architecture and shape, checked before bf_net_new allocates anything for them: the
 * tensor bytes present must be exactly what it needs, and the network for one image must fit in
 * BF_MODEL_NET_MAX (a few hundred bytes declaring a 512x512 input would otherwise cost ~700 MiB). */
static int check_plan(const msgpack_object *root, const char *arch, int C, int H, int W, int classes, bf_err_t *err) {
    bf_net_plan_t plan;
    if (bf_net_plan(arch, C, H, W, classes, 1, 1, &plan, err)) return -1;
    size_t need = (plan.nparams + plan.nbuffers) * sizeof(float), have = data_bytes_present(root);
    if (have != need)
        return bf_err_set(err, "the tensors hold %zu bytes of data; %s with input %dx%dx%d and %d classes needs %zu",
                          have, arch, C, H, W, classes, need);
    if (plan.bytes > BF_MODEL_NET_MAX)
        return bf_err_set(err, "%s with input %dx%dx%d needs %.0f MiB for one image, more than the %zu MiB a model file may ask for",
                          arch, C, H, W, (double)plan.bytes / (1 << 20), BF_MODEL_NET_MAX >> 20);
    return 0;
}

/* Version 2: the file must end with the sha256 entry, and its digest covers every byte before. */
static int check_file_digest(const uint8_t *buf, size_t len, const msgpack_object *root, bf_err_t *err) {
    const msgpack_object_kv *last = root->via.map.size ? &root->via.map.ptr[root->via.map.size - 1] : NULL;
    if (!last || !bf_mp_str_eq(&last->key, "sha256") || last->val.type != MSGPACK_OBJECT_STR ||
        last->val.via.str.size != 64 || len < DIGEST_TAIL ||
        memcmp(buf + len - DIGEST_TAIL, DIGEST_ENTRY, sizeof DIGEST_ENTRY))
        return bf_err_set(err, "'sha256' must be the last entry, a string of 64 hex digits");
    char want[65];
    bf_sha256_hex(buf, len - DIGEST_TAIL, want);
    if (memcmp(buf + len - 64, want, 64))
        return bf_err_set(err, "sha256 mismatch: the file's contents do not match its digest (corrupt file)");
    return 0;
}

static bf_net_t *decode_root(const uint8_t *buf, size_t len, const msgpack_object *root, int max_batch, int threads,
                             bf_model_meta_t *meta, bf_err_t *err) {
    const char *s;
    size_t n;
    int64_t version;
    if (root->type != MSGPACK_OBJECT_MAP) return bf_err_set(err, "not a model file (top level is not a map)"), NULL;
    if (!bf_mp_str_eq(bf_mp_get(root, "format"), FORMAT_NAME))
        return bf_err_set(err, "not a model file ('format' is not \"%s\")", FORMAT_NAME), NULL;
    if (bf_mp_get_int(root, "version", 0, INT32_MAX, &version, err)) return NULL;
    if (version != 1 && version != FORMAT_VERSION)
        return bf_err_set(err, "unsupported model file version %lld (this build reads 1 and %d)", (long long)version,
                          FORMAT_VERSION), NULL;
    /* the digest first: in version 2 it covers every field, so nothing below sees a corrupt byte */
    if (version == 2 && check_file_digest(buf, len, root, err)) return NULL;
    char arch[16];
    if (bf_mp_get_str(root, "arch", &s, &n, err)) return NULL;
    if (n >= sizeof arch) return bf_err_set(err, "unknown architecture"), NULL;
    memcpy(arch, s, n);
    arch[n] = 0;
    int C = 0, H = 0, W = 0;
    memset(meta, 0, sizeof *meta);
    if (get_input(root, &C, &H, &W, err) || get_classes(root, meta, err)) return NULL;
    meta->channels = C;
    const msgpack_object *pre = bf_mp_get(root, "preprocess");
    if (C > 4) return bf_err_set(err, "input has %d channels (at most 4)", C), NULL;
    if (get_floats(pre, "mean", C, meta->mean, 0, err) || get_floats(pre, "std", C, meta->std, 1, err)) return NULL;
    if (check_plan(root, arch, C, H, W, meta->classes, err)) return NULL;
    bf_net_t *net = bf_net_new(arch, C, H, W, meta->classes, max_batch, threads, err);
    if (!net) return NULL;
    if (load_tensors(net, root, err) || bf_mp_get_str(root, "sha256", &s, &n, err)) goto fail;
    if (version == 1) {
        char want[65];
        tensor_digest(net, want);
        if (n != 64 || memcmp(s, want, 64)) {
            bf_err_set(err, "sha256 mismatch: the tensors do not match the file's digest (corrupt file)");
            goto fail;
        }
    }
    return net;
fail:
    bf_net_destroy(&net);
    return NULL;
}

bf_net_t *bf_model_decode(const uint8_t *buf, size_t len, int max_batch, int threads, bf_model_meta_t *meta,
                          bf_err_t *err) {
    msgpack_unpacked u;
    /* a model has ~100 tensors of a few fields each; 100k objects is far above any real file */
    if (bf_mp_parse(buf, len, 8, 100000, &u, err)) return NULL;
    bf_net_t *net = decode_root(buf, len, &u.data, max_batch, threads, meta, err);
    msgpack_unpacked_destroy(&u);
    return net;
}

bf_net_t *bf_model_load(const char *path, int max_batch, int threads, bf_model_meta_t *meta, bf_err_t *err) {
    uint8_t *buf;
    size_t len;
    if (bf_file_read(path, MAX_FILE_BYTES, &buf, &len, err)) return NULL;
    bf_net_t *net = bf_model_decode(buf, len, max_batch, threads, meta, err);
    if (!net) bf_err_prefix(err, "%s: ", path);
    free(buf);
    return net;
}

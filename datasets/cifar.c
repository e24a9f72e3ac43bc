/* cifar.c: CIFAR-10 binary batches: records of 1 label byte + 3072 pixel bytes (the 32×32 red
 * plane, then green, then blue — already CHW). Record counts come from the file sizes, which
 * must be exact multiples of 3073, so nothing is allocated on the strength of a header. */
#include "bf_datasets.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define CIFAR_CLASSES 10
#define CIFAR_PIX 3072
#define CIFAR_REC (1 + CIFAR_PIX)
#define CIFAR_MAX_FILES 64
#define META_MAX_BYTES 65536

static const char *const cifar_names[CIFAR_CLASSES] = {"airplane", "automobile", "bird",  "cat",  "deer",
                                                       "dog",      "frog",       "horse", "ship", "truck"};

static int file_records(const char *path, size_t *nrec, bf_err_t *err) {
    struct stat st;
    if (stat(path, &st) != 0) return bf_err_set(err, "%s: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode)) return bf_err_set(err, "%s: not a regular file", path);
    size_t sz = (size_t)st.st_size;
    if (sz == 0) return bf_err_set(err, "%s: empty file", path);
    if (sz % CIFAR_REC)
        return bf_err_set(err, "%s: size %zu is not a multiple of the %d-byte CIFAR-10 record (%zu records + %zu "
                          "stray bytes)", path, sz, CIFAR_REC, sz / CIFAR_REC, sz % CIFAR_REC);
    *nrec = sz / CIFAR_REC;
    return 0;
}

/* Reads nrec records into d starting at image `first`, validating each label. */
static int read_records(const char *path, bf_dataset_t *d, size_t first, size_t nrec, bf_err_t *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return bf_err_set(err, "%s: cannot open: %s", path, strerror(errno));
    int rc = 0;
    for (size_t r = 0; r < nrec && rc == 0; r++) {
        uint8_t *lab = d->labels + first + r, *px = d->pixels + (first + r) * CIFAR_PIX;
        if (fread(lab, 1, 1, f) != 1 || fread(px, 1, CIFAR_PIX, f) != CIFAR_PIX)
            rc = bf_err_set(err, "%s: truncated while reading record %zu of %zu", path, r, nrec);
        else if (*lab >= CIFAR_CLASSES)
            rc = bf_err_set(err, "%s: label %u in record %zu out of range (expected 0..%d)", path, *lab, r,
                            CIFAR_CLASSES - 1);
    }
    fclose(f);
    return rc;
}

/* The next non-empty line of s (trimmed) into name; advances *pos. 0 at the end of s. */
static int next_name(const char *s, size_t len, size_t *pos, const char **start, size_t *nlen) {
    while (*pos < len) {
        size_t b = *pos, e = b;
        while (e < len && s[e] != '\n') e++;
        *pos = e < len ? e + 1 : e;
        while (b < e && isspace((unsigned char)s[b])) b++;
        while (e > b && isspace((unsigned char)s[e - 1])) e--;
        if (e > b) {
            *start = s + b;
            *nlen = e - b;
            return 1;
        }
    }
    return 0;
}

/* Class names from batches.meta.txt (one per line; the real file ends with blank lines) in the
 * directory of the first batch; the standard names when the file is absent. */
static int load_names(const char *batch_path, bf_dataset_t *d, bf_err_t *err) {
    char meta[4096];
    const char *slash = strrchr(batch_path, '/');
    int dl = slash ? (int)(slash - batch_path) : 1;
    int k = snprintf(meta, sizeof meta, "%.*s/batches.meta.txt", dl, slash ? batch_path : ".");
    if (k < 0 || (size_t)k >= sizeof meta) return bf_err_set(err, "%s: path too long", batch_path);
    for (int c = 0; c < CIFAR_CLASSES; c++) snprintf(d->class_names[c], BF_MAX_CLASS_NAME, "%s", cifar_names[c]);
    FILE *f = fopen(meta, "rb");
    if (!f) return errno == ENOENT ? 0 : bf_err_set(err, "%s: cannot open: %s", meta, strerror(errno));
    char *buf = malloc(META_MAX_BYTES + 1);
    size_t len = buf ? fread(buf, 1, META_MAX_BYTES + 1, f) : 0;
    fclose(f);
    if (!buf) return bf_err_set(err, "%s: out of memory", meta);
    int rc = 0, count = 0;
    size_t pos = 0, nlen;
    const char *name;
    if (len > META_MAX_BYTES) rc = bf_err_set(err, "%s: larger than %d bytes", meta, META_MAX_BYTES);
    while (rc == 0 && next_name(buf, len, &pos, &name, &nlen)) {
        if (count >= CIFAR_CLASSES) {
            rc = bf_err_set(err, "%s: more than %d class names", meta, CIFAR_CLASSES);
        } else if (nlen >= BF_MAX_CLASS_NAME) {
            rc = bf_err_set(err, "%s: class name on line %d longer than %d bytes", meta, count + 1,
                            BF_MAX_CLASS_NAME - 1);
        } else {
            memcpy(d->class_names[count], name, nlen);
            d->class_names[count][nlen] = 0;
            count++;
        }
    }
    if (rc == 0 && count != CIFAR_CLASSES)
        rc = bf_err_set(err, "%s: %d class names, expected %d", meta, count, CIFAR_CLASSES);
    free(buf);
    return rc;
}

int bf_cifar10_load(const char *const *batch_paths, int nfiles, bf_dataset_t *out, bf_err_t *err) {
    memset(out, 0, sizeof *out);
    if (nfiles < 1 || nfiles > CIFAR_MAX_FILES)
        return bf_err_set(err, "CIFAR-10: %d batch files (expected 1..%d)", nfiles, CIFAR_MAX_FILES);
    size_t nrec[CIFAR_MAX_FILES], total = 0;
    for (int i = 0; i < nfiles; i++) {
        if (file_records(batch_paths[i], &nrec[i], err)) return -1;
        total += nrec[i];
        if (total > INT32_MAX)
            return bf_err_set(err, "%s: more than %d CIFAR-10 records in total", batch_paths[i], INT32_MAX);
    }
    if (bf_dataset_alloc(out, (int32_t)total, 3, 32, 32, CIFAR_CLASSES, err)) return -1;
    size_t first = 0;
    int rc = 0;
    for (int i = 0; i < nfiles && rc == 0; i++) {
        rc = read_records(batch_paths[i], out, first, nrec[i], err);
        first += nrec[i];
    }
    if (rc == 0) rc = load_names(batch_paths[0], out, err);
    if (rc) bf_dataset_free(out);
    return rc;
}

/* load.c: bf_dataset_load, the format detection: which reader (idx.c, cifar.c, imgfolder.c) a
 * directory needs, the split's file names, and the conversion to the caller's shape. The readers
 * never call back here, and dataset.c calls no reader. */
#include "bf_datasets.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* Sets buf to "dir/name"; fails (rather than truncating) when the path is too long. */
static int join(char *buf, size_t cap, const char *dir, const char *name, bf_err_t *err) {
    int k = snprintf(buf, cap, "%s/%s", dir, name);
    if (k < 0 || (size_t)k >= cap) return bf_err_set(err, "%s/%s: path too long", dir, name);
    return 0;
}

/* Finds NAME or NAME.gz in dir; 1 found (path in buf), 0 not found, -1 error. */
static int find_idx_file(const char *dir, const char *name, char *buf, size_t cap, bf_err_t *err) {
    char gz[256];
    snprintf(gz, sizeof gz, "%s.gz", name);
    if (join(buf, cap, dir, gz, err)) return -1;
    if (is_file(buf)) return 1;
    if (join(buf, cap, dir, name, err)) return -1;
    return is_file(buf);
}

/* 1 when IDX files for the split exist (loaded into out), 0 when absent, -1 on error. */
static int try_idx(const char *dir, const char *split, bf_dataset_t *out, bf_err_t *err) {
    const char *pre = strcmp(split, "train") == 0 ? "train" : "t10k";
    char iname[64], lname[64], ipath[4096], lpath[4096];
    snprintf(iname, sizeof iname, "%s-images-idx3-ubyte", pre);
    snprintf(lname, sizeof lname, "%s-labels-idx1-ubyte", pre);
    int fi = find_idx_file(dir, iname, ipath, sizeof ipath, err);
    if (fi <= 0) return fi;
    int fl = find_idx_file(dir, lname, lpath, sizeof lpath, err);
    if (fl < 0) return -1;
    if (fl == 0) return bf_err_set(err, "%s: found %s but no %s[.gz] next to it", dir, iname, lname);
    return bf_idx_load(ipath, lpath, out, err) ? -1 : 1;
}

/* CIFAR-10 batches in dir or dir/cifar-10-batches-bin/. For train all five batches must be
 * there: silently training on part of the data would be worse than an error. */
static int try_cifar_in(const char *dir, const char *split, bf_dataset_t *out, bf_err_t *err) {
    char paths[5][4096];
    const char *ptrs[5];
    int nf = strcmp(split, "train") == 0 ? 5 : 1;
    for (int k = 0; k < nf; k++) {
        char name[32];
        if (nf == 1)
            snprintf(name, sizeof name, "test_batch.bin");
        else
            snprintf(name, sizeof name, "data_batch_%d.bin", k + 1);
        if (join(paths[k], sizeof paths[k], dir, name, err)) return -1;
        ptrs[k] = paths[k];
        if (!is_file(paths[k])) {
            if (k == 0) return 0;
            return bf_err_set(err, "%s: CIFAR-10 batch missing (found %s)", paths[k], paths[0]);
        }
    }
    return bf_cifar10_load(ptrs, nf, out, err) ? -1 : 1;
}

static int try_cifar(const char *dir, const char *split, bf_dataset_t *out, bf_err_t *err) {
    int r = try_cifar_in(dir, split, out, err);
    if (r) return r;
    char sub[4096];
    if (join(sub, sizeof sub, dir, "cifar-10-batches-bin", err)) return -1;
    return is_dir(sub) ? try_cifar_in(sub, split, out, err) : 0;
}

/* Whether dir has a visible sub-folder (a candidate class folder). */
static int has_subdir(const char *dir) {
    DIR *dp = opendir(dir);
    if (!dp) return 0;
    int found = 0;
    struct dirent *e;
    char p[4096];
    while (!found && (e = readdir(dp)) != NULL)
        if (e->d_name[0] != '.' && join(p, sizeof p, dir, e->d_name, NULL) == 0) found = is_dir(p);
    closedir(dp);
    return found;
}

/* DIR/SPLIT/CLASS/FILE first; else DIR/CLASS/FILE for either split, unless DIR is split into train/
 * and test/ folders and just the requested one is missing (then "test" is not a class). */
static int try_folder(const char *dir, const char *split, int c, int h, int w, bf_dataset_t *out,
                      bf_err_t *err) {
    char sub[4096];
    if (join(sub, sizeof sub, dir, split, err)) return -1;
    if (is_dir(sub)) return bf_imgfolder_load(sub, c, h, w, out, err) ? -1 : 1;
    const char *other = strcmp(split, "train") == 0 ? "test" : "train";
    if (join(sub, sizeof sub, dir, other, err)) return -1;
    if (is_dir(sub)) return bf_err_set(err, "%s: has a %s/ folder but no %s/ folder", dir, other, split);
    if (!has_subdir(dir))
        return bf_err_set(err,
                          "%s: no dataset found for split %s (no IDX files %s-images-idx3-ubyte[.gz], no "
                          "CIFAR-10 batches, no image class folders)",
                          dir, split, strcmp(split, "train") == 0 ? "train" : "t10k");
    return bf_imgfolder_load(dir, c, h, w, out, err) ? -1 : 1;
}

/* Brings an IDX or CIFAR set to the caller's shape when one was asked for. */
static int fit_shape(bf_dataset_t *d, int c, int h, int w, bf_err_t *err) {
    if ((c == 0 || c == d->c) && (h == 0 || h == d->h) && (w == 0 || w == d->w)) return 0;
    if (bf_dataset_convert(d, c, h, w, err)) {
        bf_dataset_free(d);
        return -1;
    }
    return 0;
}

int bf_dataset_load(const char *dir, const char *split, int c, int h, int w, bf_dataset_t *out,
                    bf_err_t *err) {
    memset(out, 0, sizeof *out);
    if (!split || (strcmp(split, "train") != 0 && strcmp(split, "test") != 0))
        return bf_err_set(err, "unknown split \"%s\" (expected \"train\" or \"test\")", split ? split : "(null)");
    if (c != 0 && c != 1 && c != 3) return bf_err_set(err, "unsupported channel count %d (expected 1 or 3)", c);
    if (h < 0 || w < 0 || h > BF_MAX_IMAGE_SIDE || w > BF_MAX_IMAGE_SIDE)
        return bf_err_set(err, "unsupported image size %dx%d", h, w);
    struct stat st;
    if (stat(dir, &st) != 0) return bf_err_set(err, "%s: %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode)) return bf_err_set(err, "%s: not a directory", dir);
    int r = try_idx(dir, split, out, err);
    if (r == 0) r = try_cifar(dir, split, out, err);
    if (r > 0) return fit_shape(out, c, h, w, err);
    if (r < 0) return -1;
    return try_folder(dir, split, c, h, w, out, err) < 0 ? -1 : 0;
}

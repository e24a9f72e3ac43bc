/* imgfolder.c: one sub-folder per class (sorted by name: the label order), image files inside
 * sorted by name. Hidden entries are skipped, files with unknown extensions are skipped, and a
 * file that fails to decode is an error naming the file: a silently dropped image would change
 * the dataset without anyone noticing. */
#include "bf_datasets.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

typedef struct {
    char **v;
    size_t n, cap;
} names_t;

static void names_free(names_t *l) {
    for (size_t i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof *l);
}

static int names_add(names_t *l, const char *s) {
    if (l->n == l->cap) {
        size_t ncap = l->cap ? l->cap * 2 : 16;
        char **nv = realloc(l->v, ncap * sizeof *nv);
        if (!nv) return -1;
        l->v = nv;
        l->cap = ncap;
    }
    if (!(l->v[l->n] = strdup(s))) return -1;
    l->n++;
    return 0;
}

static int cmp_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int known_ext(const char *name) {
    static const char *const exts[] = {"png", "jpg", "jpeg", "bmp", "gif", "pnm", "ppm", "pgm"};
    const char *dot = strrchr(name, '.');
    if (!dot) return 0;
    for (size_t i = 0; i < sizeof exts / sizeof exts[0]; i++)
        if (strcasecmp(dot + 1, exts[i]) == 0) return 1;
    return 0;
}

static int join(char *buf, size_t cap, const char *dir, const char *name, bf_err_t *err) {
    int k = snprintf(buf, cap, "%s/%s", dir, name);
    if (k < 0 || (size_t)k >= cap) return bf_err_set(err, "%s/%s: path too long", dir, name);
    return 0;
}

/* Visible sub-folders (want_dirs) or visible image files of dir, sorted by name (byte order). */
static int list_dir(const char *dir, int want_dirs, names_t *out, bf_err_t *err) {
    memset(out, 0, sizeof *out);
    DIR *dp = opendir(dir);
    if (!dp) return bf_err_set(err, "%s: cannot open folder: %s", dir, strerror(errno));
    struct dirent *e;
    char path[4096];
    int rc = 0;
    while (rc == 0 && (e = readdir(dp)) != NULL) {
        struct stat st;
        if (e->d_name[0] == '.' || (!want_dirs && !known_ext(e->d_name))) continue;
        if ((rc = join(path, sizeof path, dir, e->d_name, err)) != 0) break;
        if (stat(path, &st) != 0 || (want_dirs ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode))) continue;
        if (names_add(out, e->d_name)) rc = bf_err_set(err, "%s: out of memory listing folder", dir);
    }
    closedir(dp);
    if (rc) names_free(out);
    else if (out->n) qsort(out->v, out->n, sizeof *out->v, cmp_names);
    return rc;
}

typedef struct {
    names_t classes;
    names_t files[BF_MAX_CLASSES];
    size_t total;
} listing_t;

static void listing_free(listing_t *L) {
    for (size_t k = 0; k < L->classes.n && k < BF_MAX_CLASSES; k++) names_free(&L->files[k]);
    names_free(&L->classes);
}

static int list_all(const char *dir, listing_t *L, bf_err_t *err) {
    memset(L, 0, sizeof *L);
    if (list_dir(dir, 1, &L->classes, err)) return -1;
    if (L->classes.n == 0) return bf_err_set(err, "%s: no class sub-folders", dir);
    if (L->classes.n > BF_MAX_CLASSES)
        return bf_err_set(err, "%s: %zu class folders, more than the limit of %d", dir, L->classes.n, BF_MAX_CLASSES);
    for (size_t k = 0; k < L->classes.n; k++) {
        char sub[4096];
        if (strlen(L->classes.v[k]) >= BF_MAX_CLASS_NAME)
            return bf_err_set(err, "%s/%s: class folder name longer than %d bytes", dir, L->classes.v[k],
                              BF_MAX_CLASS_NAME - 1);
        if (join(sub, sizeof sub, dir, L->classes.v[k], err) || list_dir(sub, 0, &L->files[k], err)) return -1;
        L->total += L->files[k].n;
        if (L->total > INT32_MAX) return bf_err_set(err, "%s: more than %d images", dir, INT32_MAX);
    }
    if (L->total == 0)
        return bf_err_set(err, "%s: no image files (.png .jpg .jpeg .bmp .gif .pnm .ppm .pgm) in its class folders",
                          dir);
    return 0;
}

/* Zero c/h/w come from the first image; its channels map to 1 (gray, gray+alpha) or 3. */
static int resolve_shape(const char *dir, const listing_t *L, int *c, int *h, int *w, bf_err_t *err) {
    if (*c && *h && *w) return 0;
    size_t k = 0;
    while (L->files[k].n == 0) k++;
    char sub[4096], path[4096];
    int iw, ih, ic;
    if (join(sub, sizeof sub, dir, L->classes.v[k], err) || join(path, sizeof path, sub, L->files[k].v[0], err) ||
        bf_image_file_info(path, &iw, &ih, &ic, err))
        return -1;
    if (!*c) *c = ic >= 3 ? 3 : 1;
    if (!*h) *h = ih;
    if (!*w) *w = iw;
    if ((uint64_t)*h * (uint64_t)*w > BF_MAX_IMAGE_PIXELS)
        return bf_err_set(err, "%s: image size %dx%d exceeds the %u-pixel limit", dir, *w, *h, BF_MAX_IMAGE_PIXELS);
    return 0;
}

static int load_images(const char *dir, const listing_t *L, bf_dataset_t *d, bf_err_t *err) {
    size_t chw = (size_t)d->c * d->h * d->w, i = 0;
    for (size_t k = 0; k < L->classes.n; k++) {
        char sub[4096], path[4096];
        if (join(sub, sizeof sub, dir, L->classes.v[k], err)) return -1;
        snprintf(d->class_names[k], BF_MAX_CLASS_NAME, "%s", L->classes.v[k]);
        for (size_t j = 0; j < L->files[k].n; j++, i++) {
            if (join(path, sizeof path, sub, L->files[k].v[j], err) ||
                bf_image_load(path, d->c, d->h, d->w, d->pixels + i * chw, err))
                return -1;
            d->labels[i] = (uint8_t)k;
        }
    }
    return 0;
}

int bf_imgfolder_load(const char *dir, int c, int h, int w, bf_dataset_t *out, bf_err_t *err) {
    memset(out, 0, sizeof *out);
    if (c != 0 && c != 1 && c != 3) return bf_err_set(err, "unsupported channel count %d (expected 1 or 3)", c);
    if (h < 0 || w < 0 || h > BF_MAX_IMAGE_SIDE || w > BF_MAX_IMAGE_SIDE)
        return bf_err_set(err, "unsupported image size %dx%d", h, w);
    listing_t *L = malloc(sizeof *L); /* 256 lists: too big for a worker thread's stack */
    if (!L) return bf_err_set(err, "%s: out of memory", dir);
    int rc = list_all(dir, L, err);
    if (rc == 0) rc = resolve_shape(dir, L, &c, &h, &w, err);
    if (rc == 0) rc = bf_dataset_alloc(out, (int32_t)L->total, c, h, w, (int32_t)L->classes.n, err);
    if (rc == 0 && (rc = load_images(dir, L, out, err)) != 0) bf_dataset_free(out);
    listing_free(L);
    free(L);
    return rc;
}

/* render.c: msgpack values as JSON or as readable text (bf_render.h). String escaping and UTF-8
 * validation are bf_text.h's; what stays here is the layout and the terminal sanitising (C0 and C1
 * control characters, DEL and invalid UTF-8 shown as '?'), which every string the client programs
 * print from the network or a file goes through. */
#include "bf_render.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bf_text.h"

#define MAX_DEPTH 64     /* the protocol allows 8; a guard for other callers */
#define MAX_COLUMNS 16   /* table columns shown; the rest is left out */
#define MAX_CELL 40      /* table cell width in characters; longer cells are cut */

static void hex(FILE *f, const char *p, size_t n) {
    for (size_t i = 0; i < n; i++) fprintf(f, "%02x", (unsigned char)p[i]);
}

/* The shortest %g form that reads back as the same value (2.205, not 2.2050000000000001). */
static void json_number(FILE *f, const msgpack_object *o) {
    double v = o->via.f64;
    if (!isfinite(v)) {
        fputs("null", f);
        return;
    }
    int f32 = o->type == MSGPACK_OBJECT_FLOAT32;
    char buf[40];
    for (int prec = f32 ? 6 : 15; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        double back = strtod(buf, NULL);
        if (f32 ? (float)back == (float)v : back == v) break;
    }
    fputs(buf, f);
}

static void json_value(FILE *f, const msgpack_object *o, int depth);

static void json_key(FILE *f, const msgpack_object *k, int depth) {
    if (k->type == MSGPACK_OBJECT_STR) return bf_json_string(f, k->via.str.ptr, k->via.str.size);
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    if (!m) return bf_json_string(f, "?", 1);
    json_value(m, k, depth);
    fclose(m);
    bf_json_string(f, buf, len);
    free(buf);
}

static void json_value(FILE *f, const msgpack_object *o, int depth) {
    if (depth > MAX_DEPTH) {
        fputs("null", f);
        return;
    }
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: fputs("null", f); break;
    case MSGPACK_OBJECT_BOOLEAN: fputs(o->via.boolean ? "true" : "false", f); break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER: fprintf(f, "%llu", (unsigned long long)o->via.u64); break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: fprintf(f, "%lld", (long long)o->via.i64); break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: json_number(f, o); break;
    case MSGPACK_OBJECT_STR: bf_json_string(f, o->via.str.ptr, o->via.str.size); break;
    case MSGPACK_OBJECT_BIN:
        fputc('"', f), hex(f, o->via.bin.ptr, o->via.bin.size), fputc('"', f);
        break;
    case MSGPACK_OBJECT_EXT:
        fputc('"', f), hex(f, o->via.ext.ptr, o->via.ext.size), fputc('"', f);
        break;
    case MSGPACK_OBJECT_ARRAY:
        fputc('[', f);
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            if (i) fputc(',', f);
            json_value(f, &o->via.array.ptr[i], depth + 1);
        }
        fputc(']', f);
        break;
    case MSGPACK_OBJECT_MAP:
        fputc('{', f);
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            if (i) fputc(',', f);
            json_key(f, &o->via.map.ptr[i].key, depth + 1);
            fputc(':', f);
            json_value(f, &o->via.map.ptr[i].val, depth + 1);
        }
        fputc('}', f);
        break;
    default: fputs("null", f);
    }
}

void bf_render_json(FILE *f, const msgpack_object *o) { json_value(f, o, 0); }

/* ---- text -------------------------------------------------------------------------------- */

/* Length of the character at s (n >= 1 bytes readable) when a terminal may show it as it is, else
 * 0 with *skip the bytes one '?' stands for: C0 controls, DEL, C1 controls (U+0080..U+009F, UTF-8
 * C2 80..C2 9F: U+009B is a CSI on terminals that take 8-bit controls) and each byte that does not
 * start valid UTF-8. */
static size_t printable(const unsigned char *s, size_t n, size_t *skip) {
    size_t len = bf_utf8_len(s, n);
    *skip = len ? len : 1;
    if (!len || s[0] < 0x20 || s[0] == 0x7f || (len == 2 && s[0] == 0xc2 && s[1] <= 0x9f)) return 0;
    return len;
}

/* A string for a terminal. */
static void text_string(FILE *f, const char *p, size_t n) {
    const unsigned char *s = (const unsigned char *)p;
    for (size_t i = 0, skip; i < n; i += skip) {
        size_t len = printable(s + i, n - i, &skip);
        if (len) fwrite(s + i, 1, len, f);
        else fputc('?', f);
    }
}

void bf_render_string(FILE *f, const char *s) {
    if (s) text_string(f, s, strlen(s));
}

void bf_render_clean(char *out, size_t cap, const char *in, size_t n) {
    const unsigned char *s = (const unsigned char *)in;
    size_t o = 0;
    if (!cap) return;
    for (size_t i = 0, skip; in && i < n; i += skip) {
        size_t len = printable(s + i, n - i, &skip), w = len ? len : 1;
        if (o + w >= cap) break; /* whole characters only */
        if (len) memcpy(out + o, s + i, len);
        else out[o] = '?';
        o += w;
    }
    out[o] = 0;
}

static int is_scalar(const msgpack_object *o) {
    return o->type != MSGPACK_OBJECT_ARRAY && o->type != MSGPACK_OBJECT_MAP;
}

static void text_scalar(FILE *f, const msgpack_object *o) {
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: fputs("-", f); break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: fprintf(f, "%.6g", o->via.f64); break;
    case MSGPACK_OBJECT_STR: text_string(f, o->via.str.ptr, o->via.str.size); break;
    case MSGPACK_OBJECT_BIN: fprintf(f, "<%u bytes>", o->via.bin.size); break;
    case MSGPACK_OBJECT_EXT: fprintf(f, "<ext %d, %u bytes>", o->via.ext.type, o->via.ext.size); break;
    default: json_value(f, o, 0);
    }
}

/* A cell or a key as text: scalars as text_scalar, containers as JSON (cleaned for the terminal). */
static char *cell_text(const msgpack_object *o) {
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    if (!m) return NULL;
    if (is_scalar(o)) text_scalar(m, o);
    else {
        char *j = NULL;
        size_t jl = 0;
        FILE *jm = open_memstream(&j, &jl);
        if (jm) {
            json_value(jm, o, 0);
            fclose(jm);
            text_string(m, j, jl);
            free(j);
        }
    }
    fclose(m);
    return buf;
}

/* Display width in characters (UTF-8 code points; the text is already valid UTF-8). */
static size_t width(const char *s) {
    size_t w = 0;
    for (; *s; s++) w += ((unsigned char)*s & 0xc0) != 0x80;
    return w;
}

/* Prints s padded (or cut with "...") to w characters. */
static void pad(FILE *f, const char *s, size_t w) {
    size_t sw = width(s);
    if (sw <= w) {
        fputs(s, f);
        for (size_t i = sw; i < w; i++) fputc(' ', f);
        return;
    }
    size_t shown = 0;
    for (const char *p = s; *p && shown < w - 3; shown++) {
        const char *q = p + 1;
        while (((unsigned char)*q & 0xc0) == 0x80) q++;
        fwrite(p, 1, (size_t)(q - p), f);
        p = q;
    }
    fputs("...", f);
}

static int is_table(const msgpack_object *a) {
    if (a->type != MSGPACK_OBJECT_ARRAY || !a->via.array.size) return 0;
    for (uint32_t i = 0; i < a->via.array.size; i++)
        if (a->via.array.ptr[i].type != MSGPACK_OBJECT_MAP) return 0;
    return 1;
}

static int same_key(const msgpack_object *a, const msgpack_object *b) {
    if (a->type != b->type) return 0;
    if (a->type == MSGPACK_OBJECT_STR)
        return a->via.str.size == b->via.str.size && !memcmp(a->via.str.ptr, b->via.str.ptr, a->via.str.size);
    return a->type == MSGPACK_OBJECT_POSITIVE_INTEGER && a->via.u64 == b->via.u64;
}

static const msgpack_object *lookup(const msgpack_object *map, const msgpack_object *key) {
    for (uint32_t i = 0; i < map->via.map.size; i++)
        if (same_key(&map->via.map.ptr[i].key, key)) return &map->via.map.ptr[i].val;
    return NULL;
}

static void text_table(FILE *f, const msgpack_object *a, int indent) {
    const msgpack_object *cols[MAX_COLUMNS];
    int ncol = 0;
    for (uint32_t r = 0; r < a->via.array.size; r++) {
        const msgpack_object *m = &a->via.array.ptr[r];
        for (uint32_t i = 0; i < m->via.map.size && ncol < MAX_COLUMNS; i++) {
            int seen = 0;
            for (int c = 0; c < ncol && !seen; c++) seen = same_key(cols[c], &m->via.map.ptr[i].key);
            if (!seen) cols[ncol++] = &m->via.map.ptr[i].key;
        }
    }
    size_t rows = a->via.array.size, w[MAX_COLUMNS];
    char **cells = calloc((rows + 1) * (size_t)(ncol ? ncol : 1), sizeof *cells);
    if (!cells) return;
    for (int c = 0; c < ncol; c++) {
        cells[c] = cell_text(cols[c]);
        for (size_t r = 0; r < rows; r++) {
            const msgpack_object *v = lookup(&a->via.array.ptr[r], cols[c]);
            cells[(r + 1) * ncol + c] = v ? cell_text(v) : strdup("");
        }
    }
    for (int c = 0; c < ncol; c++) {
        w[c] = 0;
        for (size_t r = 0; r <= rows; r++) {
            const char *s = cells[r * ncol + c];
            size_t sw = s ? width(s) : 0;
            if (sw > w[c]) w[c] = sw;
        }
        if (w[c] > MAX_CELL) w[c] = MAX_CELL;
    }
    for (size_t r = 0; r <= rows; r++) {
        char *line = NULL;
        size_t len = 0;
        FILE *m = open_memstream(&line, &len);
        if (!m) break;
        for (int c = 0; c < ncol; c++) {
            const char *s = cells[r * ncol + c];
            if (c == ncol - 1) fputs(s ? s : "", m); /* a long last cell is not cut */
            else pad(m, s ? s : "", w[c]), fputs("  ", m);
        }
        fclose(m);
        while (len && line[len - 1] == ' ') line[--len] = 0; /* empty trailing cells */
        fprintf(f, "%*s%s\n", indent, "", line);
        free(line);
    }
    for (size_t i = 0; i < (rows + 1) * (size_t)ncol; i++) free(cells[i]);
    free(cells);
}

static void text_block(FILE *f, const msgpack_object *o, int indent, int depth);

/* "[a, b, c]\n" for an array of scalars. */
static void inline_array(FILE *f, const msgpack_object *a) {
    fputc('[', f);
    for (uint32_t i = 0; i < a->via.array.size; i++) {
        if (i) fputs(", ", f);
        text_scalar(f, &a->via.array.ptr[i]);
    }
    fputs("]\n", f);
}

/* " value\n" after a key (or after "-"), or a nested block on the following lines. */
static void text_after_key(FILE *f, const msgpack_object *v, int indent, int depth) {
    if (is_scalar(v)) {
        fputc(' ', f), text_scalar(f, v), fputc('\n', f);
    } else if (v->type == MSGPACK_OBJECT_MAP && !v->via.map.size) {
        fputs(" {}\n", f);
    } else if (v->type == MSGPACK_OBJECT_ARRAY && !v->via.array.size) {
        fputs(" []\n", f);
    } else if (v->type == MSGPACK_OBJECT_ARRAY && !is_table(v)) {
        int flat = 1;
        for (uint32_t i = 0; i < v->via.array.size && flat; i++) flat = is_scalar(&v->via.array.ptr[i]);
        if (flat) {
            fputc(' ', f);
            inline_array(f, v);
        } else {
            fputc('\n', f);
            text_block(f, v, indent + 2, depth + 1);
        }
    } else {
        fputc('\n', f);
        text_block(f, v, indent + 2, depth + 1);
    }
}

static void text_block(FILE *f, const msgpack_object *o, int indent, int depth) {
    if (depth > MAX_DEPTH) {
        fprintf(f, "%*s...\n", indent, "");
        return;
    }
    if (o->type == MSGPACK_OBJECT_MAP) {
        if (!o->via.map.size) fprintf(f, "%*s{}\n", indent, "");
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            char *k = cell_text(&o->via.map.ptr[i].key);
            fprintf(f, "%*s%s:", indent, "", k ? k : "?");
            free(k);
            text_after_key(f, &o->via.map.ptr[i].val, indent, depth);
        }
    } else if (is_table(o)) {
        text_table(f, o, indent);
    } else if (o->type == MSGPACK_OBJECT_ARRAY) {
        int flat = 1;
        for (uint32_t i = 0; i < o->via.array.size && flat; i++) flat = is_scalar(&o->via.array.ptr[i]);
        if (flat) { /* [a, b, c] on one line */
            fprintf(f, "%*s", indent, "");
            inline_array(f, o);
            return;
        }
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            fprintf(f, "%*s-", indent, "");
            text_after_key(f, &o->via.array.ptr[i], indent, depth);
        }
    } else {
        fprintf(f, "%*s", indent, ""), text_scalar(f, o), fputc('\n', f);
    }
}

void bf_render_text(FILE *f, const msgpack_object *o) { text_block(f, o, 0, 0); }

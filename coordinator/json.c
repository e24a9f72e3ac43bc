/* json.c: the one JSON string escaper of the coordinator. User names and op ids are arbitrary
 * bytes chosen by clients, so quotes, backslashes, control characters and broken UTF-8 must never
 * reach the output raw. */
#include <stddef.h>
#include <stdio.h>

#include "commands.h"

/* Length of the valid UTF-8 sequence starting at p, or 0 if it is not one (overlongs, surrogates
 * and code points above U+10FFFF are invalid). */
static size_t utf8_len(const unsigned char *p) {
    if (p[0] < 0x80) return 1;
    size_t n;
    unsigned cp;
    if ((p[0] & 0xe0) == 0xc0) n = 2, cp = p[0] & 0x1f;
    else if ((p[0] & 0xf0) == 0xe0) n = 3, cp = p[0] & 0x0f;
    else if ((p[0] & 0xf8) == 0xf0) n = 4, cp = p[0] & 0x07;
    else return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    static const unsigned min[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    return n;
}

void json_string(FILE *f, const char *s) {
    fputc('"', f);
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    while (*p) {
        if (*p == '"' || *p == '\\') {
            fputc('\\', f);
            fputc(*p++, f);
        } else if (*p == '\n' || *p == '\t' || *p == '\r') {
            fputc('\\', f);
            fputc(*p == '\n' ? 'n' : *p == '\t' ? 't' : 'r', f);
            p++;
        } else if (*p < 0x20 || *p == 0x7f) {
            fprintf(f, "\\u%04x", *p++);
        } else {
            size_t n = utf8_len(p);
            if (n == 0) {
                fputs("\\ufffd", f);
                p++;
            } else {
                fwrite(p, 1, n, f);
                p += n;
            }
        }
    }
    fputc('"', f);
}

/* text.c: UTF-8 validation and JSON string escaping (bf_text.h). The protocol's string checks,
 * the coordinator's JSON output and the client's renderer all go through these, so a byte
 * sequence is valid text everywhere or nowhere. */
#include "bf_text.h"

#include <string.h>

/* The second byte carries every rule beyond "continuation byte": its allowed range after E0
 * (no overlong), ED (no surrogate), F0 (no overlong) and F4 (nothing above U+10FFFF). C0, C1 and
 * F5..FF never start a sequence. */
size_t bf_utf8_len(const uint8_t *p, size_t n) {
    uint8_t c = p[0];
    if (c < 0x80) return 1;
    size_t len;
    uint8_t lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) len = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0) lo = 0xa0;
        if (c == 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0) lo = 0x90;
        if (c == 0xf4) hi = 0x8f;
    } else
        return 0;
    if (n < len || p[1] < lo || p[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if ((p[i] & 0xc0) != 0x80) return 0;
    return len;
}

int bf_utf8_valid(const char *s, size_t n) {
    const uint8_t *p = (const uint8_t *)s;
    for (size_t i = 0; i < n;) {
        size_t k = bf_utf8_len(p + i, n - i);
        if (!k) return 0;
        i += k;
    }
    return 1;
}

void bf_json_string(FILE *f, const char *s, size_t n) {
    const uint8_t *p = (const uint8_t *)s;
    fputc('"', f);
    for (size_t i = 0; i < n;) {
        uint8_t c = p[i];
        size_t len = bf_utf8_len(p + i, n - i);
        if (!len) {
            fputs("\\ufffd", f);
            i++;
            continue;
        }
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c == '\n') fputs("\\n", f);
        else if (c == '\r') fputs("\\r", f);
        else if (c == '\t') fputs("\\t", f);
        else if (c == '\b') fputs("\\b", f);
        else if (c == '\f') fputs("\\f", f);
        else if (c < 0x20 || c == 0x7f) fprintf(f, "\\u%04x", c);
        else if (len == 2 && c == 0xc2 && p[i + 1] <= 0x9f) /* C1 control: same JSON, inert on a terminal */
            fprintf(f, "\\u%04x", p[i + 1]);
        else fwrite(p + i, 1, len, f);
        i += len;
    }
    fputc('"', f);
}

void bf_json_cstring(FILE *f, const char *s) { bf_json_string(f, s ? s : "", s ? strlen(s) : 0); }

/* bf_text.h: untrusted bytes as text: the one UTF-8 validator and the one JSON string escaper.
 *
 * Valid UTF-8 here is RFC 3629's: no overlong forms (C0 80, E0 80 80, F0 80 80 80, ...), no
 * UTF-16 surrogates (U+D800..U+DFFF), nothing above U+10FFFF, no truncated sequence. U+0000 is a
 * valid character; callers that refuse NUL (the protocol's strings) check it themselves. Every
 * function reads only the n bytes it is given and allocates nothing. */
#ifndef BF_TEXT_H
#define BF_TEXT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Length in bytes (1..4) of the valid UTF-8 sequence at p, where n >= 1 bytes are readable, or 0
 * when the bytes there do not start one (then the caller usually skips one byte). */
size_t bf_utf8_len(const uint8_t *p, size_t n);

/* 1 if s[0..n) is entirely valid UTF-8 (n = 0 is), else 0. */
int bf_utf8_valid(const char *s, size_t n);

/* Writes s[0..n) as a JSON (RFC 8259) string literal, quotes included: '"' and '\' escaped,
 * \n \r \t \b \f in their short forms, other C0 controls, DEL and the C1 controls U+0080..U+009F
 * as \u00XX (the same JSON value, but nothing a terminal showing the output acts on), and every
 * byte that does not start a valid UTF-8 sequence as \ufffd (U+FFFD), so the output is valid
 * JSON and valid UTF-8 whatever the input. */
void bf_json_string(FILE *f, const char *s, size_t n);
/* The same for a NUL-terminated string; NULL writes "". */
void bf_json_cstring(FILE *f, const char *s);

#endif

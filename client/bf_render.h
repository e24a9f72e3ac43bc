/* bf_render.h: prints any msgpack value the coordinator sends (the protocol's `any` fields:
 * task lists, status, assets, history, OK results) without knowing its structure, so new keys on
 * the coordinator side show up without a client change.
 *
 * JSON (--json): one compact line, RFC 8259: strings escaped (quotes, backslash, control
 * characters as \u00XX, invalid UTF-8 as U+FFFD), non-finite floats as null, bin/ext as a string
 * of lower-case hex, non-string map keys as their JSON text in a string.
 * Text: `key: value` lines, nested maps indented by two spaces, arrays of scalars inline
 * ([a, b]), arrays of maps as a table whose columns are the union of the maps' keys. C0 and C1
 * control characters (U+0000..U+001F, U+0080..U+009F), DEL and invalid UTF-8 in strings become
 * '?', so a hostile coordinator or file cannot drive the terminal with escape sequences. */
#ifndef BF_RENDER_H
#define BF_RENDER_H

#include <msgpack.h>
#include <stdio.h>

void bf_render_json(FILE *f, const msgpack_object *o);
/* Ends with a newline. */
void bf_render_text(FILE *f, const msgpack_object *o);

/* One NUL-terminated string for a terminal, sanitised as above (NULL prints nothing). */
void bf_render_string(FILE *f, const char *s);
/* The same into out (cap bytes, always NUL-terminated, cut at a character boundary) from in[0..n):
 * for text that is formatted further before it is printed. */
void bf_render_clean(char *out, size_t cap, const char *in, size_t n);

#endif

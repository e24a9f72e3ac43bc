/* bf_render.h: prints any msgpack value the coordinator sends (the protocol's `any` fields:
 * task lists, status, assets, history, OK results) without knowing its structure, so new keys on
 * the coordinator side show up without a client change.
 *
 * JSON (--json): one compact line, RFC 8259: strings escaped (quotes, backslash, control
 * characters as \u00XX, invalid UTF-8 as U+FFFD), non-finite floats as null, bin/ext as a string
 * of lower-case hex, non-string map keys as their JSON text in a string.
 * Text: `key: value` lines, nested maps indented by two spaces, arrays of scalars inline
 * ([a, b]), arrays of maps as a table whose columns are the union of the maps' keys. Control
 * characters and invalid UTF-8 in strings become '?', so a hostile coordinator cannot drive the
 * terminal with escape sequences. */
#ifndef BF_RENDER_H
#define BF_RENDER_H

#include <msgpack.h>
#include <stdio.h>

void bf_render_json(FILE *f, const msgpack_object *o);
/* Ends with a newline. */
void bf_render_text(FILE *f, const msgpack_object *o);

#endif

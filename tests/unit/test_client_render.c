/* test_client_render.c: the msgpack -> JSON / text printer: escaping (quotes, control
 * characters, invalid UTF-8), nesting, binary, non-finite floats, tables, terminal safety (C0, C1
 * and DEL replaced, in the renderer and in bf_render_string / bf_render_clean). */
#include <stdlib.h>

#include "bf_render.h"
#include "test.h"

/* Packs with fn, renders (json or text), returns a malloc'ed string. */
typedef void (*pack_fn)(msgpack_packer *pk);

static char *render(pack_fn fn, int json) {
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    fn(&pk);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    char *buf = NULL;
    size_t len = 0;
    if (msgpack_unpack_next(&u, sb.data, sb.size, &off) == MSGPACK_UNPACK_SUCCESS) {
        FILE *f = open_memstream(&buf, &len);
        if (json) bf_render_json(f, &u.data);
        else bf_render_text(f, &u.data);
        fclose(f);
    }
    msgpack_unpacked_destroy(&u);
    msgpack_sbuffer_destroy(&sb);
    return buf;
}

static void str(msgpack_packer *pk, const char *s) { msgpack_pack_str_with_body(pk, s, strlen(s)); }

static void pack_nested(msgpack_packer *pk) {
    msgpack_pack_map(pk, 8);
    str(pk, "name"), str(pk, "a \"quoted\" \\ name\n\ttab");
    str(pk, "n"), msgpack_pack_int64(pk, -42);
    str(pk, "big"), msgpack_pack_uint64(pk, UINT64_MAX);
    str(pk, "f"), msgpack_pack_double(pk, 0.5);
    str(pk, "bad"), msgpack_pack_double(pk, NAN);
    str(pk, "ok"), msgpack_pack_true(pk);
    str(pk, "nil"), msgpack_pack_nil(pk);
    str(pk, "inner"), msgpack_pack_map(pk, 2);
    str(pk, "list"), msgpack_pack_array(pk, 3), msgpack_pack_int(pk, 1), msgpack_pack_int(pk, 2), str(pk, "x");
    str(pk, "bin"), msgpack_pack_bin_with_body(pk, "\x00\xff\x10", 3);
}

static void test_json_nested(void) {
    char *s = render(pack_nested, 1);
    const char *want = "{\"name\":\"a \\\"quoted\\\" \\\\ name\\n\\ttab\",\"n\":-42,\"big\":18446744073709551615,"
                       "\"f\":0.5,\"bad\":null,\"ok\":true,\"nil\":null,\"inner\":{\"list\":[1,2,\"x\"],\"bin\":\"00ff10\"}}";
    CHECK_MSG(s && !strcmp(s, want), "got %s", s ? s : "(null)");
    free(s);
}

static void pack_hostile_str(msgpack_packer *pk) {
    /* ESC [2J (clear screen), a DEL, an invalid byte, an overlong '/', a surrogate, valid é and € */
    const char s[] = "\x1b[2J\x7f" "a\xff" "b\xc0\xaf" "c\xed\xa0\x80" "d\xc3\xa9\xe2\x82\xac";
    msgpack_pack_map(pk, 1);
    msgpack_pack_str_with_body(pk, "k\x01", 2);
    msgpack_pack_str_with_body(pk, s, sizeof s - 1);
}

static void test_escaping(void) {
    char *j = render(pack_hostile_str, 1);
    const char *want = "{\"k\\u0001\":\"\\u001b[2J\\u007fa\\ufffdb\\ufffd\\ufffdc\\ufffd\\ufffd\\ufffdd\xc3\xa9\xe2\x82\xac\"}";
    CHECK_MSG(j && !strcmp(j, want), "got %s", j ? j : "(null)");
    free(j);
    char *t = render(pack_hostile_str, 0);
    CHECK_MSG(t && !strchr(t, 0x1b) && !strchr(t, 0x7f) && !strchr(t, '\x01'), "text keeps control characters");
    CHECK_MSG(t && !strcmp(t, "k?: ?[2J?a?b??c???d\xc3\xa9\xe2\x82\xac\n"), "got %s", t ? t : "(null)");
    free(t);
}

/* C1 controls (U+0080..U+009F as UTF-8: C2 80..C2 9F; U+009B is CSI) are controls too; U+00A0
 * and above are text. */
static void pack_c1(msgpack_packer *pk) {
    const char s[] = "a\xc2\x9b" "2J\xc2\x80" "b\xc2\x9f" "c\xc2\xa0\xc3\xa9";
    msgpack_pack_map(pk, 1);
    msgpack_pack_str_with_body(pk, "k\xc2\x85", 3);
    msgpack_pack_str_with_body(pk, s, sizeof s - 1);
}

static void test_c1(void) {
    char *t = render(pack_c1, 0);
    CHECK_MSG(t && !strcmp(t, "k?: a?2J?b?c\xc2\xa0\xc3\xa9\n"), "got %s", t ? t : "(null)");
    free(t);
    char *j = render(pack_c1, 1);
    CHECK_MSG(j && !strcmp(j, "{\"k\\u0085\":\"a\\u009b2J\\u0080b\\u009fc\xc2\xa0\xc3\xa9\"}"), "got %s", j ? j : "(null)");
    free(j);
    /* one string, printed or copied: the same rules; a copy is cut at a character boundary */
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    bf_render_string(f, "x\x1b[2J\xc2\x9by\x7f\xff\xc3\xa9");
    bf_render_string(f, NULL);
    fclose(f);
    CHECK_MSG(buf && !strcmp(buf, "x?[2J?y??\xc3\xa9"), "got %s", buf ? buf : "(null)");
    free(buf);
    char out[8];
    bf_render_clean(out, sizeof out, "ab\xc2\x9b\x01\xc3\xa9\xc3\xa9xyz", 12);
    CHECK_MSG(!strcmp(out, "ab??\xc3\xa9"), "got %s", out); /* 6 bytes: the next é does not fit in 7 */
    bf_render_clean(out, sizeof out, NULL, 0);
    CHECK(out[0] == 0);
}

static void pack_table(msgpack_packer *pk) {
    msgpack_pack_map(pk, 3);
    str(pk, "user"), str(pk, "alice");
    str(pk, "tasks"), msgpack_pack_array(pk, 2);
    msgpack_pack_map(pk, 2), str(pk, "task"), str(pk, "t1"), str(pk, "round"), msgpack_pack_int(pk, 3);
    msgpack_pack_map(pk, 3), str(pk, "task"), str(pk, "long-task"), str(pk, "state"), str(pk, "running"),
        str(pk, "extra"), msgpack_pack_array(pk, 1), msgpack_pack_int(pk, 7);
    str(pk, "empty"), msgpack_pack_array(pk, 0);
}

static void test_text(void) {
    char *t = render(pack_table, 0);
    const char *want = "user: alice\n"
                       "tasks:\n"
                       "  task       round  state    extra\n"
                       "  t1         3\n"
                       "  long-task         running  [7]\n"
                       "empty: []\n";
    CHECK_MSG(t && !strcmp(t, want), "got\n%s", t ? t : "(null)");
    free(t);
    char *n = render(pack_nested, 0);
    const char *want2 = "name: a \"quoted\" \\ name??tab\n"
                        "n: -42\n"
                        "big: 18446744073709551615\n"
                        "f: 0.5\n"
                        "bad: nan\n"
                        "ok: true\n"
                        "nil: -\n"
                        "inner:\n"
                        "  list: [1, 2, x]\n"
                        "  bin: <3 bytes>\n";
    CHECK_MSG(n && !strcmp(n, want2), "got\n%s", n ? n : "(null)");
    free(n);
}

static void pack_scalars(msgpack_packer *pk) {
    msgpack_pack_array(pk, 7);
    msgpack_pack_float(pk, 1.5f);
    msgpack_pack_double(pk, 2.205);
    msgpack_pack_float(pk, 0.1f);
    msgpack_pack_double(pk, INFINITY);
    msgpack_pack_false(pk);
    msgpack_pack_map(pk, 1), msgpack_pack_int(pk, 5), str(pk, "int key");
    msgpack_pack_map(pk, 0);
}

static void test_misc(void) {
    char *j = render(pack_scalars, 1);
    CHECK_MSG(j && !strcmp(j, "[1.5,2.205,0.1,null,false,{\"5\":\"int key\"},{}]"), "got %s", j ? j : "(null)");
    free(j);
    char *t = render(pack_scalars, 0);
    CHECK_MSG(t && !strcmp(t, "- 1.5\n- 2.205\n- 0.1\n- inf\n- false\n-\n  5: int key\n- {}\n"), "got\n%s", t ? t : "(null)");
    free(t);
}

int main(void) {
    test_json_nested();
    test_escaping();
    test_text();
    test_misc();
    test_c1();
    return bf_test_done("test_client_render");
}

/* test_text.c: the UTF-8 validator against RFC 3629's table (every overlong form, surrogate,
 * code point above U+10FFFF and truncated sequence refused, every boundary character accepted)
 * and against an independent decoder on every 1-3 byte input; the JSON escaper's exact output. */
#include <stdint.h>

#include "bf_text.h"
#include "test.h"

/* The reference: decode the code point arithmetically and refuse what RFC 3629 forbids. Written
 * differently from text.c (from the lead byte's bit pattern, not from second-byte ranges). */
static size_t ref_len(const uint8_t *p, size_t n) {
    if (p[0] < 0x80) return 1;
    size_t len;
    uint32_t cp;
    if ((p[0] & 0xe0) == 0xc0) len = 2, cp = p[0] & 0x1f;
    else if ((p[0] & 0xf0) == 0xe0) len = 3, cp = p[0] & 0x0f;
    else if ((p[0] & 0xf8) == 0xf0) len = 4, cp = p[0] & 0x07;
    else return 0;
    if (len > n) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    return len;
}

static size_t len_of(const char *s, size_t n) { return bf_utf8_len((const uint8_t *)s, n); }

static void test_table(void) {
    /* accepted, with their lengths: the first and last character of every length and around the
     * surrogate gap */
    static const struct {
        const char *s;
        size_t n;
    } ok[] = {{"\x00", 1}, {"\x7f", 1}, {"\xc2\x80", 2}, {"\xdf\xbf", 2}, {"\xe0\xa0\x80", 3},
              {"\xed\x9f\xbf", 3}, {"\xee\x80\x80", 3}, {"\xef\xbf\xbf", 3}, {"\xf0\x90\x80\x80", 4},
              {"\xf4\x8f\xbf\xbf", 4}, {"\xc3\xa9", 2}, {"\xe2\x82\xac", 3}, {"\xf0\x9d\x84\x9e", 4}};
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        CHECK_MSG(len_of(ok[i].s, ok[i].n) == ok[i].n, "case %zu", i);
        CHECK_MSG(bf_utf8_valid(ok[i].s, ok[i].n), "case %zu", i);
    }
    /* refused: overlongs of every length, surrogates, > U+10FFFF, bytes that never start a
     * sequence, lone continuations, bad continuations, truncations */
    static const char *const bad[] = {
        "\xc0\x80", "\xc1\xbf", "\xe0\x80\x80", "\xe0\x9f\xbf", "\xf0\x80\x80\x80", "\xf0\x8f\xbf\xbf",
        "\xed\xa0\x80", "\xed\xbf\xbf", "\xed\xb0\x80", "\xf4\x90\x80\x80", "\xf7\xbf\xbf\xbf",
        "\xf5\x80\x80\x80", "\xf8\x88\x80\x80\x80", "\xfc\x84\x80\x80\x80\x80", "\xfe", "\xff", "\x80",
        "\xbf", "\xc3\x28", "\xe2\x28\xa1", "\xe2\x82\x28", "\xf0\x9d\x84\x28", "\xf0\x28\x84\x9e"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        CHECK_MSG(len_of(bad[i], strlen(bad[i])) == 0, "bad case %zu", i);
        CHECK_MSG(!bf_utf8_valid(bad[i], strlen(bad[i])), "bad case %zu", i);
    }
    /* A valid sequence cut by n is refused, and nothing past n is read for the decision. */
    CHECK(len_of("\xe2\x82\xac", 2) == 0 && len_of("\xf0\x9d\x84\x9e", 3) == 0 && len_of("\xc3\xa9", 1) == 0);
    CHECK(!bf_utf8_valid("ab\xe2\x82", 4) && bf_utf8_valid("ab\xe2\x82\xac", 5) && bf_utf8_valid("", 0));
    CHECK(bf_utf8_valid("a\0b", 3)); /* U+0000 is a character; the protocol refuses it on its own */
    CHECK(!bf_utf8_valid("abc\xc3", 4) && bf_utf8_valid("abc\xc3", 3));
}

/* Every 1-, 2- and 3-byte buffer, and 4-byte ones over every lead and second byte, agree with
 * the reference at every length n the buffer allows. */
static void test_against_reference(void) {
    long disagree = 0, checked = 0;
    uint8_t p[4];
    for (unsigned a = 0; a < 256; a++)
        for (unsigned b = 0; b < 256; b++)
            for (unsigned c = 0; c < 256; c++) {
                p[0] = (uint8_t)a, p[1] = (uint8_t)b, p[2] = (uint8_t)c, p[3] = 0x80;
                for (size_t n = 1; n <= 3; n++, checked++) disagree += bf_utf8_len(p, n) != ref_len(p, n);
            }
    static const uint8_t tails[] = {0x00, 0x7f, 0x80, 0x9f, 0xa0, 0xbf, 0xc0, 0xff};
    for (unsigned a = 0xf0; a < 256; a++)
        for (unsigned b = 0; b < 256; b++)
            for (size_t i = 0; i < sizeof tails; i++)
                for (size_t j = 0; j < sizeof tails; j++, checked++) {
                    p[0] = (uint8_t)a, p[1] = (uint8_t)b, p[2] = tails[i], p[3] = tails[j];
                    disagree += bf_utf8_len(p, 4) != ref_len(p, 4);
                }
    CHECK_MSG(disagree == 0, "%ld of %ld inputs disagree with the reference decoder", disagree, checked);
}

/* What bf_json_string writes for s[0..n). */
static char *json(const char *s, size_t n) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return NULL;
    bf_json_string(f, s, n);
    fclose(f);
    return buf;
}

static void expect_json_at(int line, const char *s, size_t n, const char *want) {
    char *got = json(s, n);
    CHECK_MSG(got && !strcmp(got, want), "line %d: got %s, want %s", line, got ? got : "NULL", want);
    free(got);
}
#define expect_json(s, n, want) expect_json_at(__LINE__, s, n, want)

static void test_json(void) {
    expect_json("", 0, "\"\"");
    expect_json("plain text", 10, "\"plain text\"");
    expect_json("q\"b\\s/", 6, "\"q\\\"b\\\\s/\"");
    expect_json("\n\r\t\b\f", 5, "\"\\n\\r\\t\\b\\f\"");
    expect_json("\x01\x1b[2J\x1f\x7f", 7, "\"\\u0001\\u001b[2J\\u001f\\u007f\"");
    expect_json("a\0b", 3, "\"a\\u0000b\"");
    /* valid multi-byte text passes through unchanged */
    expect_json("\xc3\xa9\xe2\x82\xac\xf0\x9d\x84\x9e\xf4\x8f\xbf\xbf", 13,
                "\"\xc3\xa9\xe2\x82\xac\xf0\x9d\x84\x9e\xf4\x8f\xbf\xbf\"");
    /* one U+FFFD per byte that does not start a valid sequence; C1 controls escaped like C0 */
    expect_json("\xc0\x80", 2, "\"\\ufffd\\ufffd\"");
    expect_json("\xed\xa0\x80x", 4, "\"\\ufffd\\ufffd\\ufffdx\"");
    expect_json("\xf4\x90\x80\x80", 4, "\"\\ufffd\\ufffd\\ufffd\\ufffd\"");
    expect_json("ab\xe2\x82", 4, "\"ab\\ufffd\\ufffd\"");
    expect_json("\xff\xc3\xa9", 3, "\"\\ufffd\xc3\xa9\"");
    expect_json("\xc2\x85", 2, "\"\\u0085\"");
    expect_json("a\xc2\x9b" "2J\xc2\x80\xc2\x9f\xc2\xa0", 11, "\"a\\u009b2J\\u0080\\u009f\xc2\xa0\"");
    /* only n bytes are read */
    expect_json("abc\"def", 3, "\"abc\"");

    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    CHECK(f != NULL);
    if (f) {
        bf_json_cstring(f, NULL);
        fputc(' ', f);
        bf_json_cstring(f, "x\"\xc3");
        fclose(f);
        CHECK_MSG(buf && !strcmp(buf, "\"\" \"x\\\"\\ufffd\""), "cstring: %s", buf ? buf : "NULL");
    }
    free(buf);
}

int main(void) {
    test_table();
    test_against_reference();
    test_json();
    return bf_test_done("test_text");
}

/* test_statement.c: the statement renderer's exact output (bf_statement.h): the CSV with and
 * without the op column (header, opening, a movement whose fields need RFC 4180 quoting, closing),
 * the table with and without op, the time format, and the date parser's refusals. */
#include <stdlib.h>

#include "bf_statement.h"
#include "test.h"

/* A statement of one currency rendered by fmt into a string (the caller frees it). */
static char *render(int csv, int with_op) {
    char *buf = NULL;
    size_t n = 0;
    FILE *out = open_memstream(&buf, &n);
    const bf_statement_fmt_t f = {.out = out, .csv = csv, .with_op = with_op};
    const bf_statement_line_t l = {.time = 1796353509, .transfer = "7", .type = "posted", .code = "a,\"b\"\nc",
                                   .op = "op:1", .amount = "-3.00", .held = "0.00", .before = "10.00", .after = "7.00",
                                   .held_before = "1.50", .held_after = "1.50"};
    bf_statement_csv_header(&f);
    bf_statement_opening(&f, "CNY", 0, "10.00", "1.50");
    bf_statement_movement(&f, "CNY", &l);
    bf_statement_closing(&f, "CNY", 1796353510, "7.00", "1.50");
    fclose(out);
    return buf;
}

static void check_output(int csv, int with_op, const char *want) {
    char *got = render(csv, with_op);
    CHECK_MSG(got && !strcmp(got, want), "csv %d op %d:\n--- got\n%s--- want\n%s", csv, with_op, got ? got : "(none)", want);
    free(got);
}

static void test_csv(void) {
    check_output(1, 1,
                 "record,currency,time,transfer,type,code,op,amount,held,balance_before,balance_after,held_before,"
                 "held_after\n"
                 "opening,CNY,1970-01-01T00:00:00Z,,,,,,,,10.00,,1.50\n"
                 "movement,CNY,2026-12-04T03:05:09Z,7,posted,\"a,\"\"b\"\"\nc\",op:1,-3.00,0.00,10.00,7.00,1.50,1.50\n"
                 "closing,CNY,2026-12-04T03:05:10Z,,,,,,,,7.00,,1.50\n");
    check_output(1, 0,
                 "record,currency,time,transfer,type,code,amount,held,balance_before,balance_after,held_before,"
                 "held_after\n"
                 "opening,CNY,1970-01-01T00:00:00Z,,,,,,,10.00,,1.50\n"
                 "movement,CNY,2026-12-04T03:05:09Z,7,posted,\"a,\"\"b\"\"\nc\",-3.00,0.00,10.00,7.00,1.50,1.50\n"
                 "closing,CNY,2026-12-04T03:05:10Z,,,,,,,7.00,,1.50\n");
}

static void test_table(void) {
    const char *head = "CNY opening balance 10.00 (held 1.50)\n"
                       "  time                 xfer     type     code                  amount         held      balance"
                       "   held after";
    const char *row = "  2026-12-04T03:05:09Z 7        posted   a,\"b\"\nc                -3.00         0.00         7.00"
                      "         1.50";
    char want[1024];
    snprintf(want, sizeof want, "%s\n%s\nCNY closing balance 7.00 (held 1.50)\n", head, row);
    check_output(0, 0, want);
    snprintf(want, sizeof want, "%s  op\n%s  op:1\nCNY closing balance 7.00 (held 1.50)\n", head, row);
    check_output(0, 1, want);
}

/* NULL fields are empty, never "(null)" */
static void test_null_fields(void) {
    char *buf = NULL;
    size_t n = 0;
    FILE *out = open_memstream(&buf, &n);
    const bf_statement_fmt_t f = {.out = out, .csv = 1, .with_op = 1};
    bf_statement_movement(&f, "COIN", &(bf_statement_line_t){.time = 0});
    fclose(out);
    CHECK_MSG(buf && !strcmp(buf, "movement,COIN,1970-01-01T00:00:00Z,,,,,,,,,,\n"), "%s", buf ? buf : "(none)");
    free(buf);
}

static void test_dates(void) {
    char t[32];
    CHECK(!strcmp(bf_statement_time(1709164800, t), "2024-02-29T00:00:00Z"));
    CHECK(bf_statement_parse_date("2024-02-29") == 1709164800);
    CHECK(bf_statement_parse_date("1970-01-01") == 0);
    static const char *const bad[] = {"2023-02-29", "2020-02-30", "2020-04-31", "2020-13-01", "2020-00-10", "1969-12-31",
                                      "2020-1-01",  "2020-01-01x", "2020-01-0",  "",           "20200101",   "abcd-ef-gh"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        CHECK_MSG(bf_statement_parse_date(bad[i]) == -1, "'%s' taken as a date", bad[i]);
    CHECK(bf_statement_parse_date(NULL) == -1);
}

int main(void) {
    test_csv();
    test_table();
    test_null_fields();
    test_dates();
    return bf_test_done("test_statement");
}

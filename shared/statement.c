/* statement.c: an account statement as text or CSV (bf_statement.h). */
#include "bf_statement.h"

#include <string.h>
#include <time.h>

#define NCOLS 13 /* with the op column */

static const char *const csv_header[NCOLS] = {"record", "currency", "time",           "transfer",      "type",
                                              "code",   "op",       "amount",         "held",          "balance_before",
                                              "balance_after", "held_before", "held_after"};

static const char *or_empty(const char *s) { return s ? s : ""; }

void bf_statement_csv_field(FILE *out, const char *v, int last) {
    if (strpbrk(v, ",\"\r\n")) {
        fputc('"', out);
        for (const char *p = v; *p; p++) {
            if (*p == '"') fputc('"', out);
            fputc(*p, out);
        }
        fputc('"', out);
    } else {
        fputs(v, out);
    }
    fputc(last ? '\n' : ',', out);
}

/* A full-width row (op at index 6); without with_op that column is left out. */
static void csv_row(const bf_statement_fmt_t *f, const char *const row[NCOLS]) {
    for (int i = 0; i < NCOLS; i++)
        if (i != 6 || f->with_op) bf_statement_csv_field(f->out, or_empty(row[i]), i == NCOLS - 1);
}

void bf_statement_csv_header(const bf_statement_fmt_t *f) {
    if (f->csv) csv_row(f, csv_header);
}

const char *bf_statement_time(int64_t t, char buf[32]) {
    time_t tt = (time_t)t;
    struct tm tm;
    if (!gmtime_r(&tt, &tm) || !strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", &tm)) snprintf(buf, 32, "%lld", (long long)t);
    return buf;
}

int64_t bf_statement_parse_date(const char *s) {
    int y, m, d;
    char tail;
    if (!s || strlen(s) != 10 || sscanf(s, "%4d-%2d-%2d%c", &y, &m, &d, &tail) != 3 || y < 1970 || m < 1 || m > 12 || d < 1 ||
        d > 31)
        return -1;
    struct tm tm = {.tm_year = y - 1900, .tm_mon = m - 1, .tm_mday = d};
    time_t t = timegm(&tm);
    struct tm back;
    /* timegm normalises Feb 30 to Mar 2: a date that does not come back unchanged is not real */
    if (t == (time_t)-1 || !gmtime_r(&t, &back) || back.tm_mday != d || back.tm_mon != m - 1) return -1;
    return (int64_t)t;
}

/* An opening or closing row: only the balance and held columns (balance_after, held_after). */
static void balance_row(const bf_statement_fmt_t *f, const char *record, const char *cur, int64_t t, const char *balance,
                        const char *held) {
    char ts[32];
    if (f->csv) {
        const char *row[NCOLS] = {record, cur, bf_statement_time(t, ts), [10] = balance, [12] = held};
        csv_row(f, row);
    } else {
        fprintf(f->out, "%s %s balance %s (held %s)\n", cur, record, or_empty(balance), or_empty(held));
    }
}

void bf_statement_opening(const bf_statement_fmt_t *f, const char *cur, int64_t t, const char *balance, const char *held) {
    balance_row(f, "opening", cur, t, balance, held);
    if (!f->csv) {
        fprintf(f->out, "  %-20s %-8s %-8s %-15s %12s %12s %12s %12s", "time", "xfer", "type", "code", "amount", "held",
                "balance", "held after");
        fputs(f->with_op ? "  op\n" : "\n", f->out);
    }
}

void bf_statement_closing(const bf_statement_fmt_t *f, const char *cur, int64_t t, const char *balance, const char *held) {
    balance_row(f, "closing", cur, t, balance, held);
}

void bf_statement_movement(const bf_statement_fmt_t *f, const char *cur, const bf_statement_line_t *l) {
    char ts[32];
    bf_statement_time(l->time, ts);
    if (f->csv) {
        const char *row[NCOLS] = {"movement", cur,       ts,        l->transfer,    l->type,
                                  l->code,    l->op,     l->amount, l->held,        l->before,
                                  l->after,   l->held_before, l->held_after};
        csv_row(f, row);
        return;
    }
    /* the table leaves out the before columns: each row's before is the row above's after */
    fprintf(f->out, "  %-20s %-8s %-8s %-15s %12s %12s %12s %12s", ts, or_empty(l->transfer), or_empty(l->type),
            or_empty(l->code), or_empty(l->amount), or_empty(l->held), or_empty(l->after), or_empty(l->held_after));
    if (f->with_op) fprintf(f->out, "  %s", or_empty(l->op));
    fputc('\n', f->out);
}

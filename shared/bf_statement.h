/* bf_statement.h: an account statement as text or CSV, the one rendering behind `blockfed-client
 * statement` (the lines of STATEMENT replies) and `blockfed-coordinator ledger statement` (the
 * ledger's own), so the two print the same columns the same way. The caller formats the amounts
 * (they are decimal strings already on the wire) and sanitises what came from elsewhere; this
 * module only lays the fields out.
 *
 * A statement is, per currency: bf_statement_opening, bf_statement_movement for every line,
 * bf_statement_closing; with CSV, bf_statement_csv_header once before the first currency. */
#ifndef BF_STATEMENT_H
#define BF_STATEMENT_H

#include <stdint.h>
#include <stdio.h>

/* Where and how: CSV (RFC 4180, a header line) or an aligned table; with_op adds the operation id
 * column (after code in CSV, last in the table), which only the operator's view has. */
typedef struct {
    FILE *out;
    int csv;
    int with_op;
} bf_statement_fmt_t;

/* One movement. NULL strings print as empty; op is read only with with_op. */
typedef struct {
    int64_t time; /* unix seconds, printed as YYYY-MM-DDTHH:MM:SSZ */
    const char *transfer, *type, *code, *op;
    const char *amount, *held, *before, *after, *held_before, *held_after;
} bf_statement_line_t;

/* The CSV header line: record,currency,time,transfer,type,code,[op,]amount,held,balance_before,
 * balance_after,held_before,held_after. Nothing for the table. */
void bf_statement_csv_header(const bf_statement_fmt_t *f);

/* The opening balance row of currency cur at time t (and, for the table, the column headings). */
void bf_statement_opening(const bf_statement_fmt_t *f, const char *cur, int64_t t, const char *balance,
                          const char *held);
void bf_statement_movement(const bf_statement_fmt_t *f, const char *cur, const bf_statement_line_t *l);
void bf_statement_closing(const bf_statement_fmt_t *f, const char *cur, int64_t t, const char *balance,
                          const char *held);

/* One CSV field (RFC 4180): quoted when it holds a comma, quote, CR or LF; then ',' or, if last, '\n'. */
void bf_statement_csv_field(FILE *out, const char *v, int last);

/* t as YYYY-MM-DDTHH:MM:SSZ (UTC), or its decimal digits if it is no representable time; buf. */
const char *bf_statement_time(int64_t t, char buf[32]);

/* YYYY-MM-DD (UTC) -> unix seconds at 00:00 that day; -1 if s is NULL or not a real date. */
int64_t bf_statement_parse_date(const char *s);

#endif

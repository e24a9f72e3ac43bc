/* client.h: what the blockfed-client subcommands share (argument parsing helpers, errors). */
#ifndef BF_CLIENT_H
#define BF_CLIENT_H

#include <stdint.h>

/* Prints "blockfed-client: MSG" to stderr; returns -1 (usage errors) / 1 (runtime failures). */
int bf_cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int bf_cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Strict numeric parsing: the whole string, in [lo, hi], else a message naming the flag. */
int bf_cli_int(const char *s, long long lo, long long hi, long long *v, const char *flag);
int bf_cli_double(const char *s, double lo, double hi, double *v, const char *flag);

int bf_cmd_train(int argc, char **argv);

#endif

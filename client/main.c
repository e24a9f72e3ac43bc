/* blockfed-client: the participant's program. `blockfed-client COMMAND [options]`. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bf_models.h"
#include "client.h"

static void vsay(const char *fmt, va_list ap) {
    fprintf(stderr, "blockfed-client: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
}

int bf_cli_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsay(fmt, ap);
    va_end(ap);
    return -1;
}

int bf_cli_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsay(fmt, ap);
    va_end(ap);
    return 1;
}

int bf_cli_int(const char *s, long long lo, long long hi, long long *v, const char *flag) {
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (!*s || *end || errno || x < lo || x > hi)
        return bf_cli_error("%s takes an integer in [%lld, %lld], got '%s'", flag, lo, hi, s);
    *v = x;
    return 0;
}

int bf_cli_double(const char *s, double lo, double hi, double *v, const char *flag) {
    char *end;
    errno = 0;
    double x = strtod(s, &end);
    if (!*s || *end || errno || !isfinite(x) || x < lo || x > hi)
        return bf_cli_error("%s takes a number in [%g, %g], got '%s'", flag, lo, hi, s);
    *v = x;
    return 0;
}

static const struct {
    const char *name, *what;
    int (*run)(int, char **);
} commands[] = {
    {"train", "train a model centrally on a dataset and write a model file", bf_cmd_train},
};

static int usage(FILE *f) {
    fprintf(f, "usage: blockfed-client COMMAND [options]   (COMMAND --help for its options)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].what);
    return f == stdout ? 0 : 2;
}

int main(int argc, char **argv) {
    bf_blas_init(argc, argv);
    if (argc < 2) return usage(stderr);
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) return usage(stdout);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "blockfed-client: unknown command '%s'\n", argv[1]);
    return usage(stderr);
}

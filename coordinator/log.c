/* log.c: the coordinator's log: one line per event on stdout, local time first, flushed at once
 * so a supervisor or a test reading the output sees each line as it happens. Every file of the
 * coordinator but the two actors logs through it. */
#include <stdarg.h>
#include <stdio.h>
#include <time.h>

#include "coord.h"

void coord_log(const char *fmt, ...) {
    char ts[32];
    time_t t = time(NULL);
    struct tm tm;
    strftime(ts, sizeof ts, "%Y-%m-%d %H:%M:%S", localtime_r(&t, &tm));
    printf("%s ", ts);
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
}

/* test.h: the few checks every BlockFed test uses. Each failed check prints where and why, and
 * the test's exit status is the number of failed checks (capped), so ctest sees any failure. */
#ifndef BF_TEST_H
#define BF_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int bf_test_failures = 0;

#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            bf_test_failures++;                                                       \
        }                                                                             \
    } while (0)

#define CHECK_MSG(cond, ...)                                                  \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                     \
            fprintf(stderr, "\n");                                            \
            bf_test_failures++;                                               \
        }                                                                     \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                                   \
    do {                                                                                        \
        double _a = (a), _b = (b);                                                              \
        if (!(fabs(_a - _b) <= (tol))) {                                                        \
            fprintf(stderr, "%s:%d: %s = %.9g, %s = %.9g, |diff| %.3g > %.3g\n", __FILE__, __LINE__, \
                    #a, _a, #b, _b, fabs(_a - _b), (double)(tol));                              \
            bf_test_failures++;                                                                 \
        }                                                                                       \
    } while (0)

/* Call last in main: prints a summary line and returns the exit status. */
static inline int bf_test_done(const char *name) {
    if (bf_test_failures)
        fprintf(stderr, "%s: %d check(s) failed\n", name, bf_test_failures);
    else
        printf("%s: all checks passed\n", name);
    return bf_test_failures > 100 ? 100 : bf_test_failures;
}

/* A scratch directory for files a test writes (ctest sets BF_TEST_TMP). */
static inline const char *bf_test_tmpdir(void) {
    const char *d = getenv("BF_TEST_TMP");
    return d && *d ? d : "/tmp";
}

#endif

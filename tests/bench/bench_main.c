/* blockfed-bench: `blockfed-bench SUBCOMMAND [--json] ...` prints measured figures (never pass/fail).
 * Each subcommand lives in its own file and is linked in when its library is built; the weak
 * references let this dispatcher build before every subcommand exists. */
#include <stdio.h>
#include <string.h>

#include "bf_models.h"

int bench_train_main(int argc, char **argv) __attribute__((weak));
int bench_ledger_main(int argc, char **argv) __attribute__((weak));
int bench_fed_main(int argc, char **argv) __attribute__((weak));
int bench_shapley_main(int argc, char **argv) __attribute__((weak));
int bench_shapley_scale_main(int argc, char **argv) __attribute__((weak));
int bench_predict_main(int argc, char **argv) __attribute__((weak));
int bench_web_main(int argc, char **argv) __attribute__((weak));
int bench_webauth_main(int argc, char **argv) __attribute__((weak));

static const struct {
    const char *name;
    int (*run)(int, char **);
    const char *what;
} commands[] = {
    {"train", bench_train_main, "ResNet8 training / inference throughput vs the OpenBLAS core"},
    {"ledger", bench_ledger_main, "paid-prediction settlements per second"},
    {"fed", bench_fed_main, "coordinator round latency, CPU and memory with N simulated clients"},
    {"shapley", bench_shapley_main, "Shapley estimator vs exact on real ResNet8 updates (n=10)"},
    {"shapley-scale", bench_shapley_scale_main, "first-order values for 50..1000 participants: cost and checks"},
    {"predict", bench_predict_main, "paid predictions over CURVE: latency, throughput, payout to 10 holders"},
    {"web", bench_web_main, "paid predictions over HTTPS beside ZeroMQ: latency, throughput, 10 holders"},
    {"webauth", bench_webauth_main, "web credentials: PBKDF2, failed logins, token resolves (cached, first)"},
};

static int usage(FILE *f) {
    fprintf(f, "usage: blockfed-bench SUBCOMMAND [--json] [options]\n\nsubcommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-13s %s%s\n", commands[i].name, commands[i].what,
                commands[i].run ? "" : " (not built)");
    return f == stdout ? 0 : 2;
}

int main(int argc, char **argv) {
    bf_blas_init(argc, argv);
    if (argc < 2) return usage(stderr);
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) return usage(stdout);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name) && commands[i].run)
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "blockfed-bench: unknown or unbuilt subcommand '%s'\n", argv[1]);
    return usage(stderr);
}

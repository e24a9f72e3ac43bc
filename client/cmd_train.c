/* cmd_train.c: `blockfed-client train`: centralized training of a model on a dataset, with a
 * progress bar, per-epoch test accuracy (text or JSON lines) and a model file at the end. Owns
 * the command's options and output; the training itself is libbflearn's (bf_trainer.h). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bf_trainer.h"
#include "client.h"

typedef struct {
    const char *dataset_name, *dataset_path, *arch, *out, *schedule, *augment;
    int epochs, batch, threads, limit, json, quiet, verbose;
    double lr, momentum, wd;
    int nesterov;
    uint64_t seed;
    char spec[4096]; /* --dataset's NAME=PATH, cut at '=': dataset_name and dataset_path point here */
} train_args_t;

static void train_usage(FILE *f) {
    fprintf(f,
            "usage: blockfed-client train --dataset NAME=PATH [options]\n"
            "\n"
            "Trains a model centrally on a dataset and writes a model file.\n"
            "\n"
            "  --dataset NAME=PATH   dataset directory (IDX, CIFAR-10 binary or image folders), e.g.\n"
            "                        fashion-mnist=/usr/share/datasets/fashion-mnist (required)\n"
            "  --model ARCH          resnet8 (default) or cnn\n"
            "  --epochs N            passes over the training set (default 5)\n"
            "  --batch B             images per step (default 64)\n"
            "  --lr LR               peak learning rate (default 0.1)\n"
            "  --schedule S          onecycle (default), cosine, constant, step:STEPS:GAMMA\n"
            "  --momentum M          SGD momentum (default 0.9; one-cycle cycles it 0.95..0.85)\n"
            "  --weight-decay WD     L2 weight decay (default 5e-4)\n"
            "  --nesterov            Nesterov momentum\n"
            "  --augment MODE        auto (default: on for 3-channel data), on, off:\n"
            "                        random crop with 4-pixel padding + horizontal flip\n"
            "  --seed N              initialization, shuffling and augmentation (default 1)\n"
            "  --threads T           worker threads (default: all cores)\n"
            "  --limit N             train on the first N images only (quick runs)\n"
            "  --out FILE            model file to write (default model.bfm)\n"
            "  --json                one JSON object per line instead of text\n"
            "  --quiet               no progress bar\n"
            "  --verbose             also print the OpenBLAS core and setup\n"
            "  --help                this text\n"
            "\n"
            "exit status: 0 trained and saved, 1 runtime error (data, I/O, divergence), 2 usage error\n");
}

static bf_cli_args_t parse_train(int argc, char **argv, train_args_t *a) {
    static const struct option opts[] = {
        {"dataset", required_argument, 0, 'd'},  {"model", required_argument, 0, 'm'},
        {"epochs", required_argument, 0, 'e'},   {"batch", required_argument, 0, 'b'},
        {"lr", required_argument, 0, 'l'},       {"schedule", required_argument, 0, 'S'},
        {"momentum", required_argument, 0, 'M'}, {"weight-decay", required_argument, 0, 'w'},
        {"nesterov", no_argument, 0, 'n'},       {"augment", required_argument, 0, 'a'},
        {"seed", required_argument, 0, 's'},     {"threads", required_argument, 0, 't'},
        {"limit", required_argument, 0, 'L'},    {"out", required_argument, 0, 'o'},
        {"json", no_argument, 0, 'j'},           {"quiet", no_argument, 0, 'q'},
        {"verbose", no_argument, 0, 'v'},        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    *a = (train_args_t){.arch = "resnet8", .out = "model.bfm", .schedule = "onecycle", .augment = "auto",
                        .epochs = 5, .batch = 64, .lr = 0.1, .momentum = 0.9, .wd = 5e-4, .seed = 1,
                        .threads = (int)sysconf(_SC_NPROCESSORS_ONLN)};
    int c;
    long long v;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'd': {
            if (strlen(optarg) >= sizeof a->spec) return bf_cli_error("--dataset is too long");
            strcpy(a->spec, optarg);
            char *eq = strchr(a->spec, '=');
            if (!eq || eq == a->spec || !eq[1]) return bf_cli_error("--dataset takes NAME=PATH, got '%s'", optarg);
            *eq = 0;
            a->dataset_name = a->spec;
            a->dataset_path = eq + 1;
            break;
        }
        case 'm': a->arch = optarg; break;
        case 'e': if (bf_cli_int(optarg, 1, 10000, &v, "--epochs")) return CLIENT_ARGS_BAD; a->epochs = (int)v; break;
        case 'b': if (bf_cli_int(optarg, 1, 4096, &v, "--batch")) return CLIENT_ARGS_BAD; a->batch = (int)v; break;
        case 'l': if (bf_cli_double(optarg, 1e-8, 100, &a->lr, "--lr")) return CLIENT_ARGS_BAD; break;
        case 'S': a->schedule = optarg; break;
        case 'M': if (bf_cli_double(optarg, 0, 0.999, &a->momentum, "--momentum")) return CLIENT_ARGS_BAD; break;
        case 'w': if (bf_cli_double(optarg, 0, 1, &a->wd, "--weight-decay")) return CLIENT_ARGS_BAD; break;
        case 'n': a->nesterov = 1; break;
        case 'a': a->augment = optarg; break;
        case 's':
            if (bf_cli_int(optarg, 0, INT64_MAX, &v, "--seed")) return CLIENT_ARGS_BAD;
            a->seed = (uint64_t)v;
            break;
        case 't': if (bf_cli_int(optarg, 1, 256, &v, "--threads")) return CLIENT_ARGS_BAD; a->threads = (int)v; break;
        case 'L': if (bf_cli_int(optarg, 1, INT32_MAX, &v, "--limit")) return CLIENT_ARGS_BAD; a->limit = (int)v; break;
        case 'o': a->out = optarg; break;
        case 'j': a->json = 1; break;
        case 'q': a->quiet = 1; break;
        case 'v': a->verbose = 1; break;
        case 'h': train_usage(stdout); return CLIENT_ARGS_HELP;
        default: return CLIENT_ARGS_BAD;
        }
    }
    if (optind < argc) return bf_cli_error("unexpected argument '%s'", argv[optind]);
    if (!a->dataset_path) return bf_cli_error("--dataset NAME=PATH is required");
    if (strcmp(a->augment, "auto") && strcmp(a->augment, "on") && strcmp(a->augment, "off"))
        return bf_cli_error("--augment takes auto, on or off");
    return CLIENT_ARGS_OK;
}

typedef struct {
    int tty, json;
    double last;
} progress_state_t;

static void fmt_time(double s, char *buf, size_t n) {
    int t = (int)(s + 0.5);
    snprintf(buf, n, "%d:%02d", t / 60, t % 60);
}

/* A one-line progress bar on stderr, redrawn at most 10 times a second (only on a terminal). */
static void show_progress(const bf_progress_t *p, void *user) {
    progress_state_t *st = user;
    double now = bf_now();
    if (!st->tty || (now - st->last < 0.1 && p->step != p->steps)) return;
    st->last = now;
    int width = 28, fill = (int)(width * p->step / p->steps);
    char bar[64], eta[16];
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '=' : i == fill ? '>' : ' ';
    bar[width] = 0;
    fmt_time(p->eta, eta, sizeof eta);
    fprintf(stderr, "\repoch %d/%d [%s] %lld/%lld loss %.4f acc %5.1f%% %5.0f img/s ETA %s ", p->epoch, p->epochs, bar,
            (long long)p->step, (long long)p->steps, p->loss, 100 * p->accuracy, p->img_per_s, eta);
    if (p->step == p->steps) fprintf(stderr, "\r%*s\r", 110, "");
}

static bf_cli_outcome_t run_training(const train_args_t *a, bf_dataset_t *train, bf_dataset_t *test) {
    bf_err_t err;
    bf_model_meta_t meta;
    memset(&meta, 0, sizeof meta);
    meta.channels = train->c;
    meta.classes = train->classes;
    for (int i = 0; i < train->classes; i++) snprintf(meta.class_names[i], sizeof meta.class_names[i], "%s", train->class_names[i]);
    bf_dataset_channel_stats(train, meta.mean, meta.std);
    for (int c = 0; c < train->c; c++)
        if (!(meta.std[c] > 0)) meta.std[c] = 1; /* a constant channel: nothing to scale */
    bf_net_t *net = bf_net_new(a->arch, train->c, train->h, train->w, train->classes, a->batch, a->threads, &err);
    if (!net) return bf_cli_fail("%s", err.msg);
    bf_net_init(net, a->seed);
    int augment = !strcmp(a->augment, "on") || (!strcmp(a->augment, "auto") && train->c == 3);
    bf_train_opts_t opts = {.batch = a->batch, .lr = a->lr, .schedule = a->schedule, .momentum = a->momentum,
                            .weight_decay = a->wd, .nesterov = a->nesterov, .augment = augment, .seed = a->seed};
    bf_trainer_t *tr = bf_trainer_new(net, &opts, train, meta.mean, meta.std, a->epochs, &err);
    if (!tr) {
        bf_net_destroy(&net);
        return bf_cli_fail("%s", err.msg);
    }
    if (a->verbose && !a->json)
        printf("model %s (%zu parameters), %d threads, engine path %s, OpenBLAS core %s, augmentation %s\n", a->arch,
               bf_net_num_params(net), a->threads, bf_engine_isa_name(), bf_blas_corename(), augment ? "on" : "off");
    progress_state_t st = {.tty = !a->quiet && !a->json && isatty(2)};
    double test_loss = 0, test_acc = 0, total = 0;
    bf_cli_outcome_t rc = CLIENT_OK;
    for (int e = 0; e < a->epochs && !rc; e++) {
        bf_progress_t p;
        if (bf_trainer_epoch(tr, show_progress, &st, &p)) {
            rc = bf_cli_fail("training diverged in epoch %d (loss is not finite); try a lower --lr", e + 1);
            break;
        }
        total += p.elapsed;
        bf_evaluate(net, test, meta.mean, meta.std, 0, &test_loss, &test_acc);
        if (a->json)
            printf("{\"event\":\"epoch\",\"epoch\":%d,\"epochs\":%d,\"train_loss\":%.6f,\"train_acc\":%.6f,"
                   "\"test_loss\":%.6f,\"test_acc\":%.6f,\"img_per_s\":%.1f,\"seconds\":%.2f}\n",
                   p.epoch, p.epochs, p.loss, p.accuracy, test_loss, test_acc, p.img_per_s, p.elapsed);
        else
            printf("epoch %d/%d  train loss %.4f acc %.2f%%  test loss %.4f acc %.2f%%  %.0f img/s  %.1f s\n", p.epoch,
                   p.epochs, p.loss, 100 * p.accuracy, test_loss, 100 * test_acc, p.img_per_s, p.elapsed);
        fflush(stdout);
    }
    if (!rc && bf_model_save(net, &meta, a->out, &err)) rc = bf_cli_fail("%s", err.msg);
    if (!rc) {
        char hex[65] = "?";
        bf_model_digest(net, &meta, hex, &err);
        if (a->json)
            printf("{\"event\":\"done\",\"out\":\"%s\",\"sha256\":\"%s\",\"test_acc\":%.6f,\"train_seconds\":%.2f}\n",
                   a->out, hex, test_acc, total);
        else
            printf("test accuracy %.2f%% after %d epochs (%.1f s training); wrote %s (sha256 %s)\n", 100 * test_acc,
                   a->epochs, total, a->out, hex);
    }
    bf_trainer_destroy(&tr);
    bf_net_destroy(&net);
    return rc;
}

bf_cli_outcome_t bf_cmd_train(int argc, char **argv) {
    train_args_t a;
    bf_cli_args_t args = parse_train(argc, argv, &a);
    if (args == CLIENT_ARGS_HELP) return CLIENT_OK;
    if (args) {
        fprintf(stderr, "try 'blockfed-client train --help'\n");
        return CLIENT_USAGE;
    }
    bf_err_t err;
    bf_dataset_t train, test;
    if (bf_dataset_load(a.dataset_path, "train", 0, 0, 0, &train, &err))
        return bf_cli_fail("dataset %s: %s", a.dataset_name, err.msg);
    if (bf_dataset_load(a.dataset_path, "test", train.c, train.h, train.w, &test, &err)) {
        bf_dataset_free(&train);
        return bf_cli_fail("dataset %s: %s", a.dataset_name, err.msg);
    }
    if (a.limit && a.limit < train.n) train.n = a.limit; /* the buffers stay; only the count shrinks */
    if (!a.json)
        printf("dataset %s: %d training and %d test images of %dx%dx%d, %d classes\n", a.dataset_name, train.n, test.n,
               train.c, train.h, train.w, train.classes);
    bf_cli_outcome_t rc = run_training(&a, &train, &test);
    bf_dataset_free(&train);
    bf_dataset_free(&test);
    return rc;
}

/* test_cli_train.c: `blockfed-client train` end to end on a small generated IDX dataset: it learns
 * (test accuracy >= 90% on a 4-class pattern task), writes a model file that loads and predicts like
 * the reported accuracy, prints one JSON line per epoch, and fails cleanly on bad input. */
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bf_datasets.h"
#include "bf_models.h"
#include "fed_common.h"

static int run(const char *client, const char *const *args, const char *out_path) {
    return bf_spawn(client, args, out_path, 0);
}

static char *slurp(const char *path) { return bf_slurp(path); }

int main(int argc, char **argv) {
    if (argc < 2) return fprintf(stderr, "usage: test_cli_train CLIENT\n"), 2;
    const char *client = argv[1];
    char dir[512], spec[600], model[600], out[600];
    snprintf(dir, sizeof dir, "%s/cli-train-data", bf_test_tmpdir());
    mkdir(dir, 0755);
    fed_write_split(dir, "train", 1024, 1);
    fed_write_split(dir, "t10k", 256, 2);
    snprintf(spec, sizeof spec, "tiny=%s", dir);
    snprintf(model, sizeof model, "%s/cli-train.bfm", bf_test_tmpdir());
    snprintf(out, sizeof out, "%s/cli-train.out", bf_test_tmpdir());
    unlink(model);

    const char *ok_args[] = {"train", "--dataset", spec, "--model", "cnn", "--epochs", "2", "--batch", "32",
                             "--lr", "0.05", "--out", model, "--json", NULL};
    int rc = run(client, ok_args, out);
    char *text = slurp(out);
    CHECK_MSG(rc == 0, "exit status %d, output:\n%s", rc, text);
    CHECK(strstr(text, "\"event\":\"epoch\",\"epoch\":1,") != NULL);
    CHECK(strstr(text, "\"event\":\"epoch\",\"epoch\":2,") != NULL);
    const char *done = strstr(text, "\"event\":\"done\"");
    CHECK(done != NULL);
    double acc = 0;
    const char *a = done ? strstr(done, "\"test_acc\":") : NULL;
    if (a) acc = atof(a + 11);
    printf("reported test accuracy %.4f\n", acc);
    CHECK_MSG(acc >= 0.9, "test accuracy %.3f < 0.9", acc);

    /* the model file loads and reproduces the reported accuracy on the test split */
    bf_err_t err;
    bf_model_meta_t meta;
    bf_net_t *net = bf_model_load(model, 64, 1, &meta, &err);
    CHECK_MSG(net != NULL, "%s", err.msg);
    bf_dataset_t test;
    if (net && bf_dataset_load(dir, "test", 1, 16, 16, &test, &err) == 0) {
        float x[64 * 256], logits[640];
        int32_t idx[64], y[64], correct = 0;
        for (int s = 0; s < test.n; s += 64) {
            for (int i = 0; i < 64; i++) idx[i] = s + i;
            bf_batch_fill(&test, idx, 64, meta.mean, meta.std, NULL, x, y);
            bf_net_predict(net, x, 64, logits);
            for (int i = 0; i < 64; i++) {
                int best = 0;
                for (int k = 1; k < 10; k++) best = logits[i * 10 + k] > logits[i * 10 + best] ? k : best;
                correct += best == y[i];
            }
        }
        CHECK_NEAR((double)correct / test.n, acc, 1e-6);
        bf_dataset_free(&test);
    }
    bf_net_destroy(&net);

    /* failures: usage errors exit 2, runtime errors exit 1, and nothing is written */
    unlink(model);
    const char *no_dataset[] = {"train", "--out", model, NULL};
    CHECK(run(client, no_dataset, out) == 2);
    const char *bad_epochs[] = {"train", "--dataset", spec, "--epochs", "0", "--out", model, NULL};
    CHECK(run(client, bad_epochs, out) == 2);
    const char *bad_flag[] = {"train", "--dataset", spec, "--frobnicate", NULL};
    CHECK(run(client, bad_flag, out) == 2);
    const char *bad_model[] = {"train", "--dataset", spec, "--model", "vgg", "--out", model, NULL};
    CHECK(run(client, bad_model, out) == 1);
    const char *missing[] = {"train", "--dataset", "x=/nonexistent/dir", "--out", model, NULL};
    CHECK(run(client, missing, out) == 1);
    struct stat st;
    CHECK(stat(model, &st) != 0);
    const char *help[] = {"train", "--help", NULL};
    CHECK(run(client, help, out) == 0 && strstr(slurp(out), "--dataset NAME=PATH"));
    return bf_test_done("test_cli_train");
}

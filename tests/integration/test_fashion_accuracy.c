/* test_fashion_accuracy.c (label `slow`, ~5 minutes on 2 cores): the main job's target. ResNet8
 * trained by `blockfed-client train` on the real Fashion-MNIST for 5 epochs with the default
 * recipe (SGD momentum 0.9, weight decay 5e-4, one-cycle peak lr 0.1, batch 64, seed 1) must reach
 * >= 92% test accuracy (PyTorch 1.13 reached 92.4% with the same recipe). */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bf_spawn.h"
#include "test.h"

#define FASHION "/usr/share/datasets/fashion-mnist"

int main(int argc, char **argv) {
    if (argc < 2) return fprintf(stderr, "usage: test_fashion_accuracy CLIENT\n"), 2;
    struct stat st;
    if (stat(FASHION "/train-images-idx3-ubyte.gz", &st)) {
        /* a missing dataset is a failure, not a silent pass */
        fprintf(stderr, "FAIL: %s is not installed (scripts/install-deps.sh installs it)\n", FASHION);
        return 1;
    }
    char spec[] = "fashion-mnist=" FASHION, model[512], out[512];
    snprintf(model, sizeof model, "%s/fashion.bfm", bf_test_tmpdir());
    snprintf(out, sizeof out, "%s/fashion.out", bf_test_tmpdir());
    const char *args[] = {"train", "--dataset", spec, "--model", "resnet8", "--epochs", "5", "--out", model, "--json", NULL};
    int rc = bf_spawn(argv[1], args, out, 1);
    char *text = bf_slurp(out);
    printf("%s", text);
    CHECK_MSG(rc == 0, "exit status %d", rc);
    const char *done = strstr(text, "\"event\":\"done\"");
    const char *a = done ? strstr(done, "\"test_acc\":") : NULL;
    double acc = a ? atof(a + 11) : 0;
    CHECK_MSG(acc >= 0.92, "test accuracy %.4f < 0.92", acc);
    return bf_test_done("test_fashion_accuracy");
}

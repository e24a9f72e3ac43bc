/* test_datasets_fashion.c (integration): the real Fashion-MNIST, when installed, loads through
 * bf_dataset_load with the published shape, class names and a balanced label histogram (6000
 * per class in train, 1000 in test); the load time is printed (a figure, not a check). A missing
 * data set is a failure. */
#include <sys/stat.h>

#include "bf_datasets.h"
#include "test.h"

static void check_split(const char *dir, const char *split, int32_t n, int32_t per_class) {
    bf_dataset_t d;
    bf_err_t e = {{0}};
    double t0 = bf_now();
    int rc = bf_dataset_load(dir, split, 0, 0, 0, &d, &e);
    double dt = bf_now() - t0;
    CHECK_MSG(rc == 0, "%s", e.msg);
    if (rc) return;
    printf("%s: %d images of %dx%dx%d loaded in %.3f s\n", split, (int)d.n, (int)d.c, (int)d.h, (int)d.w, dt);
    CHECK(d.n == n && d.c == 1 && d.h == 28 && d.w == 28 && d.classes == 10);
    CHECK(strcmp(d.class_names[0], "T-shirt/top") == 0 && strcmp(d.class_names[9], "Ankle boot") == 0);
    int32_t hist[10] = {0};
    for (int32_t i = 0; i < d.n; i++) hist[d.labels[i] < 10 ? d.labels[i] : 0]++;
    for (int k = 0; k < 10; k++) CHECK_MSG(hist[k] == per_class, "class %d has %d images", k, (int)hist[k]);
    float mean, std;
    bf_dataset_channel_stats(&d, &mean, &std);
    printf("%s: mean %.4f std %.4f\n", split, mean, std);
    /* Published Fashion-MNIST train statistics: 0.2860 / 0.3530. */
    if (n == 60000) CHECK(fabs(mean - 0.2860) < 1e-3 && fabs(std - 0.3530) < 1e-3);
    bf_dataset_free(&d);
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "/usr/share/datasets/fashion-mnist";
    struct stat st;
    if (stat(dir, &st) != 0) {
        fprintf(stderr, "FAIL: %s is not present (scripts/install-deps.sh installs it)\n", dir);
        return 1;
    }
    check_split(dir, "train", 60000, 6000);
    check_split(dir, "test", 10000, 1000);
    return bf_test_done("test_datasets_fashion");
}

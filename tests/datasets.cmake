# Dataset readers, image decoding and batches (issue 2). Included by tests/CMakeLists.txt.
bf_test(test_datasets SOURCES unit/test_datasets.c LIBS bfdatasets LABELS unit)
bf_test(test_datasets_image SOURCES unit/test_image.c LIBS bfdatasets LABELS unit)
bf_test(test_datasets_fashion SOURCES unit/test_datasets_fashion.c LIBS bfdatasets LABELS integration
        ARGS /usr/share/datasets/fashion-mnist)

# The training engine's tests.
bf_test(test_layers SOURCES unit/test_layers.c LIBS bfmodels LABELS unit)
bf_test(test_net SOURCES unit/test_net.c LIBS bfmodels LABELS unit)
bf_test(test_modelfile SOURCES unit/test_modelfile.c LIBS bfmodels LABELS unit)

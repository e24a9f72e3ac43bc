# The training engine's tests.
bf_test(test_layers SOURCES unit/test_layers.c LIBS bfmodels LABELS unit)
bf_test(test_net SOURCES unit/test_net.c LIBS bfmodels LABELS unit)
bf_test(test_modelfile SOURCES unit/test_modelfile.c LIBS bfmodels LABELS unit)
bf_test(test_torch_ref SOURCES unit/test_torch_ref.c LIBS bfmodels LABELS unit
        ARGS ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/resnet8_torch.msgpack)
bf_test(test_cli_train SOURCES integration/test_cli_train.c LIBS bfmodels bfdatasets LABELS integration
        ARGS $<TARGET_FILE:blockfed-client>)
add_dependencies(test_cli_train blockfed-client)
bf_test(test_blas SOURCES unit/test_blas.c LIBS bfmodels LABELS unit)
bf_test(test_fashion_accuracy SOURCES integration/test_fashion_accuracy.c LIBS bfshared LABELS slow
        ARGS $<TARGET_FILE:blockfed-client>)
add_dependencies(test_fashion_accuracy blockfed-client)
set_tests_properties(test_fashion_accuracy PROPERTIES TIMEOUT 1800)
bf_test(test_blocks SOURCES unit/test_blocks.c LIBS bfdatasets LABELS unit)
bf_test(test_aggregate SOURCES unit/test_aggregate.c LIBS bfmodels LABELS unit)
bf_test(test_shapley SOURCES unit/test_shapley.c LIBS bfshared LABELS unit)
bf_test(test_shapley_surrogate SOURCES unit/test_shapley_surrogate.c LIBS bfshared LABELS unit)

# Federation: a real coordinator process on loopback, CURVE on.
bf_test(test_coordinator SOURCES integration/test_coordinator.c LIBS bfclient bfshared LABELS integration
        ARGS $<TARGET_FILE:blockfed-coordinator>)
add_dependencies(test_coordinator blockfed-coordinator)
set_tests_properties(test_coordinator PROPERTIES TIMEOUT 300)
bf_test(test_federation_failures SOURCES integration/test_federation_failures.c LIBS bfclient bfshared LABELS integration
        ARGS $<TARGET_FILE:blockfed-coordinator>)
add_dependencies(test_federation_failures blockfed-coordinator)
set_tests_properties(test_federation_failures PROPERTIES TIMEOUT 300)
bf_test(test_task_deadline SOURCES integration/test_task_deadline.c LIBS bfclient bfshared LABELS integration
        ARGS $<TARGET_FILE:blockfed-coordinator>)
add_dependencies(test_task_deadline blockfed-coordinator)
bf_test(test_federation_processes SOURCES integration/test_federation_processes.c LIBS bfclient bfshared LABELS integration
        ARGS $<TARGET_FILE:blockfed-coordinator> $<TARGET_FILE:blockfed-client>)
add_dependencies(test_federation_processes blockfed-coordinator blockfed-client)
set_tests_properties(test_federation_processes PROPERTIES TIMEOUT 400)
bf_test(test_fedavgm_resume SOURCES integration/test_fedavgm_resume.c LIBS bfclient bfshared LABELS integration
        ARGS $<TARGET_FILE:blockfed-coordinator>)
add_dependencies(test_fedavgm_resume blockfed-coordinator)
bf_test(test_shapley_federation SOURCES integration/test_shapley_federation.c LIBS bfclient bfshared LABELS integration
        ARGS $<TARGET_FILE:blockfed-coordinator>)
add_dependencies(test_shapley_federation blockfed-coordinator)
add_test(NAME test_shapley_federation_surrogate COMMAND test_shapley_federation $<TARGET_FILE:blockfed-coordinator> surrogate)
set_tests_properties(test_shapley_federation_surrogate PROPERTIES LABELS integration
                     ENVIRONMENT "BF_TEST_TMP=${CMAKE_CURRENT_BINARY_DIR}/tmp")
bf_test(test_predict SOURCES integration/test_predict.c LIBS bfclient bfshared LABELS integration
        ARGS $<TARGET_FILE:blockfed-coordinator> $<TARGET_FILE:blockfed-client> $<TARGET_FILE:blockfed-predict>)
add_dependencies(test_predict blockfed-coordinator blockfed-client blockfed-predict)
set_tests_properties(test_predict PROPERTIES TIMEOUT 300)
bf_test(test_poisoned_federation SOURCES integration/test_poisoned_federation.c LIBS bfclient bfshared LABELS integration
        ARGS $<TARGET_FILE:blockfed-coordinator>)
add_dependencies(test_poisoned_federation blockfed-coordinator)
add_test(NAME test_poisoned_federation_surrogate COMMAND test_poisoned_federation $<TARGET_FILE:blockfed-coordinator> surrogate)
set_tests_properties(test_poisoned_federation_surrogate PROPERTIES LABELS integration
                     ENVIRONMENT "BF_TEST_TMP=${CMAKE_CURRENT_BINARY_DIR}/tmp")

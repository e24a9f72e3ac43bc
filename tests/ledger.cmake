# Ledger tests (issue 3). Default runs stay short (CI also runs `unit` under ASan); the `slow`
# label repeats the property, crash and concurrency tests at a larger scale.
bf_test(test_ledger SOURCES unit/test_ledger.c LIBS bfshared LABELS unit)
bf_test(test_ledger_predict SOURCES unit/test_ledger_predict.c LIBS bfshared LABELS unit)
bf_test(test_ledger_property SOURCES unit/test_ledger_property.c LIBS bfshared LABELS unit)
bf_test(test_ledger_property_slow SOURCES unit/test_ledger_property.c LIBS bfshared LABELS slow
        ARGS 1000000 10000 77)
bf_test(test_ledger_crash SOURCES unit/test_ledger_crash.c LIBS bfshared LABELS unit)
bf_test(test_ledger_crash_slow SOURCES unit/test_ledger_crash.c LIBS bfshared LABELS slow ARGS 2000 99)
bf_test(test_ledger_concurrency SOURCES unit/test_ledger_concurrency.c LIBS bfshared LABELS unit)
bf_test(test_ledger_concurrency_slow SOURCES unit/test_ledger_concurrency.c LIBS bfshared LABELS slow ARGS 20000)
if(TARGET blockfed-coordinator)
  bf_test(test_ledger_cli SOURCES unit/test_ledger_cli.c LIBS bfshared LABELS integration
          ARGS $<TARGET_FILE:blockfed-coordinator>)
  add_dependencies(test_ledger_cli blockfed-coordinator)
endif()

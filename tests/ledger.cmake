# Ledger tests (issue 3). Default runs stay short (CI also runs `unit` under ASan); the `slow`
# label repeats the property, crash and concurrency tests at a larger scale.
bf_test(test_ledger SOURCES unit/test_ledger.c LIBS bfshared LABELS unit)

# Wire protocol tests (issue 4): round trips, every rejection path, CURVE over loopback TCP.
bf_test(test_proto SOURCES unit/test_proto.c LIBS bfshared LABELS unit)

# Participant side (issue 4): profile, checks, reply printer, block cache, connection (real
# CURVE sockets against an in-test ROUTER), and blockfed-client against the real coordinator.
bf_test(test_client_profile SOURCES unit/test_client_profile.c LIBS bfclient LABELS unit)
bf_test(test_client_render SOURCES unit/test_client_render.c LIBS bfclient LABELS unit)
bf_test(test_client_blockcache SOURCES unit/test_client_blockcache.c LIBS bfclient LABELS unit)
bf_test(test_client_conn SOURCES unit/test_client_conn.c LIBS bfclient LABELS unit)
bf_test(test_predictor SOURCES unit/test_predictor.c LIBS bfclient LABELS unit)
if(TARGET blockfed-coordinator)
  bf_test(test_client_cli SOURCES unit/test_client_cli.c LIBS bfclient LABELS integration
          ARGS $<TARGET_FILE:blockfed-client> $<TARGET_FILE:blockfed-coordinator>)
  add_dependencies(test_client_cli blockfed-client blockfed-coordinator)
endif()

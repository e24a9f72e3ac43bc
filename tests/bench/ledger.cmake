# blockfed-bench ledger: paid-prediction settlements per second (issue 3).
target_sources(blockfed-bench PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/bench_ledger.c)
target_link_libraries(blockfed-bench PRIVATE bfshared)

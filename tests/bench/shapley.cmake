target_sources(blockfed-bench PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/bench_shapley.c)
target_link_libraries(blockfed-bench PRIVATE bfclient)

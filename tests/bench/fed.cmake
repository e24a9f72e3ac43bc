target_sources(blockfed-bench PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/bench_fed.c)
target_link_libraries(blockfed-bench PRIVATE bfmodels bfshared)
add_dependencies(blockfed-bench blockfed-coordinator)

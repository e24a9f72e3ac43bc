# blockfed-bench predict: paid predictions against a real coordinator process.
target_sources(blockfed-bench PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/bench_predict.c)
target_include_directories(blockfed-bench PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/..)
target_link_libraries(blockfed-bench PRIVATE bfclient bfshared)

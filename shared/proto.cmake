# The wire protocol (issue 4): message schemas, encoder and decoder over czmq frames.
target_sources(bfshared PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/proto.c)
target_link_libraries(bfshared PUBLIC PkgConfig::CZMQ PkgConfig::ZMQ)

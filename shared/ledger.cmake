# The ledger (issue 3): accounts, transfers, holds, shares and payouts over SQLite.
target_sources(bfshared PRIVATE
  ${CMAKE_CURRENT_SOURCE_DIR}/ledger_money.c
  ${CMAKE_CURRENT_SOURCE_DIR}/ledger_db.c
  ${CMAKE_CURRENT_SOURCE_DIR}/ledger_ops.c
  ${CMAKE_CURRENT_SOURCE_DIR}/ledger_query.c
  ${CMAKE_CURRENT_SOURCE_DIR}/ledger_verify.c)
target_link_libraries(bfshared PUBLIC PkgConfig::SQLITE)

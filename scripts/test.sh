#!/usr/bin/env bash
# Installs dependencies, builds with -Werror, and runs every test except the `slow` label.
# Usage: scripts/test.sh [extra ctest args]   (e.g. -L slow to run the long ones)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DBLOCKFED_WERROR=ON
cmake --build build -j"$(nproc)"
if [ $# -gt 0 ]; then
  ctest --test-dir build --output-on-failure "$@"
else
  ctest --test-dir build --output-on-failure -LE slow
fi

#!/usr/bin/env bash
# The main job: install dependencies, build, and run a whole federation on this machine
# (scripts/federation.sh): a coordinator serving Fashion-MNIST, three trainers with unequal data,
# a shareholding ResNet8 task, FedAvg over 8 rounds, Shapley-valued; per-round accuracy, then the
# final accuracy, the shares, paid predictions whose fees go to the shareholders, and the ledger. About 6 minutes on 2 cores. `scripts/main.sh ROUNDS` changes the number of rounds.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc)" --target blockfed-coordinator blockfed-client blockfed-predict
exec scripts/federation.sh "$@"

#!/usr/bin/env bash
# The main job: install dependencies, build, and run a whole federation on this machine
# (scripts/federation.sh): a coordinator serving Fashion-MNIST, three trainers with unequal data,
# a shareholding ResNet8 task, FedAvg over 8 rounds, Shapley-valued; per-round accuracy, then the
# final accuracy, the shares, paid predictions whose fees go to the shareholders, and the ledger. About 6 minutes on 2 cores. `scripts/main.sh ROUNDS` changes the number of rounds.
# While it runs, the web dashboard is at the https:// address it prints (with the certificate's
# SHA-256 fingerprint).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc)" --target blockfed-coordinator blockfed-client blockfed-predict
# The dashboard's address while the federation runs: federation.sh shows only the round lines of
# the coordinator's log, so the line where `run` names the dashboard (with its certificate's
# SHA-256 fingerprint, which `init` printed too) is picked out here.
started=$(date +%s)
(
  for _ in $(seq 1 120); do
    log=$(ls -td /tmp/blockfed-federation-*/coordinator.log 2>/dev/null | head -n 1 || true)
    if [ -n "$log" ] && [ "$(stat -c %Y "$log")" -ge "$started" ] && grep -q 'dashboard: ' "$log"; then
      echo "== $(grep -m 1 -o 'dashboard: .*' "$log") (while the federation runs; register an account on its login page)"
      exit 0
    fi
    sleep 1
  done
) &
watcher=$!
status=0
scripts/federation.sh "$@" || status=$?
kill "$watcher" 2>/dev/null || true
exit "$status"

#!/usr/bin/env bash
# The main job: install dependencies, build, and run a whole federation on this machine
# (scripts/federation.sh): a coordinator serving Fashion-MNIST, three trainers with unequal data,
# a shareholding ResNet8 task, FedAvg over 8 rounds, Shapley-valued; per-round accuracy, then the
# final accuracy, the shares, paid predictions whose fees go to the shareholders, and the ledger. About 6 minutes on 2 cores. `scripts/main.sh ROUNDS` changes the number of rounds.
# While it runs, the web dashboard is at the https:// address it prints (with the certificate's fingerprint).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc)" --target blockfed-coordinator blockfed-client blockfed-predict
# The dashboard's address while the federation runs: federation.sh serves HTTPS on BLOCKFED_PORT+1
# with the certificate `init` writes into its work directory; once that file appears, print the
# address and the certificate's SHA-256 fingerprint (to compare with what the browser shows).
PORT=${BLOCKFED_PORT:-27700}
started=$(date +%s)
(
  for _ in $(seq 1 120); do
    crt=$(ls -td /tmp/blockfed-federation-*/coordinator/https.crt 2>/dev/null | head -n 1 || true)
    if [ -n "$crt" ] && [ "$(stat -c %Y "$crt")" -ge "$started" ]; then
      echo "== dashboard: https://localhost:$((PORT + 1))/ (while the federation runs; register an account on its login page)"
      echo "== its certificate ($crt): $(openssl x509 -in "$crt" -noout -fingerprint -sha256)"
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

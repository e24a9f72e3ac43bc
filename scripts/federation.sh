#!/usr/bin/env bash
# The main job: a whole federation on this machine. A coordinator (CURVE on, loopback) serves
# Fashion-MNIST; three trainers with unequal data (20, 15 and 10 blocks of 1,000 images, the extra
# blocks bought with coins) train ResNet8 with FedAvg; per-round accuracy is shown as it happens,
# then the final accuracy, the result hash and the ledger state.
# Usage: scripts/federation.sh [ROUNDS]   (needs a build: scripts/main.sh builds first)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-8}
COORD=build/coordinator/blockfed-coordinator
CLIENT=build/client/blockfed-client
PORT=${BLOCKFED_PORT:-27700}
EP=tcp://127.0.0.1:$PORT
WORK=$(mktemp -d /tmp/blockfed-federation-XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

echo "== work directory: $WORK"
$COORD init --home "$WORK/coordinator" | tee "$WORK/init.txt"
KEY=$(sed -n 's/^server public key: //p' "$WORK/init.txt")
$COORD run --home "$WORK/coordinator" --bind "$EP" --dataset fashion-mnist=/usr/share/datasets/fashion-mnist \
  --threads 2 --blocks-per-join 10 > "$WORK/coordinator.log" 2>&1 &
pids+=($!)
# show the coordinator's round summaries as they come
tail -n +1 -f "$WORK/coordinator.log" | grep --line-buffered -E 'round [0-9]+/|completed|started' &
pids+=($!)
sleep 2

for u in alice bob carol; do
  $CLIENT --home "$WORK/$u" register "$u" --coordinator "$EP" --server-key "$KEY" > /dev/null
done
$CLIENT --home "$WORK/alice" recharge 100.00 > /dev/null
$CLIENT --home "$WORK/alice" task create --id fmnist --name "Fashion-MNIST ResNet8" --model resnet8 \
  --dataset fashion-mnist --rounds "$ROUNDS" --mode reward --pool 50.00 --min-clients 3 --local-epochs 1 \
  --batch 64 --lr 0.1 --round-timeout 600 > /dev/null
# unequal data: everyone gets 10 blocks on joining; alice buys 10 more, bob 5 (10 coins each)
$CLIENT --home "$WORK/alice" blocks buy fmnist 10 > /dev/null
$CLIENT --home "$WORK/bob" blocks buy fmnist 5 > /dev/null
echo "== training $ROUNDS rounds: alice 20,000 images, bob 15,000, carol 10,000"
for u in alice bob carol; do
  $CLIENT --home "$WORK/$u" join fmnist --threads 1 --quiet > "$WORK/$u.log" 2>&1 &
  pids+=($!)
done
for i in 2 3 4; do wait "${pids[$i]}"; done

echo "== final status"
$CLIENT --home "$WORK/alice" task status fmnist
echo "== ledger"
$COORD ledger balances --home "$WORK/coordinator"
$COORD ledger verify --home "$WORK/coordinator"

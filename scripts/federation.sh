#!/usr/bin/env bash
# The main job: a whole federation on this machine. A coordinator (CURVE on, loopback) serves
# Fashion-MNIST; three trainers with unequal data (20, 15 and 10 blocks of 1,000 images, the extra
# blocks bought with coins) train a shareholding ResNet8 task with FedAvg; per-round accuracy is
# shown as it happens, then the final accuracy, the shares (by Shapley value), paid predictions by
# a fourth user (each fee paid out to the shareholders), one more by a web user over the HTTPS API
# with curl alone, the same prediction locally from the downloaded model, and the ledger state,
# verified.
# Usage: scripts/federation.sh [ROUNDS]   (needs a build: scripts/main.sh builds first)
# BLOCKFED_COORD_OPTS: more `blockfed-coordinator run` options, e.g. "--bn-recalibrate 0".
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-8}
COORD=build/coordinator/blockfed-coordinator
CLIENT=build/client/blockfed-client
PREDICT=build/client/blockfed-predict
PORT=${BLOCKFED_PORT:-27700}
EP=tcp://127.0.0.1:$PORT
HTTP=127.0.0.1:$((PORT + 1))
WORK=$(mktemp -d /tmp/blockfed-federation-XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

echo "== work directory: $WORK"
$COORD init --home "$WORK/coordinator" | tee "$WORK/init.txt"
KEY=$(sed -n 's/^server public key: //p' "$WORK/init.txt")
: > "$WORK/coordinator.log" # made before the tail below opens it (the redirection runs in the background)
$COORD run --home "$WORK/coordinator" --bind "$EP" --dataset fashion-mnist=/usr/share/datasets/fashion-mnist \
  --threads 2 --blocks-per-join 10 --http "$HTTP" ${BLOCKFED_COORD_OPTS:-} > "$WORK/coordinator.log" 2>&1 &
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
  --dataset fashion-mnist --rounds "$ROUNDS" --mode shareholding --fee 0.05 --base-fee 0.01 --min-clients 3 --local-epochs 1 \
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

# Five Fashion-MNIST test images as PGM files (the IDX pixels behind a PGM header); zcat stops
# early on purpose (head closes the pipe), hence the `|| true` under pipefail.
T=/usr/share/datasets/fashion-mnist
(zcat "$T/t10k-images-idx3-ubyte.gz" || true) | head -c $((16 + 784 * 5)) | tail -c $((784 * 5)) > "$WORK/raw"
imgs=()
for i in 0 1 2 3 4; do
  { printf 'P5\n28 28\n255\n'; dd if="$WORK/raw" bs=784 skip=$i count=1 status=none; } > "$WORK/test$i.pgm"
  imgs+=("$WORK/test$i.pgm")
done
echo "== true labels of the five images (class numbers): $( (zcat "$T/t10k-labels-idx1-ubyte.gz" || true) | head -c 13 | tail -c 5 | od -An -tu1)"
echo "== dave pays for predictions (price: 0.01 + 0.05 per image)"
$CLIENT --home "$WORK/dave" register dave --coordinator "$EP" --server-key "$KEY" > /dev/null
$CLIENT --home "$WORK/dave" recharge 1.00 > /dev/null
$PREDICT --home "$WORK/dave" --task fmnist --top 2 "${imgs[@]}"
echo "== erin pays for one prediction over the HTTPS API, with curl alone"
API="https://$HTTP/api/v1"
C=(curl -sS --fail-with-body --cacert "$WORK/coordinator/https.crt")
"${C[@]}" -X POST "$API/auth/register" -d '{"username":"erin","password":"erin password"}' > /dev/null
TOKEN=$("${C[@]}" -X POST "$API/auth/login" -d '{"username":"erin","password":"erin password"}' | sed -n 's/.*"token":"\([^"]*\)".*/\1/p')
"${C[@]}" -X POST "$API/account/recharge" -H "Authorization: Bearer $TOKEN" -d '{"amount":"1.00"}' > /dev/null
"${C[@]}" -X POST "$API/tasks/fmnist/predict?top=2" -H "Authorization: Bearer $TOKEN" -H 'Idempotency-Key: erin-1' \
  -F "image=@${imgs[0]}"
echo
echo "== the same images locally, from the model alice downloads (no fee)"
$CLIENT --home "$WORK/alice" model download fmnist --out "$WORK/fmnist.bfm" > /dev/null
$PREDICT --model "$WORK/fmnist.bfm" --top 2 "${imgs[@]}"
echo "== shares of the model (ppm, by positive cumulative Shapley value) and the fees each received"
$COORD ledger shares 1 --home "$WORK/coordinator"
echo "== ledger"
$COORD ledger balances --home "$WORK/coordinator"
$COORD ledger verify --home "$WORK/coordinator"

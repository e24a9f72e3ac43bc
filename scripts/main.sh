#!/usr/bin/env bash
# The main job: install dependencies, build, and train ResNet8 on Fashion-MNIST for 5 epochs,
# printing per-epoch test accuracy and writing build/model.bfm.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc)" --target blockfed-client
exec build/client/blockfed-client train \
  --dataset fashion-mnist=/usr/share/datasets/fashion-mnist \
  --model resnet8 --epochs 5 --out build/model.bfm --verbose "$@"

#!/usr/bin/env bash
# Builds the wire-protocol fuzzer (libFuzzer + ASan + UBSan, clang from Debian) and runs it for a
# fixed number of executions from the committed seeds. Exits non-zero on any crash, leak, UB
# report or round-trip violation. About 25 s on one core at the default 500,000 runs (~22,000 execs/s).
#   scripts/fuzz.sh [RUNS] [extra libFuzzer flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh

runs=${1:-500000}
shift || true
out=build-fuzz
mkdir -p "$out"

# The decoder and what it links, built straight from the sources: no CMake target needed.
# shellcheck disable=SC2046
clang -std=c11 -D_GNU_SOURCE -g -O1 -Wall -Wextra -Werror \
  -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer \
  -Ishared -Iproto tests/fuzz/fuzz_proto.c proto/proto.c shared/mp.c shared/util.c shared/text.c \
  $(pkg-config --cflags --libs libczmq libzmq msgpack libssl libcrypto) -lm \
  -o "$out/fuzz_proto"

# Work on a copy so a run never rewrites the committed seeds; keep crash files in $out.
corpus=$(mktemp -d)
trap 'rm -rf "$corpus"' EXIT
cp tests/fuzz/seeds/* "$corpus"/

start=$(date +%s)
ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1 \
  "$out/fuzz_proto" -runs="$runs" -seed=1 -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
  -dict=tests/fuzz/proto.dict -artifact_prefix="$out/" -print_final_stats=1 "$@" "$corpus"
echo "fuzz.sh: $runs runs without a finding in $(( $(date +%s) - start )) s"

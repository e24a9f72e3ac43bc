#!/usr/bin/env bash
# The dashboard's browser test for ctest: installs playwright-core from the committed lockfile
# (npm ci, test tooling only) into the build tree and runs dashboard.test.mjs with Debian's
# Chromium. Missing node, npm or chromium is a failure, not a skip.
# Usage: run.sh SRC_DIR COORDINATOR CLIENT OUT_DIR PORT
set -euo pipefail
src=$1 coord=$2 client=$3 out=$4 port=$5
for t in node npm /usr/bin/chromium; do
  command -v "$t" >/dev/null || { echo "FAIL: $t is missing (scripts/install-deps.sh installs it)" >&2; exit 1; }
done
work=$out/browser-npm
mkdir -p "$work"
cp "$src/package.json" "$src/package-lock.json" "$src/dashboard.test.mjs" "$work/"
(cd "$work" && npm ci --no-audit --no-fund --loglevel=error)
exec node "$work/dashboard.test.mjs" "$coord" "$client" "$out" "$port"

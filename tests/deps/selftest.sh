#!/usr/bin/env bash
# The checker's own test: the planted tree in fixture/ must pass the real rules.txt, and each
# case below plants one breach in a fresh copy and must make the checker fail (exit 1) with a
# line naming that breach. A checker that stops seeing a kind of breach fails here.
#
#   selftest.sh --checker check_deps.sh --rules rules.txt --fixture DIR --cc CC --nm NM --work DIR
set -u

usage() {
    echo "usage: $0 --checker F --rules F --fixture DIR --cc CC --nm NM --work DIR" >&2
    exit 2
}
checker="" rules="" fixture="" cc="cc" nm="nm" work=""
while [ $# -gt 0 ]; do
    case "$1" in
        --checker) checker="${2:-}"; shift 2 || usage ;;
        --rules) rules="${2:-}"; shift 2 || usage ;;
        --fixture) fixture="${2:-}"; shift 2 || usage ;;
        --cc) cc="${2:-}"; shift 2 || usage ;;
        --nm) nm="${2:-}"; shift 2 || usage ;;
        --work) work="${2:-}"; shift 2 || usage ;;
        *) usage ;;
    esac
done
[ -n "$checker" ] && [ -n "$rules" ] && [ -n "$fixture" ] && [ -n "$work" ] || usage

rm -rf "$work" && mkdir -p "$work" || exit 2
failures=0
ncases=0

# Compiles every source of tree DIR whose object is missing or older, where CMake would put
# it, and writes the manifest: the tree's links.txt, then one object line per source.
build() {
    local dir="$1" path src obj inc="" f
    for f in "$dir"/src/*/; do inc="$inc -I$f"; done
    grep -v '^#' "$dir/src/links.txt" >"$dir/manifest.txt"
    for path in "$dir"/src/*/*.c; do
        [ -f "$path" ] || continue
        src="${path#"$dir/src/"}"
        obj="$dir/build/${src%/*}/CMakeFiles/fx.dir/${src##*/}.o"
        echo "object $obj" >>"$dir/manifest.txt"
        [ -f "$obj" ] && [ ! "$path" -nt "$obj" ] && continue
        mkdir -p "${obj%/*}"
        # shellcheck disable=SC2086
        "$cc" -std=c11 -O0 -w -c "$path" -o "$obj" $inc || { echo "selftest: cannot compile $src" >&2; exit 2; }
    done
}

run_checker() {   # DIR -> output in DIR/out.txt, status returned
    bash "$checker" --root "$1/src" --rules "$rules" --manifest "$1/manifest.txt" --nm "$nm" >"$1/out.txt" 2>&1
}

# A fresh copy of the clean tree (sources and objects) to plant a breach in.
plant() {
    cur="$work/$1"
    cp -a "$work/clean" "$cur"
}

# expect_breach TEXT...: the checker, run on the current case, exits 1 and prints each TEXT.
expect_breach() {
    local name="${cur##*/}" rc t
    ncases=$((ncases + 1))
    [ -f "$cur/manifest.keep" ] || build "$cur"
    run_checker "$cur"; rc=$?
    if [ $rc -ne 1 ]; then
        echo "FAIL $name: checker exit $rc, expected 1 (a breach)"; sed 's/^/    /' "$cur/out.txt"
        failures=$((failures + 1)); return
    fi
    for t in "$@"; do
        if ! grep -q -F -- "$t" "$cur/out.txt"; then
            echo "FAIL $name: no line containing: $t"; sed 's/^/    /' "$cur/out.txt"
            failures=$((failures + 1)); return
        fi
    done
    echo "ok   $name: $(grep -F -m1 -- "$1" "$cur/out.txt")"
}

# ---- the clean planted tree passes -----------------------------------------------------------
mkdir -p "$work/clean" && cp -a "$fixture" "$work/clean/src" || exit 2
build "$work/clean"
run_checker "$work/clean"; rc=$?
ncases=$((ncases + 1))
if [ $rc -ne 0 ]; then
    echo "FAIL clean: checker exit $rc on the clean planted tree"; sed 's/^/    /' "$work/clean/out.txt"
    exit 1
fi
echo "ok   clean: $(tail -1 "$work/clean/out.txt")"

append() { printf '%s\n' "$2" >>"$cur/src/$1"; }
lines() { wc -l <"$cur/src/$1" | tr -d ' '; }

# ---- forbidden includes --------------------------------------------------------------------
plant inc_models_datasets; append models/net.c '#include "bf_datasets.h"'
expect_breach "models/net.c:$(lines models/net.c): includes bf_datasets.h (datasets/bf_datasets.h): models/ never depends on datasets/"

plant inc_models_learn_angle; append models/bf_models.h '#include <bf_trainer.h>'
expect_breach "models/bf_models.h:$(lines models/bf_models.h): includes bf_trainer.h (learn/bf_trainer.h): models/ never depends on learn/"

plant inc_client_ledger; append client/conn.c '#  include "bf_ledger.h"'
expect_breach "client/conn.c:$(lines client/conn.c): includes bf_ledger.h (ledger/bf_ledger.h): client/ never depends on ledger/"

plant inc_learn_ledger; append learn/trainer.c '#include "../ledger/bf_ledger.h"'
expect_breach "learn/trainer.c:$(lines learn/trainer.c): includes ../ledger/bf_ledger.h (ledger/bf_ledger.h): learn/ never depends on ledger/"

plant inc_datasets_ledger; append datasets/bf_datasets.h '#include "bf_ledger.h"'
expect_breach "datasets/bf_datasets.h:$(lines datasets/bf_datasets.h): includes bf_ledger.h (ledger/bf_ledger.h): datasets/ never depends on ledger/" \
              "learn/bf_trainer.h:3: includes bf_datasets.h -> datasets/bf_datasets.h -> ledger/bf_ledger.h: learn/ never depends on ledger/"

plant inc_coordinator_client; append coordinator/server.c '#include "bf_conn.h"'
expect_breach "coordinator/server.c:$(lines coordinator/server.c): includes bf_conn.h (client/bf_conn.h): coordinator/ never depends on client/"

# learn/ may include client/, the coordinator may include learn/, so only the chain shows it.
plant inc_coordinator_client_through_learn; append learn/bf_trainer.h '#include "bf_conn.h"'
expect_breach "coordinator/coord.h:4: includes bf_trainer.h -> learn/bf_trainer.h -> client/bf_conn.h: coordinator/ never depends on client/"

plant inc_shared_proto; append shared/util.c '#include "bf_proto.h"'
expect_breach "shared/util.c:$(lines shared/util.c): includes bf_proto.h (proto/bf_proto.h): shared/ never depends on proto/"

plant inc_shared_sqlite; append shared/bf_util.h '#include <sqlite3.h>'
expect_breach "shared/bf_util.h:$(lines shared/bf_util.h): includes sqlite3.h: shared/ never depends on @sqlite"

plant inc_shared_czmq; append shared/util.c '#include <czmq.h>'
expect_breach "shared/util.c:$(lines shared/util.c): includes czmq.h: shared/ never depends on @zeromq"

plant inc_proto_ledger; append proto/proto.c '#include "bf_ledger.h"'
expect_breach "proto/proto.c:$(lines proto/proto.c): includes bf_ledger.h (ledger/bf_ledger.h): proto/ never depends on ledger/"

plant inc_ledger_proto; append ledger/ledger_internal.h '#include "bf_proto.h"'
expect_breach "ledger/ledger_internal.h:$(lines ledger/ledger_internal.h): includes bf_proto.h (proto/bf_proto.h): ledger/ never depends on proto/"

# A header name living in two folders cannot be placed: a failure, not a guess.
plant inc_ambiguous; cp "$cur/src/shared/bf_util.h" "$cur/src/datasets/bf_util.h"
expect_breach "models/bf_models.h:2: includes bf_util.h, which names several headers of ours"

plant folder_missing; rm -rf "$cur/src/learn" "$cur/build/learn"
expect_breach "learn/: folder named in the rules does not exist"

# ---- forbidden links -----------------------------------------------------------------------
plant link_models_datasets; append links.txt 'link bfmodels bfdatasets'
expect_breach "bfmodels: links bfdatasets: models/ never depends on datasets/"

plant link_coordinator_client; append links.txt 'link blockfed-coordinator bfclient'
expect_breach "blockfed-coordinator: links bfclient: coordinator/ never depends on client/"

plant link_coordinator_client_through_learn; append links.txt 'link bflearn bfclient'
expect_breach "blockfed-coordinator: links bfclient (via bflearn): coordinator/ never depends on client/"

plant link_client_ledger_transitive; append links.txt 'link bfdatasets bfledger'
expect_breach "bfdatasets: links bfledger: datasets/ never depends on ledger/" \
              "bfclient: links bfledger (via bfdatasets): client/ never depends on ledger/" \
              "blockfed-predict: links bfledger (via bfclient -> bfdatasets): client/ never depends on ledger/"

plant link_shared_external; append links.txt 'link bfshared PkgConfig::SQLITE'
append links.txt 'link bfshared /usr/lib/x86_64-linux-gnu/libzmq.so.5'; append links.txt 'link bfshared -lczmq'
expect_breach "bfshared: links PkgConfig::SQLITE: shared/ never depends on @sqlite" \
              "bfshared: links /usr/lib/x86_64-linux-gnu/libzmq.so.5: shared/ never depends on @zeromq" \
              "bfshared: links -lczmq: shared/ never depends on @zeromq"

plant link_shared_proto; append links.txt 'link bfshared bfproto'
expect_breach "bfshared: links bfproto: shared/ never depends on proto/"

plant link_proto_ledger; append links.txt 'link bfproto bfledger'
expect_breach "bfproto: links bfledger: proto/ never depends on ledger/"

plant link_ledger_proto; append links.txt 'link bfledger -lczmq' && append links.txt 'link bfledger bfproto'
expect_breach "bfledger: links bfproto: ledger/ never depends on proto/"

plant target_missing; sed -i '/bfledger/d' "$cur/src/links.txt"; append links.txt 'missing bfledger'
expect_breach "bfledger: target does not exist: its link libraries cannot be checked"

plant target_absent; sed -i '/blockfed-predict/d' "$cur/src/links.txt"
expect_breach "blockfed-predict: target does not exist (not in the manifest)"

# ---- forbidden calls, includes and names in single files -------------------------------------
plant store_calls_up
sed -i 's/return bf_util_now();/return bf_util_now()\n        + ledger_rcache_fee()\n        + ledger_tx_depth\n        + ledger_verify_chain();/' "$cur/src/ledger/ledger_store.c"
expect_breach "ledger/ledger_store.c:5: references ledger_rcache_fee (defined in ledger/ledger_rcache.c): storage never calls up" \
              "ledger/ledger_store.c:6: references ledger_tx_depth (defined in ledger/ledger_tx.c): storage never calls up" \
              "ledger/ledger_store.c:7: references ledger_verify_chain (defined in ledger/ledger_verify.c): storage never calls up"

plant worker_calls; sed -i 's/bf_evaluate()/bf_evaluate() + bf_ledger_open()\n        + coord_store_save()\n        + zmsg_send(0, pipe)/' "$cur/src/coordinator/worker.c"
expect_breach "coordinator/worker.c:7: references bf_ledger_open: the aggregation worker touches neither" \
              "coordinator/worker.c:8: references coord_store_save: the aggregation worker touches neither" \
              "coordinator/worker.c:9: references zmsg_send: the aggregation worker touches neither"

plant worker_includes_ledger; sed -i 's/#include "coord.h"/#include "coord.h"\n#include "bf_ledger.h"/' "$cur/src/coordinator/worker.c"
expect_breach "coordinator/worker.c:4: includes bf_ledger.h: the aggregation worker touches neither the ledger nor the store"

plant worker_names; sed -i 's/char c = .".;/char c = 0; void *router = pipe; server_t *s = router;/' "$cur/src/coordinator/worker.c"
expect_breach "coordinator/worker.c:6: names router: the aggregation worker never sees the ROUTER socket" \
              "coordinator/worker.c:6: names server_t: the aggregation worker never sees"

plant handlers_send
sed -i 's/return bf_ledger_open()/return zsock_send(0, "s", "x")\n        + zmsg_send(0, 0)\n        + zframe_send(0, 0, 0)\n        + zmq_send(0, 0, 0, 0)\n        + zmq_msg_send(0, 0, 0)\n        + bf_ledger_open()/' "$cur/src/coordinator/handlers.c"
expect_breach "coordinator/handlers.c:4: references zsock_send: handlers return replies; only server.c sends" \
              "coordinator/handlers.c:5: references zmsg_send: handlers return replies; only server.c sends" \
              "coordinator/handlers.c:6: references zframe_send: handlers return replies; only server.c sends" \
              "coordinator/handlers.c:7: references zmq_send: handlers return replies; only server.c sends" \
              "coordinator/handlers.c:8: references zmq_msg_send: handlers return replies; only server.c sends"

# ---- a file a rule names that is missing, unbuilt or in no target --------------------------
plant handlers_missing; rm -f "$cur/src/coordinator/handlers.c"; rm -rf "$cur/build/coordinator/CMakeFiles/fx.dir/handlers.c.o"
expect_breach "coordinator/handlers.c: no such source file"

plant rcache_missing; rm -f "$cur/src/ledger/ledger_rcache.c" "$cur/build/ledger/CMakeFiles/fx.dir/ledger_rcache.c.o"
expect_breach "ledger/ledger_rcache.c: no such source file: storage never calls up"

plant store_missing; rm -f "$cur/src/ledger/ledger_store.c" "$cur/build/ledger/CMakeFiles/fx.dir/ledger_store.c.o"
append ledger/ledger_rcache.c 'int ledger_store_get(void) { return 0; }'
expect_breach "ledger/ledger_store.c: no such source file: storage never calls up"

# The manifest lists the object, but it was never built.
plant worker_unbuilt; build "$cur"; touch "$cur/manifest.keep"
rm -f "$cur/build/coordinator/CMakeFiles/fx.dir/worker.c.o"
expect_breach "coordinator/worker.c: object $cur/build/coordinator/CMakeFiles/fx.dir/worker.c.o not built"

# The source exists, but no checked target compiles it.
plant worker_in_no_target; build "$cur"; touch "$cur/manifest.keep"
sed -i '\|/worker\.c\.o$|d' "$cur/manifest.txt"
expect_breach "coordinator/worker.c: no object found (not a source of a checked target)"

echo "selftest: $ncases cases, $failures failed"
[ $failures -eq 0 ]

#!/usr/bin/env bash
# pg_cluster.sh start|stop DIR: a throwaway PostgreSQL cluster for the ledger's postgres tests
# (ctest fixture). start: initdb + pg_ctl on a free loopback port, trust auth for the role
# bfledger, fsync and synchronous commit left on; writes the connection string to DIR/url.
# stop: stops it and removes its files. PostgreSQL refuses to run as root, so as root the
# cluster runs as the `postgres` user (runuser). Any failure exits non-zero and says why: the
# tests that need the cluster then fail, they are never skipped.
set -euo pipefail
cmd=${1:?usage: pg_cluster.sh start|stop DIR}
dir=${2:?usage: pg_cluster.sh start|stop DIR}
mkdir -p "$dir"

bindir=$(pg_config --bindir 2>/dev/null || true)
[ -x "$bindir/initdb" ] || bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$bindir/initdb" ] || { echo "pg_cluster: no PostgreSQL server binaries (initdb); run scripts/install-deps.sh" >&2; exit 1; }

as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

stop() {
  [ -f "$dir/cluster" ] || return 0
  local data
  data=$(cat "$dir/cluster")
  as_pg "$bindir/pg_ctl" -D "$data/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$data"
  rm -f "$dir/cluster" "$dir/url"
}

if [ "$cmd" = stop ]; then stop; exit 0; fi
[ "$cmd" = start ] || { echo "pg_cluster: unknown command $cmd" >&2; exit 2; }
stop # a cluster left by an interrupted run

data=$(mktemp -d /tmp/bf-pg.XXXXXX)
chmod 755 "$data"
[ "$(id -u)" -eq 0 ] && chown postgres: "$data"
echo "$data" > "$dir/cluster"
if ! as_pg "$bindir/initdb" -D "$data/data" -U bfledger --auth=trust -E UTF8 --no-locale >"$data/initdb.log" 2>&1; then
  echo "pg_cluster: initdb failed:" >&2; cat "$data/initdb.log" >&2; exit 1
fi
for attempt in 1 2 3 4 5 6 7 8; do
  port=$(( 20000 + (RANDOM * 32768 + RANDOM) % 40000 ))
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && continue # taken
  if as_pg "$bindir/pg_ctl" -D "$data/data" -l "$data/server.log" -w -t 30 \
       -o "-p $port -c listen_addresses=127.0.0.1 -k $data -c max_connections=50" start >/dev/null 2>&1; then
    echo "postgresql://bfledger@127.0.0.1:$port/postgres" > "$dir/url"
    echo "pg_cluster: PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') on port $port ($data)"
    exit 0
  fi
done
echo "pg_cluster: the server did not start:" >&2
tail -20 "$data/server.log" >&2 || true
exit 1

#!/usr/bin/env bash
# Benchmark (issue 17): what a controller start costs on a long history, and
# what retention gives back to the filesystem. A release build, mutual TLS, one
# agent, on localhost (deploy/bench/lib.sh); the store filled through its own
# API (`pgrollout store-fill`), then made as an older controller made it
# (auto_vacuum = NONE, i.e. before migration 0014's controller):
#
#   1. restart over it: the one-time VACUUM that enables incremental
#      auto-vacuum (its log line), the metrics summary's rebuild at start (its
#      `build_us`), and the first `pgrollout metrics` after the start;
#   2. restart with `[store.retention] keep = "1m"`: the prune of (nearly)
#      every rollout, the pages returned, the store's size on disk before and
#      after (main file + WAL).
#
#   deploy/bench/history-compaction.sh [rollouts]   (default 100000)
set -euo pipefail
rollouts=${1:-100000}
source "$(dirname "$0")/lib.sh"
bench_setup

"$bin/pgrollout" store-fill --config "$work/controller.toml" --environment dev --rollouts "$rollouts" \
  --batch-every 1000 --batch-size 1000 2>"$work/fill.log" ||
  { echo "store-fill failed:" >&2; tail -20 "$work/fill.log" >&2; exit 2; }
store_size() { du -k -c "$work"/c.sqlite* | tail -n 1 | cut -f1; }
plain() { sed 's/\x1b\[[0-9;]*m//g' "$1"; }
restart() { # log-file: stops the controller, starts it again over the store
  kill "$controller_pid"; wait "$controller_pid" 2>/dev/null || true
  "$bin/pgrollout" serve --config "$work/controller.toml" >"$1" 2>&1 & pids+=($!); controller_pid=$!
  bench_wait_for_line "$1" "controller listening"
}

kill "$controller_pid"; wait "$controller_pid" 2>/dev/null || true
python3 - "$work/c.sqlite" <<'PY'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("PRAGMA auto_vacuum = NONE"); c.execute("VACUUM"); c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
assert c.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
PY
older_kb=$(store_size)
t0=$(bench_now_us)
"$bin/pgrollout" serve --config "$work/controller.toml" >"$work/start.log" 2>&1 & pids+=($!); controller_pid=$!
bench_wait_for_line "$work/start.log" "controller listening"
start_ms=$(( ($(bench_now_us) - t0) / 1000 ))
t0=$(bench_now_us); "$bin/pgrollout" metrics >/dev/null; first_metrics_ms=$(( ($(bench_now_us) - t0) / 1000 ))
vacuum_ms=$(plain "$work/start.log" | grep 'store: rewritten' | grep -o 'elapsed_ms=[0-9]*' | cut -d= -f2)
build_us=$(plain "$work/start.log" | grep 'summary built' | head -n 1 | grep -o 'build_us=[0-9]*' | cut -d= -f2)
built_rollouts=$(plain "$work/start.log" | grep 'summary built' | head -n 1 | grep -o 'rollouts=[0-9]*' | cut -d= -f2)
converted_kb=$(store_size)

# Again, with nothing to convert: the plain restart.
restart "$work/restart.log"
t0=$(bench_now_us); "$bin/pgrollout" metrics >/dev/null; second_metrics_ms=$(( ($(bench_now_us) - t0) / 1000 ))
build2_us=$(plain "$work/restart.log" | grep 'summary built' | head -n 1 | grep -o 'build_us=[0-9]*' | cut -d= -f2)

printf '[store.retention]\nkeep = "1m"\nevery = "1h"\n' >>"$work/controller.toml"
before_kb=$(store_size)
restart "$work/retention.log"
bench_wait_for_line "$work/retention.log" "returned pruned space"
kill "$controller_pid"; wait "$controller_pid" 2>/dev/null || true
after_kb=$(store_size)
returned=$(plain "$work/retention.log" | grep 'returned pruned space' | grep -o 'returned_bytes=[0-9]*' | cut -d= -f2)
return_ms=$(plain "$work/retention.log" | grep 'returned pruned space' | grep -o 'elapsed_ms=[0-9]*' | cut -d= -f2)
pruned=$(plain "$work/retention.log" | grep 'pruned old rollouts' | grep -o ' rollouts=[0-9]*' | cut -d= -f2)

echo "history compaction: $rollouts rollouts (1,000-routine batches every 1,000th); $BENCH_BUILD, localhost"
echo "store as an older controller left it (auto_vacuum NONE): $((older_kb / 1024)) MiB"
echo "first start over it: ${start_ms} ms to listening, of which the one-time VACUUM ${vacuum_ms:-?} ms; store then $((converted_kb / 1024)) MiB"
echo "metrics summary built at start: $((build_us / 1000)) ms for $built_rollouts finished rollouts; first 'pgrollout metrics' ${first_metrics_ms} ms"
echo "plain restart: summary built in $((build2_us / 1000)) ms; first 'pgrollout metrics' ${second_metrics_ms} ms"
echo "retention (keep 1m): $pruned rollouts pruned; $((returned / 1048576)) MiB returned to the filesystem in ${return_ms} ms"
echo "store on disk: $((before_kb / 1024)) MiB before the prune, $((after_kb / 1024)) MiB after"

#!/usr/bin/env bash
# Benchmark: wall time of one `pgrollout deploy` (CLI → controller → agent →
# PostgreSQL, with backup, ledger, grants and both smoke phases) next to
# `psql -1 -f` of the same file, on localhost, same cluster, same password auth.
# Also reports the agent's and the controller's resident memory when idle.
#
#   deploy/bench/deploy-latency.sh [runs]      (default 30 runs each)
#   BENCH_TRACING=1 deploy/bench/deploy-latency.sh [runs]
#
# With BENCH_TRACING=1 tracing is on: the controller exports to a stand-in
# collector (tests/examples/otlp_sink.rs), the agent relays its spans through
# the controller, and the CLI exports its own span before it exits.
set -euo pipefail
runs=${1:-30}
source "$(dirname "$0")/lib.sh"
cli_env=()
if [[ ${BENCH_TRACING:-0} == 1 ]]; then
  root=$(cd "$(dirname "$0")/../.." && pwd)
  (cd "$root" && cargo build --quiet -p pgrollout-tests --example otlp_sink)
  target_dir=${CARGO_TARGET_DIR:-target}; [[ $target_dir == /* ]] || target_dir="$root/$target_dir"
  sink_out=$(mktemp)
  "$target_dir/debug/examples/otlp_sink" >"$sink_out" & sink_pid=$!
  bench_wait_for_line "$sink_out" "^endpoint "
  otlp=$(awk '/^endpoint /{print $2}' "$sink_out")
  export PGROLLOUT_CONTROLLER__TELEMETRY__OTLP_ENDPOINT=$otlp  # the controller only
  cli_env=(env OTEL_EXPORTER_OTLP_ENDPOINT="$otlp")
fi
bench_setup
psql -q -h 127.0.0.1 -p "$port" -U postgres -d bench -v ON_ERROR_STOP=1 -f deploy/examples/project/schema.sql >/dev/null

sleep 2 # let the agent settle into idle before reading its memory
agent_idle_rss=$(bench_rss_kb "$agent_pid"); controller_idle_rss=$(bench_rss_kb "$controller_pid")

file=deploy/examples/project/procedures/reconcilemupstream.sql
"$bin/pgrollout" deploy reconcilemupstream dev --project deploy/examples/project >/dev/null  # warm-up, creates it

time_runs() { # label command...
  local out="$work/$1.times"; : >"$out"
  for ((i = 0; i < runs; i++)); do
    local t0; t0=$(bench_now_us)
    "${@:2}" >/dev/null 2>&1 || { echo "run of $1 failed" >&2; exit 2; }
    echo $(( $(bench_now_us) - t0 )) >>"$out"
  done
}
time_runs psql psql -X -q -h 127.0.0.1 -p "$port" -U postgres -d bench -v ON_ERROR_STOP=1 -1 -f "$file"
time_runs pgrollout "${cli_env[@]}" "$bin/pgrollout" deploy reconcilemupstream dev --project deploy/examples/project
agent_after_rss=$(bench_rss_kb "$agent_pid")
if [[ ${BENCH_TRACING:-0} == 1 ]]; then
  kill -TERM "$sink_pid"
  bench_wait_for_line "$sink_out" "^spans "
  echo "tracing on: the collector received $(awk '/^spans /{print $2}' "$sink_out") spans"
  rm -f "$sink_out"
else
  echo "tracing off (BENCH_TRACING=1 turns it on)"
fi

python3 - "$work" "$runs" "$agent_idle_rss" "$agent_after_rss" "$controller_idle_rss" <<'PY'
import os, statistics, sys
build = os.environ['BENCH_BUILD']
work, runs, agent_idle, agent_after, controller_idle = sys.argv[1], int(sys.argv[2]), *map(int, sys.argv[3:])
def load(name):
    return sorted(int(x) / 1000 for x in open(f"{work}/{name}.times"))
def p(xs, q): return xs[min(len(xs) - 1, int(q * len(xs)))]
psql, roll = load("psql"), load("pgrollout")
print(f"runs: {runs} each, localhost, scram-sha-256 password auth, mutual TLS CLI->controller->agent, {build}")
print(f"{'':28}{'p50 ms':>10}{'p95 ms':>10}{'min ms':>10}")
for label, xs in (("psql -1 -f (apply only)", psql), ("pgrollout deploy (full)", roll)):
    print(f"{label:28}{statistics.median(xs):10.1f}{p(xs, .95):10.1f}{xs[0]:10.1f}")
print(f"overhead (p50): {statistics.median(roll) - statistics.median(psql):.1f} ms   (target: <= 150 ms)")
print(f"agent RSS idle: {agent_idle / 1024:.1f} MiB, after {runs} deploys: {agent_after / 1024:.1f} MiB   (target idle: < 20 MB)")
print(f"controller RSS idle: {controller_idle / 1024:.1f} MiB")
PY

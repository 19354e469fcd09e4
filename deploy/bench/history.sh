#!/usr/bin/env bash
# Benchmark (issue 17): costs that do not grow with history. A release build,
# mutual TLS, one agent, on localhost (deploy/bench/lib.sh), with a store
# filled through the store's own API (`pgrollout store-fill`, hidden: plans,
# rollouts, jobs, events, results and a hash-chained, signed audit log, as
# `serve` writes them):
#
#   1. fill: <rollouts> rollouts (every 1,000th a batch of 1,000 routines) and
#      <audit> audit entries; the controller is then restarted over the store
#      (its start-up check reads the whole audit log) and its start timed;
#   2. single-routine rollback and emergency rollback, <runs> times each:
#      wall time CLI to CLI, and the controller's own time before dispatch
#      (its `rollback dispatched before_dispatch_us=` log line);
#   3. status, rollouts, metrics, `audit --since 1h` (<runs> times) and
#      `audit verify` (3 times) wall times;
#   4. the controller's RSS after all of it (and its peak), the store's size.
#
#   deploy/bench/history.sh [rollouts] [audit] [runs]   (default 100000 1000000 30)
# Targets: rollback p50 < 1 s end to end, < 50 ms before dispatch; audit
# verify of 1 M entries < 10 s; controller RSS < 150 MB steady.
set -euo pipefail
rollouts=${1:-100000}
audit=${2:-1000000}
runs=${3:-30}
source "$(dirname "$0")/lib.sh"
bench_setup
psql -q -h 127.0.0.1 -p "$port" -U postgres -d bench -v ON_ERROR_STOP=1 -f deploy/examples/project/schema.sql >/dev/null
cp -r deploy/examples/project "$work/project"
"$bin/pgrollout" deploy reconcilemupstream dev --project "$work/project" >/dev/null

fill_t0=$(bench_now_us)
"$bin/pgrollout" store-fill --config "$work/controller.toml" --environment dev --rollouts "$rollouts" \
  --batch-every 1000 --batch-size 1000 --audit "$audit" 2>"$work/fill.log" ||
  { echo "store-fill failed:" >&2; tail -20 "$work/fill.log" >&2; exit 2; }
fill_s=$(( ($(bench_now_us) - fill_t0) / 1000000 ))

# Restart the controller over the filled store, as after an upgrade.
kill "$controller_pid"; wait "$controller_pid" 2>/dev/null || true
start_t0=$(bench_now_us)
"$bin/pgrollout" serve --config "$work/controller.toml" >"$work/controller.log" 2>&1 & pids+=($!); controller_pid=$!
bench_wait_for_line "$work/controller.log" "controller listening"
start_ms=$(( ($(bench_now_us) - start_t0) / 1000 ))
until "$bin/pgrollout" agents 2>/dev/null | grep -q dev-1; do sleep 0.2; done
# The metrics summary is rebuilt from the store at start (its log line), and
# the first `pgrollout metrics` after the start waits for it.
bench_wait_for_line "$work/controller.log" "summary built"
build_us=$(sed 's/\x1b\[[0-9;]*m//g' "$work/controller.log" | grep 'summary built' | head -n 1 | grep -o 'build_us=[0-9]*' | cut -d= -f2)

timed() { # file command... : appends the command's wall time in µs
  local t0; t0=$(bench_now_us)
  "${@:2}" >"$work/last.out" 2>&1 || { echo "failed: ${*:2}" >&2; tail -30 "$work/last.out" >&2; exit 2; }
  echo $(( $(bench_now_us) - t0 )) >>"$1"
}
for name in one one-emergency status rollouts metrics audit-since audit-verify; do : >"$work/$name.times"; done
for ((i = 0; i < runs; i++)); do
  sed -i "s/^BEGIN\$/BEGIN\n  -- bench $i/" "$work/project/procedures/reconcilemupstream.sql"
  "$bin/pgrollout" deploy reconcilemupstream dev --project "$work/project" >/dev/null
  timed "$work/one.times" "$bin/pgrollout" rollback reconcilemupstream dev
  "$bin/pgrollout" deploy reconcilemupstream dev --project "$work/project" >/dev/null
  timed "$work/one-emergency.times" "$bin/pgrollout" rollback reconcilemupstream dev \
    --emergency --reason "benchmark run $i"
done
sed 's/\x1b\[[0-9;]*m//g' "$work/controller.log" | grep -o 'before_dispatch_us=[0-9]*' | cut -d= -f2 >"$work/dispatch.times"
rollout=$("$bin/pgrollout" rollouts --limit 1 | grep -o 'r-[0-9a-z-]*' | head -n 1)
for ((i = 0; i < runs; i++)); do
  timed "$work/status.times" "$bin/pgrollout" status "$rollout"
  timed "$work/rollouts.times" "$bin/pgrollout" rollouts
  timed "$work/metrics.times" "$bin/pgrollout" metrics
  timed "$work/audit-since.times" "$bin/pgrollout" audit --since 1h
done
for ((i = 0; i < 3; i++)); do timed "$work/audit-verify.times" "$bin/pgrollout" audit verify; done
grep -q "audit log intact" "$work/last.out" || { echo "audit verify did not pass:" >&2; cat "$work/last.out" >&2; exit 2; }
verified=$(grep -o '[0-9]* entries verified' "$work/last.out" | cut -d' ' -f1)
store_kb=$(du -k -c "$work"/c.sqlite* | tail -n 1 | cut -f1)

python3 - "$work" "$rollouts" "$audit" "$verified" "$fill_s" "$start_ms" "$store_kb" "$build_us" \
  "$(bench_rss_kb "$controller_pid")" "$(bench_peak_rss_kb "$controller_pid")" <<'PY'
import os, statistics, sys
build = os.environ['BENCH_BUILD']
work = sys.argv[1]
rollouts, audit, verified, fill_s, start_ms, store_kb, build_us, rss_kb, peak_kb = map(int, sys.argv[2:])
def load(name, scale=1000):
    return sorted(int(x) / scale for x in open(f"{work}/{name}.times"))
def p(xs, q): return xs[min(len(xs) - 1, int(q * len(xs)))]
print(f"history benchmark: {rollouts:,} rollouts (1,000-routine batches every 1,000th), {audit:,} audit entries; "
      f"{build}, mutual TLS, localhost")
print(f"store filled in {fill_s} s through the store's API; controller restart over it: {start_ms} ms to listening")
print(f"metrics summary rebuilt at start (no plan decoded): {build_us / 1000:.1f} ms")
print(f"{'':44}{'runs':>6}{'p50 ms':>10}{'p95 ms':>10}{'min ms':>10}{'max ms':>10}")
for label, name in (("rollback, one routine (CLI to CLI)", "one"),
                    ("rollback --emergency (CLI to CLI)", "one-emergency"),
                    ("controller time before dispatch", "dispatch"),
                    ("status <rollout>", "status"),
                    ("rollouts", "rollouts"),
                    ("metrics", "metrics"),
                    ("audit --since 1h", "audit-since"),
                    (f"audit verify ({verified:,} entries)", "audit-verify")):
    xs = load(name)
    print(f"{label:44}{len(xs):6}{statistics.median(xs):10.1f}{p(xs, .95):10.1f}{xs[0]:10.1f}{xs[-1]:10.1f}")
print(f"controller RSS after the runs: {rss_kb / 1024:.1f} MiB (peak {peak_kb / 1024:.1f} MiB)")
print(f"store on disk: {store_kb / 1024:.1f} MiB")
print("targets: rollback p50 < 1000 ms, before dispatch < 50 ms, audit verify of 1 M < 10000 ms, RSS < 150 MB")
PY

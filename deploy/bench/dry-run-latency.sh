#!/usr/bin/env bash
# Benchmark: what the syntax gate's dry run (the `check` job) adds to a
# deploy. Two environments serve the same database through the same agent:
# `dev` without gates and `checked` with the syntax gate, so the difference
# of their deploy times is the dry run (a recorded rollout of its own: offer,
# connect, lock, apply everything in a rolled-back transaction). Also times
# `pgrollout check` alone, on one routine and on a generated 1,000-routine
# batch.
#
#   deploy/bench/dry-run-latency.sh [runs] [routines]   (default 20 runs, 1000 routines)
set -euo pipefail
runs=${1:-20}
routines=${2:-1000}
export BENCH_CONTROLLER_EXTRA='[environments.checked]
zone = "dev"
gates = ["syntax"]'
source "$(dirname "$0")/lib.sh"
bench_setup
psql -q -h 127.0.0.1 -p "$port" -U postgres -d bench -v ON_ERROR_STOP=1 -f deploy/examples/project/schema.sql >/dev/null
project=deploy/examples/project
"$bin/pgrollout" deploy reconcilemupstream dev --project "$project" >/dev/null  # warm-up, creates it

time_runs() { # label command...
  local out="$work/$1.times"; : >"$out"
  for ((i = 0; i < runs; i++)); do
    local t0; t0=$(bench_now_us)
    "${@:2}" >/dev/null 2>&1 || { echo "run of $1 failed" >&2; "${@:2}" >&2 || true; exit 2; }
    echo $(( $(bench_now_us) - t0 )) >>"$out"
  done
}
time_runs plain "$bin/pgrollout" deploy reconcilemupstream dev --project "$project"
time_runs gated "$bin/pgrollout" deploy reconcilemupstream checked --project "$project"
time_runs check "$bin/pgrollout" check reconcilemupstream dev --project "$project"

python3 deploy/bench/generate_batch.py "$routines" "$work/gen" >/dev/null
psql -q -h 127.0.0.1 -p "$port" -U postgres -d bench -c \
  "CREATE SCHEMA bench; DO \$\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'bench_app') THEN CREATE ROLE bench_app; END IF; END \$\$"
mapfile -t names < <(grep -v '^#' "$work/gen/list.txt" | grep -v '^$')
t0=$(bench_now_us)
"$bin/pgrollout" check "${names[@]}" dev --project "$work/gen/project" >"$work/check.out" 2>&1 || {
  echo "the check failed:" >&2; tail -30 "$work/check.out" >&2; exit 2; }
check_batch_us=$(( $(bench_now_us) - t0 ))
t0=$(bench_now_us)
"$bin/pgrollout" batch dev "$work/gen/list.txt" --project "$work/gen/project" >"$work/batch.out" 2>&1 || {
  echo "the batch failed:" >&2; tail -30 "$work/batch.out" >&2; exit 2; }
batch_us=$(( $(bench_now_us) - t0 ))

# The same check with plpgsql_check reading every PL/pgSQL routine, where installed.
deep_us=0
if psql -X -At -h 127.0.0.1 -p "$port" -U postgres -d bench -c \
  "SELECT 1 FROM pg_available_extensions WHERE name = 'plpgsql_check'" | grep -q 1; then
  psql -q -h 127.0.0.1 -p "$port" -U postgres -d bench -c "CREATE EXTENSION plpgsql_check"
  t0=$(bench_now_us)
  "$bin/pgrollout" check "${names[@]}" dev --project "$work/gen/project" >"$work/deep.out" 2>&1 || {
    echo "the check with plpgsql_check failed:" >&2; grep -E "error" "$work/deep.out" | head -5 >&2; }
  deep_us=$(( $(bench_now_us) - t0 ))
fi

python3 - "$work" "$runs" "$routines" "$check_batch_us" "$batch_us" "$deep_us" <<'PY'
import os, statistics, sys
build = os.environ['BENCH_BUILD']
work, runs, routines, check_batch, batch, deep = sys.argv[1], *map(int, sys.argv[2:])
def load(name):
    return sorted(int(x) / 1000 for x in open(f"{work}/{name}.times"))
def p(xs, q): return xs[min(len(xs) - 1, int(q * len(xs)))]
plain, gated, check = load("plain"), load("gated"), load("check")
print(f"runs: {runs} each, localhost, mutual TLS CLI->controller->agent, {build}")
print(f"{'':40}{'p50 ms':>10}{'p95 ms':>10}{'min ms':>10}")
for label, xs in (("deploy, no gates", plain), ("deploy, syntax gate (dry run first)", gated),
                  ("pgrollout check (one routine)", check)):
    print(f"{label:40}{statistics.median(xs):10.1f}{p(xs, .95):10.1f}{xs[0]:10.1f}")
print(f"dry run added to a deploy (p50): {statistics.median(gated) - statistics.median(plain):.1f} ms")
print(f"pgrollout check of {routines} routines: {check_batch / 1e6:.2f} s;  pgrollout batch of the same: {batch / 1e6:.2f} s")
if deep:
    print(f"pgrollout check of {routines} routines with plpgsql_check installed: {deep / 1e6:.2f} s")
PY
grep -E "^  (\[ok\]|\[FAIL\]|\[-\]) " "$work/check.out"
if [[ -f $work/deep.out ]]; then grep -E "^  (\[ok\]|\[FAIL\]|\[-\]) |^CHECK" "$work/deep.out"; fi

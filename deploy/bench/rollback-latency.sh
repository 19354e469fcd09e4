#!/usr/bin/env bash
# Benchmark: wall time of `pgrollout rollback` (CLI → controller → agent →
# PostgreSQL: ledger resolve, backup verify, backup of the current state,
# exact restore of definition/owner/ACL/comment, ledger rows, smoke test in a
# savepoint, COMMIT, post-restore check on a fresh connection), on localhost
# with mutual TLS and a release build, as in production.
#
#   1. one routine (reconcilemupstream): deploy v2 (not timed), roll it back
#      (timed); `runs` times, normal and --emergency.
#   2. a batch of 1,000 interdependent routines (deploy/bench/generate_batch.py):
#      deploy v2 of all of them with `pgrollout batch` (not timed), then
#      `pgrollout rollback --rollout <id>` (timed); `batch_runs` times.
#
#   deploy/bench/rollback-latency.sh [runs] [batch_runs] [routines]   (default 30 3 1000)
# Targets (issue 6): p50 under 1 s for one routine, under 5 s for 1,000.
set -euo pipefail
runs=${1:-30}
batch_runs=${2:-3}
routines=${3:-1000}
source "$(dirname "$0")/lib.sh"
bench_setup
psql -q -h 127.0.0.1 -p "$port" -U postgres -d bench -v ON_ERROR_STOP=1 -f deploy/examples/project/schema.sql >/dev/null

# --- one routine -------------------------------------------------------------
cp -r deploy/examples/project "$work/project"
"$bin/pgrollout" deploy reconcilemupstream dev --project "$work/project" >/dev/null # v1, creates it
sed -i 's/^BEGIN$/BEGIN\n  -- v2/' "$work/project/procedures/reconcilemupstream.sql"

timed() { # file command... : appends the command's wall time in µs
  local t0; t0=$(bench_now_us)
  "${@:2}" >"$work/last.out" 2>&1 || { echo "failed: ${*:2}" >&2; tail -30 "$work/last.out" >&2; exit 2; }
  echo $(( $(bench_now_us) - t0 )) >>"$1"
}
: >"$work/one.times"; : >"$work/one-emergency.times"
for ((i = 0; i < runs; i++)); do
  "$bin/pgrollout" deploy reconcilemupstream dev --project "$work/project" >/dev/null
  timed "$work/one.times" "$bin/pgrollout" rollback reconcilemupstream dev
  "$bin/pgrollout" deploy reconcilemupstream dev --project "$work/project" >/dev/null
  timed "$work/one-emergency.times" "$bin/pgrollout" rollback reconcilemupstream dev \
    --emergency --reason "benchmark run $i"
done

# --- a batch of 1,000 ----------------------------------------------------------
python3 deploy/bench/generate_batch.py "$routines" "$work/gen" >/dev/null
psql -q -h 127.0.0.1 -p "$port" -U postgres -d bench -c \
  "CREATE SCHEMA bench; DO \$\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'bench_app') THEN CREATE ROLE bench_app; END IF; END \$\$"
"$bin/pgrollout" batch dev "$work/gen/list.txt" --project "$work/gen/project" >"$work/batch.out" 2>&1 ||
  { echo "the v1 batch failed:" >&2; tail -30 "$work/batch.out" >&2; exit 2; }
# v2 of every routine: a comment at the end of each body.
sed -i 's/\$\$;$/ \/* v2 *\/ $$;/' "$work"/gen/project/procedures/*.sql
: >"$work/batch.times"
for ((i = 0; i < batch_runs; i++)); do
  "$bin/pgrollout" batch dev "$work/gen/list.txt" --project "$work/gen/project" >"$work/batch.out" 2>&1 ||
    { echo "the v2 batch failed:" >&2; tail -30 "$work/batch.out" >&2; exit 2; }
  rollout=$(sed -n 's/^rollout \([^ ]*\) on agent.*/\1/p' "$work/batch.out" | head -n 1)
  timed "$work/batch.times" "$bin/pgrollout" rollback --rollout "$rollout"
  grep -qF "Status: [ok] SUCCESS" "$work/last.out" || { echo "rollback of $rollout did not succeed" >&2; tail -30 "$work/last.out" >&2; exit 2; }
done
restored=$(grep -o '\[restored from' "$work/last.out" | wc -l)

python3 - "$work" "$runs" "$batch_runs" "$restored" "$(bench_peak_rss_kb "$agent_pid")" <<'PY'
import os, statistics, sys
build = os.environ['BENCH_BUILD']
work, runs, batch_runs, restored, agent_kb = sys.argv[1], *map(int, sys.argv[2:])
def load(name):
    return sorted(int(x) / 1000 for x in open(f"{work}/{name}.times"))
def p(xs, q): return xs[min(len(xs) - 1, int(q * len(xs)))]
print(f"rollback wall time, CLI to CLI: localhost, scram-sha-256, mutual TLS, {build}")
print(f"{'':44}{'runs':>6}{'p50 ms':>10}{'p95 ms':>10}{'min ms':>10}{'max ms':>10}")
for label, name in (("one routine (reconcilemupstream)", "one"),
                    ("one routine, --emergency", "one-emergency"),
                    (f"--rollout of a batch ({restored} routines)", "batch")):
    xs = load(name)
    print(f"{label:44}{len(xs):6}{statistics.median(xs):10.1f}{p(xs, .95):10.1f}{xs[0]:10.1f}{xs[-1]:10.1f}")
print("targets: p50 < 1000 ms for one routine, < 5000 ms for a 1,000-routine batch")
print(f"agent peak RSS: {agent_kb / 1024:.1f} MiB")
PY

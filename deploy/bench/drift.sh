#!/usr/bin/env bash
# Benchmark (issue 20, item 5): a drift scan of a database holding 5,000
# routines that pgrollout deployed (generate_batch.py's corpus: SQL and
# PL/pgSQL, overloads, a grant on every routine), each with its ledger rows.
# Times the scan on the agent (the catalog and ledger query, `scan_ms` of
# `pgrollout drift --output json`; target < 200 ms) and the whole command as
# the operator sees it, RUNS times each, and checks that a hand edit of one
# routine is then found (exit 4).
#
#   deploy/bench/drift.sh [routines] [runs]      (default 5000 7)
set -euo pipefail
routines=${1:-5000}
runs=${2:-7}
# One plan may carry 5,000 routines by default; the corpus may overshoot by one.
export BENCH_CONTROLLER_EXTRA="[limits]
max_routines_per_plan = 10000"
source "$(dirname "$0")/lib.sh"
bench_setup

python3 deploy/bench/generate_batch.py "$routines" "$work/gen" >/dev/null
psql -q -h 127.0.0.1 -p "$port" -U postgres -d bench -c \
  "CREATE SCHEMA bench; DO \$\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'bench_app') THEN CREATE ROLE bench_app; END IF; END \$\$"
"$bin/pgrollout" batch dev "$work/gen/list.txt" --project "$work/gen/project" >"$work/batch.out" 2>&1 || {
  echo "the batch failed:" >&2; tail -30 "$work/batch.out" >&2; exit 2; }
deployed=$(psql -X -At -h 127.0.0.1 -p "$port" -U postgres -d bench -c \
  "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'bench'")

scan_ms=(); wall_us=()
for _ in $(seq 1 "$runs"); do
  t0=$(bench_now_us)
  code=0; "$bin/pgrollout" drift dev --output json >"$work/drift.json" 2>"$work/drift.err" || code=$?
  wall_us+=($(( $(bench_now_us) - t0 )))
  [[ $code == 0 ]] || { echo "drift exited $code on an untouched database:" >&2; head -c 2000 "$work/drift.json" "$work/drift.err" >&2; exit 2; }
  scan_ms+=($(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["scan_ms"])' "$work/drift.json"))
done
checked=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["routines_checked"])' "$work/drift.json")

# One hand edit among 5,000 is found.
psql -q -h 127.0.0.1 -p "$port" -U postgres -d bench -c \
  "CREATE OR REPLACE FUNCTION bench.f0000(x integer) RETURNS integer LANGUAGE sql STABLE AS \$\$ SELECT x + 1 \$\$"
code=0; "$bin/pgrollout" drift dev >"$work/drift.txt" 2>&1 || code=$?
found=$(grep -c "changed by hand" "$work/drift.txt" || true)

python3 - "${scan_ms[*]}" "${wall_us[*]}" "$deployed" "$checked" "$code" "$found" "$(bench_peak_rss_kb "$agent_pid")" <<'PY'
import os, statistics, sys
scan = [int(t) for t in sys.argv[1].split()]
wall = [int(t) / 1000 for t in sys.argv[2].split()]
deployed, checked, code, found, agent_kb = map(int, sys.argv[3:])
print(f"routines in the database: {deployed} deployed by pgrollout, {checked} checked by the scan ({os.environ['BENCH_BUILD']}, localhost, mutual TLS)")
print(f"agent scan (catalog + ledger query and judging): median {statistics.median(scan):6.1f} ms   max {max(scan)} ms   (target < 200 ms)")
print(f"pgrollout drift, whole command:                  median {statistics.median(wall):6.1f} ms   max {max(wall):.1f} ms")
print(f"after one hand edit: exit {code}, {found} routine(s) reported changed (expected exit 4, 1)")
print(f"agent peak RSS: {agent_kb / 1024:.1f} MiB")
PY

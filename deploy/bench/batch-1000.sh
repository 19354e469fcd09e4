#!/usr/bin/env bash
# Benchmark: a batch of 1,000 interdependent routines (mixed SQL and PL/pgSQL,
# overloads, a grant on every routine, a smoke test on a tenth), shuffled,
# deployed by `pgrollout batch` through controller and agent into a fresh
# database — next to `psql -1 -f` of the same definitions into another fresh
# database of the same cluster, in the same run. Prints the ratio and the
# peak memory of the agent and the controller.
#
# The machine is shared and noisy, so it does RUNS rounds (default 5), each
# with two fresh databases, psql and pgrollout alternating, and reports every
# round and the median of each.
#
#   deploy/bench/batch-1000.sh [routines] [runs]      (default 1000 5)
set -euo pipefail
routines=${1:-1000}
runs=${2:-5}
source "$(dirname "$0")/lib.sh"
bench_setup

python3 deploy/bench/generate_batch.py "$routines" "$work/gen" >/dev/null
fresh_db() {
  psql -q -h 127.0.0.1 -p "$port" -U postgres -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1"
  psql -q -h 127.0.0.1 -p "$port" -U postgres -d "$1" -c \
    "CREATE SCHEMA bench; DO \$\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'bench_app') THEN CREATE ROLE bench_app; END IF; END \$\$"
}

psql_times=(); pgrollout_times=()
for round in $(seq 1 "$runs"); do
  fresh_db plain
  fresh_db bench
  t0=$(bench_now_us)
  psql -X -q -h 127.0.0.1 -p "$port" -U postgres -d plain -v ON_ERROR_STOP=1 -1 -f "$work/gen/plain.sql" >/dev/null
  psql_times+=($(( $(bench_now_us) - t0 )))

  t0=$(bench_now_us)
  "$bin/pgrollout" batch dev "$work/gen/list.txt" --project "$work/gen/project" >"$work/batch.out" 2>&1 || {
    echo "the batch failed:" >&2; tail -30 "$work/batch.out" >&2; exit 2; }
  pgrollout_times+=($(( $(bench_now_us) - t0 )))
  deployed=$(psql -X -At -h 127.0.0.1 -p "$port" -U postgres -d bench -c \
    "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'bench'")
  [[ $deployed == "$routines" ]] || { echo "round $round deployed $deployed of $routines routines" >&2; exit 2; }
done

python3 - "${psql_times[*]}" "${pgrollout_times[*]}" "$routines" "$(bench_peak_rss_kb "$agent_pid")" "$(bench_peak_rss_kb "$controller_pid")" <<'PY'
import os, statistics, sys
build = os.environ['BENCH_BUILD']
psql = [int(t) for t in sys.argv[1].split()]
roll = [int(t) for t in sys.argv[2].split()]
routines, agent_kb, controller_kb = map(int, sys.argv[3:])
print(f"routines deployed: {routines} per round, {len(psql)} rounds (mutual TLS, {build}, localhost)")
for i, (p, r) in enumerate(zip(psql, roll), 1):
    print(f"  round {i}: psql -1 -f {p / 1e6:5.2f} s   pgrollout batch {r / 1e6:5.2f} s   ratio {r / p:5.2f}")
p, r = statistics.median(psql), statistics.median(roll)
print(f"psql -1 -f:       {p / 1e6:7.2f} s  median (apply + grants only)")
print(f"pgrollout batch:  {r / 1e6:7.2f} s  median (parse, order, backup, apply, grants, ledger, smoke x2, CLI included)")
print(f"ratio:            {r / p:7.2f}   of the medians (target <= 1.3)")
print(f"agent peak RSS:   {agent_kb / 1024:7.1f} MiB (target <= 100)")
print(f"controller peak RSS: {controller_kb / 1024:4.1f} MiB (target <= 150)")
PY
grep -E "^Result:|^Status:" "$work/batch.out"
echo "where the time went in the last round (agent steps):"
grep -E "^  (\[ok\]|\[FAIL\]) " "$work/batch.out"
t0=$(bench_now_us)
"$bin/pgrollout" batch dev "$work/gen/list.txt" --project "$work/gen/project" --dry-run >/dev/null
echo "CLI alone (load, parse, order; --dry-run): $(( ($(bench_now_us) - t0) / 1000 )) ms"
if [[ -n ${BENCH_HOLD:-} ]]; then
  echo "holding the set-up: PGROLLOUT_ADDR=$PGROLLOUT_ADDR work=$work port=$port (Ctrl-C ends)"
  printf 'export PGROLLOUT_ADDR=%q PGROLLOUT_CA=%q PGROLLOUT_CERT=%q PGROLLOUT_KEY=%q PGPASSWORD=%q work=%q port=%q bin=%q\n' \
    "$PGROLLOUT_ADDR" "$PGROLLOUT_CA" "$PGROLLOUT_CERT" "$PGROLLOUT_KEY" "$PGPASSWORD" "$work" "$port" "$bin" >/tmp/bench-hold.env
  sleep infinity
fi

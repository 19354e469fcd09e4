#!/usr/bin/env bash
# Benchmark: a batch of 1,000 interdependent routines (mixed SQL and PL/pgSQL,
# overloads, a grant on every routine, a smoke test on a tenth), shuffled,
# deployed by `pgrollout batch` through controller and agent into a fresh
# database — next to `psql -1 -f` of the same definitions into another fresh
# database of the same cluster, in the same run. Prints the ratio and the
# peak memory of the agent and the controller.
#
#   deploy/bench/batch-1000.sh [routines]      (default 1000)
set -euo pipefail
routines=${1:-1000}
source "$(dirname "$0")/lib.sh"
bench_setup

python3 deploy/bench/generate_batch.py "$routines" "$work/gen" >/dev/null
setup_db() {
  psql -q -h 127.0.0.1 -p "$port" -U postgres -c "CREATE DATABASE $1"
  psql -q -h 127.0.0.1 -p "$port" -U postgres -d "$1" -c \
    "CREATE SCHEMA bench; DO \$\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'bench_app') THEN CREATE ROLE bench_app; END IF; END \$\$"
}
setup_db plain
psql -q -h 127.0.0.1 -p "$port" -U postgres -d bench -c "CREATE SCHEMA bench; DO \$\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'bench_app') THEN CREATE ROLE bench_app; END IF; END \$\$"

t0=$(bench_now_us)
psql -X -q -h 127.0.0.1 -p "$port" -U postgres -d plain -v ON_ERROR_STOP=1 -1 -f "$work/gen/plain.sql" >/dev/null
psql_us=$(( $(bench_now_us) - t0 ))

t0=$(bench_now_us)
"$bin/pgrollout" batch dev "$work/gen/list.txt" --project "$work/gen/project" >"$work/batch.out" 2>&1 || {
  echo "the batch failed:" >&2; tail -30 "$work/batch.out" >&2; exit 2; }
pgrollout_us=$(( $(bench_now_us) - t0 ))

deployed=$(psql -X -At -h 127.0.0.1 -p "$port" -U postgres -d bench -c \
  "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'bench'")
python3 - "$psql_us" "$pgrollout_us" "$deployed" "$(bench_peak_rss_kb "$agent_pid")" "$(bench_peak_rss_kb "$controller_pid")" <<'PY'
import sys
psql_us, roll_us, deployed, agent_kb, controller_kb = map(int, sys.argv[1:])
print(f"routines deployed: {deployed} (mutual TLS, release build, localhost)")
print(f"psql -1 -f:       {psql_us / 1e6:7.2f} s  (apply + grants only)")
print(f"pgrollout batch:  {roll_us / 1e6:7.2f} s  (parse, order, backup, apply, grants, ledger, smoke x2, CLI included)")
print(f"ratio:            {roll_us / psql_us:7.2f}   (target <= 1.3)")
print(f"agent peak RSS:   {agent_kb / 1024:7.1f} MiB (target <= 100)")
print(f"controller peak RSS: {controller_kb / 1024:4.1f} MiB (target <= 150)")
PY
grep -E "^Result:|^Status:" "$work/batch.out"
echo "where the time went (agent steps):"
grep -E "^  (✅|❌) " "$work/batch.out"
t0=$(bench_now_us)
"$bin/pgrollout" batch dev "$work/gen/list.txt" --project "$work/gen/project" --dry-run >/dev/null
echo "CLI alone (load, parse, order; --dry-run): $(( ($(bench_now_us) - t0) / 1000 )) ms"

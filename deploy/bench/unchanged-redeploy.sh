#!/usr/bin/env bash
# Benchmark (issue 15, "unchanged means untouched"): the 1,000-routine batch of
# batch-1000.sh deployed into a fresh database, then the very same batch again.
# The second deploy finds every routine unchanged: no CREATE, no backup, no
# grants, no smoke tests — only the ledger's `unchanged` rows. The first
# deploy starts with the CLI's parse cache empty; the redeploy finds it warm.
# Target: the
# unchanged redeploy takes at most 0.5x the first deploy. Wall time of the
# whole `pgrollout batch` command (CLI load, parse and order included).
#
#   deploy/bench/unchanged-redeploy.sh [routines] [runs]      (default 1000 5)
set -euo pipefail
routines=${1:-1000}
runs=${2:-5}
source "$(dirname "$0")/lib.sh"
bench_setup

python3 deploy/bench/generate_batch.py "$routines" "$work/gen" >/dev/null
batch() {
  "$bin/pgrollout" batch dev "$work/gen/list.txt" --project "$work/gen/project" >"$work/batch.out" 2>&1 || {
    echo "the batch failed:" >&2; tail -30 "$work/batch.out" >&2; exit 2; }
}

first_times=(); again_times=()
for round in $(seq 1 "$runs"); do
  psql -q -h 127.0.0.1 -p "$port" -U postgres -c "DROP SCHEMA IF EXISTS bench CASCADE" \
    -c "DROP SCHEMA IF EXISTS pgrollout CASCADE" -c "CREATE SCHEMA bench" \
    -c "DO \$\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'bench_app') THEN CREATE ROLE bench_app; END IF; END \$\$" -d bench
  bench_cold_cache
  t0=$(bench_now_us); batch; first_times+=($(( $(bench_now_us) - t0 ))); cp "$work/batch.out" "$work/first.out"
  t0=$(bench_now_us); batch; again_times+=($(( $(bench_now_us) - t0 )))
  grep -q "Result: 0 deployed, $routines unchanged" "$work/batch.out" || {
    echo "round $round: the redeploy did not find every routine unchanged:" >&2; tail -30 "$work/batch.out" >&2; exit 2; }
done

python3 - "${first_times[*]}" "${again_times[*]}" "$routines" "${BENCH_PROFILE:-release}" <<'PY'
import statistics, sys
first = [int(t) for t in sys.argv[1].split()]
again = [int(t) for t in sys.argv[2].split()]
print(f"routines: {sys.argv[3]} per batch, {len(first)} rounds (mutual TLS, {sys.argv[4]} build, localhost)")
for i, (f, a) in enumerate(zip(first, again), 1):
    print(f"  round {i}: first deploy {f / 1e6:5.2f} s   unchanged redeploy {a / 1e6:5.2f} s   ratio {a / f:5.2f}")
f, a = statistics.median(first), statistics.median(again)
print(f"first deploy:       {f / 1e6:6.2f} s  median")
print(f"unchanged redeploy: {a / 1e6:6.2f} s  median")
print(f"ratio:              {a / f:6.2f}   of the medians (target <= 0.5)")
PY
echo "where the time went in the last first deploy (agent steps):"; grep -E "^  (\[ok\]|\[FAIL\]|\[-\]) " "$work/first.out"
dry_run_ms() {
  local t0; t0=$(bench_now_us)
  "$bin/pgrollout" batch dev "$work/gen/list.txt" --project "$work/gen/project" --dry-run >/dev/null 2>&1
  echo $(( ($(bench_now_us) - t0) / 1000 ))
}
bench_cold_cache; cold=$(dry_run_ms); warm=$(dry_run_ms)
echo "CLI alone (load, parse, order; --dry-run): ${cold} ms with the parse cache cold (as the first deploy), ${warm} ms warm (as the redeploy)"
echo "where the time went in the last unchanged redeploy (agent steps):"
grep -E "^  (\[ok\]|\[FAIL\]|\[-\]) " "$work/batch.out"

#!/usr/bin/env bash
# Benchmark (issue 19, item 4): what the agent's check of a smoke job or watch
# probe adds on the database side (agent/src/jobs/deployed_sql.rs): for each
# routine the job names, its identity resolved as a deploy resolves it
# (`oid::regprocedure::text`, as sql/catalog_snapshot.sql) and the newest row
# of the target's ledger for it (one index probe per identity) — the agent's
# two statements: to_regclass of the ledger, then that one query. Timed with pgbench against a throwaway cluster that holds N
# deployed functions and a ledger of 3 deploys of each, for N = 1, 100, 1000.
# The in-process half (the carried plan hashed, each routine found in it) is
# timed by approvals.sh.
#
#   deploy/bench/smoke-check.sh [transactions]     (default 200)
set -euo pipefail
runs=${1:-200}
cd "$(dirname "$0")/../.."
repo=$(pwd)
pgbin=$(pg_config --bindir 2>/dev/null || ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
as_pg=(); if [[ $(id -u) -eq 0 ]]; then as_pg=(runuser -u postgres --); fi
work=$(mktemp -d /tmp/pgrollout-smoke-check.XXXXXX)
chmod 755 "$work"
[[ ${#as_pg[@]} -gt 0 ]] && chown postgres "$work"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() { "${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
"${as_pg[@]}" "$pgbin/initdb" -D "$work/data" -A trust -U bench >/dev/null
"${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/data" -o "-p $port -k $work -c listen_addresses=''" -l "$work/log" -w start >/dev/null
psql=("${as_pg[@]}" "$pgbin/psql" -h "$work" -p "$port" -U bench -d postgres -X -q -v ON_ERROR_STOP=1)
sed 's/{schema}/pgrollout/g' "$repo/agent/src/sql/ledger_ddl.sql" >"$work/ledger.sql"
"${psql[@]}" -c "CREATE SCHEMA pgrollout; CREATE SCHEMA bench"
"${psql[@]}" -f "$work/ledger.sql"
"${psql[@]}" <<'SQL'
DO $$ BEGIN
  FOR i IN 0..999 LOOP
    EXECUTE format('CREATE FUNCTION bench.f%s(x integer) RETURNS integer LANGUAGE sql AS ''SELECT x + %s''',
                   lpad(i::text, 4, '0'), i);
  END LOOP;
END $$;
-- Three deploys of each, the newest last (what a target's ledger looks like after a while).
INSERT INTO pgrollout.ledger (job_id, attempt, rollout_id, plan_id, action, identity, change, actor)
SELECT 'j-' || d, 1, 'r-' || d, 'plan-' || d, 'deploy', 'bench.f' || lpad(i::text, 4, '0') || '(integer)', 'replaced', 'bench'
FROM generate_series(1, 3) d, generate_series(0, 999) i ORDER BY d, i;
ANALYZE pgrollout.ledger;
SQL
echo "smoke-check bench (PostgreSQL $("${psql[@]}" -Atc 'SHOW server_version'), $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg), $runs transactions)"
for size in 1 100 1000; do
  # ARRAY['"bench"."f0000"(integer)', …]: the texts the agent binds as $1.
  signatures=$(python3 - "$size" <<'PY'
import sys
print(",".join("'\"bench\".\"f%04d\"(integer)'" % i for i in range(int(sys.argv[1]))))
PY
)
  {
    echo "SELECT to_regclass('pgrollout.ledger') IS NOT NULL;"
    echo "SELECT p.oid IS NOT NULL, l.id, l.plan_id, l.action FROM unnest(ARRAY[$signatures]::text[]) WITH ORDINALITY AS wanted(signature, position) LEFT JOIN pg_proc p ON p.oid = to_regprocedure(wanted.signature)::oid LEFT JOIN LATERAL (SELECT x.id, x.plan_id, x.action FROM pgrollout.ledger x WHERE x.identity = p.oid::regprocedure::text ORDER BY x.id DESC LIMIT 1) l ON true ORDER BY wanted.position;"
  } >"$work/check-$size.sql"
  chmod 644 "$work/check-$size.sql"
  out=$("${as_pg[@]}" "$pgbin/pgbench" -h "$work" -p "$port" -U bench -n -t "$runs" -f "$work/check-$size.sql" postgres 2>&1) ||
    { echo "$out" >&2; exit 1; }
  latency=$(awk '/latency average/ {print $4}' <<<"$out")
  printf '%5d routine(s): the two statements, latency average %s ms\n' "$size" "$latency"
done

#!/usr/bin/env bash
# Scale benchmark (issue 24): one fleet environment of N databases in two
# clusters (zones eu and us) behind 3 agents (eu-1 and eu-2 share the eu
# cluster, us-1 serves the us one), a 10-routine plan deployed with
# max_concurrent = C. Prints the fleet deploy's wall time against a `psql`
# loop applying the same CREATEs to the same databases with the same
# parallelism (xargs -P C), the peak RSS of controller and agents, and the
# time from a failure injected into the middle wave to the CLI's exit (halt).
# Usage: deploy/bench/fleet-1000.sh [DATABASES=1000] [MAX_CONCURRENT=50]
# BENCH_PROFILE=dev / BENCH_SKIP_BUILD=1 as in lib.sh.
set -euo pipefail
databases=${1:-1000}
parallel=${2:-50}
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source deploy/bench/lib.sh
repo=$(pwd)
deploy/install-prerequisites.sh
profile=${BENCH_PROFILE:-release}
if [[ ${BENCH_SKIP_BUILD:-} != 1 ]]; then cargo build --quiet --profile "$profile" --workspace --bins; fi
bin="${CARGO_TARGET_DIR:-$repo/target}/$([[ $profile == dev ]] && echo debug || echo "$profile")"
pgbin=$(pg_config --bindir 2>/dev/null || ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
as_pg=(); if [[ $(id -u) -eq 0 ]]; then as_pg=(runuser -u postgres --); fi
ulimit -n "$(ulimit -Hn)"

work=$(mktemp -d /tmp/pgrollout-fleet-bench.XXXXXX); chmod 755 "$work"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for zone in eu us; do "${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/data-$zone" -m immediate stop >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT
[[ ${#as_pg[@]} -gt 0 ]] && chown postgres "$work"
head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$work/password"; chmod 644 "$work/password"
export PGPASSWORD; PGPASSWORD=$(cat "$work/password")

# Two clusters; each job holds two sessions (the deploy's and the
# post-commit smoke's), so room for 2 × C of them plus psql's.
declare -A port
for zone in eu us; do
  port[$zone]=$(bench_free_port)
  "${as_pg[@]}" "$pgbin/initdb" -D "$work/data-$zone" -U postgres -A scram-sha-256 --pwfile="$work/password" >/dev/null
  "${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/data-$zone" -l "$work/pg-$zone.log" -w -o \
    "-p ${port[$zone]} -c listen_addresses=127.0.0.1 -c unix_socket_directories='$work' -c max_connections=$((4 * parallel + 20)) -c fsync=off" \
    start >/dev/null
done
# Database i lives in zone eu (agents eu-1, eu-2 alternately) for i ≤ 2N/3, else in us (us-1).
zone_of() { if (( $1 * 3 <= databases * 2 )); then echo eu; else echo us; fi; }
agent_of() { if [[ $(zone_of "$1") == us ]]; then echo us-1; else echo "eu-$(( $1 % 2 + 1 ))"; fi; }
echo "creating $databases databases…"
for i in $(seq 1 "$databases"); do printf 'CREATE DATABASE d%04d;\n' "$i" >>"$work/create-$(zone_of "$i").sql"; done
for zone in eu us; do psql -q -h 127.0.0.1 -p "${port[$zone]}" -U postgres -d postgres -f "$work/create-$zone.sql"; done

ca="$work/ca"
"$bin/pgrollout" ca init --dir "$ca" --trust-domain bench.local >/dev/null
"$bin/pgrollout" ca issue controller --dir "$ca" --name main --ip 127.0.0.1 >/dev/null
for agent in eu-1 eu-2 us-1; do "$bin/pgrollout" ca issue agent --dir "$ca" --zone "${agent%-*}" --name "$agent" >/dev/null; done
"$bin/pgrollout" ca issue operator --dir "$ca" --name bench >/dev/null
operators=$(bench_free_port); agents=$(bench_free_port)
cat >"$work/controller.toml" <<TOML
[listen]
operators = "127.0.0.1:$operators"
agents = "127.0.0.1:$agents"
[store]
path = "$work/c.sqlite"
[deployment]
job_timeout = "30m"
[environments.prod]
zones = ["eu", "us"]
labels = { fleet = "bench" }
[environments.prod.rollout]
canary_count = 1
max_concurrent = $parallel
[tls]
ca = "$ca/ca.pem"
cert = "$ca/controller-main.pem"
key = "$ca/controller-main.key"
trust_domain = "bench.local"
[operators]
bench = ["deployer", "viewer"]
TOML
for agent in eu-1 eu-2 us-1; do
  zone=${agent%-*}
  cat >"$work/agent-$agent.toml" <<TOML
name = "$agent"
zone = "$zone"
controller = "https://127.0.0.1:$agents"
backup_dir = "$work/backups-$agent"
[tls]
ca = "$ca/ca.pem"
cert = "$ca/agent-$zone-$agent.pem"
key = "$ca/agent-$zone-$agent.key"
TOML
done
for i in $(seq 1 "$databases"); do
  printf '[[targets]]\nname = "d%04d"\nlabels = { fleet = "bench" }\nhost = "127.0.0.1"\nport = %s\ndbname = "d%04d"\nuser = "postgres"\npassword_file = "%s"\n' \
    "$i" "${port[$(zone_of "$i")]}" "$i" "$work/password" >>"$work/agent-$(agent_of "$i").toml"
done
"$bin/pgrollout" serve --config "$work/controller.toml" >"$work/controller.log" 2>&1 & pids+=($!); controller_pid=$!
bench_wait_for_line "$work/controller.log" "controller listening"
declare -A agent_pid
for agent in eu-1 eu-2 us-1; do
  "$bin/pgrollout-agent" --config "$work/agent-$agent.toml" >"$work/agent-$agent.log" 2>&1 & pids+=($!); agent_pid[$agent]=$!
  bench_wait_for_line "$work/agent-$agent.log" "connected to controller"
done
export PGROLLOUT_ADDR="https://127.0.0.1:$operators" PGROLLOUT_CA="$ca/ca.pem"
export PGROLLOUT_CERT="$ca/operator-bench.pem" PGROLLOUT_KEY="$ca/operator-bench.key"
export PGROLLOUT_CACHE_DIR="$work/cache"

# The plan: 10 overloads of public.bench_f (1 to 10 integer arguments), one
# smoke test; write_plan V changes their bodies.
project="$work/project"; mkdir -p "$project/procedures"
write_plan() {
  : >"$work/plan.sql"
  local args="a1 integer" n
  echo "CREATE OR REPLACE FUNCTION public.bench_f(a1 integer) RETURNS integer LANGUAGE plpgsql AS \$\$ BEGIN IF to_regclass('public.bench_poison') IS NOT NULL THEN RAISE EXCEPTION 'poisoned'; END IF; RETURN a1 + $1; END \$\$;" >>"$work/plan.sql"
  for n in $(seq 2 10); do
    args="$args, a$n integer"
    echo "CREATE OR REPLACE FUNCTION public.bench_f($args) RETURNS integer LANGUAGE sql AS \$\$ SELECT a1 + a$n + $1 \$\$;" >>"$work/plan.sql"
  done
  cp "$work/plan.sql" "$project/procedures/bench_f.sql"
  printf '[[smoke_tests]]\nname = "answers"\nroutine = "bench_f(integer)"\ncall = "SELECT public.bench_f(1)"\n' >"$project/procedures/bench_f.toml"
}
# Prints each line of stdin prefixed with the time in µs.
stamp() { while IFS= read -r line; do printf '%s %s\n' "$(bench_now_us)" "$line"; done; }

write_plan 1
start=$(bench_now_us)
set +e
"$bin/pgrollout" deploy bench_f prod --project "$project" --agent-wait 30s >"$work/deploy.out" 2>&1
code=$?
set -e
fleet_us=$(( $(bench_now_us) - start ))
grep -E '^Summary:' "$work/deploy.out" || { tail -n 30 "$work/deploy.out"; exit 1; }
[[ $code == 0 ]] || { echo "fleet deploy exited $code"; tail -n 30 "$work/deploy.out"; exit 1; }

# The same CREATEs with psql, C at a time, one transaction per database.
start=$(bench_now_us)
for i in $(seq 1 "$databases"); do printf '%s d%04d\n' "${port[$(zone_of "$i")]}" "$i"; done |
  xargs -P "$parallel" -n 2 sh -c 'psql -q -X -1 -h 127.0.0.1 -p "$0" -U postgres -d "$1" -f "'"$work"'/plan.sql" >/dev/null'
psql_us=$(( $(bench_now_us) - start ))

# A failure in the middle wave: the database in the middle refuses v2's smoke.
middle=$(printf 'd%04d' $(( databases / 2 )))
psql -q -h 127.0.0.1 -p "${port[$(zone_of $(( databases / 2 )))]}" -U postgres -d "$middle" -c "CREATE TABLE public.bench_poison ()"
write_plan 2
set +e
"$bin/pgrollout" deploy bench_f prod --project "$project" --agent-wait 30s 2>&1 | stamp >"$work/halt.out"
set -e
failed_at=$(grep -m1 -E "\[FAIL\] +[a-z]+/$middle .*(failed|unknown), exit" "$work/halt.out" | cut -d' ' -f1)
ended_at=$(tail -n 1 "$work/halt.out" | cut -d' ' -f1)
grep -E 'Summary:' "$work/halt.out" | cut -d' ' -f2- || true

echo "build:                 $profile ($( [[ $profile == release ]] && echo timing || echo 'not a timing' ))"
echo "databases:             $databases in 2 clusters, 3 agents, 2 zones; max_concurrent $parallel; 10 routines"
echo "fleet deploy:          $(( fleet_us / 1000 )) ms"
echo "psql loop (-P $parallel):    $(( psql_us / 1000 )) ms"
echo "ratio:                 $(python3 -c "print(f'{$fleet_us / $psql_us:.2f}')")"
echo "controller peak RSS:   $(( $(bench_peak_rss_kb "$controller_pid") / 1024 )) MiB"
for agent in eu-1 eu-2 us-1; do
  echo "agent $agent peak RSS:   $(( $(bench_peak_rss_kb "${agent_pid[$agent]}") / 1024 )) MiB"
done
if [[ -n ${failed_at:-} ]]; then
  echo "halt: failure on $middle to exit: $(( (ended_at - failed_at) / 1000 )) ms"
else
  echo "halt: no failure line for $middle found:"; tail -n 20 "$work/halt.out"
fi

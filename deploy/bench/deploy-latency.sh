#!/usr/bin/env bash
# Benchmark: wall time of one `pgrollout deploy` (CLI → controller → agent →
# PostgreSQL, with backup, ledger, grants and both smoke phases) next to
# `psql -1 -f` of the same file, on localhost, same cluster, same password auth.
# Also reports the agent's and the controller's resident memory when idle.
#
#   deploy/bench/deploy-latency.sh [runs]      (default 30 runs each)
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)
runs=${1:-30}

deploy/install-prerequisites.sh
cargo build --quiet --release --workspace --bins
bin="$repo/target/release"
pgbin=$(pg_config --bindir 2>/dev/null || ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
as_pg=(); if [[ $(id -u) -eq 0 ]]; then as_pg=(runuser -u postgres --); fi

work=$(mktemp -d /tmp/pgrollout-bench.XXXXXX); chmod 755 "$work"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  "${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for_line() { until grep -q "$2" "$1" 2>/dev/null; do sleep 0.05; done; }

head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$work/password"; chmod 644 "$work/password"
[[ ${#as_pg[@]} -gt 0 ]] && chown postgres "$work"
port=$(free_port)
"${as_pg[@]}" "$pgbin/initdb" -D "$work/data" -U postgres -A scram-sha-256 --pwfile="$work/password" >/dev/null
"${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/data" -l "$work/pg.log" -w \
  -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories='$work'" start >/dev/null
export PGPASSWORD; PGPASSWORD=$(cat "$work/password")
psql -q -h 127.0.0.1 -p "$port" -U postgres -c "CREATE DATABASE bench"
psql -q -h 127.0.0.1 -p "$port" -U postgres -d bench -v ON_ERROR_STOP=1 -f deploy/examples/project/schema.sql >/dev/null

# Mutual TLS everywhere, as in production: certificates from the built-in CA.
ca="$work/ca"
"$bin/pgrollout" ca init --dir "$ca" --trust-domain bench.local >/dev/null
"$bin/pgrollout" ca issue controller --dir "$ca" --name main --ip 127.0.0.1 >/dev/null
"$bin/pgrollout" ca issue agent --dir "$ca" --zone dev --name dev-1 >/dev/null
"$bin/pgrollout" ca issue operator --dir "$ca" --name bench >/dev/null
operators=$(free_port); agents=$(free_port)
cat >"$work/controller.toml" <<TOML
[listen]
operators = "127.0.0.1:$operators"
agents = "127.0.0.1:$agents"
[store]
path = "$work/c.sqlite"
[environments.dev]
[tls]
ca = "$ca/ca.pem"
cert = "$ca/controller-main.pem"
key = "$ca/controller-main.key"
trust_domain = "bench.local"
[operators]
bench = ["deployer"]
TOML
cat >"$work/agent.toml" <<TOML
name = "dev-1"
zone = "dev"
controller = "https://127.0.0.1:$agents"
backup_dir = "$work/backups"
[tls]
ca = "$ca/ca.pem"
cert = "$ca/agent-dev-dev-1.pem"
key = "$ca/agent-dev-dev-1.key"
[[targets]]
name = "main"
host = "127.0.0.1"
port = $port
dbname = "bench"
user = "postgres"
password_file = "$work/password"
TOML
"$bin/pgrollout" serve --config "$work/controller.toml" >"$work/controller.log" 2>&1 & pids+=($!); controller_pid=$!
wait_for_line "$work/controller.log" "controller listening"
"$bin/pgrollout-agent" --config "$work/agent.toml" >"$work/agent.log" 2>&1 & pids+=($!); agent_pid=$!
wait_for_line "$work/agent.log" "connected to controller"

rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
sleep 2 # let the agent settle into idle before reading its memory
agent_idle_rss=$(rss_kb "$agent_pid"); controller_idle_rss=$(rss_kb "$controller_pid")

export PGROLLOUT_ADDR="https://127.0.0.1:$operators" PGROLLOUT_CA="$ca/ca.pem"
export PGROLLOUT_CERT="$ca/operator-bench.pem" PGROLLOUT_KEY="$ca/operator-bench.key"
file=deploy/examples/project/procedures/reconcilemupstream.sql
"$bin/pgrollout" deploy reconcilemupstream dev --project deploy/examples/project >/dev/null  # warm-up, creates it

ms_now() { date +%s%N; }
time_runs() { # label command...
  local out="$work/$1.times"; : >"$out"
  for ((i = 0; i < runs; i++)); do
    local t0; t0=$(ms_now)
    "${@:2}" >/dev/null 2>&1 || { echo "run of $1 failed" >&2; exit 2; }
    echo $(( ($(ms_now) - t0) / 1000 )) >>"$out"
  done
}
time_runs psql psql -X -q -h 127.0.0.1 -p "$port" -U postgres -d bench -v ON_ERROR_STOP=1 -1 -f "$file"
time_runs pgrollout "$bin/pgrollout" deploy reconcilemupstream dev --project deploy/examples/project
agent_after_rss=$(rss_kb "$agent_pid")

python3 - "$work" "$runs" "$agent_idle_rss" "$agent_after_rss" "$controller_idle_rss" <<'PY'
import statistics, sys
work, runs, agent_idle, agent_after, controller_idle = sys.argv[1], int(sys.argv[2]), *map(int, sys.argv[3:])
def load(name):
    return sorted(int(x) / 1000 for x in open(f"{work}/{name}.times"))
def p(xs, q): return xs[min(len(xs) - 1, int(q * len(xs)))]
psql, roll = load("psql"), load("pgrollout")
print(f"runs: {runs} each, localhost, scram-sha-256 password auth, mutual TLS CLI->controller->agent, release build")
print(f"{'':28}{'p50 ms':>10}{'p95 ms':>10}{'min ms':>10}")
for label, xs in (("psql -1 -f (apply only)", psql), ("pgrollout deploy (full)", roll)):
    print(f"{label:28}{statistics.median(xs):10.1f}{p(xs, .95):10.1f}{xs[0]:10.1f}")
print(f"overhead (p50): {statistics.median(roll) - statistics.median(psql):.1f} ms   (target: <= 150 ms)")
print(f"agent RSS idle: {agent_idle / 1024:.1f} MiB, after {runs} deploys: {agent_after / 1024:.1f} MiB   (target idle: < 20 MB)")
print(f"controller RSS idle: {controller_idle / 1024:.1f} MiB")
PY

#!/usr/bin/env bash
# The local demo: three throwaway PostgreSQL clusters (dev, qa, prod), a
# controller, one agent per zone, and a real deploy of the sample project's
# reconcilemupstream to dev — then the catalog, the ledger and the backup file
# it left, and the smoke test on its own.
#
#   deploy/demo.sh                  run it, then stop everything
#   PGROLLOUT_DEMO_KEEP=1 deploy/demo.sh   leave it running to play with
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

deploy/install-prerequisites.sh
echo "pgrollout demo: building (the first build takes a few minutes)"
cargo build --quiet --workspace --bins
bin="$repo/target/debug"

pg_bindir() {
  local dir
  dir=$(pg_config --bindir 2>/dev/null || true)
  if [[ -n $dir && -x $dir/initdb ]]; then echo "$dir"; return; fi
  dir=$(dirname "$(command -v initdb 2>/dev/null || true)")
  if [[ -x $dir/initdb ]]; then echo "$dir"; return; fi
  ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1
}
pgbin=$(pg_bindir)

# PostgreSQL refuses to run as root: then the clusters run as `postgres`.
as_pg=()
if [[ $(id -u) -eq 0 ]]; then as_pg=(runuser -u postgres --); fi

demo=$(mktemp -d /tmp/pgrollout-demo.XXXXXX)
chmod 755 "$demo"
pids=()
stop_all() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for zone in dev qa prod; do
    [[ -d $demo/$zone/data ]] && "${as_pg[@]}" "$pgbin/pg_ctl" -D "$demo/$zone/data" -m fast stop >/dev/null 2>&1 || true
  done
  rm -rf "$demo"
}
if [[ ${PGROLLOUT_DEMO_KEEP:-0} != 1 ]]; then trap stop_all EXIT; fi

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_for_line() { # file text seconds
  local deadline=$((SECONDS + $3))
  until grep -q "$2" "$1" 2>/dev/null; do
    if ((SECONDS > deadline)); then echo "timed out waiting for '$2' in $1:" >&2; tail -20 "$1" >&2; exit 2; fi
    sleep 0.1
  done
}

declare -A port
for zone in dev qa prod; do
  mkdir -p "$demo/$zone"
  head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$demo/$zone/password"
  chmod 600 "$demo/$zone/password"
  [[ ${#as_pg[@]} -gt 0 ]] && chown -R postgres "$demo/$zone"
  port[$zone]=$(free_port)
  "${as_pg[@]}" "$pgbin/initdb" -D "$demo/$zone/data" -U postgres -A scram-sha-256 \
    --pwfile="$demo/$zone/password" -E UTF8 --locale=C >/dev/null
  "${as_pg[@]}" "$pgbin/pg_ctl" -D "$demo/$zone/data" -l "$demo/$zone/postgres.log" -w \
    -o "-p ${port[$zone]} -c listen_addresses=127.0.0.1 -c unix_socket_directories='$demo/$zone'" start >/dev/null
  export PGPASSWORD; PGPASSWORD=$(cat "$demo/$zone/password")
  psql -q -h 127.0.0.1 -p "${port[$zone]}" -U postgres -c "CREATE DATABASE perseus_$zone"
  psql -q -h 127.0.0.1 -p "${port[$zone]}" -U postgres -d "perseus_$zone" -v ON_ERROR_STOP=1 \
    -f deploy/examples/project/schema.sql >/dev/null
  echo "pgrollout demo: PostgreSQL for $zone on 127.0.0.1:${port[$zone]} (database perseus_$zone)"
done
unset PGPASSWORD

# A CA of our own, and a certificate for every party: the controller, an
# agent per zone (its zone is written in its certificate), and you.
ca="$demo/ca"
"$bin/pgrollout" ca init --dir "$ca" --trust-domain demo.pgrollout >/dev/null
"$bin/pgrollout" ca issue controller --dir "$ca" --name main --dns localhost --ip 127.0.0.1 >/dev/null
for zone in dev qa prod; do
  "$bin/pgrollout" ca issue agent --dir "$ca" --zone "$zone" --name "$zone-1" >/dev/null
done
"$bin/pgrollout" ca issue operator --dir "$ca" --name demo-operator >/dev/null
echo "pgrollout demo: CA in $ca (trust domain demo.pgrollout), certificates for the controller, 3 agents and demo-operator"

operators=$(free_port); agents=$(free_port)
cat >"$demo/controller.toml" <<TOML
[listen]
operators = "127.0.0.1:$operators"
agents = "127.0.0.1:$agents"
[store]
path = "$demo/controller.sqlite"
[environments.dev]
zone = "dev"
[environments.qa]
zone = "qa"
[environments.prod]
zone = "prod"
[tls]
ca = "$ca/ca.pem"
cert = "$ca/controller-main.pem"
key = "$ca/controller-main.key"
trust_domain = "demo.pgrollout"
[operators]
demo-operator = ["deployer", "viewer"]
TOML
"$bin/pgrollout" serve --config "$demo/controller.toml" >"$demo/controller.log" 2>&1 &
pids+=($!)
wait_for_line "$demo/controller.log" "controller listening" 20

for zone in dev qa prod; do
  cat >"$demo/agent-$zone.toml" <<TOML
name = "$zone-1"
zone = "$zone"
controller = "https://127.0.0.1:$agents"
backup_dir = "$demo/$zone/backups"
[tls]
ca = "$ca/ca.pem"
cert = "$ca/agent-$zone-$zone-1.pem"
key = "$ca/agent-$zone-$zone-1.key"
[[targets]]
name = "main"
host = "127.0.0.1"
port = ${port[$zone]}
dbname = "perseus_$zone"
user = "postgres"
password_file = "$demo/$zone/password"
TOML
  "$bin/pgrollout-agent" --config "$demo/agent-$zone.toml" >"$demo/agent-$zone.log" 2>&1 &
  pids+=($!)
done
for zone in dev qa prod; do wait_for_line "$demo/agent-$zone.log" "connected to controller" 20; done

export PGROLLOUT_ADDR="https://127.0.0.1:$operators"
export PGROLLOUT_CA="$ca/ca.pem" PGROLLOUT_CERT="$ca/operator-demo-operator.pem" PGROLLOUT_KEY="$ca/operator-demo-operator.key"
echo
echo "\$ pgrollout agents"
"$bin/pgrollout" agents
echo
echo "\$ pgrollout deploy reconcilemupstream dev --project deploy/examples/project"
set +e
"$bin/pgrollout" deploy reconcilemupstream dev --project deploy/examples/project
code=$?
set -e
echo "(exit code $code)"
echo
echo "The catalog, the ledger and the backup in dev now say:"
PGPASSWORD=$(cat "$demo/dev/password") psql -h 127.0.0.1 -p "${port[dev]}" -U postgres -d perseus_dev -P pager=off -c \
  "SELECT oid::regprocedure AS routine, proacl FROM pg_proc WHERE proname = 'reconcilemupstream'" -c \
  "SELECT id, action, identity, change, actor, left(new_sha256, 12) AS new_sha256, applied_at FROM pgrollout.ledger ORDER BY id"
ls -l "$demo/dev/backups/main/"
echo
echo "\$ pgrollout smoke reconcilemupstream dev --project deploy/examples/project"
"$bin/pgrollout" smoke reconcilemupstream dev --project deploy/examples/project | tail -n 4
if [[ ${PGROLLOUT_DEMO_KEEP:-0} == 1 ]]; then
  echo
  echo "Left running in $demo (logs there). Try:"
  echo "  export PGROLLOUT_ADDR=$PGROLLOUT_ADDR PGROLLOUT_CA=$PGROLLOUT_CA PGROLLOUT_CERT=$PGROLLOUT_CERT PGROLLOUT_KEY=$PGROLLOUT_KEY"
  echo "  $bin/pgrollout deploy addarc qa --project deploy/examples/project"
  echo "Stop with: kill ${pids[*]}; and pg_ctl -D $demo/<zone>/data stop"
fi
exit "$code"

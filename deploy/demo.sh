#!/usr/bin/env bash
# The local demo, one command: three throwaway PostgreSQL clusters (dev, qa,
# prod), a controller, one agent per zone, and the sample project's
# reconcilemupstream promoted the way a team would — dev, then qa after one
# approval, then prod after two approvals by two different operators — then a
# rollback in prod, the routine's history, the prod deploy's log and a check
# of the audit log. Everything runs over mutual TLS with certificates the
# demo issues itself (`pgrollout ca`), one per operator.
#
#   deploy/demo.sh                  run it, then stop everything
#   deploy/demo.sh --store postgres the controller's store in PostgreSQL (a
#                                   database of the dev cluster) instead of SQLite,
#                                   with two controllers on it (the agents list
#                                   both) and, at the end, a failover: the first
#                                   is killed with SIGKILL and the second carries on
#   PGROLLOUT_DEMO_KEEP=1 deploy/demo.sh   leave it running to play with
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

store=sqlite
while [[ $# -gt 0 ]]; do
  case $1 in
    --store) store=${2:-}; shift 2 || shift ;;
    --store=*) store=${1#--store=}; shift ;;
    *) echo "usage: deploy/demo.sh [--store sqlite|postgres]" >&2; exit 1 ;;
  esac
done
if [[ $store != sqlite && $store != postgres ]]; then
  echo "pgrollout demo: --store takes sqlite or postgres, not '$store'" >&2
  exit 1
fi

deploy/install-prerequisites.sh --demo
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

# PostgreSQL refuses to run as root: then the clusters run as `postgres`,
# from a directory it may enter (root's home, where the clone often is, is not).
as_pg=()
if [[ $(id -u) -eq 0 ]]; then as_pg=(runuser -u postgres -- env --chdir=/); fi

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

# Sets variable $1 to a port nothing listens on (read from /proc: a fresh
# machine may have no python or ss), never one handed out before in this run.
taken=" "
free_port() {
  local candidate
  while :; do
    candidate=$((20000 + RANDOM % 40000))
    [[ $taken == *" $candidate "* ]] && continue
    grep -qi -- "$(printf ':%04X ' "$candidate")" /proc/net/tcp /proc/net/tcp6 2>/dev/null && continue
    taken+="$candidate "
    printf -v "$1" '%s' "$candidate"
    return
  done
}

wait_for_line() { # file text seconds
  local deadline=$((SECONDS + $3))
  until grep -q "$2" "$1" 2>/dev/null; do
    if ((SECONDS > deadline)); then echo "timed out waiting for '$2' in $1:" >&2; tail -20 "$1" >&2; exit 2; fi
    sleep 0.1
  done
}

out="$demo/last-output"
heading() { printf '\n=== %s\n' "$*"; }
# Runs a pgrollout command as an operator, showing it as typed; its output is
# kept in $out, its exit code in $code (5: parked, waiting for approvals).
as_operator() { # operator args...
  local who=$1; shift
  printf '\n[%s] $ pgrollout %s\n' "$who" "$*"
  set +e
  PGROLLOUT_CERT="$ca/operator-$who.pem" PGROLLOUT_KEY="$ca/operator-$who.key" "$bin/pgrollout" "$@" 2>&1 |
    tee "$out"
  code=${PIPESTATUS[0]}
  set -e
  echo "(exit code $code)"
}
expect() { # code what
  if [[ $code -ne $1 ]]; then echo "pgrollout demo: expected exit $1 from $2, got $code" >&2; exit 1; fi
}
request_in() { grep -o 'p-[0-9a-f]*-[0-9a-f]*' "$1" | head -n 1; }
rollout_in() { grep -o 'r-[0-9a-f]*-[0-9a-f]*' "$1" | head -n 1; }

heading "Setting up: a PostgreSQL per zone, a CA, a controller, an agent per zone"
declare -A port before
for zone in dev qa prod; do
  mkdir -p "$demo/$zone"
  head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$demo/$zone/password"
  chmod 600 "$demo/$zone/password"
  [[ ${#as_pg[@]} -gt 0 ]] && chown -R postgres "$demo/$zone"
  free_port "port[$zone]"
  "${as_pg[@]}" "$pgbin/initdb" -D "$demo/$zone/data" -U postgres -A scram-sha-256 \
    --pwfile="$demo/$zone/password" -E UTF8 --locale=C >/dev/null
  "${as_pg[@]}" "$pgbin/pg_ctl" -D "$demo/$zone/data" -l "$demo/$zone/postgres.log" -w \
    -o "-p ${port[$zone]} -c listen_addresses=127.0.0.1 -c unix_socket_directories='$demo/$zone'" start >/dev/null
  export PGPASSWORD; PGPASSWORD=$(cat "$demo/$zone/password")
  psql -q -h 127.0.0.1 -p "${port[$zone]}" -U postgres -c "CREATE DATABASE perseus_$zone"
  psql -q -h 127.0.0.1 -p "${port[$zone]}" -U postgres -d "perseus_$zone" -v ON_ERROR_STOP=1 \
    -f deploy/examples/project/schema.sql >/dev/null
  echo "PostgreSQL for $zone on 127.0.0.1:${port[$zone]} (database perseus_$zone)"
done
unset PGPASSWORD

# --store postgres: the controller's store is a database of the dev cluster,
# owned by a role of its own that needs no other privilege. Its password
# reaches the controller through the environment, never the config file.
store_url=""
if [[ $store == postgres ]]; then
  head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$demo/store-password"
  chmod 600 "$demo/store-password"
  PGPASSWORD=$(cat "$demo/dev/password") psql -q -h 127.0.0.1 -p "${port[dev]}" -U postgres -v ON_ERROR_STOP=1 \
    -c "CREATE ROLE pgrollout LOGIN PASSWORD '$(cat "$demo/store-password")'" \
    -c "CREATE DATABASE pgrollout_store OWNER pgrollout"
  store_url="postgres://pgrollout:$(cat "$demo/store-password")@127.0.0.1:${port[dev]}/pgrollout_store?sslmode=disable"
  echo "controller store: database pgrollout_store of the dev cluster (role pgrollout)"
fi

# A CA of our own, and a certificate for every party: the controller, an
# agent per zone (its zone is written in its certificate), the operator who
# deploys and the two who approve.
ca="$demo/ca"
"$bin/pgrollout" ca init --dir "$ca" --trust-domain demo.pgrollout >/dev/null
"$bin/pgrollout" ca issue controller --dir "$ca" --name main --dns localhost --ip 127.0.0.1 >/dev/null
for zone in dev qa prod; do
  "$bin/pgrollout" ca issue agent --dir "$ca" --zone "$zone" --name "$zone-1" >/dev/null
done
for operator in demo-operator alice bob; do
  "$bin/pgrollout" ca issue operator --dir "$ca" --name "$operator" >/dev/null
done
echo "CA in $ca (trust domain demo.pgrollout): certificates for the controller, 3 agents, demo-operator, alice and bob"

free_port operators; free_port agents
cat >"$demo/controller.toml" <<TOML
[listen]
operators = "127.0.0.1:$operators"
agents = "127.0.0.1:$agents"
$(if [[ $store == postgres ]]; then
  printf '[store]\nurl = "postgres://pgrollout@127.0.0.1:%s/pgrollout_store?sslmode=disable"\n' "${port[dev]}"
  printf '[audit]\nkey_file = "%s"\n' "$demo/audit.key"
else
  printf '[store]\npath = "%s"\n' "$demo/controller.sqlite"
fi)
[environments.dev]
zone = "dev"
[environments.qa]
zone = "qa"
promote_from = "dev"
gates = ["tests_passed"]
require_approval = true
approvals = 1
[environments.prod]
zone = "prod"
promote_from = "qa"
gates = ["tests_passed", "backup_verified"]
require_approval = true
approvals = 2
[tls]
ca = "$ca/ca.pem"
cert = "$ca/controller-main.pem"
key = "$ca/controller-main.key"
trust_domain = "demo.pgrollout"
[operators]
demo-operator = ["deployer", "approver"]
alice = ["approver"]
bob = ["approver"]
TOML
if [[ -n $store_url ]]; then
  # The URL with its password overrides the file's, from the environment.
  PGROLLOUT_CONTROLLER__STORE__URL=$store_url "$bin/pgrollout" serve --config "$demo/controller.toml" \
    >"$demo/controller.log" 2>&1 &
else
  "$bin/pgrollout" serve --config "$demo/controller.toml" >"$demo/controller.log" 2>&1 &
fi
pids+=($!)
controller_a=$!
wait_for_line "$demo/controller.log" "controller listening" 20

# With the PostgreSQL store a second controller runs beside the first: the
# same config (store, audit key file, CA) on listeners of its own. It starts
# once the first has created the audit key, so both sign with the same key.
agent_controllers="\"https://127.0.0.1:$agents\""
if [[ $store == postgres ]]; then
  free_port operators_b; free_port agents_b
  sed -e "s/^operators = .*/operators = \"127.0.0.1:$operators_b\"/" \
      -e "s/^agents = .*/agents = \"127.0.0.1:$agents_b\"/" "$demo/controller.toml" >"$demo/controller-b.toml"
  PGROLLOUT_CONTROLLER__STORE__URL=$store_url "$bin/pgrollout" serve --config "$demo/controller-b.toml" \
    >"$demo/controller-b.log" 2>&1 &
  pids+=($!)
  wait_for_line "$demo/controller-b.log" "controller listening" 20
  agent_controllers="[\"https://127.0.0.1:$agents\", \"https://127.0.0.1:$agents_b\"]"
  echo "a second controller on the same store: operators 127.0.0.1:$operators_b, agents 127.0.0.1:$agents_b"
fi

for zone in dev qa prod; do
  cat >"$demo/agent-$zone.toml" <<TOML
name = "$zone-1"
zone = "$zone"
controller = $agent_controllers
backup_dir = "$demo/$zone/backups"
state_dir = "$demo/$zone/state"
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
  # PROD's agent verifies, itself, that what it runs was signed by the operators
  # who asked for and approved it (README, Trust model). The demo's one CA also
  # signs operators; a real deployment keeps the operators' CA key offline.
  if [[ $zone == prod ]]; then
    cat >>"$demo/agent-$zone.toml" <<TOML
[approvals]
operator_ca = "$ca/ca.pem"
environment = "prod"
approvers = ["alice", "bob"]
admins = ["alice"]
required_approvers = 2
TOML
  fi
  "$bin/pgrollout-agent" --config "$demo/agent-$zone.toml" >"$demo/agent-$zone.log" 2>&1 &
  pids+=($!)
done
for zone in dev qa prod; do wait_for_line "$demo/agent-$zone.log" "connected to controller" 20; done
echo "controller on 127.0.0.1:$operators (logs in $demo); dev needs no approval, qa one, prod two (signed, checked by prod's agent)"

export PGROLLOUT_ADDR="https://127.0.0.1:$operators" PGROLLOUT_CA="$ca/ca.pem"
export PGROLLOUT_PROJECT="$repo/deploy/examples/project"
as_operator demo-operator agents
expect 0 agents

heading "1. DEV: demo-operator deploys reconcilemupstream (no approval needed)"
as_operator demo-operator deploy reconcilemupstream dev
expect 0 "the dev deploy"
echo
echo "The catalog and the ledger in dev now say:"
PGPASSWORD=$(cat "$demo/dev/password") psql -h 127.0.0.1 -p "${port[dev]}" -U postgres -d perseus_dev -P pager=off -c \
  "SELECT oid::regprocedure AS routine, proacl FROM pg_proc WHERE proname = 'reconcilemupstream'" -c \
  "SELECT id, action, identity, change, actor, left(new_sha256, 12) AS new_sha256 FROM pgrollout.ledger ORDER BY id"

heading "2. QA: the same plan, promoted: it waits for one approval"
as_operator demo-operator deploy reconcilemupstream qa
expect 5 "the qa request (parked for approval)"
request=$(request_in "$out")
as_operator demo-operator approve "$request"
expect 1 "an approval of one's own request (refused)"
as_operator alice approve "$request" --follow
expect 0 "alice's approval, which starts the qa rollout"

heading "3. PROD: two approvals, by two different operators"
as_operator demo-operator deploy reconcilemupstream prod
expect 5 "the prod request (parked for approvals)"
request=$(request_in "$out")
as_operator alice approve "$request"
expect 0 "alice's approval (one of two)"
as_operator bob approve "$request" --follow
expect 0 "bob's approval, which starts the prod rollout"
prod_rollout=$(rollout_in "$out")

heading "4. PROD: roll it back (exactly as it was: definition, owner, ACL, comment)"
as_operator demo-operator rollback reconcilemupstream prod
expect 0 "the rollback"

heading "5. What was recorded"
as_operator demo-operator history reconcilemupstream prod
expect 0 history
as_operator demo-operator log "$prod_rollout"
expect 0 log
as_operator demo-operator rollouts
expect 0 rollouts
as_operator demo-operator audit verify
expect 0 "audit verify"

if [[ $store == postgres ]]; then
  heading "6. FAILOVER: the first controller is killed (kill -9); the second carries on"
  for zone in dev qa prod; do
    before[$zone]=$(grep -c "connected to controller" "$demo/agent-$zone.log" || true)
  done
  disown "$controller_a" # no "Killed" line from the shell: the kill is the demo's
  kill -9 "$controller_a"
  echo "controller on 127.0.0.1:$operators killed with SIGKILL; the agents list 127.0.0.1:$agents_b next"
  for zone in dev qa prod; do
    deadline=$((SECONDS + 20))
    until [[ $(grep -c "connected to controller" "$demo/agent-$zone.log" || true) -gt ${before[$zone]} ]]; do
      if ((SECONDS > deadline)); then echo "agent $zone did not reconnect:" >&2; tail -20 "$demo/agent-$zone.log" >&2; exit 2; fi
      sleep 0.1
    done
    grep "connected to controller" "$demo/agent-$zone.log" | tail -n 1 | grep -q "127.0.0.1:$agents_b" || {
      echo "agent $zone connected elsewhere" >&2; exit 2; }
  done
  echo "every agent is connected to the second controller again"
  export PGROLLOUT_ADDR="https://127.0.0.1:$operators_b"
  as_operator demo-operator agents
  expect 0 "agents, on the second controller"
  as_operator demo-operator history reconcilemupstream prod
  expect 0 "history, from the store, on the second controller"
  as_operator demo-operator deploy addarc dev
  expect 0 "a deploy through the second controller"
  as_operator demo-operator audit verify
  expect 0 "audit verify on the second controller (same store, same audit key)"
fi

if [[ ${PGROLLOUT_DEMO_KEEP:-0} == 1 ]]; then
  echo
  echo "Left running in $demo (logs there). Try:"
  echo "  export PGROLLOUT_ADDR=$PGROLLOUT_ADDR PGROLLOUT_CA=$PGROLLOUT_CA PGROLLOUT_PROJECT=$PGROLLOUT_PROJECT"
  echo "  export PGROLLOUT_CERT=$ca/operator-demo-operator.pem PGROLLOUT_KEY=$ca/operator-demo-operator.key"
  echo "  $bin/pgrollout deploy addarc dev"
  echo "Stop with: kill ${pids[*]}; and pg_ctl -D $demo/<zone>/data stop"
fi
echo
failover=""
[[ $store == postgres ]] && failover=", a controller killed and the other carrying on"
echo "pgrollout demo: done in ${SECONDS}s — dev, qa (1 approval), prod (2 approvals), a rollback, history, log, audit verify$failover"

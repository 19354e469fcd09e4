# Shared setup for the benchmarks: a release build, one PostgreSQL cluster
# with password auth, the built-in CA, a controller and one agent over mutual
# TLS — the production shape, on localhost. Source it, then call bench_setup.
# Sets: repo, bin, work, port, PGPASSWORD, PGROLLOUT_* (CLI), controller_pid,
# agent_pid; cleans everything up on exit. BENCH_CONTROLLER_EXTRA is appended
# to the controller's config (e.g. another environment on the same zone);
# BENCH_AGENT_TARGETS ("name:dbname ...") adds targets to the agent, each a
# database of the same cluster, created here (e.g. "qa:bench_qa" for that
# environment's `target = "qa"`).

bench_setup() {
  cd "$(dirname "${BASH_SOURCE[0]}")/../.."
  repo=$(pwd)
  deploy/install-prerequisites.sh
  # BENCH_PROFILE=dev reuses a debug build (to see what a corpus does, not to time it).
  # BENCH_SKIP_BUILD=1 times the binaries already in target/<profile> as they
  # are (a release build on a loaded machine takes long; build it once).
  local profile=${BENCH_PROFILE:-release}
  if [[ ${BENCH_SKIP_BUILD:-} != 1 && -z ${BENCH_BIN:-} ]]; then
    cargo build --quiet --profile "$profile" --workspace --bins
  fi
  bin="$repo/target/$([[ $profile == dev ]] && echo debug || echo "$profile")"
  # BENCH_BIN=<dir> times the binaries in that directory instead (a copy of
  # an earlier build: before and after a change, back to back).
  if [[ -n ${BENCH_BIN:-} ]]; then bin=$(cd "$BENCH_BIN" && pwd); fi
  # What the reports name as the build: a debug build's figures are no timing.
  if [[ $profile == release ]]; then
    export BENCH_BUILD="release build"
  else
    export BENCH_BUILD="$profile build (BENCH_PROFILE=$profile: not a timing)"
  fi
  pgbin=$(pg_config --bindir 2>/dev/null || ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  as_pg=(); if [[ $(id -u) -eq 0 ]]; then as_pg=(runuser -u postgres --); fi

  work=$(mktemp -d /tmp/pgrollout-bench.XXXXXX); chmod 755 "$work"
  pids=()
  trap bench_cleanup EXIT

  head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$work/password"; chmod 644 "$work/password"
  [[ ${#as_pg[@]} -gt 0 ]] && chown postgres "$work"
  port=$(bench_free_port)
  "${as_pg[@]}" "$pgbin/initdb" -D "$work/data" -U postgres -A scram-sha-256 --pwfile="$work/password" >/dev/null
  "${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/data" -l "$work/pg.log" -w \
    -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories='$work'" start >/dev/null
  export PGPASSWORD; PGPASSWORD=$(cat "$work/password")
  psql -q -h 127.0.0.1 -p "$port" -U postgres -c "CREATE DATABASE bench"

  local ca="$work/ca"
  "$bin/pgrollout" ca init --dir "$ca" --trust-domain bench.local >/dev/null
  "$bin/pgrollout" ca issue controller --dir "$ca" --name main --ip 127.0.0.1 >/dev/null
  "$bin/pgrollout" ca issue agent --dir "$ca" --zone dev --name dev-1 >/dev/null
  "$bin/pgrollout" ca issue operator --dir "$ca" --name bench >/dev/null
  local operators agents
  operators=$(bench_free_port); agents=$(bench_free_port)
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
${BENCH_CONTROLLER_EXTRA:-}
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
  local extra
  for extra in ${BENCH_AGENT_TARGETS:-}; do
    psql -q -h 127.0.0.1 -p "$port" -U postgres -c "CREATE DATABASE ${extra#*:}"
    cat >>"$work/agent.toml" <<TOML
[[targets]]
name = "${extra%%:*}"
host = "127.0.0.1"
port = $port
dbname = "${extra#*:}"
user = "postgres"
password_file = "$work/password"
TOML
  done
  "$bin/pgrollout" serve --config "$work/controller.toml" >"$work/controller.log" 2>&1 & pids+=($!); controller_pid=$!
  bench_wait_for_line "$work/controller.log" "controller listening"
  "$bin/pgrollout-agent" --config "$work/agent.toml" >"$work/agent.log" 2>&1 & pids+=($!); agent_pid=$!
  bench_wait_for_line "$work/agent.log" "connected to controller"
  export PGROLLOUT_ADDR="https://127.0.0.1:$operators" PGROLLOUT_CA="$ca/ca.pem"
  export PGROLLOUT_CERT="$ca/operator-bench.pem" PGROLLOUT_KEY="$ca/operator-bench.key"
  # The CLI's parse cache (issue 15) lives in the run's directory, not in
  # the home of whoever runs the bench; bench_cold_cache empties it.
  export PGROLLOUT_CACHE_DIR="$work/cache"
}

# Forget every parse the CLI cached: the next command parses the project.
bench_cold_cache() { rm -rf "$PGROLLOUT_CACHE_DIR"; }

bench_cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  "${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}

bench_free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
bench_wait_for_line() { until grep -q "$2" "$1" 2>/dev/null; do sleep 0.05; done; }
# Resident memory now / at its peak, in KiB.
bench_rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
bench_peak_rss_kb() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
bench_now_us() { echo $(( $(date +%s%N) / 1000 )); }

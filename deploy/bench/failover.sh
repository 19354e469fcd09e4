#!/usr/bin/env bash
# Issue 18: how long an agent listing two controllers takes to be connected
# again after its controller is killed with SIGKILL. One SQLite store has one
# controller process at a time, so the other controller (same config and store
# file, its own ports) is started right after the kill; the figure therefore
# includes that controller's start-up, which runs while the agent waits out
# its jittered one-second delay. Each round kills the controller the agent is
# on and starts the other.
#
#   deploy/bench/failover.sh [rounds]     (default 7)
#
# Prints, per round: kill → other controller listening, kill → agent
# connected to it; then the medians.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
rounds=${1:-7}
bench_setup

# The second controller: the same config with its own listeners.
operators_b=$(bench_free_port); agents_b=$(bench_free_port)
agents_a=$(sed -n 's/^agents = "127.0.0.1:\([0-9]*\)"/\1/p' "$work/controller.toml")
sed -e "s/^operators = .*/operators = \"127.0.0.1:$operators_b\"/" \
    -e "s/^agents = .*/agents = \"127.0.0.1:$agents_b\"/" "$work/controller.toml" >"$work/controller-b.toml"
cp "$work/controller.toml" "$work/controller-a.toml"
sed -i "s|^controller = .*|controller = [\"https://127.0.0.1:$agents_a\", \"https://127.0.0.1:$agents_b\"]|" "$work/agent.toml"
kill "$agent_pid"; wait "$agent_pid" 2>/dev/null || true
"$bin/pgrollout-agent" --config "$work/agent.toml" >"$work/agent.log" 2>&1 & pids+=($!); agent_pid=$!
bench_wait_for_line "$work/agent.log" "connected to controller"

connections() { grep -c "connected to controller" "$work/agent.log" || true; }
on=a; pid=$controller_pid; listen=(); reconnect=()
for ((round = 1; round <= rounds; round++)); do
  next=$([[ $on == a ]] && echo b || echo a)
  next_agents=$([[ $next == a ]] && echo "$agents_a" || echo "$agents_b")
  before=$(connections)
  : >"$work/controller-$next.log"
  t0=$(bench_now_us)
  kill -9 "$pid"; wait "$pid" 2>/dev/null || true
  "$bin/pgrollout" serve --config "$work/controller-$next.toml" >"$work/controller-$next.log" 2>&1 & pids+=($!); pid=$!
  bench_wait_for_line "$work/controller-$next.log" "controller listening"
  t1=$(bench_now_us)
  until [[ $(connections) -gt $before ]]; do sleep 0.01; done
  t2=$(bench_now_us)
  line=$(grep "connected to controller" "$work/agent.log" | tail -n 1)
  [[ $line == *"127.0.0.1:$next_agents"* ]] || { echo "round $round: agent connected elsewhere: $line" >&2; exit 1; }
  listen+=($(( (t1 - t0) / 1000 ))); reconnect+=($(( (t2 - t0) / 1000 )))
  printf '  round %d: %s → %s   listening %5d ms   agent connected %5d ms after kill -9\n' \
    "$round" "$on" "$next" "${listen[-1]}" "${reconnect[-1]}"
  on=$next
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "other controller listening: $(median "${listen[@]}") ms median after kill -9 ($BENCH_BUILD)"
echo "agent reconnected:          $(median "${reconnect[@]}") ms median after kill -9"

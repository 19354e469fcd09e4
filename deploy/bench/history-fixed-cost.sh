#!/usr/bin/env bash
# Benchmark (issue 17 item 4): the fixed cost of a call — from the CLI's
# start to the agent's first step on the single-routine deploy path, and the
# whole call less the agent's own work — with a breakdown. A release build,
# mutual TLS, one agent, on localhost (deploy/bench/lib.sh).
#
#   deploy/bench/history-fixed-cost.sh [runs]     (default 20)
#
# Each part is timed on its own, `runs` times (medians):
#   process start     `pgrollout --version`
#   load + plan       `pgrollout deploy … --controller https://127.0.0.1:1`
#                     (the project read and the plan built, then a refused
#                     connect), less the process start
#   TLS + one call    `pgrollout agents` (connect, mutual TLS handshake, one
#                     unary call), less the process start
# and on each real deploy, from the log lines' timestamps (one clock):
#   CLI start → controller's `rollout started` (process, load, plan, TLS,
#                     the controller's validation, gates, store writes)
#   `rollout started` → agent's `job started` (audit entry, offer, the
#                     agent's journal and accept: the dispatch)
#   the whole deploy less the agent's job (`job finished duration_ms`).
set -euo pipefail
runs=${1:-20}
source "$(dirname "$0")/lib.sh"
bench_setup
psql -q -h 127.0.0.1 -p "$port" -U postgres -d bench -v ON_ERROR_STOP=1 -f deploy/examples/project/schema.sql >/dev/null
cp -r deploy/examples/project "$work/project"
"$bin/pgrollout" deploy reconcilemupstream dev --project "$work/project" >/dev/null  # warm-up, creates it

times() { # label command... : appends the wall time in µs
  local t0; t0=$(bench_now_us)
  "${@:2}" >/dev/null 2>&1 || true
  echo $(( $(bench_now_us) - t0 )) >>"$work/$1.times"
}
for ((i = 0; i < runs; i++)); do
  times version "$bin/pgrollout" --version
  times plan "$bin/pgrollout" deploy reconcilemupstream dev --project "$work/project" \
    --controller https://127.0.0.1:1
  times call "$bin/pgrollout" agents
done

# µs since the epoch of a log line's leading RFC 3339 timestamp.
stamp() { python3 -c 'import sys, datetime
s = sys.argv[1].replace("\x1b", "")
s = s[s.index("20"):].split()[0].rstrip("Z")
print(int(datetime.datetime.fromisoformat(s).replace(tzinfo=datetime.timezone.utc).timestamp() * 1e6))' "$1"; }
: >"$work/deploys.csv"
for ((i = 0; i < runs; i++)); do
  sed -i "s/^BEGIN\$/BEGIN\n  -- fixed cost $i/" "$work/project/procedures/reconcilemupstream.sql"
  c_lines=$(wc -l <"$work/controller.log"); a_lines=$(wc -l <"$work/agent.log")
  t0=$(bench_now_us)
  "$bin/pgrollout" deploy reconcilemupstream dev --project "$work/project" >/dev/null
  t1=$(bench_now_us)
  started=$(tail -n +"$((c_lines + 1))" "$work/controller.log" | sed 's/\x1b\[[0-9;]*m//g' | grep -m1 'rollout started')
  accepted=$(tail -n +"$((a_lines + 1))" "$work/agent.log" | sed 's/\x1b\[[0-9;]*m//g' | grep -m1 'job started')
  finished=$(tail -n +"$((a_lines + 1))" "$work/agent.log" | sed 's/\x1b\[[0-9;]*m//g' | grep -m1 'job finished')
  agent_ms=$(grep -o 'duration_ms=[0-9]*' <<<"$finished" | cut -d= -f2)
  echo "$t0,$t1,$(stamp "$started"),$(stamp "$accepted"),$agent_ms" >>"$work/deploys.csv"
done

python3 - "$work" "$runs" <<'PY'
import os, statistics, sys
work, runs = sys.argv[1], int(sys.argv[2])
def load(name): return [int(x) / 1000 for x in open(f"{work}/{name}.times")]
med = statistics.median
version, plan, call = med(load("version")), med(load("plan")), med(load("call"))
rows = [list(map(int, l.split(","))) for l in open(f"{work}/deploys.csv")]
to_controller = med([(s - t0) / 1000 for t0, t1, s, a, ag in rows])
dispatch = med([(a - s) / 1000 for t0, t1, s, a, ag in rows])
to_agent = med([(a - t0) / 1000 for t0, t1, s, a, ag in rows])
total = med([(t1 - t0) / 1000 for t0, t1, s, a, ag in rows])
agent = med([ag for t0, t1, s, a, ag in rows])
beyond = med([(t1 - t0) / 1000 - ag for t0, t1, s, a, ag in rows])
print(f"fixed cost of a single-routine deploy: {runs} runs, {os.environ['BENCH_BUILD']}, mutual TLS, localhost (medians, ms)")
print(f"  process start (pgrollout --version)              {version:8.1f}")
print(f"  load + plan (less process start)                 {plan - version:8.1f}")
print(f"  TLS handshake + one unary call (less start)      {call - version:8.1f}")
print(f"  CLI start -> controller 'rollout started'        {to_controller:8.1f}")
print(f"    of which validation, gates, store writes (rest){to_controller - plan - (call - version):8.1f}")
print(f"  'rollout started' -> agent 'job started'         {dispatch:8.1f}")
print(f"  CLI start -> agent's first step                  {to_agent:8.1f}")
print(f"  whole deploy (CLI to CLI)                        {total:8.1f}")
print(f"  agent's own work (job duration)                  {agent:8.1f}")
print(f"  whole deploy less the agent's work               {beyond:8.1f}   (target < 30)")
PY

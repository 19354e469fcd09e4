#!/usr/bin/env bash
# Benchmark (issue 19, item 6): what signed approvals add to a job. Makes an
# operators' CA and three operators with `pgrollout ca`, then times, in
# process, the agent's check of a deploy job as `jobs::execute` runs it before
# anything connects to the database — the plan id recomputed from the
# routines, three certificates chained to the operator CA, three signatures
# verified, bindings and the approvers rule — for 1, 100 and 1,000 routines,
# and what signing one statement costs the CLI. Target: < 5 ms per job.
#
#   deploy/bench/approvals.sh [runs]      (default 200)
#
# BENCH_PROFILE (default release) as the other benchmarks; only the bench is
# built with it. The CA is made with that build's `pgrollout` when there is
# one, else the debug build's (making certificates is not timed).
set -euo pipefail
runs=${1:-200}
cd "$(dirname "$0")/../.."
profile=${BENCH_PROFILE:-release}
if [[ ${BENCH_SKIP_BUILD:-} != 1 ]]; then
  cargo build --quiet --profile "$profile" -p pgrollout-tests --bin approvals-bench
fi
bin="${CARGO_TARGET_DIR:-target}/$([[ $profile == dev ]] && echo debug || echo "$profile")"
work=$(mktemp -d /tmp/pgrollout-approvals-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
pgrollout="$bin/pgrollout"
[[ -x $pgrollout ]] || pgrollout="${CARGO_TARGET_DIR:-target}/debug/pgrollout"
"$pgrollout" ca init --dir "$work/ca" --trust-domain bench.local >/dev/null
for name in alice bob carol; do
  "$pgrollout" ca issue operator --dir "$work/ca" --name "$name" >/dev/null
done
echo "approvals bench ($profile build, $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg))"
"$bin/approvals-bench" "$work/ca" "$runs"

#!/usr/bin/env bash
# Scale benchmark (issue 8): N agent connections with real certificates
# heartbeating against one controller; prints controller CPU and RSS while
# idle and the dispatch latency of a deploy to one of them.
# Usage: deploy/bench/agents-1000.sh [AGENTS=1000] [DEPLOYS=20]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
deploy/install-prerequisites.sh
cargo build --quiet --release --workspace --bins --bin agent-swarm
ulimit -n "$(ulimit -Hn)"
PGROLLOUT_TEST_BIN_DIR="$(pwd)/target/release" exec target/release/agent-swarm "${1:-1000}" "${2:-20}"

#!/usr/bin/env bash
# The test command: installs what is missing, builds both binaries, then
# runs every test — unit tests and the end-to-end scenarios, which start real
# PostgreSQL clusters and the real binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-prerequisites.sh
# The end-to-end tests run the built binaries, so build them first.
cargo build --workspace --bins
cargo test --workspace "$@"

#!/usr/bin/env bash
# Installs what pgrollout needs to build and test on a fresh Debian/Ubuntu
# machine, and nothing it already has:
#   - PostgreSQL server binaries (initdb, pg_ctl, postgres) for the local
#     clusters of the demo and the tests,
#   - libclang, which pg_query (PostgreSQL's own parser) needs at build time.
# Cargo itself is expected (https://rustup.rs).
set -euo pipefail

have_pg_server() {
  local dir
  dir=$(pg_config --bindir 2>/dev/null || true)
  [[ -n $dir && -x $dir/initdb ]] && return 0
  command -v initdb >/dev/null 2>&1 && return 0
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}

have_libclang() {
  compgen -G '/usr/lib/llvm-*/lib/libclang.so*' >/dev/null ||
    compgen -G '/usr/lib/x86_64-linux-gnu/libclang*.so*' >/dev/null ||
    compgen -G '/usr/lib/aarch64-linux-gnu/libclang*.so*' >/dev/null
}

missing=()
have_pg_server || missing+=(postgresql postgresql-contrib)
have_libclang || missing+=(libclang-dev clang)
command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
# The database-TLS tests make their certificates with the openssl CLI.
command -v openssl >/dev/null 2>&1 || missing+=(openssl)

if ((${#missing[@]})); then
  echo "pgrollout: installing ${missing[*]}"
  sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
      sudo=(sudo)
    else
      echo "pgrollout: please install as root: apt-get install -y ${missing[*]}" >&2
      exit 1
    fi
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "pgrollout: cargo is missing; install Rust from https://rustup.rs first" >&2
  exit 1
fi

#!/usr/bin/env bash
# Installs what pgrollout needs to build and test on a fresh Debian/Ubuntu
# machine, and nothing it already has:
#   - PostgreSQL server binaries (initdb, pg_ctl, postgres) for the local
#     clusters of the demo and the tests,
#   - libclang, which pg_query (PostgreSQL's own parser) needs at build time,
#   - pgTAP and plpgsql_check for each installed PostgreSQL major version: the
#     tests use them, and so do targets that run pgTAP files or the syntax
#     gate's deep PL/pgSQL checks (pgrollout says so and skips them where a
#     target lacks them),
#   - aiosmtpd (python3-aiosmtpd), the real SMTP server the email
#     notification tests send to,
#   - promtool (Debian's prometheus package), with which the metrics tests
#     check both programs' /metrics.
# Cargo itself is expected (https://rustup.rs).
set -euo pipefail

have_pg_server() {
  local dir
  dir=$(pg_config --bindir 2>/dev/null || true)
  [[ -n $dir && -x $dir/initdb ]] && return 0
  command -v initdb >/dev/null 2>&1 && return 0
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}

# bindgen (pg_query's build, through clang-sys) loads `libclang.so`,
# `libclang-N.so`, `libclang.so.N` or `libclang-N.so.N`, from LIBCLANG_PATH or
# the usual library directories; `libclang-cpp.so.N`, present wherever LLVM
# is, is not it (a machine with only that fails the build: "Unable to find
# libclang"). Prints `present` or `missing`; the directories to look in can
# be given, which is how tests/tests/install_prerequisites.rs calls it.
libclang_status() {
  local dirs=("$@") dir file
  if ((${#dirs[@]} == 0)); then
    [[ -n ${LIBCLANG_PATH:-} ]] && dirs+=("$LIBCLANG_PATH")
    dirs+=(/usr/lib/llvm-*/lib /usr/local/lib /usr/lib/x86_64-linux-gnu /usr/lib/aarch64-linux-gnu /usr/lib64 /usr/lib)
  fi
  for dir in "${dirs[@]}"; do
    for file in "$dir"/libclang.so "$dir"/libclang-*.so "$dir"/libclang.so.* "$dir"/libclang-*.so.*; do
      if [[ -e $file && $(basename "$file") != libclang-cpp* ]]; then
        echo present
        return 0
      fi
    done
  done
  echo missing
}

# Sourced (by the test), the script only defines its functions.
if [[ ${BASH_SOURCE[0]} != "$0" ]]; then
  return 0
fi

missing=()
have_pg_server || missing+=(postgresql postgresql-contrib)
[[ $(libclang_status) == present ]] || missing+=(libclang-dev clang)
command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
# Rust links with `cc`, and pg_query compiles PostgreSQL's parser with it;
# rustup installs neither (clang, when installed above, provides one too).
command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
# The database-TLS tests make their certificates with the openssl CLI.
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
# What only the tests use; the demo (`--demo`) goes without.
if [[ ${1:-} != --demo ]]; then
  # The email notification tests send to a real SMTP server, aiosmtpd, run
  # with Debian's python3 (tests/tests/email_support/smtp_server.py).
  /usr/bin/python3 -c 'import aiosmtpd' >/dev/null 2>&1 || missing+=(python3-aiosmtpd)
  # The metrics tests read both /metrics with Prometheus's own `promtool`
  # (Debian ships it in the prometheus package, with a server unit that is
  # kept from starting: see apt_install).
  command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
fi

apt_install() {
  echo "pgrollout: installing $*"
  local sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
      sudo=(sudo)
    else
      echo "pgrollout: please install as root: apt-get install -y $*" >&2
      exit 1
    fi
  fi
  export DEBIAN_FRONTEND=noninteractive
  if [[ -z ${updated:-} ]]; then
    "${sudo[@]}" apt-get update -qq
    updated=1
  fi
  # Packages install tools here, not services: Debian's policy-rc.d hook
  # (exit 101, "action forbidden") keeps a package's daemon — prometheus's
  # server, above all — from starting; an existing hook is left alone.
  local policy=/usr/sbin/policy-rc.d own_policy=
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
    "${sudo[@]}" chmod 755 "$policy"
    own_policy=1
  fi
  local status=0
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null || status=$?
  [[ -n $own_policy ]] && "${sudo[@]}" rm -f "$policy"
  if [[ " $* " == *" prometheus "* ]] && command -v systemctl >/dev/null 2>&1; then
    "${sudo[@]}" systemctl disable prometheus >/dev/null 2>&1 || true
  fi
  return "$status"
}

if ((${#missing[@]})); then
  apt_install "${missing[@]}"
fi

# Extensions, once the server is there: one package per major version, and
# only where the distribution has it (otherwise pgrollout reports them absent).
extensions=()
for bindir in /usr/lib/postgresql/*/bin; do
  [[ -x $bindir/initdb ]] || continue
  major=$(basename "$(dirname "$bindir")")
  for extension in pgtap:pgtap plpgsql_check:plpgsql-check; do
    control=${extension%%:*}
    package=postgresql-$major-${extension##*:}
    [[ -e /usr/share/postgresql/$major/extension/$control.control ]] && continue
    if apt-cache show "$package" >/dev/null 2>&1; then
      extensions+=("$package")
    else
      echo "pgrollout: $package is not available here; tests of $control cover its absence only" >&2
    fi
  done
done
if ((${#extensions[@]})); then
  apt_install "${extensions[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "pgrollout: cargo is missing; install Rust from https://rustup.rs first" >&2
  exit 1
fi

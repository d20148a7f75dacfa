#!/usr/bin/env bash
# `make image-test`: build docker/Dockerfile for real and smoke-test the image without a Docker
# engine, following /work/shared/notes/container-testing.md:
#   podman build --isolation chroot on a debootstrapped Debian base (--build-arg BASE=...),
#   then podman create + export, and run the entrypoint in a chroot as the image's non-root user:
#   `gateway --version` and `gateway check-config /etc/gateway/gateway.toml`.
# Needs root (debootstrap, chroot). Slow the first time (base image); the base is cached.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${GATEWAY_IMAGE_TEST_DIR:-/var/tmp/gateway-image-test}"
BASE_IMAGE="${GATEWAY_IMAGE_TEST_BASE:-localhost/debian-py:bookworm}"
IMAGE="localhost/gateway:image-test"
SUITE=bookworm

log() { printf '== %s\n' "$*"; }
fail() { printf 'image-test FAILED: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "run as root (debootstrap, podman import and chroot need it)"

if ! command -v podman >/dev/null || ! command -v debootstrap >/dev/null; then
  log "installing podman and debootstrap"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman debootstrap >/dev/null
fi
mkdir -p "$WORK"

# --- 1. local base image: Debian + python3 + venv, trusting this machine's package proxy -------
if ! podman image exists "$BASE_IMAGE"; then
  mirror="$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)"
  if [ -z "$mirror" ]; then
    mirror="$(awk '$1 == "deb" { print $2; exit }' /etc/apt/sources.list 2>/dev/null || true)"
  fi
  mirror="${mirror:-http://deb.debian.org/debian}"
  rootfs="$WORK/rootfs"
  if [ ! -x "$rootfs/usr/bin/python3" ]; then
    log "debootstrap $SUITE from $mirror (about a minute)"
    rm -rf "$rootfs.partial"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
      "$SUITE" "$rootfs.partial" "$mirror" >"$WORK/debootstrap.log" 2>&1 \
      || fail "debootstrap failed, see $WORK/debootstrap.log"
    mv "$rootfs.partial" "$rootfs"
  fi
  # pip inside the build goes through the same proxy/CA as the host
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
  if [ -f /etc/pip.conf ]; then cp /etc/pip.conf "$rootfs/etc/pip.conf"; fi
  rm -rf "$rootfs/var/cache/apt/archives/"*.deb
  log "importing $BASE_IMAGE"
  tar -C "$rootfs" -c . | podman import - "$BASE_IMAGE" >/dev/null
fi

# --- 2. build the real Dockerfile ------------------------------------------------------------
log "podman build (chroot isolation, BASE=$BASE_IMAGE)"
old_id="$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)"
podman build --isolation chroot --format docker --build-arg "BASE=$BASE_IMAGE" \
  -f "$ROOT/docker/Dockerfile" -t "$IMAGE" "$ROOT"
new_id="$(podman image inspect --format '{{.Id}}' "$IMAGE")"
if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ]; then
  podman rmi "$old_id" >/dev/null 2>&1 || true  # the previous test image, now untagged
fi

# --- 3. image metadata -----------------------------------------------------------------------
inspect() { podman image inspect --format "$1" "$IMAGE"; }
[ "$(inspect '{{.Config.User}}')" = gateway ] || fail "image user is not 'gateway'"
[ "$(inspect '{{json .Config.Entrypoint}}')" = '["gateway"]' ] || fail "entrypoint"
[ "$(inspect '{{json .Config.Cmd}}')" = '["run","--config","/etc/gateway/gateway.toml"]' ] \
  || fail "cmd"
inspect '{{json .Config.Volumes}}' | grep -q '"/var/lib/gateway"' || fail "volume"
inspect '{{json .Config.Healthcheck}}' | grep -q '127.0.0.1:9090/health' || fail "healthcheck"
inspect "{{json .Config.Healthcheck}}" | grep -q "\"Interval\":15000000000" || fail "healthcheck interval"
log "metadata ok: user gateway, entrypoint, cmd, volume, healthcheck every 15 s"

# --- 4. export and run the entrypoint as the non-root user -----------------------------------
dir="$(mktemp -d "$WORK/export.XXXXXX")"
chmod 755 "$dir"  # the chroot root must be traversable by the non-root user
cid=""
cleanup() {
  if [ -n "$cid" ]; then podman rm -f "$cid" >/dev/null 2>&1 || true; fi
  rm -rf "$dir"
}
trap cleanup EXIT
cid="$(podman create "$IMAGE")"
podman export "$cid" | tar -x -C "$dir"
uid="$(awk -F: '$1 == "gateway" { print $3 }' "$dir/etc/passwd")"
gid="$(awk -F: '$1 == "gateway" { print $4 }' "$dir/etc/passwd")"
[ -n "$uid" ] && [ "$uid" != 0 ] || fail "no non-root user 'gateway' in /etc/passwd"

in_image() {
  chroot --userspec="$uid:$gid" "$dir" /usr/bin/env -i \
    PATH=/opt/gateway/bin:/usr/local/bin:/usr/bin:/bin HOME=/var/lib/gateway "$@"
}
log "gateway --version (uid $uid)"
version="$(in_image gateway --version)" || fail "gateway --version"
echo "$version"
case "$version" in "gateway "*) ;; *) fail "unexpected version output: $version" ;; esac
log "gateway check-config /etc/gateway/gateway.toml (uid $uid)"
in_image gateway check-config /etc/gateway/gateway.toml || fail "check-config on the shipped config"
in_image python3 -c "import pathlib; p = pathlib.Path('/var/lib/gateway/.w'); p.write_text('x'); p.unlink()" \
  || fail "/var/lib/gateway is not writable by the gateway user"
if in_image python3 -c "open('/etc/gateway/gateway.toml', 'a')" 2>/dev/null; then
  fail "/etc/gateway/gateway.toml is writable by the gateway user"
fi
log "image-test passed ($IMAGE)"

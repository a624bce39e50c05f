#!/bin/sh
# Sets berth up on a Debian 12 machine, as root: Debian packages, npm packages, the TypeScript and
# C builds, the test fixtures and a demo bundle, and the commands on PATH. Safe to run again.
set -eu
cd "$(dirname "$0")"
here=$(pwd)

say() { printf 'install: %s\n' "$*"; }
die() { printf 'install: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (berth creates namespaces, mounts and cgroups)"

# Debian packages berth needs at run time and to build its C (only the missing ones are installed).
need_pkgs="gcc libc6-dev libseccomp-dev busybox-static procps tar nftables iproute2 uidmap passt zstd"
missing=""
for p in $need_pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  say "installing Debian packages:$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || die "apt-get update failed"
  apt-get install -y -qq --no-install-recommends $missing >/dev/null || die "apt-get install$missing failed"
fi

node=$(command -v node || true)
[ -n "$node" ] || die "Node.js >= 20 is required (none found on PATH)"
major=$("$node" -p 'process.versions.node.split(".")[0]')
[ "$major" -ge 20 ] || die "Node.js >= 20 is required (found $("$node" --version))"
node=$(readlink -f "$node")

say "npm packages"
if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --loglevel=error; else npm install --no-audit --no-fund --loglevel=error; fi

say "building TypeScript and the C helper"
npm run --silent build

say "test fixtures and the demo bundle"
sh scripts/make-fixtures.sh >/dev/null

# The installed commands (scripts/install-launchers.sh): berth-runtime from its bundle, berth from
# its V8 start-up snapshot while this node made it.
sh scripts/install-launchers.sh "$node"
say "installed /usr/local/bin/berth-runtime ($(berth-runtime --version | head -1)) and /usr/local/bin/berth ($(berth --version))"

say "the default image"
sh scripts/make-default-image.sh
say "training the start-up snapshot (a few berth commands on the default image)"
sh scripts/train-snapshot.sh "$node"
say "images in the store (${BERTH_ROOT:-/var/lib/berth}):"
berth images
say "pull more from any registry: berth pull <registry>/<name>:<tag> (loopback registries may use plain HTTP)"
say "try: berth run --rm busybox echo hello   (or the runtime alone: berth-runtime run --bundle $here/build/bundles/hello hello)"

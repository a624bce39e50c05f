#!/bin/sh
# Test-only setup, run by `npm test` before the suite: builds what the tests run (TypeScript, the C
# helper, probe and recvtty, fixtures) and installs the Debian packages the tests use as oracles and
# peers. Missing packages are installed only when running as root; tests that need them skip otherwise.
set -eu
cd "$(dirname "$0")/.."
npm run --silent build
sh scripts/make-fixtures.sh >/dev/null
sh scripts/make-default-image.sh >/dev/null
pkgs="runc crun procps containerd docker.io docker-compose podman uidmap bsdutils docker-registry skopeo umoci apache2-utils openssl zstd debootstrap containernetworking-plugins iptables openssh-client python3-docker"
missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ] && [ "$(id -u)" = 0 ]; then
  echo "test setup: installing Debian packages:$missing"
  export DEBIAN_FRONTEND=noninteractive
  # Packaged daemons must not start on install (no systemd here, and tests start their own).
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d.berth
  [ -e /usr/sbin/policy-rc.d ] || { cp /usr/sbin/policy-rc.d.berth /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; created_policy=1; }
  apt-get update -qq >/dev/null 2>&1 || true
  apt-get install -y -qq --no-install-recommends $missing >/dev/null || echo "test setup: could not install$missing; those tests will skip"
  [ "${created_policy:-0}" = 1 ] && rm -f /usr/sbin/policy-rc.d
  rm -f /usr/sbin/policy-rc.d.berth
fi
# Docker 20.10's default seccomp profile: the oracle for berth's default profile (extracted from
# Debian's golang-github-docker-docker-dev without installing it and its Go dependencies).
oracle=build/cache/docker-seccomp-default.json
if [ ! -f "$oracle" ] && [ "$(id -u)" = 0 ]; then
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download golang-github-docker-docker-dev >/dev/null 2>&1 && dpkg-deb -x ./*.deb x) &&
    mkdir -p build/cache && cp "$tmp/x/usr/share/gocode/src/github.com/docker/docker/profiles/seccomp/default.json" "$oracle" ||
    echo "test setup: could not fetch Docker's default seccomp profile; the differential test will skip"
  rm -rf "$tmp"
fi
# The larger test image (a Debian tree from debootstrap, five layers), cached in build/cache.
if [ "$(id -u)" = 0 ]; then
  mkdir -p build/cache
  [ -f build/cache/debian-oci/.source ] || echo "test setup: building the Debian test image with debootstrap (cached in build/cache)"
  sh scripts/make-debian-image.sh >/dev/null 2>build/cache/debian-image.log || echo "test setup: could not build the Debian image (see build/cache/debian-image.log); its tests will skip"
fi
# Node 22 and 24 beside this node (npm's node-linux-<arch> packages, cached in build/cache): the
# unit tests run on them too (test/node-versions.test.ts)
arch=$(node -p process.arch)
for v in 22 24; do
  d=build/cache/node$v
  [ -x "$d/node_modules/node-linux-$arch/bin/node" ] ||
    npm install --silent --no-audit --no-fund --no-save --prefix "$d" "node-linux-$arch@$v" >/dev/null 2>&1 ||
    echo "test setup: could not install Node $v from npm; its unit tests will skip"
done
exit 0

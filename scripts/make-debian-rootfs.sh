#!/bin/sh
# A Debian 12 root file system made with debootstrap, cached in build/cache (the larger test and
# benchmark image: minbase plus python3, perl and gcc, about 400 MB and 12,000 files). Needs root
# and Debian's package mirror (the one apt uses); prints the directory. The package list is kept
# in .complete: a cache made from another list is made again.
set -eu
cd "$(dirname "$0")/.."
dest=build/cache/debian-rootfs
include=python3,perl,libpython3.11-dev,gcc,libc6-dev
if [ "$(cat "$dest/.complete" 2>/dev/null)" = "$include" ]; then echo "$dest"; exit 0; fi
command -v debootstrap >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null; }
mirror=$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
[ -n "$mirror" ] || mirror=http://deb.debian.org/debian
rm -rf "$dest.tmp"
mkdir -p "$dest.tmp"
debootstrap --variant=minbase --include=$include bookworm "$dest.tmp" "$mirror" >&2
rm -rf "$dest.tmp/var/cache/apt/archives"/*.deb
echo "$include" > "$dest.tmp/.complete"
rm -rf "$dest"
mv "$dest.tmp" "$dest"
echo "$dest"

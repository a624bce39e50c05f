#!/bin/sh
# The built-in default image: busybox:latest in berth's store, made offline from Debian's
# busybox-static (the applets as symlinks, a minimal /etc), so `berth run busybox ...` works on a
# fresh machine. Skipped when the store already has busybox:latest. Uses $BERTH_ROOT if set.
set -eu
cd "$(dirname "$0")/.."
berth="node dist/berth.cjs"
if $berth image inspect busybox:latest >/dev/null 2>&1; then exit 0; fi
[ -x /bin/busybox ] || { echo "make-default-image: /bin/busybox missing: apt-get install busybox-static" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
r=$tmp/rootfs
mkdir -p "$r/bin" "$r/sbin" "$r/usr/bin" "$r/usr/sbin" "$r/etc" "$r/proc" "$r/sys" "$r/dev" "$r/tmp" "$r/root" "$r/var/www" "$r/home"
chmod 1777 "$r/tmp"
chmod 700 "$r/root"
cp /bin/busybox "$r/bin/busybox"
for applet in $(/bin/busybox --list-full); do
  [ -e "$r/$applet" ] || ln -s /bin/busybox "$r/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\nwww-data:x:33:33:www-data:/var/www:/bin/false\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$r/etc/passwd"
printf 'root:x:0:\ndaemon:x:1:\ntty:x:5:\nwww-data:x:33:\nnogroup:x:65534:\n' > "$r/etc/group"
# fixed times and owners: the same layer bytes (and digest) on every machine
find "$r" -exec touch -h -d '2023-01-01T00:00:00Z' {} +
tar --sort=name --numeric-owner --owner=0 --group=0 -C "$r" -cf "$tmp/rootfs.tar" .
$berth import --change 'CMD ["sh"]' --change 'ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin' -m "busybox from Debian's busybox-static ($(dpkg-query -W -f='${Version}' busybox-static 2>/dev/null || echo unknown))" "$tmp/rootfs.tar" busybox:latest >/dev/null
echo "default image: busybox:latest"

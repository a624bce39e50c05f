#!/bin/sh
# Test fixtures, made offline: a busybox rootfs (from Debian's busybox-static) with berth's probe,
# and an OCI bundle around it (config.json from `berth-runtime spec`, made non-interactive).
set -eu
cd "$(dirname "$0")/.."
out=build/fixtures
rootfs=$out/busybox/rootfs
[ -x /bin/busybox ] || { echo "make-fixtures: /bin/busybox missing: apt-get install busybox-static" >&2; exit 1; }
rm -rf "$out/busybox.tmp"
mkdir -p "$out/busybox.tmp/rootfs"
r=$out/busybox.tmp/rootfs
mkdir -p "$r/bin" "$r/sbin" "$r/usr/bin" "$r/usr/sbin" "$r/etc" "$r/proc" "$r/sys" "$r/dev" "$r/tmp" "$r/root" "$r/var" "$r/home"
chmod 1777 "$r/tmp"
cp /bin/busybox "$r/bin/busybox"
for applet in $(/bin/busybox --list-full); do
  [ -e "$r/$applet" ] || ln -s /bin/busybox "$r/$applet"
done
cp build/probe "$r/probe"
printf 'root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$r/etc/passwd"
printf 'root:x:0:\ndaemon:x:1:\ntty:x:5:\nnogroup:x:65534:\n' > "$r/etc/group"
echo berth > "$r/etc/hostname"
node -e '
const { defaultSpec } = await import("./dist/src/runtime/spec.js");
// the tests'"'"' containers have a cgroup namespace, as the engine'"'"'s do (runc'"'"'s template only on cgroup v2 hosts)
const s = defaultSpec({ cgroupNamespace: true });
s.process.terminal = false;
s.process.args = ["/probe", "id"];
s.hostname = "berth-test";
process.stdout.write(JSON.stringify(s, null, 2));
' --input-type=module > "$out/busybox.tmp/config.json"
rm -rf "$out/busybox"
mv "$out/busybox.tmp" "$out/busybox"
echo "fixtures: $out/busybox (rootfs + config.json)"

# The demo bundle the README runs: the same rootfs, saying hello.
rm -rf build/bundles/hello && mkdir -p build/bundles/hello
node --input-type=module -e '
const { defaultSpec } = await import("./dist/src/runtime/spec.js");
const s = defaultSpec();
s.process.terminal = false;
s.root.path = process.argv[1];
s.hostname = "hello";
s.process.args = ["/bin/sh", "-c", "echo \"Hello from a berth container: hostname $(hostname), pid $$, $(ls /proc/self/ns | wc -l) namespaces\""];
process.stdout.write(JSON.stringify(s, null, 2));
' "$(pwd)/$rootfs" > build/bundles/hello/config.json

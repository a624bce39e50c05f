#!/bin/sh
# Writes the `berth` and `berth-runtime` commands into DIR (default /usr/local/bin), for NODE
# (an absolute path: podman runs runtimes with PATH unset).
#   sh scripts/install-launchers.sh NODE [DIR]
# berth-runtime loads the one-file bundle through scripts/launcher.cjs, which keeps V8's code cache
# for it. berth starts from its V8 start-up snapshot (scripts/build-snapshot.sh) while NODE is the
# binary that made it (same mtime as dist/berth.blob.node), else from the bundle the same way.
set -eu
cd "$(dirname "$0")/.."
here=$(pwd)
node=$1
dir=${2:-/usr/local/bin}
# NODE_EXTRA_CA_CERTS makes node read and parse those certificates at every start (~40-70 ms), though
# neither command needs TLS on its way: the launchers keep it from node's start; berth's registry
# client loads the file (BERTH_EXTRA_CA_CERTS) when it connects, berth-runtime never needs it.
printf 'globalThis.berthBuildDir = "%s";\nrequire("%s")("%s");\n' "$here/build" "$here/scripts/launcher.cjs" "$here/dist/berth-runtime.cjs" > dist/berth-runtime-launch.cjs
tmp=$(mktemp "$dir/.berth-runtime-launcher.XXXXXX")
cat > "$tmp" <<LAUNCHER
#!/bin/sh
unset NODE_EXTRA_CA_CERTS
exec $node $here/dist/berth-runtime-launch.cjs "\$@"
LAUNCHER
chmod 755 "$tmp"
mv -f "$tmp" "$dir/.berth-runtime-launcher"
# the client (helper/berth-client.c) starts every command: static (no dynamic linking, ~0.5 ms of
# each), position-independent; a toolchain without static-pie links it dynamically
client() { ${CC:-cc} -O2 -Wall -Wextra -Werror -Ihelper -static-pie "$@" helper/berth-client.c 2>/dev/null || ${CC:-cc} -O2 -Wall -Wextra -Werror -Ihelper "$@" helper/berth-client.c; }
# DIR/berth-runtime: the client too, for `berth system warm --runtime` (helper/berth-client.c)
tmp=$(mktemp "$dir/.berth-runtime.XXXXXX")
client -DBERTH_LAUNCHER="\"$dir/.berth-runtime-launcher\"" -DWARM_PROGRAM='"berth-runtime"' -DWARM_SOCKET_ENV='"BERTH_RUNTIME_WARM_SOCKET"' -o "$tmp"
chmod 755 "$tmp"
mv -f "$tmp" "$dir/berth-runtime"
printf 'globalThis.berthBuildDir = "%s";\nrequire("%s")("%s");\n' "$here/build" "$here/scripts/launcher.cjs" "$here/dist/berth.cjs" > dist/berth-launch.cjs
# DIR/.berth-launcher starts node; DIR/berth (helper/berth-client.c) hands the command to a warm
# process of `berth system warm` when one serves this user, and execs the launcher otherwise.
tmp=$(mktemp "$dir/.berth-launcher.XXXXXX")
cat > "$tmp" <<LAUNCHER
#!/bin/sh
if [ -n "\${NODE_EXTRA_CA_CERTS:-}" ]; then BERTH_EXTRA_CA_CERTS=\$NODE_EXTRA_CA_CERTS; export BERTH_EXTRA_CA_CERTS; unset NODE_EXTRA_CA_CERTS; fi
n=$node s=$here/dist/berth.blob
# the snapshot loads only under the V8 flags it was made with (\$s.flags; read is a shell builtin)
if [ -r "\$s" ] && [ -e "\$s.node" ] && ! [ "\$n" -nt "\$s.node" ] && ! [ "\$s.node" -nt "\$n" ] && [ -r "\$s.flags" ] && read -r f < "\$s.flags"; then
  exec "\$n" --snapshot-blob "\$s" \$f -- "\$@"
fi
exec "\$n" $here/dist/berth-launch.cjs "\$@"
LAUNCHER
chmod 755 "$tmp"
mv -f "$tmp" "$dir/.berth-launcher"
tmp=$(mktemp "$dir/.berth.XXXXXX")
client -DBERTH_LAUNCHER="\"$dir/.berth-launcher\"" -o "$tmp"
chmod 755 "$tmp"
mv -f "$tmp" "$dir/berth"

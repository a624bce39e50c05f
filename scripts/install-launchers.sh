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
tmp=$(mktemp "$dir/.berth-runtime.XXXXXX")
printf '#!%s\nglobalThis.berthBuildDir = "%s";\nrequire("%s")("%s");\n' "$node" "$here/build" "$here/scripts/launcher.cjs" "$here/dist/berth-runtime.cjs" > "$tmp"
chmod 755 "$tmp"
mv -f "$tmp" "$dir/berth-runtime"
printf 'globalThis.berthBuildDir = "%s";\nrequire("%s")("%s");\n' "$here/build" "$here/scripts/launcher.cjs" "$here/dist/berth.cjs" > dist/berth-launch.cjs
tmp=$(mktemp "$dir/.berth.XXXXXX")
cat > "$tmp" <<LAUNCHER
#!/bin/sh
n=$node s=$here/dist/berth.blob
# the snapshot loads only under the V8 flags it was made with (\$s.flags; read is a shell builtin)
if [ -r "\$s" ] && [ -e "\$s.node" ] && ! [ "\$n" -nt "\$s.node" ] && ! [ "\$s.node" -nt "\$n" ] && [ -r "\$s.flags" ] && read -r f < "\$s.flags"; then
  exec "\$n" --snapshot-blob "\$s" \$f -- "\$@"
fi
exec "\$n" $here/dist/berth-launch.cjs "\$@"
LAUNCHER
chmod 755 "$tmp"
mv -f "$tmp" "$dir/berth"

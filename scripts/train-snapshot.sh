#!/bin/sh
# Trains berth's start-up snapshot: runs the commands people run most through the snapshot's own
# bundle (scripts/snapshot-train.cjs), gathering the V8 bytecode of what they execute into
# dist/berth-snapshot.v8cache, then rebuilds the snapshot with it (scripts/build-snapshot.sh), so
# a start compiles almost nothing (`berth run` ~12 ms faster). Needs root and the busybox image
# (install.sh runs it once it has both); without them the snapshot stays untrained, only slower.
#   sh scripts/train-snapshot.sh [NODE]
set -u
cd "$(dirname "$0")/.."
node=${1:-node}
cache=dist/berth-snapshot.v8cache
rm -f "$cache"
if [ "$(id -u)" != 0 ] || [ ! -f dist/berth-snapshot.cjs ]; then
  echo "train-snapshot: needs root and a build; the snapshot stays untrained" >&2
  exit 0
fi
# V8 takes a code cache only from a node started with the same flags as the one building the snapshot
flags=${BERTH_SNAPSHOT_FLAGS:-$(cat scripts/snapshot.flags)}
b() { BERTH_TRAIN_CACHE=$cache "$node" $flags scripts/snapshot-train.cjs dist/berth-snapshot.cjs "$@" >/dev/null 2>&1; }
name=berth-snapshot-training-$$
# a throwaway store of its own (its own bridge and nftables table, named after it): the user's
# store, containers and network are never touched, and everything it made is removed after
tmp=$(mktemp -d /tmp/berth-snapshot-training.XXXXXX)
export BERTH_ROOT="$tmp/root" BERTH_RUNTIME_ROOT="$tmp/run"
sh scripts/make-default-image.sh >/dev/null 2>&1 || { echo "train-snapshot: no busybox image; the snapshot stays untrained" >&2; rm -rf "$tmp"; exit 0; }
b run --rm --network none busybox true
b run --rm busybox true
b run -d --name "$name" busybox sleep 60
b ps
b ps -a
b exec "$name" true
b logs "$name"
b inspect "$name"
b stop -t 1 "$name"
b rm -f "$name"
b images
# a build, cold and cached (every instruction kind a short Dockerfile has)
mkdir -p "$tmp/ctx"
echo a > "$tmp/ctx/a.txt"
printf 'FROM busybox\nENV A=1\nWORKDIR /app\nCOPY a.txt /app/\nRUN cat /app/a.txt > /b\nLABEL x=y\nCMD ["cat", "/b"]\n' > "$tmp/ctx/Dockerfile"
b build -q --network none -t "$name" "$tmp/ctx"
b build -q --network none -t "$name" "$tmp/ctx"
b rmi "$name"
# berth's parent cgroup stays between containers; training leaves none behind
"$node" -e 'import(process.argv[1]).then((m) => m.removeEmptyParent())' "$(pwd)/dist/src/cgroups/index.js" || true
"$node" -e 'import(process.argv[1]).then((m) => new m.Networking(process.argv[2], process.argv[3]).removeAll())' \
  "$(pwd)/dist/src/network/index.js" "$BERTH_ROOT" "$BERTH_RUNTIME_ROOT/.network" || true
grep -o " $tmp/[^ ]*" /proc/self/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null
rm -rf "$tmp"
unset BERTH_ROOT BERTH_RUNTIME_ROOT
sh scripts/build-snapshot.sh

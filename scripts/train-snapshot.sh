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
root=${BERTH_ROOT:-/var/lib/berth}
# the bridged run makes berth's bridge and nftables table when there are none: training removes
# what it made (a user's first bridged run makes them again)
had_network=$(ls /sys/class/net | grep '^berth' || true)
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
# berth's parent cgroup stays between containers; training leaves none behind
"$node" -e 'import(process.argv[1]).then((m) => m.removeEmptyParent())' "$(pwd)/dist/src/cgroups/index.js" || true
if [ -z "$had_network" ]; then
  "$node" -e 'import(process.argv[1]).then((m) => new m.Networking(process.argv[2], process.argv[3]).removeAll())' \
    "$(pwd)/dist/src/network/index.js" "$root" "${BERTH_RUNTIME_ROOT:-/run/berth/runtime}/.network" || true
fi
sh scripts/build-snapshot.sh

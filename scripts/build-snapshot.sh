#!/bin/sh
# Builds dist/berth.blob, a V8 start-up snapshot of the berth command (src/cli/berth/snapshot.ts,
# loaded by scripts/snapshot-entry.cjs with the bytecode scripts/train-snapshot.sh gathered),
# and dist/berth.blob.node, whose mtime is that of the node binary that made it: the installed
# launcher uses the snapshot only while node's mtime still matches (a snapshot made by another
# node version would not load). Optional: without a snapshot, berth starts from the bundle.
set -eu
cd "$(dirname "$0")/.."
node=$(readlink -f "$(command -v node)")
rm -f dist/berth.blob dist/berth.blob.node dist/berth.blob.flags dist/berth-start.cjs
# whitespace-minified: no comments, so the source is ASCII and V8 keeps it one byte a character
# (one non-Latin-1 character in a comment doubled the snapshot's source string)
npx esbuild dist/src/cli/berth/snapshot.js --bundle --minify-whitespace --platform=node --format=cjs --target=node20 --log-level=error --outfile=dist/berth-snapshot.cjs
node scripts/unwrap-builtins.mjs dist/berth-snapshot.cjs
# node warns that some built-in modules are "not yet fully verified" in snapshots; they are only
# loaded here, their use is at run time
# V8 flags the snapshot is made, trained and started with (V8 refuses a snapshot or code cache
# made under other flags): dist/berth.blob.flags, read by the launcher, the bench and the tests.
# --no-rehash-snapshot: V8 would otherwise rehash every string and dictionary of the snapshot at
# each start (~6 ms of `berth run`) to apply a fresh hash seed; this keeps the seed drawn when the
# snapshot was made (random per build). --jitless: V8 interprets only, and makes no executable
# memory; a short command gains ~2 ms that baseline compiles and their write-protect flips cost,
# and berth's long work is in native code (hashing, gzip, file copies): a pull measured no slower.
# --no-expose-wasm: jitless has no WebAssembly, and says so on stderr unless it is off already.
flags=${BERTH_SNAPSHOT_FLAGS:-$(cat scripts/snapshot.flags)}
if "$node" $flags --snapshot-blob dist/berth.blob.tmp --build-snapshot scripts/snapshot-entry.cjs >/dev/null 2>dist/berth.blob.log; then
  grep '^build-snapshot:' dist/berth.blob.log >&2 || true
  # without node's code cache for its built-ins (scripts/strip-snapshot-cache.mjs), kept only
  # when node starts berth from the smaller blob
  if "$node" scripts/strip-snapshot-cache.mjs dist/berth.blob.tmp dist/berth.blob.small &&
    "$node" --snapshot-blob dist/berth.blob.small $flags -- --version 2>/dev/null | grep -q '^berth version'; then
    mv dist/berth.blob.small dist/berth.blob.tmp
  fi
  rm -f dist/berth.blob.small
  mv dist/berth.blob.tmp dist/berth.blob
  touch -r "$node" dist/berth.blob.node
  echo "$flags" > dist/berth.blob.flags
  # started as `node --snapshot-blob dist/berth.blob $(cat dist/berth.blob.flags) -- ARGS...`: the
  # snapshot's own main runs berth (scripts/snapshot-entry.cjs)
  rm -f dist/berth.blob.log
else
  echo "build-snapshot: no start-up snapshot (berth starts from the bundle): $(tail -1 dist/berth.blob.log)" >&2
  rm -f dist/berth.blob.tmp
fi

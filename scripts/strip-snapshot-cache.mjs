// Drops Node's code cache for its own built-in modules from a start-up snapshot blob made by
// `node --build-snapshot` (scripts/build-snapshot.sh). The cache is the blob's last part (~2.8 MB
// of 5.7): node reads and copies all of it at every start (~5 ms of `berth run` here), yet uses it
// only to compile a built-in module that is not in the snapshot already — berth's commands load
// theirs when the snapshot is made (scripts/snapshot-warmup.cjs), the rare others (zlib for a
// pull) then compile from source. `withoutCodeCache` in a snapshot config would drop it too, but
// also the bytecode of every function in the snapshot, which costs far more.
//
// Node's blob layout (src/node_snapshotable.cc, SnapshotData::ToBlob): magic, metadata, V8's
// startup data, isolate and environment info, then the cache as a vector (count, then per module
// an id string and a byte vector, sizes as 64-bit little-endian). It is not a public format, so
// this only rewrites a blob whose tail parses exactly as that vector, and build-snapshot.sh keeps
// the original when node does not start from the result.
//   node scripts/strip-snapshot-cache.mjs IN OUT   (exit 1, OUT not written: not recognised)
import { readFileSync, writeFileSync } from "node:fs";

const [input, output] = process.argv.slice(2);
const blob = readFileSync(input);
const u64 = (at) => (at + 8 <= blob.length ? Number(blob.readBigUInt64LE(at)) : -1);

/** Whether a code-cache vector starts at `at` and ends exactly at the end of the blob. */
function cacheAt(at) {
  const count = u64(at);
  if (count < 1 || count > 5000) return false;
  let p = at + 8;
  for (let i = 0; i < count; i++) {
    const idLength = u64(p);
    if (idLength < 1 || idLength > 200) return false;
    for (let c = p + 8; c < p + 8 + idLength; c++) if (blob[c] <= 32 || blob[c] >= 127) return false;
    p += 8 + idLength;
    const dataLength = u64(p);
    if (dataLength < 0 || p + 8 + dataLength > blob.length) return false;
    p += 8 + dataLength;
  }
  return p === blob.length;
}

/** Where V8's startup data ends: past the metadata (type, three strings, cache tag, flags). */
function afterV8Data() {
  if (blob.readUInt32LE(0) !== 0x0143da19) return -1;
  let p = 5;
  for (let s = 0; s < 3; s++) p += 8 + u64(p);
  p += 8; // V8's cache version tag and the snapshot flags
  const v8Size = blob.readInt32LE(p);
  return v8Size > 0 && p + 4 + v8Size < blob.length ? p + 4 + v8Size : -1;
}

const from = afterV8Data();
// the two info sections between V8's data and the cache are a few kilobytes
let start = -1;
for (let at = from; from >= 0 && at < from + (1 << 20) && at + 8 <= blob.length; at++) {
  if (cacheAt(at)) {
    start = at;
    break;
  }
}
if (start < 0) {
  console.error(`strip-snapshot-cache: ${input}: no code cache found where node puts it; left as it is`);
  process.exit(1);
}
const zero = Buffer.alloc(8);
writeFileSync(output, Buffer.concat([blob.subarray(0, start), zero]));
console.error(`strip-snapshot-cache: dropped ${((blob.length - start) / 1048576).toFixed(1)} MB of node's built-in code cache`);

#!/bin/sh
# The larger test and benchmark image: the debootstrap tree (make-debian-rootfs.sh) as an OCI image
# layout of five gzip layers, made with GNU tar and gzip only (no berth code), cached in
# build/cache/debian-oci. Prints the layout directory.
set -eu
cd "$(dirname "$0")/.."
out=build/cache/debian-oci
rootfs=$(sh scripts/make-debian-rootfs.sh)
# made again when the tree was (its package list differs)
if [ -f "$out/index.json" ] && cmp -s "$rootfs/.complete" "$out/.source"; then echo "$out"; exit 0; fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/blobs/sha256"
# five layers: a split by directory, each a plain tar+gzip
set -- "usr/lib/x86_64-linux-gnu" "usr/lib/python3.11" "usr/share" "usr"
layer() { # name, tar args...
  name=$1; shift
  tar --sort=name --numeric-owner -C "$rootfs" -cf "$tmp/$name.tar" "$@"
  diff=$(sha256sum "$tmp/$name.tar" | cut -d' ' -f1)
  gzip -n -6 "$tmp/$name.tar"
  d=$(sha256sum "$tmp/$name.tar.gz" | cut -d' ' -f1)
  size=$(stat -c %s "$tmp/$name.tar.gz")
  mv "$tmp/$name.tar.gz" "$tmp/blobs/sha256/$d"
  echo "$diff $d $size" >> "$tmp/layers"
}
layer l1 --exclude=./usr --exclude=./.complete .
layer l2 ./usr/lib/x86_64-linux-gnu
layer l3 ./usr/lib/python3.11
layer l4 ./usr/share
layer l5 --exclude=./usr/lib/x86_64-linux-gnu --exclude=./usr/lib/python3.11 --exclude=./usr/share ./usr
node --input-type=module -e '
import { readFileSync, writeFileSync, renameSync } from "node:fs";
import { createHash } from "node:crypto";
const dir = process.argv[1];
const layers = readFileSync(dir + "/layers", "utf8").trim().split("\n").map((l) => l.split(" "));
const put = (obj) => { const b = Buffer.from(JSON.stringify(obj)); const d = createHash("sha256").update(b).digest("hex"); writeFileSync(`${dir}/blobs/sha256/${d}`, b); return { digest: "sha256:" + d, size: b.length }; };
const config = put({ created: "2023-06-10T00:00:00Z", architecture: "amd64", os: "linux",
  config: { Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], Cmd: ["bash"] },
  rootfs: { type: "layers", diff_ids: layers.map((l) => "sha256:" + l[0]) },
  history: layers.map((_, i) => ({ created: "2023-06-10T00:00:00Z", created_by: `debootstrap bookworm, part ${i + 1}` })) });
const manifest = put({ schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
  config: { mediaType: "application/vnd.oci.image.config.v1+json", ...config },
  layers: layers.map((l) => ({ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: "sha256:" + l[1], size: Number(l[2]) })) });
writeFileSync(dir + "/oci-layout", JSON.stringify({ imageLayoutVersion: "1.0.0" }));
writeFileSync(dir + "/index.json", JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: "application/vnd.oci.image.manifest.v1+json", ...manifest, annotations: { "org.opencontainers.image.ref.name": "latest" } }] }));
' "$tmp"
rm -f "$tmp/layers"
cp "$rootfs/.complete" "$tmp/.source"
rm -rf "$out"
mkdir -p build/cache
cp -r "$tmp" "$out.tmp"
mv "$out.tmp" "$out"
echo "$out"

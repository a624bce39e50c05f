/**
 * `berth cp` against a running container that swaps a directory for a symlink to a host path as
 * fast as it can (the CVE-2018-15664 class): 1,000 copies each way through the engine, and
 * nothing is read from or written to the host directory the link names.
 */
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import { join } from "node:path";
import { rootSkip, tempDir } from "./helpers.js";
import { berth, berthEnv, importBusybox, ok, removeNetworking, type BerthEnv } from "./image-helpers.js";
import { Engine } from "../src/engine/index.js";
import { encodeHeader } from "../src/images/index.js";
import { END_OF_ARCHIVE, padding } from "../src/images/tar.js";

let env: BerthEnv;
let runtimeRoot: string;
const b = (args: string[]) => berth(env, args, { extraEnv: { BERTH_RUNTIME_ROOT: runtimeRoot } });
const ROUNDS = Number(process.env.BERTH_CP_RACE_ROUNDS ?? 1000);

/** A tar of one file. */
function tarOf(name: string, body: string): Buffer {
  const data = Buffer.from(body);
  return Buffer.concat([encodeHeader({ name, type: "file", size: data.length, mode: 0o644, mtime: 0 }), data, padding(data.length), END_OF_ARCHIVE]);
}

async function collect(tar: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of tar) parts.push(c);
  return Buffer.concat(parts);
}

describe("cp and a container racing symlink swaps", { skip: rootSkip }, () => {
  before(() => {
    env = berthEnv();
    runtimeRoot = tempDir("berth-test-rt-");
    importBusybox(env);
  });
  after(async () => {
    b(["rm", "-f", "race"]);
    await removeNetworking(env, runtimeRoot);
  });

  test(`${ROUNDS} copies out and ${ROUNDS} copies in: nothing outside the container is read or written`, async () => {
    const host = tempDir("berth-test-victim-");
    fs.writeFileSync(join(host, "secret"), "HOST-SECRET\n");
    // /w/dir is a real directory one moment and a symlink to the host's directory the next
    const swap = `mkdir -p /w/dir; echo inside > /w/dir/secret; ln -s ${host} /w/link; touch /w/started; while :; do mv /w/dir /w/x; mv /w/link /w/dir; mv /w/dir /w/link; mv /w/x /w/dir; done`;
    ok(b(["run", "-d", "--name", "race", "--network", "none", "busybox", "sh", "-c", swap]));
    const engine = new Engine({ root: env.root, runtimeRoot });
    for (let i = 0; i < 100 && !(await engine.statPath("race", "/w/started")); i++) await new Promise((r) => setTimeout(r, 50));

    let outOk = 0;
    for (let i = 0; i < ROUNDS; i++) {
      // a file below the swapped directory, and (every tenth) the whole tree walked through it
      const path = i % 10 ? "/w/dir/secret" : "/w";
      try {
        const tar = await engine.copyFrom("race", path, {}, collect);
        assert.ok(!tar.includes("HOST-SECRET"), `copy ${i} of ${path} read the host's file`);
        if (tar.includes("inside")) outOk++;
      } catch (e) {
        // the path may be missing at that instant (the link's target does not exist inside)
        assert.match((e as Error).message, /Could not find the file|changed while being archived|no such file|not a directory|symbolic link/i, String(e));
      }
    }
    let inOk = 0;
    for (let i = 0; i < ROUNDS; i++) {
      try {
        await engine.copyTo("race", "/w/dir", (async function* () {
          yield tarOf(`in-${i}.txt`, "from the host side\n");
        })());
        inOk++;
      } catch (e) {
        assert.match((e as Error).message, /Could not find the file|not a directory|symlink|no such file/i, String(e));
      }
    }
    assert.deepEqual(fs.readdirSync(host), ["secret"], "nothing was written into the host's directory");
    assert.equal(fs.readFileSync(join(host, "secret"), "utf8"), "HOST-SECRET\n");
    // the race ran both ways: some copies found the real directory
    console.log(`# cp race: out ${outOk}/${ROUNDS} reached the directory, in ${inOk}/${ROUNDS}`);
    assert.ok(outOk > 0 && inOk > 0, `copies that reached the real directory: out ${outOk}, in ${inOk}`);
    // stopped, the tree holds still: the copies in are inside it (in /w/dir or, mid-swap, /w/x)
    ok(b(["kill", "race"]));
    const tree = (await engine.copyFrom("race", "/w", {}, collect)).toString("latin1");
    assert.equal(new Set(tree.match(/in-\d+\.txt/g) ?? []).size, inOk, "every copy in landed inside the container");
  });
});

/** The protocol table, the generated C header and TypeScript constants, and the plan encoding. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { project } from "./helpers.js";
import { Op, Msg, MonitorOpt, MonitorFile, ExitKey, Frame } from "../src/runtime/protocol.js";
import { encodePlan, parseMountOptions, createPlan } from "../src/runtime/plan.js";
import { validateSpec, defaultSpec } from "../src/runtime/spec.js";
import { capabilityMask } from "../src/security/index.js";

test("C header and TypeScript agree with the table", () => {
  const table = readFileSync(join(project, "helper/protocol.table"), "utf8");
  const header = readFileSync(join(project, "helper/protocol.h"), "utf8");
  for (const m of table.matchAll(/^(op|msg)\s+(\w+)\s+(\d+)/gm)) {
    const [, kind, name, code] = m;
    assert.match(header, new RegExp(`#define ${kind!.toUpperCase()}_${name} ${code} `));
    const ts = (kind === "op" ? Op : Msg) as Record<string, number>;
    assert.equal(ts[name!], Number(code), `${kind} ${name}`);
  }
});

test("the monitor's options, files, exit keys and frames come from the table, in C and TypeScript", () => {
  const table = readFileSync(join(project, "helper/protocol.table"), "utf8");
  const header = readFileSync(join(project, "helper/protocol.h"), "utf8");
  const opts = [...table.matchAll(/^mopt\s+(\w+)\s+(\w)\s+(\S+)/gm)];
  assert.ok(opts.length >= 10);
  for (const [, name, letter] of opts) {
    assert.match(header, new RegExp(`#define MOPT_${name} '${letter}' `));
    assert.equal((MonitorOpt as Record<string, string>)[name!], `-${letter}`);
  }
  // getopt's string: every letter, a colon after those that take a value
  const optstring = /#define MONITOR_OPTSTRING "\+([^"]+)"/.exec(header)?.[1];
  assert.equal(optstring, opts.map(([, , l, args]) => l + (args === "-" ? "" : ":")).join(""));
  for (const [, name, file] of table.matchAll(/^mfile\s+(\w+)\s+(\S+)/gm)) assert.equal((MonitorFile as Record<string, string>)[name!], file);
  for (const [, name, key] of table.matchAll(/^exitkey\s+(\w+)\s+(\S+)/gm)) assert.equal((ExitKey as Record<string, string>)[name!], key);
  for (const [, name, kind] of table.matchAll(/^frame\s+(\w+)\s+(\d+)/gm)) assert.equal((Frame as Record<string, number>)[name!], Number(kind));
  // no hand-kept copy left in the monitor: its option letters and file names are the header's
  const monitor = readFileSync(join(project, "helper/berth-monitor.c"), "utf8").replace(/\/\*[\s\S]*?\*\//g, "");
  assert.doesNotMatch(monitor, /case '[a-zA-Z]':/);
  for (const file of Object.values(MonitorFile)) assert.ok(!monitor.includes(`"${file}"`), `berth-monitor.c spells "${file}" itself`);
});

test("plan records: code, length, NUL-terminated strings, END last", () => {
  const buf = encodePlan([[Op.HOSTNAME, "box"], [Op.RLIMIT, "7", "1", "2"]]);
  assert.equal(buf.readUInt32LE(0), Op.HOSTNAME);
  assert.equal(buf.readUInt32LE(4), 4);
  assert.equal(buf.subarray(8, 12).toString(), "box\0");
  assert.equal(buf.readUInt32LE(12), Op.RLIMIT);
  assert.equal(buf.subarray(20, 26).toString(), "7\x001\x002\0");
  assert.equal(buf.readUInt32LE(26), Op.END);
  assert.equal(buf.length, 34);
});

test("plan records carry non-ASCII arguments as UTF-8, with their byte length", () => {
  const path = "/données/日本";
  const buf = encodePlan([[Op.CWD, path], [Op.ENV, "A=é"]]);
  const len = Buffer.byteLength(path) + 1;
  assert.equal(buf.readUInt32LE(0), Op.CWD);
  assert.equal(buf.readUInt32LE(4), len);
  assert.equal(buf.subarray(8, 8 + len).toString("utf8"), `${path}\0`);
  assert.equal(buf.readUInt32LE(8 + len), Op.ENV);
  assert.equal(buf.subarray(16 + len, 16 + len + 5).toString("utf8"), "A=é\0");
  assert.equal(buf.readUInt32LE(16 + len + 5), Op.END);
});

test("mount options become flags, propagation and data", () => {
  const p = parseMountOptions(["ro", "nosuid", "rbind", "rslave", "size=1m", "mode=755"]);
  assert.equal(p.flags, 1 | 2 | 4096 | 16384);
  assert.deepEqual(p.propagation, [(1 << 19) | 16384]);
  assert.deepEqual(p.data, ["size=1m", "mode=755"]);
  assert.equal(parseMountOptions(["ro", "rw"]).flags, 0, "later options win");
});

test("capabilities become masks; unknown names are reported", () => {
  const unknown: string[] = [];
  assert.equal(capabilityMask(["CAP_CHOWN", "kill", "CAP_SYS_ADMIN", "CAP_NOPE"], unknown), 1n | (1n << 5n) | (1n << 21n));
  assert.deepEqual(unknown, ["CAP_NOPE"]);
});

test("the plan creates namespaces by clone flags, joins by path, and ends with exec", () => {
  const spec = validateSpec(defaultSpec());
  spec.process!.terminal = false;
  spec.linux!.namespaces!.push({ type: "network", path: "/proc/1/ns/net" } as never);
  spec.linux!.namespaces = spec.linux!.namespaces!.filter((n, i, a) => a.findIndex((x) => x.type === n.type) === i || n.path);
  spec.linux!.namespaces = spec.linux!.namespaces!.filter((n) => n.type !== "network" || n.path);
  const ops = createPlan({ spec, bundle: "/b", rootfs: "/b/rootfs" });
  const clone = ops.find((o) => o[0] === Op.CLONE)!;
  const flags = Number(clone[1]);
  assert.equal(flags & 0x40000000, 0, "network is joined, not created");
  assert.ok(flags & 0x20000000 && flags & 0x00020000 && flags & 0x04000000, "pid, mount and uts are created");
  assert.deepEqual(ops.find((o) => o[0] === Op.SETNS), [Op.SETNS, "/proc/1/ns/net", String(0x40000000)]);
  assert.deepEqual(ops.at(-1), [Op.EXEC, "sh", "sh"]);
  assert.ok(ops.findIndex((o) => o[0] === Op.PIVOT_ROOT) < ops.findIndex((o) => o[0] === Op.USER), "pivot before dropping to the user");
});

test("config.json errors name the field", () => {
  const cases: [unknown, RegExp][] = [
    [{}, /ociVersion: is required/],
    [{ ociVersion: "2.0.0", root: { path: "r" } }, /ociVersion: unsupported version "2.0.0"/],
    [{ ociVersion: "1.0.0" }, /root: is required/],
    [{ ociVersion: "1.0.0", root: { path: "r" }, process: { user: { uid: 0, gid: 0 }, cwd: "rel", args: ["x"] } }, /process.cwd: must be an absolute path/],
    [{ ociVersion: "1.0.0", root: { path: "r" }, mounts: [{ destination: "x" }] }, /mounts\[0\].destination: must be an absolute path/],
    [{ ociVersion: "1.0.0", root: { path: "r" }, hooks: { nope: [] } }, /hooks.nope: unknown hook/],
    [{ ociVersion: "1.0.0", root: { path: "r" }, linux: { namespaces: [{ type: "pid" }, { type: "pid", path: "/proc/1/ns/pid" }] } }, /namespace pid is listed twice, new and joining \/proc\/1\/ns\/pid/],
  ];
  for (const [spec, message] of cases) assert.throws(() => validateSpec(spec), message);
  // the same entry twice is taken as one
  const twice = validateSpec({ ociVersion: "1.0.0", root: { path: "r" }, linux: { namespaces: [{ type: "pid" }, { type: "uts" }, { type: "pid" }] } });
  assert.deepEqual(twice.linux!.namespaces, [{ type: "pid" }, { type: "uts" }]);
});

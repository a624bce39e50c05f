/**
 * The pure cores, table-driven, without root and without the C build: Go's text/template (the cases
 * of Go's exec tests that apply to docker's --format), the flag parser, image references, IPAM, DNS
 * messages, the tar reader's malformed headers, the seccomp compiler's records and the spec
 * validator. Each row is what a user would see: the rendered text, the parsed value, the error.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Template } from "../src/cli/template.js";
import { parse, UsageError, type Flag } from "../src/cli/pflag.js";
import { parseFlags, type FlagDef as RuntimeFlagDef } from "../src/cli/args.js";
import { parseReference, formatReference, familiar } from "../src/images/reference.js";
import { bigToIp6, freeAddress, ip6ToBig, ipToNum, macFor, numToIp, overlaps, parseSubnet, parseSubnet6 } from "../src/network/addr.js";
import { answer, readQuestion } from "../src/network/dns.js";
import { TarReader, encodeHeader, padding, END_OF_ARCHIVE, type TarHeader } from "../src/images/tar.js";
import { actionValue, seccompRecords } from "../src/security/seccomp.js";
import { defaultSpec, validateSpec } from "../src/runtime/spec.js";
import { BerthError, ErrorCode, fsCause, isNotFound, withHint } from "../src/common/errors.js";

// ---- Go's text/template (docker --format)

const data = { True: true, False: false, I: 17, U: 0, S: "xyz", SI: [3, 4, 5], SS: ["a", "b"], Empty: [], M: { b: 2, a: 1 }, One: { k: "v" }, Nested: { Inner: { V: "deep" } }, Nil: null, F: 1.5 };
const templateCases: [name: string, source: string, want: string][] = [
  ["field", "{{.I}}", "17"],
  ["nested field", "{{.Nested.Inner.V}}", "deep"],
  ["slice", "{{.SI}}", "[3 4 5]"],
  ["map, keys sorted", "{{.M}}", "map[a:1 b:2]"],
  ["missing map key", "{{.M.c}}", "<no value>"],
  ["nil", "{{.Nil}}", "<no value>"],
  ["if true", "{{if .True}}T{{else}}F{{end}}", "T"],
  ["if false", "{{if .False}}T{{else}}F{{end}}", "F"],
  ["if empty slice", "{{if .Empty}}T{{else}}F{{end}}", "F"],
  ["if zero", "{{if .U}}T{{else}}F{{end}}", "F"],
  ["else if", "{{if .False}}a{{else if .True}}b{{else}}c{{end}}", "b"],
  ["range", "{{range .SI}}-{{.}}-{{end}}", "-3--4--5-"],
  ["range with index and element", "{{range $i, $x := .SI}}<{{$i}}={{$x}}>{{end}}", "<0=3><1=4><2=5>"],
  ["range else", "{{range .Empty}}x{{else}}EMPTY{{end}}", "EMPTY"],
  ["range over a map: sorted keys", "{{range $k, $v := .M}}{{$k}}={{$v}};{{end}}", "a=1;b=2;"],
  ["range over an integer", "{{range 3}}{{.}}{{end}}", "012"],
  ["$ inside range", "{{range .SI}}{{$.I}}{{end}}", "171717"],
  ["break", "{{range .SI}}{{if eq . 4}}{{break}}{{end}}{{.}}{{end}}", "3"],
  ["continue", "{{range .SI}}{{if eq . 4}}{{continue}}{{end}}{{.}}{{end}}", "35"],
  ["assignment inside range is seen after it", "{{$n := 0}}{{range .SI}}{{$n = .}}{{end}}{{$n}}", "5"],
  ["with", "{{with .S}}<{{.}}>{{end}}", "<xyz>"],
  ["with else", "{{with .Empty}}x{{else}}none{{end}}", "none"],
  ["with declaration", '{{with $x := "hi"}}{{$x}}{{end}}', "hi"],
  ["if declaration", "{{if $x := .S}}{{$x}}{{end}}", "xyz"],
  ["variable", "{{$x := 1}}{{$x}}", "1"],
  ["assignment", "{{$x := 1}}{{$x = 2}}{{$x}}", "2"],
  ["pipeline", "{{.SI | len}}", "3"],
  ["pipeline value is the last argument", '{{"a" | printf "%s%s" "b"}}', "ba"],
  ["parenthesised", '{{printf "%d" (len .SI)}}', "3"],
  ["field of a parenthesised value", "{{(.Nested).Inner.V}}", "deep"],
  ["index", "{{index .SI 1}}", "4"],
  ["index of a map", '{{index .M "b"}}', "2"],
  ["len of a string", "{{len .S}}", "3"],
  ["eq with several", "{{eq 1 2 3 1}}", "true"],
  ["ne", "{{ne 1 2}}", "true"],
  ["lt", "{{lt 1 2}}", "true"],
  ["le", "{{le 2 2}}", "true"],
  ["gt on strings", '{{gt "b" "a"}}', "true"],
  ["ge", "{{ge 1 2}}", "false"],
  ["and: the first false", "{{and 1 0}}", "0"],
  ["and: the last", "{{and 1 2}}", "2"],
  ["or: the first true", '{{or 0 "x"}}', "x"],
  ["not", "{{not 0}}", "true"],
  ["trim markers", "  {{- 3 -}}  x", "3x"],
  ["comment", "a{{/* c */}}b", "ab"],
  ["trimmed comment", "a {{- /* c */ -}} b", "ab"],
  ["raw string", "{{`a\\n`}}", "a\\n"],
  ["printf %q", '{{printf "%q" "x"}}', '"x"'],
  ["printf width", '{{printf "%5d|" 3}}', "    3|"],
  ["printf left-justified", '{{printf "%-5s|" "a"}}', "a    |"],
  ["printf %v of a slice", '{{printf "%v" .SI}}', "[3 4 5]"],
  ["printf precision", '{{printf "%.2f" .F}}', "1.50"],
  ["printf %%", '{{printf "100%%"}}', "100%"],
  ["float literal", "{{1.5}}", "1.5"],
  ["bool literal", "{{true}}", "true"],
  ["string literal", '{{"hi"}}', "hi"],
  ["print", '{{print "a" 1}}', "a1"],
  ["println", '{{println "a" "b"}}', "a b\n"],
  ["define and template", '{{define "T"}}<{{.}}>{{end}}{{template "T" .I}}', "<17>"],
  ["block", '{{block "B" .S}}[{{.}}]{{end}}', "[xyz]"],
  // docker's own functions
  ["json", "{{json .One}}", '{"k":"v"}'],
  ["json of a slice", "{{json .SS}}", '["a","b"]'],
  ["join", '{{join .SS ","}}', "a,b"],
  ["upper", '{{upper "x"}}', "X"],
  ["lower", '{{lower "X"}}', "x"],
  ["split", '{{split "a,b" ","}}', "[a b]"],
  ["title", '{{title "hello world"}}', "Hello World"],
  ["truncate", '{{truncate "abcdef" 3}}', "abc"],
  ["pad", '{{pad "x" 1 2}}', " x  "],
];

test("templates render as Go's text/template does (the exec tests that apply to --format)", () => {
  for (const [name, source, want] of templateCases) assert.equal(new Template(source).execute(data), want, `${name}: ${source}`);
});

test("template errors: parse errors at construction, execution errors with what went wrong", () => {
  const parseErrors: [string, RegExp][] = [
    ["{{.I", /unclosed action/],
    ["{{if .True}}x", /missing \{\{end\}\}/],
    ["{{end}}", /unexpected \{\{end\}\}/],
    ["{{range}}{{end}}", /missing value/],
    ["{{break}}", /outside \{\{range\}\}/],
    ["{{define T}}{{end}}", /name in quotes/],
  ];
  for (const [source, re] of parseErrors) assert.throws(() => new Template(source), (e: unknown) => e instanceof BerthError && re.test(e.message), source);
  const execErrors: [string, RegExp][] = [
    ["{{nope 1}}", /function "nope" not defined/],
    ["{{$y}}", /undefined variable \$y/],
    ["{{$y = 1}}", /undefined variable \$y/],
    ['{{template "missing"}}', /no such template "missing"/],
    ["{{.I.X}}", /can't evaluate field X/],
  ];
  for (const [source, re] of execErrors) assert.throws(() => new Template(source).execute(data), (e: unknown) => e instanceof BerthError && re.test(e.message), source);
});

// ---- flags (cobra/pflag's rules)

const flags: Flag[] = [
  { long: "detach", short: "d", kind: "bool" },
  { long: "interactive", short: "i", kind: "bool" },
  { long: "tty", short: "t", kind: "bool" },
  { long: "env", short: "e", kind: "list" },
  { long: "name", kind: "string" },
  { long: "cpus", kind: "string" },
  { long: "restart-count", kind: "int" },
  { long: "network", kind: "string", default: "default" },
];

test("flags parse as docker's: forms, clusters, lists, booleans, --, interspersed or not", () => {
  const cases: [argv: string[], interspersed: boolean, want: Record<string, unknown>, args: string[]][] = [
    [["--name", "web", "img"], true, { name: "web", network: "default" }, ["img"]],
    [["--name=web", "img"], true, { name: "web", network: "default" }, ["img"]],
    [["-it", "img", "sh"], false, { interactive: true, tty: true, network: "default" }, ["img", "sh"]],
    [["-e", "A=1", "--env=B=2", "-eC=3", "img"], true, { env: ["A=1", "B=2", "C=3"], network: "default" }, ["img"]],
    [["-d=false", "img"], true, { detach: false, network: "default" }, ["img"]],
    [["--detach=true", "--tty=0", "img"], true, { detach: true, tty: false, network: "default" }, ["img"]],
    [["img", "--name", "x"], true, { name: "x", network: "default" }, ["img"]],
    [["img", "--name", "x"], false, { network: "default" }, ["img", "--name", "x"]],
    [["--", "--name", "x"], true, { network: "default" }, ["--name", "x"]],
    [["--restart-count", "-3"], true, { "restart-count": -3, network: "default" }, []],
    [["--network", "none", "-"], true, { network: "none" }, ["-"]],
  ];
  for (const [argv, interspersed, want, args] of cases) {
    const r = parse(argv, flags, "run", { interspersed });
    assert.deepEqual(r.flags, want, argv.join(" "));
    assert.deepEqual(r.args, args, argv.join(" "));
  }
});

test("flag errors are docker's usage errors, word for word", () => {
  const cases: [string[], string][] = [
    [["--nope"], "unknown flag: --nope"],
    [["-x"], "unknown shorthand flag: 'x' in -x"],
    [["--name"], "flag needs an argument: --name"],
    [["-e"], "flag needs an argument: -e, --env"],
    [["--restart-count", "two"], 'invalid argument "two" for "--restart-count" flag: strconv.ParseInt: parsing "two": invalid syntax'],
    [["--detach=maybe"], 'invalid argument "maybe" for "--detach" flag: strconv.ParseBool: parsing "maybe": invalid syntax'],
  ];
  for (const [argv, message] of cases) assert.throws(() => parse(argv, flags, "run"), (e: unknown) => e instanceof UsageError && e.message === message, argv.join(" "));
});

// ---- image references (docker's normalisation)

test("image references normalise as docker's do, and print in their familiar form", () => {
  const digest = "sha256:" + "a".repeat(64);
  const cases: [input: string, full: string, familiarForm: string][] = [
    ["busybox", "docker.io/library/busybox", "busybox"],
    ["busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"],
    ["library/busybox", "docker.io/library/busybox", "busybox"],
    ["docker.io/busybox", "docker.io/library/busybox", "busybox"],
    ["index.docker.io/library/busybox:latest", "docker.io/library/busybox:latest", "busybox:latest"],
    ["user/app", "docker.io/user/app", "user/app"],
    ["localhost/app", "localhost/app", "localhost/app"],
    ["localhost:5000/a/b/c:v1", "localhost:5000/a/b/c:v1", "localhost:5000/a/b/c:v1"],
    ["127.0.0.1:5000/app", "127.0.0.1:5000/app", "127.0.0.1:5000/app"],
    ["[::1]:5000/app:x", "[::1]:5000/app:x", "[::1]:5000/app:x"],
    [`busybox@${digest}`, `docker.io/library/busybox@${digest}`, `busybox@${digest}`],
    [`quay.io/a/b:t@${digest}`, `quay.io/a/b:t@${digest}`, `quay.io/a/b:t@${digest}`],
    ["a.b/c_d__e-f.g", "a.b/c_d__e-f.g", "a.b/c_d__e-f.g"],
  ];
  for (const [input, full, fam] of cases) {
    assert.equal(formatReference(parseReference(input)), full, input);
    assert.equal(familiar(input), fam, input);
  }
});

test("malformed references are refused with docker's words", () => {
  const bad: [string, RegExp][] = [
    ["", /invalid reference format/],
    ["Busybox", /repository name \(library\/Busybox\) must be lowercase|must be lowercase/],
    ["busybox:", /bad tag/],
    ["busybox:-x", /bad tag/],
    ["busybox@sha256:abc", /bad digest/],
    ["a//b", /bad repository name/],
    ["-a/b", /bad repository name/],
    ["a/b_", /bad repository name/],
    ["ex ample/x", /invalid reference format/],
    [`docker.io/${"a".repeat(250)}`, /more than 255 characters/],
  ];
  for (const [input, re] of bad) assert.throws(() => parseReference(input), (e: unknown) => e instanceof BerthError && re.test(e.message), JSON.stringify(input));
});

// ---- IPAM

test("IPAM: the lowest free address, never the network, broadcast, gateway, auxiliary or used ones", () => {
  const subnet = parseSubnet("10.9.0.0/29"); // .0 network, .7 broadcast
  const gw = ipToNum("10.9.0.1");
  const ip = (n: number | undefined) => (n === undefined ? undefined : numToIp(n));
  assert.equal(ip(freeAddress({ subnet, gateway: gw, used: new Set() })), "10.9.0.2");
  assert.equal(ip(freeAddress({ subnet, gateway: gw, used: new Set([ipToNum("10.9.0.2")]) })), "10.9.0.3");
  assert.equal(ip(freeAddress({ subnet, gateway: gw, used: new Set(), aux: [ipToNum("10.9.0.2"), ipToNum("10.9.0.3")] })), "10.9.0.4");
  // an ip-range narrows the pool; its end is still inside the subnet (no broadcast)
  assert.equal(ip(freeAddress({ subnet, gateway: gw, used: new Set(), range: parseSubnet("10.9.0.4/30") })), "10.9.0.4");
  assert.equal(ip(freeAddress({ subnet, gateway: gw, used: new Set([4, 5, 6].map((x) => ipToNum(`10.9.0.${x}`))), range: parseSubnet("10.9.0.4/30") })), undefined);
  // full: .2-.6 used
  assert.equal(freeAddress({ subnet, gateway: gw, used: new Set([2, 3, 4, 5, 6].map((x) => ipToNum(`10.9.0.${x}`))) }), undefined);
  // a /31 has no host address here (docker's bridge driver needs network and broadcast)
  assert.equal(freeAddress({ subnet: parseSubnet("10.9.0.0/31"), gateway: ipToNum("10.9.0.0"), used: new Set() }), undefined);
});

test("IPAM: subnets, overlaps, MACs, IPv6 forms", () => {
  assert.deepEqual(parseSubnet("192.168.5.77/24"), { base: ipToNum("192.168.5.0"), prefix: 24 });
  assert.equal(overlaps(parseSubnet("10.0.0.0/8"), parseSubnet("10.200.0.0/16")), true);
  assert.equal(overlaps(parseSubnet("10.0.0.0/16"), parseSubnet("10.1.0.0/16")), false);
  for (const bad of ["10.0.0.0", "10.0.0.0/33", "300.0.0.0/8", "a.b.c.d/8"]) assert.throws(() => parseSubnet(bad), BerthError, bad);
  assert.equal(macFor("172.17.0.2"), "02:42:ac:11:00:02");
  const v6: [string, string][] = [
    ["2001:db8:0:0:0:0:0:1", "2001:db8::1"],
    ["0:0:0:0:0:0:0:0", "::"],
    ["fd00:0:0:1:0:0:0:0", "fd00:0:0:1::"],
    ["1:0:1:0:0:1:0:0", "1:0:1::1:0:0"], // the first of two equal runs? RFC 5952: the longest; here 2 vs 2 → the first
    ["::ffff:1", "::ffff:1"],
  ];
  for (const [input, shortest] of v6) assert.equal(bigToIp6(ip6ToBig(input)), shortest, input);
  assert.equal(parseSubnet6("fd00:1::5/64").prefix, 64);
  for (const bad of ["1::2::3", "12345::", "g::1"]) assert.throws(() => ip6ToBig(bad), BerthError, bad);
});

// ---- DNS messages

function query(name: string, type = 1, id = 0x1234): Buffer {
  const labels = name.split(".").map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)]));
  const header = Buffer.from([id >> 8, id & 255, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD, one question
  return Buffer.concat([header, ...labels, Buffer.from([0, 0, type, 0, 1])]);
}

test("DNS: questions are read (lower-cased), answers carry the id, flags, the question and A/AAAA records", () => {
  const q = query("Web.Example");
  const question = readQuestion(q)!;
  assert.equal(question.name, "web.example");
  assert.equal(question.type, 1);
  const a = answer(q, question, ["10.0.0.7", "fd00::7"]);
  assert.equal(a.readUInt16BE(0), 0x1234, "id echoed");
  assert.equal(a[2]! & 0x80, 0x80, "QR: a response");
  assert.equal(a[2]! & 0x04, 0x04, "AA: authoritative");
  assert.equal(a[2]! & 0x01, 0x01, "RD echoed");
  assert.equal(a[3]! & 0x0f, 0, "NOERROR");
  assert.equal(a.readUInt16BE(4), 1, "one question");
  assert.equal(a.readUInt16BE(6), 2, "two answers");
  assert.deepEqual(a.subarray(12, question.end), q.subarray(12, question.end), "the question echoed");
  let off = question.end;
  assert.equal(a.readUInt16BE(off), 0xc00c, "name: a pointer to the question");
  assert.equal(a.readUInt16BE(off + 2), 1, "A");
  assert.equal(a.readUInt16BE(off + 10), 4);
  assert.deepEqual([...a.subarray(off + 12, off + 16)], [10, 0, 0, 7]);
  off += 16;
  assert.equal(a.readUInt16BE(off + 2), 28, "AAAA");
  assert.equal(a.readUInt16BE(off + 10), 16);
  assert.equal(a.subarray(off + 12, off + 28).toString("hex"), "fd000000000000000000000000000007");
  assert.equal(a.length, off + 28);
  const nx = answer(q, question, [], 3);
  assert.equal(nx[3]! & 0x0f, 3, "NXDOMAIN");
  assert.equal(nx.readUInt16BE(6), 0);
});

test("DNS: malformed queries are not answered", () => {
  const good = query("a.b");
  const cases: [string, Buffer][] = [
    ["shorter than a header", good.subarray(0, 11)],
    ["no question", Buffer.concat([good.subarray(0, 4), Buffer.from([0, 0]), good.subarray(6)])],
    ["a label past the end", Buffer.concat([good.subarray(0, 12), Buffer.from([40, 0x61])])],
    ["a label longer than 63", Buffer.concat([good.subarray(0, 12), Buffer.from([64]), Buffer.alloc(64, 0x61), Buffer.from([0, 0, 1, 0, 1])])],
    ["type and class cut off", good.subarray(0, good.length - 3)],
  ];
  for (const [name, msg] of cases) assert.equal(readQuestion(msg), undefined, name);
});

// ---- the tar reader

function readAll(chunks: Buffer[], chunkSize?: number): { entries: TarHeader[]; bodies: string[] } {
  const entries: TarHeader[] = [];
  const bodies: string[] = [];
  let cur: Buffer[] = [];
  const r = new TarReader({ entry: (h) => (entries.push(h), (cur = [])), data: (c) => void cur.push(Buffer.from(c)), end: () => void bodies.push(Buffer.concat(cur).toString()) });
  const all = Buffer.concat(chunks);
  const step = chunkSize ?? all.length;
  for (let i = 0; i < all.length; i += step) r.write(all.subarray(i, i + step));
  r.finish();
  return { entries, bodies };
}
const file = (name: string, body: string, extra: Partial<TarHeader> = {}) => [encodeHeader({ name, type: "file", size: Buffer.byteLength(body), ...extra }), Buffer.from(body), padding(Buffer.byteLength(body))];

test("tar reader: entries, long names through PAX, chunk boundaries anywhere", () => {
  const long = "d/" + "n".repeat(180) + ".txt";
  const archive = [...file("a.txt", "hello"), encodeHeader({ name: "dir/", type: "directory" }), ...file(long, "x".repeat(700), { uid: 3_000_000, mode: 0o4755 }), encodeHeader({ name: "l", type: "symlink", linkname: "a.txt" }), END_OF_ARCHIVE];
  for (const chunk of [undefined, 1, 7, 511, 513]) {
    const { entries, bodies } = readAll(archive, chunk);
    assert.deepEqual(entries.map((e) => [e.name, e.type]), [["a.txt", "file"], ["dir/", "directory"], [long, "file"], ["l", "symlink"]], `chunks of ${chunk}`);
    assert.equal(entries[2]!.uid, 3_000_000);
    assert.equal(entries[2]!.mode, 0o4755);
    assert.equal(entries[3]!.linkname, "a.txt");
    assert.deepEqual(bodies, ["hello", "", "x".repeat(700), ""]);
  }
});

/** A header's checksum made right again after an edit. */
function withSum(b: Buffer): Buffer {
  b.fill(32, 148, 156);
  let sum = 0;
  for (const x of b) sum += x;
  b.write(sum.toString(8).padStart(6, "0") + "\0 ", 148, 8, "ascii");
  return b;
}

test("tar reader: malformed headers are refused with what is wrong, never read as garbage", () => {
  const header = (edit: (b: Buffer) => void, fixSum = true) => {
    const b = Buffer.from(encodeHeader({ name: "f", type: "file", size: 5 }));
    edit(b);
    return [fixSum ? withSum(b) : b, Buffer.from("hello"), padding(5), END_OF_ARCHIVE];
  };
  const paxHeader = withSum(Buffer.from(encodeHeader({ name: "PaxHeaders/f", type: "file", size: 12 })).fill(0x78, 156, 157));
  const cases: [string, Buffer[], RegExp][] = [
    ["checksum mismatch", header((b) => (b[0] = 0x67), false), /checksum mismatch/],
    ["not a tar at all", [Buffer.alloc(512, 0x41)], /checksum mismatch/],
    ["size not octal", header((b) => b.write("00000000x05\0", 124, 12, "ascii")), /size field is not an octal number/],
    ["uid not octal", header((b) => b.write("12x4567\0", 108, 8, "ascii")), /uid field is not an octal number/],
    ["negative base-256 size", header((b) => (b.fill(0xff, 124, 136))), /size field is negative/],
    ["unknown type flag", header((b) => (b[156] = 0x5a)), /type flag "Z"/],
    ["GNU sparse file", header((b) => (b[156] = 0x53)), /GNU sparse files/],
    ["header cut short", [encodeHeader({ name: "f", type: "file", size: 5 }).subarray(0, 300)], /header is cut short/],
    ["data cut short", [encodeHeader({ name: "f", type: "file", size: 5000 }), Buffer.alloc(100)], /data is cut short/],
    ["PAX size not a number", [paxHeader, Buffer.from("11 size=ab\n\0"), padding(12), ...file("f", "hello"), END_OF_ARCHIVE], /PAX record size="ab" is not a number/],
  ];
  for (const [name, archive, re] of cases) assert.throws(() => readAll(archive), (e: unknown) => e instanceof BerthError && re.test(e.message), name);
});

test("tar reader: base-256 numbers (GNU) are read", () => {
  const b = Buffer.from(encodeHeader({ name: "big", type: "file", size: 3 }));
  b.fill(0, 108, 116);
  b[108] = 0x80;
  b.writeUInt32BE(4_000_000_000, 112); // a uid over octal's 7 digits
  const { entries } = readAll([withSum(b), Buffer.from("abc"), padding(3), END_OF_ARCHIVE]);
  assert.equal(entries[0]!.uid, 4_000_000_000);
});

// ---- the seccomp compiler's records (what berth-seccomp turns into BPF)

test("seccomp: actions as the kernel's SECCOMP_RET_* values, rules as records, conditions on one argument split", () => {
  assert.equal(actionValue("SCMP_ACT_ALLOW", undefined, "x"), 0x7fff0000);
  assert.equal(actionValue("SCMP_ACT_ERRNO", undefined, "x"), 0x00050001, "EPERM unless errnoRet");
  assert.equal(actionValue("SCMP_ACT_ERRNO", 38, "x"), 0x00050026);
  assert.equal(actionValue("SCMP_ACT_KILL_PROCESS", undefined, "x"), 0x80000000);
  assert.equal(actionValue("SCMP_ACT_NOTIFY", undefined, "x"), 0x7fc00000);
  const { records } = seccompRecords({
    defaultAction: "SCMP_ACT_ERRNO",
    architectures: ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
    syscalls: [
      { names: ["read", "write"], action: "SCMP_ACT_ALLOW" },
      // two values for one argument: either (libseccomp refuses both in one rule; runc splits them)
      { names: ["personality"], action: "SCMP_ACT_ALLOW", args: [{ index: 0, value: 0, op: "SCMP_CMP_EQ" }, { index: 0, value: 8, op: "SCMP_CMP_EQ" }] },
      { names: ["kill"], action: "SCMP_ACT_ERRNO", errnoRet: 38 },
    ],
  });
  assert.deepEqual(records, [
    ["INIT", String(0x00050001)],
    ["ARCH", "x86_64"],
    ["ARCH", "x86"],
    ["RULE", "2147418112", "read"],
    ["RULE", "2147418112", "write"],
    ["RULE", "2147418112", "personality", "0", "4", "0", "0"],
    ["RULE", "2147418112", "personality", "0", "4", "8", "0"],
    ["RULE", String(0x00050026), "kill"],
  ]);
  const bad: [object, RegExp][] = [
    [{ defaultAction: "SCMP_ACT_NOPE" }, /defaultAction: unknown action "SCMP_ACT_NOPE"/],
    [{ defaultAction: "SCMP_ACT_ALLOW", syscalls: [{ names: ["x"], action: "SCMP_ACT_ALLOW", args: [{ index: 7, value: 0, op: "SCMP_CMP_EQ" }] }] }, /args\[0\]\.index: must be 0\.\.5/],
    [{ defaultAction: "SCMP_ACT_ALLOW", syscalls: [{ names: ["x"], action: "SCMP_ACT_ALLOW", args: [{ index: 0, value: 0, op: "SCMP_CMP_NOPE" }] }] }, /op: unknown operator/],
  ];
  for (const [profile, re] of bad) assert.throws(() => seccompRecords(profile as never), (e: unknown) => e instanceof BerthError && re.test(e.message));
});

// ---- the spec validator

test("the spec validator names the field at fault, as the user wrote it", () => {
  const cases: [string, (s: any) => void, RegExp][] = [
    ["no ociVersion", (s) => delete s.ociVersion, /^config\.json: ociVersion: is required/],
    ["args not a list", (s) => (s.process.args = "sh"), /process\.args: must be a non-empty array of strings/],
    ["unknown namespace", (s) => s.linux.namespaces.push({ type: "nope" }), /linux\.namespaces\[\d+\]\.type: unknown namespace type "nope"/],
    ["relative mount destination", (s) => (s.mounts[0].destination = "rel"), /mounts\[0\]\.destination: must be an absolute path/],
    ["negative uid", (s) => (s.process.user.uid = -1), /process\.user\.uid: must be a non-negative integer/],
    ["no root", (s) => delete s.root, /root: is required/],
    ["rlimit not a number", (s) => (s.process.rlimits = [{ type: "RLIMIT_NOFILE", soft: "x", hard: 1 }]), /process\.rlimits\[0\]: soft and hard must be integers/],
    ["hostname not a string", (s) => (s.hostname = 5), /hostname: must be a string/],
  ];
  for (const [name, mutate, re] of cases) {
    const spec = structuredClone(defaultSpec()) as any;
    mutate(spec);
    assert.throws(() => validateSpec(spec), (e: unknown) => e instanceof BerthError && re.test(e.message), name);
  }
  assert.doesNotThrow(() => validateSpec(structuredClone(defaultSpec()) as never));
});

// ---- errors: kinds, codes, hints

test("errors carry a kind, a code (the kind's unless named) and a hint; transports without a hint line append it", () => {
  const e = new BerthError("FailedPrecondition", "container not running");
  assert.equal(e.code, "BERTH_FAILED_PRECONDITION");
  assert.equal(e.hint, undefined);
  assert.equal(withHint(e), "container not running");
  const built = new BerthError("System", "cannot load build/berth-sys.node (gone)", { code: ErrorCode.NOT_BUILT, hint: "run ./install.sh" });
  assert.equal(built.code, "BERTH_NOT_BUILT");
  assert.equal(withHint(built), "cannot load build/berth-sys.node (gone) (run ./install.sh)");
  assert.equal(new UsageError("unknown flag: --x", "run").code, ErrorCode.USAGE);
  assert.equal(fsCause(Object.assign(new Error("EACCES: permission denied, open '/x'"), { code: "EACCES" })), "permission denied");
  assert.equal(isNotFound(Object.assign(new Error("ENOENT: no such file or directory, stat '/x'"), { code: "ENOENT" })), true);
});

// ---- berth-runtime's flags (urfave/cli's rules, as runc's callers use them)

test("berth-runtime's flags parse as runc's: single-dash long names, aliases, repeats, the first argument ends them", () => {
  const defs: RuntimeFlagDef[] = [
    { names: ["bundle", "b"], kind: "string" },
    { names: ["detach", "d"], kind: "bool" },
    { names: ["preserve-fds"], kind: "int" },
    { names: ["cap", "c"], kind: "list" },
    { names: ["criu"], kind: "string", unsupported: "no CRIU here" },
  ];
  const cases: [string[], boolean, Record<string, unknown>, string[]][] = [
    [["-bundle", "/b", "id"], false, { bundle: "/b" }, ["id"]],
    [["--bundle=/b", "-d", "id"], false, { bundle: "/b", detach: true }, ["id"]],
    [["-b", "/b", "--preserve-fds", "2", "id", "--detach"], false, { bundle: "/b", "preserve-fds": 2 }, ["id", "--detach"]],
    [["id", "--detach"], true, { detach: true }, ["id"]],
    [["--cap", "CAP_KILL", "-c", "CAP_CHOWN", "id", "sh"], false, { cap: ["CAP_KILL", "CAP_CHOWN"] }, ["id", "sh"]],
    [["--detach=false", "--", "-x"], false, { detach: false }, ["-x"]],
  ];
  for (const [argv, interspersed, flags, args] of cases) assert.deepEqual(parseFlags(argv, defs, { interspersed }), { flags, args }, argv.join(" "));
  const bad: [string[], RegExp][] = [
    [["--nope"], /flag provided but not defined: -nope/],
    [["--bundle"], /flag needs an argument: -bundle/],
    [["--preserve-fds", "x"], /invalid value "x" for flag -preserve-fds/],
    [["--detach=maybe"], /invalid boolean value "maybe"/],
    [["--criu", "/x"], /--criu is not supported by berth-runtime: no CRIU here/],
  ];
  for (const [argv, re] of bad) assert.throws(() => parseFlags(argv, defs), (e: unknown) => e instanceof BerthError && re.test(e.message), argv.join(" "));
});

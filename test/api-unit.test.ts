/**
 * The API server's body checks without a server: berth's schema interpreter (src/api/body-check.ts)
 * against ajv, the reference implementation, on the same generated schemas — a valid body of every
 * kind, then each of its fields given a value of the wrong kind, must get the same verdict and,
 * when refused, the same field.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import AjvModule from "ajv";
import bodySchemas from "../src/api/body-schemas.json" with { type: "json" };
import { bodyFault, type BodyName } from "../src/api/body-check.js";

type Schema = Record<string, unknown>;
const defs = (bodySchemas as unknown as { $defs: Record<string, Schema> }).$defs;
const Ajv = ((AjvModule as unknown as { default?: unknown }).default ?? AjvModule) as new (o: object) => {
  addSchema(s: object): { getSchema(r: string): ((v: unknown) => boolean) & { errors?: { instancePath: string }[] | null } };
};
const ajv = new Ajv({ strict: false, allErrors: false }).addSchema(bodySchemas);
const names: BodyName[] = ["ContainerCreate", "ContainerUpdate", "ExecCreate", "ExecStart", "Auth", "Commit", "VolumeCreate", "NetworkCreate", "NetworkConnect", "NetworkDisconnect"];

/** The schema with its $ref and allOf folded in (enough to make examples from). */
function resolve(s: Schema): Schema {
  let out: Schema = { ...s };
  if (typeof s.$ref === "string") out = { ...resolve(defs[s.$ref.replace("#/$defs/", "")]!), ...out, $ref: undefined };
  for (const part of (s.allOf as Schema[] | undefined) ?? []) {
    const r = resolve(part);
    out = { ...out, ...r, properties: { ...(out.properties as object), ...(r.properties as object) } };
  }
  return out;
}

/** A valid value of the schema, a few levels deep. */
function example(s: Schema, depth = 0): unknown {
  const r = resolve(s);
  const type = ([r.type].flat().filter((t) => t && t !== "null")[0] as string | undefined) ?? (r.properties ? "object" : undefined);
  const values = (r.enum as unknown[] | undefined)?.filter((v) => v !== null && v !== "");
  if (values?.length) return values[0];
  switch (type) {
    case "string":
      return "x";
    case "integer":
      return 3;
    case "number":
      return 1.5;
    case "boolean":
      return true;
    case "array":
      return depth > 4 ? [] : Array.from({ length: Math.max(1, Number(r.minItems ?? 0)) }, () => example((r.items as Schema) ?? {}, depth + 1));
    case "object": {
      if (depth > 4) return {};
      const o: Record<string, unknown> = {};
      for (const [k, v] of Object.entries((r.properties as Record<string, Schema>) ?? {})) o[k] = example(v, depth + 1);
      if (typeof r.additionalProperties === "object") o.extra = example(r.additionalProperties as Schema, depth + 1);
      return o;
    }
    default:
      return "anything";
  }
}

/** Every (path, value) in a body: each field and element. */
function* fields(v: unknown, path: string[] = []): Generator<string[]> {
  if (path.length) yield path;
  if (Array.isArray(v)) for (let i = 0; i < v.length; i++) yield* fields(v[i], [...path, String(i)]);
  else if (v && typeof v === "object") for (const [k, x] of Object.entries(v)) yield* fields(x, [...path, k]);
}

function withValue(body: unknown, path: string[], value: unknown): unknown {
  const copy = structuredClone(body) as Record<string, unknown>;
  let at = copy;
  for (const k of path.slice(0, -1)) at = at[k] as Record<string, unknown>;
  at[path[path.length - 1]!] = value;
  return copy;
}

function agree(name: BodyName, body: unknown, what: string): number {
  const validate = ajv.getSchema(`docker-api#/$defs/${name}Body`);
  const theirs = validate(body);
  const ours = bodyFault(name, body);
  assert.equal(!ours, theirs, `${name} ${what}: berth says ${ours ? `${ours.path} ${ours.message}` : "fine"}, ajv ${theirs ? "fine" : JSON.stringify(validate.errors)}`);
  if (ours && !theirs) assert.equal(ours.path, validate.errors![0]!.instancePath, `${name} ${what}: the field named`);
  return theirs ? 0 : 1;
}

test("request bodies: berth's schema checks give ajv's verdicts, field by field", () => {
  let refused = 0,
    checked = 0;
  for (const name of names) {
    const body = example(defs[`${name}Body`]!);
    agree(name, body, "example");
    agree(name, null, "null");
    agree(name, [], "an array");
    for (const path of fields(body)) {
      const current = path.reduce<unknown>((o, k) => (o as Record<string, unknown>)[k], body);
      for (const wrong of [typeof current === "string" ? 7 : "seven", Array.isArray(current) ? {} : [], 1.5, null, { a: 1 }, true]) {
        refused += agree(name, withValue(body, path, wrong), `${path.join(".")} = ${JSON.stringify(wrong)}`);
        checked++;
      }
    }
  }
  // the comparison saw both verdicts many times over
  assert.ok(checked > 1000 && refused > checked / 3, `checked ${checked}, refused ${refused}`);
});

test("request bodies: what real clients send fits (docker 20.10's create, compose's network create, zero values as null)", () => {
  assert.equal(bodyFault("ContainerCreate", { Image: "busybox", Cmd: ["true"], Env: null, HostConfig: { Memory: 0, MemorySwappiness: -1, RestartPolicy: { Name: "", MaximumRetryCount: 0 }, PortBindings: { "80/tcp": [{ HostIp: "", HostPort: "8080" }] }, Mounts: null }, NetworkingConfig: { EndpointsConfig: { net: { Aliases: ["web"], IPAMConfig: null } } } }), undefined);
  assert.equal(bodyFault("NetworkCreate", { Name: "p_default", CheckDuplicate: true, Driver: "bridge", Internal: false, Attachable: false, Labels: { "com.docker.compose.project": "p" }, IPAM: { Driver: "default", Options: null, Config: [] } }), undefined);
  assert.deepEqual(bodyFault("ContainerCreate", { Image: "busybox", HostConfig: { Memory: "1g" } }), { path: "/HostConfig/Memory", message: "must be integer" });
  assert.deepEqual(bodyFault("ExecStart", { Detach: false, ConsoleSize: [1, 2, 3] }), { path: "/ConsoleSize", message: "must NOT have more than 2 items" });
  assert.deepEqual(bodyFault("ContainerCreate", { Image: "busybox", HostConfig: { RestartPolicy: { Name: "sometimes" } } }), { path: "/HostConfig/RestartPolicy/Name", message: "must be equal to one of the allowed values" });
});

/**
 * Request bodies checked against the API description: the schemas in body-schemas.json
 * (scripts/gen-api-schema.mjs makes them from v1.50's body parameters and definitions), read by
 * a small interpreter of the JSON Schema keywords they use: type, properties,
 * additionalProperties, items, minItems, maxItems, enum, allOf and $ref. Not ajv at run time: the
 * server lives long on a memory budget, and ajv's generated validators cost ~10 MB of RSS for
 * create's schema alone (plus ~8 MB to load). test/api-unit.test.ts checks this interpreter's
 * verdicts against ajv's on the same schemas.
 */
import bodySchemas from "./body-schemas.json" with { type: "json" };

export type BodyName = "ContainerCreate" | "ContainerUpdate" | "ExecCreate" | "ExecStart" | "Auth" | "Commit" | "VolumeCreate" | "NetworkCreate" | "NetworkConnect" | "NetworkDisconnect";

interface Schema {
  type?: string | string[];
  properties?: Record<string, Schema>;
  additionalProperties?: Schema | boolean;
  items?: Schema;
  minItems?: number;
  maxItems?: number;
  enum?: unknown[];
  allOf?: Schema[];
  $ref?: string;
}

/** What is wrong with a value: where (a JSON pointer, as ajv's instancePath) and why. */
export interface BodyFault {
  path: string;
  message: string;
}

const defs = (bodySchemas as unknown as { $defs: Record<string, Schema> }).$defs;

function typeOf(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  if (typeof v === "number") return Number.isInteger(v) ? "integer" : "number";
  return typeof v;
}

function hasType(v: unknown, type: string): boolean {
  const t = typeOf(v);
  return t === type || (type === "number" && t === "integer");
}

const same = (a: unknown, b: unknown) => a === b || (typeof a === "object" && typeof b === "object" && JSON.stringify(a) === JSON.stringify(b));

function check(v: unknown, s: Schema, path: string): BodyFault | undefined {
  if (s.$ref) {
    const f = check(v, defs[s.$ref.replace("#/$defs/", "")] ?? {}, path);
    if (f) return f;
  }
  for (const part of s.allOf ?? []) {
    const f = check(v, part, path);
    if (f) return f;
  }
  if (s.type !== undefined) {
    const types = Array.isArray(s.type) ? s.type : [s.type];
    if (!types.some((t) => hasType(v, t))) return { path, message: `must be ${types.filter((t) => t !== "null").join(",")}` };
  }
  if (s.enum && !s.enum.some((e) => same(e, v))) return { path, message: "must be equal to one of the allowed values" };
  if (Array.isArray(v)) {
    if (s.minItems !== undefined && v.length < s.minItems) return { path, message: `must NOT have fewer than ${s.minItems} items` };
    if (s.maxItems !== undefined && v.length > s.maxItems) return { path, message: `must NOT have more than ${s.maxItems} items` };
    if (s.items)
      for (let i = 0; i < v.length; i++) {
        const f = check(v[i], s.items, `${path}/${i}`);
        if (f) return f;
      }
  } else if (v !== null && typeof v === "object") {
    const o = v as Record<string, unknown>;
    for (const [k, value] of Object.entries(o)) {
      const field = `${path}/${k.replace(/~/g, "~0").replace(/\//g, "~1")}`;
      const known = s.properties?.[k];
      if (known) {
        const f = check(value, known, field);
        if (f) return f;
      } else if (s.additionalProperties === false) return { path, message: "must NOT have additional properties" };
      else if (typeof s.additionalProperties === "object") {
        const f = check(value, s.additionalProperties, field);
        if (f) return f;
      }
    }
  }
  return undefined;
}

/** The first thing wrong with a request body, or undefined when it fits the API's schema. */
export function bodyFault(name: BodyName, body: unknown): BodyFault | undefined {
  return check(body, { $ref: `#/$defs/${name}Body` }, "");
}

import assert from "node:assert/strict";
import { compileSchema, JsonCursor, type SchemaNode } from "./json_grammar.ts";

const enc = new TextEncoder();

/** Whether `text` is one complete value of `schema`, fed byte by byte. */
function reads(schema: SchemaNode, text: string): boolean {
  const c = new JsonCursor();
  c.start(schema);
  for (const b of enc.encode(text)) {
    let r = c.feed(b);
    while (r === "again") r = c.feed(b);
    if (!r) return false;
  }
  return c.done;
}

const PERSON = compileSchema({
  type: "object",
  title: "Person",
  properties: {
    name: { type: "string", description: "full name" },
    age: { type: "integer" },
    tags: { type: "array", items: { enum: ["a", "b"] }, maxItems: 2 },
    ok: { type: "boolean" },
    kind: { const: "x" },
  },
  required: ["name", "age"],
});

Deno.test("json_grammar schema: properties in order, required ones present, types and items kept", () => {
  for (
    const ok of [
      '{"name":"Al","age":3}',
      '{"name": "Al", "age": -3, "tags": ["a", "b"], "ok": true, "kind": "x"}',
      '{"name":"","age":0,"ok":false}',
      '{"name":"Zoë","age":12,"tags":[]}',
    ]
  ) assert.ok(reads(PERSON, ok), ok);
  for (
    const bad of [
      '{"age":3,"name":"Al"}', // order
      '{"name":"Al"}', // age is required
      '{"name":"Al","age":3.5}', // an integer
      '{"name":"Al","age":1e3}',
      '{"name":"Al","age":3,"tags":["c"]}', // enum
      '{"name":"Al","age":3,"tags":["a","b","a"]}', // maxItems
      '{"name":1,"age":3}',
      '{"name":"Al","age":3,"x":1}', // unknown key
      '{"name":"Al","age":3,"kind":"y"}', // const
      '{"name":"Al","age":3,}',
      '["Al",3]',
    ]
  ) assert.equal(reads(PERSON, bad), false, bad);
});

Deno.test("json_grammar schema: enums whose texts prefix each other, minItems, unions, free values", () => {
  const n = compileSchema({
    type: "object",
    properties: { n: { enum: [1, 10, 100] } },
    required: ["n"],
  });
  for (const v of ["1", "10", "100"]) assert.ok(reads(n, `{"n":${v}}`), v);
  for (const v of ["1000", "11", "0", '"1"']) assert.equal(reads(n, `{"n":${v}}`), false, v);
  const inArray = compileSchema({ type: "array", items: { enum: [1, 10] } });
  assert.ok(reads(inArray, "[1,10,1]"));
  assert.ok(reads(inArray, "[10, 1]"));
  const m = compileSchema({
    type: "object",
    properties: {
      m: { type: "array", items: { type: "array", items: { type: "number" } }, minItems: 1 },
    },
    required: ["m"],
  });
  assert.ok(reads(m, '{"m":[[]]}'));
  assert.ok(reads(m, '{"m":[[1,2.5],[-1e3]]}'));
  assert.equal(reads(m, '{"m":[]}'), false);
  assert.equal(reads(m, '{"m":[["1"]]}'), false);
  const u = compileSchema({ type: "object", properties: { v: { type: ["string", "null"] } } });
  for (const ok of ['{"v":"x"}', '{"v":null}', "{}"]) assert.ok(reads(u, ok), ok);
  assert.equal(reads(u, '{"v":1}'), false);
  const free = compileSchema({ type: "object", properties: { any: {}, obj: { type: "object" } } });
  assert.ok(reads(free, '{"any":[1,{"a":null}],"obj":{"k":[true]}}'));
  assert.ok(reads(compileSchema(true), '"just a string"'));
  assert.ok(reads(compileSchema(true), "[1]"));
  // a number at the root never ends: only the byte after it could tell
  assert.equal(reads(compileSchema(true), "12"), false);
});

Deno.test("json_grammar: random values of a random schema are read; JSON.parse agrees on what completes", () => {
  let seed = 7;
  const r = () => (seed = (seed * 1664525 + 1013904223) >>> 0) / 2 ** 32;
  const pick = <T>(xs: T[]) => xs[Math.floor(r() * xs.length)];
  type Gen = { schema: Record<string, unknown>; value: () => unknown };
  const gen = (depth: number): Gen => {
    const k = depth > 2 ? Math.floor(r() * 4) : Math.floor(r() * 6);
    switch (k) {
      case 0:
        return { schema: { type: "string" }, value: () => pick(["", "a b", '中\n"', "\\"]) };
      case 1:
        return { schema: { type: "integer" }, value: () => Math.floor((r() - 0.5) * 1000) };
      case 2:
        return {
          schema: { type: "number" },
          value: () => (r() - 0.5) * 10 ** Math.floor(r() * 30),
        };
      case 3: {
        const e = [1, "x", null, true, 12];
        return { schema: { enum: e }, value: () => pick(e) };
      }
      case 4: {
        const item = gen(depth + 1);
        return {
          schema: { type: "array", items: item.schema },
          value: () => Array.from({ length: Math.floor(r() * 3) }, item.value),
        };
      }
      default: {
        const names = Array.from({ length: 1 + Math.floor(r() * 4) }, (_, i) => `p${i}`);
        const props = names.map(() => gen(depth + 1));
        const required = names.filter(() => r() < 0.5);
        return {
          schema: {
            type: "object",
            properties: Object.fromEntries(names.map((n, i) => [n, props[i].schema])),
            required,
          },
          value: () =>
            Object.fromEntries(
              names.flatMap((n, i) =>
                required.includes(n) || r() < 0.5 ? [[n, props[i].value()]] : []
              ),
            ),
        };
      }
    }
  };
  for (let i = 0; i < 200; i++) {
    const g = gen(0);
    const root = { type: "object", properties: { v: g.schema }, required: ["v"] };
    const s = compileSchema(root);
    const text = JSON.stringify({ v: g.value() });
    assert.ok(reads(s, text), `${JSON.stringify(root)} ${text}`);
    // cut anywhere: never complete unless JSON.parse takes it too
    const cut = text.slice(0, Math.floor(r() * text.length));
    if (reads(s, cut)) JSON.parse(cut);
  }
});

Deno.test("compileSchema: what it cannot enforce is refused, naming the place", () => {
  const cases: [unknown, RegExp][] = [
    [
      { type: "object", properties: { a: { type: "string", pattern: "^x" } } },
      /schema\.properties\.a\.pattern: unsupported keyword/,
    ],
    [{ $ref: "#/defs/x" }, /schema\.\$ref: unsupported/],
    [{ anyOf: [{ type: "string" }] }, /schema\.anyOf: unsupported/],
    [{ type: "date" }, /schema\.type: unknown type "date"/],
    [
      { type: "object", properties: { a: {} }, required: ["b"] },
      /schema\.required: expected names listed/,
    ],
    [{ type: "object", additionalProperties: true }, /schema\.additionalProperties: only false/],
    [{ type: "array", minItems: 3, maxItems: 2 }, /schema\.minItems: is more than maxItems/],
    [{ type: "array", minItems: -1 }, /schema\.minItems: expected an integer/],
    [{ enum: [] }, /schema\.enum: expected a non-empty array/],
    ["object", /schema: expected a schema object/],
  ];
  for (const [s, re] of cases) assert.throws(() => compileSchema(s), re, JSON.stringify(s));
  let deep: Record<string, unknown> = { type: "string" };
  for (let i = 0; i < 40; i++) deep = { type: "array", items: deep };
  assert.throws(() => compileSchema(deep), /nested more than 32 levels/);
});

import assert from "node:assert/strict";
import { ReplyConstraint, type ReplyShape, vocabBytes } from "./constrain.ts";
import { MAX_DEPTH } from "./json_grammar.ts";

const enc = new TextEncoder();
const JSON_SHAPE: ReplyShape = { segments: [{ kind: "json" }] };
const EOS = 256;

/** A byte vocabulary: id b < 256 is byte b, then the given multi-byte tokens, then EOS last. */
function vocab(extra: string[] = []) {
  const toks = [...Array.from({ length: 256 }, (_, b) => Uint8Array.of(b))];
  const eos = toks.length;
  toks.push(new Uint8Array()); // EOS: no bytes (special)
  for (const t of extra) toks.push(enc.encode(t));
  return { v: vocabBytes(toks.length, (id) => toks[id], new Set([eos])), eos, toks };
}

/** Feeds text byte by byte, checking the mask allows each byte first; returns how far it got. */
function feed(c: ReplyConstraint, text: string): number {
  const bytes = enc.encode(text);
  for (let i = 0; i < bytes.length; i++) {
    if (c.mask().addend[bytes[i]] !== 0) return i;
    c.accept(bytes[i]);
  }
  return bytes.length;
}

function accepts(shape: ReplyShape, text: string): boolean {
  const c = new ReplyConstraint(shape, vocab().v, [EOS]);
  return feed(c, text) === enc.encode(text).length && c.canEnd;
}

/** A seeded random JSON value. */
function randomValue(r: () => number, depth: number): unknown {
  const k = Math.floor(r() * (depth > 3 ? 5 : 7));
  switch (k) {
    case 0:
      return Math.floor((r() - 0.5) * 1e6) / (r() < 0.5 ? 1 : 1000);
    case 1:
      return ["", "a", 'é\n"\\/\t', "中文", "\u0001", "x".repeat(20)][Math.floor(r() * 6)];
    case 2:
      return [true, false, null][Math.floor(r() * 3)];
    case 3:
      return r() < 0.5 ? 1e21 : -0.5e-7;
    case 4:
      return Math.floor(r() * 100);
    case 5:
      return Array.from({ length: Math.floor(r() * 4) }, () => randomValue(r, depth + 1));
    default:
      return randomObject(r, depth + 1);
  }
}

function randomObject(r: () => number, depth: number): Record<string, unknown> {
  const o: Record<string, unknown> = {};
  const n = Math.floor(r() * 4);
  for (let i = 0; i < n; i++) o[`k${i}${r() < 0.3 ? "ü" : ""}`] = randomValue(r, depth);
  return o;
}

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

Deno.test("ReplyConstraint json: every JSON.stringify'd object passes, compact or with one space", () => {
  const r = rng(1);
  for (let i = 0; i < 300; i++) {
    const o = randomObject(r, 0);
    const compact = JSON.stringify(o);
    assert.ok(accepts(JSON_SHAPE, compact), compact);
    // one space after ':' and ',' (the usual Python json.dumps form)
    const spaced = compact.replace(/([:,])(?=(?:[^"\\]|\\.|"(?:[^"\\]|\\.)*")*$)/g, "$1 ");
    assert.ok(accepts(JSON_SHAPE, spaced), spaced);
  }
  for (const ok of ['{"a":[1,2.5e-3,-0,true,null,{"b":[]}]}', '{"u":"\\u00e9\\n"}', "{}"]) {
    assert.ok(accepts(JSON_SHAPE, ok), ok);
  }
});

Deno.test("ReplyConstraint json: what JSON.parse refuses (or is not an object) never completes", () => {
  const r = rng(2);
  const alphabet = '{}[]":,0123456789.eE+-tfnrulsa \\';
  let refused = 0;
  for (let i = 0; i < 3000; i++) {
    const base = JSON.stringify(randomObject(r, 0));
    // mutate: replace, insert or delete one byte
    const at = Math.floor(r() * (base.length + 1));
    const ch = alphabet[Math.floor(r() * alphabet.length)];
    const op = Math.floor(r() * 3);
    const text = op === 0
      ? base.slice(0, at) + ch + base.slice(at + 1)
      : op === 1
      ? base.slice(0, at) + ch + base.slice(at)
      : base.slice(0, at) + base.slice(at + 1);
    let parsed: unknown, valid = true;
    try {
      parsed = JSON.parse(text);
    } catch {
      valid = false;
    }
    const isObj = valid && typeof parsed === "object" && parsed !== null && !Array.isArray(parsed);
    const got = accepts(JSON_SHAPE, text);
    if (got) assert.ok(isObj, `accepted ${JSON.stringify(text)}`);
    else if (isObj && !/\s\s|^\s|\s$/.test(text.replace(/"(?:[^"\\]|\\.)*"/g, '""'))) {
      assert.fail(`refused ${JSON.stringify(text)}`);
    }
    if (!got) refused++;
  }
  assert.ok(refused > 1000);
  // strings hold whole UTF-8 characters: a lone continuation byte or a cut character is refused
  const bytes = (...b: number[]) => {
    const c = new ReplyConstraint(JSON_SHAPE, vocab().v, [EOS]);
    for (const x of [...enc.encode('{"a":"'), ...b, ...enc.encode('"}')]) {
      if (c.mask().addend[x] !== 0) return false;
      c.accept(x);
    }
    return c.done;
  };
  assert.ok(bytes(0xe4, 0xb8, 0x80)); // 一
  assert.ok(bytes(0xf0, 0x9f, 0x98, 0x80)); // 😀
  assert.equal(bytes(0x80), false);
  assert.equal(bytes(0xe4, 0xb8), false);
  assert.equal(bytes(0xc0, 0x80), false);
  assert.equal(bytes(0xff), false);
  // the limits: two whitespace bytes in a row, leading space, depth
  assert.equal(accepts(JSON_SHAPE, '{"a":  1}'), false);
  assert.equal(accepts(JSON_SHAPE, ' {"a":1}'), false);
  assert.equal(
    accepts(JSON_SHAPE, '{"a":' + "[".repeat(MAX_DEPTH) + "]".repeat(MAX_DEPTH) + "}"),
    false,
  );
  assert.ok(
    accepts(JSON_SHAPE, '{"a":' + "[".repeat(MAX_DEPTH - 1) + "]".repeat(MAX_DEPTH - 1) + "}"),
  );
});

Deno.test("ReplyConstraint: multi-byte tokens across segment ends; EOS only where the shape may end", () => {
  const { v, eos, toks } = vocab(['{"', '":', "12", "1}", "}\n", '"}', "ab"]);
  const id = (t: string) =>
    toks.findIndex((x) => new TextDecoder().decode(x) === t && x.length > 1);
  const c = new ReplyConstraint(
    { segments: [{ kind: "json" }, { kind: "literal", text: "\nEND" }] },
    v,
    [eos],
  );
  let m = c.mask();
  assert.equal(m.addend[id('{"')], 0);
  assert.equal(m.addend[id("ab")], -Infinity);
  assert.equal(m.addend[eos], -Infinity);
  for (const t of ['{"', "ab", '":', "1"]) {
    c.accept(t.length > 1 ? id(t) : enc.encode(t)[0]);
  }
  m = c.mask();
  // "1}" and "12" continue the number; "}\n" closes the object and starts the literal
  assert.equal(m.addend[id("12")], 0);
  assert.equal(m.addend[id("1}")], 0);
  assert.equal(m.addend[id("}\n")], 0);
  assert.equal(m.addend[id('"}')], -Infinity);
  c.accept(id("}\n"));
  assert.equal(c.canEnd, false);
  assert.equal(feed(c, "END"), 3);
  assert.ok(c.done && c.canEnd);
  m = c.mask();
  assert.equal(m.allowed, 1);
  assert.equal(m.addend[eos], 0);
  assert.throws(() => c.accept(0x41), /cannot continue/);
});

Deno.test("ReplyConstraint: tool-call shape with a choice of names (one a prefix of another), repeated", () => {
  const shape: ReplyShape = {
    segments: [
      { kind: "literal", text: '<tool_call>\n{"name": "' },
      { kind: "oneOf", texts: ["get_time", "get", "a", "zz", "get_timer", "ge"] },
      { kind: "literal", text: '", "arguments": ' },
      { kind: "json" },
      { kind: "literal", text: "}\n</tool_call>" },
    ],
    repeat: { separator: "\n", from: 0 },
  };
  const call = (n: string, a: string) =>
    `<tool_call>\n{"name": "${n}", "arguments": ${a}}\n</tool_call>`;
  assert.ok(accepts(shape, call("get", "{}")));
  assert.ok(accepts(shape, call("get_time", '{"tz": "UTC"}')));
  assert.ok(accepts(shape, call("get", '{"a":1}') + "\n" + call("get_time", "{}")));
  assert.equal(accepts(shape, call("gets", "{}")), false);
  assert.equal(accepts(shape, call("get_t", "{}")), false);
  for (const n of ["ge", "a", "zz", "get_timer"]) assert.ok(accepts(shape, call(n, "{}")), n);
  for (const n of ["g", "get_tim", "get_timers", "z", ""]) {
    assert.equal(accepts(shape, call(n, "{}")), false, n);
  }
  assert.equal(accepts(shape, call("get", "[]")), false);
  assert.equal(accepts(shape, "hello"), false);
  assert.equal(accepts(shape, call("get", "{}") + "\nhi"), false);
  // a think block first: any text up to </think>, then up to two whitespace bytes
  const think: ReplyShape = {
    segments: [{ kind: "until", text: "</think>" }, { kind: "space" }, { kind: "json" }],
  };
  assert.ok(accepts(think, 'let me see </think </think>\n\n{"a":1}'));
  assert.equal(accepts(think, '</think>\n\n\n{"a":1}'), false);
  assert.equal(accepts(think, '{"a":1}'), false);
  // a terminator that overlaps itself: "aab" inside "aaab" ends the text (the match restarts at
  // "aa", not at "a")
  const overlap: ReplyShape = {
    segments: [{ kind: "until", text: "aab" }, { kind: "literal", text: "!" }],
  };
  assert.ok(accepts(overlap, "xaaab!"));
  assert.ok(accepts(overlap, "abaabaab!") === false); // ends at the first "aab", then "aab!" ≠ "!"
  assert.ok(accepts(overlap, "abaab!"));
  assert.equal(accepts(overlap, "aaa!"), false);
});

Deno.test("ReplyConstraint: bad shapes are refused with what is wrong", () => {
  const { v } = vocab();
  assert.throws(() => new ReplyConstraint({ segments: [] }, v, []), /at least one segment/);
  assert.throws(
    () => new ReplyConstraint({ segments: [{ kind: "literal", text: "" }] }, v, []),
    /non-empty text/,
  );
  assert.throws(
    () =>
      new ReplyConstraint(
        { segments: [{ kind: "json" }], repeat: { separator: "", from: 0 } },
        v,
        [],
      ),
    /Invalid repeat/,
  );
});

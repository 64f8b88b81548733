import assert from "node:assert/strict";
import { JsonlError, JsonlFile, PretrainDataset, SFTDataset, Tokenizer } from "./mod.ts";
import { fixture } from "../tests/_util.ts";

const tok = await Tokenizer.fromFile(fixture("minimind/minimind-3/tokenizer.json"));

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("JsonlFile indexes lines, skips blanks, reads records by seek", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/a.jsonl`;
    await Deno.writeTextFile(path, '{"text":"一"}\r\n\n  \n{"text":"two"}\n{"text":"三"}');
    const f = JsonlFile.open(path, { cacheDir: null });
    assert.equal(f.length, 3);
    assert.deepEqual(f.get(2), { text: "三" });
    assert.deepEqual(f.get(0), { text: "一" });
    assert.equal(f.lineNumber(1), 4);
    assert.equal(f.text(1), '{"text":"two"}');
    assert.deepEqual([...f].map((r) => (r as { text: string }).text), ["一", "two", "三"]);
    assert.throws(() => f.get(3), /Cannot read record 3 .* it has 3/);
    f.close();
  });
});

Deno.test("JsonlFile: a malformed line names file and line; skipBadLines counts it", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/bad.jsonl`;
    await Deno.writeTextFile(path, '{"text":"ok"}\n{"text": oops}\n{"text":"ok2"}\n[1,\n');
    assert.throws(
      () => JsonlFile.open(path, { cacheDir: null }),
      (e: unknown) =>
        e instanceof JsonlError && e.line === 2 && e.file === path &&
        e.message.startsWith(`Invalid JSONL record at ${path}:2:`) &&
        e.message.includes("2 bad line(s)"),
    );
    const f = JsonlFile.open(path, { cacheDir: null, skipBadLines: true });
    assert.equal(f.length, 2);
    assert.deepEqual(f.badLines, [2, 4]);
    assert.deepEqual(f.get(1), { text: "ok2" });
    // Dataset-level schema check: a record without "text".
    await Deno.writeTextFile(path, '{"text":"ok"}\n{"txt":"no"}\n');
    assert.throws(
      () => new PretrainDataset(path, tok, { cacheDir: null }),
      /Invalid JSONL record at .*bad\.jsonl:2: expected an object with a "text" field/,
    );
    const ds = new PretrainDataset(path, tok, { cacheDir: null, skipBadLines: true });
    assert.equal(ds.length, 1);
  });
});

Deno.test("JsonlFile: lazy mode reports bad lines on read", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/lazy.jsonl`;
    await Deno.writeTextFile(path, '{"a":1}\n{bad\n');
    const f = JsonlFile.open(path, { cacheDir: null, validate: false });
    assert.equal(f.length, 2);
    assert.throws(() => f.get(1), /Invalid JSONL record at .*lazy\.jsonl:2:/);
    f.close();
  });
});

Deno.test("JsonlFile: the index is cached and invalidated when the file changes", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/c.jsonl`;
    const cacheDir = `${dir}/cache`;
    const lines = Array.from({ length: 5000 }, (_, i) => JSON.stringify({ text: `第${i}行` }));
    await Deno.writeTextFile(path, lines.join("\n") + "\n");
    const a = JsonlFile.open(path, { cacheDir });
    const cached = [...Deno.readDirSync(cacheDir)];
    assert.equal(cached.length, 1);
    const b = JsonlFile.open(path, { cacheDir });
    assert.equal(b.length, 5000);
    assert.deepEqual(b.get(4321), { text: "第4321行" });
    assert.equal(b.lineNumber(4321), 4322);
    a.close();
    b.close();
    await Deno.writeTextFile(path, lines.slice(0, 10).join("\n") + "\n");
    const c = JsonlFile.open(path, { cacheDir });
    assert.equal(c.length, 10);
    c.close();
  });
});

Deno.test("JsonlFile streams a file larger than its read buffer with bounded memory", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/big.jsonl`;
    const f = await Deno.open(path, { write: true, create: true });
    const enc = new TextEncoder();
    const long = "长".repeat(3_000_000); // one 9 MB line: longer than the 4 MB chunk
    await f.write(enc.encode(JSON.stringify({ text: long }) + "\n"));
    let chunk = "";
    for (let i = 0; i < 20000; i++) chunk += JSON.stringify({ text: `row ${i}` }) + "\n";
    await f.write(enc.encode(chunk));
    f.close();
    const j = JsonlFile.open(path, { cacheDir: null });
    assert.equal(j.length, 20001);
    assert.equal((j.get(0) as { text: string }).text.length, 3_000_000);
    assert.deepEqual(j.get(20000), { text: "row 19999" });
    j.close();
    const ds = new SFTDataset(path, tok, { cacheDir: null, skipBadLines: true });
    assert.equal(ds.length, 0); // no record has "conversations"
  });
});

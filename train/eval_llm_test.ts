import assert from "node:assert/strict";
import { join } from "node:path";
import { saveModel } from "../convert/hf.ts";
import { tinyModel, tokenizer } from "../tests/_serve.ts";
import { LineReader, writeAll } from "./eval_llm.ts";

Deno.test("eval --mode chat answers every line of piped input", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await saveModel(join(dir, "tiny"), { ...tinyModel(), tokenizer: await tokenizer() });
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        new URL("./eval_llm.ts", import.meta.url).pathname,
        ...["--load_from", join(dir, "tiny"), "--mode", "chat", "--max_new_tokens", "2"],
        ...["--device", "cpu", "--show_speed", "0"],
      ],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode("你好\n床前明月光\n\n再见\n")); // one read gets them all
    await w.close();
    const out = await child.output();
    const text = new TextDecoder().decode(out.stdout);
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    assert.equal(text.split("🤖: ").length - 1, 3, text);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("writeAll keeps writing what a partial write left; LineReader keeps the rest of a read", async () => {
  const got: number[] = [];
  const stingy = {
    write: (
      p: Uint8Array,
    ) => (got.push(...p.subarray(0, 3)), Promise.resolve(Math.min(3, p.length))),
  };
  await writeAll(stingy, "🤖: 你好");
  assert.equal(new TextDecoder().decode(new Uint8Array(got)), "🤖: 你好");
  // bytes arrive in 5-byte reads that split characters and hold several lines
  const bytes = new TextEncoder().encode("第一行\r\n第二\n\nlast");
  let at = 0;
  const src = {
    read(p: Uint8Array) {
      if (at >= bytes.length) return Promise.resolve(null);
      const n = Math.min(5, p.length, bytes.length - at);
      p.set(bytes.subarray(at, at + n));
      at += n;
      return Promise.resolve(n);
    },
  };
  const r = new LineReader(src);
  const lines = [];
  for (let l = await r.next(); l !== null; l = await r.next()) lines.push(l);
  assert.deepEqual(lines, ["第一行", "第二", "", "last"]);
});

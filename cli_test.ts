import assert from "node:assert/strict";
import { deviceFlag, parseFlags, UsageError } from "./cli.ts";
import type { FlagTable } from "./cli.ts";
import { main as serve, SERVE_FLAGS } from "./serve.ts";
import { main as tokenizer } from "./data/train_tokenizer.ts";
import { main as corpus } from "./data/corpus/main.ts";
import { main as pretrain } from "./train/pretrain.ts";
import { main as sft } from "./train/sft.ts";
import { main as evalLlm } from "./train/eval_llm.ts";
import { main as demo } from "./demo.ts";

const TABLE = {
  device: deviceFlag("cpu"),
  backend: { type: "alias", of: "device", help: "deprecated name of --device" },
  threads: { type: "optional_int", min: 1, help: "threads" },
} as const satisfies FlagTable;

Deno.test("an alias sets its target; an optional integer is checked and absent by default", () => {
  const a = parseFlags(["--backend", "webgpu", "--threads=3"], TABLE, "t");
  assert.deepEqual([a.values.device, a.values.threads, [...a.given]], ["webgpu", 3, [
    "device",
    "threads",
  ]]);
  assert.deepEqual(parseFlags([], TABLE, "t").values, { device: "cpu", threads: undefined });
  assert.throws(
    () => parseFlags(["--threads", "0"], TABLE, "t"),
    /Invalid --threads "0": expected an integer ≥ 1/,
  );
  assert.throws(
    () => parseFlags(["--backend", "cuda"], TABLE, "t"),
    /Invalid --device "cuda": expected one of auto, cpu, webgpu/,
  );
  // aliases are not offered as valid flags
  assert.throws(() => parseFlags(["--gpu"], TABLE, "t"), /Valid flags: --device, --threads$/);
});

Deno.test("every entry point parses with the one CLI: --help prints its flags and exits 0", async () => {
  const commands: [string, (argv: readonly string[]) => Promise<number>, RegExp][] = [
    [
      "serve",
      serve,
      /deno task serve \[flags\][\s\S]*--device \{auto\|cpu\|webgpu\}[\s\S]*--threads N/,
    ],
    ["tokenizer", tokenizer, /deno task tokenizer[\s\S]*--vocab_size N[\s\S]*\(default 6400\)/],
    ["corpus", corpus, /deno task corpus[\s\S]*--sft_samples N[\s\S]*\(default 30000\)/],
    ["pretrain", pretrain, /deno task pretrain[\s\S]*--device \{auto\|cpu\|webgpu\}/],
    ["sft", sft, /deno task sft[\s\S]*--device/],
    ["eval", evalLlm, /deno task eval[\s\S]*--device/],
    ["demo", demo, /deno task demo[\s\S]*--device/],
  ];
  const log = console.log;
  try {
    for (const [name, main, want] of commands) {
      const out: string[] = [];
      console.log = (...a: unknown[]) => out.push(a.join(" "));
      assert.equal(await main(["--help"]), 0, name);
      assert.match(out.join("\n"), want, name);
    }
  } finally {
    console.log = log;
  }
});

Deno.test("serve.ts: flag errors are usage errors naming the flag", async () => {
  await assert.rejects(() => serve(["--port", "x"]), /Invalid --port "x": expected an integer ≥ 0/);
  await assert.rejects(() => serve(["--load-from"]), /Missing a value after --load_from/);
  await assert.rejects(() => serve([]), (e: Error) => {
    assert.ok(e instanceof UsageError);
    assert.match(e.message, /Nothing to serve: pass --load_from PATH \(or --init_random\)/);
    return true;
  });
  assert.equal(SERVE_FLAGS.device.default, "cpu");
});

Deno.test("deno task tokenizer trains from --data (and --data_path, the trainers' name)", async () => {
  const dir = await Deno.makeTempDir();
  const data = `${dir}/texts.txt`;
  await Deno.writeTextFile(data, "床前明月光\n疑是地上霜\n舉頭望明月\n低頭思故鄉\n".repeat(20));
  const out: string[] = [];
  const log = console.log;
  console.log = (...a: unknown[]) => out.push(a.join(" "));
  try {
    const argv = ["--data_path", data, "--vocab_size", "300", "--out", `${dir}/tok`];
    assert.equal(await tokenizer([...argv, "--max_lines", "40"]), 0);
  } finally {
    console.log = log;
  }
  assert.match(out.join("\n"), /Trained 300 tokens \(\d+ merges\) on 40 texts/);
  assert.ok((await Deno.stat(`${dir}/tok/tokenizer.json`)).isFile);
  await Deno.remove(dir, { recursive: true });
});

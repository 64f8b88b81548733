import assert from "node:assert/strict";
import { cycles, importGraph } from "./import_cycles.ts";

Deno.test("the source has no import cycle (the check of deno task check, run by CI)", () => {
  const graph = importGraph(new URL("..", import.meta.url).pathname);
  assert.ok(graph.size > 100, `only ${graph.size} files found`);
  assert.ok(graph.get("nn/ops/binary.ts")?.includes("nn/ops/arith.ts"));
  assert.ok(!graph.get("nn/scope_stack.ts")?.length, "the scope stack is a leaf module");
  assert.deepEqual(cycles(graph), []);
});

Deno.test("cycles() finds each cycle once, as a closed path; type-only imports do not count", () => {
  const g = new Map([
    ["a.ts", ["b.ts"]],
    ["b.ts", ["c.ts"]],
    ["c.ts", ["a.ts", "d.ts"]],
    ["d.ts", ["d.ts"]],
    ["e.ts", ["a.ts"]],
  ]);
  assert.deepEqual(cycles(g).map((c) => c.join(" → ")).sort(), [
    "a.ts → b.ts → c.ts → a.ts",
    "d.ts → d.ts",
  ]);
  const dir = Deno.makeTempDirSync();
  Deno.writeTextFileSync(`${dir}/x.ts`, 'import type { Y } from "./y.ts";\nexport const x = 1;\n');
  Deno.writeTextFileSync(
    `${dir}/y.ts`,
    'import { type X } from "./x.ts";\nimport { x } from "./x.ts";\nexport type Y = number;\n',
  );
  assert.deepEqual(Object.fromEntries(importGraph(dir)), { "x.ts": [], "y.ts": ["x.ts"] });
  Deno.removeSync(dir, { recursive: true });
});

/** The README's architecture rows, top (0) to bottom. */
function layer(f: string): number {
  if (f === "cli.ts") return 10; // a leaf every command imports
  if (
    /^(serve|demo|mod)\.ts$/.test(f) || /^train\/(pretrain|sft|eval_llm)\.ts$/.test(f) ||
    /^rl\/(ppo|grpo|spo)\.ts$/.test(f) ||
    /^agent\/(train_agent|eval_toolcall|data)\.ts$/.test(f) || f === "data/corpus/main.ts"
  ) return 0;
  if (f.startsWith("agent/")) return 1;
  if (f.startsWith("serve/") || f.startsWith("train/") || f.startsWith("rl/")) return 2;
  if (f.startsWith("nn/model/") || f.startsWith("data/") || f.startsWith("convert/")) return 3;
  if (f === "nn/autodiff.ts") return 4;
  if (f.startsWith("nn/ops/")) return 5;
  if (f.startsWith("nn/backend/")) return 7;
  if (["nn/op.ts", "nn/dtype.ts", "nn/shape.ts", "nn/scope_stack.ts"].includes(f)) return 8;
  if (f.startsWith("nn/")) return 6;
  return -1; // tests, benchmarks, tools, examples: anything goes
}

Deno.test("each row of the README's architecture picture imports only rows below it", () => {
  const graph = importGraph(new URL("..", import.meta.url).pathname);
  const upward: string[] = [];
  for (const [f, deps] of graph) {
    if (f.endsWith("_test.ts") || layer(f) < 0) continue;
    for (const d of deps) if (layer(d) < layer(f)) upward.push(`${f} → ${d}`);
  }
  assert.deepEqual(upward, []);
});

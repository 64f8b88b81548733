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

/**
 * The WebGPU backend's contracts: zero-filled allocations from the pool, uploads that never race
 * pending commands, GPU errors surfacing as thrown errors (compile errors, bad indices, f64),
 * batched submission counted, start-up warm-up, and backend selection.
 */
import assert from "node:assert/strict";
import { openWebGpuForTests } from "./_webgpu.ts";
import { tensor, zeros } from "../nn/creation.ts";
import { defineOp, NONDIFF } from "../nn/op.ts";
import { apply1 } from "../nn/apply.ts";
import { add, embedding, exp, matmul, mul, sum } from "../nn/ops/mod.ts";
import { setBackend } from "../nn/backend/select.ts";
import { cpuBackend } from "../nn/backend/cpu/mod.ts";
import { scope } from "../nn/scope.ts";

const gpu = await openWebGpuForTests();
const on = { backend: gpu };

Deno.test("WebGPU alloc() returns zeros even when the pool hands back a used buffer", async () => {
  const a = tensor(new Float32Array(1000).fill(7), [1000], "f32", on);
  const b = exp(a);
  await b.data();
  a.dispose();
  b.dispose();
  const hits = gpu.counters.poolHits;
  const z = zeros([1000], "f32", on);
  assert.ok(gpu.counters.poolHits > hits, "the buffer came from the pool");
  assert.ok((await z.data()).every((v) => v === 0));
  z.dispose();
});

Deno.test("WebGPU uploads never overwrite a buffer that a pending command still reads", async () => {
  const x = tensor(new Float32Array(256).fill(1), [256], "f32", on);
  const y = exp(x); // recorded, not submitted
  x.dispose(); // x's buffer goes back to the pool while the dispatch is pending
  const z = tensor(new Float32Array(256).fill(5), [256], "f32", on); // same bucket
  const [vy, vz] = await Promise.all([y.data(), z.data()]);
  assert.ok(vy.every((v) => Math.abs(v - Math.E) < 1e-6), `exp(1) became ${vy[0]}`);
  assert.ok(vz.every((v) => v === 5));
  y.dispose();
  z.dispose();
});

Deno.test("WebGPU records many ops into one submit and syncs only on read", async () => {
  const c0 = { ...gpu.counters };
  const x = tensor(new Float32Array(64).fill(0.5), [8, 8], "f32", on);
  const y = scope(() => {
    let h = x;
    for (let i = 0; i < 20; i++) h = add(matmul(h, x), h);
    return sum(mul(h, h));
  });
  assert.equal(gpu.counters.submits, c0.submits, "nothing submitted before the read");
  const v = await y.item(); // sync point
  assert.ok(Number.isFinite(v) && v > 0);
  assert.equal(gpu.counters.submits - c0.submits, 1);
  assert.equal(gpu.counters.syncs - c0.syncs, 1);
  assert.ok(gpu.counters.dispatches - c0.dispatches >= 42);
  x.dispose();
  y.dispose();
});

Deno.test("WebGPU reports an out-of-range token id at the next read (never silent zeros)", async () => {
  const w = tensor(new Float32Array(12).fill(1), [4, 3], "f32", on);
  const ids = tensor([1, 9], [2], "i32", on);
  const e = embedding(w, ids);
  await assert.rejects(() => e.data(), /embedding.*index was out of range \(value 9, bound 4\)/);
  // the status is cleared once reported
  const ok = embedding(w, tensor([0, 3], [2], "i32", on));
  assert.deepEqual([...await ok.data()], [1, 1, 1, 1, 1, 1]);
  for (const t of [w, ids, e, ok]) t.dispose();
});

Deno.test("WebGPU surfaces a WGSL compile error with the op name and source", async () => {
  const bad = defineOp<Record<string, never>>({
    name: "bad_kernel",
    infer: ([x]) => [x],
    cpu: () => {
      throw new Error("bad_kernel is only meant to fail compiling its WGSL");
    },
    wgsl: () => [{
      code: `@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(1) fn main() { y[0] = x[0] + undefined_name; }`,
      workgroups: [1],
    }],
    vjp: NONDIFF,
    examples: [],
  });
  const x = tensor([1, 2], [2], "f32", on);
  const y = apply1(bad, [x], {});
  await assert.rejects(() => y.data(), /bad_kernel[\s\S]*undefined_name/);
  x.dispose();
  y.dispose();
});

Deno.test("WebGPU refuses f64 with a clear error", () => {
  assert.throws(() => tensor(new Float64Array(3), [3], "f64", on), /f64 on WebGPU/);
});

Deno.test("WebGPU names the op and shape of an output past the binding limit, and leaks nothing", () => {
  // n × n f32 logits-like output just past the device's maxStorageBufferBindingSize
  const limit = gpu.info.limits.maxStorageBufferBindingSize;
  const n = Math.ceil(Math.sqrt(limit / 4)) + 1;
  const a = tensor(new Float32Array(n).fill(1), [n, 1], "f32", { backend: gpu });
  const b = tensor(new Float32Array(n).fill(1), [1, n], "f32", { backend: gpu });
  const before = gpu.counters.bytesInUse;
  assert.throws(
    () => matmul(a, b),
    new RegExp(
      `Cannot allocate matmul's f32 \\[${n}, ${n}\\] output \\(${4 * n * n} bytes\\) on WebGPU: ` +
        `the device binds at most ${limit} bytes per buffer .*a smaller batch or sequence length`,
    ),
  );
  assert.equal(gpu.counters.bytesInUse, before);
  a.dispose();
  b.dispose();
});

Deno.test("WebGPU warmup() compiles a step's pipelines without dispatching", async () => {
  const x = tensor(new Float32Array(6 * 10).fill(0.1), [6, 10], "f32", on);
  const w = tensor(new Float32Array(7 * 10).fill(0.2), [7, 10], "f32", on);
  const d0 = gpu.counters.dispatches;
  const n = await gpu.warmup(() => scope(() => exp(matmul(x, w, { transB: true }))));
  assert.equal(gpu.counters.dispatches, d0, "warm-up dispatched nothing");
  assert.ok(n >= 0);
  const before = gpu.stats.pipelines;
  const y = exp(matmul(x, w, { transB: true }));
  const v = await y.data();
  assert.equal(gpu.stats.pipelines, before, "the real run compiled nothing new");
  assert.ok(Math.abs(v[0] - Math.exp(0.2)) < 1e-5);
  for (const t of [x, w, y]) t.dispose();
});

Deno.test("setBackend: webgpu accepts the software adapter; auto prefers a real GPU else the CPU", async () => {
  try {
    const b = await setBackend("webgpu");
    assert.equal(b.name, "webgpu");
    const auto = await setBackend("auto");
    assert.equal(auto.name, gpu.software ? "cpu" : "webgpu");
    await assert.rejects(() => setBackend("tpu" as "cpu"), /expected cpu, webgpu or auto/);
  } finally {
    await setBackend("cpu");
  }
  assert.equal(await setBackend("cpu"), cpuBackend);
});

Deno.test("WebGPU reports a lost device as a thrown error naming the reason", async () => {
  const { openDevice, WebGpuBackend } = await import("../nn/backend/webgpu/mod.ts");
  const opened = await openDevice({ allowSoftware: true });
  assert.ok(opened, "a second device opens");
  const b = new WebGpuBackend(opened);
  const x = tensor([1, 2, 3], [3], "f32", { backend: b });
  opened.device.destroy(); // as a driver reset would
  await opened.device.lost;
  await new Promise((r) => setTimeout(r, 0));
  assert.throws(() => exp(x), /Cannot run exp on WebGPU: the device was lost \(destroyed/);
});

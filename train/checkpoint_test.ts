import assert from "node:assert/strict";
import { join } from "node:path";
import { tensor } from "../nn/creation.ts";
import type { Tensor } from "../nn/tensor.ts";
import { flatten } from "../nn/tree.ts";
import { adamw } from "./optim.ts";
import type { TrainState } from "./step.ts";
import {
  atomicWrite,
  loadResume,
  loadWeights,
  saveResume,
  saveWeights,
  weightStem,
} from "./checkpoint.ts";

function state(): TrainState {
  const params = {
    model: { layers: [{ w: tensor([1.5, -2.25, 3e-8], [3]) }], norm: tensor([1, 2], [2]) },
  };
  const opt = adamw();
  return {
    params,
    optState: [{}, { ...opt.init(params), count: 7 }],
    grads: { model: { layers: [{ w: tensor([0.1, 0.2, 0.3]) }], norm: tensor([4, 5]) } },
    micro: 1,
    updates: 7,
  };
}

async function flatValues(t: unknown): Promise<Record<string, number[]>> {
  const out: Record<string, number[]> = {};
  for (const [k, v] of Object.entries(flatten(t as never))) out[k] = [...await v.data()];
  return out;
}

Deno.test("weightStem() follows MiniMind's {weight}_{hidden}{_moe}", () => {
  assert.equal(weightStem("pretrain", 512, false), "pretrain_512");
  assert.equal(weightStem("full_sft", 640, true), "full_sft_640_moe");
});

Deno.test("saveResume()/loadResume() round-trip params, optimizer state, grads and info", async () => {
  const dir = await Deno.makeTempDir();
  const path = join(dir, "ck", "pretrain_512_resume.safetensors");
  const s = state();
  const info = {
    epoch: 1,
    step: 42,
    epochs: 2,
    iters: 100,
    seed: 42,
    tokens: 1234,
    elapsedS: 5.5,
    worldSize: 1,
    extra: { args: { batch_size: 4 } },
  };
  await saveResume(path, s, info);
  const { state: r, info: ri } = await loadResume(path);
  assert.deepEqual(ri, info);
  assert.equal(r.micro, 1);
  assert.equal(r.updates, 7);
  assert.deepEqual(await flatValues(r.params), await flatValues(s.params));
  assert.deepEqual(await flatValues(r.optState), await flatValues(s.optState));
  assert.deepEqual(await flatValues(r.grads), await flatValues(s.grads));
  assert.equal((r.optState as [unknown, { count: number }])[1].count, 7);
  assert.ok(Array.isArray((r.params as { model: { layers: unknown } }).model.layers));
  await assert.rejects(
    () => loadResume(join(dir, "missing.safetensors")),
    /Cannot read checkpoint/,
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("saveWeights()/loadWeights() use the dotted HF names and keep metadata", async () => {
  const dir = await Deno.makeTempDir();
  const path = join(dir, "pretrain_64.safetensors");
  await saveWeights(path, state().params, { config: '{"hiddenSize":64}' });
  const { tensors, metadata } = await loadWeights(path);
  assert.deepEqual(Object.keys(tensors).sort(), ["model.layers.0.w", "model.norm"]);
  assert.deepEqual([...await (tensors["model.layers.0.w"] as Tensor).data()], [
    1.5,
    -2.25,
    ...Float32Array.of(3e-8),
  ]);
  assert.equal(metadata.config, '{"hiddenSize":64}');
  assert.equal(metadata.format, "pt");
  await Deno.remove(dir, { recursive: true });
});

Deno.test("atomicWrite(): a failure mid-write leaves the previous file intact", async () => {
  const dir = await Deno.makeTempDir();
  const path = join(dir, "w.bin");
  await atomicWrite(path, [new Uint8Array([1, 2, 3])]);
  async function* failing() {
    yield new Uint8Array(1 << 20);
    throw new Error("disk on fire");
  }
  await assert.rejects(() => atomicWrite(path, failing()), /Cannot write .*disk on fire/);
  assert.deepEqual([...await Deno.readFile(path)], [1, 2, 3]);
  assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["w.bin"]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("atomicWrite(): a process killed mid-write leaves the previous checkpoint loadable", async () => {
  const dir = await Deno.makeTempDir();
  const path = join(dir, "pretrain_512_resume.safetensors");
  const s = state();
  const info = {
    epoch: 0,
    step: 1,
    epochs: 1,
    iters: 2,
    seed: 42,
    tokens: 0,
    elapsedS: 0,
    worldSize: 1,
    extra: {},
  };
  await saveResume(path, s, info);
  // a child that starts overwriting the same checkpoint and dies (exit without cleanup) half-way
  const script = `
    import { atomicWrite } from ${JSON.stringify(new URL("./checkpoint.ts", import.meta.url).href)};
    async function* chunks() {
      yield new Uint8Array(8).fill(255);
      yield new Uint8Array(1 << 20).fill(7);
      Deno.exit(3);
    }
    await atomicWrite(${JSON.stringify(path)}, chunks());
  `;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", script],
    stdout: "null",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 3, new TextDecoder().decode(out.stderr));
  const { info: back } = await loadResume(path);
  assert.deepEqual(back, info);
  await Deno.remove(dir, { recursive: true });
});

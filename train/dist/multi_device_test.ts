/**
 * Data parallel over several WebGPU devices in one process: two ranks of an in-process group, each
 * with its params and batches on its own device, against one device running the global batch.
 * (The software adapter in CI: two devices of one adapter, which tests the plumbing, not speed.)
 */
import assert from "node:assert/strict";
import { openDevice, WebGpuBackend } from "../../nn/backend/webgpu/mod.ts";
import type { Backend } from "../../nn/backend/backend.ts";
import { init } from "../../nn/model/minimind.ts";
import { config } from "../../nn/model/minimind_config.ts";
import { key, randint } from "../../nn/random.ts";
import { tensor } from "../../nn/creation.ts";
import { scope } from "../../nn/scope.ts";
import { flatten, mapTree } from "../../nn/tree.ts";
import { Tensor } from "../../nn/tensor.ts";
import type { Tree } from "../../nn/tree.ts";
import { openWebGpuForTests } from "../../tests/_webgpu.ts";
import { adamw } from "../optim.ts";
import { disposeState, makeTrainStep } from "../step.ts";
import type { TrainState } from "../step.ts";
import { lmLoss } from "../lm.ts";
import type { LmBatch } from "../lm.ts";
import { inProcessGroup } from "./comm.ts";
import { dataParallel } from "./data_parallel.ts";

const cfg = config("minimind2-small", {
  hiddenSize: 32,
  numHiddenLayers: 2,
  numAttentionHeads: 4,
  numKeyValueHeads: 2,
  vocabSize: 300,
});
const STEPS = 3, T = 12;
const host = init(cfg, key(1)) as unknown as Tree;

/** Step s's global batch: 4 rows; rows 1 and 2 end early (labels −100), so shards differ. */
function globalRows(s: number): { ids: Int32Array; labels: Int32Array } {
  const ids = randint(key(100 + s), [4, T], 3, 300).dataSync() as Int32Array;
  const labels = ids.slice();
  for (let t = 7; t < T; t++) labels[1 * T + t] = -100;
  for (let t = 4; t < T; t++) labels[2 * T + t] = -100;
  return { ids, labels };
}

function batchOf(rows: number[], s: number, backend: Backend): LmBatch {
  const g = globalRows(s);
  const pick = (a: Int32Array) =>
    Int32Array.from(rows.flatMap((r) => [...a.subarray(r * T, r * T + T)]));
  const labels = pick(g.labels);
  let targets = 0;
  for (let r = 0; r < rows.length; r++) {
    for (let t = 1; t < T; t++) if (labels[r * T + t] !== -100) targets++;
  }
  return {
    ids: tensor(pick(g.ids), [rows.length, T], "i32", { backend }),
    labels: tensor(labels, [rows.length, T], "i32", { backend }),
    targets,
  };
}

const onDevice = (backend: Backend) =>
  mapTree(
    host,
    (x) =>
      x instanceof Tensor ? tensor(x.dataSync() as Float32Array, x.shape, "f32", { backend }) : x,
  );
const makeStep = () =>
  makeTrainStep<LmBatch, Tensor>(lmLoss(cfg), adamw({ lr: 3e-3 }), { hasAux: true });

async function embedding(state: TrainState): Promise<Float32Array> {
  return (await flatten(state.params)["model.embed_tokens.weight"].data()) as Float32Array;
}

Deno.test("dataParallel on two WebGPU devices in one process = one device on the global batch", async () => {
  const first = await openWebGpuForTests();
  const opened = await openDevice({ allowSoftware: true });
  assert.ok(opened, "a second WebGPU device opens");
  const second = new WebGpuBackend(opened);
  const devices = [first, second];

  // one device, global batch of 4
  const step = makeStep();
  let state = step.init(onDevice(first));
  const want: number[] = [];
  for (let s = 0; s < STEPS; s++) {
    const b = batchOf([0, 1, 2, 3], s, first);
    const [next, out] = scope(() => step(state, b, { lr: 3e-3 }));
    state = next;
    want.push(await out.loss.item());
    out.loss.dispose(), out.aux?.dispose(), b.ids.dispose(), b.labels.dispose();
  }
  const wantEmb = await embedding(state);
  disposeState(state);

  // two ranks, rows r and r+2 each, each on its own device
  const comms = inProcessGroup(2, { timeoutMs: 120_000 });
  const ranks = await Promise.all(comms.map(async (comm, r) => {
    const dev = devices[r];
    const dp = dataParallel(makeStep(), comm, { weight: (b) => b.targets });
    let st = await dp.init(onDevice(dev));
    const losses: number[] = [];
    for (let s = 0; s < STEPS; s++) {
      const b = batchOf([r, r + 2], s, dev);
      const [next, out] = await dp(st, b, { lr: 3e-3 });
      st = next;
      assert.equal(out.loss.backend, dev, "the reported loss lives on the rank's device");
      losses.push(await out.loss.item());
      out.loss.dispose(), out.aux?.dispose(), b.ids.dispose(), b.labels.dispose();
    }
    const p = flatten(st.params)["model.embed_tokens.weight"];
    assert.equal(p.backend, dev, `rank ${r}'s params stay on its device`);
    const emb = await embedding(st);
    disposeState(st);
    return { losses, emb };
  }));
  assert.deepEqual(ranks[0].losses, ranks[1].losses);
  assert.deepEqual(ranks[0].emb, ranks[1].emb, "both devices hold the same params");
  for (let s = 0; s < STEPS; s++) {
    const d = Math.abs(ranks[0].losses[s] - want[s]);
    assert.ok(d <= 1e-5 * want[s], `step ${s}: ${ranks[0].losses[s]} vs ${want[s]}`);
  }
  let maxDiff = 0;
  for (let i = 0; i < wantEmb.length; i++) {
    maxDiff = Math.max(maxDiff, Math.abs(ranks[0].emb[i] - wantEmb[i]));
  }
  assert.ok(maxDiff < 1e-5, `params within 1e-5 of one device: ${maxDiff}`);
  opened.device.destroy();
});

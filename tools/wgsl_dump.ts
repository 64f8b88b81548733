/**
 * Dumps the WGSL every op generates, so a refactor of the generators can be shown byte-identical:
 * each op example's plan, a few large matmuls, and every kernel a small dense and MoE model's
 * train step and generation run — each under the four device kinds (software or GPU adapter,
 * with or without f16). Variants are keyed by op, metas, params and device, and sorted.
 *
 *   deno run -A tools/wgsl_dump.ts before.txt    # then change the code, dump again, cmp
 * @module
 */
import { OPS } from "../nn/ops/mod.ts";
import type { KernelOp, Meta, OpDef, WgslDevice } from "../nn/op.ts";
import { defaultBackend } from "../nn/backend/select.ts";
import type { Storage } from "../nn/backend/backend.ts";
import { config } from "../nn/model/minimind_config.ts";
import { forward, init, lossFromLogits } from "../nn/model/minimind.ts";
import { generate } from "../nn/model/generate.ts";
import { valueAndGrad } from "../nn/autodiff.ts";
import { tensor } from "../nn/creation.ts";
import { key } from "../nn/random.ts";
import { add } from "../nn/ops/binary.ts";
import { adamw } from "../train/optim.ts";
import type { Tree } from "../nn/tree.ts";
import type { MiniMindParams } from "../nn/model/minimind.ts";

const LIMITS = {
  maxComputeWorkgroupsPerDimension: 65535,
  maxStorageBufferBindingSize: 2 ** 31 - 4,
  minUniformBufferOffsetAlignment: 256,
  maxComputeWorkgroupStorageSize: 32768,
  maxComputeInvocationsPerWorkgroup: 256,
};
const DEVICES: WgslDevice[] = [false, true].flatMap((software) =>
  [false, true].map((f16) => ({ limits: LIMITS, software, f16 }))
);

/**
 * Every generated plan, keyed by op, input metas, params and device.
 *
 * @returns the dump's variants
 */
export async function wgslVariants(): Promise<Map<string, string>> {
  const seen = new Map<string, string>();
  const dump = <P>(op: OpDef<P>, inputs: Meta[], params: P) => {
    if (op.view) return;
    const outputs = op.infer(inputs, params);
    for (const d of DEVICES) {
      const k = `${op.name} ${JSON.stringify(inputs)} ${JSON.stringify(params)} ` +
        `sw=${d.software} f16=${d.f16}`;
      if (!seen.has(k)) {
        seen.set(k, JSON.stringify(op.wgsl({ inputs, outputs, params }, d), null, 1));
      }
    }
  };
  for (const op of Object.values(OPS)) {
    for (const ex of op.examples) {
      dump(op, ex.inputs.map((s) => ({ shape: s.shape, dtype: s.dtype ?? "f32" })), ex.params);
    }
  }
  const big: [number[], number[], boolean, boolean][] = [
    [[384, 384], [384, 384], false, false],
    [[512, 128], [352, 128], false, true],
    [[512, 352], [352, 128], false, false],
    [[512, 352], [512, 128], true, false],
    [[4096, 512], [1408, 512], false, true],
  ];
  for (const [a, b, transA, transB] of big) {
    dump(OPS.matmul, [{ shape: a, dtype: "f32" }, { shape: b, dtype: "f32" }], { transA, transB });
  }
  // every kernel a small model's train step and generation run (on the CPU backend)
  const cpu = defaultBackend();
  const run = cpu.run.bind(cpu);
  cpu.run = <P>(op: KernelOp<P>, ins: Storage[], inMetas: Meta[], outMetas: Meta[], params: P) => {
    dump(op, inMetas, params);
    return run(op, ins, inMetas, outMetas, params);
  };
  try {
    for (const useMoe of [false, true]) {
      const cfg = config("minimind2-small", {
        hiddenSize: 64,
        numHiddenLayers: 2,
        vocabSize: 300,
        useMoe,
      });
      const params = init(cfg, key(0));
      const ids = tensor([[1, 5, 9, 3, 7, 2, 8, 4], [2, 6, 1, 9, 9, 3, 5, 1]], [2, 8], "i32");
      const [loss, grads] = valueAndGrad((p: MiniMindParams) => {
        const r = forward(cfg, p, ids, { train: true });
        return add(lossFromLogits(r.logits, ids), r.auxLoss);
      })(params);
      await loss.data();
      const opt = adamw({ lr: 1e-3, weightDecay: 0.1 });
      const tree = params as unknown as Tree;
      opt.update(grads as unknown as Tree, opt.init(tree), tree);
      const model = { cfg, params };
      const sampled = { maxNewTokens: 4, temperature: 0.8, topP: 0.9, seed: 1 };
      for await (const _ of generate(model, [[1, 5, 9], [2, 3]], sampled)) { /* every kernel */ }
      for await (const _ of generate(model, [[1, 5, 9]], { maxNewTokens: 3, greedy: true })) {
        /* the greedy path */
      }
    }
  } finally {
    cpu.run = run;
  }
  return seen;
}

if (import.meta.main) {
  const out = Deno.args[0];
  if (!out) throw new Error("Usage: deno run -A tools/wgsl_dump.ts OUT.txt");
  const seen = await wgslVariants();
  const text = [...seen.keys()].sort().map((k) => `=== ${k}\n${seen.get(k)}`).join("\n");
  await Deno.writeTextFile(out, text);
  console.log(`${seen.size} variants, ${text.length} bytes → ${out}`);
}

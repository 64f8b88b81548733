/**
 * Golden tests against the PyTorch reference (tests/fixtures/golden, see its README): for the
 * model cases v2_dense, v2_moe, m3_dense, m3_moe compare logits, loss, aux loss and every
 * parameter gradient (from the public `valueAndGrad(f, {hasAux: true})` over `forward(…, {train:
 * true})` + `lossFromLogits` + auxLoss), the residual stream, KV-cache decode logits, YaRN logits
 * and MoE routing — on the CPU backend and, when an adapter exists, on WebGPU.
 * Failures print the max abs diff and the first differing values per tensor (llm.c style).
 * @module
 */
import assert from "node:assert/strict";
import {
  add,
  config,
  configFromHF,
  forward,
  init,
  lossFromLogits,
  paramsFromFlat,
  random,
  scope,
  setBackend,
  sliceAxis,
  tensor,
  tree,
  valueAndGrad,
} from "../mod.ts";
import type { MiniMindConfig, MiniMindParams, Tensor } from "../mod.ts";
import { loadSafetensors } from "../convert/safetensors.ts";
import { OPS } from "../nn/ops/mod.ts";
import { cpuBackend } from "../nn/backend/cpu/mod.ts";
import { compare, fixture } from "./_util.ts";
import { openWebGpuForTests } from "./_webgpu.ts";

const CASES = ["v2_dense", "v2_moe", "m3_dense", "m3_moe"] as const;

/** Tolerances per backend: CPU f32 is the 1e-4; WebGPU (f32, other summation orders). */
const TOL = {
  cpu: { rtol: 1e-4, atol: 1e-4, grad: 1e-4 },
  webgpu: { rtol: 1e-4, atol: 1e-4, grad: 1e-4 },
};

interface Golden {
  meta: Record<string, unknown> & {
    config: Record<string, unknown>;
    loss: number;
    aux_loss: number;
  };
  cfg: MiniMindConfig;
  flat: Record<string, Tensor>;
  params: MiniMindParams;
}

async function loadCase(name: string): Promise<Golden> {
  const meta = JSON.parse(await Deno.readTextFile(fixture(`golden/${name}.json`)));
  const cfg = configFromHF(meta.config);
  const flat = await loadSafetensors(fixture(`golden/${name}.safetensors`));
  const p: Record<string, Tensor> = {};
  for (const [k, v] of Object.entries(flat)) if (k.startsWith("param.")) p[k.slice(6)] = v;
  return { meta, cfg, flat, params: paramsFromFlat(cfg, p) };
}

/** One row of the summary table: the worst relative error of a kind of tensor. */
type Summary = Record<string, number>;

class Checker {
  failures: string[] = [];
  worst: Summary = {};
  constructor(readonly label: string) {}

  /** Elementwise |a − b| ≤ atol + rtol·|b|; records max|Δ| / max|b|. */
  async values(
    kind: string,
    name: string,
    got: Tensor,
    want: Tensor,
    tol: { atol: number; rtol: number },
  ): Promise<void> {
    const g = await got.data(), w = await want.data(); // sync point (test)
    const shapeOk = got.shape.join() === want.shape.join();
    const r = compare(g, w, { ...tol, label: `${this.label} ${name}` });
    this.note(kind, r.maxAbs / maxAbs(w));
    if (!shapeOk) this.failures.push(`${name}: shape [${got.shape}] vs [${want.shape}]`);
    else if (!r.ok) this.failures.push(r.message);
  }

  /** Whole-tensor test for gradients: max|Δg| ≤ rel·max|g| + 1e-7. */
  async grad(name: string, got: Tensor, want: Tensor, rel: number): Promise<void> {
    const g = await got.data(), w = await want.data(); // sync point (test)
    const m = maxAbs(w);
    const r = compare(g, w, { atol: rel * m + 1e-7, rtol: 0, label: `${this.label} grad ${name}` });
    this.note("grads", r.maxAbs / Math.max(m, 1e-30));
    if (!r.ok) this.failures.push(r.message + ` (max|g| ${m})`);
  }

  scalar(kind: string, got: number, want: number, atol: number): void {
    const d = Math.abs(got - want);
    this.note(kind, d / Math.max(Math.abs(want), 1e-30));
    if (!(d <= atol)) {
      this.failures.push(`${this.label} ${kind}: got ${got} want ${want} (diff ${d})`);
    }
  }

  note(kind: string, rel: number): void {
    this.worst[kind] = Math.max(this.worst[kind] ?? 0, Number.isNaN(rel) ? Infinity : rel);
  }

  finish(): void {
    const parts = Object.entries(this.worst).map(([k, v]) => `${k} ${v.toExponential(2)}`);
    console.log(`  ${this.label} max rel error: ${parts.join(", ")}`);
    if (this.failures.length) {
      throw new Error(`${this.failures.length} mismatch(es):\n${this.failures.join("\n")}`);
    }
  }
}

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
}

async function runCase(name: string, backendName: "cpu" | "webgpu"): Promise<void> {
  const tol = TOL[backendName];
  const { meta, cfg, flat, params } = await loadCase(name);
  const c = new Checker(`${name} [${backendName}]`);
  const ids = flat.input_ids, labels = flat.labels;

  // logits, loss, aux loss and every gradient from one valueAndGrad over the public API
  const f = (p: MiniMindParams) => {
    const r = forward(cfg, p, ids, { train: true, outputHiddenStates: true });
    const loss = lossFromLogits(r.logits, labels);
    const aux = { loss, aux: r.auxLoss, logits: r.logits, hs: r.hiddenStates! };
    return [add(loss, r.auxLoss), aux] as const;
  };
  const [[total, aux], grads] = valueAndGrad(f, { hasAux: true })(params);
  await c.values("logits", "logits", aux.logits, flat.logits, tol);
  const hs: Tensor[] = aux.hs;
  await c.values("activations", "act.embed", hs[0], flat["act.embed"], tol);
  for (let l = 0; l < cfg.numHiddenLayers; l++) {
    await c.values("activations", `act.layers.${l}`, hs[l + 1], flat[`act.layers.${l}`], tol);
  }
  await c.values("activations", "act.final_norm", hs[hs.length - 1], flat["act.final_norm"], tol);
  c.scalar("loss", await aux.loss.item(), meta.loss, 1e-5);
  c.scalar("aux_loss", await aux.aux.item(), meta.aux_loss, 1e-7);
  c.scalar("total_loss", await total.item(), meta.loss + meta.aux_loss, 1e-5);
  const g = tree.flatten(grads);
  const keys = meta.stored_param_keys as string[];
  assert(
    Object.keys(g).length === keys.length,
    `${Object.keys(g).length} grads for ${keys.length} params`,
  );
  for (const k of keys) {
    assert(g[k], `no gradient for ${k}`);
    await c.grad(k, g[k], flat[`grad.${k}`], tol.grad);
  }
  tree.dispose(grads);
  tree.dispose([total, aux]);

  // MoE routing (exact expert choices)
  if (cfg.useMoe) {
    const r = forward(cfg, params, ids, { outputRouting: true });
    for (let l = 0; l < cfg.numHiddenLayers; l++) {
      const ro = r.routing![l], pre = `moe.layers.${l}`;
      await c.values(
        "routing",
        `${pre}.router_logits`,
        ro.logits,
        flat[`${pre}.router_logits`],
        tol,
      );
      await c.values("routing", `${pre}.router_probs`, ro.probs, flat[`${pre}.router_probs`], tol);
      await c.values(
        "routing",
        `${pre}.topk_weight`,
        ro.topkWeight,
        flat[`${pre}.topk_weight`],
        tol,
      );
      await c.values("routing", `${pre}.topk_idx`, ro.topkIdx, flat[`${pre}.topk_idx`], {
        atol: 0,
        rtol: 0,
      });
    }
    // the other MoE execution (dense on CPU; on WebGPU "auto" is already dense)
    const other = forward(cfg, params, ids, { train: true, moeDispatch: "dense" });
    await c.values("logits", "logits(dense dispatch)", other.logits, flat.logits, tol);
    c.scalar("aux_loss", await other.auxLoss.item(), meta.aux_loss, 1e-7);
    // eval mode: same logits, no aux loss
    c.scalar("aux_loss(eval)", await r.auxLoss.item(), 0, 0);
    await c.values("logits", "logits(eval)", r.logits, flat.logits, tol);
  }

  // KV-cache decode: prefill 12 tokens, then feed positions 12..15 one at a time
  if (flat.decode_logits) {
    const pre = (meta.decode as { prefill_len: number }).prefill_len;
    let step = forward(cfg, params, sliceAxis(ids, 1, 0, pre), { useCache: true });
    await c.values("logits", "prefill logits", step.logits, sliceAxis(flat.logits, 1, 0, pre), tol);
    for (let j = 0; pre + j < ids.shape[1]; j++) {
      step = forward(cfg, params, sliceAxis(ids, 1, pre + j, pre + j + 1), { cache: step.cache });
      const want = sliceAxis(flat.decode_logits, 1, j, j + 1);
      await c.values("decode", `decode_logits[:, ${j}]`, step.logits, want, tol);
    }
    // PyTorch's past_key_values are (B, S, NKV, HD); ours hold the same time-major, (S, B, NKV, HD)
    const kv = step.cache!.layers[0].k;
    const [pb, ps, ...rest] = (meta.decode as { kv_cache_shape_per_layer_after_decode: number[] })
      .kv_cache_shape_per_layer_after_decode;
    assert(kv.shape.join() === [ps, pb, ...rest].join(), `cache shape ${kv.shape}`);
  }

  // YaRN: same weights with inference_rope_scaling on a 64-token input
  if (flat.logits_yarn) {
    const ycfg = configFromHF({ ...meta.config, inference_rope_scaling: true });
    const r = forward(ycfg, params, flat.input_ids_long);
    await c.values("yarn", "logits_yarn", r.logits, flat.logits_yarn, tol);
  }
  tree.dispose(flat);
  c.finish();
}

/**
 * Ops the golden paths run on WebGPU (MoE dispatch "dense" there), found by running a tiny
 * model on the CPU with the backend's `run` instrumented; the WebGPU tests are enabled once every
 * one of them has a WGSL kernel.
 */
function missingWgslKernels(): string[] {
  const used = new Set<string>();
  const run = cpuBackend.run;
  // deno-lint-ignore no-explicit-any
  (cpuBackend as any).run = (op: { name: string }, ...rest: unknown[]) => {
    used.add(op.name);
    // deno-lint-ignore no-explicit-any
    return (run as any).call(cpuBackend, op, ...rest);
  };
  try {
    for (const preset of ["minimind2-moe", "minimind3-moe", "minimind3"] as const) {
      const cfg = config(preset, {
        hiddenSize: 16,
        numHiddenLayers: 1,
        numAttentionHeads: 2,
        numKeyValueHeads: 1,
        vocabSize: 11,
        inferenceRopeScaling: preset === "minimind3",
      });
      const ids = tensor([[1, 2, 3]], [1, 3], "i32");
      scope(() => {
        const params = init(cfg, random.key(0));
        valueAndGrad((p: MiniMindParams) => {
          const r = forward(cfg, p, ids, {
            train: true,
            moeDispatch: "dense",
            outputRouting: true,
          });
          return add(lossFromLogits(r.logits, ids), r.auxLoss);
        })(params);
        const pre = forward(cfg, params, sliceAxis(ids, 1, 0, 2), { useCache: true });
        forward(cfg, params, sliceAxis(ids, 1, 2, 3), { cache: pre.cache });
      });
    }
  } finally {
    // deno-lint-ignore no-explicit-any
    (cpuBackend as any).run = run;
  }
  // a registered op has its WGSL kernel by type (or is a view); an unregistered one may not
  return [...used].filter((n) => !OPS[n]).sort();
}

for (const name of CASES) {
  Deno.test(`golden ${name} on cpu: logits, loss, aux, every gradient, decode, yarn, routing`, () =>
    runCase(name, "cpu"));
}

// No adapter is a failure with instructions (never a silent pass); until the WebGPU backend has
// a kernel for every op these paths run, the tests are reported as ignored (they enable
// themselves once the kernels exist).
const missing = missingWgslKernels();
if (missing.length) {
  console.log(`golden webgpu tests ignored: no WGSL kernel yet for ${missing.join(", ")}`);
}
for (const name of CASES) {
  Deno.test({
    name: `golden ${name} on webgpu: logits, loss, aux, every gradient, decode, yarn, routing`,
    ignore: missing.length > 0,
    fn: async () => {
      await openWebGpuForTests(); // clear error when no adapter exists
      await setBackend("webgpu");
      try {
        await runCase(name, "webgpu");
      } finally {
        await setBackend("cpu");
      }
    },
  });
}

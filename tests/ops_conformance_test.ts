/**
 * Every registered op: the VJP against central finite differences in f64 along a random
 * direction (error ≤ 1e-6 relative to the directional derivative's terms Σ|gᵢvᵢ|, so a sum that
 * nearly cancels is not held to a relative bound its rounding cannot meet), on fresh random inputs
 * each run; non-differentiable ops: the f32 kernel against the f64 kernel.
 */
import assert from "node:assert/strict";
import { OPS } from "../nn/ops/mod.ts";
import type { KernelOp, OpDef } from "../nn/op.ts";
import { NONDIFF } from "../nn/op.ts";
import { apply } from "../nn/apply.ts";
import { allocArray, isFloat } from "../nn/dtype.ts";
import type { Tensor } from "../nn/tensor.ts";
import { vjp } from "../nn/autodiff.ts";
import { scope } from "../nn/scope.ts";
import { tensor } from "../nn/creation.ts";
import { foldIn, key, normalArray, split } from "../nn/random.ts";
import type { Key } from "../nn/random.ts";
import { compare, inputTensor } from "./_util.ts";

const SEED = Number(Deno.env.get("MINIMIND_TEST_SEED") ?? Date.now() % 1e9);
const EPS = 1e-5;
const TOL = 1e-6;

/** Replaces "f32" by "f64" in params (cast targets) so the check runs fully in f64. */
// deno-lint-ignore no-explicit-any
function toF64Params(p: any): any {
  if (p && typeof p === "object" && p.dtype === "f32") return { ...p, dtype: "f64" };
  return p;
}

function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

function randn(k: Key, shape: readonly number[]): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return tensor(Float64Array.from(normalArray(k, n)), shape, "f64");
}

// deno-lint-ignore no-explicit-any
function checkOp(name: string, op: OpDef<any>, exampleIndex: number, k: Key): void {
  const ex = op.examples[exampleIndex];
  const params = toF64Params(ex.params);
  scope(() => {
    const keys = split(k, ex.inputs.length + 8);
    const inputs = ex.inputs.map((s, i) => inputTensor(s, keys[i], "f64"));
    const outs = apply(op, inputs, params);
    const floatOuts = outs.map((
      o,
      i,
    ) => (isFloat(o.dtype) && !op.statOutputs?.includes(i) ? i : -1)).filter((i) => i >= 0);
    const cts = floatOuts.map((i, j) => randn(keys[ex.inputs.length + (j % 4)], outs[i].shape));
    // which inputs does the rule differentiate? (null = not differentiable w.r.t. it)
    const floatIns = inputs.map((x, i) => (isFloat(x.dtype) ? i : -1)).filter((i) => i >= 0);
    const fn = (...xs: Tensor[]) => {
      const all = inputs.slice();
      floatIns.forEach((idx, j) => (all[idx] = xs[j]));
      const o = apply(op, all, params);
      return floatOuts.map((i) => o[i]);
    };
    const [, back] = vjp(fn, ...floatIns.map((i) => inputs[i]));
    const grads = back(cts) as Tensor[];
    const ctList = outs.map((_, i) => (floatOuts.includes(i) ? cts[floatOuts.indexOf(i)] : null));
    const ruleGrads = (op.vjp as Exclude<typeof op.vjp, typeof NONDIFF>)(
      ctList,
      {
        inputs,
        outputs: outs,
        inMetas: inputs,
        outMetas: outs,
        params,
        needsGrad: inputs.map((x) => isFloat(x.dtype)),
      },
    );
    const dirs = floatIns.map((
      i,
      j,
    ) => (ruleGrads[i] === null
      ? null
      : randn(keys[ex.inputs.length + 4 + (j % 4)], inputs[i].shape))
    );
    // analytic directional derivative Σ <g_i, v_i>, and the size of its terms Σ |g_i v_i|: when
    // the terms nearly cancel, the finite difference's rounding error is relative to them
    let analytic = 0, terms = 0;
    floatIns.forEach((_, j) => {
      if (!dirs[j]) return;
      const g = grads[j].dataSync(), v = dirs[j]!.dataSync();
      analytic += dot(g, v);
      for (let q = 0; q < g.length; q++) terms += Math.abs(g[q] * v[q]);
    });
    // numeric: (L(x + εv) − L(x − εv)) / 2ε with L = Σ <ct, out>
    const L = (sign: number) =>
      scope(() => {
        const xs = floatIns.map((i, j) => {
          const base = inputs[i].dataSync();
          if (!dirs[j]) return inputs[i];
          const d = dirs[j]!.dataSync();
          const v = new Float64Array(base.length);
          for (let q = 0; q < v.length; q++) v[q] = base[q] + sign * EPS * d[q];
          return tensor(v, inputs[i].shape, "f64");
        });
        const o = fn(...xs);
        let s = 0;
        o.forEach((t, j) => (s += dot(t.dataSync(), cts[j].dataSync())));
        return s;
      });
    const numeric = (L(1) - L(-1)) / (2 * EPS);
    const scale = Math.max(Math.abs(numeric), Math.abs(analytic), terms);
    const rel = scale < 1e-9 ? 0 : Math.abs(numeric - analytic) / scale;
    assert.ok(
      rel <= TOL,
      `${name} example ${exampleIndex} (${
        ex.label ?? ""
      }): VJP ${analytic} vs finite differences ${numeric}, relative error ${rel} > ${TOL} (seed ${SEED})`,
    );
  });
}

// deno-lint-ignore no-explicit-any
function checkForwardF32(name: string, op: OpDef<any>, exampleIndex: number, k: Key): void {
  const ex = op.examples[exampleIndex];
  scope(() => {
    const keys = split(k, ex.inputs.length);
    const run = (ft: "f32" | "f64") => {
      const inputs = ex.inputs.map((s, i) => inputTensor(s, keys[i], ft));
      return apply(op, inputs, ft === "f64" ? toF64Params(ex.params) : ex.params).map((o) =>
        o.dataSync()
      );
    };
    const a = run("f32"), b = run("f64");
    a.forEach((x, i) => {
      const r = compare(x, b[i], { atol: 1e-5, rtol: 1e-4, label: `${name} output ${i}` });
      assert.ok(r.ok, r.message + ` (seed ${SEED})`);
    });
  });
}

for (const [name, op] of Object.entries(OPS)) {
  if (op.examples.length === 0 && op.vjp === NONDIFF) continue;
  Deno.test(`${name}() ${op.vjp === NONDIFF ? "f32 kernel matches f64" : "VJP matches finite differences in f64"}`, () => {
    op.examples.forEach((_, i) => {
      const k = foldIn(foldIn(key(SEED), name.length * 7919 + name.charCodeAt(0)), i);
      if (op.vjp === NONDIFF) checkForwardF32(name, op, i, k);
      else checkOp(name, op, i, k);
    });
  });
}

Deno.test("every registered op has examples or is a backward op exercised through its VJP", () => {
  for (const [name, op] of Object.entries(OPS)) {
    assert.ok(op.examples.length > 0 || name.endsWith("_backward"), `${name} has no examples`);
    assert.equal(op.name, name, `registry key ${name} names op ${op.name}`);
  }
});

/** The op's CPU outputs for `inputs`, written into arrays prefilled with `fill`. */
// deno-lint-ignore no-explicit-any
function cpuOutputs(op: KernelOp<any>, inputs: Tensor[], params: unknown, fill: number) {
  const inMetas = inputs.map((t) => ({ shape: t.shape, dtype: t.dtype }));
  const outMetas = op.infer(inMetas, params);
  const outs = outMetas.map((m) => {
    const a = allocArray(m.dtype, m.shape.reduce((x, y) => x * y, 1));
    a.fill((isFloat(m.dtype) || fill === 0 ? fill : 0x5a) as never); // ints cannot hold NaN
    return a;
  });
  op.cpu(inputs.map((t) => t.dataSync()), outs, { inputs: inMetas, outputs: outMetas, params });
  return outs;
}

Deno.test("ops marked writesAll write every output element (recycled arrays are not zeroed)", () => {
  const marked = Object.entries(OPS).flatMap(([name, op]) =>
    // deno-lint-ignore no-explicit-any
    !op.view && op.writesAll ? [[name, op] as [string, KernelOp<any>]] : []
  );
  assert.ok(marked.length >= 5, `only ${marked.length} ops are marked`);
  for (const [name, op] of marked) {
    // backward ops without examples take their forward op's example shapes for every input
    const examples = op.examples.length > 0 ? op.examples : OPS[name.replace(/_backward$/, "")]
      .examples.map((e) => ({ ...e, inputs: [e.inputs[0], ...e.inputs] }));
    assert.ok(examples.length > 0, `${name}: no examples`);
    examples.forEach((ex, i) => {
      scope(() => {
        const keys = split(foldIn(key(SEED), i), ex.inputs.length);
        for (const ft of ["f32", "f64"] as const) {
          const inputs = ex.inputs.map((s, j) => inputTensor(s, keys[j], ft));
          const params = ft === "f64" ? toF64Params(ex.params) : ex.params;
          const zeroed = cpuOutputs(op, inputs, params, 0);
          const dirty = cpuOutputs(op, inputs, params, NaN);
          zeroed.forEach((z, o) => {
            for (let e = 0; e < z.length; e++) {
              assert.ok(
                Object.is(z[e], dirty[o][e]),
                `${name} example ${i} ${ft} output ${o}[${e}]: ${dirty[o][e]} after NaN fill, ${
                  z[e]
                } after zero fill`,
              );
            }
          });
        }
      });
    });
  }
});

import assert from "node:assert/strict";
import { bf16Bits, bf16Value } from "../../dtype.ts";
import { tensor } from "../../creation.ts";
import type { Tensor } from "../../tensor.ts";
import { activationDtype, matmul } from "../../ops/matmul.ts";
import { mul } from "../../ops/arith.ts";
import { sum } from "../../ops/reduce.ts";
import { grad } from "../../autodiff.ts";
import { key, normalArray } from "../../random.ts";
import { setMatmulPrecision } from "../../backend/cpu/gemm_adapter.ts";
import { openBf16Gemm } from "../../backend/cpu/gemm/bf16.ts";
import { mlp, type MlpParams } from "./mlp.ts";
import { linear } from "./linear.ts";
import { swiglu } from "../../ops/swiglu.ts";

/** f32 values rounded to bf16 and back (what a bf16 operand holds). */
const rnd = (x: ArrayLike<number>) => Float64Array.from(x, (v) => bf16Value(bf16Bits(v)));
const f32 = (n: number, seed: number, scale = 1) =>
  Float32Array.from(normalArray(key(seed), n), (v) => v * scale);

/**
 * C [m, n] = op(A)·op(B) in f64: A [m, k] (stored [k, m] with `ta`), B [k, n] (stored [n, k] with
 * `tb`).
 */
function mm(
  a: Float64Array,
  b: Float64Array,
  m: number,
  n: number,
  k: number,
  ta = false,
  tb = false,
): Float64Array {
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let q = 0; q < k; q++) {
        s += (ta ? a[q * m + i] : a[i * k + q]) * (tb ? b[j * k + q] : b[q * n + j]);
      }
      c[i * n + j] = s;
    }
  }
  return c;
}

/** ‖got − want‖ / ‖want‖. */
function relErr(got: ArrayLike<number>, want: ArrayLike<number>): number {
  let d = 0, w = 0;
  for (let i = 0; i < want.length; i++) {
    d += (got[i] - want[i]) ** 2;
    w += want[i] ** 2;
  }
  return Math.sqrt(d / w);
}

const sig = (x: number) => 1 / (1 + Math.exp(-x));
const widen = (t: Tensor) => Float64Array.from(t.dataSync() as Uint16Array, bf16Value);

Deno.test("matmul multiplies f32 and bf16 operands on the CPU into the dtype asked for", () => {
  const [m, k, n] = [9, 40, 7];
  const a = f32(m * k, 1), b = f32(n * k, 2);
  const ta = tensor(a, [m, k]), tb = tensor(b, [n, k]);
  // dtypes: f64 never mixes with bf16; a bf16 result needs f32 or bf16 operands
  const t64 = tensor(Float64Array.from(a), [m, k], "f64");
  assert.throws(() => matmul(t64, tb, { transB: true, dtype: "bf16" }), /f64 and f32 .*into bf16/);
  const g = openBf16Gemm();
  if (typeof g === "string") {
    // no native bf16 here: a bf16 product says why it cannot run
    assert.throws(
      () => matmul(ta, tb, { transB: true, dtype: "bf16" }).dataSync(),
      new RegExp(`Cannot multiply bf16 tensors on the CPU: ${g}`),
    );
    return;
  }
  const want = mm(rnd(a), rnd(b), m, n, k, false, true);
  const hb = matmul(ta, tb, { transB: true, dtype: "bf16" });
  assert.equal(hb.dtype, "bf16");
  const bits = hb.dataSync() as Uint16Array;
  // rounded once from an f32 sum: the f64 sum's rounding but where the sum sits at a rounding
  // boundary, and never more than one bf16 step (2⁻⁸ relative) away
  let same = 0;
  bits.forEach((h, i) => {
    if (h === bf16Bits(want[i])) same++;
    assert.ok(Math.abs(bf16Value(h) - want[i]) <= 2 ** -8 * Math.abs(want[i]) + 1e-30);
  });
  assert.ok(same >= bits.length - 1, `${same} of ${bits.length} are the f64 sum's rounding`);
  // bf16 operands are used as they are: bf16 · f32 → f32 is the same product
  const back = matmul(hb, tensor(f32(5 * n, 3), [5, n]), { transB: true });
  assert.equal(back.dtype, "f32");
  const wantBack = mm(widen(hb), rnd(f32(5 * n, 3)), m, 5, n, false, true);
  assert.ok(relErr(back.dataSync(), wantBack) < 1e-6, `${relErr(back.dataSync(), wantBack)}`);
});

/** A small SwiGLU MLP's params and input: H 32, I 88, 2×20 tokens. */
function setup() {
  const [h, i, rows] = [32, 88, 40];
  const x = f32(rows * h, 10), wg = f32(i * h, 11, 0.2), wu = f32(i * h, 12, 0.2);
  const wd = f32(h * i, 13, 0.1), r = f32(rows * h, 14);
  return { h, i, rows, x, wg, wu, wd, r };
}

/** The MLP's output and the gradients of Σ y⊙r with respect to x and the three weights. */
function runMlp(s: ReturnType<typeof setup>) {
  const p: MlpParams = {
    gate_proj: { weight: tensor(s.wg, [s.i, s.h]) },
    up_proj: { weight: tensor(s.wu, [s.i, s.h]) },
    down_proj: { weight: tensor(s.wd, [s.h, s.i]) },
  };
  const x = tensor(s.x, [2, 20, s.h]), r = tensor(s.r, [2, 20, s.h]);
  const y = mlp(p, x).dataSync() as Float32Array;
  const loss = (x: Tensor, wg: Tensor, wu: Tensor, wd: Tensor) =>
    sum(
      mul(
        mlp({ gate_proj: { weight: wg }, up_proj: { weight: wu }, down_proj: { weight: wd } }, x),
        r,
      ),
    );
  const gs = grad(loss, { argnums: [0, 1, 2, 3] })(
    x,
    p.gate_proj.weight,
    p.up_proj.weight,
    p.down_proj.weight,
  ) as Tensor[];
  return { y, grads: gs.map((t) => t.dataSync() as Float32Array) };
}

/**
 * The bf16 MLP in f64 with the same roundings: operands to bf16, gate and up and SwiGLU stored
 * bf16, and their gradients (dA, dG, dU) stored bf16; everything else exact.
 */
function reference(s: ReturnType<typeof setup>) {
  const { h, i, rows } = s;
  const xb = rnd(s.x), wg = rnd(s.wg), wu = rnd(s.wu), wd = rnd(s.wd), rb = rnd(s.r);
  const g = rnd(mm(xb, wg, rows, i, h, false, true)), u = rnd(mm(xb, wu, rows, i, h, false, true));
  const a = rnd(g.map((v, j) => v * sig(v) * u[j]));
  const y = mm(a, wd, rows, h, i, false, true);
  const da = rnd(mm(rb, wd, rows, i, h));
  const dwd = mm(rb, a, h, i, rows, true);
  const dg = rnd(da.map((c, j) => {
    const sg = sig(g[j]);
    return c * u[j] * sg * (1 + g[j] * (1 - sg));
  }));
  const du = rnd(da.map((c, j) => c * g[j] * sig(g[j])));
  const dxg = mm(dg, wg, rows, h, i), dxu = mm(du, wu, rows, h, i);
  const dx = dxg.map((v, j) => v + dxu[j]);
  return { y, grads: [dx, mm(dg, xb, i, h, rows, true), mm(du, xb, i, h, rows, true), dwd] };
}

Deno.test("the MLP in the bfloat16 precision keeps gate, up and SwiGLU in bf16: forward and gradients against f64 with the same roundings", () => {
  const s = setup();
  const f32Run = runMlp(s);
  const why = setMatmulPrecision("bfloat16");
  let run: ReturnType<typeof runMlp>;
  try {
    assert.equal(activationDtype(tensor(s.x, [2, 20, s.h])), why === null ? "bf16" : "f32");
    // a decode step's rows (32 at most) keep f32: their products run on packed weights
    assert.equal(activationDtype(tensor(s.x.subarray(0, 32 * s.h), [32, 1, s.h])), "f32");
    run = runMlp(s);
  } finally {
    setMatmulPrecision("float32");
  }
  if (why !== null) {
    // no bf16 here: the MLP stays f32, bit for bit
    assert.deepEqual(run.y, f32Run.y);
    return;
  }
  const ref = reference(s);
  const names = ["y", "dx", "dWg", "dWu", "dWd"];
  const errs = [relErr(run.y, ref.y), ...run.grads.map((g, j) => relErr(g, ref.grads[j]))];
  const f32Errs = [relErr(f32Run.y, ref.y), ...f32Run.grads.map((g, j) => relErr(g, ref.grads[j]))];
  const report = names.map((n, j) =>
    `${n} ${errs[j].toExponential(1)} (f32 path ${f32Errs[j].toExponential(1)})`
  );
  console.log(report.join(", "));
  for (let j = 0; j < names.length; j++) {
    assert.ok(errs[j] < 1e-4, `${names[j]}: ${report[j]}`);
    // and the test can tell: the float32 MLP is far from this reference
    assert.ok(f32Errs[j] > 10 * errs[j], `${names[j]}: ${report[j]}`);
  }
});

Deno.test("the MLP keeps the f32 path in the float32 precision and on adapted Linears", () => {
  const s = setup();
  const x = tensor(s.x, [2, 20, s.h]);
  const w = (a: Float32Array, r: number, c: number) => tensor(a, [r, c]);
  const lora = {
    A: { weight: w(f32(4 * s.h, 20, 0.1), 4, s.h) },
    B: { weight: w(f32(s.i * 4, 21, 0.1), s.i, 4) },
  };
  const p: MlpParams = {
    gate_proj: { weight: w(s.wg, s.i, s.h), lora },
    up_proj: { weight: w(s.wu, s.i, s.h) },
    down_proj: { weight: w(s.wd, s.h, s.i) },
  };
  const composed = () =>
    linear(p.down_proj, swiglu(linear(p.gate_proj, x), linear(p.up_proj, x))).dataSync();
  assert.deepEqual(mlp(p, x).dataSync(), composed());
  setMatmulPrecision("bfloat16");
  try {
    // with an adapter the hidden activations stay f32 even in the bfloat16 precision
    assert.deepEqual(mlp(p, x).dataSync(), composed());
  } finally {
    setMatmulPrecision("float32");
  }
});

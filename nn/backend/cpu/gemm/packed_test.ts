// Packed f32 products (x·Wᵀ with 2–32 rows on a oneDNN-reordered copy of W): the f64 reference
// within the f32 dot-product bound, the same path for the same shape whatever ran before, and no
// stale copy after W changes (in place by an op, through a recycled array, or written directly).
import assert from "node:assert/strict";
import { cpuHasBf16, DT_F32, MAX_PRIMS, openDnnl, toBf16 } from "./bf16.ts";
import { matmulPrecision, setMatmulPrecision } from "../gemm_adapter.ts";
import {
  forgetPacked,
  hasPackedCopy,
  PACKED_MAX_ROWS,
  packedProduct,
  setPackedProducts,
} from "./packed.ts";
import { tensor } from "../../../creation.ts";
import { matmul } from "../../../ops/matmul.ts";
import { adamwUpdate } from "../../../ops/adamw.ts";
import { key, normalArray } from "../../../random.ts";

const dnnl = openDnnl();
const have = typeof dnnl !== "string" && dnnl.native;
/** CI installs oneDNN (libdnnl2): there a missing library fails instead of skipping. */
const require = Deno.env.get("MINIMIND_REQUIRE_BLAS") === "1";

function packedTest(name: string, fn: () => void | Promise<void>): void {
  Deno.test({
    name: `packed products: ${name}${have || require ? "" : " (skipped: no oneDNN 2.x here)"}`,
    ignore: !have && !require,
    fn() {
      assert.ok(have, `MINIMIND_REQUIRE_BLAS=1 but no oneDNN 2.x: ${dnnl}`);
      return fn();
    },
  });
}

/** The CPU storage's own array (dataSync copies). */
const arrayOf = (t: { storage: unknown }) => (t.storage as { data: Float32Array }).data;

const randn = (seed: number, n: number) => Float32Array.from(normalArray(key(seed), n));

/** Asserts c ≈ a·wᵀ within 2·(k+2)·2⁻²⁴·Σ|a·w| per element (any order, FMA or not). */
function assertProduct(
  a: ArrayLike<number>,
  w: ArrayLike<number>,
  c: ArrayLike<number>,
  m: number,
  n: number,
) {
  const k = a.length / m;
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0, abs = 0;
      for (let p = 0; p < k; p++) {
        s += a[i * k + p] * w[j * k + p];
        abs += Math.abs(a[i * k + p] * w[j * k + p]);
      }
      const err = Math.abs(c[i * n + j] - s), tol = 2 * (k + 2) * 2 ** -24 * abs;
      assert.ok(err <= tol, `C[${i},${j}] = ${c[i * n + j]}, want ${s} (m=${m} n=${n} k=${k})`);
    }
  }
}

packedTest("match the f64 product at 2–32 rows, packed once and reused", () => {
  for (const [n, k] of [[7, 13], [200, 300], [1408, 64]]) {
    const w = randn(n + k, n * k);
    for (const m of [2, 5, 8, PACKED_MAX_ROWS]) {
      for (const round of [0, 1]) {
        const a = randn(100 * m + round, m * k), c = new Float32Array(m * n).fill(NaN);
        assert.ok(packedProduct(a, w, c, m, n, k), `m=${m} n=${n} k=${k} round ${round}`);
        assertProduct(a, w, c, m, n);
      }
    }
  }
});

packedTest("one row, more than 32 rows, or turned off: not taken (sgemm / sgemv instead)", () => {
  const [n, k] = [16, 8];
  const w = randn(1, n * k);
  for (const m of [1, PACKED_MAX_ROWS + 1]) {
    assert.equal(packedProduct(randn(2, m * k), w, new Float32Array(m * n), m, n, k), false);
  }
  setPackedProducts(false);
  try {
    assert.equal(packedProduct(randn(2, 4 * k), w, new Float32Array(4 * n), 4, n, k), false);
  } finally {
    setPackedProducts(true);
  }
});

packedTest("a weight changed since it was packed is packed again", () => {
  const [m, n, k] = [4, 33, 70];
  const w = randn(3, n * k), a = randn(4, m * k), c = new Float32Array(m * n);
  assert.ok(packedProduct(a, w, c, m, n, k));
  // written directly (every value: the sample sees it)
  for (let i = 0; i < w.length; i++) w[i] = -2 * w[i] + 0.25;
  assert.ok(packedProduct(a, w, c, m, n, k));
  assertProduct(a, w, c, m, n);
  // written in a way the sample cannot see, then forgotten as the CPU backend does
  w[1] += 1;
  forgetPacked(w);
  assert.ok(packedProduct(a, w, c, m, n, k));
  assertProduct(a, w, c, m, n);
});

packedTest("the matmul op: AdamW in place on W drops its packed copy", () => {
  const [m, n, k] = [8, 48, 32];
  const w = tensor(randn(5, n * k), [n, k]);
  const x = tensor(randn(6, m * k), [m, k]);
  const y0 = matmul(x, w, { transB: true }).dataSync(); // packs W
  assertProduct(x.dataSync(), w.dataSync(), y0, m, n);
  assert.ok(hasPackedCopy(arrayOf(w)), "packed on the first product");
  const g = tensor(randn(7, n * k), [n, k]);
  const zeros = () => tensor(new Float32Array(n * k), [n, k]);
  const before = (w.dataSync() as Float32Array).slice();
  const hyper = { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, step: 1 };
  const [w2] = adamwUpdate(w, g, zeros(), zeros(), { ...hyper, inPlace: true });
  const after = w2.dataSync() as Float32Array;
  assert.equal(arrayOf(w2), arrayOf(w), "written in place");
  assert.notDeepEqual(after, before, "AdamW changed W");
  assert.ok(!hasPackedCopy(arrayOf(w2)), "the in-place write dropped the copy");
  const y1 = matmul(x, w2, { transB: true }).dataSync();
  assertProduct(x.dataSync() as Float32Array, after, y1, m, n);
});

packedTest("the matmul op gives the unpacked product's values within f32 rounding", () => {
  const [m, n, k] = [6, 640, 96];
  const w = tensor(randn(8, n * k), [n, k]), x = tensor(randn(9, m * k), [m, k]);
  const packed = matmul(x, w, { transB: true }).dataSync();
  setPackedProducts(false);
  let plain: Float32Array;
  try {
    plain = matmul(x, w, { transB: true }).dataSync() as Float32Array;
  } finally {
    setPackedProducts(true);
  }
  assertProduct(x.dataSync() as Float32Array, w.dataSync() as Float32Array, packed, m, n);
  assertProduct(x.dataSync() as Float32Array, w.dataSync() as Float32Array, plain, m, n);
});

packedTest("MINIMIND_GEMM=js or wasm keeps every product on the forced path", async () => {
  const code = `
    import { tensor } from ${JSON.stringify(import.meta.resolve("../../../creation.ts"))};
    import { matmul } from ${JSON.stringify(import.meta.resolve("../../../ops/matmul.ts"))};
    import { hasPackedCopy } from ${JSON.stringify(import.meta.resolve("./packed.ts"))};
    const w = tensor(new Float32Array(64 * 32).fill(0.5), [64, 32]);
    const x = tensor(new Float32Array(8 * 32).fill(1), [8, 32]);
    const y = matmul(x, w, { transB: true }).dataSync();
    console.log(JSON.stringify({ packed: hasPackedCopy(w.storage.data), y0: y[0] }));`;
  for (const [kind, packed] of [["js", false], ["wasm", false], ["blas", true]] as const) {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["eval", code],
      env: { MINIMIND_GEMM: kind },
    }).output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    const r = JSON.parse(new TextDecoder().decode(out.stdout));
    assert.deepEqual(r, { packed, y0: 16 }, `MINIMIND_GEMM=${kind}`);
  }
});

packedTest(
  "oneDNN's primitive cache keeps the primitives in use and evicts the least recent",
  () => {
    const d = openDnnl();
    if (typeof d === "string") throw new Error(d);
    // f32 copies of n values: a cheap primitive per length
    const make = (n: number) =>
      d.reorder(`cache test ${n}`, () => [d.md([n], [1], DT_F32), d.md([n], [1], DT_F32)]);
    const used = make(1), first = make(2);
    for (let n = 3; n < 3 + MAX_PRIMS; n++) {
      make(n); // one-off shapes, as a decode step's attention at each key length
      assert.equal(make(1), used, `the primitive in use survives ${n - 2} others`);
    }
    assert.notEqual(make(2), first, "the least recently used was evicted and made again");
  },
);

/** f32 values rounded to bf16 and back (as the bf16 products read them). */
function roundedBf16(x: Float32Array): Float32Array {
  const h = new Uint16Array(x.length);
  toBf16(x, 0, x.length, h);
  return new Float32Array(Uint32Array.from(h, (v) => v << 16).buffer);
}

packedTest(
  "bf16: the product of the rounded operands at 1–32 rows, f32 and bf16 copies kept apart",
  () => {
    if (!cpuHasBf16()) {
      // without native bf16 the precision stays float32, so the matmul op never asks for these
      assert.notEqual(setMatmulPrecision("bfloat16"), null);
      assert.equal(matmulPrecision(), "float32");
      return;
    }
    for (const [n, k] of [[7, 13], [200, 300], [1408, 64]]) {
      const w = randn(n + k + 1, n * k), wr = roundedBf16(w);
      for (const m of [1, 2, 8, PACKED_MAX_ROWS]) {
        const a = randn(200 * m, m * k), c = new Float32Array(m * n).fill(NaN);
        assert.ok(packedProduct(a, w, c, m, n, k, true), `bf16 m=${m} n=${n} k=${k}`);
        // exact products of bf16 values, summed in f32: the f32 bound on the rounded operands
        assertProduct(roundedBf16(a), wr, c, m, n);
        // the f32 product of the same weight repacks it, and its own bound holds again
        if (m > 1) {
          const c32 = new Float32Array(m * n);
          assert.ok(packedProduct(a, w, c32, m, n, k));
          assertProduct(a, w, c32, m, n);
        }
      }
    }
  },
);

packedTest("bf16 precision: the matmul op's x·Wᵀ of 1–32 rows takes the bf16 copy", () => {
  if (!cpuHasBf16()) return; // covered by the test above: the precision stays float32
  const [n, k] = [96, 80];
  const w = tensor(randn(11, n * k), [n, k]);
  assert.equal(setMatmulPrecision("bfloat16"), null);
  try {
    for (const m of [1, 4, PACKED_MAX_ROWS]) {
      const x = tensor(randn(12 + m, m * k), [m, k]);
      const y = matmul(x, w, { transB: true }).dataSync();
      const direct = new Float32Array(m * n);
      assert.ok(packedProduct(x.dataSync() as Float32Array, arrayOf(w), direct, m, n, k, true));
      assert.deepEqual(y, direct, `m=${m}: the op's product is the packed bf16 one`);
    }
  } finally {
    setMatmulPrecision("float32");
  }
  // back in float32: one row is sgemv again, on the weight's exact values
  const x = tensor(randn(40, k), [1, k]);
  assertProduct(x.dataSync(), w.dataSync(), matmul(x, w, { transB: true }).dataSync(), 1, n);
});

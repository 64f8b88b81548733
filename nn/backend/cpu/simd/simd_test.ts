// The wasm SIMD kernels against the TypeScript loops they replace (and against f64 where the loops
// are exact), on awkward sizes: lengths that are not multiples of 4, rows of length 1, chunk
// boundaries, rows that are all -Infinity, huge/small values, NaN and ±Infinity. Every comparison
// runs on one thread, then again with a worker thread sharing the calls.
//
// Tolerances, with u = 2⁻²⁴ (half an f32 ulp at 1):
// - exp: ≤ 2 ulp of the true value (f64 Math.exp) over every f32 input class; the kernel measures
//   ≤ 1 ulp. Results in the denormal range: ≤ 1 unit of 2⁻¹⁴⁹.
// - kernels that exponentiate a difference (x − m, x − lse): the f32 subtraction is exact only up
//   to |x − m|·u relative, so the bound is (k + |arg|)·2u relative, k counting the other roundings.
// - sigmoid/SiLU/SwiGLU: a few roundings after exp: ≤ 8u relative (12u for SwiGLU's dg, a product
//   of five rounded factors); where
//   1 + g·(1 − σ(g)) cancels, the bound is on that factor's absolute error; where σ is denormal
//   (g < −87), it is only good to ±2⁻¹⁴⁹ (the f32 grid there), times the other factors.
// - attention: a composite of gemms and the softmax, so the criterion is relative to the loop it
//   replaces: |simd − f64| ≤ 2·|loop − f64| + 64u·scale, elementwise, scale = max|f64| of the output.

import { allocArray, type DType, dtypeOfArray, type TypedArray } from "../../../dtype.ts";
import type { KernelOp } from "../../../op.ts";
import type { AttnShape } from "../../../ops/attention/wgsl.ts";
import { crossEntropyBackwardOp, crossEntropyOp } from "../../../ops/cross_entropy.ts";
import { logSoftmaxOp, logsumexpOp, softmaxOp } from "../../../ops/softmax.ts";
import { swigluBackwardOp, swigluOp } from "../../../ops/swiglu.ts";
import { UNARY_OPS } from "../../../ops/unary.ts";
import { attentionBackwardOp, attentionOp } from "../../../ops/attention.ts";
import { adamwOp } from "../../../ops/adamw.ts";
import { rmsNormBackwardOp, rmsNormOp } from "../../../ops/rms_norm.ts";
import { ropeOp } from "../../../ops/rope.ts";
import { initSimd, setSimdEnabled, simd } from "./mod.ts";
import { toBf16 } from "../gemm/bf16.ts";
import { setKernelThreadsEnabled } from "../threads/mod.ts";

const U = 2 ** -24;
/** The smallest f32 denormal. */
const DENORM = 2 ** -149;

function assert(cond: unknown, msg: string): asserts cond {
  if (!cond) throw new Error(msg);
}

/** Deterministic values in [-1, 1) (xorshift), so failures reproduce. */
function rand(len: number, seed: number, scale = 1): Float64Array {
  const out = new Float64Array(len);
  let s = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < len; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = (((s >>> 0) / 2 ** 32) * 2 - 1) * scale;
  }
  return out;
}

function f32(a: ArrayLike<number>): Float32Array {
  return Float32Array.from(a);
}

/** Runs an op's CPU kernel on raw arrays; `shapes` are the input shapes, outputs come from infer. */
function runCpu<P>(
  op: KernelOp<P>,
  ins: TypedArray[],
  shapes: number[][],
  params: P,
  dtypes?: DType[],
): TypedArray[] {
  const inputs = ins.map((a, i) => ({
    shape: shapes[i],
    dtype: dtypes?.[i] ?? dtypeOfArray(a),
  }));
  const outputs = op.infer(inputs, params);
  const outs = outputs.map((m) => allocArray(m.dtype, m.shape.reduce((x, y) => x * y, 1)));
  op.cpu(ins, outs, { inputs, outputs, params });
  return outs;
}

/** Runs `f` with the SIMD kernels on and then off; returns both results. */
function both<T>(f: () => T): { simd: T; loop: T } {
  setSimdEnabled(true);
  assert(simd() !== null, "the SIMD kernels do not load here");
  const a = f();
  setSimdEnabled(false);
  try {
    return { simd: a, loop: f() };
  } finally {
    setSimdEnabled(true);
  }
}

/** Same bits, or both NaN. */
function same(a: number, b: number): boolean {
  return a === b || (a !== a && b !== b);
}

/** Largest |got − want| / tolerance seen per check (printed: how much margin the bounds leave). */
let margin = 0;

/** Checks |got − want| ≤ tol(i) elementwise (special values must match exactly). */
function close(
  label: string,
  got: ArrayLike<number>,
  want: ArrayLike<number>,
  tol: (i: number) => number,
): void {
  assert(got.length === want.length, `${label}: length ${got.length} vs ${want.length}`);
  for (let i = 0; i < got.length; i++) {
    const g = got[i], w = want[i];
    if (!Number.isFinite(w) || !Number.isFinite(g)) {
      assert(same(g, w), `${label}[${i}]: ${g}, want ${w}`);
      continue;
    }
    const t = tol(i);
    if (t > 0 && t < Infinity) margin = Math.max(margin, Math.abs(g - w) / t);
    assert(
      Math.abs(g - w) <= t,
      `${label}[${i}]: ${g}, want ${w} (|diff| ${Math.abs(g - w)} > ${t})`,
    );
  }
}

/** f32 ulp at |x| (2⁻¹⁴⁹ in the denormal range). */
function ulp(x: number): number {
  const a = Math.abs(x);
  if (a < 2 ** -126) return DENORM;
  return 2 ** (Math.floor(Math.log2(a)) - 23);
}

/** Values that stress the kernels: specials, edges of exp, denormals, zeros. */
const SPECIAL = [
  NaN,
  Infinity,
  -Infinity,
  0,
  -0,
  1e-45,
  -1e-45,
  1e-38,
  88.72283,
  88.7228394,
  88.8,
  89,
  1e30,
  -87.33,
  -103.97,
  -103.98,
  -104,
  -1e30,
  -0.34657359,
  0.34657359,
  1,
  -1,
];

// ---- exp ----------------------------------------------------------------------------------

function checkExp(): void {
  // every 1021st f32 bit pattern in [0, 88.8] and [-104, -0], plus the specials
  const bits: number[] = [];
  for (let b = 0; b <= 0x42b1999a; b += 1021) bits.push(b);
  for (let b = 0x80000000; b <= 0xc2d00000; b += 1021) bits.push(b);
  const xs = new Float32Array(new Uint32Array(bits).buffer);
  const all = f32([...xs, ...SPECIAL]);
  setSimdEnabled(true);
  const y = new Float32Array(all.length);
  UNARY_OPS.exp.cpu([all], [y], { inputs: [], outputs: [], params: {} });
  let worst = 0;
  for (let i = 0; i < all.length; i++) {
    const e = Math.exp(all[i]);
    const ef = Math.fround(e);
    if (!Number.isFinite(ef) || ef === 0 || e !== e) {
      // overflow, underflow to 0, NaN: exactly what rounding Math.exp gives
      assert(
        same(y[i], ef) || (ef === 0 && y[i] <= DENORM),
        `exp(${all[i]}) = ${y[i]}, want ${ef}`,
      );
      continue;
    }
    const err = Math.abs(y[i] - e) / ulp(e);
    worst = Math.max(worst, err);
    assert(err <= 2, `exp(${all[i]}) = ${y[i]}, want ${e}: ${err.toFixed(2)} ulp`);
  }
  assert(worst > 0.3, `suspiciously exact exp (${worst} ulp): is the kernel running?`);
  margin = worst / 2;
}

// ---- sigmoid / silu / silu_grad ------------------------------------------------------------

function sigmoid64(x: number): number {
  return x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x));
}

function checkUnaryRows(): void {
  const xs = f32([...SPECIAL, ...rand(1003, 7, 12), ...rand(97, 8, 100)]);
  for (const name of ["sigmoid", "silu", "silu_grad"]) {
    const r = both(() => {
      const y = new Float32Array(xs.length);
      UNARY_OPS[name].cpu([xs], [y], { inputs: [], outputs: [], params: {} });
      return y;
    });
    close(`${name} simd vs loop`, r.simd, r.loop, (i) => {
      const x = xs[i], s = sigmoid64(x);
      // silu'(x) = s·(1 + x·(1 − s)): the sum may cancel, so bound it term by term
      const mag = name === "silu_grad" ? s * (1 + Math.abs(x * (1 - s))) : Math.abs(r.loop[i]);
      // σ is an f32 value: in the denormal range it is only good to ±2⁻¹⁴⁹, times x for SiLU
      return 8 * U * mag + DENORM * (2 + Math.abs(x));
    });
  }
}

// ---- swiglu --------------------------------------------------------------------------------

const LENGTHS = [0, 1, 2, 3, 4, 5, 7, 8, 9, 31, 33, 1000, 131077, 300001];

function checkSwiglu(): void {
  for (const n of LENGTHS) {
    const g = f32(rand(n, n + 1, 10)), u = f32(rand(n, n + 2, 3)), ct = f32(rand(n, n + 3, 2));
    SPECIAL.forEach((v, i) => {
      if (i < n) g[(i * 7919) % n] = v;
    });
    // σ(g) in f32 is only good to ±2⁻¹⁴⁹ in the denormal range: that times the other factors
    const fwd = both(() => runCpu(swigluOp, [g, u], [[n], [n]], {})[0]);
    close(`swiglu n=${n}`, fwd.simd, fwd.loop, (i) => {
      return 8 * U * Math.abs(fwd.loop[i]) + DENORM * (2 + Math.abs(g[i] * u[i]));
    });
    const bwd = both(() => runCpu(swigluBackwardOp, [ct, g, u], [[n], [n], [n]], {}));
    close(`swiglu du n=${n}`, bwd.simd[1], bwd.loop[1], (i) => {
      return 8 * U * Math.abs(bwd.loop[1][i]) + DENORM * (2 + Math.abs(ct[i] * g[i]));
    });
    close(`swiglu dg n=${n}`, bwd.simd[0], bwd.loop[0], (i) => {
      const s = sigmoid64(g[i]), cu = Math.abs(ct[i] * u[i]);
      return 12 * U * cu * s * (1 + Math.abs(g[i] * (1 - s))) +
        DENORM * (2 + cu * (1 + Math.abs(g[i])));
    });
  }
}

// ---- bf16 storage -------------------------------------------------------------------------

/** f32 values with the bit patterns rounding must get right, then random ones. */
function bf16Cases(n: number, seed: number): Float32Array {
  const bits = new Uint32Array([
    0x3f808000, // 1 + 2⁻⁸: a tie, to even (down)
    0x3f818000, // 1 + 3·2⁻⁸: a tie, to even (up)
    0x3f808001, // just past the tie: up
    0x7f7fffff, // FLT_MAX: rounds to +Infinity
    0x7f800000, // +Infinity
    0xff800000, // -Infinity
    0x7fc00000, // quiet NaN
    0x7f800001, // signalling NaN: must stay NaN, not become Infinity
    0xffffffff, // NaN with the sign and every payload bit
    0x00000001, // the smallest subnormal: kept, rounds to 0
    0x00018000, // a subnormal tie
    0x80000000, // -0
  ]);
  const x = new Float32Array(n);
  const u = new Uint32Array(x.buffer);
  const r = rand(n, seed, 100);
  for (let i = 0; i < n; i++) u[i] = i < bits.length ? bits[i] : 0;
  for (let i = bits.length; i < n; i++) x[i] = r[i];
  return x;
}

/** bf16 bits of f32 values by the TypeScript reference (`toBf16`). */
function bf16Of(x: Float32Array): Uint16Array {
  const h = new Uint16Array(x.length);
  toBf16(x, 0, x.length, h);
  return h;
}

/** bf16 bits widened to f32 (exact). */
function widen(h: Uint16Array): Float32Array {
  return new Float32Array(Uint32Array.from(h, (v) => v << 16).buffer);
}

function checkBf16Copies(): void {
  const s = simd();
  assert(s !== null, "the SIMD kernels do not load here");
  for (const n of [...LENGTHS.slice(0, 12), 4099]) {
    const x = bf16Cases(n, n + 11), want = bf16Of(x);
    s.reset();
    const at = s.alloc(n * 4), stage = s.alloc(n * 2);
    s.copyIn(x, 0, n, at, stage); // f32 in: as it is
    const got = new Uint16Array(n);
    s.copyOut(at, n, got, 0, stage); // rounded out
    for (let i = 0; i < n; i++) {
      assert(got[i] === want[i], `f32_to_bf16 n=${n} [${i}]: ${got[i]}, want ${want[i]}`);
    }
    // and back: bf16 in is widened exactly, bf16 out of a bf16 value is the same bits
    const wide = new Float32Array(n);
    s.copyIn(got, 0, n, at, stage);
    s.copyOut(at, n, wide, 0, stage);
    const w = widen(want);
    for (let i = 0; i < n; i++) {
      assert(same(wide[i], w[i]), `bf16_to_f32 n=${n} [${i}]: ${wide[i]}, want ${w[i]}`);
    }
    const again = new Uint16Array(n);
    s.copyOut(at, n, again, 0, stage);
    assert(again.every((v, i) => v === got[i]), `n=${n}: widening then rounding changed bits`);
  }
}

/** swiglu in bf16 is the f32 kernel on the widened values, each result rounded once. */
function checkSwigluBf16(): void {
  for (const n of LENGTHS) {
    const [g, u, ct] = [
      bf16Of(f32(rand(n, n + 4, 10))),
      bf16Of(f32(rand(n, n + 5, 3))),
      bf16Of(
        f32(rand(n, n + 6, 2)),
      ),
    ];
    const shapes = [[n], [n], [n]];
    const fwd = both(() => runCpu(swigluOp, [g, u], shapes, {})[0] as Uint16Array);
    const ref = runCpu(swigluOp, [widen(g), widen(u)], shapes, {})[0] as Float32Array;
    const wantY = bf16Of(ref);
    assert(fwd.simd.every((v, i) => v === wantY[i]), `swiglu bf16 n=${n}: not f32 rounded`);
    const bwd = both(() => runCpu(swigluBackwardOp, [ct, g, u], shapes, {}) as Uint16Array[]);
    const refB = runCpu(swigluBackwardOp, [widen(ct), widen(g), widen(u)], shapes, {});
    for (const o of [0, 1]) {
      const want = bf16Of(refB[o] as Float32Array);
      assert(bwd.simd[o].every((v, i) => v === want[i]), `swiglu_backward bf16 n=${n} out ${o}`);
    }
    // the loops (no SIMD) compute in f64 and round once: within one bf16 step (2⁻⁷ relative)
    for (
      const [label, a, b] of [["y", fwd.simd, fwd.loop], ["dg", bwd.simd[0], bwd.loop[0]], [
        "du",
        bwd.simd[1],
        bwd.loop[1],
      ]] as const
    ) {
      const [wa, wb] = [widen(a), widen(b)];
      close(`swiglu bf16 ${label} n=${n}`, wa, wb, (i) => 2 ** -7 * Math.abs(wb[i]) + DENORM);
    }
  }
}

// ---- cross-entropy -------------------------------------------------------------------------

const CE_SHAPES: [number, number][] = [[1, 1], [1, 3], [3, 5], [7, 17], [4, 4], [2, 6400], [
  41,
  3277,
]];

function checkCrossEntropy(): void {
  for (const [n, v] of CE_SHAPES) {
    const l = f32(rand(n * v, n * 31 + v, 8));
    if (v > 2) {
      l[0] = -Infinity; // a hidden class in row 0
      l[v + 1] = 60; // a dominant one in row 1
    }
    if (n > 2) { for (let j = 0; j < v; j++) l[2 * v + j] = 1e-30 * j; // a near-constant row
     }
    const t = Int32Array.from({ length: n }, (_, r) => (r * 7 + 3) % v);
    if (n > 3) t[3] = -100; // ignored
    const shapes = [[n, v], [n]];
    const fwd = both(() => runCpu(crossEntropyOp, [l, t], shapes, { ignoreIndex: -100 }));
    // lse = m + log Σ exp(l − m): the sum's terms are off by ≤ (2 + |l − m|)·2u relative
    const spread = (r: number) => {
      let m = -Infinity, lo = Infinity;
      for (let j = 0; j < v; j++) {
        m = Math.max(m, l[r * v + j]);
        if (Number.isFinite(l[r * v + j])) lo = Math.min(lo, l[r * v + j]);
      }
      return m - lo;
    };
    const tolZ = (r: number, z: number) => (4 + 2 * spread(r)) * 2 * U + ulp(z);
    close(`ce lse ${n}x${v}`, fwd.simd[1], fwd.loop[1], (r) => tolZ(r, fwd.loop[1][r]));
    close(
      `ce loss ${n}x${v}`,
      fwd.simd[0],
      fwd.loop[0],
      (r) => tolZ(r, fwd.loop[1][r]) + ulp(fwd.loop[0][r]),
    );
    const lse = fwd.loop[1] as Float32Array, ct = f32(rand(n, v, 1));
    const bwd = both(() =>
      runCpu(crossEntropyBackwardOp, [l, t, lse, ct], [[n, v], [n], [n], [n]], {
        ignoreIndex: -100,
      })[0]
    );
    close(`ce dlogits ${n}x${v}`, bwd.simd, bwd.loop, (i) => {
      const r = Math.floor(i / v), arg = Math.abs(l[i] - lse[r]);
      // exp((l − hi) − lo)·g, then − g at the target
      return (4 + (Number.isFinite(arg) ? arg : 0)) * 2 * U * Math.abs(bwd.loop[i]) +
        2 * U * Math.abs(ct[r]) + DENORM;
    });
  }
}

// ---- softmax, log_softmax, logsumexp --------------------------------------------------------

function checkSoftmax(): void {
  const shapes = [[1, 1], [5, 1], [3, 2], [4, 3], [2, 5], [6, 7], [3, 64], [2, 3, 33], [37, 3511]];
  for (const shape of shapes) {
    const n = shape[shape.length - 1], size = shape.reduce((a, b) => a * b, 1), rows = size / n;
    const x = f32(rand(size, size + n, 9));
    if (rows > 1) x.fill(-Infinity, n, 2 * n); // row 1: all -Infinity → NaN softmax, -Inf lse
    if (rows > 2) x[2 * n] = NaN; // row 2: NaN
    if (rows > 3 && n > 1) x[3 * n + 1] = -Infinity; // row 3: one hidden entry
    if (rows > 4) x[4 * n] = 1e30; // row 4: one huge entry
    const label = `[${shape}]`;
    const spread = (r: number) => {
      let m = -Infinity, lo = Infinity;
      for (let j = 0; j < n; j++) {
        const v = x[r * n + j];
        if (v > m) m = v;
        if (Number.isFinite(v)) lo = Math.min(lo, v);
      }
      return Number.isFinite(m - lo) ? m - lo : 0;
    };
    const sm = both(() => runCpu(softmaxOp, [x], [shape], {})[0]);
    close(`softmax ${label}`, sm.simd, sm.loop, (i) => {
      const r = Math.floor(i / n);
      return (6 + 4 * spread(r)) * 2 * U * Math.abs(sm.loop[i]) + DENORM;
    });
    const ls = both(() => runCpu(logSoftmaxOp, [x], [shape], {})[0]);
    close(`log_softmax ${label}`, ls.simd, ls.loop, (i) => {
      const r = Math.floor(i / n);
      return (4 + 2 * spread(r)) * 2 * U + ulp(ls.loop[i]);
    });
    const lz = both(() => runCpu(logsumexpOp, [x], [shape], {})[0]);
    close(
      `logsumexp ${label}`,
      lz.simd,
      lz.loop,
      (r) => (4 + 2 * spread(r)) * 2 * U + ulp(lz.loop[r]),
    );
    for (let j = 0; j < n && rows > 1; j++) {
      assert(Number.isNaN(sm.simd[n + j]), `softmax of a -Infinity row must be NaN (${label})`);
    }
  }
}

// ---- attention -----------------------------------------------------------------------------

interface AttnCase extends AttnShape {
  label: string;
  causal: boolean;
  mask?: number[];
}

const ATTN: AttnCase[] = [
  { label: "odd sizes", b: 2, t: 5, s: 5, nh: 4, nkv: 2, hd: 3, causal: true },
  { label: "one token", b: 1, t: 1, s: 1, nh: 2, nkv: 1, hd: 4, causal: true },
  { label: "with cache", b: 1, t: 3, s: 9, nh: 2, nkv: 1, hd: 5, causal: true },
  { label: "more queries than keys", b: 1, t: 6, s: 3, nh: 2, nkv: 2, hd: 4, causal: true },
  { label: "non-causal", b: 2, t: 7, s: 6, nh: 3, nkv: 1, hd: 2, causal: false },
  {
    label: "key mask, batch 1 fully masked",
    b: 2,
    t: 6,
    s: 6,
    nh: 2,
    nkv: 1,
    hd: 4,
    causal: true,
    mask: [1, 0, 1, 1, 0, 1, 0, 0, 0, 0, 0, 0],
  },
  { label: "training shape", b: 2, t: 67, s: 67, nh: 4, nkv: 2, hd: 16, causal: true },
];

function checkAttention(): void {
  for (const c of ATTN) {
    const { b, t, s, nh, nkv, hd } = c;
    const seed = b * 1000 + t * 10 + s;
    const q64 = rand(b * t * nh * hd, seed, 2), k64 = rand(b * s * nkv * hd, seed + 1, 2);
    const v64 = rand(b * s * nkv * hd, seed + 2, 1), do64 = rand(b * t * nh * hd, seed + 3, 1);
    const shapes = [[b, t, nh, hd], [b, s, nkv, hd], [b, s, nkv, hd]];
    const params = { causal: c.causal, scale: 1 / Math.sqrt(hd) };
    const run = (cast: (a: ArrayLike<number>) => TypedArray) => {
      const ins = [cast(q64), cast(k64), cast(v64)];
      const sh = [...shapes];
      if (c.mask) {
        ins.push(cast(c.mask));
        sh.push([b, s]);
      }
      const [o, lse] = runCpu(attentionOp, ins, sh, params);
      const bins = [ins[0], ins[1], ins[2], o, lse, cast(do64), ...(c.mask ? [ins[3]] : [])];
      const bsh = [shapes[0], shapes[1], shapes[2], shapes[0], [b, nh, t], shapes[0]];
      if (c.mask) bsh.push([b, s]);
      return [o, lse, ...runCpu(attentionBackwardOp, bins, bsh, params)];
    };
    const ref = run((a) => Float64Array.from(a));
    const r = both(() => run(f32));
    ["out", "lse", "dq", "dk", "dv"].forEach((name, i) => {
      const w = ref[i];
      let scale = 0;
      for (const x of w) if (Number.isFinite(x)) scale = Math.max(scale, Math.abs(x));
      close(`attention ${c.label} ${name}`, r.simd[i], w, (j) => {
        return 2 * Math.abs(r.loop[i][j] - w[j]) + 64 * U * scale;
      });
      close(`attention ${c.label} ${name} (loop)`, r.loop[i], w, () => Infinity); // same specials
    });
    if (c.mask) {
      // batch 1 sees no key: lse is -Infinity and the output 0, as the loop gives
      for (let h = 0; h < nh; h++) {
        for (let ti = 0; ti < t; ti++) {
          assert(r.simd[1][(nh + h) * t + ti] === -Infinity, "fully masked row: lse -Infinity");
        }
      }
      for (let j = t * nh * hd; j < 2 * t * nh * hd; j++) {
        assert(r.simd[0][j] === 0, "fully masked row: output 0");
      }
    }
  }
}

// ---- RMSNorm -------------------------------------------------------------------------------

/**
 * RMSNorm forward and backward: the SIMD kernels do the loops' f64 arithmetic, except that each
 * row's sum runs in four lanes, so results may differ in the last bit: y and rstd within 2u, dx
 * within 4u of the terms it subtracts, dw (the same f64 partials) within 4u of Σ|ct·x·rstd|.
 * Widths that are not multiples of 4 run the scalar tail; 16387 rows cross pieces and rounds.
 */
function checkRmsNorm(): void {
  for (
    const [rows, h] of [[1, 1], [5, 3], [3, 4], [7, 7], [300, 64], [40, 96], [9, 130], [16387, 6]]
  ) {
    const x = f32(rand(rows * h, 51 + h, 3)), w = f32(rand(h, 53 + h, 2));
    const ct = f32(rand(rows * h, 57 + h));
    const fwd = both(() => runCpu(rmsNormOp, [x, w], [[rows, h], [h]], { eps: 1e-6 }));
    close(
      `rms_norm y ${rows}×${h}`,
      fwd.simd[0],
      fwd.loop[0],
      (i) => 2 * U * Math.abs(fwd.loop[0][i]),
    );
    close(`rms_norm rstd ${rows}×${h}`, fwd.simd[1], fwd.loop[1], (i) => 2 * U * fwd.loop[1][i]);
    const rstd = fwd.loop[1];
    const bwd = both(() =>
      runCpu(rmsNormBackwardOp, [ct, x, w, rstd], [[rows, h], [rows, h], [h], [rows]], {})
    );
    close(`rms_norm dx ${rows}×${h}`, bwd.simd[0], bwd.loop[0], (i) => {
      const r = Math.floor(i / h), j = i % h;
      let dot = 0;
      for (let q = 0; q < h; q++) dot += Math.abs(w[q] * ct[r * h + q] * x[r * h + q]);
      const c = rstd[r] ** 3 * dot / h;
      return 4 * U * (Math.abs(rstd[r] * w[j] * ct[i]) + Math.abs(x[i]) * c);
    });
    close(`rms_norm dw ${rows}×${h}`, bwd.simd[1], bwd.loop[1], (j) => {
      let s = 0;
      for (let r = 0; r < rows; r++) s += Math.abs(ct[r * h + j] * x[r * h + j] * rstd[r]);
      return 4 * U * s;
    });
  }
}

// ---- RoPE ----------------------------------------------------------------------------------

/** RoPE: the SIMD kernel does the loop's f64 arithmetic, so the bits are the same. */
function checkRope(): void {
  for (
    const [b, t, nh, hd] of [[1, 1, 1, 2], [2, 3, 3, 6], [1, 5, 2, 8], [2, 9, 4, 64], [
      1,
      300,
      3,
      96,
    ]]
  ) {
    const P = t + 7;
    const x = f32(rand(b * t * nh * hd, 61 + hd, 2));
    const c = f32(rand(P * hd, 67 + hd)), sn = f32(rand(P * hd, 71 + hd));
    const pos = Int32Array.from({ length: b * t }, (_, i) => (i * 5 + 3) % P);
    const shapes = [[b, t, nh, hd], [P, hd], [P, hd]];
    for (const inverse of [false, true]) {
      const plain = both(() => runCpu(ropeOp, [x, c, sn], shapes, { offset: 6, inverse }));
      close(`rope ${b}×${t}×${nh}×${hd}`, plain.simd[0], plain.loop[0], () => 0);
      const withPos = both(() =>
        runCpu(ropeOp, [x, c, sn, pos], [...shapes, [b, t]], { offset: 0, inverse })
      );
      close(`rope pos ${b}×${t}×${nh}×${hd}`, withPos.simd[0], withPos.loop[0], () => 0);
      // bf16 rows, f32 tables: the f32 rotation of the widened values, rounded once (both paths)
      const h = bf16Of(x);
      const want = bf16Of(
        runCpu(ropeOp, [widen(h), c, sn], shapes, { offset: 6, inverse })[0] as Float32Array,
      );
      const lowp = both(() =>
        runCpu(ropeOp, [h, c, sn], shapes, { offset: 6, inverse }, ["bf16", "f32", "f32"])[0]
      );
      for (const [path, got] of [["simd", lowp.simd], ["loop", lowp.loop]] as const) {
        assert(
          got.every((v, i) => v === want[i]),
          `rope bf16 ${b}×${t}×${nh}×${hd} (${path}): not the f32 rotation rounded once`,
        );
      }
    }
  }
}

// ---- AdamW ---------------------------------------------------------------------------------

/**
 * The SIMD AdamW is torch's f32 arithmetic, every operation rounded (wasm has no fused multiply-add
 * and its sqrt and divide are correctly rounded): the same bits as this loop of `Math.fround`s
 * (f64 then rounded gives the correctly rounded f32 result for + − × ÷ √). The f64 loop it replaces
 * is within a few f32 roundings of it.
 */
function checkAdamw(): void {
  const fr = Math.fround;
  for (const n of [1, 3, 5, 8, 16387, 40001]) {
    for (const scale of [null, 0.37]) {
      const p = f32(rand(n, 31 + n)), g = f32(rand(n, 37 + n, 3));
      const m = f32(rand(n, 41 + n, 0.1)), v = f32(rand(n, 43 + n, 0.2).map(Math.abs));
      g[0] = 0; // a zero gradient on a zero moment (v = 0 below): the update must stay finite
      v[0] = m[0] = 0;
      const params = { lr: 3e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1, step: 7 };
      const ins = scale === null ? [p, g, m, v] : [p, g, m, v, f32([scale])];
      const shapes = ins.map((_, i) => (i === 4 ? [] : [n])); // the scale is a scalar
      const r = both(() => runCpu(adamwOp, ins, shapes, params));
      const b1 = fr(0.9), b2 = fr(0.999), a1 = fr(1 - 0.9), a2 = fr(1 - 0.999), eps = fr(1e-8);
      const decay = fr(1 - 3e-3 * 0.1), gs = fr(scale ?? 1);
      const step = fr(-(3e-3 / (1 - 0.9 ** 7))), ibc = fr(1 / Math.sqrt(1 - 0.999 ** 7));
      for (let i = 0; i < n; i++) {
        const gi = fr(g[i] * gs);
        const mi = fr(fr(m[i] * b1) + fr(a1 * gi));
        const vi = fr(fr(v[i] * b2) + fr(fr(a2 * gi) * gi));
        const den = fr(fr(fr(Math.sqrt(vi)) * ibc) + eps);
        const pi = fr(fr(p[i] * decay) + fr(fr(step * mi) / den));
        const want = [pi, mi, vi];
        // the sums may cancel: bound by the sum of the terms' magnitudes
        const mag = [
          Math.abs(p[i] * decay) + Math.abs(step * mi / den),
          Math.abs(m[i] * b1) + Math.abs(a1 * gi),
          vi,
        ];
        for (let o = 0; o < 3; o++) {
          const got = r.simd[o][i], loop = r.loop[o][i];
          assert(
            same(got, want[o]),
            `adamw n ${n} scale ${scale} output ${o}[${i}]: simd ${got}, torch-order f32 ${
              want[o]
            }`,
          );
          const tol = 16 * U * mag[o];
          assert(
            Math.abs(got - loop) <= tol,
            `adamw n ${n} output ${o}[${i}]: simd ${got} vs f64 loop ${loop}`,
          );
          margin = Math.max(margin, Math.abs(got - loop) / (tol || 1));
        }
      }
    }
  }
}

// ---- the tests -------------------------------------------------------------------------------

const CHECKS: [string, () => void][] = [
  ["exp is within 2 ulp of Math.exp over the f32 range; ±Infinity, NaN, edges exact", checkExp],
  ["sigmoid, silu, silu_grad match the loops", checkUnaryRows],
  ["swiglu and its backward match the loops on awkward lengths", checkSwiglu],
  [
    "bf16 widening and rounding are toBf16's bits (ties, NaN, Infinity, subnormals)",
    checkBf16Copies,
  ],
  [
    "swiglu and its backward in bf16: the f32 kernel on widened values, rounded once",
    checkSwigluBf16,
  ],
  ["cross-entropy and its backward match the loops", checkCrossEntropy],
  ["softmax, log_softmax, logsumexp match the loops (-Infinity and NaN rows too)", checkSoftmax],
  ["attention and its backward match the loops (masks, caches, fully hidden rows)", checkAttention],
  ["adamw is torch's f32 arithmetic bit for bit, within 16u of the f64 loop", checkAdamw],
  ["rms_norm and its backward match the loops (tails, pieces, rounds)", checkRmsNorm],
  [
    "rope matches the loop bit for bit (positions, offsets, inverse, odd half widths; bf16 rows)",
    checkRope,
  ],
];

// One thread first (before any worker starts), then with a worker sharing the calls.
await initSimd({ threads: 1 });
for (const [name, check] of CHECKS) {
  Deno.test(`simd 1 thread: ${name}`, () => {
    margin = 0;
    check();
    console.log(`largest error / tolerance: ${margin.toFixed(3)}`);
  });
}

Deno.test("simd 2 threads: every kernel matches the loops, and the worker runs chunks", async () => {
  const s = await initSimd({ threads: 2 });
  if (!s?.pool || s.threads < 2) return; // no shared memory or no workers here: nothing to check
  // with the CPU kernel pool's workers up, the maps go to them (../threads/) and never reach this
  // pool: turn that dispatch off while this pool is checked
  setKernelThreadsEnabled(false);
  try {
    const before = s.pool.workerChunks;
    for (const [, check] of CHECKS) check();
    // The worker sleeps between calls and may wake after the calling thread took every chunk;
    // keep calling until it has run some.
    const x = new Float32Array(1 << 20).fill(0.5), y = new Float32Array(1 << 20);
    const deadline = performance.now() + 10_000;
    while (s.pool.workerChunks === before && performance.now() < deadline) {
      UNARY_OPS.exp.cpu([x], [y], { inputs: [], outputs: [], params: {} });
    }
    assert(s.pool.workerChunks > before, "the worker never ran a chunk in 10 s");
  } finally {
    setKernelThreadsEnabled(true);
    s.pool.dispose();
  }
});

Deno.test("simd: no permission is needed, and nothing is printed when workers cannot start", async () => {
  const url = new URL("../../../ops/softmax.ts", import.meta.url).href;
  const code = `import { softmax } from "${url}";
import { tensor } from "${new URL("../../../creation.ts", import.meta.url).href}";
import { simd } from "${new URL("./mod.ts", import.meta.url).href}";
const y = softmax(tensor(new Float32Array([1, 2, 3, 4, 5]), [5]));
await new Promise((r) => setTimeout(r, 200));
console.log(simd() ? "simd" : "loop", simd()?.threads, y.dataSync().reduce((a, b) => a + b, 0).toFixed(5));`;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-prompt", "--no-config", "-"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const w = out.stdin.getWriter();
  await w.write(new TextEncoder().encode(code));
  await w.close();
  const res = await out.output();
  const stdout = new TextDecoder().decode(res.stdout).trim();
  const stderr = new TextDecoder().decode(res.stderr).trim();
  assert(res.code === 0, `exit ${res.code}: ${stderr}`);
  assert(stdout === "simd 1 1.00000", `got "${stdout}"`);
  assert(stderr === "", `stderr: ${stderr}`);
});

Deno.test("simd: kernels_wasm.ts is what build_wasm.ts generates", async () => {
  const build = new URL("./build_wasm.ts", import.meta.url).pathname;
  const res = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", build, "--check"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert(res.code === 0, new TextDecoder().decode(res.stderr));
});

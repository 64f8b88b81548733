import assert from "node:assert/strict";
import { bf16Bits, bf16Value } from "../../dtype.ts";
import { setMatmulPrecision } from "./gemm_adapter.ts";
import { canPinOmp, cpuHasBf16, openDnnl } from "./gemm/bf16.ts";
import type { AttnShape } from "../../ops/attention/wgsl.ts";
import { kvOffset, kvStep } from "./attention_heads.ts";
import { attentionBackwardOp, attentionOp } from "../../ops/attention.ts";
import type { Meta } from "../../op.ts";
import {
  bf16Attention,
  initKernelThreads,
  kernelThreads,
  setKernelThreadsEnabled,
  sharedArray,
  workerChunks,
} from "./threads/mod.ts";

/** Values in [−1, 1) from a seed (a linear congruential sequence). */
function values(n: number, seed: number, scale = 1): Float32Array {
  const a = new Float32Array(n);
  let s = seed;
  for (let i = 0; i < n; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    a[i] = (s / 2 ** 32 - 0.5) * 2 * scale;
  }
  return a;
}

/**
 * Attention and its gradients in f64 by the definition (K, V in either layout), each product's
 * operands rounded to bf16 where the bf16 path rounds them (Q, K, V, dO, P, dS): what is left is
 * f32 accumulation and exp.
 */
function reference(
  d: AttnShape,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  mask: Float32Array | null,
  causal: boolean,
  scale: number,
  dout: Float32Array,
) {
  const { b, t, s, nh, nkv, hd } = d;
  const rep = nh / nkv;
  const out = new Float64Array(b * t * nh * hd), lse = new Float64Array(b * nh * t);
  const dq = new Float64Array(q.length), dk = new Float64Array(k.length);
  const dv = new Float64Array(v.length);
  for (let bi = 0; bi < b; bi++) {
    for (let h = 0; h < nh; h++) {
      const g = Math.floor(h / rep), ko = kvOffset(d, bi, g), ks = kvStep(d);
      for (let ti = 0; ti < t; ti++) {
        const qo = ((bi * t + ti) * nh + h) * hd;
        const sc = new Float64Array(s).fill(-Infinity);
        for (let j = 0; j < s; j++) {
          if ((causal && j > ti + s - t) || (mask && mask[bi * s + j] === 0)) continue;
          let acc = 0;
          for (let i = 0; i < hd; i++) acc += bf(q[qo + i]) * bf(k[ko + j * ks + i]);
          sc[j] = acc * scale;
        }
        const m = Math.max(...sc);
        const z = m === -Infinity
          ? -Infinity
          : m + Math.log(sc.reduce((a, x) => a + Math.exp(x - m), 0));
        lse[(bi * nh + h) * t + ti] = z;
        const p = sc.map((x) => z === -Infinity ? 0 : Math.exp(x - z));
        let dsum = 0;
        for (let i = 0; i < hd; i++) {
          let o = 0;
          for (let j = 0; j < s; j++) o += bf(p[j]) * bf(v[ko + j * ks + i]);
          out[qo + i] = o;
          dsum += Math.fround(o) * dout[qo + i]; // O as the forward stored it, dO unrounded
        }
        for (let j = 0; j < s; j++) {
          let dp = 0;
          for (let i = 0; i < hd; i++) {
            dp += bf(dout[qo + i]) * bf(v[ko + j * ks + i]);
            dv[ko + j * ks + i] += bf(p[j]) * bf(dout[qo + i]);
          }
          const ds = bf(p[j] * (dp - dsum) * scale);
          for (let i = 0; i < hd; i++) {
            dq[qo + i] += ds * bf(k[ko + j * ks + i]);
            dk[ko + j * ks + i] += ds * bf(q[qo + i]);
          }
        }
      }
    }
  }
  return { out, lse, dq, dk, dv };
}

/** ‖got − want‖ / ‖want‖ (0 when both are 0). */
function relErr(got: Float32Array, want: Float64Array): number {
  let e = 0, w = 0;
  for (let i = 0; i < want.length; i++) {
    e += (got[i] - want[i]) ** 2;
    w += want[i] ** 2;
  }
  return w === 0 ? Math.sqrt(e) : Math.sqrt(e / w);
}

const f32 = new Float32Array(1), u32 = new Uint32Array(f32.buffer);
/** x rounded to bf16 (nearest even), as oneDNN's reorders round operands. */
function bf(x: number): number {
  f32[0] = x;
  const v = u32[0];
  u32[0] = ((v + 0x7fff + ((v >>> 16) & 1)) >>> 16) << 16;
  return f32[0];
}

const dnnl = openDnnl();
const native = typeof dnnl !== "string" && dnnl.native && cpuHasBf16() && canPinOmp();
const meta = (shape: number[]): Meta => ({ shape, dtype: "f32" });

/** The attention op's forward and backward CPU kernels on `d`'s arrays: out, lse, dq, dk, dv. */
function runOp(
  d: AttnShape,
  ins: { q: Float32Array; k: Float32Array; v: Float32Array; mask: Float32Array | null },
  dout: Float32Array,
  causal: boolean,
  scale: number,
) {
  const { b, t, s, nh, nkv, hd } = d;
  const qm = meta([b, t, nh, hd]), lm = meta([b, nh, t]);
  const km = meta(d.kvTimeMajor ? [s, b, nkv, hd] : [b, s, nkv, hd]), mm = meta([b, s]);
  const params = { causal, scale, kvTimeMajor: d.kvTimeMajor };
  const fIns = ins.mask ? [ins.q, ins.k, ins.v, ins.mask] : [ins.q, ins.k, ins.v];
  const fMetas = ins.mask ? [qm, km, km, mm] : [qm, km, km];
  const out = sharedArray("f32", ins.q.length) as Float32Array;
  const lse = sharedArray("f32", b * nh * t) as Float32Array;
  attentionOp.cpu(fIns, [out, lse], { inputs: fMetas, outputs: [qm, lm], params });
  if (d.kvTimeMajor) return { out, lse, dq: null, dk: null, dv: null };
  const [dq, dk, dv] = [ins.q, ins.k, ins.v].map((x) =>
    sharedArray("f32", x.length) as Float32Array
  );
  const bIns = [ins.q, ins.k, ins.v, out, lse, dout, ...(ins.mask ? [ins.mask] : [])];
  const bMetas = [qm, km, km, qm, lm, qm, ...(ins.mask ? [mm] : [])];
  attentionBackwardOp.cpu(bIns, [dq, dk, dv], {
    inputs: bMetas,
    outputs: [qm, km, km],
    params: { causal, scale },
  });
  return { out, lse, dq, dk, dv };
}

/** A shared copy of `x` (the kernel pool reads shared arrays). */
function shared(x: Float32Array): Float32Array {
  const y = sharedArray("f32", x.length) as Float32Array;
  y.set(x);
  return y;
}

Deno.test(
  `attention in the bfloat16 precision: bf16 products per unit, as f64 with the operands rounded${
    native ? "" : " (no AVX512-BF16 / oneDNN 2.x / libgomp here: it declines and f32 runs)"
  }`,
  async () => {
    await initKernelThreads();
    const why = setMatmulPrecision("bfloat16");
    try {
      const cases: [string, AttnShape, boolean, boolean][] = [
        ["causal, GQA", { b: 2, t: 9, s: 9, nh: 4, nkv: 2, hd: 16 }, true, false],
        ["after a cache", { b: 2, t: 3, s: 8, nh: 4, nkv: 1, hd: 16 }, true, false],
        [
          "key mask, a row with nothing visible",
          { b: 2, t: 4, s: 6, nh: 2, nkv: 2, hd: 8 },
          true,
          true,
        ],
        ["non-causal", { b: 1, t: 5, s: 7, nh: 6, nkv: 3, hd: 8 }, false, false],
        [
          "time-major K, V",
          { b: 3, t: 2, s: 5, nh: 4, nkv: 2, hd: 8, kvTimeMajor: true },
          true,
          false,
        ],
      ];
      for (const [label, d, causal, masked] of cases) {
        const { b, t, s, nh, nkv, hd } = d;
        const q = shared(values(b * t * nh * hd, 1, 2)), k = shared(values(b * s * nkv * hd, 2, 2));
        const v = shared(values(b * s * nkv * hd, 3)), dout = shared(values(b * t * nh * hd, 4));
        // batch row 1 hides keys 0…3: its first query (which sees keys 0…2) sees nothing
        const mask = masked
          ? new Float32Array(b * s).map((_, i) => Math.floor(i / s) === 1 && i % s < 4 ? 0 : 1)
          : null;
        const scale = 1 / Math.sqrt(hd);
        const want = reference(d, q, k, v, mask, causal, scale, dout);
        const got = runOp(d, { q, k, v, mask }, dout, causal, scale);
        assert.equal(bf16Attention(q, d), native && why === null);
        if (!(native && why === null)) continue;
        // f32 products would be ~3·10⁻³ away from this reference: these bounds need the bf16 ones
        assert.ok(relErr(got.out, want.out) < 1e-6, `${label}: out ${relErr(got.out, want.out)}`);
        got.lse.forEach((z, i) => {
          const w = want.lse[i];
          assert.ok(
            z === w || Math.abs(z - w) < 1e-5 * Math.max(1, Math.abs(w)),
            `${label}: lse[${i}] ${z} vs ${w}`,
          );
        });
        if (masked) assert.equal(got.lse[nh * t], -Infinity);
        if (d.kvTimeMajor) continue; // the backward op takes K and V batch-major
        for (const name of ["dq", "dk", "dv"] as const) {
          const e = relErr(got[name]!, want[name]);
          assert.ok(e < 2e-5, `${label}: ${name} ${e}`);
        }
      }
      if (!(native && why === null)) return;
      // split over the kernel pool's threads (each calling oneDNN on one thread): the bits of one
      const d = { b: 2, t: 64, s: 64, nh: 4, nkv: 2, hd: 64 };
      const q = shared(values(2 * 64 * 4 * 64, 5)), k = shared(values(2 * 64 * 2 * 64, 6));
      const v = shared(values(2 * 64 * 2 * 64, 7)), dout = shared(values(q.length, 8));
      const run = (pooled: boolean) => {
        setKernelThreadsEnabled(pooled);
        try {
          return runOp(d, { q, k, v, mask: null }, dout, true, 0.125);
        } finally {
          setKernelThreadsEnabled(true);
        }
      };
      const one = run(false);
      // until a worker has taken units (this thread may claim them all before one wakes)
      const chunks = workerChunks(), deadline = performance.now() + 10_000;
      do {
        const pooled = run(true);
        for (const name of ["out", "lse", "dq", "dk", "dv"] as const) {
          assert.deepEqual(pooled[name], one[name], `${name}, ${kernelThreads()} threads`);
        }
      } while (
        kernelThreads() > 1 && workerChunks() === chunks && performance.now() < deadline
      );
      assert.equal(workerChunks() > chunks, kernelThreads() > 1);
    } finally {
      setMatmulPrecision("float32");
    }
    // too many scores for one unit, or float32 precision: the f32 kernels run
    if (native && why === null) {
      setMatmulPrecision("bfloat16");
      try {
        const x = values(1, 9);
        assert.ok(bf16Attention(x, { b: 1, t: 1024, s: 1024, nh: 4, nkv: 1, hd: 8 }));
        assert.ok(!bf16Attention(x, { b: 1, t: 1024, s: 1025, nh: 4, nkv: 1, hd: 8 }));
        assert.ok(!bf16Attention(x, { b: 4, t: 1, s: 9, nh: 4, nkv: 1, hd: 8 })); // a decode step
      } finally {
        setMatmulPrecision("float32");
      }
    }
    assert.ok(!bf16Attention(values(8, 5), { b: 1, t: 2, s: 2, nh: 1, nkv: 1, hd: 4 }));
  },
);

/** bf16 bits of f32 values (round to nearest even), in a shared array. */
function bits(x: Float32Array): Uint16Array {
  const h = sharedArray("bf16", x.length) as Uint16Array;
  x.forEach((v, i) => h[i] = bf16Bits(v));
  return h;
}

/** bf16 bits widened to f32, in a shared array. */
function widen(h: Uint16Array): Float32Array {
  const x = sharedArray("f32", h.length) as Float32Array;
  h.forEach((v, i) => x[i] = bf16Value(v));
  return x;
}

Deno.test(
  `attention of bf16 tensors (the bfloat16 precision's activations): the f32 tensors' bf16 units, each result rounded once${
    native ? "" : " (no native bf16 here: it says why it cannot run)"
  }`,
  async () => {
    await initKernelThreads();
    const d: AttnShape = { b: 2, t: 40, s: 40, nh: 4, nkv: 2, hd: 16 };
    const { b, t, s, nh, nkv, hd } = d;
    const qm = { shape: [b, t, nh, hd], dtype: "bf16" as const };
    const km = { shape: [b, s, nkv, hd], dtype: "bf16" as const };
    const lm = { shape: [b, nh, t], dtype: "f32" as const };
    const params = { causal: true, scale: 1 / Math.sqrt(hd) };
    // bf16 values, held once as bf16 bits and once as f32
    const [q, k, v, dout] = [
      values(b * t * nh * hd, 11, 2),
      values(b * s * nkv * hd, 12, 2),
      values(
        b * s * nkv * hd,
        13,
      ),
      values(b * t * nh * hd, 14),
    ].map(bits);
    const why = setMatmulPrecision("bfloat16");
    try {
      const out = sharedArray("bf16", q.length) as Uint16Array;
      const lse = sharedArray("f32", b * nh * t) as Float32Array;
      const forward = () =>
        attentionOp.cpu([q, k, v], [out, lse], { inputs: [qm, km, km], outputs: [qm, lm], params });
      if (!(native && why === null)) {
        assert.throws(forward, /Cannot attend over bf16 q \[2, 40, 4, 16\] with 40 keys/);
        return;
      }
      forward();
      const want = runOp(
        d,
        { q: widen(q), k: widen(k), v: widen(v), mask: null },
        widen(dout),
        true,
        params.scale,
      );
      assert.deepEqual(out, bits(want.out), "out is the f32 output rounded once");
      assert.deepEqual(lse, want.lse, "lse is the same f32");
      // backward: against the f32 tensors' backward from the same (bf16) output
      const grads = [q, k, v].map((x) => sharedArray("bf16", x.length) as Uint16Array);
      attentionBackwardOp.cpu([q, k, v, out, lse, dout], grads, {
        inputs: [qm, km, km, qm, lm, qm],
        outputs: [qm, km, km],
        params,
      });
      const f32Grads = [q, k, v].map((x) => sharedArray("f32", x.length) as Float32Array);
      const f = (m: Meta) => ({ shape: m.shape, dtype: "f32" as const });
      attentionBackwardOp.cpu(
        [widen(q), widen(k), widen(v), widen(out), lse, widen(dout)],
        f32Grads,
        {
          inputs: [f(qm), f(km), f(km), f(qm), lm, f(qm)],
          outputs: [f(qm), f(km), f(km)],
          params,
        },
      );
      assert.deepEqual(grads[0], bits(f32Grads[0]), "dq is the f32 dq rounded once");
      // dK and dV come out of products that store bf16 themselves: one bf16 step at most
      for (const [i, name] of [[1, "dk"], [2, "dv"]] as const) {
        const w = f32Grads[i];
        let same = 0;
        grads[i].forEach((h, j) => {
          if (h === bf16Bits(w[j])) same++;
          assert.ok(Math.abs(bf16Value(h) - w[j]) <= 2 ** -8 * Math.abs(w[j]), `${name}[${j}]`);
        });
        assert.ok(same >= 0.99 * w.length, `${name}: ${same} of ${w.length} rounded alike`);
      }
      // a decode step's single query cannot take bf16 tensors: the error says why
      const q1 = { shape: [b, 1, nh, hd], dtype: "bf16" as const };
      assert.throws(
        () =>
          attentionOp.cpu([q.subarray(0, b * nh * hd), k, v], [
            out.subarray(0, b * nh * hd),
            lse.subarray(0, b * nh),
          ], {
            inputs: [q1, km, km],
            outputs: [q1, { shape: [b, nh, 1], dtype: "f32" }],
            params,
          }),
        /bf16 attention needs T > 1/,
      );
    } finally {
      setMatmulPrecision("float32");
    }
  },
);

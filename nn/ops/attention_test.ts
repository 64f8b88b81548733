import assert from "node:assert/strict";
import { tensor } from "../creation.ts";
import { key, normalArray, split } from "../random.ts";
import { vjp } from "../autodiff.ts";
import { scope } from "../scope.ts";
import type { Tensor } from "../tensor.ts";
import { attention, attentionBackwardOp, attentionOp } from "./attention.ts";
import { initKernelThreads, setKernelThreadsEnabled } from "../backend/cpu/threads/mod.ts";
import { setMatmulPrecision } from "../backend/cpu/gemm_adapter.ts";

/** Plain f64 loops: causal GQA attention and its gradients for one output cotangent `dO`. */
function reference(
  [b, t, s, nh, nkv, hd]: number[],
  q: Float64Array,
  k: Float64Array,
  v: Float64Array,
  dO: Float64Array,
  causal: boolean,
) {
  const scale = 1 / Math.sqrt(hd), grp = nh / nkv;
  const o = new Float64Array(q.length), dq = new Float64Array(q.length);
  const dk = new Float64Array(k.length), dv = new Float64Array(v.length);
  const qi = (bi: number, ti: number, h: number) => ((bi * t + ti) * nh + h) * hd;
  const ki = (bi: number, j: number, g: number) => ((bi * s + j) * nkv + g) * hd;
  for (let bi = 0; bi < b; bi++) {
    for (let h = 0; h < nh; h++) {
      const g = Math.floor(h / grp);
      for (let ti = 0; ti < t; ti++) {
        const lim = causal ? Math.min(s, ti + s - t + 1) : s;
        const p = new Float64Array(lim);
        let m = -Infinity, z = 0;
        for (let j = 0; j < lim; j++) {
          let acc = 0;
          for (let d = 0; d < hd; d++) acc += q[qi(bi, ti, h) + d] * k[ki(bi, j, g) + d];
          p[j] = acc * scale;
          m = Math.max(m, p[j]);
        }
        for (let j = 0; j < lim; j++) z += p[j] = Math.exp(p[j] - m);
        const dp = new Float64Array(lim);
        let dsum = 0;
        for (let j = 0; j < lim; j++) {
          p[j] /= z;
          for (let d = 0; d < hd; d++) {
            o[qi(bi, ti, h) + d] += p[j] * v[ki(bi, j, g) + d];
            dv[ki(bi, j, g) + d] += p[j] * dO[qi(bi, ti, h) + d];
            dp[j] += dO[qi(bi, ti, h) + d] * v[ki(bi, j, g) + d];
          }
          dsum += p[j] * dp[j];
        }
        for (let j = 0; j < lim; j++) {
          const ds = p[j] * (dp[j] - dsum) * scale;
          for (let d = 0; d < hd; d++) {
            dq[qi(bi, ti, h) + d] += ds * k[ki(bi, j, g) + d];
            dk[ki(bi, j, g) + d] += ds * q[qi(bi, ti, h) + d];
          }
        }
      }
    }
  }
  return [o, dq, dk, dv];
}

// long enough for the causal row blocks (T/8 rows, ≥ 16) to skip hidden keys
const CASES = [
  { label: "causal, 5 row blocks", dims: [2, 80, 80, 4, 2, 8], causal: true },
  { label: "causal with a cache", dims: [1, 40, 72, 2, 1, 4], causal: true },
  { label: "causal, T not a multiple of the block", dims: [1, 37, 37, 2, 2, 3], causal: true },
  { label: "non-causal", dims: [1, 40, 33, 2, 1, 4], causal: false },
  // one query per row: the CPU multiplies each KV group's heads together (f32)
  { label: "a decode step, 4 query heads per KV head", dims: [3, 1, 50, 8, 2, 16], causal: true },
];

for (const c of CASES) {
  for (const dtype of ["f32", "f64"] as const) {
    Deno.test(`attention() and its VJP match plain loops (${c.label}, ${dtype})`, () => {
      const [b, t, s, nh, nkv, hd] = c.dims;
      const ks = split(key(t * 31 + s), 4);
      const arr = (kk: typeof ks[0], n: number) => Float64Array.from(normalArray(kk, n));
      const q = arr(ks[0], b * t * nh * hd), dO = arr(ks[3], b * t * nh * hd);
      const k = arr(ks[1], b * s * nkv * hd), v = arr(ks[2], b * s * nkv * hd);
      const want = reference(c.dims, q, k, v, dO, c.causal);
      const got = scope(() => {
        const ts = [q, k, v].map((a, i) =>
          tensor(a, i === 0 ? [b, t, nh, hd] : [b, s, nkv, hd], dtype)
        );
        const [o, back] = vjp(
          (x: Tensor, y: Tensor, z: Tensor) => attention(x, y, z, { causal: c.causal }),
          ts[0],
          ts[1],
          ts[2],
        );
        const grads = back(tensor(dO, [b, t, nh, hd], dtype)) as Tensor[];
        return [o, ...grads].map((x) => x.dataSync());
      });
      const tol = dtype === "f32" ? 2e-5 : 1e-12;
      ["out", "dq", "dk", "dv"].forEach((name, i) => {
        let worst = 0;
        for (let e = 0; e < want[i].length; e++) {
          worst = Math.max(worst, Math.abs(got[i][e] - want[i][e]) / (1 + Math.abs(want[i][e])));
        }
        assert.ok(worst < tol, `${name}: relative error ${worst} ≥ ${tol}`);
      });
    });
  }
}

Deno.test("a masked decode step: the grouped f32 path matches the f64 loops, hidden keys and all", () => {
  const [b, s, nh, nkv, hd] = [4, 37, 6, 2, 8];
  const ks = split(key(99), 3);
  const arr = (kk: typeof ks[0], n: number) => Float64Array.from(normalArray(kk, n));
  const q = arr(ks[0], b * nh * hd),
    k = arr(ks[1], b * s * nkv * hd),
    v = arr(ks[2], b * s * nkv * hd);
  // row 0 sees every key, row 1 its last 5 (left padding), row 2 every other one, row 3 none
  const m = new Float64Array(b * s);
  for (let j = 0; j < s; j++) {
    m[j] = 1;
    m[s + j] = j >= s - 5 ? 1 : 0;
    m[2 * s + j] = j % 2;
  }
  const run = (dtype: "f32" | "f64") =>
    scope(() => {
      const t = (a: Float64Array, shape: number[]) => tensor(a, shape, dtype);
      const out = attention(t(q, [b, 1, nh, hd]), t(k, [b, s, nkv, hd]), t(v, [b, s, nkv, hd]), {
        mask: t(m, [b, s]),
      });
      return out.dataSync();
    });
  const [got, want] = [run("f32"), run("f64")];
  for (let e = 0; e < want.length; e++) {
    assert.ok(
      Math.abs(got[e] - want[e]) < 2e-5 * (1 + Math.abs(want[e])),
      `out[${e}] ${got[e]} vs ${want[e]}`,
    );
  }
  // the fully hidden row attends to nothing: zeros, as the loops give
  for (let e = 3 * nh * hd; e < 4 * nh * hd; e++) assert.equal(got[e], 0);
});

Deno.test("attention_backward writes every element of dq, dk and dv (recycled arrays come unzeroed)", async () => {
  await initKernelThreads(); // the pooled units need the workers up
  // B 2, T = S 128, NH 4, NKV 2, HD 32: big enough for the pooled units; row blocks, GQA
  const [b, t, nh, nkv, hd] = [2, 128, 4, 2, 32];
  const ks = split(key(7), 4);
  const f = (kk: typeof ks[0], n: number) => Float32Array.from(normalArray(kk, n));
  const q = f(ks[0], b * t * nh * hd), k = f(ks[1], b * t * nkv * hd);
  const v = f(ks[2], b * t * nkv * hd), dO = f(ks[3], b * t * nh * hd);
  const params = { causal: true, scale: 1 / Math.sqrt(hd) };
  const metas = [[b, t, nh, hd], [b, t, nkv, hd], [b, t, nkv, hd]].map((shape) => ({
    shape,
    dtype: "f32" as const,
  }));
  const fwdOut = attentionOp.infer(metas, params);
  const [o, lse] = fwdOut.map((m) => new Float32Array(m.shape.reduce((x, y) => x * y, 1)));
  attentionOp.cpu([q, k, v], [o, lse], { inputs: metas, outputs: fwdOut, params });
  const ins = [q, k, v, o, lse, dO];
  const inMetas = [...metas, fwdOut[0], fwdOut[1], metas[0]];
  const outMetas = attentionBackwardOp.infer(inMetas, params);
  const run = (fill: number) => {
    const outs = outMetas.map((m) =>
      new Float32Array(m.shape.reduce((x, y) => x * y, 1)).fill(fill)
    );
    attentionBackwardOp.cpu(ins, outs, { inputs: inMetas, outputs: outMetas, params });
    return outs;
  };
  for (
    const [label, setup, undo] of [
      ["kernel pool", () => {}, () => {}],
      ["one thread", () => setKernelThreadsEnabled(false), () => setKernelThreadsEnabled(true)],
      ["bfloat16", () => setMatmulPrecision("bfloat16"), () => setMatmulPrecision("float32")],
    ] as const
  ) {
    setup();
    try {
      const [clean, dirty] = [run(0), run(NaN)];
      ["dq", "dk", "dv"].forEach((name, i) => {
        assert.deepEqual(dirty[i], clean[i], `${label}: ${name} kept values it did not write`);
      });
    } finally {
      undo();
    }
  }
});

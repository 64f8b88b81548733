import assert from "node:assert/strict";
import { batchedDecodeAttention, setBatchedDecodeAttention } from "./attention_decode.ts";
import { attentionOp } from "../../ops/attention.ts";
import { openDnnl } from "./gemm/bf16.ts";
import type { Meta } from "../../op.ts";

/** Values in [−1, 1) from a seed (a linear congruential sequence). */
function values(n: number, seed: number): Float32Array {
  const a = new Float32Array(n);
  let s = seed;
  for (let i = 0; i < n; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    a[i] = (s / 2 ** 32 - 0.5) * 2;
  }
  return a;
}

const dnnl = openDnnl();
const have = typeof dnnl !== "string" && dnnl.native;
/** CI installs oneDNN (libdnnl2): there a missing library fails instead of skipping. */
const require = Deno.env.get("MINIMIND_REQUIRE_BLAS") === "1";

Deno.test({
  name: `a decode step's attention by batched oneDNN products equals the per-unit products${
    have || require ? "" : " (skipped: no oneDNN 2.x here)"
  }`,
  ignore: !have && !require,
  fn() {
    assert.ok(have, `MINIMIND_REQUIRE_BLAS=1 but no oneDNN 2.x: ${dnnl}`);
    const [b, nh, nkv, hd, s] = [3, 8, 2, 64, 70];
    for (const timeMajor of [false, true]) {
      for (const masked of [false, true]) {
        const q = values(b * nh * hd, 1), k = values(s * b * nkv * hd, 2);
        const v = values(s * b * nkv * hd, 3);
        // row 1 sees keys 5…69 (left padding), row 2 sees none
        const mask = new Float32Array(b * s).map((_, i) =>
          Math.floor(i / s) === 2 ? 0 : Math.floor(i / s) === 1 && i % s < 5 ? 0 : 1
        );
        const kvShape = timeMajor ? [s, b, nkv, hd] : [b, s, nkv, hd];
        const meta = (shape: number[]): Meta => ({ shape, dtype: "f32" });
        const inMetas = [meta([b, 1, nh, hd]), meta(kvShape), meta(kvShape)];
        const outMetas = [meta([b, 1, nh, hd]), meta([b, nh, 1])];
        const params = { causal: true, scale: 1 / Math.sqrt(hd), kvTimeMajor: timeMajor };
        const run = (batched: boolean) => {
          setBatchedDecodeAttention(batched);
          try {
            const out = new Float32Array(b * nh * hd), lse = new Float32Array(b * nh);
            const ins = masked ? [q, k, v, mask] : [q, k, v];
            const metas = masked ? [...inMetas, meta([b, s])] : inMetas;
            attentionOp.cpu(ins, [out, lse], { inputs: metas, outputs: outMetas, params });
            return [out, lse];
          } finally {
            setBatchedDecodeAttention(true);
          }
        };
        const [want, got] = [run(false), run(true)];
        const what = `${timeMajor ? "time" : "batch"}-major${masked ? ", masked" : ""}`;
        for (const [i, name] of [[0, "out"], [1, "lse"]] as const) {
          got[i].forEach((x, j) => {
            const w = want[i][j];
            const ok = Object.is(x, w) || Math.abs(x - w) <= 1e-5 * Math.max(1, Math.abs(w));
            if (!ok) assert.fail(`${what}: ${name}[${j}] is ${x}, per unit ${w}`);
          });
        }
        if (masked) {
          // the hidden row: lse −∞ and zero outputs, as the per-unit path gives
          assert.equal(got[1][2 * nh], -Infinity);
          assert.ok(got[0].subarray(2 * nh * hd).every((x) => x === 0));
        }
        // and the batched path is the one that ran (it refuses one row and prefill)
        const dims = { b, t: 1, s, nh, nkv, hd, kvTimeMajor: timeMajor };
        const out = new Float32Array(b * nh * hd), lse = new Float32Array(b * nh);
        const arrays = { q, k, v, out, lse };
        assert.ok(batchedDecodeAttention(dims, { ...arrays, mask: masked ? mask : null }, params));
        assert.ok(!batchedDecodeAttention({ ...dims, b: 1 }, { ...arrays, mask: null }, params));
        assert.ok(!batchedDecodeAttention({ ...dims, t: 2 }, { ...arrays, mask: null }, params));
      }
    }
  },
});

import assert from "node:assert/strict";
import { tensor } from "../nn/creation.ts";
import type { Tensor } from "../nn/tensor.ts";
import type { Tree } from "../nn/tree.ts";
import { key, normalArray, split } from "../nn/random.ts";
import {
  adamw,
  applyUpdates,
  chain,
  clipByGlobalNorm,
  clipGrads,
  masked,
  scale,
  sgd,
} from "./optim.ts";

function rand(k: readonly [number, number], n: number): Float32Array {
  return Float32Array.from(normalArray(k, n));
}

/** torch.optim.AdamW for one tensor in float64 (the reference the fused op must follow). */
function refAdamw(
  p: Float64Array,
  gs: Float64Array[],
  lrs: number[],
  o = { b1: 0.9, b2: 0.999, eps: 1e-8, wd: 0.01 },
): Float64Array {
  const m = new Float64Array(p.length), v = new Float64Array(p.length);
  p = p.slice();
  gs.forEach((g, s) => {
    const t = s + 1, lr = lrs[s];
    for (let i = 0; i < p.length; i++) {
      p[i] *= 1 - lr * o.wd;
      m[i] = o.b1 * m[i] + (1 - o.b1) * g[i];
      v[i] = o.b2 * v[i] + (1 - o.b2) * g[i] * g[i];
      const denom = Math.sqrt(v[i]) / Math.sqrt(1 - Math.pow(o.b2, t)) + o.eps;
      p[i] -= (lr / (1 - Math.pow(o.b1, t))) * m[i] / denom;
    }
  });
  return p;
}

Deno.test("adamw() follows torch.optim.AdamW over several steps (float64 reference)", async () => {
  const ks = split(key(1), 5);
  const p0 = rand(ks[0], 12);
  const gs = [1, 2, 3].map((i) => rand(ks[i], 12));
  const lrs = [1e-2, 5e-3, 2e-3];
  const opt = adamw();
  let params: Tree = { a: { w: tensor(p0, [3, 4]) } };
  let state = opt.init(params);
  for (let s = 0; s < 3; s++) {
    [params, state] = opt.update({ a: { w: tensor(gs[s], [3, 4]) } }, state, params, {
      lr: lrs[s],
    });
  }
  assert.equal(state.count, 3);
  const got = await (params as { a: { w: Tensor } }).a.w.data();
  const want = refAdamw(Float64Array.from(p0), gs.map((g) => Float64Array.from(g)), lrs);
  for (let i = 0; i < 12; i++) assert.ok(Math.abs(got[i] - want[i]) < 2e-7, `${got[i]} ${want[i]}`);
});

Deno.test("adamw() weightDecayMask and null gradients leave the right leaves alone", async () => {
  const opt = adamw({ lr: 0.1, weightDecay: 0.5, weightDecayMask: (path) => path !== "b" });
  const params = { a: tensor([1, 1]), b: tensor([1, 1]), c: tensor([2]) };
  const grads = { a: tensor([0, 0]), b: tensor([0, 0]), c: null };
  const [next] = opt.update(grads, opt.init(params), params);
  const n = next as Record<string, Tensor>;
  assert.deepEqual([...await n.a.data()], [0.949999988079071, 0.949999988079071]); // 1·(1 − 0.05)
  assert.deepEqual([...await n.b.data()], [1, 1]);
  assert.equal(n.c, params.c);
});

Deno.test("clipGrads() scales by min(1, max/(norm + 1e-6)) and reports the norm", async () => {
  const [g, norm] = clipGrads({ x: tensor([3, 0]), y: [tensor([4])] }, 1);
  assert.ok(Math.abs((await norm.item()) - 5) < 1e-6);
  const c = 1 / (5 + 1e-6);
  const gx = await (g as { x: Tensor }).x.data();
  assert.ok(Math.abs(gx[0] - 3 * c) < 1e-7 && gx[1] === 0);
  // below the bound: multiplied by exactly 1
  const [h] = clipGrads({ x: tensor([0.3, 0.4]) }, 1);
  assert.deepEqual([...await (h as { x: Tensor }).x.data()], [...Float32Array.from([0.3, 0.4])]);
});

Deno.test("chain(clipByGlobalNorm, adamw) equals clipping by hand then adamw", async () => {
  const params = { w: tensor([1, -2, 3]) };
  const grads = { w: tensor([30, 40, 0]) };
  const opt = chain(clipByGlobalNorm(1), adamw({ lr: 0.01 }));
  const [a] = opt.update(grads, opt.init(params), params);
  const ref = adamw({ lr: 0.01 });
  const [b] = ref.update(clipGrads(grads, 1)[0], ref.init(params), params);
  assert.deepEqual(
    [...await (a as { w: Tensor }).w.data()],
    [...await (b as { w: Tensor }).w.data()],
  );
  const untyped = chain as (...links: unknown[]) => unknown;
  assert.throws(() => untyped(adamw(), scale(2)), /must come last/);
  // a chain of transformations is a transformation; applyUpdates adds
  const t = chain(scale(-0.5));
  const [u] = t.update(grads, t.init(params), params);
  assert.deepEqual([...await (applyUpdates(params, u) as { w: Tensor }).w.data()], [-14, -22, 3]);
});

Deno.test("sgd() with momentum follows torch.optim.SGD", async () => {
  const opt = sgd({ lr: 0.1, momentum: 0.9 });
  let params: Tree = { w: tensor([1]) };
  let state = opt.init(params);
  const gs = [1, 2, 3];
  let p = 1, buf = 0;
  for (let s = 0; s < 3; s++) {
    [params, state] = opt.update({ w: tensor([gs[s]]) }, state, params);
    buf = s === 0 ? gs[s] : 0.9 * buf + gs[s];
    p -= 0.1 * buf;
  }
  assert.ok(Math.abs((await (params as { w: Tensor }).w.item()) - p) < 1e-6);
});

Deno.test("masked() updates only the selected leaves", async () => {
  const opt = masked(adamw({ lr: 0.1 }), (path) => path.startsWith("lora"));
  const params = { base: tensor([1, 2]), lora: { a: tensor([1, 2]) } };
  const grads = { base: tensor([1, 1]), lora: { a: tensor([1, 1]) } };
  const [next] = opt.update(grads, opt.init(params), params);
  const n = next as { base: Tensor; lora: { a: Tensor } };
  assert.equal(n.base, params.base);
  assert.notDeepEqual([...await n.lora.a.data()], [1, 2]);
});

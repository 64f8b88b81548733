import assert from "node:assert/strict";
import { checkpoint, customVjp, grad, stopGradient, valueAndGrad, vjp } from "./autodiff.ts";
import { fullLike, ones, tensor, zeros } from "./creation.ts";
import { add, affine, exp, matmul, mul, sigmoid, sin, sum, tanh } from "./ops/mod.ts";
import { keep, scope, scopeDepth } from "./scope.ts";
import type { Tensor } from "./tensor.ts";
import { combine, dispose, flatten, leaves, partition, tensors } from "./tree.ts";
import { cpuBackend } from "./backend/cpu/mod.ts";

const v = (t: Tensor) => Array.from(t.dataSync());

Deno.test("grad() sums the gradients of a reused input", () => {
  const x = tensor([1, 2, 3]);
  // f = Σ x·x + x  → df = 2x + 1
  const g = grad((a: Tensor) => sum(add(mul(a, a), a)))(x);
  assert.deepEqual(v(g), [3, 5, 7]);
});

Deno.test("grad() reduces broadcast gradients to the input shape", () => {
  const x = tensor([[1, 2, 3], [4, 5, 6]]);
  const b = tensor([10, 20, 30]);
  const s = tensor(2, []);
  const [gx, gb, gs] = grad((a: Tensor, c: Tensor, d: Tensor) => sum(mul(add(a, c), d)), {
    argnums: [0, 1, 2],
  })(
    x,
    b,
    s,
  );
  assert.deepEqual(gx.shape, [2, 3]);
  assert.deepEqual(v(gx), [2, 2, 2, 2, 2, 2]);
  assert.deepEqual(gb.shape, [3]);
  assert.deepEqual(v(gb), [4, 4, 4]);
  assert.deepEqual(gs.shape, []);
  assert.deepEqual(v(gs), [141]); // Σ (x + b)
});

Deno.test("valueAndGrad() returns gradients shaped like a param tree with frozen leaves", () => {
  const params = {
    w: tensor([[1, 2], [3, 4]]),
    frozen: { b: tensor([1, 1]) },
    ids: tensor([0, 1], [2], "i32"),
  };
  const [train, frozen] = partition(params, (_, path) => path.startsWith("w"));
  const loss = (t: typeof train) => {
    const p = combine(t, frozen) as typeof params;
    return sum(add(matmul(p.w, p.w), p.frozen.b));
  };
  const [value, g] = valueAndGrad(loss)(train);
  // d Σ (W W) / dW = 1·Wᵀ summed… check against finite differences
  assert.equal(value.dataSync()[0], 7 + 10 + 15 + 22 + 4);
  assert.deepEqual(Object.keys(flatten(g)), ["w"]);
  // w, then the holes partition left for frozen.b and ids
  assert.deepEqual(leaves(g).map((x) => (x === null ? null : "tensor")), ["tensor", null, null]);
  // d/dW_ab Σ_ij (W²)_ij = rowsum_b(W) + colsum_a(W)
  assert.deepEqual(v(flatten(g).w), [7, 11, 9, 13]);
});

Deno.test("valueAndGrad() supports hasAux and argnums lists", () => {
  const f = (a: Tensor, b: Tensor) => {
    const y = mul(a, b);
    return [sum(y), { y }] as const;
  };
  const [[value, aux], [ga, gb]] = valueAndGrad(f, { argnums: [0, 1], hasAux: true })(
    tensor([2, 3]),
    tensor([5, 7]),
  );
  assert.equal(value.dataSync()[0], 31);
  assert.deepEqual(v(aux.y), [10, 21]);
  assert.deepEqual(v(ga), [5, 7]);
  assert.deepEqual(v(gb), [2, 3]);
  assert.throws(() => valueAndGrad((a: Tensor) => a)(tensor([1, 2])), /non-scalar output/);
});

Deno.test("valueAndGrad() gives zeros for unused inputs and null for integer leaves", () => {
  const [, g] = valueAndGrad((p: { a: Tensor; b: Tensor; i: Tensor }) => sum(p.a))({
    a: tensor([1, 2]),
    b: tensor([3]),
    i: tensor([1], [1], "i32"),
  });
  assert.deepEqual(v(g.a), [1, 1]);
  assert.deepEqual(v(g.b), [0]);
  assert.equal(g.i, null);
});

Deno.test("stopGradient() blocks the gradient", () => {
  const g = grad((a: Tensor) => sum(mul(a, stopGradient(a))))(tensor([3, 4]));
  assert.deepEqual(v(g), [3, 4]);
});

Deno.test("vjp() pulls back a tree of outputs", () => {
  const [out, back] = vjp((a: Tensor) => ({ s: sin(a), e: exp(a) }), tensor([0, 1]));
  assert.equal(Object.keys(out).length, 2);
  const [g] = back({ s: ones([2]), e: zeros([2]) }) as Tensor[];
  assert.ok(Math.abs(g.dataSync()[0] - 1) < 1e-7 && Math.abs(g.dataSync()[1] - Math.cos(1)) < 1e-7);
  assert.throws(() => back({ s: ones([2]), e: ones([2]) }), /twice/);
});

Deno.test("grad() of grad() works through traced backward ops (nested tapes)", () => {
  // d/dx (d/dx x³) = 6x
  const d1 = (a: Tensor) => sum(grad((b: Tensor) => sum(mul(mul(b, b), b)))(a));
  const g2 = grad(d1)(tensor([1, 2]));
  assert.deepEqual(v(g2), [6, 12]);
});

Deno.test("customVjp() uses the hand-written backward", () => {
  const clipGrad = customVjp(
    (x: Tensor) => [[tanh(x)], [x]],
    (_res, [ct]) => [affine(ct!, 10)],
  );
  const g = grad((a: Tensor) => sum(clipGrad(a)[0]))(tensor([0.5, -1]));
  assert.deepEqual(v(g), [10, 10]);
});

Deno.test("checkpoint() recomputes in backward and gives the same gradients", () => {
  const block = (p: { w: Tensor }, x: Tensor) => sigmoid(matmul(x, p.w));
  const f = (p: { w: Tensor }, ck: boolean) => {
    const x = tensor([[1, -2], [0.5, 3]]);
    const b = ck ? checkpoint(block) : block;
    return sum(b(p, b(p, x)));
  };
  const w = tensor([[0.1, -0.3], [0.7, 0.2]]);
  const g1 = grad((p: { w: Tensor }) => f(p, false))({ w });
  const g2 = grad((p: { w: Tensor }) => f(p, true))({ w });
  const a = v(g1.w), b = v(g2.w);
  for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i] - b[i]) < 1e-6, `${a} vs ${b}`);
});

Deno.test("scope() frees intermediates, keeps returned tensors, nests", () => {
  const before = cpuBackend.counters.bytesInUse;
  const x = tensor([1, 2, 3, 4]);
  const kept = scope(() => {
    const a = add(x, x);
    const inner = scope(() => {
      const b = mul(a, a);
      const c = add(b, a);
      return { c, depth: scopeDepth() };
    });
    assert.equal(inner.depth, 2);
    assert.equal(a.disposed, false);
    return inner.c;
  });
  assert.equal(kept.disposed, false);
  assert.deepEqual(v(kept), [6, 20, 42, 72]);
  assert.equal(scopeDepth(), 0);
  kept.dispose();
  x.dispose();
  assert.equal(cpuBackend.counters.bytesInUse, before);
  const y = scope(() => keep(fullLike(tensor([1]), 5)));
  assert.equal(y.disposed, false);
  y.dispose();
  assert.throws(() => scope(() => Promise.resolve(1)), /async/);
});

Deno.test("100 repeated train steps keep memory flat", () => {
  let params = { w: tensor([[0.1, 0.2], [0.3, 0.4]]), b: tensor([0, 0]) };
  const x = tensor([[1, 2], [3, 4], [5, 6]]);
  const step = (p: typeof params) =>
    scope(() => {
      const [loss, g] = valueAndGrad((q: typeof params) =>
        sum(mul(add(matmul(x, q.w), q.b), add(matmul(x, q.w), q.b)))
      )(p);
      const next = { w: add(p.w, affine(g.w, -0.001)), b: add(p.b, affine(g.b, -0.001)) };
      return { next, loss };
    });
  let mark = 0;
  for (let i = 0; i < 100; i++) {
    const { next, loss } = step(params);
    dispose(params);
    loss.dispose();
    params = next;
    if (i === 9) mark = cpuBackend.counters.bytesInUse;
  }
  assert.equal(cpuBackend.counters.bytesInUse, mark);
  assert.equal(tensors(params).length, 2);
});

Deno.test("vjp frees each forward activation once backward has passed its last use", () => {
  const n = 1 << 16, bytes = 4 * n; // 256 KiB per activation
  const x = tensor(new Float32Array(n).fill(0.5), [n]);
  const base = cpuBackend.counters.bytesInUse;
  scope(() => {
    const [y, back] = vjp((v: Tensor) => {
      let h = v;
      for (let i = 0; i < 10; i++) h = sin(h); // each sin saves its input
      return h;
    }, x);
    // after the forward: the 9 saved intermediates and y, not one handle more
    const afterForward = cpuBackend.counters.bytesInUse - base;
    assert.ok(afterForward <= 10 * bytes + 4096, `after forward ${afterForward / bytes} arrays`);
    const [g] = back(fullLike(y, 1)) as Tensor[];
    // after backward: y, its seed and dx; every intermediate was freed as the sweep passed it
    const afterBackward = cpuBackend.counters.bytesInUse - base;
    assert.ok(afterBackward <= 3 * bytes + 4096, `after backward ${afterBackward / bytes} arrays`);
    assert.ok(Math.abs(g.dataSync()[0]) > 0);
  });
  assert.equal(cpuBackend.counters.bytesInUse, base);
  x.dispose();
});

Deno.test("cotangents are summed in place into one autodiff alone holds, never into the caller's or a shared one", () => {
  // count the in-place sums the CPU backend runs
  let sums = 0;
  const run = cpuBackend.run.bind(cpuBackend);
  cpuBackend.run = (op, ...rest) => {
    if (op.name === "accumulate") sums++;
    return run(op, ...rest);
  };
  try {
    const x = tensor([1, -2, 3, 0.5], [4]), a = tensor([2, 3, 4, 5], [4]);
    const b = tensor([-1, 1, 0.5, 2], [4]), c = tensor([0.25, 0, 1, -3], [4]);
    // x feeds three products: two sums of its cotangents, both into a temporary
    const g = grad((x: Tensor) => sum(add(add(mul(x, a), mul(x, b)), mul(x, c))))(x);
    assert.deepEqual([...g.dataSync()], [1.25, 4, 5.5, 4]);
    assert.equal(sums, 2);
    // the caller's cotangent reaches x unchanged through add: it is never written
    const ct = tensor([1, 2, 3, 4], [4]);
    const [, back] = vjp((x: Tensor) => add(mul(x, a), x), x);
    const [dx] = back(ct) as Tensor[];
    assert.deepEqual([...dx.dataSync()], [3, 8, 15, 24]);
    assert.deepEqual([...ct.dataSync()], [1, 2, 3, 4]);
    // x + x: both cotangents are the same storage, so the sum is a new one
    sums = 0;
    const g2 = grad((x: Tensor) => sum(mul(add(x, x), a)))(x);
    assert.deepEqual([...g2.dataSync()], [4, 6, 8, 10]);
    assert.equal(sums, 0);
    // second order: sums inside an outer grad's trace are recorded, not done in place
    const h = grad((x: Tensor) =>
      sum(grad((y: Tensor) => sum(add(mul(y, y), mul(y, mul(y, y)))))(x))
    )(x);
    assert.deepEqual([...h.dataSync()], [1, -2, 3, 0.5].map((v) => 2 + 6 * v));
    for (const t of [x, a, b, c, g, ct, dx, g2, h]) t.dispose();
  } finally {
    cpuBackend.run = run;
  }
});

import assert from "node:assert/strict";
import { distillLoss, dpoLoss, grad, ones, tensor, tokenLogProbs, zeros } from "../../mod.ts";
import type { Tensor } from "../../mod.ts";

function near(got: number, want: number, tol: number, label: string): void {
  assert(Math.abs(got - want) <= tol, `${label}: got ${got} want ${want}`);
}

/** KL(softmax(t/T) ‖ softmax(s/T)) of one row, by hand in float64. */
function rowKl(s: number[], t: number[], temp: number): number {
  const soft = (x: number[]) => {
    const m = Math.max(...x.map((v) => v / temp));
    const e = x.map((v) => Math.exp(v / temp - m));
    const z = e.reduce((a, b) => a + b, 0);
    return e.map((v) => v / z);
  };
  const p = soft(t), q = soft(s);
  return p.reduce((acc, pi, i) => acc + pi * Math.log(pi / q[i]), 0);
}

Deno.test("distillLoss: T²·KL(teacher‖student) averaged over the masked rows (hand-computed)", async () => {
  const s = [[[1, 2, 0.5], [0, -1, 3]], [[2, 2, 2], [0.3, 0.1, -0.2]]];
  const t = [[[0.5, 2.5, 0], [1, 1, 1]], [[3, 0, 1], [9, 9, 9]]];
  const mask = [[1, 0], [1, 1]];
  const temp = 1.5;
  // rows (0,0), (1,0), (1,1) count; (0,1) is masked out; batchmean over 3 rows
  const want = temp * temp *
    (rowKl(s[0][0], t[0][0], temp) + rowKl(s[1][0], t[1][0], temp) +
      rowKl(s[1][1], t[1][1], temp)) /
    3;
  const got = distillLoss(
    tensor(s.flat(2), [2, 2, 3]),
    tensor(t.flat(2), [2, 2, 3]),
    tensor(mask.flat(), [2, 2], "i32"),
    { temperature: temp },
  );
  near(await got.item(), want, 1e-6, "distill");
  assert(want > 0.1, `a non-trivial case (${want})`);
  // a teacher with a wider vocab is sliced to the student's
  const wide = t.flat(1).map((r) => [...r, 40]);
  const got2 = distillLoss(
    tensor(s.flat(2), [2, 2, 3]),
    tensor(wide.flat(), [2, 2, 4]),
    tensor(mask.flat(), [2, 2], "f32"),
    { temperature: temp },
  );
  near(await got2.item(), want, 1e-6, "distill (sliced teacher)");
  // the gradient flows into the student only
  const g = grad(
    (st: Tensor, te: Tensor) =>
      distillLoss(st, te, tensor(mask.flat(), [2, 2], "i32"), { temperature: temp }),
    {
      argnums: [0, 1],
    },
  )(tensor(s.flat(2), [2, 2, 3]), tensor(t.flat(2), [2, 2, 3]));
  const gs = Array.from(await g[0].data()) as number[];
  assert(gs.some((v) => Math.abs(v) > 1e-3));
  assert.deepEqual(Array.from(await g[1].data()), new Array(12).fill(0));
  assert.throws(
    () => distillLoss(zeros([1, 2, 5]), zeros([1, 2, 4]), ones([1, 2])),
    /student \[1, 2, 5\], teacher \[1, 2, 4\]/,
  );
});

Deno.test("tokenLogProbs and dpoLoss: ln 2 when policy = reference; sum vs mean scores", async () => {
  const logits = tensor([0, 1, 2, 3, 1, 1, 1, 1], [1, 2, 4]);
  const lp = await tokenLogProbs(logits, tensor([[3, 0]], [1, 2], "i32")).data();
  near(lp[0], 3 - Math.log(1 + Math.E + Math.E ** 2 + Math.E ** 3), 1e-6, "logp[0]");
  near(lp[1], -Math.log(4), 1e-6, "logp[1]");

  const pol = tensor([-1, -2, -3, -1, -1, -4, -2, -2], [2, 4]);
  const mask = tensor([1, 1, 0, 0, 0, 1, 1, 1], [2, 4], "i32");
  const same = dpoLoss({ policyLogps: pol, refLogps: pol, mask });
  near(await same.loss.item(), Math.LN2, 1e-7, "ln 2");
  const ref = zeros([2, 4]);
  // mean: chosen (−3)/2, rejected (−8)/3 → z = −1.5 + 8/3; sum: −3 − (−8) = 5
  const m = dpoLoss({ policyLogps: pol, refLogps: ref, mask }, { beta: 0.1 });
  const zm = -1.5 + 8 / 3;
  near(await m.loss.item(), Math.log(1 + Math.exp(-0.1 * zm)), 1e-6, "mean loss");
  const s = dpoLoss({ policyLogps: pol, refLogps: ref, mask }, { beta: 0.15, reduction: "sum" });
  near(await s.loss.item(), Math.log(1 + Math.exp(-0.15 * 5)), 1e-6, "sum loss");
  assert.throws(
    () => dpoLoss({ policyLogps: zeros([3, 2]), refLogps: zeros([3, 2]), mask: ones([3, 2]) }),
    /\(2P, T\)/,
  );
});

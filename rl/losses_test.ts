import assert from "node:assert/strict";
import { tensor } from "../nn/creation.ts";
import type { Tensor } from "../nn/tensor.ts";
import { valueAndGrad } from "../nn/autodiff.ts";
import {
  entropy,
  grpoLoss,
  k3Kl,
  ppoSequenceLoss,
  ppoTokenLoss,
  ppoValueLoss,
  responseLogProbs,
  spoLoss,
} from "./losses.ts";

const near = (got: number, want: number, tol = 1e-5, what = "") =>
  assert.ok(Math.abs(got - want) <= tol, `${what} got ${got} want ${want}`);
const nearAll = (got: ArrayLike<number>, want: number[], tol = 1e-5) =>
  want.forEach((w, i) => near(got[i], w, tol, `[${i}]`));

// one row, two tokens: p = ½ and ¼; the rollout's log-probs differ by +0.1 and −0.5 (ratios
// e^0.1 and e^−0.5) and the reference by 0 and +0.2 (k3 KL 0 and e^0.2 − 1.2)
const LP = [Math.log(0.5), Math.log(0.25)];
const OLD = [LP[0] - 0.1, LP[1] + 0.5];
const REF = [LP[0], LP[1] + 0.2];
const KL1 = Math.exp(0.2) - 0.2 - 1;
const R0 = Math.exp(0.1), R1 = Math.exp(-0.5);
const t2 = (v: number[]) => tensor(v, [1, 2]);

Deno.test("k3Kl: exp(ref − new) − (ref − new) − 1", async () => {
  nearAll(await k3Kl(t2(LP), t2(REF)).data(), [0, KL1]);
});

Deno.test("responseLogProbs: logits at p score token p + 1; entropy of uniform is ln V", async () => {
  const logits = tensor([0, Math.log(3), 0, 0, 5, 5], [1, 3, 2]);
  nearAll(await responseLogProbs(logits, tensor([1, 0], [1, 2], "i32")).data(), [
    Math.log(0.75),
    Math.log(0.5),
  ]);
  nearAll(await entropy(tensor([0, 0, 0, 0], [2, 2])).data(), [Math.LN2, Math.LN2]);
});

Deno.test("grpoLoss (grpo): clipped surrogate minus β·KL, per-row masked mean; its gradient", async () => {
  const f = (lp: Tensor) =>
    grpoLoss(
      { logp: lp, oldLogp: t2(OLD), refLogp: t2(REF), advantages: tensor([2]), mask: t2([1, 1]) },
      { lossType: "grpo", beta: 0.1 },
    ).loss;
  const [loss, g] = valueAndGrad(f)(t2(LP));
  // gains: min(2·r, 2·clip(r, 0.8, 1.2)) = 2·R0 (in range), 2·R1 (below: the min keeps 2·R1)
  near(await (loss as Tensor).item(), (-2 * R0 + -(2 * R1 - 0.1 * KL1)) / 2);
  // d/dlogp: −(A·r − β·(1 − e^0.2))/2
  nearAll(await (g as Tensor).data(), [-2 * R0 / 2, -(2 * R1 + 0.1 * (Math.exp(0.2) - 1)) / 2]);
  const out = grpoLoss({
    logp: t2(LP),
    oldLogp: t2(OLD),
    refLogp: t2(REF),
    advantages: tensor([2]),
    mask: t2([1, 1]),
  }, { lossType: "grpo" });
  near(await out.clipFraction.item(), 0.5);
  near(await out.kl.item(), KL1 / 2);
});

Deno.test("grpoLoss (cispo): stopgrad(min(r, 5))·A·logp; same gradient as the unclipped PG", async () => {
  const f = (lp: Tensor) =>
    grpoLoss(
      { logp: lp, oldLogp: t2(OLD), refLogp: t2(REF), advantages: tensor([2]), mask: t2([1, 1]) },
      { lossType: "cispo", beta: 0.1 },
    ).loss;
  const [loss, g] = valueAndGrad(f)(t2(LP));
  near(await (loss as Tensor).item(), (-(R0 * 2 * LP[0]) + -(R1 * 2 * LP[1] - 0.1 * KL1)) / 2);
  nearAll(await (g as Tensor).data(), [-2 * R0 / 2, -(2 * R1 + 0.1 * (Math.exp(0.2) - 1)) / 2]);
  // a ratio of e^2 > 5 is truncated to 5 and counted
  const big = grpoLoss({
    logp: tensor([[0]]),
    oldLogp: tensor([[-2]]),
    refLogp: tensor([[0]]),
    advantages: tensor([1]),
    mask: tensor([[1]]),
  });
  near(await big.clipFraction.item(), 1);
});

Deno.test("grpoLoss: masked tokens and rows average per row", async () => {
  // row 0 keeps only token 0; row 1 (advantage 0, KL 0) contributes 0
  const out = grpoLoss({
    logp: tensor([LP, LP]),
    oldLogp: tensor([LP, LP]),
    refLogp: tensor([LP, LP]),
    advantages: tensor([1, 0]),
    mask: tensor([[1, 0], [1, 1]]),
  }, { lossType: "grpo" });
  near(await out.loss.item(), (-1 + 0) / 2);
});

Deno.test("grpoLoss (token aggregation): one mean over every masked token; a shared prefix cancels", async () => {
  // two episodes of one group (A = +1, −1) share token 0 (same context, so one function of the
  // weights); episode 0 has one more token. Token-level: (−lp0 − lp1 + lp0) / 3, and the shared
  // token's two gradients sum to 0. Per sequence: ((−lp0 − lp1)/2 + lp0/1) / 2: they sum to +¼.
  const mask = tensor([[1, 1], [1, 0]]);
  const adv = tensor([1, -1]);
  const lossOf = (aggregation: "sequence" | "token") => (lp: Tensor) =>
    grpoLoss({
      logp: lp,
      oldLogp: tensor([LP, LP]),
      refLogp: tensor([LP, LP]),
      advantages: adv,
      mask,
    }, { lossType: "cispo", beta: 0, aggregation }).loss;
  const lp = tensor([LP, LP]);
  const [tokLoss, tokGrad] = valueAndGrad(lossOf("token"))(lp);
  near(await tokLoss.item(), -LP[1] / 3);
  const tg = await tokGrad.data();
  nearAll(tg, [-1 / 3, -1 / 3, 1 / 3, 0]);
  near(tg[0] + tg[2], 0);
  const [seqLoss, seqGrad] = valueAndGrad(lossOf("sequence"))(lp);
  near(await seqLoss.item(), ((-LP[0] - LP[1]) / 2 + LP[0]) / 2);
  const sg = await seqGrad.data();
  nearAll(sg, [-1 / 4, -1 / 4, 1 / 2, 0]);
  near(sg[0] + sg[2], 1 / 4);
});

Deno.test("ppoTokenLoss: max(−A·r, −A·clip(r)) + 0.02·KL, approx KL, clip share, early stop", async () => {
  const x = {
    logp: t2(LP),
    oldLogp: t2(OLD),
    refLogp: t2(REF),
    advantages: t2([1, -1]),
    mask: t2([1, 1]),
  };
  const out = ppoTokenLoss(x);
  // token 0: max(−R0, −R0); token 1: max(R1, clip(R1) = 0.8) = 0.8
  near(await out.loss.item(), (-R0 + 0.8) / 2 + 0.02 * KL1 / 2);
  near(await out.approxKl.item(), (0.5 * 0.01 + 0.5 * 0.25) / 2);
  near(await out.clipFraction.item(), 0.5);
  near(await out.kl.item(), KL1 / 2);
  near(await ppoTokenLoss(x, { earlyStopKl: 0.05 }).loss.item(), 0);
});

Deno.test("ppoValueLoss: ½·masked mean of max((V − R)², (clip(V, V_old ± 0.2) − R)²)", async () => {
  const v = ppoValueLoss({
    values: tensor([[1, 0, 9]]),
    oldValues: tensor([[0.5, 0.1, 0]]),
    returns: tensor([[0.8, 0.5, 0]]),
    mask: tensor([[1, 1, 0]]),
  });
  near(await v.item(), 0.5 * (0.04 + 0.25) / 2); // clipped V₀ = 0.7 → 0.01 < 0.04
});

Deno.test("ppoSequenceLoss: V2's −mean(min(rA, clip(r, 0.9, 1.1)A)) + ½MSE + 0.02·KL", async () => {
  const o = ppoSequenceLoss({
    logp: tensor([-1, -2]),
    oldLogp: tensor([-1.1, -1.5]),
    refLogp: tensor([-1.2, -2.5]),
    advantages: tensor([1, -1]),
    values: tensor([0.5, 0.2]),
    rewards: tensor([1, 0]),
  });
  near(await o.policy.item(), -(1.1 - 0.9) / 2); // min(R0, 1.1) = 1.1; min(−R1, −0.9) = −0.9
  near(await o.value.item(), (0.25 + 0.04) / 2);
  near(await o.kl.item(), 0.35);
  near(await o.loss.item(), -0.1 + 0.0725 + 0.007);
  near(await o.clipFraction.item(), 1); // ratios e^0.1 and e^−0.5: both outside [0.9, 1.1]
  const w = ppoSequenceLoss({
    logp: tensor([-1, -2]),
    oldLogp: tensor([-1.05, -1.5]),
    refLogp: tensor([-1.2, -2.5]),
    advantages: tensor([1, -1]),
    values: tensor([0.5, 0.2]),
    rewards: tensor([1, 0]),
  }, { vfCoef: 1, klCoef: 0.1 });
  near(await w.clipFraction.item(), 0.5); // e^0.05 stays inside
  near(await w.loss.item(), -(Math.exp(0.05) - 0.9) / 2 + 0.145 + 0.035);
});

Deno.test("spoLoss: −logp·A + β·KL, masked mean per row", async () => {
  const o = spoLoss({
    logp: tensor([[-1, -2]]),
    refLogp: tensor([[-1, -1.8]]),
    advantages: tensor([0.5]),
    mask: tensor([[1, 1]]),
  });
  near(await o.loss.item(), (0.5 + 1 + 0.02 * KL1) / 2);
  near(await o.kl.item(), KL1 / 2);
});

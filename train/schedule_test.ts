import assert from "node:assert/strict";
import { constant, getLr, warmupCosine } from "./schedule.ts";

Deno.test("getLr() matches MiniMind's get_lr (spec §10 vector 3)", () => {
  const want: [number, number][] = [
    [0, 5e-4],
    [1, 4.998889760822896e-4],
    [25, 4.340990257669732e-4],
    [50, 2.75e-4],
    [75, 1.1590097423302682e-4],
    [100, 5e-5],
  ];
  for (const [s, lr] of want) {
    assert.ok(Math.abs(getLr(s, 100, 5e-4) - lr) <= 1e-18, `step ${s}: ${getLr(s, 100, 5e-4)}`);
  }
  assert.ok(Math.abs(getLr(500, 1000, 1e-5) - 5.5e-6) < 1e-18);
  assert.ok(Math.abs(getLr(1000, 1000, 1e-5) - 1e-6) < 1e-18);
  // the v2_adamw golden's three lrs (get_lr(s, 10, 5e-4), s = 1..3)
  assert.deepEqual([1, 2, 3].map((s) => getLr(s, 10, 5e-4)), [
    0.0004889877161664096,
    0.00045702882373436317,
    0.0004072516817658065,
  ]);
  assert.throws(() => getLr(1, 0, 1e-3), /total_steps 0/);
});

Deno.test("warmupCosine() warms up linearly, decays by cosine, then holds the floor", () => {
  const lr = warmupCosine({ peak: 1e-3, warmupSteps: 10, decaySteps: 110, minLr: 1e-4 });
  assert.ok(Math.abs(lr(0) - 1e-3 / 11) < 1e-15);
  assert.ok(Math.abs(lr(9) - 1e-3 * 10 / 11) < 1e-15);
  assert.equal(lr(10), 1e-3);
  assert.ok(Math.abs(lr(60) - 5.5e-4) < 1e-15);
  assert.ok(Math.abs(lr(110) - 1e-4) < 1e-15);
  assert.equal(lr(500), 1e-4);
  for (let s = 11; s <= 110; s++) assert.ok(lr(s) <= lr(s - 1));
  assert.equal(constant(3)(7), 3);
  assert.throws(() => warmupCosine({ peak: 1, warmupSteps: 5, decaySteps: 5 }), /decaySteps 5/);
});

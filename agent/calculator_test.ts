import assert from "node:assert/strict";
import { CalcError, evaluate, formatNumber } from "./calculator.ts";

Deno.test("calculator: precedence, associativity, unary minus and powers", () => {
  assert.equal(evaluate("2 + 3 * 4"), 14);
  assert.equal(evaluate("(2 + 3) * 4"), 20);
  assert.equal(evaluate("10 - 4 - 3"), 3);
  assert.equal(evaluate("100 / 10 / 5"), 2);
  assert.equal(evaluate("2 ^ 3 ^ 2"), 512); // right-associative
  assert.equal(evaluate("2 ** 10"), 1024);
  assert.equal(evaluate("-2 ^ 2"), -4); // power binds tighter than unary minus
  assert.equal(evaluate("2 ^ -1"), 0.5);
  assert.equal(evaluate("--3"), 3);
  assert.equal(evaluate("17 % 5"), 2);
  assert.equal(evaluate("1.5e3 + .5"), 1500.5);
  assert.equal(evaluate("1,234 + 1"), 1235);
  assert.equal(evaluate("max(1,2) + min(3, 4, 5)"), 5);
  assert.equal(evaluate("12 × 3 ÷ 4 − 1"), 8);
  assert.equal(evaluate("（１＋２）＊３"), 9);
  assert.ok(Math.abs(evaluate("sqrt(2)^2") - 2) < 1e-12);
  assert.ok(Math.abs(evaluate("sin(pi / 2) + log(1000) + ln(e)") - 5) < 1e-12);
  assert.equal(evaluate("round(3.14159, 2)"), 3.14);
  assert.equal(evaluate("log(8, 2)"), 3);
});

Deno.test("calculator: errors name the offset and never evaluate code", () => {
  const err = (s: string, re: RegExp) =>
    assert.throws(() => evaluate(s), (e) => e instanceof CalcError && re.test(e.message));
  err("1 / 0", /Division by zero at offset 2/);
  err("1 +", /ends early at offset 3/);
  err("(1 + 2", /Missing '\)'/);
  err("2 3", /Unexpected '3' at offset 2/);
  err("foo(1)", /Unknown function 'foo'/);
  err("constructor", /Unknown name 'constructor'/);
  err("alert('x')", /Unknown function 'alert'/);
  err("process.exit()", /Unexpected '\.'|Unknown name/);
  err("sqrt(1, 2)", /sqrt takes 1 argument/);
  err("", /Empty expression/);
  err("10 ^ 400", /not a finite number/);
  err("(".repeat(200) + "1" + ")".repeat(200), /nested deeper than 100/);
  err("1".repeat(1001), /longer than 1000/);
});

Deno.test("formatNumber: integers exact, others 12 significant digits", () => {
  assert.equal(formatNumber(444), "444");
  assert.equal(formatNumber(0.1 + 0.2), "0.3");
  assert.equal(formatNumber(2 / 3), "0.666666666667");
  assert.equal(formatNumber(-1.5), "-1.5");
});

/**
 * Elementwise unary ops: one row each (name, scalar function, WGSL expression, VJP, example).
 * @module
 */
import type { KernelOp, NoParams } from "../op.ts";
import { apply1 } from "../apply.ts";
import type { Tensor } from "../tensor.ts";
import { affine, div, logOp, mul, neg, negOp } from "./arith.ts";
import { makeUnary } from "./_elementwise.ts";
import type { UnaryRow } from "./_elementwise.ts";

function sigmoidF(x: number): number {
  return x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x));
}

const ROWS: UnaryRow[] = [
  // d|x| = sign(x) dx
  {
    name: "abs",
    f: Math.abs,
    wgsl: "abs(x)",
    grad: (ct, s) => mul(ct, sign(s.x)),
    save: "x",
    kind: "normal",
    ints: true,
  },
  { name: "sign", f: Math.sign, wgsl: "sign(x)", grad: null, save: "none", kind: "normal" },
  // d exp(x) = exp(x) dx
  {
    name: "exp",
    simd: "exp",
    f: Math.exp,
    wgsl: "exp(x)",
    grad: (ct, s) => mul(ct, s.y),
    save: "y",
    kind: "normal",
  },
  // d sqrt(x) = dx / (2 sqrt(x))
  {
    name: "sqrt",
    f: Math.sqrt,
    wgsl: "sqrt(x)",
    grad: (ct, s) => div(affine(ct, 0.5), s.y),
    save: "y",
    kind: "positive",
  },
  // d x^-1/2 = -1/2 x^-3/2 dx = -1/2 y^3 dx
  {
    name: "rsqrt",
    f: (x) => 1 / Math.sqrt(x),
    wgsl: "inverseSqrt(x)",
    grad: (ct, s) => mul(affine(ct, -0.5), mul(s.y, mul(s.y, s.y))),
    save: "y",
    kind: "positive",
  },
  // d 1/x = -1/x^2 dx = -y^2 dx
  {
    name: "reciprocal",
    f: (x) => 1 / x,
    wgsl: "1.0 / x",
    grad: (ct, s) => neg(mul(ct, mul(s.y, s.y))),
    save: "y",
    kind: "positive",
  },
  // d x^2 = 2x dx
  {
    name: "square",
    f: (x) => x * x,
    wgsl: "x * x",
    grad: (ct, s) => mul(ct, affine(s.x, 2)),
    save: "x",
    kind: "normal",
    ints: true,
  },
  // d sigmoid = y (1 - y) dx
  {
    name: "sigmoid",
    simd: "sigmoid",
    f: sigmoidF,
    wgsl: "select(exp(x) / (1.0 + exp(x)), 1.0 / (1.0 + exp(-x)), x >= 0.0)",
    grad: (ct, s) => mul(ct, mul(s.y, affine(s.y, -1, 1))),
    save: "y",
    kind: "normal",
  },
  // d silu = sigmoid(x) (1 + x (1 - sigmoid(x))) dx
  {
    name: "silu",
    simd: "silu",
    f: (x) => x * sigmoidF(x),
    wgsl: "x * select(exp(x) / (1.0 + exp(x)), 1.0 / (1.0 + exp(-x)), x >= 0.0)",
    grad: (ct, s) => mul(ct, siluGrad(s.x)),
    save: "x",
    kind: "normal",
  },
  {
    name: "silu_grad",
    simd: "silu_grad",
    f: (x) => {
      const s = sigmoidF(x);
      return s * (1 + x * (1 - s));
    },
    wgsl:
      "select(exp(x) / (1.0 + exp(x)), 1.0 / (1.0 + exp(-x)), x >= 0.0) * (1.0 + x * (1.0 - select(exp(x) / (1.0 + exp(x)), 1.0 / (1.0 + exp(-x)), x >= 0.0)))",
    grad: null,
    save: "none",
    kind: "normal",
  },
  // d tanh = (1 - y^2) dx
  {
    name: "tanh",
    f: Math.tanh,
    wgsl: "tanh(clamp(x, -15.0, 15.0))",
    grad: (ct, s) => mul(ct, affine(mul(s.y, s.y), -1, 1)),
    save: "y",
    kind: "normal",
  },
  // d sin = cos dx ; d cos = -sin dx
  {
    name: "sin",
    f: Math.sin,
    wgsl: "sin(x)",
    grad: (ct, s) => mul(ct, cos(s.x)),
    save: "x",
    kind: "normal",
  },
  {
    name: "cos",
    f: Math.cos,
    wgsl: "cos(x)",
    grad: (ct, s) => neg(mul(ct, sin(s.x))),
    save: "x",
    kind: "normal",
  },
  // d relu = [x > 0] dx
  {
    name: "relu",
    f: (x) => (x > 0 ? x : 0),
    wgsl: "max(x, 0.0)",
    grad: (ct, s) => mul(ct, step(s.x)),
    save: "x",
    kind: "normal",
  },
  {
    name: "step",
    f: (x) => (x > 0 ? 1 : 0),
    wgsl: "select(0.0, 1.0, x > 0.0)",
    grad: null,
    save: "none",
    kind: "normal",
  },
  { name: "floor", f: Math.floor, wgsl: "floor(x)", grad: null, save: "none", kind: "normal" },
];

/** The unary op table, keyed by name (`neg` and `log` are defined in `arith.ts`). */
export const UNARY_OPS: Readonly<Record<string, KernelOp<NoParams>>> = {
  neg: negOp,
  log: logOp,
  ...Object.fromEntries(ROWS.map((r) => [r.name, makeUnary(r)])),
};

function un(name: string, x: Tensor): Tensor {
  return apply1(UNARY_OPS[name], [x], {});
}

/** Elementwise |x|. @param x input @returns |x| */
export function abs(x: Tensor): Tensor {
  return un("abs", x);
}
/** Elementwise sign (−1, 0, 1); not differentiable. @param x input @returns sign(x) */
export function sign(x: Tensor): Tensor {
  return un("sign", x);
}
/** Elementwise eˣ. @param x input @returns exp(x) */
export function exp(x: Tensor): Tensor {
  return un("exp", x);
}
/** Elementwise square root. @param x input @returns sqrt(x) */
export function sqrt(x: Tensor): Tensor {
  return un("sqrt", x);
}
/** Elementwise 1/sqrt(x). @param x input @returns rsqrt(x) */
export function rsqrt(x: Tensor): Tensor {
  return un("rsqrt", x);
}
/** Elementwise 1/x. @param x input @returns 1/x */
export function reciprocal(x: Tensor): Tensor {
  return un("reciprocal", x);
}
/** Elementwise x². @param x input @returns x*x */
export function square(x: Tensor): Tensor {
  return un("square", x);
}
/** Elementwise logistic sigmoid. @param x input @returns 1/(1+e^-x) */
export function sigmoid(x: Tensor): Tensor {
  return un("sigmoid", x);
}
/** Elementwise SiLU (swish): x·sigmoid(x). @param x input @returns silu(x) */
export function silu(x: Tensor): Tensor {
  return un("silu", x);
}
/** Derivative of SiLU (used by its VJP); not differentiable. @param x input @returns silu'(x) */
export function siluGrad(x: Tensor): Tensor {
  return un("silu_grad", x);
}
/** Elementwise tanh. @param x input @returns tanh(x) */
export function tanh(x: Tensor): Tensor {
  return un("tanh", x);
}
/** Elementwise sine. @param x input @returns sin(x) */
export function sin(x: Tensor): Tensor {
  return un("sin", x);
}
/** Elementwise cosine. @param x input @returns cos(x) */
export function cos(x: Tensor): Tensor {
  return un("cos", x);
}
/** Elementwise max(x, 0). @param x input @returns relu(x) */
export function relu(x: Tensor): Tensor {
  return un("relu", x);
}
/** Elementwise [x > 0] as 0/1; not differentiable. @param x input @returns step(x) */
export function step(x: Tensor): Tensor {
  return un("step", x);
}
/** Elementwise floor; not differentiable. @param x input @returns floor(x) */
export function floor(x: Tensor): Tensor {
  return un("floor", x);
}

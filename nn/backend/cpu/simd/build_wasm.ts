/**
 * Build script for the wasm SIMD elementwise kernels (exp-heavy rows: log-sum-exp, softmax,
 * cross-entropy, attention probabilities, SwiGLU, sigmoid/SiLU): generates the WebAssembly text,
 * assembles it with the npm `wabt` package and writes `kernels_wasm.ts`, which embeds the bytes as
 * base64 so that nothing is built at run time.
 *
 * ```sh
 * deno run -A nn/backend/cpu/simd/build_wasm.ts          # rewrite kernels_wasm.ts
 * deno run -A nn/backend/cpu/simd/build_wasm.ts --wat    # print the WAT
 * deno run -A nn/backend/cpu/simd/build_wasm.ts --check  # fail if kernels_wasm.ts is stale
 * ```
 *
 * Two variants are emitted, shared and private memory (shared is needed for worker threads). Only
 * plain SIMD128 is used, no relaxed SIMD: every engine computes the same bits.
 *
 * ## exp(x) in f32x4 (Cephes `expf`)
 *
 * 1. Clamp x to [-104, 88.8] with `pmin`/`pmax`, which pass NaN through. e^88.8 > FLT_MAX, so the
 *    top of the range still overflows to +Infinity, and e^-104 < 2^-150 rounds to 0 (as -Infinity
 *    must).
 * 2. n = round(x·log2 e): adding 1.5·2^23 rounds to an integer in the low mantissa bits (ties to
 *    even), so n is read both as a float (t − 1.5·2^23) and as an int (bits(t) − bits(1.5·2^23)).
 * 3. r = x − n·C1 − n·C2 with C1 + C2 = ln 2 (Cody–Waite): C1 = 0.693359375 has 9 significant
 *    bits, so n·C1 (|n| ≤ 151) is exact and x − n·C1 loses nothing; |r| ≤ ln2/2 ≈ 0.347.
 * 4. e^r ≈ 1 + r + r²·P(r), P of degree 5 (Cephes' minimax coefficients): relative error
 *    ≈ 1.2e-7 on |r| ≤ ln2/2 before rounding.
 * 5. 2^n is applied as two normal powers 2^⌊n/2⌋·2^(n−⌊n/2⌋) built from exponent bits, so results
 *    in the denormal range (x < −87.3) are rounded once, and 2^128 overflows correctly.
 *
 * Measured against `Math.exp` (f64, rounded to f32) over every f32 in [-104, 88.8]: at most 2 ulp
 * (the test and the bench check it; denormal results are within 1 ulp of the denormal grid).
 * NaN in gives NaN out; ±Infinity give +Infinity and 0.
 *
 * ## Row sums
 *
 * Σ exp(x − m) is accumulated in f64 (two f64x2 accumulators per row), as the TypeScript loops did,
 * so the sum adds no error beyond each term's own.
 *
 * ## Tails
 *
 * Rows need not be multiples of 4: the last partial vector is loaded whole (the caller leaves 16
 * bytes of padding after every buffer), the lanes past the end are masked (to -Infinity or 0) and
 * only the valid lanes are stored with `v128.store32_lane`.
 *
 * @module
 */

import { buildMain, embedWasm } from "../wasm_build.ts";

// ---- numeric constants (f32) ----

/** Inputs are clamped to [EXP_LO, EXP_HI]: e^EXP_HI overflows, e^EXP_LO rounds to 0. */
const EXP_HI = 88.8;
const EXP_LO = -104;
const LOG2E = 1.44269504088896341;
/** 1.5·2^23: adding it rounds a float of magnitude < 2^22 to an integer in the mantissa. */
const MAGIC = 12582912;
/** The f32 bits of MAGIC. */
const MAGIC_BITS = 0x4b400000;
/** ln 2 = C1 + C2, C1 with 9 significant bits so that n·C1 is exact. */
const C1 = 0.693359375;
const C2 = -2.12194440e-4;
/** Cephes expf: e^r ≈ 1 + r + r²·(((((P0 r + P1) r + P2) r + P3) r + P4) r + P5). */
const P = [
  1.9875691500e-4,
  1.3981999507e-3,
  8.3334519073e-3,
  4.1665795894e-2,
  1.6666665459e-1,
  5.0000001201e-1,
];

/** Shortest decimal that reads back as the same f32. */
function f32Lit(v: number): string {
  const f = Math.fround(v);
  if (!Number.isFinite(f)) return f > 0 ? "inf" : f < 0 ? "-inf" : "nan";
  for (let p = 1; p <= 9; p++) {
    const s = f.toPrecision(p);
    if (Math.fround(Number(s)) === f) return s;
  }
  return f.toPrecision(9);
}

// ---- tiny WAT helpers ----

const get = (n: string) => `(local.get $${n})`;
const set = (n: string, e: string) => `(local.set $${n} ${e})`;
const i32 = (v: number) => `(i32.const ${v})`;
/**
 * Vector constants are hoisted into locals set once at function entry: V8 materialises every
 * `v128.const` with several instructions at each use, which made the exp loop 4× slower.
 */
let consts = new Map<string, string>();
function constant(init: string): string {
  let name = consts.get(init);
  if (!name) consts.set(init, name = `$k${consts.size}`);
  return `(local.get ${name})`;
}
const f4 = (v: number) => {
  const s = f32Lit(v);
  return constant(`(v128.const f32x4 ${s} ${s} ${s} ${s})`);
};
const i4 = (v: number) => constant(`(v128.const i32x4 ${v} ${v} ${v} ${v})`);

/**
 * A function: `head` (name and params), `locals`, and `body`, a thunk so that the constants it uses
 * are collected and declared here.
 */
function func(head: string, locals: string, body: () => string): string {
  const saved = consts;
  consts = new Map();
  const b = body();
  const decl = [...consts.values()].map((n) => `(local ${n} v128)`).join(" ");
  const init = [...consts].map(([i, n]) => `(local.set ${n} ${i})`).join("\n    ");
  consts = saved;
  return `
  (func ${head}
    ${locals} ${decl}
    ${init}
    ${b})`;
}
const add = (a: string, b: string) => `(i32.add ${a} ${b})`;
const mul = (a: string, b: string) => `(i32.mul ${a} ${b})`;
const fadd = (a: string, b: string) => `(f32x4.add ${a} ${b})`;
const fsub = (a: string, b: string) => `(f32x4.sub ${a} ${b})`;
const fmul = (a: string, b: string) => `(f32x4.mul ${a} ${b})`;
const load = (p: string) => `(v128.load ${p})`;
const store = (p: string, v: string) => `(v128.store ${p} ${v})`;
const splat = (e: string) => `(f32x4.splat ${e})`;
const sel = (a: string, b: string, mask: string) => `(v128.bitselect ${a} ${b} ${mask})`;

const EXP_NAMES = ["ex", "et", "en", "er", "ez", "ep", "ei", "ej"];

/** Locals every function using `exp4` with suffix `sfx` must declare. */
const expLocals = (sfx = "") => EXP_NAMES.map((n) => `(local $${n}${sfx} v128)`).join(" ");

/**
 * Statements setting `$out` to exp of the f32x4 expression `x` (Cephes expf, see the module
 * comment). `$out` may be one of the caller's locals; `x` is evaluated once. Temporaries are the
 * locals of {@linkcode expLocals} with suffix `sfx`, so that independent copies can interleave.
 */
function exp4(out: string, x: string, sfx = ""): string[] {
  const [ex, et, en, er, ez, ep, ei, ej] = EXP_NAMES.map((n) => n + sfx);
  return [
    set(ex, `(f32x4.pmax (f32x4.pmin ${x} ${f4(EXP_HI)}) ${f4(EXP_LO)})`),
    // t = x·log2e + 1.5·2^23 → n = round(x·log2e) as float and as int
    set(et, fadd(fmul(get(ex), f4(LOG2E)), f4(MAGIC))),
    set(en, fsub(get(et), f4(MAGIC))),
    set(ei, `(i32x4.sub ${get(et)} ${i4(MAGIC_BITS)})`),
    // r = x − n·C1 − n·C2
    set(er, fsub(fsub(get(ex), fmul(get(en), f4(C1))), fmul(get(en), f4(C2)))),
    set(ez, fmul(get(er), get(er))),
    // P(r) by Estrin's scheme (shorter dependency chain than Horner):
    // (P4 r + P5) + r²·((P2 r + P3) + r²·(P0 r + P1))
    set(ep, fadd(fmul(f4(P[0]), get(er)), f4(P[1]))),
    set(ep, fadd(fmul(get(ep), get(ez)), fadd(fmul(f4(P[2]), get(er)), f4(P[3])))),
    set(ep, fadd(fmul(get(ep), get(ez)), fadd(fmul(f4(P[4]), get(er)), f4(P[5])))),
    // e^r = P·r² + r + 1
    set(ep, fadd(fadd(fmul(get(ep), get(ez)), get(er)), f4(1))),
    // 2^n = 2^n1 · 2^(n−n1), n1 = n >> 1, each factor built as ((k + 127) << 23)
    set(ej, `(i32x4.shr_s ${get(ei)} ${i32(1)})`),
    set(ei, `(i32x4.sub ${get(ei)} ${get(ej)})`),
    set(ej, `(i32x4.shl (i32x4.add ${get(ej)} ${i4(127)}) ${i32(23)})`),
    set(ei, `(i32x4.shl (i32x4.add ${get(ei)} ${i4(127)}) ${i32(23)})`),
    set(out, fmul(fmul(get(ep), get(ej)), get(ei))),
  ];
}

/** Lane mask of lanes < `count` (an i32 expression, 0..4). */
const laneMask = (count: string) =>
  `(i32x4.gt_s (i32x4.splat ${count}) ${constant("(v128.const i32x4 0 1 2 3)")})`;

/** Stores the first `count` (0..3) lanes of `$v` at address `p` (an expression; re-evaluated). */
function storeLanes(p: string, v: string, count: string): string {
  return [0, 1, 2].map((l) =>
    `(if (i32.gt_u ${count} ${i32(l)}) (then (v128.store32_lane offset=${l * 4} ${l} ${p} ${
      get(v)
    })))`
  ).join("\n      ");
}

// ---- elementwise maps over [i0, i1) ----

/**
 * A map over elements [i0, i1) of `ins.length` input and `outs.length` output f32 arrays (byte
 * offsets). `body(sfx)` reads locals `$in_<name><sfx>` and sets `$out_<name><sfx>`; its temporaries
 * carry the suffix too. The main loop runs two vectors per iteration (suffixes "" and "b"): the
 * exp chain is long (~60 cycles of latency), and two independent chains side by side keep the FP
 * pipes busy. `scalars` are f32 parameters (after the pointers, before the range), splatted once
 * into the v128 locals `$v_<name>`.
 */
function mapKernel(
  name: string,
  ins: string[],
  outs: string[],
  body: (sfx: string) => string[],
  extraLocals: (sfx: string) => string = () => "",
  scalars: string[] = [],
): string {
  const params = [
    ...[...ins, ...outs].map((n) => `(param $${n} i32)`),
    ...scalars.map((n) => `(param $${n} f32)`),
  ].join(" ");
  const splats = scalars.map((n) => set(`v_${n}`, splat(get(n)))).join("\n    ");
  const scalarLocals = scalars.map((n) => `(local $v_${n} v128)`).join(" ");
  const vlocals = (sfx: string) =>
    [...ins.map((n) => `$in_${n}${sfx}`), ...outs.map((n) => `$out_${n}${sfx}`)]
      .map((n) => `(local ${n} v128)`).join(" ");
  const at = (n: string, off: number) => `(i32.add ${add(get(n), get("i"))} ${i32(off)})`;
  const loads = (sfx: string, off: number) =>
    ins.map((n) => set(`in_${n}${sfx}`, load(at(n, off)))).join("\n        ");
  const stores = (sfx: string, off: number) =>
    outs.map((n) => store(at(n, off), get(`out_${n}${sfx}`))).join("\n        ");
  const tailStores = outs.map((n) => storeLanes(add(get(n), get("i")), `out_${n}`, get("rem")));
  const locals = ["", "b"].map((x) => `${vlocals(x)} ${expLocals(x)} ${extraLocals(x)}`).join(" ");
  return func(
    `(export "${name}") ${params} (param $i0 i32) (param $i1 i32)`,
    `(local $i i32) (local $end i32) (local $rem i32) ${scalarLocals} ${locals}`,
    () => {
      const a = body("").join("\n        "), b = body("b").join("\n        ");
      return `
    ${splats}
    (local.set $i (i32.shl ${get("i0")} ${i32(2)}))
    (local.set $rem (i32.and (i32.sub ${get("i1")} ${get("i0")}) ${i32(3)}))
    (local.set $end (i32.sub (i32.shl ${get("i1")} ${i32(2)}) (i32.shl ${get("rem")} ${i32(2)})))
    (block $done
      (loop $l
        (br_if $done (i32.gt_u (i32.add ${get("i")} ${i32(32)}) ${get("end")}))
        ${loads("", 0)}
        ${loads("b", 16)}
        ${a}
        ${b}
        ${stores("", 0)}
        ${stores("b", 16)}
        (local.set $i (i32.add ${get("i")} ${i32(32)}))
        (br $l)))
    (if (i32.lt_u ${get("i")} ${get("end")})
      (then
        ${loads("", 0)}
        ${a}
        ${stores("", 0)}
        (local.set $i (i32.add ${get("i")} ${i32(16)}))))
    ;; tail: garbage lanes are computed (the buffers are padded) but never stored
    (if ${get("rem")}
      (then
        ${loads("", 0)}
        ${a}
        ${tailStores.join("\n        ")}))`;
    },
  );
}

/**
 * Sigmoid pieces of `x` (a local): `$e` = e^-|x| and `$pos` = (x ≥ 0). σ(x) = 1/(1+e) for x ≥ 0
 * and e/(1+e) below; 1−σ(x) is the other one, computed this way (not as 1 − σ) so that it stays
 * accurate where σ ≈ 1. NaN fails `x ≥ 0` and propagates through e.
 */
function sigmoidParts(x: string, sfx: string): string[] {
  return [
    ...exp4(`e${sfx}`, `(f32x4.neg (f32x4.abs ${get(x)}))`, sfx),
    set(`pos${sfx}`, `(f32x4.ge ${get(x)} ${f4(0)})`),
  ];
}

const sigLocals = (sfx: string) =>
  ["e", "pos", "rd", "s", "sm"].map((n) => `(local $${n}${sfx} v128)`).join(" ");

/** Sets `$s` = σ(x) and `$sm` = 1 − σ(x) via one reciprocal rd = 1/(1+e) (each ≤ 1 ulp more). */
function sigmoidBoth(x: string, sfx: string): string[] {
  const [e, pos, rd] = [`e${sfx}`, `pos${sfx}`, `rd${sfx}`];
  return [
    ...sigmoidParts(x, sfx),
    set(rd, `(f32x4.div ${f4(1)} ${fadd(f4(1), get(e))})`),
    set(`s${sfx}`, sel(get(rd), fmul(get(e), get(rd)), get(pos))),
    set(`sm${sfx}`, sel(fmul(get(e), get(rd)), get(rd), get(pos))),
  ];
}

/** Sets `$s` = σ(x) = (x ≥ 0 ? 1 : e) / (1 + e): one division, no further rounding. */
function sigmoidOnly(x: string, sfx: string): string[] {
  const [e, pos] = [`e${sfx}`, `pos${sfx}`];
  return [
    ...sigmoidParts(x, sfx),
    set(`s${sfx}`, `(f32x4.div ${sel(f4(1), get(e), get(pos))} ${fadd(f4(1), get(e))})`),
  ];
}

const MAPS = () => [
  mapKernel("map_exp", ["x"], ["y"], (k) => exp4(`out_y${k}`, get(`in_x${k}`), k)),
  mapKernel(
    "map_sigmoid",
    ["x"],
    ["y"],
    (k) => [...sigmoidOnly(`in_x${k}`, k), set(`out_y${k}`, get(`s${k}`))],
    sigLocals,
  ),
  mapKernel(
    "map_silu",
    ["x"],
    ["y"],
    (k) => [...sigmoidOnly(`in_x${k}`, k), set(`out_y${k}`, fmul(get(`in_x${k}`), get(`s${k}`)))],
    sigLocals,
  ),
  // silu'(x) = σ(x)·(1 + x·(1 − σ(x)))
  mapKernel(
    "map_silu_grad",
    ["x"],
    ["y"],
    (k) => [
      ...sigmoidBoth(`in_x${k}`, k),
      set(`out_y${k}`, fmul(get(`s${k}`), fadd(f4(1), fmul(get(`in_x${k}`), get(`sm${k}`))))),
    ],
    sigLocals,
  ),
  // y = g·σ(g)·u
  mapKernel(
    "swiglu",
    ["g", "u"],
    ["y"],
    (k) => [
      ...sigmoidOnly(`in_g${k}`, k),
      set(`out_y${k}`, fmul(fmul(get(`in_g${k}`), get(`s${k}`)), get(`in_u${k}`))),
    ],
    sigLocals,
  ),
  // du = ct·g·σ(g) ; dg = ct·u·σ(g)·(1 + g·(1 − σ(g)))
  mapKernel(
    "swiglu_bwd",
    ["ct", "g", "u"],
    ["dg", "du"],
    (k) => [
      ...sigmoidBoth(`in_g${k}`, k),
      set(`out_du${k}`, fmul(fmul(get(`in_ct${k}`), get(`in_g${k}`)), get(`s${k}`))),
      set(
        `out_dg${k}`,
        fmul(
          fmul(fmul(get(`in_ct${k}`), get(`in_u${k}`)), get(`s${k}`)),
          fadd(f4(1), fmul(get(`in_g${k}`), get(`sm${k}`))),
        ),
      ),
    ],
    sigLocals,
  ),
  // AdamW in torch's f32 order of operations (see adamwF32 in ../threads/kernels.ts):
  // g ← g·scale; m ← m·β₁ + (1−β₁)·g; v ← v·β₂ + (1−β₂)·g·g;
  // p ← p·decay + (step·m) / (√v·(1/√bc₂) + eps)
  mapKernel(
    "adamw",
    ["p", "g", "m", "v"],
    ["po", "mo", "vo"],
    (k) => [
      set(`ag${k}`, fmul(get(`in_g${k}`), get("v_gs"))),
      set(`out_mo${k}`, fadd(fmul(get(`in_m${k}`), get("v_b1")), fmul(get("v_a1"), get(`ag${k}`)))),
      set(
        `out_vo${k}`,
        fadd(
          fmul(get(`in_v${k}`), get("v_b2")),
          fmul(fmul(get("v_a2"), get(`ag${k}`)), get(`ag${k}`)),
        ),
      ),
      set(
        `out_po${k}`,
        fadd(
          fmul(get(`in_p${k}`), get("v_decay")),
          `(f32x4.div ${fmul(get("v_step"), get(`out_mo${k}`))} ${
            fadd(fmul(`(f32x4.sqrt ${get(`out_vo${k}`)})`, get("v_ibc")), get("v_eps"))
          })`,
        ),
      ),
    ],
    (k) => `(local $ag${k} v128)`,
    ["b1", "b2", "eps", "decay", "a1", "a2", "step", "ibc", "gs"],
  ),
];

// ---- row kernels over rows [r0, r1) of a row-major matrix with row stride ld (elements) ----

/**
 * Per-row parameter block (16 bytes at `prm + 16·r`): f32 hi, f32 lo (the row's shift c = hi + lo,
 * split so that no precision is lost to rounding c to f32), f32 g (a scale), i32 lim (elements
 * [lim, n) are outside the row: -Infinity for the statistics, 0 in the outputs).
 */
const PRM = { hi: 0, lo: 4, g: 8, lim: 12 };

/** Address of row r's first element: base + r·ld·4. */
const rowAddr = (base: string) => add(get(base), mul(get("r"), `(i32.shl ${get("ld")} ${i32(2)})`));

/** Hidden-column mask of the vector at byte j of the key mask (f32, 0 = hidden). */
const keyMask = () => `(f32x4.ne ${load(add(get("mask"), get("j")))} ${f4(0)})`;

/** `valid` AND the key mask when `masked`; null when nothing is masked. */
function visible(valid: string | null, masked: boolean): string | null {
  if (!masked) return valid;
  return valid ? `(v128.and ${valid} ${keyMask()})` : keyMask();
}

/**
 * `row_stats`: for each row, m = max_j v_j and s = Σ_j exp(v_j − m) (f64) over j < lim, written as
 * f64 (m, s) at `out + 16·r`. v_j = x_j when not `attn`; with `attn`, v_j = x_j·scale, and -Infinity
 * where `mask` (a per-column f32 array, 0 = hidden; the pointer 0 = none) is 0, and lim comes from
 * the row's parameter block. The max ignores NaN (like `if (v > m) m = v`), the sum does not.
 *
 * With `softmax` the row is also overwritten with its probabilities: the sum pass stores
 * e_j = exp(v_j − m), then e_j·(1/s) (1/s rounded once from f64), 0 at hidden columns and for
 * lim ≤ j < n. That is one exp per element instead of two (stats, then exp(v − lse)); the result
 * is within 2 ulp of exp(v − lse). A row with nothing visible (m = -Infinity) becomes 0 with s = 0.
 */
function rowStats(name: string, attn: boolean, softmax: boolean): string {
  const value = (valid: string | null, masked: boolean) => {
    let v = load(add(get("row"), get("j")));
    if (attn) v = fmul(v, get("sc"));
    const m = visible(valid, masked);
    return m ? sel(v, f4(-Infinity), m) : v;
  };
  const accumulate = () => `
          (local.set $a0 (f64x2.add ${get("a0")} (f64x2.promote_low_f32x4 ${get("y")})))
          (local.set $a1 (f64x2.add ${get("a1")} (f64x2.promote_low_f32x4
            (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 ${get("y")} ${get("y")}))))`;
  const at = add(get("row"), get("j"));
  const lanesLeft = `(i32.shr_u (i32.sub ${get("nb")} ${get("j")}) ${i32(2)})`;
  // the vector at j when it may run past n: whole if it fits, else lane by lane
  const storeEdge = (v: string) => `
          (if (i32.le_u (i32.add ${get("j")} ${i32(16)}) ${get("nb")})
            (then ${store(at, get(v))})
            (else ${storeLanes(at, v, lanesLeft)}))`;
  const lane = (l: number) => `(f32x4.extract_lane ${l} ${get("vm")})`;
  const pass = (masked: boolean) => `
        ;; max over the full vectors, then the partial one
        (local.set $vm ${f4(-Infinity)})
        (local.set $j (i32.const 0))
        (block $d1 (loop $l1
          (br_if $d1 (i32.ge_u ${get("j")} ${get("end")}))
          (local.set $vm (f32x4.pmax ${get("vm")} ${value(null, masked)}))
          (local.set $j (i32.add ${get("j")} ${i32(16)}))
          (br $l1)))
        (if ${get("rem")} (then
          (local.set $vm (f32x4.pmax ${get("vm")} ${value(laneMask(get("rem")), masked)}))))
        (local.set $m ${lane(0)})
        (if (f32.gt ${lane(1)} ${get("m")}) (then (local.set $m ${lane(1)})))
        (if (f32.gt ${lane(2)} ${get("m")}) (then (local.set $m ${lane(2)})))
        (if (f32.gt ${lane(3)} ${get("m")}) (then (local.set $m ${lane(3)})))
        (local.set $vm ${splat(get("m"))})
        ${
    softmax
      ? `;; nothing visible: no exps (they would be NaN), the row becomes 0
        (if (f32.eq ${
        get("m")
      } (f32.const -inf)) (then (local.set $end (i32.const 0)) (local.set $rem (i32.const 0))))`
      : ""
  }
        ;; Σ exp(v − m) in two f64x2 accumulators${softmax ? ", storing each exp" : ""}
        (local.set $a0 (v128.const i64x2 0 0))
        (local.set $a1 (v128.const i64x2 0 0))
        (local.set $j (i32.const 0))
        (block $d2 (loop $l2
          (br_if $d2 (i32.ge_u ${get("j")} ${get("end")}))
          ${exp4("y", fsub(value(null, masked), get("vm"))).join("\n          ")}
          ${accumulate()}
          ${softmax ? store(at, get("y")) : ""}
          (local.set $j (i32.add ${get("j")} ${i32(16)}))
          (br $l2)))
        (if ${get("rem")} (then
          ${exp4("y", fsub(value(laneMask(get("rem")), masked), get("vm"))).join("\n          ")}
          ${accumulate()}
          ${softmax ? storeEdge("y") : ""}))`;
  // probabilities: e·(1/s) over [0, lim) (hidden entries are 0 already), then zeros up to n
  const normalize = `
      (local.set $vm ${splat(`(f32.demote_f64 (f64.div (f64.const 1) ${get("sum")}))`)})
      (local.set $j (i32.const 0))
      (block $d3 (loop $l3
        (br_if $d3 (i32.ge_u ${get("j")} ${get("end")}))
        ${store(at, fmul(load(at), get("vm")))}
        (local.set $j (i32.add ${get("j")} ${i32(16)}))
        (br $l3)))
      (if ${get("rem")} (then
        (local.set $y ${fmul(load(at), get("vm"))})
        ${storeEdge("y")}
        (local.set $j (i32.add ${get("j")} ${i32(16)}))))
      (block $d4 (loop $l4
        (br_if $d4 (i32.gt_u (i32.add ${get("j")} ${i32(16)}) ${get("nb")}))
        ${store(at, "(v128.const i64x2 0 0)")}
        (local.set $j (i32.add ${get("j")} ${i32(16)}))
        (br $l4)))
      (local.set $y (v128.const i64x2 0 0))
      (if (i32.lt_u ${get("j")} ${get("nb")}) (then ${storeLanes(at, "y", lanesLeft)}))`;
  const attnParams = attn ? "(param $prm i32) (param $scale f32) (param $mask i32)" : "";
  const outAddr = add(get("out"), `(i32.shl ${get("r")} ${i32(4)})`);
  return func(
    `(export "${name}") (param $x i32) (param $ld i32) (param $n i32) ${attnParams}
      (param $out i32) (param $r0 i32) (param $r1 i32)`,
    `(local $r i32) (local $row i32) (local $j i32) (local $end i32) (local $rem i32) (local $lim i32)
    (local $nb i32) (local $m f32) (local $sum f64)
    (local $vm v128) (local $y v128) (local $a0 v128) (local $a1 v128) (local $sc v128)
    ${expLocals()}`,
    () => `
    ${attn ? `(local.set $sc ${splat(get("scale"))})` : ""}
    (local.set $nb (i32.shl ${get("n")} ${i32(2)}))
    (local.set $r ${get("r0")})
    (block $done (loop $rows
      (br_if $done (i32.ge_u ${get("r")} ${get("r1")}))
      (local.set $row ${rowAddr("x")})
      (local.set $lim ${
      attn
        ? `(i32.load offset=${PRM.lim} ${add(get("prm"), `(i32.shl ${get("r")} ${i32(4)})`)})`
        : get("n")
    })
      (local.set $rem (i32.and ${get("lim")} ${i32(3)}))
      (local.set $end (i32.shl (i32.sub ${get("lim")} ${get("rem")}) ${i32(2)}))
      ${attn ? `(if ${get("mask")} (then ${pass(true)}) (else ${pass(false)}))` : pass(false)}
      (local.set $sum
        (f64.add (f64.add (f64x2.extract_lane 0 ${get("a0")}) (f64x2.extract_lane 1 ${get("a0")}))
                 (f64.add (f64x2.extract_lane 0 ${get("a1")}) (f64x2.extract_lane 1 ${get("a1")}))))
      (f64.store ${outAddr} (f64.promote_f32 ${get("m")}))
      (f64.store offset=8 ${outAddr} ${get("sum")})
      ${softmax ? normalize : ""}
      (local.set $r (i32.add ${get("r")} ${i32(1)}))
      (br $rows)))`,
  );
}

/**
 * `row_exp`: y_j = exp((v_j − hi) − lo)·g for j < lim and 0 for lim ≤ j < n, with v and the
 * per-row (hi, lo, g, lim) as in {@linkcode rowStats}; with `attn` hidden columns give 0. y may
 * alias x.
 */
function rowExp(name: string, attn: boolean): string {
  const value = () => {
    const v = load(add(get("row"), get("j")));
    return attn ? fmul(v, get("sc")) : v;
  };
  const compute = (masked: boolean, valid: string | null) => {
    const m = visible(valid, masked);
    return [
      ...exp4("y", fsub(fsub(value(), get("vh")), get("vl"))),
      set("y", fmul(get("y"), get("vg"))),
      m ? set("y", `(v128.and ${get("y")} ${m})`) : "",
    ].join("\n          ");
  };
  const lanesLeft = `(i32.shr_u (i32.sub ${get("nb")} ${get("j")}) ${i32(2)})`;
  const pass = (masked: boolean) => `
        (local.set $j (i32.const 0))
        (block $d1 (loop $l1
          (br_if $d1 (i32.ge_u ${get("j")} ${get("end")}))
          ${compute(masked, null)}
          ${store(add(get("dst"), get("j")), get("y"))}
          (local.set $j (i32.add ${get("j")} ${i32(16)}))
          (br $l1)))
        ;; the partial vector at lim: lanes ≥ lim are zeroed
        (if ${get("rem")} (then
          ${compute(masked, laneMask(get("rem")))}
          (if (i32.le_u (i32.add ${get("j")} ${i32(16)}) ${get("nb")})
            (then ${store(add(get("dst"), get("j")), get("y"))})
            (else ${storeLanes(add(get("dst"), get("j")), "y", lanesLeft)}))
          (local.set $j (i32.add ${get("j")} ${i32(16)}))))`;
  const attnParams = attn ? "(param $scale f32) (param $mask i32)" : "";
  return func(
    `(export "${name}") (param $x i32) (param $out i32) (param $ld i32) (param $n i32)
      (param $prm i32) ${attnParams} (param $r0 i32) (param $r1 i32)`,
    `(local $r i32) (local $row i32) (local $dst i32) (local $j i32) (local $end i32) (local $rem i32)
    (local $lim i32) (local $nb i32) (local $p i32) (local $y v128) (local $z v128)
    (local $vh v128) (local $vl v128) (local $vg v128) (local $sc v128)
    ${expLocals()}`,
    () => `
    ${attn ? `(local.set $sc ${splat(get("scale"))})` : ""}
    (local.set $nb (i32.shl ${get("n")} ${i32(2)}))
    (local.set $r ${get("r0")})
    (block $done (loop $rows
      (br_if $done (i32.ge_u ${get("r")} ${get("r1")}))
      (local.set $row ${rowAddr("x")})
      (local.set $dst ${rowAddr("out")})
      (local.set $p ${add(get("prm"), `(i32.shl ${get("r")} ${i32(4)})`)})
      (local.set $vh (v128.load32_splat offset=${PRM.hi} ${get("p")}))
      (local.set $vl (v128.load32_splat offset=${PRM.lo} ${get("p")}))
      (local.set $vg (v128.load32_splat offset=${PRM.g} ${get("p")}))
      (local.set $lim (i32.load offset=${PRM.lim} ${get("p")}))
      (local.set $rem (i32.and ${get("lim")} ${i32(3)}))
      (local.set $end (i32.shl (i32.sub ${get("lim")} ${get("rem")}) ${i32(2)}))
      ${attn ? `(if ${get("mask")} (then ${pass(true)}) (else ${pass(false)}))` : pass(false)}
      ;; zeros from the next vector boundary to n
      (block $d3 (loop $l3
        (br_if $d3 (i32.gt_u (i32.add ${get("j")} ${i32(16)}) ${get("nb")}))
        ${store(add(get("dst"), get("j")), "(v128.const i64x2 0 0)")}
        (local.set $j (i32.add ${get("j")} ${i32(16)}))
        (br $l3)))
      (local.set $z (v128.const i64x2 0 0))
      (if (i32.lt_u ${get("j")} ${get("nb")}) (then
        ${storeLanes(add(get("dst"), get("j")), "z", lanesLeft)}))
      (local.set $r (i32.add ${get("r")} ${i32(1)}))
      (br $rows)))`,
  );
}

/**
 * `attn_ds`: dS = P ⊙ (dP − D_r)·scale over rows [r0, r1) of n columns, in place in dP; D is an f32
 * per row (rowsum(dO ⊙ O)).
 */
function attnDs(): string {
  const ds = () =>
    fmul(
      fmul(load(add(get("rp"), get("j"))), fsub(load(add(get("rd"), get("j"))), get("vd"))),
      get("sc"),
    );
  return func(
    `(export "attn_ds") (param $p i32) (param $dp i32) (param $ld i32) (param $n i32) (param $d i32)
      (param $scale f32) (param $r0 i32) (param $r1 i32)`,
    `(local $r i32) (local $rp i32) (local $rd i32) (local $j i32) (local $end i32) (local $rem i32)
    (local $vd v128) (local $sc v128) (local $y v128)`,
    () => `
    (local.set $sc ${splat(get("scale"))})
    (local.set $rem (i32.and ${get("n")} ${i32(3)}))
    (local.set $end (i32.shl (i32.sub ${get("n")} ${get("rem")}) ${i32(2)}))
    (local.set $r ${get("r0")})
    (block $done (loop $rows
      (br_if $done (i32.ge_u ${get("r")} ${get("r1")}))
      (local.set $rp ${rowAddr("p")})
      (local.set $rd ${rowAddr("dp")})
      (local.set $vd (v128.load32_splat ${add(get("d"), `(i32.shl ${get("r")} ${i32(2)})`)}))
      (local.set $j (i32.const 0))
      (block $d1 (loop $l1
        (br_if $d1 (i32.ge_u ${get("j")} ${get("end")}))
        ${store(add(get("rd"), get("j")), ds())}
        (local.set $j (i32.add ${get("j")} ${i32(16)}))
        (br $l1)))
      (if ${get("rem")} (then
        (local.set $y ${ds()})
        ${storeLanes(add(get("rd"), get("j")), "y", get("rem"))}))
      (local.set $r (i32.add ${get("r")} ${i32(1)}))
      (br $rows)))`,
  );
}

// ---- RMSNorm rows in f64 lanes --------------------------------------------------------------

/** f64x2 of lanes 0–1 of the f32x4 local `v`. */
const lo64 = (v: string) => `(f64x2.promote_low_f32x4 ${get(v)})`;
/** f64x2 of lanes 2–3 of the f32x4 local `v`. */
const hi64 = (v: string) =>
  `(f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 ${get(v)} ${
    get(v)
  }))`;
/** The f32x4 of two f64x2 expressions (lanes 0–1 from `a`, 2–3 from `b`), each rounded once. */
const join32 = (a: string, b: string) =>
  `(i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 (f32x4.demote_f64x2_zero ${a}) (f32x4.demote_f64x2_zero ${b}))`;
/** Sum of the four f64 lanes of two f64x2 locals, in lane order. */
const lanes4 = (a: string, b: string) =>
  `(f64.add (f64.add (f64.add (f64x2.extract_lane 0 ${get(a)}) (f64x2.extract_lane 1 ${
    get(a)
  })) (f64x2.extract_lane 0 ${get(b)})) (f64x2.extract_lane 1 ${get(b)}))`;
const d2 = (op: string, a: string, b: string) => `(f64x2.${op} ${a} ${b})`;
/** f64 of the f32 at byte address `p`. */
const ld64 = (p: string) => `(f64.promote_f32 (f32.load ${p}))`;

/**
 * A loop over the row's elements: `vec` on each whole vector (byte offset `$j`, step 16, up to
 * `$end`), then `scalar` on each remaining element (step 4, up to `$hb`).
 */
function rowLoop(label: string, vec: string[], scalar: string[]): string {
  return `
      (local.set $j (i32.const 0))
      (block $${label}_d (loop $${label}_l
        (br_if $${label}_d (i32.ge_u ${get("j")} ${get("end")}))
        ${vec.join("\n        ")}
        (local.set $j (i32.add ${get("j")} ${i32(16)}))
        (br $${label}_l)))
      (block $${label}_td (loop $${label}_tl
        (br_if $${label}_td (i32.ge_u ${get("j")} ${get("hb")}))
        ${scalar.join("\n        ")}
        (local.set $j (i32.add ${get("j")} ${i32(4)}))
        (br $${label}_tl)))`;
}

/**
 * The row loop of the RMSNorm kernels over rows [r0, r1) of width $h: sets $hb (a row's bytes) and
 * $end (its whole vectors' bytes), then for each row $r sets each local of `rowPtrs` to its base
 * pointer plus the row's offset and runs `body`.
 */
function rmsRows(rowPtrs: [local: string, base: string][], body: string): string {
  const ptrs = rowPtrs.map(([l, b]) => set(l, add(get(b), mul(get("r"), get("hb")))));
  return `
    (local.set $hb (i32.shl ${get("h")} ${i32(2)}))
    (local.set $end (i32.and ${get("hb")} ${i32(-16)}))
    (local.set $r ${get("r0")})
    (block $done (loop $rows
      (br_if $done (i32.ge_u ${get("r")} ${get("r1")}))
      ${ptrs.join("\n      ")}
      ${body}
      (local.set $r (i32.add ${get("r")} ${i32(1)}))
      (br $rows)))`;
}

/**
 * `rms_fwd`: rows [r0, r1) of x [rows, h] (row stride h): rstd = 1/√(Σx²/h + eps) and
 * y = w·(x·rstd), the arithmetic of the TypeScript loop (f64, each output rounded once to f32)
 * with Σx² in four f64 lanes. y may be x.
 */
function rmsFwd(): string {
  const at = (base: string) => add(get(base), get("j"));
  return func(
    `(export "rms_fwd") (param $x i32) (param $w i32) (param $y i32) (param $rstd i32)
      (param $h i32) (param $eps f64) (param $r0 i32) (param $r1 i32)`,
    `(local $r i32) (local $j i32) (local $end i32) (local $hb i32) (local $xr i32) (local $yr i32)
    (local $ss f64) (local $rs f64) (local $s f64) (local $a0 v128) (local $a1 v128)
    (local $v v128) (local $wv v128) (local $rsv v128)`,
    () =>
      rmsRows(
        [["xr", "x"], ["yr", "y"]],
        `
      (local.set $a0 (v128.const f64x2 0 0))
      (local.set $a1 (v128.const f64x2 0 0))
      (local.set $ss (f64.const 0))
      ${
          rowLoop("ss", [
            set("v", load(at("xr"))),
            set("a0", d2("add", get("a0"), d2("mul", lo64("v"), lo64("v")))),
            set("a1", d2("add", get("a1"), d2("mul", hi64("v"), hi64("v")))),
          ], [
            set("s", ld64(at("xr"))),
            set("ss", `(f64.add ${get("ss")} (f64.mul ${get("s")} ${get("s")}))`),
          ])
        }
      (local.set $ss (f64.add ${lanes4("a0", "a1")} ${get("ss")}))
      (local.set $rs (f64.div (f64.const 1) (f64.sqrt (f64.add (f64.div ${get("ss")}
        (f64.convert_i32_u ${get("h")})) ${get("eps")}))))
      (f32.store ${add(get("rstd"), `(i32.shl ${get("r")} ${i32(2)})`)} (f32.demote_f64 ${
          get("rs")
        }))
      (local.set $rsv (f64x2.splat ${get("rs")}))
      ${
          rowLoop("y", [
            set("v", load(at("xr"))),
            set("wv", load(add(get("w"), get("j")))),
            store(
              at("yr"),
              join32(
                d2("mul", lo64("wv"), d2("mul", lo64("v"), get("rsv"))),
                d2("mul", hi64("wv"), d2("mul", hi64("v"), get("rsv"))),
              ),
            ),
          ], [
            `(f32.store ${at("yr")} (f32.demote_f64 (f64.mul ${ld64(add(get("w"), get("j")))}
          (f64.mul ${ld64(at("xr"))} ${get("rs")}))))`,
          ])
        }`,
      ),
  );
}

/**
 * `rms_bwd`: rows [r0, r1) of RMSNorm's backward, the arithmetic of the TypeScript loop in f64
 * lanes: c = rstd³·(Σ w·ct·x)/h (the sum in four lanes), dx = rstd·w·ct − x·c, and
 * dw += ct·x·rstd into the f64 partial at `dw` (h values). dx may be ct.
 */
function rmsBwd(): string {
  const at = (base: string) => add(get(base), get("j"));
  const dwAt = (hi: boolean) =>
    add(add(get("dw"), `(i32.shl ${get("j")} ${i32(1)})`), i32(hi ? 16 : 0));
  return func(
    `(export "rms_bwd") (param $ct i32) (param $x i32) (param $w i32) (param $rstd i32)
      (param $dx i32) (param $dw i32) (param $h i32) (param $r0 i32) (param $r1 i32)`,
    `(local $r i32) (local $j i32) (local $end i32) (local $hb i32) (local $cr i32) (local $xr i32)
    (local $dr i32) (local $dot f64) (local $rs f64) (local $c f64) (local $a0 v128)
    (local $a1 v128) (local $cv v128) (local $xv v128) (local $wv v128) (local $rsv v128)
    (local $ccv v128) (local $t f64)`,
    () =>
      rmsRows(
        [["cr", "ct"], ["xr", "x"], ["dr", "dx"]],
        `
      (local.set $rs ${ld64(add(get("rstd"), `(i32.shl ${get("r")} ${i32(2)})`))})
      (local.set $a0 (v128.const f64x2 0 0))
      (local.set $a1 (v128.const f64x2 0 0))
      (local.set $dot (f64.const 0))
      ${
          rowLoop("dot", [
            set("cv", load(at("cr"))),
            set("xv", load(at("xr"))),
            set("wv", load(add(get("w"), get("j")))),
            set(
              "a0",
              d2("add", get("a0"), d2("mul", d2("mul", lo64("wv"), lo64("cv")), lo64("xv"))),
            ),
            set(
              "a1",
              d2("add", get("a1"), d2("mul", d2("mul", hi64("wv"), hi64("cv")), hi64("xv"))),
            ),
          ], [
            set(
              "dot",
              `(f64.add ${get("dot")} (f64.mul (f64.mul ${ld64(add(get("w"), get("j")))} ${
                ld64(at("cr"))
              }) ${ld64(at("xr"))}))`,
            ),
          ])
        }
      (local.set $dot (f64.add ${lanes4("a0", "a1")} ${get("dot")}))
      (local.set $c (f64.div (f64.mul (f64.mul (f64.mul ${get("rs")} ${get("rs")}) ${get("rs")})
        ${get("dot")}) (f64.convert_i32_u ${get("h")})))
      (local.set $rsv (f64x2.splat ${get("rs")}))
      (local.set $ccv (f64x2.splat ${get("c")}))
      ${
          rowLoop("dx", [
            set("cv", load(at("cr"))),
            set("xv", load(at("xr"))),
            set("wv", load(add(get("w"), get("j")))),
            store(
              dwAt(false),
              d2(
                "add",
                load(dwAt(false)),
                d2("mul", d2("mul", lo64("cv"), lo64("xv")), get("rsv")),
              ),
            ),
            store(
              dwAt(true),
              d2("add", load(dwAt(true)), d2("mul", d2("mul", hi64("cv"), hi64("xv")), get("rsv"))),
            ),
            store(
              at("dr"),
              join32(
                d2(
                  "sub",
                  d2("mul", d2("mul", get("rsv"), lo64("wv")), lo64("cv")),
                  d2("mul", lo64("xv"), get("ccv")),
                ),
                d2(
                  "sub",
                  d2("mul", d2("mul", get("rsv"), hi64("wv")), hi64("cv")),
                  d2("mul", hi64("xv"), get("ccv")),
                ),
              ),
            ),
          ], [
            set("t", ld64(at("cr"))),
            `(f64.store ${dwAt(false)} (f64.add (f64.load ${dwAt(false)}) (f64.mul (f64.mul ${
              get("t")
            } ${ld64(at("xr"))}) ${get("rs")})))`,
            `(f32.store ${at("dr")} (f32.demote_f64 (f64.sub (f64.mul (f64.mul ${get("rs")} ${
              ld64(add(get("w"), get("j")))
            }) ${get("t")}) (f64.mul ${ld64(at("xr"))} ${get("c")}))))`,
          ])
        }`,
      ),
  );
}

/**
 * `rope`: rotate-half RoPE over rows [r0, r1) of x [rows, nh, hd] with each row's cos and sin rows
 * (hd values) at `c + r·hd·4` and `s + r·hd·4`: y₁ = x₁·c₁ − (x₂·sg)·s₁, y₂ = x₂·c₂ + (x₁·sg)·s₂
 * (first and second halves), the TypeScript loop's f64 arithmetic in f64x2 lanes, each output
 * rounded once. y may be x.
 */
function rope(): string {
  const ld = (base: string, half: boolean) =>
    load(add(add(get(base), get("j")), half ? get("hb") : i32(0)));
  const f64s = (base: string, half: boolean) =>
    `(f64.promote_f32 (f32.load ${add(add(get(base), get("j")), half ? get("hb") : i32(0))}))`;
  const y = (a: string, b: string, c: string, d: string, op: string, half: "lo" | "hi") => {
    const p = half === "lo" ? lo64 : hi64;
    return d2(op, d2("mul", p(a), p(b)), d2("mul", d2("mul", p(c), get("sgv")), p(d)));
  };
  return func(
    `(export "rope") (param $x i32) (param $c i32) (param $s i32) (param $y i32) (param $nh i32)
      (param $hd i32) (param $sg f64) (param $r0 i32) (param $r1 i32)`,
    `(local $r i32) (local $h i32) (local $j i32) (local $end i32) (local $hb i32) (local $rb i32)
    (local $xr i32) (local $yr i32) (local $cr i32) (local $sr i32) (local $sgv v128)
    (local $x1 v128) (local $x2 v128) (local $c1 v128) (local $s1 v128) (local $c2 v128)
    (local $s2 v128) (local $a f64) (local $b f64)`,
    () => `
    ;; $hb: bytes of half a head (the tail bound of rowLoop); $rb: bytes of a head
    (local.set $rb (i32.shl ${get("hd")} ${i32(2)}))
    (local.set $hb (i32.shr_u ${get("rb")} ${i32(1)}))
    (local.set $end (i32.and ${get("hb")} ${i32(-16)}))
    (local.set $sgv (f64x2.splat ${get("sg")}))
    (local.set $r ${get("r0")})
    (block $done (loop $rows
      (br_if $done (i32.ge_u ${get("r")} ${get("r1")}))
      (local.set $cr ${add(get("c"), mul(get("r"), get("rb")))})
      (local.set $sr ${add(get("s"), mul(get("r"), get("rb")))})
      (local.set $h (i32.const 0))
      (block $hdone (loop $heads
        (br_if $hdone (i32.ge_u ${get("h")} ${get("nh")}))
        (local.set $xr ${add(get("x"), mul(add(mul(get("r"), get("nh")), get("h")), get("rb")))})
        (local.set $yr ${add(get("y"), mul(add(mul(get("r"), get("nh")), get("h")), get("rb")))})
        ${
      rowLoop("rp", [
        set("x1", ld("xr", false)),
        set("x2", ld("xr", true)),
        set("c1", ld("cr", false)),
        set("s1", ld("sr", false)),
        set("c2", ld("cr", true)),
        set("s2", ld("sr", true)),
        store(
          add(get("yr"), get("j")),
          join32(y("x1", "c1", "x2", "s1", "sub", "lo"), y("x1", "c1", "x2", "s1", "sub", "hi")),
        ),
        store(
          add(add(get("yr"), get("j")), get("hb")),
          join32(y("x2", "c2", "x1", "s2", "add", "lo"), y("x2", "c2", "x1", "s2", "add", "hi")),
        ),
      ], [
        set("a", f64s("xr", false)),
        set("b", f64s("xr", true)),
        `(f32.store ${add(get("yr"), get("j"))} (f32.demote_f64 (f64.sub (f64.mul ${get("a")} ${
          f64s("cr", false)
        }) (f64.mul (f64.mul ${get("b")} ${get("sg")}) ${f64s("sr", false)}))))`,
        `(f32.store ${add(add(get("yr"), get("j")), get("hb"))} (f32.demote_f64 (f64.add (f64.mul ${
          get("b")
        } ${f64s("cr", true)}) (f64.mul (f64.mul ${get("a")} ${get("sg")}) ${f64s("sr", true)}))))`,
      ])
    }
        (local.set $h (i32.add ${get("h")} ${i32(1)}))
        (br $heads)))
      (local.set $r (i32.add ${get("r")} ${i32(1)}))
      (br $rows)))`,
  );
}

// ---- bf16 storage: widening and rounding ----

/**
 * `bf16_to_f32(src, dst, n)`: n bf16 values at byte `src` widened to f32 at `dst` (exact: the bits
 * shifted up 16), eight per vector, then one at a time.
 */
function bf16ToF32(): string {
  return func(
    `(export "bf16_to_f32") (param $src i32) (param $dst i32) (param $n i32)`,
    `(local $i i32) (local $v v128)`,
    () => `
    (block $done
      (loop $l
        (br_if $done (i32.gt_u (i32.add ${get("i")} ${i32(8)}) ${get("n")}))
        ${set("v", load(add(get("src"), `(i32.shl ${get("i")} ${i32(1)})`)))}
        ${
      store(
        add(get("dst"), `(i32.shl ${get("i")} ${i32(2)})`),
        `(i32x4.shl (i32x4.extend_low_i16x8_u ${get("v")}) ${i32(16)})`,
      )
    }
        (v128.store offset=16 ${add(get("dst"), `(i32.shl ${get("i")} ${i32(2)})`)}
          (i32x4.shl (i32x4.extend_high_i16x8_u ${get("v")}) ${i32(16)}))
        (local.set $i (i32.add ${get("i")} ${i32(8)}))
        (br $l)))
    (block $tail
      (loop $t
        (br_if $tail (i32.ge_u ${get("i")} ${get("n")}))
        (i32.store ${add(get("dst"), `(i32.shl ${get("i")} ${i32(2)})`)}
          (i32.shl (i32.load16_u ${add(get("src"), `(i32.shl ${get("i")} ${i32(1)})`)}) ${i32(16)}))
        (local.set $i (i32.add ${get("i")} ${i32(1)}))
        (br $t)))`,
  );
}

/**
 * The bf16 bits of f32 bits `v` (an i32x4 expression, used thrice): round to nearest even; NaN stays
 * NaN with its quiet bit set, as `toBf16` in `../gemm/bf16.ts`.
 */
function roundBits4(v: string): string {
  const top = `(i32x4.shr_u ${v} ${i32(16)})`;
  const rounded = `(i32x4.shr_u (i32x4.add (i32x4.add ${v} ${i4(0x7fff)}) (v128.and ${top} ${
    i4(1)
  })) ${i32(16)})`;
  const nan = `(i32x4.gt_s (v128.and ${v} ${i4(0x7fffffff)}) ${i4(0x7f800000)})`;
  return sel(`(v128.or ${top} ${i4(0x40)})`, rounded, nan);
}

/**
 * `f32_to_bf16(src, dst, n)`: n f32 values at byte `src` rounded to bf16 bits at `dst` (round to
 * nearest even, NaN kept), eight per vector (two f32x4 narrowed), then one at a time.
 */
function f32ToBf16(): string {
  const scalar = (v: string) =>
    `(select (i32.or (i32.shr_u ${v} ${i32(16)}) ${i32(0x40)})
            (i32.shr_u (i32.add (i32.add ${v} ${i32(0x7fff)}) (i32.and (i32.shr_u ${v} ${
      i32(16)
    }) ${i32(1)})) ${i32(16)})
            (i32.gt_u (i32.and ${v} ${i32(0x7fffffff)}) ${i32(0x7f800000)}))`;
  return func(
    `(export "f32_to_bf16") (param $src i32) (param $dst i32) (param $n i32)`,
    `(local $i i32) (local $a v128) (local $b v128) (local $w i32)`,
    () => `
    (block $done
      (loop $l
        (br_if $done (i32.gt_u (i32.add ${get("i")} ${i32(8)}) ${get("n")}))
        ${set("a", load(add(get("src"), `(i32.shl ${get("i")} ${i32(2)})`)))}
        ${set("b", `(v128.load offset=16 ${add(get("src"), `(i32.shl ${get("i")} ${i32(2)})`)})`)}
        ${set("a", roundBits4(get("a")))}
        ${set("b", roundBits4(get("b")))}
        ${
      store(
        add(get("dst"), `(i32.shl ${get("i")} ${i32(1)})`),
        `(i16x8.narrow_i32x4_u ${get("a")} ${get("b")})`,
      )
    }
        (local.set $i (i32.add ${get("i")} ${i32(8)}))
        (br $l)))
    (block $tail
      (loop $t
        (br_if $tail (i32.ge_u ${get("i")} ${get("n")}))
        ${set("w", `(i32.load ${add(get("src"), `(i32.shl ${get("i")} ${i32(2)})`)})`)}
        (i32.store16 ${add(get("dst"), `(i32.shl ${get("i")} ${i32(1)})`)} ${scalar(get("w"))})
        (local.set $i (i32.add ${get("i")} ${i32(1)}))
        (br $t)))`,
  );
}

/** The whole module. */
export function moduleWat(shared: boolean): string {
  return `(module
  (import "env" "memory" (memory 1 65536${shared ? " shared" : ""}))
${MAPS().join("\n")}
${rowStats("row_stats", false, false)}
${rowStats("row_softmax", false, true)}
${rowStats("attn_softmax", true, true)}
${rowExp("row_exp", false)}
${rowExp("attn_exp", true)}
${attnDs()}
${rmsFwd()}
${rmsBwd()}
${rope()}
${bf16ToF32()}
${f32ToBf16()}
)
`;
}

function build(): Promise<string> {
  const header = [
    "// Generated by build_wasm.ts from the WAT it writes; do not edit. Rebuild with:",
    "//   deno run -A nn/backend/cpu/simd/build_wasm.ts",
  ];
  const modules = [true, false].map((shared) => ({
    name: `WASM_${shared ? "SHARED" : "PRIVATE"}`,
    doc: `SIMD kernels, ${shared ? "shared" : "private"} memory`,
    file: `simd_${shared ? "shared" : "private"}.wat`,
    wat: moduleWat(shared),
  }));
  return embedWasm(header, modules, { simd: true, threads: true, bulk_memory: true });
}

if (import.meta.main) {
  await buildMain(
    Deno.args,
    new URL("./kernels_wasm.ts", import.meta.url),
    "nn/backend/cpu/simd/build_wasm.ts",
    build,
    () => moduleWat(true),
  );
}

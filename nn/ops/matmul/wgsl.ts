/**
 * WGSL of `matmul` (C = op(A)·op(B), batched, transpose flags read in place — backward never
 * materialises a transpose). Two variants:
 * - "blocked" (software adapters): each invocation keeps a TM×TN block of C in registers and
 *   reads A and B straight from storage, vec4 along the contiguous axis when it is a multiple
 *   of 4 — llvmpipe turns every storage or workgroup load into a per-lane loop, so fewer, wider
 *   loads and no workgroup memory win there.
 * - "tiled" (real GPUs): K slices staged in workgroup memory by 256-invocation workgroups;
 *   128×128 output tiles with 8×8 outputs per invocation when both sides reach 128, else
 *   64×64 tiles with 4×4.
 * @module
 */
// M×K · K×N → M×N; A stored [K, M] with transA, B stored [N, K] with transB
import type { WgslDevice, WgslKernel } from "../../op.ts";
import { cachedCode } from "../../backend/webgpu/wgsl.ts";

/** Problem description of one matmul dispatch. */
export interface MatmulDims {
  /** Rows of C. */
  m: number;
  /** Columns of C. */
  n: number;
  /** Inner dimension. */
  k: number;
  /** Number of products. */
  batch: number;
  /** Element strides between batches (0 = shared). */
  strideA: number;
  /** B batch stride. */
  strideB: number;
  /** A stored transposed. */
  transA: boolean;
  /** B stored transposed. */
  transB: boolean;
  /**
   * Round both operands to f16 (the float16 precision, `shader-f16`): products of f16 values
   * accumulated in f32, workgroup tiles stored as f16. Default false (f32 operands).
   */
  f16?: boolean;
}

/**
 * What the float16 precision changes in a kernel: the directive it starts with, the element type
 * operands are held in (workgroup tiles), and `widen`, which reads a vec4 of that type as
 * vec4<f32> for the f32 sums (the identity in f32).
 */
function operandType(d: MatmulDims): {
  enable: string;
  elem: "f16" | "f32";
  widen: (x: string) => string;
} {
  return d.f16
    ? { enable: "enable f16;\n", elem: "f16", widen: (x) => `vec4<f32>(${x})` }
    : { enable: "", elem: "f32", widen: (x) => x };
}

const UNIFORMS = `struct U { m: u32, n: u32, k: u32, lda: u32, ldb: u32, sa: u32, sb: u32, sc: u32 }
@group(1) @binding(0) var<uniform> u: U;`;

function uniformWords(d: MatmulDims): number[] {
  const lda = d.transA ? d.m : d.k, ldb = d.transB ? d.k : d.n;
  return [d.m, d.n, d.k, lda, ldb, d.strideA, d.strideB, d.m * d.n];
}

/** Register-blocked kernel source for block TM×TN (TM, TN multiples of 4). */
function blockedCode(d: MatmulDims, tm: number, tn: number): string {
  // vec4 loads need the contiguous axis (and every offset) to be a multiple of 4
  const vecA = d.transA ? d.m % 4 === 0 && tm % 4 === 0 : d.k % 4 === 0;
  const vecB = d.transB ? d.k % 4 === 0 : d.n % 4 === 0;
  // the float16 precision rounds each loaded k slice to f16 (exact products, f32 sums)
  const { enable, elem, widen } = operandType(d);
  const round = (v: string) => d.f16 ? widen(`vec4<${elem}>(${v})`) : v;
  const L: string[] = enable ? [enable] : [];
  const I = [...Array(tm).keys()], J = [...Array(tn).keys()], KK = [0, 1, 2, 3];
  L.push(`@group(0) @binding(0) var<storage, read> A: array<${vecA ? "vec4<f32>" : "f32"}>;`);
  L.push(`@group(0) @binding(1) var<storage, read> B: array<${vecB ? "vec4<f32>" : "f32"}>;`);
  L.push(`@group(0) @binding(2) var<storage, read_write> C: array<f32>;`);
  L.push(UNIFORMS);
  L.push(`@compute @workgroup_size(8, 8)`);
  L.push(`fn main(@builtin(global_invocation_id) gid: vec3<u32>) {`);
  L.push(`  let m0 = gid.y * ${tm}u;`);
  L.push(`  let n0 = gid.x * ${tn}u;`);
  L.push(`  if (m0 >= u.m || n0 >= u.n) { return; }`);
  L.push(`  let aoff = gid.z * u.sa;`);
  L.push(`  let boff = gid.z * u.sb;`);
  L.push(`  let coff = gid.z * u.sc;`);
  // clamped row / column indices: loads stay in bounds, results past the edge are not stored
  for (const i of I) L.push(`  let r${i} = min(m0 + ${i}u, u.m - 1u);`);
  for (const j of J) L.push(`  let q${j} = min(n0 + ${j}u, u.n - 1u);`);
  for (const i of I) for (const j of J) L.push(`  var c${i}_${j} = 0.0;`);
  /**
   * Loads the 4-deep k slice of one operand as a vec4 per row of A (`a0…`) or column of B
   * (`b0…`). An operand is stored either with k contiguous (A, or Bᵀ) or k-major (Aᵀ, or B:
   * rows k+kk, each contiguous along m or n). `guard` masks k past u.k (the tail).
   */
  const loadOperand = (
    o: {
      buf: "A" | "B";
      off: string;
      ld: string;
      /** clamped row/column index variable prefix (`r`, `q`) and the indices */
      idx: string;
      list: readonly number[];
      vec: boolean;
      kMajor: boolean;
      /** tile width along m or n, its origin and extent */
      tile: number;
      origin: string;
      extent: string;
      /** output and temporary name prefixes */
      out: string;
      tmp: string;
    },
    guard: boolean,
  ): string[] => {
    const out: string[] = [];
    if (!o.kMajor) {
      for (const i of o.list) {
        if (o.vec && !guard) {
          const v = `${o.buf}[(${o.off} + ${o.idx}${i} * ${o.ld} + k) >> 2u]`;
          out.push(`    let ${o.out}${i} = ${round(v)};`);
        } else {
          const e = KK.map((kk) => {
            const idx = `${o.off} + ${o.idx}${i} * ${o.ld} + k + ${kk}u`;
            return guard
              ? `select(0.0, ${scalar(o.buf, idx, o.vec)}, k + ${kk}u < u.k)`
              : scalar(o.buf, idx, o.vec);
          });
          out.push(`    let ${o.out}${i} = ${round(`vec4<f32>(${e.join(", ")})`)};`);
        }
      }
      return out;
    }
    for (const kk of KK) {
      const row = `min(k + ${kk}u, u.k - 1u)`;
      if (o.vec && !guard) {
        for (let iv = 0; iv < o.tile / 4; iv++) {
          out.push(
            `    let ${o.tmp}${kk}_${iv} = ${o.buf}[(${o.off} + ${row} * ${o.ld}) / 4u + min(${o.origin} / 4u + ${iv}u, ${o.extent} / 4u - 1u)];`,
          );
        }
      } else {
        for (const i of o.list) {
          const v = scalar(o.buf, `${o.off} + ${row} * ${o.ld} + ${o.idx}${i}`, o.vec);
          out.push(
            `    let ${o.tmp}${kk}_s${i} = ${guard ? `select(0.0, ${v}, k + ${kk}u < u.k)` : v};`,
          );
        }
      }
    }
    for (const i of o.list) {
      const comp = (kk: number) =>
        o.vec && !guard ? `${o.tmp}${kk}_${Math.floor(i / 4)}[${i % 4}]` : `${o.tmp}${kk}_s${i}`;
      out.push(`    let ${o.out}${i} = ${round(`vec4<f32>(${KK.map(comp).join(", ")})`)};`);
    }
    return out;
  };
  const operandA = {
    buf: "A",
    off: "aoff",
    ld: "u.lda",
    idx: "r",
    list: I,
    vec: vecA,
    kMajor: d.transA, // A stored [K, M]
    tile: tm,
    origin: "m0",
    extent: "u.m",
    out: "a",
    tmp: "t",
  } as const;
  const operandB = {
    buf: "B",
    off: "boff",
    ld: "u.ldb",
    idx: "q",
    list: J,
    vec: vecB,
    kMajor: !d.transB, // B stored [K, N]
    tile: tn,
    origin: "n0",
    extent: "u.n",
    out: "b",
    tmp: "s",
  } as const;
  const loadA = (guard: boolean) => loadOperand(operandA, guard);
  const loadB = (guard: boolean) => loadOperand(operandB, guard);
  // explicit fma chains: dot() + add would round twice and (on llvmpipe) cost twice the ops
  const fma = I.flatMap((i) =>
    J.map((j) =>
      `    c${i}_${j} = fma(a${i}.w, b${j}.w, fma(a${i}.z, b${j}.z, fma(a${i}.y, b${j}.y, fma(a${i}.x, b${j}.x, c${i}_${j}))));`
    )
  );
  L.push(`  let kmain = u.k & ~3u;`);
  L.push(`  for (var k = 0u; k < kmain; k += 4u) {`);
  L.push(...loadA(false), ...loadB(false), ...fma);
  L.push(`  }`);
  L.push(`  if (kmain < u.k) {`);
  L.push(`    let k = kmain;`);
  L.push(...loadA(true), ...loadB(true), ...fma);
  L.push(`  }`);
  for (const i of I) {
    L.push(`  if (m0 + ${i}u < u.m) {`);
    for (const j of J) {
      L.push(
        `    if (n0 + ${j}u < u.n) { C[coff + (m0 + ${i}u) * u.n + n0 + ${j}u] = c${i}_${j}; }`,
      );
    }
    L.push(`  }`);
  }
  L.push(`}`);
  return L.join("\n");
}

/** A scalar element of a binding declared as f32 or vec4<f32>. */
function scalar(name: string, idx: string, vec: boolean): string {
  return vec ? `${name}[(${idx}) >> 2u][(${idx}) & 3u]` : `${name}[${idx}]`;
}

/**
 * WGSL that reads element `e` of the K slice being staged — tile×bk of op(A), bk×tile of op(B) —
 * into `v` (0 past the edges), walking the operand's contiguous axis fastest: m or n for a
 * k-major operand (Aᵀ, B), k otherwise (A, Bᵀ).
 */
function sliceLoads(d: MatmulDims, tile: number, bk: number): { ldA: string; ldB: string } {
  const load = (
    buf: string,
    off: string,
    ld: string,
    r: string,
    origin: string,
    extent: string,
    kMajor: boolean,
  ) =>
    kMajor
      ? `let ${r} = e % ${tile}u; let kk = e / ${tile}u;
      var v = 0.0;
      if (${origin} + ${r} < ${extent} && k + kk < u.k) { v = ${buf}[${off} + (k + kk) * ${ld} + ${origin} + ${r}]; }`
      : `let kk = e % ${bk}u; let ${r} = e / ${bk}u;
      var v = 0.0;
      if (${origin} + ${r} < ${extent} && k + kk < u.k) { v = ${buf}[${off} + (${origin} + ${r}) * ${ld} + k + kk]; }`;
  return {
    ldA: load("A", "aoff", "u.lda", "mm", "m0", "u.m", d.transA),
    ldB: load("B", "boff", "u.ldb", "nn", "n0", "u.n", !d.transB),
  };
}

/** Shared-memory tiled kernel: 64×64 tiles, BK = 16, 4×4 outputs per invocation. */
function tiledCode(d: MatmulDims): string {
  const { ldA, ldB } = sliceLoads(d, 64, 16);
  const { enable, elem, widen } = operandType(d);
  // four consecutive tile elements from index i, as vec4<f32>
  const four = (t: string, i: string) =>
    widen(
      `vec4<${elem}>(${[0, 1, 2, 3].map((j) => `${t}[${i}${j ? ` + ${j}u` : ""}]`).join(", ")})`,
    );
  return `${enable}@group(0) @binding(0) var<storage, read> A: array<f32>;
@group(0) @binding(1) var<storage, read> B: array<f32>;
@group(0) @binding(2) var<storage, read_write> C: array<f32>;
${UNIFORMS}
var<workgroup> As: array<${elem}, 1024>; // [kk][m] of a 64×16 slice of op(A)
var<workgroup> Bs: array<${elem}, 1024>; // [kk][n] of a 16×64 slice of op(B)
@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let m0 = wid.y * 64u;
  let n0 = wid.x * 64u;
  let aoff = wid.z * u.sa;
  let boff = wid.z * u.sb;
  let coff = wid.z * u.sc;
  let tx = lid3.x;
  let ty = lid3.y;
  var acc: array<vec4<f32>, 4>;
  for (var k = 0u; k < u.k; k += 16u) {
    for (var r = 0u; r < 4u; r++) {
      let e = lid + r * 256u;
      ${ldA}
      As[kk * 64u + mm] = ${elem}(v);
    }
    for (var r = 0u; r < 4u; r++) {
      let e = lid + r * 256u;
      ${ldB}
      Bs[kk * 64u + nn] = ${elem}(v);
    }
    workgroupBarrier();
    for (var kk = 0u; kk < 16u; kk++) {
      let a = ${four("As", "kk * 64u + ty * 4u")};
      let b = ${four("Bs", "kk * 64u + tx * 4u")};
      acc[0] += a.x * b;
      acc[1] += a.y * b;
      acc[2] += a.z * b;
      acc[3] += a.w * b;
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < 4u; i++) {
    let row = m0 + ty * 4u + i;
    if (row < u.m) {
      for (var j = 0u; j < 4u; j++) {
        let col = n0 + tx * 4u + j;
        if (col < u.n) { C[coff + row * u.n + col] = acc[i][j]; }
      }
    }
  }
}`;
}

/**
 * Large-tile kernel: 128×128 tiles, BK = 8, 8×8 outputs per invocation (16 FMAs per 4 vec4
 * workgroup loads instead of 4×4's 16 per 8 scalar loads).
 */
function tiled128Code(d: MatmulDims): string {
  const { ldA, ldB } = sliceLoads(d, 128, 8);
  const { enable, elem, widen } = operandType(d);
  return `${enable}@group(0) @binding(0) var<storage, read> A: array<f32>;
@group(0) @binding(1) var<storage, read> B: array<f32>;
@group(0) @binding(2) var<storage, read_write> C: array<f32>;
${UNIFORMS}
var<workgroup> As: array<vec4<${elem}>, 256>; // [kk][m / 4] of a 128×8 slice of op(A)
var<workgroup> Bs: array<vec4<${elem}>, 256>; // [kk][n / 4] of an 8×128 slice of op(B)
@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let m0 = wid.y * 128u;
  let n0 = wid.x * 128u;
  let aoff = wid.z * u.sa;
  let boff = wid.z * u.sb;
  let coff = wid.z * u.sc;
  let tx = lid3.x;
  let ty = lid3.y;
  var acc: array<vec4<f32>, 16>; // row i: acc[2i] cols 0..3, acc[2i + 1] cols 4..7
  for (var k = 0u; k < u.k; k += 8u) {
    for (var r = 0u; r < 4u; r++) {
      let e = lid + r * 256u;
      ${ldA}
      As[kk * 32u + mm / 4u][mm % 4u] = ${elem}(v);
    }
    for (var r = 0u; r < 4u; r++) {
      let e = lid + r * 256u;
      ${ldB}
      Bs[kk * 32u + nn / 4u][nn % 4u] = ${elem}(v);
    }
    workgroupBarrier();
    for (var kk = 0u; kk < 8u; kk++) {
      let a0 = ${widen("As[kk * 32u + ty * 2u]")};
      let a1 = ${widen("As[kk * 32u + ty * 2u + 1u]")};
      let b0 = ${widen("Bs[kk * 32u + tx * 2u]")};
      let b1 = ${widen("Bs[kk * 32u + tx * 2u + 1u]")};
      for (var i = 0u; i < 4u; i++) {
        acc[2u * i] += a0[i] * b0;
        acc[2u * i + 1u] += a0[i] * b1;
        acc[2u * (i + 4u)] += a1[i] * b0;
        acc[2u * (i + 4u) + 1u] += a1[i] * b1;
      }
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < 8u; i++) {
    let row = m0 + ty * 8u + i;
    if (row < u.m) {
      for (var j = 0u; j < 8u; j++) {
        let col = n0 + tx * 8u + j;
        if (col < u.n) { C[coff + row * u.n + col] = acc[2u * i + j / 4u][j % 4u]; }
      }
    }
  }
}`;
}

/** Block shape of the register-blocked variant (overridable for benchmarks). */
export const MATMUL_BLOCK = { tm: 8, tn: 8 };

/**
 * The kernel for one (possibly batched) product.
 *
 * @param d problem dimensions
 * @param device the target device (picks the variant)
 * @returns one dispatch
 */
export function matmulKernel(d: MatmulDims, device: WgslDevice): WgslKernel {
  if (d.batch > 65535) {
    throw new Error(`Cannot matmul a batch of ${d.batch} on WebGPU: at most 65535`);
  }
  if (d.f16 && !device.f16) {
    throw new Error(
      `Cannot matmul ${d.m}×${d.k}·${d.k}×${d.n} in float16 on WebGPU: the adapter lacks shader-f16`,
    );
  }
  const f16 = d.f16 === true;
  const uniforms = uniformWords(d);
  if (device.software || d.m <= 8) {
    // few rows (decode: M = batch) get a block of exactly that height, on every device
    const tm = d.m <= 8 ? (d.m <= 1 ? 1 : d.m <= 2 ? 2 : d.m <= 4 ? 4 : 8) : MATMUL_BLOCK.tm;
    const tn = MATMUL_BLOCK.tn;
    return {
      code: cachedCode(
        `matmul blocked ${d.transA} ${d.transB} ${tm} ${tn} ${d.m % 4} ${d.n % 4} ${
          d.k % 4
        } ${f16}`,
        () => blockedCode(d, tm, tn),
      ),
      workgroups: [Math.ceil(d.n / (8 * tn)), Math.ceil(d.m / (8 * tm)), d.batch],
      uniforms,
    };
  }
  if (d.m >= 128 && d.n >= 128) {
    return {
      code: cachedCode(`matmul tiled128 ${d.transA} ${d.transB} ${f16}`, () => tiled128Code(d)),
      workgroups: [Math.ceil(d.n / 128), Math.ceil(d.m / 128), d.batch],
      uniforms,
    };
  }
  return {
    code: cachedCode(`matmul tiled ${d.transA} ${d.transB} ${f16}`, () => tiledCode(d)),
    workgroups: [Math.ceil(d.n / 64), Math.ceil(d.m / 64), d.batch],
    uniforms,
  };
}

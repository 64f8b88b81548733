/**
 * Shared WGSL helpers for the ops' kernels: element types, 1-D grids past the 65535-workgroup
 * limit, strided (broadcast / permuted / sliced) index maths with up to 8 axes in uniforms, and
 * the elementwise kernel generator used by the unary and binary tables.
 * @module
 */
import type { DType } from "../../dtype.ts";
import { stridesOf } from "../../shape.ts";

/** The WGSL scalar type of a dtype (f64 and bf16 have none). */
export function wgslType(dtype: DType): "f32" | "i32" | "u32" {
  if (dtype === "f64" || dtype === "bf16") {
    throw new Error(`Cannot use ${dtype} in WGSL: the WebGPU backend supports f32`);
  }
  return dtype;
}

/** Workgroups covering `n` invocations of `wg` each, folded into y past 65535 in x. */
export function grid(n: number, wg = 256): [number, number] {
  const groups = Math.ceil(n / wg);
  if (groups <= 65535) return [groups, 1];
  const y = Math.ceil(groups / 65535);
  return [Math.ceil(groups / y), y];
}

/** Workgroups for `rows` workgroups (one per row), folded into y past 65535. */
export function rowGrid(rows: number): [number, number] {
  if (rows <= 65535) return [rows, 1];
  const y = Math.ceil(rows / 65535);
  return [Math.ceil(rows / y), y];
}

/**
 * Entry-point parameters and the flat invocation index `i` for `grid(n, WG)` dispatches:
 * `@compute @workgroup_size(WG) fn main(${GRID_ARGS}) { let i = ${GRID_INDEX("WG")}; … }`.
 */
export const GRID_ARGS =
  "@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>";

/** The flat invocation index expression for a workgroup size `wg` (see `GRID_ARGS`). */
export function gridIndex(wg: number | string): string {
  return `(gid.x + gid.y * nwg.x * ${wg}u)`;
}

/** Row index of a `rowGrid` dispatch (needs `@builtin(workgroup_id) wid` and `nwg`). */
export const ROW_INDEX = "(wid.x + wid.y * nwg.x)";

/** −∞ as an f32 expression (WGSL has no infinity literal). */
export const NEG_INF = "bitcast<f32>(0xff800000u)";

/** Fills a u32 array with a value (zero-filling pooled buffers). */
export const FILL_WGSL = /* wgsl */ `
struct U { n: u32, v: u32 }
@group(0) @binding(0) var<storage, read_write> y: array<u32>;
@group(1) @binding(0) var<uniform> u: U;
@compute @workgroup_size(256)
fn main(${GRID_ARGS}) {
  let i = ${gridIndex(256)};
  if (i < u.n) { y[i] = u.v; }
}`;

/** Maximum rank of the strided helpers. */
export const MAX_RANK = 8;

/**
 * Merges adjacent axes that every operand walks contiguously (fewer divisions per element) and
 * drops size-1 axes. `strides[k][d]` is operand k's element stride along output axis d.
 */
export function coalesce(
  shape: readonly number[],
  strides: readonly (readonly number[])[],
): { shape: number[]; strides: number[][] } {
  const s: number[] = [];
  const st: number[][] = strides.map(() => []);
  for (let d = 0; d < shape.length; d++) {
    if (shape[d] === 1) continue;
    const last = s.length - 1;
    if (last >= 0 && strides.every((x, k) => st[k][last] === x[d] * shape[d])) {
      s[last] *= shape[d];
      strides.forEach((x, k) => (st[k][last] = x[d]));
    } else {
      s.push(shape[d]);
      strides.forEach((x, k) => st[k].push(x[d]));
    }
  }
  return { shape: s, strides: st };
}

/** Strides of `inShape` broadcast against `outShape` (0 on broadcast axes, left-padded). */
export function broadcastStrides(
  inShape: readonly number[],
  outShape: readonly number[],
): number[] {
  const r = outShape.length;
  const own = stridesOf(inShape);
  const s = new Array<number>(r).fill(0);
  for (let i = 0; i < inShape.length; i++) {
    const o = r - inShape.length + i;
    s[o] = inShape[i] === 1 && outShape[o] !== 1 ? 0 : own[i];
  }
  return s;
}

/**
 * Uniform words for a strided kernel with `k` operands: `shape` then k stride arrays (each
 * `array<vec4<u32>, 2>`), then `n`, `rank` and k base offsets. Throws past 8 axes.
 */
export function stridedUniforms(
  shape: readonly number[],
  strides: readonly (readonly number[])[],
  offsets: readonly number[] = [],
): number[] {
  const c = coalesce(shape, strides);
  if (c.shape.length > MAX_RANK) {
    throw new Error(`Cannot index ${c.shape.length} non-contiguous axes on WebGPU: at most 8`);
  }
  const pad = (xs: number[]) => [...xs, ...new Array(8 - xs.length).fill(0)];
  let n = 1;
  for (const d of shape) n *= d;
  const words = [...pad(c.shape)];
  for (const st of c.strides) words.push(...pad(st));
  words.push(n, c.shape.length);
  for (let k = 0; k < strides.length; k++) words.push(offsets[k] ?? 0);
  while (words.length % 4) words.push(0);
  return words;
}

/**
 * WGSL declaring the uniform struct `U` of `stridedUniforms` for `k` operands and
 * `fn offsets(i: u32) -> array<u32, k>` mapping a flat output index to each operand's offset.
 */
export function stridedPrelude(k: number, extraFields = ""): string {
  const fields = Array.from({ length: k }, (_, j) => `  st${j}: array<vec4<u32>, 2>,`).join("\n");
  const offs = Array.from({ length: k }, (_, j) => `  off${j}: u32,`).join("\n");
  const padN = (2 + k) % 4 === 0 ? 0 : 4 - ((2 + k) % 4);
  const pads = Array.from({ length: padN }, (_, j) => `  _p${j}: u32,`).join("\n");
  const init = Array.from({ length: k }, (_, j) => `u.off${j}`).join(", ");
  const acc = Array.from({ length: k }, (_, j) => `    o[${j}] += c * u.st${j}[q][r];`).join("\n");
  return `
struct U {
  shape: array<vec4<u32>, 2>,
${fields}
  n: u32,
  rank: u32,
${offs}
${pads}
  ${extraFields}
}
@group(1) @binding(0) var<uniform> u: U;
fn offsets(flat: u32) -> array<u32, ${k}> {
  var o = array<u32, ${k}>(${init});
  var rem = flat;
  for (var d = i32(u.rank) - 1; d >= 0; d--) {
    let q = u32(d) >> 2u;
    let r = u32(d) & 3u;
    let size = u.shape[q][r];
    let c = rem % size;
    rem = rem / size;
${acc}
  }
  return o;
}`;
}

/**
 * An elementwise kernel over `arity` same-shaped or broadcast inputs: `fn f(args) -> OUT` is
 * `expr` applied per element. Modes: "same" (flat index, vec4 loads when `vec4`), "strided"
 * (broadcasting through `stridedPrelude`). Extra uniform fields may be declared in `extra`
 * (then mode "same" binds `struct U { n: u32, <extra> }`).
 */
export function mapKernel(opts: {
  names: readonly string[];
  inTypes: readonly string[];
  outType: string;
  expr: string;
  mode: "same" | "strided";
  vec4?: boolean;
  extra?: string;
}): string {
  return cachedCode(`map ${JSON.stringify(opts)}`, () => mapKernelCode(opts));
}

function mapKernelCode(opts: Parameters<typeof mapKernel>[0]): string {
  const { names, inTypes, outType, expr, mode } = opts;
  const k = names.length;
  const params = names.map((n, j) => `${n}: ${inTypes[j]}`).join(", ");
  const binds = names.map((_, j) =>
    `@group(0) @binding(${j}) var<storage, read> in${j}: array<${
      opts.vec4 ? `vec4<${inTypes[j]}>` : inTypes[j]
    }>;`
  ).join("\n");
  const outDecl = `@group(0) @binding(${k}) var<storage, read_write> out: array<${
    opts.vec4 ? `vec4<${outType}>` : outType
  }>;`;
  const fn = `fn f(${params}) -> ${outType} { return ${outType}(${expr}); }`;
  let decls: string, body: string;
  if (mode === "strided") {
    decls = stridedPrelude(k);
    body = `  let o = offsets(i);
  out[i] = f(${names.map((_, j) => `in${j}[o[${j}]]`).join(", ")});`;
  } else {
    decls = `struct U { n: u32, ${opts.extra ?? ""} }
@group(1) @binding(0) var<uniform> u: U;`;
    if (opts.vec4) {
      const comps = ["x", "y", "z", "w"].map((c) =>
        `f(${names.map((_, j) => `v${j}.${c}`).join(", ")})`
      ).join(", ");
      const loads = names.map((_, j) => `  let v${j} = in${j}[i];`).join("\n");
      body = `${loads}
  out[i] = vec4<${outType}>(${comps});`;
    } else body = `  out[i] = f(${names.map((_, j) => `in${j}[i]`).join(", ")});`;
  }
  return `${binds}
${outDecl}
${decls}
${fn}
@compute @workgroup_size(256)
fn main(${GRID_ARGS}) {
  let i = ${gridIndex(256)};
  if (i >= u.n) { return; }
${body}
}`;
}

/**
 * Workgroup reductions for row kernels with workgroup size `wg` (a power of two): declares
 * `red: array<f32, wg>` and `fn wgSum(v, lid) -> f32`, `fn wgMax(v, lid) -> f32`.
 */
export function wgReducePrelude(wg: number): string {
  return `
var<workgroup> red: array<f32, ${wg}>;
fn wgSum(v: f32, lid: u32) -> f32 {
  workgroupBarrier();
  red[lid] = v;
  workgroupBarrier();
  for (var s = ${wg / 2}u; s > 0u; s = s >> 1u) {
    if (lid < s) { red[lid] = red[lid] + red[lid + s]; }
    workgroupBarrier();
  }
  return red[0];
}
fn wgMax(v: f32, lid: u32) -> f32 {
  workgroupBarrier();
  red[lid] = v;
  workgroupBarrier();
  for (var s = ${wg / 2}u; s > 0u; s = s >> 1u) {
    if (lid < s) { red[lid] = max(red[lid], red[lid + s]); }
    workgroupBarrier();
  }
  return red[0];
}`;
}

/** A row-kernel workgroup size for rows of `n` elements (64 for short rows, else 256). */
export function rowWorkgroup(n: number): number {
  return n <= 512 ? 64 : 256;
}

/** WGSL binding line for the status buffer at `binding` (see `STATUS_BINDING`). */
export function statusDecl(binding: number): string {
  return `@group(0) @binding(${binding}) var<storage, read_write> status: array<atomic<u32>, 4>;
fn report(code: u32, value: i32, bound: u32) {
  atomicStore(&status[1], bitcast<u32>(value));
  atomicStore(&status[2], bound);
  atomicStore(&status[0], code);
}`;
}

/** Extra uniform fields of an elementwise kernel (after `n`). */
export interface MapExtra {
  /** WGSL struct fields, e.g. `a: f32, b: f32`. */
  readonly fields: string;
  /** Their values. */
  readonly words: readonly number[];
  /** Their types. */
  readonly types: readonly ("u32" | "f32" | "i32")[];
}

/**
 * One elementwise dispatch over `n` same-shaped elements: `expr` of `names` (typed `types`),
 * vec4 loads when n % 4 == 0.
 */
export function mapWgsl(
  names: readonly string[],
  types: readonly string[],
  outType: string,
  expr: string,
  n: number,
  extra?: MapExtra,
): {
  code: string;
  workgroups: [number, number];
  uniforms: number[];
  uniformTypes: ("u32" | "f32" | "i32")[];
} {
  const vec4 = n % 4 === 0;
  const m = vec4 ? n / 4 : n;
  return {
    code: mapKernel({
      names,
      inTypes: types,
      outType,
      expr,
      mode: "same",
      vec4,
      extra: extra?.fields,
    }),
    workgroups: grid(m),
    uniforms: [m, ...(extra?.words ?? [])],
    uniformTypes: ["u32", ...(extra?.types ?? [])],
  };
}

/**
 * One broadcasting elementwise dispatch: output `outShape`, operands of `inShapes` (NumPy
 * broadcasting), `expr` of `names`.
 */
export function broadcastWgsl(
  names: readonly string[],
  types: readonly string[],
  outType: string,
  expr: string,
  inShapes: readonly (readonly number[])[],
  outShape: readonly number[],
): { code: string; workgroups: [number, number]; uniforms: number[] } {
  let n = 1;
  for (const d of outShape) n *= d;
  const same = inShapes.every((s) =>
    s.length === outShape.length && s.every((d, i) => d === outShape[i])
  );
  if (same) return mapWgsl(names, types, outType, expr, n);
  const strides = inShapes.map((s) => broadcastStrides(s, outShape));
  return {
    code: mapKernel({ names, inTypes: types, outType, expr, mode: "strided" }),
    workgroups: grid(n),
    uniforms: stridedUniforms(outShape, strides),
  };
}

/**
 * Strided copy, out-driven: `y[i] = x[base + Σ idx_d·strides[d]]` over `outShape` (transpose,
 * broadcast, slice). Copies 32-bit words, so it serves every dtype.
 */
export function gatherCopyWgsl(
  outShape: readonly number[],
  strides: readonly number[],
  base = 0,
): { code: string; workgroups: [number, number]; uniforms: number[] } {
  let n = 1;
  for (const d of outShape) n *= d;
  return {
    code: mapKernel({ names: ["x"], inTypes: ["u32"], outType: "u32", expr: "x", mode: "strided" }),
    workgroups: grid(n),
    uniforms: stridedUniforms(outShape, [strides], [base]),
  };
}

const SCATTER_COPY_WGSL = /* wgsl */ `
@group(0) @binding(0) var<storage, read> x: array<u32>;
@group(0) @binding(1) var<storage, read_write> y: array<u32>;
${stridedPrelude(1)}
@compute @workgroup_size(256)
fn main(${GRID_ARGS}) {
  let i = ${gridIndex(256)};
  if (i >= u.n) { return; }
  y[offsets(i)[0]] = x[i];
}`;

/**
 * Strided copy, in-driven: `y[base + Σ idx_d·outStrides[d]] = x[i]` over `inShape` (pad,
 * concat: writes a block of a larger output).
 */
export function scatterCopyWgsl(
  inShape: readonly number[],
  outStrides: readonly number[],
  base = 0,
): { code: string; workgroups: [number, number]; uniforms: number[] } {
  let n = 1;
  for (const d of inShape) n *= d;
  return {
    code: SCATTER_COPY_WGSL,
    workgroups: grid(n),
    uniforms: stridedUniforms(inShape, [outStrides], [base]),
  };
}

/**
 * How a row kernel maps rows onto invocations. Real GPUs: one workgroup per row, `lanes`
 * invocations striding over it and reducing through workgroup memory. Software adapters
 * (barriers are costly there): one invocation per row, `wgSum`/`wgMax` are the identity.
 * Kernels use `${row}`, `for (var i = ${lane}; i < n; i += ${lanes}u)`, `${prelude}`.
 */
export interface RowLayout {
  /** Workgroup size. */
  readonly wg: number;
  /** Invocations sharing one row. */
  readonly lanes: number;
  /** Declares `wgSum` and `wgMax`. */
  readonly prelude: string;
  /** Row index expression (entry args: `wid`, `nwg`, `lid`). */
  readonly row: string;
  /** This invocation's lane within its row. */
  readonly lane: string;
  /** Workgroups for `rows` rows. */
  readonly workgroups: (rows: number) => [number, number];
}

/** The row layout for rows of `n` elements on `device`. */
export function rowLayout(n: number, device: { readonly software: boolean }): RowLayout {
  if (device.software) {
    return {
      wg: 64,
      lanes: 1,
      prelude: `fn wgSum(v: f32, lid: u32) -> f32 { return v; }
fn wgMax(v: f32, lid: u32) -> f32 { return v; }`,
      row: "((wid.x + wid.y * nwg.x) * 64u + lid)",
      lane: "0u",
      workgroups: (rows) => grid(rows, 64),
    };
  }
  const wg = rowWorkgroup(n);
  return {
    wg,
    lanes: wg,
    prelude: wgReducePrelude(wg),
    row: ROW_INDEX,
    lane: "lid",
    workgroups: rowGrid,
  };
}

/**
 * The max-then-Σexp reduction of a row kernel (softmax, cross-entropy): declares `m`, the row's
 * max, and `s`, Σ exp(x − m), over `src[base + i]` for i < `n`, reduced across the row's lanes.
 * Lines after the first are indented for a kernel body.
 *
 * @param L the row layout
 * @param src the input array's name
 * @param n the row length expression
 * @param skipEmpty leave `s` at 0 for an all-−∞ row (softmax's fully masked rows)
 * @returns the WGSL statements
 */
export function rowMaxSumExp(L: RowLayout, src: string, n: string, skipEmpty: boolean): string {
  const each = `for (var i = ${L.lane}; i < ${n}; i += ${L.lanes}u)`;
  return `var m = ${NEG_INF};
  if (ok) { ${each} { m = max(m, ${src}[base + i]); } }
  m = wgMax(m, lid);
  var s = 0.0;
  if (ok${skipEmpty ? ` && m != ${NEG_INF}` : ""}) { ${each} { s += exp(${src}[base + i] - m); } }
  s = wgSum(s, lid);`;
}

/** Entry-point parameters of row kernels. */
export const ROW_ARGS =
  "@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32";

const CODE_CACHE = new Map<string, string>();

/**
 * Generated WGSL by key: kernels whose source is built from a few flags (matmul, attention,
 * reductions) are generated once, so recording a dispatch costs a map lookup, not string work.
 */
export function cachedCode(key: string, make: () => string): string {
  let c = CODE_CACHE.get(key);
  if (c === undefined) {
    c = make();
    CODE_CACHE.set(key, c);
  }
  return c;
}

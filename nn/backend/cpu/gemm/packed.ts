/**
 * Products x·Wᵀ with a few rows (a batched decode step, an RL rollout's step) against a weight W
 * that is used again unchanged, by a oneDNN matmul primitive on a copy of W reordered once into the
 * layout the primitive reads directly. In f32 from 2 to 32 rows: OpenBLAS's `sgemm` packs all of W
 * on every such call, which then costs more than the multiplication (on a 1408×512 weight at 8
 * rows, 228 µs a call against 134 µs here, on the 6400×512 output layer 1651 against 691; one row
 * is BLAS's `sgemv`, faster still). In the bfloat16 precision (`setMatmulPrecision`) from 1 to 32
 * rows, on a bf16 copy of W and x rounded to bf16 (round to nearest even, as every bf16 product
 * here), accumulated in f32: a decode step reads half the weight bytes (cold weights, 2 threads:
 * 8 rows on 1408×512 109 µs against f32's 170; MiniMind2-Small through the server, 8 concurrent
 * streams 742–837 → 1,073–1,236 tok/s, one stream 283 → 321–340).
 *
 * Which path a product takes depends only on its shape and the precision (and on oneDNN being
 * there), never on what ran before, so a run gives the same bits however it was interrupted and
 * resumed. The packed copy is made on a weight's first such product and reused while W is
 * unchanged: it is dropped when the CPU backend writes W in place or hands its array out again
 * (`forgetPacked`), and on every use a fixed sample of W's values is compared with the one taken
 * when it was packed. Where oneDNN 2.x is missing, nothing is packed and the caller multiplies.
 *
 * @module
 */
import { alignedU16, type Dnnl, DT_BF16, DT_F32, nativeDnnl } from "./bf16.ts";

/** Most rows of a product that takes the packed path (beyond it `sgemm`'s packing is amortised). */
export const PACKED_MAX_ROWS = 32;

/** Values of W compared on every use (a fixed sample, spread over the whole array). */
const SAMPLES = 64;

/** One weight's packed copy and what it was made from. */
interface Entry {
  n: number;
  k: number;
  /** The copy holds bf16 values (else f32). */
  bf16: boolean;
  /** W's values at the sample positions when it was packed. */
  sample: Float32Array;
  /** The weights' layout the products read (the reference primitive's choice). */
  layout: Uint8Array;
  /** The reordered copy (the bytes `layout` describes). */
  packed: Uint8Array;
}

const entries = new WeakMap<Float32Array, Entry>();
/** x rounded to bf16 for the bf16 products (aligned scratch, grown as needed). */
let xBf16 = alignedU16(0);
let enabled = true;

/** Turns the packed path on or off for this process (tests compare both; on by default). */
export function setPackedProducts(on: boolean): void {
  enabled = on;
}

/** Where sample i of an array of `length` values is: up to {@linkcode SAMPLES}, evenly spread. */
function sampleAt(length: number, i: number): number {
  return i * Math.max(1, Math.floor(length / SAMPLES));
}

/** W's values at the sample positions (taken when it is packed). */
function sampleOf(w: Float32Array): Float32Array {
  const out = new Float32Array(Math.min(SAMPLES, w.length));
  for (let i = 0; i < out.length; i++) out[i] = w[sampleAt(w.length, i)];
  return out;
}

/** Whether W still has the sample's values (checked on every use, without allocating). */
function sampleMatches(w: Float32Array, e: Entry): boolean {
  for (let i = 0; i < e.sample.length; i++) {
    if (!Object.is(e.sample[i], w[sampleAt(w.length, i)])) return false;
  }
  return true;
}

/** Whether `w` has a packed copy now (for tests). */
export function hasPackedCopy(w: Float32Array): boolean {
  return entries.has(w);
}

/** Forgets `w`'s packed copy (the CPU backend calls it before writing into or reusing `w`). */
export function forgetPacked(w: ArrayBufferView): void {
  if (w instanceof Float32Array) entries.delete(w);
}

/**
 * The matmul primitive C[m,n] = A[m,k]·W[k,n], A and W f32 or bf16, C f32: W in the layout `wmd`
 * describes, or (`wmd` null) in the one oneDNN picks, which the primitive's `weights` then holds.
 * Null when oneDNN has no implementation for `wmd` at this row count.
 */
function primitive(
  d: Dnnl,
  m: number,
  n: number,
  k: number,
  wmd: Uint8Array | null,
  bf16: boolean,
) {
  const dt = bf16 ? DT_BF16 : DT_F32;
  return d.tryMatmul(`packed ${bf16 ? "bf16" : "f32"} ${m} ${n} ${k}`, () => [
    d.md([m, k], [k, 1], dt),
    wmd ?? d.mdAny([k, n], dt),
    d.md([m, n], [n, 1], DT_F32),
  ], wmd === null);
}

/**
 * W [n,k] reordered (and rounded, for bf16) into the layout oneDNN picks for {@linkcode
 * PACKED_MAX_ROWS} rows (one layout per weight shape and precision, which the primitives of every
 * row count read); null when it has none.
 */
function pack(d: Dnnl, w: Float32Array, n: number, k: number, bf16: boolean): Entry | null {
  const layout = primitive(d, PACKED_MAX_ROWS, n, k, null, bf16)?.weights;
  if (!layout) return null;
  // W [n,k] row-major, read as its transpose
  const reorder = d.reorder(
    `packed ${bf16 ? "bf16" : "f32"} reorder ${n} ${k}`,
    () => [d.md([k, n], [1, k], DT_F32), layout],
  );
  const packed = new Uint8Array(d.size(layout));
  d.exec(reorder, [w, packed], `reorder of a ${n}×${k} weight into oneDNN's layout`);
  return { n, k, bf16, sample: sampleOf(w), layout, packed };
}

/**
 * C[m,n] = A[m,k]·Wᵀ for W stored [n,k], all dense row-major f32, by the packed path (with `bf16`,
 * A and W rounded to bf16, accumulated in f32); false (nothing written) when it does not apply:
 * off, no oneDNN 2.x, m outside 2…{@linkcode PACKED_MAX_ROWS} (1… with `bf16`), or no oneDNN
 * implementation for the shape.
 */
export function packedProduct(
  a: Float32Array,
  w: Float32Array,
  c: Float32Array,
  m: number,
  n: number,
  k: number,
  bf16 = false,
): boolean {
  if (!enabled || m < (bf16 ? 1 : 2) || m > PACKED_MAX_ROWS || w.length !== n * k) return false;
  const d = nativeDnnl();
  if (!d) return false;
  let e = entries.get(w);
  if (!e || e.n !== n || e.k !== k || e.bf16 !== bf16 || !sampleMatches(w, e)) {
    // a weight not seen before, changed since, or packed for the other precision: pack it (again)
    const fresh = pack(d, w, n, k, bf16);
    if (!fresh) return false;
    entries.set(w, e = fresh);
  }
  const p = primitive(d, m, n, k, e.layout, bf16);
  if (!p) return false;
  let x: ArrayBufferView = a.subarray(0, m * k);
  if (bf16) {
    if (xBf16.length < m * k) xBf16 = alignedU16(m * k);
    d.toBf16(a.subarray(0, m * k), xBf16);
    x = xBf16.subarray(0, m * k);
  }
  d.exec(
    p,
    [x, e.packed, c.subarray(0, m * n)],
    `packed ${bf16 ? "bf16" : "f32"} matmul ${m}×${n}×${k}`,
  );
  return true;
}

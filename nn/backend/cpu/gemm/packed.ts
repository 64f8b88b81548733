/**
 * f32 products x·Wᵀ with a few rows (2–32: a batched decode step, an RL rollout's step) against a
 * weight W that is used again unchanged, by a oneDNN matmul primitive on a copy of W reordered once
 * into the layout the primitive reads directly. OpenBLAS's `sgemm` packs all of W on every such
 * call, which then costs more than the multiplication: on a 1408×512 weight at 8 rows, 228 µs a
 * call against 134 µs here, on the 6400×512 output layer 1651 against 691 (2 threads).
 *
 * Which path a product takes depends only on its shape (and on oneDNN being there), never on what
 * ran before, so a run gives the same bits however it was interrupted and resumed. The packed copy
 * is made on a weight's first such product and reused while W is unchanged: it is dropped when the
 * CPU backend writes W in place or hands its array out again (`forgetPacked`), and on every use a
 * fixed sample of W's values is compared with the one taken when it was packed. Where oneDNN 2.x
 * is missing, nothing is packed and `sgemm` runs as before.
 *
 * @module
 */
import { type Dnnl, DT_F32, openDnnl } from "./bf16.ts";

/** Most rows of a product that takes the packed path (beyond it `sgemm`'s packing is amortised). */
export const PACKED_MAX_ROWS = 32;

/** Values of W compared on every use (a fixed sample, spread over the whole array). */
const SAMPLES = 64;

/** One weight's packed copy and what it was made from. */
interface Entry {
  n: number;
  k: number;
  /** W's values at the sample positions when it was packed. */
  sample: Float32Array;
  /** The weights' layout the products read (the reference primitive's choice). */
  layout: Uint8Array;
  /** The reordered copy (the bytes `layout` describes). */
  packed: Uint8Array;
}

const entries = new WeakMap<Float32Array, Entry>();
/** Primitive keys oneDNN has no implementation for (not tried again). */
const unsupported = new Set<string>();
let dnnl: Dnnl | null | undefined;
let enabled = true;

/** Turns the packed path on or off for this process (tests compare both; on by default). */
export function setPackedProducts(on: boolean): void {
  enabled = on;
}

function lib(): Dnnl | null {
  if (dnnl === undefined) {
    const d = openDnnl();
    dnnl = typeof d === "string" || !d.native || !d.s.dnnl_memory_desc_init_by_tag ||
        !d.s.dnnl_primitive_desc_query_md || !d.s.dnnl_memory_desc_get_size
      ? null
      : d;
  }
  return dnnl;
}

function takeSample(w: Float32Array, out: Float32Array): Float32Array {
  const step = Math.max(1, Math.floor(w.length / SAMPLES));
  for (let i = 0; i < out.length; i++) out[i] = w[Math.min(w.length - 1, i * step)];
  return out;
}

function sampleMatches(w: Float32Array, e: Entry): boolean {
  const step = Math.max(1, Math.floor(w.length / SAMPLES));
  for (let i = 0; i < e.sample.length; i++) {
    if (!Object.is(e.sample[i], w[Math.min(w.length - 1, i * step)])) return false;
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
 * The matmul primitive C[m,n] = A[m,k]·W[k,n]: W in the layout `wmd` describes, or (`wmd` null)
 * in the one oneDNN picks, which the primitive's `weights` then holds. Null when oneDNN has no
 * implementation for `wmd` at this row count.
 */
function primitive(d: Dnnl, m: number, n: number, k: number, wmd: Uint8Array | null) {
  const key = `packed f32 ${m} ${n} ${k}`;
  if (unsupported.has(key)) return null;
  try {
    return d.matmul(key, () => [
      d.md([m, k], [k, 1], DT_F32),
      wmd ?? d.mdAny([k, n], DT_F32),
      d.md([m, n], [n, 1], DT_F32),
    ], wmd === null);
  } catch {
    unsupported.add(key);
    return null;
  }
}

/**
 * W [n,k] reordered into the layout oneDNN picks for {@linkcode PACKED_MAX_ROWS} rows (one layout
 * per weight shape, which the primitives of every row count read); null when it has none.
 */
function pack(d: Dnnl, w: Float32Array, n: number, k: number): Entry | null {
  const layout = primitive(d, PACKED_MAX_ROWS, n, k, null)?.weights;
  if (!layout) return null;
  // W [n,k] row-major, read as its transpose
  const reorder = d.reorder(
    `packed f32 reorder ${n} ${k}`,
    () => [d.md([k, n], [1, k], DT_F32), layout],
  );
  const packed = new Uint8Array(d.size(layout));
  d.exec(reorder, [w, packed], `reorder of a ${n}×${k} weight into oneDNN's layout`);
  const sample = takeSample(w, new Float32Array(Math.min(SAMPLES, w.length)));
  return { n, k, sample, layout, packed };
}

/**
 * C[m,n] = A[m,k]·Wᵀ for W stored [n,k], all dense row-major f32, by the packed path; false
 * (nothing written) when it does not apply: off, no oneDNN 2.x, m outside 2…{@linkcode
 * PACKED_MAX_ROWS}, or no oneDNN implementation for the shape.
 */
export function packedProduct(
  a: Float32Array,
  w: Float32Array,
  c: Float32Array,
  m: number,
  n: number,
  k: number,
): boolean {
  if (!enabled || m < 2 || m > PACKED_MAX_ROWS || w.length !== n * k) return false;
  const d = lib();
  if (!d) return false;
  let e = entries.get(w);
  if (!e || e.n !== n || e.k !== k || !sampleMatches(w, e)) {
    // a weight not seen before, or changed since: pack it (again)
    const fresh = pack(d, w, n, k);
    if (!fresh) return false;
    entries.set(w, e = fresh);
  }
  const p = primitive(d, m, n, k, e.layout);
  if (!p) return false;
  d.exec(
    p,
    [a.subarray(0, m * k), e.packed, c.subarray(0, m * n)],
    `packed f32 matmul ${m}×${n}×${k}`,
  );
  return true;
}

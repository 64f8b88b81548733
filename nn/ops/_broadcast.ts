/**
 * Strided iteration over broadcast operands (CPU kernels of the elementwise ops).
 * @module
 */

/** Strides of `inShape` as seen from `outShape` (0 on broadcast axes), padded on the left. */
export function bcastStrides(inShape: readonly number[], outShape: readonly number[]): number[] {
  const r = outShape.length;
  const s = new Array<number>(r).fill(0);
  let acc = 1;
  for (let i = inShape.length - 1; i >= 0; i--) {
    const o = r - inShape.length + i;
    s[o] = inShape[i] === 1 && outShape[o] !== 1 ? 0 : acc;
    acc *= inShape[i];
  }
  return s;
}

/**
 * Calls `f(outIndex, offsets)` for every output element in row-major order, with one flat input
 * offset per operand (broadcast axes repeat elements). Inner axis runs as a tight loop.
 */
export function forEachBroadcast(
  outShape: readonly number[],
  inShapes: readonly (readonly number[])[],
  inner: (o: number, n: number, offs: Int32Array, innerStrides: Int32Array) => void,
): void {
  const r = outShape.length;
  const k = inShapes.length;
  const strides = inShapes.map((s) => bcastStrides(s, outShape));
  if (r === 0) {
    inner(0, 1, new Int32Array(k), new Int32Array(k));
    return;
  }
  const n = outShape[r - 1];
  const innerStrides = new Int32Array(k);
  for (let j = 0; j < k; j++) innerStrides[j] = strides[j][r - 1];
  let outer = 1;
  for (let i = 0; i < r - 1; i++) outer *= outShape[i];
  const idx = new Int32Array(r);
  const offs = new Int32Array(k);
  for (let o = 0; o < outer; o++) {
    inner(o * n, n, offs, innerStrides);
    // advance the odometer over axes r-2 .. 0
    for (let ax = r - 2; ax >= 0; ax--) {
      idx[ax]++;
      for (let j = 0; j < k; j++) offs[j] += strides[j][ax];
      if (idx[ax] < outShape[ax]) break;
      for (let j = 0; j < k; j++) offs[j] -= strides[j][ax] * outShape[ax];
      idx[ax] = 0;
    }
  }
}

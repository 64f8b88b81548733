/**
 * Element types of tensors.
 *
 * `f32` is the working type everywhere; `f64` exists on the CPU backend for gradient checks;
 * `i32` / `u32` hold token ids, indices and masks. `bf16` is a storage type of the bfloat16
 * precision on the CPU: bfloat16 bits in a `Uint16Array`, which only the ops that say so take
 * (matmul, SwiGLU, RoPE and attention, for the activations of `model/layers/mlp.ts` and
 * `attention.ts`); they compute in f32 and round to nearest even when they store bf16.
 * @module
 */

/** The element type of a tensor. */
export type DType = "f32" | "f64" | "i32" | "u32" | "bf16";

/** Any typed array a tensor can be read back into (bf16: the bits, in a `Uint16Array`). */
export type TypedArray = Float32Array | Float64Array | Int32Array | Uint32Array | Uint16Array;

/** Every dtype, in a fixed order (used by tests and error messages). */
export const DTYPES: readonly DType[] = ["f32", "f64", "i32", "u32", "bf16"];

/**
 * Whether `dtype` is a floating-point type that ops compute in (f32, f64). bf16 is not: it is
 * stored, and only the ops that say so read it.
 */
export function isFloat(dtype: DType): boolean {
  return dtype === "f32" || dtype === "f64";
}

/** The dtype ops compute `dtype`'s values in: f32 for bf16 (a storage type), else itself. */
export function computeDtype(dtype: DType): DType {
  return dtype === "bf16" ? "f32" : dtype;
}

/** Whether gradients flow through values of `dtype`: the floats, and bf16. */
export function isDifferentiable(dtype: DType): boolean {
  return isFloat(computeDtype(dtype));
}

/** Bytes per element of `dtype`. */
export function byteSize(dtype: DType): number {
  return dtype === "f64" ? 8 : dtype === "bf16" ? 2 : 4;
}

/** The typed array that holds each dtype. */
const ARRAYS = {
  f32: Float32Array,
  f64: Float64Array,
  i32: Int32Array,
  u32: Uint32Array,
  bf16: Uint16Array,
} as const satisfies Record<DType, unknown>;

/** A new zero-filled typed array of `size` elements of `dtype`. */
export function allocArray(dtype: DType, size: number): TypedArray {
  return new ARRAYS[dtype](size);
}

/** A `dtype` view of `length` elements of `buffer` from byte `byteOffset`. */
export function viewArray(
  dtype: DType,
  buffer: ArrayBufferLike,
  byteOffset: number,
  length: number,
): TypedArray {
  return new ARRAYS[dtype](buffer as ArrayBuffer, byteOffset, length); // shared buffers too
}

/** The dtype a typed array holds. */
export function dtypeOfArray(a: TypedArray): DType {
  return DTYPES.find((d) => a instanceof ARRAYS[d])!;
}

/** Copies `src` (any numeric array) into a new typed array of `dtype`. */
export function toTypedArray(src: ArrayLike<number>, dtype: DType): TypedArray {
  const out = allocArray(dtype, src.length);
  for (let i = 0; i < src.length; i++) out[i] = src[i];
  return out;
}

const bitsF32 = new Float32Array(1), bitsU32 = new Uint32Array(bitsF32.buffer);

/** The f32 value of bf16 bits (exact). */
export function bf16Value(bits: number): number {
  bitsU32[0] = (bits & 0xffff) << 16;
  return bitsF32[0];
}

/** The bf16 bits of f32 bits `v`: round to nearest even; NaN stays NaN (its quiet bit set). */
export function bf16OfF32Bits(v: number): number {
  return (v & 0x7fffffff) > 0x7f800000 ? (v >>> 16) | 0x40 : (v + 0x7fff + ((v >>> 16) & 1)) >>> 16;
}

/** `x` rounded to f32 and then to bf16 bits ({@linkcode bf16OfF32Bits}). */
export function bf16Bits(x: number): number {
  bitsF32[0] = x;
  return bf16OfF32Bits(bitsU32[0]);
}

/** Element i of `a` as a number (bf16 bits widened). */
export function valueAt(a: TypedArray, i: number): number {
  return a instanceof Uint16Array ? bf16Value(a[i]) : a[i];
}

/** Stores `v` at i of `a` (into bf16, rounded once from f32). */
export function storeAt(a: TypedArray, i: number, v: number): void {
  a[i] = a instanceof Uint16Array ? bf16Bits(v) : v;
}

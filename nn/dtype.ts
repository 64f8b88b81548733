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

/** Whether gradients flow through values of `dtype`: the floats, and bf16. */
export function isDifferentiable(dtype: DType): boolean {
  return isFloat(dtype) || dtype === "bf16";
}

/** Bytes per element of `dtype`. */
export function byteSize(dtype: DType): number {
  return dtype === "f64" ? 8 : dtype === "bf16" ? 2 : 4;
}

/** A new zero-filled typed array of `size` elements of `dtype`. */
export function allocArray(dtype: DType, size: number): TypedArray {
  switch (dtype) {
    case "f32":
      return new Float32Array(size);
    case "f64":
      return new Float64Array(size);
    case "i32":
      return new Int32Array(size);
    case "u32":
      return new Uint32Array(size);
    case "bf16":
      return new Uint16Array(size);
  }
}

/** The dtype a typed array holds. */
export function dtypeOfArray(a: TypedArray): DType {
  if (a instanceof Float32Array) return "f32";
  if (a instanceof Float64Array) return "f64";
  if (a instanceof Int32Array) return "i32";
  if (a instanceof Uint16Array) return "bf16";
  return "u32";
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

/**
 * Element types of tensors.
 *
 * `f32` is the working type everywhere; `f64` exists on the CPU backend for gradient checks;
 * `i32` / `u32` hold token ids, indices and masks.
 * @module
 */

/** The element type of a tensor. */
export type DType = "f32" | "f64" | "i32" | "u32";

/** Any typed array a tensor can be read back into. */
export type TypedArray = Float32Array | Float64Array | Int32Array | Uint32Array;

/** Every dtype, in a fixed order (used by tests and error messages). */
export const DTYPES: readonly DType[] = ["f32", "f64", "i32", "u32"];

/** Whether `dtype` is a floating-point type (differentiable). */
export function isFloat(dtype: DType): boolean {
  return dtype === "f32" || dtype === "f64";
}

/** Bytes per element of `dtype`. */
export function byteSize(dtype: DType): number {
  return dtype === "f64" ? 8 : 4;
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
  }
}

/** The dtype a typed array holds. */
export function dtypeOfArray(a: TypedArray): DType {
  if (a instanceof Float32Array) return "f32";
  if (a instanceof Float64Array) return "f64";
  if (a instanceof Int32Array) return "i32";
  return "u32";
}

/** Copies `src` (any numeric array) into a new typed array of `dtype`. */
export function toTypedArray(src: ArrayLike<number>, dtype: DType): TypedArray {
  const out = allocArray(dtype, src.length);
  for (let i = 0; i < src.length; i++) out[i] = src[i];
  return out;
}

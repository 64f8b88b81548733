/**
 * Creating tensors on the default backend (or a given one).
 * @module
 */
import type { Backend } from "./backend/backend.ts";
import { defaultBackend } from "./backend/select.ts";
import type { DType, TypedArray } from "./dtype.ts";
import { allocArray, dtypeOfArray } from "./dtype.ts";
import { checkShape, fmt, sizeOf } from "./shape.ts";
import { Tensor } from "./tensor.ts";

/** Options shared by creation functions. */
export interface CreateOptions {
  /** Backend to create on (default: the current default backend). */
  backend?: Backend;
}

/** Nested arrays of numbers, as accepted by `tensor`. */
export type NestedArray = number | readonly NestedArray[];

function inferShape(data: NestedArray): number[] {
  const shape: number[] = [];
  let d: NestedArray = data;
  while (Array.isArray(d)) {
    shape.push(d.length);
    d = d[0] as NestedArray;
  }
  return shape;
}

function flattenInto(data: NestedArray, out: number[]): void {
  if (Array.isArray(data)) { for (const x of data) flattenInto(x as NestedArray, out); }
  else out.push(data as number);
}

/**
 * Creates a tensor from a typed array, a flat array with a shape, or nested arrays.
 *
 * @param data values
 * @param shape axis sizes (default: inferred; a flat array becomes 1-D)
 * @param dtype element type (default: the typed array's, else f32)
 * @returns the new tensor
 * @example
 * ```ts
 * import { tensor } from "@minimind/ts";
 * const x = tensor([[1, 2], [3, 4]]);          // [2, 2] f32
 * const ids = tensor([1, 5, 9], [3], "i32");
 * ```
 */
export function tensor(
  data: TypedArray | NestedArray,
  shape?: readonly number[],
  dtype?: DType,
  options: CreateOptions = {},
): Tensor {
  let flat: ArrayLike<number>;
  let dt: DType;
  if (ArrayBuffer.isView(data)) {
    flat = data as TypedArray;
    dt = dtype ?? dtypeOfArray(data as TypedArray);
  } else {
    const list: number[] = [];
    flattenInto(data, list);
    flat = list;
    dt = dtype ?? "f32";
    shape ??= inferShape(data);
  }
  shape ??= [flat.length];
  checkShape(shape);
  if (sizeOf(shape) !== flat.length) {
    throw new Error(`Cannot create a tensor of shape ${fmt(shape)} from ${flat.length} values`);
  }
  let arr: TypedArray;
  if (ArrayBuffer.isView(flat) && dtypeOfArray(flat as TypedArray) === dt) arr = flat as TypedArray;
  else {
    arr = allocArray(dt, flat.length);
    for (let i = 0; i < flat.length; i++) arr[i] = flat[i];
  }
  const b = options.backend ?? defaultBackend();
  return new Tensor(b.fromArray(arr), [...shape], dt);
}

/**
 * A tensor of zeros.
 *
 * @param shape axis sizes
 * @param dtype element type (default f32)
 * @returns the new tensor
 */
export function zeros(
  shape: readonly number[],
  dtype: DType = "f32",
  options: CreateOptions = {},
): Tensor {
  checkShape(shape);
  const b = options.backend ?? defaultBackend();
  return new Tensor(b.alloc(dtype, sizeOf(shape)), [...shape], dtype);
}

/**
 * A tensor filled with `value`.
 *
 * @param shape axis sizes
 * @param value fill value
 * @param dtype element type (default f32)
 * @returns the new tensor
 */
export function full(
  shape: readonly number[],
  value: number,
  dtype: DType = "f32",
  options: CreateOptions = {},
): Tensor {
  checkShape(shape);
  const arr = allocArray(dtype, sizeOf(shape));
  arr.fill(value);
  const b = options.backend ?? defaultBackend();
  return new Tensor(b.fromArray(arr), [...shape], dtype);
}

/**
 * A tensor of ones.
 *
 * @param shape axis sizes
 * @param dtype element type (default f32)
 * @returns the new tensor
 */
export function ones(
  shape: readonly number[],
  dtype: DType = "f32",
  options: CreateOptions = {},
): Tensor {
  return full(shape, 1, dtype, options);
}

/**
 * Zeros with the shape, dtype and backend of `x`.
 *
 * @param x template
 * @returns the new tensor
 */
export function zerosLike(x: Tensor): Tensor {
  return zeros(x.shape, x.dtype, { backend: x.backend });
}

/**
 * `value` with the shape, dtype and backend of `x`.
 *
 * @param x template
 * @param value fill value
 * @returns the new tensor
 */
export function fullLike(x: Tensor, value: number): Tensor {
  return full(x.shape, value, x.dtype, { backend: x.backend });
}

/**
 * A scalar (rank-0) tensor.
 *
 * @param value the value
 * @param dtype element type (default f32)
 * @returns the new tensor
 */
export function scalar(value: number, dtype: DType = "f32", options: CreateOptions = {}): Tensor {
  return full([], value, dtype, options);
}

/**
 * `[start, start+step, …)` below `stop`.
 *
 * @param start first value (or the stop when it is the only argument)
 * @param stop exclusive end
 * @param step increment (default 1)
 * @param dtype element type (default i32)
 * @returns the new 1-D tensor
 */
export function arange(
  start: number,
  stop?: number,
  step = 1,
  dtype: DType = "i32",
  options: CreateOptions = {},
): Tensor {
  if (stop === undefined) [start, stop] = [0, start];
  const n = Math.max(0, Math.ceil((stop - start) / step));
  const arr = allocArray(dtype, n);
  for (let i = 0; i < n; i++) arr[i] = start + i * step;
  const b = options.backend ?? defaultBackend();
  return new Tensor(b.fromArray(arr), [n], dtype);
}

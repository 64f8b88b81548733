/**
 * Shape utilities. Every helper throws an error that names the shapes involved.
 * @module
 */

/** A tensor shape: one size per axis, row-major. */
export type Shape = readonly number[];

/** Number of elements of `shape` (1 for a scalar). */
export function sizeOf(shape: Shape): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Formats a shape as `[2, 3]` for error messages. */
export function fmt(shape: Shape): string {
  return `[${shape.join(", ")}]`;
}

/** Row-major strides of `shape`. */
export function stridesOf(shape: Shape): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i];
  }
  return s;
}

/** Whether two shapes are equal. */
export function sameShape(a: Shape, b: Shape): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Validates a shape: non-negative integers only. */
export function checkShape(shape: Shape, what = "tensor"): void {
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) {
      throw new Error(
        `Cannot create ${what} with shape ${fmt(shape)}: sizes must be integers >= 0`,
      );
    }
  }
}

/** NumPy broadcasting of two or more shapes. */
export function broadcastShapes(...shapes: Shape[]): number[] {
  const rank = Math.max(...shapes.map((s) => s.length));
  const out = new Array<number>(rank).fill(1);
  for (const s of shapes) {
    for (let i = 0; i < s.length; i++) {
      const o = rank - s.length + i;
      const d = s[i];
      if (out[o] === 1) out[o] = d;
      else if (d !== 1 && d !== out[o]) {
        throw new Error(
          `Cannot broadcast shapes ${shapes.map(fmt).join(" and ")}: axis ${o} has sizes ${
            out[o]
          } and ${d}`,
        );
      }
    }
  }
  return out;
}

/** Normalises a possibly negative axis for a tensor of `rank` axes. */
export function normAxis(axis: number, rank: number, what = "axis"): number {
  const a = axis < 0 ? axis + rank : axis;
  if (!Number.isInteger(a) || a < 0 || a >= rank) {
    throw new Error(`Cannot use ${what} ${axis} on a tensor of rank ${rank}`);
  }
  return a;
}

/** Normalises a list of axes (or all axes when undefined), sorted and de-duplicated. */
export function normAxes(axes: number | readonly number[] | undefined, rank: number): number[] {
  if (axes === undefined) return [...Array(rank).keys()];
  const list = typeof axes === "number" ? [axes] : axes;
  const out = [...new Set(list.map((a) => normAxis(a, rank)))];
  return out.sort((x, y) => x - y);
}

/** Resolves one `-1` entry of a reshape target against `size` elements. */
export function resolveReshape(from: Shape, to: readonly number[]): number[] {
  const size = sizeOf(from);
  const out = [...to];
  const neg = out.indexOf(-1);
  if (neg >= 0) {
    const rest = sizeOf(out.filter((_, i) => i !== neg));
    if (rest === 0 || size % rest !== 0) {
      throw new Error(`Cannot reshape ${fmt(from)} to ${fmt(to)}: -1 cannot be inferred`);
    }
    out[neg] = size / rest;
  }
  checkShape(out, "reshape target");
  if (sizeOf(out) !== size) {
    throw new Error(
      `Cannot reshape ${fmt(from)} (${size} elements) to ${fmt(to)} (${sizeOf(out)} elements)`,
    );
  }
  return out;
}

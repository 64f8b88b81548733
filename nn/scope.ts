/**
 * Memory policy: `scope(fn)` frees every tensor created inside `fn` that `fn` does not return.
 * Long-lived trees (params, optimizer state, KV cache) are disposed by the code that replaces them.
 * @module
 */
import { Tensor } from "./tensor.ts";
import { closeFrame, openFrame, openFrames, track } from "./scope_stack.ts";

/** Collects every tensor reachable in a returned value (arrays, plain objects, Maps). */
function collect(value: unknown, into: Set<Tensor>, seen: Set<unknown>): void {
  if (value instanceof Tensor) {
    into.add(value);
    return;
  }
  if (value === null || typeof value !== "object" || seen.has(value)) return;
  seen.add(value);
  if (Array.isArray(value)) { for (const v of value) collect(v, into, seen); }
  else if (value instanceof Map) { for (const v of value.values()) collect(v, into, seen); }
  else if (
    Object.getPrototypeOf(value) === Object.prototype || Object.getPrototypeOf(value) === null
  ) {
    for (const v of Object.values(value)) collect(v, into, seen);
  }
}

/**
 * Runs `fn` and disposes every tensor it created that is not part of its return value. Returned
 * tensors move to the enclosing scope. `fn` must be synchronous: a scope cannot span an `await`.
 *
 * @param fn the computation
 * @returns what `fn` returns
 * @example
 * ```ts
 * import { scope, tensor, add, mul } from "@minimind/ts";
 * const x = tensor([1, 2, 3]);
 * const y = scope(() => mul(add(x, x), x)); // the intermediate add(x, x) is freed
 * ```
 */
export function scope<T>(fn: () => T): T {
  const mine = openFrame();
  let result: T;
  try {
    result = fn();
  } catch (e) {
    closeFrame();
    for (const t of mine) t.dispose();
    throw e;
  }
  closeFrame();
  if (result instanceof Promise) {
    for (const t of mine) t.dispose();
    throw new Error("Cannot use an async function in scope(): a scope cannot span an await");
  }
  const keep = new Set<Tensor>();
  collect(result, keep, new Set());
  for (const t of mine) {
    if (keep.has(t)) track(t);
    else t.dispose();
  }
  return result;
}

/**
 * Removes `t` from every enclosing scope so it survives them; the caller becomes responsible for
 * disposing it.
 *
 * @param t a tensor (or tree of tensors) to keep
 * @returns `t`
 */
export function keep<T>(t: T): T {
  const set = new Set<Tensor>();
  collect(t, set, new Set());
  for (const frame of openFrames()) {
    for (let i = frame.length - 1; i >= 0; i--) if (set.has(frame[i])) frame.splice(i, 1);
  }
  return t;
}

/** Number of scopes currently open (for tests). */
export function scopeDepth(): number {
  return openFrames().length;
}

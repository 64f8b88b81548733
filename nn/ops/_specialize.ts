/**
 * Per-op loop specialisation for the CPU elementwise kernels.
 *
 * NOTE: V8 shares type feedback between closures made from the same function literal, so one
 * generic loop calling `f(x[i])` for every table row goes megamorphic and runs ~5x slower than a
 * hand-written loop. Compiling the loop text once per row gives each row its own feedback, and
 * `f` gets inlined. The source is a fixed template (no user input).
 * @module
 */

let serial = 0;

/**
 * Compiles `body` into a fresh function of `params`, with `f` in scope. Each call's source gets a
 * unique tag: V8 caches compilations by source text, and a shared compilation would share the
 * type feedback we are trying to separate.
 */
export function specialize<T>(f: unknown, params: string[], body: string): T {
  const src = `// kernel ${serial++}\nreturn function (${params.join(", ")}) {\n${body}\n};`;
  // deno-lint-ignore no-explicit-any
  const make = new Function("f", src) as any;
  return make(f) as T;
}

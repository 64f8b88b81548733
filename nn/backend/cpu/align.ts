/**
 * Cache-line alignment of the CPU backend's large arrays and of the scratch that native code reads.
 * Large JS buffers start 16 bytes past a 64-byte boundary; vector loads and stores of AVX-512 code
 * (BLAS, oneDNN) then straddle two cache lines: oneDNN's bf16 products ran at 0.65–0.70× the speed
 * on such operands (1024×1408×512: 1,403 against 1,999 GFLOP/s).
 *
 * @module
 */

/** The alignment arrays get: a cache line, one AVX-512 vector. */
export const CACHE_LINE = 64;

/**
 * Bytes from the start of `view` to the next 64-byte boundary (0 when it is on one, or when its
 * address cannot be read: not Deno, or no FFI permission).
 */
export function alignPad(view: ArrayBufferView): number {
  try {
    const addr = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(view)));
    const line = BigInt(CACHE_LINE);
    return Number((line - addr % line) % line);
  } catch {
    return 0;
  }
}

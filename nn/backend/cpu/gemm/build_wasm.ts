/**
 * Build script for the wasm SIMD matmul kernel: generates the WebAssembly text (WAT) for the packed
 * micro-kernel and its macro loop, assembles it with the npm `wabt` package (no native toolchain
 * needed) and writes `kernel_wasm.ts`, which embeds the bytes as base64 so that nothing has to be
 * built at run time.
 *
 * ```sh
 * deno run -A nn/backend/cpu/gemm/build_wasm.ts          # rewrite kernel_wasm.ts
 * deno run -A nn/backend/cpu/gemm/build_wasm.ts --wat    # print the WAT of the relaxed/shared variant
 * deno run -A nn/backend/cpu/gemm/build_wasm.ts --check  # fail if kernel_wasm.ts is stale
 * ```
 *
 * Four variants are emitted: {relaxed SIMD FMA, plain SIMD mul+add} × {shared memory, private memory}.
 * Relaxed SIMD is used when the engine validates it; shared memory when `SharedArrayBuffer` exists
 * (it always does in Deno; browsers need cross-origin isolation).
 *
 * @module
 */

import { buildMain, embedWasm } from "../wasm_build.ts";

/** Rows of A per micro-tile. 3 rows × 3 vectors = 9 accumulators fit x64's 16 xmm registers. */
export const MR = 3;
/** Columns of B per micro-tile (a multiple of 4: one f32x4 per 4 columns). */
export const NR = 12;

/** Options for one kernel variant. */
interface Variant {
  relaxed: boolean;
  shared: boolean;
}

/**
 * Packed layout (all offsets in bytes, all f32):
 * - A is packed per K block of `kc` rows: for each M panel `ip`, a `kcur × MR` column-interleaved
 *   panel (`a[k][r]` contiguous), so block `kb0` starts at `pa + kb0 * Mp * 4`.
 * - B likewise: for each N panel `jp`, a `kcur × NR` panel (`b[k][0..NR)` contiguous), block `kb0`
 *   at `pb + kb0 * Np * 4`.
 * - C is a padded `Mp × Np` row-major matrix at `pc`.
 * Padding rows/columns of the packed panels are zero, so the micro-kernel never handles edges.
 */
function kernelWat({ relaxed, shared }: Variant): string {
  const nv = NR / 4;
  const acc = (r: number, v: number) => `$c${r}_${v}`;
  const madd = (a: string, b: string, c: string) =>
    relaxed ? `(f32x4.relaxed_madd ${a} ${b} ${c})` : `(f32x4.add (f32x4.mul ${a} ${b}) ${c})`;

  const locals: string[] = [];
  for (let r = 0; r < MR; r++) {
    for (let v = 0; v < nv; v++) locals.push(`(local ${acc(r, v)} v128)`);
  }
  for (let v = 0; v < nv; v++) locals.push(`(local $b${v} v128)`);
  locals.push(`(local $a v128)`);

  // One k step: load NR floats of B, then for each row splat A[r] and FMA into the accumulators.
  const step: string[] = [];
  for (let v = 0; v < nv; v++) {
    step.push(`(local.set $b${v} (v128.load offset=${v * 16} (local.get $pb)))`);
  }
  for (let r = 0; r < MR; r++) {
    step.push(`(local.set $a (v128.load32_splat offset=${r * 4} (local.get $pa)))`);
    for (let v = 0; v < nv; v++) {
      step.push(
        `(local.set ${acc(r, v)} ${
          madd("(local.get $a)", `(local.get $b${v})`, `(local.get ${acc(r, v)})`)
        })`,
      );
    }
  }
  step.push(`(local.set $pa (i32.add (local.get $pa) (i32.const ${MR * 4})))`);
  step.push(`(local.set $pb (i32.add (local.get $pb) (i32.const ${NR * 4})))`);

  // Write back: C = acc (first K block with beta = 0) or C += acc.
  const store: string[] = [];
  const add: string[] = [];
  for (let r = 0; r < MR; r++) {
    const row = r === 0
      ? "(local.get $pc)"
      : `(i32.add (local.get $pc) (i32.mul (local.get $ldc) (i32.const ${r})))`;
    store.push(`(local.set $p ${row})`);
    add.push(`(local.set $p ${row})`);
    for (let v = 0; v < nv; v++) {
      store.push(`(v128.store offset=${v * 16} (local.get $p) (local.get ${acc(r, v)}))`);
      add.push(
        `(v128.store offset=${v * 16} (local.get $p) (f32x4.add (v128.load offset=${
          v * 16
        } (local.get $p)) (local.get ${acc(r, v)})))`,
      );
    }
  }

  return `(module
  (import "env" "memory" (memory 1 65536${shared ? " shared" : ""}))

  ;; C[MR×NR tile at $pc, row stride $ldc bytes] (+)= Apanel[kc×MR] · Bpanel[kc×NR]
  (func $micro (param $pa i32) (param $pb i32) (param $pc i32) (param $ldc i32) (param $kc i32) (param $overwrite i32)
    ${locals.join("\n    ")}
    (local $end i32) (local $p i32)
    (local.set $end (i32.add (local.get $pb) (i32.mul (local.get $kc) (i32.const ${NR * 4}))))
    (if (i32.gt_u (local.get $end) (local.get $pb))
      (then
        (loop $k
          ${step.join("\n          ")}
          (br_if $k (i32.lt_u (local.get $pb) (local.get $end))))))
    (if (local.get $overwrite)
      (then
        ${store.join("\n        ")})
      (else
        ${add.join("\n        ")})))

  ;; Macro loop over the packed operands for M panels [ip0, ip1) × N panels [jp0, jp1).
  ;; mp/np: total M/N panels (C is (mp*MR) × (np*NR)); k: depth; kc: K block; mcp: M panels per
  ;; block (A block kept in L2); beta0: 1 when C must be overwritten rather than accumulated.
  (func (export "gemm") (param $pa i32) (param $pb i32) (param $pc i32) (param $mp i32) (param $np i32)
      (param $k i32) (param $kc i32) (param $ip0 i32) (param $ip1 i32) (param $jp0 i32) (param $jp1 i32)
      (param $mcp i32) (param $beta0 i32)
    (local $kb i32) (local $kcur i32) (local $ablk i32) (local $bblk i32) (local $ib i32) (local $ie i32)
    (local $jp i32) (local $ip i32) (local $bpan i32) (local $ldc i32) (local $overwrite i32)
    (local.set $ldc (i32.mul (local.get $np) (i32.const ${NR * 4})))
    (local.set $kb (i32.const 0))
    (block $done
      (loop $kloop
        (br_if $done (i32.ge_s (local.get $kb) (local.get $k)))
        (local.set $kcur (i32.sub (local.get $k) (local.get $kb)))
        (if (i32.gt_s (local.get $kcur) (local.get $kc)) (then (local.set $kcur (local.get $kc))))
        (local.set $overwrite (i32.and (local.get $beta0) (i32.eqz (local.get $kb))))
        (local.set $ablk (i32.add (local.get $pa) (i32.mul (local.get $kb) (i32.mul (local.get $mp) (i32.const ${
    MR * 4
  })))))
        (local.set $bblk (i32.add (local.get $pb) (i32.mul (local.get $kb) (i32.mul (local.get $np) (i32.const ${
    NR * 4
  })))))
        (local.set $ib (local.get $ip0))
        (block $idone
          (loop $iloop
            (br_if $idone (i32.ge_s (local.get $ib) (local.get $ip1)))
            (local.set $ie (i32.add (local.get $ib) (local.get $mcp)))
            (if (i32.gt_s (local.get $ie) (local.get $ip1)) (then (local.set $ie (local.get $ip1))))
            (local.set $jp (local.get $jp0))
            (block $jdone
              (loop $jloop
                (br_if $jdone (i32.ge_s (local.get $jp) (local.get $jp1)))
                (local.set $bpan (i32.add (local.get $bblk) (i32.mul (local.get $jp) (i32.mul (local.get $kcur) (i32.const ${
    NR * 4
  })))))
                (local.set $ip (local.get $ib))
                (block $pdone
                  (loop $ploop
                    (br_if $pdone (i32.ge_s (local.get $ip) (local.get $ie)))
                    (call $micro
                      (i32.add (local.get $ablk) (i32.mul (local.get $ip) (i32.mul (local.get $kcur) (i32.const ${
    MR * 4
  }))))
                      (local.get $bpan)
                      (i32.add (local.get $pc)
                        (i32.add (i32.mul (i32.mul (local.get $ip) (i32.const ${MR})) (local.get $ldc))
                                 (i32.mul (local.get $jp) (i32.const ${NR * 4}))))
                      (local.get $ldc) (local.get $kcur) (local.get $overwrite))
                    (local.set $ip (i32.add (local.get $ip) (i32.const 1)))
                    (br $ploop)))
                (local.set $jp (i32.add (local.get $jp) (i32.const 1)))
                (br $jloop)))
            (local.set $ib (local.get $ie))
            (br $iloop)))
        (local.set $kb (i32.add (local.get $kb) (local.get $kc)))
        (br $kloop)))))
`;
}

const VARIANTS: Record<string, Variant> = {
  RELAXED_SHARED: { relaxed: true, shared: true },
  RELAXED_PRIVATE: { relaxed: true, shared: false },
  SIMD_SHARED: { relaxed: false, shared: true },
  SIMD_PRIVATE: { relaxed: false, shared: false },
};

function build(): Promise<string> {
  const header = [
    "// Generated by build_wasm.ts from the WAT it writes; do not edit. Rebuild with:",
    "//   deno run -A nn/backend/cpu/gemm/build_wasm.ts",
    "",
    "/** Rows of A per micro-tile of the wasm kernel. */",
    `export const MR = ${MR};`,
    "/** Columns of B per micro-tile of the wasm kernel. */",
    `export const NR = ${NR};`,
  ];
  const modules = Object.entries(VARIANTS).map(([name, v]) => ({
    name: `WASM_${name}`,
    doc: `wasm kernel, ${v.relaxed ? "relaxed SIMD FMA" : "SIMD mul+add"}, ${
      v.shared ? "shared" : "private"
    } memory`,
    file: `gemm_${name.toLowerCase()}.wat`,
    wat: kernelWat(v),
  }));
  return embedWasm(header, modules, {
    simd: true,
    threads: true,
    relaxed_simd: true,
    bulk_memory: true,
  });
}

if (import.meta.main) {
  await buildMain(
    Deno.args,
    new URL("./kernel_wasm.ts", import.meta.url),
    "nn/backend/cpu/gemm/build_wasm.ts",
    build,
    () => kernelWat(VARIANTS.RELAXED_SHARED),
  );
}

/**
 * What the two wasm build scripts (`gemm/build_wasm.ts`, `simd/build_wasm.ts`) share: assembling
 * WAT with the npm `wabt` package (no native toolchain), embedding the bytes in a generated
 * TypeScript module as base64, and the scripts' command line (`--wat` prints the text, `--check`
 * fails when the committed module is stale, no flag rewrites it). Build time only: nothing at run
 * time imports this.
 * @module
 */

import wabtInit from "npm:wabt@1.0.39";

/** wabt feature flags (`simd`, `threads`, `relaxed_simd`, `bulk_memory`, …). */
export type WasmFeatures = Record<string, boolean>;

/** One module to embed: its export name, doc comment, and WAT. */
export interface WasmModuleSource {
  /** The constant's name in the generated module (`WASM_…`). */
  readonly name: string;
  /** What the bytes are, for the constant's doc comment (the size is appended). */
  readonly doc: string;
  /** File name wabt reports in errors. */
  readonly file: string;
  /** The WebAssembly text. */
  readonly wat: string;
}

/**
 * Assembles and validates each module and returns the generated TypeScript source: the header
 * lines, then one `export const NAME = "<base64>"` per module.
 *
 * @param header the generated module's first lines (the "do not edit" note, constants)
 * @param modules the modules to embed
 * @param features the wasm features the modules use
 * @returns the module text
 */
export async function embedWasm(
  header: readonly string[],
  modules: readonly WasmModuleSource[],
  features: WasmFeatures,
): Promise<string> {
  const wabt = await wabtInit();
  const lines = [...header];
  for (const m of modules) {
    const mod = wabt.parseWat(m.file, m.wat, features);
    try {
      // wabt's typings omit validate's feature argument; without it shared memory is refused.
      (mod as unknown as { validate(f: object): void }).validate(features);
      const { buffer } = mod.toBinary({});
      lines.push(
        "",
        `/** ${m.doc} (${buffer.length} bytes, base64). */`,
        `export const ${m.name} =\n  "${toBase64(buffer)}";`,
      );
    } finally {
      mod.destroy();
    }
  }
  return lines.join("\n") + "\n";
}

function toBase64(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]);
  return btoa(s);
}

/**
 * A build script's command line: `--wat` prints `wat()`, `--check` exits 1 when `out` differs
 * from `build()`, and no flag writes `out`.
 *
 * @param args the script's arguments
 * @param out the generated module
 * @param script the script's path from the repository root, for the "stale" message
 * @param build generates the module text
 * @param wat the WAT to print with `--wat`
 */
export async function buildMain(
  args: readonly string[],
  out: URL,
  script: string,
  build: () => Promise<string>,
  wat: () => string,
): Promise<void> {
  if (args.includes("--wat")) {
    console.log(wat());
    return;
  }
  const text = await build();
  if (args.includes("--check")) {
    const old = await Deno.readTextFile(out).catch(() => "");
    if (old !== text) {
      console.error(`${out.pathname} is stale: run deno run -A ${script}`);
      Deno.exit(1);
    }
  } else {
    await Deno.writeTextFile(out, text);
    console.log(`wrote ${out.pathname}`);
  }
}

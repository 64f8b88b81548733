// Matmul GFLOP/s per path (blas, wasm on 1 thread, wasm with workers, plain TS) for 512³ and the LLM
// shapes of a 512→1536 linear layer on 1024 tokens, optionally next to numpy measured in the same
// run: numpy and our BLAS path alternate sample by sample (each sample ≥ 40 ms of calls), so both see
// the same machine load, and the ratio is the median of the paired ratios.
//
//   deno run -A bench/matmul_report.ts                       # our paths only
//   deno run -A bench/matmul_report.ts --numpy /usr/bin/python3 [--pairs 9] [--gap-ms 300] [--no-js]
//   deno run -A bench/matmul_report.ts --json                # machine-readable
//
// bench/matmul_vs_numpy.sh finds a Python with numpy and runs the second form.

import { getGemm, sgemmJs } from "../nn/backend/cpu/gemm/mod.ts";
import type { Gemm, SgemmArgs } from "../nn/backend/cpu/gemm/mod.ts";
import { openBlas } from "../nn/backend/cpu/gemm/blas.ts";
import { WasmGemm } from "../nn/backend/cpu/gemm/wasm.ts";

/** One benchmarked matmul: C[m,n] = op(A)·op(B). */
export interface Shape {
  name: string;
  transA: boolean;
  transB: boolean;
  m: number;
  n: number;
  k: number;
}

/** 512³ and the three matmuls of a linear layer x[1024,512] · Wᵀ with W stored [1536,512]. */
export const SHAPES: Shape[] = [
  { name: "512³", transA: false, transB: false, m: 512, n: 512, k: 512 },
  { name: "fwd y=x·Wᵀ 1024×512·512×1536", transA: false, transB: true, m: 1024, n: 1536, k: 512 },
  {
    name: "bwd dX=dY·W 1024×1536·1536×512",
    transA: false,
    transB: false,
    m: 1024,
    n: 512,
    k: 1536,
  },
  {
    name: "bwd dW=dYᵀ·X 1536×1024·1024×512",
    transA: true,
    transB: false,
    m: 1536,
    n: 512,
    k: 1024,
  },
];

/** Operands for `s` filled with values in [-0.5, 0.5). */
export function makeArgs(s: Shape): SgemmArgs {
  const fill = (n: number) => {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) a[i] = Math.random() - 0.5;
    return a;
  };
  return {
    transA: s.transA,
    transB: s.transB,
    m: s.m,
    n: s.n,
    k: s.k,
    a: fill(s.m * s.k),
    lda: s.transA ? s.m : s.k,
    b: fill(s.k * s.n),
    ldb: s.transB ? s.k : s.n,
    c: new Float32Array(s.m * s.n),
    ldc: s.n,
  };
}

/** Median GFLOP/s over `samples` timings, each of enough calls to last ≥ `minMs`. */
export function measure(
  sgemm: (a: SgemmArgs) => void,
  s: Shape,
  { samples = 7, minMs = 40 } = {},
): number {
  const args = makeArgs(s);
  sgemm(args); // warm-up (JIT, memory growth, BLAS thread start)
  let t = performance.now();
  sgemm(args);
  const once = Math.max(performance.now() - t, 1e-3);
  const reps = Math.max(1, Math.ceil(minMs / once));
  const rates: number[] = [];
  for (let i = 0; i < samples; i++) {
    t = performance.now();
    for (let r = 0; r < reps; r++) sgemm(args);
    const sec = (performance.now() - t) / 1000 / reps;
    rates.push((2 * s.m * s.n * s.k) / sec / 1e9);
  }
  return median(rates);
}

/** Median of a list of numbers. */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const h = s.length >> 1;
  return s.length % 2 ? s[h] : (s[h - 1] + s[h]) / 2;
}

/** A persistent Python process that times numpy matmuls on request, one sample per line. */
const NUMPY_SERVER = `
import json, sys, time
import numpy as np
info = ""
try:
    from threadpoolctl import threadpool_info
    info = "; ".join(f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')} {i.get('num_threads')} threads" for i in threadpool_info())
except Exception:
    pass
print(json.dumps({"numpy": np.__version__, "blas": info}), flush=True)
rng = np.random.default_rng(0)
cache = {}
for line in sys.stdin:
    ta, tb, m, n, k, min_ms = map(int, line.split())
    key = (ta, tb, m, n, k)
    if key not in cache:
        cache.clear()
        a = rng.random((k, m) if ta else (m, k), dtype=np.float32) - 0.5
        b = rng.random((n, k) if tb else (k, n), dtype=np.float32) - 0.5
        A, B = (a.T if ta else a), (b.T if tb else b)
        c = np.empty((m, n), dtype=np.float32)
        np.matmul(A, B, out=c)
        t = time.perf_counter(); np.matmul(A, B, out=c); once = max(time.perf_counter() - t, 1e-6)
        cache[key] = (A, B, c, max(1, int(-(-min_ms / 1000 // once))))
    A, B, c, reps = cache[key]
    t = time.perf_counter()
    for _ in range(reps): np.matmul(A, B, out=c)
    print(2 * m * n * k / ((time.perf_counter() - t) / reps) / 1e9, flush=True)
`;

/** numpy measured by a child Python, sample by sample, so it can alternate with our samples. */
export class NumpyServer {
  readonly #child: Deno.ChildProcess;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #lines: AsyncIterator<string>;
  /** numpy's version and BLAS (from threadpoolctl when installed). */
  info = "";

  private constructor(python: string) {
    this.#child = new Deno.Command(python, {
      args: ["-c", NUMPY_SERVER],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    this.#writer = this.#child.stdin.getWriter();
    this.#lines = this.#child.stdout.pipeThrough(new TextDecoderStream()).pipeThrough(
      new LineStream(),
    )[Symbol.asyncIterator]();
  }

  /** Starts `python` with numpy; rejects with its message if numpy does not import. */
  static async start(python: string): Promise<NumpyServer> {
    const s = new NumpyServer(python);
    const head = JSON.parse(await s.#line(`${python}: numpy did not start`));
    s.info = `numpy ${head.numpy}${head.blas ? ` (${head.blas})` : ""}`;
    return s;
  }

  async #line(what: string): Promise<string> {
    const r = await this.#lines.next();
    if (r.done) throw new Error(what);
    return r.value;
  }

  /** One timing of `s` (enough calls to last ≥ `minMs`), in GFLOP/s. */
  async sample(s: Shape, minMs = 40): Promise<number> {
    const line = [s.transA, s.transB, s.m, s.n, s.k].map((x) => +x).join(" ") + ` ${minMs}\n`;
    await this.#writer.write(new TextEncoder().encode(line));
    return Number(await this.#line(`numpy exited while timing ${s.name}`));
  }

  /** Ends the child. */
  async close(): Promise<void> {
    await this.#writer.close();
    await this.#child.status;
  }
}

/** Splits a text stream into lines. */
class LineStream extends TransformStream<string, string> {
  constructor() {
    let buf = "";
    super({
      transform(chunk, ctl) {
        buf += chunk;
        const parts = buf.split("\n");
        buf = parts.pop()!;
        for (const p of parts) ctl.enqueue(p);
      },
      flush(ctl) {
        if (buf) ctl.enqueue(buf);
      },
    });
  }
}

function pause(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** One timing of `reps` calls of `sgemm` on `args`, in GFLOP/s. */
export function sampleOnce(
  sgemm: (a: SgemmArgs) => void,
  args: SgemmArgs,
  reps: number,
): number {
  const t = performance.now();
  for (let r = 0; r < reps; r++) sgemm(args);
  const sec = (performance.now() - t) / 1000 / reps;
  return (2 * args.m * args.n * args.k) / sec / 1e9;
}

interface Row {
  shape: string;
  numpy?: number;
  blas?: number;
  ratio?: number;
  wasm1: number;
  wasmN: number;
  js?: number;
}

function flag(name: string): string | undefined {
  const i = Deno.args.indexOf(name);
  return i >= 0 ? Deno.args[i + 1] : undefined;
}

async function main(): Promise<void> {
  const python = flag("--numpy");
  const pairs = Number(flag("--pairs") ?? 9);
  // OpenBLAS's idle threads spin for ~0.1 s after a call (some builds without yielding), which
  // would slow the other process's next sample: leave a gap.
  const gapMs = Number(flag("--gap-ms") ?? 300);
  const withJs = !Deno.args.includes("--no-js");
  const json = Deno.args.includes("--json");
  const threads = Math.min(8, navigator.hardwareConcurrency);

  const blasOrMiss = openBlas();
  const blas: Gemm | undefined = "sgemm" in blasOrMiss ? blasOrMiss : undefined;
  const wasm1 = new WasmGemm();
  const wasmN = new WasmGemm();
  await wasmN.startWorkers(threads);
  const log = (s: string) => {
    if (!json) console.log(s);
  };

  log(`default path: ${getGemm().kind} (${getGemm().detail})`);
  log(`blas:   ${"sgemm" in blasOrMiss ? blasOrMiss.detail : `not found (${blasOrMiss.reason})`}`);
  log(`wasm:   ${wasm1.detail} / ${wasmN.detail}`);
  const env = ["OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS"]
    .map((v) => `${v}=${Deno.env.get(v) ?? "(unset)"}`).join(" ");
  log(`env:    ${env}`);

  const numpy = python ? await NumpyServer.start(python) : undefined;
  const rows: Row[] = [];
  for (const s of SHAPES) {
    // numpy and blas alternate sample by sample, so both see the same load; the ratio is the
    // median of the paired ratios.
    const np: number[] = [], bl: number[] = [], ratio: number[] = [];
    if (blas) {
      const args = makeArgs(s);
      blas.sgemm(args);
      const t = performance.now();
      blas.sgemm(args);
      const reps = Math.max(1, Math.ceil(40 / Math.max(performance.now() - t, 1e-3)));
      for (let r = 0; r < pairs; r++) {
        if (numpy) {
          np.push(await numpy.sample(s));
          await pause(gapMs);
        }
        bl.push(sampleOnce((a) => blas.sgemm(a), args, reps));
        if (numpy) {
          ratio.push(bl[r] / np[r]);
          await pause(gapMs);
        }
      }
    } else if (numpy) {
      for (let r = 0; r < pairs; r++) np.push(await numpy.sample(s));
    }
    rows.push({
      shape: s.name,
      numpy: numpy ? median(np) : undefined,
      blas: blas ? median(bl) : undefined,
      ratio: ratio.length ? median(ratio) : undefined,
      wasm1: measure((a) => wasm1.sgemm(a), s),
      wasmN: measure((a) => wasmN.sgemm(a), s),
      js: withJs ? measure(sgemmJs, s, { samples: 3, minMs: 0 }) : undefined,
    });
  }
  await numpy?.close();
  wasmN.dispose();

  if (json) {
    console.log(JSON.stringify({ numpy: numpy?.info, threads, rows }));
    return;
  }
  if (numpy) log(`numpy:  ${python}: ${numpy.info}`);
  const f = (x?: number) => (x === undefined ? "-" : x.toFixed(1)).padStart(7);
  const head = `| ${"shape (GFLOP/s, median)".padEnd(34)} | ${
    ["numpy", "blas", "ratio", "wasm×1", `wasm×${threads}`, "js"].map((h) => h.padStart(7)).join(
      " | ",
    )
  } |`;
  console.log(`\n${head}\n|${"-".repeat(head.length - 2)}|`);
  for (const r of rows) {
    const ratio = r.ratio ? `${Math.round(100 * r.ratio)}%` : "-";
    console.log(
      `| ${r.shape.padEnd(34)} | ${
        [f(r.numpy), f(r.blas), ratio.padStart(7), f(r.wasm1), f(r.wasmN), f(r.js)].join(" | ")
      } |`,
    );
  }
  if (python && blas) {
    const ratios = rows.map((r) => r.ratio!);
    console.log(
      `\nblas / numpy: ${ratios.map((x) => `${Math.round(100 * x)}%`).join(", ")}; lowest ${
        Math.round(100 * Math.min(...ratios))
      }% (target ≥ 80%)`,
    );
  }
}

if (import.meta.main) await main();

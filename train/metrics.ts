/**
 * Metrics files of a run: one JSON object per logged step in `<save_dir>/<name>_metrics.jsonl`
 * (appended, so a resumed run continues the same file), and the loss curve drawn from it as SVG.
 * @module
 */
import { lineChartSvg } from "./plot.ts";

/** One logged step. */
export interface MetricsRecord {
  /** Optimizer updates done. */
  update: number;
  /** 0-based epoch. */
  epoch: number;
  /** 1-based micro-batch within the epoch. */
  step: number;
  /** Global micro-batch index (epoch · iters + step). */
  globalStep: number;
  /** Loss (incl. aux). */
  loss: number;
  /** Aux loss part. */
  auxLoss: number;
  /** Learning rate. */
  lr: number;
  /** Gradient norm before clipping at the last update (null when unknown). */
  gradNorm: number | null;
  /** Tokens per second since the previous record. */
  tokensPerS: number;
  /** Tokens processed so far. */
  tokens: number;
  /** Seconds since the run (or the resumed run) started. */
  elapsedS: number;
}

/** Appends records to a JSONL file (synchronously, so a crash loses at most one line). */
export class MetricsWriter {
  /** File path. */
  readonly path: string;
  readonly #enc = new TextEncoder();

  /**
   * @param path JSONL path (created or appended to)
   * @param options `truncate`: start a fresh file (a run that does not resume)
   */
  constructor(path: string, options: { truncate?: boolean } = {}) {
    this.path = path;
    if (options.truncate) Deno.writeTextFileSync(path, "");
  }

  /** Appends one record. */
  write(r: MetricsRecord): void {
    Deno.writeFileSync(this.path, this.#enc.encode(JSON.stringify(r) + "\n"), { append: true });
  }

  /**
   * Reads every record of a metrics file (skipping a torn last line).
   *
   * @param path JSONL path
   * @returns the records
   */
  static read(path: string): MetricsRecord[] {
    let text: string;
    try {
      text = Deno.readTextFileSync(path);
    } catch {
      return [];
    }
    const out: MetricsRecord[] = [];
    for (const line of text.split("\n")) {
      if (!line.trim()) continue;
      try {
        out.push(JSON.parse(line));
      } catch {
        // a torn line from a crash
      }
    }
    return out;
  }
}

/**
 * The loss curve of a metrics file as SVG (raw and smoothed loss against the global step).
 *
 * @param records metrics records
 * @param title chart title
 * @returns the SVG text
 */
export function lossCurveSvg(records: readonly MetricsRecord[], title: string): string {
  const x = records.map((r) => r.globalStep);
  const y = records.map((r) => r.loss);
  // exponential moving average, debiased (TensorBoard-style) so the start does not lag
  const smooth: number[] = [];
  let s = 0, w = 0;
  for (const v of y) {
    s = 0.9 * s + 0.1 * v;
    w = 0.9 * w + 0.1;
    smooth.push(s / w);
  }
  return lineChartSvg(
    [
      { name: "loss", x, y, color: "#9ecae1" },
      { name: "loss (EMA 0.9)", x, y: smooth, color: "#08519c" },
    ],
    { title, xLabel: "step", yLabel: "loss" },
  );
}

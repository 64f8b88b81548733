/**
 * A run's progress and metrics: `RunMetrics` holds the counters, reads each step's report late,
 * writes one JSON object per step to `<save_dir>/<name>_metrics.jsonl` (appended, so a resumed
 * run continues the same file) and prints the bar and MiniMind's log line; the loss curve is
 * drawn from the file as SVG.
 * @module
 */
import type { Tensor } from "../nn/tensor.ts";
import { lineChartSvg } from "./plot.ts";
import { atomicWrite } from "./checkpoint.ts";
import type { ResumeInfo } from "./checkpoint.ts";
import { disposeOutput } from "./step.ts";
import type { StepOutput } from "./step.ts";
import { formatLogLine } from "./progress.ts";
import type { Progress, ProgressInfo } from "./progress.ts";

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
  /** The step's own scalars (a trainer's reward, KL, …; absent when it reports none). */
  scalars?: Record<string, number>;
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

/** A non-finite loss stopped the run. */
export class NonFiniteLossError extends Error {
  /** @param message names the step and the checkpoint left intact */
  constructor(message: string) {
    super(message);
    this.name = "NonFiniteLossError";
  }
}

/** A step whose report is not read yet (the loop reads it after encoding the next step). */
export interface StepRecord {
  /** The step's report (tensors; `settle` reads and disposes them). */
  readonly out: StepOutput<Tensor>;
  /** 0-based epoch. */
  readonly epoch: number;
  /** 1-based micro-batch within the epoch. */
  readonly step: number;
  /** Learning rate it ran with. */
  readonly lr: number;
  /** Tokens processed up to and including this step. */
  readonly tokens: number;
  /** Optimizer updates done after this step. */
  readonly updates: number;
  /**
   * When the step call returned: on CPU the step is done then; on WebGPU the loop is throttled by
   * reading the previous loss, so the gaps between these instants are the step period either way.
   */
  readonly doneAt: number;
}

/** What {@link RunMetrics} needs to know about the run. */
export interface RunMetricsOptions {
  /** The JSONL metrics file. */
  metricsPath: string;
  /** The resume checkpoint (named when a non-finite loss stops the run). */
  resumePath: string;
  /** Where the bar and log lines go. */
  progress: Progress;
  /** Epochs of the run. */
  epochs: number;
  /** Micro-batches per epoch. */
  iters: number;
  /** Micro-batches the run will do in all. */
  total: number;
  /** Where a resumed run stood (its tokens, time and checkpoint carry on); null when fresh. */
  resumed: ResumeInfo | null;
}

/**
 * Progress and metrics of one run in one object: counters (tokens, steps, time), the losses read,
 * the metrics file (one record per step), the progress bar and MiniMind's log line, and where the
 * last good checkpoint stands.
 */
export class RunMetrics {
  /** Every loss read in this process, in order. */
  readonly losses: number[] = [];
  /** Tokens processed in all (including a resumed run's). */
  tokens: number;
  /** Micro-batches run by this process. */
  runSteps = 0;
  /** The last step run (epoch 0-based, step 1-based; the resume point before the first). */
  position: { epoch: number; step: number };
  readonly #o: RunMetricsOptions;
  readonly #writer: MetricsWriter;
  readonly #t0 = performance.now();
  readonly #elapsedBefore: number;
  #lastGood: { epoch: number; step: number } | null;
  #lastLoss = NaN;
  #lastAux = 0;
  #lr = 0;
  #epochStart = performance.now();
  #epochStartStep = 0;
  #log = { tokens: 0, at: performance.now() };
  #rec = { tokens: 0, at: performance.now() };

  /** @param o the run's files, shape and resume point */
  constructor(o: RunMetricsOptions) {
    this.#o = o;
    this.#writer = new MetricsWriter(o.metricsPath, { truncate: o.resumed === null });
    this.tokens = o.resumed?.tokens ?? 0;
    this.#elapsedBefore = o.resumed?.elapsedS ?? 0;
    this.position = { epoch: o.resumed?.epoch ?? 0, step: o.resumed?.step ?? 0 };
    this.#lastGood = o.resumed ? { ...this.position } : null;
    this.#log.tokens = this.#rec.tokens = this.tokens;
  }

  /** Training seconds in all (including a resumed run's). */
  elapsed(): number {
    return this.#elapsedBefore + (performance.now() - this.#t0) / 1000;
  }

  /** An epoch starts at `step` (the ETA counts from here). */
  startEpoch(step: number): void {
    this.#epochStart = performance.now();
    this.#epochStartStep = step;
  }

  /**
   * Counts a step that just returned and redraws the bar.
   *
   * @param out its report (read later by {@link RunMetrics.settle})
   * @param at epoch, 1-based step, learning rate, tokens of its batch, updates after it
   * @returns the record to settle
   */
  stepped(
    out: StepOutput<Tensor>,
    at: { epoch: number; step: number; lr: number; tokens: number; updates: number },
  ): StepRecord {
    const doneAt = performance.now();
    this.tokens += at.tokens;
    this.runSteps++;
    this.position = { epoch: at.epoch, step: at.step };
    this.#lr = at.lr;
    return { ...at, out, tokens: this.tokens, doneAt };
  }

  /** Redraws the bar (at most 10 times a second, terminals only). */
  draw(): void {
    this.#o.progress.update(this.#info());
  }

  /**
   * Reads a finished step's report (a sync point on WebGPU), writes its metrics record and, with
   * `log`, MiniMind's log line. A non-finite loss throws {@link NonFiniteLossError} naming the
   * step and the last checkpoint.
   *
   * @param p the step
   * @param log also print the log line (and read the gradient norm)
   */
  async settle(p: StepRecord, log: boolean): Promise<void> {
    const { out } = p;
    const loss = await out.loss.item(); // sync point
    const aux = out.aux ? await out.aux.item() : 0;
    const norm = log && out.gradNorm ? await out.gradNorm.item() : null;
    const scalars = out.scalars ? await readScalars(out.scalars) : undefined;
    disposeOutput(out);
    if (!Number.isFinite(loss)) throw this.#nonFinite(p, loss);
    this.losses.push(loss);
    this.#lastLoss = loss, this.#lastAux = aux;
    // one record per step (the loss is read anyway); the rate is timed between steps' ends, not
    // between reads: a log step reads two losses at once
    const dt = (p.doneAt - this.#rec.at) / 1000;
    const { iters } = this.#o;
    this.#writer.write({
      update: p.updates,
      epoch: p.epoch,
      step: p.step,
      globalStep: p.epoch * iters + p.step,
      loss,
      auxLoss: aux,
      lr: p.lr,
      gradNorm: norm,
      tokensPerS: dt > 0 ? (p.tokens - this.#rec.tokens) / dt : 0,
      tokens: p.tokens,
      elapsedS: this.elapsed(),
      ...(scalars ? { scalars } : {}),
    });
    this.#rec = { tokens: p.tokens, at: p.doneAt };
    if (!log) return;
    const info = { ...this.#info(), epoch: p.epoch, step: p.step, loss, auxLoss: aux, lr: p.lr };
    // a trainer's own scalars (reward, KL, …) follow MiniMind's fields on the same line
    const more = Object.entries(scalars ?? {}).map(([k, v]) => `, ${k}: ${fmtScalar(v)}`);
    this.#o.progress.line(formatLogLine(info) + more.join(""));
    this.#log = { tokens: this.tokens, at: performance.now() };
  }

  /** A resume checkpoint now holds the current position. */
  saved(): void {
    this.#lastGood = { ...this.position };
  }

  #info(): ProgressInfo {
    const { epoch, step } = this.position;
    const { iters, total } = this.#o;
    const now = performance.now();
    const done = step - this.#epochStartStep;
    const per = done > 0 ? (now - this.#epochStart) / 1000 / done : NaN;
    const dt = (now - this.#log.at) / 1000;
    return {
      epoch,
      epochs: this.#o.epochs,
      step,
      iters,
      loss: this.#lastLoss,
      auxLoss: this.#lastAux,
      lr: this.#lr,
      tokensPerS: dt > 0 ? (this.tokens - this.#log.tokens) / dt : 0,
      etaS: per * (Math.min(iters, total - epoch * iters) - step),
    };
  }

  #nonFinite(p: StepRecord, loss: number): NonFiniteLossError {
    const { iters, resumePath } = this.#o;
    const good = this.#lastGood;
    const where = good
      ? `the last checkpoint (${resumePath}, epoch ${good.epoch + 1} step ${good.step}) is intact`
      : "no checkpoint was written in this run";
    return new NonFiniteLossError(
      `Loss is ${loss} at epoch ${p.epoch + 1} step ${p.step}/${iters} (global step ${
        p.epoch * iters + p.step
      }, lr ${p.lr.toExponential(3)}): stopping; ${where}`,
    );
  }
}

async function readScalars(t: Record<string, Tensor>): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(t)) out[k] = await v.item();
  return out;
}

/**
 * Writes the loss curve of a metrics file as SVG (atomically; nothing when it has no records).
 *
 * @param metricsPath the JSONL file
 * @param svgPath the SVG destination
 * @param title chart title
 */
export async function writeLossCurve(
  metricsPath: string,
  svgPath: string,
  title: string,
): Promise<void> {
  const recs = MetricsWriter.read(metricsPath);
  if (!recs.length) return;
  await atomicWrite(svgPath, [new TextEncoder().encode(lossCurveSvg(recs, title))]);
}

function fmtScalar(v: number): string {
  return Number.isInteger(v) ? String(v) : Math.abs(v) >= 1e-3 ? v.toFixed(4) : v.toExponential(2);
}

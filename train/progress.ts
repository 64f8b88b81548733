/**
 * Console output of a training run: a one-line progress bar redrawn in place on a terminal
 * (loss, lr, tokens/s, ETA), and MiniMind's log line
 * (`Epoch:[1/2](100/1000), loss: …, lr: …, epoch_time: …min`) when the output is a file or pipe.
 * @module
 */

/** What the bar and the log line show. */
export interface ProgressInfo {
  /** 0-based epoch. */
  epoch: number;
  /** Epochs in the run. */
  epochs: number;
  /** Micro-batches done in this epoch (1-based step). */
  step: number;
  /** Micro-batches per epoch. */
  iters: number;
  /** Last loss read back (NaN before the first). */
  loss: number;
  /** Aux (MoE balance) loss part of `loss`. */
  auxLoss?: number;
  /** Learning rate of the step. */
  lr: number;
  /** Tokens per second (recent). */
  tokensPerS: number;
  /** Estimated seconds left in the epoch. */
  etaS: number;
}

/**
 * Seconds as `1:05:09`, `5:09` or `9s`.
 *
 * @param s seconds
 * @returns the text
 */
export function formatDuration(s: number): string {
  if (!Number.isFinite(s) || s < 0) return "?";
  s = Math.round(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  if (h > 0) return `${h}:${String(m).padStart(2, "0")}:${String(sec).padStart(2, "0")}`;
  if (m > 0) return `${m}:${String(sec).padStart(2, "0")}`;
  return `${sec}s`;
}

/**
 * MiniMind's trainer log line (train_pretrain.py / train_full_sft.py).
 *
 * @param p progress values
 * @returns the line
 * @example
 * ```ts
 * import { formatLogLine } from "./progress.ts";
 * formatLogLine({ epoch: 0, epochs: 1, step: 100, iters: 1000, loss: 3.2, lr: 5e-4, tokensPerS: 900, etaS: 600 });
 * // "Epoch:[1/1](100/1000), loss: 3.2000, logits_loss: 3.2000, aux_loss: 0.0000, lr: 0.00050000, epoch_time: 10.0min, 900 tokens/s"
 * ```
 */
export function formatLogLine(p: ProgressInfo): string {
  const aux = p.auxLoss ?? 0;
  return `Epoch:[${p.epoch + 1}/${p.epochs}](${p.step}/${p.iters}), loss: ${p.loss.toFixed(4)}, ` +
    `logits_loss: ${(p.loss - aux).toFixed(4)}, aux_loss: ${aux.toFixed(4)}, ` +
    `lr: ${p.lr.toFixed(8)}, epoch_time: ${(p.etaS / 60).toFixed(1)}min, ` +
    `${Math.round(p.tokensPerS)} tokens/s`;
}

/**
 * The progress bar text (no control characters).
 *
 * @param p progress values
 * @param width bar width in characters
 * @returns the line
 */
export function formatBar(p: ProgressInfo, width = 24): string {
  const frac = p.iters > 0 ? Math.min(1, p.step / p.iters) : 0;
  const full = Math.floor(frac * width);
  const bar = "█".repeat(full) + (full < width ? "▏" : "") +
    " ".repeat(Math.max(0, width - full - 1));
  const loss = Number.isFinite(p.loss) ? p.loss.toFixed(4) : "…";
  return `epoch ${p.epoch + 1}/${p.epochs} |${bar}| ${p.step}/${p.iters} loss ${loss} ` +
    `lr ${p.lr.toExponential(2)} ${Math.round(p.tokensPerS)} tok/s ETA ${formatDuration(p.etaS)}`;
}

/** Where progress goes: a redrawn bar on a terminal, log lines otherwise. */
export class Progress {
  readonly #tty: boolean;
  readonly #write: (s: string) => void;
  #barShown = false;
  #lastDraw = 0;

  /**
   * Creates the output.
   *
   * @param options `tty` (default: whether stdout is a terminal), `write` (default: stdout)
   */
  constructor(options: { tty?: boolean; write?: (s: string) => void } = {}) {
    this.#tty = options.tty ?? Deno.stdout.isTerminal();
    const enc = new TextEncoder();
    this.#write = options.write ?? ((s) => Deno.stdout.writeSync(enc.encode(s)));
  }

  /** Whether the bar is drawn. */
  get tty(): boolean {
    return this.#tty;
  }

  /** Redraws the bar (at most 10 times a second; no-op off a terminal). */
  update(p: ProgressInfo, force = false): void {
    if (!this.#tty) return;
    const now = performance.now();
    if (!force && now - this.#lastDraw < 100) return;
    this.#lastDraw = now;
    const cols = (() => {
      try {
        return Deno.consoleSize().columns;
      } catch {
        return 120;
      }
    })();
    this.#write(`\r\x1b[2K${formatBar(p).slice(0, cols - 1)}`);
    this.#barShown = true;
  }

  /** Prints a permanent line (above the bar on a terminal). */
  line(text: string): void {
    if (this.#tty && this.#barShown) this.#write("\r\x1b[2K");
    this.#write(text + "\n");
    this.#barShown = false;
  }

  /** Ends the bar's line. */
  done(): void {
    if (this.#tty && this.#barShown) this.#write("\n");
    this.#barShown = false;
  }
}

/**
 * A dependency-free SVG line chart for loss curves (and any other series, e.g. `get_lr`): linear
 * axes with "nice" ticks, one polyline per series, a legend. Pure string output.
 * @module
 */

/** One line of the chart. */
export interface Series {
  /** Legend label. */
  name: string;
  /** x values (same length as `y`). */
  x: readonly number[];
  /** y values (non-finite points are skipped). */
  y: readonly number[];
  /** Stroke colour (default: from a palette). */
  color?: string;
}

/** Options of {@link lineChartSvg}. */
export interface ChartOptions {
  /** Title above the plot. */
  title?: string;
  /** x-axis label. */
  xLabel?: string;
  /** y-axis label. */
  yLabel?: string;
  /** Width in px (default 720). */
  width?: number;
  /** Height in px (default 400). */
  height?: number;
  /** Smooth each series with an exponential moving average of this factor in [0, 1) (default 0). */
  smooth?: number;
}

const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];

function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/** About `n` round tick values covering [lo, hi]. */
export function niceTicks(lo: number, hi: number, n = 5): number[] {
  // a range below float resolution (e.g. a one-point curve and its smoothing) has one tick: the
  // step would vanish against lo and the loop below never end
  if (!(hi > lo) || hi - lo <= Math.abs(lo) * 1e-9) return [lo];
  const raw = (hi - lo) / n;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const ticks: number[] = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) {
    ticks.push(Number(t.toPrecision(12)));
  }
  return ticks;
}

function label(v: number): string {
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(1);
  return String(Number(v.toPrecision(4)));
}

function ema(y: readonly number[], f: number): number[] {
  if (!(f > 0)) return [...y];
  const out: number[] = [];
  let s = NaN;
  for (const v of y) {
    if (!Number.isFinite(v)) {
      out.push(v);
      continue;
    }
    s = Number.isNaN(s) ? v : f * s + (1 - f) * v;
    out.push(s);
  }
  return out;
}

/**
 * Renders series as an SVG line chart.
 *
 * @param series the lines
 * @param options title, labels, size, smoothing
 * @returns the SVG document
 * @example
 * ```ts
 * import { lineChartSvg } from "./plot.ts";
 * const svg = lineChartSvg([{ name: "loss", x: [1, 2, 3], y: [5, 4, 3.5] }], { title: "pretrain" });
 * ```
 */
export function lineChartSvg(series: readonly Series[], options: ChartOptions = {}): string {
  const W = options.width ?? 720, H = options.height ?? 400;
  const m = { l: 64, r: 16, t: options.title ? 36 : 16, b: 48 };
  const pw = W - m.l - m.r, ph = H - m.t - m.b;
  const lines = series.map((s) => ({ ...s, y: ema(s.y, options.smooth ?? 0) }));
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (const s of lines) {
    s.x.forEach((x, i) => {
      const y = s.y[i];
      if (!Number.isFinite(x) || !Number.isFinite(y)) return;
      x0 = Math.min(x0, x), x1 = Math.max(x1, x), y0 = Math.min(y0, y), y1 = Math.max(y1, y);
    });
  }
  if (!Number.isFinite(x0)) x0 = 0, x1 = 1, y0 = 0, y1 = 1;
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) y0 -= 0.5, y1 += 0.5;
  const pad = (y1 - y0) * 0.05;
  y0 -= pad, y1 += pad;
  const sx = (x: number) => m.l + ((x - x0) / (x1 - x0)) * pw;
  const sy = (y: number) => m.t + (1 - (y - y0) / (y1 - y0)) * ph;
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
  );
  if (options.title) {
    out.push(
      `<text x="${W / 2}" y="22" text-anchor="middle" font-size="15">${esc(options.title)}</text>`,
    );
  }
  for (const t of niceTicks(y0, y1)) {
    const y = sy(t).toFixed(1);
    out.push(
      `<line x1="${m.l}" x2="${m.l + pw}" y1="${y}" y2="${y}" stroke="#e5e5e5"/>`,
      `<text x="${m.l - 6}" y="${y}" text-anchor="end" dominant-baseline="middle">${
        label(t)
      }</text>`,
    );
  }
  for (const t of niceTicks(x0, x1, 6)) {
    const x = sx(t).toFixed(1);
    out.push(
      `<line x1="${x}" x2="${x}" y1="${m.t + ph}" y2="${m.t + ph + 4}" stroke="#333"/>`,
      `<text x="${x}" y="${m.t + ph + 17}" text-anchor="middle">${label(t)}</text>`,
    );
  }
  out.push(`<rect x="${m.l}" y="${m.t}" width="${pw}" height="${ph}" fill="none" stroke="#333"/>`);
  if (options.xLabel) {
    out.push(
      `<text x="${m.l + pw / 2}" y="${H - 10}" text-anchor="middle">${esc(options.xLabel)}</text>`,
    );
  }
  if (options.yLabel) {
    out.push(
      `<text transform="translate(14 ${m.t + ph / 2}) rotate(-90)" text-anchor="middle">${
        esc(options.yLabel)
      }</text>`,
    );
  }
  lines.forEach((s, k) => {
    const color = s.color ?? PALETTE[k % PALETTE.length];
    const pts: string[] = [];
    s.x.forEach((x, i) => {
      const y = s.y[i];
      if (Number.isFinite(x) && Number.isFinite(y)) {
        pts.push(`${sx(x).toFixed(1)},${sy(y).toFixed(1)}`);
      }
    });
    out.push(
      `<polyline fill="none" stroke="${color}" stroke-width="1.5" points="${pts.join(" ")}"/>`,
      `<line x1="${m.l + pw - 150}" x2="${m.l + pw - 130}" y1="${m.t + 14 + 16 * k}" y2="${
        m.t + 14 + 16 * k
      }" stroke="${color}" stroke-width="2"/>`,
      `<text x="${m.l + pw - 124}" y="${m.t + 14 + 16 * k}" dominant-baseline="middle">${
        esc(s.name)
      }</text>`,
    );
  });
  out.push("</svg>");
  return out.join("\n") + "\n";
}

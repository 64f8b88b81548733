/**
 * RoPE cos/sin tables (MiniMind `precompute_freqs_cis`), with YaRN frequency scaling. The rotate
 * itself is the fused `rope` op; this file only builds the tables, computed exactly as the
 * reference does in float32 (each step rounded with `Math.fround`) so f32 tables match PyTorch's
 * bit for bit up to the last-ulp differences of cos/sin; f64 tables are computed in f64 (the numpy
 * transcription used by the test vectors).
 * @module
 */
// P = table positions, HD = head dim, HD/2 = frequencies
import type { Backend } from "../../backend/backend.ts";
import { defaultBackend } from "../../backend/select.ts";
import { tensor } from "../../creation.ts";
import type { DType } from "../../dtype.ts";
import { keep } from "../../scope.ts";
import type { Tensor } from "../../tensor.ts";
import type { RopeScaling } from "../minimind_config.ts";

/** What determines a table. */
export interface RopeSpec {
  /** Head dim d (even). */
  readonly headDim: number;
  /** RoPE base θ. */
  readonly theta: number;
  /** Nominal table length `end` (max_position_embeddings): YaRN is active iff end / orig_max > 1. */
  readonly end: number;
  /** YaRN parameters, or null. */
  readonly scaling: RopeScaling | null;
}

/** YaRN boundaries: the ramp runs over frequency indices low..high. */
export function yarnBounds(spec: RopeSpec): { low: number; high: number } {
  const s = spec.scaling!;
  const d = spec.headDim, om = s.originalMaxPositionEmbeddings;
  // inv_dim(b) = d·ln(orig_max / (2π·b)) / (2·ln θ): the dim index that turns b times over orig_max
  const invDim = (b: number) => (d * Math.log(om / (b * 2 * Math.PI))) / (2 * Math.log(spec.theta));
  return {
    low: Math.max(Math.floor(invDim(s.betaFast)), 0),
    high: Math.min(Math.ceil(invDim(s.betaSlow)), d / 2 - 1),
  };
}

/**
 * The per-frequency inverse wavelengths inv_freq[i] = 1/θ^(2i/d), YaRN-scaled when active.
 *
 * @param spec table parameters
 * @param dtype f32 (rounded like PyTorch float32) or f64
 * @returns inv_freq [HD/2] and the cos/sin magnitude factor
 */
export function inverseFrequencies(
  spec: RopeSpec,
  dtype: DType = "f32",
): { invFreq: Float64Array; attnFactor: number } {
  const r = dtype === "f64" ? (x: number) => x : Math.fround;
  const d = spec.headDim, half = d / 2;
  const inv = new Float64Array(half);
  for (let i = 0; i < half; i++) {
    // 1.0 / (θ ** (arange(0, d, 2).float() / d)), every step in float32
    inv[i] = r(1 / r(Math.pow(spec.theta, r((2 * i) / d))));
  }
  let attnFactor = 1;
  const s = spec.scaling;
  if (s !== null) {
    attnFactor = s.attentionFactor;
    if (spec.end / s.originalMaxPositionEmbeddings > 1) {
      const { low, high } = yarnBounds(spec);
      const span = Math.max(high - low, 0.001);
      for (let i = 0; i < half; i++) {
        // ramp = clamp((i − low)/span, 0, 1); inv_freq · (1 − ramp + ramp/factor)
        const ramp = Math.min(Math.max(r(r(i - low) / r(span)), 0), 1);
        const mult = r(r(1 - ramp) + r(ramp / s.factor));
        inv[i] = r(inv[i] * mult);
      }
    }
  }
  return { invFreq: inv, attnFactor };
}

/** cos and sin tables [P, HD] with equal halves (what the `rope` op takes). */
export interface RopeTables {
  /** cos(t·inv_freq) twice along the last axis, [P, HD]. */
  readonly cos: Tensor;
  /** sin(t·inv_freq) twice along the last axis, [P, HD]. */
  readonly sin: Tensor;
}

/**
 * Host-side tables for positions 0..positions−1 (fresh, unscoped arrays).
 *
 * @param spec table parameters
 * @param positions rows P
 * @param dtype f32 or f64
 * @returns flat cos and sin arrays [P·HD]
 */
export function ropeTableArrays(
  spec: RopeSpec,
  positions: number,
  dtype: DType = "f32",
): { cos: Float32Array | Float64Array; sin: Float32Array | Float64Array } {
  const r = dtype === "f64" ? (x: number) => x : Math.fround;
  const { invFreq, attnFactor } = inverseFrequencies(spec, dtype);
  const d = spec.headDim, half = d / 2;
  const Arr = dtype === "f64" ? Float64Array : Float32Array;
  const cos = new Arr(positions * d), sin = new Arr(positions * d);
  for (let t = 0; t < positions; t++) {
    for (let i = 0; i < half; i++) {
      const a = r(t * invFreq[i]); // outer(t, inv_freq) in float32
      const c = r(Math.cos(a)) * attnFactor, s = r(Math.sin(a)) * attnFactor;
      cos[t * d + i] = c; // (P, HD): both halves equal
      cos[t * d + half + i] = c;
      sin[t * d + i] = s;
      sin[t * d + half + i] = s;
    }
  }
  return { cos, sin };
}

interface CacheEntry {
  rows: number;
  tables: RopeTables;
}

const caches = new WeakMap<Backend, Map<string, CacheEntry>>();

/**
 * Device tables covering at least `positions` rows, cached per backend, dtype and spec (grown to
 * the next power of two, capped at `spec.end`). The returned tensors are owned by the cache:
 * do not dispose them.
 *
 * @param spec table parameters
 * @param positions rows needed (≤ spec.end)
 * @param dtype table dtype (the model's float dtype)
 * @param backend backend (default: the current default backend)
 * @returns cos/sin [P, HD] with P ≥ positions
 */
export function ropeTables(
  spec: RopeSpec,
  positions: number,
  dtype: DType = "f32",
  backend: Backend = defaultBackend(),
): RopeTables {
  if (positions > spec.end) {
    throw new Error(
      `Cannot build RoPE tables for ${positions} positions: maxPositionEmbeddings is ${spec.end}`,
    );
  }
  let byKey = caches.get(backend);
  if (!byKey) caches.set(backend, byKey = new Map());
  const key = `${dtype}|${spec.headDim}|${spec.theta}|${spec.end}|${JSON.stringify(spec.scaling)}`;
  const hit = byKey.get(key);
  if (hit && hit.rows >= positions) return hit.tables;
  let rows = 2048;
  while (rows < positions) rows *= 2;
  rows = Math.min(rows, spec.end);
  const { cos, sin } = ropeTableArrays(spec, rows, dtype);
  const tables = keep({
    cos: tensor(cos, [rows, spec.headDim], dtype, { backend }), // (P, HD)
    sin: tensor(sin, [rows, spec.headDim], dtype, { backend }), // (P, HD)
  });
  // an older, smaller table may still be referenced by a tape: its saved handles keep it alive
  if (hit) {
    hit.tables.cos.dispose();
    hit.tables.sin.dispose();
  }
  byKey.set(key, { rows, tables });
  return tables;
}

/**
 * Test helpers: llm.c-style tensor comparison (max diff + first differing values), seeded input
 * generation from op examples, fixture paths.
 * @module
 */
import { fileURLToPath } from "node:url";
import type { DType, TypedArray } from "../nn/dtype.ts";
import { allocArray } from "../nn/dtype.ts";
import type { InputSpec } from "../nn/op.ts";
import { tensor } from "../nn/creation.ts";
import type { Tensor } from "../nn/tensor.ts";
import { normalArray, uniformArray } from "../nn/random.ts";
import type { Key } from "../nn/random.ts";
import { sizeOf } from "../nn/shape.ts";

/**
 * Absolute path of a test fixture, all of them in this repository: `golden/…` and `vectors/…` under
 * tests/fixtures/, and `minimind/<name>…` (MiniMind's tokenizers) under tokenizers/ at the root,
 * where the CLIs and the README use them too.
 */
export function fixture(rel: string): string {
  const tokenizer = /^minimind\/(.*)$/.exec(rel);
  const url = tokenizer
    ? new URL(`../tokenizers/${tokenizer[1]}`, import.meta.url)
    : new URL(`fixtures/${rel}`, import.meta.url);
  return fileURLToPath(url);
}

/** Result of comparing two arrays. */
export interface CloseReport {
  ok: boolean;
  maxAbs: number;
  maxRel: number;
  message: string;
}

/**
 * Compares `got` with `want` elementwise: |a − b| ≤ atol + rtol·|b|. The message lists the max
 * abs diff and the first differing values (llm.c `check_tensor`).
 */
export function compare(
  got: ArrayLike<number>,
  want: ArrayLike<number>,
  opts: { atol?: number; rtol?: number; label?: string } = {},
): CloseReport {
  const atol = opts.atol ?? 1e-5, rtol = opts.rtol ?? 1e-5;
  if (got.length !== want.length) {
    return {
      ok: false,
      maxAbs: Infinity,
      maxRel: Infinity,
      message: `${opts.label}: length ${got.length} vs ${want.length}`,
    };
  }
  let maxAbs = 0, maxRel = 0, bad = 0;
  const first: string[] = [];
  for (let i = 0; i < got.length; i++) {
    const a = got[i], b = want[i];
    const d = a === b ? 0 : Math.abs(a - b); // equal infinities match
    if (!(d <= atol + rtol * Math.abs(b))) {
      bad++;
      if (first.length < 5) first.push(`[${i}] got ${a} want ${b}`);
    }
    if (d > maxAbs || Number.isNaN(d)) maxAbs = Number.isNaN(d) ? NaN : d;
    const r = d / Math.max(Math.abs(b), 1e-30);
    if (r > maxRel) maxRel = r;
  }
  const message =
    `${
      opts.label ?? "tensor"
    }: ${bad}/${got.length} outside atol ${atol} rtol ${rtol}, maxdiff ${maxAbs}` +
    (first.length ? `; first: ${first.join(", ")}` : "");
  return { ok: bad === 0, maxAbs, maxRel, message };
}

/** Throws with the comparison message unless every element is close. */
export function assertClose(
  got: ArrayLike<number>,
  want: ArrayLike<number>,
  opts: { atol?: number; rtol?: number; label?: string } = {},
): CloseReport {
  const r = compare(got, want, opts);
  if (!r.ok) throw new Error(r.message);
  return r;
}

/** Values for one example input. */
export function inputValues(spec: InputSpec, k: Key, dtype: DType): TypedArray {
  const n = sizeOf(spec.shape);
  const out = allocArray(dtype, n);
  if (spec.values) {
    for (let i = 0; i < n; i++) out[i] = spec.values[i];
    return out;
  }
  const kind = spec.kind ?? "normal";
  if (kind === "normal") {
    const z = normalArray(k, n);
    for (let i = 0; i < n; i++) out[i] = z[i];
  } else {
    const u = uniformArray(k, n);
    for (let i = 0; i < n; i++) {
      if (kind === "positive") out[i] = 0.5 + 1.5 * u[i];
      else if (kind === "unit") out[i] = -0.9 + 1.8 * u[i];
      else if (kind === "int") out[i] = Math.floor(u[i] * (spec.high ?? 10));
      else out[i] = u[i] < 0.5 ? 0 : 1;
    }
  }
  return out;
}

/** A tensor for one example input (float inputs take `floatType`). */
export function inputTensor(spec: InputSpec, k: Key, floatType: DType): Tensor {
  const d = spec.dtype ?? "f32";
  const dt = d === "f32" || d === "f64" ? floatType : d;
  return tensor(inputValues(spec, k, dt), spec.shape, dt);
}

/**
 * An outside tool a test needs (PyTorch, llama.cpp): where it is missing the test is skipped with
 * the reason in its name, unless `MINIMIND_REQUIRE_TOOLS=1` (CI, which installs them) turns the
 * missing tool into a failure — a green CI run never hides a skipped check.
 *
 * @param name what is checked
 * @param missing why the tool cannot be used here, or null when it can
 * @returns the test's `name` and `ignore`, and `need()` to call first in its body
 */
export function needsTool(
  name: string,
  missing: string | null,
): { name: string; ignore: boolean; need(): void } {
  const required = Deno.env.get("MINIMIND_REQUIRE_TOOLS") === "1";
  return {
    name: missing && !required ? `${name} (skipped: ${missing})` : name,
    ignore: missing !== null && !required,
    need() {
      if (missing) throw new Error(`MINIMIND_REQUIRE_TOOLS=1 but ${missing}`);
    },
  };
}

/** Why `/usr/bin/python3` cannot import torch, or null when it can. */
export async function torchMissing(): Promise<string | null> {
  const probe = await new Deno.Command("/usr/bin/python3", { args: ["-c", "import torch"] })
    .output().catch(() => null);
  return probe?.success ? null : "/usr/bin/python3 has no torch (apt-get install python3-torch)";
}

/**
 * WGSL of causal GQA attention, flash-style: one invocation per query row runs an online
 * softmax over its visible keys (running max, running sum, rescaled accumulator) and saves the
 * row log-sum-exp; nothing of size T×S is ever stored. Variants: "rows" (software adapters:
 * every invocation streams K/V rows from storage) and "tiled" (real GPUs: 64 consecutive
 * queries of one head share K/V tiles staged in workgroup memory). Backward (FlashAttention-2
 * order): D = rowsum(dO ⊙ O); dQ per query row; dK, dV per key row over the query heads of its
 * group — no atomics, deterministic.
 * @module
 */
// B = batch, T = query time, S = key time, NH = query heads, NKV = kv heads, HD = head dim
import type { WgslDevice, WgslKernel, WgslPlan } from "../../op.ts";
import {
  cachedCode,
  grid,
  GRID_ARGS,
  gridIndex,
  NEG_INF,
  rowGrid,
} from "../../backend/webgpu/wgsl.ts";
import { kvOffset, kvStep } from "../../backend/cpu/attention_heads.ts";

/** Static shape of one attention call. */
export interface AttnShape {
  /** Batch. */
  b: number;
  /** Query time. */
  t: number;
  /** Key time. */
  s: number;
  /** Query heads. */
  nh: number;
  /** KV heads. */
  nkv: number;
  /** Head dim. */
  hd: number;
  /**
   * K and V are stored time-major, [S, B, NKV, HD] (a KV cache, whose appends then extend the
   * array in place), instead of [B, S, NKV, HD].
   */
  kvTimeMajor?: boolean;
}

const UNIFORMS =
  `struct U { b: u32, t: u32, s: u32, nh: u32, nkv: u32, grp: u32, causal: u32, scale: f32, tc: u32, nch: u32, kvb: u32, kvs: u32 }
@group(1) @binding(0) var<uniform> u: U;`;

function uniforms(
  d: AttnShape,
  causal: boolean,
  scale: number,
  tc = d.t,
  nch = 1,
): Pick<WgslKernel, "uniforms" | "uniformTypes"> {
  return {
    // kvb, kvs: K/V rows of HD values between batch rows and between key steps (kvOffset, kvStep)
    uniforms: [
      d.b,
      d.t,
      d.s,
      d.nh,
      d.nkv,
      d.nh / d.nkv,
      causal ? 1 : 0,
      scale,
      tc,
      nch,
      kvOffset(d, 1, 0) / d.hd,
      kvStep(d) / d.hd,
    ],
    uniformTypes: [
      "u32",
      "u32",
      "u32",
      "u32",
      "u32",
      "u32",
      "u32",
      "f32",
      "u32",
      "u32",
      "u32",
      "u32",
    ],
  };
}

/** Visible key limit of query t (exclusive): new tokens sit after the S − T cached ones. */
const LIMIT = "select(u.s, min(u.s, t + (u.s - u.t) + 1u), u.causal != 0u)";

/** Dot product of two HD-long rows `a[ao..]`, `b[bo..]` (unrolled). */
function dotExpr(hd: number, a: (d: number) => string, b: (d: number) => string): string {
  return Array.from({ length: hd }, (_, d) => `${a(d)} * ${b(d)}`).join(" + ");
}

/** Forward plan. */
export function attentionForward(
  d: AttnShape,
  hasMask: boolean,
  causal: boolean,
  scale: number,
  device: WgslDevice,
): WgslPlan {
  const hd = d.hd;
  const D = [...Array(hd).keys()];
  const tiled = !device.software;
  const bc = Math.max(1, Math.min(32, Math.floor(2048 / hd)));
  const maskDecl = hasMask ? `@group(0) @binding(3) var<storage, read> mask: array<f32>;` : "";
  const o = hasMask ? 4 : 3;
  const kAt = (dd: number) => tiled ? `kt[j * ${hd}u + ${dd}u]` : `k[ko + ${dd}u]`;
  const vAt = (dd: number) => tiled ? `vt[j * ${hd}u + ${dd}u]` : `v[ko + ${dd}u]`;
  const step = (masked: string) => `
      if (${masked}) {
        let sc = (${dotExpr(hd, (dd) => `q${dd}`, kAt)}) * u.scale;
        let mn = max(m, sc);
        let corr = exp(m - mn);
        let p = exp(sc - mn);
        l = l * corr + p;
${D.map((dd) => `        a${dd} = a${dd} * corr + p * ${vAt(dd)};`).join("\n")}
        m = mn;
      }`;
  const head = () =>
    `@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
${maskDecl}
@group(0) @binding(${o}) var<storage, read_write> out: array<f32>;
@group(0) @binding(${o + 1}) var<storage, read_write> lse: array<f32>;
${UNIFORMS}`;
  const finish = () => `
  if (!ok) { return; }
  var inv = 0.0;
  if (l > 0.0) { inv = 1.0 / l; }
${D.map((dd) => `  out[qo + ${dd}u] = a${dd} * inv;`).join("\n")}
  lse[i] = select(${NEG_INF}, m + log(l), l > 0.0);
}`;
  const init = () => `
  let h = bh % u.nh;
  let b = bh / u.nh;
  let g = h / u.grp;
  let qo = ((b * u.t + t) * u.nh + h) * ${hd}u;
${D.map((dd) => `  var q${dd} = 0.0;\n  var a${dd} = 0.0;`).join("\n")}
  if (ok) {
${D.map((dd) => `    q${dd} = q[qo + ${dd}u];`).join("\n")}
  }
  var m = ${NEG_INF};
  var l = 0.0;`;
  const visible = (s: string) =>
    hasMask ? `${s} < lim && mask[b * u.s + ${s}] != 0.0` : `${s} < lim`;
  if (!tiled) {
    const code = cachedCode(`attention rows ${hd} ${hasMask}`, () =>
      `${head()}
@compute @workgroup_size(64)
fn main(${GRID_ARGS}) {
  let i = ${gridIndex(64)};
  let ok = i < u.b * u.nh * u.t;
  if (!ok) { return; }
  let t = i % u.t;
  let bh = i / u.t;
${init()}
  let lim = ${LIMIT};
  for (var s = 0u; s < lim; s++) {
    let ko = (b * u.kvb + s * u.kvs + g) * ${hd}u;
    let j = 0u;
${step(hasMask ? "mask[b * u.s + s] != 0.0" : "true")}
  }
${finish()}`);
    return {
      kernels: [{
        code,
        workgroups: grid(d.b * d.nh * d.t, 64),
        ...uniforms(d, causal, scale),
      }],
    };
  }
  // tiled: workgroup = 64 consecutive queries of one (b, h); K/V tiles of bc keys shared
  const blocks = Math.ceil(d.t / 64);
  const code = cachedCode(`attention tiled ${hd} ${hasMask} ${bc}`, () =>
    `${head()}
var<workgroup> kt: array<f32, ${bc * hd}>;
var<workgroup> vt: array<f32, ${bc * hd}>;
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let blocks = (u.t + 63u) / 64u;
  let w = wid.x + wid.y * nwg.x;
  let bh = w / blocks;
  let t0 = (w % blocks) * 64u;
  let t = t0 + lid;
  let ok = t < u.t && bh < u.b * u.nh;
  let i = bh * u.t + t;
${init()}
  let lim = ${LIMIT};
  let tl = min(t0 + 63u, u.t - 1u);
  let wlim = select(u.s, min(u.s, tl + (u.s - u.t) + 1u), u.causal != 0u);
  for (var s0 = 0u; s0 < wlim; s0 += ${bc}u) {
    workgroupBarrier();
    for (var e = lid; e < ${bc * hd}u; e += 64u) {
      let s = s0 + e / ${hd}u;
      if (s < u.s && bh < u.b * u.nh) {
        let src = (b * u.kvb + s * u.kvs + g) * ${hd}u + e % ${hd}u;
        kt[e] = k[src];
        vt[e] = v[src];
      }
    }
    workgroupBarrier();
    if (ok) {
      for (var j = 0u; j < ${bc}u; j++) {
        let s = s0 + j;
${step(visible("s"))}
      }
    }
  }
${finish()}`);
  return {
    kernels: [{
      code,
      workgroups: rowGrid(d.b * d.nh * blocks),
      ...uniforms(d, causal, scale),
    }],
  };
}

/**
 * Backward plan: inputs q, k, v, o, lse, dout, [mask]; outputs dq, dk, dv; scratch D (and, on
 * GPUs, per-chunk partial dK/dV: the queries are split into ≤ 16 chunks so B·S·NKV key rows
 * become up to 16× as many invocations, summed in a second pass).
 */
export function attentionBackward(
  d: AttnShape,
  hasMask: boolean,
  causal: boolean,
  scale: number,
  device: WgslDevice,
): WgslPlan {
  const hd = d.hd;
  const D = [...Array(hd).keys()];
  const nIn = hasMask ? 7 : 6;
  const rows = d.b * d.nh * d.t;
  const decl = `@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read> o: array<f32>;
@group(0) @binding(4) var<storage, read> lse: array<f32>;
@group(0) @binding(5) var<storage, read> dout: array<f32>;
${hasMask ? "@group(0) @binding(6) var<storage, read> mask: array<f32>;" : ""}
${UNIFORMS}`;
  const keyRows = d.b * d.s * d.nkv;
  const tc = Math.max(16, Math.ceil(d.t / 16));
  const nch = device.software || keyRows >= 65536 ? 1 : Math.ceil(d.t / tc);
  const u = uniforms(d, causal, scale, nch > 1 ? tc : d.t, nch);
  // D = rowsum(dO ⊙ O), one per query row, into scratch
  const dKernel = cachedCode(
    `attention bwd d ${hd}`,
    () =>
      `@group(0) @binding(0) var<storage, read> o: array<f32>;
@group(0) @binding(1) var<storage, read> dout: array<f32>;
@group(0) @binding(2) var<storage, read_write> dsum: array<f32>;
${UNIFORMS}
@compute @workgroup_size(64)
fn main(${GRID_ARGS}) {
  let i = ${gridIndex(64)};
  if (i >= u.b * u.nh * u.t) { return; }
  let t = i % u.t;
  let h = (i / u.t) % u.nh;
  let b = i / (u.t * u.nh);
  let qo = ((b * u.t + t) * u.nh + h) * ${hd}u;
  dsum[i] = ${dotExpr(hd, (dd) => `dout[qo + ${dd}u]`, (dd) => `o[qo + ${dd}u]`)};
}`,
  );
  const maskOk = hasMask ? "mask[b * u.s + s] != 0.0" : "true";
  // dQ = Σ_s dS·K with dS = P ⊙ (dP − D)·scale, P = exp(S·scale − lse)
  const dqKernel = cachedCode(`attention bwd dq ${hd} ${hasMask}`, () =>
    `${decl}
@group(0) @binding(${nIn}) var<storage, read_write> dq: array<f32>;
@group(0) @binding(${nIn + 1}) var<storage, read> dsum: array<f32>;
@compute @workgroup_size(64)
fn main(${GRID_ARGS}) {
  let i = ${gridIndex(64)};
  if (i >= u.b * u.nh * u.t) { return; }
  let t = i % u.t;
  let h = (i / u.t) % u.nh;
  let b = i / (u.t * u.nh);
  let g = h / u.grp;
  let qo = ((b * u.t + t) * u.nh + h) * ${hd}u;
${
      D.map((dd) =>
        `  let q${dd} = q[qo + ${dd}u];\n  let g${dd} = dout[qo + ${dd}u];\n  var a${dd} = 0.0;`
      ).join("\n")
    }
  let z = lse[i];
  let ds0 = dsum[i];
  let lim = ${LIMIT};
  if (z != ${NEG_INF}) {
    for (var s = 0u; s < lim; s++) {
      if (${maskOk}) {
        let ko = ((b * u.s + s) * u.nkv + g) * ${hd}u;
        let p = exp((${dotExpr(hd, (dd) => `q${dd}`, (dd) => `k[ko + ${dd}u]`)}) * u.scale - z);
        let dp = ${dotExpr(hd, (dd) => `g${dd}`, (dd) => `v[ko + ${dd}u]`)};
        let dsc = p * (dp - ds0) * u.scale;
${D.map((dd) => `        a${dd} += dsc * k[ko + ${dd}u];`).join("\n")}
      }
    }
  }
${D.map((dd) => `  dq[qo + ${dd}u] = a${dd};`).join("\n")}
}`);
  // dK = Σ dSᵀ·Q, dV = Σ Pᵀ·dO over the group's query heads and the queries that see key s
  const dkvKernel = cachedCode(`attention bwd dkv ${hd} ${hasMask}`, () =>
    `${decl}
@group(0) @binding(${nIn}) var<storage, read_write> dk: array<f32>;
@group(0) @binding(${nIn + 1}) var<storage, read_write> dv: array<f32>;
@group(0) @binding(${nIn + 2}) var<storage, read> dsum: array<f32>;
@compute @workgroup_size(64)
fn main(${GRID_ARGS}) {
  let i = ${gridIndex(64)};
  let rowsKv = u.b * u.s * u.nkv;
  if (i >= rowsKv * u.nch) { return; }
  let c = i / rowsKv;            // query chunk
  let e = i % rowsKv;            // key row (b, s, g)
  let g = e % u.nkv;
  let s = (e / u.nkv) % u.s;
  let b = e / (u.nkv * u.s);
  let ko = e * ${hd}u;
  let oo = c * rowsKv * ${hd}u + ko; // where this chunk's partial sums go
${
      D.map((dd) =>
        `  let k${dd} = k[ko + ${dd}u];\n  let v${dd} = v[ko + ${dd}u];\n  var ak${dd} = 0.0;\n  var av${dd} = 0.0;`
      ).join("\n")
    }
  // queries t with s < lim(t): t ≥ s − (S − T) when causal
  var t0 = c * u.tc;
  if (u.causal != 0u && s + u.t > u.s) { t0 = max(t0, s + u.t - u.s); }
  let t1 = min(u.t, (c + 1u) * u.tc);
  if (${maskOk}) {
    for (var hh = 0u; hh < u.grp; hh++) {
      let h = g * u.grp + hh;
      for (var t = t0; t < t1; t++) {
        let r = (b * u.nh + h) * u.t + t;
        let z = lse[r];
        if (z == ${NEG_INF}) { continue; }
        let qo = ((b * u.t + t) * u.nh + h) * ${hd}u;
        let p = exp((${dotExpr(hd, (dd) => `q[qo + ${dd}u]`, (dd) => `k${dd}`)}) * u.scale - z);
        let dp = ${dotExpr(hd, (dd) => `dout[qo + ${dd}u]`, (dd) => `v${dd}`)};
        let dsc = p * (dp - dsum[r]) * u.scale;
${
      D.map((dd) =>
        `        av${dd} += p * dout[qo + ${dd}u];\n        ak${dd} += dsc * q[qo + ${dd}u];`
      ).join("\n")
    }
      }
    }
  }
${D.map((dd) => `  dk[oo + ${dd}u] = ak${dd};\n  dv[oo + ${dd}u] = av${dd};`).join("\n")}
}`);
  const sumKernel = `@group(0) @binding(0) var<storage, read> pk: array<f32>;
@group(0) @binding(1) var<storage, read> pv: array<f32>;
@group(0) @binding(2) var<storage, read_write> dk: array<f32>;
@group(0) @binding(3) var<storage, read_write> dv: array<f32>;
${UNIFORMS}
@compute @workgroup_size(256)
fn main(${GRID_ARGS}) {
  let j = ${gridIndex(256)};
  let n = u.b * u.s * u.nkv * ${hd}u;
  if (j >= n) { return; }
  var ak = 0.0;
  var av = 0.0;
  for (var c = 0u; c < u.nch; c++) {
    ak += pk[c * n + j];
    av += pv[c * n + j];
  }
  dk[j] = ak;
  dv[j] = av;
}`;
  // dD = rowsum(dO ∘ O), then dQ; dK and dV per key row (in chunks of queries when nch > 1)
  const first = [
    { code: dKernel, workgroups: grid(rows, 64), ...u, bindings: [3, 5, nIn + 3] },
    {
      code: dqKernel,
      workgroups: grid(rows, 64),
      ...u,
      bindings: [...Array(nIn).keys(), nIn, nIn + 3],
    },
  ];
  if (nch > 1) {
    const part = keyRows * hd * nch;
    return {
      scratch: [
        { dtype: "f32", size: rows },
        { dtype: "f32", size: part },
        { dtype: "f32", size: part },
      ],
      kernels: [
        ...first,
        {
          code: dkvKernel,
          workgroups: grid(keyRows * nch, 64),
          ...u,
          bindings: [...Array(nIn).keys(), nIn + 4, nIn + 5, nIn + 3],
        },
        {
          code: sumKernel,
          workgroups: grid(keyRows * hd),
          ...u,
          bindings: [nIn + 4, nIn + 5, nIn + 1, nIn + 2],
        },
      ],
    };
  }
  return {
    scratch: [{ dtype: "f32", size: rows }],
    kernels: [
      ...first,
      {
        code: dkvKernel,
        workgroups: grid(keyRows, 64),
        ...u,
        bindings: [...Array(nIn).keys(), nIn + 1, nIn + 2, nIn + 3],
      },
    ],
  };
}

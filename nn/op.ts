/**
 * The op contract. A primitive is one `OpDef`: shape rule, CPU kernel, WGSL kernel, VJP rule,
 * saved values and examples, registered by one line in `ops/mod.ts` — or a view (reshape) that
 * shares its input's storage and runs no kernel. This module holds only the contract (no runtime
 * imports); `apply.ts` runs an op on the inputs' backend and records it for autodiff, and the
 * engine never names a specific op.
 * @module
 */
import type { DType, TypedArray } from "./dtype.ts";
import type { Tensor } from "./tensor.ts";

/** Shape and dtype of a value, as shape rules see it. */
export interface Meta {
  /** Axis sizes. */
  readonly shape: readonly number[];
  /** Element type. */
  readonly dtype: DType;
}

/** What a kernel is called with: input and output metas and the op's static params. */
export interface Call<P> {
  /** Input shapes/dtypes. */
  readonly inputs: readonly Meta[];
  /** Output shapes/dtypes. */
  readonly outputs: readonly Meta[];
  /** Static parameters. */
  readonly params: P;
}

/** What a VJP rule sees: the saved tensors (null where not saved) and the params. */
export interface VjpContext<P> {
  /** Inputs (null where `saves` did not keep them). */
  readonly inputs: readonly (Tensor | null)[];
  /** Outputs (null where `saves` did not keep them). */
  readonly outputs: readonly (Tensor | null)[];
  /** Input metas (always available). */
  readonly inMetas: readonly Meta[];
  /** Output metas (always available). */
  readonly outMetas: readonly Meta[];
  /** Static parameters. */
  readonly params: P;
  /**
   * Which inputs need a gradient (traced by a recording tape). A rule may return null for the
   * others instead of computing them — e.g. a frozen weight's gradient when training LoRA.
   */
  readonly needsGrad: readonly boolean[];
}

/**
 * A VJP rule: `ct` holds one cotangent per output (null where none reached it; never all
 * null). Returns one gradient per input (null = no gradient). Rules call ops, not kernels, and
 * never unbroadcast or accumulate: the engine does both.
 */
export type Vjp<P> = (ct: readonly (Tensor | null)[], ctx: VjpContext<P>) => (Tensor | null)[];

/** Marks an op as non-differentiable (JAX `defjvp_zero`). */
export const NONDIFF = "nondiff" as const;

/** How the conformance test and benchmarks build one input. */
export interface InputSpec {
  /** Shape. */
  readonly shape: readonly number[];
  /** Dtype (default f32; the gradient check uses f64 for float inputs). */
  readonly dtype?: DType;
  /** Value distribution: normal (default), positive (0.5..2), unit (-0.9..0.9), or int in [0, high). */
  readonly kind?: "normal" | "positive" | "unit" | "int" | "bool";
  /** Exclusive upper bound for `int` inputs. */
  readonly high?: number;
  /** Fixed values (overrides `kind`). */
  readonly values?: readonly number[];
}

/** One example application: input specs and params. */
export interface Example<P> {
  /** Inputs. */
  readonly inputs: readonly InputSpec[];
  /** Params. */
  readonly params: P;
  /** Label shown in test names. */
  readonly label?: string;
}

/** What a WGSL generator knows about the device it targets (kernel variants are chosen from it). */
export interface WgslDevice {
  /** The device's limits (as granted from the adapter's). */
  readonly limits: Readonly<Record<string, number>>;
  /**
   * A software adapter (Mesa llvmpipe/lavapipe): every storage or workgroup-memory load is a
   * per-lane scalar loop there, so register-blocked kernels without workgroup memory win; real
   * GPUs want shared-memory tiling.
   */
  readonly software: boolean;
  /** The device has `shader-f16`. */
  readonly f16: boolean;
  /**
   * The float16 precision is in effect (`WebGpuBackend.setMatmulPrecision`): the matmul op rounds
   * its operands to f16 and accumulates in f32. Absent means false.
   */
  readonly matmulF16?: boolean;
}

/** Binding index of the device status buffer (kernels report bad indices there; see `WgslKernel.bindings`). */
export const STATUS_BINDING = -1;

/**
 * One compute dispatch of a WGSL plan. Storage buffers are `@group(0) @binding(i)` for the i-th
 * entry of `bindings`; a kernel with `uniforms` reads them as `@group(1) @binding(0) var<uniform>`
 * (at most 256 bytes). Each binding's access (`read` / `read_write`) is read from the source.
 */
export interface WgslKernel {
  /** WGSL source. Identical sources share one pipeline (the source is the cache key). */
  readonly code: string;
  /** Entry point (default `main`). */
  readonly entryPoint?: string;
  /** Number of workgroups in x, y, z (a zero skips the dispatch). */
  readonly workgroups: readonly [number, number?, number?];
  /** 32-bit words of uniform data. */
  readonly uniforms?: ArrayLike<number>;
  /** How the words in `uniforms` are typed ("u32" default, "f32", "i32" per word). */
  readonly uniformTypes?: readonly ("u32" | "f32" | "i32")[];
  /**
   * Which buffers to bind, in order: indices into [...inputs, ...outputs, ...scratch], or
   * `STATUS_BINDING` for the device status buffer. Default: every input, then every output.
   */
  readonly bindings?: readonly number[];
}

/** Scratch storage a plan needs between its kernels (freed after the call). */
export interface WgslScratch {
  /** Element type. */
  readonly dtype: DType;
  /** Number of elements. */
  readonly size: number;
}

/** What an op's `wgsl` returns: kernels dispatched in order, plus scratch and zeroing needs. */
export interface WgslPlan {
  /** The dispatches, in order. */
  readonly kernels: readonly WgslKernel[];
  /** Scratch buffers (bound after the outputs). */
  readonly scratch?: readonly WgslScratch[];
  /** Output indices whose storage must be zero-filled before the first kernel (accumulators). */
  readonly zero?: readonly number[];
}

/** What every primitive declares: name, shape rule, VJP rule, saved values, examples. */
export interface OpCommon<P, N extends string> {
  /** Unique name (also the pipeline-cache key prefix and the op's key in `OPS`). */
  readonly name: N;
  /** Output metas from input metas; throws with the shapes in the message. */
  readonly infer: (inputs: readonly Meta[], params: P) => Meta[];
  /** The VJP rule, or `NONDIFF`. */
  readonly vjp: Vjp<P> | typeof NONDIFF;
  /** Which inputs/outputs the rule needs (default: every input, no output). */
  readonly saves?: {
    readonly inputs?: boolean | readonly number[];
    readonly outputs?: boolean | readonly number[];
  };
  /** Outputs that are saved statistics (e.g. log-sum-exp): not differentiable, their cotangent is never used. */
  readonly statOutputs?: readonly number[];
  /** Examples for the conformance test, the parity test and benchmarks. */
  readonly examples: readonly Example<P>[];
}

/** A primitive that runs kernels: the CPU and the WebGPU kernel are both required. */
export interface KernelOp<P, N extends string = string> extends OpCommon<P, N> {
  /** Not a view. */
  readonly view?: false;
  /** Reference CPU kernel: reads `ins`, fills the zeroed `outs` (f32 and f64). */
  readonly cpu: (ins: readonly TypedArray[], outs: TypedArray[], call: Call<P>) => void;
  /** The WebGPU plan for one call (see `WgslPlan`; a bare kernel list is a plan without scratch). */
  readonly wgsl: (call: Call<P>, device: WgslDevice) => WgslPlan | readonly WgslKernel[];
  /**
   * The CPU kernel writes every element of every output, so the backend may hand it recycled
   * arrays without zeroing them first (the conformance test checks it with NaN-filled outputs).
   */
  readonly writesAll?: boolean;
  /**
   * For these params, output i may be written into the storage of input `[i]` (null: a new
   * buffer), elementwise in place: backends that can (CPU) return the input's storage as the
   * output, so the inputs' handles see the new values. Only for callers that give the inputs up
   * (the train step's optimizer update, `StepHyper.donate`).
   */
  readonly inPlace?: (params: P) => readonly (number | null)[] | null;
  /**
   * For these params and input metas, output 0 begins with input j's values, in order (an append:
   * `concat` along an axis with only size-1 axes before it), or null. A backend may then make
   * output 0 a longer view of input j's array, so that only the appended values are written (CPU:
   * when the array has room after input j that no other storage has taken); input j's values are
   * never changed. The kernel sees its output begin where input j does and skips that copy.
   */
  readonly extendsInput?: (params: P, inputs: readonly Meta[]) => number | null;
}

/** A primitive whose output 0 shares input 0's storage (reshape): no kernel runs. */
export interface ViewOp<P, N extends string = string> extends OpCommon<P, N> {
  /** Output 0 is a new handle on input 0's storage. */
  readonly view: true;
}

/** A primitive op: a kernel op or a view. `N` is its name (the `OPS` registry checks keys by it). */
export type OpDef<P, N extends string = string> = KernelOp<P, N> | ViewOp<P, N>;

/** Params of ops that take none. */
export type NoParams = Record<string, never>;

/**
 * Declares an op (identity helper that fixes the params type and the name).
 *
 * @param def the op
 * @returns `def`
 */
export function defineOp<P, N extends string = string>(def: KernelOp<P, N>): KernelOp<P, N>;
/**
 * Declares a view op (identity helper that fixes the params type and the name).
 *
 * @param def the op
 * @returns `def`
 */
export function defineOp<P, N extends string = string>(def: ViewOp<P, N>): ViewOp<P, N>;
export function defineOp<P, N extends string>(def: OpDef<P, N>): OpDef<P, N> {
  return def;
}

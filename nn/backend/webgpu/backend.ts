/**
 * The WebGPU backend: pooled storages, ops' WGSL plans dispatched into one open compute pass
 * (no submit per op), uniforms from a ring buffer bound with dynamic offsets, cached pipelines
 * and bind groups, and sync points only where a value is read. GPU errors (validation, out of
 * memory, device loss, bad indices reported by kernels) surface as thrown errors at the next
 * call or read — never as silent zeros.
 * @module
 */
import type { Backend, BackendCounters, Storage } from "../backend.ts";
import { newCounters } from "../backend.ts";
import type { DType, TypedArray } from "../../dtype.ts";
import { allocArray } from "../../dtype.ts";
import type { KernelOp, Meta, OpDef, WgslDevice, WgslKernel, WgslPlan } from "../../op.ts";
import { STATUS_BINDING } from "../../op.ts";
import { fmt, sizeOf } from "../../shape.ts";
import type { OpenedDevice } from "./device.ts";
import type { PooledBuffer } from "./pool.ts";
import { BufferPool } from "./pool.ts";
import { PipelineCache } from "./pipelines.ts";
import { FILL_WGSL, grid } from "./wgsl.ts";

/** A WebGPU storage: a pooled buffer (null once freed). */
export interface WebGpuStorage extends Storage {
  /** The buffer (null after `free`). */
  buf: PooledBuffer | null;
}

/** Extra counters of the WebGPU backend. */
export interface WebGpuStats {
  /** Pipelines compiled. */
  pipelines: number;
  /** Bytes of device buffers held by the pool (live + free). */
  bytesHeld: number;
  /** Bytes in the pool's free lists. */
  bytesFree: number;
  /** Dispatches recorded since the last submit. */
  pendingDispatches: number;
}

/** Tuning knobs (tests and benchmarks change them). */
export interface WebGpuTuning {
  /** Submit once this many dispatches are recorded (default 1024). */
  maxBatchDispatches: number;
  /** Kernel variant: "auto" follows the adapter, "software" forces register-blocked, "gpu" forces shared-memory tiling. */
  variant: "auto" | "software" | "gpu";
}

const RING_BYTES = 1 << 20;
const UNIFORM_BINDING_BYTES = 256;
const STATUS_WORDS = 4;

/** Error codes kernels write into the status buffer. */
export const STATUS_CODES: Readonly<Record<number, string>> = {
  1: "an index was out of range",
  2: "a position was outside the RoPE table",
  3: "a target class was out of range",
};

/** The WebGPU backend (create it with `createWebGpuBackend` in `mod.ts`). */
export class WebGpuBackend implements Backend {
  readonly name = "webgpu";
  readonly counters: BackendCounters = newCounters();
  /** The device. */
  readonly device: GPUDevice;
  /** Adapter description. */
  readonly description: string;
  /** Whether the adapter is a software rasteriser. */
  readonly software: boolean;
  /** Tuning knobs. */
  readonly tuning: WebGpuTuning = { maxBatchDispatches: 1024, variant: "auto" };
  readonly #opened: OpenedDevice;
  #matmulF16 = false;
  readonly #pool: BufferPool;
  readonly #staging: BufferPool;
  readonly #pipelines: PipelineCache;
  #encoder: GPUCommandEncoder | null = null;
  #pass: GPUComputePassEncoder | null = null;
  #batch = 1;
  #batchDispatches = 0;
  #batchOps: string[] = [];
  readonly #ringGpu: GPUBuffer;
  readonly #ringCpu = new ArrayBuffer(RING_BYTES);
  readonly #ringU32 = new Uint32Array(this.#ringCpu);
  readonly #ringF32 = new Float32Array(this.#ringCpu);
  readonly #ringI32 = new Int32Array(this.#ringCpu);
  #ringUsed = 0;
  readonly #ringAlign: number;
  readonly #ringBindGroup: GPUBindGroup;
  readonly #status: PooledBuffer;
  #statusOps = new Set<string>();
  #lost: string | null = null;
  #errors: string[] = [];
  #pending: Promise<void>[] = [];
  #destroyed = false;
  #dry: Promise<void>[] | null = null;

  /** @param opened an opened device (see `openDevice`) */
  constructor(opened: OpenedDevice) {
    this.#opened = opened;
    this.device = opened.device;
    this.description = opened.description;
    this.software = opened.software;
    const dev = this.device;
    dev.lost.then((info) => {
      if (!this.#destroyed) this.#lost = `${info.reason ?? "unknown"}: ${info.message}`;
    });
    dev.addEventListener("uncapturederror", (ev) => {
      this.#errors.push((ev as GPUUncapturedErrorEvent).error.message);
    });
    const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
    this.#pool = new BufferPool(dev, usage);
    this.#staging = new BufferPool(dev, GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST);
    this.#pipelines = new PipelineCache(dev);
    this.#pipelines.onCompile = (label, check) => this.#watch(`compiling ${label}`, check);
    this.#ringAlign = Math.max(16, opened.limits.minUniformBufferOffsetAlignment ?? 256);
    this.#ringGpu = dev.createBuffer({
      label: "uniforms ring",
      size: RING_BYTES,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
    });
    this.#ringBindGroup = dev.createBindGroup({
      layout: this.#pipelines.uniformLayout,
      entries: [{
        binding: 0,
        resource: { buffer: this.#ringGpu, size: UNIFORM_BINDING_BYTES },
      }],
    });
    this.#status = this.#pool.acquire(STATUS_WORDS * 4).buf;
  }

  /** What WGSL generators see (the variant follows `tuning.variant`). */
  get info(): WgslDevice {
    const v = this.tuning.variant;
    return {
      limits: this.#opened.limits,
      software: v === "auto" ? this.software : v === "software",
      f16: this.#opened.f16,
      matmulF16: this.#matmulF16,
    };
  }

  /** The precision of the matmul op's products (see `setMatmulPrecision`). */
  get matmulPrecision(): "float32" | "float16" {
    return this.#matmulF16 ? "float16" : "float32";
  }

  /**
   * Mixed precision for the matmul op (linear layers, the LM head): with "float16" its f32
   * operands are rounded to f16 and their products accumulated in f32 into an f32 result, as
   * PyTorch's CUDA autocast does; weights, gradients, optimizer state, attention and every other
   * op stay f32. Needs the adapter's `shader-f16`. Returns null when the precision is in effect,
   * or why it stays float32.
   *
   * @param precision "float32" (default) or "float16"
   * @returns null, or the reason float16 is unavailable
   */
  setMatmulPrecision(precision: "float32" | "float16"): string | null {
    this.#matmulF16 = false;
    if (precision === "float32") return null;
    if (!this.#opened.f16) return `the adapter (${this.description}) lacks shader-f16`;
    this.#matmulF16 = true;
    return null;
  }

  /** Pool and pipeline statistics. */
  get stats(): WebGpuStats {
    return {
      pipelines: this.#pipelines.size,
      bytesHeld: this.#pool.bytesHeld,
      bytesFree: this.#pool.bytesFree,
      pendingDispatches: this.#batchDispatches,
    };
  }

  // ----------------------------------------------------------------------------------------
  // errors

  #watch(what: string, check: Promise<string | null>): void {
    this.#pending.push(check.then((msg) => {
      if (msg) this.#errors.push(`${what}: ${msg}`);
    }, (e) => {
      this.#errors.push(`${what}: ${(e as Error).message}`);
    }));
    if (this.#pending.length > 256) this.#pending = this.#pending.slice(-64);
  }

  #check(what: string): void {
    if (this.#destroyed) throw new Error(`Cannot ${what} on WebGPU: the backend was destroyed`);
    if (this.#lost) {
      throw new Error(`Cannot ${what} on WebGPU: the device was lost (${this.#lost})`);
    }
    if (this.#errors.length) {
      const errs = this.#errors;
      this.#errors = [];
      throw new Error(
        `Cannot ${what} on WebGPU: an earlier GPU command failed (${errs.length} error${
          errs.length > 1 ? "s" : ""
        }): ${errs[0]}`,
      );
    }
  }

  /** Waits for pending error checks and throws the first GPU error seen, if any. */
  async #settle(what: string): Promise<void> {
    const p = this.#pending;
    this.#pending = [];
    await Promise.all(p);
    this.#check(what);
  }

  // ----------------------------------------------------------------------------------------
  // storage

  /** A pooled buffer of `bytes`; `what` names it in the error when it is past the binding limit. */
  #storage(bytes: number, what = `${bytes} bytes`): WebGpuStorage {
    const max = this.#opened.limits.maxStorageBufferBindingSize ?? 134217728;
    if (bytes > max) {
      throw new Error(
        `Cannot allocate ${what} on WebGPU: the device binds at most ${max} bytes per buffer ` +
          `(maxStorageBufferBindingSize${
            this.software ? ", 128 MiB on Mesa's software adapter" : ""
          }); a smaller batch or sequence length (or --device cpu) fits`,
      );
    }
    const { buf, fresh } = this.#pool.acquire(Math.max(bytes, 4));
    if (fresh) this.counters.bytesAllocated += buf.capacity;
    else this.counters.poolHits++;
    this.counters.bytesInUse += bytes;
    const s: WebGpuStorage = { backend: this, refs: 0, bytes, buf };
    (s as { fresh?: boolean }).fresh = fresh;
    return s;
  }

  #checkDtype(dtype: DType, what: string): void {
    if (dtype === "f64") {
      throw new Error(
        `Cannot ${what} f64 on WebGPU: WGSL has no f64 (use f32, or the CPU backend)`,
      );
    }
    if (dtype === "bf16") {
      throw new Error(
        `Cannot ${what} bf16 on WebGPU: bf16 tensors are the CPU's bfloat16 precision (use f32)`,
      );
    }
  }

  alloc(dtype: DType, size: number): Storage {
    this.#check(`allocate ${size} ${dtype}`);
    this.#checkDtype(dtype, "allocate");
    const s = this.#storage(size * 4);
    if (!(s as { fresh?: boolean }).fresh && size > 0) this.#fill(s, size);
    return s;
  }

  fromArray(data: TypedArray): Storage {
    this.#check(`upload ${data.length} values`);
    if (data instanceof Float64Array) this.#checkDtype("f64", "upload");
    const bytes = data.byteLength;
    const max = this.#opened.limits.maxStorageBufferBindingSize ?? 134217728;
    if (bytes > max) {
      throw new Error(
        `Cannot upload ${bytes} bytes to WebGPU: the device binds at most ${max} bytes per buffer`,
      );
    }
    // a buffer no unsubmitted command refers to: writeBuffer lands before the pending batch runs
    const { buf, fresh } = this.#pool.acquire(Math.max(bytes, 4), this.#batch);
    if (fresh) this.counters.bytesAllocated += buf.capacity;
    else this.counters.poolHits++;
    this.counters.bytesInUse += bytes;
    if (bytes > 0) {
      this.device.queue.writeBuffer(
        buf.buffer,
        0,
        data.buffer as ArrayBuffer,
        data.byteOffset,
        bytes,
      );
    }
    return { backend: this, refs: 0, bytes, buf } as WebGpuStorage;
  }

  free(s: Storage): void {
    const g = s as WebGpuStorage;
    if (!g.buf) return;
    this.counters.bytesInUse -= g.bytes;
    this.#pool.release(g.buf);
    g.buf = null;
  }

  #buf(s: Storage, what: string): PooledBuffer {
    const g = s as WebGpuStorage;
    if (g.backend !== this) {
      throw new Error(`Cannot ${what}: the storage belongs to backend ${s.backend.name}`);
    }
    if (!g.buf) throw new Error(`Cannot ${what}: the storage was freed`);
    return g.buf;
  }

  // ----------------------------------------------------------------------------------------
  // recording

  #enc(): GPUCommandEncoder {
    if (!this.#encoder) this.#encoder = this.device.createCommandEncoder();
    return this.#encoder;
  }

  #computePass(): GPUComputePassEncoder {
    if (!this.#pass) this.#pass = this.#enc().beginComputePass();
    return this.#pass;
  }

  #endPass(): void {
    if (this.#pass) {
      this.#pass.end();
      this.#pass = null;
    }
  }

  #pushUniforms(k: WgslKernel): number {
    const words = k.uniforms!;
    const n = words.length;
    if (n * 4 > UNIFORM_BINDING_BYTES) {
      throw new Error(`Cannot bind ${n * 4} bytes of uniforms: at most ${UNIFORM_BINDING_BYTES}`);
    }
    if (this.#ringUsed + UNIFORM_BINDING_BYTES > RING_BYTES) this.flush();
    const base = this.#ringUsed / 4;
    const types = k.uniformTypes;
    for (let i = 0; i < n; i++) {
      const t = types?.[i] ?? "u32";
      if (t === "f32") this.#ringF32[base + i] = words[i];
      else if (t === "i32") this.#ringI32[base + i] = words[i];
      else this.#ringU32[base + i] = words[i];
    }
    const off = this.#ringUsed;
    this.#ringUsed += Math.ceil(Math.max(n * 4, 4) / this.#ringAlign) * this.#ringAlign;
    return off;
  }

  #dispatch(label: string, k: WgslKernel, all: readonly WebGpuStorage[]): void {
    const [x, y = 1, z = 1] = k.workgroups;
    if (x === 0 || y === 0 || z === 0) return;
    if (this.#dry) {
      this.#dry.push(this.#pipelines.prepare(k.code, k.entryPoint ?? "main", label));
      return;
    }
    const maxDim = this.#opened.limits.maxComputeWorkgroupsPerDimension ?? 65535;
    if (x > maxDim || y > maxDim || z > maxDim) {
      throw new Error(
        `Cannot dispatch ${label} with ${x}×${y}×${z} workgroups: at most ${maxDim} per dimension`,
      );
    }
    const p = this.#pipelines.get(k.code, k.entryPoint ?? "main", label);
    const idx = k.bindings ?? all.map((_, i) => i);
    const bufs: PooledBuffer[] = [];
    const sizes: number[] = [];
    for (const i of idx) {
      if (i === STATUS_BINDING) {
        bufs.push(this.#status);
        sizes.push(STATUS_WORDS * 4);
        this.#statusOps.add(label);
        continue;
      }
      const s = all[i];
      if (!s) throw new Error(`Cannot dispatch ${label}: binding ${i} names no buffer`);
      bufs.push(this.#buf(s, `dispatch ${label}`));
      sizes.push(Math.max(4, Math.ceil(s.bytes / 4) * 4));
    }
    if (bufs.length !== p.signature.length) {
      throw new Error(
        `Cannot dispatch ${label}: the WGSL declares ${p.signature.length} storage bindings but ${bufs.length} buffers were given`,
      );
    }
    const bg = this.#pipelines.bindGroup(p, bufs, sizes);
    let off = -1;
    if (p.usesUniforms) {
      if (!k.uniforms) {
        throw new Error(`Cannot dispatch ${label}: its WGSL reads uniforms but none were given`);
      }
      off = this.#pushUniforms(k);
    }
    const pass = this.#computePass();
    pass.setPipeline(p.pipeline);
    pass.setBindGroup(0, bg);
    if (off >= 0) pass.setBindGroup(1, this.#ringBindGroup, [off]);
    pass.dispatchWorkgroups(x, y, z);
    for (const b of bufs) b.lastUse = this.#batch;
    this.counters.dispatches++;
    this.#batchDispatches++;
  }

  #fill(s: WebGpuStorage, words: number): void {
    this.#dispatch("fill", {
      code: FILL_WGSL,
      workgroups: grid(words, 256),
      uniforms: [words, 0],
    }, [s]);
  }

  run<P>(
    op: KernelOp<P>,
    inputs: Storage[],
    inMetas: Meta[],
    outMetas: Meta[],
    params: P,
  ): Storage[] {
    this.#check(`run ${op.name}`);
    for (const m of [...inMetas, ...outMetas]) this.#checkDtype(m.dtype, `run ${op.name} on`);
    const raw = op.wgsl({ inputs: inMetas, outputs: outMetas, params }, this.info);
    const plan: WgslPlan = Array.isArray(raw) ? { kernels: raw } : raw as WgslPlan;
    const outs: WebGpuStorage[] = [];
    try {
      for (const m of outMetas) {
        const bytes = sizeOf(m.shape) * 4;
        outs.push(
          this.#storage(bytes, `${op.name}'s ${m.dtype} ${fmt(m.shape)} output (${bytes} bytes)`),
        );
      }
    } catch (e) {
      for (const s of outs) this.free(s);
      throw e;
    }
    for (const i of plan.zero ?? []) {
      const n = sizeOf(outMetas[i].shape);
      if (n > 0) this.#fill(outs[i], n);
    }
    const scratch = (plan.scratch ?? []).map((sc) => {
      this.#checkDtype(sc.dtype, `run ${op.name} with scratch`);
      return this.#storage(sc.size * 4);
    });
    const all = [...inputs as WebGpuStorage[], ...outs, ...scratch];
    try {
      for (const k of plan.kernels) this.#dispatch(op.name, k, all);
    } catch (e) {
      for (const s of [...outs, ...scratch]) this.free(s);
      throw new Error(
        `Cannot run ${op.name} on WebGPU with inputs ${
          inMetas.map((m) => `${m.dtype} ${fmt(m.shape)}`).join(", ")
        }: ${(e as Error).message}`,
      );
    }
    for (const s of scratch) this.free(s);
    if (this.#batchOps.length < 64) this.#batchOps.push(op.name);
    if (this.#batchDispatches >= this.tuning.maxBatchDispatches) this.flush();
    return outs;
  }

  // ----------------------------------------------------------------------------------------
  // submission and sync

  /** Submits every recorded command (no wait). Returns whether anything was submitted. */
  flush(): boolean {
    if (!this.#encoder) return false;
    this.#endPass();
    if (this.#ringUsed > 0) {
      this.device.queue.writeBuffer(this.#ringGpu, 0, this.#ringCpu, 0, this.#ringUsed);
    }
    const dev = this.device;
    const ops = this.#batchOps.join(", ");
    dev.pushErrorScope("validation");
    dev.pushErrorScope("out-of-memory");
    dev.queue.submit([this.#encoder.finish()]);
    const oom = dev.popErrorScope();
    const val = dev.popErrorScope();
    this.#watch(
      `a batch of ${this.#batchDispatches} dispatches (${ops})`,
      Promise.all([oom, val]).then(([a, b]) => (a ?? b)?.message ?? null),
    );
    this.counters.submits++;
    this.#encoder = null;
    this.#ringUsed = 0;
    this.#batch++;
    this.#batchDispatches = 0;
    this.#batchOps = [];
    return true;
  }

  async read(s: Storage, dtype: DType, size: number): Promise<TypedArray> {
    this.#check(`read ${size} ${dtype}`);
    if (this.#dry) throw new Error("Cannot read a tensor inside warmup(): nothing was computed");
    this.#checkDtype(dtype, "read");
    const src = this.#buf(s, "read");
    const bytes = size * 4;
    if (bytes > s.bytes) {
      throw new Error(`Cannot read ${size} ${dtype} values from a storage of ${s.bytes} bytes`);
    }
    const out = allocArray(dtype, size);
    const st = bytes > 0 ? this.#staging.acquire(bytes).buf : null;
    let stStatus: PooledBuffer | null = null;
    let statusOps: string[] = [];
    this.#endPass();
    const enc = this.#enc();
    if (st) {
      enc.copyBufferToBuffer(src.buffer, 0, st.buffer, 0, bytes);
      src.lastUse = this.#batch;
    }
    if (this.#statusOps.size) {
      stStatus = this.#staging.acquire(STATUS_WORDS * 4).buf;
      enc.copyBufferToBuffer(this.#status.buffer, 0, stStatus.buffer, 0, STATUS_WORDS * 4);
      enc.clearBuffer(this.#status.buffer);
      statusOps = [...this.#statusOps];
      this.#statusOps.clear();
    }
    this.flush();
    this.counters.syncs++;
    try {
      await Promise.all([
        st?.buffer.mapAsync(GPUMapMode.READ, 0, bytes),
        stStatus?.buffer.mapAsync(GPUMapMode.READ, 0, STATUS_WORDS * 4),
      ]);
    } catch (e) {
      await this.#settle(`read ${size} ${dtype}`);
      throw new Error(`Cannot read ${size} ${dtype} from WebGPU: ${(e as Error).message}`);
    }
    let statusMsg: string | null = null;
    if (stStatus) {
      const w = new Uint32Array(stStatus.buffer.getMappedRange(0, STATUS_WORDS * 4).slice(0));
      stStatus.buffer.unmap();
      this.#staging.release(stStatus);
      if (w[0] !== 0) {
        statusMsg = `Cannot trust results of ${statusOps.join(", ")} on WebGPU: ${
          STATUS_CODES[w[0]] ?? `error code ${w[0]}`
        } (value ${w[1] | 0}, bound ${w[2]})`;
      }
    }
    if (st) {
      const range = st.buffer.getMappedRange(0, bytes);
      new Uint8Array(out.buffer).set(new Uint8Array(range));
      st.buffer.unmap();
      this.#staging.release(st);
    }
    await this.#settle(`read ${size} ${dtype}`);
    if (statusMsg) throw new Error(statusMsg);
    return out;
  }

  async sync(): Promise<void> {
    this.#check("sync");
    this.flush();
    this.counters.syncs++;
    await this.device.queue.onSubmittedWorkDone();
    await this.#settle("sync");
  }

  /** Destroys every free pooled buffer (returns the bytes given back to the device). */
  trim(): number {
    this.flush();
    this.#pipelines.clearBindGroups();
    return this.#pool.trim() + this.#staging.trim();
  }

  /** Resets the counters to zero (bytesInUse is kept: it describes live storages). */
  resetCounters(): void {
    const inUse = this.counters.bytesInUse;
    Object.assign(this.counters, newCounters(), { bytesInUse: inUse });
  }

  /**
   * Compiles the pipelines of `op` for the given input metas and params without running it
   * (start-up warm-up), returning how many new pipelines were built.
   */
  compile<P>(op: OpDef<P>, inMetas: Meta[], params: P): number {
    if (op.view) return 0;
    const outMetas = op.infer(inMetas, params);
    const raw = op.wgsl({ inputs: inMetas, outputs: outMetas, params }, this.info);
    const plan: WgslPlan = Array.isArray(raw) ? { kernels: raw } : raw as WgslPlan;
    const before = this.#pipelines.compiled;
    for (const k of plan.kernels) this.#pipelines.get(k.code, k.entryPoint ?? "main", op.name);
    return this.#pipelines.compiled - before;
  }

  /**
   * Start-up warm-up: runs `fn` without dispatching anything (outputs hold no values), compiling
   * every pipeline it would use in parallel in the background, and resolves when all are ready.
   * Call it once with a representative step (e.g. one train step on a real batch) so the first
   * real step records straight into the command buffer. Reading a tensor inside `fn` throws.
   *
   * @param fn the computation to prepare (synchronous; its results are discarded)
   * @returns the number of pipelines compiled
   */
  async warmup(fn: () => unknown): Promise<number> {
    const before = this.#pipelines.compiled;
    this.#dry = [];
    let jobs: Promise<void>[];
    try {
      fn();
    } finally {
      jobs = this.#dry;
      this.#dry = null;
    }
    await Promise.all(jobs);
    await this.#settle("warm up");
    return this.#pipelines.compiled - before;
  }

  /** Releases the device. Every later call throws. */
  destroy(): void {
    if (this.#destroyed) return;
    this.flush();
    this.#destroyed = true;
    this.device.destroy();
  }
}

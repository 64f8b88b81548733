/**
 * Pipeline cache: one compute pipeline per (WGSL source, entry point). The pipeline layout is
 * derived from the source's declarations: `@group(0)` storage bindings (read or read_write, in
 * binding order) and an optional `@group(1) @binding(0)` uniform with a dynamic offset into the
 * uniforms ring. Pipelines with the same storage signature share one bind-group layout, so their
 * bind groups are interchangeable and cached by buffer identity.
 * @module
 */

/** A compiled kernel. */
export interface CachedPipeline {
  /** The pipeline. */
  readonly pipeline: GPUComputePipeline;
  /** Layout of group 0 (storage). */
  readonly storageLayout: GPUBindGroupLayout;
  /** Signature of group 0, e.g. "rrw" (read, read, read_write). */
  readonly signature: string;
  /** Whether the kernel reads uniforms from group 1. */
  readonly usesUniforms: boolean;
}

const BINDING_RE =
  /@group\(\s*(\d+)\s*\)\s*@binding\(\s*(\d+)\s*\)\s*var\s*<\s*(storage|uniform)\s*(?:,\s*(read_write|read))?\s*>/g;

/** Parses the storage signature ("r"/"w" per group-0 binding) and whether group 1 is used. */
export function parseBindings(code: string): { signature: string; usesUniforms: boolean } {
  const slots: string[] = [];
  let usesUniforms = false;
  for (const m of code.matchAll(BINDING_RE)) {
    const group = Number(m[1]), binding = Number(m[2]);
    if (group === 1 && m[3] === "uniform") {
      usesUniforms = true;
      continue;
    }
    if (group !== 0 || m[3] !== "storage") {
      throw new Error(
        `Cannot lay out WGSL binding @group(${group}) @binding(${binding}) var<${
          m[3]
        }>: storage buffers go in group 0 and the uniform in group 1 binding 0`,
      );
    }
    slots[binding] = m[4] === "read_write" ? "w" : "r";
  }
  for (let i = 0; i < slots.length; i++) {
    if (!slots[i]) throw new Error(`Cannot lay out WGSL bindings: @binding(${i}) is missing`);
  }
  return { signature: slots.join(""), usesUniforms };
}

/** Pipelines, layouts and bind groups of one device. */
export class PipelineCache {
  readonly #device: GPUDevice;
  readonly #pipelines = new Map<string, CachedPipeline>();
  readonly #layouts = new Map<string, GPUBindGroupLayout>();
  readonly #bindGroups = new Map<string, GPUBindGroup>();
  readonly #preparing = new Map<string, Promise<void>>();
  /** Layout of the uniforms group (one dynamic-offset uniform binding). */
  readonly uniformLayout: GPUBindGroupLayout;
  /** Called with a promise per compiled pipeline that resolves to an error message or null. */
  onCompile: (label: string, check: Promise<string | null>) => void = () => {};
  /** Pipelines compiled so far. */
  compiled = 0;

  /** @param device the device */
  constructor(device: GPUDevice) {
    this.#device = device;
    this.uniformLayout = device.createBindGroupLayout({
      label: "uniforms",
      entries: [{
        binding: 0,
        visibility: GPUShaderStage.COMPUTE,
        buffer: { type: "uniform", hasDynamicOffset: true },
      }],
    });
  }

  /** Number of cached pipelines. */
  get size(): number {
    return this.#pipelines.size;
  }

  #layout(signature: string): GPUBindGroupLayout {
    let l = this.#layouts.get(signature);
    if (!l) {
      l = this.#device.createBindGroupLayout({
        label: `storage ${signature}`,
        entries: [...signature].map((c, i) => ({
          binding: i,
          visibility: GPUShaderStage.COMPUTE,
          buffer: { type: c === "w" ? "storage" : "read-only-storage" },
        })),
      });
      this.#layouts.set(signature, l);
    }
    return l;
  }

  /**
   * The pipeline of `code` (compiled on first use; compile errors are reported through
   * `onCompile`).
   */
  get(code: string, entryPoint: string, label: string): CachedPipeline {
    const key = entryPoint + "\n" + code;
    const hit = this.#pipelines.get(key);
    if (hit) return hit;
    const { signature, usesUniforms } = parseBindings(code);
    const storageLayout = this.#layout(signature);
    const layout = this.#device.createPipelineLayout({
      bindGroupLayouts: usesUniforms ? [storageLayout, this.uniformLayout] : [storageLayout],
    });
    this.#device.pushErrorScope("validation");
    const module = this.#device.createShaderModule({ label, code });
    const pipeline = this.#device.createComputePipeline({
      label,
      layout,
      compute: { module, entryPoint },
    });
    const scope = this.#device.popErrorScope().then((e) =>
      e ? `${e.message}\n--- WGSL of ${label} ---\n${numbered(code)}` : null
    );
    this.onCompile(label, scope);
    this.compiled++;
    const entry = { pipeline, storageLayout, signature, usesUniforms };
    this.#pipelines.set(key, entry);
    return entry;
  }

  /**
   * Compiles `code` in the background (createComputePipelineAsync); the pipeline lands in the
   * cache when ready. Resolves once it is there (or immediately when it already is).
   */
  prepare(code: string, entryPoint: string, label: string): Promise<void> {
    const key = entryPoint + "\n" + code;
    if (this.#pipelines.has(key)) return Promise.resolve();
    let p = this.#preparing.get(key);
    if (p) return p;
    const { signature, usesUniforms } = parseBindings(code);
    const storageLayout = this.#layout(signature);
    const layout = this.#device.createPipelineLayout({
      bindGroupLayouts: usesUniforms ? [storageLayout, this.uniformLayout] : [storageLayout],
    });
    const module = this.#device.createShaderModule({ label, code });
    p = this.#device.createComputePipelineAsync({ label, layout, compute: { module, entryPoint } })
      .then((pipeline) => {
        this.compiled++;
        if (!this.#pipelines.has(key)) {
          this.#pipelines.set(key, { pipeline, storageLayout, signature, usesUniforms });
        }
      }, (e) => {
        throw new Error(`Cannot compile ${label}: ${(e as Error).message}\n${numbered(code)}`);
      }).finally(() => this.#preparing.delete(key));
    this.#preparing.set(key, p);
    return p;
  }

  /** A bind group of `signature` over the given buffers (cached by buffer id and size). */
  bindGroup(
    p: CachedPipeline,
    bufs: readonly { buffer: GPUBuffer; id: number }[],
    sizes: readonly number[],
  ): GPUBindGroup {
    let key = p.signature;
    for (let i = 0; i < bufs.length; i++) key += `|${bufs[i].id}:${sizes[i]}`;
    let bg = this.#bindGroups.get(key);
    if (!bg) {
      if (this.#bindGroups.size > 16384) this.#bindGroups.clear();
      bg = this.#device.createBindGroup({
        layout: p.storageLayout,
        entries: bufs.map((b, i) => ({
          binding: i,
          resource: { buffer: b.buffer, size: sizes[i] },
        })),
      });
      this.#bindGroups.set(key, bg);
    }
    return bg;
  }

  /** Forgets cached bind groups (after buffers were destroyed). */
  clearBindGroups(): void {
    this.#bindGroups.clear();
  }
}

function numbered(code: string): string {
  return code.split("\n").map((l, i) => `${String(i + 1).padStart(4)}  ${l}`).join("\n");
}

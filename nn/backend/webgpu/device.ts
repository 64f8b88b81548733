/**
 * Opening a WebGPU device: adapter choice (real GPU vs software fallback), `requiredLimits`
 * copied from the adapter, optional `shader-f16`.
 * @module
 */

/** An opened device and what kernels need to know about it. */
export interface OpenedDevice {
  /** The adapter the device came from. */
  readonly adapter: GPUAdapter;
  /** The device. */
  readonly device: GPUDevice;
  /** Whether the adapter is a software rasteriser (Mesa llvmpipe / lavapipe, SwiftShader…). */
  readonly software: boolean;
  /** Whether `shader-f16` was enabled. */
  readonly f16: boolean;
  /** Adapter description, e.g. `llvmpipe (LLVM 15.0.6, 256 bits)` or `NVIDIA H200`. */
  readonly description: string;
  /** The granted limits, as a plain record. */
  readonly limits: Readonly<Record<string, number>>;
}

/** Options of `openDevice`. */
export interface OpenDeviceOptions {
  /** Accept a software (fallback) adapter (default true). */
  allowSoftware?: boolean;
}

const LIMIT_NAMES = [
  "maxStorageBufferBindingSize",
  "maxBufferSize",
  "maxComputeWorkgroupStorageSize",
  "maxComputeInvocationsPerWorkgroup",
  "maxComputeWorkgroupSizeX",
  "maxComputeWorkgroupSizeY",
  "maxComputeWorkgroupSizeZ",
  "maxComputeWorkgroupsPerDimension",
  "maxStorageBuffersPerShaderStage",
  "maxBindGroups",
  "maxUniformBufferBindingSize",
  "maxDynamicUniformBuffersPerPipelineLayout",
  "minUniformBufferOffsetAlignment",
  "minStorageBufferOffsetAlignment",
] as const;

/** Whether an adapter is a CPU rasteriser (the flag, or a known software driver name). */
function isSoftware(adapter: GPUAdapter): boolean {
  const info = adapter.info;
  if (info.isFallbackAdapter) return true;
  return /llvmpipe|lavapipe|swiftshader|softpipe|warp/i.test(
    `${info.description} ${info.device} ${info.vendor}`,
  );
}

/**
 * NOTE: without XDG_RUNTIME_DIR the Vulkan loader prints errors on stderr while probing for an
 * adapter; point it at a private temp folder when unset (Linux only, needs env access).
 */
function quietVulkanLoader(): void {
  try {
    if (
      typeof Deno !== "undefined" && Deno.build.os === "linux" && !Deno.env.get("XDG_RUNTIME_DIR")
    ) {
      Deno.env.set("XDG_RUNTIME_DIR", Deno.makeTempDirSync({ prefix: "minimind-xdg-" }));
    }
  } catch {
    // no env/write permission: the loader's warning is harmless
  }
}

/**
 * Opens the best available device: a real GPU adapter when there is one, else (when allowed) the
 * software adapter. Resolves to null when none is usable.
 *
 * @param options whether a software adapter is acceptable
 * @returns the device, or null
 */
export async function openDevice(options: OpenDeviceOptions = {}): Promise<OpenedDevice | null> {
  const allowSoftware = options.allowSoftware ?? true;
  quietVulkanLoader();
  const gpu = (globalThis.navigator as Navigator | undefined)?.gpu;
  if (!gpu) return null;
  let adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) return null;
  if (isSoftware(adapter)) {
    // a second ask without the preference can only return another adapter if one exists
    const other = await gpu.requestAdapter();
    if (other && !isSoftware(other)) adapter = other;
  }
  const software = isSoftware(adapter);
  if (software && !allowSoftware) return null;
  const requiredLimits: Record<string, number> = {};
  for (const name of LIMIT_NAMES) {
    const v = (adapter.limits as unknown as Record<string, number>)[name];
    if (typeof v === "number") requiredLimits[name] = v;
  }
  const f16 = adapter.features.has("shader-f16");
  const features: GPUFeatureName[] = [];
  if (f16) features.push("shader-f16");
  if (adapter.features.has("timestamp-query")) features.push("timestamp-query");
  let device: GPUDevice;
  try {
    device = await adapter.requestDevice({ requiredLimits, requiredFeatures: features });
  } catch (e) {
    throw new Error(
      `Cannot open a WebGPU device on ${adapter.info.description || "the adapter"} with limits ${
        JSON.stringify(requiredLimits)
      }: ${(e as Error).message}`,
    );
  }
  const limits: Record<string, number> = {};
  for (const name of LIMIT_NAMES) {
    const v = (device.limits as unknown as Record<string, number>)[name];
    if (typeof v === "number") limits[name] = v;
  }
  return {
    adapter,
    device,
    software,
    f16,
    description: adapter.info.description || adapter.info.vendor || "unknown adapter",
    limits,
  };
}

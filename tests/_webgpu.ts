/**
 * Opening the WebGPU backend in tests: any adapter (the software one in CI). No adapter is a
 * test failure with instructions, never a silent skip.
 * @module
 */
import { createWebGpuBackend } from "../nn/backend/webgpu/mod.ts";
import type { WebGpuBackend } from "../nn/backend/webgpu/mod.ts";

/** The shared WebGPU backend; throws a clear error when no adapter exists. */
export async function openWebGpuForTests(): Promise<WebGpuBackend> {
  const b = await createWebGpuBackend({ allowSoftware: true });
  if (!b) {
    throw new Error(
      "Cannot run the WebGPU tests: no WebGPU adapter is available. On a machine without a GPU " +
        "install the software adapter (apt-get install -y mesa-vulkan-drivers) and set " +
        "XDG_RUNTIME_DIR to a writable folder.",
    );
  }
  return b;
}

/**
 * The WebGPU backend module: importing it registers the "webgpu" factory with `setBackend`
 * (select.ts imports it on demand).
 * @module
 */
import { registerBackend } from "../select.ts";
import type { SetBackendOptions } from "../select.ts";
import { openDevice } from "./device.ts";
import { WebGpuBackend } from "./backend.ts";

export { WebGpuBackend } from "./backend.ts";
export type { WebGpuStats, WebGpuStorage, WebGpuTuning } from "./backend.ts";
export { openDevice } from "./device.ts";
export type { OpenDeviceOptions, OpenedDevice } from "./device.ts";

let shared: WebGpuBackend | null = null;
let opening: Promise<WebGpuBackend | null> | null = null;

/**
 * The process-wide WebGPU backend (opened once). Resolves to null when no acceptable adapter
 * exists: with `allowSoftware: false` a software adapter is not acceptable.
 *
 * @param options whether a software adapter is acceptable (default true)
 * @returns the backend, or null
 */
export async function createWebGpuBackend(
  options: SetBackendOptions = {},
): Promise<WebGpuBackend | null> {
  const allowSoftware = options.allowSoftware ?? true;
  if (!shared) {
    opening ??= openDevice({ allowSoftware: true }).then((d) => (d ? new WebGpuBackend(d) : null));
    const b = await opening;
    opening = null;
    if (!b) return null;
    shared ??= b;
  }
  if (shared.software && !allowSoftware) return null;
  return shared;
}

registerBackend("webgpu", createWebGpuBackend);

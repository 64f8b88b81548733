/**
 * Backend selection: the default backend for new tensors. Ops run on their inputs' backend.
 * @module
 */
import type { Backend } from "./backend.ts";
import { cpuBackend } from "./cpu/mod.ts";
import { initKernelThreads } from "./cpu/threads/mod.ts";

/** Names accepted by `setBackend`. */
export type BackendName = "cpu" | "webgpu" | "auto";

/** Options of `setBackend`. */
export interface SetBackendOptions {
  /** Allow a software (fallback) WebGPU adapter such as llvmpipe (default false for "auto"). */
  allowSoftware?: boolean;
}

let current: Backend = cpuBackend;
const factories = new Map<string, (o: SetBackendOptions) => Promise<Backend | null>>();

/**
 * The CPU backend once its kernel pool's worker threads are running (they start in the background
 * otherwise, and a synchronous train loop never lets them finish starting).
 */
async function cpuReady(): Promise<Backend> {
  await initKernelThreads();
  return cpuBackend;
}

/** The backend new tensors are created on. */
export function defaultBackend(): Backend {
  return current;
}

/**
 * Registers a backend factory (used by the WebGPU backend module). A factory resolves to null
 * when the device is not available.
 */
export function registerBackend(
  name: string,
  factory: (o: SetBackendOptions) => Promise<Backend | null>,
): void {
  factories.set(name, factory);
}

/**
 * Selects the default backend. `"auto"` picks a real (non-fallback) GPU adapter when present,
 * else the CPU; `"webgpu"` also accepts a software adapter and fails when none exists.
 *
 * @param name backend name
 * @param options selection options
 * @returns the backend now in use
 * @example
 * ```ts
 * import { setBackend } from "@minimind/ts";
 * await setBackend("cpu");
 * ```
 */
export async function setBackend(
  name: BackendName,
  options: SetBackendOptions = {},
): Promise<Backend> {
  if (name === "cpu") return (current = await cpuReady());
  if (name !== "webgpu" && name !== "auto") {
    throw new Error(`Cannot select backend "${name}": expected cpu, webgpu or auto`);
  }
  if (!factories.has("webgpu")) await import("./webgpu/mod.ts"); // registers the factory
  const f = factories.get("webgpu");
  if (name === "webgpu") {
    const b = f ? await f({ allowSoftware: true, ...options }) : null;
    if (!b) {
      throw new Error(
        "Cannot select backend webgpu: no WebGPU adapter is available (on a machine without a GPU install mesa-vulkan-drivers for the software adapter and set XDG_RUNTIME_DIR)",
      );
    }
    return (current = b);
  }
  if (name === "auto") {
    const b = f ? await f({ allowSoftware: false, ...options }) : null;
    return (current = b ?? await cpuReady());
  }
  throw new Error(`Cannot select backend "${name}": expected cpu, webgpu or auto`);
}

/** Makes `b` the default backend (synchronous; `b` must be initialised). */
export function useBackend(b: Backend): void {
  current = b;
}

/**
 * Parses a `--device` flag value (`cpu`, `webgpu` or `auto`; default `auto`) and selects that
 * backend. CLIs call this once at start-up.
 *
 * @param flag the flag's value (undefined = auto)
 * @returns the backend now in use
 */
export function setBackendFromFlag(flag: string | undefined): Promise<Backend> {
  const name = (flag ?? "auto").toLowerCase();
  if (name !== "cpu" && name !== "webgpu" && name !== "auto") {
    return Promise.reject(
      new Error(`Cannot use --device ${flag}: expected cpu, webgpu or auto`),
    );
  }
  return setBackend(name);
}

/**
 * The server entry: parses its flags (`cli.ts`, like every command), loads a model, builds the
 * app (`createApp`) and binds the port — the only file that does. `deno task serve --load_from out/minimind` serves an HF-layout folder (or a
 * `.safetensors` file) at http://127.0.0.1:8998: the OpenAI API under `/v1` and the chat page
 * at `/`.
 *
 * ```sh
 * deno task serve --load_from out/full_sft --api_key sk-local
 * deno task serve --load_from out/agent_512.safetensors --tools builtin   # tools run here
 * deno task serve --init_random --hidden_size 64 --num_hidden_layers 2 \
 *   --tokenizer tokenizers/minimind-3      # an untrained model, for a look
 * ```
 * @module
 */
import { basename } from "node:path";
import { Tokenizer } from "./data/tokenizer.ts";
import { countParams, init } from "./nn/model/minimind.ts";
import { config } from "./nn/model/minimind_config.ts";
import { key } from "./nn/random.ts";
import { defaultBackend, setBackendFromFlag } from "./nn/backend/select.ts";
import { initGemm } from "./nn/backend/cpu/gemm/mod.ts";
import { setFastSgemm } from "./nn/backend/cpu/gemm_adapter.ts";
import { loadModel } from "./convert/hf.ts";
import * as lora from "./convert/lora.ts";
import { createApp, type ServeApp } from "./serve/mod.ts";
import { deviceFlag, parseFlags, runMain, usage, UsageError } from "./cli.ts";
import type { FlagTable } from "./cli.ts";
import { builtinTools } from "./agent/builtin.ts";
import { applyDtype, decodeDtypeFlag } from "./train/lm.ts";

/** A running server. */
export interface RunningServer {
  /** Bound host. */
  host: string;
  /** Bound port (the real one when 0 was asked). */
  port: number;
  /** Base URL, e.g. `http://127.0.0.1:8998`. */
  url: string;
  /** Resolves when the server has stopped. */
  finished: Promise<void>;
  /** Stops listening, cancels generations, waits for both. */
  shutdown(): Promise<void>;
}

/** Options of {@link startServer}. */
export interface StartServerOptions {
  /** Interface to bind (default 127.0.0.1: loopback only). */
  host?: string;
  /** Port (default 8998; 0 = any free port). */
  port?: number;
  /** Print the address when listening (default false). */
  log?: boolean;
}

/**
 * Binds `app` to a port.
 *
 * @param app the app from `createApp`
 * @param options host and port
 * @returns the running server
 */
export function startServer(app: ServeApp, options: StartServerOptions = {}): RunningServer {
  const host = options.host ?? "127.0.0.1";
  const wanted = options.port ?? 8998;
  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    server = Deno.serve({ hostname: host, port: wanted, onListen: () => {} }, app.fetch);
  } catch (e) {
    if (e instanceof Deno.errors.AddrInUse) {
      throw new Error(
        `Cannot listen on ${host}:${wanted}: port ${wanted} is already in use ` +
          `(another server? pick one with --port N, or --port 0 for any free port)`,
      );
    }
    throw e;
  }
  const port = server.addr.port;
  const shown = host.includes(":") ? `[${host}]` : host;
  const url = `http://${shown}:${port}`;
  if (options.log) console.error(`serve: listening on ${url} (chat page at ${url}/)`);
  let closing: Promise<void> | null = null;
  return {
    host,
    port,
    url,
    finished: server.finished,
    shutdown() {
      closing ??= (async () => {
        await app.close(); // ends streams so the server can drain
        await server.shutdown();
      })();
      return closing;
    },
  };
}

/** The server's flags. */
export const SERVE_FLAGS = {
  load_from: {
    type: "optional",
    help: "model: an HF-layout folder (config.json, model.safetensors, tokenizer files) or a " +
      ".safetensors file (config from its metadata or a config.json beside it)",
  },
  lora_weight: {
    type: "optional",
    help: "LoRA adapters (.safetensors from deno task lora), applied unmerged",
  },
  tokenizer: {
    type: "optional",
    help: "tokenizer.json or its folder (default: the one beside the weights)",
  },
  init_random: {
    type: "switch",
    default: false,
    help: "serve a randomly initialised model instead (--hidden_size, --num_hidden_layers, --seed)",
  },
  hidden_size: { type: "int", default: 512, min: 8, help: "hidden size with --init_random" },
  num_hidden_layers: { type: "int", default: 8, min: 1, help: "layers with --init_random" },
  seed: { type: "int", default: 0, min: 0, help: "init seed with --init_random" },
  host: { type: "string", default: "127.0.0.1", help: "interface to bind" },
  port: { type: "int", default: 8998, min: 0, help: "port (0 = any free port)" },
  api_key: {
    type: "optional",
    help: 'require "Authorization: Bearer KEY" on /v1 (an empty key is refused)',
  },
  cors: {
    type: "optional",
    help: "web origins whose pages may call /v1, comma-separated (* = any site); default: only " +
      "the server's own chat page and non-browser clients",
  },
  model_id: {
    type: "optional",
    help: 'model id in /v1/models (default: the folder name, or "minimind")',
  },
  device: deviceFlag("cpu"),
  backend: { type: "alias", of: "device", help: "deprecated name of --device" },
  max_batch: { type: "int", default: 16, min: 1, help: "requests decoded together" },
  max_queue: { type: "int", default: 64, min: 0, help: "requests waiting before 429" },
  max_context: { type: "int", default: 4096, min: 2, help: "prompt + reply tokens" },
  max_tokens: { type: "int", default: 512, min: 1, help: "default reply length" },
  max_body_bytes: { type: "int", default: 1 << 20, min: 1024, help: "request body limit" },
  prefix_cache_mb: {
    type: "int",
    default: 64,
    min: 0,
    help: "MiB of finished requests' keys/values kept so a prompt that starts the same way (a " +
      "chat's next turn, a shared system prompt) prefills only the rest; 0 = off",
  },
  threads: {
    type: "optional_int",
    min: 1,
    help: "CPU matmul threads (default: the gemm's choice; 1 is often best for decode on a " +
      "small, busy machine)",
  },
  dtype: decodeDtypeFlag(),
  tools: {
    type: "choice",
    default: "none",
    choices: ["none", "builtin"],
    help: "builtin: the server runs calls of its built-in tools (calculate_math, unit_converter, " +
      "date_calculator, poetry_lookup) and feeds the results back; none: tool calls go back to " +
      "the client (OpenAI)",
  },
} as const satisfies FlagTable;

const COMMAND = "deno task serve";

/** What the server does: read the model, listen, read its environment, load OpenBLAS (FFI). */
const NEEDED: readonly Deno.PermissionName[] = ["read", "net", "env", "ffi"];

/**
 * The `--allow-…` flags the process lacks for serving (empty when it has them all), found without
 * prompting, so `deno run serve.ts` says what to add instead of asking four times.
 *
 * @returns the missing flags, e.g. `["--allow-net"]`
 */
export function missingPermissionFlags(): string[] {
  return NEEDED.filter((name) => Deno.permissions.querySync({ name }).state !== "granted")
    .map((name) => `--allow-${name}`);
}

/**
 * Runs the CLI: parses flags, loads the model, serves until SIGINT/SIGTERM.
 *
 * @param argv command-line arguments
 * @returns the exit code (0 once the server has shut down)
 */
export async function main(argv: readonly string[]): Promise<number> {
  const { values: v, help } = parseFlags(argv, SERVE_FLAGS, COMMAND);
  if (help) {
    console.log(
      usage(COMMAND, "Serve a model: the OpenAI API under /v1, the chat page at /.", SERVE_FLAGS),
    );
    return 0;
  }
  const missing = missingPermissionFlags();
  if (missing.length) {
    // one line, and returned rather than thrown: reporting a thrown error reads the environment
    console.error(
      `error: missing permissions: run it as deno run ${missing.join(" ")} serve.ts … ` +
        `(or deno run -A serve.ts …, as deno task serve does)`,
    );
    return 1;
  }
  if (v.api_key === "") {
    throw new UsageError(
      "--api_key is empty: pass a key clients must send, or leave the flag out to serve without one",
    );
  }
  if (!v.load_from && !v.init_random) {
    throw new UsageError("Nothing to serve: pass --load_from PATH (or --init_random)");
  }
  await setBackendFromFlag(v.device);
  // the fast CPU matmul (BLAS through FFI, else wasm SIMD) for the CPU backend
  setFastSgemm(await initGemm(v.threads ? { threads: v.threads } : {}));
  const precision = applyDtype(v.dtype, defaultBackend().name);
  let model, tokenizer: Tokenizer | undefined, modelId = v.model_id;
  if (v.lora_weight && !v.load_from) {
    throw new UsageError(
      `--lora_weight ${v.lora_weight} needs the base model: pass --load_from PATH`,
    );
  }
  if (v.load_from) {
    const loaded = await loadModel(v.load_from);
    const params = v.lora_weight
      ? await lora.applyFile(loaded.params, v.lora_weight)
      : loaded.params;
    model = { cfg: loaded.cfg, params };
    tokenizer = loaded.tokenizer;
    modelId ??= basename(v.load_from.replace(/\/+$/, "")).replace(/\.safetensors$/, "");
  } else {
    const cfg = config("minimind2-small", {
      hiddenSize: v.hidden_size,
      numHiddenLayers: v.num_hidden_layers,
    });
    model = { cfg, params: init(cfg, key(v.seed)) };
  }
  if (v.tokenizer) tokenizer = await Tokenizer.fromFile(v.tokenizer);
  if (!tokenizer) {
    throw new UsageError("No tokenizer: the model folder has none; pass --tokenizer PATH");
  }
  if (tokenizer.vocabSize > model.cfg.vocabSize) {
    throw new Error(
      `The tokenizer has ${tokenizer.vocabSize} ids but the model only ${model.cfg.vocabSize}`,
    );
  }
  const app = createApp({
    model,
    tokenizer,
    modelId: modelId ?? "minimind",
    apiKey: v.api_key ?? null,
    corsOrigins: (v.cors ?? "").split(",").map((o) => o.trim()).filter((o) => o.length > 0),
    limits: { maxContextTokens: v.max_context, maxBodyBytes: v.max_body_bytes },
    defaults: { maxTokens: v.max_tokens },
    scheduler: { maxBatch: v.max_batch, maxQueue: v.max_queue },
    tools: v.tools === "builtin" ? builtinTools() : [],
    prefixCacheBytes: v.prefix_cache_mb * 2 ** 20,
  });
  const server = startServer(app, { host: v.host, port: v.port, log: true });
  const n = countParams(model.cfg).total;
  console.error(
    `serve: model ${modelId ?? "minimind"} (${(n / 1e6).toFixed(2)}M params)${
      v.api_key ? ", API key required" : ""
    }; ${precision}`,
  );
  if (v.host !== "127.0.0.1" && v.host !== "localhost" && v.host !== "::1" && !v.api_key) {
    console.error(`serve: warning: listening on ${v.host} without --api_key`);
  }
  const stop = () => {
    console.error("serve: shutting down");
    server.shutdown();
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  await server.finished;
  Deno.removeSignalListener("SIGINT", stop);
  Deno.removeSignalListener("SIGTERM", stop);
  return 0;
}

if (import.meta.main) Deno.exit(await runMain(() => main(Deno.args), COMMAND));

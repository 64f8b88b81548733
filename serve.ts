/**
 * The server entry: loads a model, builds the app (`createApp`) and binds the port — the only
 * file that does. `deno task serve --load_from out/minimind` serves an HF-layout folder (or a
 * `.safetensors` file) at http://127.0.0.1:8998: the OpenAI API under `/v1` and the chat page
 * at `/`.
 *
 * ```sh
 * deno task serve --load_from out/full_sft --api_key sk-local
 * deno task serve --load_from out/agent_512.safetensors --tools builtin   # tools run here
 * deno task serve --init_random --hidden_size 64 --num_hidden_layers 2 \
 *   --tokenizer ../shared/fixtures/minimind/minimind-3      # an untrained model, for a look
 * ```
 * @module
 */
import { parseArgs } from "node:util";
import { basename } from "node:path";
import { Tokenizer } from "./data/tokenizer.ts";
import { countParams, init } from "./nn/model/minimind.ts";
import { config } from "./nn/model/minimind_config.ts";
import { key } from "./nn/random.ts";
import { type BackendName, setBackend } from "./nn/backend/select.ts";
import { initGemm } from "./nn/backend/cpu/gemm/mod.ts";
import { setFastSgemm } from "./nn/backend/cpu/gemm_adapter.ts";
import { loadModel } from "./convert/hf.ts";
import { createApp, type ServeApp } from "./serve/mod.ts";
import { builtinTools } from "./agent/builtin.ts";

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
  const server = Deno.serve({
    hostname: host,
    port: options.port ?? 8998,
    onListen: () => {},
  }, app.fetch);
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

const HELP = `Usage: deno run -A serve.ts [options]

  --load_from PATH        model: HF-layout folder (config.json, model.safetensors, tokenizer files)
                          or a .safetensors file (config from its metadata or a config.json beside it)
  --tokenizer PATH        tokenizer.json or its folder (default: the one beside the weights)
  --init_random           serve a randomly initialised model instead (with --hidden_size,
                          --num_hidden_layers, --seed), e.g. to try the page
  --host HOST             interface to bind (default 127.0.0.1)
  --port N                port (default 8998; 0 = any free port)
  --api_key KEY           require "Authorization: Bearer KEY" on /v1 (default: none)
  --model_id NAME         model id in /v1/models (default: the folder name, or "minimind")
  --backend NAME          cpu | webgpu | auto (default cpu)
  --max_batch N           requests decoded together (default 16)
  --max_queue N           requests waiting before 429 (default 64)
  --max_context N         prompt + reply tokens (default 4096)
  --max_tokens N          default reply length (default 512)
  --max_body_bytes N      request body limit (default 1048576)
  --tools none|builtin    builtin: the server runs calls of its built-in tools (calculate_math,
                          unit_converter, date_calculator, poetry_lookup) and feeds the results
                          back; none (default): tool calls go back to the client (OpenAI)
  --threads N             CPU matmul threads (default: the gemm's choice; 1 is often best for
                          decode on a small, busy machine)
  -h, --help              this text`;

/**
 * Runs the CLI: parses flags, loads the model, serves until SIGINT/SIGTERM.
 *
 * @param args command-line arguments
 * @returns when the server has shut down
 */
export async function main(args: string[]): Promise<void> {
  const { values: v } = parseArgs({
    args,
    options: {
      load_from: { type: "string" },
      tokenizer: { type: "string" },
      init_random: { type: "boolean", default: false },
      hidden_size: { type: "string", default: "512" },
      num_hidden_layers: { type: "string", default: "8" },
      seed: { type: "string", default: "0" },
      host: { type: "string", default: "127.0.0.1" },
      port: { type: "string", default: "8998" },
      api_key: { type: "string" },
      model_id: { type: "string" },
      backend: { type: "string", default: "cpu" },
      max_batch: { type: "string", default: "16" },
      max_queue: { type: "string", default: "64" },
      max_context: { type: "string", default: "4096" },
      max_tokens: { type: "string", default: "512" },
      max_body_bytes: { type: "string", default: String(1 << 20) },
      threads: { type: "string" },
      tools: { type: "string", default: "none" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (v.help) {
    console.log(HELP);
    return;
  }
  const int = (name: string, s: string, min: number): number => {
    const n = Number(s);
    if (!Number.isInteger(n) || n < min) {
      throw new Error(`Invalid --${name} ${s}: expected an integer ≥ ${min}`);
    }
    return n;
  };
  if (v.tools !== "none" && v.tools !== "builtin") {
    throw new Error(`Invalid --tools ${v.tools}: expected none or builtin`);
  }
  await setBackend(v.backend as BackendName);
  // the fast CPU matmul (BLAS through FFI, else wasm SIMD) for the CPU backend
  setFastSgemm(await initGemm(v.threads ? { threads: int("threads", v.threads, 1) } : {}));
  let model, tokenizer: Tokenizer | undefined, modelId = v.model_id;
  if (v.load_from) {
    const loaded = await loadModel(v.load_from);
    model = { cfg: loaded.cfg, params: loaded.params };
    tokenizer = loaded.tokenizer;
    modelId ??= basename(v.load_from.replace(/\/+$/, "")).replace(/\.safetensors$/, "");
  } else if (v.init_random) {
    const cfg = config("minimind2-small", {
      hiddenSize: int("hidden_size", v.hidden_size, 8),
      numHiddenLayers: int("num_hidden_layers", v.num_hidden_layers, 1),
    });
    model = { cfg, params: init(cfg, key(int("seed", v.seed, 0))) };
  } else {
    throw new Error(`Nothing to serve: pass --load_from PATH (or --init_random)\n\n${HELP}`);
  }
  if (v.tokenizer) tokenizer = await Tokenizer.fromFile(v.tokenizer);
  if (!tokenizer) throw new Error("No tokenizer: the model folder has none; pass --tokenizer PATH");
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
    limits: {
      maxContextTokens: int("max_context", v.max_context, 2),
      maxBodyBytes: int("max_body_bytes", v.max_body_bytes, 1024),
    },
    defaults: { maxTokens: int("max_tokens", v.max_tokens, 1) },
    scheduler: {
      maxBatch: int("max_batch", v.max_batch, 1),
      maxQueue: int("max_queue", v.max_queue, 0),
    },
    tools: v.tools === "builtin" ? builtinTools() : [],
  });
  const server = startServer(app, { host: v.host, port: int("port", v.port, 0), log: true });
  const n = countParams(model.cfg).total;
  console.error(
    `serve: model ${modelId ?? "minimind"} (${(n / 1e6).toFixed(2)}M params)${
      v.api_key ? ", API key required" : ""
    }`,
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
}

if (import.meta.main) {
  try {
    await main(Deno.args);
  } catch (e) {
    console.error(`serve: ${(e as Error).message}`);
    Deno.exit(1);
  }
}

/**
 * The OpenAI-compatible server: `createApp({model, tokenizer, ...})` returns a Hono app with
 * `/v1/chat/completions` (JSON and SSE), `/v1/completions`, `/v1/responses`, `/v1/models`,
 * `/tokenize`, `/detokenize`, `/health` and the chat page at `/`; requests are decoded together
 * by a continuous-batching scheduler over one KV cache, with a prefix cache beside it.
 * `serve.ts` at the repository root binds the port.
 * @module
 */
export {
  createApp,
  type CreateAppOptions,
  DEFAULT_LIMITS,
  DEFAULT_REQUEST_DEFAULTS,
  type ServeApp,
} from "./app.ts";
export {
  type EngineOptions,
  MiniMindEngine,
  type PrefixCacheStats,
  type ServeModel,
} from "./engine.ts";
export { ApiError, type ErrorBody, type ErrorStatus } from "./errors.ts";
export {
  type Engine,
  type EngineRow,
  type FinishReason,
  Job,
  type JobSpec,
  Scheduler,
  type SchedulerOptions,
  type SchedulerStats,
} from "./scheduler.ts";
export type { RequestDefaults, RequestLimits, SamplingSettings } from "./validate.ts";
export type { StepLogprobs, TokenLogprob } from "./sampling.ts";

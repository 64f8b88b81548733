/**
 * Continuous batching. Requests wait in a bounded queue; each loop iteration admits new ones
 * (prefill, one request at a time, within a prompt-token budget so running streams keep moving),
 * then decodes **one token for every running request in a single forward pass** over the shared
 * KV cache, samples per row, and hands each request its token. Finished, stopped and cancelled
 * requests leave the batch at the next iteration; new ones join without waiting for the batch to
 * drain.
 * @module
 */
// B = running requests, V = vocab size
import { setImmediate } from "node:timers";
import type { Tensor } from "../nn/tensor.ts";
import type { Key } from "../nn/random.ts";
import { ApiError } from "./errors.ts";
import {
  requestKey,
  type SampledRows,
  type SampleRow,
  sampleRows,
  type StepLogprobs,
  stepUniform,
} from "./sampling.ts";
import type { SamplingSettings } from "./validate.ts";
import type { ReplyConstraint } from "../data/constrain.ts";

/** An opaque KV-cache row owned by an engine. */
export interface EngineRow {
  /** Tokens held in the row's cache. */
  readonly length: number;
}

/**
 * What the scheduler needs from a model: prefill one prompt into a new cache row, decode one
 * token for a set of rows together, free a row. Tensors returned are the caller's to dispose.
 */
export interface Engine {
  /** Vocabulary size V. */
  readonly vocabSize: number;
  /** Longest sequence (prompt + completion) a row can hold. */
  readonly maxPositions: number;
  /**
   * Runs the prompt and opens a cache row for it.
   *
   * @param ids prompt token ids (non-empty)
   * @returns the row, the logits of the last prompt position [1, V], and how many leading
   *   prompt tokens came from a cache instead of being computed (0 when absent)
   */
  prefill(ids: readonly number[]): { row: EngineRow; logits: Tensor; cached?: number };
  /**
   * Feeds one token to each row (in order) and appends it to the row's cache.
   *
   * @param rows live rows
   * @param tokens one token per row
   * @returns next-token logits [B, V]
   */
  decode(rows: readonly EngineRow[], tokens: readonly number[]): Tensor;
  /** Frees a row's cache. */
  release(row: EngineRow): void;
  /**
   * Scores a sequence (optional; the legacy route's `echo` with `logprobs` needs it): the
   * log-prob of each token after the first given those before it, with the `top` most likely
   * tokens at each position.
   *
   * @param ids the tokens (at least 1)
   * @param top alternatives listed per position
   * @returns ids.length − 1 entries
   */
  score?(ids: readonly number[], top: number): Promise<StepLogprobs[]>;
  /** Called when no request is left: give back memory kept for the next ones (optional). */
  idle?(): void;
}

/** Why a generation ended. */
export type FinishReason = "stop" | "length" | "cancelled" | "error";

/** One generation request. */
export interface JobSpec {
  /** Prompt token ids (non-empty). */
  promptIds: readonly number[];
  /** Most tokens to sample (an end-of-sequence token counts). */
  maxTokens: number;
  /** Sampling settings. */
  sampling: SamplingSettings;
  /** Seed of the request's key (random when omitted). */
  seed?: number;
  /** Which choice of its request this is (its key is the seed's row `choice`; default 0). */
  choice?: number;
  /** Token ids that end the generation (not yielded). */
  stopIds: ReadonlySet<number>;
  /**
   * Record each yielded token's log-prob with this many most likely alternatives
   * (`Job.logprobs`); off when absent.
   */
  logprobs?: number;
  /**
   * The shape the reply must follow (JSON mode, forced tool calls): tokens that cannot continue
   * it are masked, and the job stops once the shape is complete. Owned by the job.
   */
  constraint?: ReplyConstraint;
  /** Aborting it cancels the job. */
  signal?: AbortSignal;
}

/** Scheduler settings. */
export interface SchedulerOptions {
  /** Most requests decoded together (default 16). */
  maxBatch?: number;
  /** Most requests waiting for a slot; more are refused with 429 (default 64). */
  maxQueue?: number;
  /** A request waiting longer than this is refused with 503 (default 120 000 ms). */
  queueTimeoutMs?: number;
  /** Prompt tokens prefilled per loop iteration while others are decoding (default 256). */
  prefillBudget?: number;
}

/** Counters for /health and benchmarks. */
export interface SchedulerStats {
  /** Requests being decoded. */
  running: number;
  /** Requests waiting for a slot. */
  waiting: number;
  /** Decode steps run. */
  steps: number;
  /** Tokens sampled (all requests). */
  tokens: number;
  /** Prompt tokens the engine reused from its prefix cache instead of prefilling. */
  cachedTokens: number;
  /** Largest batch decoded so far. */
  maxBatchSeen: number;
}

/** A request inside the scheduler: a stream of token ids and how it ended. */
export class Job {
  /** Prompt length in tokens. */
  readonly promptTokens: number;
  /** Leading prompt tokens the engine took from its prefix cache (known once admitted). */
  cachedTokens = 0;
  /** Tokens sampled so far (an end-of-sequence token included). */
  completionTokens = 0;
  /** Why it ended (null while running). */
  finishReason: FinishReason | null = null;
  /** With `spec.logprobs`: the log-probs of the yielded tokens, in order (else empty). */
  readonly logprobs: StepLogprobs[] = [];
  /** Tokens `tokens()` has handed out so far. */
  consumed = 0;
  /** The failure, when `finishReason` is "error". */
  error: Error | null = null;
  /** Resolves when the job got its slot (its prompt is prefilled); rejects when refused. */
  readonly admitted: Promise<void>;

  /** @internal */ readonly spec: JobSpec;
  /** @internal */ readonly key: Key;
  /** @internal */ row: EngineRow | null = null;
  /** @internal */ last = -1;
  /** @internal */ seen: number[] | null;
  /** @internal */ counts: Map<number, number> | null;
  /** @internal */ readonly enqueuedAt: number = performance.now();
  /** @internal */ cancelled = false;
  #queue: number[] = [];
  #wake: (() => void) | null = null;
  #admit!: () => void;
  #refuse!: (e: Error) => void;
  #settled = false;
  readonly #onAbort: () => void;

  /** @internal */
  constructor(spec: JobSpec) {
    this.spec = spec;
    this.promptTokens = spec.promptIds.length;
    this.key = requestKey(spec.seed ?? Math.floor(Math.random() * 2 ** 52), spec.choice ?? 0);
    this.seen = spec.sampling.repetitionPenalty !== 1 ? [...spec.promptIds] : null;
    const { presencePenalty: pp, frequencyPenalty: fp } = spec.sampling;
    this.counts = pp !== 0 || fp !== 0 ? new Map() : null;
    this.admitted = new Promise<void>((res, rej) => {
      this.#admit = res;
      this.#refuse = rej;
    });
    this.admitted.catch(() => {});
    this.#onAbort = () => this.cancel();
    spec.signal?.addEventListener("abort", this.#onAbort, { once: true });
    if (spec.signal?.aborted) this.cancel();
  }

  /** Stops the generation (the client went away or a stop sequence matched). */
  cancel(): void {
    if (this.finishReason !== null) return;
    this.cancelled = true;
    this.end("cancelled");
  }

  /** @internal */
  markAdmitted(): void {
    if (this.#settled) return;
    this.#settled = true;
    this.#admit();
  }

  /** @internal */
  push(id: number, logprobs: StepLogprobs | null): void {
    this.#queue.push(id);
    if (logprobs) this.logprobs.push(logprobs);
    this.#wake?.();
  }

  /** @internal */
  end(reason: FinishReason, error?: Error): void {
    if (this.finishReason !== null) return;
    this.finishReason = reason;
    if (error) this.error = error;
    this.spec.signal?.removeEventListener("abort", this.#onAbort);
    if (!this.#settled) {
      this.#settled = true;
      this.#refuse(error ?? new ApiError(503, "The request was cancelled before it started"));
    }
    this.#wake?.();
  }

  /**
   * The generated token ids as they are sampled (end-of-sequence tokens excluded). Ends when the
   * job ends; check `finishReason` afterwards.
   */
  async *tokens(): AsyncGenerator<number, void, undefined> {
    for (;;) {
      while (this.#queue.length) {
        this.consumed++;
        yield this.#queue.shift()!;
      }
      if (this.finishReason !== null) return;
      await new Promise<void>((r) => (this.#wake = r));
      this.#wake = null;
    }
  }
}

function tick(): Promise<void> {
  return new Promise((r) => setImmediate(r));
}

/** Continuous-batching scheduler over an {@link Engine}. */
export class Scheduler {
  readonly #engine: Engine;
  readonly #maxBatch: number;
  readonly #maxQueue: number;
  readonly #queueTimeoutMs: number;
  readonly #prefillBudget: number;
  #waiting: Job[] = [];
  #running: Job[] = [];
  #loop: Promise<void> | null = null;
  #closed = false;
  readonly #stats: SchedulerStats = {
    running: 0,
    waiting: 0,
    steps: 0,
    tokens: 0,
    cachedTokens: 0,
    maxBatchSeen: 0,
  };

  /**
   * Creates an idle scheduler; its loop runs while there are requests.
   *
   * @param engine the model engine
   * @param options batch size, queue bound, timeouts
   */
  constructor(engine: Engine, options: SchedulerOptions = {}) {
    this.#engine = engine;
    this.#maxBatch = options.maxBatch ?? 16;
    this.#maxQueue = options.maxQueue ?? 64;
    this.#queueTimeoutMs = options.queueTimeoutMs ?? 120_000;
    this.#prefillBudget = options.prefillBudget ?? 256;
  }

  /** The engine's vocabulary size and context length. */
  get engine(): Engine {
    return this.#engine;
  }

  /** Current counters. */
  get stats(): SchedulerStats {
    return { ...this.#stats, running: this.#running.length, waiting: this.#waiting.length };
  }

  /**
   * Queues a request.
   *
   * @param spec the request
   * @returns its job (await `job.admitted`, then iterate `job.tokens()`)
   * @throws ApiError 429 when the queue is full, 503 after `close()`
   */
  submit(spec: JobSpec): Job {
    if (this.#closed) {
      throw new ApiError(503, "The server is shutting down", { code: "unavailable" });
    }
    if (spec.promptIds.length === 0) throw new Error("Cannot generate from an empty prompt");
    const free = this.#maxBatch - this.#running.length;
    if (this.#waiting.length - Math.max(free, 0) >= this.#maxQueue) {
      throw new ApiError(
        429,
        `The server is busy: ${this.#running.length} requests running and ${this.#waiting.length} waiting (queue limit ${this.#maxQueue}); retry later`,
        { code: "rate_limit_exceeded", headers: { "Retry-After": "1" } },
      );
    }
    const job = new Job(spec);
    if (job.finishReason === null) {
      this.#waiting.push(job);
      this.#loop ??= this.#run().finally(() => (this.#loop = null));
    }
    return job;
  }

  /** Cancels everything and refuses new requests; resolves when the loop has stopped. */
  async close(): Promise<void> {
    this.#closed = true;
    for (const j of [...this.#waiting, ...this.#running]) {
      j.end("error", new ApiError(503, "The server is shutting down", { code: "unavailable" }));
    }
    await this.#loop;
    this.#reap();
  }

  #reap(): void {
    const keep: Job[] = [];
    for (const j of this.#running) {
      if (j.finishReason === null) keep.push(j);
      else if (j.row) {
        this.#engine.release(j.row);
        j.row = null;
      }
    }
    this.#running = keep;
    const now = performance.now();
    this.#waiting = this.#waiting.filter((j) => {
      if (j.finishReason !== null) return false;
      if (now - j.enqueuedAt > this.#queueTimeoutMs) {
        j.end(
          "error",
          new ApiError(
            503,
            `The request waited ${
              Math.round(now - j.enqueuedAt)
            } ms for a slot; the server is overloaded`,
            {
              code: "overloaded",
              headers: { "Retry-After": "5" },
            },
          ),
        );
        return false;
      }
      return true;
    });
  }

  /** Records token `id` for job `j` (sampled at step `j.completionTokens`). */
  #accept(j: Job, id: number, logprobs: StepLogprobs | null): void {
    j.completionTokens++;
    this.#stats.tokens++;
    if (j.spec.stopIds.has(id)) {
      j.end("stop");
      return;
    }
    try {
      j.spec.constraint?.accept(id);
    } catch (e) {
      j.end("error", e as Error);
      return;
    }
    j.last = id;
    j.seen?.push(id);
    if (j.counts) j.counts.set(id, (j.counts.get(id) ?? 0) + 1);
    j.push(id, logprobs);
    const total = j.promptTokens + j.completionTokens;
    if (j.spec.constraint?.done) j.end("stop");
    else if (j.completionTokens >= j.spec.maxTokens || total >= this.#engine.maxPositions) {
      j.end("length");
    }
  }

  #row(j: Job): SampleRow {
    let allowed: Float32Array | undefined;
    if (j.spec.constraint && j.finishReason === null) {
      const m = j.spec.constraint.mask();
      // a vocabulary without byte tokens can leave nothing: that request fails, not the batch
      if (m.allowed === 0) j.end("error", new Error("No token can continue the constrained reply"));
      else allowed = m.addend;
    }
    return {
      sampling: j.spec.sampling,
      u: stepUniform(j.key, j.completionTokens),
      seen: j.seen ?? undefined,
      counts: j.counts ?? undefined,
      logprobs: j.spec.logprobs,
      allowed,
    };
  }

  async #admit(): Promise<void> {
    let budget = this.#prefillBudget;
    while (this.#running.length < this.#maxBatch && this.#waiting.length) {
      const j = this.#waiting[0];
      if (this.#running.length > 0 && budget <= 0) break;
      this.#waiting.shift();
      if (j.finishReason !== null) continue;
      budget -= j.promptTokens;
      let logits: Tensor | null = null;
      try {
        const r = this.#engine.prefill(j.spec.promptIds);
        j.row = r.row;
        j.cachedTokens = r.cached ?? 0;
        this.#stats.cachedTokens += j.cachedTokens;
        logits = r.logits;
        this.#running.push(j);
        j.markAdmitted();
        const got = await sampleRows(logits, [this.#row(j)]);
        if (j.finishReason === null) this.#accept(j, got.ids[0], got.logprobs[0]);
      } catch (e) {
        j.end("error", e instanceof Error ? e : new Error(String(e)));
      } finally {
        logits?.dispose();
      }
    }
  }

  async #step(): Promise<void> {
    const jobs = this.#running;
    let logits: Tensor | null = null;
    try {
      logits = this.#engine.decode(jobs.map((j) => j.row!), jobs.map((j) => j.last));
      const got: SampledRows = await sampleRows(logits, jobs.map((j) => this.#row(j)));
      this.#stats.steps++;
      this.#stats.maxBatchSeen = Math.max(this.#stats.maxBatchSeen, jobs.length);
      jobs.forEach((j, i) => {
        if (j.finishReason === null) this.#accept(j, got.ids[i], got.logprobs[i]);
      });
    } catch (e) {
      const err = e instanceof Error ? e : new Error(String(e));
      console.error(`serve: decode step for ${jobs.length} requests failed:`, err);
      for (const j of jobs) j.end("error", err);
    } finally {
      logits?.dispose();
    }
  }

  async #run(): Promise<void> {
    while (!this.#closed) {
      this.#reap();
      if (this.#running.length === 0 && this.#waiting.length === 0) {
        this.#engine.idle?.();
        break;
      }
      await this.#admit();
      this.#reap();
      if (this.#running.length) await this.#step();
      await tick();
    }
  }
}

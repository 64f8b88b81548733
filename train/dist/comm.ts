/**
 * Communicators: what the data-parallel transform needs from a group of ranks — a sum all-reduce
 * of one `Float32Array`, a byte broadcast from a root, and a way out — behind one small interface.
 * Two implementations: Open MPI through Deno FFI (`mpi.ts`, one rank per process, on one machine or
 * many) and {@link inProcessGroup} (several ranks as concurrent async tasks of one process, for
 * several WebGPU adapters in one process, and for tests).
 *
 * A collective that some rank never reaches fails after `timeoutMs` with an error naming the ranks
 * that did not arrive, instead of waiting forever.
 * @module
 */
import { addF32 } from "../../nn/backend/cpu/gemm_adapter.ts";

/** A group of ranks that run the same program on different data. */
export interface Communicator {
  /** This rank, 0 ≤ rank < size. */
  readonly rank: number;
  /** Ranks in the group. */
  readonly size: number;
  /** What carries the data (`"mpi"`, `"in-process"`). */
  readonly kind: string;
  /** How long a collective waits for the slowest rank before failing (ms). */
  readonly timeoutMs: number;
  /**
   * Of the last collective's time, the milliseconds spent waiting for the other ranks to arrive
   * (the rest moved data); where the communicator can tell them apart.
   */
  readonly lastWaitMs?: number;
  /**
   * Sums `data` element-wise over all ranks, in place: afterwards every rank holds the same sum.
   * Every rank must call it with the same length, in the same order as the other collectives.
   */
  allReduceSum(data: Float32Array): Promise<void>;
  /** Copies `root`'s `data` into every rank's `data` (the same length on every rank). */
  broadcast(data: Uint8Array, root?: number): Promise<void>;
  /** Leaves the group cleanly (MPI_Finalize). Idempotent. */
  close(): void;
  /** Ends the whole job after an error on this rank (MPI_Abort); returns for in-process groups. */
  abort(code: number): void;
}

/** A collective did not complete in time: some ranks never reached it. */
export class CollectiveTimeoutError extends Error {
  /** The ranks that had not arrived (empty when unknown). */
  readonly missing: number[];
  /**
   * Creates the error.
   *
   * @param message what timed out and which ranks were missing
   * @param missing the ranks that had not arrived
   */
  constructor(message: string, missing: number[]) {
    super(message);
    this.name = "CollectiveTimeoutError";
    this.missing = missing;
  }
}

/** Default collective timeout: `MINIMIND_DIST_TIMEOUT` seconds, else 300 s. */
export function defaultTimeoutMs(): number {
  const raw = envGet("MINIMIND_DIST_TIMEOUT");
  if (raw === undefined || raw === "") return 300_000;
  const s = Number(raw);
  if (!(s > 0)) {
    throw new Error(`Invalid MINIMIND_DIST_TIMEOUT=${raw}: expected a number of seconds > 0`);
  }
  return s * 1000;
}

/**
 * The error message of a collective that timed out.
 *
 * @param what e.g. "all-reduce #12 (4 values)"
 * @param rank the rank that waited
 * @param missing ranks that never arrived
 * @param timeoutMs how long it waited
 * @returns the error
 */
export function timeoutError(
  what: string,
  rank: number,
  missing: number[],
  timeoutMs: number,
): CollectiveTimeoutError {
  const who = missing.length === 0
    ? "some rank"
    : missing.length === 1
    ? `rank ${missing[0]}`
    : `ranks ${missing.join(", ")}`;
  return new CollectiveTimeoutError(
    `Rank ${rank}: ${what} did not complete within ${timeoutMs / 1000} s: ${who} never reached ` +
      `it (died, hung, or is running a different step); giving up (MINIMIND_DIST_TIMEOUT sets the limit)`,
    missing,
  );
}

function envGet(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined; // no --allow-env
  }
}

/** Where this process stands in a launch, read from the environment. */
export interface WorldEnv {
  /** This process's rank. */
  rank: number;
  /** Processes in the launch. */
  size: number;
  /** Which variables said so (`OMPI_COMM_WORLD_*`, `RANK/WORLD_SIZE`) or `none`. */
  source: "ompi" | "torchrun-style" | "none";
}

/**
 * Rank and size from the environment: Open MPI's `OMPI_COMM_WORLD_RANK/SIZE` (set by `mpirun`),
 * else `RANK`/`WORLD_SIZE` as MiniMind reads them, else a single process.
 *
 * @param env variable lookup (default `Deno.env.get`)
 * @returns rank, size and where they came from
 */
export function worldFromEnv(env: (name: string) => string | undefined = envGet): WorldEnv {
  const read = (rankVar: string, sizeVar: string, source: WorldEnv["source"]) => {
    const r = env(rankVar), s = env(sizeVar);
    if (r === undefined || s === undefined || r === "" || s === "") return null;
    const rank = Number(r), size = Number(s);
    if (
      !Number.isInteger(size) || size < 1 || !Number.isInteger(rank) || rank < 0 || rank >= size
    ) {
      throw new Error(`Invalid ${rankVar}=${r} ${sizeVar}=${s}: expected 0 ≤ rank < size`);
    }
    return { rank, size, source };
  };
  return read("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "ompi") ??
    read("RANK", "WORLD_SIZE", "torchrun-style") ?? { rank: 0, size: 1, source: "none" };
}

/** The one-rank group: every collective is the identity. */
export class SoloCommunicator implements Communicator {
  /** Always 0. */
  readonly rank = 0;
  /** Always 1. */
  readonly size = 1;
  /** `"solo"`. */
  readonly kind = "solo";
  /** Unused (nothing to wait for). */
  readonly timeoutMs: number = Infinity;
  /** Leaves `data` as it is. */
  allReduceSum(_data: Float32Array): Promise<void> {
    return Promise.resolve();
  }
  /** Leaves `data` as it is. */
  broadcast(_data: Uint8Array, root = 0): Promise<void> {
    if (root !== 0) throw new Error(`Cannot broadcast from rank ${root}: the group has 1 rank`);
    return Promise.resolve();
  }
  /** Nothing to close. */
  close(): void {}
  /** Nothing to abort. */
  abort(_code: number): void {}
}

interface Arrival {
  data: Float32Array | Uint8Array;
  resolve: () => void;
  reject: (e: Error) => void;
}

interface Round {
  kind: "allreduce" | "broadcast";
  length: number;
  root: number;
  arrivals: Map<number, Arrival>;
  timer?: ReturnType<typeof setTimeout>;
}

/**
 * The shared state of an in-process group: the n-th collective of every rank meets in round n.
 */
class Hub {
  readonly size: number;
  readonly timeoutMs: number;
  readonly rounds = new Map<number, Round>();
  readonly next: number[];
  failed: Error | null = null;

  constructor(size: number, timeoutMs: number) {
    this.size = size;
    this.timeoutMs = timeoutMs;
    this.next = new Array(size).fill(0);
  }

  arrive(
    rank: number,
    kind: Round["kind"],
    data: Float32Array | Uint8Array,
    root: number,
  ): Promise<void> {
    if (this.failed) return Promise.reject(this.failed);
    const n = this.next[rank]++;
    let round = this.rounds.get(n);
    if (!round) {
      round = { kind, length: data.length, root, arrivals: new Map() };
      this.rounds.set(n, round);
      round.timer = setTimeout(() => this.expire(n), this.timeoutMs);
    }
    if (round.kind !== kind || round.length !== data.length || round.root !== root) {
      const e = new Error(
        `Rank ${rank} called ${kind} #${n} with ${data.length} values (root ${root}) while ` +
          `another rank called ${round.kind} #${n} with ${round.length} values (root ${round.root}): ` +
          `the ranks are out of step`,
      );
      this.fail(e);
      return Promise.reject(e);
    }
    const done = new Promise<void>((resolve, reject) => {
      round.arrivals.set(rank, { data, resolve, reject });
    });
    if (round.arrivals.size === this.size) this.complete(n, round);
    return done;
  }

  complete(n: number, round: Round): void {
    clearTimeout(round.timer);
    this.rounds.delete(n);
    const all = [...round.arrivals.entries()].sort((a, b) => a[0] - b[0]).map((e) => e[1]);
    if (round.kind === "allreduce") {
      // sum in rank order, in f32 like a reduction over the wire: each other rank's values added
      // into rank 0's array in place (BLAS's saxpy where it applies, the loop's bits), which every
      // other rank then copies
      const [first, ...rest] = all.map((a) => a.data as Float32Array);
      for (const d of rest) if (!addF32(first, d, first)) addInto(first, d);
      for (const d of rest) d.set(first);
    } else {
      const src = round.arrivals.get(round.root)!.data;
      for (const a of all) if (a.data !== src) a.data.set(src);
    }
    for (const a of all) a.resolve();
  }

  expire(n: number): void {
    const round = this.rounds.get(n);
    if (!round) return;
    const missing = [];
    for (let r = 0; r < this.size; r++) if (!round.arrivals.has(r)) missing.push(r);
    const what = `${round.kind === "allreduce" ? "all-reduce" : "broadcast"} #${n} ` +
      `(${round.length} values)`;
    for (const [rank, a] of round.arrivals) {
      a.reject(timeoutError(what, rank, missing, this.timeoutMs));
    }
    this.rounds.delete(n);
    this.fail(timeoutError(what, -1, missing, this.timeoutMs));
  }

  fail(e: Error): void {
    this.failed ??= e;
    for (const [, round] of this.rounds) {
      clearTimeout(round.timer);
      for (const [, a] of round.arrivals) a.reject(e);
    }
    this.rounds.clear();
  }
}

/** sum += d elementwise (f32 stores): where `addF32` does not apply (short arrays, no BLAS). */
function addInto(sum: Float32Array, d: Float32Array): void {
  for (let i = 0; i < sum.length; i++) sum[i] += d[i];
}

class InProcessCommunicator implements Communicator {
  readonly kind = "in-process";
  readonly rank: number;
  readonly #hub: Hub;
  constructor(hub: Hub, rank: number) {
    this.#hub = hub;
    this.rank = rank;
  }
  get size(): number {
    return this.#hub.size;
  }
  get timeoutMs(): number {
    return this.#hub.timeoutMs;
  }
  allReduceSum(data: Float32Array): Promise<void> {
    return this.#hub.arrive(this.rank, "allreduce", data, 0);
  }
  broadcast(data: Uint8Array, root = 0): Promise<void> {
    if (!(Number.isInteger(root) && root >= 0 && root < this.size)) {
      throw new Error(`Cannot broadcast from rank ${root}: the group has ${this.size} ranks`);
    }
    return this.#hub.arrive(this.rank, "broadcast", data, root);
  }
  close(): void {}
  abort(code: number): void {
    this.#hub.fail(new Error(`Rank ${this.rank} aborted the group (code ${code})`));
  }
}

/**
 * `size` communicators that meet inside this process: run each rank as its own async task (e.g.
 * one per WebGPU adapter, `Promise.all` over them); the n-th collective of every rank is one
 * round, completed when the last rank arrives. A round that some rank has not reached after
 * `timeoutMs` fails on every rank with the missing ranks named.
 *
 * @param size ranks
 * @param options `timeoutMs` (default {@link defaultTimeoutMs})
 * @returns one communicator per rank, index = rank
 * @example
 * ```ts
 * import { inProcessGroup } from "./comm.ts";
 * const comms = inProcessGroup(2);
 * const bufs = [new Float32Array([1, 2]), new Float32Array([10, 20])];
 * await Promise.all(comms.map((c, r) => c.allReduceSum(bufs[r])));
 * bufs[1]; // Float32Array [11, 22]
 * ```
 */
export function inProcessGroup(size: number, options: { timeoutMs?: number } = {}): Communicator[] {
  if (!(Number.isInteger(size) && size >= 1)) {
    throw new Error(`Cannot make an in-process group of ${size} ranks: need an integer ≥ 1`);
  }
  const hub = new Hub(size, options.timeoutMs ?? defaultTimeoutMs());
  return Array.from({ length: size }, (_, r) => new InProcessCommunicator(hub, r));
}

/**
 * Rank `root`'s bytes on every rank (any length: the length goes first).
 *
 * @param comm the group
 * @param bytes the payload on `root` (ignored elsewhere)
 * @param root the sending rank (default 0)
 * @returns root's bytes (on root: `bytes` itself)
 */
export async function broadcastBytes(
  comm: Communicator,
  bytes: Uint8Array | null,
  root = 0,
): Promise<Uint8Array> {
  if (comm.rank === root && bytes === null) {
    throw new Error(`Rank ${root}: cannot broadcast nothing: pass the bytes to send`);
  }
  if (comm.size === 1) return bytes!;
  const len = new Float64Array([comm.rank === root ? bytes!.length : 0]);
  await comm.broadcast(new Uint8Array(len.buffer), root);
  const out = comm.rank === root ? bytes! : new Uint8Array(len[0]);
  await comm.broadcast(out, root);
  return out;
}

/**
 * Rank `root`'s JSON value on every rank (a seed, a decision, a run's settings).
 *
 * @param comm the group
 * @param value the value on `root` (ignored elsewhere)
 * @param root the sending rank (default 0)
 * @returns root's value
 */
export async function broadcastJson<T>(comm: Communicator, value: T, root = 0): Promise<T> {
  if (comm.size === 1) return value;
  const mine = comm.rank === root ? new TextEncoder().encode(JSON.stringify(value ?? null)) : null;
  return JSON.parse(new TextDecoder().decode(await broadcastBytes(comm, mine, root))) as T;
}

/**
 * Runs `fn` on rank 0, then on the other ranks: files it creates (a trained tokenizer, the
 * corpus, JSONL index caches) are written once and then read, never raced for. When rank 0 fails,
 * the others fail too with its message.
 *
 * @param comm the group
 * @param fn the work (every rank runs it)
 * @returns fn's result on this rank
 */
export async function rankZeroFirst<T>(comm: Communicator, fn: () => Promise<T>): Promise<T> {
  if (comm.size === 1) return await fn();
  if (comm.rank === 0) {
    let value: T;
    try {
      value = await fn();
    } catch (e) {
      await broadcastJson(comm, { failed: (e as Error).message });
      throw e;
    }
    await broadcastJson(comm, { failed: null });
    return value;
  }
  const r = await broadcastJson<{ failed: string | null }>(comm, { failed: null });
  if (r.failed !== null) throw new Error(`Rank 0 failed: ${r.failed}`);
  return await fn();
}

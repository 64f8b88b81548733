/**
 * Open MPI through Deno FFI: one rank per process, started by `mpirun` on one machine or across
 * hosts. Only MPI's C API is used (`MPI_Init`, `MPI_Comm_rank/size`, `MPI_Allreduce`,
 * `MPI_Bcast`, `MPI_Isend/Irecv`, `MPI_Test`, `MPI_Abort`, `MPI_Finalize`); no protocol of our own.
 *
 * Open MPI's handles (`MPI_COMM_WORLD`, `MPI_FLOAT`, `MPI_SUM`, …) are the addresses of exported
 * objects (`ompi_mpi_comm_world`, `ompi_mpi_float`, `ompi_mpi_op_sum`), found with `dlsym`. The
 * library is first opened with `RTLD_GLOBAL` (through libc's `dlopen`) because Open MPI's plugins
 * resolve their symbols against it.
 *
 * Timeouts: before collective #n each rank posts a one-integer "arrived at #n" message to every
 * other rank (`MPI_Isend`/`MPI_Irecv`) and polls them with `MPI_Test` up to a deadline; when it
 * passes, the ranks whose message has not come are named in the error — a rank that hung or died
 * before the collective makes the others fail with its number instead of waiting forever. (When
 * a rank's process exits, `mpirun` itself also ends the job.) Once every rank has arrived, the
 * collective itself is Open MPI's blocking one: on 104 MB its tuned `MPI_Allreduce` took 0.5–0.9 s
 * where `MPI_Iallreduce` polled with `MPI_Test` took 1.1–1.3 s (2 ranks, loaded 2-core machine).
 * @module
 */
import type { Communicator } from "./comm.ts";
import { defaultTimeoutMs, SoloCommunicator, timeoutError, worldFromEnv } from "./comm.ts";

const SYMBOLS = {
  MPI_Initialized: { parameters: ["buffer"], result: "i32" },
  MPI_Init: { parameters: ["pointer", "pointer"], result: "i32" },
  MPI_Finalized: { parameters: ["buffer"], result: "i32" },
  MPI_Finalize: { parameters: [], result: "i32" },
  MPI_Abort: { parameters: ["pointer", "i32"], result: "i32" },
  MPI_Comm_rank: { parameters: ["pointer", "buffer"], result: "i32" },
  MPI_Comm_size: { parameters: ["pointer", "buffer"], result: "i32" },
  // sendbuf (MPI_IN_PLACE), recvbuf, count, datatype, op, comm
  MPI_Allreduce: {
    parameters: ["pointer", "buffer", "i32", "pointer", "pointer", "pointer"],
    result: "i32",
  },
  // buffer, count, datatype, root, comm
  MPI_Bcast: { parameters: ["buffer", "i32", "pointer", "i32", "pointer"], result: "i32" },
  // buffer, count, datatype, peer, tag, comm, request*
  MPI_Isend: {
    parameters: ["buffer", "i32", "pointer", "i32", "i32", "pointer", "buffer"],
    result: "i32",
  },
  MPI_Irecv: {
    parameters: ["buffer", "i32", "pointer", "i32", "i32", "pointer", "buffer"],
    result: "i32",
  },
  // request*, flag*, status* (MPI_STATUS_IGNORE = NULL)
  MPI_Test: { parameters: ["buffer", "buffer", "pointer"], result: "i32" },
} as const;

type MpiLib = Deno.DynamicLibrary<typeof SYMBOLS>;

/** Libraries tried in order (`MINIMIND_MPI` first). */
export function mpiCandidates(): string[] {
  const out: string[] = [];
  const env = Deno.env.get("MINIMIND_MPI");
  if (env) out.push(env);
  if (Deno.build.os === "darwin") {
    out.push("/opt/homebrew/lib/libmpi.40.dylib", "/usr/local/lib/libmpi.40.dylib", "libmpi.dylib");
  } else {
    out.push("libmpi.so.40", "libmpi.so");
  }
  return out;
}

const enc = new TextEncoder();
const cstr = (s: string) => enc.encode(s + "\0");

/** libc's dlopen/dlsym, to open libmpi with RTLD_GLOBAL and find its exported objects. */
function openDl() {
  const libc = Deno.build.os === "darwin" ? "libSystem.B.dylib" : "libc.so.6";
  return Deno.dlopen(libc, {
    dlopen: { parameters: ["buffer", "i32"], result: "pointer" },
    dlsym: { parameters: ["pointer", "buffer"], result: "pointer" },
  });
}

/** The tag of the "arrived" notes (any value below MPI_TAG_UB's guaranteed 32767). */
const ARRIVAL_TAG = 7311;
/** Largest element count of one MPI call (its `count` is a C int); bigger buffers go in pieces. */
const MAX_COUNT = 1 << 30;

class MpiCommunicator implements Communicator {
  readonly kind = "mpi";
  readonly rank: number;
  readonly size: number;
  readonly timeoutMs: number;
  readonly library: string;
  readonly #lib: MpiLib;
  readonly #world: Deno.PointerValue;
  readonly #float: Deno.PointerValue;
  readonly #byte: Deno.PointerValue;
  readonly #int: Deno.PointerValue;
  readonly #sum: Deno.PointerValue;
  #collectives = 0;
  lastWaitMs = 0;
  #closed = false;

  constructor(timeoutMs: number) {
    this.timeoutMs = timeoutMs;
    const dl = openDl();
    const tried: string[] = [];
    let lib: MpiLib | null = null, handle: Deno.PointerValue = null, path = "";
    for (const p of mpiCandidates()) {
      // RTLD_NOW | RTLD_GLOBAL (Linux 0x2|0x100, macOS 0x2|0x8)
      const flags = Deno.build.os === "darwin" ? 0x2 | 0x8 : 0x2 | 0x100;
      handle = dl.symbols.dlopen(cstr(p), flags);
      if (handle === null) {
        tried.push(p);
        continue;
      }
      lib = Deno.dlopen(p, SYMBOLS);
      path = p;
      break;
    }
    if (!lib) {
      throw new Error(
        `Cannot load Open MPI: none of ${tried.join(", ")} could be opened ` +
          `(apt-get install openmpi-bin libopenmpi3, or set MINIMIND_MPI=/path/to/libmpi.so)`,
      );
    }
    this.#lib = lib;
    this.library = path;
    const sym = (name: string) => {
      const p = dl.symbols.dlsym(handle, cstr(name));
      if (p === null) {
        throw new Error(
          `Cannot use ${path}: it does not export ${name} (only Open MPI's libmpi is supported)`,
        );
      }
      return p;
    };
    this.#world = sym("ompi_mpi_comm_world");
    this.#float = sym("ompi_mpi_float");
    this.#byte = sym("ompi_mpi_byte");
    this.#int = sym("ompi_mpi_int");
    this.#sum = sym("ompi_mpi_op_sum");
    const flag = new Int32Array(1);
    this.#check("MPI_Initialized", lib.symbols.MPI_Initialized(flag));
    if (!flag[0]) this.#check("MPI_Init", lib.symbols.MPI_Init(null, null));
    const v = new Int32Array(1);
    this.#check("MPI_Comm_rank", lib.symbols.MPI_Comm_rank(this.#world, v));
    this.rank = v[0];
    this.#check("MPI_Comm_size", lib.symbols.MPI_Comm_size(this.#world, v));
    this.size = v[0];
  }

  #check(what: string, code: number): void {
    if (code !== 0) {
      throw new Error(`Rank ${this.rank ?? "?"}: ${what} failed with MPI error ${code}`);
    }
  }

  async allReduceSum(data: Float32Array): Promise<void> {
    await this.#collective(`all-reduce`, data.length, (off, n) =>
      this.#lib.symbols.MPI_Allreduce(
        Deno.UnsafePointer.create(1n), // MPI_IN_PLACE
        data.subarray(off, off + n),
        n,
        this.#float,
        this.#sum,
        this.#world,
      ));
  }

  async broadcast(data: Uint8Array, root = 0): Promise<void> {
    if (!(Number.isInteger(root) && root >= 0 && root < this.size)) {
      throw new Error(`Cannot broadcast from rank ${root}: the group has ${this.size} ranks`);
    }
    await this.#collective(
      `broadcast from rank ${root}`,
      data.length,
      (off, n) =>
        this.#lib.symbols.MPI_Bcast(data.subarray(off, off + n), n, this.#byte, root, this.#world),
    );
  }

  /**
   * One collective: first every rank's arrival note, waited for up to the deadline (naming the
   * ranks that never come), then the blocking call itself in pieces of at most MAX_COUNT.
   */
  async #collective(
    what: string,
    length: number,
    run: (offset: number, count: number) => number,
  ): Promise<void> {
    if (this.#closed) throw new Error(`Rank ${this.rank}: cannot run ${what}: MPI was finalized`);
    const n = this.#collectives++;
    if (this.size === 1) return;
    const t0 = performance.now();
    await this.#arrive(n, `${what} #${n} (${length} values)`);
    this.lastWaitMs = performance.now() - t0;
    for (let off = 0; off < length; off += MAX_COUNT) {
      this.#check(what, run(off, Math.min(MAX_COUNT, length - off)));
    }
  }

  /** Sends "arrived at collective #n" to every other rank and waits for theirs. */
  async #arrive(n: number, label: string): Promise<void> {
    const s = this.#lib.symbols;
    const deadline = performance.now() + this.timeoutMs;
    const peers = [...Array(this.size).keys()].filter((r) => r !== this.rank);
    // MPI keeps these addresses until the requests complete: views of one explicit ArrayBuffer,
    // whose memory V8 never moves (small typed arrays may live on the moving heap)
    const mem = new ArrayBuffer(8 * 2 * peers.length + 4 * (this.size + 1));
    const sends = peers.map((_, i) => new BigUint64Array(mem, 8 * i, 1));
    const recvs = peers.map((_, i) => new BigUint64Array(mem, 8 * (peers.length + i), 1));
    const note = new Int32Array(mem, 16 * peers.length, 1);
    note[0] = n;
    const got = new Int32Array(mem, 16 * peers.length + 4, this.size);
    peers.forEach((p, i) => {
      const slot = got.subarray(p, p + 1);
      this.#check(
        "MPI_Irecv",
        s.MPI_Irecv(slot, 1, this.#int, p, ARRIVAL_TAG, this.#world, recvs[i]),
      );
      this.#check(
        "MPI_Isend",
        s.MPI_Isend(note, 1, this.#int, p, ARRIVAL_TAG, this.#world, sends[i]),
      );
    });
    const flag = new Int32Array(new ArrayBuffer(4));
    const test = (req: BigUint64Array) => {
      this.#check("MPI_Test", s.MPI_Test(req, flag, null));
      return flag[0] !== 0;
    };
    const arrived = peers.map(() => false), sent = peers.map(() => false);
    const start = performance.now();
    for (;;) {
      peers.forEach((p, i) => {
        if (!arrived[i] && test(recvs[i])) {
          if (got[p] !== n) {
            throw new Error(
              `Rank ${this.rank}: rank ${p} is at collective #${got[p]} while this rank runs ` +
                `${label}: the ranks are out of step`,
            );
          }
          arrived[i] = true;
        }
        if (!sent[i] && test(sends[i])) sent[i] = true;
      });
      if (arrived.every(Boolean) && sent.every(Boolean)) return;
      const now = performance.now();
      if (now > deadline) {
        throw timeoutError(label, this.rank, peers.filter((_, i) => !arrived[i]), this.timeoutMs);
      }
      // spin briefly (ranks usually arrive together), then leave the core to the slower ranks
      if (now - start > 2) await new Promise((r) => setTimeout(r, 1));
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const flag = new Int32Array(1);
    this.#lib.symbols.MPI_Finalized(flag);
    if (!flag[0]) this.#check("MPI_Finalize", this.#lib.symbols.MPI_Finalize());
  }

  abort(code: number): void {
    this.#lib.symbols.MPI_Abort(this.#world, code);
  }
}

/**
 * Joins the MPI job this process was started in (`mpirun -np N deno run -A …`; `MPI_Init` on first
 * use). Outside `mpirun` it is a one-rank group (an MPI singleton).
 *
 * @param options `timeoutMs` per collective (default {@link defaultTimeoutMs})
 * @returns the communicator (call `close()` before exiting)
 * @example
 * ```ts ignore
 * // mpirun -np 2 deno run -A sum.ts
 * import { openMpi } from "./mpi.ts";
 * const comm = openMpi();
 * const x = new Float32Array([comm.rank + 1]);
 * await comm.allReduceSum(x); // x[0] = 3 on both ranks
 * comm.close();
 * ```
 */
export function openMpi(options: { timeoutMs?: number } = {}): Communicator & { library: string } {
  return new MpiCommunicator(options.timeoutMs ?? defaultTimeoutMs());
}

/**
 * The communicator of this process's launch: a one-rank group when started alone, Open MPI when
 * started by `mpirun` (or with `RANK`/`WORLD_SIZE` > 1 under an MPI launcher), checked against
 * the environment's rank and size.
 *
 * @param options `timeoutMs` per collective
 * @returns the communicator (call `close()` before exiting)
 */
export function openCommunicator(options: { timeoutMs?: number } = {}): Communicator {
  const env = worldFromEnv();
  if (env.size === 1) return new SoloCommunicator();
  const comm = openMpi(options);
  if (comm.size !== env.size || comm.rank !== env.rank) {
    const vars = env.source === "ompi" ? "OMPI_COMM_WORLD_RANK/SIZE" : "RANK/WORLD_SIZE";
    comm.close();
    throw new Error(
      `${vars} say rank ${env.rank} of ${env.size}, but MPI sees rank ${comm.rank} of ` +
        `${comm.size}: start the ranks with Open MPI's mpirun (mpirun -np ${env.size} …)`,
    );
  }
  return comm;
}

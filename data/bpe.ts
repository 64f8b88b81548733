// The BPE model of a byte-level tokenizer: vocab + ranked merges, and the merge loop that turns
// the bytes of one pre-tokenized piece into token ids. Merge rank = index in the merges list.

import { BYTE_TO_CHAR } from "./byte_level.ts";

/** Positions per rank in the merge heap's keys (rank · POS_SPAN + position). */
const POS_SPAN = 2 ** 26;

/** Open-addressing hash map from an id pair (a, b) to a non-negative int. */
export class PairMap {
  #keyA: Int32Array;
  #keyB: Int32Array;
  #val: Int32Array;
  #mask: number;
  #size = 0;

  /**
   * Creates the structure.
   * @param capacity Expected number of entries.
   */
  constructor(capacity = 1024) {
    let cap = 16;
    while (cap < capacity * 2) cap *= 2;
    this.#keyA = new Int32Array(cap).fill(-1);
    this.#keyB = new Int32Array(cap);
    this.#val = new Int32Array(cap);
    this.#mask = cap - 1;
  }

  /** Number of entries. */
  get size(): number {
    return this.#size;
  }

  #slot(a: number, b: number): number {
    let h = (Math.imul(a, 0x9e3779b1) ^ Math.imul(b, 0x85ebca6b)) & this.#mask;
    const ka = this.#keyA;
    const kb = this.#keyB;
    while (ka[h] !== -1 && (ka[h] !== a || kb[h] !== b)) h = (h + 1) & this.#mask;
    return h;
  }

  /**
   * Looks up the value of the pair (a, b).
   * @param a First id (≥ 0).
   * @param b Second id (≥ 0).
   * @returns The value, or -1 when absent.
   */
  get(a: number, b: number): number {
    const h = this.#slot(a, b);
    return this.#keyA[h] === -1 ? -1 : this.#val[h];
  }

  /**
   * Sets (a, b) → v unless (a, b) is already present and `keepFirst`.
   * @param a First id (≥ 0).
   * @param b Second id (≥ 0).
   * @param v Value (≥ 0).
   * @param keepFirst Leave an existing entry unchanged.
   */
  set(a: number, b: number, v: number, keepFirst = false): void {
    if ((this.#size + 1) * 2 > this.#keyA.length) this.#grow();
    const h = this.#slot(a, b);
    if (this.#keyA[h] === -1) {
      this.#keyA[h] = a;
      this.#keyB[h] = b;
      this.#val[h] = v;
      this.#size++;
    } else if (!keepFirst) {
      this.#val[h] = v;
    }
  }

  #grow(): void {
    const oa = this.#keyA, ob = this.#keyB, ov = this.#val;
    const cap = oa.length * 2;
    this.#keyA = new Int32Array(cap).fill(-1);
    this.#keyB = new Int32Array(cap);
    this.#val = new Int32Array(cap);
    this.#mask = cap - 1;
    this.#size = 0;
    for (let i = 0; i < oa.length; i++) if (oa[i] !== -1) this.set(oa[i], ob[i], ov[i]);
  }
}

/** Options of {@link BpeModel} taken from the `model` object of a tokenizer.json. */
export interface BpeModelOptions {
  /** Token id used for bytes that have no vocab entry (null: such bytes are dropped, like HF). */
  unkId?: number | null;
  /** Use a piece's own vocab id without merging when it is in the vocab (HF `ignore_merges`). */
  ignoreMerges?: boolean;
}

/** Byte-level BPE: vocab, ranked merges and the per-piece merge loop. */
export class BpeModel {
  /** Token string → id. */
  readonly vocab: Map<string, number>;
  /** Merges in rank order, as pairs of token strings. */
  readonly merges: [string, string][];
  readonly #ranks: PairMap;
  readonly #mergeA: Int32Array;
  readonly #mergeB: Int32Array;
  readonly #mergeNew: Int32Array;
  readonly #byteIds: Int32Array;
  readonly #unkId: number;
  readonly #ignoreMerges: boolean;
  #scratch = new Int32Array(256);
  #next = new Int32Array(256);
  #prev = new Int32Array(256);
  #heap = new Float64Array(256);

  /**
   * Creates the structure.
   * @param vocab Token string → id.
   * @param merges Ranked merges as `[a, b]` pairs or legacy `"a b"` strings.
   * @param options Unknown-byte and ignore-merges behaviour.
   */
  constructor(
    vocab: Map<string, number>,
    merges: ([string, string] | string)[],
    options: BpeModelOptions = {},
  ) {
    this.vocab = vocab;
    this.#unkId = options.unkId ?? -1;
    this.#ignoreMerges = options.ignoreMerges ?? false;
    const n = merges.length;
    if (n * POS_SPAN >= Number.MAX_SAFE_INTEGER) {
      throw new Error(`Cannot load ${n} merges: at most ${Math.floor(2 ** 53 / POS_SPAN)}`);
    }
    this.merges = new Array(n);
    this.#ranks = new PairMap(n);
    this.#mergeA = new Int32Array(n);
    this.#mergeB = new Int32Array(n);
    this.#mergeNew = new Int32Array(n);
    for (let r = 0; r < n; r++) {
      const m = merges[r];
      let pair: [string, string];
      if (typeof m === "string") {
        const parts = m.split(" ");
        if (parts.length !== 2) {
          throw new Error(`Cannot parse merge #${r} ${JSON.stringify(m)}: expected "a b"`);
        }
        pair = [parts[0], parts[1]];
      } else {
        pair = [m[0], m[1]];
      }
      const a = vocab.get(pair[0]), b = vocab.get(pair[1]), c = vocab.get(pair[0] + pair[1]);
      if (a === undefined || b === undefined || c === undefined) {
        throw new Error(
          `Cannot load merge #${r} ${JSON.stringify(pair)}: ${
            a === undefined ? pair[0] : b === undefined ? pair[1] : pair[0] + pair[1]
          } is not in the vocab`,
        );
      }
      this.merges[r] = pair;
      this.#mergeA[r] = a;
      this.#mergeB[r] = b;
      this.#mergeNew[r] = c;
      this.#ranks.set(a, b, r); // like HF's HashMap collect, a duplicated pair keeps its last rank
    }
    this.#byteIds = new Int32Array(256);
    for (let b = 0; b < 256; b++) this.#byteIds[b] = vocab.get(BYTE_TO_CHAR[b]) ?? -1;
  }

  /**
   * Runs BPE over the UTF-8 bytes of one piece and appends the ids to `out`.
   *
   * @param bytes Bytes of the piece (only `bytes[0..len)` is read).
   * @param len Number of bytes.
   * @param out Receives the token ids.
   * @param word The piece as a byte-level string, needed only when `ignoreMerges` is set.
   */
  encodeBytes(bytes: Uint8Array, len: number, out: number[], word?: string): void {
    if (this.#ignoreMerges && word !== undefined) {
      const id = this.vocab.get(word);
      if (id !== undefined) {
        out.push(id);
        return;
      }
    }
    if (len >= POS_SPAN) {
      throw new RangeError(`BPE piece of ${len} bytes: at most ${POS_SPAN - 1} are supported`);
    }
    if (this.#scratch.length < len) this.#scratch = new Int32Array(len * 2);
    const syms = this.#scratch;
    let n = 0;
    for (let i = 0; i < len; i++) {
      const id = this.#byteIds[bytes[i]];
      if (id >= 0) syms[n++] = id;
      else if (this.#unkId >= 0) syms[n++] = this.#unkId;
    }
    if (n > 1) n = this.#merge(syms, n);
    for (let i = 0; i < n; i++) out.push(syms[i]);
  }

  /**
   * Applies the merges to `syms[0..n)` in place and returns the new length. The symbols form a
   * doubly linked list and every adjacent pair that has a merge sits in a binary min-heap keyed by
   * (rank, position): the lowest rank merges first and equal ranks merge left to right, as HF's
   * `Word::merge_all` does. A popped entry whose symbols have changed since it was pushed is
   * skipped. O(n log n) in the piece length, where rescanning every pair per merge was O(n²).
   */
  #merge(syms: Int32Array, n: number): number {
    if (this.#next.length < n) {
      this.#next = new Int32Array(n * 2);
      this.#prev = new Int32Array(n * 2);
      this.#heap = new Float64Array(n * 2);
    }
    const next = this.#next, prev = this.#prev, ranks = this.#ranks;
    let heap = this.#heap, size = 0;
    // key = rank · 2^26 + position, exact in a double (positions < 2^26, ranks < 2^27)
    const push = (pos: number): void => {
      const r = ranks.get(syms[pos], syms[next[pos]]);
      if (r < 0) return;
      if (size === heap.length) {
        const grown = new Float64Array(size * 2);
        grown.set(heap);
        heap = this.#heap = grown;
      }
      const key = r * POS_SPAN + pos;
      let i = size++;
      while (i > 0) {
        const parent = (i - 1) >> 1;
        if (heap[parent] <= key) break;
        heap[i] = heap[parent];
        i = parent;
      }
      heap[i] = key;
    };
    const pop = (): number => {
      const top = heap[0];
      const last = heap[--size];
      let i = 0;
      for (;;) {
        let child = 2 * i + 1;
        if (child >= size) break;
        if (child + 1 < size && heap[child + 1] < heap[child]) child++;
        if (heap[child] >= last) break;
        heap[i] = heap[child];
        i = child;
      }
      if (size > 0) heap[i] = last;
      return top;
    };
    for (let i = 0; i < n; i++) {
      next[i] = i + 1 < n ? i + 1 : -1;
      prev[i] = i - 1;
    }
    for (let i = 0; i + 1 < n; i++) push(i);
    let alive = n;
    while (size > 0) {
      const key = pop();
      const rank = Math.floor(key / POS_SPAN), pos = key - rank * POS_SPAN;
      const right = next[pos];
      // stale: the left symbol was merged away (marked -2) or the pair changed since the push
      if (prev[pos] === -2 || right < 0) continue;
      if (syms[pos] !== this.#mergeA[rank] || syms[right] !== this.#mergeB[rank]) continue;
      syms[pos] = this.#mergeNew[rank];
      const after = next[right];
      next[pos] = after;
      if (after >= 0) prev[after] = pos;
      prev[right] = -2;
      alive--;
      if (prev[pos] >= 0) push(prev[pos]);
      if (after >= 0) push(pos);
    }
    let w = 0;
    for (let i = 0; i >= 0 && w < alive; i = next[i]) syms[w++] = syms[i];
    return w;
  }
}

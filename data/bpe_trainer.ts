// Byte-level BPE training, following HF tokenizers' BpeTrainer: count pre-tokenized words, start
// from special tokens + the 256 byte characters (sorted), then repeatedly merge the most frequent
// adjacent pair (ties: the smallest pair of ids), updating pair counts only in the words that
// contain the merged pair. A max-heap with lazy re-insertion keeps each step cheap.

import { BYTE_TO_CHAR, byteLevelAlphabet } from "./byte_level.ts";
import { PairMap } from "./bpe.ts";
import { MINIMIND_CHAT_TEMPLATE } from "./chat_template.ts";
import { splitGpt2 } from "./pretokenize.ts";
import {
  type AddedToken,
  Tokenizer,
  type TokenizerConfig,
  type TokenizerJson,
} from "./tokenizer.ts";

/** minimind-3's 36 added tokens in id order: ids 0–20 special, 21–35 not (kept by decode). */
export const MINIMIND_SPECIAL_TOKENS: readonly string[] = [
  "<|endoftext|>",
  "<|im_start|>",
  "<|im_end|>",
  "<|object_ref_start|>",
  "<|object_ref_end|>",
  "<|box_start|>",
  "<|box_end|>",
  "<|quad_start|>",
  "<|quad_end|>",
  "<|vision_start|>",
  "<|vision_end|>",
  "<|vision_pad|>",
  "<|image_pad|>",
  "<|video_pad|>",
  "<|audio_start|>",
  "<|audio_end|>",
  "<|audio_pad|>",
  "<tts_pad>",
  "<tts_text_bos>",
  "<tts_text_eod>",
  "<tts_text_bos_single>",
  "<tool_call>",
  "</tool_call>",
  "<tool_response>",
  "</tool_response>",
  "<think>",
  "</think>",
  "<|buffer1|>",
  "<|buffer2|>",
  "<|buffer3|>",
  "<|buffer4|>",
  "<|buffer5|>",
  "<|buffer6|>",
  "<|buffer7|>",
  "<|buffer8|>",
  "<|buffer9|>",
];

/** How many of {@link MINIMIND_SPECIAL_TOKENS} are `special` (skipped when decoding). */
export const MINIMIND_NUM_SPECIAL = 21;

/** Options of {@link trainBpe}. */
export interface TrainBpeOptions {
  /** Target vocab size, added tokens included (MiniMind: 6400). */
  vocabSize: number;
  /** Added tokens, given ids 0.. in this order; never split or merged. */
  specialTokens?: readonly string[];
  /** Stop when the best pair occurs fewer times than this (HF default 0: until no pairs). */
  minFrequency?: number;
  /** Called every 500 merges and at the end with (merges done, merge budget). */
  onProgress?: (merges: number, budget: number) => void;
}

/** The learned vocab and merges, ready for a tokenizer.json `model`. */
export interface BpeResult {
  /** Token string → id (added tokens, then the 256 byte characters, then merged tokens). */
  vocab: Record<string, number>;
  /** Merges in rank order. */
  merges: [string, string][];
  /** Statistics of the run. */
  stats: { bytes: number; words: number; uniqueWords: number; seconds: number };
}

class MaxHeap {
  // Ordered by count desc, then (a, b) asc, like HF's `Merge` ordering.
  ids: number[] = [];
  counts: number[] = [];

  #less(i: number, j: number, a: Int32Array, b: Int32Array): boolean {
    // true when entry i ranks below entry j
    const ci = this.counts[i], cj = this.counts[j];
    if (ci !== cj) return ci < cj;
    const pi = this.ids[i], pj = this.ids[j];
    if (a[pi] !== a[pj]) return a[pi] > a[pj];
    return b[pi] > b[pj];
  }

  push(id: number, count: number, a: Int32Array, b: Int32Array): void {
    this.ids.push(id);
    this.counts.push(count);
    let i = this.ids.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.#less(p, i, a, b)) break;
      this.#swap(i, p);
      i = p;
    }
  }

  pop(a: Int32Array, b: Int32Array): [number, number] | null {
    const n = this.ids.length;
    if (n === 0) return null;
    const top: [number, number] = [this.ids[0], this.counts[0]];
    const lastId = this.ids.pop()!, lastCount = this.counts.pop()!;
    if (n > 1) {
      this.ids[0] = lastId;
      this.counts[0] = lastCount;
      let i = 0;
      const m = n - 1;
      for (;;) {
        const l = 2 * i + 1, r = l + 1;
        let best = i;
        if (l < m && this.#less(best, l, a, b)) best = l;
        if (r < m && this.#less(best, r, a, b)) best = r;
        if (best === i) break;
        this.#swap(i, best);
        i = best;
      }
    }
    return top;
  }

  #swap(i: number, j: number): void {
    const t = this.ids[i];
    this.ids[i] = this.ids[j];
    this.ids[j] = t;
    const c = this.counts[i];
    this.counts[i] = this.counts[j];
    this.counts[j] = c;
  }
}

/**
 * Counts GPT-2 pre-tokenized pieces of `texts`, with special tokens cut out first.
 *
 * @param texts Training texts.
 * @param specialTokens Strings removed from the texts before splitting.
 * @returns Piece → count, and the number of UTF-8 bytes seen.
 */
export function countWords(
  texts: Iterable<string>,
  specialTokens: readonly string[] = [],
): { counts: Map<string, number>; bytes: number; words: number } {
  const counts = new Map<string, number>();
  let bytes = 0;
  let words = 0;
  const specials = specialTokens.filter((t) => t.length > 0)
    .sort((a, b) => b.length - a.length)
    .map((t) => t.replace(/[.*+?^${}()|[\]\\/-]/g, "\\$&"));
  const re = specials.length ? new RegExp(specials.join("|"), "gu") : null;
  const encoder = new TextEncoder();
  for (const text of texts) {
    bytes += encoder.encode(text).length;
    const segments = re ? text.split(re) : [text];
    for (const seg of segments) {
      splitGpt2(seg, (s, e) => {
        const w = seg.slice(s, e);
        counts.set(w, (counts.get(w) ?? 0) + 1);
        words++;
      });
    }
  }
  return { counts, bytes, words };
}

/**
 * Trains byte-level BPE merges on `texts` (HF BpeTrainer semantics, ByteLevel initial alphabet).
 *
 * @param texts Training texts (e.g. the `text` fields of a pretrain JSONL).
 * @param options Vocab size, added tokens and stopping rule.
 * @returns Vocab, merges and statistics.
 * @example
 * ```ts
 * import { trainBpe } from "./bpe_trainer.ts";
 * const { vocab, merges } = trainBpe(["low lower lowest", "new newer newest"], {
 *   vocabSize: 270,
 *   specialTokens: ["<|endoftext|>"],
 * });
 * merges.length; // up to 270 - 1 - 256
 * ```
 */
export function trainBpe(texts: Iterable<string>, options: TrainBpeOptions): BpeResult {
  const t0 = performance.now();
  const specials = options.specialTokens ?? [];
  const minFrequency = options.minFrequency ?? 0;
  const alphabet = byteLevelAlphabet();
  if (options.vocabSize < specials.length + alphabet.length) {
    throw new Error(
      `Cannot train BPE with vocab_size ${options.vocabSize}: it must be at least ` +
        `${specials.length + alphabet.length} (${specials.length} added tokens + 256 bytes)`,
    );
  }
  const { counts, bytes, words } = countWords(texts, specials);

  // Ids: added tokens, then the byte alphabet sorted by code point, then merges.
  const tokens: string[] = [...specials];
  const tokenId = new Map<string, number>();
  specials.forEach((t, i) => tokenId.set(t, i));
  for (const ch of alphabet) {
    if (!tokenId.has(ch)) {
      tokenId.set(ch, tokens.length);
      tokens.push(ch);
    }
  }
  const byteId = new Int32Array(256);
  for (let b = 0; b < 256; b++) byteId[b] = tokenId.get(BYTE_TO_CHAR[b])!;

  // Words as runs in one symbol array; each word shrinks in place as merges apply.
  const nWords = counts.size;
  const wCount = new Float64Array(nWords);
  const wStart = new Int32Array(nWords);
  const wLen = new Int32Array(nWords);
  let total = 0;
  for (const w of counts.keys()) total += w.length * 4;
  let syms = new Int32Array(total);
  const encoder = new TextEncoder();
  let pos = 0;
  let wi = 0;
  for (const [w, c] of counts) {
    const b = encoder.encode(w);
    wStart[wi] = pos;
    wLen[wi] = b.length;
    wCount[wi] = c;
    for (let k = 0; k < b.length; k++) syms[pos++] = byteId[b[k]];
    wi++;
  }
  syms = syms.subarray(0, pos);

  // Pairs get dense ids; per pair: count, ids, and the words that (may) contain it.
  const pairIndex = new PairMap(1 << 16);
  let cap = 1 << 16;
  let pairA = new Int32Array(cap), pairB = new Int32Array(cap);
  let pairCount = new Float64Array(cap);
  const pairWords: number[][] = [];
  const pairOf = (a: number, b: number): number => {
    let id = pairIndex.get(a, b);
    if (id >= 0) return id;
    id = pairWords.length;
    if (id >= cap) {
      cap *= 2;
      const na = new Int32Array(cap), nb = new Int32Array(cap), nc = new Float64Array(cap);
      na.set(pairA);
      nb.set(pairB);
      nc.set(pairCount);
      pairA = na;
      pairB = nb;
      pairCount = nc;
    }
    pairIndex.set(a, b, id);
    pairA[id] = a;
    pairB[id] = b;
    pairWords.push([]);
    return id;
  };
  for (let w = 0; w < nWords; w++) {
    const s = wStart[w], e = s + wLen[w];
    for (let p = s; p + 1 < e; p++) {
      const id = pairOf(syms[p], syms[p + 1]);
      pairCount[id] += wCount[w];
      const list = pairWords[id];
      if (list.length === 0 || list[list.length - 1] !== w) list.push(w);
    }
  }
  const heap = new MaxHeap();
  for (let id = 0; id < pairWords.length; id++) {
    if (pairCount[id] > 0) heap.push(id, pairCount[id], pairA, pairB);
  }

  const merges: [string, string][] = [];
  const stamp = new Int32Array(nWords).fill(-1);
  const budget = options.vocabSize - tokens.length;
  // Pairs whose count grew in this step: pushed (once) onto the heap after the step.
  const touched: number[] = [];
  let mark = new Uint8Array(1024);
  const touch = (np: number) => {
    if (mark.length <= np) {
      const m2 = new Uint8Array(np * 2 + 1024);
      m2.set(mark);
      mark = m2;
    }
    if (!mark[np]) {
      mark[np] = 1;
      touched.push(np);
    }
  };
  while (tokens.length < options.vocabSize) {
    const top = heap.pop(pairA, pairB);
    if (top === null) break;
    const [pid, cnt] = top;
    if (cnt !== pairCount[pid]) {
      if (pairCount[pid] > 0) heap.push(pid, pairCount[pid], pairA, pairB);
      continue;
    }
    if (cnt < minFrequency || cnt <= 0) break;
    const a = pairA[pid], b = pairB[pid];
    const merged = tokens[a] + tokens[b];
    let c = tokenId.get(merged);
    if (c === undefined) {
      c = tokens.length;
      tokens.push(merged);
      tokenId.set(merged, c);
    }
    merges.push([tokens[a], tokens[b]]);
    const iter = merges.length;
    // Apply the merge in every word that may contain (a, b), exactly like HF's Word::merge:
    // left to right, where the left neighbour is the already-merged symbol.
    for (const w of pairWords[pid]) {
      if (stamp[w] === iter) continue;
      stamp[w] = iter;
      const s = wStart[w];
      const n = wLen[w];
      const count = wCount[w];
      let out = s;
      for (let p = s; p < s + n;) {
        if (p + 1 < s + n && syms[p] === a && syms[p + 1] === b) {
          if (out > s) {
            const prev = syms[out - 1];
            pairCount[pairOf(prev, a)] -= count;
            const np = pairOf(prev, c);
            pairCount[np] += count;
            const list = pairWords[np];
            if (list.length === 0 || list[list.length - 1] !== w) list.push(w);
            touch(np);
          }
          if (p + 2 < s + n) {
            const next = syms[p + 2];
            pairCount[pairOf(b, next)] -= count;
            const np = pairOf(c, next);
            pairCount[np] += count;
            const list = pairWords[np];
            if (list.length === 0 || list[list.length - 1] !== w) list.push(w);
            touch(np);
          }
          syms[out++] = c;
          p += 2;
        } else {
          syms[out++] = syms[p++];
        }
      }
      wLen[w] = out - s;
    }
    pairWords[pid] = []; // the pair is gone everywhere
    pairCount[pid] = 0;
    for (const np of touched) {
      mark[np] = 0;
      if (pairCount[np] > 0) heap.push(np, pairCount[np], pairA, pairB);
    }
    touched.length = 0;
    if (options.onProgress && merges.length % 500 === 0) options.onProgress(merges.length, budget);
  }
  options.onProgress?.(merges.length, budget);
  const vocab: Record<string, number> = {};
  tokens.forEach((t, i) => vocab[t] = i);
  return {
    vocab,
    merges,
    stats: {
      bytes,
      words,
      uniqueWords: nWords,
      seconds: (performance.now() - t0) / 1000,
    },
  };
}

/** Options of {@link trainTokenizer}. */
export interface TrainTokenizerOptions extends TrainBpeOptions {
  /** How many of `specialTokens` (from the start) are special; default: MiniMind's 21. */
  numSpecial?: number;
  /** Chat template for tokenizer_config.json; default minimind-3's. */
  chatTemplate?: string;
  /** `model_max_length` in tokenizer_config.json (default 131072, as minimind-3). */
  modelMaxLength?: number;
}

/**
 * Trains a MiniMind-style tokenizer: byte-level BPE with MiniMind's 36 added tokens in id order
 * (`<|endoftext|>` = pad/unk 0, `<|im_start|>` = bos 1, `<|im_end|>` = eos 2), the same
 * tokenizer.json layout as minimind-3 and a tokenizer_config.json with the chat template.
 *
 * @param texts Training texts.
 * @param options Vocab size and overrides.
 * @returns The tokenizer (call `save(dir)` to write the files).
 * @example
 * ```ts
 * import { trainTokenizer } from "./bpe_trainer.ts";
 * const tok = trainTokenizer(["床前明月光，疑是地上霜。"], { vocabSize: 300 });
 * tok.decode(tok.encode("明月")); // "明月"
 * ```
 */
export function trainTokenizer(texts: Iterable<string>, options: TrainTokenizerOptions): Tokenizer {
  const specials = options.specialTokens ?? MINIMIND_SPECIAL_TOKENS;
  const numSpecial = options.numSpecial ??
    (options.specialTokens ? specials.length : MINIMIND_NUM_SPECIAL);
  const { vocab, merges } = trainBpe(texts, { ...options, specialTokens: specials });
  const added: AddedToken[] = specials.map((content, id) => ({
    id,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: id < numSpecial,
  }));
  const json: TokenizerJson = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: {
      type: "ByteLevel",
      add_prefix_space: false,
      trim_offsets: true,
      use_regex: true,
    },
    post_processor: null,
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges,
    },
  };
  const decoderEntries: Record<string, unknown> = {};
  for (const t of added) {
    decoderEntries[String(t.id)] = {
      content: t.content,
      lstrip: false,
      normalized: false,
      rstrip: false,
      single_word: false,
      special: t.special,
    };
  }
  const at = (i: number) => specials[i] ?? null;
  const config: TokenizerConfig = {
    add_bos_token: false,
    add_eos_token: false,
    add_prefix_space: false,
    added_tokens_decoder: decoderEntries,
    additional_special_tokens: specials.slice(1, numSpecial),
    bos_token: at(1),
    clean_up_tokenization_spaces: false,
    eos_token: at(2),
    legacy: true,
    model_max_length: options.modelMaxLength ?? 131072,
    pad_token: at(0),
    sp_model_kwargs: {},
    spaces_between_special_tokens: false,
    unk_token: at(0),
    chat_template: options.chatTemplate ?? MINIMIND_CHAT_TEMPLATE,
    tokenizer_class: "PreTrainedTokenizerFast",
  };
  return new Tokenizer(json, config);
}

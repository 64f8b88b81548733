// Tokenizer: HF tokenizer.json (+ tokenizer_config.json) for byte-level BPE. The pipeline is HF's:
// added tokens are split out atomically → normalizer → ByteLevel pre-tokenizer (GPT-2 split, bytes
// → byte characters) → BPE per piece → post-processor. Decoding concatenates token bytes and
// decodes UTF-8 lossily (invalid sequences become U+FFFD, like Rust's from_utf8_lossy).

import { dirname, join } from "node:path";
import { BYTE_TO_CHAR, bytesToToken, tokenToBytes } from "./byte_level.ts";
import { BpeModel } from "./bpe.ts";
import { type ChatMessage, type ChatTemplateOptions, renderChatTemplate } from "./chat_template.ts";
import { splitGpt2 } from "./pretokenize.ts";

/** An entry of tokenizer.json's `added_tokens`. */
export interface AddedToken {
  /** Token id. */
  id: number;
  /** The exact text matched atomically. */
  content: string;
  /** Only match when not inside a word. */
  single_word?: boolean;
  /** Swallow whitespace on the left. */
  lstrip?: boolean;
  /** Swallow whitespace on the right. */
  rstrip?: boolean;
  /** Match against normalized text (false: raw text). */
  normalized?: boolean;
  /** Special tokens are dropped by `decode({skipSpecialTokens: true})`. */
  special?: boolean;
}

/** The parts of an HF tokenizer.json this library reads (other fields are kept as is). */
export interface TokenizerJson {
  /** Format version, "1.0". */
  version?: string;
  /** Tokens matched before the model runs. */
  added_tokens?: AddedToken[];
  /** null, or NFC/NFD/NFKC/NFKD/Lowercase/Sequence. */
  normalizer?: Record<string, unknown> | null;
  /** ByteLevel (or a Sequence of one ByteLevel). */
  pre_tokenizer?: Record<string, unknown> | null;
  /** null, ByteLevel, TemplateProcessing or a Sequence of them. */
  post_processor?: Record<string, unknown> | null;
  /** ByteLevel, or null. */
  decoder?: Record<string, unknown> | null;
  /** The BPE model. */
  model: {
    type?: string;
    vocab: Record<string, number>;
    merges: ([string, string] | string)[];
    [field: string]: unknown;
  };
  /** Any other field. */
  [field: string]: unknown;
}

/** tokenizer_config.json as written by transformers (only the fields read here are typed). */
export interface TokenizerConfig {
  /** Jinja chat template. */
  chat_template?: string | { name: string; template: string }[];
  /** Begin-of-sequence token (a string or `{content}`). */
  bos_token?: string | { content: string } | null;
  /** End-of-sequence token. */
  eos_token?: string | { content: string } | null;
  /** Padding token. */
  pad_token?: string | { content: string } | null;
  /** Unknown token. */
  unk_token?: string | { content: string } | null;
  /** Apply transformers' `clean_up_tokenization` after decoding. */
  clean_up_tokenization_spaces?: boolean;
  /** Any other field. */
  [field: string]: unknown;
}

/** Options of {@link Tokenizer.encode}. */
export interface EncodeOptions {
  /** Run the post-processor (adds BOS/EOS where the tokenizer defines it). Default true. */
  addSpecialTokens?: boolean;
}

/** Options of {@link Tokenizer.decode}. */
export interface DecodeOptions {
  /** Drop added tokens marked `special`. Default false. */
  skipSpecialTokens?: boolean;
}

/** Incremental decoder from {@link Tokenizer.decodeStream}. */
export interface DecodeStream {
  /**
   * Adds one token and returns the text that became complete (never half a UTF-8 character).
   * @param id Token id.
   * @returns Newly completed text, possibly "".
   */
  push(id: number): string;
  /**
   * Returns what is left, with an unfinished character decoded as U+FFFD.
   * @returns The remaining text.
   */
  flush(): string;
}

interface AddedMatcher {
  re: RegExp;
  byContent: Map<string, AddedToken>;
}

type Segment = { text: string; id: -1 } | { text: string; id: number };

const RE_WORD_CHAR = /[\p{Alphabetic}\p{N}]/u;

function isRustWhitespace(ch: string): boolean {
  return /^[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]$/.test(ch);
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\/-]/g, "\\$&");
}

function tokenContent(t: string | { content: string } | null | undefined): string | null {
  if (t == null) return null;
  return typeof t === "string" ? t : t.content;
}

/** UTF-8 encodes s[start, end) into buf (grown as needed); lone surrogates become U+FFFD. */
function utf8Into(s: string, start: number, end: number, buf: Uint8Array): [Uint8Array, number] {
  if (buf.length < (end - start) * 3) buf = new Uint8Array((end - start) * 3 + 64);
  let n = 0;
  for (let i = start; i < end; i++) {
    let c = s.charCodeAt(i);
    if (c < 0x80) {
      buf[n++] = c;
    } else if (c < 0x800) {
      buf[n++] = 0xc0 | (c >> 6);
      buf[n++] = 0x80 | (c & 63);
    } else {
      if (c >= 0xd800 && c <= 0xdfff) {
        const d = i + 1 < end ? s.charCodeAt(i + 1) : 0;
        if (c <= 0xdbff && d >= 0xdc00 && d <= 0xdfff) {
          c = (c - 0xd800) * 0x400 + (d - 0xdc00) + 0x10000;
          i++;
          buf[n++] = 0xf0 | (c >> 18);
          buf[n++] = 0x80 | ((c >> 12) & 63);
          buf[n++] = 0x80 | ((c >> 6) & 63);
          buf[n++] = 0x80 | (c & 63);
          continue;
        }
        c = 0xfffd;
      }
      buf[n++] = 0xe0 | (c >> 12);
      buf[n++] = 0x80 | ((c >> 6) & 63);
      buf[n++] = 0x80 | (c & 63);
    }
  }
  return [buf, n];
}

/** transformers' `clean_up_tokenization`. */
function cleanUpTokenization(s: string): string {
  return s.replaceAll(" .", ".").replaceAll(" ?", "?").replaceAll(" !", "!")
    .replaceAll(" ,", ",").replaceAll(" ' ", "'").replaceAll(" n't", "n't")
    .replaceAll(" 'm", "'m").replaceAll(" 's", "'s").replaceAll(" 've", "'ve")
    .replaceAll(" 're", "'re");
}

function buildNormalizer(cfg: Record<string, unknown> | null | undefined): (s: string) => string {
  if (cfg == null) return (s) => s;
  switch (cfg.type) {
    case "NFC":
    case "NFD":
    case "NFKC":
    case "NFKD": {
      const form = cfg.type;
      return (s) => s.normalize(form);
    }
    case "Lowercase":
      return (s) => s.toLowerCase();
    case "Sequence": {
      const parts = (cfg.normalizers as Record<string, unknown>[]).map(buildNormalizer);
      return (s) => parts.reduce((acc, f) => f(acc), s);
    }
    default:
      throw new Error(`Cannot load tokenizer: unsupported normalizer type ${String(cfg.type)}`);
  }
}

interface PreTokenizerSpec {
  useRegex: boolean;
  addPrefixSpace: boolean;
}

function parsePreTokenizer(cfg: Record<string, unknown> | null | undefined): PreTokenizerSpec {
  if (cfg && cfg.type === "Sequence") {
    const list = cfg.pretokenizers as Record<string, unknown>[];
    if (list.length === 1) return parsePreTokenizer(list[0]);
  }
  if (!cfg || cfg.type !== "ByteLevel") {
    throw new Error(
      `Cannot load tokenizer: pre_tokenizer ${
        cfg ? String(cfg.type) : "null"
      } is not supported (byte-level BPE needs a ByteLevel pre_tokenizer)`,
    );
  }
  return { useRegex: cfg.use_regex !== false, addPrefixSpace: cfg.add_prefix_space === true };
}

interface PostProcessor {
  single: ({ special: string } | { sequence: true })[];
  special: Map<string, number[]>;
}

function parsePostProcessor(cfg: Record<string, unknown> | null | undefined): PostProcessor | null {
  if (cfg == null || cfg.type === "ByteLevel") return null; // ByteLevel only trims offsets
  if (cfg.type === "Sequence") {
    const found = (cfg.processors as Record<string, unknown>[]).map(parsePostProcessor)
      .filter((p) => p !== null);
    if (found.length > 1) {
      throw new Error("Cannot load tokenizer: more than one TemplateProcessing in post_processor");
    }
    return found[0] ?? null;
  }
  if (cfg.type !== "TemplateProcessing") {
    throw new Error(`Cannot load tokenizer: unsupported post_processor type ${String(cfg.type)}`);
  }
  const single = (cfg.single as Record<string, { id: string }>[]).map((piece) =>
    "SpecialToken" in piece ? { special: piece.SpecialToken.id } : { sequence: true as const }
  );
  const special = new Map<string, number[]>();
  for (const [k, v] of Object.entries(cfg.special_tokens as Record<string, { ids: number[] }>)) {
    special.set(k, v.ids);
  }
  return { single, special };
}

/**
 * Longest pre-tokenized word, in UTF-16 code units, that goes through BPE whole: longer words (a
 * run of letters with no space or punctuation) are encoded in chunks of this size. HF has no such
 * cap, so ids differ from HF only inside words longer than this; it bounds the work and the
 * cache entry of one word.
 */
export const MAX_PIECE_CHARS = 1024;

/** Pieces encoded between two yields of the encode generator. */
const PIECES_PER_STEP = 64;

/** Size bound of the word cache (its keys, ids and per-entry overhead, estimated). */
const WORD_CACHE_BYTES = 8 << 20;

/** Estimated bytes one cache entry holds: the key's UTF-16, the ids, two objects' overhead. */
function cacheEntryBytes(piece: string, ids: number[]): number {
  return 2 * piece.length + 8 * ids.length + 96;
}

/** End of the chunk that starts at `start`: `MAX_PIECE_CHARS` on, not inside a surrogate pair. */
function pieceEnd(text: string, start: number, end: number): number {
  let e = Math.min(end, start + MAX_PIECE_CHARS);
  if (e < end && e > start + 1) {
    const c = text.charCodeAt(e - 1);
    if (c >= 0xd800 && c <= 0xdbff) e--; // a high surrogate: keep the pair together
  }
  return e;
}

/**
 * A byte-level BPE tokenizer that reads and writes Hugging Face `tokenizer.json` files and gives
 * the same ids as HF tokenizers, plus the chat template from `tokenizer_config.json`.
 *
 * @example
 * ```ts
 * import { Tokenizer } from "./tokenizer.ts";
 * const tok = await Tokenizer.fromFile("tokenizers/minimind-3/tokenizer.json");
 * tok.encode("Hello world"); // [1602, 1707]
 * tok.decode([1602, 1707]); // "Hello world"
 * ```
 */
export class Tokenizer {
  /** The BPE model (vocab and merges). */
  readonly model: BpeModel;
  /** Added tokens, in file order. */
  readonly addedTokens: readonly AddedToken[];
  /** tokenizer_config.json content ({} when absent). */
  readonly config: TokenizerConfig;
  /** Number of ids: one more than the largest id in the vocab or the added tokens. */
  readonly vocabSize: number;
  /** BOS id from the config's `bos_token`, or -1. */
  readonly bosId: number;
  /** EOS id from the config's `eos_token`, or -1. */
  readonly eosId: number;
  /** Padding id from the config's `pad_token`, or -1. */
  readonly padId: number;
  /** Ids of added tokens marked special. */
  readonly specialIds: ReadonlySet<number>;

  readonly #json: TokenizerJson;
  readonly #idToToken: string[];
  readonly #addedById = new Map<number, AddedToken>();
  readonly #rawMatcher: AddedMatcher | null;
  readonly #normMatcher: AddedMatcher | null;
  readonly #normalize: (s: string) => string;
  readonly #hasNormalizer: boolean;
  readonly #pre: PreTokenizerSpec;
  readonly #post: PostProcessor | null;
  readonly #byteDecoder: boolean;
  readonly #ignoreMerges: boolean;
  readonly #idBytes: (Uint8Array | undefined)[] = [];
  readonly #cache = new Map<string, number[]>();
  #cacheBytes = 0;
  #longestToken = -1;
  #buf: Uint8Array = new Uint8Array(1024);

  /** Estimated bytes held by the word cache (bounded; it empties itself past 8 MiB). */
  get wordCacheBytes(): number {
    return this.#cacheBytes;
  }

  /**
   * Builds a tokenizer from parsed JSON. Prefer {@link Tokenizer.fromJSON} / {@link Tokenizer.fromFile}.
   * @param json tokenizer.json content.
   * @param config tokenizer_config.json content.
   */
  constructor(json: TokenizerJson, config: TokenizerConfig = {}) {
    const m = json.model;
    if (!m || (m.type !== undefined && m.type !== "BPE")) {
      throw new Error(`Cannot load tokenizer: model type ${String(m?.type)} is not BPE`);
    }
    if (m.dropout != null && m.dropout !== 0) {
      throw new Error(`Cannot load tokenizer: BPE dropout ${m.dropout} is not supported`);
    }
    if (m.continuing_subword_prefix || m.end_of_word_suffix || m.byte_fallback) {
      throw new Error(
        "Cannot load tokenizer: continuing_subword_prefix, end_of_word_suffix and byte_fallback " +
          "are not supported by this byte-level BPE",
      );
    }
    this.#json = json;
    this.config = config;
    const vocab = new Map<string, number>();
    const entries = Object.entries(m.vocab ?? {});
    // ids index arrays: each must be an integer in [0, number of tokens) so a typo (1e9, -1,
    // "5") cannot make a billion-entry vocab or a hole the model would read past
    const idLimit = entries.length + (json.added_tokens?.length ?? 0);
    const checkId = (id: unknown, what: string): void => {
      if (typeof id !== "number" || !Number.isInteger(id) || id < 0 || id >= idLimit) {
        throw new Error(
          `Cannot load tokenizer: ${what} has id ${JSON.stringify(id)}; ids must be integers in ` +
            `0..${idLimit - 1} (the file lists ${idLimit} tokens)`,
        );
      }
    };
    for (const [tok, id] of entries) {
      checkId(id, `vocab entry ${JSON.stringify(tok)}`);
      vocab.set(tok, id);
    }
    for (const t of json.added_tokens ?? []) {
      checkId(t?.id, `added token ${JSON.stringify(t?.content)}`);
    }
    const unk = typeof m.unk_token === "string" ? vocab.get(m.unk_token) ?? null : null;
    this.#ignoreMerges = m.ignore_merges === true;
    this.model = new BpeModel(vocab, m.merges, {
      unkId: unk,
      ignoreMerges: m.ignore_merges === true,
    });
    this.addedTokens = json.added_tokens ?? [];
    this.#idToToken = [];
    for (const [tok, id] of vocab) this.#idToToken[id] = tok;
    for (const t of this.addedTokens) {
      this.#idToToken[t.id] = t.content;
      this.#addedById.set(t.id, t);
    }
    this.vocabSize = this.#idToToken.length;
    this.specialIds = new Set(this.addedTokens.filter((t) => t.special).map((t) => t.id));
    this.#rawMatcher = this.#matcher(this.addedTokens.filter((t) => !t.normalized));
    this.#normMatcher = this.#matcher(this.addedTokens.filter((t) => t.normalized));
    this.#hasNormalizer = json.normalizer != null;
    this.#normalize = buildNormalizer(json.normalizer);
    this.#pre = parsePreTokenizer(json.pre_tokenizer);
    this.#post = parsePostProcessor(json.post_processor);
    const dec = json.decoder;
    this.#byteDecoder = dec != null &&
      (dec.type === "ByteLevel" ||
        (dec.type === "Sequence" &&
          (dec.decoders as Record<string, unknown>[]).some((d) => d.type === "ByteLevel")));
    if (dec != null && !this.#byteDecoder) {
      throw new Error(`Cannot load tokenizer: unsupported decoder type ${String(dec.type)}`);
    }
    const idOf = (t: TokenizerConfig["bos_token"]) => {
      const c = tokenContent(t);
      return c === null ? -1 : this.tokenToId(c) ?? -1;
    };
    this.bosId = idOf(config.bos_token);
    this.eosId = idOf(config.eos_token);
    this.padId = idOf(config.pad_token);
  }

  /**
   * Builds a tokenizer from parsed tokenizer.json (and optionally tokenizer_config.json) objects.
   *
   * @param json tokenizer.json content (an object or its JSON text).
   * @param config tokenizer_config.json content (object or text), for special tokens and the chat
   * template.
   * @returns The tokenizer.
   * @example
   * ```ts
   * import { Tokenizer } from "./tokenizer.ts";
   * const dir = "tokenizers/minimind-3/";
   * const tok = Tokenizer.fromJSON(
   *   await Deno.readTextFile(dir + "tokenizer.json"),
   *   await Deno.readTextFile(dir + "tokenizer_config.json"),
   * );
   * tok.eosId; // 2
   * ```
   */
  static fromJSON(
    json: TokenizerJson | string,
    config?: TokenizerConfig | string,
  ): Tokenizer {
    const j = typeof json === "string" ? JSON.parse(json) as TokenizerJson : json;
    const c = typeof config === "string" ? JSON.parse(config) as TokenizerConfig : config;
    return new Tokenizer(j, c ?? {});
  }

  /**
   * Loads `tokenizer.json`, plus `tokenizer_config.json` and `chat_template.jinja` beside it when
   * present (the .jinja file overrides the config's template, as in transformers). A directory
   * path means `dir/tokenizer.json`.
   *
   * @param path Path of tokenizer.json or of the folder holding it.
   * @returns The tokenizer.
   * @example
   * ```ts
   * import { Tokenizer } from "./tokenizer.ts";
   * const tok = await Tokenizer.fromFile("tokenizers/minimind-3");
   * tok.vocabSize; // 6400
   * ```
   */
  static async fromFile(path: string): Promise<Tokenizer> {
    let file = path;
    try {
      if ((await Deno.stat(path)).isDirectory) file = join(path, "tokenizer.json");
    } catch (e) {
      throw new Error(`Cannot load tokenizer from ${path}: ${(e as Error).message}`);
    }
    let json: TokenizerJson;
    try {
      json = JSON.parse(await Deno.readTextFile(file));
    } catch (e) {
      throw new Error(`Cannot load tokenizer from ${file}: ${(e as Error).message}`);
    }
    const dir = dirname(file);
    let config: TokenizerConfig = {};
    const cfgPath = join(dir, "tokenizer_config.json");
    try {
      config = JSON.parse(await Deno.readTextFile(cfgPath));
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) {
        throw new Error(`Cannot load tokenizer config ${cfgPath}: ${(e as Error).message}`);
      }
    }
    try {
      config.chat_template = await Deno.readTextFile(join(dir, "chat_template.jinja"));
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    return new Tokenizer(json, config);
  }

  #matcher(tokens: AddedToken[]): AddedMatcher | null {
    if (tokens.length === 0) return null;
    const byContent = new Map<string, AddedToken>();
    for (const t of tokens) if (t.content.length > 0) byContent.set(t.content, t);
    if (byContent.size === 0) return null;
    // Longest first: at one start position the alternation then picks the longest token, which is
    // HF's leftmost-longest Aho-Corasick match.
    const contents = [...byContent.keys()].sort((a, b) => b.length - a.length);
    return { re: new RegExp(contents.map(escapeRegExp).join("|"), "gu"), byContent };
  }

  /** HF `AddedVocabulary::find_matches`: split `text` into added tokens and plain segments. */
  #splitAdded(text: string, matcher: AddedMatcher | null, out: Segment[]): void {
    if (matcher === null || text.length === 0) {
      if (text.length > 0) out.push({ text, id: -1 });
      return;
    }
    let offset = 0;
    matcher.re.lastIndex = 0;
    for (const m of text.matchAll(matcher.re)) {
      const tok = matcher.byContent.get(m[0])!;
      let start = m.index!;
      let stop = start + m[0].length;
      if (start < offset) continue; // inside whitespace an rstrip token swallowed
      if (tok.single_word) {
        const before = start === 0 || !RE_WORD_CHAR.test(lastChar(text, start));
        const after = stop === text.length || !RE_WORD_CHAR.test(firstChar(text, stop));
        if (!before || !after) continue;
      }
      if (tok.lstrip) {
        let s = start;
        while (s > offset && isRustWhitespace(text[s - 1])) s--;
        start = s;
      }
      if (tok.rstrip) {
        while (stop < text.length && isRustWhitespace(text[stop])) stop++;
      }
      if (start > offset) out.push({ text: text.slice(offset, start), id: -1 });
      out.push({ text: text.slice(start, stop), id: tok.id });
      offset = stop;
    }
    if (offset < text.length) out.push({ text: text.slice(offset), id: -1 });
  }

  /**
   * Encodes text to token ids.
   *
   * @param text Any string; added tokens inside it (e.g. `<|im_start|>`) become their single ids.
   * @param options `addSpecialTokens` runs the post-processor (a no-op for MiniMind's tokenizers).
   * @returns Token ids.
   * @example
   * ```ts
   * import { Tokenizer } from "./tokenizer.ts";
   * const tok = await Tokenizer.fromFile("tokenizers/minimind-3/tokenizer.json");
   * tok.encode("<|im_start|>assistant\n"); // [1, 1388, 570, 811, 234]
   * ```
   */
  encode(text: string, options: EncodeOptions = {}): number[] {
    const steps = this.#encodeSteps(text, options);
    for (;;) {
      const r = steps.next();
      if (r.done) return r.value;
    }
  }

  /**
   * {@link Tokenizer.encode} in slices: it hands the event loop back whenever a slice has run for
   * `sliceMs`, so that encoding a long text (a server's 1 MB request) does not stall other work.
   * Same ids as `encode`, unless `stopAfter` ends it early.
   *
   * @param text Any string.
   * @param options As for `encode`, plus `sliceMs` (longest stretch of work between two yields,
   * default 10 ms) and `stopAfter` (stop once this many ids are out, e.g. a context length: the
   * result then has at least that many ids, the first of the full encoding).
   * @returns Token ids.
   * @example
   * ```ts
   * import { Tokenizer } from "./tokenizer.ts";
   * const tok = await Tokenizer.fromFile("tokenizers/minimind-3/tokenizer.json");
   * await tok.encodeAsync("Hello world"); // [1602, 1707]
   * ```
   */
  async encodeAsync(
    text: string,
    options: EncodeOptions & { sliceMs?: number; stopAfter?: number } = {},
  ): Promise<number[]> {
    const ids: number[] = [];
    const steps = this.#encodeSteps(text, options, ids);
    const sliceMs = options.sliceMs ?? 10, stopAfter = options.stopAfter ?? Infinity;
    let since = performance.now();
    for (;;) {
      const r = steps.next();
      if (r.done) return r.value;
      if (ids.length >= stopAfter) return ids;
      if (performance.now() - since >= sliceMs) {
        await new Promise((resolve) => setTimeout(resolve, 0));
        since = performance.now();
      }
    }
  }

  /** The encode pipeline as a generator that yields between runs of pieces. */
  *#encodeSteps(
    text: string,
    options: EncodeOptions,
    ids: number[] = [],
  ): Generator<void, number[]> {
    const raw: Segment[] = [];
    this.#splitAdded(text, this.#rawMatcher, raw);
    for (const seg of raw) {
      if (seg.id >= 0) {
        ids.push(seg.id);
        continue;
      }
      const normalized = this.#hasNormalizer ? this.#normalize(seg.text) : seg.text;
      if (this.#normMatcher === null) {
        yield* this.#encodeOrdinary(normalized, ids);
        continue;
      }
      const parts: Segment[] = [];
      this.#splitAdded(normalized, this.#normMatcher, parts);
      for (const p of parts) {
        if (p.id >= 0) ids.push(p.id);
        else yield* this.#encodeOrdinary(p.text, ids);
      }
    }
    if ((options.addSpecialTokens ?? true) && this.#post) {
      const out: number[] = [];
      for (const piece of this.#post.single) {
        if ("special" in piece) out.push(...this.#post.special.get(piece.special) ?? []);
        else out.push(...ids);
      }
      return out;
    }
    return ids;
  }

  /**
   * Pre-tokenize + BPE for text containing no added tokens; yields after every
   * {@link PIECES_PER_STEP} pieces. Short texts take the direct path.
   */
  *#encodeOrdinary(text: string, out: number[]): Generator<void> {
    if (this.#pre.addPrefixSpace && !text.startsWith(" ")) text = " " + text;
    if (!this.#pre.useRegex) {
      for (let s = 0; s < text.length;) {
        const e = pieceEnd(text, s, text.length);
        this.#encodePiece(text, s, e, out);
        s = e;
        yield;
      }
      return;
    }
    if (text.length <= PIECES_PER_STEP) {
      splitGpt2(text, (s, e) => this.#encodePieces(text, s, e, out));
      return;
    }
    const bounds: number[] = [];
    splitGpt2(text, (s, e) => bounds.push(s, e));
    let count = 0;
    for (let i = 0; i < bounds.length; i += 2) {
      for (let s = bounds[i], end = bounds[i + 1]; s < end;) {
        const e = pieceEnd(text, s, end);
        this.#encodePiece(text, s, e, out);
        s = e;
        if (++count % PIECES_PER_STEP === 0) yield;
      }
    }
  }

  /** BPE of one pre-tokenized word, in chunks of at most {@link MAX_PIECE_CHARS}. */
  #encodePieces(text: string, start: number, end: number, out: number[]): void {
    for (let s = start; s < end;) {
      const e = pieceEnd(text, s, end);
      this.#encodePiece(text, s, e, out);
      s = e;
    }
  }

  #encodePiece(text: string, start: number, end: number, out: number[]): void {
    const piece = text.slice(start, end);
    const hit = this.#cache.get(piece);
    if (hit !== undefined) {
      for (let i = 0; i < hit.length; i++) out.push(hit[i]);
      return;
    }
    const [buf, n] = utf8Into(text, start, end, this.#buf);
    this.#buf = buf;
    const ids: number[] = [];
    const word = this.#ignoreMerges ? bytesToToken(buf.subarray(0, n)) : undefined;
    this.model.encodeBytes(buf, n, ids, word);
    const bytes = cacheEntryBytes(piece, ids);
    if (this.#cacheBytes + bytes > WORD_CACHE_BYTES) {
      this.#cache.clear();
      this.#cacheBytes = 0;
    }
    this.#cache.set(piece, ids);
    this.#cacheBytes += bytes;
    for (let i = 0; i < ids.length; i++) out.push(ids[i]);
  }

  /** Bytes a token decodes to (ByteLevel: byte characters; otherwise the token's UTF-8). */
  #bytesOf(id: number): Uint8Array | undefined {
    let b = this.#idBytes[id];
    if (b === undefined) {
      const tok = this.#idToToken[id];
      if (tok === undefined) return undefined;
      b = (this.#byteDecoder ? tokenToBytes(tok) : null) ?? new TextEncoder().encode(tok);
      this.#idBytes[id] = b;
    }
    return b;
  }

  /**
   * Decodes ids to text. Ids outside the vocab are skipped (as HF does).
   *
   * @param ids Token ids.
   * @param options `skipSpecialTokens` drops added tokens marked special.
   * @returns The text; invalid UTF-8 becomes U+FFFD.
   * @example
   * ```ts
   * import { Tokenizer } from "./tokenizer.ts";
   * const tok = await Tokenizer.fromFile("tokenizers/minimind-3/tokenizer.json");
   * tok.decode([1, 1388, 570, 811, 234], { skipSpecialTokens: true }); // "assistant\n"
   * ```
   */
  decode(ids: ArrayLike<number>, options: DecodeOptions = {}): string {
    const skip = options.skipSpecialTokens ?? false;
    let text: string;
    if (this.#byteDecoder) {
      const parts: Uint8Array[] = [];
      let total = 0;
      for (let i = 0; i < ids.length; i++) {
        const id = ids[i];
        if (skip && this.specialIds.has(id)) continue;
        const b = this.#bytesOf(id);
        if (b === undefined) continue;
        parts.push(b);
        total += b.length;
      }
      const all = new Uint8Array(total);
      let o = 0;
      for (const p of parts) {
        all.set(p, o);
        o += p.length;
      }
      text = new TextDecoder().decode(all);
    } else {
      const toks: string[] = [];
      for (let i = 0; i < ids.length; i++) {
        if (skip && this.specialIds.has(ids[i])) continue;
        const t = this.#idToToken[ids[i]];
        if (t !== undefined) toks.push(t);
      }
      text = toks.join(" ");
    }
    return this.config.clean_up_tokenization_spaces ? cleanUpTokenization(text) : text;
  }

  /**
   * Starts an incremental decoder for generation: `push(id)` returns only complete characters, so
   * a character split across tokens is emitted once its last byte arrives. The concatenation of
   * all pushes and the final `flush()` equals `decode(ids)`.
   *
   * @param options `skipSpecialTokens` drops added tokens marked special.
   * @returns A stream with `push(id)` and `flush()`.
   * @example
   * ```ts
   * import { Tokenizer } from "./tokenizer.ts";
   * const tok = await Tokenizer.fromFile("tokenizers/minimind-3/tokenizer.json");
   * const stream = tok.decodeStream();
   * let text = "";
   * for (const id of tok.encode("emoji 😀 test")) text += stream.push(id);
   * text += stream.flush(); // text === "emoji 😀 test"
   * ```
   */
  decodeStream(options: DecodeOptions = {}): DecodeStream {
    const skip = options.skipSpecialTokens ?? false;
    const decoder = new TextDecoder();
    let pending = new Uint8Array(0);
    const clean = this.config.clean_up_tokenization_spaces === true;
    if (!this.#byteDecoder) {
      let first = true;
      return {
        push: (id: number) => {
          if (skip && this.specialIds.has(id)) return "";
          const t = this.#idToToken[id];
          if (t === undefined) return "";
          const s = first ? t : " " + t;
          first = false;
          return clean ? cleanUpTokenization(s) : s;
        },
        flush: () => "",
      };
    }
    return {
      push: (id: number) => {
        if (skip && this.specialIds.has(id)) return "";
        const b = this.#bytesOf(id);
        if (b === undefined || b.length === 0) return "";
        const all = new Uint8Array(pending.length + b.length);
        all.set(pending);
        all.set(b, pending.length);
        const cut = completeUtf8Prefix(all);
        pending = all.slice(cut);
        return cut === 0 ? "" : decoder.decode(all.subarray(0, cut));
      },
      flush: () => {
        const s = pending.length ? decoder.decode(pending) : "";
        pending = new Uint8Array(0);
        return s;
      },
    };
  }

  /**
   * Renders the tokenizer's chat template (from tokenizer_config.json) for `messages`.
   *
   * @param messages The conversation.
   * @param options Template variables: `addGenerationPrompt`, `tools`, `openThinking`,
   * `enableThinking`, or any other (camelCase is renamed to snake_case).
   * @returns The prompt text (tokenize it with {@link Tokenizer.encode}).
   * @example
   * ```ts
   * import { Tokenizer } from "./tokenizer.ts";
   * const tok = await Tokenizer.fromFile("tokenizers/minimind-3/tokenizer.json");
   * tok.applyChatTemplate([{ role: "user", content: "你好" }], { addGenerationPrompt: true });
   * // "<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
   * ```
   */
  applyChatTemplate(messages: ChatMessage[], options: ChatTemplateOptions = {}): string {
    let tpl = this.config.chat_template;
    if (Array.isArray(tpl)) tpl = tpl.find((t) => t.name === "default")?.template;
    if (typeof tpl !== "string") {
      throw new Error("Cannot apply chat template: the tokenizer config has no chat_template");
    }
    const specials: Record<string, unknown> = {};
    for (const k of ["bos_token", "eos_token", "pad_token", "unk_token"] as const) {
      const c = tokenContent(this.config[k]);
      if (c !== null) specials[k] = c;
    }
    return renderChatTemplate(tpl, messages, options, specials);
  }

  /**
   * A lower bound on the number of ids `encode(text)` returns, found in one pass over the text
   * without encoding it: no token covers more UTF-8 bytes than the longest one. 0 when no bound
   * holds (a normalizer may shorten the text; bytes missing from the vocab are dropped).
   *
   * @param text Any string.
   * @returns A number ≤ `encode(text).length`.
   * @example
   * ```ts
   * import { Tokenizer } from "./tokenizer.ts";
   * const tok = await Tokenizer.fromFile("tokenizers/minimind-3/tokenizer.json");
   * tok.minTokens("x".repeat(1_000_000)) > 4096; // true: too long for a 4096-token context
   * ```
   */
  minTokens(text: string): number {
    if (this.#longestToken < 0) this.#longestToken = this.#longestTokenBytes();
    if (this.#longestToken === 0 || text.length === 0) return 0;
    let bytes = 0;
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      // a surrogate counts 2 (a pair is 4 bytes; a lone one becomes U+FFFD, 3)
      bytes += c < 0x80 ? 1 : c < 0x800 || (c >= 0xd800 && c <= 0xdfff) ? 2 : 3;
    }
    return Math.ceil(bytes / this.#longestToken);
  }

  /** Bytes of the longest token, or 0 when {@link Tokenizer.minTokens} has no bound. */
  #longestTokenBytes(): number {
    if (this.#hasNormalizer || !this.#byteDecoder) return 0;
    for (const ch of BYTE_TO_CHAR) if (!this.model.vocab.has(ch)) return 0;
    let longest = 1;
    for (const tok of this.model.vocab.keys()) {
      longest = Math.max(longest, tokenToBytes(tok)?.length ?? 0);
    }
    // an added token matches its content's UTF-8 in the text
    const utf8 = new TextEncoder();
    for (const t of this.addedTokens) longest = Math.max(longest, utf8.encode(t.content).length);
    return longest;
  }

  /**
   * Looks up the id of a token.
   * @param token A vocab entry or added token, e.g. `"<|im_end|>"`.
   * @returns Its id, or `undefined`.
   * @example
   * ```ts
   * import { Tokenizer } from "./tokenizer.ts";
   * const tok = await Tokenizer.fromFile("tokenizers/minimind-3/tokenizer.json");
   * tok.tokenToId("<|im_end|>"); // 2
   * ```
   */
  tokenToId(token: string): number | undefined {
    for (const t of this.addedTokens) if (t.content === token) return t.id;
    return this.model.vocab.get(token);
  }

  /**
   * Looks up the token string of an id.
   * @param id A token id.
   * @returns The token string (byte-level characters for BPE tokens), or `undefined`.
   * @example
   * ```ts
   * import { Tokenizer } from "./tokenizer.ts";
   * const tok = await Tokenizer.fromFile("tokenizers/minimind-3/tokenizer.json");
   * tok.idToToken(234); // "Ċ" (the byte-level character for "\n")
   * ```
   */
  idToToken(id: number): string | undefined {
    return this.#idToToken[id];
  }

  /**
   * The bytes an id decodes to on its own (what OpenAI's `logprobs` report as `bytes`): a
   * byte-level BPE token may hold part of a UTF-8 character.
   * @param id A token id.
   * @returns A copy of the bytes, or `undefined` for an id outside the vocab.
   * @example
   * ```ts
   * import { Tokenizer } from "./tokenizer.ts";
   * const tok = await Tokenizer.fromFile("tokenizers/minimind-3/tokenizer.json");
   * tok.tokenBytes(234); // Uint8Array [10] ("\n")
   * ```
   */
  tokenBytes(id: number): Uint8Array | undefined {
    return this.#bytesOf(id)?.slice();
  }

  /**
   * The tokenizer.json content this tokenizer was built from (a deep copy).
   *
   * @returns An HF tokenizer.json object.
   * @example
   * ```ts
   * import { Tokenizer } from "./tokenizer.ts";
   * const tok = await Tokenizer.fromFile("tokenizers/minimind-3/tokenizer.json");
   * Tokenizer.fromJSON(tok.toJSON(), tok.config).encode("hi"); // same ids as tok.encode("hi")
   * ```
   */
  toJSON(): TokenizerJson {
    return structuredClone(this.#json);
  }

  /**
   * Writes `tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json` and (when there
   * is a template) `chat_template.jinja` into `dir`, creating it if needed. The vocab is written
   * in id order, like HF does.
   *
   * @param dir Output folder.
   * @example
   * ```ts
   * import { Tokenizer } from "./tokenizer.ts";
   * const tok = await Tokenizer.fromFile("tokenizers/minimind-3/tokenizer.json");
   * const dir = await Deno.makeTempDir();
   * await tok.save(dir);
   * (await Tokenizer.fromFile(dir)).encode("hi"); // same ids as tok.encode("hi")
   * ```
   */
  async save(dir: string): Promise<void> {
    await Deno.mkdir(dir, { recursive: true });
    await Deno.writeTextFile(join(dir, "tokenizer.json"), stringifyTokenizerJson(this.#json));
    await Deno.writeTextFile(
      join(dir, "tokenizer_config.json"),
      JSON.stringify(this.config, null, 2) + "\n",
    );
    const map: Record<string, unknown> = {};
    for (const k of ["bos_token", "eos_token", "pad_token", "unk_token"] as const) {
      if (this.config[k] != null) map[k] = this.config[k];
    }
    if (Array.isArray(this.config.additional_special_tokens)) {
      map.additional_special_tokens = this.config.additional_special_tokens;
    }
    await Deno.writeTextFile(
      join(dir, "special_tokens_map.json"),
      JSON.stringify(map, null, 2) + "\n",
    );
    if (typeof this.config.chat_template === "string") {
      await Deno.writeTextFile(join(dir, "chat_template.jinja"), this.config.chat_template);
    }
  }
}

function lastChar(s: string, end: number): string {
  const c = s.charCodeAt(end - 1);
  return c >= 0xdc00 && c <= 0xdfff && end >= 2 ? s.slice(end - 2, end) : s[end - 1];
}

function firstChar(s: string, start: number): string {
  return String.fromCodePoint(s.codePointAt(start)!);
}

/**
 * Length of the longest prefix of `b` after which the rest is an unfinished (but so far valid)
 * UTF-8 sequence. Cutting there never changes how the whole is decoded, because a WHATWG UTF-8
 * decoder is in its initial state right before a lead byte.
 */
/**
 * Bytes of the UTF-8 sequence that lead byte `c` starts: 2, 3 or 4; 0 for ASCII, a continuation
 * byte or a byte that never leads a well-formed sequence (0xc0, 0xc1, 0xf5–0xff).
 *
 * @param c a byte
 * @returns the sequence length, or 0
 */
export function utf8Length(c: number): number {
  return c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
}

function completeUtf8Prefix(b: Uint8Array): number {
  const n = b.length;
  for (let back = 1; back <= 3 && back <= n; back++) {
    const i = n - back;
    const c = b[i];
    if (c >= 0x80 && c <= 0xbf) continue; // continuation byte: look further back
    const need = utf8Length(c);
    if (need === 0 || back >= need) return n; // ASCII/invalid lead, or the sequence is complete
    if (back >= 2) {
      // The second byte's allowed range depends on the lead (no overlongs, no surrogates, ≤ U+10FFFF).
      const s = b[i + 1];
      const lo = c === 0xe0 ? 0xa0 : c === 0xf0 ? 0x90 : 0x80;
      const hi = c === 0xed ? 0x9f : c === 0xf4 ? 0x8f : 0xbf;
      if (s < lo || s > hi) return n;
    }
    return i;
  }
  return n;
}

/** JSON text of a tokenizer.json with `model.vocab` written in id order (2-space indent). */
export function stringifyTokenizerJson(json: TokenizerJson): string {
  const VOCAB_MARK = "\u0000__VOCAB__\u0000";
  const copy = { ...json, model: { ...json.model, vocab: VOCAB_MARK } };
  const text = JSON.stringify(copy, null, 2);
  const entries = Object.entries(json.model.vocab).sort((a, b) => a[1] - b[1]);
  const body = entries.map(([k, v]) => `      ${JSON.stringify(k)}: ${v}`).join(",\n");
  return text.replace(JSON.stringify(VOCAB_MARK), `{\n${body}\n    }`) + "\n";
}

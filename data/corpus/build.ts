// The embedded default corpus: classical Chinese poetry from the npm package `chinese-poetry`
// turned into MiniMind's five JSONL formats (pretrain text, SFT conversations, DPO pairs, RL
// prompts with a checkable form) plus a held-out split. Deterministic for given options, built
// once into `<dir>/<version>-<options hash>/` and reused from there.

import { createHash } from "node:crypto";
import { join } from "node:path";
import { mixSeed, Rng } from "../random.ts";
import { loadPoems, type Poem, type PoemForm, poemForm } from "./poetry.ts";

/** Bumped whenever the corpus content would change for the same options. */
export const CORPUS_VERSION = "poetry-v1";

/** Options of {@link buildCorpus}; the defaults are the `deno task demo` corpus. */
export interface CorpusOptions {
  /** Cache folder (default `.cache/corpus`). */
  dir?: string;
  /** Pretrain text budget in UTF-8 bytes (default 4,000,000). */
  pretrainBytes?: number;
  /** SFT conversations (default 30,000). */
  sftSamples?: number;
  /** DPO pairs (default 5,000). */
  dpoPairs?: number;
  /** RL prompts (default 2,000). */
  rlPrompts?: number;
  /** Share of poems held out from every training file (default 0.02). */
  heldoutFraction?: number;
  /** Seed of every random choice (default 42). */
  seed?: number;
  /** Use this `chinese-poetry/dist` folder instead of the installed npm package. */
  sourceDir?: string;
  /** Rebuild even when a cached build exists. */
  force?: boolean;
  /** Progress messages (default: none). */
  log?: (message: string) => void;
}

/** What a build produced. */
export interface CorpusManifest {
  /** {@link CORPUS_VERSION}. */
  version: string;
  /** The effective options. */
  options: Required<Omit<CorpusOptions, "dir" | "sourceDir" | "force" | "log">>;
  /** Source package. */
  source: string;
  /** Poems read and kept after cleaning. */
  poems: { read: number; kept: number; heldout: number };
  /** Records and bytes per file. */
  files: Record<string, { records: number; bytes: number }>;
  /** Build time in seconds. */
  seconds: number;
}

/** Paths of the built JSONL files (MiniMind formats) and the manifest. */
export interface CorpusFiles {
  /** The build folder. */
  dir: string;
  /** `{"text": …}` per poem. */
  pretrain: string;
  /** `{"conversations": [{role, content}, …]}`. */
  sft: string;
  /** `{"chosen": [...], "rejected": [...]}`. */
  dpo: string;
  /** `{"conversations": [user, assistant "无"], "form": {name, lines, chars_per_line}}`. */
  rl: string;
  /** Held-out poems as pretrain text. */
  heldoutPretrain: string;
  /** Held-out poems as SFT conversations. */
  heldoutSft: string;
  /** Build facts (counts, sizes, options). */
  manifest: CorpusManifest;
  /** True when an existing build was reused. */
  cached: boolean;
}

type Message = { role: string; content: string };

interface Item {
  poem: Poem;
  body: string;
  form: PoemForm | null;
  /** Title is unique among kept poems (so "《title》的作者是谁？" has one answer). */
  uniqueTitle: boolean;
}

function pretrainText(p: Poem): string {
  return `《${p.title}》 ${p.author}\n${p.paragraphs.join("\n")}`;
}

/** The poem-writing prompts (`{form}`, `{title}`) of the SFT, DPO and RL files. */
export const COMPOSE: readonly string[] = [
  "写一首{form}，题为《{title}》。",
  "请以《{title}》为题，写一首{form}。",
  "作一首{form}，题目是《{title}》。",
  "以《{title}》为题作一首{form}。",
];
const AUTHOR = ["《{title}》的作者是谁？", "《{title}》是谁写的？", "谁写了《{title}》？"];
const QUOTE = ["「{quote}」出自哪首诗？", "「{quote}」这句诗出自哪里？", "「{quote}」是谁的诗句？"];
const TITLE = [
  "下面这首诗的题目是什么？\n{body}",
  "这首诗叫什么名字？\n{body}",
  "给这首诗起个题目：\n{body}",
];
const NEXT = ["「{line}」的下一句是什么？", "请接下句：{line}", "{line}，下一句是？"];
const FORM = ["下面这首诗是什么体裁？\n{body}", "这首诗是绝句还是律诗？\n{body}"];
const RECITE = ["请背诵{author}的一首{form}。", "背一首{author}写的{form}。"];

/**
 * Fills `{name}` slots of a prompt template.
 *
 * @param template e.g. "写一首{form}，题为《{title}》。"
 * @param vars slot values
 * @returns the filled text
 */
export function fill(template: string, vars: Record<string, string>): string {
  return template.replace(/\{(\w+)\}/g, (_, k: string) => vars[k] ?? "");
}

/** One SFT conversation about `it`, choosing a task by weight. */
function sftConversation(it: Item, rng: Rng): Message[] {
  const p = it.poem;
  const v: Record<string, string> = {
    title: p.title,
    author: p.author,
    body: it.body,
    form: it.form?.name ?? "诗",
  };
  const lines = it.body.split("\n");
  const r = rng.float();
  const turn = (q: string, a: string): Message[] => [
    { role: "user", content: q },
    { role: "assistant", content: a },
  ];
  if (it.form && r < 0.35) {
    const conv = turn(fill(rng.pick(COMPOSE), v), it.body);
    if (rng.float() < 0.15) {
      conv.push(...turn("这首诗的作者是谁？", `这首诗是${p.author}的《${p.title}》。`));
    }
    return conv;
  }
  if (r < 0.5) {
    if (it.uniqueTitle) {
      return turn(fill(rng.pick(AUTHOR), v), `《${p.title}》的作者是${p.author}。`);
    }
    return turn(
      fill(rng.pick(QUOTE), { quote: lines[0].replace(/[。？！；]$/u, "") }),
      `出自${p.author}的《${p.title}》。`,
    );
  }
  if (r < 0.62) {
    return turn(fill(rng.pick(TITLE), v), `这首诗的题目是《${p.title}》，作者是${p.author}。`);
  }
  if (r < 0.8 || !it.form) {
    const couplet = rng.pick(lines);
    const halves = couplet.split(/[，]/u);
    if (halves.length === 2 && halves[1].length > 1) {
      const second = halves[1].replace(/[。？！；]$/u, "");
      return turn(
        fill(rng.pick(NEXT), { line: halves[0] }),
        `「${halves[0]}」的下一句是「${second}」。`,
      );
    }
    return turn(fill(rng.pick(TITLE), v), `这首诗的题目是《${p.title}》，作者是${p.author}。`);
  }
  if (r < 0.9) {
    const f = it.form;
    return turn(
      fill(rng.pick(FORM), v),
      `这是一首${f.name}，共${f.lines}句，每句${f.charsPerLine}个字。`,
    );
  }
  return turn(fill(rng.pick(RECITE), v), `《${p.title}》\n${it.body}`);
}

/**
 * A wrong version of a poem (the DPO file's rejected answers): bad line lengths, bad line count,
 * scrambled or repetitive.
 *
 * @param it the poem (its `body`, lines joined by newlines)
 * @param rng random source
 * @returns the corrupted body
 */
export function corrupt(it: { body: string }, rng: Rng): string {
  const lines = it.body.split("\n");
  const chars = [...it.body.replace(/[，。？！；、：\n]/gu, "")];
  const kind = rng.int(4);
  if (kind === 0) { // every line one character short or long
    const grow = rng.float() < 0.5;
    return lines.map((l) =>
      l.replace(
        /[\p{Script=Han}]+/gu,
        (seg) => grow ? seg + rng.pick(chars) : [...seg].slice(0, -1).join(""),
      )
    ).join("\n");
  }
  if (kind === 1) { // wrong number of couplets
    return lines.length > 1 && rng.float() < 0.5
      ? lines.slice(0, -1).join("\n")
      : [...lines, lines[0]].join("\n");
  }
  if (kind === 2) { // scrambled characters, punctuation kept in place
    const pool = rng.shuffle([...chars]);
    let k = 0;
    return [...it.body].map((c) => /[\p{Script=Han}]/u.test(c) ? pool[k++] : c).join("");
  }
  return lines.map(() => lines[0]).join("\n"); // a parrot: the first couplet over and over
}

function rlRecord(it: Item, rng: Rng): Record<string, unknown> {
  const f = it.form!;
  return {
    conversations: [
      { role: "user", content: fill(rng.pick(COMPOSE), { title: it.poem.title, form: f.name }) },
      { role: "assistant", content: "无" },
    ],
    form: { name: f.name, lines: f.lines, chars_per_line: f.charsPerLine },
  };
}

function isHeldout(p: Poem, seed: number, fraction: number): boolean {
  return mixSeed(seed, "heldout", p.title, p.author, p.paragraphs.join("")) / 4294967296 <
    fraction;
}

/** The corpus's sizes and seed when `buildCorpus` is not told otherwise. */
export const CORPUS_DEFAULTS: Readonly<CorpusManifest["options"]> = Object.freeze({
  pretrainBytes: 4_000_000,
  sftSamples: 30_000,
  dpoPairs: 5_000,
  rlPrompts: 2_000,
  heldoutFraction: 0.02,
  seed: 42,
});

/** Where `buildCorpus` writes when not told otherwise. */
export const CORPUS_DIR = ".cache/corpus";

function optionsOf(o: CorpusOptions): CorpusManifest["options"] {
  const d = CORPUS_DEFAULTS;
  return {
    pretrainBytes: o.pretrainBytes ?? d.pretrainBytes,
    sftSamples: o.sftSamples ?? d.sftSamples,
    dpoPairs: o.dpoPairs ?? d.dpoPairs,
    rlPrompts: o.rlPrompts ?? d.rlPrompts,
    heldoutFraction: o.heldoutFraction ?? d.heldoutFraction,
    seed: o.seed ?? d.seed,
  };
}

const FILES = {
  pretrain: "pretrain.jsonl",
  sft: "sft.jsonl",
  dpo: "dpo.jsonl",
  rl: "rl.jsonl",
  heldoutPretrain: "heldout_pretrain.jsonl",
  heldoutSft: "heldout_sft.jsonl",
} as const;

function filesIn(dir: string, manifest: CorpusManifest, cached: boolean): CorpusFiles {
  return {
    dir,
    pretrain: join(dir, FILES.pretrain),
    sft: join(dir, FILES.sft),
    dpo: join(dir, FILES.dpo),
    rl: join(dir, FILES.rl),
    heldoutPretrain: join(dir, FILES.heldoutPretrain),
    heldoutSft: join(dir, FILES.heldoutSft),
    manifest,
    cached,
  };
}

/**
 * Builds (or reuses) the poetry corpus and returns the paths of its JSONL files. The first call
 * reads the `chinese-poetry` npm package (installed by Deno on first use); later calls with the
 * same options return the cached build at once.
 *
 * @param options Sizes, seed, cache folder.
 * @returns Paths of pretrain / sft / dpo / rl / held-out files and the manifest.
 * @example
 * ```ts
 * import { buildCorpus } from "./build.ts";
 * const corpus = await buildCorpus({ dir: ".cache/corpus", sftSamples: 1000 });
 * corpus.pretrain; // ".cache/corpus/poetry-v1-…/pretrain.jsonl"
 * ```
 */
export async function buildCorpus(options: CorpusOptions = {}): Promise<CorpusFiles> {
  const t0 = performance.now();
  const opts = optionsOf(options);
  const log = options.log ?? (() => {});
  const hash = createHash("sha256").update(JSON.stringify(opts)).digest("hex").slice(0, 10);
  const root = options.dir ?? CORPUS_DIR;
  const dir = join(root, `${CORPUS_VERSION}-${hash}`);
  if (!options.force) {
    try {
      const manifest = JSON.parse(await Deno.readTextFile(join(dir, "manifest.json")));
      for (const f of Object.values(FILES)) await Deno.stat(join(dir, f));
      return filesIn(dir, manifest, true);
    } catch {
      // not built yet (or incomplete): build below
    }
  }
  log(`Reading chinese-poetry@2.0.1 …`);
  const { poems, read } = await loadPoems(options.sourceDir);
  const seed = opts.seed;
  const titleCount = new Map<string, number>();
  for (const p of poems) titleCount.set(p.title, (titleCount.get(p.title) ?? 0) + 1);
  const items: Item[] = poems.map((poem) => {
    const body = poem.paragraphs.join("\n");
    return {
      poem,
      body,
      form: poem.kind === "tang" ? poemForm(body) : null,
      uniqueTitle: titleCount.get(poem.title) === 1,
    };
  });
  const train: Item[] = [], heldout: Item[] = [];
  for (const it of items) {
    (isHeldout(it.poem, seed, opts.heldoutFraction) ? heldout : train).push(it);
  }
  log(`${read} poems read, ${items.length} kept, ${heldout.length} held out`);

  // Pretrain: a seeded shuffle of the training poems, cut at the byte budget.
  const rng = new Rng(mixSeed(seed, "pretrain"));
  const shuffled = rng.shuffle([...train]);
  const enc = new TextEncoder();
  const pre: Item[] = [];
  let bytes = 0;
  for (const it of shuffled) {
    const n = enc.encode(pretrainText(it.poem)).length;
    if (bytes + n > opts.pretrainBytes) break;
    pre.push(it);
    bytes += n;
  }
  // The tasks use poems the model has read in pretraining.
  const formed = pre.filter((it) => it.form !== null);
  if (formed.length === 0) {
    throw new Error(
      `Cannot build the corpus: pretrainBytes ${opts.pretrainBytes} keeps no regulated poems`,
    );
  }
  const sftRng = new Rng(mixSeed(seed, "sft"));
  const sft: Message[][] = [];
  for (let i = 0; i < opts.sftSamples; i++) {
    sft.push(sftConversation(sftRng.pick(sftRng.float() < 0.85 ? formed : pre), sftRng));
  }
  const dpoRng = new Rng(mixSeed(seed, "dpo"));
  const dpo: Record<string, unknown>[] = [];
  for (let i = 0; i < opts.dpoPairs; i++) {
    const it = dpoRng.pick(formed);
    const prompt = {
      role: "user",
      content: fill(dpoRng.pick(COMPOSE), { title: it.poem.title, form: it.form!.name }),
    };
    dpo.push({
      chosen: [prompt, { role: "assistant", content: it.body }],
      rejected: [prompt, { role: "assistant", content: corrupt(it, dpoRng) }],
    });
  }
  const rlRng = new Rng(mixSeed(seed, "rl"));
  const rl: Record<string, unknown>[] = [];
  for (let i = 0; i < opts.rlPrompts; i++) rl.push(rlRecord(rlRng.pick(formed), rlRng));
  const hoRng = new Rng(mixSeed(seed, "heldout-sft"));
  const heldoutSft = heldout.map((it) => ({ conversations: sftConversation(it, hoRng) }));

  const outputs: Record<keyof typeof FILES, string[]> = {
    pretrain: pre.map((it) => JSON.stringify({ text: pretrainText(it.poem) })),
    sft: sft.map((c) => JSON.stringify({ conversations: c })),
    dpo: dpo.map((r) => JSON.stringify(r)),
    rl: rl.map((r) => JSON.stringify(r)),
    heldoutPretrain: heldout.map((it) => JSON.stringify({ text: pretrainText(it.poem) })),
    heldoutSft: heldoutSft.map((r) => JSON.stringify(r)),
  };
  // Write into a temporary folder, then rename: a crash never leaves a half-built corpus.
  await Deno.mkdir(root, { recursive: true });
  const tmp = await Deno.makeTempDir({ dir: root, prefix: ".building-" });
  const files: CorpusManifest["files"] = {};
  for (const [key, lines] of Object.entries(outputs)) {
    const data = enc.encode(lines.join("\n") + (lines.length ? "\n" : ""));
    await Deno.writeFile(join(tmp, FILES[key as keyof typeof FILES]), data);
    files[FILES[key as keyof typeof FILES]] = { records: lines.length, bytes: data.length };
  }
  const manifest: CorpusManifest = {
    version: CORPUS_VERSION,
    options: opts,
    source: "npm:chinese-poetry@2.0.1 (MIT)",
    poems: { read, kept: items.length, heldout: heldout.length },
    files,
    seconds: Math.round((performance.now() - t0) / 10) / 100,
  };
  await Deno.writeTextFile(join(tmp, "manifest.json"), JSON.stringify(manifest, null, 2) + "\n");
  await Deno.remove(dir, { recursive: true }).catch(() => {});
  try {
    await Deno.rename(tmp, dir);
  } catch (e) {
    // Another process finished the same build first: use theirs.
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    if (!(await Deno.stat(join(dir, "manifest.json")).catch(() => null))) throw e;
  }
  log(`Corpus written to ${dir} in ${manifest.seconds}s`);
  return filesIn(dir, manifest, false);
}

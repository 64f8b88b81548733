// Reading the npm package `chinese-poetry` (MIT, 2.0.1): Tang poems (全唐诗, traditional script)
// and Song ci (宋词, simplified), cleaned so that every kept text is Han characters plus Chinese
// punctuation, and classified by form (line count × characters per line).

import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** One cleaned poem. */
export interface Poem {
  /** `tang` (全唐诗 shi) or `ci` (宋词, titled by its tune). */
  kind: "tang" | "ci";
  /** Title (for ci: the tune name, 词牌). */
  title: string;
  /** Author. */
  author: string;
  /** Couplets / phrases as in the source, e.g. "床前明月光，疑是地上霜。". */
  paragraphs: string[];
}

/** A poem's shape: lines split at ，。？！；, and their lengths. */
export interface PoemShape {
  /** The lines without punctuation. */
  lines: string[];
  /** Characters per line, or 0 when the lines differ in length. */
  charsPerLine: number;
}

/** A regulated form with a name, e.g. 五言绝句 = 4 lines × 5 characters. */
export interface PoemForm {
  /** Chinese name of the form. */
  name: string;
  /** Number of lines. */
  lines: number;
  /** Characters per line. */
  charsPerLine: number;
}

/** The four regulated forms the SFT/DPO/RL tasks use. */
export const POEM_FORMS: readonly PoemForm[] = [
  { name: "五言绝句", lines: 4, charsPerLine: 5 },
  { name: "七言绝句", lines: 4, charsPerLine: 7 },
  { name: "五言律诗", lines: 8, charsPerLine: 5 },
  { name: "七言律诗", lines: 8, charsPerLine: 7 },
];

const LINE_BREAK = /[，。？！；]/u;
const CLEAN_BODY = /^[\p{Script=Han}，。？！；、：]+$/u;
const CLEAN_NAME = /^[\p{Script=Han}·]+( [\p{Script=Han}]+)?$/u;

/**
 * Splits a poem into lines at ，。？！； and measures them.
 *
 * @param text Poem text (newlines are ignored).
 * @returns The lines and their common length (0 if they differ).
 * @example
 * ```ts
 * import { analyzePoem } from "./poetry.ts";
 * analyzePoem("床前明月光，疑是地上霜。\n舉頭望明月，低頭思故鄉。");
 * // { lines: ["床前明月光", "疑是地上霜", "舉頭望明月", "低頭思故鄉"], charsPerLine: 5 }
 * ```
 */
export function analyzePoem(text: string): PoemShape {
  const lines = text.replace(/\s+/gu, "").split(LINE_BREAK).filter((l) => l.length > 0);
  const lens = new Set(lines.map((l) => [...l].length));
  return { lines, charsPerLine: lens.size === 1 ? [...lens][0] : 0 };
}

/**
 * The regulated form of a poem, if it has one of {@link POEM_FORMS}.
 *
 * @param text Poem text.
 * @returns The form, or null.
 * @example
 * ```ts
 * import { poemForm } from "./poetry.ts";
 * poemForm("白日依山尽，黄河入海流。\n欲穷千里目，更上一层楼。")?.name; // "五言绝句"
 * ```
 */
export function poemForm(text: string): PoemForm | null {
  const { lines, charsPerLine } = analyzePoem(text);
  return POEM_FORMS.find((f) => f.lines === lines.length && f.charsPerLine === charsPerLine) ??
    null;
}

/**
 * Scores how well `text` has a required form: 1 when the line count and every line's length
 * match, partial credit otherwise (half for the line count, half for the share of lines of the
 * right length). Useful as a verifiable RL reward.
 *
 * @param text Generated poem.
 * @param form Required form.
 * @returns A score in [0, 1].
 * @example
 * ```ts
 * import { formScore } from "./poetry.ts";
 * formScore("白日依山尽，黄河入海流。\n欲穷千里目，更上一层楼。", { name: "五言绝句", lines: 4, charsPerLine: 5 }); // 1
 * ```
 */
export function formScore(text: string, form: PoemForm): number {
  const { lines } = analyzePoem(text);
  if (lines.length === 0) return 0;
  const countOk = lines.length === form.lines ? 0.5 : 0;
  const good = lines.filter((l) => [...l].length === form.charsPerLine).length;
  return countOk + 0.5 * Math.min(good, form.lines) / Math.max(lines.length, form.lines);
}

/**
 * Finds the installed `chinese-poetry` package (installing it through Deno's npm support on first
 * use) and returns its `dist` folder.
 *
 * @returns Absolute path of the package's `dist/` folder.
 */
export async function poetryDistDir(): Promise<string> {
  // Importing the package's package.json makes Deno fetch the package when it is missing. The
  // specifiers are literals so that `deno publish` rewrites them to npm: ones (a JSR user has no
  // import map); type-checking therefore fetches the package too.
  try {
    await import("chinese-poetry/package.json", { with: { type: "json" } });
  } catch (e) {
    throw new Error(
      `Cannot load the npm package chinese-poetry@2.0.1 (needs "chinese-poetry" in the import ` +
        `map and npm registry access once): ${(e as Error).message}`,
    );
  }
  let pkgJson: string | null = null;
  try {
    const url = import.meta.resolve("chinese-poetry/package.json");
    if (url.startsWith("file:")) pkgJson = fileURLToPath(url);
  } catch {
    // fall through to node resolution
  }
  if (pkgJson === null) {
    try {
      pkgJson = createRequire(import.meta.url).resolve("chinese-poetry/package.json");
    } catch (e) {
      throw new Error(
        `Cannot locate the npm package chinese-poetry@2.0.1 (run \`deno install\`): ${
          (e as Error).message
        }`,
      );
    }
  }
  return join(dirname(pkgJson), "dist");
}

function cleanBody(paragraphs: unknown): string[] | null {
  if (!Array.isArray(paragraphs) || paragraphs.length === 0) return null;
  const out: string[] = [];
  for (const p of paragraphs) {
    if (typeof p !== "string") return null;
    // Drop editorial notes such as "（一作…）", keep the text.
    const s = p.replace(/（[^）]*）/gu, "").replace(/\s+/gu, "");
    if (s.length === 0) continue;
    if (!CLEAN_BODY.test(s)) return null;
    out.push(s);
  }
  return out.length > 0 ? out : null;
}

function readJsonArray(path: string): Record<string, unknown>[] {
  let v: unknown;
  try {
    v = JSON.parse(Deno.readTextFileSync(path));
  } catch (e) {
    throw new Error(`Cannot read poetry file ${path}: ${(e as Error).message}`);
  }
  if (!Array.isArray(v)) throw new Error(`Cannot read poetry file ${path}: not a JSON array`);
  return v;
}

/** Files of one collection in a fixed (numeric) order, so the corpus never depends on readdir. */
function numberedFiles(dir: string, prefix: string): string[] {
  const names: string[] = [];
  for (const e of Deno.readDirSync(dir)) {
    if (e.isFile && e.name.startsWith(prefix) && e.name.endsWith(".json")) names.push(e.name);
  }
  const num = (n: string) => Number(n.slice(prefix.length, -5));
  return names.filter((n) => Number.isFinite(num(n))).sort((a, b) => num(a) - num(b))
    .map((n) => join(dir, n));
}

/**
 * Loads and cleans the Tang poems and Song ci of the `chinese-poetry` package. Poems with missing
 * characters (□), non-Han symbols or unusual titles are dropped; duplicates (same text) are kept
 * once.
 *
 * @param distDir The package's `dist/` folder (default: found with {@link poetryDistDir}).
 * @returns Cleaned poems in a fixed order (Tang first, then ci), and how many were read.
 */
export async function loadPoems(distDir?: string): Promise<{ poems: Poem[]; read: number }> {
  const dist = distDir ?? await poetryDistDir();
  const poems: Poem[] = [];
  const seen = new Set<string>();
  let read = 0;
  const add = (kind: Poem["kind"], title: unknown, author: unknown, paragraphs: unknown) => {
    read++;
    if (typeof title !== "string" || typeof author !== "string") return;
    const t = title.trim(), a = author.trim();
    if (!CLEAN_NAME.test(t) || !CLEAN_NAME.test(a) || t.length > 24) return;
    const body = cleanBody(paragraphs);
    if (!body) return;
    const key = body.join("");
    if (seen.has(key)) return;
    seen.add(key);
    poems.push({ kind, title: t, author: a, paragraphs: body });
  };
  for (const f of numberedFiles(join(dist, "quantangshi"), "poet.tang.")) {
    for (const p of readJsonArray(f)) add("tang", p.title, p.author, p.paragraphs);
  }
  for (const f of numberedFiles(join(dist, "songci"), "ci.song.")) {
    for (const p of readJsonArray(f)) add("ci", p.rhythmic, p.author, p.paragraphs);
  }
  if (poems.length === 0) throw new Error(`Cannot build the corpus: no poems found in ${dist}`);
  return { poems, read };
}

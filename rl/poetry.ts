/**
 * A verifiable reward for the embedded poetry corpus: does a generated poem have the requested
 * form, do its even lines rhyme, and (for 绝句/律诗) does it follow the level/oblique tone rules?
 * Readings come from the npm package `pinyin-pro` (pinned in deno.json), which reads simplified
 * and traditional characters.
 *
 * - **form** ∈ [0, 1]: the corpus's `formScore` (line count and characters per line).
 * - **rhyme** ∈ [0, 1]: among the requested number of even lines (2, 4, 6, 8), the share beyond
 *   the first whose last character falls in the most common rhyme group, counting each rhyme
 *   character once (a repeated rhyme character, e.g. a parroted couplet, earns nothing). Groups
 *   are the fourteen of 中华新韵, which merge 平水韵's rhymes by their Mandarin finals: finals
 *   that 平水韵 puts in one rhyme always land in one group here.
 * - **tone** ∈ [0, 1], only when the form is exact: the share of the regulated-verse checks that
 *   hold — within a line the 2nd and 4th (and 4th and 6th) characters alternate 平/仄; in a
 *   couplet the second line opposes the first at those positions (对); the first line of a
 *   couplet matches the line before it (粘); even lines end 平 and odd lines after the first end
 *   仄. 平 = Mandarin tones 1 and 2, 仄 = 3 and 4 (the modern 新韵 convention: Middle Chinese
 *   entering-tone characters read with tones 1/2 today count as 平 here).
 * - **repeat** ∈ [0, 1]: the share of lines that repeat an earlier line (subtracted).
 *
 * total = form + rhyme + tone − repeat, in [−1, 3].
 * @module
 */
import { pinyin } from "pinyin-pro";
import { analyzePoem, formScore } from "../data/corpus/poetry.ts";
import type { PoemForm } from "../data/corpus/poetry.ts";

/** The components of {@link poetryScore}. */
export interface PoetryScore {
  /** form + rhyme + tone − repeat. */
  total: number;
  /** Line count and characters per line, [0, 1]. */
  form: number;
  /** Even lines rhyme, [0, 1]. */
  rhyme: number;
  /** Tonal pattern (平仄), [0, 1]; 0 unless the form is exact. */
  tone: number;
  /** Share of repeated lines, [0, 1]. */
  repeat: number;
}

/** Range of {@link PoetryScore.total}. */
export const POETRY_REWARD_RANGE: readonly [number, number] = [-1, 3];

/** A character's reading. */
export interface Reading {
  /** The character. */
  char: string;
  /** Rhyme group (one of the 14 names, "" when unknown). */
  group: string;
  /** Level (平) tone: Mandarin tones 1 and 2. */
  level: boolean;
}

const ZHI = new Set(["zh", "ch", "sh", "r", "z", "c", "s"]);
const GROUPS: Record<string, string> = {};
for (
  const [name, finals] of [
    ["麻", "a ia ua"],
    ["波", "o e uo"],
    ["皆", "ie ue üe ve"],
    ["开", "ai uai"],
    ["微", "ei ui uei"],
    ["豪", "ao iao"],
    ["尤", "ou iu iou"],
    ["寒", "an ian uan üan van"],
    ["文", "en in un uen ün vn"],
    ["唐", "ang iang uang"],
    ["庚", "eng ing ong iong ueng"],
    ["齐", "i ü v er"],
    ["姑", "u"],
  ] as const
) for (const f of finals.split(" ")) GROUPS[f] = name;

/**
 * The rhyme group of a final (中华新韵's fourteen; zhi/chi/shi/ri/zi/ci/si form 支).
 *
 * @param initial pinyin initial ("" for none)
 * @param final pinyin final without tone marks
 * @returns the group's name, or "" when the final is not a rhyme (e.g. "ng")
 */
export function rhymeGroup(initial: string, final: string): string {
  if (final === "i" && ZHI.has(initial)) return "支";
  return GROUPS[final] ?? "";
}

/**
 * Readings of a line's characters (polyphones resolved in context, no tone sandhi).
 *
 * @param line Han characters
 * @returns one reading per character
 */
export function readLine(line: string): Reading[] {
  const chars = [...line];
  if (chars.length === 0) return [];
  const opts = { type: "array", toneSandhi: false } as const;
  const finals = pinyin(line, { ...opts, pattern: "final", toneType: "none" });
  const initials = pinyin(line, { ...opts, pattern: "initial" });
  const tones = pinyin(line, { ...opts, pattern: "num" });
  return chars.map((char, i) => ({
    char,
    group: rhymeGroup(initials[i] ?? "", finals[i] ?? ""),
    level: tones[i] === "1" || tones[i] === "2",
  }));
}

function rhymeScore(lines: readonly Reading[][], form: PoemForm): number {
  const want = Math.floor(form.lines / 2);
  if (want < 2) return 0;
  // last characters of the even lines within the requested count, each character once
  const ends = new Map<string, string>();
  for (let i = 1; i < Math.min(lines.length, form.lines); i += 2) {
    const last = lines[i].at(-1);
    if (last && last.group && !ends.has(last.char)) ends.set(last.char, last.group);
  }
  const counts = new Map<string, number>();
  for (const g of ends.values()) counts.set(g, (counts.get(g) ?? 0) + 1);
  const best = Math.max(0, ...counts.values());
  return Math.max(0, best - 1) / (want - 1);
}

function toneScore(lines: readonly Reading[][], form: PoemForm): number {
  const n = form.charsPerLine;
  if (lines.length !== form.lines || lines.some((l) => l.length !== n)) return 0;
  const keys = n === 7 ? [1, 3, 5] : [1, 3]; // 0-based 2nd, 4th (, 6th) characters
  let pass = 0, total = 0;
  const check = (ok: boolean) => {
    total++;
    if (ok) pass++;
  };
  lines.forEach((l, i) => {
    for (let k = 1; k < keys.length; k++) check(l[keys[k]].level !== l[keys[k - 1]].level);
    if (i % 2 === 1) {
      for (const k of keys) check(l[k].level !== lines[i - 1][k].level); // 对
      check(l[n - 1].level); // rhyme lines end 平
    } else if (i > 0) {
      check(l[keys[0]].level === lines[i - 1][keys[0]].level); // 粘
      check(!l[n - 1].level); // non-rhyme lines end 仄
    }
  });
  return pass / total;
}

/**
 * Scores a generated poem against the requested form (see the module doc for the components).
 *
 * @param text the generated poem
 * @param form the requested form
 * @returns total and components
 * @example
 * ```ts
 * import { poetryScore } from "./poetry.ts";
 * const s = poetryScore("白日依山尽，黄河入海流。欲穷千里目，更上一层楼。",
 *   { name: "五言绝句", lines: 4, charsPerLine: 5 });
 * // s.form = 1, s.rhyme = 1 (流/楼), s.repeat = 0
 * ```
 */
export function poetryScore(text: string, form: PoemForm): PoetryScore {
  const { lines } = analyzePoem(text);
  const readings = lines.map(readLine);
  const f = formScore(text, form);
  const rhyme = rhymeScore(readings, form);
  const tone = toneScore(readings, form);
  const seen = new Set<string>();
  let dup = 0;
  for (const l of lines) seen.has(l) ? dup++ : seen.add(l);
  const repeat = lines.length ? dup / lines.length : 0;
  return { total: f + rhyme + tone - repeat, form: f, rhyme, tone, repeat };
}

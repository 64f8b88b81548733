// Post-training data derived from the built poetry corpus (no new source, deterministic):
// Song ci in a few tunes for LoRA (a style the demo's model never read: it pretrains on regulated
// shi only), DPO pairs from held-out poems, and think-formatted explanations for reasoning SFT.

import { mixSeed, Rng } from "../random.ts";
import { COMPOSE, corrupt, fill } from "./build.ts";
import { poemForm } from "./poetry.ts";

/** A chat message of the generated records. */
type Message = { role: string; content: string };

/**
 * Ci tunes (词牌) the LoRA data uses: frequent in the corpus, at most 55 characters, and each with
 * a line pattern that no regulated shi form has (生查子, 5×8, is left out for that reason).
 */
export const CI_TUNES: readonly string[] = [
  "浣溪沙",
  "菩萨蛮",
  "点绛唇",
  "清平乐",
  "西江月",
  "鹧鸪天",
  "减字木兰花",
  "好事近",
];

/** Prompts asking for a ci in a tune (`{tune}`). */
export const CI_PROMPTS: readonly string[] = [
  "填一首词，词牌《{tune}》。",
  "请以《{tune}》为词牌填一首词。",
  "写一首《{tune}》。",
];

/**
 * The characters per line of a text (lines split at ，。？！；、： and newlines).
 *
 * @param text a poem
 * @returns e.g. [7, 7, 7, 7, 7, 7] for a 浣溪沙
 */
export function linePattern(text: string): number[] {
  return text.split(/[，。？！；、：\n]/u).map((l) => l.trim()).filter((l) => l.length > 0)
    .map((l) => [...l].length);
}

/**
 * How far a line pattern agrees with a tune's: the share of line positions whose length is the
 * tune's, out of the longer of the two patterns (1 only for the exact pattern; a missing or
 * extra line counts as a wrong one).
 *
 * @param got the reply's {@link linePattern}
 * @param want the tune's pattern
 * @returns 0…1
 *
 * @example
 * ```ts
 * import { patternAgreement } from "./posttrain.ts";
 * patternAgreement([7, 7, 7, 7], [7, 7, 7, 7, 7, 7]); // 4 / 6
 * ```
 */
export function patternAgreement(got: readonly number[], want: readonly number[]): number {
  const n = Math.max(got.length, want.length);
  if (n === 0) return 1;
  let same = 0;
  for (let i = 0; i < Math.min(got.length, want.length); i++) if (got[i] === want[i]) same++;
  return same / n;
}

/** One `{"text": "《title》 author\nbody"}` record split up. */
function parseText(text: string): { title: string; body: string } | null {
  const m = /^《(.+?)》[^\n]*\n([\s\S]+)$/u.exec(text);
  return m ? { title: m[1], body: m[2] } : null;
}

function readTexts(path: string): string[] {
  return Deno.readTextFileSync(path).split("\n").filter((l) => l.trim()).map((l) =>
    String(JSON.parse(l).text)
  );
}

/** The LoRA style data: SFT conversations for training and held-out poems per tune. */
export interface CiStyleData {
  /** Each tune's canonical line pattern (the most common one in the corpus). */
  patterns: Record<string, number[]>;
  /** `{conversations}` records: a tune prompt and a ci in that tune (training poems only). */
  train: { conversations: Message[] }[];
  /** Held-out ci: tune and body. */
  heldout: { tune: string; body: string }[];
}

/**
 * Ci in {@link CI_TUNES} from the corpus's pretrain and held-out files, keeping the poems that
 * follow their tune's canonical line pattern.
 *
 * @param pretrainPath the corpus's `pretrain.jsonl`
 * @param heldoutPath the corpus's `heldout_pretrain.jsonl`
 * @param seed prompt choice seed
 * @param tunes which tunes (default {@link CI_TUNES})
 * @returns training conversations, held-out poems, the patterns
 */
export function ciStyleData(
  pretrainPath: string,
  heldoutPath: string,
  seed = 42,
  tunes: readonly string[] = CI_TUNES,
): CiStyleData {
  const collect = (path: string) =>
    readTexts(path).map(parseText).filter((p): p is { title: string; body: string } =>
      p !== null && tunes.includes(p.title)
    );
  const train = collect(pretrainPath), held = collect(heldoutPath);
  const counts = new Map<string, Map<string, number>>();
  for (const p of [...train, ...held]) {
    const m = counts.get(p.title) ?? new Map<string, number>();
    const k = linePattern(p.body).join(",");
    m.set(k, (m.get(k) ?? 0) + 1);
    counts.set(p.title, m);
  }
  const patterns: Record<string, number[]> = {};
  for (const [tune, m] of counts) {
    const best = [...m.entries()].sort((a, b) => b[1] - a[1])[0][0];
    patterns[tune] = best.split(",").map(Number);
  }
  const fits = (p: { title: string; body: string }) =>
    linePattern(p.body).join(",") === patterns[p.title]?.join(",");
  const rng = new Rng(mixSeed(seed, "ci-style"));
  return {
    patterns,
    train: train.filter(fits).map((p) => ({
      conversations: [
        { role: "user", content: fill(rng.pick(CI_PROMPTS), { tune: p.title }) },
        { role: "assistant", content: p.body },
      ],
    })),
    heldout: held.filter(fits).map((p) => ({ tune: p.title, body: p.body })),
  };
}

/**
 * DPO pairs from held-out regulated poems, built like the corpus's `dpo.jsonl` (a poem-writing
 * prompt, the real poem chosen, a corrupted one rejected), for measuring preference accuracy on
 * poems no trainer saw.
 *
 * @param heldoutPath the corpus's `heldout_pretrain.jsonl`
 * @param n pairs at most
 * @param seed seed
 * @returns `{chosen, rejected}` records
 */
export function heldoutDpoPairs(
  heldoutPath: string,
  n: number,
  seed = 42,
): { chosen: Message[]; rejected: Message[] }[] {
  const rng = new Rng(mixSeed(seed, "heldout-dpo"));
  const out: { chosen: Message[]; rejected: Message[] }[] = [];
  for (const t of readTexts(heldoutPath)) {
    const p = parseText(t);
    const form = p && poemForm(p.body);
    if (!p || !form) continue;
    const prompt = {
      role: "user",
      content: fill(rng.pick(COMPOSE), { title: p.title, form: form.name }),
    };
    out.push({
      chosen: [prompt, { role: "assistant", content: p.body }],
      rejected: [prompt, { role: "assistant", content: corrupt(p, rng) }],
    });
    if (out.length >= n) break;
  }
  return out;
}

const NUMBERS = ["零", "一", "二", "三", "四", "五", "六", "七", "八", "九", "十"];

/**
 * Reasoning-SFT conversations in V2's `r1_mix` format (`<think>\n…\n</think>\n<answer>\n…\n</answer>`)
 * from the corpus's regulated poems: naming a poem's form by counting its lines and characters,
 * and writing a poem after planning its shape.
 *
 * @param pretrainPath the corpus's `pretrain.jsonl`
 * @param n conversations
 * @param seed seed
 * @returns `{conversations}` records
 */
export function reasonRecords(
  pretrainPath: string,
  n: number,
  seed = 42,
): { conversations: Message[] }[] {
  const poems = readTexts(pretrainPath).map(parseText).flatMap((p) => {
    const form = p && poemForm(p.body);
    return p && form ? [{ ...p, form }] : [];
  });
  if (poems.length === 0) {
    throw new Error(`Cannot build reasoning data: ${pretrainPath} has no regulated poems`);
  }
  const rng = new Rng(mixSeed(seed, "reason"));
  const out: { conversations: Message[] }[] = [];
  for (let i = 0; i < n; i++) {
    const p = rng.pick(poems);
    const f = p.form;
    const lines = NUMBERS[f.lines], chars = NUMBERS[f.charsPerLine];
    const kind = f.lines === 4 ? "绝句" : "律诗";
    const size = f.charsPerLine === 5 ? "五言" : "七言";
    let q: string, think: string, answer: string;
    if (rng.float() < 0.5) {
      const first = linePattern(p.body)[0];
      q = `这首诗是什么体裁？\n${p.body}`;
      think = `数一数：全诗共${lines}句，第一句「${p.body.split(/[，。？！；]/u)[0]}」有${
        NUMBERS[first]
      }个字，每句都是${chars}个字。${lines}句是${kind}，每句${chars}字是${size}。`;
      answer = `这是一首${f.name}。`;
    } else {
      q = fill(rng.pick(COMPOSE), { title: p.title, form: f.name });
      think =
        `题目是《${p.title}》，体裁是${f.name}：${kind}共${lines}句，${size}即每句${chars}个字。`;
      answer = p.body;
    }
    out.push({
      conversations: [
        { role: "user", content: q },
        {
          role: "assistant",
          content: `<think>\n${think}\n</think>\n<answer>\n${answer}\n</answer>`,
        },
      ],
    });
  }
  return out;
}

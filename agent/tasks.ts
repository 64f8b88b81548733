/**
 * Tool-use tasks in MiniMind's `agent_rl.jsonl` format (`{"conversations": [system with a `tools`
 * JSON string, user, assistant placeholder], "gt": [expected answers]}`, read the way
 * `AgentRLDataset` reads it), and the two task sets `deno task eval_toolcall` runs:
 *
 * - {@link minimindMathTasks}: 20 arithmetic questions with a calculator tool, the shape of
 *   MiniMind's light agent test (its README: full_sft 12/20, agent-RL 17/20). The questions are
 *   ours; the expected answers are computed from each task's reference expression.
 * - {@link embeddedTasks}: arithmetic, unit, date and poetry-author questions built from the
 *   embedded poetry corpus and a seed, split into train and held-out by a hash of the question,
 *   so training never sees a held-out question. No downloads.
 *
 * Every task also carries a reference call (a correct `<tool_call>`), from which
 * {@link sftRecord} writes a tool-use SFT conversation.
 * @module
 */
import type { ChatMessage } from "../data/chat_template.ts";
import type { Poem } from "../data/corpus/poetry.ts";
import { mixSeed, Rng } from "../data/random.ts";
import { type Tool, type ToolSchema, toolSchema } from "../serve/tools.ts";
import { calculateMath, dateCalculator, poetryLookup, unitConverter } from "./builtin.ts";
import { evaluate, formatNumber } from "./calculator.ts";

/** One task: the prompt conversation, the tools offered, the expected answers. */
export interface AgentTask {
  /** Stable id (set name + index). */
  id: string;
  /** The prompt messages (all but the assistant placeholder). */
  messages: ChatMessage[];
  /** Tool schemas offered (rendered into the system prompt). */
  tools: ToolSchema[];
  /** Expected answers; the task is solved when every one is found in the final answer. */
  gt: string[];
  /** A correct call (for SFT data; never used for grading). */
  reference?: { name: string; arguments: Record<string, unknown> };
  /** How a correct final answer reads, given the tool's result (for SFT data). */
  answer?: (result: string) => string;
}

const SYSTEM = "你是一个会调用工具的助手。";

function parseJsonField(v: unknown, where: string): unknown {
  if (typeof v !== "string") return v;
  try {
    return JSON.parse(v);
  } catch (e) {
    throw new Error(`${where}: not valid JSON: ${(e as Error).message}`);
  }
}

/**
 * Reads one `agent_rl.jsonl` record as `AgentRLDataset` does: messages = all but the last, tools =
 * the system message's `tools` (a JSON string or an array), gt = the `gt` list.
 *
 * @param record `{conversations, gt}`
 * @param id task id (and the error location)
 * @returns the task
 * @throws Error naming the record and field when the shape is wrong
 */
export function taskFromRecord(record: Record<string, unknown>, id: string): AgentTask {
  const conv = record.conversations;
  if (!Array.isArray(conv) || conv.length < 2) {
    throw new Error(`${id}: "conversations" must be a list of at least 2 messages`);
  }
  const gt = record.gt;
  if (!Array.isArray(gt) || gt.some((g) => typeof g !== "string" && typeof g !== "number")) {
    throw new Error(`${id}: "gt" must be a list of strings, got ${JSON.stringify(gt)}`);
  }
  let tools: ToolSchema[] = [];
  const messages: ChatMessage[] = conv.slice(0, -1).map((m: Record<string, unknown>, i) => {
    if (typeof m?.role !== "string") throw new Error(`${id}: conversations[${i}] has no role`);
    const { tools: t, ...rest } = m;
    if (m.role === "system" && t !== undefined) {
      const parsed = parseJsonField(t, `${id}: conversations[${i}].tools`);
      if (!Array.isArray(parsed)) throw new Error(`${id}: conversations[${i}].tools is not a list`);
      tools = parsed as ToolSchema[];
    }
    return rest as ChatMessage;
  });
  return { id, messages, tools, gt: gt.map(String) };
}

/**
 * Writes a task as an `agent_rl.jsonl` record.
 *
 * @param task the task
 * @returns `{conversations, gt}` with the tools as a JSON string on the system message
 */
export function taskRecord(task: AgentTask): Record<string, unknown> {
  const conv: Record<string, unknown>[] = task.messages.map((m) => ({ ...m }));
  const sys = conv[0]?.role === "system" ? conv[0] : null;
  if (sys) sys.tools = JSON.stringify(task.tools);
  else conv.unshift({ role: "system", content: "", tools: JSON.stringify(task.tools) });
  conv.push({ role: "assistant", content: "无" });
  return { conversations: conv, gt: task.gt };
}

function makeTask(
  id: string,
  question: string,
  tool: Tool,
  args: Record<string, unknown>,
  gt: string[],
  answer: (result: string) => string,
): AgentTask {
  return {
    id,
    messages: [{ role: "system", content: SYSTEM }, { role: "user", content: question }],
    tools: [toolSchema(tool)],
    gt,
    reference: { name: tool.name, arguments: args },
    answer,
  };
}

function mathTask(id: string, question: string, expression: string): AgentTask {
  const value = formatNumber(evaluate(expression));
  return makeTask(id, question, calculateMath, { expression }, [value], (r) => `答案是${r}。`);
}

const MATH: readonly [string, string][] = [
  ["计算 123 + 456 的结果。", "123+456"],
  ["25 乘以 48 等于多少？", "25*48"],
  ["1000 减去 387 是多少？", "1000-387"],
  ["144 除以 12 等于几？", "144/12"],
  ["(15 + 27) × 3 等于多少？", "(15+27)*3"],
  ["2 的 10 次方是多少？", "2^10"],
  ["求 3.5 × 4.2 的值。", "3.5*4.2"],
  ["一件商品原价 240 元，打八折后是多少元？", "240*0.8"],
  ["小明有 58 本书，又买了 37 本，一共有多少本？", "58+37"],
  ["计算 999 × 999。", "999*999"],
  ["625 的平方根是多少？", "sqrt(625)"],
  ["一个长方形长 17 米、宽 9 米，面积是多少平方米？", "17*9"],
  ["计算 (100 - 36) ÷ 8。", "(100-36)/8"],
  ["7 除以 8 写成小数是多少？", "7/8"],
  ["12345 + 67890 等于多少？", "12345+67890"],
  ["一辆车每小时行驶 65 公里，4.5 小时行驶多少公里？", "65*4.5"],
  ["计算 17 的 3 次方。", "17^3"],
  ["365 × 24 等于多少？", "365*24"],
  ["5000 元存一年，年利率 3%，利息是多少元？", "5000*0.03"],
  ["计算 (48 + 52) × (13 - 8) ÷ 4。", "(48+52)*(13-8)/4"],
];

/**
 * MiniMind's light agent test format: 20 arithmetic questions, one calculator tool each.
 *
 * @returns the 20 tasks (`gt` = the value of each reference expression)
 */
export function minimindMathTasks(): AgentTask[] {
  return MATH.map(([q, e], i) => mathTask(`math-${i + 1}`, q, e));
}

/** Options of {@link embeddedTasks}. */
export interface EmbeddedTaskOptions {
  /** Tasks to generate before the split (default 2000). */
  count?: number;
  /** Seed of every choice (default 42). */
  seed?: number;
  /** Share held out, chosen by a hash of the question (default 0.1). */
  heldoutFraction?: number;
}

// Questions write an expression the way the call does (no spaces, `×` as the calculator reads
// it), so the argument is a verbatim copy that tokenises exactly as in the question: byte-level
// BPE splits "123" and " 123" into different tokens, and a tiny model copies same-token runs far
// more easily than it learns that mapping.
const ARITH_FORMS: readonly string[] = ["计算{e}。", "{e}等于多少？", "请算出{e}的结果。"];
const OPS: readonly string[] = ["+", "-", "×"];
const UNIT_PAIRS: readonly [string, string, number][] = [
  ["公里", "米", 1],
  ["米", "厘米", 1],
  ["千克", "克", 1],
  ["斤", "克", 1],
  ["小时", "分钟", 1],
  ["英里", "公里", 1],
  ["吨", "千克", 1],
  ["升", "毫升", 1],
];

function fill(t: string, v: Record<string, string | number>): string {
  return t.replace(/\{(\w+)\}/g, (_, k) => String(v[k]));
}

/**
 * Tasks built from the embedded data and a seed: arithmetic (`calculate_math`), unit conversion
 * (`unit_converter`), date math (`date_calculator`) and "who wrote 《title》" (`poetry_lookup`,
 * over titles that name exactly one poem). A question is held out when a hash of its text falls
 * under `heldoutFraction`, so the same question never lands in both splits.
 *
 * @param poems the corpus poems (`loadPoems()`), or [] to leave out the poetry tasks
 * @param options count, seed, held-out share
 * @returns train and held-out tasks
 */
export function embeddedTasks(
  poems: readonly Poem[],
  options: EmbeddedTaskOptions = {},
): { train: AgentTask[]; heldout: AgentTask[] } {
  const count = options.count ?? 2000, seed = options.seed ?? 42;
  const frac = options.heldoutFraction ?? 0.1;
  const rng = new Rng(mixSeed(seed, "agent-tasks"));
  const titleCount = new Map<string, number>();
  for (const p of poems) titleCount.set(p.title, (titleCount.get(p.title) ?? 0) + 1);
  const unique = poems.filter((p) => titleCount.get(p.title) === 1 && p.title.length <= 8);
  const lookup = poetryLookup(poems);
  const train: AgentTask[] = [], heldout: AgentTask[] = [];
  const seen = new Set<string>();
  for (let i = 0; seen.size < count && i < count * 4; i++) {
    const kind = unique.length ? rng.int(4) : rng.int(3);
    let task: AgentTask;
    const id = `emb-${i}`;
    if (kind === 0) {
      const form = ARITH_FORMS[rng.int(ARITH_FORMS.length)];
      const e = `${10 + rng.int(990)}${OPS[rng.int(OPS.length)]}${2 + rng.int(98)}`;
      task = mathTask(id, fill(form, { e }), e);
    } else if (kind === 1) {
      const [from, to] = UNIT_PAIRS[rng.int(UNIT_PAIRS.length)];
      const v = 1 + rng.int(99);
      const args = { value: v, from_unit: from, to_unit: to };
      const r = unitConverter.run(args, { signal: new AbortController().signal }) as string;
      task = makeTask(
        id,
        `请问 ${v} ${from}等于多少${to}？`,
        unitConverter,
        args,
        [r.split(" ")[0]],
        (res) => `等于${res.replace(/ .*/, "")}${to}。`,
      );
    } else if (kind === 2) {
      const y = 2000 + rng.int(30), m = 1 + rng.int(12), d = 1 + rng.int(28), n = 1 + rng.int(99);
      const date = `${y}-${String(m).padStart(2, "0")}-${String(d).padStart(2, "0")}`;
      const args = { date, add_days: n };
      const r = JSON.parse(
        dateCalculator.run(args, { signal: new AbortController().signal }) as string,
      );
      task = makeTask(
        id,
        `${date} 之后 ${n} 天是哪一天？`,
        dateCalculator,
        args,
        [r.date],
        (res) => {
          const j = JSON.parse(res);
          return `是${j.date}，${j.weekday}。`;
        },
      );
    } else {
      const p = unique[rng.int(unique.length)];
      task = makeTask(
        id,
        `《${p.title}》的作者是谁？`,
        lookup,
        { query: p.title },
        [p.author],
        (res) => `作者是：${/^《[^》]*》([^：]+)：/.exec(res)?.[1] ?? ""}。`,
      );
    }
    const q = String(task.messages[1].content);
    if (seen.has(q)) continue;
    seen.add(q);
    (mixSeed(seed, "agent-heldout", q) / 4294967296 < frac ? heldout : train).push(task);
  }
  return { train, heldout };
}

/**
 * A tool-use SFT conversation for a task: system (with tools) → user → assistant tool call →
 * tool result (computed by running the tool) → assistant answer, in MiniMind's SFT format
 * (`tools` and `tool_calls` as JSON strings).
 *
 * @param task a task with a reference call
 * @param tools the tools to run the reference call with
 * @returns `{conversations}`
 * @throws Error when the task has no reference or the tool fails
 */
export async function sftRecord(
  task: AgentTask,
  tools: readonly Tool[],
): Promise<{ conversations: Record<string, unknown>[] }> {
  const ref = task.reference;
  if (!ref || !task.answer) throw new Error(`${task.id}: no reference call to build SFT data from`);
  const tool = tools.find((t) => t.name === ref.name);
  if (!tool) throw new Error(`${task.id}: reference tool '${ref.name}' is not available`);
  const raw = await tool.run(ref.arguments, { signal: new AbortController().signal });
  const result = typeof raw === "string" ? raw : JSON.stringify(raw);
  const conv = taskRecord(task).conversations as Record<string, unknown>[];
  conv.pop();
  conv.push(
    {
      role: "assistant",
      content: "",
      tool_calls: JSON.stringify([{ name: ref.name, arguments: ref.arguments }]),
    },
    { role: "tool", content: result },
    { role: "assistant", content: task.answer(result) },
  );
  return { conversations: conv };
}

/**
 * Several tasks of one tool as one SFT conversation: the first task's {@link sftRecord}, then for
 * every further task its question, call, result and answer as the next exchange. The system
 * prompt (mostly the template's tool instructions, about 300 tokens) is paid once per
 * conversation instead of once per task, so a step of training sees several times as many calls
 * and answers to copy; the first exchange is exactly what a single-task prompt looks like.
 *
 * @param tasks tasks that offer the same tools, each with a reference call
 * @param tools the tools to run the reference calls with
 * @returns `{conversations}`
 * @throws Error when the tasks offer different tools, or as {@link sftRecord}
 */
export async function sftConversation(
  tasks: readonly AgentTask[],
  tools: readonly Tool[],
): Promise<{ conversations: Record<string, unknown>[] }> {
  if (!tasks.length) throw new Error("sftConversation: no tasks");
  const offered = JSON.stringify(tasks[0].tools);
  const conv: Record<string, unknown>[] = [];
  for (const t of tasks) {
    if (JSON.stringify(t.tools) !== offered) {
      throw new Error(
        `${t.id}: offers other tools than ${tasks[0].id}; cannot share a conversation`,
      );
    }
    const rec = (await sftRecord(t, tools)).conversations;
    conv.push(...(conv.length ? rec.slice(1) : rec));
  }
  return { conversations: conv };
}

function copyPool(tasks: readonly AgentTask[]): string[] {
  const pool: string[] = [];
  for (const t of tasks) {
    for (const v of Object.values(t.reference?.arguments ?? {})) pool.push(String(v));
    pool.push(...t.gt);
  }
  if (!pool.length) throw new Error("copyRecords: the tasks have no values to copy");
  return pool;
}

/** `count` runs of `min`–`max` copy values (one separator per run), the same for a seed. */
function copyRuns(
  tasks: readonly AgentTask[],
  count: number,
  seed: number,
  min: number,
  max: number,
): string[] {
  const pool = copyPool(tasks);
  const rng = new Rng(mixSeed(seed, "agent-copy"));
  const seps = [" ", "，", "、"];
  return Array.from({ length: count }, () => {
    const n = min + rng.int(max - min + 1), sep = seps[rng.int(seps.length)];
    return Array.from({ length: n }, () => pool[rng.int(pool.length)]).join(sep);
  });
}

/**
 * Copy warm-up texts for pretraining (`{"text"}`): 6–12 values the tool-use tasks copy, a
 * newline, and the same run again (the second half is predictable only by copying).
 *
 * @param tasks tasks with reference calls (the train split)
 * @param count texts to write
 * @param seed seed of the choices
 * @returns `{text}` records
 */
export function copyTexts(
  tasks: readonly AgentTask[],
  count: number,
  seed: number,
): { text: string }[] {
  return copyRuns(tasks, count, seed, 6, 12).map((run) => ({ text: `${run}\n${run}` }));
}

/**
 * Copy warm-up conversations for SFT: the user gives a run of values the tool-use tasks copy
 * (reference arguments and expected answers: expressions, numbers, dates, titles, authors) and
 * the assistant repeats it. With the loss on the assistant only, every trained token is a copy,
 * so a short SFT stage on them teaches a fresh tiny model the induction ("find the earlier
 * occurrence, continue it") that the tool-use SFT needs and that its sparse copy targets (a few
 * tokens in sixty) alone teach slowly.
 *
 * @param tasks tasks with reference calls (the train split)
 * @param count conversations to write
 * @param seed seed of the choices
 * @returns `{conversations}` records (user, assistant)
 */
export function copyRecords(
  tasks: readonly AgentTask[],
  count: number,
  seed: number,
): { conversations: ChatMessage[] }[] {
  return copyRuns(tasks, count, seed, 2, 6).map((run) => ({
    conversations: [
      { role: "user", content: `照抄：${run}` },
      { role: "assistant", content: run },
    ],
  }));
}

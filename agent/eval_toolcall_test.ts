import assert from "node:assert/strict";
import { saveModel } from "../convert/hf.ts";
import { tinyModel, tokenizer } from "../tests/_serve.ts";
import { main } from "./eval_toolcall.ts";
import { evaluateToolUse } from "./evaluate.ts";
import { scoreEpisode } from "./reward.ts";
import { builtinTools } from "./builtin.ts";
import { minimindMathTasks, taskFromRecord, taskRecord } from "./tasks.ts";

async function captured(f: () => Promise<number>): Promise<[number, string]> {
  const lines: string[] = [];
  const log = console.log;
  console.log = (...a: unknown[]) => lines.push(a.join(" "));
  try {
    return [await f(), lines.join("\n")];
  } finally {
    console.log = log;
  }
}

Deno.test("deno task eval_toolcall: loads a model, runs the 20 calculator tasks, reports the three rates", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await saveModel(dir, { ...tinyModel(), tokenizer: await tokenizer() });
    const [code, out] = await captured(() =>
      main([
        "--load_from",
        dir,
        "--task_set",
        "minimind",
        "--max_new_tokens",
        "4",
        "--max_turns",
        "1",
      ])
    );
    assert.equal(code, 0);
    assert.match(
      out,
      /minimind math \(20\): accuracy \d+\/20 = [\d.]+%, calls\/task [\d.]+, malformed [\d.]+%, mean reward -?[\d.]+/,
    );
    // and MiniMind's format from a file
    const file = `${dir}/tasks.jsonl`;
    await Deno.writeTextFile(
      file,
      minimindMathTasks().slice(0, 2).map((t) => JSON.stringify(taskRecord(t))).join("\n") + "\n",
    );
    const [code2, out2] = await captured(() =>
      main(["--load_from", dir, "--data_path", file, "--max_new_tokens", "4", "--max_turns", "1"])
    );
    assert.equal(code2, 0);
    assert.match(out2, /tasks\.jsonl: accuracy \d\/2/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("tasks: agent_rl records round-trip; a perfect scripted model scores 20/20 with one call each", async () => {
  const tasks = minimindMathTasks();
  assert.equal(tasks.length, 20);
  assert.deepEqual(tasks.slice(0, 3).map((t) => t.gt[0]), ["579", "1200", "613"]);
  const back = taskFromRecord(taskRecord(tasks[4]), "x");
  assert.deepEqual(back.messages, tasks[4].messages);
  assert.deepEqual(back.tools, tasks[4].tools);
  assert.deepEqual(back.gt, ["126"]);
  assert.throws(
    () => taskFromRecord({ conversations: [], gt: [] }, "f.jsonl:3"),
    /f\.jsonl:3: "conversations"/,
  );
  // a scripted "model" that reads the question and calls with the reference expression
  const byQuestion = new Map(tasks.map((t) => [String(t.messages[1].content), t]));
  const scripted =
    (answer: (result: string) => string) =>
    (messages: readonly { role: string; content?: unknown }[]) => {
      const last = messages.at(-1)!;
      if (last.role === "tool") return Promise.resolve(answer(String(last.content)));
      const t = byQuestion.get(String(last.content))!;
      return Promise.resolve(`<tool_call>\n${JSON.stringify(t.reference)}\n</tool_call>`);
    };
  const report = await evaluateToolUse(scripted((r) => `答案是 ${r}。`), tasks, {
    tools: builtinTools([]),
  });
  assert.equal(report.accuracy, 1);
  assert.equal(report.callsPerTask, 1);
  assert.equal(report.malformedRate, 0);
  assert.equal(report.meanReward, 3);
  // a digit too many: no task counts, and the reward pays only the well-formed call (+0.5) —
  // MiniMind's substring rule would have paid it in full
  const padded = await evaluateToolUse(scripted((r) => `答案是 ${r}6。`), tasks, {
    tools: builtinTools([]),
  });
  assert.equal(padded.accuracy, 0);
  assert.equal(padded.meanReward, 0.5);
  const episode = {
    messages: [],
    turns: [{ text: "<tool_call>…</tool_call>", outcomes: [] }, {
      text: "答案是3611。",
      outcomes: [],
    }],
    final: "答案是3611。",
    unfinished: false,
    calls: 1,
    malformed: 0,
    pending: [],
  } as unknown as Parameters<typeof scoreEpisode>[0];
  const task = { tools: tasks[0].tools, gt: ["361"] };
  assert.equal(scoreEpisode(episode, task, "substring").reward, 1.5); // gap 2 (one call, none valid): −1, found: +2.5
  assert.equal(scoreEpisode(episode, task, "exact").reward, -1);
  assert.equal(scoreEpisode(episode, task, "substring").correct, false);
});

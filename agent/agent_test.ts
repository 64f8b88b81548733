import assert from "node:assert/strict";
import { builtinTools } from "./builtin.ts";
import { TurnBatcher } from "./model.ts";
import { evaluateToolUse, runTask } from "./evaluate.ts";
import { scoreEpisode } from "./reward.ts";
import { minimindMathTasks } from "./tasks.ts";
import { AgentTrainer, informativeRows, playEpisodes } from "./trainer.ts";
import { runAgent } from "./train_agent.ts";
import { saveModel } from "../convert/hf.ts";
import { tinyToolModel } from "../tests/_agent.ts";
import { mapTree, type Tree } from "../nn/tree.ts";
import { Tensor } from "../nn/tensor.ts";
import { keep } from "../nn/scope.ts";
import { affine } from "../nn/ops/mod.ts";

const tasks = minimindMathTasks().slice(0, 3);
let tiny: ReturnType<typeof tinyToolModel> | null = null;
/** The tiny tool-call model, trained once for this file. */
const trained = () => tiny ??= tinyToolModel(tasks, 80, 1e-2);

Deno.test({
  name: "a tiny model SFT-trained on tool calls calls the calculator and answers with its result",
  sanitizeResources: false,
  fn: async () => {
    const t0 = performance.now();
    const { model, loss, firstLoss } = await trained();
    console.log(
      `SFT ${firstLoss.toFixed(3)} → ${loss.toFixed(4)} in ${
        ((performance.now() - t0) / 1000).toFixed(1)
      } s`,
    );
    assert.ok(loss < 0.05, `the tool-call conversations are learnt (loss ${loss})`);
    const tools = builtinTools([]);
    const turns = new TurnBatcher(model, { greedy: true, maxNewTokens: 80 });
    const r = await runTask(turns.turn, tasks[0], tools);
    const [first, second] = r.turns;
    // turn 1: a well-formed calculate_math call with the question's expression
    assert.equal(first.outcomes.length, 1, first.text);
    const call = first.outcomes[0].call!;
    assert.equal(call.function.name, "calculate_math");
    assert.deepEqual(JSON.parse(call.function.arguments), { expression: "123+456" });
    // the loop ran it and fed the result back as a tool message
    assert.equal(first.outcomes[0].error, null);
    assert.equal(first.outcomes[0].message.content, "579");
    assert.equal(r.messages[3].role, "tool");
    // turn 2: the answer uses the result
    assert.equal(second.outcomes.length, 0);
    assert.match(r.final, /579/);
    const score = scoreEpisode(r, tasks[0]);
    assert.equal(score.correct, true);
    assert.equal(score.reward, 3); // 0.5 (one valid call per gt) + 2.5 (found), clipped at 3
    // and on the three tasks it saw
    const report = await evaluateToolUse(turns.turn, tasks, { tools });
    assert.equal(report.accuracy, 1);
    assert.equal(report.callsPerTask, 1);
    assert.equal(report.malformedRate, 0);
  },
});

Deno.test("DAPO's dynamic sampling keeps the groups whose episodes disagree on correctness", () => {
  assert.deepEqual(informativeRows([true, true, false, false, true, false], 2), [4, 5]);
  assert.deepEqual(informativeRows([true, false, true, true, false, false, false, false], 4), [
    0,
    1,
    2,
    3,
  ]);
  assert.deepEqual(informativeRows([true, true, true], 3), []);
});

Deno.test({
  name:
    "agentic RL: episodes mask tool observations out; deno task agent trains, resumes and scores",
  sanitizeResources: false,
  fn: async () => {
    const { model } = await trained();
    const tools = builtinTools([]);
    const settings = {
      tools,
      maxSeqLen: 1024,
      maxGenLen: 48,
      maxTotalLen: 2048,
      maxTurns: 3,
      numGenerations: 2,
      thinkingRatio: 0,
      temperature: 0.8,
      topP: 0.85,
      topK: 50,
      learningRate: 1e-4,
      totalUpdates: 2,
      accumulationSteps: 1,
      gradClip: 1,
      lossType: "cispo" as const,
      beta: 0.1,
      clipEpsilon: 0.2,
      epsilonHigh: 5,
      toolTimeoutMs: 1000,
      seed: 0,
    };
    const { rollout: r, episodes } = await playEpisodes(model, tasks.slice(0, 2), settings, 0);
    // DAPO's dynamic sampling: every episode here is correct, so no group has a correctness
    // signal and the step plays, scores and leaves the actor as it was
    const dapo = new AgentTrainer({
      ...settings,
      cfg: model.cfg,
      tokenizer: model.tokenizer,
      dynamicSampling: true,
    });
    const s0 = dapo.init(
      mapTree(model.params as unknown as Tree, (x) => x instanceof Tensor ? keep(affine(x, 1)) : x),
    );
    const [s1, out] = await dapo.step(s0, { tasks: tasks.slice(0, 2) });
    assert.equal(dapo.updates(s1), 0);
    assert.equal(s1.rollouts, 1);
    assert.equal((await out.scalars!.trained_groups.data())[0], 0);
    assert.equal((await out.scalars!.accuracy.data())[0], 1);
    assert.equal(r.rows, 4);
    const tok = model.tokenizer;
    for (let i = 0; i < r.rows; i++) {
      const e = episodes[i];
      assert.equal(e.result.turns.length, 2, "a call, then an answer");
      assert.equal(e.score.correct, true);
      // the sequence is the conversation as the template writes it (minus the last end-of-turn)
      const W = r.promptWidth + r.responseWidth, R = r.responseWidth;
      const prompt = [...r.ids.subarray(i * W, i * W + r.promptWidth)].filter((_, j) =>
        r.attention[i * W + j] === 1
      );
      const after = [...r.response.subarray(i * R, i * R + r.lengths[i])];
      const text = tok.decode([...prompt, ...after], { skipSpecialTokens: false });
      const full = tok.applyChatTemplate(e.result.messages, { tools: e.task.tools });
      assert.equal(text + "<|im_end|>\n", full);
      // the tool response is in the sequence but not in the loss
      const resp = [
        ...r.response.subarray(i * r.responseWidth, i * r.responseWidth + r.lengths[i]),
      ];
      const mask = [...r.mask.subarray(i * r.responseWidth, i * r.responseWidth + r.lengths[i])];
      const masked = tok.decode(resp.filter((_, j) => mask[j] === 0), { skipSpecialTokens: false });
      const trained = tok.decode(resp.filter((_, j) => mask[j] === 1), {
        skipSpecialTokens: false,
      });
      assert.match(masked, /<tool_response>\n\d+\n<\/tool_response>/);
      assert.doesNotMatch(trained, /tool_response/);
      assert.match(trained, /<tool_call>[\s\S]*calculate_math[\s\S]*<\/tool_call>/);
      assert.ok(mask.every((m, j) => m === 0 || r.oldLogp[i * r.responseWidth + j] < 0));
    }

    // deno task agent on the same tasks: two steps, interrupted after one and resumed
    const dir = await Deno.makeTempDir();
    try {
      await saveModel(`${dir}/start`, model);
      const argv = [
        "--from_weight",
        `${dir}/start`,
        "--save_dir",
        dir,
        "--checkpoint_dir",
        `${dir}/ck`,
        "--batch_size",
        "2",
        "--num_generations",
        "2",
        "--max_gen_len",
        "48",
        "--learning_rate",
        "1e-4",
        "--max_steps",
        "2",
        "--eval_limit",
        "3",
        "--eval_samples",
        "2",
        "--thinking_ratio",
        "0",
      ];
      const lines: string[] = [];
      const opts = {
        tasks: { train: tasks, heldout: tasks },
        handleSigint: false,
        log: (m: string) => lines.push(m),
      };
      const first = await runAgent(argv, { ...opts, stopAfter: 1 });
      assert.equal(first!.interrupted, true);
      assert.match(
        lines.join("\n"),
        /Held-out before, greedy: accuracy 3\/3 = 100\.0%, calls\/task 1\.00, malformed 0\.0%/,
      );
      // every held-out task sampled twice (the model copies surely: 6 of 6 at T 0.9)
      assert.equal(first!.sampledBefore!.tasks, 6);
      assert.match(lines.join("\n"), /Held-out before, sampled ×2: accuracy \d\/6/);
      const second = await runAgent([...argv, "--from_resume", "1"], opts);
      assert.equal(second!.interrupted, false);
      assert.equal(second!.steps, 2);
      assert.ok(second!.after && second!.after.tasks === 3);
      assert.equal(second!.sampledAfter!.tasks, 6);
      assert.equal(second!.gain, null); // a resumed run has no "before" to pair with
      // a fresh one-step run pairs its sampled scorings task by task
      lines.length = 0;
      const third = (await runAgent(
        [
          ...argv.map((x, i) => argv[i - 1] === "--max_steps" ? "1" : x),
          "--save_weight",
          "agent1",
        ],
        opts,
      ))!;
      const acc = (r: typeof third.sampledBefore) => r!.outcomes.map((o) => (o.correct ? 1 : 0));
      const d = [0, 1, 2].map((t) =>
        (acc(third.sampledAfter)[2 * t] + acc(third.sampledAfter)[2 * t + 1] -
          acc(third.sampledBefore)[2 * t] - acc(third.sampledBefore)[2 * t + 1]) / 2
      );
      assert.ok(Math.abs(third.gain!.delta - (d[0] + d[1] + d[2]) / 3) < 1e-12);
      assert.match(
        lines.join("\n"),
        /Held-out sampled accuracy gain: -?[\d.]+ ± [\d.]+ points \(SE over 3 tasks/,
      );
      const recs = (await Deno.readTextFile(second!.files.metrics)).trim().split("\n").map((l) =>
        JSON.parse(l)
      );
      const scalars = recs.filter((x) => x.scalars).map((x) => x.scalars);
      assert.ok(scalars.length >= 2);
      for (const k of ["reward", "accuracy", "calls", "malformed", "kl", "episode_tokens"]) {
        assert.ok(Number.isFinite(scalars[0][k]), `metric ${k}`);
      }
      assert.ok((await Deno.stat(`${dir}/agent_64.safetensors`)).isFile);
      assert.ok((await Deno.stat(`${dir}/agent_64_reward.svg`)).isFile);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

import assert from "node:assert/strict";
import { builtinTools } from "./builtin.ts";
import { TurnBatcher } from "./model.ts";
import { evaluateToolUse, runTask } from "./evaluate.ts";
import { scoreEpisode } from "./reward.ts";
import { minimindMathTasks } from "./tasks.ts";
import { tinyToolModel } from "../tests/_agent.ts";

Deno.test({
  name: "a tiny model SFT-trained on tool calls calls the calculator and answers with its result",
  sanitizeResources: false,
  fn: async () => {
    const tasks = minimindMathTasks().slice(0, 3);
    const t0 = performance.now();
    const { model, loss, firstLoss } = await tinyToolModel(tasks, 80, 1e-2);
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

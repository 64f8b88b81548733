/**
 * Shared fixture of the agent tests: a tiny MiniMind (H 64, 2 layers, minimind-3's tokenizer)
 * trained with SFT for a few hundred fast steps on a few tool-call conversations, so that it calls
 * the calculator on the questions it saw.
 * @module
 */
import { init, type MiniMindParams } from "../nn/model/minimind.ts";
import { config } from "../nn/model/minimind_config.ts";
import { key } from "../nn/random.ts";
import { scope } from "../nn/scope.ts";
import { tensor } from "../nn/creation.ts";
import { SFTDataset } from "../data/datasets.ts";
import { adamw } from "../train/optim.ts";
import { makeTrainStep } from "../train/step.ts";
import { lmLoss } from "../train/lm.ts";
import type { Tree } from "../nn/tree.ts";
import type { ChatModel } from "../agent/model.ts";
import { builtinTools } from "../agent/builtin.ts";
import { type AgentTask, sftRecord } from "../agent/tasks.ts";
import { tokenizer } from "./_serve.ts";

/**
 * SFT-trains a tiny model on the tasks' reference tool-call conversations.
 *
 * @param tasks tasks with reference calls
 * @param steps optimizer steps (one batch of every conversation per step)
 * @returns the model and the final loss
 */
export async function tinyToolModel(
  tasks: readonly AgentTask[],
  steps = 300,
  lr = 5e-3,
  log?: (step: number, loss: number) => void,
): Promise<{ model: ChatModel; loss: number; firstLoss: number }> {
  const tok = await tokenizer();
  const cfg = config("minimind2-small", { hiddenSize: 64, numHiddenLayers: 2 });
  const tools = builtinTools([]);
  const records = await Promise.all(tasks.map((t) => sftRecord(t, tools)));
  const probe = new SFTDataset(records, tok, { maxLength: 4096, addSystemRatio: 0 });
  const longest = Math.max(...records.map((_, i) => tok.encode(probe.prompt(i)).length));
  // keep every empty think block: the generation prompt always ends with one
  const ds = new SFTDataset(records, tok, {
    maxLength: longest,
    addSystemRatio: 0,
    emptyThinkRatio: 1,
  });
  const B = ds.length, T = ds.maxLength;
  const ids = new Int32Array(B * T), labels = new Int32Array(B * T);
  for (let i = 0; i < B; i++) {
    const s = ds.get(i);
    ids.set(s.inputIds, i * T);
    labels.set(s.labels, i * T);
  }
  const step = makeTrainStep(lmLoss(cfg), adamw({ lr }), { hasAux: true });
  let state = step.init(init(cfg, key(1)) as unknown as Tree);
  const batch = { ids: tensor(ids, [B, T], "i32"), labels: tensor(labels, [B, T], "i32") };
  let loss = NaN, firstLoss = NaN;
  for (let s = 0; s < steps; s++) {
    const [next, out] = scope(() => step(state, batch));
    state = next;
    if (s === 0 || s === steps - 1 || (log && s % 20 === 0)) {
      const v = (await out.loss.data())[0];
      if (s === 0) firstLoss = v;
      loss = v;
      log?.(s, v);
    }
    out.loss.dispose();
    (out.aux as { dispose(): void } | null)?.dispose();
  }
  batch.ids.dispose();
  batch.labels.dispose();
  return {
    model: { cfg, params: state.params as unknown as MiniMindParams, tokenizer: tok },
    loss,
    firstLoss,
  };
}

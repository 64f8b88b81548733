/**
 * The training loop of every trainer (MiniMind's `train_epoch`), read top to bottom like llm.c's
 * `main`: open or resume the run, then per micro-batch set the lr (`get_lr(epoch·iters + step,
 * epochs·iters, lr)`), run the trainer's step, read the previous step's report late (after this
 * one is encoded, so WebGPU never stalls), log, and save weights + a resume checkpoint every
 * `saveInterval` steps. Ctrl-C saves a resume checkpoint and stops; a NaN/Inf loss stops the run
 * naming the step, the last checkpoint left intact.
 *
 * What is trained is a {@link Trainer} (`trainer.ts`): `stepTrainer(makeTrainStep(…))` for
 * pretraining and SFT, or a PPO/GRPO/DPO/LoRA trainer's own step and state, which gets all of
 * the bookkeeping here without copying it.
 * @module
 */
import { join } from "node:path";
import type { Tree } from "../nn/tree.ts";
import { dispose } from "../nn/tree.ts";
import { scope } from "../nn/scope.ts";
import type { Batch, DataLoader } from "../data/loader.ts";
import { disposeOutput, disposeReplaced } from "./step.ts";
import { getLr } from "./schedule.ts";
import { loadResume, saveResume } from "./checkpoint.ts";
import type { ResumeInfo } from "./checkpoint.ts";
import { RunMetrics, writeLossCurve } from "./metrics.ts";
import type { StepRecord } from "./metrics.ts";
import { Progress } from "./progress.ts";
import { onCtrlC } from "./interrupt.ts";
import type { LoopHyper, Trainer } from "./trainer.ts";

/** What the loop needs. */
export interface LoopOptions<S extends Tree, B, D extends object> {
  /** What is trained: its state, step and checkpoint fields (see {@link Trainer}). */
  trainer: Trainer<S, B>;
  /** Initial params (given to `trainer.init`; disposed when a resume checkpoint replaces them). */
  params: Tree;
  /** File stem, e.g. `pretrain_512` (weights `<saveDir>/<stem>.safetensors`). */
  stem: string;
  /** Where weights, metrics and the loss curve go. */
  saveDir: string;
  /** Where the resume checkpoint goes (`<checkpointDir>/<stem>_resume.safetensors`). */
  checkpointDir: string;
  /** Batches (seeded shuffle per epoch; skips consumed batches on resume). */
  loader: DataLoader<D>;
  /** Turns a batch of typed arrays into the step's input (called inside a scope). */
  toBatch: (batch: Batch<D>) => B;
  /** Passes over the data. */
  epochs: number;
  /** Peak learning rate of `get_lr`. */
  learningRate: number;
  /** Log every N micro-batches. */
  logInterval: number;
  /** Save every N micro-batches. */
  saveInterval: number;
  /** Continue from the resume checkpoint if there is one. */
  resume: boolean;
  /** Data-order seed (the loader's). */
  seed: number;
  /** Stop after this many micro-batches in all (the lr schedule spans them). */
  maxSteps?: number;
  /** Stop (saving a resume checkpoint) after this many micro-batches of this process (tests). */
  stopAfter?: number;
  /** Writes the final weights (atomically) for `params`. */
  saveWeights: (params: Tree, path: string) => Promise<void>;
  /** Extra values stored in the resume checkpoint (run arguments, model config). */
  extra?: Record<string, unknown>;
  /** Output (default: a `Progress` on stdout). */
  progress?: Progress;
  /** Save and exit on SIGINT (default true). */
  handleSigint?: boolean;
}

/** What the loop returns. */
export interface LoopResult {
  /** Final params (owned by the caller now). */
  params: Tree;
  /** Micro-batches run in all (including those of resumed runs). */
  steps: number;
  /** Optimizer updates in all. */
  updates: number;
  /** Tokens processed in all. */
  tokens: number;
  /** Training seconds in all. */
  elapsedS: number;
  /** Every loss read in this process, in order. */
  losses: number[];
  /** The run stopped early (Ctrl-C or `stopAfter`) after saving a resume checkpoint. */
  interrupted: boolean;
  /** Paths written. */
  files: RunFiles;
}

/** The files of a run. */
export interface RunFiles {
  /** Final weights. */
  weights: string;
  /** Resume checkpoint. */
  resume: string;
  /** Metrics JSONL. */
  metrics: string;
  /** Loss curve SVG. */
  lossCurve: string;
}

/** An opened run: its files, shape, state and where it starts. */
interface Run<S extends Tree> {
  files: RunFiles;
  iters: number;
  total: number;
  state: S;
  start: { epoch: number; step: number };
  meter: RunMetrics;
  progress: Progress;
}

/**
 * Runs the loop: batch → step → log → save.
 *
 * @param o the trainer, the data and the run's settings
 * @returns the final params and counters
 */
export async function runTraining<S extends Tree, B, D extends object>(
  o: LoopOptions<S, B, D>,
): Promise<LoopResult> {
  if (!o.trainer.step && !o.trainer.stepAsync) {
    throw new Error(`Cannot train ${o.stem}: the trainer has neither step nor stepAsync`);
  }
  const run = await openRun(o);
  const { trainer, loader } = o;
  const { meter, iters, total } = run;
  const ctrlC = onCtrlC(o.handleSigint ?? true, (m) => run.progress.line(m));
  let pending: StepRecord | null = null; // the last step, its report not read yet
  let interrupted = false;
  try {
    epochs: for (let epoch = run.start.epoch; epoch < o.epochs; epoch++) {
      const skip = epoch === run.start.epoch ? run.start.step : 0;
      if (epoch * iters + skip >= total) break;
      meter.startEpoch(skip);
      let hyper: LoopHyper = { lr: o.learningRate };
      for (const batch of loader.batches(epoch, { skip })) {
        // batch: where it stands, its learning rate
        const step = batch.step + 1; // 1-based within the epoch, as MiniMind's enumerate(start=1)
        const global = epoch * iters + step, last = step === iters || global === total;
        hyper = { lr: getLr(global, total, o.learningRate) };
        // step
        if (meter.runSteps === 0) await warmup(run, o, batch, hyper);
        const [next, out] = trainer.stepAsync
          ? await trainer.stepAsync(run.state, o.toBatch(batch), hyper)
          : scope(() => trainer.step!(run.state, o.toBatch(batch), hyper));
        run.state = next;
        const at = { epoch, step, lr: hyper.lr, updates: trainer.updates(next) };
        const done = meter.stepped(out, { ...at, tokens: batch.batch * batch.seqLen });
        // log: the previous step's loss is read now that this one is encoded
        if (pending) await meter.settle(pending, false);
        pending = done;
        meter.draw();
        await ctrlC.poll();
        interrupted = ctrlC.requested || meter.runSteps === o.stopAfter;
        const isLog = step % o.logInterval === 0 || last || interrupted;
        const isSave = step % o.saveInterval === 0 || last;
        if (isLog || isSave) {
          await meter.settle(pending, isLog); // never save after a non-finite loss
          pending = null;
        }
        // save
        if (interrupted) await saveStopped(run, o);
        else if (isSave) await saveRun(run, o, true);
        if (interrupted || global >= total) break epochs;
      }
      await flushEpoch(run, o, hyper);
    }
    if (pending) await meter.settle(pending, true);
    pending = null;
    if (!interrupted) await saveWeightsAndCurve(run, o);
  } catch (e) {
    if (pending) disposeOutput(pending.out);
    dispose(run.state);
    throw e;
  } finally {
    run.progress.done();
    ctrlC.dispose();
  }
  return finish(run, o, interrupted);
}

/** Opens the run: its files, the state (resumed from the checkpoint or fresh), the metrics. */
async function openRun<S extends Tree, B, D extends object>(
  o: LoopOptions<S, B, D>,
): Promise<Run<S>> {
  const progress = o.progress ?? new Progress();
  const files: RunFiles = {
    weights: join(o.saveDir, `${o.stem}.safetensors`),
    resume: join(o.checkpointDir, `${o.stem}_resume.safetensors`),
    metrics: join(o.saveDir, `${o.stem}_metrics.jsonl`),
    lossCurve: join(o.saveDir, `${o.stem}_loss.svg`),
  };
  await Deno.mkdir(o.saveDir, { recursive: true });
  const iters = o.loader.batchesPerEpoch;
  if (iters === 0) throw new Error(`Cannot train ${o.stem}: the dataset yields no batches`);
  const planned = o.epochs * iters;
  const total = o.maxSteps ? Math.min(o.maxSteps, planned) : planned;
  let state: S, resumed: ResumeInfo | null = null;
  if (o.resume && (await Deno.stat(files.resume).catch(() => null))) {
    const r = await loadResume(files.resume, (saved, path) => o.trainer.restore(saved, path));
    checkResumable(files.resume, r.info, iters, o.extra);
    state = r.state;
    resumed = r.info;
    dispose(o.params); // the checkpoint's params replace them
    progress.line(
      `Resuming from ${files.resume}: epoch ${resumed.epoch + 1}, step ${resumed.step}/${iters}, ` +
        `${o.trainer.updates(state)} updates done`,
    );
  } else {
    if (o.resume) progress.line(`No checkpoint at ${files.resume}: starting from scratch`);
    state = o.trainer.init(o.params);
  }
  const meter = new RunMetrics({
    metricsPath: files.metrics,
    resumePath: files.resume,
    progress,
    epochs: o.epochs,
    iters,
    total,
    resumed,
  });
  const start = { epoch: resumed?.epoch ?? 0, step: resumed?.step ?? 0 };
  return { files, iters, total, state, start, meter, progress };
}

/** A checkpoint only resumes the run it was written by (same data shape, same model). */
function checkResumable(
  path: string,
  info: ResumeInfo,
  iters: number,
  extra: Record<string, unknown> | undefined,
): void {
  if (info.iters !== iters) {
    throw new Error(
      `Cannot resume from ${path}: it was saved with ${info.iters} batches per epoch, ` +
        `this run has ${iters} (the data, --batch_size or --max_seq_len changed)`,
    );
  }
  const want = extra?.config, got = info.extra?.config;
  if (want !== undefined && got !== undefined && JSON.stringify(want) !== JSON.stringify(got)) {
    throw new Error(
      `Cannot resume from ${path}: it holds a different model (${
        JSON.stringify(got)
      }); delete it or change --save_weight`,
    );
  }
}

/** Compiles the step's GPU pipelines before the first step, not inside it (no-op on CPU). */
async function warmup<S extends Tree, B, D extends object>(
  run: Run<S>,
  o: LoopOptions<S, B, D>,
  batch: Batch<D>,
  hyper: LoopHyper,
): Promise<void> {
  if (!o.trainer.warmup) return;
  const b = o.toBatch(batch);
  await o.trainer.warmup(run.state, b, hyper);
  dispose(b as Tree);
}

/** Saves the resume checkpoint (and the weights) at the current position, then the loss curve. */
async function saveRun<S extends Tree, B, D extends object>(
  run: Run<S>,
  o: LoopOptions<S, B, D>,
  withWeights: boolean,
): Promise<void> {
  const { meter } = run;
  const info: ResumeInfo = {
    ...meter.position,
    epochs: o.epochs,
    iters: run.iters,
    seed: o.seed,
    tokens: meter.tokens,
    elapsedS: meter.elapsed(),
    worldSize: 1,
    extra: o.extra ?? {},
  };
  if (withWeights) await o.saveWeights(o.trainer.weights(run.state), run.files.weights);
  await saveResume(run.files.resume, run.state, info);
  await writeLossCurve(run.files.metrics, run.files.lossCurve, o.stem);
  meter.saved();
}

/** End of an epoch: a partial accumulation group is applied and saved (MiniMind HEAD does). */
async function flushEpoch<S extends Tree, B, D extends object>(
  run: Run<S>,
  o: LoopOptions<S, B, D>,
  hyper: LoopHyper,
): Promise<void> {
  const flushed = o.trainer.flush?.(run.state, hyper);
  if (!flushed) return;
  run.state = flushed;
  await saveRun(run, o, true);
}

/** Ctrl-C or `stopAfter`: a resume checkpoint (no weights) at the current position. */
async function saveStopped<S extends Tree, B, D extends object>(
  run: Run<S>,
  o: LoopOptions<S, B, D>,
): Promise<void> {
  await saveRun(run, o, false);
  const { epoch, step } = run.meter.position;
  run.progress.done();
  run.progress.line(
    `Saved ${run.files.resume} at epoch ${epoch + 1} step ${step}/${run.iters}; ` +
      `continue with --from_resume 1`,
  );
}

/** The final weights and loss curve of a run that was not interrupted. */
async function saveWeightsAndCurve<S extends Tree, B, D extends object>(
  run: Run<S>,
  o: LoopOptions<S, B, D>,
): Promise<void> {
  await o.saveWeights(o.trainer.weights(run.state), run.files.weights);
  await writeLossCurve(run.files.metrics, run.files.lossCurve, o.stem);
}

/** Hands the weights to the caller, frees the rest of the state, reports the counters. */
function finish<S extends Tree, B, D extends object>(
  run: Run<S>,
  o: LoopOptions<S, B, D>,
  interrupted: boolean,
): LoopResult {
  const params = o.trainer.weights(run.state);
  disposeReplaced(run.state, params);
  const { meter } = run;
  return {
    params,
    steps: meter.position.epoch * run.iters + meter.position.step,
    updates: o.trainer.updates(run.state),
    tokens: meter.tokens,
    elapsedS: meter.elapsed(),
    losses: meter.losses,
    interrupted,
    files: run.files,
  };
}

/**
 * The shared training loop of every trainer (MiniMind's `train_epoch`): per micro-batch it sets
 * the lr with `get_lr(epoch·iters + step, epochs·iters, lr)`, runs the train step, reads the
 * previous step's loss (late: after the next step is encoded, so WebGPU never stalls), logs,
 * saves weights + a resume checkpoint every `saveInterval` steps, and on Ctrl-C saves a resume
 * checkpoint before exiting. A NaN/Inf loss stops the run with the step named and the last
 * checkpoint left intact.
 * @module
 */
import { join } from "node:path";
import type { Tree } from "../nn/tree.ts";
import { dispose, tensors } from "../nn/tree.ts";
import type { Tensor } from "../nn/tensor.ts";
import { scope } from "../nn/scope.ts";
import type { Batch, DataLoader } from "../data/loader.ts";
import type { Optimizer } from "./optim.ts";
import type { LossFn, StepOutput, TrainState } from "./step.ts";
import { disposeState, makeTrainStep } from "./step.ts";
import { getLr } from "./schedule.ts";
import { atomicWrite, loadResume, saveResume } from "./checkpoint.ts";
import type { ResumeInfo } from "./checkpoint.ts";
import { lossCurveSvg, MetricsWriter } from "./metrics.ts";
import { formatLogLine, Progress } from "./progress.ts";
import type { ProgressInfo } from "./progress.ts";

/** A non-finite loss stopped the run. */
export class NonFiniteLossError extends Error {
  /** @param message names the step and the checkpoint left intact */
  constructor(message: string) {
    super(message);
    this.name = "NonFiniteLossError";
  }
}

/** What the loop needs. */
export interface LoopOptions<S extends object, B> {
  /** File stem, e.g. `pretrain_512` (weights `<saveDir>/<stem>.safetensors`). */
  stem: string;
  /** Where weights, metrics and the loss curve go. */
  saveDir: string;
  /** Where the resume checkpoint goes (`<checkpointDir>/<stem>_resume.safetensors`). */
  checkpointDir: string;
  /** Batches (seeded shuffle per epoch; skips consumed batches on resume). */
  loader: DataLoader<S>;
  /** Turns a batch of typed arrays into the loss function's input (called inside a scope). */
  toBatch: (batch: Batch<S>) => B;
  /** (params, batch) → [loss, auxLoss] (the loss includes aux; aux is reported separately). */
  lossFn: LossFn<B, Tensor>;
  /** The update rule. */
  optimizer: Optimizer;
  /** Initial params (ignored when a resume checkpoint is loaded; the loop owns them). */
  params: Tree;
  /** Passes over the data. */
  epochs: number;
  /** Peak learning rate of `get_lr`. */
  learningRate: number;
  /** Micro-batches per update. */
  accumulationSteps: number;
  /** Global-norm clip (0 = off). */
  gradClip: number;
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
  files: { weights: string; resume: string; metrics: string; lossCurve: string };
}

interface Pending<A extends Tree> {
  out: StepOutput<A>;
  epoch: number;
  step: number;
  lr: number;
  /** Tokens processed up to and including this step. */
  tokens: number;
  /** Optimizer updates done after this step. */
  updates: number;
  /**
   * When the step call returned: on CPU the step is done then; on WebGPU the loop is throttled by
   * reading the previous loss, so the gaps between these instants are the step period either way.
   */
  doneAt: number;
}

/**
 * Runs the loop.
 *
 * @param o everything the loop needs
 * @returns the final params and counters
 */
export async function runTraining<S extends object, B>(
  o: LoopOptions<S, B>,
): Promise<LoopResult> {
  const progress = o.progress ?? new Progress();
  const files = {
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

  const step = makeTrainStep<B, Tensor>(o.lossFn, o.optimizer, {
    accumulationSteps: o.accumulationSteps,
    gradClip: o.gradClip,
    hasAux: true,
  });

  // resume or start fresh
  let state: TrainState;
  let startEpoch = 0, startStep = 0, tokens = 0, elapsedBefore = 0;
  let resumed: ResumeInfo | null = null;
  if (o.resume && (await Deno.stat(files.resume).catch(() => null))) {
    const r = await loadResume(files.resume);
    resumed = r.info;
    state = r.state;
    startEpoch = r.info.epoch;
    startStep = r.info.step;
    tokens = r.info.tokens;
    elapsedBefore = r.info.elapsedS;
    if (r.info.iters !== iters) {
      throw new Error(
        `Cannot resume from ${files.resume}: it was saved with ${r.info.iters} batches per epoch, ` +
          `this run has ${iters} (the data, --batch_size or --max_seq_len changed)`,
      );
    }
    const want = o.extra?.config, got = r.info.extra?.config;
    if (want !== undefined && got !== undefined && JSON.stringify(want) !== JSON.stringify(got)) {
      throw new Error(
        `Cannot resume from ${files.resume}: it holds a different model (${
          JSON.stringify(got)
        }); delete it or change --save_weight`,
      );
    }
    for (const t of tensors(o.params)) t.dispose(); // the checkpoint's params replace them
    progress.line(
      `Resuming from ${files.resume}: epoch ${startEpoch + 1}, step ${startStep}/${iters}, ` +
        `${state.updates} updates done`,
    );
  } else {
    if (o.resume) progress.line(`No checkpoint at ${files.resume}: starting from scratch`);
    state = step.init(o.params);
  }
  const metrics = new MetricsWriter(files.metrics, { truncate: resumed === null });

  // Ctrl-C: finish the step in flight, save, exit
  let stopRequested = false;
  const onSigint = () => {
    if (stopRequested) {
      progress.line("Second Ctrl-C: exiting without saving");
      Deno.exit(130);
    }
    stopRequested = true;
    progress.line("Ctrl-C: saving a resume checkpoint after this step (Ctrl-C again to quit now)");
  };
  const sigint = o.handleSigint ?? true;
  if (sigint) Deno.addSignalListener("SIGINT", onSigint);

  const t0 = performance.now();
  const elapsed = () => elapsedBefore + (performance.now() - t0) / 1000;
  const losses: number[] = [];
  let lastGood: { epoch: number; step: number } | null = resumed
    ? { epoch: resumed.epoch, step: resumed.step }
    : null;
  let pending: Pending<Tensor> | null = null;
  let lastLoss = NaN, lastAux = 0;
  let epochStart = performance.now(), epochStartStep = 0;
  let logTokens = tokens, logTime = performance.now();
  let recTokens = tokens, recTime = performance.now();
  let runSteps = 0;
  let interrupted = false;
  let lastYield = performance.now();
  let position = { epoch: startEpoch, step: startStep };

  const info = (): ProgressInfo => {
    const done = position.step - epochStartStep;
    const per = done > 0 ? (performance.now() - epochStart) / 1000 / done : NaN;
    const dt = (performance.now() - logTime) / 1000;
    return {
      epoch: position.epoch,
      epochs: o.epochs,
      step: position.step,
      iters,
      loss: lastLoss,
      auxLoss: lastAux,
      lr: getLr(position.epoch * iters + position.step, total, o.learningRate),
      tokensPerS: dt > 0 ? (tokens - logTokens) / dt : 0,
      etaS: per * (Math.min(iters, total - position.epoch * iters) - position.step),
    };
  };

  // Reads a finished step's loss (a sync point on WebGPU) and logs it.
  const settle = async (p: Pending<Tensor>, log: boolean) => {
    const loss = await p.out.loss.item(); // sync point
    const aux = p.out.aux ? await p.out.aux.item() : 0;
    const norm = log && p.out.gradNorm ? await p.out.gradNorm.item() : null;
    p.out.loss.dispose();
    p.out.aux?.dispose();
    p.out.gradNorm?.dispose();
    if (!Number.isFinite(loss)) {
      const where = lastGood
        ? `the last checkpoint (${files.resume}, epoch ${
          lastGood.epoch + 1
        } step ${lastGood.step}) is intact`
        : "no checkpoint was written in this run";
      throw new NonFiniteLossError(
        `Loss is ${loss} at epoch ${p.epoch + 1} step ${p.step}/${iters} (global step ${
          p.epoch * iters + p.step
        }, lr ${p.lr.toExponential(3)}): stopping; ${where}`,
      );
    }
    losses.push(loss);
    lastLoss = loss, lastAux = aux;
    // one metrics record per step (the loss is read anyway); a log line every logInterval. The
    // rate is timed between steps' ends, not between reads: a log step reads two losses at once.
    const now = performance.now();
    const dt = (p.doneAt - recTime) / 1000;
    metrics.write({
      update: p.updates,
      epoch: p.epoch,
      step: p.step,
      globalStep: p.epoch * iters + p.step,
      loss,
      auxLoss: aux,
      lr: p.lr,
      gradNorm: norm,
      tokensPerS: dt > 0 ? (p.tokens - recTokens) / dt : 0,
      tokens: p.tokens,
      elapsedS: elapsed(),
    });
    recTokens = p.tokens, recTime = p.doneAt;
    if (log) {
      const pi = { ...info(), epoch: p.epoch, step: p.step, loss, auxLoss: aux, lr: p.lr };
      progress.line(formatLogLine(pi));
      logTokens = tokens, logTime = now;
    }
  };

  const saveAll = async (withWeights: boolean) => {
    const resumeInfo: ResumeInfo = {
      epoch: position.epoch,
      step: position.step,
      epochs: o.epochs,
      iters,
      seed: o.seed,
      tokens,
      elapsedS: elapsed(),
      worldSize: 1,
      extra: o.extra ?? {},
    };
    if (withWeights) await o.saveWeights(state.params, files.weights);
    await saveResume(files.resume, state, resumeInfo);
    await writeCurve();
    lastGood = { epoch: position.epoch, step: position.step };
  };
  const writeCurve = async () => {
    const recs = MetricsWriter.read(files.metrics);
    if (recs.length) {
      await atomicWrite(files.lossCurve, [new TextEncoder().encode(lossCurveSvg(recs, o.stem))]);
    }
  };

  try {
    outer: for (let epoch = startEpoch; epoch < o.epochs; epoch++) {
      const skip = epoch === startEpoch ? startStep : 0;
      if (epoch * iters + skip >= total) break;
      epochStart = performance.now(), epochStartStep = skip;
      let lr = o.learningRate;
      for (const batch of o.loader.batches(epoch, { skip })) {
        const s = batch.step + 1; // 1-based within the epoch, as MiniMind's enumerate(start=1)
        const global = epoch * iters + s;
        lr = getLr(global, total, o.learningRate);
        if (runSteps === 0) {
          // compile the step's GPU pipelines now, not inside the first step (no-op on CPU)
          const wb = o.toBatch(batch);
          await step.warmup(state, wb, { lr });
          dispose(wb as Tree);
        }
        const [next, out] = scope(() => step(state, o.toBatch(batch), { lr }));
        const doneAt = performance.now();
        state = next;
        tokens += batch.batch * batch.seqLen;
        runSteps++;
        position = { epoch, step: s };
        // read the previous step's loss now that this one is encoded
        if (pending) await settle(pending, false);
        pending = { out, epoch, step: s, lr, tokens, updates: state.updates, doneAt };
        const isLog = s % o.logInterval === 0 || s === iters || global === total;
        const isSave = s % o.saveInterval === 0 || s === iters || global === total;
        progress.update(info());
        // let Ctrl-C (a macrotask) in: CPU steps never leave the microtask queue otherwise
        if (performance.now() - lastYield > 50) {
          await new Promise((r) => setTimeout(r, 0));
          lastYield = performance.now();
        }
        const stop = stopRequested || (o.stopAfter !== undefined && runSteps >= o.stopAfter);
        if (isLog || isSave || stop) {
          await settle(pending, isLog || stop); // never save after a non-finite loss
          pending = null;
        }
        if (stop) {
          await saveAll(false);
          progress.done();
          progress.line(
            `Saved ${files.resume} at epoch ${
              epoch + 1
            } step ${s}/${iters}; continue with --from_resume 1`,
          );
          interrupted = true;
          break outer;
        }
        if (isSave) await saveAll(true);
        if (global >= total) break outer;
      }
      // MiniMind HEAD flushes a partial accumulation group at the end of an epoch
      if (state.micro > 0) {
        const [next, norm] = step.flush(state, { lr });
        state = next;
        norm?.dispose();
        await saveAll(true);
      }
    }
    if (pending) await settle(pending, true);
    pending = null;
    if (!interrupted) {
      await o.saveWeights(state.params, files.weights);
      await writeCurve();
    }
    progress.done();
  } catch (e) {
    progress.done();
    if (pending) {
      pending.out.loss.dispose();
      pending.out.aux?.dispose();
      pending.out.gradNorm?.dispose();
    }
    disposeState(state);
    throw e;
  } finally {
    if (sigint) Deno.removeSignalListener("SIGINT", onSigint);
  }
  const params = state.params;
  disposeState({ ...state, params: null });
  return {
    params,
    steps: position.epoch * iters + position.step,
    updates: state.updates,
    tokens,
    elapsedS: elapsed(),
    losses,
    interrupted,
    files,
  };
}

/**
 * MiniMind.ts: train a small LLM from scratch in TypeScript — tensors, autodiff, a CPU and a
 * WebGPU backend, the MiniMind model, tokenizer, trainers and an OpenAI-compatible server.
 *
 * ```ts
 * import * as mm from "@minimind/ts";
 * const x = mm.tensor([[1, 2], [3, 4]]);
 * const [loss, grads] = mm.valueAndGrad((w: mm.Tensor) => mm.sum(mm.matmul(x, w)))(mm.ones([2, 2]));
 * ```
 * @module
 */
export { Tensor } from "./nn/tensor.ts";
export type { DType, TypedArray } from "./nn/dtype.ts";
export { arange, full, fullLike, ones, scalar, tensor, zeros, zerosLike } from "./nn/creation.ts";
export type { CreateOptions, NestedArray } from "./nn/creation.ts";
export { keep, scope } from "./nn/scope.ts";
export * as tree from "./nn/tree.ts";
export type { Leaf, TensorTree, Tree } from "./nn/tree.ts";
export * as random from "./nn/random.ts";
export type { Key } from "./nn/random.ts";
export { checkpoint, customVjp, grad, stopGradient, valueAndGrad, vjp } from "./nn/autodiff.ts";
export type {
  AuxOf,
  GradOf,
  GradOptions,
  GradsAt,
  GradsOf,
  GradTree,
  VjpFn,
} from "./nn/autodiff.ts";
export { defaultBackend, setBackend, setBackendFromFlag } from "./nn/backend/select.ts";
export type { BackendName, SetBackendOptions } from "./nn/backend/select.ts";
export type { Backend, BackendCounters, Storage } from "./nn/backend/backend.ts";
export { apply } from "./nn/apply.ts";
export { defineOp, NONDIFF } from "./nn/op.ts";
export type {
  Call,
  Example,
  InputSpec,
  KernelOp,
  Meta,
  NoParams,
  OpCommon,
  OpDef,
  ViewOp,
  Vjp,
  VjpContext,
  WgslDevice,
  WgslKernel,
  WgslPlan,
  WgslScratch,
} from "./nn/op.ts";
// the ops, by name (JAX's lax style); their definitions (`*Op`, `OPS`) are under `ops`
export {
  abs,
  adamwUpdate,
  add,
  affine,
  argmax,
  attention,
  broadcastTo,
  cast,
  concat,
  cos,
  crossEntropy,
  div,
  embedding,
  equal,
  exp,
  expandDims,
  floor,
  greater,
  greaterEqual,
  less,
  lessEqual,
  log,
  logSoftmax,
  logsumexp,
  lossScaleUpdate,
  matmul,
  max,
  maximum,
  mean,
  minimum,
  mul,
  neg,
  notEqual,
  pad,
  pow,
  powScalar,
  reciprocal,
  relu,
  reshape,
  rmsNorm,
  rope,
  rsqrt,
  sample,
  scatterAdd,
  sigmoid,
  sign,
  silu,
  sin,
  slice,
  sliceAxis,
  softmax,
  sqrt,
  square,
  squeeze,
  stack,
  step,
  sub,
  sum,
  sumSquares,
  swiglu,
  takeAlongAxis,
  tanh,
  topk,
  transpose,
  where,
} from "./nn/ops/mod.ts";
export type {
  AdamwParams,
  AttentionOptions,
  CrossEntropyOptions,
  LossScaleParams,
  SampleOptions,
} from "./nn/ops/mod.ts";
export * as ops from "./nn/ops/mod.ts";
export {
  config,
  configFromHF,
  configToHF,
  defaultIntermediateSize,
  PRESETS,
  YARN_DEFAULTS,
} from "./nn/model/minimind_config.ts";
export {
  countParams,
  forward,
  init,
  lossFromLogits,
  paramsFromFlat,
  paramShapes,
} from "./nn/model/minimind.ts";
export {
  cacheLength,
  cacheRows,
  concatCacheRows,
  disposeCache,
  dropCacheSteps,
  selectCacheRows,
} from "./nn/model/layers/kv_cache.ts";
export type {
  ConfigFromHFOptions,
  ConfigOverrides,
  Generation,
  HiddenAct,
  MiniMindConfig,
  PresetName,
  RopeScaling,
} from "./nn/model/minimind_config.ts";
export type {
  ForwardOptions,
  ForwardResult,
  FromFlatOptions,
  InitOptions,
  LayerParams,
  MiniMindParams,
  ParamCount,
  Weight,
} from "./nn/model/minimind.ts";
export type { KvCache, LayerCache } from "./nn/model/layers/kv_cache.ts";
export type { SelfAttentionParams } from "./nn/model/layers/attention.ts";
export type { MlpParams } from "./nn/model/layers/mlp.ts";
export type { MoeDispatch, MoeParams, RouterInfo } from "./nn/model/layers/moe.ts";
export * as lora from "./convert/lora.ts";
export type { LinearParams, LoraInitOptions, LoraPair, LoraParams } from "./nn/model/lora.ts";
export { distillLoss, dpoLoss, tokenLogProbs } from "./nn/model/losses.ts";
export type { DistillOptions, DpoInputs, DpoOptions, DpoResult } from "./nn/model/losses.ts";
export {
  loadSafetensors,
  parseSafetensors,
  readSafetensorsMetadata,
  saveSafetensors,
  serializeSafetensors,
  tensorsFromSafetensors,
  toHalf,
} from "./convert/safetensors.ts";
export type {
  LoadSafetensorsOptions,
  ParsedSafetensors,
  RawTensor,
  SafetensorsDType,
  SafetensorsEntry,
} from "./convert/safetensors.ts";
export {
  ApiError,
  createApp,
  DEFAULT_LIMITS,
  DEFAULT_REQUEST_DEFAULTS,
  MiniMindEngine,
} from "./serve/mod.ts";
export type {
  CreateAppOptions,
  Engine,
  EngineOptions,
  EngineRow,
  ErrorBody,
  ErrorStatus,
  PrefixCacheStats,
  RequestDefaults,
  RequestLimits,
  SchedulerOptions,
  SchedulerStats,
  ServeApp,
  ServeModel,
  StepLogprobs,
  TokenLogprob,
} from "./serve/mod.ts";
export { loadModel, saveModel, saveModelPth, stateDict } from "./convert/hf.ts";
export type {
  LoadedModel,
  LoadModelOptions,
  SaveModelInput,
  SaveModelOptions,
} from "./convert/hf.ts";
export { loadPth, parsePth, savePth, serializePth } from "./convert/pth.ts";
export type { ParsedPth, PthReadOptions } from "./convert/pth.ts";
export { inferConfig } from "./convert/infer.ts";
export type { ModelFlags } from "./convert/infer.ts";
export { configFromAnyHF, hfConfigFor } from "./convert/layouts.ts";
export type { ExportDType, HfLayout } from "./convert/layouts.ts";
export { exportGguf, serializeGguf } from "./convert/gguf.ts";
export type { GgufDType, GgufModel, GgufOptions } from "./convert/gguf.ts";
export { Tokenizer } from "./data/tokenizer.ts";
export type {
  AddedToken,
  DecodeOptions,
  DecodeStream,
  EncodeOptions,
  TokenizerConfig,
  TokenizerJson,
} from "./data/tokenizer.ts";
export type { ChatMessage, ChatTemplateOptions } from "./data/chat_template.ts";
export { BpeModel } from "./data/bpe.ts";
export type { BpeModelOptions } from "./data/bpe.ts";
export { decodeStep, generate, generateBatch, logitAddend } from "./nn/model/generate.ts";
export type {
  DecodeState,
  DecodeStepOptions,
  GenerateModel,
  GenerateOptions,
  GenerateTokenizer,
  GenerationPiece,
  LogitAdjustment,
  TokenConstraint,
} from "./nn/model/generate.ts";
export { ReplyConstraint, tokenizerVocab, vocabBytes } from "./data/constrain.ts";
export type { ReplyShape, Segment, VocabBytes } from "./data/constrain.ts";
export {
  ANY_OBJECT,
  ANY_VALUE,
  compileObjectSchema,
  compileSchema,
  SchemaError,
} from "./data/json_grammar.ts";
export type { KeyChoices, SchemaNode } from "./data/json_grammar.ts";
export * as optim from "./train/optim.ts";
export type {
  AdamwOptions,
  AdamwState,
  ChainState,
  GradientTransformation,
  Mask,
  Optimizer,
  SgdOptions,
  SgdState,
  StepHyper,
} from "./train/optim.ts";
export { constant, getLr, warmupCosine } from "./train/schedule.ts";
export type { Schedule, WarmupCosineOptions } from "./train/schedule.ts";
export { disposeOutput, disposeState, makeTrainStep } from "./train/step.ts";
export type {
  LossFn,
  LossScaleOptions,
  LossScaleState,
  MicroGrads,
  StepOutput,
  TrainState,
  TrainStep,
  TrainStepOptions,
} from "./train/step.ts";
export { loadResume, loadWeights, saveResume, saveWeights } from "./train/checkpoint.ts";
export { asTrainState, savedField, stepTrainer } from "./train/trainer.ts";
export type { AsyncTrainer, LoopHyper, Trainer } from "./train/trainer.ts";
export { runTraining } from "./train/loop.ts";
export { DataLoader } from "./data/loader.ts";
export type { Batch, DataLoaderOptions } from "./data/loader.ts";
export type { Dataset } from "./data/datasets.ts";
export { Progress } from "./train/progress.ts";
export type { ProgressInfo } from "./train/progress.ts";
export type { BatchSource, LoopOptions, LoopResult, RunFiles } from "./train/loop.ts";
// data parallel: communicators (Open MPI through FFI, in-process) and the transform
export {
  broadcastBytes,
  broadcastJson,
  CollectiveTimeoutError,
  inProcessGroup,
  rankZeroFirst,
  SoloCommunicator,
  worldFromEnv,
} from "./train/dist/comm.ts";
export type { Communicator, WorldEnv } from "./train/dist/comm.ts";
export { openCommunicator, openMpi } from "./train/dist/mpi.ts";
export { broadcastParams, dataParallel, dataParallelTrainer } from "./train/dist/data_parallel.ts";
export type {
  DataParallelOptions,
  DataParallelOutput,
  DataParallelStep,
} from "./train/dist/data_parallel.ts";
export { ShardedLoader } from "./train/dist/shard.ts";
export type { ResumeInfo } from "./train/checkpoint.ts";
export * as rl from "./rl/mod.ts";
export * as agent from "./agent/mod.ts";
export type { JsonSchema, Tool, ToolContext } from "./serve/tools.ts";

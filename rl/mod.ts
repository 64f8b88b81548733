/**
 * Reinforcement learning from rewards (MiniMind's PPO, GRPO/CISPO and SPO): rollouts through the
 * batched decode, rewards (MiniMind's rules, a value-head reward model, the verifiable poetry
 * reward), advantages (GAE, group normalisation, SPO's tracker), the objectives as pure functions
 * over tensors, the critic, and the trainer that plugs into the shared training loop.
 * @module
 */
export { gae, groupAdvantages, SpoTracker } from "./advantages.ts";
export type {
  GaeOptions,
  GaeResult,
  GroupAdvantageOptions,
  SpoTrackerOptions,
  SpoTrackerState,
} from "./advantages.ts";
export {
  clamp,
  entropy,
  grpoLoss,
  k3Kl,
  maskedMean,
  ppoSequenceLoss,
  ppoTokenLoss,
  ppoValueLoss,
  responseLogProbs,
  sequenceMean,
  spoLoss,
} from "./losses.ts";
export type {
  GrpoInput,
  GrpoOptions,
  GrpoOutput,
  PpoSequenceInput,
  PpoTokenInput,
  PpoTokenOptions,
  PpoTokenOutput,
  PpoValueInput,
  SpoInput,
} from "./losses.ts";
export { criticValues, initValueHead } from "./critic.ts";
export type { CriticOptions, CriticParams, ValueHead } from "./critic.ts";
export { packRollout, policyLogProbs, rollout, rolloutTensors, scoreLogProbs } from "./rollout.ts";
export type { Rollout, RolloutOptions, RolloutRow, RolloutTensors } from "./rollout.ts";
export {
  parseChatPrompt,
  poetryReward,
  repetitionPenalty,
  requestedForm,
  RewardError,
  rewardModelMessages,
  ruleComponents,
  rulesReward,
  scoreRewards,
  ValueHeadRewardModel,
} from "./rewards.ts";
export type {
  PromptMessage,
  RewardFunction,
  RewardInput,
  RewardModel,
  RewardScore,
  ValueHeadModel,
} from "./rewards.ts";
export { POETRY_REWARD_RANGE, poetryScore, readLine, rhymeGroup } from "./poetry.ts";
export type { PoetryScore, Reading } from "./poetry.ts";
export { evaluatePoetry, pairedGain } from "./evaluate.ts";
export type { PairedGain, PoetryEval, PoetryEvalOptions } from "./evaluate.ts";
export { actorObjective, criticObjective, RlTrainer } from "./trainer.ts";
export type {
  ObjectiveSettings,
  RlAlgorithm,
  RlBatch,
  RlMinibatch,
  RlReport,
  RlSettings,
  RlState,
} from "./trainer.ts";
export { EMBEDDED, rewardPlotSvg, rlFlags, runRl } from "./cli.ts";
export type { RlRunResult, RunRlOptions } from "./cli.ts";

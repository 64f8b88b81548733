/**
 * Tool use and agentic RL (minimind-3): the tool loop and tool types (re-exported from
 * `serve/tools.ts`), the safe built-in tools, tool-use task sets in MiniMind's `agent_rl.jsonl`
 * format, the §4.10 episode reward, the tool-call evaluation, and the agentic RL trainer.
 * @module
 */
export {
  checkArguments,
  malformedOutcome,
  parseTurn,
  runAgentLoop,
  runToolCall,
  toolSchema,
} from "../serve/tools.ts";
export type {
  AgentLoopOptions,
  AgentResult,
  AgentTurn,
  JsonSchema,
  RunToolOptions,
  Tool,
  ToolContext,
  ToolErrorKind,
  ToolMessage,
  ToolOutcome,
  ToolSchema,
  TurnGenerator,
} from "../serve/tools.ts";
export {
  builtinTools,
  calculateMath,
  convertUnit,
  dateCalculator,
  poemIndex,
  poetryLookup,
  unitConverter,
} from "./builtin.ts";
export type { PoemIndex } from "./builtin.ts";
export { CalcError, evaluate, formatNumber } from "./calculator.ts";
export {
  embeddedTasks,
  minimindMathTasks,
  sftRecord,
  taskFromRecord,
  taskRecord,
} from "./tasks.ts";
export type { AgentTask, EmbeddedTaskOptions } from "./tasks.ts";
export { answerFound, repetitionPenalty, scoreEpisode } from "./reward.ts";
export type { EpisodeScore } from "./reward.ts";
export { TurnBatcher, turnPrompt } from "./model.ts";
export type { ChatModel, GeneratedTurn, TurnOptions } from "./model.ts";
export { evaluateToolUse, runTask } from "./evaluate.ts";
export type { TaskOutcome, ToolEvalOptions, ToolEvalReport } from "./evaluate.ts";
export { AgentTrainer, playEpisodes } from "./trainer.ts";
export type { AgentBatch, AgentReport, AgentSettings, Episode } from "./trainer.ts";

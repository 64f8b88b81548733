/**
 * Data for MiniMind.ts: a byte-level BPE tokenizer that reads and writes Hugging Face
 * `tokenizer.json` (ids identical to HF tokenizers), a BPE trainer, chat templates, MiniMind's
 * datasets (pretrain, SFT, DPO, RLAIF, plain text) over streamed JSONL, a seeded loader, and the
 * embedded classical-poetry corpus.
 *
 * @example
 * ```ts
 * import { DataLoader, SFTDataset, Tokenizer } from "./mod.ts";
 * const tok = await Tokenizer.fromFile("tokenizers/minimind-3/tokenizer.json");
 * const ds = new SFTDataset([{ conversations: [
 *   { role: "user", content: "你好" }, { role: "assistant", content: "你好！" },
 * ] }], tok, { maxLength: 32 });
 * const [batch] = new DataLoader(ds, { batchSize: 1 }).batches(0);
 * batch.inputIds.length; // 32
 * ```
 *
 * @module
 */

export {
  type AddedToken,
  type DecodeOptions,
  type DecodeStream,
  type EncodeOptions,
  stringifyTokenizerJson,
  Tokenizer,
  type TokenizerConfig,
  type TokenizerJson,
} from "./tokenizer.ts";
export {
  type ChatMessage,
  type ChatTemplateOptions,
  MINIMIND_CHAT_TEMPLATE,
  renderChatTemplate,
} from "./chat_template.ts";
export { pretokenize, splitGpt2 } from "./pretokenize.ts";
export { BpeModel, type BpeModelOptions, PairMap } from "./bpe.ts";
export {
  type BpeResult,
  countWords,
  MINIMIND_NUM_SPECIAL,
  MINIMIND_SPECIAL_TOKENS,
  trainBpe,
  type TrainBpeOptions,
  trainTokenizer,
  type TrainTokenizerOptions,
} from "./bpe_trainer.ts";
export { JsonlError, JsonlFile, type JsonlOptions } from "./jsonl.ts";
export {
  type Dataset,
  type DatasetOptions,
  DPODataset,
  type DPOOptions,
  type DPOSample,
  IGNORE_INDEX,
  type LMSample,
  PlainTextDataset,
  type PlainTextOptions,
  postProcessChat,
  preProcessChat,
  PretrainDataset,
  type RecordSource,
  RLAIFDataset,
  type RLAIFOptions,
  type RLAIFSample,
  SFTDataset,
  type SFTOptions,
  SYSTEM_PROMPTS,
} from "./datasets.ts";
export { type Batch, DataLoader, type DataLoaderOptions } from "./loader.ts";
export { mixSeed, Rng } from "./random.ts";
export { byteLevelAlphabet, bytesToToken, tokenToBytes } from "./byte_level.ts";
export {
  buildCorpus,
  CORPUS_VERSION,
  type CorpusFiles,
  type CorpusManifest,
  type CorpusOptions,
} from "./corpus/build.ts";
export {
  analyzePoem,
  formScore,
  loadPoems,
  type Poem,
  POEM_FORMS,
  type PoemForm,
  poemForm,
  type PoemShape,
  poetryDistDir,
} from "./corpus/poetry.ts";
export { readTrainingTexts } from "./train_tokenizer.ts";

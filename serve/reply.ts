/**
 * From a job's token ids to reply text: incremental decoding (never half a UTF-8 character,
 * special tokens dropped) and stop-sequence cutting. A matched stop sequence cancels the job, so
 * its slot in the batch frees at the next step.
 * @module
 */
import type { Tokenizer } from "../data/tokenizer.ts";
import { ApiError } from "./errors.ts";
import { StopMatcher } from "./reply_parser.ts";
import type { Job } from "./scheduler.ts";

/** How a reply ended, in OpenAI terms. */
export type ReplyFinish = "stop" | "length";

/**
 * Streams the text of `job` as it is generated.
 *
 * @param job a submitted, admitted job
 * @param tokenizer decodes ids
 * @param stops stop sequences (cut before them)
 * @returns the text pieces; the generator's return value is the finish reason
 * @throws ApiError when the job failed
 */
export async function* replyText(
  job: Job,
  tokenizer: Tokenizer,
  stops: readonly string[],
): AsyncGenerator<string, ReplyFinish | "cancelled", undefined> {
  const dec = tokenizer.decodeStream({ skipSpecialTokens: true });
  const stop = new StopMatcher(stops);
  for await (const id of job.tokens()) {
    const text = stop.push(dec.push(id));
    if (text) yield text;
    if (stop.stopped) {
      job.cancel();
      return "stop";
    }
  }
  if (job.finishReason === "error") {
    const e = job.error;
    if (e instanceof ApiError) throw e;
    throw new ApiError(500, `Generation failed: ${e?.message ?? "unknown error"}`);
  }
  const tail = stop.push(dec.flush());
  const rest = stop.stopped ? tail : tail + stop.flush();
  if (rest) yield rest;
  if (stop.stopped) return "stop";
  if (job.finishReason === "cancelled") return "cancelled";
  return job.finishReason === "length" ? "length" : "stop";
}

import assert from "node:assert/strict";
import { forward, init } from "./minimind.ts";
import { config } from "./minimind_config.ts";
import { key } from "../random.ts";
import { tensor } from "../creation.ts";
import { argmax } from "../ops/reduce.ts";
import { sliceAxis } from "../ops/movement.ts";
import { scope } from "../scope.ts";
import { defaultBackend, useBackend } from "../backend/select.ts";
import { dispose } from "../tree.ts";
import { openWebGpuForTests } from "../../tests/_webgpu.ts";
import { generate } from "./generate.ts";
import type { GenerationPiece } from "./generate.ts";

const cfg = config("minimind2-small", {
  hiddenSize: 32,
  numHiddenLayers: 2,
  numAttentionHeads: 4,
  vocabSize: 64,
  eosTokenId: 2,
});
const model = { cfg, params: init(cfg, key(3)) };

/** Greedy decoding by re-running the full sequence each step (no cache), after `pads` masked pads. */
function greedyNoCache(prompt: number[], n: number, pads = 0): number[] {
  const ids = [...new Array(pads).fill(0), ...prompt], out: number[] = [];
  for (let i = 0; i < n; i++) {
    const next = scope(() => {
      const mask = tensor(ids.map((_, j) => (j < pads ? 0 : 1)), [1, ids.length], "f32");
      const { logits } = forward(cfg, model.params, tensor(ids, [1, ids.length], "i32"), {
        attentionMask: mask,
      });
      const lastPos = sliceAxis(logits, 1, ids.length - 1, ids.length); // (1, 1, V)
      return argmax(lastPos, -1).dataSync()[0];
    });
    out.push(next);
    ids.push(next);
  }
  return out;
}

async function tokens(prompts: number[][], n: number, extra = {}): Promise<number[][]> {
  const out = prompts.map(() => [] as number[]);
  for await (
    const p of generate(model, prompts, {
      maxNewTokens: n,
      greedy: true,
      eos: [],
      ...extra,
    }) as AsyncGenerator<GenerationPiece>
  ) out[p.index].push(p.token);
  return out;
}

Deno.test("generate() with the KV cache equals greedy decoding without a cache", async () => {
  const prompt = [1, 5, 9, 17, 33];
  const [got] = await tokens([prompt], 12);
  assert.deepEqual(got, greedyNoCache(prompt, 12));
});

Deno.test("generate() batches ragged prompts (left padding + key mask) like single prompts", async () => {
  const a = [1, 7, 8, 9, 10, 11], b = [1, 40];
  const batched = await tokens([a, b], 8);
  assert.deepEqual(batched[0], greedyNoCache(a, 8));
  // MiniMind's left padding keeps absolute positions: b's tokens sit at positions 4.. in the
  // batch, so it matches a cache-free run with the same 4 masked pads in front
  assert.deepEqual(batched[1], greedyNoCache(b, 8, a.length - b.length));
});

Deno.test("generate() stops rows at eos, honours maxNewTokens, abort and chunked readback", async () => {
  const prompt = [1, 5, 9];
  const free = greedyNoCache(prompt, 10);
  const stopAt = free[3];
  const out: GenerationPiece[] = [];
  for await (
    const p of generate(model, [prompt], {
      maxNewTokens: 10,
      greedy: true,
      eos: stopAt,
      chunk: 4,
    })
  ) out.push(p);
  assert.deepEqual(out.map((p) => p.token), free.slice(0, free.indexOf(stopAt) + 1));
  const ac = new AbortController();
  let n = 0;
  for await (
    const _ of generate(model, [prompt], {
      maxNewTokens: 50,
      greedy: true,
      eos: [],
      signal: ac.signal,
    })
  ) {
    if (++n === 3) ac.abort();
  }
  assert.equal(n, 3);
});

Deno.test("generate() sampling is reproducible by seed and frees its memory", async () => {
  const opts = {
    greedy: false,
    temperature: 1,
    topK: 0,
    topP: 1,
    repetitionPenalty: 1.2,
    seed: 11,
  };
  const x = await tokens([[1, 3, 5]], 10, opts);
  const before = defaultBackend().counters.bytesInUse; // after the RoPE table cache has grown
  const y = await tokens([[1, 3, 5]], 10, opts);
  const z = await tokens([[1, 3, 5]], 10, { ...opts, seed: 12 });
  assert.deepEqual(x, y);
  assert.notDeepEqual(x, z);
  assert.equal(defaultBackend().counters.bytesInUse, before);
});

Deno.test("generate() streams text through the tokenizer's incremental decoder", async () => {
  const fake = {
    eosId: 2,
    padId: 0,
    encode: (s: string) => [...s].map((c) => 3 + (c.charCodeAt(0) % 60)),
    decodeStream: () => ({ push: (id: number) => `<${id}>`, flush: () => "" }),
  };
  const pieces: string[] = [];
  for await (
    const t of generate({ ...model, tokenizer: fake }, "abc", { maxNewTokens: 3, greedy: true })
  ) pieces.push(t);
  assert.ok(pieces.length >= 1 && pieces.every((p) => /^<\d+>$/.test(p)), pieces.join(""));
  await assert.rejects(async () => {
    for await (const _ of generate(model, "no tokenizer")) { /* nothing */ }
  }, /has no tokenizer/);
});

Deno.test("generate() with chunked readback keeps bytesInUse flat over generations (CPU, WebGPU)", async () => {
  const gpu = await openWebGpuForTests();
  for (const backend of [defaultBackend(), gpu]) {
    const prev = defaultBackend();
    useBackend(backend);
    try {
      const m = { cfg, params: init(cfg, key(3)) };
      const run = async () => {
        for await (
          const _ of generate(m, [[1, 3, 5], [2, 4]], { maxNewTokens: 12, chunk: 8, seed: 1 })
        ) { /* drain */ }
        return backend.counters.bytesInUse;
      };
      const first = await run(); // the RoPE table cache grows here
      const after = [await run(), await run(), await run()];
      assert.deepEqual(after, [first, first, first], `${backend.name}: ${after} after ${first}`);
      dispose(m.params);
    } finally {
      useBackend(prev);
    }
  }
});

Deno.test("generate() logitBias: a device addend that keeps the chunked readback; penalties read each token", async () => {
  const prompts = [[1, 5, 9], [1, 7]];
  // +30 on id 11 makes it every token; chunked (4 per readback) or not, the same tokens
  const logitBias = new Map([[11, 30]]);
  const one = await tokens(prompts, 8, { logitBias, chunk: 1 });
  assert.deepEqual(one, [Array(8).fill(11), Array(8).fill(11)]);
  assert.deepEqual(await tokens(prompts, 8, { logitBias, chunk: 4 }), one);
  // a frequency penalty on top outweighs the bias once 11 has come twice
  const both = await tokens(prompts, 8, { logitBias, frequencyPenalty: 20, chunk: 4 });
  assert.deepEqual(both[0].slice(0, 2), [11, 11]);
  assert.notEqual(both[0][2], 11);
  const before = defaultBackend().counters.bytesInUse;
  await tokens(prompts, 8, { logitBias, chunk: 4 });
  assert.equal(defaultBackend().counters.bytesInUse, before, "the bias addend is freed");
});

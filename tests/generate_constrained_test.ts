// mm.generate with a reply constraint (data/constrain.ts) in one row of a batch: that row's reply
// follows a JSON schema and ends with it; the other row is what it is alone.
import assert from "node:assert/strict";
import { generateBatch } from "../nn/model/generate.ts";
import { ReplyConstraint, tokenizerVocab } from "../data/constrain.ts";
import { compileObjectSchema } from "../data/json_grammar.ts";
import { tinyModel, tokenizer } from "./_serve.ts";

Deno.test("generate: a constrained row writes its schema's object and stops; the free row is unchanged", async () => {
  const tok = await tokenizer();
  const model = { ...tinyModel(), tokenizer: tok };
  const schema = compileObjectSchema({
    type: "object",
    properties: { a: { enum: ["x", "y"] }, n: { enum: [1, 10] } },
    required: ["a", "n"],
  });
  const prompts = [tok.encode("你好"), tok.encode("白日依山尽")];
  const run = async (constrained: boolean, seed: number) => {
    const text = ["", ""], tokens = [0, 0];
    const json = new ReplyConstraint(
      { segments: [{ kind: "json", schema }] },
      tokenizerVocab(tok, model.cfg.vocabSize),
      [tok.eosId],
    );
    for await (
      const p of generateBatch(model, prompts, {
        maxNewTokens: 40,
        seed,
        temperature: 1,
        eos: [],
        constraints: constrained ? [json, null] : undefined,
      })
    ) {
      text[p.index] += p.text;
      if (p.token >= 0) tokens[p.index]++;
    }
    return { text, tokens };
  };
  for (const seed of [1, 2, 3]) {
    const c = await run(true, seed);
    // the random model's reply is one of the four objects (one space at most between tokens)
    const v = JSON.parse(c.text[0]);
    assert.ok(["x", "y"].includes(v.a) && [1, 10].includes(v.n), c.text[0]);
    assert.deepEqual(Object.keys(v), ["a", "n"]);
    assert.ok(c.tokens[0] < 40, "the row ended with its object");
    // the other row, unconstrained, samples what it samples without the first row's constraint
    const free = await run(false, seed);
    assert.equal(c.text[1], free.text[1], `seed ${seed}`);
    assert.equal(c.tokens[1], 40);
  }
});

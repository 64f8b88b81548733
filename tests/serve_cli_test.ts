// `serve.ts` as a user runs it: save a tiny model in HF layout with saveModel, start the CLI on a
// random loopback port with --load_from and --api_key, talk to it, stop it with SIGTERM.
import assert from "node:assert/strict";
import { join } from "node:path";
import { saveModel } from "../convert/hf.ts";
import { tinyModel, tokenizer } from "./_serve.ts";

Deno.test("serve.ts: --load_from an HF folder, --port 0, --api_key, --tools builtin; SIGTERM stops it", async () => {
  const root = await Deno.makeTempDir();
  const dir = join(root, "tiny-chat");
  await saveModel(dir, { ...tinyModel(), tokenizer: await tokenizer() });
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--unstable-no-legacy-abort",
      new URL("../serve.ts", import.meta.url).pathname,
      "--load_from",
      dir,
      "--port",
      "0",
      "--api_key",
      "k1",
      "--tools",
      "builtin",
    ],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  try {
    let log = "";
    let url = "";
    const deadline = Date.now() + 60_000;
    while (!url && Date.now() < deadline) {
      const { value, done } = await reader.read();
      if (done) break;
      log += value;
      url = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(log)?.[1] ?? "";
    }
    assert.ok(url, `the server did not start:\n${log}`);
    assert.equal(
      await fetch(`${url}/v1/models`).then((r) => r.body?.cancel().then(() => r.status)),
      401,
    );
    const models =
      await (await fetch(`${url}/v1/models`, { headers: { authorization: "Bearer k1" } })).json();
    assert.equal(models.data[0].id, "tiny-chat");
    const tools =
      await (await fetch(`${url}/v1/tools`, { headers: { authorization: "Bearer k1" } }))
        .json();
    assert.equal(tools.data.length, 4, "--tools builtin: the server runs its four tools");
    const r = await fetch(`${url}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: "Bearer k1", "content-type": "application/json" },
      body: JSON.stringify({
        messages: [{ role: "user", content: "你好" }],
        max_tokens: 4,
        seed: 1,
      }),
    });
    assert.equal(r.status, 200);
    assert.equal((await r.json()).usage.completion_tokens, 4);
    child.kill("SIGTERM");
    const status = await child.status;
    assert.equal(status.code, 0);
  } finally {
    try {
      child.kill("SIGKILL");
    } catch { /* already exited */ }
    await reader.cancel().catch(() => {});
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("serve.ts: a missing model is a clear error and exit code 1", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL("../serve.ts", import.meta.url).pathname,
      "--load_from",
      "/nonexistent/model",
    ],
    stdout: "null",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 1);
  assert.match(
    new TextDecoder().decode(out.stderr),
    /Cannot load a model from \/nonexistent\/model/,
  );
});

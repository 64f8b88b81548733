// The chat page in headless Chromium (Debian `chromium`, driven by playwright-core) against a real
// server on a random loopback port: type a message, watch the reply stream in, fold a think
// block, stop a long reply, reload and keep the history. Leaves a screenshot in
// out/screenshots/chat_page.png.
import assert from "node:assert/strict";
import { chromium } from "playwright-core";
import { startServer } from "../serve.ts";
import { builtinTools } from "../agent/builtin.ts";
import { MiniMindEngine } from "../serve/engine.ts";
import type { Engine } from "../serve/scheduler.ts";
import { scriptedEngine, tinyApp, tinyModel, tokenizer } from "./_serve.ts";

const CHROMIUM = Deno.env.get("CHROMIUM_PATH") ?? "/usr/bin/chromium";
const FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
const SHOT = new URL("../out/screenshots/chat_page.png", import.meta.url).pathname;
const TOOL_SHOT = new URL("../out/screenshots/chat_tools.png", import.meta.url).pathname;

/** A chat page open in headless Chromium on a server for `app`, loopback only, with the page's
 * errors and the chat requests' bodies collected; `close` shuts both down. */
async function openChatPage(app: Parameters<typeof startServer>[0], height: number) {
  const server = startServer(app, { port: 0 });
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: FLAGS });
  const close = async () => {
    await browser.close();
    await server.shutdown();
  };
  try {
    const page = await browser.newPage({ viewport: { width: 1100, height } });
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    const bodies: Record<string, unknown>[] = [];
    page.on("request", (r) => {
      if (r.url().endsWith("/v1/chat/completions")) bodies.push(JSON.parse(r.postData() ?? "{}"));
    });
    // nothing but the server on loopback is ever contacted
    await page.route("**/*", (route) => {
      const u = new URL(route.request().url());
      return u.hostname === "127.0.0.1" ? route.continue() : route.abort();
    });
    await page.goto(server.url + "/");
    await page.waitForSelector("body[data-ready='1']");
    return { page, errors, bodies, close };
  } catch (e) {
    await close();
    throw e;
  }
}

/**
 * The tiny model's engine at no less than 3 ms per decoded token (4000 tokens: 12 s, past the test's 10 s wait for the first text): on an idle machine the tiny
 * model can write the 4000-token reply of the stop check before the click lands (the test then
 * sees "length", not "stopped"); paced, the reply is still streaming when Stop is pressed.
 */
function pacedEngine(): Engine {
  const inner = new MiniMindEngine(tinyModel(), { maxPositions: 4097 });
  return {
    vocabSize: inner.vocabSize,
    maxPositions: inner.maxPositions,
    prefill: (ids) => inner.prefill(ids),
    decode: (rows, tokens) => {
      const until = performance.now() + 3;
      while (performance.now() < until) {
        // wait: the pace, not the work, is what this engine adds
      }
      return inner.decode(rows, tokens);
    },
    release: (row) => inner.release(row),
    idle: () => inner.idle(),
  };
}

Deno.test({
  name: "chat page: streams a reply, folds thinking, stops, keeps history (headless Chromium)",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const app = await tinyApp({ engine: pacedEngine() });
    const { page, errors, bodies, close } = await openChatPage(app, 720);
    try {
      assert.equal(await page.textContent("#model"), "minimind");

      // 1. a streamed reply: the assistant text changes several times before it is done
      await page.fill("#max_tokens", "24");
      await page.dispatchEvent("#max_tokens", "change");
      // (page functions are strings: this file is type-checked without the DOM lib)
      await page.evaluate(`globalThis.updates = 0; new MutationObserver(() => globalThis.updates++)
        .observe(document.getElementById("messages"), { childList: true, subtree: true, characterData: true })`);
      await page.fill("#input", "你好");
      await page.press("#input", "Enter");
      await page.waitForSelector(".msg.assistant[data-state='done']", { timeout: 20_000 });
      const first = await page.textContent(".msg.assistant .content");
      assert.ok(first && first.length > 0, "the reply has text");
      assert.ok((await page.evaluate("globalThis.updates")) as number > 5);
      assert.equal(await page.getAttribute(".msg.assistant", "data-finish"), "length");
      assert.match((await page.textContent(".msg.assistant .meta"))!, /24 tokens/);
      const b0 = bodies[0];
      assert.equal(b0.stream, true);
      assert.equal(b0.max_tokens, 24);
      assert.equal(typeof b0.temperature, "number");
      assert.equal(typeof b0.top_p, "number");

      // 2. thinking on: the reasoning streams into a think block, folded when the reply ends
      await page.check("#thinking");
      await page.fill("#input", "想一想");
      await page.press("#input", "Enter");
      await page.waitForSelector(".msg.assistant:nth-of-type(4)[data-state='done']", {
        timeout: 20_000,
      });
      const think = page.locator(".msg.assistant").nth(1).locator("details.think");
      assert.equal(await think.count(), 1);
      assert.equal(await think.getAttribute("open"), null, "folded");
      assert.ok(((await think.locator(".think-body").textContent()) ?? "").length > 0);
      const b1 = bodies[1] as {
        messages: unknown[];
        chat_template_kwargs: { open_thinking: boolean };
      };
      assert.equal(b1.chat_template_kwargs.open_thinking, true);
      assert.equal(b1.messages.length, 3, "history: the first exchange is sent along");
      await page.uncheck("#thinking");
      await think.locator("summary").click(); // unfold it for the screenshot
      assert.equal(await think.getAttribute("open"), "");
      await page.screenshot({ path: await ensureDir(SHOT), fullPage: true });

      // 3. the stop button ends a long reply, and the server stops generating it
      await page.fill("#max_tokens", "4000");
      await page.dispatchEvent("#max_tokens", "change");
      await page.fill("#input", "long");
      await page.press("#input", "Enter");
      // (polled with evaluate: waitForFunction would need eval, which the page's CSP forbids)
      const streamed =
        `(document.querySelectorAll(".msg.assistant")[2]?.querySelector(".content")?.textContent ?? "").length > 3`;
      for (let i = 0; i < 400 && !(await page.evaluate(streamed)); i++) {
        await new Promise((r) => setTimeout(r, 25));
      }
      assert.equal(await page.isEnabled("#stop"), true);
      await page.click("#stop");
      await page.waitForSelector(".msg.assistant:nth-of-type(6)[data-state='done']");
      assert.equal(
        await page.locator(".msg.assistant").nth(2).getAttribute("data-finish"),
        "stopped",
      );
      const deadline = Date.now() + 5000;
      while (app.stats().running > 0 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 10));
      }
      assert.equal(app.stats().running, 0, "the server stopped generating");
      assert.equal(await page.isEnabled("#send"), true);

      // 4. history survives a reload; "Clear history" empties it
      await page.reload();
      await page.waitForSelector("body[data-ready='1']");
      assert.equal(await page.locator(".msg").count(), 6);
      await page.click("#clear");
      assert.equal(await page.locator(".msg").count(), 0);
      assert.deepEqual(errors, []);
    } finally {
      await close();
    }
  },
});

async function ensureDir(path: string): Promise<string> {
  await Deno.mkdir(path.slice(0, path.lastIndexOf("/")), { recursive: true });
  return path;
}

Deno.test({
  name:
    "chat page: pick a tool; the server's call and its result are folded into the reply (headless Chromium)",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    // a scripted engine "calls" the calculator, then answers from the tool response it is shown
    const tok = await tokenizer();
    const app = await tinyApp({
      tools: builtinTools([]),
      engine: scriptedEngine(tok, (prompt) => {
        const lastTurn = prompt.slice(prompt.lastIndexOf("<|im_start|>user"));
        const r = /<tool_response>\n([\s\S]*?)\n<\/tool_response>/.exec(lastTurn);
        if (r) return `12 × 37 = ${r[1]}。`;
        if (!prompt.includes("calculate_math")) return "（没有可用的工具）";
        return '<tool_call>\n{"name": "calculate_math", "arguments": {"expression": "12*37"}}\n</tool_call>';
      }),
    });
    const { page, errors, bodies, close } = await openChatPage(app, 760);
    try {
      // the four tools the server runs are offered; none is chosen yet
      assert.deepEqual(await page.locator("#tools .tool-option").allTextContents(), [
        "calculate_math",
        "unit_converter",
        "date_calculator",
        "poetry_lookup",
      ]);
      await page.check("#tools input[value='calculate_math']");
      await page.fill("#input", "12 乘以 37 等于多少？");
      await page.press("#input", "Enter");
      await page.waitForSelector(".msg.assistant[data-state='done']", { timeout: 20_000 });
      const sent = bodies[0] as { tools: { function: { name: string } }[] };
      assert.deepEqual(sent.tools.map((t) => t.function.name), ["calculate_math"]);
      // the call and its result, folded, then the answer that used it
      const tool = page.locator(".msg.assistant details.tool");
      assert.equal(await tool.count(), 1);
      assert.equal(await tool.getAttribute("open"), null, "folded");
      assert.equal(
        await tool.locator("summary").textContent(),
        'tool calculate_math({"expression":"12*37"}) → 444',
      );
      assert.match((await tool.locator("pre").textContent())!, /result: 444/);
      const answer = await page.locator(".msg.assistant .content").allTextContents();
      assert.equal(answer.join(""), "12 × 37 = 444。");
      assert.equal(await page.getAttribute(".msg.assistant", "data-finish"), "stop");
      await tool.locator("summary").click(); // unfold it for the screenshot
      await page.screenshot({ path: await ensureDir(TOOL_SHOT), fullPage: true });

      // the history keeps the call, the tool result and the answer, and sends them along
      await page.reload();
      await page.waitForSelector("body[data-ready='1']");
      assert.equal(await page.locator(".msg.assistant details.tool").count(), 1);
      assert.equal(await page.isChecked("#tools input[value='calculate_math']"), true);
      await page.uncheck("#tools input[value='calculate_math']");
      await page.fill("#input", "再说一遍");
      await page.press("#input", "Enter");
      await page.waitForSelector(".msg.assistant:nth-of-type(4)[data-state='done']", {
        timeout: 20_000,
      });
      const b1 = bodies[1] as { messages: { role: string }[]; tools?: unknown };
      assert.deepEqual(b1.messages.map((m) => m.role), [
        "user",
        "assistant",
        "tool",
        "assistant",
        "user",
      ]);
      assert.equal(b1.tools, undefined, "no tool chosen, none sent");
      assert.deepEqual(errors, []);
    } finally {
      await close();
    }
  },
});

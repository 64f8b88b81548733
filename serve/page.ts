/**
 * The chat page served at `/`: one self-contained HTML document (no build step, no external
 * assets). It streams replies from `/v1/chat/completions`, folds think blocks into a
 * `<details>`, has temperature / top-p / max-tokens / thinking controls, keeps the conversation
 * (sent as history and saved in localStorage), and a stop button that aborts the request — which
 * stops the generation on the server. Tools the server runs (`GET /v1/tools`, `--tools builtin`)
 * can be picked; each call the server ran and its result are folded into the reply as a
 * `<details class="tool">`, and calls handed back to the client are shown as such.
 * @module
 */

const STYLE = String.raw`
:root { --bg: #f6f7f9; --fg: #1d2330; --muted: #6b7385; --card: #fff; --accent: #2f6fed; --line: #e2e5eb; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", "Noto Sans CJK SC", sans-serif;
  background: var(--bg); color: var(--fg); display: flex; height: 100vh; }
aside { width: 260px; padding: 16px; border-right: 1px solid var(--line); background: var(--card);
  overflow-y: auto; }
aside h1 { font-size: 18px; margin: 0 0 4px; }
aside .model { color: var(--muted); font-size: 13px; margin-bottom: 16px; word-break: break-all; }
aside label { display: block; font-size: 13px; color: var(--muted); margin: 12px 0 4px; }
aside input[type=range] { width: 100%; }
aside input[type=number], aside input[type=password], aside textarea { width: 100%; padding: 6px;
  border: 1px solid var(--line); border-radius: 6px; font: inherit; }
aside .row { display: flex; justify-content: space-between; align-items: center; }
aside button { margin-top: 16px; width: 100%; }
main { flex: 1; display: flex; flex-direction: column; min-width: 0; }
#messages { flex: 1; overflow-y: auto; padding: 20px 24px; }
.msg { max-width: 820px; margin: 0 auto 14px; padding: 10px 14px; border-radius: 10px;
  background: var(--card); border: 1px solid var(--line); white-space: pre-wrap; word-wrap: break-word; }
.msg.user { background: #e8f0fe; border-color: #c9dafc; }
.msg .role { font-size: 12px; color: var(--muted); margin-bottom: 4px; }
.msg.error { background: #fdecea; border-color: #f5c2bd; }
details.think { margin: 2px 0 8px; color: var(--muted); font-size: 14px; }
details.think summary { cursor: pointer; user-select: none; }
details.think .think-body { border-left: 3px solid var(--line); padding-left: 10px; margin-top: 4px; }
.tool-call { font-family: ui-monospace, monospace; font-size: 13px; background: #f3f4f6;
  border-radius: 6px; padding: 6px 8px; margin-top: 6px; }
details.tool { font-family: ui-monospace, monospace; font-size: 13px; background: #f1f7ef;
  border: 1px solid #cfe3c8; border-radius: 6px; padding: 4px 8px; margin: 6px 0; white-space: normal; }
details.tool summary { cursor: pointer; user-select: none; }
details.tool summary .result { color: #2d6a1f; }
details.tool.failed { background: #fdf3ea; border-color: #f0d2b5; }
details.tool.failed summary .result { color: #a4501a; }
details.tool pre { margin: 4px 0 0; white-space: pre-wrap; word-break: break-all; }
#tools .tool-option { display: flex; gap: 6px; align-items: flex-start; font-size: 13px; margin: 4px 0;
  color: var(--fg); }
#tools .none { font-size: 12px; color: var(--muted); }
.meta { font-size: 12px; color: var(--muted); margin-top: 6px; }
form { display: flex; gap: 8px; padding: 12px 24px 20px; max-width: 868px; width: 100%; margin: 0 auto; }
#input { flex: 1; resize: none; height: 64px; padding: 10px; border-radius: 10px; border: 1px solid var(--line);
  font: inherit; }
button { padding: 8px 16px; border-radius: 8px; border: 1px solid var(--accent); background: var(--accent);
  color: #fff; font: inherit; cursor: pointer; }
button.secondary { background: #fff; color: var(--accent); }
button:disabled { opacity: .45; cursor: default; }
`;

const SCRIPT = String.raw`
"use strict";
const $ = (id) => document.getElementById(id);
const STORE = "minimind-chat";
const state = { history: [], controller: null, model: null, tools: [], chosenTools: new Set() };

function saveSettings() {
  const s = { temperature: $("temperature").value, top_p: $("top_p").value, max_tokens: $("max_tokens").value,
    turns: $("turns").value, thinking: $("thinking").checked, system: $("system").value,
    tools: [...document.querySelectorAll("#tools input:checked")].map((i) => i.value) };
  localStorage.setItem(STORE + "-settings", JSON.stringify(s));
  localStorage.setItem(STORE + "-key", $("api_key").value);
}
function loadSettings() {
  try {
    const s = JSON.parse(localStorage.getItem(STORE + "-settings") || "{}");
    for (const k of ["temperature", "top_p", "max_tokens", "turns", "system"]) if (s[k] !== undefined) $(k).value = s[k];
    if (s.thinking !== undefined) $("thinking").checked = s.thinking;
    state.chosenTools = new Set(s.tools || []);
    $("api_key").value = localStorage.getItem(STORE + "-key") || "";
    state.history = JSON.parse(localStorage.getItem(STORE + "-history") || "[]");
  } catch { state.history = []; }
  showValues();
}
function saveHistory() { localStorage.setItem(STORE + "-history", JSON.stringify(state.history)); }
function showValues() {
  $("temperature_value").textContent = Number($("temperature").value).toFixed(2);
  $("top_p_value").textContent = Number($("top_p").value).toFixed(2);
}
function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api_key").value.trim();
  if (key) h.Authorization = "Bearer " + key;
  return h;
}

function bubble(role) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  const r = document.createElement("div");
  r.className = "role";
  r.textContent = role === "user" ? "You" : "MiniMind";
  div.appendChild(r);
  $("messages").appendChild(div);
  return div;
}
function thinkBlock(parent, open) {
  const d = document.createElement("details");
  d.className = "think";
  d.open = open;
  const s = document.createElement("summary");
  s.textContent = open ? "Thinking…" : "Thought";
  const body = document.createElement("div");
  body.className = "think-body";
  d.append(s, body);
  parent.appendChild(d);
  return d;
}
function short(s, n) { s = String(s); return s.length > n ? s.slice(0, n) + "…" : s; }
function toolBlock(parent, call) {
  const d = document.createElement("details");
  d.className = "tool" + (call.error ? " failed" : "");
  const s = document.createElement("summary");
  const name = document.createElement("span");
  name.textContent = "tool " + call.function.name + "(" + short(call.function.arguments, 80) + ")";
  const res = document.createElement("span");
  res.className = "result";
  res.textContent = " → " + short(call.result, 80);
  s.append(name, res);
  const body = document.createElement("pre");
  body.textContent = "arguments: " + call.function.arguments + "\nresult: " + call.result;
  d.append(s, body);
  parent.appendChild(d);
  return d;
}
function render(msg) {
  if (msg.role === "tool") {
    const last = [...document.querySelectorAll(".msg.assistant")].pop() || bubble("assistant");
    toolBlock(last, { function: { name: msg.name || "tool", arguments: msg.arguments || "" }, result: msg.content,
      error: /^\{"error"/.test(msg.content || "") });
    return last;
  }
  if (msg.role === "assistant" && msg.continues) {
    const last = [...document.querySelectorAll(".msg.assistant")].pop();
    if (last) {
      const c = document.createElement("div");
      c.className = "content";
      c.textContent = msg.content || "";
      last.appendChild(c);
      return last;
    }
  }
  const div = bubble(msg.role);
  if (msg.reasoning_content) thinkBlock(div, false).querySelector(".think-body").textContent = msg.reasoning_content;
  const c = document.createElement("div");
  c.className = "content";
  c.textContent = msg.content || "";
  div.appendChild(c);
  for (const t of msg.tool_calls || []) {
    if (msg.executed) continue;
    const tc = document.createElement("div");
    tc.className = "tool-call";
    tc.textContent = t.function.name + "(" + t.function.arguments + ")";
    div.appendChild(tc);
  }
  return div;
}
function scroll() { const m = $("messages"); m.scrollTop = m.scrollHeight; }
function setBusy(busy) {
  $("send").disabled = busy;
  $("stop").disabled = !busy;
  $("input").disabled = busy;
}

async function* sse(response) {
  const reader = response.body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const event = buf.slice(0, i);
      buf = buf.slice(i + 2);
      const data = event.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
      if (data) yield data;
    }
  }
}

async function send(text) {
  const user = { role: "user", content: text };
  render(user);
  state.history.push(user);
  saveHistory();
  const div = bubble("assistant");
  div.dataset.state = "streaming";
  let think = null, thinkBody = null;
  let content = document.createElement("div");
  content.className = "content";
  div.appendChild(content);
  const meta = document.createElement("div");
  meta.className = "meta";
  scroll();

  const turns = Math.max(0, Number($("turns").value) | 0);
  const past = state.history.slice(0, -1).slice(-2 * turns);
  const messages = [];
  const system = $("system").value.trim();
  if (system) messages.push({ role: "system", content: system });
  for (const m of past) messages.push(m);
  messages.push(user);
  const body = {
    model: state.model || undefined, messages, stream: true, stream_options: { include_usage: true },
    temperature: Number($("temperature").value), top_p: Number($("top_p").value),
    max_tokens: Number($("max_tokens").value) || 256, seed: Math.floor(Math.random() * 2 ** 31),
    chat_template_kwargs: { open_thinking: $("thinking").checked },
  };
  const tools = state.tools.filter((t) => state.chosenTools.has(t.function.name));
  if (tools.length) body.tools = tools;
  let reply = { role: "assistant", content: "", reasoning_content: "" };
  const calls = [], rounds = [];
  state.controller = new AbortController();
  setBusy(true);
  const t0 = performance.now();
  let finish = null, usage = null;
  try {
    const res = await fetch("/v1/chat/completions", { method: "POST", headers: headers(), body: JSON.stringify(body),
      signal: state.controller.signal });
    if (!res.ok) {
      let msg = res.status + " " + res.statusText;
      try { msg = (await res.json()).error.message; } catch { /* not JSON */ }
      throw new Error(msg);
    }
    for await (const data of sse(res)) {
      if (data === "[DONE]") break;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message);
      if (chunk.usage) usage = chunk.usage;
      const choice = chunk.choices && chunk.choices[0];
      if (!choice) continue;
      const d = choice.delta || {};
      if (d.reasoning_content) {
        if (!think) { think = thinkBlock(div, true); div.insertBefore(think, content); thinkBody = think.querySelector(".think-body"); }
        reply.reasoning_content += d.reasoning_content;
        thinkBody.textContent = reply.reasoning_content;
      }
      if (d.content) {
        if (think && think.open) { think.open = false; think.querySelector("summary").textContent = "Thought"; }
        reply.content += d.content;
        content.textContent = reply.content;
      }
      if (d.tool_calls) for (const t of d.tool_calls) calls.push(t);
      if (d.executed_tool_calls) {
        // a round the server ran: fold each call and its result in, then continue below it
        for (const t of d.executed_tool_calls) toolBlock(div, t);
        rounds.push({ reply, ran: d.executed_tool_calls });
        reply = { role: "assistant", content: "", reasoning_content: "", continues: true };
        content = document.createElement("div");
        content.className = "content";
        div.appendChild(content);
      }
      if (choice.finish_reason) finish = choice.finish_reason;
      scroll();
    }
  } catch (e) {
    if (e.name === "AbortError") finish = "stopped";
    else { div.classList.add("error"); content.textContent = reply.content + (reply.content ? "\n" : "") + "Error: " + e.message; finish = "error"; }
  } finally {
    state.controller = null;
    setBusy(false);
  }
  if (think) { think.open = false; think.querySelector("summary").textContent = "Thought"; }
  for (const t of calls) {
    const tc = document.createElement("div");
    tc.className = "tool-call";
    tc.textContent = t.function.name + "(" + t.function.arguments + ")";
    div.appendChild(tc);
  }
  const secs = (performance.now() - t0) / 1000;
  meta.textContent = [finish && "finish: " + finish, usage && usage.completion_tokens + " tokens",
    usage && (usage.completion_tokens / secs).toFixed(1) + " tok/s"].filter(Boolean).join(" · ");
  div.appendChild(meta);
  div.dataset.state = "done";
  div.dataset.finish = finish || "";
  if (finish !== "error") {
    for (const r of rounds) {
      if (!r.reply.reasoning_content) delete r.reply.reasoning_content;
      r.reply.executed = true;
      r.reply.tool_calls = r.ran.filter((t) => t.function.name).map((t) => ({ id: t.id, type: "function", function: t.function }));
      state.history.push(r.reply);
      for (const t of r.ran) state.history.push({ role: "tool", tool_call_id: t.id, name: t.function.name,
        arguments: t.function.arguments, content: t.result });
    }
    if (!reply.reasoning_content) delete reply.reasoning_content;
    if (calls.length) reply.tool_calls = calls.map((t) => ({ id: t.id, type: "function", function: t.function }));
    state.history.push(reply);
    saveHistory();
  }
  scroll();
  $("input").focus();
}

async function loadTools() {
  const box = $("tools");
  box.replaceChildren();
  try {
    const res = await fetch("/v1/tools", { headers: headers() });
    state.tools = res.ok ? (await res.json()).data : [];
  } catch { state.tools = []; }
  if (!state.tools.length) {
    const none = document.createElement("div");
    none.className = "none";
    none.textContent = "None run here (start the server with --tools builtin); tool calls are shown as returned.";
    box.appendChild(none);
  }
  for (const t of state.tools) {
    const label = document.createElement("label");
    label.className = "tool-option";
    label.title = t.function.description;
    const cb = document.createElement("input");
    cb.type = "checkbox";
    cb.value = t.function.name;
    cb.checked = state.chosenTools.has(t.function.name);
    cb.addEventListener("change", () => {
      if (cb.checked) state.chosenTools.add(cb.value); else state.chosenTools.delete(cb.value);
      saveSettings();
    });
    const name = document.createElement("span");
    name.textContent = t.function.name;
    label.append(cb, name);
    box.appendChild(label);
  }
}

document.addEventListener("DOMContentLoaded", async () => {
  loadSettings();
  for (const m of state.history) render(m);
  scroll();
  for (const id of ["temperature", "top_p"]) $(id).addEventListener("input", () => { showValues(); saveSettings(); });
  for (const id of ["max_tokens", "turns", "thinking", "system", "api_key"]) $(id).addEventListener("change", saveSettings);
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("input").value.trim();
    if (!text || state.controller) return;
    $("input").value = "";
    send(text);
  });
  $("input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); $("composer").requestSubmit(); }
  });
  $("stop").addEventListener("click", () => state.controller && state.controller.abort());
  $("clear").addEventListener("click", () => { state.history = []; saveHistory(); $("messages").replaceChildren(); });
  try {
    const res = await fetch("/v1/models", { headers: headers() });
    if (res.ok) { state.model = (await res.json()).data[0].id; $("model").textContent = state.model; }
    else $("model").textContent = res.status === 401 ? "API key needed" : "models: " + res.status;
  } catch { $("model").textContent = "offline"; }
  await loadTools();
  document.body.dataset.ready = "1";
});
`;

/** The complete chat page (HTML with inline CSS and JS). */
export const CHAT_PAGE_HTML: string = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>MiniMind chat</title>
<style>${STYLE}</style>
</head>
<body>
<aside>
  <h1>MiniMind</h1>
  <div class="model" id="model">…</div>
  <label for="system">System prompt</label>
  <textarea id="system" rows="3" placeholder="(none)"></textarea>
  <label for="temperature"><span class="row">Temperature <span id="temperature_value"></span></span></label>
  <input id="temperature" type="range" min="0" max="1.5" step="0.05" value="0.85">
  <label for="top_p"><span class="row">Top-p <span id="top_p_value"></span></span></label>
  <input id="top_p" type="range" min="0.05" max="1" step="0.01" value="0.85">
  <label for="max_tokens">Max tokens</label>
  <input id="max_tokens" type="number" min="1" max="4096" value="512">
  <label for="turns">History (past rounds sent)</label>
  <input id="turns" type="number" min="0" max="32" value="4">
  <label class="row" for="thinking">Thinking <input id="thinking" type="checkbox"></label>
  <label>Tools</label>
  <div id="tools"></div>
  <label for="api_key">API key</label>
  <input id="api_key" type="password" autocomplete="off" placeholder="(none)">
  <button id="clear" class="secondary" type="button">Clear history</button>
</aside>
<main>
  <div id="messages" aria-live="polite"></div>
  <form id="composer">
    <textarea id="input" placeholder="Message MiniMind… (Enter to send, Shift+Enter for a new line)"></textarea>
    <button id="send" type="submit">Send</button>
    <button id="stop" type="button" class="secondary" disabled>Stop</button>
  </form>
</main>
<script>${SCRIPT}</script>
</body>
</html>
`;

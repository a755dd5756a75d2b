// Task screen: one prompt streamed over SSE from /live; Stop aborts the request,
// and the server cancels the generation down to the model when the connection closes.
import { answer, ms } from "./render.js";

const $ = (id) => document.getElementById(id);
let controller = null;

export function init(app) {
  const prompt = $("task-prompt");
  $("task-send").addEventListener("click", () => send(app));
  $("task-stop").addEventListener("click", stop);
  prompt.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); send(app); }
    if (e.key === "Escape") stop();
  });
}

function stop() {
  if (controller) controller.abort();
}

function params() {
  const body = { prompt: $("task-prompt").value };
  const max = $("task-max").value, temp = $("task-temp").value;
  if (max) body.max_tokens = Number(max);
  if (temp) body.temperature = Number(temp);
  return body;
}

async function send(app) {
  const api = app.api();
  const name = $("task-name").value;
  if (!api || controller) return;
  if (!name) return app.error("no task to send to: connect to a server that has tasks");
  const output = $("task-output"), stats = $("task-stats");
  output.textContent = "";
  output.setAttribute("aria-busy", "true");
  stats.textContent = "waiting for the first token…";
  app.clearError();
  controller = new AbortController();
  $("task-send").disabled = true;
  $("task-stop").disabled = false;
  const started = performance.now();
  let text = "", firstAt = null;
  try {
    for await (const ev of api.sse(`/v1/task/${encodeURIComponent(name)}/live`, params(), controller.signal)) {
      if (ev.event === "message") {
        if (firstAt === null) firstAt = performance.now();
        text += ev.data;
        output.textContent = text;
      } else if (ev.event === "done") {
        const done = JSON.parse(ev.data);
        answer(output, text);
        stats.textContent = describe(done, firstAt - started);
      } else if (ev.event === "error") {
        const err = JSON.parse(ev.data);
        app.error(`${err.message} (${err.code})`);
        stats.textContent = "failed";
      }
    }
  } catch (e) {
    if (e.name === "AbortError") stats.textContent = `stopped after ${text.length} characters`;
    else { app.error(e); stats.textContent = "failed"; }
  } finally {
    controller = null;
    output.removeAttribute("aria-busy");
    $("task-send").disabled = false;
    $("task-stop").disabled = true;
  }
}

// TTFT as the page saw it, and the server's own split (queue, prompt) and decode speed.
export function describe(done, ttft) {
  const t = done.timings || {}, u = done.usage || {};
  const speed = t.tokens_per_s != null ? `${t.tokens_per_s.toFixed(1)} tokens/s` : "– tokens/s";
  const server = t.prompt_ms != null ? ` (server: queued ${ms(t.queued_ms)}, prompt ${ms(t.prompt_ms)})` : "";
  const cached = t.cached_tokens ? `, ${t.cached_tokens} cached` : "";
  return `${speed} · TTFT ${ms(ttft)}${server} · ${u.prompt_tokens ?? "?"} prompt tokens${cached}, ` +
    `${u.completion_tokens ?? "?"} generated · ${done.finish_reason}`;
}

// The page: connection settings, the lists from the API, screen switching, and
// the one place errors are shown. Each screen is its own module.
import { Api } from "./api.js";
import * as task from "./task.js";
import * as chat from "./chat.js";
import * as memory from "./memory.js";
import * as vectors from "./vectors.js";

const $ = (id) => document.getElementById(id);
let api = null;

export const app = {
  api: () => api,
  error(err) {
    const box = $("error");
    box.textContent = typeof err === "string" ? err : (err.message || String(err));
    box.hidden = false;
  },
  clearError() { $("error").hidden = true; $("error").textContent = ""; },
  status(text) { $("status").textContent = text; },
};

function fill(select, names, empty) {
  const keep = select.value;
  select.replaceChildren(...names.map((n) => new Option(n, n)));
  if (!names.length) select.append(new Option(empty, ""));
  if (names.includes(keep)) select.value = keep;
}

async function connect() {
  const url = $("server-url").value.trim();
  const key = $("api-key").value;
  localStorage.setItem("poly-ray.url", url);
  localStorage.setItem("poly-ray.key", key);
  api = new Api(url, key);
  app.clearError();
  app.status(`connecting to ${api.base}…`);
  try {
    const [tasks, models] = await Promise.all([api.get("/v1/task"), api.get("/v1/model")]);
    let memories = [];
    try {
      memories = (await api.get("/v1/memory")).memories;
    } catch (e) {
      if (e.status !== 404) throw e; // 404: no memory is configured
    }
    document.querySelectorAll("select.tasks").forEach((s) => fill(s, tasks.tasks, "(no task)"));
    document.querySelectorAll("select.models").forEach((s) => fill(s, models.models, "(no model)"));
    fill($("memory-name"), memories, "(no memory)");
    app.status(`${api.base}: ${tasks.tasks.length} tasks, ${models.models.length} models, ${memories.length} memories`);
    memory.refresh();
  } catch (e) {
    app.status(`not connected to ${api.base}`);
    app.error(e);
  }
}

function show(screen) {
  for (const b of document.querySelectorAll("nav button")) {
    if (b.dataset.screen === screen) b.setAttribute("aria-current", "page");
    else b.removeAttribute("aria-current");
  }
  for (const s of document.querySelectorAll("main > section")) s.hidden = s.id !== screen;
  const first = document.querySelector(`#${screen} textarea, #${screen} input`);
  if (first) first.focus();
}

$("server-url").value = localStorage.getItem("poly-ray.url") || "";
$("api-key").value = localStorage.getItem("poly-ray.key") || "";
$("connect").addEventListener("submit", (e) => { e.preventDefault(); connect(); });
for (const b of document.querySelectorAll("nav button")) b.addEventListener("click", () => show(b.dataset.screen));
// Alt+1..5 switch screens from the keyboard.
document.addEventListener("keydown", (e) => {
  const buttons = [...document.querySelectorAll("nav button")];
  const n = Number(e.key);
  if (e.altKey && n >= 1 && n <= buttons.length) { e.preventDefault(); show(buttons[n - 1].dataset.screen); }
});
window.addEventListener("unhandledrejection", (e) => app.error(e.reason));

task.init(app);
chat.init(app);
memory.init(app);
vectors.init(app);
connect();

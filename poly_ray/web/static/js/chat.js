// Chat screen: one WebSocket session per task (the prelude is read once and the
// conversation stays on the model replica, so each turn shows its cached tokens).
// Stop sends {"type": "stop"}: the server ends the turn and the session goes on.
// Restart closes the socket; the next message opens a new session.
import { el, markdown } from "./render.js";
import { describe } from "./task.js";

const $ = (id) => document.getElementById(id);
let socket = null, opened = null, turn = null;

export function init(app) {
  const prompt = $("chat-prompt");
  $("chat-send").addEventListener("click", () => send(app));
  $("chat-stop").addEventListener("click", stop);
  $("chat-restart").addEventListener("click", () => restart("new session"));
  $("chat-task").addEventListener("change", () => restart(`task ${$("chat-task").value}`));
  prompt.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); send(app); }
    if (e.key === "Escape") stop();
  });
}

function bubble(who, text = "") {
  const b = el("div", { class: `bubble ${who}` });
  if (who === "user") b.textContent = text;
  $("chat-log").append(b);
  b.scrollIntoView({ block: "end" });
  return b;
}

function note(text) {
  $("chat-log").append(el("p", { class: "note" }, text));
}

function restart(why) {
  if (socket) socket.close(1000);
  socket = opened = null;
  busy(false);
  turn = null;
  $("chat-log").replaceChildren();
  $("chat-stats").textContent = "";
  note(`${why}: the next message starts a session`);
}

function busy(on) {
  $("chat-send").disabled = on;
  $("chat-stop").disabled = !on;
}

function stop() {
  if (socket && turn) socket.send(JSON.stringify({ type: "stop" }));
}

function open(app) {
  const ws = app.api().socket($("chat-task").value);
  opened = new Promise((resolve, reject) => {
    ws.addEventListener("open", () => resolve(ws), { once: true });
    ws.addEventListener("error", () => reject(new Error(`the chat WebSocket to ${ws.url.split("?")[0]} failed`)), { once: true });
  });
  ws.addEventListener("message", (m) => receive(app, JSON.parse(m.data)));
  ws.addEventListener("close", (e) => {
    if (socket !== ws) return;
    socket = opened = null;
    if (turn) busy(false);
    turn = null;
    if (e.code >= 4000) app.error(`${e.reason || "the server closed the session"} (${e.code - 4000})`);
    else if (e.code !== 1000) note(`the session ended (${e.code}${e.reason ? `: ${e.reason}` : ""}); the next message starts a new one`);
  });
  socket = ws;
  return opened;
}

function receive(app, m) {
  if (!turn) return;
  if (m.type === "token") {
    if (turn.firstAt === null) turn.firstAt = performance.now();
    turn.text += m.text;
    markdown(turn.bubble, turn.text);
    turn.bubble.scrollIntoView({ block: "end" });
  } else if (m.type === "done") {
    // A stopped turn is not part of the conversation: the session goes on from before it.
    const line = m.finish_reason === "cancelled" ? "stopped (cancelled): this answer is not part of the conversation"
      : describe(m, turn.firstAt - turn.started);
    turn.bubble.after(el("p", { class: "note" }, line + (m.dropped_turns ? ` · ${m.dropped_turns} oldest turns dropped` : "")));
    $("chat-stats").textContent = line;
    turn = null;
    busy(false);
  } else if (m.type === "error") {
    app.error(`${m.message} (${m.code})`);
    turn = null;
    busy(false);
  }
}

async function send(app) {
  const prompt = $("chat-prompt");
  const text = prompt.value;
  if (!text.trim() || turn || !app.api()) return;
  if (!$("chat-task").value) return app.error("no task to chat with: connect to a server that has tasks");
  app.clearError();
  try {
    const ws = await (opened || open(app));
    prompt.value = "";
    bubble("user", text);
    turn = { text: "", bubble: bubble("assistant"), started: performance.now(), firstAt: null };
    busy(true);
    ws.send(JSON.stringify({ prompt: text }));
  } catch (e) {
    socket = opened = null;
    app.error(e);
  }
}

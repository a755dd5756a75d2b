// Memory screen: recall, store text, upload a document (an ingestion job whose
// progress is polled), list and delete documents, clear.
import { el } from "./render.js";

const $ = (id) => document.getElementById(id);
let app = null;
const path = (suffix = "") => `/v1/memory/${encodeURIComponent($("memory-name").value)}${suffix}`;
const chosen = () => Boolean(app.api() && $("memory-name").value);

export function init(a) {
  app = a;
  $("memory-name").addEventListener("change", refresh);
  $("recall-send").addEventListener("click", () => guard(recall));
  $("recall-prompt").addEventListener("keydown", (e) => { if (e.key === "Enter") guard(recall); });
  $("store-send").addEventListener("click", () => guard(storeText));
  $("upload-send").addEventListener("click", () => guard(upload));
  $("memory-clear").addEventListener("click", () => guard(clear));
}

async function guard(action) {
  if (!chosen()) return app.error("no memory: connect to a server with a memory configured");
  app.clearError();
  try {
    await action();
  } catch (e) {
    app.error(e);
  }
}

async function recall() {
  const prompt = $("recall-prompt").value;
  if (!prompt.trim()) return app.error("type a query to recall");
  const n = Number($("recall-n").value) || 3;
  const answer = await app.api().post(path(), { prompt, n });
  // `results` carries scores and metadata; Poly answers the texts only, as `chunks`.
  const chunks = answer.results ?? (answer.chunks || answer.memories || []).map((text) => ({ text }));
  $("recall-results").replaceChildren(...chunks.map((c) => {
    const text = typeof c === "string" ? c : c.text;
    const meta = c.metadata || {};
    const where = [meta.source, meta.page != null ? `page ${meta.page}` : null, c.score != null ? `score ${c.score.toFixed(3)}` : null]
      .filter(Boolean).join(" · ");
    return el("li", {}, el("p", {}, text), el("small", {}, where));
  }));
  if (!chunks.length) $("recall-results").append(el("li", {}, "nothing recalled: the memory is empty"));
}

async function storeText() {
  const text = $("store-text").value;
  if (!text.trim()) return app.error("type a text to store");
  const answer = await (await app.api().request("PUT", path(), { body: text, headers: { "Content-Type": "text/plain; charset=utf-8" } })).json();
  const [doc] = answer.documents;
  $("upload-status").textContent = `stored ${doc.chunks} chunk${doc.chunks === 1 ? "" : "s"}${doc.stored ? "" : " (already stored)"}`;
  $("store-text").value = "";
  await refresh();
}

async function upload() {
  const file = $("upload-file").files[0];
  if (!file) return app.error("choose a PDF, DOCX or text file to upload");
  const status = $("upload-status"), bar = $("upload-progress");
  status.textContent = `uploading ${file.name}…`;
  bar.hidden = false;
  bar.removeAttribute("value"); // indeterminate until the job says how many chunks
  try {
    const type = file.type || (file.name.endsWith(".pdf") ? "application/pdf" : "text/plain");
    const started = await (await app.api().request("PUT", path(`?wait=false&filename=${encodeURIComponent(file.name)}`), {
      body: file, headers: { "Content-Type": type },
    })).json();
    for (;;) {
      const job = await app.api().get(path(`/jobs/${encodeURIComponent(started.job)}`));
      bar.max = Math.max(job.chunks_total, 1);
      bar.value = job.chunks_done;
      status.textContent = `${file.name}: ${job.chunks_done} of ${job.chunks_total} chunks embedded`;
      if (job.state === "failed") throw new Error(`${file.name}: ${job.error?.message || "ingestion failed"}`);
      if (job.state === "done") {
        const stored = job.result?.documents?.[0];
        status.textContent = `${file.name}: stored, ${stored ? stored.chunks : job.chunks_total} chunks`;
        break;
      }
      await new Promise((r) => setTimeout(r, 400));
    }
  } catch (e) {
    status.textContent = `${file.name}: not stored`;
    throw e;
  } finally {
    bar.hidden = true;
    await refresh();
  }
}

async function clear() {
  const button = $("memory-clear");
  if (button.dataset.confirm !== "yes") {
    // Two presses instead of a modal confirm(): the keyboard stays in the page.
    button.dataset.confirm = "yes";
    button.textContent = "Really clear?";
    setTimeout(() => { button.dataset.confirm = ""; button.textContent = "Clear"; }, 4000);
    return;
  }
  button.dataset.confirm = "";
  button.textContent = "Clear";
  await app.api().delete(path());
  $("recall-results").replaceChildren();
  await refresh();
}

export async function refresh() {
  const list = $("documents");
  if (!app || !chosen()) return list.replaceChildren();
  try {
    const answer = await app.api().get(path("/documents"));
    list.replaceChildren(...answer.documents.map((d) => el("li", {},
      `${d.source || d.document} (${d.chunks ?? "?"} chunks) `,
      el("button", { type: "button", class: "danger", "aria-label": `Delete ${d.source || d.document}`, onclick: () => guard(async () => {
        await app.api().delete(path(`/documents/${encodeURIComponent(d.document)}`));
        await refresh();
      }) }, "Delete"))));
    if (!answer.documents.length) list.append(el("li", {}, "no documents"));
  } catch (e) {
    app.error(e);
  }
}

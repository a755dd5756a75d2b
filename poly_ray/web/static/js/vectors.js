// Embeddings screen (cosine similarities of several texts as a heat map) and
// Tokenization screen (a text's tokens, coloured in turn, ids on hover).
import { el } from "./render.js";

const $ = (id) => document.getElementById(id);

export function init(app) {
  const run = (action) => async () => {
    if (!app.api()) return;
    app.clearError();
    try { await action(app.api()); } catch (e) { app.error(e); }
  };
  $("emb-send").addEventListener("click", run(embed));
  $("tok-send").addEventListener("click", run(tokenize));
}

function cosine(a, b) {
  let dot = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) { dot += a[i] * b[i]; na += a[i] * a[i]; nb += b[i] * b[i]; }
  return na && nb ? dot / Math.sqrt(na * nb) : 0;
}

async function embed(api) {
  const texts = $("emb-texts").value.split("\n").map((t) => t.trim()).filter(Boolean);
  if (!texts.length) throw new Error("type one or more texts, one per line");
  const model = encodeURIComponent($("emb-model").value);
  const { embeddings } = await api.post(`/v1/model/${model}/embedding`, { prompt: texts });
  const label = (t) => (t.length > 24 ? `${t.slice(0, 23)}…` : t);
  const sims = texts.map((_, i) => texts.map((_, j) => cosine(embeddings[i], embeddings[j])));
  // Models differ in how similar unrelated texts look: the colours span this matrix's own range.
  const low = Math.min(...sims.flat()), span = 1 - low || 1;
  const head = el("tr", {}, el("th", {}), ...texts.map((t) => el("th", { scope: "col", title: t }, label(t))));
  const rows = texts.map((t, i) => el("tr", {}, el("th", { scope: "row", title: t }, label(t)), ...texts.map((_, j) => {
    const s = sims[i][j], heat = (s - low) / span;
    const cell = el("td", { title: `${texts[i]} · ${texts[j]}` }, s.toFixed(3));
    cell.style.background = `hsl(220 80% ${97 - 55 * heat}%)`;
    if (heat > 0.6) cell.style.color = "#fff";
    return cell;
  })));
  $("emb-matrix").replaceChildren(el("table", { class: "heat" }, el("caption", {}, `cosine similarity, ${embeddings[0].length} dimensions; colours from ${low.toFixed(3)} (light) to 1 (dark)`), el("thead", {}, head), el("tbody", {}, ...rows)));
}

async function tokenize(api) {
  const text = $("tok-text").value;
  const model = encodeURIComponent($("tok-model").value);
  const { tokens } = await api.post(`/v1/model/${model}/tokenization`, { prompt: text });
  $("tok-count").textContent = `${tokens.length} tokens, ${text.length} characters`;
  $("tok-output").replaceChildren(...tokens.map((t, i) => {
    const piece = t.text ?? t.token ?? "";
    return el("span", { class: `tok c${i % 6}`, title: `id ${t.id}` }, piece.replace(/\n/g, "↵\n") || "∅");
  }));
}

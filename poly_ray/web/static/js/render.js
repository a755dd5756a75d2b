// Model output is untrusted: markdown is rendered by marked, then every tag and
// attribute outside DOMPurify's safe set is removed before it reaches the page.
import { marked } from "../vendor/marked.esm.js";
import DOMPurify from "../vendor/purify.es.mjs";

marked.setOptions({ gfm: true, breaks: true });

export function markdown(element, text) {
  element.innerHTML = DOMPurify.sanitize(marked.parse(text), { FORBID_TAGS: ["style", "form", "input"] });
  // A link is shown as text with its target: a prompt injection (a recalled document) can make
  // the model write a link whose address carries the conversation, for the reader to click.
  for (const a of element.querySelectorAll("a")) {
    const href = a.getAttribute("href") || "";
    const label = a.textContent;
    a.replaceWith(document.createTextNode(!href || label === href ? label : `${label} (${href})`));
  }
}

// A JSON answer (a task with a schema) is shown formatted; anything else as text.
export function answer(element, text) {
  const trimmed = text.trim();
  if (/^[[{]/.test(trimmed)) {
    try {
      const pre = document.createElement("pre");
      pre.className = "json";
      pre.textContent = JSON.stringify(JSON.parse(trimmed), null, 2);
      element.replaceChildren(pre);
      return true;
    } catch { /* not (yet) JSON */ }
  }
  element.textContent = text;
  return false;
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  node.append(...children);
  return node;
}

export function ms(value) {
  return value == null ? "–" : `${Math.round(value)} ms`;
}

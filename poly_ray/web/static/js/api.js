// The server's API as the page uses it: JSON calls, SSE over fetch (so a POST
// body and the Authorization header can be sent, and Stop aborts it), and the
// task WebSocket. Every failure becomes an ApiError carrying the server's message.

export class ApiError extends Error {
  constructor(message, status = 0, code = "") {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// Poly's routes answer {"error": {"code", "message"}}; be lenient with other shapes.
async function errorOf(response) {
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    const err = body.error ?? body;
    if (typeof err === "string") return new ApiError(err, response.status);
    if (err && err.message) return new ApiError(err.message, response.status, err.code || "");
  } catch { /* not JSON */ }
  return new ApiError(`HTTP ${response.status} ${response.statusText}${text ? `: ${text.slice(0, 200)}` : ""}`, response.status);
}

export class Api {
  constructor(base, key) {
    this.base = (base || location.origin).replace(/\/+$/, "");
    this.key = key;
  }

  headers(extra = {}) {
    return this.key ? { ...extra, Authorization: `Bearer ${this.key}` } : extra;
  }

  async request(method, path, { json, body, headers = {}, signal } = {}) {
    const init = { method, headers: this.headers(headers), signal };
    if (json !== undefined) {
      init.body = JSON.stringify(json);
      init.headers["Content-Type"] = "application/json";
    } else if (body !== undefined) {
      init.body = body;
    }
    let response;
    try {
      response = await fetch(this.base + path, init);
    } catch (e) {
      if (e.name === "AbortError") throw e;
      throw new ApiError(`cannot reach ${this.base} (${e.message})`);
    }
    if (!response.ok) throw await errorOf(response);
    return response;
  }

  async get(path) { return (await this.request("GET", path)).json(); }
  async post(path, json) { return (await this.request("POST", path, { json })).json(); }
  async delete(path) { return (await this.request("DELETE", path)).json(); }

  // Yields {event, data} for each SSE event; aborting `signal` closes the
  // connection, which the server turns into a cancelled generation.
  async *sse(path, json, signal) {
    const response = await this.request("POST", path, { json, signal, headers: { Accept: "text/event-stream" } });
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n?/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const event = parseEvent(block);
          if (event) yield event;
        }
      }
    } finally {
      reader.cancel().catch(() => {});
    }
  }

  // The task's chat session in the JSON protocol. Browsers cannot set headers
  // on a WebSocket, so the key goes in ?api_key= (which the server accepts).
  socket(task) {
    const url = new URL(`${this.base}/v1/task/${encodeURIComponent(task)}/chat`);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    if (this.key) url.searchParams.set("api_key", this.key);
    return new WebSocket(url, ["poly.json"]);
  }
}

function parseEvent(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue; // keep-alive comments
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
  }
  return data.length || event !== "message" ? { event, data: data.join("\n") } : null;
}

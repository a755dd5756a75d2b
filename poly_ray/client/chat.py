"""``poly-ray chat``: a terminal chat over a task's WebSocket session.

It speaks the JSON chat protocol (``poly.json``): the session keeps the
conversation on the server (the prelude is read once), each answer streams as
it is generated, Ctrl-C sends ``{"type": "stop"}`` (the answer stops, the
session stays), ``/reset`` opens a new session, ``/quit`` (or Ctrl-D) leaves.
prompt_toolkit edits the line and keeps its history (arrow keys); rich prints.

Only HTTP and WebSocket: nothing here imports the server.
"""

from __future__ import annotations

import asyncio
import json
import signal
import urllib.error
import urllib.parse
import urllib.request

from prompt_toolkit import PromptSession
from prompt_toolkit.history import FileHistory, InMemoryHistory
from rich.console import Console
from rich.markup import escape
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.protocol import State

HELP = "/reset starts a new session, /quit leaves (or Ctrl-D); Ctrl-C stops an answer"


# Model output and server messages reach the terminal as text only: ESC starts CSI and OSC
# sequences (move the cursor, rewrite earlier lines, set links or the clipboard), and rich
# strips only BS, VT, FF and CR. Every C0 control but tab and newline, DEL and the C1
# controls are shown as \xNN instead; a CR is dropped (a CRLF stays a line break).
_VISIBLE = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)] if c not in (0x09, 0x0A, 0x0D)}
_VISIBLE[0x0D] = ""


def visible(text: str) -> str:
    """``text`` with no control sequence the terminal would act on."""
    return text.translate(_VISIBLE)


class ChatError(Exception):
    """Something the user must read; the client leaves (at start) or goes on (in a session)."""


def tasks(url: str, key: str | None) -> list[str]:
    """The tasks this key may use, from ``GET /v1/task`` (errors in the server's words)."""
    request = urllib.request.Request(url.rstrip("/") + "/v1/task", headers=_auth(key))
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)["tasks"]
    except urllib.error.HTTPError as e:
        raise ChatError(f"{url} refused: {_message(e.read())} (HTTP {e.code})") from None
    except (urllib.error.URLError, OSError) as e:
        raise ChatError(f"cannot reach {url}: {getattr(e, 'reason', e)}") from None


def _auth(key: str | None) -> dict:
    return {"Authorization": f"Bearer {key}"} if key else {}


def _message(body: bytes) -> str:
    try:
        err = json.loads(body)["error"]
        return err["message"] if isinstance(err, dict) else str(err)
    except (ValueError, KeyError, TypeError):
        return body.decode(errors="replace")[:200] or "no message"


def describe(done: dict) -> str:
    """The line after an answer: tokens, speed, time to first token (the server's), cached tokens."""
    t, u = done.get("timings") or {}, done.get("usage") or {}
    parts = [f"{u.get('completion_tokens', '?')} tokens"]
    if t.get("tokens_per_s") is not None:
        parts.append(f"{t['tokens_per_s']:.1f} tokens/s")
    if t.get("prompt_ms") is not None:
        parts.append(f"first token after {t.get('queued_ms', 0) + t['prompt_ms']:.0f} ms")
    if t.get("cached_tokens"):
        parts.append(f"{t['cached_tokens']} cached")
    parts.append(done.get("finish_reason", "?"))
    return " · ".join(parts)


class Chat:
    def __init__(self, url: str, task: str, key: str | None, console: Console):
        self.url, self.task, self.key, self.console = url.rstrip("/"), task, key, console
        self.ws: ClientConnection | None = None

    def _ws_url(self) -> str:
        parts = urllib.parse.urlsplit(self.url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        path = f"{parts.path}/v1/task/{urllib.parse.quote(self.task, safe='')}/chat"
        return urllib.parse.urlunsplit((scheme, parts.netloc, path, "", ""))

    async def _open(self) -> ClientConnection:
        if self.ws is not None and self.ws.state is not State.OPEN:
            self.ws = None  # the server closed it meanwhile (ws_idle_timeout_s): a new session
        if self.ws is None:
            try:
                self.ws = await connect(self._ws_url(), subprotocols=["poly.json"], additional_headers=_auth(self.key),
                                        open_timeout=10, max_size=None)
            except InvalidStatus as e:
                raise ChatError(f"the server refused the session: HTTP {e.response.status_code}") from None
            except (OSError, asyncio.TimeoutError) as e:
                raise ChatError(f"cannot reach {self.url}: {e}") from None
        return self.ws

    async def reset(self) -> None:
        if self.ws is not None:
            await self.ws.close()
            self.ws = None

    async def turn(self, prompt: str) -> None:
        """Send one turn and print its answer as it comes; Ctrl-C stops it."""
        ws = await self._open()
        loop = asyncio.get_running_loop()
        stopping = False

        def stop() -> None:
            nonlocal stopping
            if not stopping:
                stopping = True
                loop.create_task(ws.send(json.dumps({"type": "stop"})))

        loop.add_signal_handler(signal.SIGINT, stop)
        try:
            await ws.send(json.dumps({"prompt": prompt}))
            while True:
                message = json.loads(await ws.recv())
                kind = message.get("type")
                if kind == "token":
                    self.console.print(visible(message["text"]), end="", markup=False, highlight=False,
                                       soft_wrap=True)
                elif kind == "done":
                    self.console.print()
                    note = "stopped" if message.get("finish_reason") == "cancelled" else describe(message)
                    self.console.print(f"[dim]{escape(visible(note))}[/dim]", highlight=False)
                    return
                elif kind == "error":
                    self.console.print()
                    raise ChatError(f"{message.get('message')} ({message.get('code')})")
        except ConnectionClosed as e:
            self.ws = None
            self.console.print()
            reason = e.rcvd.reason if e.rcvd else ""
            code = e.rcvd.code if e.rcvd else None
            if code is not None and code >= 4000:
                raise ChatError(f"the server ended the session: {reason} (HTTP {code - 4000})") from None
            raise ChatError(f"the connection to {self.url} closed ({reason or 'no reason given'}); "
                            "the next message starts a new session") from None
        finally:
            loop.remove_signal_handler(signal.SIGINT)


async def main(url: str, task: str | None, key: str | None, history: str | None = None,
               console: Console | None = None) -> int:
    console = console or Console(highlight=False)
    try:
        names = await asyncio.to_thread(tasks, url, key)
        if task is None:
            if len(names) != 1:
                raise ChatError(f"name a task: poly-ray chat TASK (tasks: {', '.join(names) or 'none'})")
            task = names[0]
        elif task not in names:
            raise ChatError(f"unknown task '{task}' (tasks: {', '.join(names) or 'none'})")
    except ChatError as e:
        console.print(f"poly-ray chat: {visible(str(e))}", style="red", markup=False)
        return 1
    chat = Chat(url, task, key, console)
    session = PromptSession(history=FileHistory(history) if history else InMemoryHistory())
    console.print(f"{visible(task)} at {url} · {HELP}", style="bold", markup=False)
    try:
        while True:
            try:
                line = await session.prompt_async(f"{visible(task)}> ")
            except KeyboardInterrupt:
                continue  # Ctrl-C at the prompt clears the line, as in a shell
            except EOFError:
                return 0
            command = line.strip()
            if command in ("/quit", "/exit"):
                return 0
            if command == "/reset":
                await chat.reset()
                console.print("[dim]new session[/dim]")
                continue
            if command in ("/help", "/?"):
                console.print(HELP)
                continue
            if not command:
                continue
            try:
                await chat.turn(line)
            except ChatError as e:
                console.print(visible(str(e)), style="red", markup=False)
    finally:
        await chat.reset()

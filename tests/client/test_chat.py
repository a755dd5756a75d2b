"""``poly-ray chat`` in a real terminal (tmux: send-keys, capture-pane) against a
real server (the app over the real Gemma engine, served by uvicorn)."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from live_server import KEY, real_app, serving
from tests_paths import ARTIFACTS

pytestmark = pytest.mark.model

POLY_RAY = str(Path(sys.executable).with_name("poly-ray"))
SOCKET = f"poly-ray-test-{os.getpid()}"  # a tmux server of our own, never another one's


def _tmux() -> str:
    if not shutil.which("tmux") and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "tmux"], check=False, capture_output=True)
    if not (path := shutil.which("tmux")):
        pytest.fail("the terminal client's tests need tmux: run `sudo apt-get install -y tmux`")
    return path


@pytest.fixture(scope="module")
def server(gemma_path, tmp_path_factory):
    app, engine, memory = real_app(gemma_path, tmp_path_factory.mktemp("chat-memory"))
    with serving(app) as url:
        yield url, engine
    memory.close()
    engine.close()


class Pane:
    def __init__(self, tmux: str, name: str, command: list[str]):
        self.tmux, self.name = tmux, name
        env = ["env", f"POLY_RAY_KEY={KEY}", "TERM=xterm-256color"]
        subprocess.run([tmux, "-L", SOCKET, "new-session", "-d", "-s", name, "-x", "110", "-y", "40", *env, *command],
                       check=True)

    def keys(self, *keys: str) -> None:
        subprocess.run([self.tmux, "-L", SOCKET, "send-keys", "-t", self.name, *keys], check=True)

    def type(self, text: str) -> None:
        self.keys("-l", text)
        self.keys("Enter")

    def text(self) -> str:
        out = subprocess.run([self.tmux, "-L", SOCKET, "capture-pane", "-p", "-J", "-t", self.name],
                             capture_output=True, text=True)
        return out.stdout

    def alive(self) -> bool:
        return subprocess.run([self.tmux, "-L", SOCKET, "has-session", "-t", self.name], capture_output=True).returncode == 0

    def wait(self, check, timeout: float = 90) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check(text := self.text()):
                return text
            time.sleep(0.1)
        raise AssertionError(f"the pane never showed what was expected:\n{self.text()}")


@pytest.fixture(scope="module")
def tmux():
    path = _tmux()
    yield path
    subprocess.run([path, "-L", SOCKET, "kill-server"], capture_output=True)


def test_streams_answers_in_one_session_with_history_reset_and_quit(tmux, server):
    url, _ = server
    pane = Pane(tmux, "chat", [POLY_RAY, "chat", "chat", "--url", url])
    pane.wait(lambda t: "chat>" in t)  # capture-pane drops trailing spaces
    pane.type("What is the capital of France?")
    first = pane.wait(lambda t: t.count("tokens/s") == 1)
    assert "stop" in first or "length" in first
    # Up brings the last prompt back; the session keeps the conversation, so the prelude is cached.
    pane.keys("Up")
    pane.wait(lambda t: t.rstrip().endswith("chat> What is the capital of France?"))
    pane.keys("Enter")
    second = pane.wait(lambda t: t.count("tokens/s") == 2)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "chat-pane.txt").write_text(second)
    assert "cached" in second.splitlines()[[i for i, l in enumerate(second.splitlines()) if "tokens/s" in l][-1]]
    pane.type("/reset")
    pane.wait(lambda t: "new session" in t)
    pane.type("/quit")
    deadline = time.monotonic() + 10
    while pane.alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pane.alive()


def test_ctrl_c_stops_the_answer_and_stays(tmux, server):
    url, engine = server
    pane = Pane(tmux, "story", [POLY_RAY, "chat", "story", "--url", url])
    pane.wait(lambda t: "story>" in t)
    pane.type("The history of the Roman empire begins")
    pane.wait(lambda t: "begins" in t and len(t.split("begins", 1)[1].split()) > 5)  # a few words of the answer are in
    assert engine.stats()["active"] == 1, pane.text()
    pane.keys("C-c")
    # The prompt comes back a moment after "stopped" is printed: wait for it, not for the word.
    text = pane.wait(lambda t: "stopped" in t and t.rstrip().endswith("story>"))
    deadline = time.monotonic() + 10
    while engine.stats()["active"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.stats()["active"] == 0  # the server stopped generating
    assert pane.alive() and text.split("stopped", 1)[1].strip() == "story>"
    pane.type("Once upon a time")  # the session goes on: a second answer streams, and stops again
    pane.wait(lambda t: "Once upon a time" in t and len(t.split("Once upon a time", 1)[1].split()) > 3)
    pane.keys("C-c")
    pane.wait(lambda t: t.count("stopped") == 2)
    pane.type("/quit")


def run_chat(*args: str, key: str = KEY) -> subprocess.CompletedProcess:
    return subprocess.run([POLY_RAY, "chat", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "POLY_RAY_KEY": key}, stdin=subprocess.DEVNULL)


def test_readable_errors(server):
    url, _ = server
    wrong = run_chat("chat", "--url", url, key="wrong")
    assert wrong.returncode == 1 and "refused: invalid credentials" in wrong.stdout + wrong.stderr, wrong
    unknown = run_chat("nope", "--url", url)
    assert unknown.returncode == 1 and "unknown task 'nope' (tasks: story, chat, verdict)" in unknown.stdout, unknown
    gone = run_chat("chat", "--url", "http://127.0.0.1:9")
    assert gone.returncode == 1 and "cannot reach http://127.0.0.1:9" in gone.stdout, gone

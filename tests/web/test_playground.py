"""The web playground in headless chromium over a real server (the app over the
real Gemma engine and a real memory, served by uvicorn): load, list, stream,
Stop, chat, upload a PDF and recall from it, embeddings, tokens, errors.
Screenshots go to test-artifacts/."""

import json
import time

import httpx
import jwt
import pytest
from documents import pdf
from live_server import JWT_SECRET, KEY, VERDICT, real_app, serving
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

pytestmark = pytest.mark.model

PAGES = [
    "Bees make honey from the nectar of flowers. A hive keeps its honey in wax combs through the winter.",
    "The river Rhine reaches the North Sea near Rotterdam, the largest port of Europe.",
]


@pytest.fixture(scope="module")
def server(gemma_path, tmp_path_factory):
    app, engine, memory = real_app(gemma_path, tmp_path_factory.mktemp("playground-memory"))
    with serving(app) as url:
        yield url, engine
    memory.close()
    engine.close()


@pytest.fixture(scope="module")
def page(browser, server):
    """The playground, connected with the key (kept in localStorage for the next load)."""
    url, _ = server
    key = load(browser, url)
    key.clear()
    key.send_keys(KEY)
    browser.find_element(By.CSS_SELECTOR, "#connect button[type=submit]").click()
    wait(browser).until(lambda b: "story" in options(b, "task-name"))
    return browser


def load(browser, url):
    """The playground loaded; its key field (the page's modules may still be running
    when ``get`` returns: wait for the field rather than race them)."""
    browser.get(url + "/")
    return wait(browser).until(lambda b: b.find_element(By.ID, "api-key"))


def wait(browser, timeout=60):
    # IndexError: a condition reading the last bubble or note before the page has added it.
    return WebDriverWait(browser, timeout, poll_frequency=0.1, ignored_exceptions=(IndexError,))


def options(browser, select_id):
    # Read in one script: the page refills the list when it connects again.
    return browser.execute_script(f"return [...document.querySelectorAll('#{select_id} option')].map(o => o.value)")


def screen(browser, name):
    browser.find_element(By.CSS_SELECTOR, f"nav button[data-screen={name}]").click()
    return browser.find_element(By.ID, name)


def button(section, name):
    [b] = [b for b in section.find_elements(By.TAG_NAME, "button") if b.accessible_name == name]
    return b


def prompt_box(section):
    [box] = [t for t in section.find_elements(By.TAG_NAME, "textarea") if t.accessible_name == "Prompt"]
    return box


def test_loads_lists_from_the_api_and_keeps_the_key(page, server):
    assert options(page, "task-name") == ["story", "chat", "verdict"]
    assert options(page, "emb-model") == ["gemma"]
    assert options(page, "memory-name") == ["notes"]
    assert "3 tasks, 1 models, 1 memories" in page.find_element(By.ID, "status").text
    assert page.execute_script("return localStorage.getItem('poly-ray.key')") == KEY
    page.refresh()  # a new load connects with the stored key
    wait(page).until(lambda b: "story" in options(b, "task-name"))


def test_streams_an_answer_with_its_timings(page, artifacts):
    task = screen(page, "task")
    Select(page.find_element(By.ID, "task-name")).select_by_value("story")
    page.find_element(By.ID, "task-max").send_keys("24")
    box = prompt_box(task)
    box.send_keys("Once upon a time")
    button(task, "Send").click()
    wait(page).until(lambda b: "tokens/s" in b.find_element(By.ID, "task-stats").text)
    log = task.find_element(By.CSS_SELECTOR, "[role=log]")
    assert log.text.strip()
    stats = page.find_element(By.ID, "task-stats").text
    assert "TTFT" in stats and "24 generated" in stats and "length" in stats, stats
    page.save_screenshot(str(artifacts / "playground-task.png"))
    page.find_element(By.ID, "task-max").clear()


def test_stop_cancels_the_generation_on_the_server(page, server):
    _, engine = server
    task = screen(page, "task")
    box = prompt_box(task)
    box.clear()
    box.send_keys("The history of the Roman empire begins")
    button(task, "Send").click()
    log = task.find_element(By.CSS_SELECTOR, "[role=log]")
    wait(page).until(lambda b: len(log.text) > 20)
    assert engine.stats()["active"] == 1
    button(task, "Stop").click()
    wait(page).until(lambda b: "stopped" in b.find_element(By.ID, "task-stats").text)
    # The server cancelled it down to the engine: the slot is free long before 400 tokens.
    wait(page, 10).until(lambda b: engine.stats()["active"] == 0)
    stopped = log.text
    assert len(stopped.split()) < 300
    assert not button(task, "Send").get_attribute("disabled")
    assert log.text == stopped  # nothing arrives after Stop


def test_chat_keeps_the_session_and_restart_starts_a_new_one(page, artifacts):
    chat = screen(page, "chat")
    Select(page.find_element(By.ID, "chat-task")).select_by_value("chat")
    for n, text in enumerate(["What is the capital of France?", "And of Italy?"], start=1):
        box = prompt_box(chat)
        box.send_keys(text)
        button(chat, "Send").click()
        wait(page).until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#chat-log p.note")) >= n + 1)
    bubbles = chat.find_elements(By.CSS_SELECTOR, "[role=log] .bubble")
    assert [b.get_attribute("class") for b in bubbles] == ["bubble user", "bubble assistant"] * 2
    notes = [p.text for p in chat.find_elements(By.CSS_SELECTOR, "#chat-log p.note")]
    # The second turn reuses what the session already holds (the prelude and the first turn).
    assert "cached" in notes[-1], notes
    page.save_screenshot(str(artifacts / "playground-chat.png"))
    button(chat, "Restart").click()
    assert not chat.find_elements(By.CSS_SELECTOR, ".bubble")


def test_a_json_schema_task_is_shown_as_formatted_json(page):
    task = screen(page, "task")
    Select(page.find_element(By.ID, "task-name")).select_by_value("verdict")
    box = prompt_box(task)
    box.clear()
    box.send_keys("Is water wet?")
    button(task, "Send").click()
    wait(page).until(lambda b: "tokens/s" in b.find_element(By.ID, "task-stats").text)
    shown = task.find_element(By.CSS_SELECTOR, "[role=log] pre.json").text
    answer = json.loads(shown)
    assert set(answer) == set(VERDICT["required"]) and shown == json.dumps(answer, indent=2)


def test_stop_in_the_chat_keeps_the_session(page, server):
    _, engine = server
    chat = screen(page, "chat")
    Select(page.find_element(By.ID, "chat-task")).select_by_value("story")
    prompt_box(chat).send_keys("Tell me the history of Rome")
    button(chat, "Send").click()
    wait(page).until(lambda b: len(chat.find_elements(By.CSS_SELECTOR, ".bubble.assistant")[-1].text) > 20)
    button(chat, "Stop").click()
    wait(page).until(lambda b: "cancelled" in chat.find_elements(By.CSS_SELECTOR, "#chat-log p.note")[-1].text)
    wait(page, 10).until(lambda b: engine.stats()["active"] == 0)
    assert not page.find_element(By.ID, "error").is_displayed()
    button(chat, "Restart").click()


def test_chat_answers_are_markdown_sanitized(page):
    # What the model writes is untrusted: rendered as markdown, scripts and handlers removed.
    html = page.execute_script(
        "const m = await import('/playground/js/render.js'); const d = document.createElement('div');"
        "m.markdown(d, '**bold** <img src=x onerror=alert(1)><script>alert(2)</script> "
        "[the docs](https://evil.example/?q=secret) https://plain.example'); return d.innerHTML;"
    )
    assert "<strong>bold</strong>" in html and "onerror" not in html and "<script" not in html
    # Links are text showing their target (N19: a click could carry the conversation away).
    assert "<a" not in html and "the docs (https://evil.example/?q=secret)" in html and "https://plain.example" in html


def test_upload_a_pdf_recall_from_it_and_delete_it(page, artifacts, tmp_path):
    memory = screen(page, "memory")
    path = tmp_path / "facts.pdf"
    path.write_bytes(pdf(PAGES))
    page.find_element(By.ID, "upload-file").send_keys(str(path))
    button(memory, "Upload").click()
    wait(page, 120).until(lambda b: "stored" in b.find_element(By.ID, "upload-status").text)
    wait(page).until(lambda b: "facts.pdf" in b.find_element(By.ID, "documents").text)
    query = page.find_element(By.ID, "recall-prompt")
    query.send_keys("Which river reaches the sea at Rotterdam?")
    n = page.find_element(By.ID, "recall-n")
    n.clear()
    n.send_keys("1")
    button(memory, "Recall").click()
    wait(page).until(lambda b: b.find_elements(By.CSS_SELECTOR, "#recall-results li"))
    [best] = page.find_elements(By.CSS_SELECTOR, "#recall-results li")
    assert "Rhine" in best.text and "facts.pdf" in best.text and "page 2" in best.text
    page.save_screenshot(str(artifacts / "playground-memory.png"))
    button(memory, "Delete facts.pdf").click()
    wait(page).until(lambda b: b.find_element(By.ID, "documents").text == "no documents")


def test_store_text_then_clear_the_memory(page):
    memory = screen(page, "memory")
    page.find_element(By.ID, "store-text").send_keys("Sourdough bread rises with wild yeast.")
    button(memory, "Store text").click()
    wait(page).until(lambda b: "stored 1 chunk" in b.find_element(By.ID, "upload-status").text)
    wait(page).until(lambda b: "Delete" in b.find_element(By.ID, "documents").text)
    clear = button(memory, "Clear")
    clear.click()  # the first press asks again, on the button itself
    assert clear.text == "Really clear?"
    clear.click()
    wait(page).until(lambda b: b.find_element(By.ID, "documents").text == "no documents")


def test_embeddings_heat_map_and_coloured_tokens(page, server, artifacts):
    url, _ = server
    emb = screen(page, "embeddings")
    page.find_element(By.ID, "emb-texts").send_keys("a cat\na kitten\nthe stock market")
    button(emb, "Compare").click()
    wait(page).until(lambda b: b.find_elements(By.CSS_SELECTOR, "#emb-matrix td"))
    cells = [td.text for td in page.find_elements(By.CSS_SELECTOR, "#emb-matrix td")]
    assert len(cells) == 9 and cells[0] == cells[4] == cells[8] == "1.000"
    page.save_screenshot(str(artifacts / "playground-embeddings.png"))
    tok = screen(page, "tokens")
    page.find_element(By.ID, "tok-text").send_keys("Hello playground")
    button(tok, "Tokenize").click()
    wait(page).until(lambda b: b.find_elements(By.CSS_SELECTOR, "#tok-output .tok"))
    expected = httpx.post(f"{url}/v1/model/gemma/tokenization", json={"prompt": "Hello playground"},
                          headers={"Authorization": f"Bearer {KEY}"}).json()["tokens"]
    spans = page.find_elements(By.CSS_SELECTOR, "#tok-output .tok")
    assert [s.text for s in spans] == [t["text"] for t in expected]
    assert [s.get_attribute("title") for s in spans] == [f"id {t['id']}" for t in expected]


def test_a_jwt_works_for_every_call_and_the_chat(browser, server):
    url, _ = server
    token = jwt.encode({"sub": "ann", "exp": int(time.time()) + 600, "tasks": ["chat"]}, JWT_SECRET, "HS256")
    key = load(browser, url)
    key.clear()
    key.send_keys(token)
    browser.find_element(By.CSS_SELECTOR, "#connect button[type=submit]").click()
    wait(browser).until(lambda b: options(b, "task-name") == ["chat"])  # only what the token may use
    chat = screen(browser, "chat")
    prompt_box(chat).send_keys("Hello!")
    button(chat, "Send").click()
    wait(browser).until(lambda b: "tokens/s" in b.find_element(By.ID, "chat-stats").text)
    assert chat.find_elements(By.CSS_SELECTOR, ".bubble.assistant")[-1].text.strip()


def test_the_servers_error_messages_are_shown(browser, server):
    url, _ = server
    key = load(browser, url)
    key.clear()
    key.send_keys("wrong-key")
    browser.find_element(By.CSS_SELECTOR, "#connect button[type=submit]").click()
    expected = httpx.get(f"{url}/v1/task", headers={"Authorization": "Bearer wrong-key"}).json()["error"]["message"]
    wait(browser).until(lambda b: b.find_element(By.ID, "error").is_displayed())
    assert browser.find_element(By.ID, "error").text == expected
    # A bad request's message too: a prompt too long for the model names both numbers.
    key.clear()
    key.send_keys(KEY)
    browser.find_element(By.CSS_SELECTOR, "#connect button[type=submit]").click()
    wait(browser).until(lambda b: not b.find_element(By.ID, "error").is_displayed())
    task = screen(browser, "task")
    Select(browser.find_element(By.ID, "task-name")).select_by_value("story")
    browser.execute_script("arguments[0].value = 'word '.repeat(3000)", prompt_box(task))
    button(task, "Send").click()
    wait(browser).until(lambda b: b.find_element(By.ID, "error").is_displayed())
    body = httpx.post(f"{url}/v1/task/story/live", json={"prompt": "word " * 3000},
                      headers={"Authorization": f"Bearer {KEY}"})
    assert browser.find_element(By.ID, "error").text == json.loads(body.text)["error"]["message"]

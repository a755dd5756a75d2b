"""The playground's files as the ingress serves them (no browser: see tests/web)."""

import re

from scripted import make_client

from poly_ray.web import STATIC


async def test_the_page_is_served_without_credentials_with_a_strict_csp():
    client, _ = make_client()
    del client.headers["Authorization"]
    r = await client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert 'aria-label="Prompt"' in r.text
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
    js = await client.get("/playground/js/main.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert js.headers["content-security-policy"] == csp


async def test_every_file_the_page_names_is_served():
    client, _ = make_client()
    page = (STATIC / "index.html").read_text()
    wanted = set(re.findall(r'(?:src|href)="(/playground/[^"]+)"', page))
    # Each module's static imports, relative to it.
    for module in STATIC.rglob("*.js"):
        for target in re.findall(r'^import .* from "(\.[^"]+)";', module.read_text(), re.M):
            path = (module.parent / target).resolve().relative_to(STATIC.resolve())
            wanted.add(f"/playground/{path}")
    assert len(wanted) > 8
    for url in sorted(wanted):
        assert (await client.get(url)).status_code == 200, url


async def test_an_unknown_file_is_a_json_404():
    client, _ = make_client()
    r = await client.get("/playground/nope.js")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"

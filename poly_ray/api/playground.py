"""The web playground: ``GET /`` and its files under ``/playground/``.

No credentials are needed for the page itself: it holds no data, and asks the
API with the key the user gives it. A strict CSP keeps model output that slips
past the sanitizer from running scripts or loading anything.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles

from poly_ray.api.family import POLY
from poly_ray.web import STATIC

# connect-src allows other servers: the page's "Server" field may name one (it needs allowed_origins there).
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' http: https: ws: wss:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


class _Files(StaticFiles):
    async def get_response(self, path, scope):
        response = await super().get_response(path, scope)
        response.headers.update(HEADERS)
        return response


router = POLY.router()


@router.get("/", include_in_schema=False)
async def playground():
    return FileResponse(STATIC / "index.html", headers={**HEADERS, "Cache-Control": "no-cache"})


def mount(app: FastAPI) -> None:
    """The page's modules and styles, beside the router's ``/``."""
    app.mount("/playground", _Files(directory=STATIC), name="playground")

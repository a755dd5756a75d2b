"""What a hostile web page can make a visitor's browser send to a server on their
machine or network, refused before any route runs.

- DNS rebinding: the page's own name is pointed at the server, so the browser
  treats the server as same-origin. The request then carries that name in
  ``Host``; only the bind host, loopback names, IP literals and ``allowed_hosts``
  are served (a browser sends an IP literal only to a page loaded from that IP).
- WebSocket upgrades are not covered by CORS: one from a page whose ``Origin`` is
  neither the server itself nor in ``allowed_origins`` is refused (403).
  Clients outside browsers send no ``Origin`` and are let through.
- A cross-origin POST with ``text/plain`` (or a form type) needs no preflight, so
  a POST body is read only when it says ``application/json``. Uploads are PUTs,
  which always need a preflight, so they keep their own types.
- A GET needs no preflight either: an ``<img src>`` or a link on another site's
  page runs a generation (and, with ``store_prompts``, plants text in the visitor's
  own recalls). A request the browser marks ``Sec-Fetch-Site: cross-site`` or
  ``same-site`` is refused (403) unless its ``Origin`` is trusted (a CORS call from
  ``allowed_origins``) or it opens one of the server's pages (the playground, the docs).
  Clients outside browsers send no ``Sec-Fetch-Site`` and are let through.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from urllib.parse import urlsplit

from starlette.requests import Request

LOOPBACK_NAMES = ("localhost", "localhost.")
# What a page on another site may open (a link, a bookmark's redirect): pages, never the API.
PAGES = ("/", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json")
_ANY_HOST = ("0.0.0.0", "::", "")


class BrowserGuard:
    """ASGI middleware: trusted ``Host``, WebSocket ``Origin``, JSON POST bodies."""

    def __init__(self, app, *, bind_host: str, allowed_hosts: list[str], allowed_origins: list[str],
                 error: Callable):
        self.app = app
        self.hosts = {h.lower() for h in (*allowed_hosts, *LOOPBACK_NAMES)}
        if bind_host not in _ANY_HOST:
            self.hosts.add(bind_host.lower())
        self.any_host = "*" in allowed_hosts
        self.origins = set(allowed_origins)
        self.error = error  # app.error_response: the refusal in the route family's shape

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        host = headers.get("host", "")
        refusal = None
        if not self.trusted_host(host):
            refusal = (400, "untrusted_host", f"the Host {_name(host)!r} is not served here: add it to allowed_hosts")
        elif scope["type"] == "websocket":
            origin = headers.get("origin")
            if origin is not None and not self.trusted_origin(origin, host):
                message = f"WebSocket connections from {origin!r} are refused: add the origin to allowed_origins"
                refusal = (403, "origin_refused", message)
        elif headers.get("sec-fetch-site") in ("cross-site", "same-site") and not self.trusted_site(scope, headers, host):
            message = "requests from another site's page are refused: add its origin to allowed_origins to let it call"
            refusal = (403, "cross_site_refused", message)
        elif scope["method"] == "POST" and _has_body(headers) and not is_json(headers.get("content-type", "")):
            refusal = (415, "unsupported_media_type",
                       "a POST body must be JSON sent with Content-Type: application/json")
        if refusal is None:
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            # Closing before accepting answers the upgrade with a plain 403.
            await send({"type": "websocket.close", "code": 1008})
            return
        status, code, message = refusal
        await self.error(Request(scope), status, code, message)(scope, receive, send)

    def trusted_host(self, host: str) -> bool:
        name = _name(host)
        # No Host at all is not a browser (every browser sends one).
        if self.any_host or not name or name in self.hosts:
            return True
        try:
            ipaddress.ip_address(name)
            return True
        except ValueError:
            return False

    def trusted_site(self, scope, headers: dict, host: str) -> bool:
        """A request from another site's page that may go on: a CORS call from a trusted
        origin, or opening one of the server's pages."""
        origin = headers.get("origin")
        if origin is not None and origin != "null" and self.trusted_origin(origin, host):
            return True
        path = scope.get("path", "")
        return (headers.get("sec-fetch-mode") == "navigate" and scope["method"] == "GET"
                and (path in PAGES or path.startswith("/playground/")))

    def trusted_origin(self, origin: str, host: str) -> bool:
        if "*" in self.origins or origin in self.origins:
            return True
        # The server's own pages (same scheme-less host and port as the request).
        return urlsplit(origin).netloc.lower() == host.lower()


def _name(host: str) -> str:
    """The host name of a Host header, without its port ("[::1]:8000" → "::1")."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    name, sep, port = host.rpartition(":")
    return name if sep and port.isdigit() and ":" not in name else host


def _has_body(headers: dict) -> bool:
    # An empty POST reads nothing; one without a body keeps its 404 or 400.
    return headers.get("content-length", "0") != "0" or "transfer-encoding" in headers


def is_json(content_type: str) -> bool:
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))

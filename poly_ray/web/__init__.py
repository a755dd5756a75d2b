"""The web playground's static files (HTML, CSS, ES modules; no build step).

Served by the ingress (``api/playground.py``) at ``GET /``; the page talks to the
server's own API with the key the user types in.
"""

from pathlib import Path

STATIC = Path(__file__).parent / "static"

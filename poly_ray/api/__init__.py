"""The ingress box: HTTP, SSE and WebSocket over a ``Backend``, one subpackage per
API family (``poly``, ``openai``, ``ollama``, ``simple``, ``memory``), each with
its wire models (``protocol.py``) beside its routes (``routes.py``). No Ray."""

from .app import create_app, error_response
from .backend import Backend

__all__ = ["Backend", "create_app", "error_response"]

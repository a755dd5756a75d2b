"""Clients that talk to a poly-ray server over HTTP and WebSocket (never its modules)."""

"""The Anthropic Messages API (/v1/messages): protocol.py (wire models, content blocks into chat turns), routes.py (HTTP and the event stream)."""

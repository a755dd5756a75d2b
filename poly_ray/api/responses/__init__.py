"""The OpenAI Responses API (/v1/responses): protocol only so far, see protocol.py."""

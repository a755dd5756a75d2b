"""The OpenAI Responses API (/v1/responses): routes.py (HTTP), run.py (a response's run and record), events.py (stream events), protocol.py (shapes)."""

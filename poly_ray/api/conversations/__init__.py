"""The OpenAI Conversations API (/v1/conversations): protocol only so far, see protocol.py."""

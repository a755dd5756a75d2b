"""Hugging Face's length limits (``min_length`` / ``max_length``), which count the prompt, as new tokens."""

from __future__ import annotations

from dataclasses import replace

from poly_ray.errors import BadRequest
from poly_ray.generation import GenerationRequest


def resolve_lengths(request: GenerationRequest, prompt_tokens: int) -> GenerationRequest:
    """Hugging Face's min_length / max_length count the prompt: as new tokens here."""
    if request.min_length is None and request.max_length is None:
        return request
    max_tokens, min_tokens = request.max_tokens, request.min_tokens
    if request.max_length is not None:
        if request.max_length <= prompt_tokens:
            raise BadRequest(
                f"max_length {request.max_length} counts the prompt, which is already {prompt_tokens} tokens: "
                "raise it, or set max_new_tokens"
            )
        max_tokens = min(max_tokens, request.max_length - prompt_tokens)
    if request.min_length is not None:
        min_tokens = max(min_tokens, request.min_length - prompt_tokens)
    return replace(request, max_tokens=max_tokens, min_tokens=min(min_tokens, max_tokens), min_length=None, max_length=None)

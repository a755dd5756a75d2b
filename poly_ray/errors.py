"""The one error hierarchy of poly-ray.

Every error a client can cause or should hear about is a ``PolyError``: it
carries the HTTP status, a stable machine-readable ``code`` and a message meant
for people. The ingress maps it to ``{"error": {"code", "message"}}`` in one
place. Errors cross Ray handles, so they must pickle with their fields.

    PolyError
    ├── BadRequest          400  invalid_request
    │   └── PromptTooLong   400  prompt_too_long
    │       └── ContextFull 400  context_full (a conversation outgrew the context)
    ├── Unauthorized        401  unauthorized
    ├── Forbidden           403  forbidden
    ├── NotFound            404  not_found
    ├── RequestTimeout      408  request_timeout (a body that took too long to arrive)
    ├── PayloadTooLarge     413  payload_too_large
    ├── UnsupportedMedia    415  unsupported_media_type
    ├── Unprocessable       422  unprocessable_document (a document that cannot be read)
    ├── TooMany             429  too_many_requests (a bound on work in flight; with Retry-After)
    │   └── TooManyStreams  429  too_many_streams
    ├── Busy                503  busy (with Retry-After)
    │   ├── ReplicaLost     503  replica_lost (a replica died while answering; retry)
    │   └── MemoryLoading   503  memory_loading (a configured memory is still opening at start-up)
    └── ModelError          500  model_error (the engine failed, not the client)

Start-up errors are the other tree: the server (or a replica) refuses to start,
and the message names the config key to fix. They never reach a client.

    ConfigError                        the TOML config or a POLY_* variable
    ├── BadKey           config/jwt_keys.py      a JWT public key that cannot verify its algorithm
    ├── ModelSourceError engine/sources.py       a model file that cannot be had
    ├── ConversionError  engine/bert_gguf.py     a checkpoint that cannot become a GGUF
    └── StoreError       memory/vectorstore.py   a memory's store that cannot be opened

``grammars.SchemaError`` (400 ``unsupported_schema``) is a ``BadRequest``: a
request's schema; in a task's config it becomes a ConfigError naming the task.
"""

from __future__ import annotations


class PolyError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.headers = headers or {}
        # The request field the error is about, where one is (OpenAI's error shape carries it).
        self.param = param

    def __reduce__(self):
        return (_rebuild, (type(self), self.message, self.headers, self.__dict__))

    def to_body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


def _rebuild(cls, message, headers, state):
    err = cls.__new__(cls)
    PolyError.__init__(err, message, headers=headers)  # param, and a subclass's own fields, are in state
    err.__dict__.update(state)
    return err


class BadRequest(PolyError):
    status = 400
    code = "invalid_request"


class PromptTooLong(BadRequest):
    code = "prompt_too_long"


class ContextFull(PromptTooLong):
    code = "context_full"


class Unauthorized(PolyError):
    status = 401
    code = "unauthorized"


class Forbidden(PolyError):
    status = 403
    code = "forbidden"

    def __init__(self, message: str, *, subject: str | None = None):
        super().__init__(message)
        self.subject = subject  # who was refused, for the log


class NotFound(PolyError):
    status = 404
    code = "not_found"


class RequestTimeout(PolyError):
    status = 408
    code = "request_timeout"


class PayloadTooLarge(PolyError):
    status = 413
    code = "payload_too_large"


class QuotaExceeded(PolyError):
    """Storing this would take its owner past their quota: 403, not 429 (waiting does not help)."""

    status = 403
    code = "storage_quota_exceeded"


class UnsupportedMedia(PolyError):
    status = 415
    code = "unsupported_media_type"


class Unprocessable(PolyError):
    status = 422
    code = "unprocessable_document"


class TooMany(PolyError):
    """A bound on work in flight (uploads, jobs, ...) is reached; the message names its key."""

    status = 429
    code = "too_many_requests"

    def __init__(self, message: str, *, retry_after: int = 1):
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class TooManyStreams(TooMany):
    code = "too_many_streams"


class Busy(PolyError):
    status = 503
    code = "busy"

    def __init__(self, message: str, *, retry_after: int = 1):
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class ReplicaLost(Busy):
    """A replica (its process or node) died while answering: another one takes
    over, so the same request may be sent again."""

    code = "replica_lost"


class MemoryLoading(Busy):
    """A configured memory is not open yet: the memory deployment is still opening its
    stores (start-up, a redeploy); the same request may be sent again shortly."""

    code = "memory_loading"


class ModelError(PolyError):
    status = 500
    code = "model_error"


class ConfigError(Exception):
    """The configuration is invalid; the message names the TOML key."""

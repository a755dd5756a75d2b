"""Helpers of the tests that talk to a real server over loopback."""

import asyncio
import contextlib
import socket

import uvicorn


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def first_token(resp):
    """Wait for the first token; keep what this returns referenced, since closing
    (or garbage-collecting) an aiter_lines closes the stream."""
    lines = resp.aiter_lines()
    while not (await anext(lines)).startswith("data: "):
        pass
    return lines


@contextlib.asynccontextmanager
async def serving(app):
    """The app on a free loopback port, in this event loop; yields its base URL."""
    # proxy_headers=False: X-Forwarded-For is the app's to judge, not uvicorn's.
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off",
                                           proxy_headers=False))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task

"""Helpers of the tests that talk to a real server over loopback."""

import socket


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

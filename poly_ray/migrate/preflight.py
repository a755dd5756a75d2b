"""Checks before Ray starts, so a mistake is one line and exit code 2 instead of a
traceback a minute later: the port is free, the config file is what it claims."""

from __future__ import annotations

import errno
import socket
from pathlib import Path


def port_problem(host: str, port: int) -> str | None:
    """Why the server cannot listen on host:port, or None. Serve binds with SO_REUSEADDR
    too, so a port in TIME_WAIT is free and one that another process listens on is not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return f"port {port} on {host} is in use by another process"
            if e.errno == errno.EACCES:
                return f"port {port} on {host} needs privileges this user lacks (use a port above 1023)"
            return f"cannot listen on {host}:{port}: {e.strerror}"
    return None


def not_toml(path: Path) -> str | None:
    """A config file that is another server's (YAML), said before its TOML error is."""
    if path.suffix.lower() in (".yaml", ".yml"):
        return (f"{path} is YAML, not a poly-ray TOML config: `poly-ray import llm-api {path}` writes the TOML "
                "an llm-api config.yaml stands for")
    return None

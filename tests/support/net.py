"""Ports on 127.0.0.1 for the processes and servers a test starts."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port nothing listens on right now (the OS picks it; it is free again once this returns)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def closed_port_url() -> str:
    """An endpoint on 127.0.0.1 where nothing listens: every request is refused."""
    return f"http://127.0.0.1:{free_port()}"

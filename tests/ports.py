"""A free TCP port for the multi-process (DDP) tests, so that runs in parallel never share one."""

from __future__ import annotations

import socket


def free_port() -> str:
    """Return a port nobody listens on now, as the string ``MASTER_PORT`` wants."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])

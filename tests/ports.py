"""A free TCP port on the loopback interface, for the clusters, servers and process groups the tests start."""
from __future__ import annotations

import socket


def free_port() -> int:
    """A port nothing listens on at the moment of the call (the OS's pick on 127.0.0.1)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]

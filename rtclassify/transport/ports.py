"""Loopback endpoints for local runs (demo, bench, tests)."""
import socket


def free_tcp_endpoint(host: str = "127.0.0.1") -> str:
    """A tcp:// endpoint on a port that was free a moment ago."""
    s = socket.socket()
    s.bind((host, 0))
    port = s.getsockname()[1]
    s.close()
    return f"tcp://{host}:{port}"

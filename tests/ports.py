"""Free TCP ports on 127.0.0.1 for the servers tests start (Serve's HTTP proxy, `ray start` nodes)."""

import socket


def free_ports(n: int) -> list[int]:
    """n distinct ports: all are bound at once, so none repeats, then released for the caller."""
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def free_port() -> int:
    return free_ports(1)[0]

"""The suite's Ray cluster talks on 127.0.0.1 only: every socket its processes listen on or connect with is a
loopback one (read from /proc, Linux)."""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from pathlib import Path

import pytest

from latentarc.jobs.soak_bench import descendants

pytestmark = [pytest.mark.usefixtures("ray_cluster"),
              pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")]


def _address(hex_addr: str) -> str:
    """A /proc/net/tcp{,6} address (host byte order words) as text, without the port."""
    if len(hex_addr) == 8:
        return socket.inet_ntop(socket.AF_INET, struct.pack("<I", int(hex_addr, 16)))
    words = [struct.pack("<I", int(hex_addr[i:i + 8], 16)) for i in range(0, 32, 8)]
    return socket.inet_ntop(socket.AF_INET6, b"".join(words))


def _sockets() -> dict[int, tuple[str, str, bool]]:
    """inode → (local address, remote address, listening) for every TCP socket of this machine."""
    out = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            local, remote, state, inode = f[1].split(":")[0], f[2].split(":")[0], f[3], int(f[9])
            out[inode] = (_address(local), _address(remote), state == "0A")
    return out


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    except OSError:
        pass
    return inodes


def _loopback(addr: str) -> bool:
    ip = ipaddress.ip_address(addr)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def test_ray_listens_and_talks_on_loopback_only():
    import ray

    @ray.remote
    def node_ip() -> str:
        return ray.util.get_node_ip_address()

    assert ray.get(node_ip.remote()) == "127.0.0.1"  # a worker names its node by the loopback address
    sockets = _sockets()
    mine = {i for pid in [os.getpid(), *descendants(os.getpid())] for i in _socket_inodes(pid)} & set(sockets)
    listening = [sockets[i][0] for i in mine if sockets[i][2]]
    remotes = [sockets[i][1] for i in mine if not sockets[i][2]]
    assert len(listening) >= 3, listening  # the GCS, the raylet and the workers' servers, at least
    assert all(_loopback(a) for a in listening), sorted(set(listening))
    assert remotes and all(_loopback(a) for a in remotes), sorted(set(remotes))

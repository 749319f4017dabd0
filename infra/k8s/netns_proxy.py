"""Forward TCP ports from the node's network namespace to the host's loopback.

    python3 infra/k8s/netns_proxy.py --netns /proc/PID/ns/net --listen 10.213.0.2 \
        --port 16590 --port 17270 --port 19294:19294

The local stack binds to 127.0.0.1 only, and pods live behind a bridge inside the node's network
namespace, where the host's loopback cannot be reached. This process opens its listening sockets
inside the node's namespace (a socket stays in the namespace it was created in), then returns to
the host's namespace, so every connection it makes goes to the host's 127.0.0.1. Nothing binds
outside the loopback or the node's own namespace.

A port is `LISTEN[:TARGET]`. Kafka needs a listener of its own for pods (it advertises the node
address, so clients reconnect through this proxy); Redis and S3 are plain TCP.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import os
import signal
import socket
from collections.abc import Awaitable, Callable

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def listen_in(netns_path: str, address: str, ports: list[int]) -> list[socket.socket]:
    """Open listening sockets in another network namespace, then come back."""
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(netns_path, os.O_RDONLY)
    try:
        _setns(target)
        sockets = []
        for port in ports:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address, port))
            sock.listen(128)
            sock.setblocking(False)
            sockets.append(sock)
        return sockets
    finally:
        _setns(home)
        os.close(home)
        os.close(target)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


def _handler(target_port: int) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            upstream_r, upstream_w = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(_pipe(client_r, upstream_w), _pipe(upstream_r, client_w))

    return handle


async def serve(sockets: list[socket.socket], targets: list[int]) -> None:
    servers = [
        await asyncio.start_server(_handler(target), sock=sock)
        for sock, target in zip(sockets, targets, strict=True)
    ]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for server in servers:
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--netns", required=True, help="network namespace file, e.g. /proc/PID/ns/net")
    parser.add_argument("--listen", required=True, help="address inside that namespace")
    parser.add_argument("--port", action="append", required=True, help="LISTEN[:TARGET] (repeatable)")
    args = parser.parse_args()
    listen_ports, targets = [], []
    for spec in args.port:
        listen, _, target = spec.partition(":")
        listen_ports.append(int(listen))
        targets.append(int(target or listen))
    sockets = listen_in(args.netns, args.listen, listen_ports)
    print(f"forwarding {args.listen}:{listen_ports} -> 127.0.0.1:{targets}", flush=True)
    asyncio.run(serve(sockets, targets))


if __name__ == "__main__":
    main()

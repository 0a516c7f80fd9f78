"""The floor of the relay benchmark: the least a single-process server can do for the same wake-up.

``python -m bench._relay_floor --port P [--reuse-port]`` accepts the watchers' blocking GETs on uvloop (like the
relay), holds each one, and on ``PUSH <index>`` (a line on stdin) writes ONE pre-rendered answer carrying that
X-Consul-Index to every held request in a tight loop. No parsing beyond finding the end of a request, no
bookkeeping beyond the list of held transports, no timers, no ACL check. Whatever latency the same watchers
measure against it is what any single relay process can reach on this machine; with ``--reuse-port`` several of
these share one port (SO_REUSEPORT) and each answers the watchers the kernel gave it, which is the floor of a
relay fanning out from several processes.

Starting prints ``READY {"port": P}``; ``PUSH <index>`` prints ``PUSHED {"written": n, "loop_ms": ms}`` after the
loop; ``HELD`` prints ``HELD {"held": n}``; ``EXIT`` ends it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import time
from email.utils import formatdate

from configd.relay import raise_open_files_limit

held: list[asyncio.Transport] = []


class _Held(asyncio.Protocol):
    __slots__ = ("buffer", "transport")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        end = buffer.find(b"\r\n\r\n")
        while end >= 0:
            held.append(self.transport)
            buffer = buffer[end + 4 :]
            end = buffer.find(b"\r\n\r\n")
        self.buffer = buffer


def answer(index: int, path: str) -> bytes:
    """Consul's answer to a recursive read of one small key, as the relay would hand it out."""
    key = path.removeprefix("/v1/kv/") + "marker"
    body = json.dumps(
        [{"LockIndex": 0, "Key": key, "Flags": 0, "Value": "MA==", "CreateIndex": index, "ModifyIndex": index}],
        separators=(",", ":"),
    ).encode()
    head = (
        "HTTP/1.1 200 OK\r\n"
        f"Date: {formatdate(usegmt=True)}\r\n"
        "Content-Type: application/json\r\nVary: Accept-Encoding\r\n"
        f"X-Consul-Index: {index}\r\nX-Consul-Knownleader: true\r\nX-Consul-Lastcontact: 0\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def push(wire: bytes) -> tuple[int, float]:
    global held
    started = time.perf_counter()
    due, held = held, []
    for transport in due:
        transport.write(wire)
    return len(due), (time.perf_counter() - started) * 1000


async def main_async(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if args.reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", args.port))
    server = await loop.create_server(_Held, sock=sock, backlog=16384)
    print("READY " + json.dumps({"port": server.sockets[0].getsockname()[1]}), flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).decode().strip():
        command, _, arg = line.partition(" ")
        if command == "PUSH":
            written, loop_ms = push(answer(int(arg), args.path))
            print("PUSHED " + json.dumps({"written": written, "loop_ms": round(loop_ms, 1)}), flush=True)
        elif command == "HELD":
            print("HELD " + json.dumps({"held": len(held)}), flush=True)
        elif command == "EXIT":
            break
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--reuse-port", action="store_true")
    args = parser.parse_args()
    raise_open_files_limit()
    import uvloop

    uvloop.run(main_async(args))
    os._exit(0)


if __name__ == "__main__":
    main()

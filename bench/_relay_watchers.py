"""Raw asyncio watchers for the relay benchmark: ``python -m bench._relay_watchers --addr URL --path P --count N``.

Each watcher holds one HTTP/1.1 keep-alive connection with a blocking ``GET <path>?recurse&index=&wait=`` on it,
as a watching process does, and asks again at once with the index it was given. Commands on stdin, one line
each: ``REPORT`` prints ``REPORT <json>`` (wake-up times by new index since the last report, errors, watchers
holding a query now), ``EXIT``. Starting prints ``READY <json>`` once every watcher has sent its first query.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import sys
import time
from collections import defaultdict
from urllib.parse import urlsplit

from configd.relay import raise_open_files_limit


class _Watcher(asyncio.Protocol):
    """One watcher on one connection; parsing is the least a client can do (status, index, Content-Length)."""

    def __init__(self, watchers: Watchers, index: int) -> None:
        self.watchers = watchers
        self.index = index
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.send()

    def send(self) -> None:
        assert self.transport is not None
        self.transport.write(self.watchers.request.format(self.index).encode())
        self.watchers.holding += 1

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            length = int(head.split(b"content-length:")[1].split(b"\r\n")[0])
            if len(self.buffer) < end + 4 + length:
                return
            now = time.time()
            self.buffer = self.buffer[end + 4 + length :]
            self.watchers.holding -= 1
            status = int(head[9:12])
            if status not in (200, 404):
                self.watchers.errors[f"http {status}"] += 1
                asyncio.get_running_loop().call_later(self.watchers.retry, self.send)
                continue
            got = int(head.split(b"x-consul-index:")[1].split(b"\r\n")[0])
            if got > self.index:
                self.watchers.woken.append((self.index, got, now))
            self.index = got if got >= 1 else 0
            # Re-ask in this same loop iteration, after every answer already read has been timed: 3,000 watchers
            # share this process, which a watching process never does.
            asyncio.get_running_loop().call_soon(self.send)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.buffer or self.watchers.holding:
            self.watchers.holding -= 1
        if not self.lost.done():
            self.lost.set_result(None)


class Watchers:
    def __init__(self, host: str, port: int, path: str, index: int, wait: str, retry: float) -> None:
        self.host, self.port, self.retry = host, port, retry
        self.request = f"GET {path}?recurse&index={{}}&wait={wait} HTTP/1.1\r\nHost: {host}\r\n\r\n"
        self.start_index = index
        self.woken: list[tuple[int, int, float]] = []  # (index held, index answered, time.time()) per wake-up
        self.errors: dict[str, int] = defaultdict(int)
        self.holding = 0
        self.sent_first = 0

    async def watch(self) -> None:
        loop = asyncio.get_running_loop()
        index = self.start_index
        first = True
        while True:
            try:
                _, watcher = await loop.create_connection(
                    functools.partial(_Watcher, self, index), self.host, self.port
                )
            except OSError as exc:
                self.errors[f"connect: {type(exc).__name__}"] += 1
                if first:
                    self.sent_first += 1
                    first = False
                await asyncio.sleep(self.retry)
                continue
            if first:
                self.sent_first += 1
                first = False
            await watcher.lost
            index = watcher.index
            self.errors["connection lost"] += 1
            await asyncio.sleep(self.retry)

    def report(self) -> dict[str, object]:
        out = {
            "woken": self.woken,
            "errors": dict(self.errors),
            "holding": self.holding,
            "rss_kib": _rss_kib(),
        }
        self.woken = []
        return out


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def main_async(args: argparse.Namespace) -> None:
    url = urlsplit(args.addr)
    watchers = Watchers(url.hostname or "127.0.0.1", url.port or 80, args.path, args.index, args.wait, args.retry)
    tasks = []
    for i in range(args.count):
        tasks.append(asyncio.create_task(watchers.watch()))
        if i % 200 == 199:
            await asyncio.sleep(0.02)  # a steady ramp: the listen backlog is not a benchmark subject
    while watchers.sent_first < args.count:
        await asyncio.sleep(0.05)
    print("READY " + json.dumps({"count": args.count, "errors": dict(watchers.errors)}), flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).decode().strip():
        if line == "REPORT":
            print("REPORT " + json.dumps(watchers.report()), flush=True)
        elif line == "EXIT":
            break
    for task in tasks:
        task.cancel()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--addr", required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--wait", default="55s")
    parser.add_argument("--retry", type=float, default=1.0, help="seconds before reconnecting after an error")
    args = parser.parse_args()
    raise_open_files_limit()
    try:
        import uvloop

        uvloop.run(main_async(args))
    except ImportError:
        asyncio.run(main_async(args))
    os._exit(0)


if __name__ == "__main__":
    main()

"""A counting HTTP proxy on loopback, between one process and Consul (to count its connections and requests).

It forwards bytes unchanged in both directions and parses only the request side (request line, headers,
Content-Length body) to count requests; a request is "in flight" until the first response byte comes back,
so a blocking query that Consul holds shows as an in-flight request with ``index=`` in its query.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class _Conn:
    pending: list[str] = field(default_factory=list)  # request targets awaiting their first response byte


@dataclass
class CountingProxy:
    upstream_host: str
    upstream_port: int
    port: int = 0
    requests: list[tuple[float, str, str]] = field(default_factory=list)  # (time, method, target)
    connections_opened: int = 0
    _conns: set[int] = field(default_factory=set)
    _state: dict[int, _Conn] = field(default_factory=dict)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> CountingProxy:
        ready = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            server = loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()
            server.close()

        self._thread = threading.Thread(target=serve, daemon=True, name="counting-proxy")
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)

    def snapshot(self) -> dict[str, int]:
        """Open connections and in-flight requests now (blocking = with an ``index`` parameter)."""
        with self._lock:
            pending = [t for c in self._state.values() for t in c.pending]
            return {
                "open_connections": len(self._conns),
                "in_flight": len(pending),
                "blocking_in_flight": sum(1 for t in pending if "index=" in (urlsplit(t).query or "")),
            }

    def count_since(self, since: float) -> int:
        with self._lock:
            return sum(1 for at, _, _ in self.requests if at >= since)

    def requests_since(self, since: float) -> list[tuple[float, str, str]]:
        with self._lock:
            return [r for r in self.requests if r[0] >= since]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        key = id(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(self.upstream_host, self.upstream_port)
        except OSError:
            writer.close()
            return
        with self._lock:
            self.connections_opened += 1
            self._conns.add(key)
            self._state[key] = _Conn()
        try:
            await asyncio.gather(self._requests(key, reader, up_writer), self._responses(key, up_reader, writer))
        finally:
            with self._lock:
                self._conns.discard(key)
                self._state.pop(key, None)
            for w in (writer, up_writer):
                w.close()

    async def _requests(self, key: int, reader: asyncio.StreamReader, up: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = [*lines[0].split(" ", 2), "", ""][:3]
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value.strip())
                body = await reader.readexactly(length) if length else b""
                with self._lock:
                    self.requests.append((time.time(), method, target))
                    self._state[key].pending.append(target)
                up.write(head + body)
                await up.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            up.close()

    async def _responses(self, key: int, up: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await up.read(65536)
                if not data:
                    break
                with self._lock:
                    state = self._state.get(key)
                    if state is not None and state.pending:
                        state.pending.pop(0)
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

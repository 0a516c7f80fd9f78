"""An ASGI app with the asyncio client: made at import, settings awaited in the lifespan, i.e. on the loop each
uvicorn worker creates for itself. Answers like :mod:`.wsgi_app`."""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic_settings import BaseSettings

from configd_client import AsyncConfigClient, AsyncLiveSettings, ChangeEvent


class AppSettings(BaseSettings):
    greeting: str = "unset"


client = AsyncConfigClient(os.environ["FORKTEST_CONSUL"], application="forktest-asgi", registration_delay=0.2)
views: list[AsyncLiveSettings[AppSettings]] = []
events: list[tuple[int, int, float]] = []


async def _record(event: ChangeEvent[AppSettings]) -> None:
    events.append((os.getpid(), event.version, time.monotonic()))


async def app(
    scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]]
) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                view = await client.settings(AppSettings, os.environ["FORKTEST_REF"])
                view.on_change(_record)
                views.append(view)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return
    query = urllib.parse.parse_qs(scope.get("query_string", b"").decode())
    await asyncio.sleep(float(query.get("hold", ["0"])[0]))
    view = views[0]
    pid = os.getpid()
    body = json.dumps(
        {
            "pid": pid,
            "version": view.version,
            "greeting": view.current.greeting,
            "events": [[version, at] for who, version, at in events if who == pid],
        }
    ).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})

"""A WSGI app whose ConfigClient is made at import: in gunicorn's master under ``--preload``, before the fork.

``GET /?hold=S`` answers after S seconds (so that concurrent requests spread over the workers) with this
worker's pid, the setting, its version and the change events this process delivered.
"""

from __future__ import annotations

import json
import os
import time
import urllib.parse
from collections.abc import Callable, Iterable
from typing import Any

from pydantic_settings import BaseSettings

from configd_client import ChangeEvent, ConfigClient


class AppSettings(BaseSettings):
    greeting: str = "unset"


client = ConfigClient(os.environ["FORKTEST_CONSUL"], application="forktest-wsgi", registration_delay=0.2)
live = client.settings(AppSettings, os.environ["FORKTEST_REF"])
events: list[tuple[int, int, float]] = []  # (pid, version, time.monotonic()) of each event, in any process
forked_at = [0.0]  # when gunicorn forked this worker (time.monotonic())
os.register_at_fork(after_in_child=lambda: forked_at.__setitem__(0, time.monotonic()))


@live.on_change
def _record(event: ChangeEvent[AppSettings]) -> None:
    events.append((os.getpid(), event.version, time.monotonic()))


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
    time.sleep(float(query.get("hold", ["0"])[0]))
    pid = os.getpid()
    registration = client.registration
    body = json.dumps(
        {
            "pid": pid,
            "version": live.version,
            "greeting": live.current.greeting,
            "events": [[version, at] for who, version, at in events if who == pid],
            "instance": registration.instance_id if registration is not None else None,
            "live_id": id(live),
            "forked_at": forked_at[0],
        }
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]

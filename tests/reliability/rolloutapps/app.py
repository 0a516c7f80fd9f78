"""One application process of the rollout end-to-end test: follows a config with the real SDK and logs, as JSON
lines in its own file, every version it holds (its first one and every change callback).

Its behaviour on a version is data-driven, so a rollout's candidate decides which instances fail on it: the
callback raises when this instance's key is in the new version's ``fail_on``, and the app reports itself unhealthy
when it is in ``unhealthy_on``. It runs until SIGTERM (or its stdin closes).

    python -m tests.reliability.rolloutapps.app CONSUL PREFIX NS/NAME KEY LABELS LOGFILE
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

from configd_client import ChangeEvent, ConfigClient
from configd_core.rollouts import parse_labels


class Service(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")
    timeout_ms: int
    fail_on: list[str] = []
    unhealthy_on: list[str] = []


def main() -> None:
    consul, prefix, ref, key, labels, logfile = sys.argv[1:7]
    log = Path(logfile)
    lock = threading.Lock()

    def note(**fields: object) -> None:
        with lock, log.open("a") as out:
            out.write(json.dumps(fields) + "\n")

    client = ConfigClient(
        consul,
        prefix=prefix,
        cache=False,
        application="rollout-app",
        instance_key=key,
        labels=parse_labels(labels),
        registration_delay=0.2,
    )
    live = client.settings(Service, ref, timeout=60)
    note(event="start", version=live.version, timeout_ms=live.current.timeout_ms)

    @live.on_change
    def changed(event: ChangeEvent[Service]) -> None:
        note(event="change", old=event.old_version, version=event.version, timeout_ms=event.new.timeout_ms)
        if key in event.new.unhealthy_on:
            live.report_unhealthy(f"{key}: error rate up on timeout_ms={event.new.timeout_ms}")
        if key in event.new.fail_on:
            raise RuntimeError(f"{key} cannot run timeout_ms={event.new.timeout_ms}")

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    stop.wait()
    client.close()


if __name__ == "__main__":
    main()

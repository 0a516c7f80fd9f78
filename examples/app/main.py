"""Example application: loads the payments settings from configd and prints them whenever they change.

    # against Consul (e.g. the one `make run` starts; it prints its address):
    CONSUL_HTTP_ADDR=http://127.0.0.1:PORT python examples/app/main.py
    # against local files, no Consul at all (edit examples/configs/payments/service.json and save):
    python examples/app/main.py --source file://examples/configs

An environment variable pins one value over whatever configd says, e.g. ``TIMEOUT_MS=2000``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from configd_client import ChangeEvent, ConfigClient, ConfigdError

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for examples.settings_models
from examples.settings_models import PaymentsSettings


def show(settings: PaymentsSettings) -> str:
    return json.dumps(settings.model_dump(mode="json"), sort_keys=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default=None, help="file:///dir for local files (default: Consul)")
    parser.add_argument("--ref", default="payments/service", help="the config to follow (namespace/name)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the first value")
    parser.add_argument("--changes", type=int, default=0, help="exit after this many changes (0: run until Ctrl-C)")
    args = parser.parse_args(argv)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    with ConfigClient(source=args.source, application="example-payments") as client:
        try:
            live = client.settings(PaymentsSettings, args.ref, timeout=args.timeout)
        except ConfigdError as exc:
            print(f"cannot load {args.ref}: {exc}", file=sys.stderr, flush=True)
            return 1
        where = args.source or getattr(client, "address", "consul")
        print(f"loaded {args.ref} v{live.version} from {where}{' (stale cache)' if live.stale else ''}", flush=True)
        print(f"settings {show(live.current)}", flush=True)
        seen = 0

        @live.on_change
        def changed(event: ChangeEvent[PaymentsSettings]) -> None:
            nonlocal seen
            paths = ", ".join(f"{path}: {old!r} -> {new!r}" for path, old, new in event.changes) or "no field changed"
            print(f"changed v{event.old_version} -> v{event.version}: {paths}", flush=True)
            print(f"settings {show(event.new)}", flush=True)
            seen += 1
            if args.changes and seen >= args.changes:
                stop.set()

        @live.on_error
        def rejected(exc: Exception) -> None:
            print(f"kept v{live.version}: {exc}", flush=True)

        print("watching for changes (Ctrl-C to stop)", flush=True)
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

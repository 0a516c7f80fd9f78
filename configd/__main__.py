"""``configd serve``, ``configd relay`` and ``configd dev``: the command line (argparse, no typer)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

from configd_core.errors import ConfigdError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="configd", description="configd: configuration center on Consul")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP API against a Consul agent")
    serve.add_argument("--consul", dest="consul_addr", help="Consul HTTP address (env CONSUL_HTTP_ADDR)")
    serve.add_argument("--host", help="listen address (env CONFIGD_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (env CONFIGD_PORT, default 8080)")
    serve.add_argument("--prefix", help="Consul key prefix (env CONFIGD_PREFIX, default configd)")
    serve.add_argument("--tokens-file", dest="tokens_file", help="bearer tokens JSON (env CONFIGD_TOKENS_FILE)")
    serve.add_argument("--workers", type=int, help="server processes sharing the port (env CONFIGD_WORKERS, default 1)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])

    relay = commands.add_parser("relay", help="Consul-compatible watch relay for many watching processes")
    relay.add_argument("--consul", dest="consul_addr", help="Consul HTTP address (env CONSUL_HTTP_ADDR)")
    relay.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    relay.add_argument("--port", type=int, default=8510, help="listen port (default 8510)")
    relay.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])

    dev = commands.add_parser("dev", help="throwaway Consul dev agent + server on 127.0.0.1:8080 + example data")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=8080)
    dev.add_argument(
        "--examples",
        default=None,
        help="directory with schemas/ and configs/ (default: schemas/examples/ and examples/configs/)",
    )
    dev.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    return parser


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .app import create_app
    from .auth import TokenBook
    from .settings import ServerSettings

    overrides: dict[str, Any] = {
        key: getattr(args, key)
        for key in ("consul_addr", "host", "port", "prefix", "tokens_file", "workers")
        if getattr(args, key) is not None
    }
    settings = ServerSettings(**overrides)
    if settings.tokens_file is None:
        print("configd serve: no tokens file (--tokens-file or CONFIGD_TOKENS_FILE); every API call would be 401")
        return 2
    tokens = TokenBook.from_file(settings.tokens_file)  # a broken file stops the start, before any worker runs
    print(
        f"configd serving on http://{settings.host}:{settings.port} (Consul {settings.consul_addr}, "
        f"prefix {settings.prefix!r}, {len(tokens)} tokens, {settings.workers} worker(s))",
        flush=True,
    )
    if settings.workers == 1:
        uvicorn.run(
            create_app(settings, tokens=tokens), host=settings.host, port=settings.port, log_level=args.log_level
        )
        return 0
    # Several processes: each builds its app from the environment (the same settings), and the Prometheus
    # counters of all of them are summed through prometheus_client's multiprocess directory.
    with tempfile.TemporaryDirectory(prefix="configd-metrics-") as metrics_dir:
        os.environ.update(settings.environment())
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        uvicorn.run(
            "configd.app:app_from_environment",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_level=args.log_level,
        )
    return 0


def _relay(args: argparse.Namespace) -> int:
    from .relay import run

    consul = args.consul_addr or os.environ.get("CONSUL_HTTP_ADDR") or "http://127.0.0.1:8500"
    if "://" not in consul:
        consul = f"http://{consul}"
    # CONSUL_HTTP_TOKEN is the relay's own token (its upstream queries); callers' tokens are checked per read.
    run(consul, args.host, args.port, token=os.environ.get("CONSUL_HTTP_TOKEN") or None)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "relay":
            return _relay(args)
        from .dev import run_dev

        return run_dev(host=args.host, port=args.port, examples=args.examples, log_level=args.log_level)
    except ConfigdError as exc:
        print(f"configd: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

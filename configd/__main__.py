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
    serve.add_argument(
        "--keys-file", dest="keys_file", help="namespace keys of secret fields (env CONFIGD_KEYS_FILE; configd keys)"
    )
    serve.add_argument("--workers", type=int, help="server processes sharing the port (env CONFIGD_WORKERS, default 1)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])

    keys = commands.add_parser("keys", help="namespace keys of secret fields (the key file, CONFIGD_KEYS_FILE)")
    verbs = keys.add_subparsers(dest="verb", required=True)
    file_help = "the server's key file (env CONFIGD_KEYS_FILE)"
    create = verbs.add_parser("create", help="add a namespace with a first, active key (creates the file)")
    create.add_argument("namespace")
    rotate = verbs.add_parser("rotate", help="a new active key for a namespace; old keys stay to read old versions")
    rotate.add_argument("namespace")
    rotate.add_argument("--rewrap", action="store_true", help="then write every head under an old key again")
    rotate.add_argument(
        "--stage", action="store_true", help="add the next key without activating it (ship it to apps, then rotate)"
    )
    rotate.add_argument("--consul", dest="consul_addr", help="Consul HTTP address for --rewrap (env CONSUL_HTTP_ADDR)")
    rotate.add_argument("--prefix", help="Consul key prefix for --rewrap (env CONFIGD_PREFIX)")
    key_list = verbs.add_parser("list", help="every key id, its namespace and date (never the key itself)")
    export = verbs.add_parser("export", help="an application's key file: only the namespaces it reads")
    export.add_argument("namespaces", nargs="+", metavar="NAMESPACE")
    export.add_argument("--out", required=True, help="where to write the application's key file")
    reencrypt = verbs.add_parser(
        "reencrypt", help="re-encrypt an exported tree (configctl export) for another environment's key file"
    )
    reencrypt.add_argument("directory", help="the tree: <ns>/<name>.json files, rewritten in place")
    reencrypt.add_argument("--to-keys", required=True, help="the target environment's key file")
    for key_verb in (create, rotate, key_list, export, reencrypt):
        key_verb.add_argument("--keys-file", dest="keys_file", help=file_help)

    tokens = commands.add_parser("tokens", help="add, list or remove API tokens (the file keeps only their sha256)")
    tokens.add_argument("--tokens-file", dest="tokens_file", help="bearer tokens JSON (env CONFIGD_TOKENS_FILE)")
    tokens.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    tokens_commands = tokens.add_subparsers(dest="tokens_command", required=True)
    add = tokens_commands.add_parser("add", help="add a token and print it once")
    add.add_argument("name", help="the token's name: the audit log's author")
    add.add_argument("--role", required=True, choices=["reader", "editor", "admin"])
    add.add_argument(
        "--namespaces", required=True, action="append", help="namespace globs, comma-separated or repeated (team-*)"
    )
    add.add_argument("--expires", help="90d, 12h, 30m from now, or an ISO 8601 date-time (default: never)")
    remove = tokens_commands.add_parser("remove", help="remove a token by name")
    remove.add_argument("name")
    listing = tokens_commands.add_parser("list", help="names, roles, namespaces and expiries (never a secret)")
    for sub in (add, remove, listing):  # also after the subcommand: `configd tokens add NAME … --tokens-file F`
        sub.add_argument("--tokens-file", dest="tokens_file", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    for verb, text in (
        ("export-all", "write every schema, version and audit entry under the prefix to DIR"),
        ("import-all", "create an export's keys under an empty prefix (all or nothing)"),
    ):
        backup = commands.add_parser(verb, help=text)
        backup.add_argument("directory", metavar="DIR")
        backup.add_argument("--consul", dest="consul_addr", help="Consul HTTP address (env CONSUL_HTTP_ADDR)")
        backup.add_argument("--prefix", help="Consul key prefix (env CONFIGD_PREFIX, default configd)")
        backup.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])

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
    from .settings import ServerSettings
    from .tokens import TokenFile

    overrides: dict[str, Any] = {
        key: getattr(args, key)
        for key in ("consul_addr", "host", "port", "prefix", "tokens_file", "keys_file", "workers")
        if getattr(args, key) is not None
    }
    settings = ServerSettings(**overrides)
    if settings.tokens_file is None:
        print("configd serve: no tokens file (--tokens-file or CONFIGD_TOKENS_FILE); every API call would be 401")
        return 2
    tokens = TokenFile(settings.tokens_file)  # a broken file stops the start, before any worker runs
    print(
        f"configd serving on http://{settings.host}:{settings.port} (Consul {settings.consul_addr}, "
        f"prefix {settings.prefix!r}, {len(tokens)} tokens, {settings.workers} worker(s))",
        flush=True,
    )
    if settings.workers == 1:
        from .serving import GracefulServer

        config = uvicorn.Config(
            create_app(settings, tokens=tokens),
            host=settings.host,
            port=settings.port,
            log_level=args.log_level,
            timeout_graceful_shutdown=settings.shutdown_grace,
        )
        GracefulServer(config, grace=settings.shutdown_grace).run()
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
            timeout_graceful_shutdown=settings.shutdown_grace,
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
    logging.basicConfig(
        level=getattr(args, "log_level", "warning").upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command in ("export-all", "import-all"):
            from .backup import run_backup_command

            return run_backup_command(args)
        if args.command == "tokens":
            from .tokens import run_tokens_command

            return run_tokens_command(args)
        if args.command == "keys":
            from ._keys_cli import run_keys

            return run_keys(args)
        if args.command == "relay":
            return _relay(args)
        from .dev import run_dev

        return run_dev(host=args.host, port=args.port, examples=args.examples, log_level=args.log_level)
    except ConfigdError as exc:
        print(f"configd: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""``configd keys create/rotate/list/export/reencrypt``: the server's key file, from the command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from configd_core.errors import ConfigdError
from configd_core.secrets import KEYS_FILE_ENV, KeyRing

from .services import keys


def _keys_file(args: argparse.Namespace) -> Path:
    path = args.keys_file or os.environ.get(KEYS_FILE_ENV)
    if not path:
        raise ConfigdError(f"no key file: pass --keys-file or set {KEYS_FILE_ENV}")
    return Path(path)


def _rewrap(args: argparse.Namespace, path: Path) -> None:
    from configd_core.consul import ConsulGateway
    from configd_core.layout import KeyLayout

    from .services.configs import ConfigStore
    from .settings import ServerSettings

    overrides: dict[str, Any] = {k: getattr(args, k) for k in ("consul_addr", "prefix") if getattr(args, k)}
    settings = ServerSettings(**overrides, keys_file=path)
    gateway = ConsulGateway(settings.consul_addr, token=settings.consul_token_value())
    try:
        store = ConfigStore(gateway, KeyLayout(settings.prefix), keys.ServerKeys(path))
        done, failed = keys.rewrap(store, args.namespace, actor="configd-keys")
        for result in done:
            print(f"rewrapped {result.head.namespace}/{result.head.name}: v{result.head.version}")
        for name, exc in failed:
            print(f"configd keys: could not rewrap {args.namespace}/{name}: {exc}", file=sys.stderr)
        if failed:
            raise ConfigdError(f"{len(failed)} config(s) of {args.namespace} were not rewrapped")
    finally:
        gateway.close()


def _reencrypt(args: argparse.Namespace, path: Path) -> None:
    source, target = KeyRing.from_file(path), KeyRing.from_file(Path(args.to_keys))
    root = Path(args.directory)
    for file in sorted(root.glob("*/*.json")):
        if file.name.endswith(".schema.json"):
            continue
        namespace, name = file.parent.name, file.name.removesuffix(".json")
        document = json.loads(file.read_text(encoding="utf-8"))
        moved = keys.reencrypt(source, target, namespace, name, document)
        if moved is not document:
            file.write_text(json.dumps(moved, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
            print(f"re-encrypted {namespace}/{name}")


def run_keys(args: argparse.Namespace) -> int:
    path = _keys_file(args)
    if args.verb == "create":
        key = keys.create_key(path, args.namespace)
        print(f"created key {key.kid} for namespace {args.namespace} in {path}")
    elif args.verb == "rotate":
        key = keys.rotate_key(path, args.namespace, stage=args.stage)
        if args.stage:
            print(f"staged key {key.kid} for namespace {args.namespace} in {path}: export it to the apps, then rotate")
        else:
            print(f"active key {key.kid} for namespace {args.namespace} in {path} (old keys kept)")
        if args.rewrap and not args.stage:
            _rewrap(args, path)
    elif args.verb == "list":
        for item in keys.list_keys(path):
            state = "active" if item.active else "staged" if item.staged else ""
            print(f"{item.namespace}\t{item.kid}\t{item.created_at}\t{state}".rstrip())
    elif args.verb == "export":
        ring = keys.export_keys(path, args.namespaces, Path(args.out))
        print(f"wrote {args.out}: keys of {', '.join(sorted(ring.namespaces))}")
    else:
        _reencrypt(args, path)
    return 0

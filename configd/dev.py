"""``configd dev``: a throwaway Consul dev agent, the server on 127.0.0.1:8080, dev tokens and example data.

Everything it starts (the agent, its temp directory, the tokens file) is stopped and removed on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import json
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from .auth import token_digest
from .devagent import PROJECT_ROOT, ConsulAgent
from .services.configs import ConfigStore
from .services.keys import create_key, export_keys

EXAMPLE_CONFIGS = PROJECT_ROOT / "examples" / "configs"
EXAMPLE_SCHEMAS = PROJECT_ROOT / "schemas" / "examples"
# An example with a secret field (payments/database, db_password): loaded with the dev key ring `make run` creates.
EXAMPLE_SECRETS = PROJECT_ROOT / "examples" / "secrets"
SECRET_NAMESPACES = ("payments",)
DEV_ACTOR = "dev-admin"
# Stable on purpose: the README's curl examples use them verbatim. Never use them outside `configd dev`.
DEV_TOKENS: tuple[dict[str, Any], ...] = (
    {"name": "dev-admin", "token": "dev-admin-token", "role": "admin", "namespaces": ["*"]},
    {"name": "dev-editor", "token": "dev-editor-token", "role": "editor", "namespaces": ["*"]},
    {"name": "dev-reader", "token": "dev-reader-token", "role": "reader", "namespaces": ["*"]},
)
# A second version of one example, so that history and diff have something to show.
SECOND_VERSION = (
    "payments",
    "service",
    {"timeout_ms": 1500, "features": {"three_d_secure": True, "instant_refunds": True, "new_checkout": False}},
    "slower acquirer in EU: raise timeout; enable instant refunds",
)


@dataclass(frozen=True)
class LoadedExamples:
    schemas: list[str]
    configs: list[str]


def load_examples(
    store: ConfigStore, configs_root: Path = EXAMPLE_CONFIGS, schemas_root: Path = EXAMPLE_SCHEMAS
) -> LoadedExamples:
    """Register ``<schemas_root>/<ns>/<name>.schema.json``, push ``<configs_root>/<ns>/<name>.json``, then a v2."""
    schemas, configs = [], []
    for path in sorted(schemas_root.glob("*/*.schema.json")):
        namespace, name = path.parent.name, path.name.removesuffix(".schema.json")
        store.register_schema(namespace, name, json.loads(path.read_text()), actor=DEV_ACTOR, message="example schema")
        schemas.append(f"{namespace}/{name}")
    for path in sorted(configs_root.glob("*/*.json")):
        namespace, name = path.parent.name, path.name.removesuffix(".json")
        store.push(namespace, name, json.loads(path.read_text()), actor=DEV_ACTOR, message="example config")
        configs.append(f"{namespace}/{name}")
    namespace, name, patch, message = SECOND_VERSION
    if f"{namespace}/{name}" in configs:
        _, current = store.get(namespace, name)
        store.push(namespace, name, {**current, **patch}, actor=DEV_ACTOR, message=message)
    return LoadedExamples(schemas, configs)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_dev(*, host: str, port: int, examples: str | None, log_level: str) -> int:
    import uvicorn

    from .app import create_app
    from .settings import ServerSettings

    # SIGTERM before uvicorn installs its own handlers must still clean up the agent.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="configd-dev-"))
    # Consul's default port when it is free, so applications using the SDK's defaults find the dev agent.
    agent = ConsulAgent.dev(name="configd-dev", http_port=8500)
    try:
        print("configd dev: starting a throwaway Consul dev agent …", flush=True)
        agent.start(timeout=60)
        tokens_file = workdir / "tokens.json"
        hashed = [
            {**{k: v for k, v in t.items() if k != "token"}, "sha256": token_digest(t["token"])} for t in DEV_TOKENS
        ]
        tokens_file.write_text(json.dumps({"tokens": hashed}, indent=2))
        # A dev key ring: the server's (every namespace) and an application's (only payments).
        keys_file, app_keys_file = workdir / "keys.json", workdir / "app-keys.json"
        for namespace in SECRET_NAMESPACES:
            create_key(keys_file, namespace)
        export_keys(keys_file, list(SECRET_NAMESPACES), app_keys_file)
        settings = ServerSettings(
            consul_addr=agent.http_addr,
            consul_token=None,
            tokens_file=tokens_file,
            keys_file=keys_file,
            prefix="configd",
            host=host,
            port=port,
        )
        app = create_app(settings)
        if examples:
            loaded = load_examples(app.state.configd.store, Path(examples) / "configs", Path(examples) / "schemas")
        else:
            loaded = load_examples(app.state.configd.store)
            secret = load_examples(app.state.configd.store, EXAMPLE_SECRETS / "configs", EXAMPLE_SECRETS / "schemas")
            loaded = LoadedExamples(loaded.schemas + secret.schemas, loaded.configs + secret.configs)
        server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level))
        base = f"http://{host}:{port}"
        banner = "\n".join(
            [
                "",
                f"configd dev is running on {base}",
                f"  Consul (throwaway dev agent): {agent.http_addr}",
                f"  examples: {len(loaded.schemas)} schemas; configs {', '.join(loaded.configs)}",
                f"  API docs: {base}/docs    UI: {base}/ui/    health: {base}/healthz",
                "  admin token: dev-admin-token   (also dev-editor-token, dev-reader-token)",
                f"  an app that hot-reloads: CONSUL_HTTP_ADDR={agent.http_addr} .venv/bin/python examples/app/main.py",
                f"  secrets (payments/database): server keys {keys_file}",
                f"    an app's key file, payments only: CONFIGD_KEYS_FILE={app_keys_file}",
                f"  try: curl -H 'Authorization: Bearer dev-admin-token' {base}/api/v1/configs",
                "Press Ctrl-C to stop the server and the Consul agent.",
                "",
            ]
        )

        def announce() -> None:
            while not server.started and not server.should_exit:
                time.sleep(0.05)
            if server.started:
                print(banner, flush=True)

        threading.Thread(target=announce, daemon=True).start()
        server.run()
        return 0 if server.started else 1
    except KeyboardInterrupt:
        return 0
    finally:
        print("configd dev: stopping the Consul agent …", flush=True)
        agent.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
        signal.signal(signal.SIGTERM, previous)
        print("configd dev: stopped", flush=True)

"""Directory sync: ``export DIR [NS]``, ``import DIR [--dry-run]`` and ``watch DIR``.

Imports and exports run on a bounded thread pool sharing one keep-alive HTTP connection pool, so a thousand
files cost a thousand short requests over a handful of connections, not a thousand TCP handshakes.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from configd_client._exceptions import ConfigdError, InvalidConfig, NotFound, ValidationFailed

from ._errors import ExitCode, UsageError, error_document, error_line, exit_code_for, worst
from ._http import ConfigdAPI
from ._offline import check_schema, validate_offline
from ._session import JsonOpt, Session, read_document, session
from ._tree import (
    Kind,
    Plan,
    PlanItem,
    RemoteDocument,
    TreeFile,
    classify,
    exportable,
    needs_document,
    plan_item,
    render_file,
    scan_tree,
    tree_path,
)
from ._watch import DirectoryWatcher

sync_app = typer.Typer()

T = TypeVar("T")
WorkersOpt = Annotated[int, typer.Option("--workers", "-w", min=1, max=64, help="Parallel requests.")]
MAX_PLAN_LINES = 50


def _parallel(state: Session, label: str, jobs: list[Callable[[], T]], workers: int) -> list[T | ConfigdError]:
    """Run ``jobs`` on a bounded pool with a progress bar; each result or its configd failure, in job order."""
    results: list[T | ConfigdError] = [ConfigdError("not run")] * len(jobs)
    with state.output.progress() as progress, ThreadPoolExecutor(max_workers=workers) as pool:
        task = progress.add_task(label, total=len(jobs))
        futures = {pool.submit(job): index for index, job in enumerate(jobs)}
        for future in as_completed(futures):
            try:
                results[futures[future]] = future.result()
            except ConfigdError as exc:
                results[futures[future]] = exc
            progress.advance(task)
    return results


def _bind(fn: Callable[..., T], *args: Any) -> Callable[[], T]:
    return lambda: fn(*args)


# --- export ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Exported:
    namespace: str
    name: str
    config: Any
    schema: Any | None


def _fetch_export(api: ConfigdAPI, namespace: str, name: str) -> _Exported:
    data = api.config(namespace, name).get("data")
    try:
        schema = api.schema(namespace, name).get("schema")
    except NotFound:
        schema = None
    return _Exported(namespace, name, data, schema)


@sync_app.command("export")
def export_tree(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="Where to write <ns>/<name>.json files.")],
    namespace: Annotated[str | None, typer.Argument(metavar="[NS]", help="Only this namespace.")] = None,
    workers: WorkersOpt = 8,
    as_json: JsonOpt = False,
) -> None:
    """Write every config (and its schema) as DIR/<ns>/<name>.json and DIR/<ns>/<name>.schema.json."""
    state = session(ctx, as_json)
    api = state.api(pool_size=workers)
    spaces = [namespace] if namespace else [s["namespace"] for s in api.namespaces()]
    refs: list[tuple[str, str]] = []
    skipped: list[str] = []
    for ns in spaces:
        for config in api.configs(ns):
            if exportable(config["name"]):
                refs.append((ns, config["name"]))
            else:
                skipped.append(f"{ns}/{config['name']}")
    jobs = [_bind(_fetch_export, api, ns, name) for ns, name in refs]
    results = _parallel(state, "export", jobs, workers)
    written: list[str] = []
    failures = [r for r in results if isinstance(r, ConfigdError)]
    for result in results:
        if isinstance(result, ConfigdError):
            continue
        documents: list[tuple[Kind, Any]] = [("config", result.config), ("schema", result.schema)]
        for kind, document in documents:
            if document is None:
                continue
            path = tree_path(directory, kind, result.namespace, result.name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(render_file(document), encoding="utf-8")
            written.append(str(path))
    configs = sum(1 for r in results if not isinstance(r, ConfigdError))
    if state.output.json_output:
        state.output.emit_json(
            {
                "directory": str(directory),
                "configs": configs,
                "files": written,
                "skipped": skipped,
                "failures": [error_document(f) for f in failures],
            }
        )
    else:
        for ref in skipped:
            state.output.note(f"skipped {ref}: a name ending in .schema cannot be represented in the tree")
        for failure in failures:
            state.output.error(error_line(failure))
        state.output.line(f"exported {configs} config(s), {len(written)} file(s) to {directory}")
    if failures:
        raise typer.Exit(int(worst([exit_code_for(f) for f in failures])))


# --- import ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Local:
    file: TreeFile
    path: Path
    document: Any


def _read_tree(root: Path) -> list[_Local]:
    """Parse every file first: a broken file stops the import before anything is sent."""
    locals_: list[_Local] = []
    problems: list[str] = []
    for meaning, path in scan_tree(root):
        try:
            document = read_document(str(path), meaning.kind)
            if meaning.kind == "schema":
                check_schema(document, str(path))
            locals_.append(_Local(meaning, path, document))
        except ValidationFailed as exc:
            problems.append(error_line(exc))
        except InvalidConfig as exc:
            problems.append(str(exc))
    if problems:
        raise InvalidConfig(f"{len(problems)} unusable file(s), nothing imported: " + "; ".join(problems))
    return locals_


def _remote_schema(api: ConfigdAPI, namespace: str, name: str) -> RemoteDocument | None:
    try:
        record = api.schema(namespace, name)
    except NotFound:
        return None
    return RemoteDocument(int(record["version"]), str(record["sha256"]), record.get("schema"))


def _remote_config_heads(api: ConfigdAPI, namespace: str) -> dict[str, RemoteDocument]:
    try:
        configs = api.configs(namespace)
    except NotFound:
        return {}
    return {c["name"]: RemoteDocument(int(c["version"]), str(c["sha256"])) for c in configs}


def _plan_config(api: ConfigdAPI, local: _Local, head: RemoteDocument | None) -> PlanItem:
    ns, name = local.file.namespace, local.file.name
    if head is not None and needs_document(local.document, head):
        head = RemoteDocument(head.version, head.sha256, api.config(ns, name, head.version).get("data"))
    return plan_item("config", ns, name, local.document, head)


def _plan_schema(api: ConfigdAPI, local: _Local) -> PlanItem:
    ns, name = local.file.namespace, local.file.name
    return plan_item("schema", ns, name, local.document, _remote_schema(api, ns, name))


def build_plan(state: Session, api: ConfigdAPI, files: list[_Local], workers: int) -> Plan:
    heads: dict[str, dict[str, RemoteDocument]] = {}
    for ns in sorted({f.file.namespace for f in files}):
        heads[ns] = _remote_config_heads(api, ns)
    jobs: list[Callable[[], PlanItem]] = [
        _bind(_plan_schema, api, f)
        if f.file.kind == "schema"
        else _bind(_plan_config, api, f, heads[f.file.namespace].get(f.file.name))
        for f in files
    ]
    results = _parallel(state, "plan", jobs, workers)
    failures = [r for r in results if isinstance(r, ConfigdError)]
    if failures:
        raise failures[0]
    return Plan([r for r in results if isinstance(r, PlanItem)])


def _show_plan(state: Session, plan: Plan) -> None:
    out = state.output
    shown = 0
    for item in plan.items:
        if item.action == "unchanged":
            continue
        shown += 1
        if shown > MAX_PLAN_LINES:
            continue
        what = "schema " if item.kind == "schema" else ""
        if item.action == "create":
            out.line(f"+ create {what}{item.ref}", style="green")
        else:
            out.line(f"~ update {what}{item.ref} (from v{item.remote_version})", style="yellow")
            out.diff(item.unified)
            out.changes([c.as_dict() for c in item.changes])
    if shown > MAX_PLAN_LINES:
        out.line(f"… and {shown - MAX_PLAN_LINES} more change(s) (use --json for all)", style="dim")
    counts = plan.summary()
    out.line(
        f"plan: {counts['create']} to create, {counts['update']} to update, {counts['unchanged']} unchanged",
        style="bold",
    )


@dataclass(frozen=True)
class _Applied:
    item: PlanItem
    status: str
    version: int | None
    forced: bool = False


def _apply_batch(api: ConfigdAPI, batch: list[PlanItem], message: str) -> list[_Applied | ConfigdError]:
    """One config's schema then data; a failed schema skips the data (it would be checked against the old one)."""
    results: list[_Applied | ConfigdError] = []
    config = next((i for i in batch if i.kind == "config"), None)
    for item in batch:
        try:
            if item.kind == "schema":
                results.append(_apply_schema(api, item, config, message))
            else:
                expected = item.remote_version if item.remote_version is not None else 0
                result = api.push(item.namespace, item.name, item.local, message=message, expected_version=expected)
                results.append(_Applied(item, str(result.get("status")), result.get("version")))
        except ConfigdError as exc:
            results.append(exc)
            if item.kind == "schema":
                break
    return results


def _apply_schema(api: ConfigdAPI, item: PlanItem, config: PlanItem | None, message: str) -> _Applied:
    try:
        result = api.put_schema(item.namespace, item.name, item.local, message=message)
        return _Applied(item, str(result.get("status")), result.get("version"))
    except ValidationFailed:
        # The schema itself passed the meta-schema locally, so a 422 here means the server's CURRENT config
        # fails it. When the tree also brings a new config that the new schema accepts, the tree as a whole
        # is consistent: register with force, and the config push right after makes the head valid again.
        if config is None or validate_offline(item.local, config.local, item.ref):
            raise
        result = api.put_schema(item.namespace, item.name, item.local, message=message, force=True)
        return _Applied(item, str(result.get("status")), result.get("version"), forced=True)


@sync_app.command("import")
def import_tree(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="A tree of <ns>/<name>.json files.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the plan; write nothing.")] = False,
    message: Annotated[str, typer.Option("--message", "-m", help="Message for every version written.")] = (
        "configctl import"
    ),
    workers: WorkersOpt = 16,
    as_json: JsonOpt = False,
) -> None:
    """Plan (create / update / unchanged, with diffs) and apply a directory tree; schemas go before configs."""
    state = session(ctx, as_json)
    files = _read_tree(directory)
    api = state.api(pool_size=workers)
    plan = build_plan(state, api, files, workers)
    if not state.output.json_output:
        _show_plan(state, plan)
    applied: list[_Applied] = []
    failures: list[ConfigdError] = []
    batches = plan.batches()
    if not dry_run and batches:
        jobs = [_bind(_apply_batch, api, batch, message) for batch in batches]
        for outcome in _parallel(state, "import", jobs, workers):
            if isinstance(outcome, ConfigdError):
                failures.append(outcome)
                continue
            for result in outcome:
                (failures if isinstance(result, ConfigdError) else applied).append(result)  # type: ignore[arg-type]
    created = sum(1 for a in applied if a.status == "created" and a.item.action == "create")
    updated = sum(1 for a in applied if a.status == "created" and a.item.action == "update")
    if state.output.json_output:
        state.output.emit_json(
            {
                "dry_run": dry_run,
                "plan": plan.summary(),
                "items": [i.as_dict() for i in plan.items],
                "applied": [
                    {
                        "kind": a.item.kind,
                        "ref": a.item.ref,
                        "status": a.status,
                        "version": a.version,
                        "forced": a.forced,
                    }
                    for a in applied
                ],
                "failures": [error_document(f) for f in failures],
            }
        )
    else:
        for failure in failures:
            state.output.error(error_line(failure))
        for forced in (a for a in applied if a.forced):
            state.output.note(f"{forced.item.ref}: schema registered with force (the imported config matches it)")
        if dry_run:
            state.output.line("dry run: nothing written")
        elif batches:
            state.output.line(f"applied: {created} created, {updated} updated, {len(failures)} failed", style="bold")
    if failures:
        raise typer.Exit(int(worst([exit_code_for(f) for f in failures])))


# --- watch -------------------------------------------------------------------------------------------
def _push_file(api: ConfigdAPI, root: Path, path: Path, message: str) -> dict[str, Any] | None:
    """Push one saved file; None when the path is not (or no longer) part of the tree."""
    meaning = classify(root, path)
    if meaning is None or not path.is_file():
        return None
    outcome: dict[str, Any] = {
        "path": str(path),
        "kind": meaning.kind,
        "namespace": meaning.namespace,
        "name": meaning.name,
    }
    try:
        document = read_document(str(path), meaning.kind)
        if meaning.kind == "schema":
            check_schema(document, str(path))
            result = api.put_schema(meaning.namespace, meaning.name, document, message=message)
        else:
            result = api.push(meaning.namespace, meaning.name, document, message=message)
    except ConfigdError as exc:
        return outcome | {"status": "rejected", **error_document(exc), "line": error_line(exc)}
    status = "unchanged" if result.get("status") == "unchanged" else "accepted"
    return outcome | {"status": status, "version": result.get("version")}


def _show_watch(state: Session, outcome: dict[str, Any]) -> None:
    if state.output.json_output:
        state.output.emit_json_line(outcome)
        return
    ref = f"{outcome['namespace']}/{outcome['name']}" + (" schema" if outcome["kind"] == "schema" else "")
    if outcome["status"] == "accepted":
        state.output.line(f"{ref}: accepted v{outcome['version']}", style="green")
    elif outcome["status"] == "unchanged":
        state.output.line(f"{ref}: unchanged at v{outcome['version']}", style="yellow")
    else:
        state.output.line(f"{ref}: rejected — {outcome['line']}", style="red")


@sync_app.command()
def watch(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="A tree of <ns>/<name>.json files.")],
    debounce: Annotated[float, typer.Option("--debounce", min=0.01, help="Seconds a file must be quiet.")] = 0.3,
    message: Annotated[str, typer.Option("--message", "-m", help="Message for every version written.")] = (
        "configctl watch"
    ),
    as_json: JsonOpt = False,
) -> None:
    """Push each file of DIR when it is saved (debounced; atomic saves included) until interrupted."""
    state = session(ctx, as_json)
    root = directory.resolve()
    if not root.is_dir():
        raise UsageError(f"{directory}: not a directory")
    api = state.api()
    with DirectoryWatcher(root, quiet=debounce) as watcher:
        state.output.note(f"watching {root} (Ctrl-C to stop)")
        try:
            while True:
                for path in watcher.wait_ready(timeout=1.0):
                    outcome = _push_file(api, root, path, message)
                    if outcome is not None:
                        _show_watch(state, outcome)
        except KeyboardInterrupt:
            state.output.note("stopped")
    raise typer.Exit(int(ExitCode.OK))

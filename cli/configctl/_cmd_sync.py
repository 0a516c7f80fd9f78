"""Directory sync: ``export DIR [NS]``, ``import DIR [--dry-run]`` and ``watch DIR``.

Exports run on a bounded thread pool sharing one keep-alive HTTP connection pool. An import plans from two
listings per namespace (config heads and schema heads, compared by content hash) and downloads only what it must
diff; it applies through ``POST /api/v1/import``, whole configs per request, a few requests at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from configd_core.errors import ConfigdError, InvalidConfig, NotFound, ValidationFailed, VersionConflict

from ._errors import ExitCode, ServerUnavailable, UsageError, error_document, error_line, exit_code_for, worst
from ._http import ConfigdAPI, item_failures
from ._offline import check_schema
from ._session import JsonOpt, Session, read_document, session
from ._tree import (
    Kind,
    Plan,
    PlanItem,
    RemoteDocument,
    TreeFile,
    classify,
    exportable,
    import_requests,
    needs_document,
    plan_item,
    render_file,
    scan_tree,
    tree_path,
)

sync_app = typer.Typer()

T = TypeVar("T")
WorkersOpt = Annotated[int, typer.Option("--workers", "-w", min=1, max=64, help="Parallel requests.")]
MAX_PLAN_LINES = 50
# An import request carries at most this many items and about this many bytes of documents (the server accepts
# 1,000 items and 9 MiB); at most IMPORT_PARALLEL requests run at once (fewer with --workers), each committing its
# configs in packed Consul transactions. A refusal that names items is retried without them IMPORT_ROUNDS times.
IMPORT_REQUEST_ITEMS = 500
IMPORT_REQUEST_BYTES = 4 * 1024 * 1024
IMPORT_PARALLEL = 4
IMPORT_ROUNDS = 3


def _parallel(
    state: Session, label: str, jobs: list[Callable[[], T]], workers: int, weights: list[int] | None = None
) -> list[T | ConfigdError]:
    """Run ``jobs`` on a bounded pool with a progress bar (advanced by each job's weight, default 1); each result
    or its configd failure, in job order."""
    results: list[T | ConfigdError] = [ConfigdError("not run")] * len(jobs)
    if not jobs:
        return results
    weight = weights or [1] * len(jobs)
    from concurrent.futures import ThreadPoolExecutor, as_completed

    with state.output.progress() as progress, ThreadPoolExecutor(max_workers=workers) as pool:
        task = progress.add_task(label, total=sum(weight))
        futures = {pool.submit(job): index for index, job in enumerate(jobs)}
        for future in as_completed(futures):
            try:
                results[futures[future]] = future.result()
            except ConfigdError as exc:
                results[futures[future]] = exc
            progress.advance(task, weight[futures[future]])
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
    data = api.config(namespace, name, sealed=True).get("data")  # secrets stay encrypted in the tree
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


@dataclass(frozen=True)
class _Remote:
    """The server's heads in one namespace, by name: what a plan compares the tree with."""

    configs: dict[str, RemoteDocument]
    schemas: dict[str, RemoteDocument]

    def head(self, file: TreeFile) -> RemoteDocument | None:
        return (self.schemas if file.kind == "schema" else self.configs).get(file.name)


def _listed(records: list[dict[str, Any]]) -> dict[str, RemoteDocument]:
    return {r["name"]: RemoteDocument(int(r["version"]), str(r["sha256"])) for r in records}


def _remote_namespace(api: ConfigdAPI, namespace: str) -> _Remote:
    """Two requests, whatever the namespace's size: its config heads and its schema heads."""
    try:
        configs = _listed(api.configs(namespace))
    except NotFound:
        configs = {}
    try:
        schemas = _listed(api.schemas(namespace))
    except NotFound:
        schemas = {}
    return _Remote(configs, schemas)


def _with_document(api: ConfigdAPI, file: TreeFile, head: RemoteDocument) -> RemoteDocument:
    """The head with its document: downloaded only to diff a real change."""
    if file.kind == "schema":
        document = api.schema(file.namespace, file.name, head.version).get("schema")
    else:
        document = api.config(file.namespace, file.name, head.version, sealed=True).get("data")
    return RemoteDocument(head.version, head.sha256, document)


def _succeeded(results: list[T | ConfigdError]) -> list[T]:
    """The results of jobs that must all succeed (planning): the first failure stops the import."""
    for result in results:
        if isinstance(result, ConfigdError):
            raise result
    return [r for r in results if not isinstance(r, ConfigdError)]


def build_plan(state: Session, api: ConfigdAPI, files: list[_Local], workers: int) -> Plan:
    """Compare the tree with the server by content hash, from two listings per namespace; only the remote documents
    that differ are downloaded, to be diffed."""
    spaces = sorted({f.file.namespace for f in files})
    listings = _succeeded(_parallel(state, "plan", [_bind(_remote_namespace, api, ns) for ns in spaces], workers))
    remotes = dict(zip(spaces, listings, strict=True))
    heads = [remotes[f.file.namespace].head(f.file) for f in files]
    changed = [i for i, (f, head) in enumerate(zip(files, heads, strict=True)) if needs_document(f.document, head)]
    jobs = [_bind(_with_document, api, files[i].file, heads[i]) for i in changed]
    for i, head in zip(changed, _succeeded(_parallel(state, "diff", jobs, workers)), strict=True):
        heads[i] = head
    return Plan(
        [
            plan_item(f.file.kind, f.file.namespace, f.file.name, f.document, head)
            for f, head in zip(files, heads, strict=True)
        ]
    )


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


@dataclass
class _Outcome:
    """What one import request did: items applied, failures (one per item), items skipped with their partner."""

    applied: list[_Applied] = field(default_factory=list)
    failures: list[ConfigdError] = field(default_factory=list)
    skipped: list[PlanItem] = field(default_factory=list)


def _apply_request(api: ConfigdAPI, batches: list[list[PlanItem]], message: str) -> _Outcome:
    """One ``POST /import`` of whole configs. A refusal writes nothing; when it names items, their configs are
    dropped (a schema and its config go together) and the rest is sent again, at most IMPORT_ROUNDS times."""
    outcome = _Outcome()
    pending = batches
    for round_ in range(1, IMPORT_ROUNDS + 1):
        items = [item for batch in pending for item in batch]
        try:
            results = api.import_items([item.as_import() for item in items], message=message)
        except ConfigdError as exc:
            named = item_failures(exc, [item.label for item in items])
            if not named or round_ == IMPORT_ROUNDS:
                outcome.failures += [named.get(i, exc) for i in range(len(items))]
                return outcome
            outcome.failures += named.values()
            kept: list[list[PlanItem]] = []
            start = 0
            for batch in pending:
                indexes = range(start, start + len(batch))
                start += len(batch)
                if any(i in named for i in indexes):
                    outcome.skipped += [items[i] for i in indexes if i not in named]
                else:
                    kept.append(batch)
            pending = kept
            if not pending:
                return outcome
            continue
        for item, result in zip(items, results, strict=True):
            status, detail = str(result.get("status")), f"{item.label}: {result.get('detail', '')}"
            if status in ("created", "unchanged"):
                outcome.applied.append(_Applied(item, status, result.get("version"), bool(result.get("forced"))))
            elif status == "conflict":
                outcome.failures.append(VersionConflict(detail))
            else:
                outcome.failures.append(ServerUnavailable(detail))
        return outcome
    return outcome


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
    """Plan (create / update / unchanged, with diffs) and apply a directory tree; a schema and its config land
    together."""
    state = session(ctx, as_json)
    files = _read_tree(directory)
    api = state.api(pool_size=workers)
    plan = build_plan(state, api, files, workers)
    if not state.output.json_output:
        _show_plan(state, plan)
    done = _Outcome()
    requests = import_requests(plan.batches(), max_items=IMPORT_REQUEST_ITEMS, max_bytes=IMPORT_REQUEST_BYTES)
    jobs = [] if dry_run else [_bind(_apply_request, api, request, message) for request in requests]
    weights = [sum(len(batch) for batch in request) for request in requests]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as applier:
        applying = applier.submit(_parallel, state, "import", jobs, min(workers, IMPORT_PARALLEL), weights)
        # While the server works: the report's items, with the diff of every document (computed on demand).
        items = [i.as_dict() for i in plan.items] if state.output.json_output else []
        for outcome in applying.result():
            if isinstance(outcome, ConfigdError):
                done.failures.append(outcome)
                continue
            done.applied += outcome.applied
            done.failures += outcome.failures
            done.skipped += outcome.skipped
    applied, failures = done.applied, done.failures
    created = sum(1 for a in applied if a.status == "created" and a.item.action == "create")
    updated = sum(1 for a in applied if a.status == "created" and a.item.action == "update")
    if state.output.json_output:
        state.output.emit_json_report(
            {
                "dry_run": dry_run,
                "plan": plan.summary(),
                "items": items,
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
                "skipped": [{"kind": i.kind, "ref": i.ref} for i in done.skipped],
            }
        )
    else:
        for failure in dict.fromkeys(failures):  # a request that failed as a whole is one failure per item
            state.output.error(error_line(failure))
        for item in done.skipped:
            state.output.note(f"{item.label}: not imported: a schema and its config are imported together")
        if dry_run:
            state.output.line("dry run: nothing written")
        elif jobs:
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
    from ._watch import DirectoryWatcher  # watchdog: only `configctl watch` needs it

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

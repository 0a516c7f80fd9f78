"""``/api/v1/projections``: where configd projects configs for clients other than its SDK (docs/interop.md).

Admins set (PUT) or unset (DELETE) the projections of one config (``/{ns}/{name}``) or of every config of a
namespace (``/{ns}``; its targets must contain ``{name}``). A config has at most one projection of each kind at
each scope: a PUT replaces the kinds it names and keeps the others; a DELETE removes the kinds in ``?kind=`` (all
without). The projection is written at once for the current head. Readers list them.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from configd_core.errors import ValidationFailed
from configd_core.records import ProjectionSpec, ProjectionsRecord

from ..auth import Principal
from ..services.configs import ConfigStore
from .deps import Authorize, ConfigName, Namespace, NamespaceFilter, Reader, State, Store, json_body
from .errors import ERROR_RESPONSES

router = APIRouter(prefix="/api/v1/projections", tags=["projections"])

ProjectionAdmin = Annotated[Principal, Depends(Authorize("admin", action="projections.set"))]
ProjectionRemover = Annotated[Principal, Depends(Authorize("admin", action="projections.unset"))]


class DocumentTarget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(description="the Consul key (outside configd's prefix); {namespace} and {name} are replaced")
    format: Literal["json", "yaml"] = "json"


class ProjectionsBody(BaseModel):
    """At least one of the three; each replaces the projection of its kind at this scope, the others stay."""

    model_config = ConfigDict(extra="forbid")

    document: DocumentTarget | None = None
    spring: str | None = Field(default=None, description="APP or APP,PROFILE: the key config/APP[,PROFILE]/data")
    tree: str | None = Field(default=None, description="the key prefix of one key per leaf")

    def specs(self) -> list[ProjectionSpec]:
        found = []
        if self.document is not None:
            found.append(ProjectionSpec(kind="document", target=self.document.key, format=self.document.format))
        if self.spring is not None:
            found.append(ProjectionSpec(kind="spring", target=self.spring, format="yaml"))
        if self.tree is not None:
            found.append(ProjectionSpec(kind="tree", target=self.tree, format="json"))
        if not found:
            raise ValidationFailed("name at least one projection: document, spring or tree")
        return found


class ProjectionRow(BaseModel):
    namespace: str
    name: str | None = Field(description="null: every config of the namespace")
    kind: str
    target: str
    format: str
    keys: list[str] = Field(description="where each live config is projected (a tree: its prefix)")


class ProjectionsView(BaseModel):
    projections: list[ProjectionRow]


KindsQuery = Annotated[
    list[Literal["document", "spring", "tree"]] | None, Query(description="only these kinds; default: all")
]
ProjectionsDoc = Annotated[ProjectionsBody, Depends(json_body(ProjectionsBody))]


def _rows(store: ConfigStore, records: list[ProjectionsRecord]) -> list[ProjectionRow]:
    rows = []
    for record in records:
        live = [h.name for h in store.heads(record.namespace)]
        scopes: list[tuple[str | None, list[ProjectionSpec]]] = [(None, record.every_config)]
        scopes += sorted(record.configs.items())
        for name, specs in scopes:
            for spec in specs:
                configs = [name] if name is not None else live
                keys = [k for c in configs if (k := store.projections.key_of(spec, record.namespace, c)) is not None]
                rows.append(
                    ProjectionRow(
                        namespace=record.namespace,
                        name=name,
                        kind=spec.kind,
                        target=spec.target,
                        format=spec.format,
                        keys=keys,
                    )
                )
    return rows


@router.get("", response_model=ProjectionsView, responses=ERROR_RESPONSES, summary="Every projection")
def list_projections(principal: Reader, store: Store, ns: NamespaceFilter = None) -> ProjectionsView:
    if ns:
        principal.authorize("reader", ns)
    records = [r for r in store.projections.listing(ns or None) if principal.covers(r.namespace)]
    return ProjectionsView(projections=_rows(store, records))


def _set(
    state: State,
    principal: Principal,
    ns: str,
    name: str | None,
    specs: list[ProjectionSpec],
    remove: set[str] | None = None,
) -> ProjectionsView:
    record = state.store.projections.update(ns, name, specs, actor=principal.name, remove=remove)
    state.metrics.write("projections.set" if specs else "projections.unset", "created")
    rows = _rows(state.store, [record])
    return ProjectionsView(projections=[r for r in rows if r.name == name])


@router.put("/{ns}/{name}", response_model=ProjectionsView, responses=ERROR_RESPONSES, summary="Project a config")
def set_config_projections(
    ns: Namespace, name: ConfigName, principal: ProjectionAdmin, body: ProjectionsDoc, state: State
) -> ProjectionsView:
    """Set the config's own projections — each kind given replaces that kind, the others stay — and write them at
    once for its head. 409 when a target key exists and configd did not write it for this config; 422 for an
    unusable target; nothing is written then."""
    return _set(state, principal, ns, name, body.specs())


@router.put("/{ns}", response_model=ProjectionsView, responses=ERROR_RESPONSES, summary="Project every config")
def set_namespace_projections(
    ns: Namespace, principal: ProjectionAdmin, body: ProjectionsDoc, state: State
) -> ProjectionsView:
    """Set projections for every config of the namespace (targets must contain ``{name}``), kind by kind."""
    return _set(state, principal, ns, None, body.specs())


@router.delete("/{ns}/{name}", response_model=ProjectionsView, responses=ERROR_RESPONSES, summary="Stop projecting")
def unset_config_projections(
    ns: Namespace, name: ConfigName, principal: ProjectionRemover, state: State, kind: KindsQuery = None
) -> ProjectionsView:
    """Remove the config's own projections (only the kinds given, when any) and the keys configd wrote for them."""
    return _set(state, principal, ns, name, [], set(kind) if kind else None)


@router.delete("/{ns}", response_model=ProjectionsView, responses=ERROR_RESPONSES, summary="Stop projecting all")
def unset_namespace_projections(
    ns: Namespace, principal: ProjectionRemover, state: State, kind: KindsQuery = None
) -> ProjectionsView:
    """Remove the namespace-wide projections (only the kinds given, when any) and the keys configd wrote for them."""
    return _set(state, principal, ns, None, [], set(kind) if kind else None)

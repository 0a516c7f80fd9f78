"""The CLI's only HTTP code: a small client for configd's JSON API (``/api/v1``).

Every failure leaves this module as a configd exception (``from_status``), carrying the method, URL, status and
body of the request (``exc.request``, a :class:`RequestContext`); callers never see ``httpx`` exceptions. The
exception's class comes from the status and, where a status covers several classes, from the ``error`` name
the server puts in every error body — never from the message.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from types import TracebackType
from typing import Any
from urllib.parse import quote

from configd_core.errors import (
    ConfigdError,
    ConfigTooLarge,
    ConsulUnavailable,
    ErrorDetail,
    NotFound,
    RequestContext,
    RolloutActive,
    SchemaIncompatible,
    SchemaNotFound,
    ValidationFailed,
    VersionConflict,
)
from configd_core.layout import MAX_CONFIG_BYTES

from ._errors import AuthFailed, ServerUnavailable, UsageError

DEFAULT_SERVER = "http://127.0.0.1:8080"
API = "/api/v1"
_ITEM_PATH = re.compile(r"^/items/(\d+)(/.*)?$")


def _details(body: Any) -> list[ErrorDetail]:
    raw = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(raw, list):
        return []
    return [
        ErrorDetail(str(item.get("path", "")), str(item.get("message", ""))) for item in raw if isinstance(item, dict)
    ]


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) else None


def from_status(request: RequestContext) -> ConfigdError:
    """Map an HTTP error response to the configd exception tree: by status (the API contract), and by the body's
    ``error`` class name where one status covers a subclass (SchemaNotFound, SchemaIncompatible, RolloutActive)."""
    body = request.body
    detail = body.get("detail") if isinstance(body, dict) else None
    if not isinstance(detail, str) or not detail:
        detail = f"{request.method} {request.url} answered HTTP {request.status}"
    error = body.get("error") if isinstance(body, dict) else None
    status = request.status
    exc: ConfigdError
    if status == 422:
        exc = (SchemaIncompatible if error == SchemaIncompatible.__name__ else ValidationFailed)(detail, _details(body))
    elif status == 409 and error == RolloutActive.__name__:
        rollout = body.get("rollout") if isinstance(body, dict) else None
        exc = RolloutActive(detail, rollout=rollout if isinstance(rollout, str) else "")
    elif status == 409:
        exc = VersionConflict(
            detail, expected=_int_or_none(body.get("expected")), actual=_int_or_none(body.get("actual"))
        )
    elif status == 404:
        exc = (SchemaNotFound if error == SchemaNotFound.__name__ else NotFound)(detail)
    elif status == 413:
        exc = ConfigTooLarge(_int_or_none(body.get("size")) or 0, _int_or_none(body.get("limit")) or MAX_CONFIG_BYTES)
        exc.args = (detail,)
    elif status in (401, 403):
        exc = AuthFailed(detail)
    elif status == 503:
        exc = ConsulUnavailable(detail)
    elif status is not None and 400 <= status < 500:
        exc = UsageError(detail)
    else:
        exc = ServerUnavailable(detail)
    return exc.with_request(request)


def item_failures(exc: ConfigdError, labels: list[str]) -> dict[int, ConfigdError]:
    """The items an import refusal names (its ``errors`` paths are ``/items/<i>/…``), each with its own failure;
    ``labels`` names the items sent, in order.

    The refusal's status says what kind every problem is (403, 404, 409); a 422 mixes kinds, so an item whose
    problem is its ``expected_version`` is a conflict there and any other a validation failure. Empty when the
    refusal names no item (the request as a whole failed).
    """
    request = exc.request
    by_item: dict[int, list[ErrorDetail]] = {}
    for detail in _details(request.body) if request is not None else []:
        match = _ITEM_PATH.match(detail.path)
        if match is not None and int(match.group(1)) < len(labels):
            rest = match.group(2) or ""
            by_item.setdefault(int(match.group(1)), []).append(ErrorDetail(rest or "/", detail.message))
    return {index: _item_failure(exc, labels[index], errors, request) for index, errors in by_item.items()}


def _item_failure(
    exc: ConfigdError, label: str, errors: list[ErrorDetail], request: RequestContext | None
) -> ConfigdError:
    text = "; ".join(e.message if e.path == "/" else f"{e.path}: {e.message}" for e in errors)
    found: ConfigdError
    if isinstance(exc, AuthFailed | NotFound):
        found = type(exc)(text)
    elif isinstance(exc, VersionConflict) or all(e.path == "/expected_version" for e in errors):
        found = VersionConflict(text)
    else:
        document = [ErrorDetail(e.path.removeprefix("/document") or "/", e.message) for e in errors]
        found = ValidationFailed(f"{label}: {len(errors)} validation error(s)", document)
    return found.with_request(request) if request is not None else found


def _segment(value: str) -> str:
    return quote(value, safe="")


def _ref_path(namespace: str, name: str) -> str:
    return f"{API}/configs/{_segment(namespace)}/{_segment(name)}"


def _needs_tls(server: str) -> bool:
    """Whether any request can travel over TLS: an ``https://`` server, or an HTTPS proxy from the environment.

    For a plain ``http://`` server (redirects are not followed) httpx would still build a verifying SSL context
    from certifi's bundle at ``Client()``: ~35 ms of every command that talks to the server, for nothing.
    """
    proxied = any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"))
    return not server.lower().startswith("http://") or proxied


class ConfigdAPI:
    """A keep-alive connection pool to one configd server; safe to share between threads (httpx.Client is)."""

    def __init__(
        self, server: str = DEFAULT_SERVER, token: str | None = None, *, timeout: float = 30.0, pool_size: int = 16
    ) -> None:
        headers = {"Accept": "application/json", "User-Agent": "configctl"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.server = server.rstrip("/")
        # Imported by the first ConfigdAPI, not with this module: `configctl --help` and offline commands never
        # pay for httpx (docs/benchmarks.md, start-up).
        import httpx

        self._http = httpx.Client(
            base_url=self.server,
            headers=headers,
            timeout=timeout,
            limits=httpx.Limits(max_connections=pool_size, max_keepalive_connections=pool_size),
            verify=_needs_tls(self.server),
        )

    def __enter__(self) -> ConfigdAPI:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def request(
        self, method: str, path: str, *, json: Any = None, params: Mapping[str, str | int | bool] | None = None
    ) -> Any:
        """One API call; returns the decoded JSON body or raises a configd exception."""
        url = f"{self.server}{path}"
        clean = {k: (str(v).lower() if isinstance(v, bool) else v) for k, v in (params or {}).items()}
        import httpx  # already imported by __init__: a dictionary lookup

        try:
            response = self._http.request(method, path, json=json, params=clean or None)
        except httpx.TimeoutException as exc:
            raise ServerUnavailable(f"configd at {self.server} timed out ({method} {path})").with_request(
                RequestContext(method, url, None, None)
            ) from exc
        except httpx.TransportError as exc:
            raise ServerUnavailable(f"cannot reach configd at {self.server}: {exc}").with_request(
                RequestContext(method, url, None, None)
            ) from exc
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text
        if response.status_code >= 400:
            raise from_status(RequestContext(method, str(response.url), response.status_code, body))
        return body

    # --- configs ------------------------------------------------------------------------------------
    def push(
        self,
        namespace: str,
        name: str,
        data: Any,
        *,
        message: str = "",
        expected_version: int | None = None,
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {"data": data, "message": message}
        if expected_version is not None:
            payload["expected_version"] = expected_version
        result: dict[str, Any] = self.request("PUT", _ref_path(namespace, name), json=payload)
        return result

    def config(self, namespace: str, name: str, version: int | None = None, *, sealed: bool = False) -> dict[str, Any]:
        """A version; secret values masked, or (``sealed``) in their encrypted envelopes."""
        path = _ref_path(namespace, name) + (f"/versions/{version}" if version is not None else "")
        result: dict[str, Any] = self.request("GET", path + ("?sealed=true" if sealed else ""))
        return result

    def namespaces(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", f"{API}/configs")["namespaces"]
        return result

    def configs(self, namespace: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", f"{API}/configs/{_segment(namespace)}")["configs"]
        return result

    def history(self, namespace: str, name: str, *, limit: int = 50, before: int | None = None) -> dict[str, Any]:
        params: dict[str, str | int | bool] = {"limit": limit}
        if before is not None:
            params["before"] = before
        result: dict[str, Any] = self.request("GET", _ref_path(namespace, name) + "/versions", params=params)
        return result

    def diff(self, namespace: str, name: str, from_version: int, to_version: int) -> dict[str, Any]:
        params: dict[str, str | int | bool] = {"from": from_version, "to": to_version}
        result: dict[str, Any] = self.request("GET", _ref_path(namespace, name) + "/diff", params=params)
        return result

    def rollback(
        self, namespace: str, name: str, to_version: int, *, message: str = "", expected_version: int | None = None
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {"to_version": to_version, "message": message}
        if expected_version is not None:
            payload["expected_version"] = expected_version
        result: dict[str, Any] = self.request("POST", _ref_path(namespace, name) + "/rollback", json=payload)
        return result

    def validate(self, namespace: str, name: str, data: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", _ref_path(namespace, name) + "/validate", json={"data": data})
        return result

    def delete(self, namespace: str, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("DELETE", _ref_path(namespace, name))
        return result

    # --- rollouts (progressive delivery of one config; docs/cli.md#rollouts) ---------------------------
    def start_rollout(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """``POST …/rollouts``: start a rollout (``data`` or ``version``, ``cohort``, ``steps``, …); its status."""
        result: dict[str, Any] = self.request("POST", _ref_path(namespace, name) + "/rollouts", json=body)
        return result

    def rollout_status(self, namespace: str, name: str) -> dict[str, Any]:
        """The active rollout's status (NotFound when none is active)."""
        result: dict[str, Any] = self.request("GET", _ref_path(namespace, name) + "/rollouts/current")
        return result

    def rollout_step(self, namespace: str, name: str, step: str, *, message: str = "") -> dict[str, Any]:
        """``promote``, ``pause``, ``resume`` or ``abort`` the active rollout; its status afterwards."""
        path = _ref_path(namespace, name) + f"/rollouts/current/{step}"
        result: dict[str, Any] = self.request("POST", path, json={"message": message})
        return result

    def rollout_history(self, namespace: str, name: str) -> list[dict[str, Any]]:
        """Finished rollouts of the config, newest first."""
        result: list[dict[str, Any]] = self.request("GET", _ref_path(namespace, name) + "/rollouts")["items"]
        return result

    # --- schemas ------------------------------------------------------------------------------------
    def put_schema(
        self, namespace: str, name: str, schema: Any, *, message: str = "", force: bool = False
    ) -> dict[str, Any]:
        params: dict[str, str | int | bool] = {}
        if force:
            params["force"] = True
        if message:
            params["message"] = message
        path = f"{API}/schemas/{_segment(namespace)}/{_segment(name)}"
        result: dict[str, Any] = self.request("PUT", path, json=schema, params=params)
        return result

    def schema(self, namespace: str, name: str, version: int | None = None) -> dict[str, Any]:
        path = f"{API}/schemas/{_segment(namespace)}/{_segment(name)}"
        if version is not None:
            path += f"/versions/{version}"
        result: dict[str, Any] = self.request("GET", path)
        return result

    def schemas(self, namespace: str) -> list[dict[str, Any]]:
        """The current schemas of a namespace: name, version, sha256 (NotFound when it has none)."""
        result: list[dict[str, Any]] = self.request("GET", f"{API}/schemas/{_segment(namespace)}")["schemas"]
        return result

    # --- bulk import --------------------------------------------------------------------------------
    def import_items(self, items: list[dict[str, Any]], *, message: str = "") -> list[dict[str, Any]]:
        """``POST /import``: one result per item, in order. A refusal (nothing written) raises; its items are
        decoded by :func:`item_failures`."""
        result: list[dict[str, Any]] = self.request("POST", f"{API}/import", json={"message": message, "items": items})[
            "items"
        ]
        return result

    # --- observing ----------------------------------------------------------------------------------
    def clients(self, namespace: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"{API}/clients/{_segment(namespace)}")
        return result

    def storage(self, namespace: str) -> dict[str, Any]:
        """Consul KV keys and bytes of one namespace, counted now."""
        result: dict[str, Any] = self.request("GET", f"{API}/storage", params={"namespace": namespace})
        return result

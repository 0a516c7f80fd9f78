"""The one boundary between configd and Consul's HTTP API, on top of py-consul.

It wraps py-consul's known gaps once:

- ``kv.get`` returns the index as a string: indexes here are always ``int``;
- ``txn.put`` sends no ACL token header and raises a bare ClientError when a transaction is rolled back:
  :meth:`ConsulGateway.txn` sends the token and turns a failed check into :class:`VersionConflict`;
- a failed CAS ``kv.put`` returns ``False``: :meth:`ConsulGateway.put` raises :class:`VersionConflict`;
- py-consul lets ``CONSUL_HTTP_TOKEN`` override an explicit token: here an explicit token wins;
- py-consul's standard transport is ``requests``, which costs ~0.5 ms of CPU per call (bench/notes.md): py-consul
  is given a transport on urllib3 instead (:class:`Urllib3Transport`, the same pool requests itself uses, minus
  requests' per-call session, hook and cookie work). Everything above the transport is py-consul's.

Every urllib3/``consul`` failure becomes a :mod:`configd_client` exception (``raise … from exc``).
"""

from __future__ import annotations

import base64
import builtins
import functools
import json
import os
import ssl
import time
import urllib.parse
import urllib.request
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, TypeVar

import consul
import consul.base
import consul.std
import urllib3
import urllib3.exceptions
from consul.callback import CB

from .errors import ConfigdError, ConsulPermissionDenied, ConsulUnavailable, VersionConflict
from .layout import CONSUL_TXN_MAX_BYTES, CONSUL_TXN_MAX_OPS

T = TypeVar("T")

DEFAULT_ADDRESS = "http://127.0.0.1:8500"


@dataclass(frozen=True)
class KVEntry:
    """One Consul KV pair with the indexes that CAS and blocking queries need."""

    key: str
    value: bytes
    modify_index: int
    create_index: int
    session: str | None = None
    flags: int = 0


def _entry(raw: dict[str, Any]) -> KVEntry:
    value = raw.get("Value")
    if isinstance(value, str):  # txn results carry base64 text; py-consul's kv.get has decoded it already
        value = base64.b64decode(value)
    return KVEntry(
        key=raw["Key"],
        value=value or b"",
        modify_index=int(raw.get("ModifyIndex", 0)),
        create_index=int(raw.get("CreateIndex", 0)),
        session=raw.get("Session"),
        flags=int(raw.get("Flags") or 0),
    )


# --- transaction operations (Consul /v1/txn "KV" verbs) ------------------------------------------------
TxnOp = dict[str, dict[str, Any]]


def op_set(key: str, value: bytes) -> TxnOp:
    return {"KV": {"Verb": "set", "Key": key, "Value": base64.b64encode(value).decode("ascii")}}


def op_create(key: str, value: bytes) -> TxnOp:
    """Set only if the key does not exist (``cas`` with index 0)."""
    return {"KV": {"Verb": "cas", "Key": key, "Value": base64.b64encode(value).decode("ascii"), "Index": 0}}


def op_cas(key: str, value: bytes, index: int) -> TxnOp:
    return {"KV": {"Verb": "cas", "Key": key, "Value": base64.b64encode(value).decode("ascii"), "Index": index}}


def op_cas_flagged(key: str, value: bytes, index: int, flags: int) -> TxnOp:
    """``cas`` that also sets the entry's ``Flags`` (an opaque uint64 Consul keeps beside the value)."""
    encoded = base64.b64encode(value).decode("ascii")
    return {"KV": {"Verb": "cas", "Key": key, "Value": encoded, "Index": index, "Flags": flags}}


def op_delete_cas(key: str, index: int) -> TxnOp:
    """Delete only if the key is still at ``index``."""
    return {"KV": {"Verb": "delete-cas", "Key": key, "Index": index}}


def op_check_index(key: str, index: int) -> TxnOp:
    return {"KV": {"Verb": "check-index", "Key": key, "Index": index}}


def op_check_not_exists(key: str) -> TxnOp:
    return {"KV": {"Verb": "check-not-exists", "Key": key}}


def op_get(key: str) -> TxnOp:
    return {"KV": {"Verb": "get", "Key": key}}


def op_delete(key: str) -> TxnOp:
    return {"KV": {"Verb": "delete", "Key": key}}


def parse_address(address: str | None) -> tuple[str, str, int]:
    """``scheme, host, port`` from ``http://host:port``, ``host:port`` or ``CONSUL_HTTP_ADDR``."""
    address = address or os.environ.get("CONSUL_HTTP_ADDR") or DEFAULT_ADDRESS
    if "//" not in address:
        address = "http://" + address
    parsed = urllib.parse.urlparse(address)
    if not parsed.hostname:
        raise ConfigdError(f"invalid Consul address {address!r}: expected http://host:port")
    scheme = parsed.scheme or "http"
    return scheme, parsed.hostname, parsed.port or (443 if scheme == "https" else 8500)


# Where a CA bundle for an https Consul address may be named: Consul's own variable first, then requests' ones.
_CA_VARIABLES = ("CONSUL_CACERT", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


class Urllib3Transport(consul.base.HTTPClient):  # type: ignore[misc]  # py-consul ships no type hints
    """py-consul's HTTP client interface on a urllib3 pool: thread-safe, keep-alive, at most ``pool_size``
    connections. Timeouts follow py-consul's standard client: ``timeout`` for an ordinary call, plus the wait
    and Consul's wait/16 of jitter for a blocking query. Proxy variables and the CA bundle variables are
    read once, when the transport is built."""

    def __init__(
        self,
        host: str,
        port: int,
        scheme: str,
        *,
        timeout: float,
        pool_size: int,
        keep_alive: bool = True,
    ) -> None:
        super().__init__(host, port, scheme, verify=True, cert=None)
        self.connections_timeout = timeout
        self._headers = {} if keep_alive else {"Connection": "close"}
        options: dict[str, Any] = {"maxsize": pool_size, "block": False, "retries": False}
        if scheme == "https":
            cafile = next((os.environ[v] for v in _CA_VARIABLES if os.environ.get(v)), None)
            context = ssl.create_default_context(cafile=cafile)
            if os.environ.get("CONSUL_HTTP_SSL_VERIFY", "").lower() == "false":  # Consul's own switch, as py-consul
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            options["ssl_context"] = context
        bypass = urllib.request.proxy_bypass_environment(host)  # type: ignore[attr-defined]  # not in typeshed
        self._proxy = None if bypass else urllib.request.getproxies().get(scheme)
        self._options = options
        self._opened: weakref.WeakSet[Any] = weakref.WeakSet()  # every connection the pool opened, idle or in use
        self._pool = self._new_pool()

    def _new_pool(self) -> urllib3.PoolManager:
        pool = (
            urllib3.ProxyManager(self._proxy, num_pools=1, **self._options)
            if self._proxy
            else urllib3.PoolManager(num_pools=1, **self._options)
        )
        # urllib3 calls pool_cls(host, port, **context): the classes, told where to note what they open.
        pool.pool_classes_by_scheme = {
            "http": functools.partial(_TrackedHTTPPool, opened=self._opened),  # type: ignore[dict-item]
            "https": functools.partial(_TrackedHTTPSPool, opened=self._opened),  # type: ignore[dict-item]
        }
        return pool

    def forget_connections(self) -> None:
        """After ``fork()``, in the child: start a new pool and let go of the inherited connections.

        Their sockets are the parent's connections (shared descriptors): reused here, two processes would read
        one stream. Each inherited descriptor is closed in this process only — no shutdown, no TLS close — so
        the parent's connections go on, and the child holds no stale copy of them (not even of a query that
        was in flight on a thread that did not survive the fork). No lock of the old pool is taken: a thread
        that held one at the fork is gone, and the lock with it.
        """
        inherited, self._opened = list(self._opened), weakref.WeakSet()
        self._pool = self._new_pool()
        for connection in inherited:
            sock = connection.sock
            if sock is not None:
                # detach(): a response being read holds the socket open past close(); os.close() drops this
                # process's descriptor only (never a shutdown), whatever still refers to the socket object.
                with suppress(OSError):
                    os.close(sock.detach())

    def _timeout(self, params: Any) -> urllib3.Timeout:
        found = dict(params or ())
        total = self.connections_timeout
        if "index" in found:
            wait = consul.std.parse_duration(found["wait"]) if "wait" in found else consul.std.DEFAULT_WAIT
            total += wait + wait / 16
        return urllib3.Timeout(connect=self.connections_timeout, read=total)

    def _send(
        self,
        method: str,
        callback: Callable[[consul.base.Response], Any],
        path: str,
        params: Any,
        data: str | bytes | None,
        headers: dict[str, str] | None,
        raw: bool = False,
    ) -> Any:
        answer = self._pool.request(
            method,
            self.uri(path, params),
            body=data.encode() if isinstance(data, str) else data or None,
            headers={**self._headers, **(headers or {})},
            timeout=self._timeout(params),
        )
        body = answer.data if raw else answer.data.decode("utf-8")
        return callback(consul.base.Response(answer.status, answer.headers, body))

    def get(self, callback: Any, path: str, params: Any = None, headers: Any = None, raw: bool = False) -> Any:
        return self._send("GET", callback, path, params, None, headers, raw)

    def put(self, callback: Any, path: str, params: Any = None, data: str | bytes = "", headers: Any = None) -> Any:
        return self._send("PUT", callback, path, params, data, headers)

    def delete(self, callback: Any, path: str, params: Any = None, data: str | bytes = "", headers: Any = None) -> Any:
        return self._send("DELETE", callback, path, params, data, headers)

    def post(self, callback: Any, path: str, params: Any = None, data: str = "", headers: Any = None) -> Any:
        return self._send("POST", callback, path, params, data, headers)

    def close(self) -> None:
        self._pool.clear()


class _TrackedHTTPPool(urllib3.HTTPConnectionPool):
    """A connection pool that notes every connection it opens in ``opened`` (see ``forget_connections``)."""

    def __init__(self, *args: Any, opened: weakref.WeakSet[Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._opened = opened

    def _new_conn(self) -> Any:
        connection = super()._new_conn()
        self._opened.add(connection)
        return connection


class _TrackedHTTPSPool(urllib3.HTTPSConnectionPool):
    """:class:`_TrackedHTTPPool` for https."""

    def __init__(self, *args: Any, opened: weakref.WeakSet[Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._opened = opened

    def _new_conn(self) -> Any:
        connection = super()._new_conn()
        self._opened.add(connection)
        return connection


class _Consul(consul.base.Consul):  # type: ignore[misc]
    """py-consul's client on :class:`Urllib3Transport`."""

    def __init__(self, transport: Urllib3Transport, **kwargs: Any) -> None:
        self._transport = transport
        super().__init__(host=transport.host, port=transport.port, scheme=transport.scheme, **kwargs)

    def http_connect(self, host: str, port: int, scheme: Any, verify: bool | str = True, cert: Any = None) -> Any:
        return self._transport


class ConsulGateway:
    """Thread-safe access to Consul's KV, transaction, session and status endpoints.

    Args:
        address: ``http://host:port``; defaults to ``CONSUL_HTTP_ADDR``, then ``http://127.0.0.1:8500``.
        token: ACL token sent as ``X-Consul-Token``; defaults to ``CONSUL_HTTP_TOKEN``.
        timeout: seconds to wait for a non-blocking answer.
        pool_size: HTTP connections kept per process (the server raises it for concurrent pushes).
        keep_alive: False sends ``Connection: close``, so no idle connection stays open after a request
            (the SDK's short reads and session renewals, beside its one long-lived blocking query).
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        pool_size: int = 10,
        keep_alive: bool = True,
    ) -> None:
        scheme, host, port = parse_address(address)
        self.address = f"{scheme}://{host}:{port}"
        transport = Urllib3Transport(host, port, scheme, timeout=timeout, pool_size=pool_size, keep_alive=keep_alive)
        self._client = _Consul(transport)
        # py-consul lets CONSUL_HTTP_TOKEN override an explicit token; the explicit argument must win.
        self._client.token = token if token is not None else os.environ.get("CONSUL_HTTP_TOKEN") or None
        self.on_call: Callable[[str, float], None] | None = None  # metrics hook: (operation, seconds)

    # --- plumbing ------------------------------------------------------------------------------------
    @contextmanager
    def _mapped(self, operation: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        except consul.ACLPermissionDenied as exc:
            raise ConsulPermissionDenied(f"Consul denied {operation}: {exc}") from exc
        except consul.ACLDisabled as exc:  # 401: py-consul's name for an unauthenticated request
            raise ConsulPermissionDenied(f"Consul refused {operation} (401): {exc}") from exc
        except urllib3.exceptions.HTTPError as exc:
            raise ConsulUnavailable(f"Consul at {self.address} is unreachable ({operation}): {exc}") from exc
        except consul.ConsulException as exc:
            raise ConsulUnavailable(f"Consul at {self.address} failed {operation}: {exc}") from exc
        finally:
            if self.on_call is not None:
                self.on_call(operation, time.perf_counter() - started)

    def _call(self, operation: str, fn: Callable[[], T]) -> T:
        with self._mapped(operation):
            return fn()

    # --- KV ------------------------------------------------------------------------------------------
    def get(self, key: str, *, consistent: bool = False) -> KVEntry | None:
        """One key, or None when it does not exist."""
        _, raw = self._call(
            "kv.get", lambda: self._client.kv.get(key, consistency="consistent" if consistent else None)
        )
        return _entry(raw) if raw else None

    def get_value(self, key: str) -> bytes | None:
        """One key's value exactly as stored, or None when it does not exist.

        Asked with ``?raw``: Consul answers with the bytes themselves, not a JSON list holding them in base64, so a
        256 KiB blob chunk reads in about a sixth of the time its share of a recursive list takes (no base64 on
        either side, no JSON to parse).
        """

        def value(response: consul.base.Response) -> bytes | None:
            CB._status(response)  # py-consul's status → exception mapping, as for every other call
            return None if response.code == 404 else bytes(response.body)

        headers = self._client.prepare_headers()
        found: bytes | None = self._call(
            "kv.get",
            lambda: self._client.http.get(value, f"/v1/kv/{key}", params=[("raw", "1")], headers=headers, raw=True),
        )
        return found

    def get_values(self, keys: builtins.list[str]) -> builtins.list[bytes]:
        """The values of ``keys`` that exist, in order (:meth:`get_value` each: blob chunks)."""
        return [value for key in keys if (value := self.get_value(key)) is not None]

    def list(
        self, prefix: str, *, index: int | None = None, wait: str | None = None, consistent: bool = False
    ) -> tuple[int, builtins.list[KVEntry]]:
        """Every key under ``prefix`` with the X-Consul-Index; blocks when ``index`` is given.

        A blocking query with ``index`` 0 would return at once, so callers must never pass 0
        (see :func:`configd_client.next_wait_index`).
        """
        if index is not None and index < 1:
            raise ValueError("a blocking query needs an index >= 1")
        consistency = "consistent" if consistent else None
        raw_index, raw = self._call(
            "kv.list",
            lambda: self._client.kv.get(prefix, recurse=True, index=index, wait=wait, consistency=consistency),
        )
        return int(raw_index), [_entry(item) for item in raw or []]

    def keys(self, prefix: str, *, separator: str | None = None) -> builtins.list[str]:
        """Key names under ``prefix`` (up to ``separator``), sorted as Consul sorts them."""
        _, raw = self._call("kv.keys", lambda: self._client.kv.get(prefix, keys=True, separator=separator))
        return list(raw or [])

    def put(self, key: str, value: bytes, *, cas: int | None = None, acquire: str | None = None) -> None:
        """Write one key. A CAS or lock acquisition that Consul refuses raises VersionConflict."""
        ok = self._call("kv.put", lambda: self._client.kv.put(key, value, cas=cas, acquire=acquire))
        if ok is not True:
            raise VersionConflict(f"Consul refused the conditional write of {key!r}")

    def delete(self, key: str, *, recurse: bool = False) -> None:
        self._call("kv.delete", lambda: self._client.kv.delete(key, recurse=recurse))

    def txn(self, ops: builtins.list[TxnOp]) -> builtins.list[KVEntry]:
        """Run ``ops`` as one atomic Consul transaction; returns the KV results in op order.

        Consul rolls the whole transaction back when any check fails and answers 409 with the failing op;
        that is a :class:`VersionConflict` here.
        """
        body = json.dumps(ops)
        if len(ops) > CONSUL_TXN_MAX_OPS:
            raise ConfigdError(f"transaction has {len(ops)} operations; Consul allows {CONSUL_TXN_MAX_OPS}")
        if len(body) > CONSUL_TXN_MAX_BYTES:
            raise ConfigdError(f"transaction is {len(body)} bytes; Consul allows {CONSUL_TXN_MAX_BYTES}")

        def answer(response: consul.base.Response) -> builtins.list[KVEntry]:
            if response.code == 200:
                results = json.loads(response.body).get("Results") or []
                return [_entry(r["KV"]) for r in results if "KV" in r]
            if response.code == 409:
                errors = json.loads(response.body).get("Errors") or []
                what = "; ".join(str(e.get("What", "")) for e in errors)
                if "ermission denied" in what:
                    raise ConsulPermissionDenied(f"Consul denied the transaction: {what}")
                raise VersionConflict(f"transaction rolled back: {what}")
            if response.code in (401, 403):
                raise ConsulPermissionDenied(f"Consul denied the transaction: {response.body}")
            if response.code == 413:
                raise ConfigdError(f"Consul refused the transaction as too large: {response.body}")
            raise ConsulUnavailable(f"Consul failed the transaction ({response.code}): {response.body}")

        results: builtins.list[KVEntry] = self._call(
            "txn",
            lambda: self._client.http.put(answer, "/v1/txn", data=body, headers=self._client.prepare_headers()),
        )
        return results

    # --- sessions and status ---------------------------------------------------------------------------
    def session_create(
        self, name: str, ttl_seconds: int, *, behavior: str = "delete", lock_delay_seconds: int = 0
    ) -> str:
        """A session with no health checks (TTL only) whose keys are deleted (or released) when it ends.

        ``lock_delay_seconds``: after the session is invalidated, Consul refuses to let anyone acquire its locks for
        this long (leader election uses it so a replica that lost its session stops before another starts).
        """
        return str(
            self._call(
                "session.create",
                lambda: self._client.session.create(
                    name=name, ttl=ttl_seconds, behavior=behavior, checks=[], lock_delay=lock_delay_seconds
                ),
            )
        )

    def session_renew(self, session_id: str) -> bool:
        """Renew a session; False when Consul no longer knows it (expired or destroyed)."""

        def renew() -> bool:
            try:
                return self._client.session.renew(session_id) is not None
            except consul.NotFound:
                return False

        return self._call("session.renew", renew)

    def session_destroy(self, session_id: str) -> None:
        self._call("session.destroy", lambda: self._client.session.destroy(session_id))

    def leader(self) -> str:
        """The Raft leader's address; empty when the cluster has none."""
        return str(self._call("status.leader", lambda: self._client.status.leader()) or "")

    def forget_connections(self) -> None:
        """In a forked child: new connections from now on; the parent's are left to the parent."""
        self._client.http.forget_connections()

    def close(self) -> None:
        self._client.http.close()

    def __enter__(self) -> ConsulGateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

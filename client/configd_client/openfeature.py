"""configd flags through the OpenFeature API: :class:`ConfigdProvider` (``pip install 'configd[openfeature]'``).

A flag is a value in a config: its key is ``NS/NAME/PATH`` with PATH the JSON Pointer of the value without its
leading slash (``payments/service/features/new_checkout`` is ``/features/new_checkout`` of ``payments/service``).
The provider follows each config a flag names through the SDK's public API — :meth:`ConfigClient.settings` with a
permissive model that keeps the whole document, :attr:`LiveSettings.version`, :attr:`LiveSettings.stale`,
:meth:`LiveSettings.on_change` — so a flag evaluates whatever version the SDK applies in this process (when
rollouts put a process in a cohort, the SDK's LiveSettings carries the cohort's version, and so do the flags).

- a resolution has ``reason`` STATIC (STALE while the SDK runs from its last-known-good cache or Consul is
  unreachable) and ``variant`` ``v<version>`` (the config version), with ``config``, ``version`` and ``sha256`` as
  flag metadata;
- FLAG_NOT_FOUND when the config or the path does not exist, TYPE_MISMATCH when the value is of another type
  (an integer is also a float), PARSE_ERROR for a key that is not ``NS/NAME/PATH``;
- PROVIDER_CONFIGURATION_CHANGED on every applied version of a followed config, with the changed flag keys (each
  changed value and every object above it); PROVIDER_STALE when a followed config turns stale, PROVIDER_READY when
  it is current again.

A config is followed from the first evaluation of one of its flags (that evaluation waits for it, at most
``timeout`` seconds), or from :meth:`initialize` for the refs passed as ``configs``.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

try:
    from openfeature.evaluation_context import EvaluationContext
    from openfeature.event import ProviderEventDetails
    from openfeature.exception import ErrorCode
    from openfeature.flag_evaluation import FlagResolutionDetails, FlagValueType, Reason
    from openfeature.provider import AbstractProvider, Metadata
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "configd_client.openfeature needs the OpenFeature SDK: pip install 'configd[openfeature]'"
    ) from exc
from pydantic_settings import BaseSettings, SettingsConfigDict

from configd_core.errors import ConfigdError, InvalidName, NotFound
from configd_core.flags import (
    FlagKey,
    FlagNotFound,
    FlagType,
    FlagTypeMismatch,
    changed_flag_keys,
    parse_flag_key,
    resolve_pointer,
    typed_value,
)

from ._client import ConfigClient
from ._events import ChangeEvent
from ._live import LiveSettings

__all__ = ["ConfigdProvider"]

T = TypeVar("T")

DEFAULT_TIMEOUT = 2.0
# How often the provider looks at whether a followed config turned stale (LiveSettings has no event for it).
STALE_POLL_SECONDS = 0.25


class _Document(BaseSettings):
    """Any config document, unchanged: every key kept as an extra (the model declares no field)."""

    model_config = SettingsConfigDict(extra="allow")


class ConfigdProvider(AbstractProvider):
    """An OpenFeature provider whose flags are values in configd configs.

    Args:
        client: the SDK client to follow configs with; default: ``ConfigClient()`` from the environment
            (``CONSUL_HTTP_ADDR``, ``CONSUL_HTTP_TOKEN``, ``CONFIGD_PREFIX``, …), closed by :meth:`shutdown`.
        configs: refs (``"namespace/name"``) to follow from :meth:`initialize`, so their flags are ready (and
            their changes announced) before the first evaluation.
        timeout: how long the first evaluation of a flag in a config not yet followed waits for it.
    """

    def __init__(
        self, client: ConfigClient | None = None, *, configs: Iterable[str] = (), timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        super().__init__()
        self._owns_client = client is None
        self._client = client
        self._preload = tuple(configs)
        self._timeout = timeout
        self._lock = threading.Lock()
        self._lives: dict[str, LiveSettings[_Document]] = {}
        self._deleted: set[str] = set()
        # The JSON form of each followed config's current settings object, made once per applied version.
        self._documents: dict[str, tuple[_Document, dict[str, Any]]] = {}
        self._follow_lock = threading.Lock()  # one first load per config, never two LiveSettings for one ref
        self._stale = False
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None

    @property
    def client(self) -> ConfigClient:
        with self._lock:
            if self._client is None:
                self._client = ConfigClient()
            return self._client

    # --- lifecycle ---------------------------------------------------------------------------------
    def get_metadata(self) -> Metadata:
        return Metadata(name="configd")

    def initialize(self, evaluation_context: EvaluationContext) -> None:
        for ref in self._preload:
            self._follow(parse_flag_key(ref))
        self._monitor = threading.Thread(target=self._watch_staleness, name="configd-openfeature-stale", daemon=True)
        self._monitor.start()

    def shutdown(self) -> None:
        self._stop.set()
        if self._monitor is not None:
            self._monitor.join(timeout=2)
        with self._lock:
            lives, self._lives = list(self._lives.items()), {}
            client = self._client if self._owns_client else None
        for _, live in lives:
            live.close()  # the provider's own LiveSettings (and their callbacks): a client it was given goes on
        self._documents.clear()
        if client is not None:
            client.close()

    # --- following configs ---------------------------------------------------------------------------
    def _follow(self, flag: FlagKey) -> LiveSettings[_Document]:
        with self._lock:
            live = self._lives.get(flag.ref)
        if live is not None:
            return live
        with self._follow_lock:
            with self._lock:
                live = self._lives.get(flag.ref)
            if live is None:
                live = self.client.settings(_Document, flag.ref, timeout=self._timeout)
                live.on_change(self._changed)
                live.on_error(functools.partial(self._failed, flag.ref))
                with self._lock:
                    self._lives[flag.ref] = live
            return live

    def _failed(self, ref: str, exc: Exception) -> None:
        # The SDK keeps the last version of a deleted config (and reports NotFound here); its flags are gone.
        if isinstance(exc, NotFound):
            with self._lock:
                self._deleted.add(ref)
            self.emit_provider_configuration_changed(
                ProviderEventDetails(flags_changed=[ref], message=f"{ref} was deleted", metadata={"config": ref})
            )

    def _changed(self, event: ChangeEvent[_Document]) -> None:
        with self._lock:
            self._deleted.discard(event.ref)
        self.emit_provider_configuration_changed(
            ProviderEventDetails(
                flags_changed=changed_flag_keys(event.ref, event.changed_paths),
                message=f"{event.ref} v{event.old_version} -> v{event.version}",
                metadata={"config": event.ref, "version": event.version},
            )
        )

    def _watch_staleness(self) -> None:
        while not self._stop.wait(STALE_POLL_SECONDS):
            with self._lock:
                stale = [ref for ref, live in self._lives.items() if live.stale]
            if bool(stale) != self._stale:
                self._stale = bool(stale)
                if stale:
                    self.emit_provider_stale(
                        ProviderEventDetails(message=f"running from cached or unconfirmed versions: {stale}")
                    )
                else:
                    self.emit_provider_ready(ProviderEventDetails(message="every followed config is current"))

    # --- resolution ----------------------------------------------------------------------------------
    def _resolve(self, flag_key: str, default: T, flag_type: FlagType) -> FlagResolutionDetails[T]:
        def failed(code: ErrorCode, message: str) -> FlagResolutionDetails[T]:
            return FlagResolutionDetails(value=default, error_code=code, error_message=message, reason=Reason.ERROR)

        try:
            flag = parse_flag_key(flag_key)
        except InvalidName as exc:
            return failed(ErrorCode.PARSE_ERROR, str(exc))
        try:
            live = self._follow(flag)
        except NotFound as exc:
            return failed(ErrorCode.FLAG_NOT_FOUND, f"{flag_key}: {exc}")
        except ConfigdError as exc:
            return failed(ErrorCode.GENERAL, f"{flag_key}: {exc}")
        if flag.ref in self._deleted:
            return failed(ErrorCode.FLAG_NOT_FOUND, f"{flag_key}: {flag.ref} was deleted")
        document, version, sha256, stale = self._snapshot(flag.ref, live)
        try:
            value = typed_value(resolve_pointer(document, flag.pointer), flag_type)
        except FlagNotFound:
            return failed(ErrorCode.FLAG_NOT_FOUND, f"{flag_key}: {flag.ref} v{version} has no value at {flag.pointer}")
        except FlagTypeMismatch as exc:
            return failed(ErrorCode.TYPE_MISMATCH, f"{flag_key}: {exc}")
        return FlagResolutionDetails(
            value=value,
            reason=Reason.STALE if stale else Reason.STATIC,
            variant=f"v{version}",
            flag_metadata={"config": flag.ref, "version": version, "sha256": sha256},
        )

    def _snapshot(self, ref: str, live: LiveSettings[_Document]) -> tuple[dict[str, Any], int, str, bool]:
        """The document, version, sha256 and staleness of ONE applied version (read again if a new version was
        applied meanwhile); the document's JSON form is made once per version."""
        while True:
            version, sha256 = live.version, live.sha256
            settings, stale = live.current, live.stale
            if (live.version, live.sha256) == (version, sha256):
                break
        cached = self._documents.get(ref)
        if cached is None or cached[0] is not settings:
            cached = (settings, settings.model_dump(mode="json"))
            self._documents[ref] = cached
        return cached[1], version, sha256, stale

    def resolve_boolean_details(
        self, flag_key: str, default_value: bool, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[bool]:
        return self._resolve(flag_key, default_value, "boolean")

    def resolve_string_details(
        self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[str]:
        return self._resolve(flag_key, default_value, "string")

    def resolve_integer_details(
        self, flag_key: str, default_value: int, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[int]:
        return self._resolve(flag_key, default_value, "integer")

    def resolve_float_details(
        self, flag_key: str, default_value: float, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[float]:
        return self._resolve(flag_key, default_value, "float")

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: Sequence[FlagValueType] | Mapping[str, FlagValueType],
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[Sequence[FlagValueType] | Mapping[str, FlagValueType]]:
        return self._resolve(flag_key, default_value, "object")

    def __repr__(self) -> str:
        return f"<ConfigdProvider following {sorted(self._lives)}>"

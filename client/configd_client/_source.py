"""The pydantic-settings source that feeds a configd document into a user's BaseSettings model.

Precedence is what pydantic-settings users expect: init arguments > environment variables > dotenv >
secrets > **configd** > field defaults. The user's model needs no change: :class:`SettingsFactory` derives,
once per model, a private subclass whose ``settings_customise_sources`` calls the model's own hook (so a
custom order is kept) and appends :class:`ConfigdSettingsSource` last, i.e. just above the defaults. The
document of the version being built reaches that hook through a context variable, so building is
thread-safe and no class is created per version. The built object is then moved onto the user's own class
(same ``__dict__``, fields-set, extra and private state), so ``type(live.current) is Model``.

Environment and dotenv are read again for every build (a changed variable shows in the next version), but
the walk of every field against them — two thirds of a build — is redone only when what they read changed
(:class:`_RememberedSource`).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from copy import copy, deepcopy
from typing import Any, Generic, TypeVar, cast
from weakref import WeakKeyDictionary

from pydantic import ValidationError
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
)

from configd_core.errors import ErrorDetail, ValidationFailed

S = TypeVar("S", bound=BaseSettings)

_DOCUMENT: ContextVar[tuple[Mapping[str, Any], str] | None] = ContextVar("configd_document", default=None)


class ConfigdSettingsSource(InitSettingsSource):
    """Values of one configd config version: from Consul, the last-known-good cache, or a local file.

    Like pydantic-settings' JSON file source, the whole document is passed on; the model's ``extra``
    setting decides what happens to keys it does not declare.
    """

    def __init__(self, settings_cls: type[BaseSettings], document: Mapping[str, Any], origin: str = "configd") -> None:
        self.document = dict(document)
        self.origin = origin
        # What InitSettingsSource.__init__ does, with its per-field alias matching remembered per key set
        # (it looks at keys only; tests/test_client_logic.py checks the two stay equal).
        PydanticBaseSettingsSource.__init__(self, settings_cls)
        self.init_kwargs = {field_key: self.document[key] for field_key, key in _key_plan(settings_cls, self.document)}
        self.nested_model_default_partial_update = self.config.get("nested_model_default_partial_update", False)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(origin={self.origin!r}, keys={sorted(self.document)!r})"


# Per settings class and document key set: (key InitSettingsSource files the value under, document key).
_KEY_PLANS: WeakKeyDictionary[type[BaseSettings], dict[tuple[str, ...], tuple[tuple[str, str], ...]]] = (
    WeakKeyDictionary()
)
_KEY_PLANS_PER_CLASS = 64


def _key_plan(settings_cls: type[BaseSettings], document: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """How InitSettingsSource maps ``document``'s keys onto the model (aliases, case, extras), computed once."""
    keys = tuple(document)
    plans = _KEY_PLANS.get(settings_cls)
    if plans is None:
        plans = _KEY_PLANS.setdefault(settings_cls, {})
    plan = plans.get(keys)
    if plan is None:
        # Values are opaque to the matching: map every key to itself and read the plan off the result.
        plan = tuple(InitSettingsSource(settings_cls, {key: key for key in keys}).init_kwargs.items())
        if len(plans) >= _KEY_PLANS_PER_CLASS:
            plans.clear()
        plans[keys] = plan
    return plan


# The last output of a remembered source: (the variables it read, what it returned).
_Memo = dict[str, tuple[dict[str, str | None], dict[str, Any]]]


class _RememberedSource:
    """pydantic-settings' own environment or dotenv source, whose output is reused while its input is unchanged.

    The source has already read ``os.environ`` (or the dotenv files) when it is created, once per build.
    Turning those variables into field values walks every field of the model (aliases, prefixes, nested
    delimiters, complex types): it depends only on the variables and on the model's configuration, both
    fixed per factory except the variables, which are compared. A deep copy of the remembered output is
    returned, so no two settings objects share a value. Only the exact built-in classes are remembered (a
    subclass may read more than ``env_vars``); ``__name__`` keeps the name pydantic-settings files it under.
    """

    def __init__(self, source: EnvSettingsSource, memo: _Memo, slot: str) -> None:
        self._source = source
        self._memo = memo
        self._slot = slot
        self.__name__ = type(source).__name__

    def __call__(self) -> dict[str, Any]:
        read = dict(self._source.env_vars)
        last = self._memo.get(self._slot)
        if last is not None and last[0] == read:
            return deepcopy(last[1])
        output = self._source()
        self._memo[self._slot] = (read, deepcopy(output))  # one reference rebound: safe across threads
        return output


def _remembered(
    sources: tuple[Any, ...], env: PydanticBaseSettingsSource, dotenv: PydanticBaseSettingsSource, memo: _Memo
) -> tuple[Any, ...]:
    """``sources`` with the hook's own env and dotenv sources (if it kept them, unsubclassed) remembered."""
    kept: list[Any] = []
    for source in sources:
        if source is env and type(source) is EnvSettingsSource:
            kept.append(_RememberedSource(source, memo, "env"))
        elif source is dotenv and type(source) is DotEnvSettingsSource:
            kept.append(_RememberedSource(source, memo, "dotenv"))
        else:
            kept.append(source)
    return tuple(kept)


def _builder_class(model: type[S]) -> type[S]:
    own_hook = model.settings_customise_sources.__func__  # type: ignore[attr-defined]
    memo: _Memo = {}

    def settings_customise_sources(
        cls: type[BaseSettings],
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: tuple[PydanticBaseSettingsSource, ...] = own_hook(
            cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
        )
        current = _DOCUMENT.get()
        if current is None:
            return sources
        document, origin = current
        sources = _remembered(sources, env_settings, dotenv_settings, memo)
        return (*sources, ConfigdSettingsSource(settings_cls, document, origin))

    namespace = {
        "__module__": model.__module__,
        "__qualname__": model.__qualname__,
        "settings_customise_sources": classmethod(settings_customise_sources),
    }
    return cast(type[S], type(model.__name__, (model,), namespace))


def validation_failed(exc: ValidationError, what: str) -> ValidationFailed:
    """A pydantic ValidationError as configd's ValidationFailed, each error with its JSON Pointer."""
    errors = [ErrorDetail("/" + "/".join(str(part) for part in error["loc"]), error["msg"]) for error in exc.errors()]
    summary = "; ".join(f"{e.path}: {e.message}" for e in errors[:5])
    return ValidationFailed(f"{what} fails the settings model: {summary}", errors)


class SettingsFactory(Generic[S]):
    """Builds validated instances of one user model from configd documents (no I/O besides the env)."""

    def __init__(self, model: type[S], overrides: Mapping[str, Any] | None = None) -> None:
        if not (isinstance(model, type) and issubclass(model, BaseSettings)):
            raise TypeError(f"{model!r} is not a pydantic_settings.BaseSettings subclass")
        self.model = model
        self.overrides = dict(overrides or {})
        self._builder = _builder_class(model)

    def build(self, document: Mapping[str, Any], origin: str, what: str) -> S:
        """A new, validated settings object; raises ValidationFailed (never a half-built object)."""
        token = _DOCUMENT.set((document, origin))
        try:
            built = self._builder(**self.overrides)
        except ValidationError as exc:
            raise validation_failed(exc, what) from exc
        finally:
            _DOCUMENT.reset(token)
        return self._rebase(built)

    def _rebase(self, built: S) -> S:
        # The same state pydantic's own __copy__ carries over, placed on the user's class.
        obj = self.model.__new__(self.model)
        object.__setattr__(obj, "__dict__", dict(built.__dict__))
        object.__setattr__(obj, "__pydantic_fields_set__", set(built.__pydantic_fields_set__))
        object.__setattr__(obj, "__pydantic_extra__", copy(built.__pydantic_extra__))
        object.__setattr__(obj, "__pydantic_private__", copy(built.__pydantic_private__))
        return obj

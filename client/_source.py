"""The pydantic-settings source that feeds a configd document into a user's BaseSettings model.

Precedence is what pydantic-settings users expect: init arguments > environment variables > dotenv >
secrets > **configd** > field defaults. The user's model needs no change: :class:`SettingsFactory` derives,
once per model, a private subclass whose ``settings_customise_sources`` calls the model's own hook (so a
custom order is kept) and appends :class:`ConfigdSettingsSource` last, i.e. just above the defaults. The
document of the version being built reaches that hook through a context variable, so building is
thread-safe and no class is created per version. The built object is then moved onto the user's own class
(same ``__dict__``, fields-set, extra and private state), so ``type(live.current) is Model``.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from copy import copy
from typing import Any, Generic, TypeVar, cast

from pydantic import ValidationError
from pydantic_settings import BaseSettings, InitSettingsSource, PydanticBaseSettingsSource

from ._exceptions import ErrorDetail, ValidationFailed

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
        super().__init__(settings_cls, dict(document))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(origin={self.origin!r}, keys={sorted(self.document)!r})"


def _builder_class(model: type[S]) -> type[S]:
    own_hook = model.settings_customise_sources.__func__  # type: ignore[attr-defined]

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

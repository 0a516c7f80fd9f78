"""configd_client: typed, hot-reloaded settings from configd (Consul) for Python applications.

The exception tree is imported with the package; the classes load with the first use of their name (module
``__getattr__``, PEP 562), so ``import configd_client`` costs little more than pydantic-settings, and a program
that never touches the asyncio flavour never imports asyncio (docs/benchmarks.md, start-up).
"""

import importlib
import types
from typing import TYPE_CHECKING, Any

from configd_core.errors import (
    ConfigdError,
    ConfigTooLarge,
    ConsulPermissionDenied,
    ConsulUnavailable,
    ErrorDetail,
    InvalidConfig,
    InvalidName,
    NotFound,
    SchemaIncompatible,
    SchemaNotFound,
    ValidationFailed,
    VersionConflict,
)

if TYPE_CHECKING:  # the same names, imported for type checkers and IDEs
    from ._async import AsyncConfigClient, AsyncLiveSettings
    from ._client import ConfigClient
    from ._events import ChangeEvent
    from ._live import LiveSettings
    from ._source import ConfigdSettingsSource

__all__ = [
    "AsyncConfigClient",
    "AsyncLiveSettings",
    "ChangeEvent",
    "ConfigClient",
    "ConfigTooLarge",
    "ConfigdError",
    "ConfigdSettingsSource",
    "ConsulPermissionDenied",
    "ConsulUnavailable",
    "ErrorDetail",
    "InvalidConfig",
    "InvalidName",
    "LiveSettings",
    "NotFound",
    "SchemaIncompatible",
    "SchemaNotFound",
    "ValidationFailed",
    "VersionConflict",
]

# Name → the private module defining it, imported on first access.
_LAZY = {
    "AsyncConfigClient": "._async",
    "AsyncLiveSettings": "._async",
    "ChangeEvent": "._events",
    "ConfigClient": "._client",
    "ConfigdSettingsSource": "._source",
    "LiveSettings": "._live",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups are plain module attributes
    return value


def __dir__() -> list[str]:
    # The public names, loaded or not, and submodules; not the helpers imported to write this file.
    found = {name for name, value in globals().items() if name.startswith("_") or isinstance(value, types.ModuleType)}
    return sorted(found | set(__all__))

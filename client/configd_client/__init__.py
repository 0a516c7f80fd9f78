"""configd_client: typed, hot-reloaded settings from configd (Consul) for Python applications."""

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

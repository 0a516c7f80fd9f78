"""configd_client: typed, hot-reloaded settings from configd (Consul) for Python applications."""

from ._exceptions import (
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

__all__ = [
    "ConfigTooLarge",
    "ConfigdError",
    "ConsulPermissionDenied",
    "ConsulUnavailable",
    "ErrorDetail",
    "InvalidConfig",
    "InvalidName",
    "NotFound",
    "SchemaIncompatible",
    "SchemaNotFound",
    "ValidationFailed",
    "VersionConflict",
]

"""The server's settings: environment variables through pydantic-settings, command-line flags on top."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from configd_core.consul import DEFAULT_ADDRESS
from configd_core.layout import DEFAULT_PREFIX

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


class ServerSettings(BaseSettings):
    """Where configd finds Consul and its tokens, and where it listens.

    Environment: ``CONSUL_HTTP_ADDR``, ``CONSUL_HTTP_TOKEN``, ``CONFIGD_TOKENS_FILE``, ``CONFIGD_PREFIX``,
    ``CONFIGD_KEYS_FILE``, ``CONFIGD_HOST``, ``CONFIGD_PORT``, ``CONFIGD_WORKERS``, ``CONFIGD_SHUTDOWN_GRACE``, and the
    maintenance settings (``CONFIGD_MAINTENANCE``, ``CONFIGD_RETENTION_INTERVAL``, ``CONFIGD_USAGE_INTERVAL``,
    ``CONFIGD_ELECTION_TTL``, ``CONFIGD_LOCK_DELAY``; docs/operations.md). Keyword arguments (the command-line
    flags) win over the environment.
    """

    model_config = SettingsConfigDict(env_prefix="CONFIGD_", extra="ignore", populate_by_name=True, frozen=True)

    consul_addr: str = Field(
        default=DEFAULT_ADDRESS,
        validation_alias=AliasChoices("consul_addr", "CONSUL_HTTP_ADDR"),
        description="Consul's HTTP address",
    )
    consul_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("consul_token", "CONSUL_HTTP_TOKEN"),
        description="configd's own Consul ACL token",
    )
    tokens_file: Path | None = Field(default=None, description="JSON file of the API's bearer tokens")
    keys_file: Path | None = Field(
        default=None, description="the namespace keys that encrypt secret fields (configd keys create)"
    )
    prefix: str = Field(default=DEFAULT_PREFIX, min_length=1, description="Consul key prefix of every record")
    host: str = DEFAULT_HOST
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    workers: int = Field(
        default=1, ge=1, le=64, description="server processes sharing the port (the store is stateless, CAS-guarded)"
    )
    maintenance: bool = Field(
        default=True,
        description="campaign for the maintenance lock; the elected replica drives rollouts, retention and usage",
    )
    retention_interval: float = Field(default=60.0, gt=0, description="seconds between retention passes")
    rollout_interval: float = Field(
        default=1.0, gt=0, le=60, description="seconds between the elected replica's rounds over active rollouts"
    )
    usage_interval: float = Field(default=300.0, gt=0, description="seconds between KV usage counts")
    election_ttl: int = Field(default=15, ge=10, le=86400, description="the maintenance session's TTL")
    lock_delay: int = Field(default=5, ge=0, le=60, description="Consul lock-delay of the maintenance lock")
    shutdown_grace: int = Field(
        default=10, ge=1, le=600, description="seconds after SIGTERM before in-flight requests are abandoned"
    )

    def consul_token_value(self) -> str | None:
        return self.consul_token.get_secret_value() if self.consul_token is not None else None

    def environment(self) -> dict[str, str]:
        """These settings as the environment variables they are read from (how worker processes receive them)."""
        found = {
            "CONSUL_HTTP_ADDR": self.consul_addr,
            "CONFIGD_PREFIX": self.prefix,
            "CONFIGD_HOST": self.host,
            "CONFIGD_PORT": str(self.port),
            "CONFIGD_WORKERS": str(self.workers),
            "CONFIGD_SHUTDOWN_GRACE": str(self.shutdown_grace),
            "CONFIGD_MAINTENANCE": str(self.maintenance).lower(),
            "CONFIGD_RETENTION_INTERVAL": str(self.retention_interval),
            "CONFIGD_ROLLOUT_INTERVAL": str(self.rollout_interval),
            "CONFIGD_USAGE_INTERVAL": str(self.usage_interval),
            "CONFIGD_ELECTION_TTL": str(self.election_ttl),
            "CONFIGD_LOCK_DELAY": str(self.lock_delay),
        }
        if self.tokens_file is not None:
            found["CONFIGD_TOKENS_FILE"] = str(self.tokens_file)
        if self.keys_file is not None:
            found["CONFIGD_KEYS_FILE"] = str(self.keys_file)
        if self.consul_token is not None:
            found["CONSUL_HTTP_TOKEN"] = self.consul_token.get_secret_value()
        return found

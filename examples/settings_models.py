"""Example application settings: the pydantic-settings class the payments service loads.

``configctl schema push payments/service --from-model examples.settings_models:PaymentsSettings`` registers the
JSON Schema generated from this class, so the server enforces exactly what the application accepts.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    daily: float = Field(10_000, ge=0, description="most a card may spend per day")
    per_transaction: float = Field(2_500, ge=0)


class Features(BaseModel):
    model_config = ConfigDict(extra="forbid")

    three_d_secure: bool = True
    instant_refunds: bool = False
    new_checkout: bool = False


class PaymentsSettings(BaseSettings):
    """Settings of the payments service."""

    model_config = SettingsConfigDict(extra="forbid")

    timeout_ms: int = Field(800, ge=50, le=60_000, description="acquirer call timeout")
    retries: int = Field(3, ge=0, le=10)
    currency: Literal["EUR", "USD", "GBP", "CHF"] = "EUR"
    limits: Limits = Limits()
    features: Features = Features()

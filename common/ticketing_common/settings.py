"""Settings shared by every service, read from the environment with pydantic-settings."""

from __future__ import annotations

import re
import sys
from typing import Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ticketing_common.bus import DUPLICATE_WINDOW_SECONDS

PLACEHOLDER_SECRETS = frozenset(
    {
        "",
        "secret",
        "changeme",
        "change-me",
        "changethis",
        "asdf",
        "dev",
        "test",
        "password",
        "jwt-key",
        "local-dev-only-key",
    }
)
LOCAL_ENVIRONMENTS = frozenset({"local", "test"})


class ServiceSettings(BaseSettings):
    """What every service needs: its database, the broker, and the shared JWT key."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", frozen=True)

    environment: Literal["local", "test", "production"] = "production"
    database_url: str = Field(description="postgresql+asyncpg:// URL of the service's own database")
    nats_url: str = Field(description="nats:// URL of the JetStream server")
    nats_client_id: str = Field(min_length=1, description="Connection name; the pod name in Kubernetes")
    nats_nkey_seed: SecretStr | None = Field(
        default=None,
        description="The service's own NATS identity (an nkey user seed, SU...); required outside local and test",
    )
    nats_tls_ca_file: str | None = Field(
        default=None, description="CA bundle that verifies the server of a tls:// NATS_URL (prod); else the system's"
    )
    nats_stream_replicas: int = Field(default=1, ge=1, le=5)
    jwt_key: str = Field(description="HS256 secret shared by every service")
    jwt_ttl_seconds: int = Field(default=24 * 3600, gt=0)
    cookie_secure: bool = True
    log_level: str = "INFO"
    metrics_port: int | None = Field(
        default=None, ge=1, le=65535, description="Serve /metrics on this port only (not on the API port)"
    )
    metrics_host: str = Field(default="0.0.0.0", description="The address the metrics port listens on")
    outbox_poll_seconds: float = Field(default=1.0, gt=0)
    dead_letters_refresh_seconds: float = Field(
        default=15.0, gt=0, description="How often the ticketing_dead_letters gauge is counted from the database"
    )
    outbox_retention_seconds: int = Field(
        default=24 * 3600,
        ge=60,
        description="How long sent outbox rows are kept; processed inbox records are kept 7 times as long",
    )
    nats_stream_max_age_seconds: int = Field(
        default=0,
        ge=0,
        description="How long the streams keep an event; 0 (the default) keeps the full history, which replay needs",
    )
    not_yet_known_seconds: float = Field(
        default=30.0,
        ge=0,
        description=(
            "For this long after a UUIDv7 id was minted, a replica that does not hold its entity answers 503 "
            '"not yet known" rather than 404: the event may still be in its producer\'s outbox'
        ),
    )
    parked_max_age_seconds: float = Field(
        default=300.0,
        gt=0,
        description="How long an event that arrived before its predecessor waits, parked, before it is dead-lettered",
    )
    nats_ack_wait_seconds: float | None = Field(
        default=None, gt=0, description="Overrides every listener's ack_wait (30 s); shorter in dev and tests"
    )

    @field_validator("nats_stream_max_age_seconds")
    @classmethod
    def _max_age_beyond_the_duplicate_window(cls, value: int) -> int:
        if 0 < value < DUPLICATE_WINDOW_SECONDS:  # JetStream refuses a max age shorter than the duplicate window
            raise ValueError(f"must be 0 (keep every event) or at least {DUPLICATE_WINDOW_SECONDS:.0f} seconds")
        return value

    @field_validator("database_url")
    @classmethod
    def _asyncpg_url(cls, value: str) -> str:
        if value.startswith(("postgres://", "postgresql://")):
            value = "postgresql+asyncpg://" + value.split("://", 1)[1]
        if not value.startswith("postgresql+asyncpg://"):
            raise ValueError("must be a postgresql:// URL")
        return value

    @field_validator("nats_url")
    @classmethod
    def _nats_scheme(cls, value: str) -> str:
        # The seed's manifests wrote http://nats-srv:4222; the client wants nats://.
        if value.startswith("http://"):
            value = "nats://" + value.removeprefix("http://")
        if not value.startswith(("nats://", "tls://")):
            raise ValueError("must be a nats:// URL")
        return value

    @field_validator("nats_nkey_seed")
    @classmethod
    def _user_seed(cls, value: SecretStr | None) -> SecretStr | None:
        # The shape only (a user seed is 58 base32 characters starting SU); nats-py checks the rest on connect.
        if value is not None and not re.fullmatch(r"SU[A-Z2-7]{56}", value.get_secret_value()):
            raise ValueError("must be an nkey user seed (58 characters starting with SU)")
        return value

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> ServiceSettings:
        if self.environment not in LOCAL_ENVIRONMENTS:
            if self.nats_nkey_seed is None:
                raise ValueError("NATS_NKEY_SEED is missing: every service speaks on the bus under its own identity")
            for name in self.secret_fields():
                value = str(getattr(self, name) or "")
                if value.lower() in PLACEHOLDER_SECRETS or len(value) < 32:
                    raise ValueError(
                        f"{name.upper()} is a placeholder or shorter than 32 characters; "
                        "set a real secret (placeholders are only allowed with ENVIRONMENT=local)"
                    )
        return self

    @classmethod
    def secret_fields(cls) -> tuple[str, ...]:
        """Fields that must hold a real secret outside local development."""
        return ("jwt_key",)


S = TypeVar("S", bound=ServiceSettings)


def describe_validation_error(error: ValidationError) -> str:
    """One line naming each missing or invalid variable."""
    parts = []
    for item in error.errors():
        name = ".".join(str(p) for p in item["loc"]).upper()
        if item["type"] == "missing":
            parts.append(f"{name} is missing")
        elif name:
            parts.append(f"{name} is invalid: {item['msg']}")
        else:
            parts.append(item["msg"].removeprefix("Value error, "))
    return "; ".join(parts)


def load_settings(cls: type[S]) -> S:
    """Read settings, or end the process with one clear line naming what is missing or invalid."""
    try:
        return cls()
    except ValidationError as error:
        print(f"configuration error: {describe_validation_error(error)}", file=sys.stderr)
        raise SystemExit(2) from None

"""client settings: where the public REST API is, and how payments are taken."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Environment of the web client. It owns no database and no bus connection: only the API's address."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", frozen=True)

    environment: Literal["local", "test", "production"] = "production"
    api_url: str | None = Field(
        default=None, description="Base URL of the public REST API, as a browser reaches it (the dev gateway)"
    )
    # In Kubernetes the client calls each backend Service directly, by the Ingress's own route table (a test keeps
    # the two equal): calling the ingress controller from inside the cluster would meet its https redirect.
    api_backends: dict[str, str] = Field(
        default_factory=dict,
        description='JSON map of API path prefix to base URL, e.g. {"/api/users": "http://auth-srv:8000"}; '
        "a prefix listed here wins over API_URL",
    )
    api_timeout_seconds: float = Field(default=10.0, gt=0)
    # How long a page keeps retrying a 503 "not yet known" (a service that has not yet heard of a new entity)
    # before it tells the visitor to try again in a moment.
    consistency_wait_seconds: float = Field(default=4.0, ge=0)
    payment_provider: Literal["fake", "stripe"] = "fake"
    stripe_publishable_key: str | None = Field(default=None, description="pk_... for Stripe's client-side flow")
    log_level: str = "INFO"
    metrics_port: int | None = Field(
        default=None, ge=1, le=65535, description="Serve /metrics on this port only (not on the page port)"
    )
    metrics_host: str = Field(default="0.0.0.0", description="The address the metrics port listens on")

    @model_validator(mode="after")
    def _an_api_to_call(self) -> Settings:
        if not self.api_url and not self.api_backends:
            raise ValueError("API_URL or API_BACKENDS must name the REST API")
        for url in [self.api_url or "http://x", *self.api_backends.values()]:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r} is not an http(s) URL")
        for prefix in self.api_backends:
            if not prefix.startswith("/api/"):
                raise ValueError(f"API_BACKENDS prefix {prefix!r} must start with /api/")
        if self.payment_provider == "stripe" and not self.stripe_publishable_key:
            raise ValueError("STRIPE_PUBLISHABLE_KEY is required with PAYMENT_PROVIDER=stripe")
        return self

    def base_url_for(self, path: str) -> str:
        """The base URL that serves an API path: the longest API_BACKENDS prefix that matches, else API_URL."""
        matches = [p for p in self.api_backends if path == p or path.startswith(p.rstrip("/") + "/")]
        if matches:
            return self.api_backends[max(matches, key=len)].rstrip("/")
        if self.api_url is None:
            raise LookupError(f"no API base URL serves {path}")
        return self.api_url.rstrip("/")

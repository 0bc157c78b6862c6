"""Settings: a missing or invalid variable stops start-up with one clear line; placeholders only in local dev."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ticketing_common.settings import ServiceSettings, load_settings

GOOD = {
    "DATABASE_URL": "postgresql://u@db:5432/app",
    "NATS_URL": "nats://nats-srv:4222",
    "NATS_CLIENT_ID": "pod-1",
    "JWT_KEY": "k" * 40,
    "NATS_NKEY_SEED": "SU" + "A" * 56,
}


def env(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    for name in [*GOOD, "ENVIRONMENT"]:
        monkeypatch.delenv(name, raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)


def test_reads_the_environment_and_normalises_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    env(monkeypatch, **{**GOOD, "NATS_URL": "http://nats-srv:4222"})
    settings = ServiceSettings()  # type: ignore[call-arg]
    assert settings.database_url == "postgresql+asyncpg://u@db:5432/app"
    assert settings.nats_url == "nats://nats-srv:4222"
    assert settings.environment == "production"
    assert settings.cookie_secure is True


def test_a_missing_variable_ends_the_process_with_one_line(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    env(monkeypatch, **{k: v for k, v in GOOD.items() if k != "NATS_URL"})
    with pytest.raises(SystemExit) as exit_info:
        load_settings(ServiceSettings)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err == "configuration error: NATS_URL is missing\n"


def test_an_invalid_variable_is_named(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    env(monkeypatch, **{**GOOD, "DATABASE_URL": "mysql://x/y", "JWT_TTL_SECONDS": "soon"})
    with pytest.raises(SystemExit):
        load_settings(ServiceSettings)
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "DATABASE_URL is invalid" in err
    assert "JWT_TTL_SECONDS is invalid" in err


@pytest.mark.parametrize("key", ["secret", "changeme", "short-key"])
def test_placeholder_secrets_are_refused_outside_local_development(
    monkeypatch: pytest.MonkeyPatch, capsys, key: str
) -> None:
    env(monkeypatch, **{**GOOD, "JWT_KEY": key})
    with pytest.raises(SystemExit):
        load_settings(ServiceSettings)
    assert "JWT_KEY is a placeholder" in capsys.readouterr().err


def test_placeholder_secrets_are_allowed_in_local_development(monkeypatch: pytest.MonkeyPatch) -> None:
    env(monkeypatch, **{**GOOD, "JWT_KEY": "secret", "ENVIRONMENT": "local"})
    assert load_settings(ServiceSettings).jwt_key == "secret"


def test_a_service_refuses_to_start_without_its_settings() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "from ticketing_auth.app import create_app; create_app()"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "configuration error: DATABASE_URL is missing; NATS_URL is missing; NATS_CLIENT_ID is missing; "
        "JWT_KEY is missing"
    ]


def test_production_refuses_to_start_without_a_bus_identity(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    env(monkeypatch, **{k: v for k, v in GOOD.items() if k != "NATS_NKEY_SEED"})
    with pytest.raises(SystemExit):
        load_settings(ServiceSettings)
    err = capsys.readouterr().err
    assert (
        err
        == "configuration error: NATS_NKEY_SEED is missing: every service speaks on the bus under its own identity\n"
    )


def test_a_malformed_seed_is_refused_without_echoing_it(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    env(monkeypatch, **{**GOOD, "NATS_NKEY_SEED": "not-a-seed-but-a-secret-xyz"})
    with pytest.raises(SystemExit):
        load_settings(ServiceSettings)
    err = capsys.readouterr().err
    assert err.startswith("configuration error: NATS_NKEY_SEED is invalid: ")
    assert "not-a-seed-but-a-secret-xyz" not in err


def test_the_seed_never_shows_in_the_settings_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    env(monkeypatch, **GOOD)
    settings = ServiceSettings()  # type: ignore[call-arg]
    assert GOOD["NATS_NKEY_SEED"] not in repr(settings) and GOOD["NATS_NKEY_SEED"] not in str(settings.model_dump())
    assert settings.nats_nkey_seed is not None
    assert settings.nats_nkey_seed.get_secret_value() == GOOD["NATS_NKEY_SEED"]


def test_the_streams_keep_everything_by_default_and_a_max_age_must_outlast_the_duplicate_window(
    monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    env(monkeypatch, **GOOD)
    assert ServiceSettings().nats_stream_max_age_seconds == 0  # type: ignore[call-arg]
    env(monkeypatch, **GOOD, NATS_STREAM_MAX_AGE_SECONDS="604800")
    assert ServiceSettings().nats_stream_max_age_seconds == 604800  # type: ignore[call-arg]
    env(monkeypatch, **GOOD, NATS_STREAM_MAX_AGE_SECONDS="60")
    with pytest.raises(SystemExit):
        load_settings(ServiceSettings)
    assert "NATS_STREAM_MAX_AGE_SECONDS" in capsys.readouterr().err.upper()

"""Service discovery: what `ticketing dev up` finds under services/ and how the Ingress places it."""

from __future__ import annotations

from pathlib import Path

from ticketing_dev.repo import discover_services

ROOT = Path(__file__).resolve().parents[3]


def test_finds_every_service_with_its_api_prefix_and_the_client_at_the_root() -> None:
    found = {info.name: info for info in discover_services(ROOT)}

    assert {"auth", "tickets", "orders", "expiration", "payments", "client"} <= set(found)
    assert found["auth"].api_prefix == "/api/users"
    assert found["expiration"].api_prefix is None and found["expiration"].web_path is None
    assert found["client"].api_prefix is None
    assert found["client"].web_path == "/"


def test_a_service_without_migrations_owns_no_database() -> None:
    found = {info.name: info for info in discover_services(ROOT)}

    assert found["client"].has_database is False
    assert all(found[name].has_database for name in ("auth", "tickets", "orders", "expiration", "payments"))


def test_a_package_folder_without_migrations_is_found_as_database_less(tmp_path: Path) -> None:
    (tmp_path / "services" / "web" / "ticketing_web").mkdir(parents=True)
    (tmp_path / "services" / "web" / "ticketing_web" / "app.py").write_text("")
    (tmp_path / "services" / "db" / "ticketing_db" / "migrations").mkdir(parents=True)
    (tmp_path / "services" / "db" / "ticketing_db" / "app.py").write_text("")

    found = {info.name: info.has_database for info in discover_services(tmp_path)}

    assert found == {"db": True, "web": False}

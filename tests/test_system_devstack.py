"""`ticketing dev`: what it prints, one copy at a time, status, Ctrl-C leaves nothing behind, data persists."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from systemkit import ROOT, TICKETING, Stack, eventually, pid_alive, start_stack


def ticketing(*args: str, state_dir: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    if state_dir is not None:
        env["TICKETING_STATE_DIR"] = str(state_dir)
    return subprocess.run(
        [str(TICKETING), *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout, check=False
    )


@pytest.fixture
def scratch() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="ticketing-devstack-"))
    os.chmod(base, 0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def test_prints_the_gateway_every_api_docs_page_and_the_broker_addresses(stack: Stack) -> None:
    log = stack.log()
    state = stack.state()

    assert f"gateway     {stack.url}" in log
    assert f"{stack.url}/api/users/docs" in log
    assert state["nats_url"].startswith("nats://") and state["nats_url"] in log
    assert state["monitor_url"].startswith("http://") and state["monitor_url"] in log
    for name, service in state["services"].items():
        if service["api_prefix"]:
            assert f"{stack.url}{service['api_prefix']}/docs" in log, name


def test_serves_each_services_api_docs_through_the_gateway(stack: Stack) -> None:
    for name, service in stack.state()["services"].items():
        if service["api_prefix"]:
            response = stack.client().get(f"{service['api_prefix']}/docs")
            assert response.status_code == 200, name
            assert "swagger" in response.text.lower()


def test_serves_the_web_client_at_the_root_without_a_database_of_its_own(stack: Stack) -> None:
    assert f"{stack.url}/   (the web client)" in stack.log()
    assert "client:migrate" not in stack.log()
    home = stack.client().get("/")
    assert home.status_code == 200
    assert home.headers["content-type"].startswith("text/html")
    assert stack.client().get("/api/users/currentuser").json() == {"currentUser": None}

    async def databases() -> set[str]:
        conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{stack.state()['postgres_port']}/postgres")
        try:
            return {row["datname"] for row in await conn.fetch("SELECT datname FROM pg_database")}
        finally:
            await conn.close()

    found = asyncio.run(databases())
    assert {"auth", "tickets", "orders", "expiration", "payments"} <= found
    assert "client" not in found


def test_a_second_dev_up_says_one_is_running_instead_of_starting_a_copy(stack: Stack) -> None:
    result = ticketing("dev", "up", "--port", "0", state_dir=stack.state_dir)

    assert result.returncode == 1
    assert "already running" in result.stderr + result.stdout
    assert f"pid {stack.process.pid}" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_status_lists_every_service_as_ready(stack: Stack) -> None:
    result = ticketing("dev", "status", state_dir=stack.state_dir)

    assert result.returncode == 0, result.stdout + result.stderr
    for name in stack.state()["services"]:
        assert name in result.stdout
    assert result.stdout.count("ready") >= len(stack.state()["services"])


def test_restart_command_restarts_one_service(stack: Stack) -> None:
    old = stack.service_pid("auth")
    assert old is not None

    result = ticketing("dev", "restart", "auth", state_dir=stack.state_dir)

    assert result.returncode == 0, result.stderr
    new = stack.wait_restarted("auth", old)
    assert new != old
    assert stack.client().get("/api/users/currentuser").status_code == 200


def test_broker_shows_the_stacks_streams_and_consumers(stack: Stack) -> None:
    result = ticketing("broker", state_dir=stack.state_dir)

    assert result.returncode == 0, result.stderr
    assert "TICKETS" in result.stdout and "DEADLETTERS" in result.stdout
    assert "dead letters" in result.stdout
    assert "orders-ticket-created" in result.stdout


def test_reset_refuses_while_the_stack_runs(stack: Stack) -> None:
    result = ticketing("dev", "reset", state_dir=stack.state_dir)

    assert result.returncode == 1
    assert "running" in result.stderr
    assert (stack.state_dir / "pg").is_dir()


def test_ctrl_c_leaves_no_process_behind_and_the_data_survives_a_restart(scratch: Path) -> None:
    state_dir = scratch / "state"
    first = start_stack(state_dir)
    email = f"persist-{uuid.uuid4().hex[:8]}@example.com"
    assert first.client().post("/api/users/signup", json={"email": email, "password": "persisted!"}).status_code == 201
    pids = first.pids()
    assert len(pids) >= 4  # runner, zygote, Postgres, nats-server, services

    assert first.stop(signal.SIGINT) == 0

    eventually(lambda: not [pid for pid in pids if pid_alive(pid)], timeout=10)
    second = start_stack(state_dir)
    try:
        signin = second.client().post("/api/users/signin", json={"email": email, "password": "persisted!"})
        assert signin.status_code == 200, signin.text
        pids = second.pids()
        down = ticketing("dev", "down", state_dir=state_dir)
        assert down.returncode == 0, down.stderr
        assert "stopped" in down.stdout
        assert second.process.wait(timeout=30) == 0
        eventually(lambda: not [pid for pid in pids if pid_alive(pid)], timeout=10)
    finally:
        second.stop()
    assert "not running" in ticketing("dev", "status", state_dir=state_dir).stdout
    wiped = ticketing("dev", "reset", state_dir=state_dir)
    assert wiped.returncode == 0
    assert not state_dir.exists()


def test_a_killed_runner_leaves_nothing_that_blocks_the_next_start(scratch: Path) -> None:
    state_dir = scratch / "state"
    first = start_stack(state_dir)
    zygote = first.state()["zygote_pid"]
    services = [s["pid"] for s in first.state()["services"].values()]

    first.stop(signal.SIGKILL)

    # The services go with the runner (their launcher sees its stdin close); Postgres and NATS are reclaimed later.
    eventually(lambda: not [pid for pid in [zygote, *services] if pid_alive(pid)], timeout=20)
    # How long this start takes is a figure in bench/ (`make bench BENCH=startup`), not an assertion here.
    second = start_stack(state_dir)
    try:
        assert second.client().get("/api/users/currentuser").status_code == 200
    finally:
        assert second.stop() == 0

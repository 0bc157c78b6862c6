"""Helpers for the browser tests: Debian's chromium driven by Playwright, never a downloaded browser.

`make test` installs the chromium package when it is missing (see the Makefile); CHROMIUM overrides the path.
A failing test leaves a screenshot and the page's HTML in BROWSER_ARTIFACTS (test-output/browser). With
SCREENSHOTS=<folder> (`make screenshots`), the tests also save the README's pictures of the main pages there.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import Page, expect

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
BROWSER_ARTIFACTS = ROOT / "test-output" / "browser"
PHONE = {"width": 390, "height": 844}
# The `person` fixture: each call opens a fresh browser context (its own cookies) and returns its page.
OpenPage = Callable[..., Page]
DESKTOP = {"width": 1100, "height": 720}


def launch_args() -> list[str]:
    """Chromium's sandbox cannot start as root (this machine, CI): run without it there, and only there."""
    return ["--no-sandbox"] if os.geteuid() == 0 else []


def screenshot(page: Page, name: str) -> None:
    """Save a README picture of the page when `make screenshots` asked for them."""
    folder = os.environ.get("SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def save_failure(page: Page, test_name: str) -> Path:
    """A failing test's last screenshot and HTML, for whoever reads the report."""
    BROWSER_ARTIFACTS.mkdir(parents=True, exist_ok=True)
    stem = BROWSER_ARTIFACTS / re.sub(r"[^\w.-]+", "_", test_name)
    page.screenshot(path=f"{stem}.png", full_page=True)
    Path(f"{stem}.html").write_text(page.content())
    return stem


def new_email() -> str:
    """A unique address."""
    return f"user-{uuid.uuid4().hex[:10]}@example.com"


def sign_up(page: Page, email: str, password: str = "correct horse battery") -> None:
    """Fill and send the sign-up form the page shows, then see the navigation name the new user."""
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign up").click()
    expect(page.get_by_text(f"Signed in as {email}")).to_be_visible()


def sell(page: Page, title: str, price: str) -> str:
    """List a ticket through the form; returns the ticket page's path."""
    page.goto("/tickets/new")
    page.get_by_label("Title").fill(title)
    page.get_by_label("Price").fill(price)
    page.get_by_role("button", name="Sell").click()
    expect(page.get_by_role("heading", name=title)).to_be_visible()
    return urlsplit(page.url).path

"""The web client in a real headless Chromium, through the whole stack (`ticketing dev up`: real Postgres and NATS).

Journey 1: a seller signs up and lists a ticket; a buyer finds it, is sent to sign up and back, purchases it, watches
the countdown, has a card declined, pays, and sees the order complete on its page and under /orders.
Journey 2: a reservation whose window closes shows "Order expired", live and after a reload.
Also: field errors on bad sign-up input, a wrong password, and the phone-sized, keyboard-only sign-in.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator

import pytest
from browserkit import (
    CHROMIUM,
    DESKTOP,
    PHONE,
    OpenPage,
    launch_args,
    new_email,
    save_failure,
    screenshot,
    sell,
    sign_up,
)
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright
from systemkit import Stack

# A short reservation window, so that journey 2 sees one close; journey 1 pays well within it.
ORDER_WINDOW_SECONDS = 15


@pytest.fixture(scope="module")
def stack_env() -> dict[str, str]:
    """The system stack, with reservations that expire quickly."""
    return {"NATS_ACK_WAIT_SECONDS": "5", "ORDER_EXPIRATION_SECONDS": str(ORDER_WINDOW_SECONDS)}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's chromium, headless, driven by Playwright (which never downloads a browser here)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make browser` (part of `make test`) installs Debian's chromium")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=launch_args())
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def contexts(browser: Browser, stack: Stack, request: pytest.FixtureRequest) -> Iterator[list[BrowserContext]]:
    """The test's browser contexts (one per person); on a failure, each one's page is saved for the report."""
    opened: list[BrowserContext] = []
    yield opened
    report = getattr(request.node, "rep_call", None)
    for index, context in enumerate(opened):
        if report is not None and report.failed:
            for page in context.pages:
                stem = save_failure(page, f"{request.node.name}-{index}")
                print(f"browser state saved: {stem}.png and {stem}.html")
        context.close()


@pytest.fixture
def person(browser: Browser, stack: Stack, contexts: list[BrowserContext]) -> OpenPage:
    """A factory of people: each call opens a fresh browser (own cookies) on the gateway and returns its page."""

    def open_page(viewport: dict[str, int] | None = None) -> Page:
        viewport = viewport or DESKTOP
        context = browser.new_context(base_url=stack.url, viewport=viewport)
        context.set_default_timeout(15_000)
        contexts.append(context)
        return context.new_page()

    return open_page


def test_a_seller_lists_a_ticket_and_a_buyer_purchases_and_pays_for_it(person: OpenPage) -> None:
    seller = person()
    seller.goto("/auth/signup")
    screenshot(seller, "signup")
    sign_up(seller, new_email())
    title = f"Concert {uuid.uuid4().hex[:6]}"
    seller.goto("/tickets/new")
    screenshot(seller, "sell")
    ticket_path = sell(seller, title, "25.5")
    expect(seller.get_by_text("$25.50")).to_be_visible()
    expect(seller.get_by_text("This is your ticket.")).to_be_visible()

    buyer = person()
    buyer.goto("/")
    link = buyer.get_by_role("link", name=title)
    expect(link).to_be_visible()
    expect(buyer.get_by_role("row", name=re.compile(re.escape(title))).get_by_text("$25.50")).to_be_visible()
    screenshot(buyer, "tickets")
    link.click()
    expect(buyer).to_have_url(re.compile(re.escape(ticket_path) + "$"))
    screenshot(buyer, "ticket")

    # Signed out, Purchase leads to sign in (and on to sign up), then back to the ticket.
    buyer.get_by_role("button", name="Purchase").click()
    expect(buyer).to_have_url(re.compile(r"/auth/signin\?next="))
    buyer.get_by_role("link", name="Sign up").last.click()
    buyer_email = new_email()
    sign_up(buyer, buyer_email)
    expect(buyer).to_have_url(re.compile(re.escape(ticket_path) + "$"))

    buyer.get_by_role("button", name="Purchase").click()
    expect(buyer).to_have_url(re.compile(r"/orders/[0-9a-f-]{36}$"))
    seconds = buyer.locator("#seconds-left")
    expect(seconds).to_be_visible()
    first = int(seconds.inner_text())
    assert 0 < first <= ORDER_WINDOW_SECONDS
    expect(seconds).not_to_have_text(str(first), timeout=3_000)  # it counts down
    screenshot(buyer, "order")

    # A declined card reads as a sentence; the default card then pays.
    expect(buyer.get_by_label("Visa ending 4242 (succeeds)")).to_be_checked()
    buyer.get_by_label("Visa ending 0002 (declined)").check()
    buyer.get_by_role("button", name="Pay").click()
    expect(buyer.get_by_role("alert")).to_contain_text(re.compile("declined", re.I))
    buyer.get_by_label("Visa ending 4242 (succeeds)").check()
    buyer.get_by_role("button", name="Pay").click()
    expect(buyer.locator("#order-status")).to_have_text("Complete")
    expect(buyer.get_by_role("button", name="Pay")).to_have_count(0)
    screenshot(buyer, "order-paid")

    buyer.get_by_role("link", name="My orders", exact=True).click()
    row = buyer.get_by_role("row", name=re.compile(re.escape(title)))
    expect(row).to_contain_text("Complete")
    expect(row).to_contain_text("$25.50")
    screenshot(buyer, "orders")

    # Sold: no longer for sale.
    seller.goto("/")
    expect(seller.get_by_role("link", name=title)).to_have_count(0)


def test_a_reservation_whose_window_closes_shows_order_expired(person: OpenPage) -> None:
    seller = person()
    seller.goto("/auth/signup")
    sign_up(seller, new_email())
    ticket_path = sell(seller, f"Play {uuid.uuid4().hex[:6]}", "10")

    buyer = person()
    buyer.goto(f"/auth/signup?next={ticket_path}")
    sign_up(buyer, new_email())
    buyer.get_by_role("button", name="Purchase").click()
    expect(buyer.locator("#seconds-left")).to_be_visible()

    expect(buyer.get_by_text("Order expired")).to_be_visible(timeout=(ORDER_WINDOW_SECONDS + 5) * 1000)
    expect(buyer.get_by_role("button", name="Pay")).to_be_hidden()
    # The server agrees once expiration has cancelled the order: a reload says the same.
    for _ in range(20):
        buyer.reload()
        if buyer.locator("#order-status").inner_text() == "Cancelled":
            break
        buyer.wait_for_timeout(500)
    expect(buyer.locator("#order-status")).to_have_text("Cancelled")
    expect(buyer.get_by_text("Order expired")).to_be_visible()


def test_sign_up_shows_each_field_error_beside_its_field(person: OpenPage) -> None:
    page = person()
    page.goto("/auth/signup")
    page.get_by_label("Email").fill("not-an-email")
    page.get_by_label("Password").fill("short")
    page.get_by_role("button", name="Sign up").click()

    expect(page.locator("#email-error")).to_have_text("Email must be valid.")
    expect(page.locator("#password-error")).to_have_text("Password must be between 8 and 128 characters.")
    expect(page.get_by_label("Email")).to_have_value("not-an-email")
    expect(page.get_by_label("Password")).to_have_attribute("aria-invalid", "true")
    screenshot(page, "signup-errors")


def test_a_wrong_password_reads_as_a_sentence_and_signs_nobody_in(person: OpenPage) -> None:
    page = person()
    page.goto("/auth/signup")
    email = new_email()
    sign_up(page, email)
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("link", name="Sign in")).to_be_visible()

    page.goto("/auth/signin")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("Invalid credentials.")
    expect(page.get_by_text("Signed in as")).to_have_count(0)


def test_selling_while_signed_out_asks_to_sign_in_and_comes_back(person: OpenPage) -> None:
    page = person()
    page.goto("/")
    page.get_by_role("link", name="Sell a ticket").click()
    expect(page).to_have_url(re.compile(r"/auth/signin\?next=/tickets/new$"))
    page.get_by_role("link", name="Sign up").last.click()
    sign_up(page, new_email())
    expect(page).to_have_url(re.compile(r"/tickets/new$"))
    expect(page.get_by_label("Title")).to_be_visible()


def test_a_phone_sized_screen_signs_in_with_the_keyboard_alone(person: OpenPage) -> None:
    setup = person()
    setup.goto("/auth/signup")
    email = new_email()
    sign_up(setup, email)

    phone = person(PHONE)
    phone.goto("/auth/signin")
    phone.get_by_label("Email").focus()
    phone.keyboard.type(email)
    phone.keyboard.press("Tab")
    phone.keyboard.type("correct horse battery")
    phone.keyboard.press("Enter")
    expect(phone.get_by_text(f"Signed in as {email}")).to_be_visible()
    overflow = phone.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow}px wider than a phone"
    if os.environ.get("SCREENSHOTS"):
        phone.goto("/")
        screenshot(phone, "phone")

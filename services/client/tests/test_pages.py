"""Every page of the web client, fetched through the gateway of the real stack as a browser without JavaScript
would: what it shows, where it redirects, and how each kind of API error reads."""

from __future__ import annotations

import re
import uuid

import httpx
from systemkit import Stack, eventually

PASSWORD = "correct horse battery"


def sign_up(client: httpx.Client) -> str:
    """Sign up through the form; returns the email. The session cookie lands in the client's jar."""
    email = f"user-{uuid.uuid4().hex[:12]}@example.com"
    response = client.post("/auth/signup", data={"email": email, "password": PASSWORD, "next": "/"})
    assert response.status_code == 303, response.text
    return email


def sell(client: httpx.Client, title: str | None = None, price: str = "20") -> tuple[str, str]:
    """List a ticket through the form; returns its id and title."""
    title = title or f"Show {uuid.uuid4().hex[:8]}"
    response = client.post("/tickets/new", data={"title": title, "price": price})
    assert response.status_code == 303, response.text
    return response.headers["location"].rsplit("/", 1)[1], title


def reserve(client: httpx.Client, ticket_id: str) -> str:
    """Purchase a ticket through its page; returns the order id."""
    response = client.post(f"/tickets/{ticket_id}/purchase")
    assert response.status_code == 303, response.text
    assert re.fullmatch(r"/orders/[0-9a-f-]{36}", response.headers["location"])
    return response.headers["location"].rsplit("/", 1)[1]


def test_the_home_page_lists_tickets_with_links_and_prices_to_two_decimals(browser: httpx.Client) -> None:
    sign_up(browser)
    ticket_id, title = sell(browser, price="7.5")

    page = browser.get("/")

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert f'<a href="/tickets/{ticket_id}">{title}</a>' in page.text
    assert "$7.50" in page.text


def test_sign_up_sets_the_session_and_the_navigation_names_the_user(browser: httpx.Client) -> None:
    form = browser.get("/auth/signup")
    assert form.status_code == 200
    assert '<label for="email">Email</label>' in form.text
    assert '<label for="password">Password</label>' in form.text

    email = sign_up(browser)

    assert "session" in browser.cookies
    assert f"Signed in as <strong>{email}</strong>" in browser.get("/").text


def test_sign_up_errors_sit_beside_their_fields_and_keep_the_email(browser: httpx.Client) -> None:
    page = browser.post("/auth/signup", data={"email": "nope", "password": "short"})

    assert page.status_code == 400
    assert '<p class="error" id="email-error">Email must be valid.</p>' in page.text
    assert '<p class="error" id="password-error">Password must be between 8 and 128 characters.</p>' in page.text
    assert 'value="nope"' in page.text
    assert '"errors"' not in page.text


def test_an_email_in_use_is_shown_beside_the_email(browser: httpx.Client, stack: Stack) -> None:
    email = sign_up(browser)
    with stack.client(headers={"Origin": stack.url}) as other:
        page = other.post("/auth/signup", data={"email": email, "password": PASSWORD})

    assert page.status_code == 400
    assert '<p class="error" id="email-error">Email in use.</p>' in page.text


def test_sign_in_returns_to_where_the_visitor_was_headed_and_wrong_credentials_read_as_a_sentence(
    browser: httpx.Client,
    stack: Stack,
) -> None:
    email = sign_up(browser)
    with stack.client(headers={"Origin": stack.url}) as other:
        wrong = other.post("/auth/signin", data={"email": email, "password": "wrong password"})
        assert wrong.status_code == 400
        assert '<div class="alert" role="alert">' in wrong.text
        assert "<p>Invalid credentials.</p>" in wrong.text

        right = other.post("/auth/signin", data={"email": email, "password": PASSWORD, "next": "/orders"})
        assert right.status_code == 303
        assert right.headers["location"] == "/orders"

        elsewhere = other.post("/auth/signin", data={"email": email, "password": PASSWORD, "next": "//evil.example"})
        assert elsewhere.headers["location"] == "/"


def test_sign_out_is_a_button_and_clears_the_session(browser: httpx.Client) -> None:
    sign_up(browser)
    confirm = browser.get("/auth/signout")
    assert confirm.status_code == 200
    assert ">Sign out</button>" in confirm.text
    assert "Signed in as" in browser.get("/").text  # the GET signed nobody out

    response = browser.post("/auth/signout")

    assert response.status_code == 303
    assert "Signed in as" not in browser.get("/").text
    assert browser.get("/auth/signout").headers.get("location") == "/"


def test_a_signed_out_visitor_who_tries_to_sell_or_buy_is_sent_to_sign_in_and_back(
    browser: httpx.Client,
    stack: Stack,
) -> None:
    sign_up(browser)
    ticket_id, _ = sell(browser)
    with stack.client(headers={"Origin": stack.url}) as visitor:
        for method, path, back in [
            ("GET", "/tickets/new", "/tickets/new"),
            ("POST", "/tickets/new", "/tickets/new"),
            ("POST", f"/tickets/{ticket_id}/purchase", f"/tickets/{ticket_id}"),
            ("GET", "/orders", "/orders"),
        ]:
            response = visitor.request(method, path)
            assert response.status_code == 303, path
            assert response.headers["location"] == f"/auth/signin?next={back}", path
        form = visitor.get(f"/auth/signin?next=/tickets/{ticket_id}")
        assert f'name="next" value="/tickets/{ticket_id}"' in form.text


def test_the_sell_form_lists_a_ticket_and_shows_field_errors(browser: httpx.Client) -> None:
    sign_up(browser)
    form = browser.get("/tickets/new")
    assert '<label for="title">Title</label>' in form.text
    assert '<label for="price">Price</label>' in form.text

    bad = browser.post("/tickets/new", data={"title": " ", "price": "-3"})
    assert bad.status_code == 400
    assert 'id="title-error">Title is required.</p>' in bad.text
    assert 'id="price-error">Price must be greater than 0.</p>' in bad.text

    not_a_number = browser.post("/tickets/new", data={"title": "Show", "price": "twenty"})
    assert not_a_number.status_code == 400
    assert 'id="price-error">Price must be a number, such as 20 or 12.50.</p>' in not_a_number.text

    ticket_id, title = sell(browser, price="12.5")
    page = browser.get(f"/tickets/{ticket_id}")
    assert f"<h1>{title}</h1>" in page.text
    assert "$12.50" in page.text
    assert "This is your ticket." in page.text
    assert ">Purchase</button>" not in page.text


def test_the_seller_edits_a_ticket(browser: httpx.Client) -> None:
    sign_up(browser)
    ticket_id, _ = sell(browser)
    form = browser.get(f"/tickets/{ticket_id}/edit")
    assert form.status_code == 200

    saved = browser.post(f"/tickets/{ticket_id}/edit", data={"title": "Renamed show", "price": "30"})

    assert saved.status_code == 303
    page = browser.get(f"/tickets/{ticket_id}")
    assert "<h1>Renamed show</h1>" in page.text
    assert "$30.00" in page.text


def test_someone_elses_ticket_cannot_be_edited(browser: httpx.Client, stack: Stack) -> None:
    sign_up(browser)
    ticket_id, _ = sell(browser)
    with stack.client(headers={"Origin": stack.url}) as other:
        sign_up(other)
        response = other.post(f"/tickets/{ticket_id}/edit", data={"title": "Mine now", "price": "1"})

    assert response.status_code == 401
    assert "You are not allowed to do that." in response.text


def test_unknown_and_malformed_ids_are_readable_404_pages(browser: httpx.Client) -> None:
    sign_up(browser)
    for path in [f"/tickets/{uuid.uuid4()}", "/tickets/not-an-id", f"/orders/{uuid.uuid4()}", "/orders/xyz", "/nope"]:
        page = browser.get(path)
        assert page.status_code == 404, path
        assert page.headers["content-type"].startswith("text/html"), path
        assert "We could not find that" in page.text, path


def test_an_unknown_api_path_still_gets_the_contracts_json_404(browser: httpx.Client) -> None:
    for method in ("GET", "POST"):
        response = browser.request(method, "/api/unknown/thing")
        assert response.status_code == 404
        assert response.json() == {"errors": [{"message": "Not Found"}]}


def test_buying_your_own_ticket_reads_as_a_sentence(browser: httpx.Client) -> None:
    sign_up(browser)
    ticket_id, _ = sell(browser)

    page = browser.post(f"/tickets/{ticket_id}/purchase")

    assert page.status_code == 400
    assert "You cannot buy your own ticket." in page.text


def test_a_purchase_opens_the_order_with_its_countdown_and_pay_form_then_pays(
    browser: httpx.Client,
    stack: Stack,
) -> None:
    sign_up(browser)
    ticket_id, title = sell(browser, price="15")
    with stack.client(headers={"Origin": stack.url}) as buyer:
        sign_up(buyer)
        # Straight after the listing: orders may not have heard of the ticket yet, and the page waits it out.
        order_id = reserve(buyer, ticket_id)
        page = buyer.get(f"/orders/{order_id}")
        assert page.status_code == 200
        seconds = int(re.search(r'<strong id="seconds-left">(\d+)</strong>', page.text).group(1))  # type: ignore[union-attr]
        assert 1700 < seconds <= 1800
        assert 'value="tok_visa" checked' in page.text
        assert ">Pay</button>" in page.text
        # The ticket is reserved now: no longer for sale, and its page says so.
        assert title not in buyer.get("/").text
        assert "Someone has reserved this ticket." in buyer.get(f"/tickets/{ticket_id}").text

        declined = buyer.post(f"/orders/{order_id}/pay", data={"token": "tok_chargeDeclined"})
        assert declined.status_code == 402
        assert '<div class="alert" role="alert">' in declined.text

        paid = buyer.post(f"/orders/{order_id}/pay", data={"token": "tok_visa"})
        assert paid.status_code == 303
        order = buyer.get(paid.headers["location"])
        assert "Complete" in order.text or "Confirming your order" in order.text

        again = buyer.post(f"/orders/{order_id}/pay", data={"token": "tok_visa"})
        assert again.status_code == 400
        assert "Order already paid." in again.text

        orders = buyer.get("/orders")
        assert f'<a href="/orders/{order_id}">{title}</a>' in orders.text
        assert "$15.00" in orders.text


def test_someone_elses_order_is_not_shown(browser: httpx.Client, stack: Stack) -> None:
    sign_up(browser)
    ticket_id, _ = sell(browser)
    with stack.client(headers={"Origin": stack.url}) as buyer:
        sign_up(buyer)
        order_id = reserve(buyer, ticket_id)

    page = browser.get(f"/orders/{order_id}")

    assert page.status_code == 401
    assert "You are not allowed to do that." in page.text


def test_a_cancelled_reservation_frees_the_ticket(browser: httpx.Client, stack: Stack) -> None:
    sign_up(browser)
    ticket_id, title = sell(browser)
    with stack.client(headers={"Origin": stack.url}) as buyer:
        sign_up(buyer)
        order_id = reserve(buyer, ticket_id)

        cancelled = buyer.post(f"/orders/{order_id}/cancel")

        assert cancelled.status_code == 303
        assert "This order was cancelled." in buyer.get(f"/orders/{order_id}").text
        paying = buyer.post(f"/orders/{order_id}/pay", data={"token": "tok_visa"})
        assert paying.status_code == 400
        assert "Cannot pay for a cancelled order." in paying.text
        # tickets hears order.cancelled a moment later: the ticket is for sale again.
        eventually(lambda: title in buyer.get("/").text)


def test_a_form_posted_from_another_site_is_refused(stack: Stack) -> None:
    with stack.client() as client:
        for headers in ({}, {"Origin": "https://evil.example"}, {"Referer": "https://evil.example/form"}):
            response = client.post("/auth/signup", data={"email": "a@b.co", "password": PASSWORD}, headers=headers)
            assert response.status_code == 403, headers
            assert "Form refused" in response.text
        same_site = client.post("/auth/signout", headers={"Referer": f"{stack.url}/auth/signout"})
        assert same_site.status_code == 303


def test_pages_carry_a_request_id_and_the_client_is_ready(browser: httpx.Client, stack: Stack) -> None:
    page = browser.get("/", headers={"X-Request-ID": "client-page-1"})

    assert page.headers["x-request-id"] == "client-page-1"
    assert page.headers["x-frame-options"] == "DENY"
    client_url = stack.state()["services"]["client"]["url"]
    assert httpx.get(f"{client_url}/readyz", trust_env=False).json() == {"status": "ready"}
    assert httpx.get(f"{client_url}/healthz", trust_env=False).status_code == 200
    # /metrics is on the metrics port only, as in Kubernetes; neither the page port nor the gateway serves it.
    assert httpx.get(stack.state()["services"]["client"]["metrics_url"], trust_env=False).status_code == 200
    assert httpx.get(f"{client_url}/metrics", trust_env=False).status_code == 404
    # Through the gateway (as through the Ingress, whose "/" rule reaches the client) /metrics is not served.
    assert browser.get("/metrics").status_code == 404
    assert browser.get("/api/users/../../metrics").status_code == 404

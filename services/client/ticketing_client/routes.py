"""The pages, at the paths of the app this suite follows: tickets, sign-up/in/out, a ticket, an order, my orders."""

from __future__ import annotations

import asyncio
import time
import uuid
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from ticketing_client import service
from ticketing_client.api import ApiUnavailable
from ticketing_client.deps import Page, PageDep
from ticketing_client.pages import (
    api_error_page,
    error_page,
    render,
    safe_next,
    seconds_left,
    see_other,
    sign_in_first,
)
from ticketing_client.service import Problems

router = APIRouter(include_in_schema=False)

FormText = Annotated[str, Form()]
# The test cards of the fake provider, as Stripe names them; the first is chosen by default.
TEST_CARDS = (
    ("tok_visa", "Visa ending 4242 (succeeds)"),
    ("tok_chargeDeclined", "Visa ending 0002 (declined)"),
)
OPEN_STATUSES = frozenset({"created", "awaiting:payment"})


def _uuid_or_none(value: str) -> str | None:
    # A malformed id cannot name anything: answer 404 here rather than asking the API.
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def _not_found(request: Request, page: Page) -> Response:
    return error_page(request, page, Problems(general=["We could not find that."]), 404, "Not found")


def _unavailable(request: Request, page: Page) -> Response:
    return error_page(request, page, Problems.unavailable(), 503, "Unavailable")


# --- tickets for sale ---


@router.get("/")
async def list_tickets(request: Request, page: PageDep, cursor: str | None = None) -> Response:
    """The tickets for sale, newest first, a page at a time."""
    try:
        response = await service.list_tickets(page.api, page.visitor, cursor=cursor)
    except ApiUnavailable:
        return render(request, page, "index.html", status_code=503, tickets=[], problems=Problems.unavailable())
    if not response.ok:
        return render(request, page, "index.html", status_code=200, tickets=[], problems=Problems.of(response))
    tickets = response.body if isinstance(response.body, list) else []
    return render(request, page, "index.html", tickets=tickets, next_cursor=response.next_cursor)


# --- sign up, sign in, sign out ---


def _auth_form(request: Request, page: Page, kind: str, **context: Any) -> Response:
    return render(request, page, "auth.html", kind=kind, **context)


@router.get("/auth/signup")
async def show_sign_up(request: Request, page: PageDep, next: str | None = None) -> Response:
    """The sign-up form."""
    return _auth_form(request, page, "signup", email="", next=safe_next(next))


@router.post("/auth/signup")
async def sign_up(
    request: Request, page: PageDep, email: FormText = "", password: FormText = "", next: FormText = "/"
) -> Response:
    """Create the account, relay its session cookie, and go where the visitor was headed."""
    return await _authenticate(request, page, "signup", email, password, next)


@router.get("/auth/signin")
async def show_sign_in(request: Request, page: PageDep, next: str | None = None) -> Response:
    """The sign-in form."""
    return _auth_form(request, page, "signin", email="", next=safe_next(next))


@router.post("/auth/signin")
async def sign_in(
    request: Request, page: PageDep, email: FormText = "", password: FormText = "", next: FormText = "/"
) -> Response:
    """Check the credentials, relay the session cookie, and go where the visitor was headed."""
    return await _authenticate(request, page, "signin", email, password, next)


async def _authenticate(request: Request, page: Page, kind: str, email: str, password: str, next: str) -> Response:
    call = service.sign_up if kind == "signup" else service.sign_in
    try:
        response = await call(page.api, page.visitor, email=email, password=password)
    except ApiUnavailable:
        problems = Problems.unavailable()
        return _auth_form(request, page, kind, status_code=503, email=email, next=safe_next(next), problems=problems)
    if response.ok:
        return see_other(safe_next(next), response)
    problems = Problems.of(response, ("email", "password"))
    status_code = response.status if response.status < 500 else 503
    return _auth_form(
        request, page, kind, status_code=status_code, email=email, next=safe_next(next), problems=problems
    )


@router.get("/auth/signout")
async def show_sign_out(request: Request, page: PageDep) -> Response:
    """A Sign out button (a GET never signs anyone out: a link on another site could)."""
    if page.user is None:
        return see_other("/")
    return render(request, page, "signout.html")


@router.post("/auth/signout")
async def sign_out(request: Request, page: PageDep) -> Response:
    """End the session and go home."""
    try:
        response = await service.sign_out(page.api, page.visitor)
    except ApiUnavailable:
        return _unavailable(request, page)
    return see_other("/", response)


# --- selling: a new ticket, editing one ---


def _price_or_problem(price: str) -> tuple[Any, str | None]:
    """The form's price as a JSON number, or the sentence that says why it is not one."""
    try:
        amount = Decimal(price.strip().lstrip("$").replace(",", ""))
    except InvalidOperation:
        return None, "Price must be a number, such as 20 or 12.50."
    if not amount.is_finite():
        return None, "Price must be a number, such as 20 or 12.50."
    # The API checks the range and the decimals; an int stays an int, so 20 is sent as 20, not 20.0.
    return (int(amount) if amount == amount.to_integral_value() else float(amount)), None


@router.get("/tickets/new")
async def show_new_ticket(request: Request, page: PageDep) -> Response:
    """The form to sell a ticket."""
    if page.user is None:
        return sign_in_first("/tickets/new")
    return render(request, page, "ticket_form.html", ticket=None, title="", price="")


@router.post("/tickets/new")
async def create_ticket(request: Request, page: PageDep, title: FormText = "", price: FormText = "") -> Response:
    """List the ticket, then show it."""
    if page.user is None:
        return sign_in_first("/tickets/new")
    return await _save_ticket(request, page, None, title, price)


async def _save_ticket(request: Request, page: Page, ticket: dict[str, Any] | None, title: str, price: str) -> Response:
    amount, price_problem = _price_or_problem(price)
    form = {"ticket": ticket, "title": title, "price": price}
    if price_problem:
        problems = Problems(fields={"price": price_problem})
        if not title.strip():
            problems.fields["title"] = "Title is required."
        return render(request, page, "ticket_form.html", status_code=400, problems=problems, **form)
    try:
        if ticket is None:
            response = await service.create_ticket(page.api, page.visitor, title=title, price=amount)
        else:
            response = await service.update_ticket(
                page.api, page.visitor, ticket_id=ticket["id"], title=title, price=amount
            )
    except ApiUnavailable:
        return render(request, page, "ticket_form.html", status_code=503, problems=Problems.unavailable(), **form)
    if response.status == 401 and page.user is None:
        return sign_in_first(request.url.path)
    if not response.ok:
        problems = Problems.of(response, ("title", "price"))
        status_code = response.status if response.status < 500 else 503
        return render(request, page, "ticket_form.html", status_code=status_code, problems=problems, **form)
    return see_other(f"/tickets/{response.body['id']}")


async def _load_ticket(request: Request, page: Page, id: str) -> dict[str, Any] | Response:
    ticket_id = _uuid_or_none(id)
    if ticket_id is None:
        return _not_found(request, page)
    try:
        response = await service.get_ticket(page.api, page.visitor, ticket_id=ticket_id)
    except ApiUnavailable:
        return _unavailable(request, page)
    if not response.ok or not isinstance(response.body, dict):
        return api_error_page(request, page, response)
    return response.body


@router.get("/tickets/{id}")
async def show_ticket(request: Request, page: PageDep, id: str) -> Response:
    """A ticket with its Purchase button (or, for its seller, an Edit link)."""
    ticket = await _load_ticket(request, page, id)
    if isinstance(ticket, Response):
        return ticket
    return render(request, page, "ticket.html", ticket=ticket)


@router.get("/tickets/{id}/edit")
async def show_edit_ticket(request: Request, page: PageDep, id: str) -> Response:
    """The form to change a ticket's title or price."""
    if page.user is None:
        return sign_in_first(f"/tickets/{id}/edit")
    ticket = await _load_ticket(request, page, id)
    if isinstance(ticket, Response):
        return ticket
    return render(request, page, "ticket_form.html", ticket=ticket, title=ticket["title"], price=ticket["price"])


@router.post("/tickets/{id}/edit")
async def update_ticket(
    request: Request, page: PageDep, id: str, title: FormText = "", price: FormText = ""
) -> Response:
    """Save the ticket's new title and price, then show it."""
    if page.user is None:
        return sign_in_first(f"/tickets/{id}/edit")
    ticket = await _load_ticket(request, page, id)
    if isinstance(ticket, Response):
        return ticket
    return await _save_ticket(request, page, ticket, title, price)


# --- buying: reserve, pay, my orders ---


@router.post("/tickets/{id}/purchase")
async def purchase_ticket(request: Request, page: PageDep, id: str) -> Response:
    """Reserve the ticket and go to the order, where the countdown runs."""
    if page.user is None:
        return sign_in_first(f"/tickets/{id}")
    ticket = await _load_ticket(request, page, id)
    if isinstance(ticket, Response):
        return ticket
    if ticket.get("userId") == page.user.get("id"):
        # The contract's rule, said before asking: the page offers its seller no Purchase button anyway.
        problems = Problems(general=["You cannot buy your own ticket."])
        return render(request, page, "ticket.html", status_code=400, ticket=ticket, problems=problems)
    try:
        response = await service.reserve_ticket(page.api, page.visitor, ticket_id=ticket["id"])
    except ApiUnavailable:
        return render(request, page, "ticket.html", status_code=503, ticket=ticket, problems=Problems.unavailable())
    if not response.ok:
        status_code = response.status if response.status < 500 else 503
        problems = Problems.of(response)
        return render(request, page, "ticket.html", status_code=status_code, ticket=ticket, problems=problems)
    return see_other(f"/orders/{response.body['id']}")


@router.get("/orders")
async def list_orders(request: Request, page: PageDep) -> Response:
    """The visitor's orders with their tickets and statuses."""
    if page.user is None:
        return sign_in_first("/orders")
    try:
        response = await service.list_orders(page.api, page.visitor)
    except ApiUnavailable:
        return render(request, page, "orders.html", status_code=503, orders=[], problems=Problems.unavailable())
    if not response.ok:
        return render(request, page, "orders.html", orders=[], problems=Problems.of(response))
    orders = response.body if isinstance(response.body, list) else []
    return render(request, page, "orders.html", orders=orders)


async def _order_page(
    request: Request, page: Page, id: str, problems: Problems | None = None, status_code: int = 200
) -> Response:
    order_id = _uuid_or_none(id)
    if order_id is None:
        return _not_found(request, page)
    try:
        response = await service.get_order(page.api, page.visitor, order_id=order_id)
    except ApiUnavailable:
        return _unavailable(request, page)
    if not response.ok or not isinstance(response.body, dict):
        return api_error_page(request, page, response)
    order = response.body
    left = seconds_left(order["expiresAt"]) if order["status"] in OPEN_STATUSES else 0
    return render(
        request,
        page,
        "order.html",
        status_code=status_code,
        order=order,
        seconds_left=left,
        expired=order["status"] in OPEN_STATUSES and left == 0,
        # The API does not say why an order was cancelled; past its window, it expired (or was given up too late
        # to matter).
        lapsed=order["status"] == "cancelled" and seconds_left(order["expiresAt"]) == 0,
        confirming=request.query_params.get("paid") == "1" and order["status"] in OPEN_STATUSES,
        cards=TEST_CARDS,
        problems=problems or Problems(),
    )


@router.get("/orders/{id}")
async def show_order(request: Request, page: PageDep, id: str) -> Response:
    """An order: the seconds left to pay, the pay form, and its status."""
    if page.user is None:
        return sign_in_first(f"/orders/{id}")
    return await _order_page(request, page, id)


@router.post("/orders/{id}/pay")
async def pay_order(request: Request, page: PageDep, id: str, token: FormText = "") -> Response:
    """Charge the card; once orders has heard of the payment, the order shows complete."""
    if page.user is None:
        return sign_in_first(f"/orders/{id}")
    order_id = _uuid_or_none(id)
    if order_id is None:
        return _not_found(request, page)
    if not token:
        return await _order_page(request, page, id, Problems(general=["Please choose a card."]), 400)
    try:
        response = await service.pay_order(page.api, page.visitor, order_id=order_id, token=token)
    except ApiUnavailable:
        return await _order_page(request, page, id, Problems.unavailable(), 503)
    if not response.ok:
        status_code = response.status if response.status < 500 else 503
        return await _order_page(request, page, id, Problems.of(response), status_code)
    await _wait_until_complete(page, order_id)
    return see_other(f"/orders/{order_id}?paid=1")


async def _wait_until_complete(page: Page, order_id: str) -> None:
    # payment.created reaches orders a moment after the charge: wait briefly so the page usually shows "Complete";
    # if it is slower, the order page says the payment is being confirmed and refreshes itself.
    deadline = time.monotonic() + page.settings.consistency_wait_seconds
    while time.monotonic() < deadline:
        try:
            response = await service.get_order(page.api, page.visitor, order_id=order_id)
        except ApiUnavailable:
            return
        if not response.ok or not isinstance(response.body, dict) or response.body.get("status") == "complete":
            return
        await asyncio.sleep(0.1)


@router.post("/orders/{id}/cancel")
async def cancel_order(request: Request, page: PageDep, id: str) -> Response:
    """Give the reservation up, so that someone else may buy the ticket."""
    if page.user is None:
        return sign_in_first(f"/orders/{id}")
    order_id = _uuid_or_none(id)
    if order_id is None:
        return _not_found(request, page)
    try:
        response = await service.cancel_order(page.api, page.visitor, order_id=order_id)
    except ApiUnavailable:
        return await _order_page(request, page, id, Problems.unavailable(), 503)
    if not response.ok:
        status_code = response.status if response.status < 500 else 503
        return await _order_page(request, page, id, Problems.of(response), status_code)
    return see_other(f"/orders/{order_id}")

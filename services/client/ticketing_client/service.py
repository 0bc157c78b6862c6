"""What the pages do with the REST API: one plain async function per call, and readable messages for its errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ticketing_client.api import ApiClient, ApiResponse, ApiUnavailable, Visitor

UNAVAILABLE = "The marketplace is unavailable right now. Please try again in a moment."
CATCHING_UP = (
    "This was only just created and not every part of the marketplace knows it yet. Please try again in a moment."
)
# What a status means to a person, when the API's own message does not say more.
STATUS_MESSAGES = {
    401: "Please sign in to do that.",
    402: "Your card was declined.",
    403: "You are not allowed to do that.",
    404: "We could not find that.",
    409: "Someone else changed this at the same moment. Please try again.",
    429: "Too many attempts. Please wait a little and try again.",
    500: "Something went wrong on our side. Please try again.",
}
# The API's sentences that are not yet a person's: its 401 applies to a session or to someone else's resource.
_REWORDED = {"Not authorized": "You are not allowed to do that.", "Not Found": "We could not find that."}


@dataclass
class Problems:
    """An API failure as a page shows it: messages beside their fields, and the rest above the form."""

    fields: dict[str, str] = field(default_factory=dict)
    general: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.fields or self.general)

    @classmethod
    def of(cls, response: ApiResponse, form_fields: tuple[str, ...] = ()) -> Problems:
        """The problems in an error response; a field error for a field the form lacks goes above the form."""
        problems = cls()
        for entry in response.errors():
            message = _REWORDED.get(entry["message"], entry["message"])
            if not message.endswith((".", "!", "?")):
                message += "."
            name = entry.get("field")
            if name in form_fields and name not in problems.fields:
                problems.fields[name] = message
            elif message not in problems.general:
                problems.general.append(message)
        if response.status >= 500:
            # A server error's body says nothing a person can act on (and must never be shown raw).
            problems.general = [CATCHING_UP if response.status == 503 else STATUS_MESSAGES[500]]
        elif not problems:
            problems.general.append(STATUS_MESSAGES.get(response.status, STATUS_MESSAGES[500]))
        if response.status == 429 and response.retry_after:
            problems.general = [f"Too many attempts. Please try again in {int(response.retry_after)} seconds."]
        return problems

    @classmethod
    def unavailable(cls) -> Problems:
        """The API could not be reached."""
        return cls(general=[UNAVAILABLE])


async def current_user(api: ApiClient, visitor: Visitor) -> dict[str, Any] | None:
    """The signed-in user ({id, email}), or None; a visitor without a session cookie costs no call."""
    if not visitor.session:
        return None
    try:
        response = await api.call("GET", "/api/users/currentuser", visitor)
    except ApiUnavailable:
        return None
    user = response.body.get("currentUser") if response.ok and isinstance(response.body, dict) else None
    return user if isinstance(user, dict) else None


async def sign_up(api: ApiClient, visitor: Visitor, *, email: str, password: str) -> ApiResponse:
    """POST /api/users/signup."""
    return await api.call("POST", "/api/users/signup", visitor, json={"email": email, "password": password})


async def sign_in(api: ApiClient, visitor: Visitor, *, email: str, password: str) -> ApiResponse:
    """POST /api/users/signin."""
    return await api.call("POST", "/api/users/signin", visitor, json={"email": email, "password": password})


async def sign_out(api: ApiClient, visitor: Visitor) -> ApiResponse:
    """POST /api/users/signout."""
    return await api.call("POST", "/api/users/signout", visitor)


async def list_tickets(api: ApiClient, visitor: Visitor, *, cursor: str | None = None) -> ApiResponse:
    """GET /api/tickets, one page; the response's next_cursor fetches the next."""
    params = {"cursor": cursor} if cursor else None
    return await api.call("GET", "/api/tickets", visitor, params=params)


async def get_ticket(api: ApiClient, visitor: Visitor, *, ticket_id: str) -> ApiResponse:
    """GET /api/tickets/{id}."""
    return await api.call("GET", f"/api/tickets/{ticket_id}", visitor)


async def create_ticket(api: ApiClient, visitor: Visitor, *, title: str, price: Any) -> ApiResponse:
    """POST /api/tickets."""
    return await api.call("POST", "/api/tickets", visitor, json={"title": title, "price": price})


async def update_ticket(api: ApiClient, visitor: Visitor, *, ticket_id: str, title: str, price: Any) -> ApiResponse:
    """PUT /api/tickets/{id}; waits out tickets holding the edit back while an order for it may be on its way."""
    body = {"title": title, "price": price}
    # A 503 changed nothing (the edit was rolled back), so sending it again is safe.
    return await api.call("PUT", f"/api/tickets/{ticket_id}", visitor, json=body, wait_for_consistency=True)


async def reserve_ticket(api: ApiClient, visitor: Visitor, *, ticket_id: str) -> ApiResponse:
    """POST /api/orders; waits out orders not yet having heard of a ticket that was just listed."""
    return await api.call("POST", "/api/orders", visitor, json={"ticketId": ticket_id}, wait_for_consistency=True)


async def list_orders(api: ApiClient, visitor: Visitor) -> ApiResponse:
    """GET /api/orders."""
    return await api.call("GET", "/api/orders", visitor)


async def get_order(api: ApiClient, visitor: Visitor, *, order_id: str) -> ApiResponse:
    """GET /api/orders/{id}."""
    return await api.call("GET", f"/api/orders/{order_id}", visitor)


async def cancel_order(api: ApiClient, visitor: Visitor, *, order_id: str) -> ApiResponse:
    """DELETE /api/orders/{id}."""
    return await api.call("DELETE", f"/api/orders/{order_id}", visitor)


async def pay_order(api: ApiClient, visitor: Visitor, *, order_id: str, token: str) -> ApiResponse:
    """POST /api/payments; waits out payments not yet having heard of an order that was just placed (the provider's
    idempotency key is the order id, so a retry never charges twice)."""
    body = {"orderId": order_id, "token": token}
    return await api.call("POST", "/api/payments", visitor, json=body, wait_for_consistency=True)

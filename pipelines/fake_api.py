"""A stand-in for Flavours' Customers List API, for the demo and the backfill tests.

``GET /users/customers`` answers what ``../shared/flavours/API.md`` records of the real one:
bearer-token auth (401 with Flavours' error envelope), ``page``/``per_page`` page numbers, and
``{"meta": {...}, "data": {<Laravel paginator>}}`` whose items are users with the customer
profile under ``userable``. Where the real API is undocumented it varies on purpose: timestamps
are epoch milliseconds on some items and ISO-8601 strings on others, and the paginator has no
``total`` or ``last_page``. ``faults`` makes given pages fail once each (tests).
"""

from __future__ import annotations

import random
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from flask import Flask, Response, jsonify, request

CREATED_FROM_MS = 1_690_000_000_000
"""Customers of the fake API were created from this instant on, one hour apart."""


@dataclass
class FakeCustomersApi:
    """The API's customers and its behaviour; ``app()`` serves it."""

    customers: int = 50
    token: str = "fake-api-token"  # noqa: S105 (a demo server's token, printed by fake-api)
    market_id: str | None = None
    seed: int = 1
    faults: dict[int, list[str]] = field(default_factory=dict)
    """Page number -> faults served once each, in order, before the page itself: ``429``
    (with ``Retry-After: 1``), ``500``, ``not-json``, ``no-data``, ``extra-field``, ``hang``
    (no answer until ``release`` is set, at most 60 s)."""
    requests: list[dict] = field(default_factory=list)
    """Every request's page, per_page and answer status, in order."""
    items: list[dict] = field(init=False)
    """The customers served, in order; tests may edit them between backfills."""
    release: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)  # noqa: S311 (demo data, reproducible by seed)
        self.items = [_item(rng, number) for number in range(self.customers)]

    def app(self) -> Flask:
        app = Flask(__name__)

        @app.get("/healthz")
        def healthz() -> Response:
            return jsonify({"status": "ok"})

        @app.get("/users/customers")
        def customers() -> Response | tuple[Response, int]:
            page = request.args.get("page", 1, type=int)
            per_page = request.args.get("per_page", 20, type=int)
            status = self._status(page)
            self.requests.append({"page": page, "per_page": per_page, "status": status})
            if request.headers.get("Authorization") != f"Bearer {self.token}":
                self.requests[-1]["status"] = 401
                return _error(401, "Unauthenticated.")
            if self.market_id and request.args.get("filter[market_id]") != self.market_id:
                self.requests[-1]["status"] = 422
                return _error(422, "The filter.market_id field is required.")
            fault = self.faults.get(page, []).pop(0) if self.faults.get(page) else None
            if fault == "hang":
                self.release.wait(60)
            if fault == "429":
                answer = _error(429, "Too Many Attempts.")
                answer[0].headers["Retry-After"] = "1"
                return answer
            if fault == "500":
                return _error(500, "Internal server error.")
            if fault == "not-json":
                return Response("<html>Bad gateway</html>", status=200, mimetype="text/html")
            if fault == "no-data":
                return jsonify({"meta": {"code": 200, "status": "success", "message": "OK"}})
            items = self.items
            chosen = items[(page - 1) * per_page : page * per_page]
            if fault == "extra-field":
                chosen = [{**item, "loyalty_tier": "gold"} for item in chosen]
            return jsonify(_page(request.base_url, page, per_page, chosen, len(items)))

        return app

    def _status(self, page: int) -> int:
        pending = self.faults.get(page)
        return {"429": 429, "500": 500}.get(pending[0], 200) if pending else 200


def _error(code: int, message: str) -> tuple[Response, int]:
    return jsonify({"meta": {"code": code, "status": "error", "message": message}, "data": None}), (
        code
    )


def _page(url: str, page: int, per_page: int, items: list[dict], total: int) -> dict:
    more = page * per_page < total
    return {
        "meta": {"code": 200, "status": "success", "message": "OK"},
        "data": {
            "current_page": page,
            "data": items,
            "first_page_url": f"{url}?page=1",
            "from": (page - 1) * per_page + 1 if items else None,
            "next_page_url": f"{url}?page={page + 1}" if more else None,
            "path": url,
            "per_page": per_page,
            "prev_page_url": f"{url}?page={page - 1}" if page > 1 else None,
            "to": (page - 1) * per_page + len(items) if items else None,
        },
    }


def _item(rng: random.Random, number: int) -> dict:
    """One user of role CUSTOMER with its profile under ``userable`` (the list's nesting)."""
    customer_id = str(uuid.UUID(int=rng.getrandbits(128)))
    created_ms = CREATED_FROM_MS + number * 3_600_000
    updated_ms = created_ms + rng.randrange(0, 30 * 86_400_000)
    iso = number % 2 == 1  # undocumented: half the items carry ISO-8601 timestamps

    def stamp(ms: int) -> int | str:
        if not iso:
            return ms
        return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")

    return {
        "id": str(uuid.UUID(int=rng.getrandbits(128))),
        "userable_id": customer_id,
        "userable_type": "App\\Models\\Customer",
        "role": "CUSTOMER",
        "name": f"Customer {number}",
        "username": None,
        "email": f"customer{number}@example.com",
        "phone_prefix": "966",
        "phone": f"5{rng.randrange(10**7, 10**8)}",
        "lang": rng.choice(("en", "ar")),
        "fcm_token": f"device-{rng.getrandbits(32):08x}",
        "is_active": rng.random() > 0.1,
        "email_verified_at": stamp(updated_ms) if rng.random() > 0.5 else None,
        "phone_verified_at": None,
        "created_at": stamp(created_ms),
        "updated_at": stamp(updated_ms),
        "deleted_at": None,
        "userable": {
            "id": customer_id,
            "created_by": None,
            "qoyod_id": None,
            "type": rng.choice(("individual", "company")),
            "gender": rng.choice(("male", "female")),
            "tax_number": None,
            "zip_code": None,
            "city": rng.choice(("Riyadh", "Jeddah", "Dammam")),
            "district": None,
            "street": None,
            "crn": None,
        },
    }

"""The initial sync: every customer the Flavours Customers List API knows, landed as snapshots.

``GET <FLAVOURS_API_URL>/users/customers`` (bearer token, page numbers, ``includes[]=userable``,
``filter[market_id]``) is paged through with dlt's REST client, which retries 429 and 5xx
answers with backoff and honours ``Retry-After``. Each page becomes one landed object under
``customers_snapshot/``: one envelope line per customer (``source: "api"``), whose ``payload``
is a customer event in the webhook's shape (``action: customers.SNAPSHOT``, ``timestamp`` the
moment the page was fetched, the profile as ``data`` with the user under ``data.user``) and
whose ``api_item`` is the item exactly as the API sent it.

Resumable: the landed pages are the progress. Each page's object is named after its run and
page number (``...-api.<run>-<page>.jsonl``), and a finished run lands an end marker named the
same way under ``_backfill/``; a run cut off before that is continued after its last landed
page, with the options it started with (``...-api_start.<run>-00000000.jsonl`` under
``_backfill/``), because its page numbers count pages of that size and filter. Event ids
(``xid``) are derived from the run and the customer, so a page fetched twice is staged once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dlt.sources.helpers.requests import Client
from dlt.sources.helpers.rest_client import RESTClient
from dlt.sources.helpers.rest_client.auth import BearerTokenAuth
from dlt.sources.helpers.rest_client.paginators import PageNumberPaginator
from requests import HTTPError, RequestException, Response

from core.landing import LandingStore
from core.settings import Settings

log = logging.getLogger(__name__)

SNAPSHOT_TOPIC = "customers_snapshot"
STATE_PREFIX = "_backfill"
PAGE_KEY = re.compile(r"-api\.(?P<run>\d{8}T\d{12}Z)-(?P<page>\d{8})\.jsonl(\.gz)?$")
START_KEY = re.compile(r"-api_start\.(?P<run>\d{8}T\d{12}Z)-\d{8}\.jsonl(\.gz)?$")
ENDPOINT = "users/customers"
PER_PAGE = 100
XID_NAMESPACE = uuid.UUID("8f6d1c2e-4b7a-4f0e-9a51-3c2d7e6b9f10")

USER_FIELDS = (
    "id",
    "userable_id",
    "role",
    "name",
    "username",
    "email",
    "phone_prefix",
    "phone",
    "lang",
    "fcm_token",
    "is_active",
    "email_verified_at",
    "phone_verified_at",
    "created_at",
    "updated_at",
    "deleted_at",
)
"""The user's fields, as the webhook's ``data.user`` carries them."""
PROFILE_FIELDS = (
    "id",
    "created_by",
    "qoyod_id",
    "type",
    "gender",
    "tax_number",
    "zip_code",
    "city",
    "district",
    "street",
    "crn",
)
"""The customer profile's fields, as the webhook's ``data`` carries them."""
TIMESTAMP_FIELDS = frozenset(
    {"created_at", "updated_at", "deleted_at", "email_verified_at", "phone_verified_at"}
)
KNOWN_ITEM_FIELDS = frozenset({*USER_FIELDS, "userable_type", "userable"})


class BackfillError(RuntimeError):
    """The backfill stopped; the message says why and what to do. Pages landed before it stay
    landed, and the next run resumes after them."""


@dataclass
class BackfillResult:
    run_id: str
    pages: int = 0
    customers: int = 0
    skipped_before_since: int = 0
    resumed_from_page: int | None = None
    unexpected_fields: Counter = field(default_factory=Counter)
    unusable_items: int = 0
    """Items without a usable customer id: landed all the same, and rejected by the load."""


class LaravelPaginator(PageNumberPaginator):
    """Page numbers from ``start_page`` on; stops on an empty page or a null ``next_page_url``
    (the Laravel paginator's last page; ``total`` and ``last_page`` are not promised)."""

    def __init__(self, start_page: int) -> None:
        super().__init__(base_page=1, page=start_page, page_param="page", total_path=None)

    def update_state(self, response: Response, data: list[Any] | None = None) -> None:
        super().update_state(response, data)
        body = response.json()
        page = body.get("data") if isinstance(body, dict) else None
        if isinstance(page, dict) and "next_page_url" in page and page["next_page_url"] is None:
            self._has_next_page = False


def backfill(
    settings: Settings,
    *,
    since: datetime | None = None,
    per_page: int = PER_PAGE,
    restart: bool = False,
    on_page: Callable[[int, int], None] | None = None,
) -> BackfillResult:
    """Land every customer the API lists (updated at or after ``since``, if given) and return
    what was done; ``on_page(page, customers)`` is called after each landed page."""
    if not settings.api_url:
        raise BackfillError("FLAVOURS_API_URL is not set: the Customers API's base URL")
    if settings.api_token is None:
        raise BackfillError("FLAVOURS_API_TOKEN is not set: the Customers API's bearer token")
    store = LandingStore(settings.landing_url, settings.landing_compression)
    options = {
        "per_page": per_page,
        "market_id": settings.market_id,
        "since": since.isoformat() if since else None,
    }
    unfinished = None if restart else _unfinished_run(store)
    if unfinished:
        run_id, last_page = unfinished
        started_with = _start_options(store, run_id)
        if started_with is not None and started_with != options:
            raise BackfillError(
                f"backfill {run_id} was cut off after page {last_page}, and it started with "
                f"{_describe(started_with)}, not {_describe(options)}: its pages count pages of "
                "that size and filter, so run it again with those options to finish it, or pass "
                "--restart to start a new run at page 1"
            )
        start_page = last_page + 1
        result = BackfillResult(run_id, resumed_from_page=start_page)
        log.info(f"resuming backfill {run_id} at page {start_page}")
    else:
        result = BackfillResult(f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}")
        start_page = 1
        start_key = store.object_key(
            STATE_PREFIX, datetime.now(UTC), f"api_start.{result.run_id}", 0
        )
        store.land_batch(start_key, [json.dumps({"run": result.run_id, **options}).encode()])
    params: dict[str, Any] = {"per_page": per_page, "includes[]": "userable"}
    if settings.market_id:
        params["filter[market_id]"] = settings.market_id
    client = RESTClient(
        base_url=settings.api_url.rstrip("/") + "/",
        auth=BearerTokenAuth(settings.api_token.get_secret_value()),
        session=Client(
            raise_for_status=False,
            request_timeout=settings.api_timeout_s,
            request_max_attempts=settings.api_max_attempts,
            request_backoff_factor=1,
            request_max_retry_delay=60,
        ).session,
    )
    page = start_page
    try:
        for items in _pages(client, params, start_page):
            lines = []
            fetched_at = datetime.now(UTC)
            unusable_before = result.unusable_items
            for number, item in enumerate(items, 1):
                try:
                    event, unexpected = to_snapshot_event(item, fetched_at, result.run_id)
                except ValueError as error:
                    # landed anyway: the load rejects it into raw.customer_events_rejected with
                    # the item as sent, and the run goes on instead of failing this page forever
                    event, unexpected = _unusable_item_event(item, fetched_at, result.run_id), set()
                    result.unusable_items += 1
                    log.warning(
                        f"page {page}, item {number}: {error}; landed for "
                        "raw.customer_events_rejected"
                    )
                result.unexpected_fields.update(unexpected)
                if since is not None and _updated_before(event, since):
                    result.skipped_before_since += 1
                    continue
                lines.append(_envelope(event, item, fetched_at))
            # landed even when empty (all before --since): the page is the run's progress
            key = store.object_key(SNAPSHOT_TOPIC, fetched_at, f"api.{result.run_id}", page)
            store.land_batch(key, lines)
            result.pages += 1
            result.customers += len(lines) - (result.unusable_items - unusable_before)
            page += 1
            if on_page:
                on_page(page - 1, result.customers)
    except HTTPError as error:
        raise BackfillError(_explain(error, page)) from error
    except RequestException as error:  # refused, reset or timed out, after the retries
        raise BackfillError(
            f"could not reach {settings.api_url}/{ENDPOINT} for page {page} after "
            f"{settings.api_max_attempts} attempts: {error}. {_resume_hint(page)}"
        ) from error
    except ValueError as error:  # not JSON, or not the documented shape
        raise BackfillError(
            f"page {page} of {settings.api_url}/{ENDPOINT} is not the documented response: "
            f"{error}. {_resume_hint(page)}"
        ) from error
    # the run's end marker, named like its pages: _backfill/dt=.../<time>-api.<run>-<pages>.jsonl
    done_key = store.object_key(STATE_PREFIX, datetime.now(UTC), f"api.{result.run_id}", page - 1)
    store.land_batch(done_key, [json.dumps({"run": result.run_id, "pages": page - 1}).encode()])
    for name, count in sorted(result.unexpected_fields.items()):
        log.warning(f"the API sent a field this connector does not map: {name} ({count} items)")
    return result


def _pages(client: RESTClient, params: dict, start_page: int) -> Iterator[list[dict]]:
    for page in client.paginate(
        ENDPOINT,
        params=params,
        paginator=LaravelPaginator(start_page),
        data_selector="data.data",
        hooks={"response": [_check_response]},
    ):
        yield list(page)


def _check_response(response: Response, *args: Any, **kwargs: Any) -> None:
    """Fail on an error status (after the retries) and on a page without ``data.data``."""
    if response.status_code >= 400:
        response.raise_for_status()
    try:
        body = response.json()
    except ValueError as error:
        raise ValueError(f"not JSON ({response.headers.get('content-type')})") from error
    if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
        raise ValueError("no `data` object")
    if not isinstance(body["data"].get("data"), list):
        raise ValueError("no `data.data` list of customers")


def _explain(error: HTTPError, page: int) -> str:
    status = error.response.status_code if error.response is not None else None
    resume = _resume_hint(page)
    if status == 401:
        return f"the Customers API refused FLAVOURS_API_TOKEN (401 Unauthenticated). {resume}"
    if status == 403:
        return (
            "the Customers API refused access (403): a SUBSCRIBER token needs "
            f"FLAVOURS_MARKET_ID. {resume}"
        )
    if status == 422:
        return f"the Customers API rejected the request (422; FLAVOURS_MARKET_ID?). {resume}"
    return f"the Customers API answered {status} on page {page} after retries. {resume}"


def _resume_hint(page: int) -> str:
    if page == 1:
        return "Nothing was landed."
    return f"Pages before {page} are landed; the next run resumes at page {page}."


def to_snapshot_event(item: dict, observed: datetime, run_id: str) -> tuple[dict, set[str]]:
    """The webhook-shaped event of one API item, and the item's fields this does not map."""
    if not isinstance(item, dict):
        raise ValueError(f"a customer item is not an object: {str(item)[:80]}")
    profile = item.get("userable") if isinstance(item.get("userable"), dict) else {}
    customer_id = _customer_id(item)
    if not isinstance(customer_id, str) or not customer_id:
        raise ValueError("a customer item has neither userable.id nor userable_id")
    user = {name: _timestamp(name, item[name]) for name in USER_FIELDS if name in item}
    data = {name: profile[name] for name in PROFILE_FIELDS if name in profile}
    data["id"] = customer_id
    data["user"] = user
    unexpected = {name for name in item if name not in KNOWN_ITEM_FIELDS}
    unexpected |= {f"userable.{name}" for name in profile if name not in PROFILE_FIELDS}
    event = {
        "xid": str(uuid.uuid5(XID_NAMESPACE, f"{run_id}:{customer_id}")),
        "action": "customers.SNAPSHOT",
        "timestamp": int(observed.timestamp() * 1000),
        "data": data,
    }
    return event, unexpected


def _customer_id(item: dict) -> Any:
    """The customer id as sent: ``userable.id``, else ``userable_id`` (maybe not a string)."""
    profile = item.get("userable")
    return (profile.get("id") if isinstance(profile, dict) else None) or item.get("userable_id")


def _unusable_item_event(item: Any, observed: datetime, run_id: str) -> dict:
    """A snapshot event for an item ``to_snapshot_event`` refused: its ``data.id`` is missing or
    not a string, which the load's checks reject and explain; ``api_item`` keeps the item."""
    customer_id = _customer_id(item) if isinstance(item, dict) else None
    body = json.dumps(item, sort_keys=True, separators=(",", ":"), default=str)
    data: dict[str, Any] = {"user": {}}
    if customer_id is not None:
        data["id"] = customer_id
    return {
        "xid": str(uuid.uuid5(XID_NAMESPACE, f"{run_id}:unusable:{body}")),
        "action": "customers.SNAPSHOT",
        "timestamp": int(observed.timestamp() * 1000),
        "data": data,
    }


def _timestamp(name: str, value: Any) -> Any:
    """Epoch milliseconds for a timestamp field sent as seconds, milliseconds or ISO-8601; any
    other value as it came (staging reads a value it cannot read as NULL)."""
    if name not in TIMESTAMP_FIELDS or value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, int | float):
        return int(value * 1000) if abs(value) < 10**11 else int(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            return value
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return int(parsed.timestamp() * 1000)
    return value


def _updated_before(event: dict, since: datetime) -> bool:
    updated = event["data"]["user"].get("updated_at")
    return isinstance(updated, int) and updated < since.timestamp() * 1000


def _envelope(event: dict, item: dict, fetched_at: datetime) -> bytes:
    body = json.dumps(item, separators=(",", ":")).encode()
    return json.dumps(
        {
            "v": 1,
            "topic": SNAPSHOT_TOPIC,
            "source": "api",
            "received_at": fetched_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "request_id": str(uuid.uuid4()),
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "payload": event,
            "api_item": item,
        },
        separators=(",", ":"),
    ).encode()


def _start_options(store: LandingStore, run_id: str) -> dict[str, Any] | None:
    """The options run ``run_id`` started with (None for a run from before they were kept)."""
    for obj in store.list_objects(STATE_PREFIX):
        if (match := START_KEY.search(obj.key)) and match["run"] == run_id:
            for line in store.iter_lines(obj.key):
                recorded = json.loads(line)
                return {name: recorded.get(name) for name in ("per_page", "market_id", "since")}
    return None


def _describe(options: dict[str, Any]) -> str:
    return (
        f"--per-page {options['per_page']}, --since {options['since'] or '(none)'}, "
        f"FLAVOURS_MARKET_ID {options['market_id'] or '(none)'}"
    )


def _unfinished_run(store: LandingStore) -> tuple[str, int] | None:
    """The newest run with landed pages and no end marker, and its last landed page."""
    markers = (PAGE_KEY.search(obj.key) for obj in store.list_objects(STATE_PREFIX))
    done = {marker["run"] for marker in markers if marker}
    last_pages: dict[str, int] = {}
    for obj in store.list_objects(SNAPSHOT_TOPIC):
        if match := PAGE_KEY.search(obj.key):
            run, page = match["run"], int(match["page"])
            last_pages[run] = max(page, last_pages.get(run, 0))
    runs = sorted(run for run in last_pages if run not in done)
    return (runs[-1], last_pages[runs[-1]]) if runs else None

"""Write landing objects in the documented layout, as the receiver would, for pipeline tests."""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import uuid
from datetime import UTC, datetime, timedelta

from cli.sending import documented_example
from core.landing import LandingStore

_seq = itertools.count(1)
EXAMPLE = documented_example()


def envelope(
    payload: object, topic: str = "customers", received_at: datetime | None = None
) -> bytes:
    """One landing line holding ``payload`` (any JSON value, to test bad input too)."""
    body = json.dumps(payload).encode()
    received = (received_at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return json.dumps(
        {
            "v": 1,
            "topic": topic,
            "received_at": received,
            "request_id": str(uuid.uuid4()),
            "source_ip": "127.0.0.1",
            "headers": {"content-type": "application/json"},
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "payload": payload,
        }
    ).encode()


def land(
    store: LandingStore,
    lines: list[bytes],
    topic: str = "customers",
    batch_time: datetime | None = None,
    writer: str = "test",
) -> str:
    """Land ``lines`` as one object; ``batch_time`` sets the name's time (clock skew tests)."""
    key = store.object_key(topic, batch_time or datetime.now(UTC), writer, next(_seq))
    store.land_batch(key, lines)
    return key


def customer_event(
    customer_id: str,
    action: str = "CREATE",
    ts_ms: int = 1_700_000_000_000,
    xid: str | None = None,
    **user: object,
) -> dict:
    """A Flavours customer event shaped like the documented example."""
    event = copy.deepcopy(EXAMPLE)
    event["xid"] = xid or str(uuid.uuid4())
    event["action"] = f"customers.{action}"
    event["timestamp"] = ts_ms
    event["data"]["id"] = customer_id
    event["data"]["user"]["userable_id"] = customer_id
    event["data"]["user"].update(user)
    return event


def days_ago(days: int) -> datetime:
    return datetime.now(UTC) - timedelta(days=days)

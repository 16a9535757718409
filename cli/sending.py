"""``flavours send``: synthetic Flavours customer events, delivered the way Flavours does.

Events follow the documented payload (``customers.CREATE`` example): each customer is created,
updated (sometimes with partial payloads), sometimes deleted and re-created. Delivery can be
shuffled (out of order) and include duplicates (same ``xid`` again). Like Flavours, a delivery
that times out or gets a non-2xx answer is retried with backoff.
"""

from __future__ import annotations

import contextlib
import copy
import json
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib.resources import files

import requests

EXAMPLE = json.loads(files("cli").joinpath("samples/customer-create.json").read_text())
FIRST_NAMES = ("Noura", "Fahad", "Sara", "Omar", "Layla", "Khalid", "Huda", "Yousef", "Reem")
CITIES = ("Riyadh", "Jeddah", "Dammam", "Mecca", "Medina", "Khobar", "Tabuk", "Abha")


def documented_example() -> dict:
    """The documented ``customers.CREATE`` example, field for field."""
    return copy.deepcopy(EXAMPLE)


def synthetic_events(
    customers: int,
    events: int,
    *,
    seed: int = 7,
    start_ms: int = 1_735_689_600_000,
) -> list[dict]:
    """``events`` customer events over ``customers`` customers, in event-time order per customer.

    Every customer starts with a CREATE; later events are UPDATEs (a third of them partial:
    only the changed keys), DELETEs, and CREATEs that re-create a deleted customer.
    """
    rng = random.Random(seed)
    stream: list[dict] = []
    state: dict[int, dict] = {}
    clock = dict.fromkeys(range(customers), start_ms)
    deleted: set[int] = set()
    for n in range(events):
        customer = n if n < customers else rng.randrange(customers)
        clock[customer] += rng.randrange(60_000, 86_400_000)
        if customer not in state:
            state[customer] = _new_customer(rng, customer)
            action, data = "CREATE", copy.deepcopy(state[customer])
        elif customer in deleted:
            deleted.discard(customer)
            action, data = "CREATE", copy.deepcopy(state[customer])
        elif rng.random() < 0.08:
            deleted.add(customer)
            action, data = "DELETE", copy.deepcopy(state[customer])
        else:
            action, data = "UPDATE", _update(rng, state[customer])
        stream.append(
            {
                "xid": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "action": f"customers.{action}",
                "timestamp": clock[customer],
                "data": data,
            }
        )
    return stream


def _new_customer(rng: random.Random, number: int) -> dict:
    data = documented_example()["data"]
    customer_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    first = rng.choice(FIRST_NAMES)
    data.update(id=customer_id, city=rng.choice(CITIES), gender=rng.choice(("male", "female")))
    data["user"].update(
        id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        userable_id=customer_id,
        name=f"{first} {number}",
        email=f"{first.lower()}.{number}@example.com",
        phone=f"5{rng.randrange(10**7, 10**8)}",
        lang=rng.choice(("en", "ar")),
    )
    return data


def _update(rng: random.Random, current: dict) -> dict:
    """Change one or two attributes; a third of updates send only what changed."""
    change = rng.choice(("city", "name", "phone", "lang", "is_active", "email_verified_at"))
    if change == "city":
        current["city"] = rng.choice(CITIES)
    elif change == "email_verified_at":
        current["user"]["email_verified_at"] = rng.randrange(1_700_000_000_000, 1_800_000_000_000)
    elif change == "is_active":
        current["user"]["is_active"] = not current["user"]["is_active"]
    elif change == "lang":
        current["user"]["lang"] = "ar" if current["user"]["lang"] == "en" else "en"
    elif change == "name":
        current["user"]["name"] = f"{rng.choice(FIRST_NAMES)} {current['user']['name'].split()[-1]}"
    else:
        current["user"]["phone"] = f"5{rng.randrange(10**7, 10**8)}"
    if rng.random() < 1 / 3:
        partial: dict = {"id": current["id"]}
        if change == "city":
            partial["city"] = current["city"]
        else:
            partial["user"] = {change: current["user"][change]}
        return partial
    return copy.deepcopy(current)


def delivery_order(
    events: Sequence[dict], *, duplicates: float = 0.0, shuffle: bool = False, seed: int = 7
) -> list[dict]:
    """The deliveries: each event once, plus a ``duplicates`` share again, maybe shuffled."""
    rng = random.Random(seed + 1)
    deliveries = list(events)
    deliveries += [rng.choice(events) for _ in range(round(len(events) * duplicates))]
    if shuffle:
        rng.shuffle(deliveries)
    return deliveries


@dataclass
class SendReport:
    """How a send went: deliveries acked, deliveries that failed every retry, attempts made."""

    acked: int = 0
    failed: int = 0
    attempts: int = 0
    seconds: float = 0.0
    statuses: dict[int, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, status: int, acked: bool | None = None) -> None:
        with self._lock:
            self.attempts += 1
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if acked is True:
                self.acked += 1
            elif acked is False:
                self.failed += 1


def send_events(
    url: str,
    deliveries: Sequence[dict],
    *,
    rate: float = 0.0,
    concurrency: int = 8,
    retries: int = 5,
    timeout_s: float = 10.0,
    backoff_s: float = 0.2,
    on_done: Callable[[], None] | None = None,
) -> SendReport:
    """POST every delivery to ``url``, retrying timeouts and non-2xx answers like Flavours.

    ``rate`` caps deliveries per second (0: as fast as ``concurrency`` allows). Status 0 in the
    report counts connection errors and timeouts.
    """
    report = SendReport()
    local = threading.local()
    pacing = _Pacer(rate)
    started = time.perf_counter()

    def deliver(event: dict) -> None:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        body = json.dumps(event).encode()
        for attempt in range(retries + 1):
            pacing.wait()
            try:
                response = session.post(
                    url,
                    data=body,
                    headers={"Content-Type": "application/json"},
                    timeout=timeout_s,
                )
                status = response.status_code
            except requests.RequestException:
                status = 0
            if 200 <= status < 300:
                report.record(status, acked=True)
                break
            last = attempt == retries
            report.record(status, acked=False if last else None)
            if not last:
                time.sleep(backoff_s * 2**attempt)
        if on_done:
            on_done()

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(deliver, deliveries))
    report.seconds = time.perf_counter() - started
    return report


class _Pacer:
    """Spaces calls to at most ``rate`` per second across threads (no limit when 0)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1 / rate if rate > 0 else 0.0
        self.next_at = time.perf_counter()
        self.lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self.lock:
            now = time.perf_counter()
            slot = max(self.next_at, now)
            self.next_at = slot + self.interval
        if slot > now:
            time.sleep(slot - now)


@contextlib.contextmanager
def progress_bar(total: int, enabled: bool) -> Iterator[Callable[[], None]]:
    """A tqdm progress bar's update callback (a no-op when disabled)."""
    from tqdm import tqdm

    with tqdm(total=total, unit="event", disable=not enabled, smoothing=0.1) as bar:
        yield lambda: bar.update(1)

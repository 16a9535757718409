"""Actions on customer events, each at most once per rule and customer version: the outbox.

``ops.customer_actions`` holds one row per (rule, version of ``analytics.dim_customer``), keyed
by ``action_id = md5(rule || ':' || customer_sk)``. ``customer_sk`` is stable across runs,
replays and full rebuilds, so a version is planned once, whatever happens to the deliveries.
The event of a version comes from the dimension, never from raw deliveries: the first version
is ``created``, a tombstone ``deleted``, a version after a tombstone ``reactivated``, any other
``updated``.

``dispatch`` plans the versions no row exists for yet (``pending``, or ``skipped`` with the
reason: another event, filtered out, older than the rule's ``max_age`` when first seen), sends
the due rows in batches without holding the warehouse's writer lock, and records each batch's
outcomes: ``sent``, ``failed`` (retried after a backoff) or ``dead`` (a permanent failure, or
``FLAVOURS_ACTIONS_MAX_ATTEMPTS`` attempts). A crash between a send and its record resends that
batch once: delivery is at least once, and the e-mail's ``Message-ID`` and the webhook's
``webhook-id`` carry ``action_id`` so receivers can drop a resend.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import pyarrow as pa

from core.settings import Settings
from pipelines.actions.rules import CUSTOMER_FIELDS, Rule, Rules, load_rules
from pipelines.actions.senders import (
    EmailSender,
    PermanentFailure,
    TemporaryFailure,
    WebhookSender,
)
from warehouse import lake

log = logging.getLogger(__name__)

OUTBOX = "ops.customer_actions"
STATUSES = ("pending", "failed", "sent", "dead", "skipped")
BATCH_SIZE = 500
"""Actions sent between two records of their outcomes: what a crash may resend."""
MAX_RETRY_DELAY = timedelta(hours=1)

OUTBOX_DDL = f"""
create table if not exists {OUTBOX} (
    action_id varchar not null,
    rule varchar not null,
    event varchar,
    customer_sk varchar not null,
    customer_id varchar not null,
    version integer not null,
    valid_from timestamptz not null,
    status varchar not null,
    skip_reason varchar,
    attempts integer not null,
    last_error varchar,
    planned_at timestamptz not null,
    next_attempt_at timestamptz,
    sent_at timestamptz,
    updated_at timestamptz not null
)
"""

EVENT_OF_VERSION = """
    case
        when is_deleted and coalesce(previous_deleted, false) then null
        when is_deleted then 'deleted'
        when previous_deleted is null then 'created'
        when previous_deleted then 'reactivated'
        else 'updated'
    end
"""
"""A version's event, from the deleted state of the customer's version before it."""


@dataclass
class DispatchReport:
    """What one ``dispatch`` did."""

    configured: bool = True
    busy: bool = False
    planned: Counter = field(default_factory=Counter)
    """New outbox rows by status (``pending``, ``skipped``)."""
    outcomes: Counter = field(default_factory=Counter)
    """Sends by outcome (``sent``, ``failed``, ``dead``)."""
    seconds: float = 0.0

    def line(self) -> str:
        if not self.configured:
            return "actions: FLAVOURS_ACTIONS_FILE is not set, nothing to do"
        if self.busy:
            return "actions: another dispatcher is running, nothing done"
        planned = ", ".join(f"{n:,} {s}" for s, n in sorted(self.planned.items())) or "none"
        sent = ", ".join(f"{n:,} {s}" for s, n in sorted(self.outcomes.items())) or "none due"
        return f"actions: planned {planned}; sent {sent} ({self.seconds:.1f} s)"


@dataclass(frozen=True)
class Due:
    """A row to send, with the customer version it is about (None: the version is gone)."""

    action_id: str
    rule: str
    customer_id: str
    event: str
    attempts: int
    customer: dict[str, Any] | None


def ensure_outbox(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("create schema if not exists ops")
    con.execute(OUTBOX_DDL)


def plan(con: duckdb.DuckDBPyConnection, rules: Rules, now: datetime) -> Counter:
    """Add a row for each (rule, dimension version) without one; returns the rows by status."""
    planned: Counter = Counter()
    for rule in rules:
        predicate, params = _matches(rule)
        cutoff = now - rule.max_age if rule.max_age is not None else None
        age = f"older than max_age {rule.max_age} when first seen" if rule.max_age else None
        con.execute(
            f"""
            insert into {OUTBOX}
            with unplanned as (
                select customer_sk from analytics.dim_customer
                except
                select customer_sk from {OUTBOX} where rule = $rule
            ),
            versions as (
                select *, lag(is_deleted) over (
                    partition by customer_id order by valid_from
                ) as previous_deleted
                from analytics.dim_customer
                where customer_id in (
                    select customer_id from analytics.dim_customer semi join unplanned
                    using (customer_sk)
                )
            ),
            classified as (
                select
                    *,
                    {EVENT_OF_VERSION} as event,
                    coalesce({predicate}, false) as wanted
                from versions semi join unplanned using (customer_sk)
            ),
            decided as (
                select
                    *,
                    case
                        when event is null or not list_contains($events, event)
                            then 'not ' || array_to_string($events, ' or ')
                        when event = 'created' and customer_id in (
                            select customer_id from {OUTBOX}
                            where rule = $rule and event = 'created'
                        ) then 'created was planned already (an earlier event arrived late)'
                        when not wanted then 'filtered out by where/require'
                        when $cutoff is not null and valid_from < $cutoff then $age
                    end as skip_reason
                from classified
            )
            select
                md5($rule || ':' || customer_sk),
                $rule,
                event,
                customer_sk,
                customer_id,
                version,
                valid_from,
                if(skip_reason is null, 'pending', 'skipped'),
                skip_reason,
                0,
                null,
                $now,
                if(skip_reason is null, $now, null),
                null,
                $now
            from decided
            """,  # noqa: S608 (names are ours; the rule's values are parameters)
            {
                "rule": rule.name,
                "events": list(rule.on),
                "cutoff": cutoff,
                "age": age,
                "now": now,
                **params,
            },
        )
        # DuckLake takes no RETURNING: this plan's rows are those planned at `now`
        rows = con.execute(
            f"select status, count(*) from {OUTBOX} where rule = ? and planned_at = ? group by all",  # noqa: S608
            [rule.name, now],
        ).fetchall()
        planned.update(dict(rows))
    return planned


def _matches(rule: Rule) -> tuple[str, dict[str, Any]]:
    """The SQL predicate of a rule's ``where`` and ``require``, and its parameters."""
    terms, params = ["true"], {}
    for number, (name, wanted) in enumerate(sorted(rule.where.items())):
        values = wanted if isinstance(wanted, list) else [wanted]
        alternatives = []
        for index, value in enumerate(values):
            if value is None:
                alternatives.append(f'"{name}" is null')
            else:
                params[f"w{number}_{index}"] = value
                alternatives.append(f'"{name}" = $w{number}_{index}')
        terms.append("(" + " or ".join(alternatives) + ")")
    terms.extend(f'"{name}" is not null' for name in rule.required)
    return " and ".join(terms), params


def due(con: duckdb.DuckDBPyConnection, rules: Rules, now: datetime, limit: int) -> list[Due]:
    """The pending and failed rows of the configured rules whose time has come, oldest first."""
    columns = ", ".join(f'd."{name}"' for name in CUSTOMER_FIELDS)
    rows = con.execute(
        f"""
        select
            a.action_id, a.rule, a.customer_id, a.event, a.attempts, d.customer_sk is not null,
            {columns}
        from {OUTBOX} a
        left join analytics.dim_customer d using (customer_sk)
        where a.status in ('pending', 'failed') and a.next_attempt_at <= $now
            and list_contains($rules, a.rule)
            -- a customer's actions go out in version order: none overtakes one waiting to retry
            and not exists (
                select 1 from {OUTBOX} w
                where w.rule = a.rule and w.customer_id = a.customer_id
                    and w.status = 'failed' and w.next_attempt_at > $now
                    and w.valid_from < a.valid_from
            )
        order by a.valid_from, a.action_id
        limit $limit
        """,  # noqa: S608
        {"now": now, "rules": [rule.name for rule in rules], "limit": limit},
    ).fetchall()
    return [
        Due(
            action_id,
            rule,
            customer_id,
            event,
            attempts,
            dict(zip(CUSTOMER_FIELDS, values, strict=True)) if exists else None,
        )
        for action_id, rule, customer_id, event, attempts, exists, *values in rows
    ]


@dataclass(frozen=True)
class Outcome:
    action_id: str
    status: str
    attempts: int
    last_error: str | None
    next_attempt_at: datetime | None
    sent_at: datetime | None


class Senders:
    """The channels the rules need, opened on first use and closed together."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._email: EmailSender | None = None
        self._webhook = WebhookSender()

    def send(self, rule: Rule, item: Due) -> None:
        customer = item.customer
        assert customer is not None
        if rule.do == "email":
            if self._email is None:
                self._email = EmailSender(self.settings)
            subject, body = rule.render_email(customer)
            self._email.send(item.action_id, customer["email"], subject, body)
        else:
            assert rule.webhook is not None
            self._webhook.send(item.action_id, rule.webhook, webhook_payload(rule, item))

    def close(self) -> None:
        if self._email is not None:
            self._email.close()


def webhook_payload(rule: Rule, item: Due) -> dict[str, Any]:
    """The JSON body of a webhook action (Standard Webhooks' ``type``/``timestamp``/``data``)."""
    customer = item.customer or {}
    return {
        "type": f"customer.{item.event}",
        "timestamp": datetime.now(UTC).isoformat(),
        "data": {"rule": rule.name, "action_id": item.action_id, "customer": customer},
    }


def send_batch(
    batch: list[Due],
    rules: Rules,
    senders: Senders,
    settings: Settings,
    now: datetime,
    pool: Executor,
) -> list[Outcome]:
    """Send every row of ``batch`` on ``pool``'s threads and say how each went; nothing raises.

    One pool serves a whole dispatch: an e-mail sender keeps one SMTP connection per thread, so
    a pool per batch would open new connections for every batch.
    """

    def one(item: Due) -> Outcome:
        attempts = item.attempts + 1
        rule = rules.named(item.rule)
        if rule is None or item.customer is None:
            why = "the rule is gone" if rule is None else "the customer version no longer exists"
            return Outcome(item.action_id, "dead", attempts, why, None, None)
        try:
            senders.send(rule, item)
        except PermanentFailure as error:
            return Outcome(item.action_id, "dead", attempts, str(error), None, None)
        except TemporaryFailure as error:
            if attempts >= settings.actions_max_attempts:
                return Outcome(item.action_id, "dead", attempts, str(error), None, None)
            delay = min(
                timedelta(seconds=settings.actions_retry_base_s * 2 ** (attempts - 1)),
                MAX_RETRY_DELAY,
            )
            return Outcome(item.action_id, "failed", attempts, str(error), now + delay, None)
        except Exception as error:  # a template that fails on this customer's values
            log.exception(f"action {item.action_id} of rule {item.rule} failed")
            reason = f"{type(error).__name__}: {error}"[:500]
            return Outcome(item.action_id, "dead", attempts, reason, None, None)
        return Outcome(item.action_id, "sent", attempts, None, None, datetime.now(UTC))

    def in_order(items: list[Due]) -> list[Outcome]:
        """One customer's actions of one rule, in version order, until one fails: the rest
        wait (untouched) so that they never overtake it."""
        outcomes = []
        for item in items:
            outcomes.append(one(item))
            if outcomes[-1].status == "failed":
                break
        return outcomes

    groups: dict[tuple[str, str], list[Due]] = {}
    for item in batch:
        groups.setdefault((item.rule, item.customer_id), []).append(item)
    return [outcome for outcomes in pool.map(in_order, groups.values()) for outcome in outcomes]


def record(con: duckdb.DuckDBPyConnection, outcomes: list[Outcome]) -> None:
    """Write the outcomes of a batch in one transaction."""
    table = pa.Table.from_pylist(
        [outcome.__dict__ for outcome in outcomes],
        schema=pa.schema(
            [
                ("action_id", pa.string()),
                ("status", pa.string()),
                ("attempts", pa.int32()),
                ("last_error", pa.string()),
                ("next_attempt_at", pa.timestamp("us", tz="UTC")),
                ("sent_at", pa.timestamp("us", tz="UTC")),
            ]
        ),
    )
    con.register("action_outcomes", table)
    try:
        con.execute(
            f"""
            update {OUTBOX} a set
                status = o.status,
                attempts = o.attempts,
                last_error = o.last_error,
                next_attempt_at = o.next_attempt_at,
                sent_at = coalesce(o.sent_at, a.sent_at),
                updated_at = now()
            from action_outcomes o
            where a.action_id = o.action_id
            """  # noqa: S608
        )
    finally:
        con.unregister("action_outcomes")


def dispatch(
    settings: Settings,
    rules: Rules | None = None,
    *,
    batch_size: int = BATCH_SIZE,
    on_batch: Callable[[Counter], None] | None = None,
) -> DispatchReport:
    """Plan new versions and send what is due, batch by batch, until nothing is due.

    One dispatcher runs at a time (a second returns at once, ``busy``); the writer lock is held
    only while planning and recording, never while sending.
    """
    started = time.perf_counter()
    report = DispatchReport()
    if rules is None:
        if not settings.actions_file:
            report.configured = False
            return report
        rules = load_rules(settings.actions_file)
    warehouse = lake.Lake.of(settings)
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(lake.lake_lock(warehouse, "actions", timeout_s=0))
        except lake.WarehouseError:
            report.busy = True
            return report
        senders = stack.enter_context(contextlib.closing(Senders(settings)))
        # after the senders, so that its threads are done before their connections are closed
        pool = stack.enter_context(ThreadPoolExecutor(settings.actions_concurrency, "action"))
        con = stack.enter_context(lake.connect(settings))
        with lake.writer_lock(warehouse):
            now = datetime.now(UTC)
            ensure_outbox(con)
            report.planned = plan(con, rules, now)
            batch = due(con, rules, now, batch_size)
            if not batch:
                _publish(con, warehouse)
        tried: set[str] = set()
        while batch:
            outcomes = send_batch(batch, rules, senders, settings, datetime.now(UTC), pool)
            counts = Counter(outcome.status for outcome in outcomes)
            report.outcomes.update(counts)
            tried.update(item.action_id for item in batch)
            with lake.writer_lock(warehouse):
                record(con, outcomes)
                # a row tried once in this dispatch waits for the next one, even if due again
                batch = [
                    item
                    for item in due(con, rules, datetime.now(UTC), batch_size + len(tried))
                    if item.action_id not in tried
                ][:batch_size]
                if not batch:
                    _publish(con, warehouse)
            if on_batch:
                on_batch(counts)
    report.seconds = time.perf_counter() - started
    log.info(report.line())
    return report


def _publish(con: duckdb.DuckDBPyConnection, warehouse: lake.Lake) -> None:
    """Readers (``flavours actions list``) see the outbox as of now, when analytics is whole."""
    from warehouse.runner import derived_state_complete

    if derived_state_complete(con):
        lake.publish(con, warehouse, "customer_actions")


def retry(
    settings: Settings, *, rule: str | None = None, action_ids: list[str] | None = None
) -> int:
    """Make dead actions (of ``rule``, or the given ids) pending again; returns how many."""
    warehouse = lake.Lake.of(settings)
    with lake.connect(settings) as con, lake.writer_lock(warehouse):
        ensure_outbox(con)
        ((count,),) = con.execute(
            f"""
            update {OUTBOX} set status = 'pending', attempts = 0, next_attempt_at = now(),
                updated_at = now()
            where status = 'dead'
                and ($rule is null or rule = $rule)
                and ($ids is null or list_contains($ids, action_id))
            """,  # noqa: S608
            {"rule": rule, "ids": action_ids or None},
        ).fetchall()
        _publish(con, warehouse)
    return count


def has_outbox(con: duckdb.DuckDBPyConnection) -> bool:
    ((found,),) = con.execute(
        "select count(*) from information_schema.tables "
        "where table_schema = 'ops' and table_name = 'customer_actions'"
    ).fetchall()
    return bool(found)

"""Receiver behaviour through Flask's test client: auth, validation, envelopes, rejects, logs."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from standardwebhooks.webhooks import Webhook

from connector import create_app
from core.landing import LandingStore
from tests.conftest import TOKEN, landed_lines, wait_until

URL = f"/webhooks/flavours/customers?token={TOKEN}"


def test_documented_example_lands_verbatim_with_body_hash(client, landing_dir, example_body):
    response = client.post(URL, data=example_body, content_type="application/json")

    assert response.status_code == 202
    assert response.json["status"] == "accepted"
    [envelope] = landed_lines(str(landing_dir))
    assert envelope["payload"] == json.loads(example_body)
    assert envelope["body_sha256"] == hashlib.sha256(example_body).hexdigest()
    assert envelope["request_id"] == response.json["request_id"]
    assert envelope["v"] == 1
    assert envelope["topic"] == "customers"
    assert envelope["source_ip"] == "127.0.0.1"
    received = datetime.strptime(envelope["received_at"], "%Y-%m-%dT%H:%M:%S.%fZ")
    assert abs(received.replace(tzinfo=UTC) - datetime.now(UTC)).total_seconds() < 60


def test_object_key_follows_documented_layout(client, landing_dir, example_body):
    client.post(URL, data=example_body, content_type="application/json")

    [path] = [p for p in landing_dir.rglob("*") if p.is_file()]
    relative = path.relative_to(landing_dir).as_posix()
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    topic, partition, name = relative.split("/")
    assert (topic, partition) == ("customers", f"dt={today}")
    stamp, rest = name.split("-", 1)
    datetime.strptime(stamp, "%Y%m%dT%H%M%S%fZ")
    assert rest.endswith(".jsonl")


@pytest.mark.parametrize("topic", ["customers", "orders", "products", "loyalty", "errors"])
def test_every_topic_lands_under_its_own_prefix(client, landing_dir, topic):
    body = {"code": 500, "endpoint": "https://x", "message": "m"} if topic == "errors" else {"a": 1}
    response = client.post(f"/webhooks/flavours/{topic}?token={TOKEN}", json=body)

    assert response.status_code == 202
    assert [e["payload"] for e in landed_lines(str(landing_dir), topic)] == [body]


def test_token_in_header_is_accepted(client, landing_dir, example_body):
    response = client.post(
        "/webhooks/flavours/customers",
        data=example_body,
        content_type="application/json",
        headers={"X-Flavours-Token": TOKEN},
    )

    assert response.status_code == 202
    [envelope] = landed_lines(str(landing_dir))
    assert "x-flavours-token" not in envelope["headers"]


@pytest.mark.parametrize(
    ("query", "headers"),
    [("", {}), ("?token=wrong", {}), ("?token=", {}), ("", {"X-Flavours-Token": "wrong"})],
)
def test_missing_or_wrong_token_is_401_and_lands_nothing(client, landing_dir, query, headers):
    response = client.post(
        f"/webhooks/flavours/customers{query}", json={"xid": "x"}, headers=headers
    )

    assert response.status_code == 401
    assert "token" in response.json["error"]
    assert not [p for p in landing_dir.rglob("*") if p.is_file()]


def test_unauthenticated_garbage_is_not_kept(client, landing_dir):
    response = client.post(
        "/webhooks/flavours/customers", data=b"not json", content_type="application/json"
    )

    assert response.status_code == 401
    assert not [p for p in landing_dir.rglob("*") if p.is_file()]


def _signed_app(landing_dir: Path):
    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    app = create_app(
        {"landing_url": str(landing_dir), "webhook_token": TOKEN, "webhook_hmac_secret": secret}
    )
    return app.test_client(), Webhook(secret)


def test_standard_webhooks_signature_from_reference_library_is_accepted(landing_dir, example_body):
    client, signer = _signed_app(landing_dir)
    now = datetime.now(UTC)
    signature = signer.sign("msg_1", now, example_body.decode())

    response = client.post(
        URL,
        data=example_body,
        content_type="application/json",
        headers={
            "webhook-id": "msg_1",
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": f"v1,bm90LXRoaXMtb25l {signature}",
        },
    )

    assert response.status_code == 202
    assert len(landed_lines(str(landing_dir))) == 1


@pytest.mark.parametrize("fault", ["missing", "tampered", "stale", "bad-timestamp"])
def test_bad_signature_is_401_and_lands_nothing(landing_dir, example_body, fault):
    client, signer = _signed_app(landing_dir)
    now = datetime.now(UTC)
    sent_at = datetime.fromtimestamp(now.timestamp() - 600, UTC) if fault == "stale" else now
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(sent_at.timestamp())),
        "webhook-signature": signer.sign("msg_1", sent_at, example_body.decode()),
    }
    body = example_body
    if fault == "missing":
        del headers["webhook-signature"]
    elif fault == "tampered":
        body = example_body.replace(b"User 1", b"User 2")
    elif fault == "bad-timestamp":
        headers["webhook-timestamp"] = "yesterday"

    response = client.post(URL, data=body, content_type="application/json", headers=headers)

    assert response.status_code == 401
    assert not [p for p in landing_dir.rglob("*") if p.is_file()]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "reason"),
    [
        (b"[1, 2]", "application/json", 400, "must be a JSON object"),
        (b'"text"', "application/json", 400, "must be a JSON object"),
        (b'{"xid": "a"', "application/json", 400, "not valid JSON"),
        (b"", "application/json", 400, "empty body"),
        (b'{"a": NaN}', "application/json", 400, "NaN"),
        (b"\xff\xfe{}", "application/json", 400, "UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "application/json", 400, "nested too deeply"),
        (b'{"xid": "a"}', "text/plain", 415, "application/json"),
        (b'{"xid": "a"}', None, 415, "application/json"),
    ],
)
def test_authenticated_bad_body_is_kept_under_rejected_with_reason(
    client, landing_dir, body, content_type, status, reason
):
    response = client.post(URL, data=body, content_type=content_type)

    assert response.status_code == status
    assert reason in response.json["error"]
    assert not landed_lines(str(landing_dir))
    [kept] = landed_lines(str(landing_dir), "_rejected/customers")
    assert reason in kept["reason"]
    assert kept["status"] == status
    assert kept["body_sha256"] == hashlib.sha256(body).hexdigest()
    restored = kept.get("body", "").encode() if "body" in kept else None
    if restored is not None:
        assert restored == body


def test_json_content_type_with_charset_and_suffix_is_accepted(client):
    for content_type in ("application/json; charset=utf-8", "application/vnd.flavours+json"):
        response = client.post(URL, data=b'{"xid": "a"}', content_type=content_type)
        assert response.status_code == 202, content_type


def test_body_over_limit_is_413_and_not_landed(landing_dir):
    app = create_app(
        {"landing_url": str(landing_dir), "webhook_token": TOKEN, "max_body_bytes": 100}
    )
    response = app.test_client().post(URL, json={"pad": "x" * 200})

    assert response.status_code == 413
    assert "FLAVOURS_MAX_BODY_BYTES" in response.json["error"]
    assert not [p for p in landing_dir.rglob("*") if p.is_file()]


def test_unknown_topic_and_wrong_method_answer_json_errors(client):
    unknown = client.post(f"/webhooks/flavours/invoices?token={TOKEN}", json={})
    wrong_method = client.get(URL)

    assert unknown.status_code == 404
    assert "customers" in unknown.json["error"]
    assert wrong_method.status_code == 405
    assert wrong_method.json["status"] == "error"


def test_secret_headers_are_not_landed(client, landing_dir):
    client.post(
        URL,
        json={"xid": "a"},
        headers={"Authorization": "Bearer abc", "Cookie": "s=1", "X-Trace": "t-1"},
    )

    [envelope] = landed_lines(str(landing_dir))
    assert envelope["headers"]["x-trace"] == "t-1"
    assert not {"authorization", "cookie", "x-flavours-token"} & set(envelope["headers"])
    assert TOKEN not in json.dumps(envelope)


def test_require_https_refuses_plain_http_but_not_health(landing_dir):
    app = create_app(
        {"landing_url": str(landing_dir), "webhook_token": TOKEN, "require_https": True}
    )
    client = app.test_client()

    assert client.post(URL, json={"xid": "a"}).status_code == 403
    assert client.get("/healthz").status_code == 200
    assert client.post(URL, json={"xid": "a"}, base_url="https://localhost").status_code == 202


def test_forwarded_headers_are_trusted_only_from_trusted_proxies(landing_dir):
    app = create_app(
        {
            "landing_url": str(landing_dir),
            "webhook_token": TOKEN,
            "require_https": True,
            "trusted_proxies": "10.0.0.0/8",
        }
    )
    client = app.test_client()
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9, 10.1.1.1"}

    from_client = client.post(URL, json={"xid": "a"}, headers=forwarded)
    from_proxy = client.post(
        URL, json={"xid": "b"}, headers=forwarded, environ_base={"REMOTE_ADDR": "10.2.2.2"}
    )

    assert from_client.status_code == 403
    assert from_proxy.status_code == 202
    [envelope] = landed_lines(str(landing_dir))
    assert envelope["source_ip"] == "203.0.113.9"


def test_a_token_a_proxy_copied_into_a_header_is_not_landed(client, landing_dir):
    headers = {
        "X-Original-URI": f"/webhooks/flavours/customers?token={TOKEN}&shop=7",
        "Referer": f"https://flavours.example/hooks?TOKEN={TOKEN}",
        "X-Request-Tag": "a token= without a secret stays as sent",
    }
    assert client.post(URL, json={"xid": "a"}, headers=headers).status_code == 202

    [envelope] = landed_lines(str(landing_dir))
    landed = envelope["headers"]
    assert landed["x-original-uri"] == "/webhooks/flavours/customers?token=[redacted]&shop=7"
    assert landed["referer"] == "https://flavours.example/hooks?TOKEN=[redacted]"
    assert landed["x-request-tag"] == "a token= without a secret stays as sent"
    assert TOKEN not in json.dumps(envelope)


def test_an_unexpected_error_is_a_json_500_logged_without_the_token(
    app, client, monkeypatch, caplog
):
    def broken(*args, **kwargs):
        raise RuntimeError("the writer broke")

    monkeypatch.setattr(app.extensions["flavours_receiver"], "land", broken)
    with caplog.at_level(logging.INFO):
        response = client.post(URL, json={"xid": "a"})

    assert response.status_code == 500
    assert response.json["error"].startswith("internal error")
    assert response.json["request_id"] == response.headers["X-Request-Id"]
    [failure] = [r for r in caplog.records if r.name == "connector.webhooks"]
    assert "RuntimeError: the writer broke" in caplog.text
    assert failure.exc_info is not None
    [request] = [r for r in caplog.records if r.name == "connector.requests"]
    assert request.status == 500
    assert TOKEN not in caplog.text


def test_request_log_is_json_without_token_or_personal_data(client, example_body, caplog):
    from core.logs import JsonFormatter

    with caplog.at_level(logging.INFO, logger="connector.requests"):
        client.post(URL, data=example_body, content_type="application/json")
        client.post(URL, data=b"user1@example.com 55223322", content_type="application/json")

    lines = [JsonFormatter().format(record) for record in caplog.records]
    accepted, rejected = (json.loads(line) for line in lines)
    assert accepted["xid"] == "9a48c3ad-35e9-4929-b714-6fe30f4afc93"
    assert accepted["action"] == "customers.CREATE"
    assert accepted["status"] == 202
    assert accepted["topic"] == "customers"
    assert accepted["latency_ms"] >= 0
    assert rejected["status"] == 400
    text = "\n".join(lines)
    assert TOKEN not in text
    assert "user1@example.com" not in text
    assert "55223322" not in text


def test_metrics_count_requests_and_landed_events(client):
    def sample(name: str, **labels: str) -> float:
        text = client.get("/metrics").data.decode()
        for family in text_string_to_metric_families(text):
            for metric in family.samples:
                if metric.name == name and metric.labels == labels:
                    return metric.value
        return 0.0

    before_ok = sample("flavours_webhook_requests_total", topic="customers", status="202")
    before_405 = sample("flavours_webhook_requests_total", topic="customers", status="405")
    before_landed = sample("flavours_landed_events_total", topic="customers")
    before_kept = sample("flavours_landed_events_total", topic="_rejected/customers")
    client.post(URL, json={"xid": "a"})
    client.post(URL, json={"xid": "b"})
    client.post(URL, data=b"[1]", content_type="application/json")  # refused, kept
    client.get(URL)

    assert sample("flavours_webhook_requests_total", topic="customers", status="202") == (
        before_ok + 2
    )
    assert sample("flavours_webhook_requests_total", topic="customers", status="405") == (
        before_405 + 1
    )
    assert sample("flavours_landed_events_total", topic="customers") == before_landed + 2
    assert sample("flavours_landed_events_total", topic="_rejected/customers") == before_kept + 1
    assert "flavours_ack_latency_seconds_bucket" in client.get("/metrics").data.decode()


def test_readiness_checks_share_one_probe_while_the_store_hangs(tmp_path, monkeypatch):
    app = create_app(
        {"landing_url": str(tmp_path / "landing"), "webhook_token": TOKEN, "landing_timeout_s": 0.3}
    )
    receiver = app.extensions["flavours_receiver"]
    store_answers = threading.Event()
    probes = []

    def hanging_write_check() -> None:
        probes.append(time.monotonic())
        store_answers.wait(10)

    monkeypatch.setattr(receiver.store, "check_writable", hanging_write_check)
    client = app.test_client()
    try:
        with ThreadPoolExecutor(4) as pool:
            first = list(pool.map(lambda _: client.get("/readyz"), range(4)))
        started = time.monotonic()
        again = client.get("/readyz")
        again_s = time.monotonic() - started
    finally:
        store_answers.set()

    assert [response.status_code for response in first] == [503] * 4
    assert again.status_code == 503
    assert again_s < 0.2, "the probe in flight is past its deadline: no new wait"
    assert len(probes) == 1
    wait_until(lambda: client.get("/readyz").status_code == 200, timeout=5, what="ready again")
    assert len(probes) == 2


def test_unwritable_landing_store_answers_503_on_readyz_and_webhooks(tmp_path, example_body):
    # A file where the landing folder should be: no user (root included) can write below it.
    blocked = tmp_path / "landing"
    blocked.write_text("not a folder")
    app = create_app({"landing_url": str(blocked), "webhook_token": TOKEN})
    client = app.test_client()

    ready = client.get("/readyz")
    response = client.post(URL, data=example_body, content_type="application/json")

    assert ready.status_code == 503
    assert "not writable" in ready.json["error"]
    assert response.status_code == 503
    assert "retry" in response.json["error"]
    assert client.get("/healthz").status_code == 200


def test_gzip_compression_writes_jsonl_gz_that_reads_back(landing_dir, example_body):
    app = create_app(
        {"landing_url": str(landing_dir), "webhook_token": TOKEN, "landing_compression": "gzip"}
    )
    app.test_client().post(URL, data=example_body, content_type="application/json")

    [path] = [p for p in landing_dir.rglob("*") if p.is_file()]
    assert path.name.endswith(".jsonl.gz")
    [envelope] = landed_lines(str(landing_dir))
    assert envelope["payload"] == json.loads(example_body)


def test_landing_store_never_lists_temporary_files(landing_dir):
    store = LandingStore(str(landing_dir))
    folder = landing_dir / "customers" / "dt=2026-01-01"
    folder.mkdir(parents=True)
    (folder / ".20260101T000000000000Z-a-00000001.jsonl.1234.tmp").write_text("{}\n")
    key = store.object_key("customers", datetime(2026, 1, 1, tzinfo=UTC), "a", 2)
    store.land_batch(key, [b"{}"])

    assert [obj.key for obj in store.list_objects("customers")] == [key]

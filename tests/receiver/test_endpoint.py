"""The webhook endpoint is the one request path: every /webhooks/ request, each check once.

Flask keeps health, readiness and metrics only; these tests pin what the endpoint answers,
lands and logs where the order of its checks or its framework boundary decides the outcome.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook

from connector import create_app
from tests.conftest import TOKEN, landed_lines

URL = f"/webhooks/flavours/customers?token={TOKEN}"
HMAC_SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def make_app(landing, **settings):
    return create_app({"landing_url": str(landing), "webhook_token": TOKEN, **settings})


def post(client, body: bytes, headers=None, url: str = URL, **options):
    options = {"content_type": "application/json", **options}
    return client.post(url, data=body, headers=headers or {}, **options)


def signed_headers(body: bytes) -> dict[str, str]:
    """Standard Webhooks headers signed by the reference library."""
    now = datetime.now(UTC)
    signature = Webhook(HMAC_SECRET).sign("msg_endpoint", now, body.decode())
    return {
        "webhook-id": "msg_endpoint",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }


def test_flask_has_no_webhook_route(landing_dir):
    app = make_app(landing_dir)

    rules = {rule.rule for rule in app.url_map.iter_rules()}

    assert not any(rule.startswith("/webhooks") for rule in rules)
    assert {"/healthz", "/readyz", "/metrics"} <= rules


def test_an_accepted_webhook_is_answered_like_jsonify_and_lands_its_envelope(
    landing_dir, example_body
):
    response = post(
        make_app(landing_dir).test_client(),
        example_body,
        {"X-Trace": "t-1", "Cookie": "s=1", "X-Flavours-Token": TOKEN},
        content_type="application/json; charset=utf-8",
    )

    assert response.status_code == 202
    request_id = response.json["request_id"]
    assert response.data == b'{"request_id":"%s","status":"accepted"}\n' % request_id.encode()
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["X-Request-Id"] == request_id
    [landed] = landed_lines(str(landing_dir))
    assert landed["request_id"] == request_id
    assert landed["payload"] == json.loads(example_body)
    assert landed["headers"]["x-trace"] == "t-1"
    assert landed["headers"]["content-type"] == "application/json; charset=utf-8"
    assert not {"cookie", "x-flavours-token"} & landed["headers"].keys()


def test_a_body_with_newlines_lands_on_one_line_with_its_numbers_verbatim(landing_dir):
    body = b'{\n  "xid": "x-1",\r\n  "n": 12345678901234567890.10\n}'

    response = post(make_app(landing_dir).test_client(), body)

    assert response.status_code == 202
    [path] = (landing_dir / "customers").rglob("*.jsonl")
    [line] = path.read_text().splitlines()
    assert '"payload":{   "xid": "x-1",    "n": 12345678901234567890.10 }}' in line


@pytest.mark.parametrize(
    ("case", "url", "headers", "options", "body", "status"),
    [
        # the token is checked before the body is read: nothing unauthenticated is kept
        ("oversized, no token", "/webhooks/flavours/customers", {}, {}, b"x" * 2048, 401),
        (
            "text/plain, no token",
            "/webhooks/flavours/customers",
            {},
            {"content_type": "text/plain"},
            b"{}",
            401,
        ),
        ("oversized", URL, {}, {}, b'{"pad":"' + b"x" * 2048 + b'"}', 413),
        ("text/plain", URL, {}, {"content_type": "text/plain"}, b'{"a":1}', 415),
        ("JSON array", URL, {}, {}, b"[1]", 400),
        ("invalid UTF-8", URL, {}, {}, b'{"a":"\xff"}', 400),
        ("empty", URL, {}, {}, b"", 400),
    ],
)
def test_refused_webhooks_are_explained_and_kept_only_when_authenticated(
    landing_dir, case, url, headers, options, body, status
):
    app = make_app(landing_dir, max_body_bytes=1024)

    response = post(app.test_client(), body, headers, url, **options)

    assert response.status_code == status, case
    assert response.json["status"] == "error"
    assert response.json["error"]
    assert response.headers["X-Request-Id"] == response.json["request_id"]
    kept = landed_lines(str(landing_dir), "_rejected/customers")
    assert landed_lines(str(landing_dir)) == []
    if status in (415, 400):
        [rejected] = kept
        assert rejected["reason"] == response.json["error"]
        assert rejected["status"] == status
        assert rejected["request_id"] == response.json["request_id"]
    else:
        assert kept == []


def test_a_signature_is_checked_over_the_body_read_once(landing_dir, example_body):
    app = make_app(landing_dir, webhook_hmac_secret=HMAC_SECRET)
    client = app.test_client()
    bad = signed_headers(example_body) | {"webhook-signature": "v1,AAAA"}

    good = post(client, example_body, signed_headers(example_body))
    refused = post(client, example_body, bad)

    assert (good.status_code, refused.status_code) == (202, 401)
    assert "signature" in refused.json["error"]
    assert len(landed_lines(str(landing_dir))) == 1


def test_https_only_mode_is_checked_before_anything_lands(landing_dir, example_body):
    client = make_app(landing_dir, require_https=True).test_client()

    plain = post(client, example_body)
    secure = post(client, example_body, base_url="https://localhost")

    assert (plain.status_code, secure.status_code) == (403, 202)
    assert len(landed_lines(str(landing_dir))) == 1


def test_wrong_method_and_unknown_topic_are_json_errors_with_an_unknown_topic(landing_dir, caplog):
    client = make_app(landing_dir).test_client()
    with caplog.at_level(logging.INFO, logger="connector.requests"):
        wrong_method = client.get(URL)
        unknown = post(client, b"{}", url=f"/webhooks/flavours/no-such-topic?token={TOKEN}")

    assert (wrong_method.status_code, unknown.status_code) == (405, 404)
    assert wrong_method.headers["Allow"] == "POST"
    assert wrong_method.json["error"] == "method GET is not allowed here"
    assert "topic one of customers" in unknown.json["error"]
    assert [(r.status, r.topic) for r in caplog.records] == [(405, "unknown"), (404, "unknown")]


def test_repeated_slashes_reach_the_same_endpoint(landing_dir, example_body):
    response = post(
        make_app(landing_dir).test_client(),
        example_body,
        url="/webhooks//flavours///customers?token=" + TOKEN,
    )

    assert response.status_code == 202
    assert len(landed_lines(str(landing_dir))) == 1


def test_a_failing_landing_store_answers_503_with_the_reason(tmp_path, example_body):
    # A file where the landing folder should be: no user (root included) can write below it.
    blocked = tmp_path / "landing"
    blocked.write_text("not a folder")

    response = post(make_app(blocked).test_client(), example_body)

    assert response.status_code == 503
    assert response.json["error"].startswith("landing store unavailable, retry later: ")
    compact = json.dumps(response.json, sort_keys=True, separators=(",", ":")) + "\n"
    assert response.data == compact.encode()


def test_each_request_is_logged_once_with_what_the_checks_found(landing_dir, example_body, caplog):
    client = make_app(landing_dir).test_client()
    with caplog.at_level(logging.INFO, logger="connector.requests"):
        post(client, example_body)
        post(client, b"[1]")
        post(client, example_body, url="/webhooks/flavours/customers?token=nope")

    fields = [
        {k: getattr(r, k) for k in ("topic", "xid", "action", "status", "bytes", "error")}
        for r in caplog.records
    ]
    event = json.loads(example_body)
    assert fields[0] == {
        "topic": "customers",
        "xid": event["xid"],
        "action": event["action"],
        "status": 202,
        "bytes": len(example_body),
        "error": None,
    }
    assert fields[1]["status"] == 400
    assert fields[1]["bytes"] == 3
    assert fields[1]["error"].startswith("body must be a JSON object")
    assert fields[2]["status"] == 401
    assert fields[2]["bytes"] is None
    assert len(fields) == 3

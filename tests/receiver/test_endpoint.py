"""The webhook endpoint is the one request path: every /webhooks/ request, each check once.

Flask keeps health, readiness and metrics only. These tests pin what the endpoint itself owns
now that Flask no longer answers webhooks: the answer's encoding and headers, the envelope, the
405/404 answers and the request log. The order of the checks, what is kept and what is refused
are pinned over real gunicorn by test_hostile.py and through the app by test_webhooks.py.
"""

from __future__ import annotations

import json
import logging

from connector import create_app
from tests.conftest import TOKEN, landed_lines

URL = f"/webhooks/flavours/customers?token={TOKEN}"


def make_app(landing, **settings):
    return create_app({"landing_url": str(landing), "webhook_token": TOKEN, **settings})


def post(client, body: bytes, headers=None, url: str = URL, **options):
    options = {"content_type": "application/json", **options}
    return client.post(url, data=body, headers=headers or {}, **options)


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


def test_wrong_method_and_unknown_topic_are_json_errors_logged_by_topic(landing_dir, caplog):
    client = make_app(landing_dir).test_client()
    with caplog.at_level(logging.INFO, logger="connector.requests"):
        wrong_method = client.get(URL)
        unknown = post(client, b"{}", url=f"/webhooks/flavours/no-such-topic?token={TOKEN}")

    assert (wrong_method.status_code, unknown.status_code) == (405, 404)
    assert wrong_method.headers["Allow"] == "POST"
    assert wrong_method.json["error"] == "method GET is not allowed here"
    assert "topic one of customers" in unknown.json["error"]
    assert [(r.status, r.topic) for r in caplog.records] == [(405, "customers"), (404, "unknown")]


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

"""The webhook hot path answers accepted webhooks itself, exactly as the Flask route would.

Every accepted webhook is compared with the same request answered by the Flask route alone
(the app without ``WebhookHotPath``): same status, same answer keys, same landed envelope apart
from the request id and time. Requests the hot path does not accept must reach Flask unchanged.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook

from connector import create_app
from connector.hotpath import WebhookHotPath
from connector.proxies import TrustedProxyMiddleware
from tests.conftest import TOKEN, landed_lines

URL = f"/webhooks/flavours/customers?token={TOKEN}"
HMAC_SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
PER_REQUEST_FIELDS = {"request_id", "received_at"}


def flask_only(app):
    """The same app with its WSGI stack minus the hot path: every request goes through Flask."""
    hot = app.wsgi_app.app
    assert isinstance(hot, WebhookHotPath)
    app.wsgi_app = TrustedProxyMiddleware(hot.app, app.wsgi_app.trusted)
    return app


def make_app(landing, **settings):
    return create_app({"landing_url": str(landing), "webhook_token": TOKEN, **settings})


def signed_headers(body: bytes) -> dict[str, str]:
    """Standard Webhooks headers signed by the reference library."""
    now = datetime.now(UTC)
    signature = Webhook(HMAC_SECRET).sign("msg_hotpath", now, body.decode())
    return {
        "webhook-id": "msg_hotpath",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }


ACCEPTED = {
    "query token": ({}, {}, None),
    "header token, charset": (
        {"X-Flavours-Token": TOKEN, "X-Trace": "t-1", "Cookie": "s=1"},
        {"content_type": "application/json; charset=utf-8"},
        None,
    ),
    "+json type": ({}, {"content_type": "application/vnd.flavours+json"}, None),
    "body with newlines": ({}, {}, b'{\n  "xid": "x-1",\r\n  "n": 12345678901234567890\n}'),
}


def post(client, body: bytes, headers: dict, options: dict, url: str = URL):
    options = {"content_type": "application/json", **options}
    return client.post(url, data=body, headers=headers, **options)


def strip(envelope: dict) -> dict:
    return {k: v for k, v in envelope.items() if k not in PER_REQUEST_FIELDS}


@pytest.mark.parametrize("case", ACCEPTED)
def test_accepted_webhooks_land_the_same_envelope_on_both_paths(tmp_path, example_body, case):
    headers, options, body = ACCEPTED[case]
    body = body or example_body
    hot_dir, flask_dir = tmp_path / "hot", tmp_path / "flask"
    hot = post(make_app(hot_dir).test_client(), body, headers, options)
    via_flask = post(flask_only(make_app(flask_dir)).test_client(), body, headers, options)

    assert hot.status_code == via_flask.status_code == 202
    assert hot.json.keys() == {"status", "request_id"}
    hot_id, flask_id = hot.json["request_id"], via_flask.json["request_id"]
    assert hot.data.replace(hot_id.encode(), b"") == via_flask.data.replace(flask_id.encode(), b"")
    assert hot.headers["X-Request-Id"] == hot.json["request_id"]
    assert hot.headers["Content-Type"] == via_flask.headers["Content-Type"]
    [hot_envelope] = landed_lines(str(hot_dir))
    [flask_envelope] = landed_lines(str(flask_dir))
    assert hot_envelope["request_id"] == hot.json["request_id"]
    assert strip(hot_envelope) == strip(flask_envelope)
    assert list(hot_envelope["headers"]) == list(flask_envelope["headers"])


def test_a_failing_landing_store_gets_the_same_503_on_both_paths(tmp_path, example_body):
    # A file where the landing folder should be: no user (root included) can write below it.
    blocked = tmp_path / "landing"
    blocked.write_text("not a folder")
    hot = post(make_app(blocked).test_client(), example_body, {}, {})
    via_flask = post(flask_only(make_app(blocked)).test_client(), example_body, {}, {})

    assert hot.status_code == via_flask.status_code == 503
    assert hot.json.keys() == via_flask.json.keys() == {"error", "request_id", "status"}
    for answer in (hot, via_flask):
        assert answer.json["status"] == "error"
        assert answer.json["error"].startswith("landing store unavailable, retry later: ")
        # the same encoding on both paths: sorted keys, compact, a newline
        compact = json.dumps(answer.json, sort_keys=True, separators=(",", ":")) + "\n"
        assert answer.data == compact.encode()
        assert answer.headers["Content-Type"] == "application/json"
        assert answer.headers["X-Request-Id"] == answer.json["request_id"]


def test_accepted_webhooks_never_reach_the_flask_route(landing_dir, example_body):
    app = make_app(landing_dir, webhook_hmac_secret=HMAC_SECRET)

    def refuse(**_):
        raise AssertionError("the Flask route answered an accepted webhook")

    app.view_functions["webhooks.receive_webhook"] = refuse
    response = post(app.test_client(), example_body, signed_headers(example_body), {})

    assert response.status_code == 202
    assert len(landed_lines(str(landing_dir))) == 1


REFUSED = {
    "no token": ("/webhooks/flavours/customers", {}, {}, b'{"a":1}', 401),
    "wrong header token": (URL, {"X-Flavours-Token": "nope"}, {}, b'{"a":1}', 401),
    "not JSON": (URL, {}, {}, b'{"a":', 400),
    "JSON array": (URL, {}, {}, b"[1]", 400),
    "invalid UTF-8": (URL, {}, {}, b'{"a":"\xff"}', 400),
    "text/plain": (URL, {}, {"content_type": "text/plain"}, b'{"a":1}', 415),
    "empty": (URL, {}, {}, b"", 400),
}


@pytest.mark.parametrize("case", REFUSED)
def test_refused_webhooks_are_answered_and_kept_by_flask_as_before(tmp_path, case):
    url, headers, options, body, status = REFUSED[case]
    hot_dir, flask_dir = tmp_path / "hot", tmp_path / "flask"
    hot = post(make_app(hot_dir).test_client(), body, headers, options, url)
    via_flask = post(flask_only(make_app(flask_dir)).test_client(), body, headers, options, url)

    assert hot.status_code == via_flask.status_code == status
    assert hot.json["error"] == via_flask.json["error"]
    hot_kept = [strip(e) for e in landed_lines(str(hot_dir), "_rejected/customers")]
    flask_kept = [strip(e) for e in landed_lines(str(flask_dir), "_rejected/customers")]
    assert hot_kept == flask_kept
    assert bool(hot_kept) == (status not in (401,))


def test_bad_signature_is_refused_by_flask(landing_dir, example_body):
    app = make_app(landing_dir, webhook_hmac_secret=HMAC_SECRET)
    headers = signed_headers(example_body)
    headers["webhook-signature"] = "v1,AAAA"

    response = post(app.test_client(), example_body, headers, {})

    assert response.status_code == 401
    assert "signature" in response.json["error"]
    assert landed_lines(str(landing_dir)) == []


def test_https_only_mode_is_enforced_before_the_hot_path(landing_dir, example_body):
    app = make_app(landing_dir, require_https=True)
    client = app.test_client()

    plain = post(client, example_body, {}, {})
    secure = post(client, example_body, {}, {"base_url": "https://localhost"})

    assert (plain.status_code, secure.status_code) == (403, 202)
    assert len(landed_lines(str(landing_dir))) == 1


def test_hot_path_logs_and_counts_like_the_flask_route(tmp_path, example_body, caplog):
    with caplog.at_level(logging.INFO, logger="connector.requests"):
        post(make_app(tmp_path / "hot").test_client(), example_body, {}, {})
        post(flask_only(make_app(tmp_path / "flask")).test_client(), example_body, {}, {})

    hot, via_flask = (
        {k: getattr(r, k) for k in ("topic", "xid", "action", "status", "bytes", "source_ip")}
        for r in caplog.records
    )
    assert hot == via_flask
    assert hot["status"] == 202
    assert hot["xid"] == json.loads(example_body)["xid"]

"""`flavours actions list|retry|dispatch` and the actions line of `flavours load`, as a user
runs them, against a real webhook receiver on loopback."""

from __future__ import annotations

import os
import time

import pytest

from core.landing import LandingStore
from tests.action_servers import WEBHOOK_SECRET, WebhookReceiver
from tests.conftest import run_cli
from tests.landing_helpers import customer_event, envelope, land

RULES = """rules:
  - name: crm
    on: created
    do: webhook
    webhook: {url: "URL", secret_env: CRM_WEBHOOK_SECRET, timeout_s: 2}
"""


@pytest.fixture
def hooks():
    server = WebhookReceiver()
    yield server
    server.stop()


@pytest.mark.slow
def test_list_shows_a_dead_action_retry_revives_it_and_dispatch_sends_it(tmp_path, hooks):
    (tmp_path / "actions.yaml").write_text(RULES.replace("URL", hooks.url))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FLAVOURS_")},
        "FLAVOURS_LANDING_URL": str(tmp_path / "landing"),
        "FLAVOURS_WAREHOUSE": str(tmp_path / "warehouse.sqlite"),
        "FLAVOURS_DLT_DIR": str(tmp_path / "dlt"),
        "FLAVOURS_ACTIONS_FILE": str(tmp_path / "actions.yaml"),
        "FLAVOURS_LOG_LEVEL": "WARNING",
        "CRM_WEBHOOK_SECRET": WEBHOOK_SECRET,
    }
    store = LandingStore(env["FLAVOURS_LANDING_URL"])
    land(store, [envelope(customer_event("c1", "CREATE", int(time.time() * 1000)))])
    hooks.answers = [422]

    loaded = run_cli("flavours", "load", env=env)
    listed = run_cli("flavours", "actions", "list", "--csv", env=env)

    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert "actions                 sent 0, failed 0, dead 1 (outbox: 1 dead)" in loaded.stdout
    assert listed.returncode == 0, listed.stderr[-2000:]
    header, row = listed.stdout.strip().splitlines()
    assert header.startswith("action_id,rule,event,customer_id,version,status,attempts,last_error")
    assert f",crm,created,c1,1,dead,1,HTTP 422 from {hooks.url}," in row

    retried = run_cli("flavours", "actions", "retry", "--all", env=env)
    dispatched = run_cli("flavours", "actions", "dispatch", env=env)
    shown = run_cli("flavours", "actions", "list", env=env)

    assert retried.stdout.startswith("1 dead actions are pending again")
    assert dispatched.returncode == 0, dispatched.stderr[-2000:]
    assert dispatched.stdout.startswith("actions: planned none; sent 1 sent")
    assert shown.stdout.splitlines()[0] == "sent 1"
    assert len(hooks.received) == 1
    assert run_cli("flavours", "actions", "retry", env=env).returncode == 2

"""How an action goes out: an e-mail over SMTP, or a JSON POST signed with Standard Webhooks.

A sender raises ``PermanentFailure`` when retrying cannot help (the SMTP server refused the
recipient or the message with a 5xx, the webhook answered a 4xx) and ``TemporaryFailure`` for
everything else (connection refused, TLS or login failures, timeouts, 4xx SMTP replies, 5xx
HTTP answers). Messages and payloads are
never logged: they carry personal data.
"""

from __future__ import annotations

import contextlib
import json
import os
import smtplib
import ssl
import threading
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import requests
from standardwebhooks import Webhook

from core.logs import mask_personal_data
from core.settings import Settings
from pipelines.actions.rules import WebhookAction

USER_AGENT = "flavours-connector-actions/1"


class TemporaryFailure(Exception):
    """Worth retrying later."""


class PermanentFailure(Exception):
    """Retrying would fail the same way."""


def _reason(error: BaseException) -> str:
    """A short reason for the outbox's ``last_error``, e-mail addresses and numbers masked."""
    return mask_personal_data(f"{type(error).__name__}: {error}")[:500]


class EmailSender:
    """One SMTP connection per sending thread, kept open between messages."""

    def __init__(self, settings: Settings) -> None:
        if not settings.smtp_host:
            raise PermanentFailure("FLAVOURS_SMTP_HOST is not set: e-mail rules cannot send")
        if not settings.smtp_from:
            raise PermanentFailure("FLAVOURS_SMTP_FROM is not set: e-mail rules cannot send")
        self.settings = settings
        self._local = threading.local()
        self._connections: list[smtplib.SMTP] = []
        self._lock = threading.Lock()

    def send(self, action_id: str, to: str, subject: str, body: str) -> None:
        message = EmailMessage()
        message["From"] = self.settings.smtp_from
        message["To"] = to
        message["Subject"] = subject
        # the idempotency key, so that a receiving system can drop an at-least-once resend
        message["Message-ID"] = f"<{action_id}@flavours-connector>"
        message.set_content(body)
        try:
            connection = self._connection()
        except (OSError, smtplib.SMTPException) as error:
            # connecting, TLS and login fail for every message alike: an outage or a setting
            # to fix, never this message's fault, so always worth retrying
            self._drop()
            raise TemporaryFailure(_reason(error)) from None
        try:
            connection.send_message(message)
        except smtplib.SMTPRecipientsRefused as error:
            codes = [code for code, _ in error.recipients.values()]
            failure = PermanentFailure if all(code >= 500 for code in codes) else TemporaryFailure
            raise failure(_reason(error)) from None
        except smtplib.SMTPSenderRefused as error:
            # MAIL FROM refused (sender not allowed, authentication required): the same for
            # every message, a setting to fix, so retried like a failed login
            self._drop()
            raise TemporaryFailure(_reason(error)) from None
        except smtplib.SMTPResponseException as error:
            self._drop()
            failure = PermanentFailure if error.smtp_code >= 500 else TemporaryFailure
            raise failure(_reason(error)) from None
        except (OSError, smtplib.SMTPException) as error:
            self._drop()
            raise TemporaryFailure(_reason(error)) from None

    def _connection(self) -> smtplib.SMTP:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            return connection
        s = self.settings
        context = ssl.create_default_context(cafile=s.smtp_ca_file)
        if s.smtp_tls == "ssl":
            connection = smtplib.SMTP_SSL(
                s.smtp_host, s.smtp_port, timeout=s.smtp_timeout_s, context=context
            )
        else:
            connection = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout_s)
            if s.smtp_tls == "starttls":
                connection.starttls(context=context)
        if s.smtp_username:
            password = s.smtp_password.get_secret_value() if s.smtp_password else ""
            connection.login(s.smtp_username, password)
        self._local.connection = connection
        with self._lock:
            self._connections.append(connection)
        return connection

    def _drop(self) -> None:
        connection = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None:
            with self._lock:
                if connection in self._connections:
                    self._connections.remove(connection)
            with contextlib.suppress(OSError):
                connection.close()

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            try:
                connection.quit()
            except (OSError, smtplib.SMTPException):
                connection.close()


class WebhookSender:
    """POSTs JSON signed with the Standard Webhooks scheme; ``webhook-id`` is the action's id."""

    def __init__(self) -> None:
        self._local = threading.local()

    def send(self, action_id: str, target: WebhookAction, payload: dict[str, Any]) -> None:
        secret = os.environ.get(target.secret_env)
        if not secret:
            raise PermanentFailure(f"{target.secret_env} is not set: the webhook's secret")
        body = json.dumps(payload, separators=(",", ":"), default=str)
        now = datetime.now(UTC)
        try:
            signature = Webhook(secret).sign(action_id, now, body)
        except Exception as error:  # the library raises plain errors on a malformed secret
            raise PermanentFailure(f"{target.secret_env} is not a valid secret: {error}") from None
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": action_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signature,
        }
        session = getattr(self._local, "session", None) or requests.Session()
        self._local.session = session
        try:
            answer = session.post(target.url, data=body, headers=headers, timeout=target.timeout_s)
        except requests.RequestException as error:
            raise TemporaryFailure(_reason(error)) from None
        if answer.ok:
            return
        reason = f"HTTP {answer.status_code} from {target.url}"
        if 400 <= answer.status_code < 500 and answer.status_code not in (408, 409, 425, 429):
            raise PermanentFailure(reason)
        raise TemporaryFailure(reason)

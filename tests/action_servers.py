"""Real servers on loopback for the actions tests: an SMTP server (aiosmtpd) that keeps what it
receives and can refuse, defer or hang, and an HTTP server that verifies Standard Webhooks
signatures and can answer errors or time out."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import threading
import time
from email import message_from_bytes, policy
from email.message import Message

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from standardwebhooks import Webhook
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from cli.devtools import free_port

logging.getLogger("mail.log").setLevel(logging.WARNING)  # it logs every line of DATA

WEBHOOK_SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # base64 of 24 test bytes


class SmtpSink:
    """aiosmtpd handler: ``mode`` is ``accept``, ``refuse`` (550 to the recipient),
    ``refuse-sender`` (550 to MAIL FROM, as a relay refusing an unknown sender), ``defer``
    (451) or ``hang`` (no answer to DATA until ``release`` is set or 30 s pass, then 451)."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.mode = "accept"
        self.release = threading.Event()
        self.greetings = 0  # EHLOs: one per connection without STARTTLS

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        self.greetings += 1
        session.host_name = hostname
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if self.mode == "refuse-sender":
            return "550 5.7.1 sender not allowed to relay"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.mode == "refuse":
            return "550 5.1.1 mailbox unavailable"
        if self.mode == "defer":
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.mode == "hang":
            deadline = time.monotonic() + 30
            while not self.release.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            return "451 4.3.0 too slow"
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        return "250 Message accepted"


class SmtpServer:
    """An SMTP server on a fixed loopback port that can be stopped and started again."""

    def __init__(self, tls: ssl.SSLContext | None = None, logins: dict[str, str] | None = None):
        self.sink = SmtpSink()
        self.port = free_port()
        self.tls = tls
        self.logins = logins
        self._controller: Controller | None = None
        self.start()

    def start(self) -> None:
        options: dict = {}
        if self.tls is not None:
            options = {"tls_context": self.tls, "require_starttls": True}
        if self.logins is not None:
            options |= {"authenticator": self._authenticate, "auth_required": True}
        self._controller = Controller(self.sink, hostname="127.0.0.1", port=self.port, **options)
        self._controller.start()

    def _authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        ok = self.logins.get(auth_data.login.decode()) == auth_data.password.decode()
        return AuthResult(success=ok, handled=False)

    def stop(self) -> None:
        self.sink.release.set()
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def messages(self) -> list[Message]:
        return self.sink.messages


class WebhookReceiver:
    """A threaded HTTP server that verifies each POST's signature and keeps the verified ones;
    ``answers`` is a list of statuses (or ``"hang"``) used one per request before 200."""

    def __init__(self, secret: str = WEBHOOK_SECRET) -> None:
        self.verifier = Webhook(secret)
        self.received: list[dict] = []
        self.ids: list[str] = []
        self.unverified = 0
        self.answers: list[int | str] = []
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}/hooks"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _app(self, environ, start_response):
        request = Request(environ)
        body = request.get_data()
        answer = self.answers.pop(0) if self.answers else 200
        if answer == "hang":  # longer than the sender's timeout; then a gateway's answer
            time.sleep(3)
            answer = 504
        try:
            self.verifier.verify(body, dict(request.headers))
        except Exception:
            self.unverified += 1
            return Response("bad signature", status=400)(environ, start_response)
        if answer == 200:
            self.received.append(json.loads(body))
            self.ids.append(request.headers["webhook-id"])
        return Response("{}", status=answer, content_type="application/json")(
            environ, start_response
        )

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(10)

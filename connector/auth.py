"""Webhook authentication: a shared token, and optionally Standard Webhooks signatures.

Flavours signs nothing, so the secret travels in the URL it is given (``?token=``) or in the
``X-Flavours-Token`` header a proxy adds. When ``FLAVOURS_WEBHOOK_HMAC_SECRET`` is set, the
Standard Webhooks headers (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``) are
required as well; signatures are computed by the ``standardwebhooks`` library, and the checks
here say which header is wrong (its own ``verify`` also parses the body as JSON, which the
receiver does once, later). Every comparison is constant-time.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import time
from collections.abc import Mapping
from datetime import UTC, datetime

from standardwebhooks import Webhook

SIGNATURE_TOLERANCE_S = 5 * 60
TOKEN_HEADER = "X-Flavours-Token"  # noqa: S105 (a header name, not a secret)


class AuthError(Exception):
    """The request is not authenticated; the message says why (never what the secret is)."""


def check_token(expected: str, query_token: str | None, header_token: str | None) -> None:
    """Raise ``AuthError`` unless the query or header token equals ``expected``."""
    supplied = header_token if header_token is not None else query_token
    if supplied is None:
        raise AuthError(f"missing token: add ?token=... to the URL or an {TOKEN_HEADER} header")
    if not hmac.compare_digest(supplied.encode(), expected.encode()):
        raise AuthError("invalid token")


def signing_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret (``whsec_`` + base64), or of a plain secret."""
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        except binascii.Error as exc:
            raise ValueError("FLAVOURS_WEBHOOK_HMAC_SECRET is not valid whsec_ base64") from exc
    return secret.encode()


@functools.lru_cache(maxsize=8)
def _signer(key: bytes) -> Webhook:
    return Webhook(key)


def sign(key: bytes, msg_id: str, timestamp: str, body: bytes) -> str:
    """The ``v1,`` signature of one message, by the ``standardwebhooks`` library."""
    return _signer(key).sign(msg_id, datetime.fromtimestamp(int(timestamp), UTC), body)


def check_signature(
    key: bytes, headers: Mapping[str, str], body: bytes, now: float | None = None
) -> None:
    """Raise ``AuthError`` unless the Standard Webhooks headers sign ``body`` with ``key``."""
    msg_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not (msg_id and timestamp and signatures):
        raise AuthError(
            "missing signature headers: webhook-id, webhook-timestamp and webhook-signature"
        )
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise AuthError("webhook-timestamp is not an integer of seconds") from None
    now = time.time() if now is None else now
    if abs(now - sent_at) > SIGNATURE_TOLERANCE_S:
        raise AuthError("webhook-timestamp is more than 5 minutes from the server's clock")
    expected = sign(key, msg_id, timestamp, body).encode()
    # The header may carry several space-separated signatures (key rotation); one must match.
    if not any(hmac.compare_digest(expected, sig.encode()) for sig in signatures.split()):
        raise AuthError("no valid signature in webhook-signature")

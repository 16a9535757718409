"""Webhook authentication: a shared token, and optionally Standard Webhooks signatures.

Flavours signs nothing, so the secret travels in the URL it is given (``?token=``) or in the
``X-Flavours-Token`` header a proxy adds. When ``FLAVOURS_WEBHOOK_HMAC_SECRET`` is set, the
Standard Webhooks headers (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``:
HMAC-SHA256 over ``id.timestamp.body``, base64, ``v1,`` prefixed) are required as well.
Every comparison is constant-time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping

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


def sign(key: bytes, msg_id: str, timestamp: str, body: bytes) -> str:
    """The ``v1,`` signature of one message (used by ``flavours send`` and the tests)."""
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


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

"""HTTP authentication on the ACS: CPEs (Basic over TLS, Digest on plain HTTP) and file
transfers (per-transfer credentials), with stateless nonces.

A nonce is ``<issued-at hex>.<HMAC of it>`` under a key every ACS process shares: any
process behind a load balancer can check a nonce another issued, and nothing needs storing.
Nonces live ``NONCE_TTL_S``; a replay inside that time is only as good as the original
request, which the session layer binds to its cookie anyway.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

__all__ = [
    "REALM",
    "Credentials",
    "DigestVerifier",
    "basic_credentials",
    "ha1",
]

REALM = "headless-ops"
NONCE_TTL_S = 300

_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


def ha1(username: str, password: str, realm: str = REALM) -> str:
    """Digest's HA1: MD5 of ``username:realm:password`` (what the protocol requires)."""
    return hashlib.md5(f"{username}:{realm}:{password}".encode(), usedforsecurity=False).hexdigest()


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a client must prove: a username and the HA1 of its password."""

    username: str
    ha1: str


def basic_credentials(header: str) -> tuple[str, str] | None:
    """``(username, password)`` of a Basic ``Authorization`` header, else None."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, sep, password = decoded.partition(":")
    return (username, password) if sep else None


def _digest_params(header: str) -> dict[str, str] | None:
    scheme, _, rest = header.partition(" ")
    if scheme.lower() != "digest":
        return None
    return {
        m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3))
        for m in _PARAM.finditer(rest)
    }


class DigestVerifier:
    """Issues challenges and checks ``Authorization`` headers (Basic and Digest, MD5, qop=auth)."""

    def __init__(self, key: bytes, realm: str = REALM) -> None:
        self.key = key
        self.realm = realm

    def nonce(self, now: float | None = None) -> str:
        """A fresh nonce any process holding the key can verify."""
        issued = f"{int(now if now is not None else time.time()):x}"
        mac = hmac.new(self.key, issued.encode(), hashlib.sha256).hexdigest()[:32]
        return f"{issued}.{mac}"

    def nonce_valid(self, nonce: str, now: float | None = None) -> bool:
        """Whether ``nonce`` was issued by a holder of the key less than the TTL ago."""
        issued, _, mac = nonce.partition(".")
        expected = hmac.new(self.key, issued.encode(), hashlib.sha256).hexdigest()[:32]
        if not hmac.compare_digest(mac, expected):
            return False
        try:
            age = (now if now is not None else time.time()) - int(issued, 16)
        except ValueError:
            return False
        return 0 <= age <= NONCE_TTL_S

    def challenge(self, scheme: str) -> str:
        """A ``WWW-Authenticate`` value for ``basic`` or ``digest``."""
        if scheme == "basic":
            return f'Basic realm="{self.realm}"'
        opaque = secrets.token_hex(8)
        return (
            f'Digest realm="{self.realm}", qop="auth", nonce="{self.nonce()}", '
            f'opaque="{opaque}", algorithm=MD5'
        )

    def username(self, header: str) -> str | None:
        """The username an ``Authorization`` header claims (before it is checked)."""
        basic = basic_credentials(header)
        if basic is not None:
            return basic[0]
        params = _digest_params(header)
        return params.get("username") if params else None

    def verify(
        self, header: str | None, method: str, credentials: Credentials, *, allow_basic: bool
    ) -> bool:
        """Whether ``header`` proves ``credentials`` for a ``method`` request."""
        if not header:
            return False
        basic = basic_credentials(header)
        if basic is not None:
            if not allow_basic:
                return False
            username, password = basic
            return hmac.compare_digest(username, credentials.username) and hmac.compare_digest(
                ha1(username, password, self.realm), credentials.ha1
            )
        params = _digest_params(header)
        if not params:
            return False
        needed = ("username", "realm", "nonce", "uri", "response")
        if any(k not in params for k in needed):
            return False
        if params["realm"] != self.realm or not self.nonce_valid(params["nonce"]):
            return False
        if not hmac.compare_digest(params["username"], credentials.username):
            return False
        if params.get("algorithm", "MD5").upper() != "MD5":
            return False
        ha2 = hashlib.md5(f"{method}:{params['uri']}".encode(), usedforsecurity=False).hexdigest()
        qop = params.get("qop")
        if qop:
            if qop != "auth" or "nc" not in params or "cnonce" not in params:
                return False
            material = (
                f"{credentials.ha1}:{params['nonce']}:{params['nc']}:{params['cnonce']}:{qop}:{ha2}"
            )
        else:
            material = f"{credentials.ha1}:{params['nonce']}:{ha2}"
        expected = hashlib.md5(material.encode(), usedforsecurity=False).hexdigest()
        return hmac.compare_digest(expected, params["response"].lower())

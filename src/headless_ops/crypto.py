"""Secrets at rest (Fernet, rotated through MultiFernet) and keyed hashes of API token secrets."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from headless_ops.config import Settings

__all__ = ["SecretBox", "TokenHasher", "load_keys"]


def _key_file(path: Path, make: bytes) -> bytes:
    """Read a key file, creating it (mode 0600) the first time.

    The key is written to a private temporary file and then hard-linked into place, which
    either publishes a complete file or fails because another process published one first:
    two processes starting on an empty data dir end up with the same key.
    """
    if path.exists():
        return path.read_bytes().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(make + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return path.read_bytes().strip()
        return make
    finally:
        tmp.unlink(missing_ok=True)


def load_keys(settings: Settings) -> tuple[SecretBox, TokenHasher]:
    """Both keys from the configuration, or from files in the data dir (made on first use)."""
    if settings.secret_keys.strip():
        fernet_keys = [k.strip().encode() for k in settings.secret_keys.split(",") if k.strip()]
    else:
        fernet_keys = [_key_file(settings.data_dir / "secret.key", Fernet.generate_key())]
    if settings.token_hash_key.strip():
        hash_key = settings.token_hash_key.strip().encode()
    else:
        hash_key = _key_file(
            settings.data_dir / "token-hash.key", base64.urlsafe_b64encode(os.urandom(32))
        )
    return SecretBox(fernet_keys), TokenHasher(hash_key)


class SecretBox:
    """Encrypts JSON objects of secrets; the first key encrypts, every key decrypts."""

    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise ValueError("at least one Fernet key is needed")
        self._fernet = MultiFernet([Fernet(k) for k in keys])

    def seal(self, secrets: dict[str, Any]) -> str | None:
        """Encrypt ``secrets`` (``None`` when there are none)."""
        if not secrets:
            return None
        return self._fernet.encrypt(json.dumps(secrets, sort_keys=True).encode()).decode()

    def open(self, token: str | None) -> dict[str, Any]:
        """Decrypt what :meth:`seal` made."""
        if not token:
            return {}
        try:
            value = json.loads(self._fernet.decrypt(token.encode()))
        except InvalidToken:
            raise ValueError(
                "device secrets cannot be decrypted with the configured keys"
            ) from None
        if not isinstance(value, dict):
            raise ValueError("device secrets are not an object")
        return value

    def rotate(self, token: str | None) -> str | None:
        """Re-encrypt under the first key (after a new key was put in front)."""
        return None if not token else self._fernet.rotate(token.encode()).decode()


class TokenHasher:
    """HMAC-SHA256 of token secrets under a server key; compared in constant time."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def hash(self, secret: str) -> str:
        """The stored form of ``secret``."""
        return hmac.new(self._key, secret.encode(), hashlib.sha256).hexdigest()

    def verify(self, secret: str, stored: str) -> bool:
        """Whether ``secret`` hashes to ``stored`` (constant time)."""
        return hmac.compare_digest(self.hash(secret), stored)

"""Secrets at rest and token hashes (crypto.py).

SecretBox seals/opens device secrets with Fernet and rotates keys through MultiFernet:
an old ciphertext still opens after a new key is put in front, ``rotate()`` re-encrypts it
under the new key, and a box holding only the new key can then open it; a wrong key is a
ValueError. TokenHasher is a keyed hash checked with a constant-time compare. load_keys
makes its key files with mode 0600 and reuses them.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from headless_ops.config import Settings
from headless_ops.crypto import SecretBox, TokenHasher, _key_file, load_keys

SECRETS = {"password": "hunter2", "private_key": "-----BEGIN KEY-----\nAAAA\n", "pin": "é✓"}


@pytest.fixture
def old_key() -> bytes:
    return Fernet.generate_key()


@pytest.fixture
def new_key() -> bytes:
    return Fernet.generate_key()


# --- SecretBox --------------------------------------------------------------------------


def test_seal_open_roundtrip(old_key: bytes) -> None:
    box = SecretBox([old_key])
    token = box.seal(SECRETS)
    assert token is not None
    assert box.open(token) == SECRETS
    # The ciphertext reveals none of the plaintext.
    for value in ("hunter2", "BEGIN KEY", "password"):
        assert value not in token


def test_each_seal_is_different(old_key: bytes) -> None:
    # Fernet uses a fresh IV: equal secrets do not give equal ciphertexts.
    box = SecretBox([old_key])
    assert box.seal(SECRETS) != box.seal(SECRETS)


def test_nothing_to_seal(old_key: bytes) -> None:
    box = SecretBox([old_key])
    assert box.seal({}) is None
    assert box.open(None) == {}
    assert box.open("") == {}
    assert box.rotate(None) is None


def test_wrong_key_is_a_value_error(old_key: bytes, new_key: bytes) -> None:
    token = SecretBox([old_key]).seal(SECRETS)
    with pytest.raises(ValueError, match="cannot be decrypted with the configured keys"):
        SecretBox([new_key]).open(token)


def test_tampered_ciphertext_is_a_value_error(old_key: bytes) -> None:
    box = SecretBox([old_key])
    token = box.seal(SECRETS)
    assert token is not None
    raw = bytearray(base64.urlsafe_b64decode(token))
    raw[40] ^= 0x01  # one bit of the ciphertext
    flipped = base64.urlsafe_b64encode(bytes(raw)).decode()
    with pytest.raises(ValueError, match="cannot be decrypted"):
        box.open(flipped)
    with pytest.raises(ValueError, match="cannot be decrypted"):
        box.open("not-a-fernet-token")


def test_a_sealed_non_object_is_refused(old_key: bytes) -> None:
    token = Fernet(old_key).encrypt(json.dumps(["password"]).encode()).decode()
    with pytest.raises(ValueError, match="not an object"):
        SecretBox([old_key]).open(token)


def test_a_box_needs_a_key() -> None:
    with pytest.raises(ValueError, match="at least one"):
        SecretBox([])
    with pytest.raises(ValueError):
        SecretBox([b"too-short"])


def test_rotation(old_key: bytes, new_key: bytes) -> None:
    old_token = SecretBox([old_key]).seal(SECRETS)

    # A new key is put in front; the old one stays so existing rows still open.
    both = SecretBox([new_key, old_key])
    assert both.open(old_token) == SECRETS

    rotated = both.rotate(old_token)
    assert rotated is not None
    assert rotated != old_token
    assert both.open(rotated) == SECRETS

    # After rotation the old key can be dropped …
    only_new = SecretBox([new_key])
    assert only_new.open(rotated) == SECRETS
    # … and the rotated ciphertext really is under the new key, not the old one.
    with pytest.raises(ValueError):
        SecretBox([old_key]).open(rotated)
    # The unrotated ciphertext needs the old key.
    with pytest.raises(ValueError):
        only_new.open(old_token)


def test_first_key_encrypts(old_key: bytes, new_key: bytes) -> None:
    token = SecretBox([new_key, old_key]).seal(SECRETS)
    assert SecretBox([new_key]).open(token) == SECRETS
    with pytest.raises(ValueError):
        SecretBox([old_key]).open(token)


# --- TokenHasher ------------------------------------------------------------------------


def test_hash_is_keyed_hex_and_hides_the_secret() -> None:
    secret = "Zm9vYmFyYmF6cXV4cXV1eC1zZWNyZXQ"
    one, other = TokenHasher(b"key-one"), TokenHasher(b"key-two")
    stored = one.hash(secret)
    assert len(stored) == 64
    assert int(stored, 16) >= 0
    assert secret not in stored
    assert one.hash(secret) == stored  # deterministic: it is looked up, not salted
    assert other.hash(secret) != stored  # keyed: a leaked table alone is not enough


def test_verify() -> None:
    hasher = TokenHasher(b"server-key")
    stored = hasher.hash("right-secret")
    assert hasher.verify("right-secret", stored) is True
    assert hasher.verify("wrong-secret", stored) is False
    assert hasher.verify("right-secret ", stored) is False
    assert hasher.verify("", stored) is False
    # A stored hash of another length (corrupt row) is a mismatch, not an error.
    assert hasher.verify("right-secret", stored[:-1]) is False
    assert hasher.verify("right-secret", "") is False
    # Under another server key the same secret does not verify.
    assert TokenHasher(b"other-key").verify("right-secret", stored) is False


def test_verify_compares_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # The comparison must go through hmac.compare_digest, never ``==``.
    calls: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)  # the module crypto uses
    hasher = TokenHasher(b"server-key")
    stored = hasher.hash("s")
    assert hasher.verify("s", stored) is True
    assert hasher.verify("t", stored) is False
    assert calls == [(stored, stored), (hasher.hash("t"), stored)]


# --- load_keys --------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_load_keys_creates_private_key_files(tmp_path: Path) -> None:
    data_dir = tmp_path / "data" / "nested"  # made on first use
    box, hasher = load_keys(Settings(data_dir=data_dir))
    secret_file, hash_file = data_dir / "secret.key", data_dir / "token-hash.key"
    assert _mode(secret_file) == 0o600
    assert _mode(hash_file) == 0o600
    # The files hold usable keys: a Fernet key, and the key of the hash.
    Fernet(secret_file.read_bytes().strip())
    assert hasher.hash("x") == TokenHasher(hash_file.read_bytes().strip()).hash("x")

    # A second start reuses the files: what the first sealed, the second opens.
    token = box.seal(SECRETS)
    box2, hasher2 = load_keys(Settings(data_dir=data_dir))
    assert box2.open(token) == SECRETS
    assert hasher2.hash("x") == hasher.hash("x")
    assert _mode(secret_file) == 0o600


def test_load_keys_from_configuration(tmp_path: Path, old_key: bytes, new_key: bytes) -> None:
    old_token = SecretBox([old_key]).seal(SECRETS)
    settings = Settings(
        data_dir=tmp_path,
        secret_keys=f" {new_key.decode()} , {old_key.decode()} ,",
        token_hash_key=" configured-hash-key \n",
    )
    box, hasher = load_keys(settings)
    assert box.open(old_token) == SECRETS
    assert SecretBox([new_key]).open(box.seal(SECRETS)) == SECRETS
    assert hasher.hash("x") == TokenHasher(b"configured-hash-key").hash("x")
    # Configured keys leave the data dir alone.
    assert not (tmp_path / "secret.key").exists()
    assert not (tmp_path / "token-hash.key").exists()


def _race_for_key(directory: str, queue: Any) -> None:
    queue.put(_key_file(Path(directory) / "race.key", os.urandom(16).hex().encode()))


def test_processes_starting_together_on_an_empty_data_dir_share_one_key(tmp_path: Path) -> None:
    # Each process makes its own candidate key; exactly one is published and all read it.
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_race_for_key, args=(str(tmp_path), queue)) for _ in range(6)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=30)
    keys = {queue.get(timeout=10) for _ in procs}
    assert len(keys) == 1
    assert (tmp_path / "race.key").read_bytes().strip() == keys.pop()
    assert [p.name for p in tmp_path.iterdir()] == ["race.key"]  # no temporary file left

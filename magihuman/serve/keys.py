"""API keys: ``<id>:<secret>`` per line in a file only its owner can read.

``fal-client`` sends ``Authorization: Key <FAL_KEY>``; with ``FAL_KEY=<id>:<secret>`` the id
names the key (requests are isolated per id) and the secret proves it. A missing, empty or
group/world-accessible keys file refuses to start, saying why.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

_LINE = re.compile(r"^([A-Za-z0-9_-]{1,64}):([A-Za-z0-9_-]{16,256})$")


class KeysFileError(RuntimeError):
    """The keys file cannot be used; the message says why and how to fix it."""


@dataclass(frozen=True)
class KeyRing:
    """Key id -> SHA-256 of its secret (the secrets themselves are not kept in memory)."""

    digests: dict[str, bytes]

    @classmethod
    def load(cls, path: str | Path) -> KeyRing:
        path = Path(path).expanduser()
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            raise KeysFileError(f"API keys file {path} does not exist (one '<id>:<secret>' per line, chmod 600)") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeysFileError(f"API keys file {path} has mode {stat.S_IMODE(mode):o}: it must be readable by its "
                                f"owner only (chmod 600 {path})")  # fmt: skip
        digests: dict[str, bytes] = {}
        for number, raw in enumerate(path.read_text().splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            match = _LINE.match(line)
            if match is None:
                raise KeysFileError(f"{path}:{number}: expected '<id>:<secret>' (id: letters, digits, '-', '_'; "
                                    "secret: at least 16 of them)")  # fmt: skip
            key_id, secret = match.groups()
            if key_id in digests:
                raise KeysFileError(f"{path}:{number}: key id {key_id!r} appears twice")
            digests[key_id] = _digest(secret)
        if not digests:
            raise KeysFileError(f"API keys file {path} holds no key (one '<id>:<secret>' per line)")
        return cls(digests)

    def authenticate(self, header: str | None) -> str | None:
        """The key id of a valid ``Key <id>:<secret>`` header, else None (the same for every failure)."""
        scheme, _, token = (header or "").partition(" ")
        key_id, colon, secret = token.strip().partition(":")
        expected = self.digests.get(key_id)
        # Compare even for an unknown id, so the time taken does not tell ids apart.
        ok = hmac.compare_digest(expected or _UNKNOWN, _digest(secret))
        return key_id if ok and expected is not None and colon and scheme.lower() == "key" else None


_UNKNOWN = hashlib.sha256(b"no such key").digest()


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def create_keys_file(path: Path) -> str:
    """Write a new keys file (0600, never over an existing file) with one fresh key; returns it."""
    key = f"{secrets.token_hex(4)}:{secrets.token_urlsafe(32)}"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(key + "\n")
    return key

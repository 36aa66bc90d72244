"""Secrets and the Alibaba Cloud credentials dwnotify signs with, and where it reads them from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class Secret:
    """A value that never prints itself: `repr`, `str` and f-strings show `***`."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The real value, for the one place that must send it."""
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"


@dataclass(frozen=True)
class Credentials:
    """An access key pair, with the STS token when the key is temporary."""

    access_key_id: str
    access_key_secret: Secret
    security_token: Secret | None = None


def credentials_from_env(environ: Mapping[str, str]) -> Credentials | None:
    """Credentials from `ALIBABA_CLOUD_ACCESS_KEY_ID/SECRET` (and `_SECURITY_TOKEN`), if set."""
    key_id = environ.get("ALIBABA_CLOUD_ACCESS_KEY_ID", "").strip()
    secret = environ.get("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "").strip()
    if not key_id or not secret:
        return None
    token = environ.get("ALIBABA_CLOUD_SECURITY_TOKEN", "").strip()
    return Credentials(key_id, Secret(secret), Secret(token) if token else None)


def credentials_from_context(context: Any) -> Credentials | None:
    """The function role's STS credentials from `context.credentials` (python3.10; 3.12 has none)."""
    given = getattr(context, "credentials", None)
    key_id = str(getattr(given, "access_key_id", "") or "").strip()
    secret = str(getattr(given, "access_key_secret", "") or "").strip()
    if not key_id or not secret:
        return None
    token = str(getattr(given, "security_token", "") or "").strip()  # FC may pass "": no token
    return Credentials(key_id, Secret(secret), Secret(token) if token else None)

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


def _credentials(key_id: object, secret: object, token: object) -> Credentials | None:
    """Credentials from raw values (None or "" mean unset); None without a key id and secret."""
    key_id, secret, token = (str(value or "").strip() for value in (key_id, secret, token))
    if not key_id or not secret:
        return None
    return Credentials(key_id, Secret(secret), Secret(token) if token else None)


def credentials_from_env(environ: Mapping[str, str]) -> Credentials | None:
    """Credentials from `ALIBABA_CLOUD_ACCESS_KEY_ID/SECRET` (and `_SECURITY_TOKEN`), if set."""
    names = ("ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET", "ALIBABA_CLOUD_SECURITY_TOKEN")
    return _credentials(*(environ.get(name) for name in names))


def credentials_from_context(context: Any) -> Credentials | None:
    """The function role's STS credentials from `context.credentials` (python3.10; 3.12 has none).

    FC may pass "" as the token: no token.
    """
    given = getattr(context, "credentials", None)
    names = ("access_key_id", "access_key_secret", "security_token")
    return _credentials(*(getattr(given, name, None) for name in names))

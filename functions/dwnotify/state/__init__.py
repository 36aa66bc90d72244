"""State stores: where run statuses, the outbox and leases live between ticks."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..settings import StateSettings
from .base import StateStore

if TYPE_CHECKING:
    from ..dataworks import Credentials


def open_store(settings: StateSettings, credentials: Credentials | None = None) -> StateStore:
    """The configured backend; the Tablestore SDK is imported only when that backend is chosen."""
    retention_s = settings.retention.total_seconds()
    if settings.backend == "sqlite":
        from .sqlite import SqliteStateStore

        return SqliteStateStore(settings.path, retention_s)
    raise NotImplementedError(f"state backend {settings.backend!r} is not available yet")

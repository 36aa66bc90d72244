"""State stores: where run statuses, the outbox and leases live between ticks."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import StateError
from ..settings import StateSettings
from .base import StateStore

if TYPE_CHECKING:
    from ..credentials import Credentials


def open_store(settings: StateSettings, credentials: Credentials | None = None) -> StateStore:
    """The configured backend; the Tablestore SDK is imported only when that backend is chosen.

    Tablestore uses the same credentials as DataWorks (the FC role's STS token included).
    """
    retention_s = settings.retention.total_seconds()
    if settings.backend == "sqlite":
        from .sqlite import SqliteStateStore

        return SqliteStateStore(settings.path, retention_s)
    if settings.backend == "tablestore":
        if credentials is None:
            raise StateError(
                "state.backend tablestore needs credentials: give the function a role, or set "
                "ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET"
            )
        if not settings.endpoint or not settings.instance:
            raise StateError("state.endpoint and state.instance are required when the backend is tablestore")
        from .tablestore import TablestoreStateStore

        return TablestoreStateStore(
            settings.endpoint, settings.instance, settings.table, credentials, retention_s
        )
    raise StateError(f"state backend {settings.backend!r} is not available")

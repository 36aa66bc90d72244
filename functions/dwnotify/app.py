"""Wiring shared by the command line and the FC handler: settings + credentials -> a Notifier."""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

from .dataworks import Credentials, DataWorksClient
from .logs import register_secrets
from .settings import Settings
from .state import open_store
from .state.base import StateStore
from .tick import Notifier


@dataclass
class App:
    """The long-lived objects of one process (one FC instance): reused across ticks."""

    notifier: Notifier
    client: DataWorksClient
    store: StateStore

    def close(self) -> None:
        """Release the state store."""
        self.store.close()


def secret_values(settings: Settings, credentials: Credentials | None) -> list[str]:
    """Every secret value the settings and credentials hold, for log masking."""
    values = []
    for channel in settings.channels.values():
        url = channel.url.reveal()
        values.append(url)
        # The token alone must not print either: query values (access_token, key) and hook paths.
        parts = urllib.parse.urlsplit(url)
        values += [value for _, value in urllib.parse.parse_qsl(parts.query) if len(value) >= 8]
        values += [segment for segment in parts.path.split("/") if len(segment) >= 12]
        values += [part for part in (parts.username, parts.password) if part]
        if channel.secret:
            values.append(channel.secret.reveal())
    if credentials is not None:
        values.append(credentials.access_key_secret.reveal())
        if credentials.security_token:
            values.append(credentials.security_token.reveal())
    return values


def build_app(
    settings: Settings,
    credentials: Credentials,
    *,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> App:
    """A DataWorks client, the configured state store and a Notifier wired to both."""
    register_secrets(secret_values(settings, credentials))
    client = DataWorksClient(settings.dataworks, credentials, sleep=sleep, clock=clock)
    store = open_store(settings.state, credentials)
    notifier = Notifier(
        settings,
        source=client,
        store=store,
        clock=clock,
        sleep=sleep,
        api_calls=lambda: client.calls,
    )
    return App(notifier=notifier, client=client, store=store)

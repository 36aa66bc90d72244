"""Wiring shared by the command line and the FC handler: settings + credentials -> a Notifier."""

from __future__ import annotations

import re
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

from .credentials import Credentials
from .dataworks import DataWorksClient
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


_WORDS = re.compile(r"[a-z]+(?:[-_.][a-z]+)*")


def secret_values(settings: Settings, credentials: Credentials | None) -> tuple[list[str], list[str]]:
    """The secrets the settings and credentials hold: tokens, and values masked only whole.

    Tokens (query values such as access_token or key, hook path tokens, signing secrets, passwords,
    the access key secret, the STS token) are random: any piece of one is masked too. Whole URLs, user
    names and path segments made of lower-case words (`/dataworks-notify`) may share words with
    ordinary text, so only all of one is.
    """
    tokens: list[str] = []
    whole: list[str] = []
    for channel in settings.channels.values():
        url = channel.url.reveal()
        parts = urllib.parse.urlsplit(url)
        tokens += [value for _, value in urllib.parse.parse_qsl(parts.query) if len(value) >= 8]
        tokens += [parts.password] if parts.password else []
        for segment in (segment for segment in parts.path.split("/") if len(segment) >= 12):
            (whole if _WORDS.fullmatch(segment) else tokens).append(segment)
        whole.append(url)
        whole += [parts.username] if parts.username else []
        if channel.secret:
            tokens.append(channel.secret.reveal())
    if credentials is not None:
        tokens.append(credentials.access_key_secret.reveal())
        if credentials.security_token:
            tokens.append(credentials.security_token.reveal())
    return tokens, whole


def register_secrets_of(settings: Settings, credentials: Credentials | None) -> None:
    """Mask every secret of the settings and credentials in logs, errors and summaries from now on."""
    tokens, whole = secret_values(settings, credentials)
    register_secrets(tokens)
    register_secrets(whole, pieces=False)


def build_app(
    settings: Settings,
    credentials: Credentials,
    *,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> App:
    """A DataWorks client, the configured state store and a Notifier wired to both."""
    register_secrets_of(settings, credentials)
    client = DataWorksClient(settings.dataworks, credentials, sleep=sleep, clock=clock)
    store = open_store(settings.state, credentials)
    notifier = Notifier(
        settings,
        source=client,
        store=store,
        clock=clock,
        sleep=sleep,
    )
    return App(notifier=notifier, client=client, store=store)

"""Wiring shared by the command line and the FC handler: settings + credentials -> a Notifier."""

from __future__ import annotations

import re
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .channels import CHANNEL_TYPES, Channel, build_channel
from .credentials import Credentials, Secret
from .dataworks import DataWorksClient
from .logs import register_secrets
from .settings import ChannelSettings, Settings
from .state import open_store
from .state.base import StateStore
from .tick import Notifier

if TYPE_CHECKING:
    import httpx

    from .acting import Actor
    from .render import Renderer


@dataclass
class App:
    """The long-lived objects of one process (one FC instance): reused across ticks, closed together."""

    notifier: Notifier
    client: DataWorksClient
    store: StateStore
    channels: ChannelFactory
    clock: Callable[[], float] = time.time

    def actor(self, defer: Callable[[str], None] | None) -> Actor:
        """What takes verified Slack clicks with these clients; `defer` carries a claimed decision
        out (None: at once)."""
        from .acting import Actor

        return Actor(
            self.notifier.settings,
            self.store,
            self.client,
            self.channels,  # type: ignore[arg-type]  # a slack-app channel's sender is an ActionsChat
            clock=self.clock,
            defer=defer,
        )

    def close(self) -> None:
        """Release the state store and the chat services' connections."""
        try:
            self.store.close()
        finally:
            self.channels.close()


class ChannelFactory:
    """Builds each configured channel's sender, all on one httpx client opened at the first send."""

    def __init__(self, timeout_s: float, clock: Callable[[], float]) -> None:
        self._timeout_s = timeout_s
        self._clock = clock
        self._client: httpx.Client | None = None

    def __call__(self, settings: ChannelSettings) -> Channel:
        """The sender for one channel (httpx is imported here, not on a quiet tick)."""
        if self._client is None:
            import httpx

            self._client = httpx.Client(timeout=self._timeout_s)
        return build_channel(settings, self._client, self._timeout_s, self._clock)

    def close(self) -> None:
        """Close the shared client's connections, if it was ever opened."""
        if self._client is not None:
            self._client.close()
            self._client = None


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
        values = {"url": channel.url, "secret": channel.secret, **channel.options}
        for key, kind in CHANNEL_TYPES[channel.type].options.items():
            value = values.get(key)
            if not isinstance(value, Secret) or not value:
                continue
            if kind != "url":
                tokens.append(value.reveal())
                continue
            url = value.reveal()
            parts = urllib.parse.urlsplit(url)
            tokens += [query for _, query in urllib.parse.parse_qsl(parts.query) if len(query) >= 8]
            tokens += [parts.password] if parts.password else []
            for segment in parts.path.split("/"):
                if len(segment) >= 12:
                    (whole if _WORDS.fullmatch(segment) else tokens).append(segment)
            whole.append(url)
            whole += [parts.username] if parts.username else []
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


def open_state(settings: Settings, credentials: Credentials | None) -> StateStore:
    """The configured state store, every secret registered for masking before anything can fail."""
    register_secrets_of(settings, credentials)
    return open_store(settings.state, credentials)


def build_app(
    settings: Settings,
    credentials: Credentials,
    *,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    wrap_store: Callable[[StateStore], StateStore] | None = None,
) -> App:
    """Everything long-lived, wired: the DataWorks client, the state store, the renderer (built at
    the first message), the channel factory and the Notifier that ticks with them.

    `wrap_store` is the seam a test injects faults through: the Notifier uses what it returns.
    """
    store = open_state(settings, credentials)
    client = DataWorksClient(settings.dataworks, credentials, sleep=sleep, clock=clock)
    channels = ChannelFactory(settings.delivery.timeout.total_seconds(), clock)

    def renderer() -> Renderer:
        from .render import Renderer, builtin_templates_dir

        return Renderer(settings.templates, builtin_templates_dir())

    notifier = Notifier(
        settings,
        source=client,
        store=wrap_store(store) if wrap_store else store,
        make_channel=channels,
        renderer=renderer,
        clock=clock,
        sleep=sleep,
    )
    return App(notifier=notifier, client=client, store=store, channels=channels, clock=clock)

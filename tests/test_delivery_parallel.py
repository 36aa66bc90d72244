"""Channels deliver in parallel, each keeping its own guarantees: one send at a time, in order, each
recorded before the next; one channel failing holds back no other; the summary adds every pass up.

Overlap is shown by a rendezvous, never by timing: the first send of each channel is held at the
webhook until every channel's first send has arrived, which sequential delivery can never do (the
barrier breaks after its timeout, the held sends are answered 500, and the tests fail).
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from dwnotify.app import App
from dwnotify.channels import Channel
from dwnotify.delivery import CHANNEL_LEASE_S, Deliverer
from dwnotify.errors import ConflictError, StateError
from dwnotify.message import Message
from dwnotify.settings import ChannelSettings
from dwnotify.state.base import SENT, TICK_LEASE, Lease, OutboxMessage, channel_lease
from emulators._base import Emulator, Request, Response
from emulators.webhook import GenericWebhookEmulator
from tests.conftest import World
from tests.helpers import StateInterposer, ding_texts, slack_text

CHANNELS = ("ops", "team", "hook")  # DingTalk, Slack, the generic webhook
HOOK_PATH = "/hooks/parallel-3e9b"
WHICH = re.compile(r"\b(ops|team|hook) message (\d+)\b")
MEETING_S = 10.0  # how long a held first send waits for the others (a regression fails, not hangs)


@pytest.fixture
def hook(world: World) -> Iterator[GenericWebhookEmulator]:
    """A third channel, `hook`, on a generic webhook emulator sharing the world's clock."""
    emulator = GenericWebhookEmulator({HOOK_PATH: None}, clock=world.clock)
    url = emulator.start()
    channels = world.config_data()["channels"]
    world.config_overrides["channels"] = {**channels, "hook": {"type": "webhook", "url": url + HOOK_PATH}}
    world.config_overrides["rules"] = [
        {"name": "failures", "events": ["run.failed"], "channels": ["ops"]},
        {"name": "everything", "events": ["*"], "channels": ["team", "hook"]},
    ]
    # Longer than a held send waits at the rendezvous: a broken one is answered, not timed out.
    world.config_overrides["delivery"] = {"timeout": "20s"}
    try:
        yield emulator
    finally:
        emulator.stop()


def emulators(world: World, hook: GenericWebhookEmulator) -> dict[str, Emulator]:
    return {"ops": world.dingtalk, "team": world.slack, "hook": hook}


def queue(world: World, app: App, counts: dict[str, int]) -> None:
    """Commit `counts[channel]` messages `<channel> message <i>` per channel, each of its own run."""
    news = [
        OutboxMessage(
            f"{name}-{index}", name, f"10000/{name}-r{index}", "everything", index, "t",
            f"{name} message {index}", world.clock.now,
        )
        for name, count in counts.items()
        for index in range(count)
    ]  # fmt: skip
    lease = app.store.acquire_lease(TICK_LEASE, "setup", 90.0, world.clock.now)
    assert lease is not None
    app.store.commit(lease, [], [], news, world.clock.now)
    app.store.release_lease(lease)


def received(world: World, hook: GenericWebhookEmulator) -> dict[str, list[int]]:
    """The message numbers each channel's service accepted, in arrival order."""
    texts = {
        "ops": ding_texts(world),
        "team": [slack_text(message) for message in world.slack_messages()],
        "hook": [body["text"] for body in hook.messages(HOOK_PATH)],
    }
    found: dict[str, list[int]] = {}
    for channel, bodies in texts.items():
        for text in bodies:
            for name, number in WHICH.findall(text):
                assert name == channel, f"{name}'s message reached {channel}"
                found.setdefault(channel, []).append(int(number))
    return found


def deliverer(world: World, app: App, wrap: Any = None, store: Any = None) -> Deliverer:
    """A delivery pass on `store` (else `app`'s); `wrap(settings, channel)` may stand in for a channel."""

    def make_channel(settings: ChannelSettings) -> Channel:
        built = app.channels(settings)
        return wrap(settings, built) if wrap else built

    return Deliverer(
        store or app.store, app.notifier.settings.channels, make_channel, owner="tick-a",
        clock=world.clock, sleep=world.clock.sleep, max_age_s=86400.0, send_timeout_s=20.0,
    )  # fmt: skip


class Rendezvous:
    """Holds the first request to each emulator until the first request of every one has arrived."""

    def __init__(self, *held: Emulator) -> None:
        self._barrier = threading.Barrier(len(held), timeout=MEETING_S)
        for emulator in held:
            self._hold(emulator)

    @property
    def met(self) -> bool:
        """Whether every first send was in flight at once."""
        return not self._barrier.broken

    def _hold(self, emulator: Emulator) -> None:
        answer, first = emulator.handle, threading.Event()

        def held(request: Request) -> Response | None:
            if not first.is_set():
                first.set()
                self._barrier.wait()  # broken: raises, and the emulator answers 500
            return answer(request)

        emulator.handle = held  # type: ignore[method-assign]


class OverlapWatch(StateInterposer):
    """Counts store calls begun while another was still running: delivery must make none.

    The first `waits` records of a send each hold the store a moment for a second caller, which
    only a missing lock lets in (the rendezvous makes the channels record their first sends at once).
    """

    def __init__(self, inner: Any, waits: int = 2) -> None:
        super().__init__(inner)
        self.overlaps = 0
        self._inside = 0
        self._waits = waits
        self._entered = threading.Event()
        self._meta = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        target = super().__getattr__(name)
        if not callable(target) or name == "close":
            return target

        def watched(*args: Any, **kwargs: Any) -> Any:
            with self._meta:
                self._inside += 1
                if self._inside > 1:
                    self.overlaps += 1
                    self._entered.set()
                wait = name == "update_messages" and self._waits > 0
                if wait:
                    self._waits -= 1
            try:
                if wait:
                    self._entered.wait(0.5)
                return target(*args, **kwargs)
            finally:
                with self._meta:
                    self._inside -= 1

        return watched


class Journal:
    """One ordered log of what reached each webhook and what the store recorded as sent."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()

    def add(self, channel: str, what: str, number: int) -> None:
        with self._lock:
            self.events.append((channel, what, number))

    def tap(self, channel: str, emulator: Emulator) -> None:
        """Log each post to `emulator` as it arrives, before it is answered."""
        answer = emulator.handle

        def logged(request: Request) -> Response | None:
            for name, number in WHICH.findall(request.body.decode("utf-8", "replace")):
                self.add(name, "posted", int(number))
            return answer(request)

        emulator.handle = logged  # type: ignore[method-assign]

    def of(self, channel: str) -> list[tuple[str, int]]:
        return [(what, number) for name, what, number in self.events if name == channel]


class RecordingStore(StateInterposer):
    """Logs into a Journal every message the store is told was sent."""

    def __init__(self, inner: Any, journal: Journal) -> None:
        super().__init__(inner)
        self._journal = journal

    def update_messages(self, lease: Lease, messages: list[OutboxMessage]) -> None:
        for message in messages:
            if message.status == SENT:
                for name, number in WHICH.findall(message.text):
                    self._journal.add(name, "recorded", int(number))
        self._inner.update_messages(lease, messages)


def test_the_channels_first_sends_are_in_flight_at_once_and_the_store_is_used_by_one_at_a_time(
    world: World, hook: GenericWebhookEmulator
) -> None:
    watches: list[OverlapWatch] = []

    def watched(store: Any) -> OverlapWatch:
        watches.append(OverlapWatch(store))
        return watches[-1]

    world.app = app = world.build(wrap_store=watched)
    queue(world, app, {"ops": 2, "team": 2, "hook": 2})
    rendezvous = Rendezvous(*emulators(world, hook).values())
    summary = world.tick()
    assert rendezvous.met, "a channel's first send waited for another channel's to finish"
    assert (summary.messages_sent, summary.chat_posts, summary.messages_pending) == (6, 6, 0)
    assert received(world, hook) == {"ops": [0, 1], "team": [0, 1], "hook": [0, 1]}
    assert watches[0].overlaps == 0, "two channels were inside the state store at once"


def test_each_channel_sends_its_messages_once_in_order_each_recorded_before_the_next(
    world: World, hook: GenericWebhookEmulator
) -> None:
    journal = Journal()
    world.app = app = world.build(wrap_store=lambda store: RecordingStore(store, journal))
    counts = {"ops": 6, "team": 5, "hook": 7}
    queue(world, app, counts)
    for channel, emulator in emulators(world, hook).items():
        journal.tap(channel, emulator)
    summary = world.tick()
    assert (summary.messages_sent, summary.chat_posts, summary.messages_pending) == (18, 18, 0)
    assert received(world, hook) == {channel: list(range(count)) for channel, count in counts.items()}
    for channel, count in counts.items():
        # Post, record, post, record: the next post never starts before the last one is stored.
        expected = [(what, number) for number in range(count) for what in ("posted", "recorded")]
        assert journal.of(channel) == expected
    assert all(app.store.pending_messages(channel) == [] for channel in CHANNELS)


def test_a_channel_answered_500_keeps_its_messages_and_holds_back_no_other(
    world: World, hook: GenericWebhookEmulator
) -> None:
    world.app = app = world.build()
    queue(world, app, {"ops": 3, "team": 2, "hook": 3})
    world.slack.inject(status=500, body="rollup_error", times=1)
    first = world.tick()
    assert (first.messages_sent, first.messages_failed, first.messages_pending) == (6, 0, 2)
    assert received(world, hook) == {"ops": [0, 1, 2], "hook": [0, 1, 2]}
    assert len(world.slack.attempts) == 1  # a retryable failure ends that channel's pass, no other's
    waiting = app.store.pending_messages("team")
    assert [m.id for m in waiting] == ["team-0", "team-1"] and "500" in waiting[0].last_error
    second = world.tick(advance=130)
    assert (second.messages_sent, second.messages_pending) == (2, 0)
    assert received(world, hook)["team"] == [0, 1]


class Broken:
    """A channel whose send hits a bug."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.deadline: float | None = None

    def send(self, message: Message) -> None:
        raise RuntimeError("a bug in the sender")


class FaultyLease(StateInterposer):
    """Raises `error` when the lease of channel `channel` is taken or written with (`at`)."""

    def __init__(self, inner: Any, channel: str, at: str, error: Exception) -> None:
        super().__init__(inner)
        self._lease, self._at, self._error = channel_lease(channel), at, error

    def acquire_lease(self, name: str, owner: str, ttl_s: float, now: float) -> Lease | None:
        if self._at == "acquire_lease" and name == self._lease:
            raise self._error
        lease: Lease | None = self._inner.acquire_lease(name, owner, ttl_s, now)
        return lease

    def update_messages(self, lease: Lease, messages: list[OutboxMessage]) -> None:
        if self._at == "update_messages" and lease.name == self._lease:
            raise self._error
        self._inner.update_messages(lease, messages)


@pytest.mark.parametrize(
    ("method", "error", "raised"),
    [
        ("send", None, RuntimeError),  # a bug in hook's sender
        ("acquire_lease", StateError("database is locked"), StateError),
        ("acquire_lease", RuntimeError("a bug in the store"), RuntimeError),
        # A lost lease: logged, and the pass ends there, as it always has.
        ("update_messages", ConflictError("the channel:hook lease is no longer held"), None),
    ],
)
def test_a_channel_whose_pass_raises_stops_only_itself_and_keeps_its_messages(
    world: World,
    hook: GenericWebhookEmulator,
    method: str,
    error: Exception | None,
    raised: type[Exception] | None,
) -> None:
    # `hook` fails: the first channel by name, which a sequential pass would serve first.
    world.app = app = world.build()
    queue(world, app, {"ops": 2, "team": 2, "hook": 3})
    if error is None:
        broken = deliverer(world, app, lambda s, built: Broken(s.name) if s.name == "hook" else built)
    else:
        broken = deliverer(world, app, store=FaultyLease(app.store, "hook", method, error))
    if raised is None:
        stats = broken.deliver()
        assert (stats.sent, stats.posts) == (4, 4)
    else:
        with pytest.raises(raised):
            broken.deliver()
    found = received(world, hook)
    assert (found["ops"], found["team"]) == ([0, 1], [0, 1])
    assert app.store.pending_messages("ops") == app.store.pending_messages("team") == []
    assert [m.id for m in app.store.pending_messages("hook")] == ["hook-0", "hook-1", "hook-2"]
    # Once the failed pass's lease (if it took one) has expired, the channel is served in order.
    world.clock.advance(CHANNEL_LEASE_S + 1)
    later = deliverer(world, app).deliver()
    assert (later.sent, later.pending) == (3, 0)
    # A post whose record was refused is sent again: the one in flight when the lease was lost.
    assert received(world, hook)["hook"] == ([0] if method == "update_messages" else []) + [0, 1, 2]


def test_the_summary_adds_up_what_every_channel_did(world: World, hook: GenericWebhookEmulator) -> None:
    world.app = app = world.build()
    queue(world, app, {"ops": 4, "team": 3, "hook": 2})
    world.slack.inject(status=500, body="rollup_error", times=1)  # team: 3 wait for a retry
    hook.inject(status=410, times=10)  # hook: refused for good, both given up
    summary = world.tick()
    assert (summary.messages_sent, summary.chat_posts) == (4, 4)
    assert (summary.messages_failed, summary.messages_pending) == (2, 3)
    left = Counter((m.channel, m.status) for m in app.store.report().messages)
    assert left == {("hook", "failed"): 2, ("team", "pending"): 3}


def test_no_channel_starts_a_send_after_the_deadline(world: World, hook: GenericWebhookEmulator) -> None:
    world.app = app = world.build()
    queue(world, app, {"ops": 2, "team": 2, "hook": 2})
    stats = deliverer(world, app).deliver(world.clock.now + 5)  # a send could take 20 s
    assert (stats.sent, stats.pending) == (0, 6)
    assert received(world, hook) == {}


def test_one_channel_to_serve_is_served_from_the_calling_thread(world: World) -> None:
    world.app = app = world.build()
    queue(world, app, {"team": 2})
    senders: list[int] = []

    class Spy:
        def __init__(self, built: Channel) -> None:
            self.name, self.deadline, self._built = built.name, None, built

        def send(self, message: Message) -> None:
            senders.append(threading.get_ident())
            self._built.send(message)

    stats = deliverer(world, app, lambda _, built: Spy(built)).deliver()
    assert stats.sent == 2 and senders == [threading.get_ident()] * 2

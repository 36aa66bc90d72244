"""A tick killed at any point loses nothing; only a send in flight may arrive twice."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from dwnotify.tick import TICK_LEASE_S
from tests.conftest import ManualClock, World, open_world
from tests.helpers import CrashingStore, Killed, delivered, fail_run

ROOT = Path(__file__).resolve().parents[1]


def check_exactly_once(world: World, run_ids: set[str], in_flight: int = 1) -> None:
    for counts in delivered(world):
        assert set(counts) == run_ids, "a message was lost"
        duplicates = sum(n - 1 for n in counts.values())
        assert duplicates <= in_flight, f"{duplicates} messages repeated: {counts}"


def test_a_tick_killed_at_every_state_call_loses_nothing(tmp_path: Path, state_backend: str) -> None:
    crash_at = 0
    completed = False
    while not completed:
        clock = ManualClock(float(int(time.time())))
        workdir = tmp_path / f"crash-{crash_at}"
        workdir.mkdir()
        with open_world(workdir, clock, state_backend) as world:
            run_ids = {fail_run(world) for _ in range(3)}
            # The same notifier each round, dying at one more point.
            app = world.build(wrap_store=functools.partial(CrashingStore, crash_at=crash_at))
            clock.advance(60)
            try:
                app.notifier.tick()
                completed = True
            except Killed:
                pass
            # The next timer fire comes after the dead tick's leases expired, on a fresh instance.
            world.tick(advance=TICK_LEASE_S + 30)
            check_exactly_once(world, run_ids)
            app.close()
        crash_at += 1
    assert crash_at > 10  # the loop really walked through discovery, commit and delivery


@pytest.mark.parametrize("kill_after", [1, 4])
def test_kill_9_mid_delivery_loses_nothing(world: World, kill_after: int) -> None:
    run_ids = {fail_run(world) for _ in range(4)}
    world.dingtalk.response_delay_s = world.slack.response_delay_s = 0.3
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALIYUN_", "ALIBABA_CLOUD_"))}
    env.update(world.environ())
    env.update({"ALIBABA_CLOUD_ACCESS_KEY_ID": "test-ak", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "test-secret"})
    process = subprocess.Popen(
        [sys.executable, "-m", "dwnotify", "--config", str(world.write_config()), "tick"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while len(world.dingtalk.received) + len(world.slack.received) < kill_after:
        assert process.poll() is None, "the tick finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    assert process.returncode == -signal.SIGKILL
    before: Counter[str] = sum(delivered(world), Counter())
    assert 0 < sum(before.values()) < 2 * len(run_ids)  # it really died mid-delivery

    world.dingtalk.response_delay_s = world.slack.response_delay_s = 0.0
    world.clock.now = time.time()
    world.tick(advance=TICK_LEASE_S + 30)
    check_exactly_once(world, run_ids, in_flight=2)  # at most one in flight per channel

"""Ticks that overlap (FC runs a slow tick beside the next timer fire) announce each event once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import World
from tests.helpers import at_once, delivered, fail_run

ROOT = Path(__file__).resolve().parents[1]


def test_three_ticks_started_together_in_threads_send_each_message_once(world: World) -> None:
    run_ids = {fail_run(world) for _ in range(12)}
    apps = [world.build() for _ in range(3)]
    world.clock.advance(60)
    summaries = at_once([app.notifier.tick for app in apps])
    assert len(summaries) == 3
    # Usually one tick discovers and two only deliver; a tick that starts after the first released
    # its lease discovers again and finds nothing new: the events still add up to one announcement.
    assert sum(not s.discovery_skipped for s in summaries) >= 1
    assert sum(s.events for s in summaries) == 12 * 3  # stage.succeeded, stage.failed, run.failed
    world.app = apps[0]
    world.tick(advance=120)  # whatever a lease kept back goes now
    ding, slack = delivered(world)
    assert set(ding) == set(slack) == run_ids
    assert max(ding.values()) == 1 and max(slack.values()) == 1
    for app in apps[1:]:
        app.close()


def test_three_tick_processes_at_once_send_each_message_once(world: World) -> None:
    run_ids = {fail_run(world) for _ in range(8)}
    config = world.write_config()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALIYUN_", "ALIBABA_CLOUD_"))}
    env.update(world.environ())
    env.update({"ALIBABA_CLOUD_ACCESS_KEY_ID": "test-ak", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "test-secret"})
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "dwnotify", "--config", str(config), "tick"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [process.communicate(timeout=120) for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0], outputs
    world.tick(advance=120)
    ding, slack = delivered(world)
    assert set(ding) == set(slack) == run_ids
    assert max(ding.values()) == 1 and max(slack.values()) == 1

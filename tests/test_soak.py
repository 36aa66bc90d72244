"""Soak: random mornings of runs, webhook outages, throttling and crashed ticks; nothing lost or repeated.

`make test` plays a few seeds; `make soak` (DWNOTIFY_SOAK=1) plays many more.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import time
from collections import Counter
from pathlib import Path

import pytest

from dwnotify.tick import TICK_LEASE_S
from tests.conftest import ManualClock, World, open_world
from tests.helpers import CrashingStore, Killed, slack_text

SEEDS = range(40) if os.environ.get("DWNOTIFY_SOAK") else range(3)
CODES = ["BUILD", "CHECK", "DEPLOY"]
STAGES = [
    {"code": code, "step": i, "type": "Deploy", "name": f"阶段 {code}"} for i, code in enumerate(CODES, 1)
]
FINAL = ["Success", "Fail", "Terminated", "Canceled"]


class _Run:
    """A run moving forward one random step at a time, as DataWorks runs do."""

    def __init__(self, run_id: str) -> None:
        self.id = run_id
        self.stage = 0
        self.final: str | None = None

    def step(self, world: World, rng: random.Random) -> None:
        if self.final is not None:
            return
        if rng.random() < 0.2:  # finish now, possibly skipping stages
            self.final = rng.choice(FINAL)
            stage_status = "Success" if self.final == "Success" else self.final
            stages = {code: stage_status for code in CODES[self.stage :]}
            world.dataworks.set_run_status(self.id, status=self.final, stages=stages, message="done")
            return
        stages = {CODES[self.stage]: "Success"}
        self.stage += 1
        if self.stage == len(CODES):
            self.final = "Success"
            world.dataworks.set_run_status(self.id, status="Success", stages=stages)
        else:
            stages[CODES[self.stage]] = "Running"
            world.dataworks.set_run_status(self.id, stages=stages)


def _disturb(world: World, rng: random.Random) -> None:
    roll = rng.random()
    if roll < 0.15:
        world.slack.inject(status=500, body="rollup_error", times=rng.randint(1, 3))
    elif roll < 0.25:
        world.slack.inject(status=429, body="rate_limited", headers={"Retry-After": "20"})
    elif roll < 0.35:
        world.dingtalk.inject(status=200, body={"errcode": -1, "errmsg": "system busy"})
    elif roll < 0.4:
        world.dingtalk.drop_connections(1)
    elif roll < 0.45:
        world.dataworks.inject("ListPipelineRuns", "Throttling.User", 429, times=2)


def _tick(world: World, rng: random.Random) -> bool:
    """One tick, which dies at a random state call now and then; True when it died."""
    world.clock.advance(60)
    if rng.random() < 0.15:
        crash_at = rng.randint(0, 25)
        app = world.build(wrap_store=lambda store: CrashingStore(store, crash_at))
        try:
            app.notifier.tick()
            return False
        except Killed:
            world.clock.advance(TICK_LEASE_S)
            return True
        finally:
            app.close()
    world.tick(advance=0)
    return False


def _squash(text: str) -> str:
    return "".join(text.split())


def _outbox_texts(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as connection:
        rows = connection.execute("SELECT channel, data FROM outbox").fetchall()
    return [(channel, json.loads(data)["text"]) for channel, data in rows]


@pytest.mark.parametrize("seed", SEEDS)
def test_random_mornings_deliver_every_message_once(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    clock = ManualClock(float(int(time.time())))
    with open_world(tmp_path, clock) as world:
        runs: list[_Run] = []
        crashes = 0
        for _ in range(25):
            for _ in range(rng.randint(0, 3)):
                project = rng.choice([10000, 10001])
                run_id = world.dataworks.add_run(
                    project, status="Running", stages=STAGES, stage_statuses={"BUILD": "Running"}
                )
                runs.append(_Run(run_id))
            for run in rng.sample(runs, k=min(len(runs), rng.randint(0, 4))):
                run.step(world, rng)
            _disturb(world, rng)
            crashes += _tick(world, rng)
        for run in runs:  # let every run finish, then let the outbox drain with no more faults
            while run.final is None:
                run.step(world, rng)
        for _ in range(8):
            world.tick(advance=120)

        assert world.app is not None
        report = world.app.store.report()
        assert report.messages == (), "messages left pending or failed"
        ding = [m["markdown"]["text"] for m in world.ding()]
        slack = [slack_text(m) for m in world.slack_messages()]
        received = {"ops": ding, "team": slack}
        for channel, text in _outbox_texts(tmp_path / "state.db"):
            # Slack lays long texts out as several sections: compare without whitespace.
            copies = sum(_squash(body).count(_squash(text)) for body in received[channel])
            assert 1 <= copies <= 1 + crashes, f"{channel}: {copies} copies of a message"
        mentioned = Counter(run.id for run in runs for body in slack if run.id in body)
        assert set(mentioned) == {run.id for run in runs}, "a run never reached Slack"

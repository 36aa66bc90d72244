"""The time-aware config keys (issue 13's contract): reminders, a rule's quiet hours and its digest,
read into settings, every mistake named by its dotted path and all of them in one run."""

from __future__ import annotations

from datetime import time, timedelta
from pathlib import Path
from typing import Any

import pytest

from dwnotify.config import parse
from dwnotify.errors import ConfigError
from dwnotify.settings import DigestSettings, QuietSettings, ReminderSettings
from tests.test_config import BASE, ENV, changed


def settings_of(change: dict[str, Any], tmp_path: Path) -> Any:
    return parse(changed(change), tmp_path, ENV)


def problems_of(change: dict[str, Any], tmp_path: Path) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        parse(changed(change), tmp_path, ENV)
    return raised.value.problems


def test_reminders_read_as_durations(tmp_path: Path) -> None:
    settings = settings_of(
        {"reminders": {"waiting_after": "30m", "stuck_after": "1h", "repeat": "2h"}}, tmp_path
    )
    assert settings.reminders == ReminderSettings(
        timedelta(minutes=30), timedelta(hours=1), timedelta(hours=2)
    )
    assert settings_of({"reminders": {"stuck_after": "1h"}}, tmp_path).reminders == ReminderSettings(
        None, timedelta(hours=1), None
    )
    assert settings_of({}, tmp_path).reminders is None


def test_quiet_hours_and_a_digest_on_rules(tmp_path: Path) -> None:
    quiet = {"from": "22:00", "to": "08:00", "timezone": "Asia/Shanghai", "except": ["run.failed"]}
    settings = settings_of(
        {"rules[0].quiet": quiet, "rules[1].digest": {"at": "18:00"}, "rules[1].events": ["run.*"]}, tmp_path
    )
    assert settings.rules[0].quiet == QuietSettings(time(22), time(8), "Asia/Shanghai", ("run.failed",), ())
    assert settings.rules[1].digest == DigestSettings(time(18), "Asia/Shanghai")
    weekend = settings_of({"rules[0].quiet": {"days": ["sat", "sun"]}}, tmp_path).rules[0].quiet
    assert weekend == QuietSettings(None, None, "Asia/Shanghai", (), (5, 6))


def test_an_unquoted_time_that_yaml_reads_as_a_number_still_reads_as_the_time(tmp_path: Path) -> None:
    settings = settings_of({"rules[0].quiet": {"from": 22 * 60, "to": 8 * 60}}, tmp_path)  # YAML 1.1: 22:00
    assert (settings.rules[0].quiet.start, settings.rules[0].quiet.end) == (time(22), time(8))


@pytest.mark.parametrize(
    ("change", "where", "fragment"),
    [
        ({"reminders": {}}, "reminders", "needs waiting_after, stuck_after or both"),
        ({"reminders": {"stuck_after": "20s"}}, "reminders.stuck_after", "at least 1m"),
        ({"reminders": {"stuck_after": "1h", "every": "2h"}}, "reminders.every", "unknown key"),
        ({"reminders": {"waiting_after": "soon"}}, "reminders.waiting_after", "must be a duration"),
        ({"rules[0].quiet": {"from": "22:00"}}, "rules[0].quiet", "needs both from and to"),
        ({"rules[0].quiet": {"from": "25:00", "to": "08:00"}}, "rules[0].quiet.from", "a time of day"),
        ({"rules[0].quiet": {"from": "22:00", "to": "22:00"}}, "rules[0].quiet.to", "must differ"),
        ({"rules[0].quiet": {}}, "rules[0].quiet", "needs from and to"),
        ({"rules[0].quiet": {"days": ["saturday"]}}, "rules[0].quiet.days[0]", "is not one of"),
        (
            {"rules[0].quiet": {"days": ["sat"], "timezone": "Mars/Base"}},
            "rules[0].quiet.timezone",
            "time zone",
        ),
        (
            {"rules[0].quiet": {"days": ["sat"], "except": ["run.exploded"]}},
            "rules[0].quiet.except[0]",
            "not an event",
        ),
        (
            {"rules[0].quiet": {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]}},
            "rules[0].quiet.days",
            "would never speak",
        ),
        ({"rules[0].digest": {}}, "rules[0].digest.at", "this required key is missing"),
        ({"rules[0].digest": {"at": "6pm"}}, "rules[0].digest.at", "a time of day"),
        (
            {"rules[0].digest": {"at": "18:00"}, "rules[0].quiet": {"days": ["sun"]}},
            "rules[0].quiet",
            "quiet hours do not apply",
        ),
    ],
)
def test_mistakes_are_named_by_their_path(
    tmp_path: Path, change: dict[str, Any], where: str, fragment: str
) -> None:
    problems = problems_of(change, tmp_path)
    assert any(line.startswith(f"{where}: ") and fragment in line for line in problems), problems


def test_every_mistake_is_reported_in_one_run(tmp_path: Path) -> None:
    problems = problems_of(
        {
            "reminders": {"stuck_after": "10s"},
            "rules[0].quiet": {"from": "nine", "to": "08:00"},
            "rules[1].digest": {"at": "99:00"},
        },
        tmp_path,
    )
    assert sorted(line.split(":")[0] for line in problems) == [
        "reminders.stuck_after",
        "rules[0].quiet.from",
        "rules[1].digest.at",
    ]
    assert BASE  # the base config itself is valid

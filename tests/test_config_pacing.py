"""config.py: dataworks.poll_every and dataworks.daily_call_budget, read and bounded like every other key."""

from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from dwnotify.config import load, parse
from dwnotify.errors import ConfigError
from tests.test_config import ENV, changed, problems_of, write


def test_both_keys_are_optional_and_absent_means_none(tmp_path: Path) -> None:
    dataworks = parse(changed({}), tmp_path, ENV).dataworks
    assert (dataworks.poll_every, dataworks.daily_call_budget) == (None, None)


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("15s", timedelta(seconds=15)),
        ("5s", timedelta(seconds=5)),
        ("10m", timedelta(minutes=10)),
        ("1m30s", timedelta(seconds=90)),
        (30, timedelta(seconds=30)),
        ("${POLL:-20s}", timedelta(seconds=20)),
    ],
)
def test_poll_every(tmp_path: Path, written: object, expected: timedelta) -> None:
    settings = parse(changed({"dataworks.poll_every": written}), tmp_path, ENV)
    assert settings.dataworks.poll_every == expected


@pytest.mark.parametrize(("written", "expected"), [(100, 100), (2, 2), ("250", 250), ("${BUDGET:-100}", 100)])
def test_daily_call_budget(tmp_path: Path, written: object, expected: int) -> None:
    settings = parse(changed({"dataworks.daily_call_budget": written}), tmp_path, ENV)
    assert settings.dataworks.daily_call_budget == expected


def test_a_yaml_file_gives_an_integer_budget_and_a_duration(tmp_path: Path) -> None:
    text = textwrap.dedent(
        """\
        dataworks:
          region: cn-shanghai
          projects: [10000]
          poll_every: 15s
          daily_call_budget: 100
        channels:
          ops: {type: dingtalk, url: "${DINGTALK_OPS_URL}"}
        rules:
          - {name: all, events: ["*"], channels: [ops]}
        """
    )
    dataworks = load(write(tmp_path, text), ENV).dataworks
    assert dataworks.poll_every == timedelta(seconds=15)
    assert dataworks.daily_call_budget == 100
    assert type(dataworks.daily_call_budget) is int


PROBLEMS: list[tuple[str, object, str]] = [
    ("poll_every", "4s", "must be at least 5s (got '4s')"),
    ("poll_every", 1, "must be at least 5s (got 1)"),
    ("poll_every", "0s", "must be longer than zero"),
    ("poll_every", "10m1s", "must be at most 10m (got '10m1s')"),
    ("poll_every", "1h", "must be at most 10m"),
    ("poll_every", "soon", "must be a duration such as 30s"),
    ("poll_every", "1.5s", "must be a duration"),
    ("poll_every", -15, "must be a duration"),
    ("poll_every", True, "must be a duration"),
    ("poll_every", [15], "must be a duration"),
    ("daily_call_budget", 0, "must be at least 1 (got 0)"),
    ("daily_call_budget", -100, "must be at least 1"),
    ("daily_call_budget", True, "expected a whole number, got a boolean"),
    ("daily_call_budget", 100.0, "must be a whole number (got 100.0)"),
    ("daily_call_budget", 99.5, "must be a whole number"),
    ("daily_call_budget", "lots", "must be a whole number (got 'lots')"),
    ("daily_call_budget", [100], "expected a whole number, got a list"),
    ("daily_call_budget", 10**9, "must be at most 100000000"),
]


@pytest.mark.parametrize(("key", "value", "fragment"), PROBLEMS, ids=[f"{k}={v!r}" for k, v, _ in PROBLEMS])
def test_problem(tmp_path: Path, key: str, value: object, fragment: str) -> None:
    problems = problems_of(changed({f"dataworks.{key}": value}), tmp_path)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"dataworks.{key}: ") and fragment in problems[0], problems


def test_a_budget_smaller_than_one_poll_is_refused(tmp_path: Path) -> None:
    # BASE watches two workspaces: every poll reads page 1 of both.
    problems = problems_of(changed({"dataworks.daily_call_budget": 1}), tmp_path)
    assert problems == [
        "dataworks.daily_call_budget: is 1 but one poll costs at least 2 calls "
        "(one per workspace in dataworks.projects)"
    ]
    assert parse(changed({"dataworks.daily_call_budget": 2}), tmp_path, ENV).dataworks.daily_call_budget == 2


def test_misspelt_keys_are_refused_with_a_suggestion(tmp_path: Path) -> None:
    data = changed({"dataworks.poll_evry": "15s", "dataworks.daily_call_budgets": 100})
    assert sorted(problems_of(data, tmp_path)) == [
        "dataworks.daily_call_budgets: unknown key (did you mean 'daily_call_budget'?)",
        "dataworks.poll_evry: unknown key (did you mean 'poll_every'?)",
    ]


def test_both_problems_and_others_are_reported_in_one_run(tmp_path: Path) -> None:
    data: dict[str, Any] = changed(
        {"dataworks.poll_every": "1s", "dataworks.daily_call_budget": 0, "dataworks.lookback": "soon"}
    )
    with pytest.raises(ConfigError) as caught:
        parse(data, tmp_path, ENV)
    places = sorted(line.split(": ", 1)[0] for line in caught.value.problems)
    assert places == ["dataworks.daily_call_budget", "dataworks.lookback", "dataworks.poll_every"]


@pytest.mark.parametrize(
    ("written", "expected"), [(None, True), (True, True), (False, False), ("false", False)]
)
def test_dataworks_items_defaults_to_true(tmp_path: Path, written: object, expected: bool) -> None:
    overrides = {} if written is None else {"dataworks.items": written}
    assert parse(changed(overrides), tmp_path, ENV).dataworks.items is expected


def test_dataworks_items_must_be_true_or_false(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(changed({"dataworks.items": "sometimes"}), tmp_path, ENV)
    assert "dataworks.items: must be true or false" in str(caught.value)

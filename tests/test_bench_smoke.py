"""`make bench` at a tiny scale: every benchmark runs and gives its figures (structure and counts only).

One workspace, ten runs, no injected latency. The cold start is left out (it builds the code
package); its CPU quota helper and the report are checked without it.
"""

from __future__ import annotations

import pytest

from benchmarks import detection, history, report, workloads
from benchmarks.quota import cpu_quota
from benchmarks.world import LATENCY_S, world
from emulators import DataWorksEmulator
from emulators.tablestore import TablestoreEmulator

TINY = workloads.Scale(sample=10, repeat=1, latency_s=0.0)
TICK_KEYS = {
    "dataworks_calls",
    "state_round_trips",
    "state_write_round_trips",
    "messages_sent",
    "wall_ms",
    "network_floor_ms",
    "wall_over_floor",
}


def test_latency_is_off_unless_asked_for() -> None:
    assert DataWorksEmulator().response_delay_s == 0
    assert TablestoreEmulator().latency_s == 0
    with world("tablestore", 1) as w:
        assert (w.dataworks.response_delay_s, w.tablestore.latency_s) == (LATENCY_S, LATENCY_S)


@pytest.fixture(scope="module")
def figures() -> dict[str, object]:
    return workloads.measure(grid=[(1, 10)], scale=TINY)


@pytest.mark.parametrize("state", workloads.STATES)
@pytest.mark.parametrize("name", report.WORKLOADS)
def test_every_workload_has_the_product_and_the_naive_poller_side_by_side(
    figures: dict[str, dict[str, dict[str, dict[str, dict[str, int]]]]], state: str, name: str
) -> None:
    pair = figures[state]["1x10"][name]
    product, naive = pair["product"], pair["naive"]
    assert set(product) >= TICK_KEYS
    assert set(pair["product_over_naive"]) >= {"dataworks_calls", "wall"}
    assert naive["tracked_runs"] == naive["sampled_runs"] == 10 and not naive["scaled_from_sample"]
    assert product["dataworks_calls"] >= 1  # page 1 of the one workspace
    assert product["network_floor_ms"] == 0  # no latency injected
    if name == "idle":  # every run is final: the naive poller only reads its states
        assert (naive["dataworks_calls"], naive["state_round_trips"]) == (0, 10)
    else:
        assert naive["dataworks_calls"] == 10 >= product["dataworks_calls"]
        assert naive["state_write_round_trips"] >= 10
        assert naive["state_round_trips"] >= 20
    if name in ("unchanged", "idle"):
        assert product["messages_sent"] == 0  # nothing moved
    if name == "changed":
        assert pair["changed_runs"] == 1 and product["messages_sent"] >= 1


def test_a_history_is_stored_and_the_steady_tick_measured_with_and_without_it() -> None:
    figures = history.measure(history=300, workspaces=1, runs=10, scale=TINY)
    for state in workloads.STATES:
        empty, full = figures[state]["empty_store"], figures[state]["with_history"]
        assert set(empty) >= TICK_KEYS and set(full) >= TICK_KEYS
        assert empty["dataworks_calls"] == full["dataworks_calls"] == 1
        assert {"state_round_trips", "wall"} <= set(figures[state]["history_over_empty"])


def test_detection_latency_is_measured_for_each_trial() -> None:
    figures = detection.measure(trials=2, workspaces=1, runs=10, latency_s=0.0)
    timer = figures["timer"]
    assert timer["trials"] == len(timer["latencies_s"]) == 2 and timer["not_delivered"] == 0
    assert all(isinstance(latency, float) for latency in timer["latencies_s"])
    polling = figures["poll_every_15s"]
    assert "skipped" in polling or polling["trials"] == 2


def test_a_cpu_quota_either_limits_a_child_or_says_why_not() -> None:
    with cpu_quota(0.25) as quota:
        if quota.path is None:
            assert quota.how and quota.command(["true"]) == ["true"]
        else:
            assert quota.command(["true"])[-1] == "true" and quota.throttled_periods() is not None


def test_the_table_names_every_section(figures: dict[str, object]) -> None:
    workday = {"budget": {"calls": 97, "latency_s": {"median": 150}}}
    results = {"commit": "abc", "workloads": figures, "history": {"error": "x"}, "workday": workday}
    text = report.table(results)
    assert "abc" in text and "1x10" in text and "history: x" in text and "budget: 97 calls" in text

"""`make bench` at a tiny scale: every benchmark runs and gives its figures (structure and counts only).

One workspace, ten runs, no injected latency. The cold start is left out (it builds the code
package); its CPU quota helper and the report are checked without it.
"""

from __future__ import annotations

import pytest

from benchmarks import budget, detection, fanout, history, report, workloads
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
    "commit_write_round_trips",
    "delivery_round_trips",
    "delivery_write_round_trips",
    "chat_posts",
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
    writes = product["commit_write_round_trips"] + product["delivery_write_round_trips"]
    assert writes == product["state_write_round_trips"]  # the split adds up
    if name == "idle":  # every run is final: the naive poller only reads its states
        assert (naive["dataworks_calls"], naive["state_round_trips"]) == (0, 10)
    else:
        assert naive["dataworks_calls"] == 10 >= product["dataworks_calls"]
        assert naive["state_write_round_trips"] >= 10
        assert naive["state_round_trips"] >= 20
    if name == "unchanged":
        assert isinstance(product["wall_ms_without_latency"], float)
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


def test_detection_latency_is_measured_for_each_trial_through_notifier_run() -> None:
    figures = detection.measure(trials=2, workspaces=1, runs=10, latency_s=0.0, what_if=False)
    assert figures["function_timeout_s"] == detection.FUNCTION_TIMEOUT_S
    for name in ("timer", "poll_every_15s"):
        mode = figures[name]
        assert mode["trials"] == len(mode["latencies_s"]) == len(mode["first_poll_after_s"]) == 2
        assert mode["not_delivered"] == 0
        assert all(isinstance(latency, float) and latency >= 0 for latency in mode["latencies_s"])
        assert figures["idle"][name]["polls"] == 1  # an idle invocation returns after its first poll
    assert figures["timer"]["most_polls_in_one_invocation"] == 1
    assert figures["poll_every_15s"]["most_polls_in_one_invocation"] > 1  # the loop polls while runs run
    cost = figures["function_time"]
    assert {"formula", "memory_mb", "active_hours", "idle_hours", "timer", "poll_every_15s"} <= set(cost)
    for name in ("timer", "poll_every_15s"):
        assert cost[name]["gb_seconds_per_day"] > 0 and cost[name]["active_invocation_s"] > 0
    # an invocation that polls every 15 s lasts (in simulated time) at least until its second poll
    assert cost["poll_every_15s"]["active_invocation_s"] >= 15


def test_a_budgeted_day_through_the_product_stays_within_its_budget() -> None:
    figures = budget.measure(latency_s=0.0, poll_every=False, seeds=[])
    spent = figures["budget"]
    assert spent["invocations"] == 1440 and spent["dataworks_calls"] <= budget.BUDGET
    assert spent["polls_skipped"] > 0 and spent["polls"] + spent["polls_skipped"] == spent["invocations"]
    assert spent["changes"] > 0
    assert figures["fixed_15m"]["dataworks_calls"] == figures["fixed_15m"]["invocations"] == 96
    assert figures["within_budget"] is True
    for name in ("budget", "fixed_15m"):
        assert set(figures[name]["latency_s"]) == {"median", "p90", "max"}


def test_a_cpu_quota_either_limits_a_child_or_says_why_not() -> None:
    with cpu_quota(0.25) as quota:
        if quota.path is None:
            assert quota.how and quota.command(["true"]) == ["true"]
        else:
            assert quota.command(["true"])[-1] == "true" and quota.throttled_periods() is not None


def test_fan_out_ticks_are_measured_for_each_shard_count_with_every_event_once() -> None:
    scale = fanout.Scale(workspaces=4, runs=10, shards=(1, 2), qps=(50,), latency_s=0.0)
    figures = fanout.measure(scale)  # asserts inside that every event is announced exactly once
    by_shards = figures["qps_50"]
    assert set(by_shards) == {"1", "2"}
    for shards, rounds in by_shards.items():
        unchanged, changed = rounds["unchanged"], rounds["changed"]
        assert len(changed["shards"]) == len(changed["dataworks_calls_per_shard"]) == int(shards)
        assert [shard["workspaces"] for shard in changed["shards"]] == [4 // int(shards)] * int(shards)
        assert unchanged["dataworks_calls"] == changed["dataworks_calls"] == 4  # one page a workspace
        assert unchanged["events"] == unchanged["messages_queued"] == 0
        assert changed["changed_runs"] == 4 and changed["failed_runs"] == 1
        assert changed["events"] == by_shards["1"]["changed"]["events"] > 0
        assert changed["messages_queued"] == 5  # each moved run to Slack, the failed one to DingTalk too
        assert changed["state_round_trips"] > unchanged["state_round_trips"] > 0
        assert set(changed["budget"]) >= {"workspaces", "runs", "bound"}
    assert fanout.peak_calls_per_s([0.0, 0.5, 0.96, 1.0, 1.9]) == 3
    assert "40s ws" in "\n".join(report.table({"fanout": figures}).splitlines()[:8])


def test_the_table_names_every_section(figures: dict[str, object]) -> None:
    workday = {"budget": {"calls": 97, "latency_s": {"median": 150}}}
    day = {"budget_calls_a_day": 100, "budget": {"dataworks_calls": 96, "latency_s": {"median": 160}}}
    results = {
        "commit": "abc",
        "workloads": figures,
        "history": {"error": "x"},
        "workday": workday,
        "budget": day,
    }
    text = report.table(results)
    assert "abc" in text and "1x10" in text and "history: x" in text and "budget: 97 calls" in text
    assert "budget: 96 calls (emulator)" in text and "commit w" in text

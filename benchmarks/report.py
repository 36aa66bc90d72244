"""The plain-text table of a bench run's main figures (what a README section quotes)."""

from __future__ import annotations

from typing import Any

WORKLOADS = ("first_tick", "unchanged", "changed", "idle")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}" if value >= 10 or value == int(value) else f"{value:.2f}"
    return str(value)


def _rows(header: list[str], rows: list[list[Any]]) -> list[str]:
    cells = [header, *([_cell(value) for value in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(text.rjust(width) for text, width in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return lines


def _workloads(section: dict[str, Any]) -> list[str]:
    header = ["state", "grid", "workload", "calls", "trips", "writes", "commit w", "deliv w", "posts", "sent"]
    header += ["wall ms", "floor ms", "0-lat ms"]
    header += ["wall/floor", "naive calls", "naive trips", "naive wall ms", "calls P/N", "wall P/N"]
    rows = []
    for state in ("sqlite", "tablestore"):
        for grid, figures in section.get(state, {}).items():
            for name in WORKLOADS:
                if name not in figures:
                    continue
                product, naive = figures[name]["product"], figures[name]["naive"]
                ratios = figures[name]["product_over_naive"]
                rows.append(
                    [
                        state,
                        grid,
                        name,
                        product["dataworks_calls"],
                        product["state_round_trips"],
                        product["state_write_round_trips"],
                        product.get("commit_write_round_trips"),
                        product.get("delivery_write_round_trips"),
                        product.get("chat_posts"),
                        product["messages_sent"],
                        product["wall_ms"],
                        product["network_floor_ms"],
                        product.get("wall_ms_without_latency"),
                        product["wall_over_floor"],
                        naive["dataworks_calls"],
                        naive["state_round_trips"],
                        naive["wall_ms"],
                        ratios["dataworks_calls"],
                        ratios["wall"],
                    ]
                )
    title = (
        f"Ticks ({section.get('latency_ms')} ms a request on DataWorks and Tablestore, max_qps "
        f"{section.get('max_qps')}; naive figures scaled from {section.get('naive_sample_runs')} runs polled)"
    )
    legend = (
        "  writes = commit w (lease, intent, runs, cursors, release) + deliv w (each chat post recorded "
        "before the next); posts = chat posts, sent = messages they carried; 0-lat ms = the same tick with "
        "no latency injected"
    )
    return [title, legend, *_rows(header, rows)]


def _history(section: dict[str, Any]) -> list[str]:
    header = ["state", "trips empty", "trips history", "wall ms empty", "wall ms history", "wall ratio"]
    rows = []
    for state in ("sqlite", "tablestore"):
        if state in section:
            empty, full = section[state]["empty_store"], section[state]["with_history"]
            rows.append(
                [
                    state,
                    empty["state_round_trips"],
                    full["state_round_trips"],
                    empty["wall_ms"],
                    full["wall_ms"],
                    section[state]["history_over_empty"]["wall"],
                ]
            )
    title = (
        f"Unchanged tick ({section.get('workspaces')} workspaces, {section.get('active_runs')} running runs) "
        f"with {section.get('history_runs')} finished runs and {section.get('history_messages')} sent "
        "messages stored, against none"
    )
    return [title, *_rows(header, rows)]


def _detection(section: dict[str, Any]) -> list[str]:
    timer = (
        f"{section.get('state')}, {section.get('workspaces')} workspaces, {section.get('timer_s')} s timer, "
        f"function timeout {section.get('function_timeout_s')} s, "
        f"deadline after {section.get('deadline_after_s')} s"
    )
    lines = [f"Detection latency, a failure to its DingTalk message ({timer})"]
    for name, figures in section.items():
        if not (name == "timer" or name.startswith("poll_every")) or not isinstance(figures, dict):
            continue
        if "skipped" in figures:
            lines.append(f"  {name}: skipped: {figures['skipped']}")
            continue
        median, worst = _cell(figures.get("median_s")), _cell(figures.get("worst_s"))
        offsets = ", ".join(_cell(offset) for offset in figures.get("poll_offsets_in_an_invocation_s", []))
        later = figures.get("sent_by_a_later_invocation")
        what_if = " (what-if)" if "what_if" in figures else ""
        lines.append(
            f"  {name}{what_if}: median {median} s, worst {worst} s over {figures.get('trials')} trials; "
            f"polls at [{offsets}] s of an invocation; {later} found by one invocation, sent by the next"
        )
    cost = section.get("function_time", {})
    for name in ("timer", "poll_every_15s"):
        if isinstance(cost.get(name), dict):
            figures = cost[name]
            active, idle = _cell(figures.get("active_invocation_s")), _cell(figures.get("idle_invocation_s"))
            lines.append(
                f"  function time, {name}: active invocation {active} s, idle {idle} s -> "
                f"{_cell(figures.get('gb_seconds_per_day'))} GB-s a day at {cost.get('memory_mb')} MB "
                f"({cost.get('active_hours')} h active, {cost.get('idle_hours')} h idle)"
            )
    return lines


def _budget(section: dict[str, Any]) -> list[str]:
    """benchmarks/budget.py: the working day through the product at a daily call budget."""
    lines = [
        f"Working day through the product at {section.get('budget_calls_a_day')} calls a day "
        f"(seed {section.get('seed')}, {section.get('deployments')} deployments, {section.get('state')}, "
        "latency: each change to its Slack message)"
    ]
    for name in ("budget", "budget_every_15s", "fixed_15m"):
        figures = section.get(name)
        if not isinstance(figures, dict):
            continue
        latency = figures.get("latency_s", {})
        calls, skipped = figures.get("dataworks_calls"), figures.get("polls_skipped")
        median, p90, worst = (_cell(latency.get(key)) for key in ("median", "p90", "max"))
        lines.append(
            f"  {name}: {calls} calls (emulator), {skipped} polls skipped, median {median} s, p90 {p90} s, "
            f"worst {worst} s, {figures.get('undetected')} undetected"
        )
    seeds = section.get("over_seeds")
    if isinstance(seeds, dict):
        lines.append(
            f"  budget over {len(seeds.get('seeds', []))} days: median of medians "
            f"{_cell(seeds.get('median_of_medians_s'))} s, worst {_cell(seeds.get('worst_median_s'))} s, "
            f"{seeds.get('days_under_target')} days under {_cell(section.get('target_median_s'))} s, "
            f"at most {seeds.get('calls_max')} calls"
        )
    return lines


def _cold(section: dict[str, Any]) -> list[str]:
    quota = section.get("tablestore_under_quota", {})
    tablestore = section.get("tablestore", {})
    if quota.get("measured"):
        quarter = f"{_cell(quota['first_tick_ms'])} ms first tick, measured ({quota['how']})"
    else:
        estimate = _cell(tablestore.get("estimate_under_quota", {}).get("first_tick_ms"))
        quarter = f"not measured ({quota.get('why')}); ESTIMATE CPU/{quota.get('cpus')}: {estimate} ms"
    big = section.get("first_tick_at_scale", {})
    return [
        "Cold start (fresh python -I -S on the built package)",
        f"  import index: {_cell(section.get('import_index_ms'))} ms; first tick SQLite "
        f"{_cell(section.get('first_tick_ms'))} ms, Tablestore {_cell(tablestore.get('first_tick_ms'))} ms",
        f"  Tablestore under a {quota.get('cpus')} CPU quota: {quarter}",
        f"  peak RSS, first tick over {big.get('runs')} runs: {_cell(big.get('peak_rss_mb'))} MB",
    ]


def _workday(section: dict[str, Any]) -> list[str]:
    """benchmarks/workday.py's strategies, each by its calls and median latency, as far as it has them."""
    budget = section.get("budget_calls_a_day", "?")
    lines = [f"Simulated working day at {budget} calls a day (benchmarks/workday.py)"]
    for name, figures in section.items():
        if isinstance(figures, dict) and "calls" in figures and isinstance(figures.get("latency_s"), dict):
            latency = figures["latency_s"]
            median, worst = _cell(latency.get("median")), _cell(latency.get("max"))
            lines.append(f"  {name}: {figures['calls']} calls, median {median} s, worst {worst} s")
    return lines


def _fanout(section: dict[str, Any]) -> list[str]:
    """benchmarks/fanout.py: one tick by one invocation and by shards at once, at each max_qps."""
    header = ["qps", "shards", "tick", "wall ms", "speedup", "calls", "calls/shard", "peak/s", "trips"]
    header += [
        "trips/shard",
        "writes",
        "events",
        "queued",
        "sent",
        "jumped ms",
        "40s ws",
        "40s runs",
        "bound",
    ]
    rows = []
    for key, by_shards in section.items():
        if not key.startswith("qps_") or not isinstance(by_shards, dict):
            continue
        for shards, figures in by_shards.items():
            for name in ("unchanged", "changed"):
                tick, fits = figures[name], figures[name].get("budget", {})
                rows.append(
                    [
                        key.removeprefix("qps_"),
                        shards,
                        name,
                        tick["wall_ms"],
                        tick.get("speedup"),
                        tick["dataworks_calls"],
                        "/".join(str(calls) for calls in sorted(set(tick["dataworks_calls_per_shard"]))),
                        tick["peak_calls_per_s"],
                        tick["state_round_trips"],
                        max(tick["state_round_trips_per_shard"]),
                        tick["state_write_round_trips"],
                        tick["events"],
                        tick["messages_queued"],
                        tick["messages_sent"],
                        tick["waits_jumped_ms"],
                        fits.get("workspaces"),
                        fits.get("runs"),
                        fits.get("bound"),
                    ]
                )
    title = (
        f"Fan-out: one tick over {section.get('workspaces')} workspaces x "
        f"{section.get('runs_per_workspace')} running runs on Tablestore ({section.get('latency_ms')} ms a "
        "request), one invocation or shards at once (one App each, max_qps / shards each); "
        "every event announced once (asserted)"
    )
    legend = (
        "  wall ms = slowest shard; speedup = one invocation's wall / this; calls/shard = the shards' "
        "counts; peak/s = most DataWorks requests in any second; trips/shard = the busiest shard's; "
        f"40s ws/runs = estimated to fit a {_cell(section.get('budget_s'))} s tick (bound: wall or the QPS)"
    )
    return [title, legend, *_rows(header, rows)]


def table(results: dict[str, Any]) -> str:
    """The main figures of `results` as plain text."""
    lines = [f"make bench at {results.get('commit')} ({results.get('wall_s')} s)", ""]
    parts = {
        "workloads": _workloads,
        "history": _history,
        "detection": _detection,
        "budget": _budget,
        "cold_start": _cold,
        "workday": _workday,
        "fanout": _fanout,
    }
    for key, render in parts.items():
        section = results.get(key)
        if not isinstance(section, dict):
            continue
        if "error" in section:
            lines += [f"{key}: {section['error']}", ""]
            continue
        lines += [*render(section), ""]
    return "\n".join(lines)

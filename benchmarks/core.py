"""The pure core's speed: diff and rendering per call, and discovery gathering a long list of pages."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import Any

from dwnotify.answers import RunPage
from dwnotify.diff import diff
from dwnotify.discovery import Discoverer
from dwnotify.model import Run, RunState, Stage
from dwnotify.render import MessageContext, Renderer, builtin_templates_dir
from dwnotify.settings import DataWorksSettings, ProjectSettings


def _run(status: str, stage_status: str) -> Run:
    stages = tuple(
        Stage(
            f"S{i}",
            i,
            "Deploy",
            f"阶段 {i}",
            "",
            stage_status,
            "节点依赖缺失" if stage_status == "fail" else "",
        )
        for i in range(1, 6)
    )
    return Run("a7ef0634-20ec-4a7c-a214-54020f91abcd", 10000, status, "1379", "发布", "", None, None, stages)


def _per_call_us(fn: Any, repeat: int) -> float:
    started = time.perf_counter()
    for _ in range(repeat):
        fn()
    return round((time.perf_counter() - started) / repeat * 1e6, 1)


class _OldestFirstList:
    """A workspace of `count` finished runs listed oldest first, 100 a page, with no latency."""

    def __init__(self, count: int, now: float) -> None:
        self.calls = 0
        self._runs = [
            Run(
                f"run-{i:06d}",
                10000,
                "success",
                create_time=datetime.fromtimestamp(now - count + i, timezone.utc),
            )
            for i in range(count)
        ]

    def list_runs(
        self, project: ProjectSettings, page_number: int, *, deadline: float | None = None
    ) -> RunPage:
        self.calls += 1
        return RunPage(len(self._runs), tuple(self._runs[(page_number - 1) * 100 : page_number * 100]))

    def get_run(self, project: ProjectSettings, run_id: str, *, deadline: float | None = None) -> Run | None:
        return None


class _EmptyState:
    def load_runs(self, keys: Any) -> dict[str, RunState]:
        return {}


def gather_ms(count: int) -> float:
    """Milliseconds for a first discovery reading every page of one workspace of `count` runs (at most
    MAX_PAGES_PER_TICK pages: 10,000 runs)."""
    logging.getLogger("dwnotify").setLevel(logging.ERROR)  # the empty store's WARNING, once per sample
    now = time.time()
    project = ProjectSettings(10000, None, "cn-shanghai", "dataworks.cn-shanghai.aliyuncs.com")
    settings = DataWorksSettings("cn-shanghai", project.endpoint, "https", (project,))
    source = _OldestFirstList(count, now)
    started = time.perf_counter()
    Discoverer(settings, source, _EmptyState(), clock=lambda: now).discover({}, now)
    assert source.calls == count // 100
    return round((time.perf_counter() - started) * 1000, 1)


def measure() -> dict[str, Any]:
    """Microseconds per diff and per rendered message."""
    running = _run("running", "running")
    failed = _run("fail", "fail")
    _, state = diff(None, running)
    events, _ = diff(state, failed)
    renderer = Renderer(None, builtin_templates_dir())
    project = ProjectSettings(10000, "Finance DW", "cn-shanghai", "")
    now = datetime.now(timezone.utc)
    contexts = {
        kind: MessageContext(failed, tuple(events), project, "r", "c", kind, "https://console", now)
        for kind in ("dingtalk", "slack")
    }
    started = time.perf_counter()
    renderer.compile("dingtalk", "default")
    renderer.compile("slack", "default")
    compile_ms = round((time.perf_counter() - started) * 1000, 2)
    return {
        "diff_us": _per_call_us(lambda: diff(state, failed), 20000),
        "render_dingtalk_us": _per_call_us(
            lambda: renderer.render("dingtalk", "default", contexts["dingtalk"]), 2000
        ),
        "render_slack_us": _per_call_us(lambda: renderer.render("slack", "default", contexts["slack"]), 2000),
        "template_compile_ms": compile_ms,
        "discovery_gather_10000_runs_ms": gather_ms(10_000),
    }

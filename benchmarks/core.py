"""The pure core's speed: diff and rendering, per call, on realistic runs."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from dwnotify.diff import diff
from dwnotify.model import Run, Stage
from dwnotify.render import MessageContext, Renderer, builtin_templates_dir
from dwnotify.settings import ProjectSettings


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
    }

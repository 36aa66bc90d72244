"""Cold start of the FC code package: importing `index`, the first tick, a warm tick, CPU and memory.

Each sample is a fresh `python -I -S` that sees only the package, as an FC instance does, ticking
against the emulators of a benchmark world in this process (20 ms a request on DataWorks and
Tablestore): the store has watched the workspace once, then a run fails, so the first tick
announces it (DataWorks SDK, Jinja2, httpx and two webhook posts) and the second finds nothing new.
Measured on SQLite, with and without the package's `.pyc` files; on Tablestore, and on Tablestore
under a 0.25 CPU quota (`quota.cpu_quota`) where the machine lets a cgroup be made; and the peak
memory of a first tick over 5,000 running runs in 50 workspaces. The package is `build/code` when it
was built for this machine's Python, else a fresh `scripts/build.py` into a temporary folder.

    .venv/bin/python -m benchmarks.cold_start
"""

from __future__ import annotations

import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.quota import Quota, cpu_quota  # noqa: E402
from benchmarks.world import world  # noqa: E402

LOCAL_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
EVENT = '{"triggerTime": "2026-11-28T01:00:00Z", "triggerName": "tick", "payload": ""}'
FC_CPUS = 0.25  # the smallest FC instance's share of a CPU
RSS_WORKSPACES, RSS_RUNS = 50, 5000

CHILD = r"""
import json, resource, sys, time

started, cpu_started = time.perf_counter(), time.process_time()
sys.path.insert(0, sys.argv[1])
import index

imported, cpu_imported = time.perf_counter(), time.process_time()


def peak_rss_mb():
    # VmHWM: this image's own peak. ru_maxrss would start from the forking parent's size.
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Attrs:
    def __init__(self, **fields):
        self.__dict__.update(fields)


credentials = Attrs(access_key_id="test-ak", access_key_secret="test-secret", security_token="")
context = Attrs(request_id="1-bench", credentials=credentials, function=Attrs(timeout=60))
first = index.handler(sys.argv[2].encode(), context)
first_done, cpu_first = time.perf_counter(), time.process_time()
second = index.handler(sys.argv[2].encode(), context)
second_done = time.perf_counter()
import tablestore

tablestore_done = time.perf_counter()
print(json.dumps({
    "import_index_ms": (imported - started) * 1000,
    "first_tick_ms": (first_done - imported) * 1000,
    "warm_tick_ms": (second_done - first_done) * 1000,
    "import_tablestore_ms": (tablestore_done - second_done) * 1000,
    "import_index_cpu_ms": (cpu_imported - cpu_started) * 1000,
    "first_tick_cpu_ms": (cpu_first - cpu_imported) * 1000,
    "peak_rss_mb": peak_rss_mb(),
    "sent": [first.get("messages_sent"), second.get("messages_sent")],
    "errors": [first.get("error"), second.get("error")],
}))
"""


def _package() -> tuple[Path, Path | None]:
    """The package to measure and a temporary folder to delete afterwards (if one was made)."""
    built = ROOT / "build" / "code"
    info = built / "build-info.json"
    if info.is_file() and json.loads(info.read_text(encoding="utf-8")).get("python") == LOCAL_PYTHON:
        return built, None
    tmp = Path(tempfile.mkdtemp(prefix="dwnotify-bench-"))
    command = [sys.executable, str(ROOT / "scripts" / "build.py"), "--python", LOCAL_PYTHON]
    build = subprocess.run(
        [*command, "--out", str(tmp / "code")], capture_output=True, text=True, check=False
    )
    if build.returncode != 0:
        raise RuntimeError(f"building the package failed:\n{build.stdout}{build.stderr}")
    return tmp / "code", tmp


def _sample(
    package: Path,
    state: str = "sqlite",
    quota: Quota | None = None,
    workspaces: int = 1,
    runs: int = 0,
) -> dict[str, Any]:
    """One fresh interpreter; with no `runs`, the store has watched the workspace and a run fails."""
    with world(state, workspaces) as w:
        if runs:
            w.add_active_runs(runs // workspaces)
            expected = [0, 0]  # created before the lookback: recorded, not announced
        else:
            # The store has watched the workspace before (an empty store records finished runs as
            # history), then the run fails: the measured tick announces it.
            w.app.notifier.tick()
            w.dataworks.add_run(
                10000, status="Fail", stage_statuses={"DEV_CHECK": "Success", "PROD_DEPLOY": "Fail"}
            )
            expected = [2, 0]
        argv = [sys.executable, "-I", "-S", "-c", CHILD, str(package), EVENT]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        child = subprocess.run(
            quota.command(argv) if quota is not None else argv,
            capture_output=True,
            text=True,
            env={"DWNOTIFY_CONFIG": str(w.config_path), "DWNOTIFY_LOG_LEVEL": "WARNING"},
            timeout=300,
            check=True,
        )
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    sample: dict[str, Any] = json.loads(child.stdout.strip().splitlines()[-1])
    if sample["sent"] != expected:
        raise RuntimeError(f"the benchmark tick did not deliver as scripted: {sample}\n{child.stderr}")
    sample["process_wall_ms"] = wall * 1000
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    sample["process_cpu_ms"] = cpu * 1000
    return sample


KEYS = (
    "import_index_ms",
    "first_tick_ms",
    "warm_tick_ms",
    "import_tablestore_ms",
    "import_index_cpu_ms",
    "first_tick_cpu_ms",
    "process_wall_ms",
    "process_cpu_ms",
)


def _medians(samples: list[dict[str, Any]]) -> dict[str, Any]:
    figures: dict[str, Any] = {key: round(statistics.median(s[key] for s in samples), 1) for key in KEYS}
    figures["peak_rss_mb"] = round(max(s["peak_rss_mb"] for s in samples), 1)
    figures["samples"] = len(samples)
    return figures


def _estimated(figures: dict[str, Any]) -> dict[str, Any]:
    """What a CPU share would make of these figures if CPU time were all that mattered: an estimate."""
    return {
        "note": f"ESTIMATE, not measured: CPU time / {FC_CPUS} (waits on the network not counted)",
        "first_tick_ms": round(figures["first_tick_cpu_ms"] / FC_CPUS, 1),
        "import_index_ms": round(figures["import_index_cpu_ms"] / FC_CPUS, 1),
        "process_ms": round(figures["process_cpu_ms"] / FC_CPUS, 1),
    }


def _without_pyc(package: Path, copy: Path) -> Path:
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def _under_quota(package: Path, samples: int) -> dict[str, Any]:
    """The Tablestore cold start in a cgroup held to FC_CPUS, or why it could not be."""
    with cpu_quota(FC_CPUS) as quota:
        if quota.path is None:
            return {"cpus": FC_CPUS, "measured": False, "why": quota.how}
        figures = _medians([_sample(package, "tablestore", quota) for _ in range(samples)])
        throttled = quota.throttled_periods()
        return {
            "cpus": FC_CPUS,
            "measured": True,
            "how": quota.how,
            "throttled_periods": throttled,
            **figures,
        }


def measure(samples: int = 5, quota_samples: int = 3) -> dict[str, Any]:
    """Median figures over fresh interpreters: SQLite with and without .pyc, Tablestore, Tablestore under
    a 0.25 CPU quota, and the peak memory of a first tick over 5,000 runs."""
    package, made = _package()
    try:
        with tempfile.TemporaryDirectory(prefix="dwnotify-cold-") as tmp:
            compiled = _medians([_sample(package) for _ in range(samples)])
            bare = _without_pyc(package, Path(tmp) / "bare")
            sources = _medians([_sample(bare) for _ in range(max(1, samples // 2))])
        tablestore = _medians([_sample(package, "tablestore") for _ in range(quota_samples)])
        big = _sample(package, "tablestore", workspaces=RSS_WORKSPACES, runs=RSS_RUNS)
        size = sum(path.stat().st_size for path in package.rglob("*") if path.is_file())
        return {
            "python": LOCAL_PYTHON,
            "package_mb": round(size / 1_000_000, 1),
            **compiled,
            "without_pyc": sources,
            "tablestore": {**tablestore, "estimate_under_quota": _estimated(tablestore)},
            "tablestore_under_quota": _under_quota(package, quota_samples),
            "first_tick_at_scale": {
                "state": "tablestore",
                "workspaces": RSS_WORKSPACES,
                "runs": RSS_RUNS,
                "peak_rss_mb": round(big["peak_rss_mb"], 1),
                "first_tick_ms": round(big["first_tick_ms"], 1),
            },
        }
    finally:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)


if __name__ == "__main__":
    print(json.dumps(measure(), indent=2))

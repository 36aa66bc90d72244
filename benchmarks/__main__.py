"""`make bench`: every benchmark, as JSON in benchmarks/results/latest.json and a table on stdout."""

from __future__ import annotations

import importlib.util
import json
import logging
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import budget, cold_start, core, detection, history, report, workloads  # noqa: E402


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    return done.stdout


def revision() -> dict[str, Any]:
    """The commit the bench ran on, and the files that differed from it (the working tree is measured)."""
    changed = [line[3:] for line in _git("status", "--porcelain").splitlines() if len(line) > 3]
    return {"commit": _git("rev-parse", "HEAD").strip() or None, "uncommitted_files": changed}


def _run(name: str, measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """One benchmark's figures; a benchmark that fails is reported, not fatal to the others."""
    started = time.perf_counter()
    try:
        figures = measure()
    except Exception as error:
        traceback.print_exc()
        figures = {"error": f"{type(error).__name__}: {error}"}
    figures["bench_s"] = round(time.perf_counter() - started, 1)
    print(f"{name}: {figures['bench_s']} s", file=sys.stderr, flush=True)
    return figures


def _workday() -> dict[str, Any]:
    """benchmarks/workday.py's figures, when that module exists (it is imported only then)."""
    from benchmarks import workday

    figures: dict[str, Any] = workday.measure()
    return figures


def main() -> int:
    """Run every benchmark, write the JSON, print the table."""
    logging.getLogger("dwnotify").setLevel(logging.ERROR)  # the product's warnings are not figures
    started = time.perf_counter()
    results: dict[str, Any] = {**revision(), "python": sys.version.split()[0]}
    results["core"] = _run("core", core.measure)
    results["workloads"] = _run("workloads", workloads.measure)
    results["history"] = _run("history", history.measure)
    results["detection"] = _run("detection", detection.measure)
    results["budget"] = _run("budget", budget.measure)
    results["cold_start"] = _run("cold_start", cold_start.measure)
    if importlib.util.find_spec("benchmarks.workday") is not None:
        results["workday"] = _run("workday", _workday)
    results["wall_s"] = round(time.perf_counter() - started, 1)
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    text = json.dumps(results, indent=2, ensure_ascii=False)
    (out / "latest.json").write_text(text + "\n", encoding="utf-8")
    print(report.table(results))
    print(f"figures: {out / 'latest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

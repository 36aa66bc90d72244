"""`make bench`: every benchmark, as JSON in benchmarks/results/latest.json and a table on stdout.

`python -m benchmarks NAME...` runs only the named ones (e.g. `fanout`): their sections of latest.json
are replaced, each with the revision it ran on, and the others kept as the last full run left them.
"""

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

from benchmarks import budget, cold_start, core, detection, fanout, history, report, workloads  # noqa: E402


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


def benchmarks() -> dict[str, Callable[[], dict[str, Any]]]:
    """Every benchmark by its name in latest.json, in the order `make bench` runs them."""
    named: dict[str, Callable[[], dict[str, Any]]] = {
        "core": core.measure,
        "workloads": workloads.measure,
        "history": history.measure,
        "detection": detection.measure,
        "budget": budget.measure,
        "cold_start": cold_start.measure,
        "fanout": fanout.measure,
    }
    if importlib.util.find_spec("benchmarks.workday") is not None:
        named["workday"] = _workday
    return named


def main(argv: list[str] | None = None) -> int:
    """Run every benchmark (or the ones named), write the JSON, print the table."""
    names = sys.argv[1:] if argv is None else argv
    named = benchmarks()
    unknown = [name for name in names if name not in named]
    if unknown:
        print(f"no benchmark {', '.join(unknown)}; there are: {', '.join(named)}", file=sys.stderr)
        return 2
    logging.getLogger("dwnotify").setLevel(logging.ERROR)  # the product's warnings are not figures
    out = ROOT / "benchmarks" / "results"
    latest = out / "latest.json"
    started = time.perf_counter()
    if names:
        results: dict[str, Any] = json.loads(latest.read_text(encoding="utf-8")) if latest.exists() else {}
        for name in names:
            results[name] = {**_run(name, named[name]), "revision": revision()}
    else:
        results = {**revision(), "python": sys.version.split()[0]}
        for name, measure in named.items():
            results[name] = _run(name, measure)
        results["wall_s"] = round(time.perf_counter() - started, 1)
    out.mkdir(exist_ok=True)
    text = json.dumps(results, indent=2, ensure_ascii=False)
    latest.write_text(text + "\n", encoding="utf-8")
    print(report.table(results))
    print(f"figures: {latest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

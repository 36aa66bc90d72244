"""`make bench`: every benchmark, printed as JSON and written to benchmarks/results/latest.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import core, tick_cost  # noqa: E402


def main() -> int:
    """Run the benchmarks that exist and print their figures."""
    results: dict[str, Any] = {"core": core.measure(), "tick_sqlite": tick_cost.measure("sqlite")}
    try:
        results["tick_tablestore"] = tick_cost.measure("tablestore")
    except Exception as error:  # a backend that fails is reported, not fatal to the other figures
        results["tick_tablestore"] = {"error": f"{type(error).__name__}: {error}"}
    cold_start = ROOT / "benchmarks" / "cold_start.py"
    if cold_start.exists():
        from benchmarks import cold_start as cold

        results["cold_start"] = cold.measure()
    text = json.dumps(results, indent=2, ensure_ascii=False)
    print(text)
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

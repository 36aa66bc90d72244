"""Cold start of the FC code package: importing `index`, the first tick, a warm tick, peak memory.

Each sample is a fresh `python -I -S` that sees only the package, as an FC instance does, ticking
against the emulators on 127.0.0.1: the first tick announces a failed run (DataWorks SDK, Jinja2,
httpx and two webhook posts), the second finds nothing new. The package is `build/code` when it was
built for this machine's Python, else a fresh `scripts/build.py` into a temporary folder.

    .venv/bin/python -m benchmarks.cold_start
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from emulators import DataWorksEmulator, DingTalkEmulator, SlackEmulator  # noqa: E402

LOCAL_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
EVENT = '{"triggerTime": "2026-11-28T01:00:00Z", "triggerName": "tick", "payload": ""}'
TOKEN, HOOK = "bench-ding", "T000/B000/bench"

CHILD = r"""
import json, resource, sys, time

started = time.perf_counter()
sys.path.insert(0, sys.argv[1])
import index

imported = time.perf_counter()


class Attrs:
    def __init__(self, **fields):
        self.__dict__.update(fields)


credentials = Attrs(access_key_id="test-ak", access_key_secret="test-secret", security_token="")
context = Attrs(request_id="1-bench", credentials=credentials, function=Attrs(timeout=60))
first = index.handler(sys.argv[2].encode(), context)
first_done = time.perf_counter()
second = index.handler(sys.argv[2].encode(), context)
second_done = time.perf_counter()
import tablestore

tablestore_done = time.perf_counter()
print(json.dumps({
    "import_index_ms": (imported - started) * 1000,
    "first_tick_ms": (first_done - imported) * 1000,
    "warm_tick_ms": (second_done - first_done) * 1000,
    "import_tablestore_ms": (tablestore_done - second_done) * 1000,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "sent": [first["messages_sent"], second["messages_sent"]],
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


def _watch_once(config: Path) -> None:
    """One tick on `config` in this process, before the measured one, so the store is not empty."""
    from dwnotify import config as config_module
    from dwnotify.app import build_app
    from dwnotify.credentials import Credentials, Secret

    app = build_app(config_module.load(config, {}), Credentials("test-ak", Secret("test-secret")))
    try:
        app.notifier.tick()
    finally:
        app.close()


def _sample(package: Path, workdir: Path) -> dict[str, Any]:
    """One fresh interpreter: a new state file and a new failed run to announce."""
    dataworks = DataWorksEmulator({"projects": [10000]})
    dingtalk = DingTalkEmulator({TOKEN: None})
    slack = SlackEmulator({HOOK})
    for emulator in (dataworks, dingtalk, slack):
        emulator.start()
    try:
        workdir.mkdir(parents=True)
        config = workdir / "notifier.yaml"
        config.write_text(
            json.dumps(
                {
                    "dataworks": {
                        "region": "cn-shanghai",
                        "endpoint": dataworks.base_url.removeprefix("http://"),
                        "protocol": "http",
                        "projects": [10000],
                    },
                    "state": {"backend": "sqlite", "path": str(workdir / "state.db")},
                    "channels": {
                        "ops": {
                            "type": "dingtalk",
                            "url": f"{dingtalk.base_url}/robot/send?access_token={TOKEN}",
                        },
                        "team": {"type": "slack", "url": f"{slack.base_url}/services/{HOOK}"},
                    },
                    "rules": [
                        {"name": "failures", "events": ["run.failed"], "channels": ["ops"]},
                        {"name": "everything", "events": ["*"], "channels": ["team"]},
                    ],
                }
            ),
            encoding="utf-8",
        )
        # The store has watched the workspace before (an empty store records finished runs as history),
        # then the run fails: the measured tick announces it.
        _watch_once(config)
        dataworks.add_run(
            10000, status="Fail", stage_statuses={"DEV_CHECK": "Success", "PROD_DEPLOY": "Fail"}
        )
        child = subprocess.run(
            [sys.executable, "-I", "-S", "-c", CHILD, str(package), EVENT],
            capture_output=True,
            text=True,
            env={"DWNOTIFY_CONFIG": str(config), "DWNOTIFY_LOG_LEVEL": "WARNING"},
            timeout=120,
            check=True,
        )
        sample: dict[str, Any] = json.loads(child.stdout.strip().splitlines()[-1])
        if sample["sent"] != [2, 0]:
            raise RuntimeError(f"the benchmark tick did not deliver as scripted: {sample['sent']}")
        return sample
    finally:
        for emulator in (dataworks, dingtalk, slack):
            emulator.stop()


def _medians(samples: list[dict[str, Any]]) -> dict[str, float]:
    keys = ("import_index_ms", "first_tick_ms", "warm_tick_ms", "import_tablestore_ms")
    figures = {key: round(statistics.median(s[key] for s in samples), 1) for key in keys}
    figures["peak_rss_mb"] = round(max(s["peak_rss_mb"] for s in samples), 1)
    return figures


def _without_pyc(package: Path, copy: Path) -> Path:
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def measure(samples: int = 5) -> dict[str, Any]:
    """Median figures over `samples` fresh interpreters, with and without the package's .pyc files."""
    package, made = _package()
    try:
        with tempfile.TemporaryDirectory(prefix="dwnotify-cold-") as tmp:
            work = Path(tmp)
            compiled = [_sample(package, work / f"pyc-{i}") for i in range(samples)]
            bare = _without_pyc(package, work / "bare")
            sources = [_sample(bare, work / f"src-{i}") for i in range(max(1, samples // 2))]
        size = sum(path.stat().st_size for path in package.rglob("*") if path.is_file())
        return {
            "python": LOCAL_PYTHON,
            "package_mb": round(size / 1_000_000, 1),
            "samples": samples,
            **_medians(compiled),
            "without_pyc": _medians(sources),
        }
    finally:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)


if __name__ == "__main__":
    print(json.dumps(measure(), indent=2))

"""The FC handler: the built code package run the way FC runs it, and the handler's own rules in-process.

The package tests build with `make build FC_PYTHON=<this Python>` and call `index.handler` in an
interpreter started with `-I -S`, so nothing but the package is on its path, against the emulators.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from dwnotify.tick import Notifier
from tests.conftest import DING_SECRET, DING_TOKEN, SLACK_HOOK, World

ROOT = Path(__file__).resolve().parents[1]
EVENTS = Path(__file__).resolve().parent / "events"
LOCAL_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
STAGES = [
    {"code": "CHECK", "step": 1, "type": "Check", "name": "发布检查"},
    {"code": "DEPLOY", "step": 2, "type": "Deploy", "name": "发布到生产环境"},
]
STS_KEY_ID = "STS.NUgYrLnoC37mZZCNnAbez2"
STS_SECRET = "sts-secret-3f9a1c"
STS_TOKEN = "CAIS-sts-token-7d41e0b2"

# Runs inside `python -I -S`: builds contexts shaped like FC's and calls the handler once per spec.
RUNNER = r"""
import json, logging, sys

package, specs = sys.argv[1], json.loads(sys.argv[2])
sys.path.insert(0, package)


class Attrs:
    def __init__(self, fields):
        for name, value in fields.items():
            setattr(self, name, Attrs(value) if isinstance(value, dict) else value)


if specs[0].get("runtime_logging"):
    # FC's python runtime puts its own plain-text handler on the root logger.
    logging.basicConfig(stream=sys.stderr, format="RUNTIME %(message)s", level=logging.INFO)
import index

loaded_at_import = [name for name in ("jinja2", "httpx", "tablestore", "numpy") if name in sys.modules]
results = []
for spec in specs:
    event = spec["event"].encode("utf-8") if spec.get("bytes", True) else spec["event"]
    results.append(index.handler(event, Attrs(spec["context"])))
loaded = [name for name in ("jinja2", "httpx", "tablestore", "numpy") if name in sys.modules]
print(json.dumps({"results": results, "loaded_at_import": loaded_at_import, "loaded": loaded}))
"""


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`make build` for this interpreter's Python, into a folder of its own."""
    out = tmp_path_factory.mktemp("fc") / "code"
    build = subprocess.run(
        ["make", "--no-print-directory", "build", f"FC_PYTHON={LOCAL_PYTHON}", f"BUILD_DIR={out}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    assert "zipped" in build.stdout, build.stdout
    return out


def fc310_context(request_id: str, token: str = "", timeout: int = 60) -> dict[str, Any]:
    """What FC's python3.10 runtime passes: the role's STS credentials ride on the context."""
    return {
        "request_id": request_id,
        "credentials": {
            "access_key_id": "test-ak",
            "access_key_secret": "test-secret",
            "security_token": token,
        },
        "function": {"name": "dwnotify", "handler": "index.handler", "memory": 256, "timeout": timeout},
        "region": "cn-shanghai",
        "account_id": "1234567890123456",
    }


def fc312_context(request_id: str) -> dict[str, Any]:
    """python3.12: no credentials on the context (they are in the environment)."""
    context = fc310_context(request_id)
    del context["credentials"]
    return context


def timer_event(name: str = "timer.json") -> str:
    return (EVENTS / name).read_text(encoding="utf-8")


def run_package(
    package: Path, specs: list[dict[str, Any]], env: dict[str, str]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Call the handler from `package` in an isolated interpreter; its output and its JSON log lines."""
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-c", RUNNER, str(package), json.dumps(specs)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    # Every log line is JSON: the runtime's plain handler is gone.
    records = [json.loads(line) for line in lines]
    return json.loads(proc.stdout.strip().splitlines()[-1]), records


def package_env(world: World, **extra: str) -> dict[str, str]:
    """The function's environment: the config path and what it references, nothing else."""
    return {"DWNOTIFY_CONFIG": str(world.write_config()), **world.environ(), **extra}


def add_failing_run(world: World) -> str:
    return world.dataworks.add_run(
        10000,
        status="Fail",
        message="部署失败",
        stages=STAGES,
        stage_statuses={
            "CHECK": "Success",
            "DEPLOY": {"status": "Fail", "message": "节点 ods_user 依赖缺失"},
        },
    )


def test_built_package_delivers_with_python310_context_credentials(package: Path, world: World) -> None:
    run_id = add_failing_run(world)
    specs = [
        {"event": timer_event(), "context": fc310_context("1-6543a1-first"), "runtime_logging": True},
        {"event": timer_event(), "context": fc310_context("1-6543a2-second")},
    ]
    output, records = run_package(package, specs, package_env(world, FC_FUNC_CODE_PATH=str(package)))

    first, second = output["results"]
    assert first["request_id"] == "1-6543a1-first"
    assert (first["events"], first["messages_sent"], first["messages_failed"]) == (3, 2, 0)
    assert first["api_calls"] == 2  # one ListPipelineRuns per workspace
    assert (second["events"], second["messages_sent"], second["request_id"]) == (0, 0, "1-6543a2-second")
    [ding] = world.ding()
    assert run_id in ding["markdown"]["text"] and "节点 ods_user 依赖缺失" in ding["markdown"]["text"]
    assert len(world.slack_messages()) == 1
    assert {record.get("request_id") for record in records} == {"1-6543a1-first", "1-6543a2-second"}
    assert output["loaded_at_import"] == []
    assert "tablestore" not in output["loaded"] and "numpy" not in output["loaded"]
    for secret in (DING_TOKEN, DING_SECRET, SLACK_HOOK, "test-secret"):
        assert all(secret not in json.dumps(record, ensure_ascii=False) for record in records)


def test_built_package_delivers_with_python312_environment_sts_credentials(
    package: Path, world: World
) -> None:
    world.dataworks.gateway.credentials = {STS_KEY_ID: STS_SECRET}
    world.dataworks.gateway.security_token = STS_TOKEN  # the emulator refuses a request without it
    run_id = add_failing_run(world)
    env = package_env(
        world,
        ALIBABA_CLOUD_ACCESS_KEY_ID=STS_KEY_ID,
        ALIBABA_CLOUD_ACCESS_KEY_SECRET=STS_SECRET,
        ALIBABA_CLOUD_SECURITY_TOKEN=STS_TOKEN,
    )
    output, records = run_package(
        package, [{"event": timer_event(), "context": fc312_context("1-65-312")}], env
    )

    [result] = output["results"]
    assert (result["events"], result["messages_sent"], result["errors"]) == (3, 2, [])
    assert run_id in world.ding()[0]["markdown"]["text"]
    assert [call.code for call in world.dataworks.calls] == [None, None]
    assert all(STS_SECRET not in str(record) and STS_TOKEN not in str(record) for record in records)


def quiet_tick(package: Path, world: World) -> dict[str, Any]:
    """One tick with nothing to announce, from the package; what it loaded."""
    spec = {"event": timer_event(), "context": fc310_context("1-quiet"), "bytes": False}
    output, _ = run_package(package, [spec], package_env(world))
    [result] = output["results"]
    assert (result["runs_checked"], result["events"], result["messages_sent"]) == (0, 0, 0)
    return output


def test_a_quiet_tick_from_the_package_loads_neither_jinja2_nor_the_tablestore_sdk(
    package: Path, world: World
) -> None:
    output = quiet_tick(package, world)
    assert output["loaded_at_import"] == []
    assert {"jinja2", "tablestore", "numpy"}.isdisjoint(output["loaded"])


def test_a_quiet_tick_from_the_package_does_not_load_httpx(package: Path, world: World) -> None:
    assert "httpx" not in quiet_tick(package, world)["loaded"]


def test_the_package_holds_what_fc_needs_and_its_sdks_import_in_isolation(package: Path) -> None:
    info = json.loads((package / "build-info.json").read_text(encoding="utf-8"))
    assert info["python"] == LOCAL_PYTHON and info["compiled"] is True
    for required in ("index.py", "notifier.yaml", "dwnotify/tick.py", "templates/dingtalk/default.md.j2"):
        assert (package / required).is_file(), required
    assert not (package / "numpy").exists() and not (package / "bin").exists()
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); import tablestore, aliyunsdkcore.client, jinja2, httpx"
    )
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-c", probe, str(package)],
        capture_output=True,
        text=True,
        env={},
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


# -- in-process: the handler's rules ------------------------------------------------------------------


@pytest.fixture(scope="module")
def index() -> Iterator[ModuleType]:
    """functions/index.py, imported as FC imports it (the module `index`)."""
    spec = importlib.util.spec_from_file_location("index", ROOT / "functions" / "index.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["index"] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules["index"]


@pytest.fixture(autouse=True)
def _clean_handler_state(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "index" in request.fixturenames:
        request.getfixturevalue("index").apps.clear()
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_dwnotify", False)]:
        root.removeHandler(handler)


def context(request_id: str = "1-test", token: str = "", timeout: int = 60) -> SimpleNamespace:
    """A python3.10-style context object."""
    raw = fc310_context(request_id, token, timeout)
    return SimpleNamespace(
        request_id=raw["request_id"],
        credentials=SimpleNamespace(**raw["credentials"]),
        function=SimpleNamespace(**raw["function"]),
        region=raw["region"],
        account_id=raw["account_id"],
    )


@pytest.mark.parametrize(
    ("event", "dry_run"),
    [
        (None, False),
        (b"", False),
        (b"not json", False),
        ((EVENTS / "timer.json").read_bytes(), False),
        ((EVENTS / "timer.json").read_text(encoding="utf-8"), False),
        ((EVENTS / "timer-dry-run.json").read_bytes(), True),
        ((EVENTS / "invoke-dry-run.json").read_bytes(), True),
        ({"payload": {"dry_run": True}}, True),
    ],
)
def test_events_give_options(index: ModuleType, event: Any, dry_run: bool) -> None:
    assert index.parse_event(event).dry_run is dry_run


@pytest.mark.parametrize(
    ("event", "problem"),
    [
        ((EVENTS / "timer-bad-payload.json").read_bytes(), "event.payload.dryrun: is not an option"),
        (json.dumps({"payload": "dry run please"}), "event.payload: must be a JSON object"),
        (json.dumps({"payload": "[1]"}), "event.payload: must be a JSON object"),
        (json.dumps({"payload": '{"dry_run": "yes"}'}), "event.payload.dry_run: must be true or false"),
    ],
)
def test_bad_payloads_are_config_errors(index: ModuleType, event: Any, problem: str) -> None:
    from dwnotify.errors import ConfigError

    with pytest.raises(ConfigError) as raised:
        index.parse_event(event)
    assert any(line.startswith(problem) for line in raised.value.problems), raised.value.problems


def test_the_deadline_leaves_a_margin_before_the_function_timeout(index: ModuleType) -> None:
    assert index.SAFETY_MARGIN_S >= 20.0  # one chat post (10 s) and one DataWorks request (10 s)
    assert index.deadline_for(1000.0, 60.0) == 1040.0
    assert index.deadline_for(1000.0, 12.0) == 1006.0  # a short timeout keeps half of itself for work
    assert index.deadline_for(1000.0, None) is None
    assert index.function_timeout(context(timeout=300)) == 300.0
    assert index.function_timeout(SimpleNamespace()) is None


def test_context_credentials_treat_an_empty_token_as_none(index: ModuleType) -> None:
    plain = index.credentials_from_context(context(token=""))
    assert plain.access_key_id == "test-ak" and plain.security_token is None
    assert index.credentials_from_context(context(token="tok")).security_token.reveal() == "tok"
    assert index.credentials_from_context(SimpleNamespace(request_id="x")) is None


def test_relative_config_paths_are_taken_from_the_package_root(index: ModuleType) -> None:
    assert index.config_path({}) == ROOT / "functions" / "notifier.yaml"
    assert index.config_path({"DWNOTIFY_CONFIG": "conf/n.yaml"}) == ROOT / "functions" / "conf" / "n.yaml"
    assert index.config_path({"DWNOTIFY_CONFIG": "/tmp/n.yaml"}) == Path("/tmp/n.yaml")


def test_warm_invocations_reuse_the_app_until_the_sts_token_rotates(
    index: ModuleType, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in package_env(world).items():
        monkeypatch.setenv(name, value)
    built: list[Any] = []
    real_build = index.build_app

    def counting_build(*args: Any, **kwargs: Any) -> Any:
        built.append(real_build(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(index, "build_app", counting_build)
    world.dataworks.gateway.security_token = None
    event = (EVENTS / "timer.json").read_bytes()
    assert "error" not in index.handler(event, context("1-a"))
    assert "error" not in index.handler(event, context("1-b"))
    assert len(built) == 1
    world.dataworks.gateway.security_token = "rotated-token"
    result = index.handler(event, context("1-c", token="rotated-token"))
    assert result["errors"] == [] and len(built) == 2


def test_a_config_error_is_reported_in_the_result_and_the_log_without_a_traceback(
    index: ModuleType, world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    world.primed = False  # the config cannot be loaded, so no store either
    world.config_overrides["channels.team.url"] = "https://hooks.slack.com/services/${MISSING_HOOK}"
    for name, value in package_env(world).items():
        monkeypatch.setenv(name, value)
    with caplog.at_level(logging.INFO):
        result = index.handler((EVENTS / "timer.json").read_bytes(), context("1-bad"))
    assert result["error"] == "config" and result["request_id"] == "1-bad"
    assert result["problems"] == ["channels.team.url: environment variable MISSING_HOOK is not set"]
    errors = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert [record.getMessage() for record in errors] == [f"config error: {result['problems'][0]}"]
    assert all(record.exc_info is None for record in caplog.records)
    assert DING_SECRET not in caplog.text and DING_TOKEN not in json.dumps(result)


def test_no_credentials_anywhere_is_a_config_error(
    index: ModuleType, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in package_env(world).items():
        monkeypatch.setenv(name, value)
    result = index.handler(b"", SimpleNamespace(request_id="1-nocred"))
    assert result["error"] == "config" and result["problems"][0].startswith("credentials: none found")


def test_a_dry_run_payload_sends_and_stores_nothing_and_the_deadline_reaches_the_tick(
    index: ModuleType, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in package_env(world).items():
        monkeypatch.setenv(name, value)
    add_failing_run(world)
    seen: list[dict[str, Any]] = []
    real_tick = Notifier.tick

    def spying_tick(self: Notifier, **kwargs: Any) -> Any:
        seen.append(kwargs)
        return real_tick(self, **kwargs)

    monkeypatch.setattr(Notifier, "tick", spying_tick)
    result = index.handler((EVENTS / "timer-dry-run.json").read_bytes(), context("1-dry", timeout=30))
    assert result["dry_run"] is True and result["events"] == 3 and result["messages_sent"] == 0
    assert world.ding() == [] and world.slack_messages() == []
    [kwargs] = seen
    assert kwargs["dry_run"] is True
    assert kwargs["deadline"] is not None and 0 < kwargs["deadline"] - time.time() <= 20


def test_an_app_that_cannot_be_built_is_a_failure_without_a_traceback(
    index: ModuleType, world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = world.tmp / "code"
    blocker.write_text("FC's code folder, read-only", encoding="utf-8")
    world.primed = False  # the store cannot be opened
    world.config_overrides["state"] = {"backend": "sqlite", "path": str(blocker / "state.db")}
    for name, value in package_env(world).items():
        monkeypatch.setenv(name, value)
    with caplog.at_level(logging.INFO):
        result = index.handler((EVENTS / "timer.json").read_bytes(), context("1-ro"))
    assert result["error"] == "failure" and result["request_id"] == "1-ro"
    assert "cannot open the SQLite state" in result["message"]
    [record] = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert record.getMessage() == f"building the clients failed: {result['message']}"
    assert all(record.exc_info is None for record in caplog.records)


def test_an_error_while_building_is_masked(
    index: ModuleType, world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for name, value in package_env(world).items():
        monkeypatch.setenv(name, value)

    def failing_build(settings: Any, credentials: Any) -> Any:
        hook = settings.channels["ops"].url.reveal()
        raise OSError(f"cannot reach {hook} with {settings.channels['ops'].secret.reveal()}")

    monkeypatch.setattr(index, "build_app", failing_build)
    with caplog.at_level(logging.INFO):
        result = index.handler(b"", context("1-os"))
    assert result["error"] == "failure" and result["message"] == "cannot reach *** with ***"
    for secret in (DING_TOKEN, DING_SECRET):
        assert secret not in json.dumps(result) and secret not in caplog.text


def test_tick_errors_in_the_result_are_masked(
    index: ModuleType, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in package_env(world).items():
        monkeypatch.setenv(name, value)
    hook = f"{world.dingtalk.base_url}/robot/send?access_token={DING_TOKEN}"
    world.dataworks.inject(None, "Forbidden.Access", 403, times=50, message=f"denied: {hook} {DING_SECRET}")
    result = index.handler((EVENTS / "timer.json").read_bytes(), context("1-403"))
    assert result["errors"] and all("denied: *** ***" in error for error in result["errors"])
    for secret in (DING_TOKEN, DING_SECRET):
        assert secret not in json.dumps(result, ensure_ascii=False)

"""The DataWorks client: real aliyun-python-sdk-core requests against the emulator on 127.0.0.1."""

from __future__ import annotations

import io
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from dwnotify import logs
from dwnotify.answers import parse_run
from dwnotify.credentials import Credentials, Secret
from dwnotify.dataworks import DataWorksClient
from dwnotify.errors import DataWorksError
from dwnotify.settings import DataWorksSettings, ProjectSettings
from emulators import DataWorksEmulator
from tests.conftest import CREDENTIALS, ManualClock, World, wait_for
from tests.helpers import doc_example

SCENARIO_DIR = Path(__file__).resolve().parents[1] / "emulators" / "scenarios"
STAGES = [
    {"code": "BUILD", "step": 1, "type": "Build", "name": "发布包构建"},
    {"code": "DEPLOY", "step": 2, "type": "Deploy", "name": "发布到生产环境"},
]


def make_client(
    emulator: DataWorksEmulator,
    clock: ManualClock,
    credentials: Credentials = CREDENTIALS,
    **overrides: object,
) -> tuple[DataWorksClient, ProjectSettings]:
    return client_at(emulator.base_url.removeprefix("http://"), clock, credentials, **overrides)


def client_at(
    host: str, clock: ManualClock, credentials: Credentials = CREDENTIALS, **overrides: object
) -> tuple[DataWorksClient, ProjectSettings]:
    """The product's client for workspace 10000 at `host` (an emulator, or a bare socket)."""
    project = ProjectSettings(10000, None, "cn-shanghai", host)
    settings = DataWorksSettings(
        region="cn-shanghai", endpoint=host, protocol="http", projects=(project,), **overrides
    )  # type: ignore[arg-type]
    client = DataWorksClient(settings, credentials, sleep=clock.sleep, clock=clock, jitter=lambda: 1.0)
    return client, project


@pytest.fixture
def emulator(clock: ManualClock) -> DataWorksEmulator:
    emu = DataWorksEmulator({"projects": [10000]}, clock=clock)
    emu.start()
    yield emu  # type: ignore[misc]
    emu.stop()


def test_the_doc_example_parses() -> None:
    run = parse_run(doc_example()["Pipeline"])
    assert run.id == "a7ef0634-20ec-4a7c-a214-54020f91XXXX"  # the trailing newline is gone
    assert run.project_id == 56160
    assert run.status == "running"
    assert run.create_time is not None and run.create_time.year == 2024
    [stage] = run.stages
    assert (stage.code, stage.step, stage.type, stage.status) == ("DEV_CHECK", 1, "Check", "running")
    assert "checkerList" in stage.detail["key"]


@pytest.mark.parametrize(
    "raw",
    [
        {
            "Id": " x ",
            "ProjectId": "10000",
            "Status": "SUCCESS",
            "CreateTime": "1724984066000",
            "Stages": None,
        },
        {
            "Id": "x",
            "Status": "Termination",
            "Stages": [{"Step": "2", "Status": "CANCEL", "Detail": "not json"}],
        },
        {"Id": "x", "Stages": [{"Code": "A", "Detail": '{"checkerList": []}', "Type": "CHECK"}]},
    ],
)
def test_odd_responses_parse(raw: dict) -> None:  # type: ignore[type-arg]
    run = parse_run(raw, project_id=10000)
    assert run.id == "x" and run.project_id == 10000
    for stage in run.stages:
        assert isinstance(stage.detail, dict)
        assert stage.type in ("", "Check")


def test_list_and_get_through_the_real_sdk(emulator: DataWorksEmulator, clock: ManualClock) -> None:
    run_id = emulator.add_run(10000, status="Running", stages=STAGES, stage_statuses={"BUILD": "Running"})
    client, project = make_client(emulator, clock)
    page = client.list_runs(project, 1)
    assert page.total_count == 1
    assert [run.id for run in page.runs] == [run_id]
    got = client.get_run(project, run_id)
    assert got is not None and [s.status for s in got.stages] == ["running", "init"]
    assert client.get_run(project, "no-such-run") is None
    assert client.calls == 3 == emulator.call_count()


@pytest.mark.parametrize("spelling", ["doc", "sdk"])
@pytest.mark.parametrize(
    ("status", "normal"),
    [("Init", "init"), ("Running", "running"), ("Success", "success"), ("Fail", "fail"),
     ("Terminated", "terminated"), ("Canceled", "canceled")],
)  # fmt: skip
def test_every_status_spelling_from_the_wire(
    clock: ManualClock, spelling: str, status: str, normal: str
) -> None:
    with DataWorksEmulator({"projects": [10000]}, clock=clock, status_spelling=spelling) as emu:
        emu.add_run(10000, status=status, stages=STAGES, stage_statuses={"BUILD": status})
        client, project = make_client(emu, clock)
        [run] = client.list_runs(project, 1).runs
        assert (run.status, run.stages[0].status) == (normal, normal)


def test_the_doc_example_forms_survive_the_wire(clock: ManualClock) -> None:
    # The API page's spellings and its Detail-as-a-string: opt-in on the emulator, which follows the SDK.
    with DataWorksEmulator(SCENARIO_DIR / "doc-example.yaml", clock=clock) as emu:
        clock.now = emu.scenario.start + 200
        host = emu.base_url.removeprefix("http://")
        project = ProjectSettings(56160, None, "cn-shanghai", host)
        settings = DataWorksSettings(
            region="cn-shanghai", endpoint=host, protocol="http", projects=(project,)
        )
        client = DataWorksClient(settings, CREDENTIALS, sleep=clock.sleep, clock=clock, jitter=lambda: 1.0)
        runs = {run.id: run for run in client.list_runs(project, 1).runs}
        first = client.get_run(project, "a7ef0634-20ec-4a7c-a214-54020f910001")
    assert {run.status for run in runs.values()} == {"fail", "canceled", "terminated"}
    assert first is not None and first == runs[first.id]
    assert first.stages[0].detail["checkerList"][0]["code"] == "BuildPackageChecker"
    assert first.stages[0].message == "Exception information XXX"


def test_old_api_fallback_is_remembered(clock: ManualClock) -> None:
    with DataWorksEmulator({"projects": [10000]}, clock=clock, old_api_only=True) as emu:
        run_id = emu.add_run(10000, status="Success", stages=STAGES, stage_statuses={"BUILD": "Success"})
        client, project = make_client(emu, clock)
        page = client.list_runs(project, 1)
        assert page.total_count == 1 and page.runs[0].status == "success"
        assert page.runs[0].stages[0].type == "Build"
        assert client.legacy_api
        assert client.get_run(project, run_id) is not None
        assert emu.call_count("ListPipelineRuns") == 1  # tried once, then remembered
        assert emu.call_count("GetPipelineRun") == 0
        assert (emu.call_count("ListDeployments"), emu.call_count("GetDeployment")) == (1, 1)


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("Throttling", 400),  # HTTP 400 is how public references show DataWorks throttle
        ("Throttling.User", 400),
        ("Throttling.Api", 400),
        ("Throttling.User", 429),
        ("Throttling.Api", 429),
        ("Throttling.System", 429),
        ("InternalError.System", 500),
        ("ServiceUnavailable", 503),
    ],
)
def test_throttling_and_5xx_are_retried_with_backoff(
    emulator: DataWorksEmulator, clock: ManualClock, code: str, status: int
) -> None:
    emulator.inject("ListPipelineRuns", code, status, times=2)
    client, project = make_client(emulator, clock)
    assert client.list_runs(project, 1).total_count == 0
    assert client.calls == 3  # every attempt counts
    assert clock.slept == [0.5, 1.0]  # exponential (jitter pinned to its maximum here)


def test_network_errors_are_retried(emulator: DataWorksEmulator, clock: ManualClock) -> None:
    emulator.drop_connections(1)
    client, project = make_client(emulator, clock)
    assert client.list_runs(project, 1).total_count == 0
    assert client.calls == 2


def test_retries_give_up_after_max_attempts(emulator: DataWorksEmulator, clock: ManualClock) -> None:
    emulator.inject(None, "Throttling.User", 429, times=10)
    client, project = make_client(emulator, clock, max_attempts=3)
    with pytest.raises(DataWorksError) as caught:
        client.list_runs(project, 1)
    assert caught.value.code == "Throttling.User" and caught.value.retryable
    assert client.calls == 3


@pytest.mark.parametrize(
    ("code", "status"),
    [("InvalidParameter", 400), ("IncompleteSignature", 400), ("InvalidAccessKeyId.NotFound", 404)],
)
def test_other_client_errors_are_not_retried(
    emulator: DataWorksEmulator, clock: ManualClock, code: str, status: int
) -> None:
    emulator.inject(None, code, status, times=2)
    client, project = make_client(emulator, clock)
    with pytest.raises(DataWorksError) as caught:
        client.list_runs(project, 1)
    assert (caught.value.code, caught.value.http_status, caught.value.retryable) == (code, status, False)
    assert client.calls == 1


def test_forbidden_is_not_retried(emulator: DataWorksEmulator, clock: ManualClock) -> None:
    emulator.inject(None, "Forbidden.Access", 403)
    client, project = make_client(emulator, clock)
    with pytest.raises(DataWorksError) as caught:
        client.list_runs(project, 1)
    assert (caught.value.code, caught.value.http_status, client.calls) == ("Forbidden.Access", 403, 1)


def test_wrong_secret_is_refused_without_showing_it(emulator: DataWorksEmulator, clock: ManualClock) -> None:
    client, project = make_client(emulator, clock, Credentials("test-ak", Secret("wrong-secret-4711")))
    with pytest.raises(DataWorksError) as caught:
        client.list_runs(project, 1)
    assert caught.value.code == "SignatureDoesNotMatch"
    assert "wrong-secret-4711" not in str(caught.value)


def test_sts_credentials_sign_with_the_token(clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    # The SDK would prefer these over the STS credential; the client must not let it.
    monkeypatch.setenv("ALIYUN_ACCESS_KEY_ID", "someone-else")
    monkeypatch.setenv("ALIYUN_ACCESS_KEY_SECRET", "their-secret")
    with DataWorksEmulator({"projects": [10000]}, clock=clock, security_token="sts-token-1") as emu:
        creds = Credentials("test-ak", Secret("test-secret"), Secret("sts-token-1"))
        client, project = make_client(emu, clock, creds)
        assert client.list_runs(project, 1).total_count == 0


def test_client_side_qps_limit_allows_a_second_its_calls(
    emulator: DataWorksEmulator, clock: ManualClock
) -> None:
    client, project = make_client(emulator, clock, max_qps=2.0)
    for _ in range(5):
        client.list_runs(project, 1)
    assert clock.slept == [1.0, 1.0]  # two at once, then two a second later, then the fifth


def test_client_side_qps_limit_spaces_calls_below_one_a_second(
    emulator: DataWorksEmulator, clock: ManualClock
) -> None:
    client, project = make_client(emulator, clock, max_qps=0.5)
    for _ in range(3):
        client.list_runs(project, 1)
    assert clock.slept == [2.0, 2.0]


class _HeldClock(ManualClock):
    """A clock that stands still while the code sleeps: every waiter reserves from the same instant."""

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def test_threads_share_the_limit(emulator: DataWorksEmulator) -> None:
    clock = _HeldClock(emulator.clock.now())
    client, project = make_client(emulator, clock, max_qps=3.0)
    with ThreadPoolExecutor(max_workers=7) as pool:
        list(pool.map(lambda _: client.list_runs(project, 1), range(7)))
    # Three start at once; the next three wait one window, the seventh two.
    assert sorted(clock.slept) == [1.0, 1.0, 1.0, 2.0] and client.calls == 7


def test_a_clock_stepped_back_waits_one_interval_not_an_hour(
    emulator: DataWorksEmulator, clock: ManualClock
) -> None:
    client, project = make_client(emulator, clock, max_qps=1.0)
    client.list_runs(project, 1)
    clock.advance(-3600)  # the host's clock steps back an hour
    client.list_runs(project, 1)
    assert clock.slept == [1.0]  # one interval, as between any two calls


def test_timeout_setting_reaches_the_sdk(emulator: DataWorksEmulator, clock: ManualClock) -> None:
    client, project = make_client(emulator, clock, timeout=timedelta(seconds=3))
    client.list_runs(project, 1)
    sdk = client._sdk_client("cn-shanghai")
    assert sdk._read_timeout == 3


def test_the_sts_token_never_reaches_an_error(clock: ManualClock) -> None:
    token = "CAIS+sts/token==secret-part"
    with DataWorksEmulator({"projects": [10000]}, clock=clock, security_token=token) as emu:
        # A wrong secret: the gateway answers with its string-to-sign, which holds the token.
        client, project = make_client(
            emu, clock, Credentials("test-ak", Secret("wrong-secret"), Secret(token))
        )
        with pytest.raises(DataWorksError) as caught:
            client.list_runs(project, 1)
        assert caught.value.code in ("SignatureDoesNotMatch", "InvalidAccessKeySecret")
        message = str(caught.value)
        assert "secret-part" not in message and "secret-part" not in repr(caught.value)


def test_sdk_logs_never_carry_the_sts_token(clock: ManualClock) -> None:
    stream = io.StringIO()
    logs.setup("DEBUG", stream)
    token = "CAIS+sts/token==hidden-part"
    with DataWorksEmulator({"projects": [10000]}, clock=clock, security_token=token) as emu:
        client, project = make_client(
            emu, clock, Credentials("test-ak", Secret("wrong-secret"), Secret(token))
        )
        with pytest.raises(DataWorksError) as caught:
            client.list_runs(project, 1)
        logging.getLogger("dwnotify").error("tick failed: %s", caught.value)
    assert "tick failed" in stream.getvalue()
    assert "hidden-part" not in stream.getvalue()


def test_no_retry_starts_that_would_end_after_the_deadline(
    emulator: DataWorksEmulator, clock: ManualClock
) -> None:
    emulator.inject(None, "Throttling.User", 429, times=10)
    client, project = make_client(emulator, clock)
    deadline = clock.now + 0.75  # room for the first backoff (0.5 s), not the second (1 s)
    with pytest.raises(DataWorksError):
        client.list_runs(project, 1, deadline=deadline)
    assert client.calls == 2 and clock.slept == [0.5]


@pytest.mark.parametrize(
    ("inject", "escaped"),
    [
        # aliyun-python-sdk-core compares `message.split(':')[1]` with its string-to-sign: IndexError
        ({"code": "SignatureDoesNotMatch", "message": "no colon here"}, "IndexError"),
        ({"code": "SignatureDoesNotMatch", "message": ""}, "IndexError"),
        # an error answer that is not UTF-8: the SDK's `.decode('utf-8')`
        ({"body": b"\xff\xfe<html>bad gateway</html>", "status": 502}, "UnicodeDecodeError"),
    ],
    ids=["no-colon", "empty-message", "not-utf-8"],
)
def test_an_exception_inside_the_sdk_is_a_dataworks_error(
    emulator: DataWorksEmulator, clock: ManualClock, inject: dict[str, Any], escaped: str
) -> None:
    if "code" in inject:
        emulator.inject("ListPipelineRuns", inject["code"], 400, message=inject["message"])
    else:
        emulator.inject_answer("ListPipelineRuns", inject["body"], status=inject["status"])
    client, project = make_client(emulator, clock)
    with pytest.raises(DataWorksError) as caught:  # before: the SDK's own exception escaped
        client.list_runs(project, 1)
    error = caught.value
    assert not error.retryable and error.code == "SDK.UnexpectedError"
    assert escaped in str(error) and "no colon" not in str(error) and "bad gateway" not in str(error)
    assert client.calls == 1 and emulator.call_count("ListPipelineRuns") == 1  # not retried
    assert client.list_runs(project, 1).total_count == 0  # the next call is unaffected


def test_a_run_the_sdk_cannot_read_is_not_taken_for_gone(
    emulator: DataWorksEmulator, clock: ManualClock
) -> None:
    run_id = emulator.add_run(10000, status="Running", stages=STAGES)
    emulator.inject("GetPipelineRun", "SignatureDoesNotMatch", 400, message="no colon here")
    client, project = make_client(emulator, clock)
    with pytest.raises(DataWorksError):
        client.get_run(project, run_id)  # not None: that would mark the run as vanished
    run = client.get_run(project, run_id)
    assert run is not None and run.status == "running"


def test_a_tick_survives_an_exception_inside_the_sdk(world: World) -> None:
    run_id = world.dataworks.add_run(10000, status="Running", stages=STAGES)
    world.config_overrides["dataworks.runs"] = [{"project": 10000, "id": run_id}]
    world.config_overrides["dataworks.projects"] = [10001]  # the tracked run is read with GetPipelineRun
    world.dataworks.inject("GetPipelineRun", "SignatureDoesNotMatch", 400, message="no colon here")
    summary = world.tick()  # before: "discovery failed unexpectedly: IndexError" ended the tick
    assert any(f"run {run_id}" in error and "IndexError" in error for error in summary.errors)
    assert world.tick().errors == [] and len(world.slack_messages()) == 1  # read (and announced) next tick


# --- a total deadline on every request --------------------------------------------------------------

EMPTY_PAGE = {"PagingInfo": {"PageNumber": 1, "PageSize": 100, "TotalCount": 0, "PipelineRuns": []}}


@pytest.mark.parametrize("how", ["body", "whole-answer", "error-answer"])
def test_a_dripping_answer_ends_at_the_timeout_as_a_retryable_error(
    emulator: DataWorksEmulator, clock: ManualClock, how: str
) -> None:
    client, project = make_client(emulator, clock, timeout=timedelta(seconds=0.5), max_attempts=1)
    if how == "body":
        client.list_runs(project, 1)  # the dripping answer then comes on a kept-alive connection
        emulator.inject_answer("ListPipelineRuns", EMPTY_PAGE, drip_s=0.1)
    elif how == "whole-answer":
        emulator.inject_answer("ListPipelineRuns", EMPTY_PAGE, drip_s=0.1, drip_headers=True)
    else:
        emulator.inject("ListPipelineRuns", "Throttling.User", drip_s=0.1)
    with pytest.raises(DataWorksError) as caught:  # before: the whole drip was read (seconds of it)
        client.list_runs(project, 1)
    error = caught.value
    assert error.retryable and error.code == "SDK.NoAnswer"
    assert str(error) == "ListPipelineRuns: no answer within 0.5s"
    assert wait_for(lambda: emulator.hang_ups == 1)  # the request was ended, not left running
    assert client.list_runs(project, 1).total_count == 0


def test_the_ticks_deadline_bounds_a_request_when_it_comes_first(
    emulator: DataWorksEmulator, clock: ManualClock
) -> None:
    client, project = make_client(emulator, clock, max_attempts=1)  # a 10 s timeout
    emulator.inject_answer("ListPipelineRuns", EMPTY_PAGE, drip_s=0.1)
    with pytest.raises(DataWorksError) as caught:
        client.list_runs(project, 1, deadline=clock.now + 0.4)
    assert caught.value.retryable and str(caught.value) == "ListPipelineRuns: no answer within 0.4s"


def test_no_request_starts_after_the_deadline(emulator: DataWorksEmulator, clock: ManualClock) -> None:
    client, project = make_client(emulator, clock)
    with pytest.raises(DataWorksError) as caught:
        client.list_runs(project, 1, deadline=clock.now)
    assert caught.value.retryable and "deadline has passed" in str(caught.value)
    assert client.calls == 0 and emulator.call_count() == 0


def test_https_requests_are_watched_too(emulator: DataWorksEmulator, clock: ManualClock) -> None:
    """The emulator speaks plain HTTP; the cloud is HTTPS: its connections must be the watched kind."""
    client, _ = make_client(emulator, clock)
    session = client._sdk_client("cn-shanghai").session
    for url in ("https://dataworks.cn-shanghai.aliyuncs.com/", emulator.base_url + "/"):
        pool = session.get_adapter(url).get_connection(url)
        assert pool.ConnectionCls.__name__.startswith("Watched")


def test_each_region_has_its_own_limit(emulator: DataWorksEmulator) -> None:
    clock = _HeldClock(emulator.clock.now())
    client, shanghai = make_client(emulator, clock, max_qps=1.0)
    hangzhou = ProjectSettings(10000, None, "cn-hangzhou", shanghai.endpoint)  # as if another region
    client.list_runs(shanghai, 1)
    client.list_runs(hangzhou, 1)  # another region's budget: no wait
    assert clock.slept == []
    client.list_runs(shanghai, 1)
    assert clock.slept == [1.0]


def test_shards_keep_to_a_whole_share_of_the_qps_over_the_same_second(
    emulator: DataWorksEmulator, clock: ManualClock
) -> None:
    """Two shards at max_qps 5 take 2 a second each (not 2.5 over 0.8 s windows): together never more
    than 5 starts in any second, as the account counts them."""
    client, project = make_client(emulator, clock, max_qps=5.0)
    client.share_qps(2)
    for _ in range(5):
        client.list_runs(project, 1)
    assert clock.slept == [1.0, 1.0]  # two at once, two a second later, then the fifth
    client.share_qps(1)  # a later invocation of the same instance polls alone again
    clock.slept.clear()
    clock.advance(10)
    for _ in range(5):
        client.list_runs(project, 1)
    assert clock.slept == []


def test_no_more_shards_than_whole_requests_a_second() -> None:
    from dwnotify.scaling import shard_count
    from dwnotify.settings import ScaleSettings

    assert shard_count(ScaleSettings(), 40, 50.0) == 4  # auto: one per 10 workspaces
    assert shard_count(ScaleSettings(), 40, 2.0) == 2  # each shard keeps to at least one a second
    assert shard_count(ScaleSettings(shards=8), 3, 50.0) == 3  # never more than workspaces
    assert shard_count(ScaleSettings(), 5, 50.0) == 1  # one invocation is enough

"""The DataWorks client's writes (`exec_stage`, `abolish_run`): real aliyun-python-sdk-core requests
against the emulator on 127.0.0.1, counted, POSTed with a form body, retried only when the answer
proves nothing was done, and `ambiguous` when it may have been."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest

from dwnotify.credentials import Credentials, Secret
from dwnotify.dataworks import DataWorksClient, ambiguous
from dwnotify.errors import DataWorksError
from dwnotify.settings import ProjectSettings
from emulators import DataWorksEmulator
from tests.conftest import ManualClock, wait_for
from tests.test_dataworks import client_at

STAGES = [
    {"code": "BUILD", "step": 1, "type": "Build"},
    {"code": "CHECK", "step": 2, "type": "Check"},
    {"code": "DEPLOY", "step": 3, "type": "Deploy"},
]
EXEC, ABOLISH = "ExecPipelineRunStage", "AbolishPipelineRun"
Write = Callable[[DataWorksClient, ProjectSettings, str], str]
WRITES: dict[str, Write] = {
    EXEC: lambda client, project, run_id: client.exec_stage(project, run_id, "CHECK"),
    ABOLISH: lambda client, project, run_id: client.abolish_run(project, run_id),
}


@pytest.fixture
def emulator(clock: ManualClock) -> Iterator[DataWorksEmulator]:
    emu = DataWorksEmulator({"start": clock.now, "projects": [10000]}, clock=clock)
    with emu:
        yield emu


def host(emulator: DataWorksEmulator) -> str:
    return emulator.base_url.removeprefix("http://")


def waiting(emulator: DataWorksEmulator) -> str:
    """A running run whose build succeeded: CHECK is its gate."""
    return emulator.add_run(10000, status="Running", stages=STAGES, stage_statuses={"BUILD": "Success"})


def stage_statuses(client: DataWorksClient, project: ProjectSettings, run_id: str) -> list[str]:
    run = client.get_run(project, run_id)
    assert run is not None
    return [run.status, *(stage.status for stage in run.stages)]


def test_exec_stage_posts_the_sdks_form_and_returns_the_request_id(
    emulator: DataWorksEmulator, clock: ManualClock
) -> None:
    run_id = waiting(emulator)
    client, project = client_at(host(emulator), clock)
    request_id = client.exec_stage(project, run_id, "CHECK")
    assert client.calls == 1 == emulator.call_count() == emulator.call_count(EXEC)
    [call] = emulator.calls
    assert (call.method, call.http_status, call.signature) == ("POST", 200, "HMAC-SHA1")
    assert call.form == {"Id": run_id, "Code": "CHECK"}  # ProjectId in the query, as the SDK sends it
    assert call.params == {"ProjectId": "10000", "Id": run_id, "Code": "CHECK"}
    assert len(request_id) == 36 and request_id == request_id.upper()
    assert stage_statuses(client, project, run_id) == ["running", "success", "running", "init"]
    clock.advance(emulator.advance_s)
    assert stage_statuses(client, project, run_id) == ["running", "success", "success", "init"]


def test_abolish_run_posts_id_and_project_in_the_form(
    emulator: DataWorksEmulator, clock: ManualClock
) -> None:
    run_id = waiting(emulator)
    client, project = client_at(host(emulator), clock)
    assert client.abolish_run(project, run_id)
    [call] = emulator.calls
    assert (call.action, call.method) == (ABOLISH, "POST")
    assert call.form == call.params == {"Id": run_id, "ProjectId": "10000"}  # nothing in the query
    assert stage_statuses(client, project, run_id) == ["canceled", "success", "canceled", "canceled"]
    assert client.calls == 2


@pytest.mark.parametrize("action", WRITES)
@pytest.mark.parametrize(
    ("code", "status"),
    [("Throttling", 400), ("Throttling.User", 400), ("Throttling.Api", 429), ("Busy", 429)],
)
def test_a_throttled_write_is_sent_again(
    emulator: DataWorksEmulator, clock: ManualClock, action: str, code: str, status: int
) -> None:
    run_id = waiting(emulator)
    emulator.inject(action, code, status, times=1)
    client, project = client_at(host(emulator), clock)
    assert WRITES[action](client, project, run_id)
    assert client.calls == 2 == emulator.call_count(action)
    assert clock.slept == [0.5]
    assert [c.http_status for c in emulator.calls] == [status, 200]


def test_a_write_throttled_every_time_gives_up_retryable_and_not_ambiguous(
    emulator: DataWorksEmulator, clock: ManualClock
) -> None:
    emulator.inject(EXEC, "Throttling.User", times=10)
    client, project = client_at(host(emulator), clock, max_attempts=3)
    with pytest.raises(DataWorksError) as caught:
        client.exec_stage(project, waiting(emulator), "CHECK")
    assert caught.value.code == "Throttling.User" and caught.value.retryable
    assert not ambiguous(caught.value)
    assert client.calls == 3


@pytest.mark.parametrize("action", WRITES)
@pytest.mark.parametrize(
    "fault",
    [
        "InternalError.System 500",
        "ServiceUnavailable 503",
        "InternalError 502",
        "dropped",
        "not json",
        "no Success",
    ],
)
def test_an_answer_that_may_follow_a_done_write_is_not_retried(
    emulator: DataWorksEmulator, clock: ManualClock, action: str, fault: str
) -> None:
    run_id = waiting(emulator)
    if fault == "dropped":
        emulator.drop_connections(1)
    elif fault == "not json":
        emulator.inject_answer(action, b"<html>ok</html>")
    elif fault == "no Success":
        emulator.inject_answer(action, {"RequestId": "D1E2"})
    else:
        code, status = fault.split()
        emulator.inject(action, code, int(status))
    client, project = client_at(host(emulator), clock)
    with pytest.raises(DataWorksError) as caught:
        WRITES[action](client, project, run_id)
    error = caught.value
    assert ambiguous(error) and not error.retryable
    assert client.calls == 1 == emulator.call_count(action)  # sent once: it may have been carried out
    assert clock.slept == []


def test_no_answer_in_time_is_ambiguous(emulator: DataWorksEmulator, clock: ManualClock) -> None:
    run_id = waiting(emulator)
    emulator.inject_answer(EXEC, {"RequestId": "X", "Success": True}, drip_s=0.1)
    client, project = client_at(host(emulator), clock, timeout=timedelta(seconds=0.5))
    with pytest.raises(DataWorksError) as caught:
        client.exec_stage(project, run_id, "CHECK")
    assert caught.value.code == "SDK.NoAnswer" and ambiguous(caught.value) and not caught.value.retryable
    assert client.calls == 1
    assert wait_for(lambda: emulator.hang_ups == 1)


def test_a_connection_never_made_is_tried_again_and_is_not_ambiguous(clock: ManualClock) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    token = "CAIS+sts/token==hidden-part"
    credentials = Credentials("test-ak", Secret("test-secret-77"), Secret(token))
    client, project = client_at(f"127.0.0.1:{port}", clock, credentials, max_attempts=3)
    with pytest.raises(DataWorksError) as caught:
        client.exec_stage(project, "r1", "CHECK")
    error = caught.value
    assert error.code == "SDK.NotConnected" and error.retryable and not ambiguous(error)
    assert client.calls == 3 and clock.slept == [0.5, 1.0]
    # The SDK's own text quotes the signed URL (with the STS token): none of it reaches the error.
    for secret in ("hidden-part", "test-secret-77", "Signature="):
        assert secret not in str(error) and secret not in repr(error)


@pytest.mark.parametrize(
    ("write", "setup", "code", "status"),
    [
        (EXEC, "deploy", "Invalid.Pipeline.StageStatus", 400),
        (EXEC, "unknown", "Invalid.Pipeline.NotFound", 404),
        (EXEC, "ended", "Invalid.Pipeline.Status", 400),
        (ABOLISH, "ended", "Invalid.Pipeline.Status", 400),
        (ABOLISH, "unknown", "Invalid.Pipeline.NotFound", 404),
    ],
)
def test_a_refusal_carries_the_gateways_code_and_is_not_retried(
    emulator: DataWorksEmulator, clock: ManualClock, write: str, setup: str, code: str, status: int
) -> None:
    run_id = waiting(emulator)
    if setup == "ended":
        emulator.set_run_status(run_id, "Fail")
    client, project = client_at(host(emulator), clock)
    target = "no-such-run" if setup == "unknown" else run_id
    with pytest.raises(DataWorksError) as caught:
        if setup == "deploy":
            client.exec_stage(project, target, "DEPLOY")
        else:
            WRITES[write](client, project, target)
    error = caught.value
    assert (error.code, error.http_status) == (code, status)
    assert not error.retryable and not ambiguous(error)
    assert error.request_id and target in str(error)
    assert client.calls == 1


def test_success_false_is_a_refusal(emulator: DataWorksEmulator, clock: ManualClock) -> None:
    emulator.inject_answer(EXEC, {"RequestId": "R-1", "Success": False})
    client, project = client_at(host(emulator), clock)
    with pytest.raises(DataWorksError) as caught:
        client.exec_stage(project, waiting(emulator), "CHECK")
    assert (caught.value.code, caught.value.request_id) == ("Success.False", "R-1")
    assert not ambiguous(caught.value) and not caught.value.retryable
    assert client.calls == 1


def test_no_secret_in_a_refused_writes_error(clock: ManualClock) -> None:
    token = "CAIS+sts/token==secret-part"
    with DataWorksEmulator({"projects": [10000]}, clock=clock, security_token=token) as emu:
        run_id = waiting(emu)
        credentials = Credentials("test-ak", Secret("wrong-secret-4711"), Secret(token))
        client, project = client_at(host(emu), clock, credentials)
        for write in WRITES.values():
            with pytest.raises(DataWorksError) as caught:
                write(client, project, run_id)
            # The gateway's answer quotes its string-to-sign, token included.
            assert caught.value.code in ("SignatureDoesNotMatch", "InvalidAccessKeySecret")
            for secret in ("secret-part", "wrong-secret-4711"):
                assert secret not in str(caught.value) and secret not in repr(caught.value)
            assert not ambiguous(caught.value)


def test_the_old_surface_gets_the_old_names(clock: ManualClock) -> None:
    with DataWorksEmulator({"projects": [10000]}, clock=clock, old_api_only=True) as emu:
        first, second = waiting(emu), waiting(emu)
        client, project = client_at(host(emu), clock)
        assert client.exec_stage(project, first, "CHECK")  # the new name refused, then the old one
        assert client.legacy_api
        assert client.abolish_run(project, second)  # straight to the old name
        assert [(c.action, c.http_status) for c in emu.calls] == [
            (EXEC, 404),
            ("ExecDeploymentStage", 200),
            ("AbolishDeployment", 200),
        ]
        assert emu.calls[1].form == {"Id": first, "Code": "CHECK"}
        assert stage_statuses(client, project, second)[0] == "canceled"
        assert client.calls == 4


def test_writes_share_the_limit_and_the_budget(emulator: DataWorksEmulator, clock: ManualClock) -> None:
    run_id = waiting(emulator)
    client, project = client_at(host(emulator), clock, max_qps=1.0)
    client.get_run(project, run_id)
    client.exec_stage(project, run_id, "CHECK")
    assert clock.slept == [1.0]  # one a second, reads and writes together
    client.call_limit = client.calls
    with pytest.raises(DataWorksError) as caught:
        client.abolish_run(project, run_id)
    assert "budget" in str(caught.value) and not ambiguous(caught.value)
    assert emulator.call_count(ABOLISH) == 0 and client.calls == 2


def test_a_write_after_the_deadline_is_not_sent(emulator: DataWorksEmulator, clock: ManualClock) -> None:
    client, project = client_at(host(emulator), clock)
    with pytest.raises(DataWorksError) as caught:
        client.exec_stage(project, waiting(emulator), "CHECK", deadline=clock.now)
    assert "deadline" in str(caught.value) and not ambiguous(caught.value)
    assert emulator.call_count() == 0 == client.calls


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (DataWorksError("x", code="SDK.NoAnswer", retryable=True), True),
        (DataWorksError("x", code="SDK.HttpError", retryable=True), True),
        (DataWorksError("x", code="SDK.UnexpectedError"), True),
        (DataWorksError("x", code="InternalError.System", http_status=500), True),
        (DataWorksError("x", code="Throttling.System", http_status=503), False),
        (DataWorksError("x", code="SDK.NotConnected", retryable=True), False),
        (DataWorksError("x", code="Invalid.Pipeline.StageStatus", http_status=400), False),
        (DataWorksError("x", code="Forbidden.Access", http_status=403), False),
        (DataWorksError("x not sent: the tick's deadline has passed", retryable=True), False),
    ],
)
def test_ambiguous(error: DataWorksError, expected: bool) -> None:
    assert ambiguous(error) is expected

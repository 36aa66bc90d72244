"""The DataWorks emulator's write actions (ExecPipelineRunStage, AbolishPipelineRun): their stage state
machine on a manual clock, how they meet a scripted timeline, and the gateway's checks of a POST.

Driven by the real aliyun-python-sdk-core (POST, form body), and by raw httpx with an independent
signer for what the SDK would not send (a tampered body).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from aliyunsdkcore.acs_exception.exceptions import ServerException
from aliyunsdkcore.client import AcsClient
from aliyunsdkcore.request import CommonRequest

from emulators.dataworks import DataWorksEmulator
from tests.test_emulator_dataworks import common, signed_query

START = 1_795_680_000.0  # 2026-11-26T08:00:00Z
STAGES = [
    {"code": "BUILD", "step": 1, "type": "Build"},
    {"code": "CHECK", "step": 2, "type": "Check"},
    {"code": "DEPLOY", "step": 3, "type": "Deploy"},
]
EXEC, ABOLISH = "ExecPipelineRunStage", "AbolishPipelineRun"


@pytest.fixture(autouse=True)
def _no_env_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ALIYUN_ACCESS_KEY_ID", "ALIYUN_ACCESS_KEY_SECRET"):
        monkeypatch.delenv(name, raising=False)


def started(**options: Any) -> DataWorksEmulator:
    emulator = DataWorksEmulator({"start": START, "projects": [10000]}, **options)
    emulator.set_time(START)
    emulator.start()
    return emulator


@pytest.fixture
def emu() -> Iterator[DataWorksEmulator]:
    emulator = started()
    yield emulator
    emulator.stop()


def waiting(emu: DataWorksEmulator) -> str:
    """A running run whose build succeeded: CHECK is its gate."""
    return emu.add_run(10000, status="Running", stages=STAGES, stage_statuses={"BUILD": "Success"})


def send(
    emu: DataWorksEmulator,
    action: str,
    query: dict[str, Any] | None = None,
    form: dict[str, Any] | None = None,
    method: str = "POST",
) -> dict[str, Any]:
    """One signed request through aliyun-python-sdk-core: `query` in the URL, `form` as the body."""
    request = CommonRequest()
    request.set_domain(emu.base_url.removeprefix("http://"))
    request.set_protocol_type("http")
    request.set_version("2024-05-18")
    request.set_action_name(action)
    request.set_method(method)
    for name, value in (query or {}).items():
        request.add_query_param(name, str(value))
    for name, value in (form or {}).items():
        request.add_body_params(name, str(value))
    client = AcsClient("test-ak", "test-secret", "cn-shanghai", auto_retry=False)
    body = json.loads(client.do_action_with_exception(request))
    assert isinstance(body, dict)
    return body


def execute(emu: DataWorksEmulator, run_id: str, code: str) -> dict[str, Any]:
    return send(emu, EXEC, {"ProjectId": 10000}, {"Id": run_id, "Code": code})


def abolish(emu: DataWorksEmulator, run_id: str, action: str = ABOLISH) -> dict[str, Any]:
    return send(emu, action, form={"Id": run_id, "ProjectId": 10000})


def refused(
    emu: DataWorksEmulator, action: str, query: dict[str, Any], form: dict[str, Any]
) -> ServerException:
    with pytest.raises(ServerException) as caught:
        send(emu, action, query, form)
    return caught.value


def statuses(emu: DataWorksEmulator, run_id: str, action: str = "GetPipelineRun") -> tuple[str, list[str]]:
    """The run's status and its stages' (in step order), as a read shows them now."""
    run = send(emu, action, {"ProjectId": 10000, "Id": run_id}, method="GET")["Pipeline"]
    return run["Status"], [stage["Status"] for stage in run["Stages"]]


def at(emu: DataWorksEmulator, offset: float) -> None:
    emu.set_time(emu.scenario.start + offset)


# -- ExecPipelineRunStage ----------------------------------------------------------------------------
def test_the_gate_runs_at_once_and_succeeds_after_advance_s(emu: DataWorksEmulator) -> None:
    run_id = waiting(emu)
    answer = execute(emu, run_id, "CHECK")
    assert answer["Success"] is True and answer["RequestId"]
    assert statuses(emu, run_id) == ("Running", ["Success", "Running", "Init"])
    at(emu, 4.9)
    assert statuses(emu, run_id) == ("Running", ["Success", "Running", "Init"])
    at(emu, 5.0)
    # Not the last stage: the run goes on, and the next stage waits in its turn.
    assert statuses(emu, run_id) == ("Running", ["Success", "Success", "Init"])
    execute(emu, run_id, "DEPLOY")
    assert statuses(emu, run_id) == ("Running", ["Success", "Success", "Running"])
    at(emu, 10.0)
    assert statuses(emu, run_id) == ("Success", ["Success", "Success", "Success"])


def test_advance_s_is_the_constructors_choice() -> None:
    emu = started(advance_s=60.0)
    try:
        run_id = waiting(emu)
        execute(emu, run_id, "CHECK")
        at(emu, 59.0)
        assert statuses(emu, run_id)[1][1] == "Running"
        at(emu, 60.0)
        assert statuses(emu, run_id)[1][1] == "Success"
    finally:
        emu.stop()


def test_the_modify_time_moves_with_the_stage(emu: DataWorksEmulator) -> None:
    run_id = waiting(emu)
    at(emu, 30)
    execute(emu, run_id, "CHECK")
    read = send(emu, "GetPipelineRun", {"ProjectId": 10000, "Id": run_id}, method="GET")["Pipeline"]
    assert read["ModifyTime"] == round((START + 30) * 1000)


@pytest.mark.parametrize(
    ("setup", "code", "error", "status"),
    [
        ({}, "DEPLOY", "Invalid.Pipeline.StageStatus", 400),  # after the gate
        ({}, "BUILD", "Invalid.Pipeline.StageStatus", 400),  # already succeeded
        ({"stages": {"CHECK": "Running"}}, "CHECK", "Invalid.Pipeline.StageStatus", 400),  # running
        ({"stages": {"CHECK": "Running"}}, "DEPLOY", "Invalid.Pipeline.StageStatus", 400),  # one runs before
        ({"status": "Init"}, "CHECK", "Invalid.Pipeline.StageStatus", 400),  # the run has not started
        ({"status": "Fail"}, "CHECK", "Invalid.Pipeline.Status", 400),  # the run has ended
        ({"status": "Termination"}, "CHECK", "Invalid.Pipeline.Status", 400),
        ({}, "NO_SUCH_STAGE", "InvalidParameter", 400),
    ],
)
def test_only_the_gate_can_be_executed(
    emu: DataWorksEmulator, setup: dict[str, Any], code: str, error: str, status: int
) -> None:
    run_id = waiting(emu)
    if setup:
        emu.set_run_status(run_id, setup.get("status"), stages=setup.get("stages"))
    before = statuses(emu, run_id)
    caught = refused(emu, EXEC, {"ProjectId": 10000}, {"Id": run_id, "Code": code})
    assert (caught.get_error_code(), caught.get_http_status()) == (error, status)
    assert run_id in caught.get_error_msg()
    at(emu, 100)  # nothing was set in motion
    assert statuses(emu, run_id) == before


def test_a_stage_is_executed_once(emu: DataWorksEmulator) -> None:
    run_id = waiting(emu)
    execute(emu, run_id, "CHECK")
    again = refused(emu, EXEC, {"ProjectId": 10000}, {"Id": run_id, "Code": "CHECK"})  # while it runs
    at(emu, 5)
    after = refused(emu, EXEC, {"ProjectId": 10000}, {"Id": run_id, "Code": "CHECK"})  # once it succeeded
    assert {again.get_error_code(), after.get_error_code()} == {"Invalid.Pipeline.StageStatus"}
    assert "it is Running" in again.get_error_msg() and "it is Success" in after.get_error_msg()
    assert [c.http_status for c in emu.calls if c.action == EXEC] == [200, 400, 400]
    assert emu.call_count(EXEC) == 3


@pytest.mark.parametrize(
    ("query", "form", "code", "status"),
    [
        ({"ProjectId": 10000}, {"Id": "no-such-run", "Code": "CHECK"}, "Invalid.Pipeline.NotFound", 404),
        ({"ProjectId": 10000}, {"Id": "{run}"}, "MissingParameter", 400),
        ({"ProjectId": 10000}, {"Code": "CHECK"}, "MissingParameter", 400),
        ({}, {"Id": "{run}", "Code": "CHECK"}, "MissingParameter", 400),
        ({"ProjectId": 20000}, {"Id": "{run}", "Code": "CHECK"}, "Forbidden.Access", 403),
    ],
)
def test_exec_refuses_an_unknown_run_and_missing_parameters(
    emu: DataWorksEmulator, query: dict[str, Any], form: dict[str, str], code: str, status: int
) -> None:
    run_id = waiting(emu)
    form = {name: value.format(run=run_id) for name, value in form.items()}
    caught = refused(emu, EXEC, query, form)
    assert (caught.get_error_code(), caught.get_http_status()) == (code, status)
    assert statuses(emu, run_id) == ("Running", ["Success", "Init", "Init"])


def test_parameters_are_read_from_the_query_or_the_body(emu: DataWorksEmulator) -> None:
    first, second = waiting(emu), waiting(emu)
    send(emu, EXEC, {"ProjectId": 10000, "Id": first, "Code": "CHECK"})  # all in the query
    send(emu, EXEC, form={"ProjectId": 10000, "Id": second, "Code": "CHECK"})  # all in the body
    assert statuses(emu, first)[1] == statuses(emu, second)[1] == ["Success", "Running", "Init"]
    assert [(c.method, c.form) for c in emu.calls if c.action == EXEC] == [
        ("POST", {}),
        ("POST", {"ProjectId": "10000", "Id": second, "Code": "CHECK"}),
    ]


# -- AbolishPipelineRun ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("spelling", "canceled"), [("sdk", "Cancel"), ("doc", "Canceled")])
def test_abolish_cancels_the_run_and_what_had_not_ended(spelling: str, canceled: str) -> None:
    emu = started(status_spelling=spelling)
    try:
        run_id = emu.add_run(
            10000, status="Running", stages=STAGES, stage_statuses={"BUILD": "Success", "CHECK": "Running"}
        )
        assert abolish(emu, run_id)["Success"] is True
        assert statuses(emu, run_id) == (canceled, ["Success", canceled, canceled])
        at(emu, 3600)
        assert statuses(emu, run_id) == (canceled, ["Success", canceled, canceled])
        [call] = [c for c in emu.calls if c.action == ABOLISH]
        assert (call.method, call.form) == ("POST", {"Id": run_id, "ProjectId": "10000"})
    finally:
        emu.stop()


def test_abolish_while_a_stage_advances_stops_it(emu: DataWorksEmulator) -> None:
    run_id = waiting(emu)
    execute(emu, run_id, "CHECK")
    at(emu, 2)
    abolish(emu, run_id)
    at(emu, 10)  # the stage's success, due at 5 s, never comes
    assert statuses(emu, run_id) == ("Cancel", ["Success", "Cancel", "Cancel"])


@pytest.mark.parametrize("ended", ["Success", "Fail", "Termination", "Cancel"])
def test_an_ended_run_cannot_be_abolished(emu: DataWorksEmulator, ended: str) -> None:
    run_id = emu.add_run(10000, status=ended, stages=STAGES)
    before = statuses(emu, run_id)
    caught = refused(emu, ABOLISH, {}, {"Id": run_id, "ProjectId": 10000})
    assert (caught.get_error_code(), caught.get_http_status()) == ("Invalid.Pipeline.Status", 400)
    assert statuses(emu, run_id) == before


def test_abolish_twice_is_refused_the_second_time(emu: DataWorksEmulator) -> None:
    run_id = waiting(emu)
    abolish(emu, run_id)
    caught = refused(emu, ABOLISH, {}, {"Id": run_id, "ProjectId": 10000})
    assert caught.get_error_code() == "Invalid.Pipeline.Status"
    unknown = refused(emu, ABOLISH, {}, {"Id": "no-such-run", "ProjectId": 10000})
    assert (unknown.get_error_code(), unknown.get_http_status()) == ("Invalid.Pipeline.NotFound", 404)
    assert emu.call_count(ABOLISH) == 3


# -- with a scripted timeline ------------------------------------------------------------------------------
SCRIPTED: dict[str, Any] = {
    "start": START,
    "projects": [10000],
    "runs": [
        {
            "project": 10000,
            "id": "scripted-run",
            "stages": STAGES,
            "items": [{"name": "ods_user"}],
            "timeline": [
                {"at": 0, "status": "Running", "stages": {"BUILD": "Success"}},
                # someone advances CHECK in the console later; DEPLOY then runs on its own
                {"at": 100, "stages": {"CHECK": "Running"}},
                {
                    "at": 150,
                    "stages": {"CHECK": "Success", "DEPLOY": "Running"},
                    "items": {"ods_user": "Running"},
                },
                {
                    "at": 200,
                    "status": "Success",
                    "stages": {"DEPLOY": "Success"},
                    "items": {"ods_user": "Success"},
                },
            ],
        }
    ],
}


@pytest.fixture
def scripted() -> Iterator[DataWorksEmulator]:
    emulator = DataWorksEmulator(SCRIPTED)
    emulator.set_time(START + 10)
    with emulator:
        yield emulator


def test_a_script_does_not_undo_an_executed_stage(scripted: DataWorksEmulator) -> None:
    execute(scripted, "scripted-run", "CHECK")
    at(scripted, 15)
    assert statuses(scripted, "scripted-run") == ("Running", ["Success", "Success", "Init"])
    at(scripted, 100)  # the script's "CHECK Running" is superseded: a stage does not run twice
    assert statuses(scripted, "scripted-run") == ("Running", ["Success", "Success", "Init"])
    at(scripted, 150)  # what the script planned for the later stage still happens
    assert statuses(scripted, "scripted-run") == ("Running", ["Success", "Success", "Running"])
    at(scripted, 200)
    assert statuses(scripted, "scripted-run") == ("Success", ["Success", "Success", "Success"])


def test_a_script_does_not_revive_an_abolished_run(scripted: DataWorksEmulator) -> None:
    abolish(scripted, "scripted-run")
    for offset in (100, 150, 200, 300):
        at(scripted, offset)
        assert statuses(scripted, "scripted-run") == ("Cancel", ["Success", "Cancel", "Cancel"])
    items = send(
        scripted, "ListPipelineRunItems", {"ProjectId": 10000, "PipelineRunId": "scripted-run"}, method="GET"
    )
    assert [i["Status"] for i in items["PagingInfo"]["PipelineRunItems"]] == ["Cancel"]


def test_changes_made_after_an_action_apply(scripted: DataWorksEmulator) -> None:
    execute(scripted, "scripted-run", "CHECK")
    at(scripted, 20)
    scripted.set_run_status("scripted-run", "Fail", stages={"CHECK": "Fail"})  # a test's own change
    assert statuses(scripted, "scripted-run") == ("Fail", ["Success", "Fail", "Init"])


def test_executing_the_last_stage_ends_the_run_whatever_the_script_said(scripted: DataWorksEmulator) -> None:
    scripted.set_run_status("scripted-run", stages={"CHECK": "Success"})
    execute(scripted, "scripted-run", "DEPLOY")
    at(scripted, 15)
    assert statuses(scripted, "scripted-run") == ("Success", ["Success", "Success", "Success"])
    at(scripted, 150)  # the script's "DEPLOY Running" would run the last stage again
    assert statuses(scripted, "scripted-run") == ("Success", ["Success", "Success", "Success"])


# -- the gateway: POST only, old names, the signature covers the body ------------------------------------
@pytest.mark.parametrize("action", [EXEC, ABOLISH])
def test_a_get_of_a_write_is_refused(emu: DataWorksEmulator, action: str) -> None:
    run_id = waiting(emu)
    with pytest.raises(ServerException) as caught:
        send(emu, action, {"ProjectId": 10000, "Id": run_id, "Code": "CHECK"}, method="GET")
    assert (caught.value.get_error_code(), caught.value.get_http_status()) == ("InvalidAction.NotFound", 404)
    assert statuses(emu, run_id) == ("Running", ["Success", "Init", "Init"])
    assert emu.calls[0].method == "GET" and emu.call_count(action) == 1


def test_the_old_names_on_the_old_surface() -> None:
    emu = started(old_api_only=True)
    try:
        run_id = waiting(emu)
        caught = refused(emu, EXEC, {"ProjectId": 10000}, {"Id": run_id, "Code": "CHECK"})
        assert caught.get_error_code() == "InvalidAction.NotFound"
        send(emu, "ExecDeploymentStage", {"ProjectId": 10000}, {"Id": run_id, "Code": "CHECK"})
        assert statuses(emu, run_id, "GetDeployment") == ("RUNNING", ["SUCCESS", "RUNNING", "INIT"])
        abolish(emu, run_id, "AbolishDeployment")
        assert statuses(emu, run_id, "GetDeployment") == ("CANCEL", ["SUCCESS", "CANCEL", "CANCEL"])
        assert emu.call_count(ABOLISH) == 0 and emu.call_count("AbolishDeployment") == 1
    finally:
        emu.stop()


def test_the_new_surface_has_the_old_names_too(emu: DataWorksEmulator) -> None:
    run_id = waiting(emu)
    send(emu, "ExecDeploymentStage", {"ProjectId": 10000}, {"Id": run_id, "Code": "CHECK"})
    assert statuses(emu, run_id)[1] == ["Success", "Running", "Init"]


# An independent V1 signer, written from the signing documentation: query and form together.
def signed_post(
    emu: DataWorksEmulator, form: dict[str, str], sent_form: dict[str, str] | None = None
) -> httpx.Response:
    """An HMAC-SHA1 POST signed over the query and `form`, sending `sent_form` (a tampered body) if given."""
    query = common(EXEC, ProjectId="10000")
    query["Signature"] = signed_query({**query, **form}, method="POST")["Signature"]
    return httpx.post(emu.base_url + "/", params=query, data=sent_form or form)


def test_the_signature_covers_the_form_body(emu: DataWorksEmulator) -> None:
    run_id, other = waiting(emu), waiting(emu)
    tampered = signed_post(emu, {"Id": run_id, "Code": "CHECK"}, {"Id": other, "Code": "CHECK"})
    assert (tampered.status_code, tampered.json()["Code"]) == (400, "SignatureDoesNotMatch")
    assert statuses(emu, other)[1] == ["Success", "Init", "Init"]
    honest = signed_post(emu, {"Id": run_id, "Code": "CHECK"})
    assert honest.status_code == 200, honest.text
    assert statuses(emu, run_id)[1] == ["Success", "Running", "Init"]


def test_acs3_the_body_hash_covers_the_form(emu: DataWorksEmulator) -> None:
    run_id, other = waiting(emu), waiting(emu)
    signed_body = f"Id={run_id}&Code=CHECK".encode()
    headers = {
        "host": emu.base_url.removeprefix("http://"),
        "content-type": "application/x-www-form-urlencoded",
        "x-acs-action": EXEC,
        "x-acs-version": "2024-05-18",
        "x-acs-date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "x-acs-signature-nonce": uuid.uuid4().hex,
        "x-acs-content-sha256": hashlib.sha256(signed_body).hexdigest(),
    }
    names = sorted(headers)
    canonical = "\n".join(
        [
            "POST",
            "/",
            "ProjectId=10000",
            "".join(f"{name}:{headers[name]}\n" for name in names),
            ";".join(names),
            headers["x-acs-content-sha256"],
        ]
    )
    to_sign = "ACS3-HMAC-SHA256\n" + hashlib.sha256(canonical.encode()).hexdigest()
    signature = hmac.new(b"test-secret", to_sign.encode(), hashlib.sha256).hexdigest()
    headers["Authorization"] = (
        f"ACS3-HMAC-SHA256 Credential=test-ak,SignedHeaders={';'.join(names)},Signature={signature}"
    )
    url = emu.base_url + "/?ProjectId=10000"
    tampered = httpx.post(url, headers=headers, content=f"Id={other}&Code=CHECK".encode())
    assert (tampered.status_code, tampered.json()["Code"]) == (400, "SignatureDoesNotMatch")
    honest = httpx.post(url, headers=headers, content=signed_body)
    assert honest.status_code == 200, honest.text
    assert [statuses(emu, r)[1][1] for r in (run_id, other)] == ["Running", "Init"]


def test_injected_faults_and_throttling_reach_the_writes(emu: DataWorksEmulator) -> None:
    run_id = waiting(emu)
    emu.inject(EXEC, "Throttling.User")
    caught = refused(emu, EXEC, {"ProjectId": 10000}, {"Id": run_id, "Code": "CHECK"})
    assert (caught.get_error_code(), caught.get_http_status()) == ("Throttling.User", 400)
    assert statuses(emu, run_id)[1][1] == "Init"  # a refused call changes nothing
    execute(emu, run_id, "CHECK")
    assert [c.http_status for c in emu.calls if c.action == EXEC] == [400, 200]

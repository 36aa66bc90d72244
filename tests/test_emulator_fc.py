"""The Function Compute emulator, judged by the real `fc2` client (aliyun-fc2, which no one here wrote).

fc2 2.5.2 speaks the 2016-08-15 API only, but nothing in its signer depends on the path: with
`api_version = "2023-03-30"`, its own `_build_common_headers` (Date, Content-Type, the `x-fc-*`
headers, the signature) and `_do_request` (send, raise `FcError` for a status >= 400) send an FC 3.0
invoke unchanged, as the fc3 deployment component drives the Node fc2 client. No fc2 method is patched.
"""

from __future__ import annotations

import base64
import email.utils
import json
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fc2
import pytest
from fc2.fc_exceptions import FcError

from emulators.fc import FcCredentials, FcEmulator, FcFunction, load_handler

ROOT = Path(__file__).resolve().parents[1]
EVENTS = ROOT / "tests" / "events"


def echo(event: bytes, context: Any) -> dict[str, Any]:
    """A handler that answers with what it was given."""
    return {
        "event": event.decode(),
        "request_id": context.request_id,
        "function": [context.function.name, context.function.timeout, context.function.memory_size],
        "credentials": [context.credentials.access_key_id, context.credentials.security_token],
        "qualifier": context.service.qualifier,
        "region": context.region,
        "account_id": context.account_id,
    }


def boom(event: bytes, context: Any) -> None:
    """A handler that raises."""
    raise ValueError("something is wrong")


@pytest.fixture
def fc() -> Iterator[FcEmulator]:
    functions = {
        "echo": FcFunction(echo, timeout=300, qualifiers=frozenset({"LATEST", "prod"})),
        "boom": boom,
    }
    with FcEmulator(functions) as emulator:
        yield emulator


def client(emulator: FcEmulator, secret: str = "test-secret", token: str = "") -> fc2.Client:
    """fc2's client for the emulator, on the FC 3.0 API version."""
    made = fc2.Client(
        endpoint=emulator.base_url, accessKeyID="test-ak", accessKeySecret=secret, securityToken=token
    )
    made.api_version = "2023-03-30"
    return made


def invoke(
    api: fc2.Client,
    function: str,
    payload: bytes = b"",
    *,
    kind: str = "Sync",
    qualifier: str | None = None,
    headers: dict[str, str] | None = None,
) -> Any:
    """POST /2023-03-30/functions/{function}/invocations, signed and sent by fc2's own code."""
    path = f"/{api.api_version}/functions/{function}/invocations"
    query = {"qualifier": qualifier} if qualifier else None
    signed = api._build_common_headers("POST", path, {"x-fc-invocation-type": kind, **(headers or {})}, query)
    return api._do_request("POST", path, signed, params=query, body=payload)


def test_a_sync_invoke_signed_by_fc2_runs_the_handler_with_an_fc_context(fc: FcEmulator) -> None:
    response = invoke(client(fc), "echo", b'{"dry_run": true}')
    assert response.status_code == 200
    request_id = response.headers["x-fc-request-id"]
    assert "x-fc-error-type" not in response.headers
    assert response.json() == {
        "event": '{"dry_run": true}',
        "request_id": request_id,
        "function": ["echo", 300, 512],
        "credentials": ["test-ak", ""],
        "qualifier": "LATEST",
        "region": "cn-shanghai",
        "account_id": "1234567890123456",
    }
    [run] = fc.invocations
    assert (run.function, run.type, run.event, run.attempt, run.request_id) == (
        "echo",
        "Sync",
        b'{"dry_run": true}',
        1,
        request_id,
    )
    assert not run.failed and run.result["event"] == '{"dry_run": true}'


def test_the_qualifier_rides_in_the_signed_query(fc: FcEmulator) -> None:
    response = invoke(client(fc), "echo", b"{}", qualifier="prod")
    assert response.json()["qualifier"] == "prod"
    with pytest.raises(FcError) as refused:
        invoke(client(fc), "echo", b"{}", qualifier="staging")
    assert refused.value.status_code == 404
    assert json.loads(refused.value.message)["Code"] == "AliasNotFound"


def test_a_query_left_out_of_the_signature_is_refused(fc: FcEmulator) -> None:
    api = client(fc)
    path = f"/{api.api_version}/functions/echo/invocations"
    signed = api._build_common_headers("POST", path, {"x-fc-invocation-type": "Sync"})  # no query signed
    with pytest.raises(FcError) as refused:
        api._do_request("POST", path, signed, params={"qualifier": "prod"}, body=b"{}")
    assert refused.value.status_code == 403
    assert fc.refused[-1].string_to_sign is not None and fc.refused[-1].string_to_sign.endswith(
        "/invocations\nqualifier=prod"
    )


@pytest.mark.parametrize("shape", ["fc3", "fc2"])
def test_a_wrong_secret_is_refused_with_fcs_error_body(shape: str) -> None:
    with FcEmulator({"echo": echo}, error_shape=shape) as emulator:
        with pytest.raises(FcError) as refused:
            invoke(client(emulator, secret="not-the-secret"), "echo", b"{}")
        error = refused.value
        body = json.loads(error.message)
        assert error.status_code == 403 and error.request_id.startswith("1-")
        if shape == "fc3":
            assert body["Code"] == "SignatureNotMatch" and body["RequestId"] == error.request_id
            assert body["Message"].startswith("The request signature we calculated does not match")
            assert error.err_code == ""  # fc2 reads ErrorCode only: an FC 3.0 body leaves it empty
        else:
            assert body["ErrorCode"] == error.err_code == "SignatureNotMatch"
            assert body["ErrorMessage"].startswith("The request signature we calculated does not match")
        assert emulator.invocations == []
        assert emulator.refused[0].code == "SignatureNotMatch"


def test_an_unknown_access_key_and_a_missing_signature_are_refused(fc: FcEmulator) -> None:
    api = fc2.Client(endpoint=fc.base_url, accessKeyID="other-ak", accessKeySecret="test-secret")
    api.api_version = "2023-03-30"
    with pytest.raises(FcError) as refused:
        invoke(api, "echo")
    assert refused.value.status_code == 403
    assert json.loads(refused.value.message)["Code"] == "InvalidAccessKeyID"
    path = "/2023-03-30/functions/echo/invocations"
    unsigned = {"date": email.utils.formatdate(usegmt=True), "content-type": "application/json"}
    with pytest.raises(FcError) as refused:
        api._do_request("POST", path, unsigned, body=b"{}")
    assert refused.value.status_code == 403


@pytest.mark.parametrize("skew_s", [-16 * 60, 16 * 60])
def test_a_date_15_minutes_or_more_off_is_refused(skew_s: int) -> None:
    with FcEmulator({"echo": echo}) as emulator:
        api = client(emulator)
        date = email.utils.formatdate(emulator.now() + skew_s, usegmt=True)
        with pytest.raises(FcError) as refused:
            invoke(api, "echo", b"{}", headers={"date": date})  # fc2 signs the Date it is given
        assert refused.value.status_code == 403
        assert json.loads(refused.value.message)["Code"] == "RequestTimeTooSkewed"
        emulator.advance(skew_s)  # now the emulator's clock agrees with that Date
        assert invoke(api, "echo", b"{}", headers={"date": date}).status_code == 200


def test_an_sts_token_is_signed_and_checked() -> None:
    with FcEmulator({"echo": echo}, security_tokens=["sts-token-1"]) as emulator:
        assert invoke(client(emulator, token="sts-token-1"), "echo", b"{}").status_code == 200
        for token in ("", "sts-token-2"):
            with pytest.raises(FcError) as refused:
                invoke(client(emulator, token=token), "echo", b"{}")
            assert json.loads(refused.value.message)["Code"] == "InvalidSecurityToken"
    with FcEmulator({"echo": echo}) as emulator, pytest.raises(FcError) as refused:
        invoke(client(emulator, token="sts-token-1"), "echo", b"{}")
    assert json.loads(refused.value.message)["Code"] == "InvalidSecurityToken"


def test_an_unknown_function_and_fc2s_own_2016_path_are_not_found(fc: FcEmulator) -> None:
    with pytest.raises(FcError) as refused:
        invoke(client(fc), "nope", b"{}")
    assert refused.value.status_code == 404
    assert json.loads(refused.value.message) == {
        "Code": "FunctionNotFound",
        "Message": "function not found",
        "RequestId": refused.value.request_id,
    }
    legacy = fc2.Client(endpoint=fc.base_url, accessKeyID="test-ak", accessKeySecret="test-secret")
    with pytest.raises(FcError) as refused:
        legacy.invoke_function(
            "dwnotify", "echo", payload=b"{}"
        )  # /2016-08-15/services/...: no service in FC 3.0
    assert refused.value.status_code == 400
    assert json.loads(refused.value.message)["Code"] == "PathNotSupported"


def test_a_raising_handler_answers_fcs_unhandled_error(fc: FcEmulator) -> None:
    response = invoke(client(fc), "boom", b"{}")
    assert response.status_code == 200
    assert response.headers["x-fc-error-type"] == "UnhandledInvocationError"
    body = response.json()
    assert body["errorMessage"] == "something is wrong" and body["errorType"] == "ValueError"
    assert any("in boom" in frame for frame in body["stackTrace"][-1])
    [run] = fc.invocations
    assert run.failed and run.error_type == "UnhandledInvocationError"


def test_tail_logs_come_back_base64_in_x_fc_log_result() -> None:
    def chatty(event: bytes, context: Any) -> str:
        logging.getLogger("chatty").warning("tick for %s", context.request_id)
        return "done"

    with FcEmulator({"chatty": chatty}) as emulator:
        response = invoke(client(emulator), "chatty", b"", headers={"x-fc-log-type": "Tail"})
    assert response.content == b"done"
    log = base64.b64decode(response.headers["x-fc-log-result"]).decode()
    assert f"tick for {response.headers['x-fc-request-id']}" in log


def test_fail_next_makes_the_next_runs_raise(fc: FcEmulator) -> None:
    fc.fail_next("echo", times=1)
    first = invoke(client(fc), "echo", b"{}")
    assert first.headers["x-fc-error-type"] == "UnhandledInvocationError"
    assert "fail_next" in first.json()["errorMessage"]
    assert "x-fc-error-type" not in invoke(client(fc), "echo", b"{}").headers


def test_the_products_handler_runs_in_the_emulator_and_answers_its_config_error() -> None:
    handler = load_handler(str(ROOT / "functions" / "index.py") + ":handler")
    event = (EVENTS / "timer-bad-payload.json").read_bytes()
    with FcEmulator({"dwnotify": handler}, credentials=FcCredentials("test-ak", "test-secret")) as emulator:
        response = invoke(client(emulator), "dwnotify", event)
    assert response.status_code == 200 and "x-fc-error-type" not in response.headers
    answer = response.json()
    assert answer["error"] == "config" and answer["request_id"] == response.headers["x-fc-request-id"]
    assert any("event.payload.dryrun" in problem for problem in answer["problems"])


def test_the_snapshot_lists_runs_and_refusals(fc: FcEmulator) -> None:
    invoke(client(fc), "echo", b"{}")
    with pytest.raises(FcError):
        invoke(client(fc, secret="wrong"), "echo", b"{}")
    snapshot = fc.snapshot()
    assert snapshot["service"] == "fc" and snapshot["functions"] == ["boom", "echo"]
    assert [(run["function"], run["event"]) for run in snapshot["invocations"]] == [("echo", "{}")]
    assert [refusal["code"] for refusal in snapshot["refused"]] == ["SignatureNotMatch"]
    json.dumps(snapshot)


def test_cli_serves_a_handler_imported_by_path() -> None:
    spec = "dwnotify=functions/index.py:handler"
    proc = subprocess.Popen(
        [sys.executable, "-m", "emulators", "fc", "--function", spec],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        api = fc2.Client(endpoint=url, accessKeyID="test-ak", accessKeySecret="test-secret")
        api.api_version = "2023-03-30"
        response = invoke(api, "dwnotify", (EVENTS / "timer-bad-payload.json").read_bytes())
        assert response.json()["error"] == "config"
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def test_an_async_invoke_answers_202_at_once_and_runs_in_the_background() -> None:
    release = threading.Event()

    def slow(event: bytes, context: Any) -> str:
        assert release.wait(10)
        return "late"

    with FcEmulator({"slow": slow}) as emulator:
        response = invoke(client(emulator), "slow", b'{"n": 1}', kind="Async")
        assert response.status_code == 202 and response.content == b""
        assert emulator.invocations == [] and not emulator.wait_idle(0.05)
        release.set()
        assert emulator.wait_idle(10)
    [run] = emulator.invocations
    assert (run.type, run.event, run.result, run.attempt) == ("Async", b'{"n": 1}', "late", 1)
    assert run.request_id == response.headers["x-fc-request-id"]


def test_a_raising_async_handler_is_retried_three_times(fc: FcEmulator) -> None:
    response = invoke(client(fc), "boom", b"{}", kind="Async")
    assert fc.wait_idle(10)
    runs = fc.invocations
    assert [run.attempt for run in runs] == [1, 2, 3, 4]  # the first run and maxAsyncRetryAttempts=3 retries
    assert {run.request_id for run in runs} == {response.headers["x-fc-request-id"]}
    assert all(run.error_type == "UnhandledInvocationError" for run in runs)


def test_an_async_run_that_succeeds_stops_the_retries(fc: FcEmulator) -> None:
    fc.fail_next("echo", times=2)
    invoke(client(fc), "echo", b"{}", kind="Async")
    assert fc.wait_idle(10)
    assert [(run.attempt, run.failed) for run in fc.invocations] == [(1, True), (2, True), (3, False)]


def test_a_returned_error_is_a_success_to_fc_unless_told_otherwise() -> None:
    def soft(event: bytes, context: Any) -> dict[str, str]:
        return {"error": "config"}

    with FcEmulator({"soft": soft}) as emulator:
        invoke(client(emulator), "soft", b"{}", kind="Async")
        assert emulator.wait_idle(10)
        assert [run.attempt for run in emulator.invocations] == [1]
    judged = FcEmulator({"soft": soft}, retry_result=lambda result: "error" in result, async_retries=2)
    with judged:
        invoke(client(judged), "soft", b"{}", kind="Async")
        assert judged.wait_idle(10)
        runs = judged.invocations
        response = invoke(client(judged), "soft", b"{}")  # sync runs are never judged nor retried
    assert [run.attempt for run in runs] == [1, 2, 3]
    assert {run.error_type for run in runs} == {"HandledInvocationError"}
    assert response.json() == {"error": "config"} and "x-fc-error-type" not in response.headers


def test_a_handler_fans_out_async_invokes_through_fc2() -> None:
    emulator = FcEmulator()

    def fan_out(event: bytes, context: Any) -> dict[str, Any]:
        api = fc2.Client(
            endpoint=emulator.base_url,
            accessKeyID=context.credentials.access_key_id,
            accessKeySecret=context.credentials.access_key_secret,
        )
        api.api_version = "2023-03-30"
        ids = []
        for shard in json.loads(event)["shards"]:
            answer = invoke(api, "echo", json.dumps({"shard": shard}).encode(), kind="Async")
            ids.append(answer.headers["x-fc-request-id"])
        return {"started": ids}

    emulator.register("fan-out", fan_out)
    emulator.register("echo", echo)
    with emulator:
        started = invoke(client(emulator), "fan-out", b'{"shards": [0, 1, 2]}').json()["started"]
        assert emulator.wait_idle(10)
    children = [run for run in emulator.invocations if run.function == "echo"]
    assert sorted(run.request_id for run in children) == sorted(started)
    assert sorted(json.loads(run.event)["shard"] for run in children) == [0, 1, 2]
    assert all(run.type == "Async" and not run.failed for run in children)


def test_an_unknown_invocation_type_is_an_invalid_argument(fc: FcEmulator) -> None:
    with pytest.raises(FcError) as refused:
        invoke(client(fc), "echo", b"{}", kind="Later")
    assert refused.value.status_code == 400
    assert json.loads(refused.value.message)["Code"] == "InvalidArgument"

"""`dwnotify remote` and `dwnotify.remote`: error shapes, secrets kept out of logs, arguments, and the
command end to end against the FC 3.0 stand-in (fc2's real signer and sender on loopback)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dwnotify import cli, remote
from dwnotify.credentials import Credentials, Secret
from dwnotify.remote import RemoteError, endpoint_for, parse_error
from tests.conftest import ROOT
from tests.helpers import dwnotify

try:
    from emulators.fc import FcEmulator, FcFunction
except ImportError:  # another engineer's emulators/fc.py is not in the tree yet
    FcEmulator = FcFunction = None  # type: ignore[assignment,misc]

needs_emulator = pytest.mark.skipif(
    FcEmulator is None, reason="emulators/fc.py (FcEmulator) is not in the tree yet"
)

TOKEN = "sts-CAIS9Tq2c3RzLXRva2VuLWZvci10ZXN0cw"
WRONG_SECRET = "wrong-secret-7f3a9c2e1b"
RESULT = '{"runs_checked": 2, "events": 1, "messages_sent": 1}'


# --- the error in a failed answer, whatever its shape -------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "headers", "code", "message", "request_id"),
    [
        (  # FC 2.0 (and fc2's reading): ErrorCode / ErrorMessage, the id in a header
            404,
            b'{"ErrorCode": "FunctionNotFound", "ErrorMessage": "function not found"}',
            {"x-fc-request-id": "1-aa"},
            "FunctionNotFound",
            "function not found",
            "1-aa",
        ),
        (  # FC 3.0's Error struct: Code / Message / RequestId in the body
            403,
            b'{"Code": "SignatureNotMatch", "Message": "signature mismatch", "RequestId": "1-bb"}',
            {},
            "SignatureNotMatch",
            "signature mismatch",
            "1-bb",
        ),
        (  # FC 2.0's documented table: errorCode / errorMessage
            400,
            b'{"errorCode": "InvalidArgument", "errorMessage": "bad\\nqualifier"}',
            {"x-fc-request-id": "1-cc"},
            "InvalidArgument",
            "bad qualifier",
            "1-cc",
        ),
        (  # a function that raised: 200, x-fc-error-type, errorType / errorMessage
            200,
            b'{"errorMessage": "no config", "errorType": "ValueError", "stackTrace": []}',
            {"x-fc-request-id": "1-dd", "x-fc-error-type": "UnhandledInvocationError"},
            "ValueError",
            "no config",
            "1-dd",
        ),
        (  # a gateway's HTML page
            502,
            b"<html><body>502 Bad Gateway</body></html>",
            {"x-fc-request-id": "1-ee"},
            "HTTP 502",
            "<html><body>502 Bad Gateway</body></html>",
            "1-ee",
        ),
        (503, b"", {}, "HTTP 503", "HTTP 503", ""),  # nothing at all
        (500, b'["not", "an", "object"]', {}, "HTTP 500", '["not", "an", "object"]', ""),
        (  # a JSON object of no known shape: its text is the message
            429,
            b'{"reason": "slow down"}',
            {"x-fc-error-type": "Throttled"},
            "Throttled",
            '{"reason": "slow down"}',
            "",
        ),
    ],
)
def test_parse_error_reads_every_body_shape(
    status: int, body: bytes, headers: dict[str, str], code: str, message: str, request_id: str
) -> None:
    error = parse_error(status, body, headers)
    assert (error.code, error.message, error.request_id, error.http_status) == (
        code,
        message,
        request_id,
        status,
    )
    assert str(error) == f"{code}: {message} (request id {request_id or 'unknown'})"


def test_a_missing_request_id_says_unknown() -> None:
    error = RemoteError("boom", code="X")
    assert (error.request_id, str(error)) == ("", "X: boom (request id unknown)")


def test_an_error_message_is_one_line_and_bounded() -> None:
    error = parse_error(500, ("line\n" * 500).encode(), {})
    assert "\n" not in error.message
    assert len(error.message) <= 500


# --- where `remote` sends -----------------------------------------------------------------------------


def test_account_id_and_region_give_the_public_fc_endpoint() -> None:
    assert (
        endpoint_for("1234567890123456", "cn-shanghai")
        == "https://1234567890123456.cn-shanghai.fc.aliyuncs.com"
    )
    # the options are accepted before the subcommand and after it
    for argv in (
        ["remote", "--account-id", "1234567890123456", "tick", "--region", "cn-shanghai"],
        ["remote", "tick", "--account-id", "1234567890123456", "--region", "cn-shanghai"],
    ):
        args = cli._parser().parse_args(argv)
        assert cli.remote_endpoint(args) == "https://1234567890123456.cn-shanghai.fc.aliyuncs.com"
    args = cli._parser().parse_args(["remote", "tick", "--endpoint", "http://127.0.0.1:9000/"])
    assert cli.remote_endpoint(args) == "http://127.0.0.1:9000"


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["remote"], "required"),
        (["remote", "poke", "--endpoint", "http://h"], "invalid choice"),
        (["remote", "tick"], "give --endpoint, or --account-id and --region"),
        (
            ["remote", "tick", "--account-id", "1234567890123456"],
            "give --endpoint, or --account-id and --region",
        ),
        (["remote", "tick", "--endpoint", "http://h", "--region", "cn-shanghai"], "not both"),
        (["remote", "tick", "--account-id", "acct", "--region", "cn-shanghai"], "--account-id"),
        (["remote", "tick", "--endpoint", "ftp://h"], "--endpoint"),
        (["remote", "tick", "--endpoint", "http://h/path"], "--endpoint"),
        (["remote", "tick", "--endpoint", "http://h", "--function", "no/such"], "--function"),
        (["remote", "tick", "--endpoint", "http://h", "--qualifier", "a b"], "--qualifier"),
        (["remote", "track", "--endpoint", "http://h", "--id", "r1"], "--project"),
        (["remote", "track", "--endpoint", "http://h", "--project", "x", "--id", "r1"], "--project"),
        (["remote", "track", "--endpoint", "http://h", "--project", "10000"], "--id"),
        (["remote", "tick", "--endpoint", "http://h", "--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_argument_mistakes_exit_2_with_one_line(tmp_path: Path, argv: list[str], says: str) -> None:
    result = dwnotify(
        *argv,
        env={"ALIBABA_CLOUD_ACCESS_KEY_ID": "ak", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "sk"},
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("dwnotify remote") and ": error: " in lines[0] and says in lines[0], lines
    assert result.stdout == ""


def test_missing_credentials_exit_2_naming_the_variables(tmp_path: Path) -> None:
    result = dwnotify("remote", "tick", "--endpoint", "http://127.0.0.1:9", cwd=tmp_path)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("config error: environment: ALIBABA_CLOUD_ACCESS_KEY_ID and "), line


def test_importing_the_command_line_does_not_load_fc2() -> None:
    code = "import sys, dwnotify, dwnotify.cli, dwnotify.remote; print('fc2' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


# --- end to end: the command, fc2's signer and sender, the FC stand-in ---------------------------------


class Deployed:
    """The `dwnotify` function on the stand-in: the events it got and a gate async tests hold shut."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.gate = threading.Event()
        self.gate.set()

    def handler(self, event: bytes, context: Any) -> str:
        self.events.append(json.loads(event))
        self.gate.wait(10)
        return RESULT


@pytest.fixture
def deployed() -> Deployed:
    return Deployed()


@pytest.fixture
def fc(deployed: Deployed) -> Iterator[Any]:
    def broken(event: bytes, context: Any) -> str:
        raise ValueError("the config names no workspace")

    emulator = FcEmulator(
        {
            "dwnotify": FcFunction(deployed.handler, qualifiers=frozenset({"LATEST", "prod"})),
            "broken": broken,
        },
        security_tokens=[TOKEN],
    )
    with emulator:
        yield emulator


def env(secret: str = "test-secret") -> dict[str, str]:
    return {
        "ALIBABA_CLOUD_ACCESS_KEY_ID": "test-ak",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": secret,
        "ALIBABA_CLOUD_SECURITY_TOKEN": TOKEN,
    }


def run_remote(
    fc: Any, tmp_path: Path, *argv: str, secret: str = "test-secret"
) -> subprocess.CompletedProcess[str]:
    """`dwnotify remote ...` in a folder without a config file."""
    return dwnotify("remote", *argv, "--endpoint", fc.base_url, env=env(secret), cwd=tmp_path)


@needs_emulator
def test_tick_prints_the_functions_result_as_returned(fc: Any, deployed: Deployed, tmp_path: Path) -> None:
    result = run_remote(fc, tmp_path, "tick")
    assert result.returncode == 0, result.stderr
    assert result.stdout == RESULT + "\n"
    assert deployed.events == [{"action": "tick"}]
    (run,) = fc.invocations
    assert (run.function, run.qualifier, run.type) == ("dwnotify", "LATEST", "Sync")
    assert fc.refused == []


@needs_emulator
def test_track_sends_the_project_and_run_id(fc: Any, deployed: Deployed, tmp_path: Path) -> None:
    result = run_remote(fc, tmp_path, "track", "--project", "10000", "--id", "X")
    assert result.returncode == 0, result.stderr
    assert deployed.events == [{"action": "track", "project": 10000, "id": "X"}]


@needs_emulator
def test_a_qualifier_reaches_the_function_in_the_signed_query(fc: Any, tmp_path: Path) -> None:
    result = run_remote(fc, tmp_path, "tick", "--qualifier", "prod")
    assert result.returncode == 0, result.stderr
    assert [run.qualifier for run in fc.invocations] == ["prod"]
    assert fc.refused == []  # the stand-in checked the signature over the path and `qualifier=prod`


@needs_emulator
def test_async_returns_before_the_function_ends(fc: Any, deployed: Deployed, tmp_path: Path) -> None:
    deployed.gate.clear()
    try:
        result = run_remote(fc, tmp_path, "tick", "--async")
        assert result.returncode == 0, result.stderr
        answer = json.loads(result.stdout)
        assert answer["accepted"] is True and answer["request_id"].startswith("1-")
        assert fc.invocations == []  # still held in the handler
    finally:
        deployed.gate.set()
    assert fc.wait_idle()
    (run,) = fc.invocations
    assert (run.type, run.request_id) == ("Async", answer["request_id"])


@needs_emulator
def test_a_wrong_secret_fails_in_one_line_without_secrets(fc: Any, tmp_path: Path) -> None:
    result = dwnotify(
        "--log-level",
        "DEBUG",
        "remote",
        "tick",
        "--endpoint",
        fc.base_url,
        env=env(WRONG_SECRET),
        cwd=tmp_path,
    )
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: SignatureNotMatch: ") and "(request id 1-" in line, line
    assert result.stdout == ""
    for secret in (WRONG_SECRET, TOKEN, "test-ak:"):
        assert secret not in result.stderr


@needs_emulator
def test_a_function_that_raises_fails_with_its_error_type(fc: Any, tmp_path: Path) -> None:
    result = run_remote(fc, tmp_path, "tick", "--function", "broken")
    assert result.returncode == 1
    assert result.stderr.startswith("error: ValueError: the config names no workspace (request id 1-")


@needs_emulator
def test_an_fc2_shaped_refusal_and_a_dropped_connection(tmp_path: Path) -> None:
    with FcEmulator({}, error_shape="fc2", security_tokens=[TOKEN]) as emulator:
        missing = dwnotify("remote", "tick", "--endpoint", emulator.base_url, env=env(), cwd=tmp_path)
        emulator.drop_connections(1)
        dropped = dwnotify("remote", "tick", "--endpoint", emulator.base_url, env=env(), cwd=tmp_path)
    assert missing.returncode == 1
    assert missing.stderr.startswith("error: FunctionNotFound: function not found (request id 1-")
    assert dropped.returncode == 1
    (line,) = dropped.stderr.splitlines()
    assert line.startswith("error: ConnectionError: ") and line.endswith("(request id unknown)")


@needs_emulator
def test_fc2_logs_never_show_the_token_or_the_signature(
    fc: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import fc2

    caplog.set_level(logging.DEBUG)
    credentials = Credentials("test-ak", Secret(WRONG_SECRET), Secret(TOKEN))
    with pytest.raises(RemoteError) as refused:
        remote.invoke(fc.base_url, credentials, "dwnotify", {"action": "tick"})
    assert refused.value.code == "SignatureNotMatch"
    # fc2's own invoke_function logs its request headers at ERROR through the root logger
    client = fc2.Client(
        endpoint=fc.base_url, accessKeyID="test-ak", accessKeySecret=WRONG_SECRET, securityToken=TOKEN
    )
    with pytest.raises(fc2.FcError):
        client.invoke_function("service", "dwnotify")
    text = "\n".join(record.getMessage() for record in caplog.records)
    for secret in (TOKEN, WRONG_SECRET, "FC test-ak:", "authorization"):
        assert secret not in text


def test_the_fc2_filter_drops_what_fc2_logs_and_nothing_else(caplog: pytest.LogCaptureFixture) -> None:
    import fc2.auth

    def sign() -> None:
        headers = {"date": "Thu, 01 Jan 2026 00:00:00 GMT", "x-fc-security-token": TOKEN}
        signer = fc2.auth.Auth("test-ak", "test-secret", TOKEN)
        signer.sign_request("POST", "/2023-03-30/functions/f/invocations", headers)

    caplog.set_level(logging.DEBUG)
    remote.quiet_fc2_logs()
    remote.quiet_fc2_logs()  # idempotent: one filter
    root = logging.getLogger()
    (dropper,) = [f for f in root.filters if isinstance(f, remote._DropFc2Records)]
    root.removeFilter(dropper)
    try:
        sign()  # what the filter is for: fc2's signer logs the token at DEBUG through the root logger
    finally:
        root.addFilter(dropper)
    assert any(TOKEN in record.getMessage() for record in caplog.records)
    caplog.clear()
    sign()
    logging.getLogger().debug("a line of our own")
    assert [record.getMessage() for record in caplog.records] == ["a line of our own"]

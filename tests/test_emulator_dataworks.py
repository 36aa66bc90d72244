"""The DataWorks emulator, driven by the real aliyun-python-sdk-core (and raw httpx where the SDK cannot)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from aliyunsdkcore.acs_exception.exceptions import ClientException, ServerException
from aliyunsdkcore.auth.credentials import StsTokenCredential
from aliyunsdkcore.client import AcsClient
from aliyunsdkcore.request import CommonRequest, RpcRequest

from emulators import rpc
from emulators.dataworks import MORNING, DataWorksEmulator
from emulators.scenario import ScenarioError

ROOT = Path(__file__).resolve().parents[1]
START = 1_795_680_000.0  # 2026-11-26T08:00:00Z
RUN = "a7ef0634-20ec-4a7c-a214-54020f910001"
SCENARIO: dict[str, Any] = {
    "start": START,
    "projects": [10000, 10001],
    "history": {10001: 250},
    "runs": [
        {
            "project": 10000,
            "id": RUN,
            "creator": "137946317766XXXX",
            "description": "发布: 新增ODS同步任务",
            "created": 0,
            "stages": [
                {
                    "code": "DEV_CHECK",
                    "step": 1,
                    "type": "Check",
                    "name": "发布包构建",
                    "detail": {"checkerList": [{"code": "BuildPackageChecker"}]},
                },
                {"code": "PROD_DEPLOY", "step": 2, "type": "Deploy", "name": "发布到生产环境"},
            ],
            "timeline": [
                {"at": 0, "status": "Running", "stages": {"DEV_CHECK": "Running"}},
                {"at": 90, "stages": {"DEV_CHECK": "Success", "PROD_DEPLOY": "Running"}},
                {
                    "at": 200,
                    "status": "Termination",
                    "message": "终止",
                    "stages": {"PROD_DEPLOY": {"status": "Terminated", "message": "节点 ods_user 超时"}},
                },
            ],
        },
        {
            "project": 10000,
            "id": "later-run",
            "creator": "204517703358XXXX",
            "created": 300,
            "id_trailing_newline": False,
            "stages": [{"code": "BUILD", "type": "Build", "detail": {"n": 1}, "detail_as_string": False}],
            "timeline": [{"at": 300, "status": "Running", "stages": {"BUILD": "Running"}}],
        },
    ],
}


@pytest.fixture(autouse=True)
def _no_env_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    # The SDK lets these override an explicit credential.
    for name in ("ALIYUN_ACCESS_KEY_ID", "ALIYUN_ACCESS_KEY_SECRET"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def emu() -> Iterator[DataWorksEmulator]:
    emulator = DataWorksEmulator(SCENARIO)
    emulator.set_time(START)
    with emulator:
        yield emulator


def make_request(emu: DataWorksEmulator, action: str, version: str = "2024-05-18", **params: Any) -> Any:
    req = CommonRequest()
    req.set_domain(emu.base_url.removeprefix("http://"))
    req.set_protocol_type("http")
    req.set_version(version)
    req.set_action_name(action)
    req.set_method("GET")
    for name, value in params.items():
        req.add_query_param(name, value)
    return req


def call(emu: DataWorksEmulator, action: str, client: AcsClient | None = None, **params: Any) -> Any:
    client = client or AcsClient("test-ak", "test-secret", "cn-shanghai", auto_retry=False)
    return json.loads(client.do_action_with_exception(make_request(emu, action, **params)))


def server_error(emu: DataWorksEmulator, action: str, client: AcsClient | None = None, **params: Any) -> Any:
    with pytest.raises(ServerException) as info:
        call(emu, action, client, **params)
    return info.value


# An independent V1 signer, written from the signing documentation, for requests the SDK cannot make.
def enc(value: str) -> str:
    return quote(value, safe="-_.~")


def signed_query(params: dict[str, str], secret: str = "test-secret", method: str = "GET") -> dict[str, str]:
    canonical = "&".join(f"{enc(k)}={enc(v)}" for k, v in sorted(params.items()))
    to_sign = f"{method}&%2F&{enc(canonical)}"
    digest = hmac.new(f"{secret}&".encode(), to_sign.encode(), hashlib.sha1).digest()
    return {**params, "Signature": base64.b64encode(digest).decode()}


def common(action: str, **extra: str) -> dict[str, str]:
    return {
        "Action": action,
        "Version": "2024-05-18",
        "Format": "JSON",
        "AccessKeyId": "test-ak",
        "SignatureMethod": "HMAC-SHA1",
        "SignatureVersion": "1.0",
        "SignatureNonce": uuid.uuid4().hex,
        "Timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **extra,
    }


# An independent ACS3-HMAC-SHA256 signer, written from the V3 signature documentation
# ("Request syntax and signature method V3"), for requests the SDK would never send.
def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def acs3_headers(
    method: str,
    host: str,
    query: dict[str, str],
    body: bytes = b"",
    *,
    action: str = "ListPipelineRuns",
    version: str = "2024-05-18",
    key: str = "test-ak",
    secret: str = "test-secret",
    date: str | None = None,
    nonce: str | None = None,
    extra: dict[str, str] | None = None,
    signed: list[str] | None = None,
) -> dict[str, str]:
    headers = {
        "host": host,
        "x-acs-action": action,
        "x-acs-version": version,
        "x-acs-date": date or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "x-acs-signature-nonce": nonce or uuid.uuid4().hex,
        "x-acs-content-sha256": sha256_hex(body),
        **(extra or {}),
    }
    names = sorted(headers if signed is None else signed)
    canonical = "\n".join(
        [
            method,
            "/",
            "&".join(f"{enc(k)}={enc(v)}" for k, v in sorted(query.items())),
            "".join(f"{name}:{headers.get(name, '').strip()}\n" for name in names),
            ";".join(names),
            sha256_hex(body),
        ]
    )
    to_sign = "ACS3-HMAC-SHA256\n" + sha256_hex(canonical.encode())
    signature = hmac.new(secret.encode(), to_sign.encode(), hashlib.sha256).hexdigest()
    headers["Authorization"] = (
        f"ACS3-HMAC-SHA256 Credential={key},SignedHeaders={';'.join(names)},Signature={signature}"
    )
    return headers


# The fixed example of the V3 documentation: its inputs and its published results.
DOC_QUERY = {"ImageId": "win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd", "RegionId": "cn-shanghai"}
DOC_HEADERS = {
    "host": "ecs.cn-shanghai.aliyuncs.com",
    "x-acs-action": "RunInstances",
    "x-acs-content-sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "x-acs-date": "2023-10-26T10:22:32Z",
    "x-acs-signature-nonce": "3156853299f313e23d1673dc12e1703d",
    "x-acs-version": "2014-05-26",
}
DOC_HASHED_CANONICAL_REQUEST = "7ea06492da5221eba5297e897ce16e55f964061054b7695beedaac1145b1e259"
DOC_SIGNATURE = "06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0"


def test_both_acs3_sides_reproduce_the_documented_example() -> None:
    canonical = rpc.acs3_canonical_request("POST", "/", DOC_QUERY, DOC_HEADERS, list(DOC_HEADERS), b"")
    to_sign = rpc.acs3_string_to_sign(canonical)
    assert to_sign == f"ACS3-HMAC-SHA256\n{DOC_HASHED_CANONICAL_REQUEST}"
    assert rpc.acs3_signature(to_sign, "YourAccessKeySecret") == DOC_SIGNATURE
    headers = acs3_headers(
        "POST",
        DOC_HEADERS["host"],
        DOC_QUERY,
        action="RunInstances",
        version="2014-05-26",
        key="YourAccessKeyId",
        secret="YourAccessKeySecret",
        date=DOC_HEADERS["x-acs-date"],
        nonce=DOC_HEADERS["x-acs-signature-nonce"],
    )
    assert headers["Authorization"] == (
        "ACS3-HMAC-SHA256 Credential=YourAccessKeyId,SignedHeaders=host;x-acs-action;"
        f"x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,Signature={DOC_SIGNATURE}"
    )


def acs3_get(emu: DataWorksEmulator, query: dict[str, str], **signing: Any) -> httpx.Response:
    host = emu.base_url.removeprefix("http://")
    return httpx.get(emu.base_url + "/", params=query, headers=acs3_headers("GET", host, query, **signing))


def test_acs3_signed_get_and_post(emu: DataWorksEmulator) -> None:
    response = acs3_get(emu, {"ProjectId": "10000"})
    assert response.status_code == 200, response.text
    assert response.json()["PagingInfo"]["TotalCount"] == 1
    body = f"ProjectId=10000&Id={RUN}".encode()
    host = emu.base_url.removeprefix("http://")
    form = {"content-type": "application/x-www-form-urlencoded"}
    headers = acs3_headers("POST", host, {}, body, action="GetPipelineRun", extra=form)
    posted = httpx.post(emu.base_url + "/", headers=headers, content=body)
    assert posted.status_code == 200, posted.text
    assert posted.json()["Pipeline"]["Id"].strip() == RUN
    assert [(c.action, c.signature, c.params) for c in emu.calls] == [
        ("ListPipelineRuns", "ACS3-HMAC-SHA256", {"ProjectId": "10000"}),
        ("GetPipelineRun", "ACS3-HMAC-SHA256", {"ProjectId": "10000", "Id": RUN}),
    ]


def test_acs3_header_names_are_case_insensitive(emu: DataWorksEmulator) -> None:
    host = emu.base_url.removeprefix("http://")
    headers = acs3_headers("GET", host, {"ProjectId": "10000"})
    shouted = {name.title(): value for name, value in headers.items()}
    response = httpx.get(emu.base_url + "/", params={"ProjectId": "10000"}, headers=shouted)
    assert response.status_code == 200, response.text


def test_acs3_tampering_is_refused(emu: DataWorksEmulator) -> None:
    host = emu.base_url.removeprefix("http://")
    signed_for = acs3_headers("GET", host, {"ProjectId": "10000"})
    query = httpx.get(emu.base_url + "/", params={"ProjectId": "10001"}, headers=signed_for)
    assert (query.status_code, query.json()["Code"]) == (400, "SignatureDoesNotMatch")
    assert "server string to sign is:ACS3-HMAC-SHA256\n" in query.json()["Message"]
    form = {"content-type": "application/x-www-form-urlencoded"}
    headers = acs3_headers("POST", host, {}, b"ProjectId=10000", extra=form)
    body = httpx.post(emu.base_url + "/", headers=headers, content=b"ProjectId=10001")
    assert (body.status_code, body.json()["Code"]) == (400, "SignatureDoesNotMatch")
    assert "x-acs-content-sha256" in body.json()["Message"]
    assert [c.params for c in emu.calls] == [{"ProjectId": "10001"}, {"ProjectId": "10001"}]


UNDATED = ["host", "x-acs-action", "x-acs-version", "x-acs-signature-nonce", "x-acs-content-sha256"]


@pytest.mark.parametrize(
    ("signing", "code", "status"),
    [
        ({"secret": "wrong-secret"}, "SignatureDoesNotMatch", 400),
        ({"key": "other-ak"}, "InvalidAccessKeyId.NotFound", 404),
        ({"extra": {"x-acs-content-sha256": "0" * 64}}, "SignatureDoesNotMatch", 400),
        ({"signed": UNDATED}, "IncompleteSignature", 400),  # x-acs-date sent, not signed
        ({"signed": [*DOC_HEADERS, "x-acs-missing"]}, "IncompleteSignature", 400),  # signed, not sent
        ({"extra": {"x-acs-accesskey-id": "test-ak"}, "signed": list(DOC_HEADERS)},
         "IncompleteSignature", 400),
        ({"date": "2020-01-01T00:00:00Z"}, "InvalidTimeStamp.Expired", 400),
        ({"date": "yesterday"}, "InvalidTimeStamp.Format", 400),
        ({"version": "2019-01-01"}, "InvalidVersion", 400),
        ({"action": "DescribeInstances"}, "InvalidAction.NotFound", 404),
        ({"extra": {"x-acs-security-token": "sts"}}, "InvalidSecurityToken.MismatchWithAccessKey", 400),
    ],
)  # fmt: skip
def test_acs3_gateway_errors(emu: DataWorksEmulator, signing: dict[str, Any], code: str, status: int) -> None:
    response = acs3_get(emu, {"ProjectId": "10000"}, **signing)
    assert (response.status_code, response.json()["Code"]) == (status, code), response.text
    assert emu.calls[-1].code == code


@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        (
            "ACS3-HMAC-SM3 Credential=test-ak,SignedHeaders=host,Signature=00",
            "ACS3-HMAC-SM3 is not supported",
        ),
        ("ACS3-HMAC-SHA256 Credential=test-ak,SignedHeaders=host", "has no Signature"),
        ("ACS3-HMAC-SHA256 SignedHeaders=host,Signature=00", "has no Credential"),
    ],
)
def test_acs3_malformed_authorization_is_incomplete_signature(
    emu: DataWorksEmulator, authorization: str, message: str
) -> None:
    headers = {
        **acs3_headers("GET", emu.base_url.removeprefix("http://"), {}),
        "Authorization": authorization,
    }
    response = httpx.get(emu.base_url + "/", headers=headers)
    assert (response.status_code, response.json()["Code"]) == (400, "IncompleteSignature")
    assert message in response.json()["Message"]


@pytest.mark.parametrize(
    "header", ["x-acs-action", "x-acs-date", "x-acs-signature-nonce", "x-acs-content-sha256"]
)
def test_acs3_missing_common_header_is_missing_parameter(emu: DataWorksEmulator, header: str) -> None:
    headers = acs3_headers("GET", emu.base_url.removeprefix("http://"), {"ProjectId": "10000"})
    del headers[header]
    response = httpx.get(emu.base_url + "/", params={"ProjectId": "10000"}, headers=headers)
    assert (response.status_code, response.json()["Code"]) == (400, "MissingParameter")
    assert header in response.json()["Message"]


def test_acs3_nonce_reuse_is_refused(emu: DataWorksEmulator) -> None:
    host = emu.base_url.removeprefix("http://")
    headers = acs3_headers("GET", host, {"ProjectId": "10000"})
    assert httpx.get(emu.base_url + "/", params={"ProjectId": "10000"}, headers=headers).status_code == 200
    replay = httpx.get(emu.base_url + "/", params={"ProjectId": "10000"}, headers=headers)
    assert (replay.status_code, replay.json()["Code"]) == (400, "SignatureNonceUsed")


def test_acs3_sts_token_is_checked() -> None:
    with DataWorksEmulator(SCENARIO, security_token="sts-token") as emu:
        good = acs3_get(emu, {"ProjectId": "10000"}, extra={"x-acs-security-token": "sts-token"})
        assert good.status_code == 200, good.text
        stale = acs3_get(emu, {"ProjectId": "10000"}, extra={"x-acs-security-token": "old"})
        assert stale.json()["Code"] == "InvalidSecurityToken.Expired"
        assert acs3_get(emu, {"ProjectId": "10000"}).json()["Code"] == "MissingSecurityToken"


def test_signed_get_pipeline_run_has_the_documented_shape(emu: DataWorksEmulator) -> None:
    emu.advance(120)
    body = call(emu, "GetPipelineRun", ProjectId=10000, Id=RUN)
    pipeline = body["Pipeline"]
    assert body["RequestId"]
    assert list(pipeline) == [
        "Id",
        "ProjectId",
        "CreateTime",
        "ModifyTime",
        "Creator",
        "Status",
        "Message",
        "Stages",
        "Description",
    ]
    assert pipeline["Id"] == RUN + "\n"  # the doc example's quirk, on by default
    assert pipeline["ProjectId"] == 10000
    assert pipeline["CreateTime"] == START * 1000
    assert pipeline["ModifyTime"] == (START + 90) * 1000
    assert pipeline["Status"] == "Running"
    stage = pipeline["Stages"][0]
    assert list(stage) == ["Code", "Step", "Type", "Name", "Description", "Message", "Status", "Detail"]
    assert (stage["Code"], stage["Step"], stage["Type"], stage["Status"]) == (
        "DEV_CHECK",
        1,
        "Check",
        "Success",
    )
    assert stage["Detail"] == {"checkerList": [{"code": "BuildPackageChecker"}]}  # an object, as in the SDK
    assert pipeline["Stages"][1]["Status"] == "Running"
    assert emu.calls[-1].params == {"ProjectId": "10000", "Id": RUN}
    assert emu.call_count("GetPipelineRun") == 1


def test_statuses_follow_scenario_time_and_spelling(emu: DataWorksEmulator) -> None:
    assert server_error(emu, "GetPipelineRun", ProjectId=10000, Id="later-run").get_error_code() == (
        "Invalid.Pipeline.NotFound"
    )
    emu.advance(300)
    done = call(emu, "GetPipelineRun", ProjectId=10000, Id=RUN + "\n")["Pipeline"]
    assert (done["Status"], done["Message"]) == ("Termination", "终止")  # the SDK's spelling by default
    assert done["Stages"][1]["Message"] == "节点 ods_user 超时"
    assert done["ModifyTime"] == (START + 200) * 1000
    later = call(emu, "GetPipelineRun", ProjectId=10000, Id="later-run")["Pipeline"]
    assert later["Id"] == "later-run"
    assert later["Stages"][0]["Detail"] == {"n": 1}
    emu.scenario.status_spelling = "doc"
    assert call(emu, "GetPipelineRun", ProjectId=10000, Id=RUN)["Pipeline"]["Status"] == "Terminated"


def test_wrong_secret_is_signature_does_not_match(emu: DataWorksEmulator) -> None:
    bad = AcsClient("test-ak", "wrong-secret", "cn-shanghai", auto_retry=False)
    error = server_error(emu, "ListPipelineRuns", bad, ProjectId=10000)
    assert (error.get_error_code(), error.get_http_status()) == ("SignatureDoesNotMatch", 400)
    assert "server string to sign is:GET&%2F&" in error.get_error_msg()
    assert emu.calls[-1].code == "SignatureDoesNotMatch"
    # A typed request compares its own StringToSign with the server's and names the real culprit.
    typed = RpcRequest("dataworks-public", "2024-05-18", "ListPipelineRuns")
    typed.set_endpoint(emu.base_url.removeprefix("http://"))
    typed.set_protocol_type("http")
    typed.set_method("GET")
    typed.add_query_param("ProjectId", 10000)
    with pytest.raises(ServerException) as info:
        bad.do_action_with_exception(typed)
    assert info.value.get_error_code() == "InvalidAccessKeySecret"


def test_unknown_access_key_is_404(emu: DataWorksEmulator) -> None:
    other = AcsClient("other-ak", "test-secret", "cn-shanghai", auto_retry=False)
    error = server_error(emu, "ListPipelineRuns", other, ProjectId=10000)
    assert (error.get_error_code(), error.get_http_status()) == ("InvalidAccessKeyId.NotFound", 404)


def test_raw_signed_request_and_nonce_reuse(emu: DataWorksEmulator) -> None:
    query = signed_query(common("ListPipelineRuns", ProjectId="10000"))
    first = httpx.get(emu.base_url + "/", params=query)
    assert first.status_code == 200, first.text
    replay = httpx.get(emu.base_url + "/", params=query)
    assert replay.status_code == 400
    assert replay.json()["Code"] == "SignatureNonceUsed"
    assert set(replay.json()) >= {"RequestId", "Code", "Message", "HostId"}


def test_post_with_form_body(emu: DataWorksEmulator) -> None:
    form = signed_query(common("GetPipelineRun", ProjectId="10000", Id=RUN), method="POST")
    response = httpx.post(emu.base_url + "/", data=form)
    assert response.status_code == 200, response.text
    assert response.json()["Pipeline"]["Id"].strip() == RUN


@pytest.mark.parametrize(
    ("change", "code", "status"),
    [
        ({"Timestamp": "2020-01-01T00:00:00Z"}, "InvalidTimeStamp.Expired", 400),
        ({"Timestamp": "yesterday"}, "InvalidTimeStamp.Format", 400),
        ({"SignatureMethod": "HMAC-SHA256"}, "IncompleteSignature", 400),
        ({"Version": "2019-01-01"}, "InvalidVersion", 400),
        ({"Action": "DescribeInstances"}, "InvalidAction.NotFound", 404),
        ({"ProjectId": None}, "MissingParameter", 400),
        ({"ProjectId": "ten"}, "InvalidParameter", 400),
        ({"ProjectId": "99999"}, "Forbidden.Access", 403),
        ({"PageSize": "101"}, "InvalidParameter", 400),
        ({"SecurityToken": "sts-token"}, "InvalidSecurityToken.MismatchWithAccessKey", 400),
    ],
)
def test_gateway_and_parameter_errors(
    emu: DataWorksEmulator, change: dict[str, str | None], code: str, status: int
) -> None:
    params = common("ListPipelineRuns", ProjectId="10000")
    for name, value in change.items():
        if value is None:
            del params[name]
        else:
            params[name] = value
    response = httpx.get(emu.base_url + "/", params=signed_query(params))
    assert (response.status_code, response.json()["Code"]) == (status, code)


def test_unsigned_request_is_incomplete_signature(emu: DataWorksEmulator) -> None:
    response = httpx.get(emu.base_url + "/", params=common("ListPipelineRuns", ProjectId="10000"))
    assert (response.status_code, response.json()["Code"]) == (400, "IncompleteSignature")


def test_paging_across_250_history_runs(emu: DataWorksEmulator) -> None:
    seen: list[dict[str, Any]] = []
    for page in (1, 2, 3, 4):
        info = call(emu, "ListPipelineRuns", ProjectId=10001, PageNumber=page, PageSize=100)["PagingInfo"]
        assert (info["PageNumber"], info["PageSize"], info["TotalCount"]) == (page, 100, 250)
        seen += info["PipelineRuns"]
    assert len(seen) == 250
    assert len({r["Id"] for r in seen}) == 250
    created = [r["CreateTime"] for r in seen]
    assert created == sorted(created, reverse=True)  # newest first by default
    assert all(r["CreateTime"] < START * 1000 for r in seen)
    assert {r["Status"] for r in seen} <= {"Success", "Fail", "Cancel", "Termination"}
    default = call(emu, "ListPipelineRuns", ProjectId=10001)["PagingInfo"]
    assert (default["PageSize"], len(default["PipelineRuns"])) == (10, 10)


def test_list_filters(emu: DataWorksEmulator) -> None:
    emu.advance(400)
    running = call(emu, "ListPipelineRuns", ProjectId=10000, Status="rUNNING")["PagingInfo"]
    assert [r["Id"] for r in running["PipelineRuns"]] == ["later-run"]
    terminated = call(emu, "ListPipelineRuns", ProjectId=10000, Status="Termination")["PagingInfo"]
    assert terminated["TotalCount"] == 1
    mine = call(emu, "ListPipelineRuns", ProjectId=10000, Creator="137946317766XXXX")["PagingInfo"]
    assert [r["Id"].strip() for r in mine["PipelineRuns"]] == [RUN]


def list_ids(emu: DataWorksEmulator, page: int) -> list[str]:
    info = call(emu, "ListPipelineRuns", ProjectId=10001, PageNumber=page, PageSize=100)["PagingInfo"]
    return [r["Id"].strip() for r in info["PipelineRuns"]]


@pytest.mark.parametrize(
    ("order", "listings_agree", "pages_cover_all"),
    [
        ("oldest", True, True),
        ("shuffled", False, True),  # a new order per listing, its pages consistent
        ("shuffled_per_call", False, False),  # every call reshuffles: paging can miss runs
        ("shuffled_fixed", True, True),
    ],
)
def test_list_orders(order: str, listings_agree: bool, pages_cover_all: bool) -> None:
    with DataWorksEmulator(SCENARIO, list_order=order) as emu:
        emu.set_time(START)
        listings = [[*list_ids(emu, 1), *list_ids(emu, 2), *list_ids(emu, 3)] for _ in range(2)]
    created = {r.id: r.created for r in emu.scenario.runs}
    oldest_first = sorted(listings[0], key=lambda run_id: created[run_id])
    assert (listings[0] == oldest_first) is (order == "oldest")
    assert (listings[0] == listings[1]) is listings_agree
    assert (len(set(listings[0])) == 250) is pages_cover_all


def test_old_api_only_mode() -> None:
    with DataWorksEmulator(SCENARIO, old_api_only=True) as emu:
        emu.set_time(START + 120)
        error = server_error(emu, "GetPipelineRun", ProjectId=10000, Id=RUN)
        assert (error.get_error_code(), error.get_http_status()) == ("InvalidAction.NotFound", 404)
        body = call(emu, "GetDeployment", ProjectId=10000, Id=RUN)
        assert set(body) == {"RequestId", "Pipeline"}  # the key of the old SDKs' models, as in the new
        deployment = body["Pipeline"]
        assert deployment["Status"] == "RUNNING"
        assert "Description" not in deployment  # not in the old models
        assert [(s["Type"], s["Status"]) for s in deployment["Stages"]] == [
            ("CHECK", "SUCCESS"),
            ("DEPLOY", "RUNNING"),
        ]
        info = call(emu, "ListDeployments", ProjectId=10001, PageSize=5)["PagingInfo"]
        assert (info["PageNumber"], info["PageSize"], info["TotalCount"]) == ("1", "5", "250")
        assert len(info["Deployments"]) == 5
        assert all("Description" not in run for run in info["Deployments"])


def test_old_names_also_work_in_normal_mode(emu: DataWorksEmulator) -> None:
    assert call(emu, "GetDeployment", ProjectId=10000, Id=RUN)["Pipeline"]["Status"] == "RUNNING"


def test_injected_faults_then_recovery(emu: DataWorksEmulator) -> None:
    emu.inject("ListPipelineRuns", "Throttling.User", times=2)
    assert call(emu, "GetPipelineRun", ProjectId=10000, Id=RUN)["Pipeline"]  # not the throttled action
    for _ in range(2):
        error = server_error(emu, "ListPipelineRuns", ProjectId=10000)
        assert (error.get_error_code(), error.get_http_status()) == ("Throttling.User", 400)
    emu.inject(None, "InternalError.System")
    error = server_error(emu, "GetPipelineRun", ProjectId=10000, Id=RUN)
    assert (error.get_error_code(), error.get_http_status()) == ("InternalError.System", 500)
    assert call(emu, "ListPipelineRuns", ProjectId=10000)["PagingInfo"]["TotalCount"] == 1
    assert emu.call_count("ListPipelineRuns") == 3
    assert [c.http_status for c in emu.calls] == [200, 400, 400, 500, 200]


@pytest.mark.parametrize(
    ("code", "throttle_status", "given", "status"),
    [
        ("Throttling", 400, None, 400),
        ("Throttling.Api", 429, None, 429),  # the emulator's throttling status, when set
        ("Throttling.User", 400, 429, 429),  # an explicit status wins
        ("Forbidden.Access", 429, None, 403),
        ("Invalid.Pipeline.NotFound", 400, None, 404),
        ("ServiceUnavailable", 400, None, 503),
        ("InvalidParameter", 400, None, 400),
    ],
)
def test_injected_fault_statuses(code: str, throttle_status: int, given: int | None, status: int) -> None:
    with DataWorksEmulator(SCENARIO, throttle_status=throttle_status) as emu:
        emu.inject(None, code, given)
        error = server_error(emu, "ListPipelineRuns", ProjectId=10000)
    assert (error.get_error_code(), error.get_http_status()) == (code, status)


def test_dropped_connection_is_a_network_error(emu: DataWorksEmulator) -> None:
    emu.drop_connections(1)
    with pytest.raises(ClientException) as info:
        call(emu, "ListPipelineRuns", ProjectId=10000)
    assert info.value.get_error_code() == "SDK.HttpError"
    assert emu.calls[-1].http_status == 0
    assert call(emu, "ListPipelineRuns", ProjectId=10000)["PagingInfo"]


@pytest.mark.parametrize("throttle_status", [400, 429])
def test_qps_and_daily_limits_on_the_emulator_clock(throttle_status: int) -> None:
    with DataWorksEmulator(SCENARIO, qps_limit=2, daily_limit=4, throttle_status=throttle_status) as emu:
        emu.set_time(START)
        call(emu, "ListPipelineRuns", ProjectId=10000)
        call(emu, "ListPipelineRuns", ProjectId=10000)
        error = server_error(emu, "ListPipelineRuns", ProjectId=10000)
        assert (error.get_error_code(), error.get_http_status()) == ("Throttling.User", throttle_status)
        emu.advance(1)
        call(emu, "ListPipelineRuns", ProjectId=10000)
        call(emu, "ListPipelineRuns", ProjectId=10000)
        emu.advance(1)
        error = server_error(emu, "ListPipelineRuns", ProjectId=10000)
        assert (error.get_error_code(), error.get_http_status()) == ("Throttling.User", throttle_status)
        assert "daily" in error.get_error_msg()
        emu.advance(86400)
        call(emu, "ListPipelineRuns", ProjectId=10000)


def test_sts_token() -> None:
    with DataWorksEmulator(SCENARIO, security_token="sts-token") as emu:
        good = AcsClient(
            region_id="cn-shanghai", credential=StsTokenCredential("test-ak", "test-secret", "sts-token")
        )
        good.set_auto_retry(False)
        assert call(emu, "ListPipelineRuns", good, ProjectId=10000)["PagingInfo"]
        assert "SecurityToken" not in emu.calls[-1].params
        stale = AcsClient(
            region_id="cn-shanghai", credential=StsTokenCredential("test-ak", "test-secret", "old")
        )
        error = server_error(emu, "ListPipelineRuns", stale, ProjectId=10000)
        assert (error.get_error_code(), error.get_http_status()) == ("InvalidSecurityToken.Expired", 400)
        assert (
            server_error(emu, "ListPipelineRuns", ProjectId=10000).get_error_code() == "MissingSecurityToken"
        )


def test_programmatic_runs(emu: DataWorksEmulator) -> None:
    run_id = emu.add_run(10001, "new-run", description="hand made", stage_statuses={"DEV_CHECK": "Running"})
    run = call(emu, "GetPipelineRun", ProjectId=10001, Id=run_id)["Pipeline"]
    assert (run["Status"], run["Stages"][0]["Status"], run["Description"]) == (
        "Running",
        "Running",
        "hand made",
    )
    emu.advance(30)
    emu.set_run_status(run_id, "Fail", "boom", {"DEV_CHECK": {"status": "Fail", "message": "bad"}})
    run = call(emu, "GetPipelineRun", ProjectId=10001, Id=run_id)["Pipeline"]
    assert (run["Status"], run["Message"], run["Stages"][0]["Message"]) == ("Fail", "boom", "bad")
    assert run["ModifyTime"] == (START + 30) * 1000


def test_morning_scenario_plays_out() -> None:
    with DataWorksEmulator(MORNING) as emu:
        emu.set_time(emu.scenario.start + emu.scenario.duration + 60)
        statuses = {
            p: {
                r["Status"]
                for r in call(emu, "ListPipelineRuns", ProjectId=p, PageSize=20)["PagingInfo"]["PipelineRuns"]
            }
            for p in (10000, 10001, 10002)
        }
    assert set().union(*statuses.values()) >= {"Success", "Fail", "Cancel", "Termination", "Running"}


def test_the_doc_example_scenario_serves_the_doc_forms() -> None:
    with DataWorksEmulator(Path(MORNING).with_name("doc-example.yaml")) as emu:
        emu.set_time(emu.scenario.start + 200)
        runs = call(emu, "ListPipelineRuns", ProjectId=56160)["PagingInfo"]["PipelineRuns"]
    assert {r["Status"] for r in runs} == {"Fail", "Canceled", "Terminated"}
    first = next(r for r in runs if r["Id"] == "a7ef0634-20ec-4a7c-a214-54020f910001\n")
    assert first["CreateTime"] == 1724984066000
    assert json.loads(first["Stages"][0]["Detail"])["checkerList"][0]["code"] == "BuildPackageChecker"


@pytest.mark.parametrize(
    ("doc", "error"),
    [
        ({"quirks": {"detail_as_strings": True}}, "quirks.detail_as_strings: unknown quirk"),
        ({"status_spelling": "British"}, "status_spelling: 'British' is not one of"),
        ({"runs": [{"project": 1, "items": [{"type": "Node"}]}]}, r"runs\[0\]\.items\[0\]\.name: required"),
        (
            {"runs": [{"project": 1, "items": [{"name": "a"}, {"name": "a"}]}]},
            r"runs\[0\]\.items: item names must be unique",
        ),
        (
            {
                "runs": [
                    {"project": 1, "items": [{"name": "a"}], "timeline": [{"at": 0, "items": {"b": "Fail"}}]}
                ]
            },
            r"runs\[0\]\.timeline\[0\]\.items\.b: no such item in this run",
        ),
    ],
)
def test_scenario_errors_name_the_key(doc: dict[str, Any], error: str) -> None:
    with pytest.raises(ScenarioError, match=error):
        DataWorksEmulator(doc)


def test_cli_prints_base_url_first() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "emulators", "dataworks", "--start", "file", "--throttle-status", "429"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        state = httpx.get(url + "/_emulator").json()
        assert state["service"] == "dataworks"
        injected = httpx.post(url + "/_emulator/inject", json={"action": None, "code": "Throttling.Api"})
        assert injected.status_code == 200
        refused = httpx.get(url + "/", params=signed_query(common("ListPipelineRuns", ProjectId="10000")))
        assert (refused.status_code, refused.json()["Code"]) == (429, "Throttling.Api")
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0

"""The trust boundary for destinations: clear text only to loopback, never metadata; httpx as the judge."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dwnotify.addresses import is_loopback, url_problem
from dwnotify.config import parse
from dwnotify.errors import ConfigError


@pytest.mark.parametrize(
    "url",
    [
        "https://oapi.dingtalk.com/robot/send?access_token=abc",
        "https://hooks.slack.com/services/T0/B0/X",
        "http://127.0.0.1:8080/robot/send?access_token=abc",
        "http://127.9.9.9/x",
        "http://localhost:9/x",
        "http://[::1]:80/x",
        "https://10.0.0.5/internal-hook",
        "https://xn--fsqu00a.com/hook",
        "https://user:pass@example.com/hook",
    ],
)
def test_accepted_urls(url: str) -> None:
    assert url_problem(url) is None


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://oapi.dingtalk.com/robot/send?access_token=abc", "plain http"),
        ("http://10.0.0.5/internal-hook", "plain http"),
        ("https://169.254.169.254/latest/meta-data/", "link-local or cloud metadata"),
        ("https://100.100.100.200/latest/meta-data/ram/security-credentials/", "cloud metadata"),
        ("https://[fe80::1]/", "link-local"),
        ("https://[::ffff:169.254.169.254]/", "link-local"),
        ("https://[fd00:ec2::254]/", "cloud metadata"),
        ("https://metadata.google.internal/", "cloud metadata"),
        ("https://2852039166/", "neither a dotted IPv4 address"),
        ("https://0xa9fea9fe/", "neither a dotted IPv4 address"),
        ("https://999.1.1.1/", "neither a dotted IPv4 address"),
        ("https://0.0.0.0/", "not an address"),
        ("https://oapi.dingtalk.com/robot/send?access_token=a\x07b", "control character"),
        ("https://oapi.dingtalk.com/robot/send?access_token=a\x00b", "control character"),
        ("https://hooks.slack.com/services/T0/B0/X\u2028", "control character"),
        ("https://x.com:99999/", "not a valid URL"),
        ("https://例子.com/", "xn-- form"),
        ("ftp://x.com/", "http:// or https://"),
        ("https://" + "a" * 3000 + ".com/", "longer than"),
    ],
)
def test_refused_urls(url: str, problem: str) -> None:
    found = url_problem(url)
    assert found is not None and problem in found, found


def test_allow_http_opens_clear_text_but_never_metadata() -> None:
    assert url_problem("http://chat.example.com/hook", allow_http=True) is None
    assert url_problem("http://169.254.169.254/", allow_http=True) is not None


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1:8080", True),
        ("localhost", True),
        ("[::1]:9", True),
        ("dataworks.cn-shanghai.aliyuncs.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


_URL_CHARS = st.sampled_from(list("abz09.-_~:/?#[]@!$&'()*+,;=% \t\r\n\x00\x07\x7f\u00e9\u4f8b\u2028"))


@settings(max_examples=400, deadline=None)
@given(
    scheme=st.sampled_from(["https://", "http://127.0.0.1", "http://", ""]),
    rest=st.text(_URL_CHARS, max_size=40),
)
def test_every_url_accepted_here_is_one_httpx_can_send(scheme: str, rest: str) -> None:
    """The judge: httpx sends the requests, so nothing accepted at load may fail as httpx.InvalidURL later."""
    url = scheme + rest
    if url_problem(url, allow_http=True) is None:
        request = httpx.Request("POST", url)
        assert request.url.host


BASE = {
    "dataworks": {"region": "cn-shanghai", "projects": [10000]},
    "channels": {"ops": {"type": "slack", "url": "https://hooks.slack.com/services/T/B/X"}},
    "rules": [{"name": "all", "events": ["*"], "channels": ["ops"]}],
}


def problems(changes: dict[str, object]) -> list[str]:
    data = {**BASE, **changes}
    with pytest.raises(ConfigError) as caught:
        parse(data, Path("."), {})
    return caught.value.problems


def test_config_refuses_a_clear_text_webhook_unless_allowed() -> None:
    hook = {"ops": {"type": "slack", "url": "http://chat.example.com/hook"}}
    assert problems({"channels": hook})[0].startswith("channels.ops.url: is plain http")
    allowed = {"ops": {"type": "slack", "url": "http://chat.example.com/hook", "allow_http": True}}
    settings_ = parse({**BASE, "channels": allowed}, Path("."), {})
    assert settings_.channels["ops"].allow_http is True


def test_config_refuses_a_metadata_webhook_and_a_control_character() -> None:
    hooks = {
        "meta": {"type": "webhook", "url": "https://100.100.100.200/latest/meta-data/"},
        "bell": {"type": "slack", "url": "https://hooks.slack.com/services/T/B/X\x07"},
    }
    found = problems(
        {"channels": hooks, "rules": [{"name": "a", "events": ["*"], "channels": ["meta", "bell"]}]}
    )
    assert any(line.startswith("channels.meta.url: 100.100.100.200 is a link-local") for line in found), found
    assert any(
        line.startswith("channels.bell.url: contains a space or a control character") for line in found
    )


def test_dataworks_http_only_to_loopback() -> None:
    public = {"region": "cn-shanghai", "projects": [10000], "protocol": "http"}
    assert problems({"dataworks": public}) == [
        "dataworks.protocol: http sends the STS token in clear; it is only for loopback endpoints "
        "(not dataworks.cn-shanghai.aliyuncs.com)"
    ]
    local = {**public, "endpoint": "127.0.0.1:8080"}
    assert parse({**BASE, "dataworks": local}, Path("."), {}).dataworks.protocol == "http"
    mixed = {**local, "projects": [10000, {"id": 10001, "region": "cn-hangzhou"}]}
    assert "dataworks.cn-hangzhou.aliyuncs.com" in problems({"dataworks": mixed})[0]


def test_tablestore_http_only_to_loopback() -> None:
    state = {"backend": "tablestore", "endpoint": "http://i.cn-shanghai.ots.aliyuncs.com", "instance": "i"}
    assert problems({"state": state})[0].startswith("state.endpoint: is plain http")
    local = {**state, "endpoint": "http://127.0.0.1:9000"}
    assert parse({**BASE, "state": local}, Path("."), {}).state.endpoint == "http://127.0.0.1:9000"


@pytest.mark.parametrize("endpoint", ["169.254.169.254", "100.100.100.200:80", "2852039166"])
def test_a_dataworks_endpoint_is_never_a_metadata_address(endpoint: str) -> None:
    """Signed requests with the STS token go to the endpoint: the same boundary as a webhook's host."""
    found = problems({"dataworks": {"region": "cn-shanghai", "projects": [10000], "endpoint": endpoint}})
    assert found and found[0].startswith("dataworks.endpoint: "), found
    project = {"id": 10000, "endpoint": endpoint}
    found = problems({"dataworks": {"region": "cn-shanghai", "projects": [project]}})
    assert found and found[0].startswith("dataworks.projects[0].endpoint: "), found

"""The DingTalk channel against the robot emulator on 127.0.0.1: the size of what is sent."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dwnotify.channels import build_channel
from dwnotify.channels.dingtalk import MAX_BODY_BYTES, build_payload, sign
from dwnotify.credentials import Secret
from dwnotify.delivery import digest
from dwnotify.message import Message
from dwnotify.model import EVENT_TYPES
from dwnotify.render import Renderer, builtin_templates_dir
from dwnotify.samples import rule_samples, sample_context
from dwnotify.settings import ChannelSettings, ProjectSettings
from dwnotify.state.base import OutboxMessage
from dwnotify.text import TRIM_MARKER
from emulators.dingtalk import DingTalkEmulator
from tests.helpers import HOSTILE, about

NOW = 1_795_680_000.0
TOKEN = "ding-robot-token-31c7"
SECRET = "SEC5e0c9b1d7a3f4e2c8b6a9d0f1e2d3c4b"
CONSOLE_LINE = "[打开 DataWorks 控制台 · Open DataWorks](https://dataworks.data.aliyun.com/x)"


@pytest.fixture
def ding() -> Iterator[DingTalkEmulator]:
    with DingTalkEmulator({TOKEN: SECRET}) as emulator:
        emulator.set_time(NOW)
        yield emulator


def settings_for(
    url: str = "https://oapi.dingtalk.com/robot/send?access_token=t", **extra: object
) -> ChannelSettings:
    return ChannelSettings("ops", "dingtalk", Secret(url), Secret(SECRET), **extra)  # type: ignore[arg-type]


def wire_size(payload: dict[str, object]) -> int:
    return len(json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


# --- the 20,000 bytes are the request body's, not the text's ----------------------------------------


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_a_text_that_json_escaping_grows_past_the_limit_is_fitted_and_accepted(
    ding: DingTalkEmulator, http: httpx.Client, kind: str
) -> None:
    text = "### ❌ 发布失败\n\n" + about(HOSTILE[kind], 18_000) + "\n" + CONSOLE_LINE
    assert len(text.encode()) < MAX_BODY_BYTES < wire_size({"text": text})  # over only once encoded
    url = f"{ding.base_url}/robot/send?access_token={TOKEN}"
    chat = build_channel(settings_for(url, at_mobiles=("13800000000",)), http, 5.0, lambda: NOW)
    chat.send(Message("❌ 发布失败", text))  # before: errcode 460101, failed for good
    [attempt] = ding.attempts
    assert attempt.result == "0"
    sent = attempt.body["markdown"]["text"]
    assert TRIM_MARKER in sent and sent.endswith(f"{CONSOLE_LINE}\n\n@13800000000")
    assert text.startswith(sent.split(TRIM_MARKER)[0]) and "\ufffd" not in sent


@given(
    st.text(alphabet=st.sampled_from('"\\\n\r\t\x00\x01\x1f<>&*[]`_#发布失败 ab'), min_size=1, max_size=40),
    st.integers(min_value=0, max_value=4_000),
)
@settings(max_examples=80, deadline=None)
def test_any_text_fits_the_body_limit(unit: str, times: int) -> None:
    body = unit * times + "\n" + CONSOLE_LINE
    payload = build_payload(settings_for(keyword="发布", at_user_ids=("u1",)), Message("t", body))
    assert wire_size(payload) <= MAX_BODY_BYTES
    if wire_size({"text": body}) <= 15_000:
        assert payload["markdown"]["text"].startswith(body)  # nothing cut that fitted
    else:
        assert payload["markdown"]["text"].split("\n\n@u1")[0].endswith(CONSOLE_LINE)


def test_a_body_that_fits_is_not_trimmed() -> None:
    text = '"quoted" \\ back\nslash ' * 100
    payload = build_payload(settings_for(), Message("t", text))
    assert payload["markdown"]["text"] == text and TRIM_MARKER not in text


def test_the_emulator_measures_the_body_as_dingtalk_does(ding: DingTalkEmulator, http: httpx.Client) -> None:
    ding.robots["plain"] = None
    text = '"' * 12_000  # 12,000 bytes of text, 24,000 of body
    body = {"msgtype": "markdown", "markdown": {"title": "t", "text": text}}
    url = f"{ding.base_url}/robot/send?access_token=plain"
    answer = http.post(url, content=json.dumps(body).encode()).json()
    assert answer["errcode"] == 460101
    body["markdown"]["text"] = "失" * 6_600  # 19,800 bytes of UTF-8, sent as it is
    answer = http.post(url, content=json.dumps(body, ensure_ascii=False).encode()).json()
    assert answer["errcode"] == 0


# --- only the markdown DingTalk documents -------------------------------------------------------------

PROJECT = ProjectSettings(10000, "Finance DW", "cn-shanghai", "dataworks.cn-shanghai.aliyuncs.com")
SAMPLED_AT = datetime(2026, 11, 28, 8, 0, tzinfo=timezone.utc)
_RULE = re.compile(r" {0,3}([-*_])[ \t]*(?:\1[ \t]*){2,}")  # ---, ***, ___, - - -
_SETEXT = re.compile(r" {0,3}(=+|-+)[ \t]*")
_TABLE_DELIMITER = re.compile(r"\|?[ \t]*:?-+:?[ \t]*\|")


def undocumented_markdown(text: str) -> list[str]:
    """What in `text` is outside the documented subset: headings, bold, italic, links, lists, quotes."""
    found = []
    lines = text.splitlines()
    for number, line in enumerate(lines):
        if "`" in line:
            found.append(f"inline code or a code fence: {line!r}")
        if "~~~" in line or line.startswith(("    ", "\t")):
            found.append(f"a code block: {line!r}")
        if _RULE.fullmatch(line) or (number and lines[number - 1].strip() and _SETEXT.fullmatch(line)):
            found.append(f"a rule or a setext underline: {line!r}")
        if line.lstrip().startswith("|") or _TABLE_DELIMITER.search(line):
            found.append(f"a table: {line!r}")
        if "![" in line:
            found.append(f"an image: {line!r}")
        if re.search(r"<[A-Za-z/!]", line):
            found.append(f"HTML: {line!r}")
    return found


def test_the_subset_checker_sees_what_it_looks_for() -> None:
    for bad in [
        "运行 `a7ef`",
        "a\n---\nb",
        "```\nx\n```",
        "| a | b |\n|---|---|",
        "    code",
        "<font>x</font>",
    ]:
        assert undocumented_markdown(bad), bad
    good = "### ❌ 发布失败\n\n- **Finance DW**\n- 运行 Run: a7ef-01\n\n> 原因 *x*\n\n[打开](https://x)"
    assert undocumented_markdown(good) == []


def dingtalk_samples() -> list[tuple[str, str]]:
    renderer = Renderer(None, builtin_templates_dir())
    contexts = [sample_context("ops", "dingtalk", "all", PROJECT, SAMPLED_AT)]
    contexts += rule_samples(EVENT_TYPES, "ops", "dingtalk", "all", PROJECT, SAMPLED_AT)
    names = sorted(
        path.name.removesuffix(".md.j2") for path in (builtin_templates_dir() / "dingtalk").glob("*.md.j2")
    )
    assert names == ["default", "digest", "failure"]
    names.remove("digest")  # a digest's samples are digests: tests/test_digest.py holds it to the same rules
    return [(name, renderer.render("dingtalk", name, ctx).text) for name in names for ctx in contexts]


def test_every_builtin_dingtalk_template_keeps_to_the_documented_markdown() -> None:
    samples = dingtalk_samples()
    assert len(samples) == 2 * (2 + len(EVENT_TYPES))
    for name, text in samples:
        assert undocumented_markdown(text) == [], name
        assert text.startswith("### ") and "](https://dataworks.data.aliyun.com/" in text


def test_a_dingtalk_digest_keeps_to_the_documented_markdown() -> None:
    texts = [text for _, text in dingtalk_samples()[:4]]
    messages = [
        OutboxMessage(
            id=f"m{i}", channel="ops", run_key=f"10000/r{i}", rule="all", seq=i, title="t", text=text,
            created_at=0.0, blocks_json=None,
        )
        for i, text in enumerate(texts)
    ]  # fmt: skip
    merged = digest("dingtalk", messages)
    assert undocumented_markdown(merged.text) == []
    assert all(text in merged.text for text in texts)


# --- the payload: the signature, keyword and mentions, the byte limit --------------------------------


def test_dingtalk_sign_matches_the_documented_recipe() -> None:
    # HMAC-SHA256(key=secret, msg="<timestamp>\n<secret>"), base64, then URL-encoded.
    assert sign("SECabc", 1700000000000) == "jcUpW0QmtKduN03n4JqQ0PBosVjqnM8gU7fIIvsDmCM%3D"


def ops_channel(**overrides: Any) -> ChannelSettings:
    return ChannelSettings(
        name="ops", type="dingtalk", url=Secret("https://x/robot/send?access_token=t"), **overrides
    )


def test_dingtalk_keyword_and_mentions() -> None:
    payload = build_payload(
        ops_channel(keyword="发布", at_mobiles=("13800000000",), at_user_ids=("u1",), at_all=False),
        Message("Deployment failed", "### Deployment failed\n\nbody"),
    )
    text = payload["markdown"]["text"]
    assert "发布" in text and "@13800000000" in text and "@u1" in text
    assert payload["at"] == {"atMobiles": ["13800000000"], "atUserIds": ["u1"], "isAtAll": False}


def test_chinese_text_over_the_byte_limit_is_trimmed_on_a_character_boundary() -> None:
    body = "### 发布失败\n\n" + "节点依赖缺失" * 3000 + "\n[打开 DataWorks](https://console/link)"
    payload = build_payload(ops_channel(), Message("发布失败", body))
    text = payload["markdown"]["text"]
    assert len(json.dumps(payload, ensure_ascii=False).encode("utf-8")) < MAX_BODY_BYTES
    assert "…(truncated)" in text
    assert text.endswith("[打开 DataWorks](https://console/link)")  # the console link survives
    kept = text.split("…(truncated)")[0]
    assert body.startswith(kept) and "\ufffd" not in text  # cut between characters, none mangled

"""The Slack channel: the mrkdwn layout, template blocks fitted to Block Kit, and `check` naming the limits.

Every payload that reaches the Slack emulator is judged there by Block Kit's documented limits and by
slack_sdk's models (see the `open_world` fixture): these tests also show that what the channel sends
passes that judge.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dwnotify.channels.base import TRIM_MARKER
from dwnotify.channels.slack import (
    MAX_BLOCKS,
    MAX_SECTION_CHARS,
    sections,
    split_text,
)
from tests.conftest import SLACK_HOOK, ManualClock, World, open_world

UNBREAKABLE = re.compile(r"<[^<>\n]*>|&(?:#[0-9]+|#x[0-9a-fA-F]+|[A-Za-z]+);")
LINK = "<https://dataworks.data.aliyun.com/cn-shanghai/datastudio?defaultProjectId=1&amp;x=2|R&amp;D 控制台>"


def section_texts(blocks: list[dict[str, Any]]) -> list[str]:
    return [block["text"]["text"] for block in blocks if block["type"] == "section"]


def tokens(text: str) -> list[str]:
    return UNBREAKABLE.findall(text)


# --- the mrkdwn layout ----------------------------------------------------------------------------


@pytest.mark.parametrize("offset", range(0, 60, 7))
def test_a_long_line_is_cut_at_whitespace_never_inside_an_entity_or_a_link(offset: int) -> None:
    # Words, entities and links in one 15,000-character line, shifted so that some straddle 3,000.
    line = "x" * offset + " " + " ".join(["R&amp;D", LINK, "a&lt;b&gt;c", "word"] * 150)
    texts = section_texts(sections(line))
    assert len(texts) > 1 and all(len(text) <= MAX_SECTION_CHARS for text in texts)
    assert [token for text in texts for token in tokens(text)] == tokens(line)
    assert " ".join(texts).split() == line.split()  # only the whitespace at each cut is gone


def test_text_without_whitespace_is_cut_before_an_entity_not_inside_it() -> None:
    line = "甲" * (MAX_SECTION_CHARS - 2) + "&amp;" + "依赖" * 3000  # no spaces, as Chinese often has
    texts = section_texts(sections(line))
    assert all(len(text) <= MAX_SECTION_CHARS for text in texts)
    assert "".join(texts) == line and texts[1].startswith("&amp;依赖")


def test_a_link_longer_than_a_section_is_still_within_the_limit() -> None:
    link = f"<https://x/{'a' * 4000}|open>"
    texts = section_texts(sections(f"see {link} now"))
    assert all(0 < len(text) <= MAX_SECTION_CHARS for text in texts)


def test_a_long_quoted_line_stays_quoted_on_its_next_section() -> None:
    texts = section_texts(sections("*Reason*\n> " + "失败原因很长 " * 1000))
    assert len(texts) > 1 and texts[0].startswith("*Reason*\n> ")  # the heading stays with its quote
    assert all(text.startswith("> ") for text in texts[1:])


def test_sections_are_verbatim_mrkdwn_within_the_block_limit() -> None:
    blocks = sections("\n".join(f"line {i} " + "x" * 2990 for i in range(80)))
    assert len(blocks) == MAX_BLOCKS and blocks[-2]["elements"][0]["text"] == TRIM_MARKER
    assert blocks[-1]["text"]["text"].startswith("line 79 ")
    for block in blocks:
        if block["type"] == "section":
            assert block["text"] == {"type": "mrkdwn", "text": block["text"]["text"], "verbatim": True}


PIECES = st.sampled_from(
    ["word", "字", " ", "\n", "&amp;", "&lt;", "&#x1F600;", LINK, "<!here>", "*b*", "x" * 40]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(PIECES, max_size=80).map("".join), st.integers(min_value=len(LINK) + 1, max_value=400))
def test_split_text_keeps_every_entity_and_link_whole(text: str, size: int) -> None:
    head, rest = split_text(text, size)
    assert len(head) <= size
    assert tokens(head) + tokens(rest) == tokens(text)
    assert text.startswith(head) and text.endswith(rest)
    assert text[len(head) : len(text) - len(rest)].strip() == ""  # only whitespace is dropped at the cut


# --- end to end: the emulator takes what the channel sends ----------------------------------------


def fail_run(world: World, message: str = "boom") -> str:
    stages = [{"code": "A", "step": 1, "name": "构建"}]
    return world.dataworks.add_run(
        10000, status="Fail", message=message, stages=stages, stage_statuses={"A": "Fail"}
    )


def test_a_long_mrkdwn_message_arrives_with_every_entity_whole(world: World) -> None:
    folder = world.tmp / "mine" / "slack"
    folder.mkdir(parents=True)
    (folder / "default.mrkdwn.j2").write_text("*{{ headline }}*\n{{ run.message }}\n", encoding="utf-8")
    world.config_overrides["templates"] = str(folder.parent)
    fail_run(world, message="a&b" * 4000)  # 28,000 characters escaped, an entity every 7
    assert world.tick().messages_failed == 0
    [message] = world.slack_messages()
    texts = section_texts(message["blocks"])
    assert len(texts) > 1 and "".join(texts).endswith("a&amp;b" * 4000)
    assert sum(text.count("&amp;") for text in texts) == 4000


def test_a_refused_payload_fails_the_world_that_did_not_expect_it(tmp_path: Path, clock: ManualClock) -> None:
    with pytest.raises(AssertionError, match="slack_sdk"), open_world(tmp_path, clock) as world:
        block = {"type": "section", "text": {"type": "plain_text", "text": "x", "verbatim": True}}
        response = httpx.post(f"{world.slack.base_url}/services/{SLACK_HOOK}", json={"blocks": [block]})
        assert response.status_code == 400

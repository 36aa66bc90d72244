"""The Slack channel: the mrkdwn layout, template blocks fitted to Block Kit, and `check` naming the limits.

Every payload that reaches the Slack emulator is judged there by Block Kit's documented limits and by
slack_sdk's models (see the `open_world` fixture): these tests also show that what the channel sends
passes that judge.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from dwnotify import cli, config
from dwnotify.channels.slack import (
    ELLIPSIS,
    MAX_BLOCKS,
    MAX_FIELD_CHARS,
    MAX_FIELDS,
    MAX_HEADER_CHARS,
    MAX_SECTION_CHARS,
    build_payload,
    fit_blocks,
    layout_problems,
    sections,
    split_text,
)
from dwnotify.message import Message
from dwnotify.text import TRIM_MARKER
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
@example(text=f"  {LINK}", size=len(LINK) + 1)  # a link that fits after leading whitespace moves whole
@given(st.lists(PIECES, max_size=80).map("".join), st.integers(min_value=len(LINK) + 1, max_value=400))
def test_split_text_keeps_every_entity_and_link_whole(text: str, size: int) -> None:
    head, rest = split_text(text, size)
    assert len(head) <= size
    assert tokens(head) + tokens(rest) == tokens(text)
    assert text.startswith(head) and text.endswith(rest)
    assert text[len(head) : len(text) - len(rest)].strip() == ""  # only whitespace is dropped at the cut


@settings(max_examples=40, deadline=None)
@given(st.lists(PIECES, min_size=200, max_size=3000).map("".join))
def test_sections_keep_every_character_entity_and_link_of_a_long_text(text: str) -> None:
    texts = section_texts(sections(text))
    assert all(0 < len(part) <= MAX_SECTION_CHARS for part in texts)
    assert [token for part in texts for token in tokens(part)] == tokens(text)
    assert re.sub(r"\s", "", "".join(texts)) == re.sub(r"\s", "", text)  # only whitespace goes at a cut


def test_long_mrkdwn_is_split_into_sections_within_block_kit_limits() -> None:
    blocks = sections("\n".join(f"line {i} " + "x" * 500 for i in range(400)))
    assert len(blocks) <= MAX_BLOCKS
    assert all(
        len(block["text"]["text"]) <= MAX_SECTION_CHARS for block in blocks if block["type"] == "section"
    )


# --- fitting a template's blocks ------------------------------------------------------------------


def text_block(kind: str, text: str, text_type: str = "mrkdwn") -> dict[str, Any]:
    return {"type": kind, "text": {"type": text_type, "text": text}}


def oversized_blocks() -> list[dict[str, Any]]:
    """The issue's template: a 200-character header, a 15,000-character section, 62 blocks."""
    blocks = [text_block("header", "发布失败 " + "h" * 195, "plain_text"), text_block("section", "s " * 7500)]
    blocks += [{"type": "divider"}] * 59
    return [*blocks, text_block("section", "<https://console|打开 DataWorks 控制台 · Open DataWorks>")]


def test_oversized_template_blocks_are_cut_to_block_kit_with_a_visible_marker() -> None:
    fitted = fit_blocks(oversized_blocks())
    assert fitted.blocks is not None and len(fitted.blocks) == MAX_BLOCKS
    header, section = fitted.blocks[0]["text"]["text"], fitted.blocks[1]["text"]["text"]
    assert len(header) <= MAX_HEADER_CHARS and header.endswith(ELLIPSIS) and header.startswith("发布失败 ")
    assert len(section) <= MAX_SECTION_CHARS and section.endswith(ELLIPSIS)
    assert fitted.blocks[-2]["elements"][0]["text"] == TRIM_MARKER
    assert "Open DataWorks" in fitted.blocks[-1]["text"]["text"]  # the console link is kept
    assert fitted.problems == [
        "block 1 (header): text over Block Kit's limit of 150 characters",
        "block 2 (section): text over Block Kit's limit of 3,000 characters",
        "more than 50 blocks, Block Kit's limit for a message",
    ]


def test_fields_and_context_elements_are_capped_with_a_count_of_the_rest() -> None:
    fields = [{"type": "mrkdwn", "text": f"*{i}* " + "f" * 2500} for i in range(12)]
    elements = [{"type": "plain_text", "text": str(i)} for i in range(13)]
    fitted = fit_blocks([{"type": "section", "fields": fields}, {"type": "context", "elements": elements}])
    assert fitted.blocks is not None
    kept, context = fitted.blocks[0]["fields"], fitted.blocks[1]["elements"]
    assert len(kept) == MAX_FIELDS and kept[-1]["text"] == f"{ELLIPSIS}(+3 more)"
    assert all(len(field["text"]) <= MAX_FIELD_CHARS for field in kept)
    assert len(context) == 10 and context[-1]["text"] == f"{ELLIPSIS}(+4 more)"
    assert fitted.problems == [
        "block 1 (section): a field's text over Block Kit's limit of 2,000 characters",
        "block 1 (section): more than 10 fields, Block Kit's limit",
        "block 2 (context): more than 10 elements, Block Kit's limit",
    ]


def test_empty_text_objects_are_left_out_and_a_block_left_empty_is_dropped() -> None:
    fitted = fit_blocks(
        [
            text_block("header", "", "plain_text"),
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": ""},
                "fields": [{"type": "mrkdwn", "text": "f"}],
            },
            text_block("section", ""),
            text_block("section", "ok"),
        ]
    )
    assert fitted.blocks == [
        {"type": "section", "fields": [{"type": "mrkdwn", "text": "f"}]},
        text_block("section", "ok"),
    ]
    assert len(fitted.problems) == 3


def test_blocks_no_cut_can_repair_are_sent_in_the_mrkdwn_layout() -> None:
    message = Message("t", "*t*\nthe text", (text_block("header", "mrkdwn in a header"),))
    assert fit_blocks(message.blocks or ()).blocks is None
    assert build_payload(message)["blocks"] == sections("*t*\nthe text")
    assert layout_problems(message.blocks or ()) == [
        "block 1 (header): text must be a plain_text text object; "
        "the message is sent in the plain mrkdwn layout instead"
    ]


def test_blocks_within_the_limits_are_sent_as_they_are() -> None:
    blocks = (text_block("header", "h", "plain_text"), {"type": "divider"}, text_block("section", "s"))
    assert fit_blocks(blocks).problems == []
    assert build_payload(Message("t", "t", blocks))["blocks"] == list(blocks)


# --- end to end: the emulator takes what the channel sends ----------------------------------------

OVERSIZED_TEMPLATE = """[
  {"type": "header", "text": {"type": "plain_text", "text": "{{ headline }} {{ 'h' * 200 }}"}},
  {"type": "section", "text": {"type": "mrkdwn", "text": "{{ ('`' ~ run.id ~ '` & more ') * 600 }}"}},
  {% for i in range(59) %}{"type": "divider"},{% endfor %}
  {"type": "section", "text": {"type": "mrkdwn", "text": "<{{ run.console_url }}|Open DataWorks>"}}
]"""


def write_templates(folder: Path, name: str, source: str) -> Path:
    (folder / "slack").mkdir(parents=True, exist_ok=True)
    (folder / "slack" / f"{name}.blocks.json.j2").write_text(source, encoding="utf-8")
    return folder


def fail_run(world: World, message: str = "boom") -> str:
    stages = [{"code": "A", "step": 1, "name": "构建"}]
    return world.dataworks.add_run(
        10000, status="Fail", message=message, stages=stages, stage_statuses={"A": "Fail"}
    )


def test_an_oversized_blocks_template_is_delivered_fitted_not_failed(world: World) -> None:
    world.config_overrides["templates"] = str(
        write_templates(world.tmp / "mine", "default", OVERSIZED_TEMPLATE)
    )
    fail_run(world)
    summary = world.tick()
    assert (summary.messages_failed, summary.messages_sent) == (0, 2)
    [message] = world.slack_messages()
    assert len(message["blocks"]) == MAX_BLOCKS and message["blocks"][0]["text"]["text"].endswith(ELLIPSIS)
    assert message["blocks"][-1]["text"]["text"].endswith("|Open DataWorks>")


def test_a_long_mrkdwn_message_arrives_with_every_entity_whole(world: World) -> None:
    folder = world.tmp / "mine" / "slack"
    folder.mkdir(parents=True)
    (folder / "default.mrkdwn.j2").write_text("*{{ headline }}*\n{{ run.message }}\n", encoding="utf-8")
    world.config_overrides["templates"] = str(folder.parent)
    fail_run(world, message="a&b" * 3000)  # 21,000 characters once escaped, an entity every 7
    assert world.tick().messages_failed == 0
    [message] = world.slack_messages()
    texts = section_texts(message["blocks"])
    assert len(texts) > 1 and "".join(texts).endswith("a&amp;b" * 3000)
    assert sum(text.count("&amp;") for text in texts) == 3000


def test_a_refused_payload_fails_the_world_that_did_not_expect_it(tmp_path: Path, clock: ManualClock) -> None:
    with pytest.raises(AssertionError, match="slack_sdk"), open_world(tmp_path, clock) as world:
        block = {"type": "section", "text": {"type": "plain_text", "text": "x", "verbatim": True}}
        response = httpx.post(f"{world.slack.base_url}/services/{SLACK_HOOK}", json={"blocks": [block]})
        assert response.status_code == 400


# --- check names the template and the limit -------------------------------------------------------


def check_config(tmp_path: Path, source: str) -> Path:
    write_templates(tmp_path / "mine", "wide", source)
    data = {
        "dataworks": {"region": "cn-shanghai", "projects": [10000]},
        "channels": {"team": {"type": "slack", "url": "https://hooks.slack.com/services/T0/B0/XXXX"}},
        "templates": "./mine",
        "rules": [{"name": "all", "events": ["run.failed"], "channels": ["team"], "template": "wide"}],
    }
    path = tmp_path / "notifier.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_check_reports_a_blocks_template_that_breaks_block_kit_limits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = check_config(tmp_path, OVERSIZED_TEMPLATE)
    assert cli.main(["--config", str(path), "check"]) == cli.EXIT_CONFIG
    lines = capsys.readouterr().err.splitlines()
    prefix = "config error: rules[0].template: slack/wide.blocks.json.j2: "
    assert lines == [
        f"{prefix}block 1 (header): text over Block Kit's limit of 150 characters (rendering run.failed)",
        f"{prefix}block 2 (section): text over Block Kit's limit of 3,000 characters (rendering run.failed)",
        f"{prefix}more than 50 blocks, Block Kit's limit for a message (rendering run.failed)",
    ]


def test_check_accepts_a_blocks_template_within_the_limits(tmp_path: Path) -> None:
    source = json.dumps(
        [text_block("header", "{{ headline }}", "plain_text"), text_block("section", "`{{ run.id }}`")]
    )
    settings = config.load(check_config(tmp_path, source), {})
    assert cli.check_templates(settings) == []


def test_a_pipe_in_a_link_target_is_encoded_so_it_cannot_end_the_url() -> None:
    from dwnotify.channels.slack import MARKUP

    assert MARKUP.url("https://x.test/a|b?c=<d>") == "https://x.test/a%7Cb?c=&lt;d&gt;"
    assert MARKUP.link("https://x.test/a|b", "run|1") == "<https://x.test/a%7Cb|run/1>"

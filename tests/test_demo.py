"""`dwnotify demo`: the scripted morning runs end to end on the emulators and shows every kind of message."""

from __future__ import annotations

import re

from dwnotify.demo import run_demo


def test_the_demo_plays_the_morning_with_one_living_message_per_run() -> None:
    lines: list[str] = []
    assert run_demo(echo=lines.append) == 0
    output = "\n".join(lines)
    summary = lines[-1]
    found = re.search(
        r"(\d+) living Slack app messages edited (\d+) times with (\d+) thread replies", summary
    )
    assert found is not None, summary
    living, edits, replies = map(int, found.groups())
    posted = output.count("Slack app #deploys, posted")
    assert living == posted > 0 and edits > living and replies > 0
    assert "<@U0HANMM02>" in output  # a failure's thread reply mentions its creator
    assert "@hanmeimei 请查看并处理" in output  # and so does DingTalk's failure message
    assert "DingTalk #ops" in output and "Slack #team" in output

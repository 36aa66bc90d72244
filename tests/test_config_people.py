"""config.py: the top-level `people` map and a rule's `mention`, read from YAML text (so that YAML's own
numbers are what the parser sees), every problem named by its dotted path and all of them in one run."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from dwnotify.config import load
from dwnotify.errors import ConfigError
from dwnotify.settings import PersonSettings

HEAD = """\
dataworks:
  region: cn-shanghai
  projects: [10000]
channels:
  ops:
    type: dingtalk
    url: https://oapi.dingtalk.com/robot/send?access_token=0123abcd
"""
RULES = """\
rules:
  - name: failures
    events: [run.failed]
    channels: [ops]
"""


def loaded(tmp_path: Path, people: str = "", rules: str = RULES) -> object:
    path = tmp_path / "notifier.yaml"
    path.write_text(HEAD + rules + textwrap.dedent(people), encoding="utf-8")
    return load(path, {})


def problems(tmp_path: Path, people: str = "", rules: str = RULES) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        loaded(tmp_path, people, rules)
    return [problem.removeprefix(f"{tmp_path / 'notifier.yaml'}: ") for problem in caught.value.problems]


def test_people_are_read_by_their_user_id_as_text(tmp_path: Path) -> None:
    settings = loaded(
        tmp_path,
        """\
        people:
          1379463177661024:
            name: 张三 Zhang San
            dingtalk_mobile: 13800000000
            dingtalk_user_id: zhangsan
            slack_user_id: U0123ABCD
            lark_open_id: ou_7d8a6e6df7621556ce0d21922b676706
            wecom_user_id: zhang.san@corp
          "204":
            name: 2048
            dingtalk_mobile: "+86-13900000000"
          "305": {}
          "406":
        """,
    )
    people = settings.people  # type: ignore[attr-defined]
    assert set(people) == {"1379463177661024", "204", "305", "406"}  # YAML's integer key, as text
    assert people["1379463177661024"] == PersonSettings(
        id="1379463177661024",
        name="张三 Zhang San",
        dingtalk_mobile="13800000000",  # a YAML number, read as text
        dingtalk_user_id="zhangsan",
        slack_user_id="U0123ABCD",
        lark_open_id="ou_7d8a6e6df7621556ce0d21922b676706",
        wecom_user_id="zhang.san@corp",
    )
    assert people["204"] == PersonSettings("204", name="2048", dingtalk_mobile="+86-13900000000")
    assert people["305"] == people["406"].__class__("305") and people["406"] == PersonSettings("406")
    person = settings.person  # type: ignore[attr-defined]
    assert person(1379463177661024) is people["1379463177661024"]  # a Creator read as a number
    assert person(" 204 ") is people["204"] and person("999") is None and person(None) is None


def test_no_people_and_no_mention_is_the_default(tmp_path: Path) -> None:
    settings = loaded(tmp_path)
    assert dict(settings.people) == {}  # type: ignore[attr-defined]
    assert settings.rules[0].mention is None  # type: ignore[attr-defined]


def test_a_rule_may_mention_the_creator(tmp_path: Path) -> None:
    settings = loaded(tmp_path, rules=RULES + "    mention: creator\n")
    assert settings.rules[0].mention == "creator"  # type: ignore[attr-defined]


def test_every_problem_is_reported_at_once_with_its_dotted_path(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """\
        people:
          1379463177661024:
            name: 张三
            slack_user_id: "<!channel>"
            lark_open_id: ou_x"><at id=all
            dingtalk_mobile: "@13800000000"
            wecom_userid: zhangsan
          "1379463177661024": {name: twice}
          true: {name: a flag}
          "": {name: nobody}
          "777":
            wecom_user_id: ""
            name: [a, list]
            dingtalk_user_id: 12.5
          "888": [not, a, mapping]
        """,
        rules=RULES + "    mention: owner\n",
    )
    assert sorted(found) == sorted(
        [
            "rules[0].mention: 'owner' is not one of 'creator'",
            "people.1379463177661024.slack_user_id: must be a Slack member ID such as U0123ABCD (profile, "
            "then Copy member ID): U or W, then upper-case letters and digits (got '<!channel>')",
            "people.1379463177661024.lark_open_id: must be a Lark/Feishu open_id such as "
            "ou_7d8a6e6df7621556ce0d21922b676706 (custom bots mention by open_id only) "
            "(got 'ou_x\"><at id=all')",
            "people.1379463177661024.dingtalk_mobile: must be a mobile number such as 13800000000 or "
            "+86-13800000000 (digits, an optional + and dashes) (got '@13800000000')",
            "people.1379463177661024.wecom_userid: unknown key (did you mean 'wecom_user_id'?)",
            "people.1379463177661024: is the same user id as the key 1379463177661024; list each person once",
            "people.True: a DataWorks user id must be text or a whole number, not a boolean",
            "people['']: a DataWorks user id must not be empty",
            "people.777.wecom_user_id: must not be empty",
            "people.777.name: expected a string, got a list",
            "people.777.dingtalk_user_id: expected a string, got a number",
            "people.888: expected a mapping, got a list",
        ]
    )


def test_people_must_be_a_mapping(tmp_path: Path) -> None:
    assert problems(tmp_path, "people: [1379463177661024]\n") == [
        "people: expected a mapping of DataWorks user ids to people, got a list"
    ]


# Each id's format: what the service gives such ids, and nothing that could open or close markup.
FORMATS = [
    ("dingtalk_mobile", ["13800000000", "+86-13800000000", "+852-9123-4567", "12345"]),
    ("dingtalk_user_id", ["zhangsan", "manager4220", "zhang.san-01_x", "0123456789"]),
    ("slack_user_id", ["U0123ABCD", "W012A3CDE", "U02UD2WE3HA"]),
    ("lark_open_id", ["ou_7d8a6e6df7621556ce0d21922b676706", "ou_A1"]),
    ("wecom_user_id", ["zhangsan", "zhang.san@corp.com", "0a_b-c"]),
]
REFUSED = [
    ("dingtalk_mobile", ["1380000000O", "138 0000 0000", "+86--138000", "1234", "+", "13800000000>"]),
    ("dingtalk_user_id", ["zhang san", "_zhang", "zhang@corp", "a" * 65, "u1*", "u1]"]),
    ("slack_user_id", ["u0123abcd", "C0123ABCD", "U0123ABCD>", "<@U0123ABCD>", "U0123|x", "U"]),
    ("lark_open_id", ["ou_", "on_7d8a6e6d", "7d8a6e6d", 'ou_x"', "ou_x></at><at id=all", "ou_a b"]),
    ("wecom_user_id", ["<@all>", "a>b", "-zhang", "zhang san", "a" * 65, "@all"]),
]


@pytest.mark.parametrize(("key", "values"), FORMATS)
def test_each_chat_id_in_its_service_format_is_taken(tmp_path: Path, key: str, values: list[str]) -> None:
    entries = "".join(f'  "{n}": {{{key}: "{value}"}}\n' for n, value in enumerate(values, 1))
    people = loaded(tmp_path, "people:\n" + entries).people  # type: ignore[attr-defined]
    assert [getattr(people[str(n)], key) for n in range(1, len(values) + 1)] == values


@pytest.mark.parametrize(("key", "values"), REFUSED)
def test_a_chat_id_that_could_carry_markup_is_refused(tmp_path: Path, key: str, values: list[str]) -> None:
    entries = "".join(f"  \"{n}\": {{{key}: '{value}'}}\n" for n, value in enumerate(values, 1))
    found = problems(tmp_path, "people:\n" + entries)
    assert len(found) == len(values)
    for n, problem in enumerate(found, 1):
        assert problem.startswith(f"people.{n}.{key}: must be ")


def test_a_check_prints_each_people_problem_as_a_config_error(tmp_path: Path) -> None:
    from tests.helpers import dwnotify

    path = tmp_path / "notifier.yaml"
    path.write_text(HEAD + RULES + "people:\n  42: {slack_user_id: nobody}\n", encoding="utf-8")
    result = dwnotify("check", "--config", str(path))
    assert result.returncode == 2
    assert result.stderr.startswith("config error: people.42.slack_user_id: must be a Slack member ID")


def test_every_chat_id_field_of_a_person_is_declared_by_a_channel_type() -> None:
    from dataclasses import fields

    from dwnotify.channels import CHANNEL_TYPES
    from dwnotify.settings import PersonSettings

    declared = {key for kind in CHANNEL_TYPES.values() for key in kind.person_ids}
    assert declared == {item.name for item in fields(PersonSettings)} - {"id", "name"}

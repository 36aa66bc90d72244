"""The config's `people` map: who a DataWorks user (a run's Creator) is in each chat service.

Read into `PersonSettings` with every problem named by its dotted path, like the rest of the config.
"""

from __future__ import annotations

import re

from dwnotify.interpolate import Loc
from dwnotify.settings import PersonSettings
from dwnotify.yamlcheck import Checker, kind

# What a rule's `mention` may name: the person who started the run.
MENTIONS = ("creator",)
# Each chat id as its service writes it. The formats leave out every character that could end the
# mention dwnotify writes around it or start other markup (`<`, `>`, `|`, `*`, spaces, quotes, ...):
# these ids go into messages as they are, unlike the values templates interpolate.
_PERSON_IDS = {
    # DingTalk: mainland numbers as digits, others as +<country>-<number> (its user admin API's form).
    "dingtalk_mobile": (
        re.compile(r"\+?[0-9](?:-?[0-9]){4,19}"),
        "must be a mobile number such as 13800000000 or +86-13800000000 (digits, an optional + and dashes)",
    ),
    "dingtalk_user_id": (
        re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"),
        "must be a DingTalk userid: up to 64 letters, digits, '_', '.' and '-', starting with a letter "
        "or digit",
    ),
    "slack_user_id": (
        re.compile(r"[UW][A-Z0-9]{2,30}"),
        "must be a Slack member ID such as U0123ABCD (profile, then Copy member ID): U or W, then "
        "upper-case letters and digits",
    ),
    "lark_open_id": (
        re.compile(r"ou_[A-Za-z0-9]{1,64}"),
        "must be a Lark/Feishu open_id such as ou_7d8a6e6df7621556ce0d21922b676706 (custom bots mention "
        "by open_id only)",
    ),
    # WeCom: "1~64 bytes of digits, letters and _-@., the first a letter or digit" (its member API).
    "wecom_user_id": (
        re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}"),
        "must be a WeCom userid: up to 64 letters, digits, '_', '-', '@' and '.', starting with a letter "
        "or digit",
    ),
}
_PERSON_KEYS = ("name", *_PERSON_IDS)


def parse_people(c: Checker, value: object, loc: Loc) -> dict[str, PersonSettings]:
    """`people`: DataWorks user id (YAML may read it as a number; kept as text) -> who they are in chat."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        c.wrong_type(loc, "a mapping of DataWorks user ids to people", value)
        return {}
    people: dict[str, PersonSettings] = {}
    first_key: dict[str, object] = {}
    for key, item in value.items():
        here = (*loc, str(key))
        if isinstance(key, bool) or not isinstance(key, (str, int)):
            c.add(here, f"a DataWorks user id must be text or a whole number, not {kind(key)}")
            continue
        user_id = str(key).strip()
        if not user_id:
            c.add(here, "a DataWorks user id must not be empty")
            continue
        if user_id in first_key:
            c.add(here, f"is the same user id as the key {first_key[user_id]!r}; list each person once")
            continue
        first_key[user_id] = key
        person = _person(c, user_id, item, here)
        if person is not None:
            people[user_id] = person
    return people


def _person(c: Checker, user_id: str, value: object, loc: Loc) -> PersonSettings | None:
    if value is None:  # `"1379...":` alone: a person known by id only, nothing to mention
        return PersonSettings(user_id)
    f = c.section(value, loc, optional=_PERSON_KEYS)
    if f is None:
        return None
    ids = {key: _person_id(c, *f.at(key), *rule) for key, rule in _PERSON_IDS.items()}
    return PersonSettings(user_id, name=c.text(*f.at("name"), numbers=True) or "", **ids)


def _person_id(c: Checker, value: object, loc: Loc, pattern: re.Pattern[str], rule: str) -> str:
    text = c.text(value, loc, numbers=True)  # a YAML number (a mobile, a numeric id) is read as text
    if text is not None and not pattern.fullmatch(text):
        c.add(loc, rule, text)
        return ""
    return text or ""

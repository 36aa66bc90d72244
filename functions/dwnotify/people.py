"""The config's `people` map: who a DataWorks user (a run's Creator) is in each chat service.

Read into `PersonSettings` with every problem named by its dotted path, like the rest of the config.
"""

from __future__ import annotations

from dwnotify.channels import CHANNEL_TYPES
from dwnotify.channels.kind import PersonId
from dwnotify.interpolate import Loc
from dwnotify.settings import PersonSettings
from dwnotify.yamlcheck import Checker, kind

# What a rule's `mention` may name: the person who started the run.
MENTIONS = ("creator",)
# Each `people` field that holds a chat service's id, with its form: declared by the channel types.
_PERSON_IDS: dict[str, PersonId] = {
    key: form for channel_type in CHANNEL_TYPES.values() for key, form in channel_type.person_ids.items()
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
    ids = {key: _person_id(c, *f.at(key), form) for key, form in _PERSON_IDS.items()}
    return PersonSettings(user_id, name=c.text(*f.at("name"), numbers=True) or "", **ids)


def _person_id(c: Checker, value: object, loc: Loc, form: PersonId) -> str:
    text = c.text(value, loc, numbers=True)  # a YAML number (a mobile, a numeric id) is read as text
    if text is not None and not form.pattern.fullmatch(text):
        c.add(loc, form.problem, text)
        return ""
    return text or ""

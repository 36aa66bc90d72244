"""DingTalk custom robots: signed webhooks that answer every error as HTTP 200 with an errcode.

Markdown (DingTalk documents headings, bold, italic, links, images, lists and quotes; clients also
render some HTML such as `<font>`): DingTalk documents no escaping, so values are escaped as
CommonMark does (MARKUP, `base.escape_markdown`), written so that a client that ignored backslash
escapes would show stray backslashes but still no link, image, tag, heading or list: a value like
`[x](http://evil)` stays text. An `@13800000000` in a value mentions no one: a markdown mention
needs the mobile in `at.atMobiles` too ("在 text 内容里要有 @人的手机号" and the list, DingTalk's
custom robot guide), and only the channel's configured `at_mobiles` and the people a message
mentions (`Message.mentions`, from the config's `people`) go there.

A person is mentioned by mobile when the config gives one (`atMobiles` is what every custom robot
takes), else by userid (`atUserIds`), with the same `@<mobile>` / `@<userid>` in the text.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import DeliveryError
from ..message import Message
from ..settings import ChannelSettings, PersonSettings
from ..text import fit_encoded
from .base import MARKDOWN, HttpChannel, encode_json, raise_for_transport
from .kind import WEBHOOK, ChannelType, DigestRules, PersonId, RateBudget, TemplateFormat

MAX_BODY_BYTES = 20_000
# Kept free below the limit: how DingTalk counts (its own re-encoding, whitespace) is not documented.
_HEADROOM_BYTES = 100
_JSON = {"Content-Type": "application/json; charset=utf-8"}
MARKUP = MARKDOWN
_SILENCED_S = 600.0  # a robot sent too fast is silenced for ten minutes
_RETRYABLE_ERRCODES = frozenset({-1, 130101})
_REASONS = {
    130101: "sending too fast: the robot is silenced for 10 minutes",
    310000: "rejected by the robot's security settings (signature, keyword or IP allow-list)",
    300001: "the access token does not exist",
    400402: "the markdown title is missing",
    460101: "the message is over 20,000 bytes",
    101002: "the message is over 20,000 bytes",
}


def sign(secret: str, timestamp_ms: int) -> str:
    """The `sign` query value for a robot with a signing secret, at `timestamp_ms`."""
    digest = hmac.new(secret.encode("utf-8"), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256).digest()
    return urllib.parse.quote_plus(base64.b64encode(digest).decode("ascii"))


def dingtalk_mention(person: PersonSettings) -> str:
    """`@<mobile>`, else `@<userid>`: the text a markdown mention needs beside its `at` entry."""
    return f"@{person.dingtalk_mobile or person.dingtalk_user_id}" if _mentionable(person) else ""


def _mentionable(person: PersonSettings) -> bool:
    return bool(person.dingtalk_mobile or person.dingtalk_user_id)


def _merged(*groups: Iterable[str]) -> list[str]:
    """The ids of every group in order, each once."""
    return list(dict.fromkeys(item for group in groups for item in group))


def build_payload(settings: ChannelSettings, message: Message) -> dict[str, Any]:
    """The markdown message with the keyword and @mentions the robot needs, its body within 20,000 bytes.

    The `at` lists are the channel's configured ones and the message's mentioned people, each once;
    a person's `@` text the template left out is added to the footer (DingTalk highlights nothing
    without it). DingTalk measures the request body, not the text: JSON escaping of quotes,
    backslashes and control characters can make a body several times its text, so the encoded body
    is what is fitted.
    """
    people = [person for person in message.mentions if _mentionable(person)]
    mobiles = _merged(settings.at_mobiles, (p.dingtalk_mobile for p in people if p.dingtalk_mobile))
    user_ids = _merged(settings.at_user_ids, (p.dingtalk_user_id for p in people if not p.dingtalk_mobile))
    configured = [f"@{mobile}" for mobile in settings.at_mobiles]
    configured += [f"@{user_id}" for user_id in settings.at_user_ids]
    missing = [dingtalk_mention(p) for p in people if dingtalk_mention(p) not in message.text]
    footer = " ".join(_merged(configured, missing))
    if settings.keyword and settings.keyword not in message.text and settings.keyword not in message.title:
        footer = f"{footer} {settings.keyword}".strip()
    title = (message.title or "DataWorks")[:100]

    def payload(text: str) -> dict[str, Any]:
        text = f"{text}\n\n{footer}" if footer else text
        keyword = settings.keyword
        return {
            "msgtype": "markdown",
            "markdown": {
                "title": f"{title} {keyword}" if keyword and keyword not in text else title,
                "text": text,
            },
            "at": {"atMobiles": mobiles, "atUserIds": user_ids, "isAtAll": settings.at_all},
        }

    limit = MAX_BODY_BYTES - _HEADROOM_BYTES
    text = fit_encoded(message.text, lambda text: len(encode_json(payload(text))), limit)
    return payload(text)


class DingTalkChannel(HttpChannel):
    """Sends markdown messages to one DingTalk robot."""

    def _url(self) -> str:
        url = self._hook_url()
        if not self._settings.secret:
            return url
        timestamp_ms = int(self._clock() * 1000)
        signature = sign(self._settings.secret.reveal(), timestamp_ms)
        separator = "&" if "?" in url else "?"
        return f"{url}{separator}timestamp={timestamp_ms}&sign={signature}"

    def send(self, message: Message) -> None:
        """Post the message; DingTalk's errcode decides success, not the HTTP status."""
        body = encode_json(build_payload(self._settings, message))
        response = self._post(self._url(), content=body, headers=_JSON)
        raise_for_transport(self.name, response, 60.0)
        try:
            body = response.json()
            errcode = int(body.get("errcode", -1))
        except (ValueError, TypeError, AttributeError):
            raise DeliveryError("answer is not DingTalk JSON", channel=self.name, retryable=True) from None
        if errcode == 0:
            return
        reason = _REASONS.get(errcode, str(body.get("errmsg", ""))[:200])
        raise DeliveryError(
            f"errcode {errcode}: {reason}",
            channel=self.name,
            retryable=errcode in _RETRYABLE_ERRCODES,
            retry_after=_SILENCED_S if errcode == 130101 else None,
        )


def _check(options: Mapping[str, str | None]) -> list[tuple[str, str]]:
    secret = options.get("secret")
    if secret and not secret.startswith("SEC"):
        return [("secret", "a DingTalk signing secret starts with 'SEC' (is this the access token instead?)")]
    return []


# DingTalk: mainland numbers as digits, others as +<country>-<number> (its user admin API's form).
PERSON_IDS = {
    "dingtalk_mobile": PersonId(
        re.compile(r"\+?[0-9](?:-?[0-9]){4,19}"),
        "must be a mobile number such as 13800000000 or +86-13800000000 (digits, an optional + and dashes)",
    ),
    "dingtalk_user_id": PersonId(
        re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"),
        "must be a DingTalk userid: up to 64 letters, digits, '_', '.' and '-', starting with a letter "
        "or digit",
    ),
}

TYPE = ChannelType(
    name="dingtalk",
    options={
        **WEBHOOK,
        "secret": "secret",
        "keyword": "text",
        "at_mobiles": "strings",
        "at_user_ids": "strings",
        "at_all": "flag",
    },
    formats=(TemplateFormat("md", MARKUP),),
    # A robot is silenced for ten minutes after 20 messages in a minute: stay one below.
    rate=RateBudget(19, 60.0),
    # DingTalk documents no `---` rule: the messages of a digest are parted by a blank line.
    digest=DigestRules(17_000, heading="### {title}"),
    sender=DingTalkChannel,
    check=_check,
    mention=dingtalk_mention,
    person_ids=PERSON_IDS,
)

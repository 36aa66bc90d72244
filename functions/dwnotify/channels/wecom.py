"""WeCom (企业微信) group robots: markdown messages, success or failure in `errcode`.

What the official guide says ("群机器人配置说明", developer.work.weixin.qq.com/document/path/91770):

- `POST https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=<key>` with
  `{"msgtype": "markdown", "markdown": {"content": "..."}}`; the content is at most 4,096 bytes of
  UTF-8. WeCom's markdown: headings, bold, links, inline code, quotes and
  `<font color="info|comment|warning">`; no lists, tables or rules.
- Mentions in markdown are `<@userid>` in the content; `mentioned_mobile_list` exists for `text`
  messages only, so a markdown robot cannot mention by mobile number (and `at_mobiles` is refused).
- No escaping is documented (neither backslashes nor entities are said to work), so the values a
  template interpolates are made inert by a zero-width space (U+200B) that breaks the syntax without
  showing: after every `<` (no `<@userid>` mention, no `<font>` tag), between `]` and `(` (no link),
  between two `*` (no bold) and before a line-leading `#` or `>` (no heading, no quote). See MARKUP.
- Rate: 20 messages a minute per robot.
- Answers are HTTP 200 with `{"errcode", "errmsg"}`: 0 ok; 45009 "api freq out of limit" (retried
  after a minute); -1 system busy (retried); 93000 "invalid webhook url" (a wrong or deleted key),
  40058 invalid parameter such as "markdown.content exceed max length 4096", 44004 empty content,
  40008 invalid message type: permanent. errmsg continues with ", hint: [...], from ip: ..., more
  info at ..."; only the part before the hint is kept.
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import DeliveryError
from ..message import Message
from ..settings import ChannelSettings, PersonSettings
from ..text import fit_text
from .base import HttpChannel, Markup, markdown_url, raise_for_transport
from .kind import WEBHOOK, ChannelType, DigestRules, PersonId, RateBudget, TemplateFormat, url_must_contain

MAX_CONTENT_BYTES = 4_096
_RATE_LIMITED = 45009
_RATE_LIMIT_WAIT_S = 60.0
_RETRYABLE_ERRCODES = frozenset({-1, _RATE_LIMITED})
_EXPLAINED = {
    _RATE_LIMITED: "over 20 messages a minute",
    93000: "the robot key is wrong or the robot was removed",
}
_BREAK = "\u200b"  # zero-width space: seen by WeCom's parser, not by people
_INLINE = re.compile(r"(?<=<)|(?<=\])(?=\()|(?<=\*)(?=\*)")
_LINE_START = re.compile(r"(?m)^([ \t]*)(?=[#>])")


def escape_wecom_markdown(text: str) -> str:
    """A value as inert WeCom markdown: no `<@userid>` mention, `<font>` tag, link, bold, heading or quote."""
    return _LINE_START.sub(rf"\1{_BREAK}", _INLINE.sub(_BREAK, text))


def plain_wecom_markdown(markup: str) -> str:
    """WeCom markdown read back as plain text (the breaks taken out)."""
    return markup.replace(_BREAK, "")


MARKUP = Markup(escape_wecom_markdown, plain_wecom_markdown, markdown_url)


def wecom_mention(person: PersonSettings) -> str:
    """`<@userid>`, the markdown mention of a member (the config checked the userid's form), or ""."""
    return f"<@{person.wecom_user_id}>" if person.wecom_user_id else ""


def build_payload(settings: ChannelSettings, message: Message) -> dict[str, Any]:
    """The markdown message with `<@userid>` mentions, trimmed to 4,096 bytes."""
    mentions = " ".join(f"<@{user_id}>" for user_id in settings.at_user_ids)
    room = MAX_CONTENT_BYTES - (len(mentions.encode("utf-8")) + 2 if mentions else 0)
    content = fit_text(message.text.strip("\n") or message.title, room)
    if mentions:
        content = f"{content}\n\n{mentions}"
    return {"msgtype": "markdown", "markdown": {"content": content}}


class WeComChannel(HttpChannel):
    """Sends markdown messages to one WeCom group robot."""

    def send(self, message: Message) -> None:
        """Post the message; WeCom's errcode decides success, not the HTTP status."""
        payload = build_payload(self._settings, message)
        response = self._post(self._hook_url(), payload)
        raise_for_transport(self.name, response, _RATE_LIMIT_WAIT_S)
        try:
            body = response.json()
            errcode = int(body["errcode"])
        except (ValueError, TypeError, KeyError):
            raise DeliveryError("answer is not WeCom JSON", channel=self.name, retryable=True) from None
        if errcode == 0:
            return
        # Only WeCom's own words: the hint after them carries the caller's IP.
        reason = str(body.get("errmsg", "")).split(", hint:")[0][:200] or "no errmsg"
        if errcode in _EXPLAINED:
            reason = f"{reason} ({_EXPLAINED[errcode]})"
        raise DeliveryError(
            f"errcode {errcode}: {reason}",
            channel=self.name,
            retryable=errcode in _RETRYABLE_ERRCODES,
            retry_after=_RATE_LIMIT_WAIT_S if errcode == _RATE_LIMITED else None,
        )


# WeCom: "1~64 bytes of digits, letters and _-@., the first a letter or digit" (its member API).
PERSON_IDS = {
    "wecom_user_id": PersonId(
        re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}"),
        "must be a WeCom userid: up to 64 letters, digits, '_', '-', '@' and '.', starting with a letter "
        "or digit",
    ),
}

TYPE = ChannelType(
    name="wecom",
    options={**WEBHOOK, "at_user_ids": "strings"},  # markdown can only mention by userid, not by mobile
    formats=(TemplateFormat("md", MARKUP),),
    rate=RateBudget(19, 60.0),  # 20 messages a minute per robot, then errcode 45009
    digest=DigestRules(3_800),
    sender=WeComChannel,
    mention=wecom_mention,
    check=url_must_contain(
        "key=", "must be a WeCom group robot URL with its key (.../webhook/send?key=<key>)"
    ),
    person_ids=PERSON_IDS,
)

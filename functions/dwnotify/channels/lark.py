"""Lark / Feishu custom bots: an interactive card carrying our markdown, success or failure in `code`.

What the official guide says ("自定义机器人使用指南", open.feishu.cn/document/client-docs/bot-v3/
add-custom-bot, mirrored at open.larkoffice.com/document/ukTMukTMukTM/ucTM5YjL3ETO24yNxkjN):

- `POST https://open.feishu.cn/open-apis/bot/v2/hook/<token>` (or open.larksuite.com), JSON body
  `{"msg_type": "interactive", "card": {...}}`; the request body may not exceed 20 KB (we keep it
  under 20,000 bytes). The 30 KB card limit belongs to the app API (im/v1), not to custom bots.
- Rate: 100 requests a minute and 5 a second per bot; over it, or at busy times such as on the hour,
  code 11232 (frequency limited), which we retry.
- Signing ("签名校验"): `timestamp` (epoch seconds, within one hour of Lark's clock) and
  `sign` = base64(HMAC-SHA256(key=f"{timestamp}\\n{secret}", message=b"")) as body fields.
- Answers (HTTP 200 with a JSON body): `code` 0 is success (older bots answer only `StatusCode` 0);
  19001 token invalid, 19021 sign mismatch or timestamp over an hour off, 19022 IP not allowed,
  19024 keyword not found, 9499 bad request (malformed, or over 20 KB). All but 11232 are permanent.
- Card markdown (JSON 1.0): bold, italic, links, lists, code blocks and `---`; headings and quotes
  are JSON 2.0 only, so heading lines are sent as bold lines and the title goes in the card header.
  `<at id=all></at>` mentions everyone, `<at id=ou_...></at>` one person, `<a href>` and `<font>`
  tags work. That `id=` form is the card's (the rich text component page, JSON 1.0); `<at
  user_id="ou_...">name</at>` is the form of `text` messages, which a card shows as it is, and a
  custom bot can mention by open_id only (the Markdown module page: "自定义机器人仅支持使用open_id@人").
- Special characters ("如果你要展示的字符命中了 markdown 语法使用的特殊字符…需要对特殊字符进行 HTML
  转义", the Markdown component page): written as `&#<number>;` entities they show as themselves, so
  every value a template interpolates has `< > * ~ ` [ ] \\`, `_` outside words, `&` starting an
  entity and a line-leading heading, list or rule mark written that way (MARKUP): a stage named
  `<at id=all></at>` shows as text and mentions no one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import re
from typing import TYPE_CHECKING, Any

from ..errors import DeliveryError
from ..message import Message
from ..settings import ChannelSettings, PersonSettings
from ..text import fit_encoded
from .base import (
    MD_ENTITY,
    MD_UNDERSCORE,
    HttpChannel,
    Markup,
    encode_json,
    markdown_url,
    raise_for_transport,
)
from .kind import WEBHOOK, ChannelType, DigestRules, PersonId, RateBudget, TemplateFormat, url_must_contain

if TYPE_CHECKING:  # httpx is imported when the first message goes out (see base.HttpChannel)
    import httpx

MAX_BODY_BYTES = 20_000
MAX_TITLE_CHARS = 200
_RATE_LIMITED = 11232
_RATE_LIMIT_WAIT_S = 60.0  # the per-minute quota is the one a whole minute of sends can exhaust
_EXPLAINED = {
    19001: "was the bot removed, or the URL mistyped?",
    19021: "wrong secret, or a clock over an hour off",
    19022: "the bot's IP allow-list refused this sender",
    19024: "the bot's keyword is not in the message",
    9499: "malformed, or over 20 KB",
    _RATE_LIMITED: "over 100 messages a minute or 5 a second",
}
_HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
_ENTITIES = str.maketrans({ord(char): f"&#{ord(char)};" for char in "<>*~`[]\\"})
# A heading, a list item or a rule at a line's start.
_LINE_START = re.compile(r"(?m)^([ \t]*)(?:(#|[-+](?=[ \t]|$|--))|(\d{1,9})([.)])(?=[ \t]|$))")


def escape_card_markdown(text: str) -> str:
    """A value as inert card markdown: no mention, tag, link, emphasis, code, heading or list."""
    # An entity is shown as written; an underscore inside a word (ods_user_daily) reads as it is.
    escaped = MD_UNDERSCORE.sub("&#95;", MD_ENTITY.sub("&#38;", text).translate(_ENTITIES))
    return _LINE_START.sub(_entity_at_line_start, escaped)


def _entity_at_line_start(match: re.Match[str]) -> str:
    indent, mark, number, dot = match.groups()
    return indent + (f"&#{ord(mark)};" if mark else f"{number}&#{ord(dot)};")


MARKUP = Markup(escape_card_markdown, html.unescape, markdown_url)


def lark_mention(person: PersonSettings) -> str:
    """`<at id=ou_...></at>`, a card markdown mention by open_id (the config checked its form), or ""."""
    return f"<at id={person.lark_open_id}></at>" if person.lark_open_id else ""


def sign(secret: str, timestamp_s: int) -> str:
    """The `sign` body field for a bot with a signing secret, at `timestamp_s` (epoch seconds)."""
    key = f"{timestamp_s}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode("ascii")


def body_size(payload: dict[str, Any]) -> int:
    """Bytes on the wire: httpx 0.28 sends compact JSON with non-ASCII kept as UTF-8."""
    return len(encode_json(payload))


def _split_title(message: Message) -> tuple[str, str]:
    """The card header and the markdown body, without the body's first line when it repeats the title."""
    title = message.title.strip().strip("*# \t") or "DataWorks"
    first, _, rest = message.text.strip("\n").partition("\n")
    if html.unescape(first.strip().strip("*# \t")) == title and rest.strip():
        return title, rest.strip("\n")
    return title, message.text


def _card(title: str, markdown: str) -> dict[str, Any]:
    return {
        "msg_type": "interactive",
        "card": {
            "config": {"wide_screen_mode": True},
            "header": {"title": {"tag": "plain_text", "content": title}},
            "elements": [{"tag": "markdown", "content": markdown or "…"}],
        },
    }


def build_payload(settings: ChannelSettings, message: Message) -> dict[str, Any]:
    """The card, trimmed to the 20 KB request limit, with the bot's keyword in the header if missing."""
    title, markdown = _split_title(message)
    title = title[:MAX_TITLE_CHARS]
    markdown = _HEADING.sub(r"**\1**", markdown)
    keyword = settings.keyword or ""
    # Room for the signature fields (added later) and for the keyword.
    limit = MAX_BODY_BYTES - 120 - len(keyword.encode("utf-8"))
    markdown = fit_encoded(markdown, lambda text: body_size(_card(title, text)), limit)
    if keyword and keyword not in title and keyword not in markdown:
        title = f"{title} {keyword}"
    return _card(title, markdown)


class LarkChannel(HttpChannel):
    """Sends cards to one Lark / Feishu custom bot."""

    def send(self, message: Message) -> None:
        """Post the card; the `code` in the answer decides, whatever the HTTP status."""
        payload: dict[str, Any] = build_payload(self._settings, message)
        if self._settings.secret:
            timestamp_s = int(self._clock())
            payload["timestamp"] = str(timestamp_s)
            payload["sign"] = sign(self._settings.secret.reveal(), timestamp_s)
        response = self._post(self._hook_url(), payload)
        if response.status_code == 429 or response.status_code >= 500:
            raise_for_transport(self.name, response, _RATE_LIMIT_WAIT_S)
        code, text = _answer(response)
        if code == 0:
            return
        if code is None:
            retryable = response.status_code == 200  # a 200 that is not Lark's JSON: a proxy in the way
            raise DeliveryError(
                f"HTTP {response.status_code}: the answer is not Lark JSON",
                channel=self.name,
                retryable=retryable,
            )
        reason = text[:200] or "no msg"
        if code in _EXPLAINED:
            reason = f"{reason} ({_EXPLAINED[code]})"
        raise DeliveryError(
            f"code {code}: {reason}",
            channel=self.name,
            retryable=code == _RATE_LIMITED,
            retry_after=_RATE_LIMIT_WAIT_S if code == _RATE_LIMITED else None,
        )


def _answer(response: httpx.Response) -> tuple[int | None, str]:
    """`code` (or the older `StatusCode`) and `msg` of an answer; None when it is not Lark's JSON."""
    try:
        body = response.json()
    except ValueError:
        return None, ""
    if not isinstance(body, dict):
        return None, ""
    for key, text_key in (("code", "msg"), ("StatusCode", "StatusMessage")):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value, str(body.get(text_key, ""))
    return None, ""


PERSON_IDS = {
    "lark_open_id": PersonId(
        re.compile(r"ou_[A-Za-z0-9]{1,64}"),
        "must be a Lark/Feishu open_id such as ou_7d8a6e6df7621556ce0d21922b676706 (custom bots mention "
        "by open_id only)",
    ),
}

TYPE = ChannelType(
    name="lark",
    options={**WEBHOOK, "secret": "secret", "keyword": "text"},
    formats=(TemplateFormat("md", MARKUP),),
    # 5 a second and 100 a minute per bot; a tick's 8 s of waiting caps it near 40 sends.
    rate=RateBudget(5, 1.1, inline_wait_s=8.0),
    digest=DigestRules(16_000, separator="\n\n---\n\n"),
    sender=LarkChannel,
    mention=lark_mention,
    check=url_must_contain(
        "/bot/v2/hook/", "must be a Lark/Feishu custom bot URL (.../open-apis/bot/v2/hook/<token>)"
    ),
    person_ids=PERSON_IDS,
)

"""A generic JSON webhook, for receivers of your own (an incident tool, a relay, a bot).

No service defines this one; dwnotify does, and a receiver can rely on it:

    POST <url>
    Content-Type: application/json; charset=utf-8
    X-Dwnotify-Timestamp: 1795680000                 (epoch seconds; with the signature below)
    X-Dwnotify-Signature: sha256=<hex>               (only when the channel has a `secret`)

    {"title": "❌ 发布失败 · Deployment failed", "text": "<the rendered markdown>"}
    (plus "mentions": [...] when the message mentions someone, see below)

- `<hex>` is HMAC-SHA256(key=secret, message=f"{timestamp}.".encode() + body) over the raw body
  bytes, lower-case hex. A receiver checks it before parsing the body (compare in constant time)
  and refuses timestamps more than five minutes from its own clock, so a captured request cannot be
  replayed later.
- `text` is the message rendered from `webhook/<template>.md.j2`, at most 32,000 bytes of UTF-8
  (a longer one is trimmed, keeping its last line: the console link), and the whole body is at most
  64 KiB: a text that JSON escaping (quotes, backslashes, control characters) would grow past that
  is trimmed further. A digest of several messages is one post whose text joins them with `---` lines.
- Values interpolated into the template (names, messages, creators) are escaped as CommonMark text
  (`base.escape_markdown`): a receiver that renders the markdown shows them, links and all, as text.
- A message that mentions people (a rule's `mention: creator`) names them in the text as `@<name>`,
  plain escaped text (there is no chat service here to notify anyone), and lists them in the body as
  `"mentions": [{"id": "<DataWorks user id>", "name": "<name or id>"}]`, so that a receiver can
  notify them its own way. Their chat ids and mobiles are not sent: the receiver is not a chat.
- Any 2xx answer is success. 429 (waiting `Retry-After` seconds, 60 without one), 408 and 5xx are
  retried; any other status is permanent and reported with the first 200 characters of the answer,
  in which the URL and its path and query values are blanked.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import parse_qsl, urlsplit

from ..errors import DeliveryError
from ..message import Message
from ..settings import PersonSettings
from ..text import fit_encoded
from .base import MARKDOWN, HttpChannel, encode_json, escape_markdown, retry_after_seconds
from .kind import WEBHOOK, ChannelType, DigestRules, RateBudget, TemplateFormat

MAX_TEXT_BYTES = 32_000
MAX_BODY_BYTES = 64 * 1024
SIGNATURE_HEADER = "X-Dwnotify-Signature"
TIMESTAMP_HEADER = "X-Dwnotify-Timestamp"
_RATE_LIMIT_WAIT_S = 60.0
MARKUP = MARKDOWN


def sign(secret: str, timestamp_s: int, body: bytes) -> str:
    """The signature header value for `body` sent at `timestamp_s`: `sha256=<hex>`."""
    digest = hmac.new(secret.encode("utf-8"), f"{timestamp_s}.".encode() + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


def webhook_mention(person: PersonSettings) -> str:
    """`@<name>` as inert markdown: a receiver of our own has no mention syntax to notify with."""
    return escape_markdown(f"@{person.label}")


def encode_body(message: Message) -> bytes:
    """The JSON body, its text within MAX_TEXT_BYTES and itself within MAX_BODY_BYTES; sent as returned."""
    mentions = [{"id": person.id, "name": person.label} for person in message.mentions]

    def body(text: str) -> bytes:
        fields = {"title": message.title, "text": text}
        return encode_json({**fields, "mentions": mentions} if mentions else fields)

    def size(text: str) -> int:  # over the limit when the text alone is
        return len(body(text)) if len(text.encode("utf-8")) <= MAX_TEXT_BYTES else MAX_BODY_BYTES + 1

    return body(fit_encoded(message.text, size, MAX_BODY_BYTES))


def scrub(text: str, url: str) -> str:
    """`text` with the URL, and any path segment or query value long enough to be a secret, as `***`."""
    parts = urlsplit(url)
    secrets = [url, parts.path, parts.query, parts.password or "", *parts.path.split("/")]
    secrets += [value for _, value in parse_qsl(parts.query)]
    for secret in sorted({s for s in secrets if len(s) >= 8}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


class WebhookChannel(HttpChannel):
    """Posts signed JSON to one webhook of your own."""

    def _headers(self, body: bytes) -> dict[str, str]:
        headers = {"Content-Type": "application/json; charset=utf-8"}
        if self._settings.secret:
            timestamp_s = int(self._clock())
            headers[TIMESTAMP_HEADER] = str(timestamp_s)
            headers[SIGNATURE_HEADER] = sign(self._settings.secret.reveal(), timestamp_s, body)
        return headers

    def send(self, message: Message) -> None:
        """Post the message; any 2xx is success."""
        body = encode_body(message)
        url = self._hook_url()
        response = self._post(url, content=body, headers=self._headers(body))
        status = response.status_code
        if 200 <= status < 300:
            return
        answer = scrub(response.text.strip()[:2000], url)[:200]
        reason = f"HTTP {status} {answer}".strip()
        if status == 429:
            wait = retry_after_seconds(response, _RATE_LIMIT_WAIT_S)
            raise DeliveryError(reason, channel=self.name, retryable=True, retry_after=wait)
        raise DeliveryError(reason, channel=self.name, retryable=status == 408 or status >= 500)


TYPE = ChannelType(
    name="webhook",
    options={**WEBHOOK, "secret": "secret"},
    formats=(TemplateFormat("md", MARKUP),),
    rate=RateBudget(60, 60.0),
    digest=DigestRules(30_000, separator="\n\n---\n\n"),
    sender=WebhookChannel,
    mention=webhook_mention,
)

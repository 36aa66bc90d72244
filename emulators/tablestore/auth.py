"""Request authentication and response signing, written from the protocol's description.

A request carries `x-ots-*` headers and a signature over them:

    canonical = "/<Api>\\nPOST\\n\\n" + sorted "name:value" lines of the x-ots-* headers + "\\n"
    v2: x-ots-signature   = base64(HMAC-SHA1(secret, canonical))
    v4: x-ots-signaturev4 = base64(HMAC-SHA256(key, canonical + "ots")), where key is
        base64 of HMAC-SHA256 chained over "aliyun_v4"+secret, sign date, region, "ots",
        "aliyun_v4_request"

A response is signed with the same key (always HMAC-SHA1) over its own x-ots-* lines and the path:
`Authorization: OTS <access key id>:base64(HMAC-SHA1(key, lines + "\\n/<Api>"))`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

from emulators.tablestore.errors import auth_failed, invalid

API_VERSION = "2015-12-31"
MAX_SKEW_S = 15 * 60
REQUIRED_HEADERS = (
    "x-ots-date",
    "x-ots-apiversion",
    "x-ots-accesskeyid",
    "x-ots-instancename",
    "x-ots-contentmd5",
)
SIGNATURE_HEADERS = ("x-ots-signature", "x-ots-signaturev4")


@dataclass(frozen=True)
class Credentials:
    """What the emulated instance accepts."""

    access_key_id: str
    access_key_secret: str
    instance: str
    sts_token: str | None = None


def _b64_hmac(key: bytes, message: str, digest: str) -> str:
    return base64.b64encode(hmac.new(key, message.encode(), digest).digest()).decode()


def content_md5(body: bytes) -> str:
    """base64 of the body's MD5, as x-ots-contentmd5 carries it."""
    return base64.b64encode(hashlib.md5(body).digest()).decode()  # noqa: S324 - the protocol's choice


def header_lines(headers: Mapping[str, str]) -> str:
    """Sorted `name:value` lines of the x-ots-* headers, signatures left out."""
    lines = [
        f"{name.lower()}:{value.strip()}"
        for name, value in headers.items()
        if name.lower().startswith("x-ots-") and name.lower() not in SIGNATURE_HEADERS
    ]
    return "\n".join(sorted(lines))


def v4_key(secret: str, sign_date: str, region: str) -> bytes:
    """The v4 signing key (base64 text as bytes, as the client uses it)."""
    key = hmac.new(f"aliyun_v4{secret}".encode(), sign_date.encode(), "sha256").digest()
    for part in (region, "ots", "aliyun_v4_request"):
        key = hmac.new(key, part.encode(), "sha256").digest()
    return base64.b64encode(key)


def authenticate(
    credentials: Credentials, api: str, headers: Mapping[str, str], body: bytes, now: datetime
) -> bytes:
    """Check a request's headers, date, body digest and signature; return the signing key."""
    for name in REQUIRED_HEADERS:
        if name not in headers:
            raise invalid(f"Missing header: {name}.")
    if not any(name in headers for name in SIGNATURE_HEADERS):
        raise invalid("Missing header: x-ots-signature.")
    if headers["x-ots-apiversion"] != API_VERSION:
        raise invalid(f"Unsupported api version: {headers['x-ots-apiversion']}.")
    if headers["x-ots-accesskeyid"] != credentials.access_key_id:
        raise auth_failed("The AccessKeyID does not exist.")
    if headers["x-ots-instancename"] != credentials.instance:
        raise auth_failed("The instance is not found.")
    sent = headers["x-ots-date"]
    try:
        date = datetime.strptime(sent, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    except ValueError:
        raise invalid(f"Invalid date format: {sent}.") from None
    if abs((now - date).total_seconds()) > MAX_SKEW_S:
        raise auth_failed(f"Mismatch between system time and x-ots-date: {sent}.")
    if headers["x-ots-contentmd5"] != content_md5(body):
        raise auth_failed("Mismatch between MD5 value of request body and x-ots-contentmd5 in header.")
    canonical = f"/{api}\nPOST\n\n{header_lines(headers)}\n"
    if "x-ots-signaturev4" in headers:
        key = v4_key(
            credentials.access_key_secret,
            headers.get("x-ots-signdate", ""),
            headers.get("x-ots-signregion", ""),
        )
        expected, given = _b64_hmac(key, canonical + "ots", "sha256"), headers["x-ots-signaturev4"]
    else:
        key = credentials.access_key_secret.encode()
        expected, given = _b64_hmac(key, canonical, "sha1"), headers["x-ots-signature"]
    if not hmac.compare_digest(expected, given):
        raise auth_failed("Signature mismatch.")
    token = headers.get("x-ots-ststoken")
    if token is not None and credentials.sts_token is not None and token != credentials.sts_token:
        raise auth_failed("The security token is invalid.")
    return key


def response_headers(
    api: str, body: bytes, request_id: str, now: datetime, access_key_id: str, key: bytes | None
) -> dict[str, str]:
    """The x-ots-* headers of an answer, and its Authorization when a signing key is known."""
    headers = {
        "x-ots-contentmd5": content_md5(body),
        "x-ots-requestid": request_id,
        "x-ots-date": now.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "x-ots-contenttype": "protocol buffer",
    }
    if key is not None:
        signature = _b64_hmac(key, f"{header_lines(headers)}\n/{api}", "sha1")
        headers["Authorization"] = f"OTS {access_key_id}:{signature}"
    return headers

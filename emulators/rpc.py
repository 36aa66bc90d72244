"""What the Alibaba Cloud RPC (POP) gateway checks before a request reaches a product.

Written from the public "RPC signature V1" documentation, not from any client code:

    StringToSign = METHOD + "&" + enc("/") + "&" + enc(canonicalized query)
    canonicalized query = "&".join(enc(k) + "=" + enc(v) for k, v sorted by k), Signature left out
    enc = RFC 3986 percent-encoding: A-Z a-z 0-9 - _ . ~ stay, everything else %XX (space is %20)
    Signature = base64(HMAC-SHA1(key=AccessKeySecret + "&", msg=StringToSign))

Errors carry the gateway's codes, HTTP statuses and message wording. A signature mismatch answers
"... server string to sign is:<StringToSign>", which clients use to tell a wrong secret from a wrong
canonicalization: aliyun-python-sdk-core reports a typed `RpcRequest` whose own StringToSign matches
as `InvalidAccessKeySecret`, while a `CommonRequest` keeps `SignatureDoesNotMatch`.
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import hmac
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
TIMESTAMP_TOLERANCE_S = 15 * 60
NONCE_TTL_S = 15 * 60
BEIJING_OFFSET_S = 8 * 3600  # quota days follow China Standard Time

# Parameters the gateway consumes itself; a product never sees them.
SIGNING_PARAMS = frozenset(
    {
        "AccessKeyId",
        "Signature",
        "SignatureMethod",
        "SignatureVersion",
        "SignatureNonce",
        "SignatureType",
        "Timestamp",
        "SecurityToken",
    }
)
COMMON_PARAMS = SIGNING_PARAMS | {"Action", "Version", "Format", "RegionId"}
_REQUIRED = (
    "Action",
    "Version",
    "Format",
    "AccessKeyId",
    "SignatureMethod",
    "SignatureVersion",
    "SignatureNonce",
    "Timestamp",
)


ERROR_MESSAGES = {
    "Throttling.User": "Request was denied due to user flow control.",
    "Throttling.Api": "Request was denied due to api flow control.",
    "Throttling.System": "Request was denied due to system flow control.",
    "InternalError.System": "An internal error occurred; please try again later.",
    "Forbidden.Access": "You are not authorized to perform this operation.",
}


class AcsError(Exception):
    """An error answer: code, message and HTTP status, as the gateway or the product sends it."""

    def __init__(self, code: str, message: str, http_status: int = 400) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.http_status = http_status


def missing(name: str) -> AcsError:
    """The gateway's answer to a missing mandatory parameter."""
    return AcsError(
        "MissingParameter",
        f'The input parameter "{name}" that is mandatory for processing this request is not supplied.',
    )


def invalid(name: str, why: str = "") -> AcsError:
    """The gateway's answer to a parameter with a bad value."""
    return AcsError("InvalidParameter", f'The specified parameter "{name}" is not valid.{why}')


def new_request_id() -> str:
    """A RequestId in the gateway's shape (upper-case UUID)."""
    return str(uuid.uuid4()).upper()


def error_body(error: AcsError, request_id: str, host_id: str, product: str) -> dict[str, Any]:
    """The JSON error document Alibaba Cloud returns."""
    return {
        "RequestId": request_id,
        "HostId": host_id,
        "Code": error.code,
        "Message": error.message,
        "Recommend": (
            f"https://api.aliyun.com/troubleshoot?q={error.code}&product={product}&requestId={request_id}"
        ),
    }


def percent_encode(value: str) -> str:
    """RFC 3986 encoding of one UTF-8 string (`~` kept, space as %20)."""
    return quote(value, safe="~")


def string_to_sign(method: str, params: Mapping[str, str]) -> str:
    """The V1 StringToSign for `params` (Signature itself excluded)."""
    pairs = sorted((k, v) for k, v in params.items() if k != "Signature")
    canonical = "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in pairs)
    return f"{method.upper()}&{percent_encode('/')}&{percent_encode(canonical)}"


def signature(to_sign: str, secret: str) -> str:
    """base64(HMAC-SHA1(secret + "&", to_sign))."""
    digest = hmac.new(f"{secret}&".encode(), to_sign.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def parse_timestamp(value: str) -> float:
    """Epoch seconds of an ISO 8601 UTC `Timestamp` (`2026-11-28T08:00:00Z`)."""
    return float(calendar.timegm(time.strptime(value, TIMESTAMP_FORMAT)))


class Gateway:
    """Checks common parameters, signature, timestamp, nonce and STS token of one RPC request.

    `wall_clock` is the real time the client stamps requests with, not a product's scenario time.
    """

    def __init__(
        self,
        credentials: Mapping[str, str],
        security_token: str | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.credentials = dict(credentials)
        self.security_token = security_token
        self.wall_clock = wall_clock
        self._nonces: dict[str, float] = {}
        self._lock = threading.Lock()

    def check_common(self, params: Mapping[str, str]) -> None:
        """Presence and form of the common parameters (before the product looks at Action)."""
        for name in _REQUIRED:
            if not params.get(name):
                raise missing(name)
        if not params.get("Signature"):
            raise AcsError(
                "IncompleteSignature", "The request signature does not conform to Aliyun standards."
            )
        if params["SignatureMethod"] != "HMAC-SHA1" or params["SignatureVersion"] != "1.0":
            raise AcsError(
                "IncompleteSignature",
                "The request signature does not conform to Aliyun standards. "
                f"SignatureMethod {params['SignatureMethod']} / SignatureVersion "
                f"{params['SignatureVersion']} is not supported.",
            )
        if params["Format"].upper() != "JSON":
            raise invalid("Format", " This endpoint answers JSON only.")

    def authenticate(self, method: str, params: Mapping[str, str]) -> None:
        """Access key, timestamp window, signature, nonce reuse and STS token, in that order."""
        secret = self.credentials.get(params["AccessKeyId"])
        if secret is None:
            raise AcsError("InvalidAccessKeyId.NotFound", "Specified access key is not found.", 404)
        try:
            stamped = parse_timestamp(params["Timestamp"])
        except ValueError:
            raise AcsError(
                "InvalidTimeStamp.Format",
                f"Specified time stamp or date value is not well formatted: {params['Timestamp']}",
            ) from None
        now = self.wall_clock()
        if abs(now - stamped) > TIMESTAMP_TOLERANCE_S:
            raise AcsError("InvalidTimeStamp.Expired", "Specified time stamp or date value is expired.")
        expected_input = string_to_sign(method, params)
        if not hmac.compare_digest(signature(expected_input, secret).encode(), params["Signature"].encode()):
            raise AcsError(
                "SignatureDoesNotMatch",
                "Specified signature is not matched with our calculation. "
                f"server string to sign is:{expected_input}",
            )
        self._use_nonce(params["SignatureNonce"], now)
        self._check_token(params.get("SecurityToken"))

    def _use_nonce(self, nonce: str, now: float) -> None:
        with self._lock:
            for old, seen in list(self._nonces.items()):
                if now - seen > NONCE_TTL_S:
                    del self._nonces[old]
            if nonce in self._nonces:
                raise AcsError("SignatureNonceUsed", "Specified signature nonce was used already.")
            self._nonces[nonce] = now

    def _check_token(self, token: str | None) -> None:
        if self.security_token is None:
            if token is not None:
                raise AcsError(
                    "InvalidSecurityToken.MismatchWithAccessKey",
                    "Specified SecurityToken mismatch with the AccessKey.",
                )
            return
        if token is None:
            raise AcsError("MissingSecurityToken", "SecurityToken is mandatory for this access key.")
        if not hmac.compare_digest(token.encode(), self.security_token.encode()):
            raise AcsError("InvalidSecurityToken.Expired", "Specified SecurityToken is expired.")


@dataclass
class _Fault:
    action: str | None
    code: str
    http_status: int
    remaining: int
    message: str


class Faults:
    """Injected errors, served to the next matching calls in the order they were added."""

    def __init__(self) -> None:
        self._queue: list[_Fault] = []

    def add(self, action: str | None, code: str, http_status: int, times: int, message: str | None) -> None:
        """Fail the next `times` calls of `action` (None: any action) with this error."""
        text = message or ERROR_MESSAGES.get(code, f"The request failed ({code}).")
        self._queue.append(_Fault(action, code, http_status, times, text))

    def take(self, action: str | None) -> None:
        """Raise the first pending fault that matches `action`, if any."""
        for fault in self._queue:
            if fault.remaining > 0 and fault.action in (None, action):
                fault.remaining -= 1
                raise AcsError(fault.code, fault.message, fault.http_status)


@dataclass
class FlowControl:
    """Per-second and per-day call limits answered with `Throttling.User`, on the caller's clock."""

    qps: int | None
    daily: int | None
    window: deque[float] = field(default_factory=deque)
    days: dict[int, int] = field(default_factory=dict)

    def admit(self, now: float) -> None:
        """Count one call at `now`, or raise the throttling error."""
        day = int((now + BEIJING_OFFSET_S) // 86400)
        if self.daily is not None and self.days.get(day, 0) >= self.daily:
            raise AcsError(
                "Throttling.User",
                f"Request was denied due to user flow control: the daily quota of {self.daily} calls "
                "for this account is used up.",
                429,
            )
        while self.window and now - self.window[0] >= 1.0:
            self.window.popleft()
        if self.qps is not None and len(self.window) >= self.qps:
            raise AcsError("Throttling.User", ERROR_MESSAGES["Throttling.User"], 429)
        self.window.append(now)
        self.days[day] = self.days.get(day, 0) + 1

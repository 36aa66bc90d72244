"""What the Alibaba Cloud RPC (POP) gateway checks before a request reaches a product.

The gateway takes two signatures, each written here from Alibaba Cloud's public documentation and
from no client's code (the clients are what the emulators test):

HMAC-SHA1 in the query ("RPC signature V1"; Alibaba's SDK pages call it "V2"), what
aliyun-python-sdk-core and the official SDKs' `signature_algorithm='v2'` send:

    StringToSign = METHOD + "&" + enc("/") + "&" + enc(canonicalized query)
    canonicalized query = "&".join(enc(k) + "=" + enc(v) for k, v sorted by k), Signature left out
    enc = RFC 3986 percent-encoding: A-Z a-z 0-9 - _ . ~ stay, everything else %XX (space is %20)
    Signature = base64(HMAC-SHA1(key=AccessKeySecret + "&", msg=StringToSign))

ACS3-HMAC-SHA256 in headers ("Request syntax and signature method V3"), the official generated SDKs'
default: action, version, date and nonce travel as `x-acs-*` headers, only business parameters in
the query (or a form body), and

    Authorization: ACS3-HMAC-SHA256 Credential=<AccessKeyId>,SignedHeaders=<h1;h2;...>,Signature=<hex>
    CanonicalRequest = METHOD \n CanonicalURI ("/" for RPC) \n CanonicalQueryString \n
                       CanonicalHeaders \n SignedHeaders \n HashedRequestPayload
    CanonicalQueryString = "&".join(enc(k) + "=" + enc(v) for k, v sorted by k)
    CanonicalHeaders = "".join(name + ":" + trim(value) + "\n" for the signed names, lower case, sorted)
    HashedRequestPayload = hex(SHA-256(body)), which the x-acs-content-sha256 header must repeat
    StringToSign = "ACS3-HMAC-SHA256\n" + hex(SHA-256(CanonicalRequest))
    Signature = hex(HMAC-SHA256(key=AccessKeySecret, msg=StringToSign))

Every `host`, `content-type` and `x-acs-*` header sent must be signed. Dates (`Timestamp`,
`x-acs-date`) must be within 15 minutes of the wall clock; a nonce may be used once in 15 minutes.

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote

from emulators._base import Request

HMAC_SHA1 = "HMAC-SHA1"
ACS3 = "ACS3-HMAC-SHA256"
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
_ACS3_REQUIRED = (
    "host",
    "x-acs-action",
    "x-acs-version",
    "x-acs-date",
    "x-acs-signature-nonce",
    "x-acs-content-sha256",
)


ERROR_MESSAGES = {
    "Throttling": "Request was denied due to flow control.",
    "Throttling.User": "Request was denied due to user flow control.",
    "Throttling.Api": "Request was denied due to api flow control.",
    "Throttling.System": "Request was denied due to system flow control.",
    "InternalError.System": "An internal error occurred; please try again later.",
    "Forbidden.Access": "You are not authorized to perform this operation.",
}


class AcsError(Exception):
    """An error answer: code, message and HTTP status, as the gateway or the product sends it."""

    def __init__(
        self,
        code: str,
        message: str,
        http_status: int = 400,
        *,
        drip_s: float = 0.0,
        drip_headers: bool = False,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.http_status = http_status
        self.drip_s = drip_s  # > 0: the answer goes out one byte per drip_s seconds (an injected fault)
        self.drip_headers = drip_headers


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
    """Epoch seconds of an ISO 8601 UTC `Timestamp` or `x-acs-date` (`2026-11-28T08:00:00Z`)."""
    return float(calendar.timegm(time.strptime(value, TIMESTAMP_FORMAT)))


def acs3_canonical_request(
    method: str,
    path: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    signed_headers: Sequence[str],
    body: bytes,
) -> str:
    """The V3 CanonicalRequest; `headers` by lower-case name, `signed_headers` as the client listed them."""
    names = sorted({name.lower() for name in signed_headers})
    canonical_query = "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in sorted(query.items()))
    canonical_headers = "".join(f"{name}:{headers.get(name, '').strip()}\n" for name in names)
    canonical_uri = quote(path or "/", safe="/~")
    payload = hashlib.sha256(body).hexdigest()
    return "\n".join(
        [method.upper(), canonical_uri, canonical_query, canonical_headers, ";".join(names), payload]
    )


def acs3_string_to_sign(canonical_request: str) -> str:
    """The V3 StringToSign: the algorithm's name, a line feed, hex(SHA-256(CanonicalRequest))."""
    return f"{ACS3}\n{hashlib.sha256(canonical_request.encode()).hexdigest()}"


def acs3_signature(to_sign: str, secret: str) -> str:
    """hex(HMAC-SHA256(secret, to_sign))."""
    return hmac.new(secret.encode(), to_sign.encode(), hashlib.sha256).hexdigest()


def request_params(request: Request) -> dict[str, str]:
    """Query and form-body parameters together (the form wins a clash)."""
    form: dict[str, str] = {}
    if request.method == "POST" and request.body:
        form = dict(parse_qsl(request.body.decode("utf-8", "replace"), keep_blank_values=True))
    return {**request.args, **form}


def request_headers(request: Request) -> dict[str, str]:
    """Headers by lower-case name; repeated ones joined with commas."""
    names = {name.lower() for name in request.headers}
    return {name: ",".join(v.strip() for v in request.headers.get_all(name) or ()) for name in names}


def requested_action(request: Request) -> str | None:
    """The action a request names, whichever signature it carries (for logging before any check)."""
    return request_params(request).get("Action") or request.headers.get("x-acs-action")


def _incomplete(why: str = "") -> AcsError:
    message = "The request signature does not conform to Aliyun standards."
    return AcsError("IncompleteSignature", f"{message} {why}".strip())


@dataclass(frozen=True)
class Signed:
    """What a request claims (action, key, date, nonce, signature), read but not yet verified."""

    scheme: str  # HMAC_SHA1 (query signature) or ACS3 (Authorization header)
    action: str
    version: str
    access_key_id: str
    timestamp: str
    nonce: str
    signature: str
    security_token: str | None
    params: dict[str, str]  # query + form as sent (with HMAC-SHA1, the signing parameters too)
    signed_headers: tuple[str, ...] = ()


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

    def check_common(self, request: Request) -> Signed:
        """Presence and form of the common parameters (before the product looks at the action).

        An `Authorization` header selects the V3 signature; without one the query must carry V1's.
        """
        authorization = request.headers.get("Authorization")
        if authorization is not None:
            return _read_acs3(request, authorization)
        return _read_hmac_sha1(request_params(request))

    def authenticate(self, request: Request, signed: Signed) -> None:
        """Access key, date window, payload hash, signature, nonce reuse and STS token, in that order."""
        secret = self.credentials.get(signed.access_key_id)
        if secret is None:
            raise AcsError("InvalidAccessKeyId.NotFound", "Specified access key is not found.", 404)
        try:
            stamped = parse_timestamp(signed.timestamp)
        except ValueError:
            raise AcsError(
                "InvalidTimeStamp.Format",
                f"Specified time stamp or date value is not well formatted: {signed.timestamp}",
            ) from None
        now = self.wall_clock()
        if abs(now - stamped) > TIMESTAMP_TOLERANCE_S:
            raise AcsError("InvalidTimeStamp.Expired", "Specified time stamp or date value is expired.")
        if signed.scheme == ACS3:
            headers = request_headers(request)
            if headers["x-acs-content-sha256"] != hashlib.sha256(request.body).hexdigest():
                raise AcsError(
                    "SignatureDoesNotMatch", "The x-acs-content-sha256 header is not the hash of the body."
                )
            canonical = acs3_canonical_request(
                request.method, request.path, request.args, headers, signed.signed_headers, request.body
            )
            expected_input = acs3_string_to_sign(canonical)
            expected = acs3_signature(expected_input, secret)
        else:
            expected_input = string_to_sign(request.method, signed.params)
            expected = signature(expected_input, secret)
        if not hmac.compare_digest(expected.encode(), signed.signature.encode()):
            raise AcsError(
                "SignatureDoesNotMatch",
                "Specified signature is not matched with our calculation. "
                f"server string to sign is:{expected_input}",
            )
        self._use_nonce(signed.nonce, now)
        self._check_token(signed.security_token)

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


def _read_hmac_sha1(params: dict[str, str]) -> Signed:
    for name in _REQUIRED:
        if not params.get(name):
            raise missing(name)
    if not params.get("Signature"):
        raise _incomplete()
    if params["SignatureMethod"] != HMAC_SHA1 or params["SignatureVersion"] != "1.0":
        raise _incomplete(
            f"SignatureMethod {params['SignatureMethod']} / SignatureVersion "
            f"{params['SignatureVersion']} is not supported."
        )
    if params["Format"].upper() != "JSON":
        raise invalid("Format", " This endpoint answers JSON only.")
    return Signed(
        HMAC_SHA1,
        params["Action"],
        params["Version"],
        params["AccessKeyId"],
        params["Timestamp"],
        params["SignatureNonce"],
        params["Signature"],
        params.get("SecurityToken"),
        params,
    )


def _read_acs3(request: Request, authorization: str) -> Signed:
    algorithm, _, rest = authorization.strip().partition(" ")
    if algorithm != ACS3:
        raise _incomplete(f"SignatureAlgorithm {algorithm} is not supported.")
    fields = {}
    for part in rest.split(","):
        name, _, value = part.strip().partition("=")
        fields[name] = value.strip()
    for name in ("Credential", "SignedHeaders", "Signature"):
        if not fields.get(name):
            raise _incomplete(f"The Authorization header has no {name}.")
    headers = request_headers(request)
    for name in _ACS3_REQUIRED:
        if not headers.get(name):
            raise missing(name)
    signed = tuple(name.strip().lower() for name in fields["SignedHeaders"].split(";"))
    for name in sorted(headers):
        if (name.startswith("x-acs-") or name in ("host", "content-type")) and name not in signed:
            raise _incomplete(f"The header {name} must be signed.")
    for name in signed:
        if name not in headers:
            raise _incomplete(f"The signed header {name} is not in the request.")
    return Signed(
        ACS3,
        headers["x-acs-action"],
        headers["x-acs-version"],
        fields["Credential"],
        headers["x-acs-date"],
        headers["x-acs-signature-nonce"],
        fields["Signature"],
        headers.get("x-acs-security-token"),
        request_params(request),
        signed,
    )


@dataclass
class _Fault:
    action: str | None
    code: str
    http_status: int
    remaining: int
    message: str
    drip_s: float = 0.0
    drip_headers: bool = False


def default_status(code: str, throttle_status: int = 400) -> int:
    """The HTTP status the gateway gives with `code` where a test names none."""
    if code.startswith("Throttling"):
        return throttle_status
    for prefix, status in (("InternalError", 500), ("ServiceUnavailable", 503), ("Forbidden", 403)):
        if code.startswith(prefix):
            return status
    return 404 if code.endswith("NotFound") else 400


class Faults:
    """Injected errors, served to the next matching calls in the order they were added."""

    def __init__(self) -> None:
        self._queue: list[_Fault] = []

    def add(
        self,
        action: str | None,
        code: str,
        http_status: int,
        times: int,
        message: str | None,
        drip_s: float = 0.0,
        drip_headers: bool = False,
    ) -> None:
        """Fail the next `times` calls of `action` (None: any action) with this error (dripped if drip_s)."""
        text = ERROR_MESSAGES.get(code, f"The request failed ({code}).") if message is None else message
        self._queue.append(_Fault(action, code, http_status, times, text, drip_s, drip_headers))

    def take(self, action: str | None) -> None:
        """Raise the first pending fault that matches `action`, if any."""
        for fault in self._queue:
            if fault.remaining > 0 and fault.action in (None, action):
                fault.remaining -= 1
                raise AcsError(
                    fault.code,
                    fault.message,
                    fault.http_status,
                    drip_s=fault.drip_s,
                    drip_headers=fault.drip_headers,
                )


@dataclass
class FlowControl:
    """Per-second and per-day call limits answered with `Throttling.User`, on the caller's clock.

    `http_status` is 400, as public references show Alibaba Cloud answer throttling; 429 is an option.
    """

    qps: int | None
    daily: int | None
    http_status: int = 400
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
                self.http_status,
            )
        while self.window and now - self.window[0] >= 1.0:
            self.window.popleft()
        if self.qps is not None and len(self.window) >= self.qps:
            raise AcsError("Throttling.User", ERROR_MESSAGES["Throttling.User"], self.http_status)
        self.window.append(now)
        self.days[day] = self.days.get(day, 0) + 1

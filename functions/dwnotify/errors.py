"""Every error dwnotify raises, converted at the boundary it comes from.

    NotifierError
    ├── ConfigError        the config file is wrong; carries one line per problem (dotted path first)
    ├── DataWorksError     a DataWorks API call failed (.code, .http_status, .request_id, .retryable)
    │   └── MalformedRun   one run in an answer has fields of the wrong shape (.run_id); it is skipped
    ├── DeliveryError      a chat service refused or did not answer (.channel, .retryable, .retry_after)
    ├── TemplateError      a template failed to compile or render (.template)
    │   └── TemplateLimitError  a render went past its time, work or size budget (.limit, .reason)
    └── StateError         the state store failed or lost a race it cannot recover from
        └── ConflictError  a conditional write found newer data (another tick got there first)

Nothing above the boundaries sees an SDK exception or an `httpx.HTTPStatusError`.
"""

from __future__ import annotations


class NotifierError(Exception):
    """Base of every error dwnotify raises on purpose."""


class ConfigError(NotifierError):
    """The configuration is invalid; `problems` holds `dotted.path: what is wrong` lines."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class DataWorksError(NotifierError):
    """A DataWorks OpenAPI call failed."""

    def __init__(
        self,
        message: str,
        *,
        code: str = "",
        http_status: int | None = None,
        request_id: str = "",
        retryable: bool = False,
    ) -> None:
        self.code = code
        self.http_status = http_status
        self.request_id = request_id
        self.retryable = retryable
        super().__init__(message)


class MalformedRun(DataWorksError):
    """A run object whose fields have the wrong shape; `run_id` names it when it can be read."""

    def __init__(self, reason: str, run_id: str = "") -> None:
        super().__init__(reason)
        self.run_id = run_id


class DeliveryError(NotifierError):
    """A chat service did not take a message."""

    def __init__(
        self,
        message: str,
        *,
        channel: str,
        retryable: bool,
        retry_after: float | None = None,
    ) -> None:
        self.channel = channel
        self.retryable = retryable
        self.retry_after = retry_after
        super().__init__(message)


class TemplateError(NotifierError):
    """A template failed to compile or render."""

    def __init__(self, message: str, *, template: str) -> None:
        self.template = template
        super().__init__(message)


class TemplateLimitError(TemplateError):
    """A render went past its time, work or size budget (`render.RenderLimits`); `reason` says which."""

    def __init__(self, message: str, *, template: str, limit: str, reason: str) -> None:
        self.limit = limit
        self.reason = reason
        super().__init__(message, template=template)


class StateError(NotifierError):
    """The state store failed."""


class ConflictError(StateError):
    """A conditional write lost to a newer write (another tick got there first)."""

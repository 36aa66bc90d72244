"""Service errors as Tablestore reports them: an error code, a message and an HTTP status.

The statuses and messages follow the service's published error-code table (403 for auth and
condition failures, 404 for a missing table, 409 for an existing one, 400 for bad parameters, 503
for a busy or unavailable server). The emulator raises only some of them by itself; the others are
there for `TablestoreEmulator.inject`.
"""

from __future__ import annotations

STATUS_BY_CODE = {
    "OTSAuthFailed": 403,
    "OTSConditionCheckFail": 403,
    "OTSObjectNotExist": 404,
    "OTSObjectAlreadyExist": 409,
    "OTSRowOperationConflict": 409,
    "OTSParameterInvalid": 400,
    "OTSInvalidPK": 400,
    "OTSMethodNotAllowed": 405,
    "OTSRequestBodyTooLarge": 413,
    "OTSInternalServerError": 500,
    "OTSQuotaExhausted": 403,
    "OTSNotEnoughCapacityUnit": 403,
    "OTSTableNotReady": 404,
    "OTSServerBusy": 503,
    "OTSPartitionUnavailable": 503,
    "OTSTimeout": 503,
    "OTSServerUnavailable": 503,
}
# The service's wording, for injected errors given without a message.
MESSAGE_BY_CODE = {
    "OTSConditionCheckFail": "Condition check failed.",
    "OTSRowOperationConflict": "Data is being modified by the other request.",
    "OTSInternalServerError": "Internal server error.",
    "OTSQuotaExhausted": "Too frequent table operations.",
    "OTSNotEnoughCapacityUnit": "Remaining capacity unit is not enough.",
    "OTSTableNotReady": "The table is not ready.",
    "OTSServerBusy": "Server is busy.",
    "OTSPartitionUnavailable": "The partition is not available.",
    "OTSTimeout": "Operation timeout.",
    "OTSServerUnavailable": "Server is unavailable.",
}


class ServiceError(Exception):
    """An error the emulated service answers with a protobuf `Error{code, message}`."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self._status = status

    @property
    def status(self) -> int:
        """HTTP status the real service uses for this code (or the one it was given)."""
        return self._status if self._status is not None else STATUS_BY_CODE.get(self.code, 400)


def invalid(message: str) -> ServiceError:
    """OTSParameterInvalid (400)."""
    return ServiceError("OTSParameterInvalid", message)


def invalid_pk(message: str) -> ServiceError:
    """OTSInvalidPK (400): the primary key does not match the table's schema."""
    return ServiceError("OTSInvalidPK", message)


def table_missing() -> ServiceError:
    """OTSObjectNotExist (404)."""
    return ServiceError("OTSObjectNotExist", "Requested table does not exist.")


def condition_failed() -> ServiceError:
    """OTSConditionCheckFail (403)."""
    return ServiceError("OTSConditionCheckFail", "Condition check failed.")


def auth_failed(message: str) -> ServiceError:
    """OTSAuthFailed (403); such answers are not signed, and the SDK does not check them."""
    return ServiceError("OTSAuthFailed", message)

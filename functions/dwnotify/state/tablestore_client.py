"""The boundary to the `tablestore` SDK: one table, every call counted, SDK errors made StateErrors.

Importing this module imports the SDK (0.3-0.5 s): only the Tablestore backend does. Nothing above
it sees an `OTSServiceError`, an `OTSClientError` or a urllib3 error, and no message it raises
carries the access key secret or the STS token.

Retries: the SDK's default policy, capped at 3 retries of at most 1 s. It retries throttling and
row-lock conflicts on every API (the service did not apply the request), and 5xx/timeouts on reads
only: a write that timed out may have been applied, and repeating a conditional write blindly would
turn our own success into a false `OTSConditionCheckFail`. A failed condition is never retried.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

logging.getLogger("tablestore").setLevel(logging.ERROR)  # the SDK warns about its codec at import

import tablestore as ots  # noqa: E402
from tablestore.retry import DefaultRetryPolicy  # noqa: E402
from urllib3.exceptions import HTTPError as TransportError  # noqa: E402

from ..errors import StateError  # noqa: E402
from .tablestore_rows import Cells, Key  # noqa: E402

BATCH_GET_ROWS = 100
BATCH_WRITE_ROWS = 200
BATCH_WRITE_BYTES = 3_500_000  # the service refuses a BatchWriteRow over 4 MB
CONDITION_FAILED = "OTSConditionCheckFail"
# Row-level errors in a batch that mean "not applied, try again" (the SDK retries them per request).
RETRYABLE_ROW_CODES = frozenset(
    {
        "OTSRowOperationConflict",
        "OTSNotEnoughCapacityUnit",
        "OTSTableNotReady",
        "OTSPartitionUnavailable",
        "OTSServerBusy",
        "OTSOperationConflict",
        "OTSOperationThrottled",
        "OTSTimeout",
        "OTSInternalServerError",
        "OTSServerUnavailable",
    }
)
SCHEMA = [("pk", "STRING"), ("sk", "STRING")]
T = TypeVar("T")


@dataclass(frozen=True)
class Write:
    """One row write with its condition.

    `put` replaces the row; `update` changes the given columns (and adds 1 to `increment` columns);
    `delete` removes it. `equals` columns must all hold those values (a missing column fails).
    """

    kind: Literal["put", "update", "delete"]
    key: Key
    cells: Mapping[str, Any] = field(default_factory=dict)
    expect: Literal["IGNORE", "EXPECT_EXIST", "EXPECT_NOT_EXIST"] = "IGNORE"
    equals: tuple[tuple[str, Any], ...] = ()
    increment: tuple[str, ...] = ()

    def size(self) -> int:
        """About how many bytes the row takes in a request."""
        total = 32 + len(self.key[0].encode()) + len(self.key[1].encode())
        for name, value in self.cells.items():
            total += len(name) + (len(value.encode()) if isinstance(value, str) else 8)
            if isinstance(value, bytes | bytearray):
                total += len(value)
        return total


def _value(value: Any) -> Any:
    return bytearray(value) if isinstance(value, bytes) else value


def _cells(columns: Iterable[Sequence[Any]] | None) -> Cells:
    """SDK attribute columns [(name, value, timestamp)] as a dict."""
    return {
        column[0]: bytes(column[1]) if isinstance(column[1], bytearray) else column[1]
        for column in columns or ()
    }


def _row_key(primary_key: Sequence[Sequence[Any]]) -> Key:
    values = dict((column[0], column[1]) for column in primary_key)
    return (str(values["pk"]), str(values["sk"]))


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


_WRITE_APIS = frozenset({"PutRow", "UpdateRow", "DeleteRow", "BatchWriteRow", "CreateTable"})


class Table:
    """One Tablestore table through the SDK; `round_trips` counts SDK calls, `write_round_trips` those that
    write (tests and the benchmark report both)."""

    def __init__(
        self,
        endpoint: str,
        instance: str,
        name: str,
        access_key_id: str,
        access_key_secret: str,
        sts_token: str | None,
        ttl_s: int,
        *,
        socket_timeout_s: float = 10.0,
    ) -> None:
        self.name = name
        self.round_trips = 0
        self.write_round_trips = 0
        self._ttl_s = ttl_s
        self._secrets = [value for value in (access_key_secret, sts_token) if value]
        self._ready = False
        retry = DefaultRetryPolicy()
        retry.max_retry_times = 3
        retry.max_retry_delay = 1.0
        sdk_log = logging.getLogger("dwnotify.state.tablestore_sdk")
        sdk_log.setLevel(logging.CRITICAL)  # its DEBUG lines carry request headers (the STS token)
        try:
            self._client = ots.OTSClient(
                endpoint,
                access_key_id,
                access_key_secret,
                instance,
                sts_token=sts_token or None,
                socket_timeout=socket_timeout_s,
                retry_policy=retry,
                logger_name=sdk_log.name,
            )
        except ots.OTSClientError as error:
            raise StateError(self._safe(f"cannot set up the Tablestore client: {error}")) from None

    # -- the boundary ------------------------------------------------------------------------
    def _safe(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _call(self, api: str, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """One SDK call: counted, with every SDK or transport error turned into a StateError."""
        if not self._ready:
            self._ensure_table()
        return self._raw_call(api, method, *args, **kwargs)

    def _raw_call(self, api: str, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        self.round_trips += 1
        if api in _WRITE_APIS:
            self.write_round_trips += 1
        try:
            return method(*args, **kwargs)
        except ots.OTSServiceError as error:
            if error.code == CONDITION_FAILED:
                raise _ConditionFailed from None
            detail = f"{error.code}: {error.message} (request {error.request_id})"
            raise _ServiceError(error.code, self._safe(f"Tablestore {api} failed: {detail}")) from None
        except (ots.OTSClientError, TransportError, OSError) as error:
            raise StateError(self._safe(f"Tablestore {api} failed: {error}")) from None

    def _ensure_table(self) -> None:
        """Check the table once per process; create it (TTL = retention) when it does not exist."""
        try:
            described = self._raw_call("DescribeTable", self._client.describe_table, self.name)
        except _ServiceError as error:
            if error.code != "OTSObjectNotExist":
                raise
            self._create_table()
        else:
            schema = [tuple(column[:2]) for column in described.table_meta.schema_of_primary_key]
            if schema != SCHEMA:
                raise StateError(
                    f"Tablestore table {self.name} has primary key {schema}, not {SCHEMA}: "
                    "give state.table a new name and dwnotify creates it"
                )
        self._ready = True

    def _create_table(self) -> None:
        meta = ots.TableMeta(self.name, SCHEMA)
        options = ots.TableOptions(time_to_live=self._ttl_s, max_version=1)
        throughput = ots.ReservedThroughput(ots.CapacityUnit(0, 0))
        try:
            self._raw_call("CreateTable", self._client.create_table, meta, options, throughput)
        except _ServiceError as error:
            if error.code != "OTSObjectAlreadyExist":  # another instance created it first: fine
                raise
        logging.getLogger(__name__).info("created Tablestore table %s (TTL %d s)", self.name, self._ttl_s)

    # -- reads -------------------------------------------------------------------------------
    def get(self, key: Key) -> Cells | None:
        """One row's columns (GetRow), or None."""
        pk = [("pk", key[0]), ("sk", key[1])]
        _, row, _ = self._call("GetRow", self._client.get_row, self.name, pk, max_version=1)
        if row is None or not row.primary_key:
            return None
        return _cells(row.attribute_columns)

    def get_many(self, keys: Iterable[Key]) -> dict[Key, Cells]:
        """Rows by key, BATCH_GET_ROWS a call (BatchGetRow); absent rows are left out."""
        wanted = list(dict.fromkeys(keys))
        found: dict[Key, Cells] = {}
        for chunk in _chunks(wanted, BATCH_GET_ROWS):
            pending = list(chunk)
            for attempt in range(4):
                pending = self._get_batch(pending, found)
                if not pending:
                    break
                time.sleep(0.05 * 2**attempt)
            if pending:
                raise StateError(f"Tablestore BatchGetRow kept failing for {len(pending)} row(s)")
        return found

    def _get_batch(self, keys: Sequence[Key], found: dict[Key, Cells]) -> list[Key]:
        request = ots.BatchGetRowRequest()
        pks = [[("pk", pk), ("sk", sk)] for pk, sk in keys]
        request.add(ots.TableInBatchGetRowItem(self.name, pks, max_version=1))
        response = self._call("BatchGetRow", self._client.batch_get_row, request)
        retry: list[Key] = []
        for key, item in zip(keys, response.get_result_by_table(self.name) or [], strict=True):
            if not item.is_ok:
                if item.error_code not in RETRYABLE_ROW_CODES:
                    raise StateError(
                        f"Tablestore BatchGetRow failed: {item.error_code}: {item.error_message}"
                    )
                retry.append(key)
            elif item.row is not None and item.row.primary_key:
                found[key] = _cells(item.row.attribute_columns)
        return retry

    def scan(
        self,
        pk: str,
        sk_from: str | None = None,
        *,
        sk_to: str | None = None,
        pk_to: str | None = None,
        where: tuple[str, tuple[Any, ...]] | None = None,
        limit: int | None = None,
    ) -> list[tuple[Key, Cells]]:
        """Rows of partition `pk` from `sk_from` up to `sk_to` (GetRange, paged), or of every pk to `pk_to`.

        `where=(column, values)` keeps only rows whose column holds one of the values (server side).
        """
        start: Any = [("pk", pk), ("sk", sk_from if sk_from is not None else ots.INF_MIN)]
        if pk_to is not None:
            end = [("pk", pk_to), ("sk", ots.INF_MIN)]
        else:
            end = [("pk", pk), ("sk", sk_to if sk_to is not None else ots.INF_MAX)]
        condition = _any_of(*where) if where else None
        rows: list[tuple[Key, Cells]] = []
        while start is not None and (limit is None or len(rows) < limit):
            _, start, page, _ = self._call(
                "GetRange",
                self._client.get_range,
                self.name,
                ots.Direction.FORWARD,
                start,
                end,
                column_filter=condition,
                max_version=1,
            )
            rows.extend((_row_key(row.primary_key), _cells(row.attribute_columns)) for row in page)
        return rows[:limit] if limit is not None else rows

    # -- writes ------------------------------------------------------------------------------
    def write(self, writes: Sequence[Write]) -> list[bool]:
        """Apply writes (one call for one row, else BatchWriteRow in batches); False = condition failed."""
        if len(writes) == 1:
            return [self._write_one(writes[0])]
        results: list[bool] = []
        for batch in _batches(writes):
            results.extend(self._write_batch(batch))
        return results

    def _write_one(self, write: Write) -> bool:
        row, condition = _sdk_row(write), _condition(write)
        api = {"put": "PutRow", "update": "UpdateRow", "delete": "DeleteRow"}[write.kind]
        method = {
            "put": self._client.put_row,
            "update": self._client.update_row,
            "delete": self._client.delete_row,
        }[write.kind]
        try:
            self._call(api, method, self.name, row, condition)
        except _ConditionFailed:
            return False
        return True

    def _write_batch(self, batch: Sequence[Write]) -> list[bool]:
        outcome: dict[int, bool] = {}
        pending = list(range(len(batch)))
        for attempt in range(4):
            items = [_sdk_item(batch[index]) for index in pending]
            request = ots.BatchWriteRowRequest()
            request.add(ots.TableInBatchWriteRowItem(self.name, items))
            response = self._call("BatchWriteRow", self._client.batch_write_row, request)
            retry = []
            for index, item in zip(pending, _in_request_order(response, self.name, len(items)), strict=True):
                if item.is_ok:
                    outcome[index] = True
                elif item.error_code == CONDITION_FAILED:
                    outcome[index] = False
                elif item.error_code in RETRYABLE_ROW_CODES:
                    retry.append(index)
                else:
                    raise StateError(
                        f"Tablestore BatchWriteRow failed on a row: {item.error_code}: {item.error_message}"
                    )
            if not retry:
                return [outcome[index] for index in range(len(batch))]
            pending = retry
            time.sleep(0.05 * 2**attempt)
        raise StateError(f"Tablestore BatchWriteRow kept failing for {len(pending)} row(s)")

    def close(self) -> None:
        """Drop pooled connections."""
        pool = getattr(getattr(self._client, "connection", None), "pool", None)
        if pool is not None:
            pool.clear()


class _ConditionFailed(Exception):
    """A conditional write found other data (OTSConditionCheckFail)."""


class _ServiceError(StateError):
    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


def _batches(writes: Sequence[Write]) -> Iterator[list[Write]]:
    """Batches within the row and byte limits, each row once (a batch may not repeat a row)."""
    batch: list[Write] = []
    keys: set[Key] = set()
    size = 0
    for write in writes:
        weight = write.size()
        if batch and (
            len(batch) >= BATCH_WRITE_ROWS or size + weight > BATCH_WRITE_BYTES or write.key in keys
        ):
            yield batch
            batch, keys, size = [], set(), 0
        batch.append(write)
        keys.add(write.key)
        size += weight
    if batch:
        yield batch


def _in_request_order(response: Any, table: str, count: int) -> list[Any]:
    items = [
        *response.get_put_by_table(table),
        *response.get_update_by_table(table),
        *response.get_delete_by_table(table),
    ]
    ordered = sorted(items, key=lambda item: item.index)
    if len(ordered) != count:
        raise StateError(f"Tablestore BatchWriteRow answered {len(ordered)} rows for {count}")
    return ordered


def _sdk_row(write: Write) -> Any:
    pk = [("pk", write.key[0]), ("sk", write.key[1])]
    if write.kind == "delete":
        return ots.Row(pk)
    columns = [(name, _value(value)) for name, value in write.cells.items()]
    if write.kind == "put":
        return ots.Row(pk, columns)
    change: dict[str, list[Any]] = {}
    if columns:
        change["put"] = columns
    if write.increment:
        change["increment"] = [(name, 1) for name in write.increment]
    return ots.Row(pk, change)


def _condition(write: Write) -> Any:
    tests = [
        ots.SingleColumnCondition(name, value, ots.ComparatorType.EQUAL, pass_if_missing=False)
        for name, value in write.equals
    ]
    if len(tests) > 1:
        both = ots.CompositeColumnCondition(ots.LogicalOperator.AND)
        for test in tests:
            both.add_sub_condition(test)
        return ots.Condition(write.expect, both)
    return ots.Condition(write.expect, tests[0] if tests else None)


def _sdk_item(write: Write) -> Any:
    kinds = {"put": ots.PutRowItem, "update": ots.UpdateRowItem, "delete": ots.DeleteRowItem}
    return kinds[write.kind](_sdk_row(write), _condition(write))


def _any_of(column: str, values: tuple[Any, ...]) -> Any:
    tests = [
        ots.SingleColumnCondition(column, v, ots.ComparatorType.EQUAL, pass_if_missing=False) for v in values
    ]
    if len(tests) == 1:
        return tests[0]
    either = ots.CompositeColumnCondition(ots.LogicalOperator.OR)
    for test in tests:
        either.add_sub_condition(test)
    return either

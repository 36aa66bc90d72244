"""The emulated service's state: tables, rows, writes with conditions, reads, ranges, transactions.

Pure and in memory: no protobuf, no HTTP. Every public method takes the store's lock, so one
request's checks and writes happen as a unit, as the service does for a single row.
"""

from __future__ import annotations

import bisect
import copy
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

from emulators.tablestore.errors import ServiceError, condition_failed, invalid, table_missing
from emulators.tablestore.model import (
    NAME_RE,
    PK_TYPES,
    PrimaryKey,
    ReadSpec,
    RowResult,
    SortKey,
    StoredRow,
    TableSpec,
    WriteOp,
    check_condition,
    check_primary_key,
    live_cells,
    project,
    result_size,
    row_exists,
    sort_key,
)
from emulators.tablestore.writes import apply_cells, check_cells, check_options, check_repeated_rows

RANGE_ROW_LIMIT = 5000
RANGE_BYTE_LIMIT = 4 * 1024 * 1024
BATCH_GET_LIMIT = 100
BATCH_WRITE_LIMIT = 200


class _Space:
    """Rows by sort key, with the keys kept sorted for range scans."""

    def __init__(self) -> None:
        self.rows: dict[SortKey, StoredRow] = {}
        self.keys: list[SortKey] = []

    def get(self, key: SortKey) -> StoredRow | None:
        return self.rows.get(key)

    def set(self, key: SortKey, row: StoredRow | None) -> None:
        if row is None:
            if self.rows.pop(key, None) is not None:
                self.keys.pop(bisect.bisect_left(self.keys, key))
            return
        if key not in self.rows:
            bisect.insort(self.keys, key)
        self.rows[key] = row

    def scan(self, start: SortKey, end: SortKey, forward: bool) -> Iterator[SortKey]:
        if forward:
            index = bisect.bisect_left(self.keys, start)
            while index < len(self.keys) and self.keys[index] < end:
                yield self.keys[index]
                index += 1
        else:
            index = bisect.bisect_right(self.keys, start) - 1
            while index >= 0 and self.keys[index] > end:
                yield self.keys[index]
                index -= 1


@dataclass
class _Table:
    spec: TableSpec
    space: _Space = field(default_factory=_Space)


@dataclass
class _Transaction:
    table: str
    partition: tuple[int, int | bytes] | tuple[int]
    space: _Space
    dirty: set[SortKey] = field(default_factory=set)


WriteOutcome = PrimaryKey | None | ServiceError


class Store:
    """Thread-safe in-memory tables; `clock` gives epoch seconds (cell timestamps and TTL use it)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.RLock()
        self._tables: dict[str, _Table] = {}
        self._transactions: dict[str, _Transaction] = {}

    def now_ms(self) -> int:
        """The store's clock in milliseconds."""
        return int(self._clock() * 1000)

    # -- tables -----------------------------------------------------------------------------
    def create_table(self, spec: TableSpec) -> None:
        """CreateTable: validate the schema and options, then add an empty table."""
        if not NAME_RE.fullmatch(spec.name):
            raise invalid(f"Invalid table name: {spec.name}.")
        if not 1 <= len(spec.primary_key) <= 4:
            raise invalid("The number of primary key columns must be in range: [1, 4].")
        seen: set[str] = set()
        for name, pk_type in spec.primary_key:
            if not NAME_RE.fullmatch(name):
                raise invalid(f"Invalid column name: {name}.")
            if name in seen:
                raise invalid(f"Duplicated primary key name: '{name}'.")
            if pk_type not in PK_TYPES:
                raise invalid(f"{pk_type} is an invalid type for the primary key.")
            seen.add(name)
        if len(spec.defined_columns) > 32:
            raise invalid("The number of defined columns must be in range: [0, 32].")
        check_options(spec)
        with self._lock:
            if spec.name in self._tables:
                raise ServiceError("OTSObjectAlreadyExist", "Requested table already exists.")
            created = replace(spec, created_s=int(self.now_ms() / 1000))
            self._tables[spec.name] = _Table(created)

    def delete_table(self, name: str) -> None:
        """DeleteTable."""
        with self._lock:
            if self._tables.pop(name, None) is None:
                raise table_missing()
            self._transactions = {k: t for k, t in self._transactions.items() if t.table != name}

    def list_tables(self) -> list[str]:
        """ListTable: names in order."""
        with self._lock:
            return sorted(self._tables)

    def describe_table(self, name: str) -> TableSpec:
        """DescribeTable: a copy of the table's spec."""
        with self._lock:
            return replace(self._table(name).spec)

    def update_table(self, name: str, **changes: int | bool | None) -> TableSpec:
        """UpdateTable: change options or reserved throughput (None leaves a field as is)."""
        with self._lock:
            table = self._table(name)
            updated = replace(table.spec, **{k: v for k, v in changes.items() if v is not None})
            check_options(updated)
            if updated.read_cu < table.spec.read_cu or updated.write_cu < table.spec.write_cu:
                updated.decreased_s = int(self.now_ms() / 1000)
            table.spec = updated
            return replace(updated)

    # -- single rows ------------------------------------------------------------------------
    def get_row(
        self, table: str, primary_key: PrimaryKey, read: ReadSpec, txn: str | None = None
    ) -> RowResult | None:
        """GetRow: the row as `read` selects it, or None."""
        with self._lock:
            entry = self._table(table)
            check_primary_key(entry.spec, primary_key)
            key = sort_key(primary_key)
            row = self._space(entry, key, txn).get(key)
            return None if row is None else project(row, entry.spec, read, self.now_ms())

    def write(self, table: str, op: WriteOp, txn: str | None = None) -> PrimaryKey | None:
        """PutRow/UpdateRow/DeleteRow; returns the primary key when `op.return_pk`."""
        with self._lock:
            return self._apply(self._table(table), op, txn)

    # -- batches ----------------------------------------------------------------------------
    def batch_get(
        self, requests: list[tuple[str, list[PrimaryKey], ReadSpec]]
    ) -> list[list[RowResult | ServiceError | None]]:
        """BatchGetRow: per table, per row a result, None (no row) or the row's error."""
        if not requests:
            raise invalid("No row specified in the request of BatchGetRow.")
        total = sum(len(keys) for _, keys, _ in requests)
        if total > BATCH_GET_LIMIT:
            raise invalid(f"Rows count exceeds the upper limit: {BATCH_GET_LIMIT}.")
        results: list[list[RowResult | ServiceError | None]] = []
        with self._lock:
            for table, keys, read in requests:
                rows: list[RowResult | ServiceError | None] = []
                for primary_key in keys:
                    try:
                        rows.append(self.get_row(table, primary_key, read))
                    except ServiceError as exc:
                        rows.append(exc)
                results.append(rows)
        return results

    def batch_write(
        self, requests: list[tuple[str, list[WriteOp | ServiceError]]], txn: str | None = None
    ) -> list[list[WriteOutcome]]:
        """BatchWriteRow: every row on its own; a failing row does not stop the others."""
        if not requests:
            raise invalid("No row is specified in BatchWriteRow.")
        for table, ops in requests:
            if not ops:
                raise invalid(f"No operation is specified for table: '{table}'.")
        if sum(len(ops) for _, ops in requests) > BATCH_WRITE_LIMIT:
            raise invalid(f"Rows count exceeds the upper limit: {BATCH_WRITE_LIMIT}.")
        check_repeated_rows(requests)
        results: list[list[WriteOutcome]] = []
        with self._lock:
            for table, ops in requests:
                outcomes: list[WriteOutcome] = []
                for op in ops:
                    try:
                        if isinstance(op, ServiceError):
                            raise op
                        outcomes.append(self._apply(self._table(table), op, txn))
                    except ServiceError as exc:
                        outcomes.append(exc)
                results.append(outcomes)
        return results

    # -- ranges -----------------------------------------------------------------------------
    def get_range(
        self,
        table: str,
        forward: bool,
        start: PrimaryKey,
        end: PrimaryKey,
        read: ReadSpec,
        limit: int | None = None,
        txn: str | None = None,
    ) -> tuple[list[RowResult], PrimaryKey | None]:
        """GetRange: rows from `start` (inclusive) to `end` (exclusive), and where to resume."""
        with self._lock:
            entry = self._table(table)
            check_primary_key(entry.spec, start, bounds=True)
            check_primary_key(entry.spec, end, bounds=True)
            low, high = sort_key(start), sort_key(end)
            if forward and not low < high:
                raise invalid("Begin key must less than end key in FORWARD")
            if not forward and not low > high:
                raise invalid("Begin key must more than end key in BACKWARD")
            if limit is not None and limit <= 0:
                raise invalid("The limit must be greater than 0.")
            cap = min(limit or RANGE_ROW_LIMIT, RANGE_ROW_LIMIT)
            space = self._space(entry, low, txn, check_partition=False)
            now, rows, size = self.now_ms(), [], 0
            for key in space.scan(low, high, forward):
                stored = space.rows[key]
                if len(rows) >= cap:
                    return rows, list(stored.primary_key)
                result = project(stored, entry.spec, read, now)
                if result is None:
                    continue
                row_size = result_size(result)
                if rows and size + row_size > RANGE_BYTE_LIMIT:
                    return rows, list(stored.primary_key)
                rows.append(result)
                size += row_size
            return rows, None

    # -- local transactions -----------------------------------------------------------------
    def start_transaction(self, table: str, partition_key: PrimaryKey) -> str:
        """StartLocalTransaction on one partition-key value; returns the transaction id."""
        with self._lock:
            entry = self._table(table)
            first = entry.spec.primary_key[:1]
            check_primary_key(replace(entry.spec, primary_key=first), partition_key)
            part = sort_key(partition_key)[0]
            space = _Space()
            for key in entry.space.keys:
                if key[0] == part:
                    space.set(key, copy.deepcopy(entry.space.rows[key]))
            txn = uuid.uuid4().hex.upper()
            self._transactions[txn] = _Transaction(table, part, space)
            return txn

    def commit_transaction(self, txn: str) -> None:
        """CommitTransaction: the transaction's writes become visible."""
        with self._lock:
            state = self._transaction(txn)
            del self._transactions[txn]
            table = self._table(state.table)
            for key in state.dirty:
                table.space.set(key, state.space.get(key))

    def abort_transaction(self, txn: str) -> None:
        """AbortTransaction: drop the transaction's writes."""
        with self._lock:
            self._transaction(txn)
            del self._transactions[txn]

    # -- state for persistence --------------------------------------------------------------
    def export_tables(self) -> list[tuple[TableSpec, list[StoredRow]]]:
        """Every table's spec and rows (copies), for saving."""
        with self._lock:
            return [
                (replace(t.spec), [copy.deepcopy(t.space.rows[k]) for k in t.space.keys])
                for t in self._tables.values()
            ]

    def import_tables(self, tables: list[tuple[TableSpec, list[StoredRow]]]) -> None:
        """Replace every table with saved ones."""
        with self._lock:
            self._tables = {}
            for spec, rows in tables:
                entry = _Table(spec)
                for row in rows:
                    entry.space.set(sort_key(row.primary_key), row)
                self._tables[spec.name] = entry

    # -- internals --------------------------------------------------------------------------
    def _table(self, name: str) -> _Table:
        entry = self._tables.get(name)
        if entry is None:
            raise table_missing()
        return entry

    def _transaction(self, txn: str) -> _Transaction:
        state = self._transactions.get(txn)
        if state is None:
            raise invalid(f"Transaction does not exist or has ended: {txn}.")
        return state

    def _space(self, entry: _Table, key: SortKey, txn: str | None, check_partition: bool = True) -> _Space:
        if txn is None:
            return entry.space
        state = self._transaction(txn)
        if state.table != entry.spec.name or (check_partition and key[0] != state.partition):
            raise invalid("The row is outside the transaction's table and partition key.")
        return state.space

    def _apply(self, entry: _Table, op: WriteOp, txn: str | None) -> PrimaryKey | None:
        spec, now = entry.spec, self.now_ms()
        check_primary_key(spec, op.primary_key)
        check_cells(spec, op, now)
        key = sort_key(op.primary_key)
        space = self._space(entry, key, txn)
        stored = space.get(key)
        if not check_condition(op.condition, stored, spec, now):
            raise condition_failed()
        if op.kind == "PUT":
            row = StoredRow(list(op.primary_key), marker=None if op.cells else now)
        elif op.kind == "UPDATE":
            row = StoredRow(list(op.primary_key))
            if stored is not None and row_exists(stored, spec, now):
                row = StoredRow(list(op.primary_key), live_cells(stored, spec, now), stored.marker)
        else:
            row = None
        if row is not None:
            apply_cells(row, op, spec, now)
            if not row.cells and row.marker is None:
                row = None
        space.set(key, row)
        if txn is not None:
            self._transactions[txn].dirty.add(key)
        return list(op.primary_key) if op.return_pk else None

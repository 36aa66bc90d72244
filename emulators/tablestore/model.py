"""Tables, rows and conditions of the emulated service: plain data and pure functions over it.

A row keeps every attribute as a list of versions `(timestamp_ms, value)`, newest first. Time to
live hides versions older than the table's TTL and the table's max versions caps how many a column
keeps; a row exists while one of its versions is live (or it was put with no attributes at all).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from emulators.tablestore.errors import invalid, invalid_pk
from emulators.tablestore.plainbuffer import AUTO_INCREMENT, Bound, Cell, PKValue, Value

NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")
PK_TYPES = {"INTEGER": int, "STRING": str, "BINARY": bytes}
VT_NAMES = {int: "VT_INTEGER", str: "VT_STRING", bytes: "VT_BLOB"}
MAX_PK_LENGTH = 1024
MAX_VALUE_LENGTH = 2 * 1024 * 1024

# Comparator and logical-operator numbers, as the filter protobuf defines them.
CT_EQUAL, CT_NOT_EQUAL, CT_GREATER_THAN, CT_GREATER_EQUAL = 1, 2, 3, 4
CT_LESS_THAN, CT_LESS_EQUAL, CT_EXIST, CT_NOT_EXIST = 5, 6, 7, 8
LO_NOT, LO_AND, LO_OR = 1, 2, 3

PrimaryKey = list[tuple[str, PKValue]]
SortKey = tuple[tuple[int, int | bytes] | tuple[int], ...]


@dataclass
class TableSpec:
    """A table's schema and options, as CreateTable/UpdateTable set them."""

    name: str
    primary_key: list[tuple[str, str]]
    defined_columns: list[tuple[str, str]] = field(default_factory=list)
    time_to_live: int = -1
    max_versions: int = 1
    deviation_s: int = 86400
    allow_update: bool = True
    read_cu: int = 0
    write_cu: int = 0
    created_s: int = 0
    decreased_s: int | None = None


@dataclass(frozen=True)
class ColumnCheck:
    """A single-column condition: `name <comparator> value`."""

    name: str
    comparator: int
    value: Value | None
    pass_if_missing: bool = True
    latest_only: bool = True


@dataclass(frozen=True)
class ColumnLogic:
    """NOT / AND / OR over sub-conditions."""

    operator: int
    subs: tuple[ColumnCheck | ColumnLogic, ...]


ColumnCondition = ColumnCheck | ColumnLogic


@dataclass(frozen=True)
class Condition:
    """A write condition: row existence expectation plus an optional column condition."""

    expect: str = "IGNORE"
    column: ColumnCondition | None = None


@dataclass(frozen=True)
class ReadSpec:
    """What a read returns: columns, versions, time window, filter and column range."""

    columns: tuple[str, ...] = ()
    max_versions: int | None = 1
    time_range: tuple[int, int] | None = None
    specific_time: int | None = None
    filter: ColumnCondition | None = None
    start_column: str | None = None
    end_column: str | None = None


@dataclass(frozen=True)
class WriteOp:
    """One row change: PUT, UPDATE or DELETE."""

    kind: str
    primary_key: PrimaryKey
    cells: list[Cell]
    condition: Condition = Condition()
    return_pk: bool = False
    delete_marker: bool = False


@dataclass
class StoredRow:
    """A row as kept in memory."""

    primary_key: PrimaryKey
    cells: dict[str, list[tuple[int, Value]]] = field(default_factory=dict)
    marker: int | None = None


@dataclass(frozen=True)
class RowResult:
    """A row as a read returns it: primary key and `(name, value, timestamp_ms)` cells."""

    primary_key: PrimaryKey
    columns: list[tuple[str, Value, int]]


def sort_key(primary_key: PrimaryKey) -> SortKey:
    """Order primary keys as the service does: integers numerically, strings and binaries bytewise."""
    parts: list[tuple[int, int | bytes] | tuple[int]] = []
    for _, value in primary_key:
        if isinstance(value, Bound):
            parts.append((0,) if value.name == "INF_MIN" else (2,))
        elif isinstance(value, str):
            parts.append((1, value.encode()))
        else:
            parts.append((1, value))
    return tuple(parts)


def check_primary_key(spec: TableSpec, primary_key: PrimaryKey, *, bounds: bool = False) -> None:
    """Raise OTSInvalidPK unless the key matches the schema (INF_MIN/INF_MAX allowed if `bounds`)."""
    if len(primary_key) != len(spec.primary_key):
        raise invalid_pk(f"Validate PK size fail. Input: {len(primary_key)}, Meta: {len(spec.primary_key)}.")
    for (name, value), (meta_name, meta_type) in zip(primary_key, spec.primary_key, strict=True):
        if name != meta_name:
            raise invalid_pk(f"Validate PK name fail. Input: {name}, Meta: {meta_name}.")
        if isinstance(value, Bound):
            if value is AUTO_INCREMENT:
                raise invalid(f"Auto increment pk is not supported by the emulator, name: {name}.")
            if not bounds:
                raise invalid(f"INF_MIN and INF_MAX can only be used in GetRange, name: {name}.")
            continue
        expected = PK_TYPES[meta_type]
        if type(value) is not expected:
            actual = VT_NAMES.get(type(value), type(value).__name__)
            raise invalid_pk(f"Validate PK type fail. Input: {actual}, Meta: {VT_NAMES[expected]}.")
        size = (
            len(value.encode()) if isinstance(value, str) else len(value) if isinstance(value, bytes) else 0
        )
        if size > MAX_PK_LENGTH:
            raise invalid(
                f"The length of primary key column: {name} exceeds the MaxLength: {MAX_PK_LENGTH} "
                f"with CurrentLength: {size}."
            )


def value_size(value: Value) -> int:
    """Bytes a value takes, as the service counts them."""
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, bytes):
        return len(value)
    return 1 if isinstance(value, bool) else 8


def check_cell_name(spec: TableSpec, cell: Cell) -> None:
    """Attribute names follow the naming rule and differ from the primary-key columns."""
    if not NAME_RE.fullmatch(cell.name):
        raise invalid(f"Invalid column name: {cell.name}.")
    if any(cell.name == pk_name for pk_name, _ in spec.primary_key):
        raise invalid(f"Duplicated attribute column name with primary key column: {cell.name}.")
    if cell.value is not None and value_size(cell.value) > MAX_VALUE_LENGTH:
        raise invalid(
            f"The length of attribute column: {cell.name} exceeds the MaxLength:{MAX_VALUE_LENGTH} "
            f"with CurrentLength:{value_size(cell.value)}."
        )


def live_versions(versions: list[tuple[int, Value]], spec: TableSpec, now_ms: int) -> list[tuple[int, Value]]:
    """Versions still within the table's TTL and max versions, newest first."""
    if spec.time_to_live != -1:
        oldest = now_ms - spec.time_to_live * 1000
        versions = [(ts, value) for ts, value in versions if ts > oldest]
    return versions[: spec.max_versions]


def live_cells(row: StoredRow, spec: TableSpec, now_ms: int) -> dict[str, list[tuple[int, Value]]]:
    """Every column that still has a live version."""
    cells = {name: live_versions(versions, spec, now_ms) for name, versions in row.cells.items()}
    return {name: versions for name, versions in cells.items() if versions}


def row_exists(row: StoredRow | None, spec: TableSpec, now_ms: int) -> bool:
    """A row exists while a version of it is live, or while its attribute-less put is."""
    if row is None:
        return False
    if row.marker is not None and (spec.time_to_live == -1 or row.marker > now_ms - spec.time_to_live * 1000):
        return True
    return bool(live_cells(row, spec, now_ms))


def _kind(value: Value) -> type:
    return bool if isinstance(value, bool) else type(value)


def _compare(actual: Value, comparator: int, expected: Value | None) -> bool:
    if expected is None or _kind(actual) is not _kind(expected):
        # Values of different types never compare equal, and have no order.
        return comparator == CT_NOT_EQUAL
    a, e = actual, expected
    results = {
        CT_EQUAL: a == e,
        CT_NOT_EQUAL: a != e,
        CT_GREATER_THAN: a > e,  # type: ignore[operator]
        CT_GREATER_EQUAL: a >= e,  # type: ignore[operator]
        CT_LESS_THAN: a < e,  # type: ignore[operator]
        CT_LESS_EQUAL: a <= e,  # type: ignore[operator]
    }
    return results[comparator]


def matches(condition: ColumnCondition, cells: dict[str, list[tuple[int, Value]]]) -> bool:
    """Evaluate a column condition against a row's live cells (empty for a missing row)."""
    if isinstance(condition, ColumnLogic):
        outcomes = (matches(sub, cells) for sub in condition.subs)
        if condition.operator == LO_NOT:
            return not next(outcomes)
        return all(outcomes) if condition.operator == LO_AND else any(outcomes)
    versions = cells.get(condition.name, [])
    if condition.comparator in (CT_EXIST, CT_NOT_EXIST):
        return bool(versions) == (condition.comparator == CT_EXIST)
    if not versions:
        return condition.pass_if_missing
    if condition.latest_only:
        versions = versions[:1]
    return any(_compare(value, condition.comparator, condition.value) for _, value in versions)


def check_condition(condition: Condition, row: StoredRow | None, spec: TableSpec, now_ms: int) -> bool:
    """True when a write's row-existence expectation and column condition both hold."""
    exists = row_exists(row, spec, now_ms)
    if condition.expect == "EXPECT_EXIST" and not exists:
        return False
    if condition.expect == "EXPECT_NOT_EXIST" and exists:
        return False
    if condition.column is None:
        return True
    cells = live_cells(row, spec, now_ms) if row is not None and exists else {}
    return matches(condition.column, cells)


def project(row: StoredRow, spec: TableSpec, read: ReadSpec, now_ms: int) -> RowResult | None:
    """What a read returns for a stored row, or None when the row (or every wanted column) is absent."""
    if not row_exists(row, spec, now_ms):
        return None
    cells = live_cells(row, spec, now_ms)
    if read.filter is not None and not matches(read.filter, cells):
        return None
    wanted = set(read.columns)
    cap = min(read.max_versions or spec.max_versions, spec.max_versions)
    columns: list[tuple[str, Value, int]] = []
    for name in sorted(cells):
        if wanted and name not in wanted:
            continue
        if (read.start_column is not None and name < read.start_column) or (
            read.end_column is not None and name >= read.end_column
        ):
            continue
        versions = cells[name]
        if read.specific_time is not None:
            versions = [(ts, v) for ts, v in versions if ts == read.specific_time]
        elif read.time_range is not None:
            start, end = read.time_range
            versions = [(ts, v) for ts, v in versions if start <= ts < end]
        columns.extend((name, value, ts) for ts, value in versions[:cap])
    if wanted and not columns and not wanted & {name for name, _ in spec.primary_key}:
        return None
    return RowResult(list(row.primary_key), columns)


def result_size(result: RowResult) -> int:
    """Approximate bytes of a returned row (names, values, timestamps)."""
    size = sum(
        len(name) + value_size(value) for name, value in result.primary_key if not isinstance(value, Bound)
    )
    return size + sum(len(name) + value_size(value) + 8 for name, value, _ in result.columns)

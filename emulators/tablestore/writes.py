"""Write rules: table options, repeated rows in a batch, the cells of a change, and applying them."""

from __future__ import annotations

from emulators.tablestore.errors import ServiceError, invalid
from emulators.tablestore.model import (
    Condition,
    SortKey,
    StoredRow,
    TableSpec,
    WriteOp,
    check_cell_name,
    live_versions,
    sort_key,
)
from emulators.tablestore.plainbuffer import DELETE_ALL_VERSION, DELETE_ONE_VERSION, INCREMENT, Value


def check_options(spec: TableSpec) -> None:
    """TTL, max versions, deviation and capacity units within what the service accepts."""
    ttl = spec.time_to_live
    if ttl == 0 or ttl < -1:
        raise invalid("TimeToLive cannot be 0 or less than -1.")
    if 0 < ttl < 86400:
        raise invalid(f"Invalid TimeToLive: {ttl}. It must be -1 or at least 86400 seconds.")
    if spec.max_versions <= 0:
        raise invalid("The maximum versions cannot be less than or equal to 0.")
    if spec.deviation_s < 0:
        raise invalid("The maximum deviation must be in range [0, INT64_MAX/1000000].")
    if spec.read_cu < 0 or spec.write_cu < 0:
        raise invalid(
            f"Invalid Capacity Unit:({spec.read_cu}, {spec.write_cu}). Capacity Unit must be nonnegative."
        )


def check_repeated_rows(requests: list[tuple[str, list[WriteOp | ServiceError]]]) -> None:
    """A row may repeat in one batch only when none of its changes carries a condition."""
    seen: dict[tuple[str, SortKey], list[Condition]] = {}
    for table, ops in requests:
        for op in ops:
            if isinstance(op, WriteOp):
                seen.setdefault((table, sort_key(op.primary_key)), []).append(op.condition)
    for conditions in seen.values():
        if len(conditions) > 1:
            if any(c.expect != "IGNORE" for c in conditions):
                raise invalid("Repeated rows do not support row exist expectation check in BatchModify.")
            if any(c.column is not None for c in conditions):
                raise invalid("Repeated rows do not support row condition check in BatchModify.")


def check_cells(spec: TableSpec, op: WriteOp, now: int) -> None:
    """The cells of a PUT, UPDATE or DELETE: names, values, cell types and timestamps."""
    if op.kind == "DELETE":
        if not op.delete_marker:
            raise invalid("Invalid request of delete row: missing RowDeleteMarker in request.")
        if op.cells:
            raise invalid("Invalid delete row request: unexpected cells in request.")
        return
    if op.delete_marker:
        raise invalid("Invalid request of put/update row: unexpected RowDeleteMarker in request.")
    if op.kind == "UPDATE":
        if not spec.allow_update:
            raise invalid(f"UpdateRow is not allowed on table {spec.name}: allow_update is false.")
        if not op.cells:
            raise invalid("Invalid update row request: missing cells in request.")
    low = now - spec.deviation_s * 1000
    if spec.time_to_live != -1:
        low = max(low, now - spec.time_to_live * 1000)
    for cell in op.cells:
        check_cell_name(spec, cell)
        if op.kind == "PUT" and cell.op is not None:
            raise invalid(f"OpType cannot be given for column name:{cell.name} in PutRow.")
        if cell.op in (DELETE_ONE_VERSION, DELETE_ALL_VERSION):
            if cell.value is not None:
                raise invalid(
                    "Column value cannot be given when type is DELETE_ONE_VERSION,DELETE_ALL_VERSION."
                )
            if cell.op == DELETE_ONE_VERSION and cell.timestamp is None:
                raise invalid("Timestamp must be given when type is DELETE_ONE_VERSION.")
            if cell.op == DELETE_ALL_VERSION and cell.timestamp is not None:
                raise invalid("Timestamp cannot be given when type is DELETE_ALL_VERSION.")
            continue
        if cell.value is None:
            raise invalid(f"Invalid cell: {cell.name}. Reason: missing value.")
        if cell.op == INCREMENT and (type(cell.value) is not int or cell.timestamp is not None):
            raise invalid(
                f"Invalid increment of column {cell.name}: an integer without timestamp is required."
            )
        if cell.timestamp is not None and not low <= cell.timestamp < now + spec.deviation_s * 1000:
            raise invalid(f"Invalid timestamp. Cell:{cell.name}.")


def apply_cells(row: StoredRow, op: WriteOp, spec: TableSpec, now: int) -> None:
    """Write a change's cells into `row`: new versions, deleted versions, increments."""
    for cell in op.cells:
        versions = row.cells.get(cell.name, [])
        if cell.op == DELETE_ALL_VERSION:
            versions = []
        elif cell.op == DELETE_ONE_VERSION:
            versions = [(ts, v) for ts, v in versions if ts != cell.timestamp]
        else:
            value: Value = cell.value  # type: ignore[assignment]
            if cell.op == INCREMENT:
                current = live_versions(versions, spec, now)
                if current and type(current[0][1]) is not int:
                    raise invalid(f"The original value of column {cell.name} is not an integer.")
                value = (current[0][1] if current else 0) + value  # type: ignore[operator]
            ts = now if cell.timestamp is None else cell.timestamp
            versions = sorted([(t, v) for t, v in versions if t != ts] + [(ts, value)], key=lambda tv: -tv[0])
            versions = versions[: spec.max_versions]
        if versions:
            row.cells[cell.name] = versions
        else:
            row.cells.pop(cell.name, None)

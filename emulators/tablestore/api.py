"""Each operation of the service: protobuf request in, store call, protobuf response out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tablestore.protobuf.table_store_pb2 as pb
from google.protobuf.message import Message

from emulators.tablestore.errors import ServiceError, invalid
from emulators.tablestore.model import TableSpec, WriteOp
from emulators.tablestore.store import Store
from emulators.tablestore.wire import (
    BATCH_WRITE_BYTES,
    DEFINED_ENUMS,
    DEFINED_TYPES,
    PK_ENUMS,
    PK_TYPES,
    WRITE_KINDS,
    capacity_units,
    encode_primary_key,
    encode_row,
    parse,
    read_row,
    read_spec,
    set_capacity,
    transaction_id,
    write_op,
)


# -- tables -----------------------------------------------------------------------------------
def create_table(store: Store, body: bytes) -> Message:
    """CreateTable."""
    request = parse(pb.CreateTableRequest, body)
    meta, options = request.table_meta, request.table_options
    if any(column.HasField("option") for column in meta.primary_key):
        raise invalid("Auto increment primary keys are not supported by the emulator.")
    if request.index_metas:
        raise invalid("Secondary indexes are not supported by the emulator.")
    if not options.HasField("time_to_live"):
        raise invalid("Time-to-live is missing while creating table.")
    if not options.HasField("max_versions"):
        raise invalid("MaxVersions is missing while creating table.")
    spec = TableSpec(
        name=meta.table_name,
        primary_key=[
            (c.name, PK_TYPES.get(c.type, pb.PrimaryKeyType.Name(c.type))) for c in meta.primary_key
        ],
        defined_columns=[(c.name, DEFINED_TYPES[c.type]) for c in meta.defined_column],
        time_to_live=options.time_to_live,
        max_versions=options.max_versions,
        deviation_s=options.deviation_cell_version_in_sec
        if options.HasField("deviation_cell_version_in_sec")
        else 86400,
        allow_update=options.allow_update if options.HasField("allow_update") else True,
        read_cu=request.reserved_throughput.capacity_unit.read,
        write_cu=request.reserved_throughput.capacity_unit.write,
    )
    store.create_table(spec)
    return pb.CreateTableResponse()


def list_table(store: Store, body: bytes) -> Message:
    """ListTable."""
    parse(pb.ListTableRequest, body)
    response = pb.ListTableResponse()
    response.table_names.extend(store.list_tables())
    return response


def delete_table(store: Store, body: bytes) -> Message:
    """DeleteTable."""
    store.delete_table(parse(pb.DeleteTableRequest, body).table_name)
    return pb.DeleteTableResponse()


def _fill_details(spec: TableSpec, details: Any, options: Any) -> None:
    set_capacity(details, spec.read_cu, spec.write_cu)
    details.last_increase_time = spec.created_s
    if spec.decreased_s is not None:
        details.last_decrease_time = spec.decreased_s
    options.time_to_live = spec.time_to_live
    options.max_versions = spec.max_versions
    options.deviation_cell_version_in_sec = spec.deviation_s
    options.allow_update = spec.allow_update


def describe_table(store: Store, body: bytes) -> Message:
    """DescribeTable."""
    spec = store.describe_table(parse(pb.DescribeTableRequest, body).table_name)
    response = pb.DescribeTableResponse()
    response.table_meta.table_name = spec.name
    for name, pk_type in spec.primary_key:
        response.table_meta.primary_key.add(name=name, type=PK_ENUMS[pk_type])
    for name, column_type in spec.defined_columns:
        response.table_meta.defined_column.add(name=name, type=DEFINED_ENUMS[column_type])
    _fill_details(spec, response.reserved_throughput_details, response.table_options)
    return response


def update_table(store: Store, body: bytes) -> Message:
    """UpdateTable."""
    request = parse(pb.UpdateTableRequest, body)
    options, units = request.table_options, request.reserved_throughput.capacity_unit
    if request.HasField("table_options") and not options.ListFields():
        raise invalid("No parameter is specified in table options.")

    def field(message: Any, name: str) -> Any:
        return getattr(message, name) if message.HasField(name) else None

    spec = store.update_table(
        request.table_name,
        time_to_live=field(options, "time_to_live"),
        max_versions=field(options, "max_versions"),
        deviation_s=field(options, "deviation_cell_version_in_sec"),
        allow_update=field(options, "allow_update"),
        read_cu=field(units, "read"),
        write_cu=field(units, "write"),
    )
    response = pb.UpdateTableResponse()
    _fill_details(spec, response.reserved_throughput_details, response.table_options)
    return response


# -- rows -------------------------------------------------------------------------------------
def get_row(store: Store, body: bytes) -> Message:
    """GetRow."""
    request = parse(pb.GetRowRequest, body)
    result = store.get_row(
        request.table_name,
        read_row(request.primary_key).primary_key,
        read_spec(request),
        transaction_id(request),
    )
    response = pb.GetRowResponse()
    response.row = encode_row(result) if result is not None else b""
    set_capacity(response.consumed, read=capacity_units(len(response.row)))
    return response


def _single_write(store: Store, request: Any, kind: str, raw: bytes, response: Any) -> Message:
    op = write_op(kind, raw, request.condition, request.return_content)
    returned = store.write(request.table_name, op, transaction_id(request))
    if returned is not None:
        response.row = encode_primary_key(returned)
    set_capacity(response.consumed, write=capacity_units(len(raw)))
    return response  # type: ignore[no-any-return]


def put_row(store: Store, body: bytes) -> Message:
    """PutRow."""
    request = parse(pb.PutRowRequest, body)
    return _single_write(store, request, "PUT", request.row, pb.PutRowResponse())


def update_row(store: Store, body: bytes) -> Message:
    """UpdateRow."""
    request = parse(pb.UpdateRowRequest, body)
    return _single_write(store, request, "UPDATE", request.row_change, pb.UpdateRowResponse())


def delete_row(store: Store, body: bytes) -> Message:
    """DeleteRow."""
    request = parse(pb.DeleteRowRequest, body)
    return _single_write(store, request, "DELETE", request.primary_key, pb.DeleteRowResponse())


def _set_error(row: Any, error: ServiceError) -> None:
    row.is_ok = False
    row.error.code = error.code
    row.error.message = error.message


def batch_get_row(store: Store, body: bytes) -> Message:
    """BatchGetRow."""
    request = parse(pb.BatchGetRowRequest, body)
    asks = [
        (t.table_name, [read_row(pk).primary_key for pk in t.primary_key], read_spec(t))
        for t in request.tables
    ]
    response = pb.BatchGetRowResponse()
    for (table, _, _), results in zip(asks, store.batch_get(asks), strict=True):
        out = response.tables.add(table_name=table)
        for result in results:
            row = out.rows.add()
            if isinstance(result, ServiceError):
                _set_error(row, result)
                continue
            row.is_ok = True
            row.row = encode_row(result) if result is not None else b""
            set_capacity(row.consumed, read=capacity_units(len(row.row)))
    return response


def batch_write_row(store: Store, body: bytes) -> Message:
    """BatchWriteRow: per-row results; only malformed or oversized requests fail as a whole."""
    request = parse(pb.BatchWriteRowRequest, body)
    size = sum(len(row.row_change) for table in request.tables for row in table.rows)
    if size > BATCH_WRITE_BYTES:
        raise invalid(
            "The total data size of BatchWriteRow request exceeds the limit, "
            f"limit size: {BATCH_WRITE_BYTES}, data size: {size}."
        )
    asks: list[tuple[str, list[WriteOp | ServiceError]]] = []
    for table in request.tables:
        ops: list[WriteOp | ServiceError] = []
        for row in table.rows:
            if row.type not in WRITE_KINDS:
                raise invalid("The modify type is invalid.")
            ops.append(write_op(WRITE_KINDS[row.type], row.row_change, row.condition, row.return_content))
        asks.append((table.table_name, ops))
    response = pb.BatchWriteRowResponse()
    outcomes = store.batch_write(asks, transaction_id(request))
    for table, results in zip(request.tables, outcomes, strict=True):
        out = response.tables.add(table_name=table.table_name)
        for source, result in zip(table.rows, results, strict=True):
            row = out.rows.add()
            if isinstance(result, ServiceError):
                _set_error(row, result)
                continue
            row.is_ok = True
            if result is not None:
                row.row = encode_primary_key(result)
            set_capacity(row.consumed, write=capacity_units(len(source.row_change)))
    return response


def get_range(store: Store, body: bytes) -> Message:
    """GetRange."""
    request = parse(pb.GetRangeRequest, body)
    rows, next_key = store.get_range(
        request.table_name,
        request.direction == pb.FORWARD,
        read_row(request.inclusive_start_primary_key).primary_key,
        read_row(request.exclusive_end_primary_key).primary_key,
        read_spec(request),
        request.limit if request.HasField("limit") else None,
        transaction_id(request),
    )
    encoded = [encode_row(row) for row in rows]
    response = pb.GetRangeResponse()
    # One header for the whole list: later rows drop their own 4-byte header.
    response.rows = encoded[0] + b"".join(row[4:] for row in encoded[1:]) if encoded else b""
    if next_key is not None:
        response.next_start_primary_key = encode_primary_key(next_key)
    set_capacity(response.consumed, read=capacity_units(len(response.rows)))
    return response


# -- local transactions -----------------------------------------------------------------------
def start_local_transaction(store: Store, body: bytes) -> Message:
    """StartLocalTransaction."""
    request = parse(pb.StartLocalTransactionRequest, body)
    txn = store.start_transaction(request.table_name, read_row(request.key).primary_key)
    return pb.StartLocalTransactionResponse(transaction_id=txn)


def commit_transaction(store: Store, body: bytes) -> Message:
    """CommitTransaction."""
    store.commit_transaction(parse(pb.CommitTransactionRequest, body).transaction_id)
    return pb.CommitTransactionResponse()


def abort_transaction(store: Store, body: bytes) -> Message:
    """AbortTransaction."""
    store.abort_transaction(parse(pb.AbortTransactionRequest, body).transaction_id)
    return pb.AbortTransactionResponse()


HANDLERS: dict[str, Callable[[Store, bytes], Message]] = {
    "CreateTable": create_table,
    "ListTable": list_table,
    "DeleteTable": delete_table,
    "DescribeTable": describe_table,
    "UpdateTable": update_table,
    "GetRow": get_row,
    "PutRow": put_row,
    "UpdateRow": update_row,
    "DeleteRow": delete_row,
    "BatchGetRow": batch_get_row,
    "BatchWriteRow": batch_write_row,
    "GetRange": get_range,
    "StartLocalTransaction": start_local_transaction,
    "CommitTransaction": commit_transaction,
    "AbortTransaction": abort_transaction,
}
MUTATING = {
    "CreateTable",
    "DeleteTable",
    "UpdateTable",
    "PutRow",
    "UpdateRow",
    "DeleteRow",
    "BatchWriteRow",
    "CommitTransaction",
}


def _keys(rows: Any) -> list[tuple[Any, ...]]:
    return [tuple(value for _, value in read_row(row).primary_key) for row in rows]


_ROWS_NAMED: dict[str, Callable[[bytes], list[tuple[Any, ...]]]] = {
    "GetRow": lambda body: _keys([parse(pb.GetRowRequest, body).primary_key]),
    "PutRow": lambda body: _keys([parse(pb.PutRowRequest, body).row]),
    "UpdateRow": lambda body: _keys([parse(pb.UpdateRowRequest, body).row_change]),
    "DeleteRow": lambda body: _keys([parse(pb.DeleteRowRequest, body).primary_key]),
    "BatchGetRow": lambda body: _keys(
        pk for table in parse(pb.BatchGetRowRequest, body).tables for pk in table.primary_key
    ),
    "BatchWriteRow": lambda body: _keys(
        row.row_change for table in parse(pb.BatchWriteRowRequest, body).tables for row in table.rows
    ),
}


def rows_named(api: str, body: bytes) -> tuple[tuple[Any, ...], ...]:
    """The primary keys (values only) of the rows a request names; none for range reads and tables."""
    try:
        return tuple(_ROWS_NAMED[api](body)) if api in _ROWS_NAMED else ()
    except ServiceError:
        return ()


def handle(store: Store, api: str, body: bytes) -> bytes:
    """Run one operation; raises ServiceError for an error answer."""
    handler = HANDLERS.get(api)
    if handler is None:
        raise invalid(f"Unsupported operation: {api}.")
    return handler(store, body).SerializeToString()

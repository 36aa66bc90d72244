"""Wire helpers: protobuf parsing, PlainBuffer rows in and out, and requests turned into model terms.

Message classes come from the SDK's `tablestore.protobuf`; rows that go back to the client are
written with the SDK's `PlainBufferBuilder`, rows that come in are read by our own `plainbuffer`.
"""

from __future__ import annotations

import math
from typing import Any, TypeVar

import tablestore.protobuf.table_store_filter_pb2 as fpb
import tablestore.protobuf.table_store_pb2 as pb
from google.protobuf.message import DecodeError, Message
from tablestore.plainbuffer.plain_buffer_builder import PlainBufferBuilder

from emulators.tablestore.errors import invalid
from emulators.tablestore.model import (
    CT_EXIST,
    CT_NOT_EXIST,
    LO_NOT,
    ColumnCheck,
    ColumnCondition,
    ColumnLogic,
    Condition,
    PrimaryKey,
    ReadSpec,
    RowResult,
    WriteOp,
)
from emulators.tablestore.plainbuffer import ParsedRow, PlainBufferError, Value, parse_row, parse_variant

M = TypeVar("M", bound=Message)

PK_TYPES = {pb.INTEGER: "INTEGER", pb.STRING: "STRING", pb.BINARY: "BINARY"}
PK_ENUMS = {name: number for number, name in PK_TYPES.items()}
DEFINED_TYPES = {
    pb.DCT_INTEGER: "INTEGER",
    pb.DCT_DOUBLE: "DOUBLE",
    pb.DCT_BOOLEAN: "BOOLEAN",
    pb.DCT_STRING: "STRING",
    pb.DCT_BLOB: "BINARY",
}
DEFINED_ENUMS = {name: number for number, name in DEFINED_TYPES.items()}
EXPECTATIONS = {pb.IGNORE: "IGNORE", pb.EXPECT_EXIST: "EXPECT_EXIST", pb.EXPECT_NOT_EXIST: "EXPECT_NOT_EXIST"}
WRITE_KINDS = {pb.PUT: "PUT", pb.UPDATE: "UPDATE", pb.DELETE: "DELETE"}
BATCH_WRITE_BYTES = 4 * 1024 * 1024


def parse(cls: type[M], body: bytes) -> M:
    """Decode a protobuf request; OTSParameterInvalid if it is malformed or incomplete."""
    message = cls()
    try:
        message.ParseFromString(body)
    except DecodeError:
        raise invalid("Parse PBMessage from RawString failed.") from None
    if not message.IsInitialized():
        raise invalid(f"Missing required fields: {', '.join(message.FindInitializationErrors())}.")
    return message


def read_row(data: bytes) -> ParsedRow:
    """Decode a PlainBuffer row; OTSParameterInvalid if it is malformed."""
    try:
        return parse_row(data)
    except PlainBufferError as exc:
        raise invalid(str(exc)) from None


def _sdk_value(value: Any) -> Any:
    # The SDK's builder writes bytes as a STRING and bytearray as a BINARY.
    return bytearray(value) if isinstance(value, bytes) else value


def encode_row(result: RowResult) -> bytes:
    """A returned row as PlainBuffer (header included)."""
    primary_key = [(name, _sdk_value(value)) for name, value in result.primary_key]
    columns = [(name, _sdk_value(value), ts) for name, value, ts in result.columns]
    return bytes(PlainBufferBuilder.serialize_for_put_row(primary_key, columns))


def encode_primary_key(primary_key: PrimaryKey) -> bytes:
    """A primary key alone, as a PlainBuffer row."""
    return bytes(PlainBufferBuilder.serialize_primary_key([(n, _sdk_value(v)) for n, v in primary_key]))


def set_capacity(message: Any, read: int = 0, write: int = 0) -> None:
    """Fill a ConsumedCapacity/ReservedThroughput message's capacity unit."""
    message.capacity_unit.read = read
    message.capacity_unit.write = write


def capacity_units(size: int) -> int:
    """Capacity units for `size` bytes: one per started 4 KB, at least one."""
    return max(1, math.ceil(size / 4096))


# -- conditions and reads ---------------------------------------------------------------------
def column_condition(raw: bytes) -> ColumnCondition:
    """Decode a serialized `Filter` (single-column or composite) into model terms."""
    outer = parse(fpb.Filter, raw)
    if outer.type == fpb.FT_SINGLE_COLUMN_VALUE:
        single = parse(fpb.SingleColumnValueFilter, outer.filter)
        if single.HasField("value_trans_rule"):
            raise invalid("Regex column conditions are not supported by the emulator.")
        value: Value | None = None
        if single.comparator not in (CT_EXIST, CT_NOT_EXIST) or single.column_value:
            try:
                value = parse_variant(single.column_value)
            except PlainBufferError:
                raise invalid("Deserialize relation filter failed.") from None
        return ColumnCheck(
            single.column_name,
            single.comparator,
            value,
            not single.filter_if_missing,
            single.latest_version_only,
        )
    if outer.type == fpb.FT_COMPOSITE_COLUMN_VALUE:
        composite = parse(fpb.CompositeColumnValueFilter, outer.filter)
        subs = tuple(column_condition(sub.SerializeToString()) for sub in composite.sub_filters)
        if composite.combinator == LO_NOT and len(subs) != 1:
            raise invalid("Invalid NOT operator: the number of sub-filters must be 1.")
        if composite.combinator != LO_NOT and len(subs) < 2:
            raise invalid("Invalid AND/OR operator: the number of sub-filters must be 2.")
        return ColumnLogic(composite.combinator, subs)
    raise invalid(f"Invalid type of filter: {outer.type}.")


def write_condition(message: Any) -> Condition:
    """Decode a `Condition` message."""
    column = column_condition(message.column_condition) if message.HasField("column_condition") else None
    return Condition(EXPECTATIONS[message.row_existence], column)


def read_spec(message: Any) -> ReadSpec:
    """What a GetRow/BatchGetRow table/GetRange request asks to read."""
    max_versions = message.max_versions if message.HasField("max_versions") else None
    time_range = specific = None
    if message.HasField("time_range"):
        window = message.time_range
        if window.HasField("specific_time"):
            specific = window.specific_time
        elif window.HasField("start_time") != window.HasField("end_time"):
            raise invalid("Start and end time must be given at the same time.")
        elif window.HasField("start_time"):
            time_range = (window.start_time, window.end_time)
    if max_versions is None and time_range is None and specific is None:
        raise invalid("No version condition is specified while querying row.")
    if max_versions is not None and max_versions <= 0:
        raise invalid(f"Invalid max versions: {max_versions}. Reason: Max versions must be positive.")
    return ReadSpec(
        columns=tuple(message.columns_to_get),
        max_versions=max_versions,
        time_range=time_range,
        specific_time=specific,
        filter=column_condition(message.filter) if message.HasField("filter") else None,
        start_column=message.start_column if message.HasField("start_column") else None,
        end_column=message.end_column if message.HasField("end_column") else None,
    )


def transaction_id(message: Any) -> str | None:
    """The request's local transaction, if any."""
    return message.transaction_id if message.HasField("transaction_id") else None


def write_op(kind: str, raw: bytes, condition: Any, return_content: Any) -> WriteOp:
    """A row change from its PlainBuffer row, condition and return content."""
    row = read_row(raw)
    return_pk = return_content.return_type == pb.RT_PK
    return WriteOp(kind, row.primary_key, row.cells, write_condition(condition), return_pk, row.delete_marker)

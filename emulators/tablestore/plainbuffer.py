"""A reader for the PlainBuffer rows the SDK sends, cell-type markers and CRC-8 checks included.

The SDK's own reader (`PlainBufferCodedInputStream`) only decodes plain rows: it cannot read the
cell-type byte UpdateRow puts on a deleted or incremented cell, nor the INF_MIN/INF_MAX bounds of a
GetRange. This module reads what a client may send, written from the format description:

    row     := header(int32 LE = 0x75) ROW_PK cell* [ROW_DATA cell*] [DELETE_MARKER] ROW_CHECKSUM u8
    cell    := CELL NAME(u32 len, utf-8) [VALUE(u32 len, type u8, payload)] [TYPE u8]
               [TIMESTAMP i64] CELL_CHECKSUM u8
    variant := type u8 payload          (a condition's operand: a value without tag or length)

A cell's checksum is the CRC-8 (polynomial 0x07) of its name, its value's type and payload, its
timestamp and then its cell type; the row's is the CRC-8 of every cell checksum in order followed
by one byte, 1 when the row carries a delete marker and 0 otherwise.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

HEADER = 0x75

TAG_ROW_PK = 0x01
TAG_ROW_DATA = 0x02
TAG_CELL = 0x03
TAG_CELL_NAME = 0x04
TAG_CELL_VALUE = 0x05
TAG_CELL_TYPE = 0x06
TAG_CELL_TIMESTAMP = 0x07
TAG_DELETE_ROW_MARKER = 0x08
TAG_ROW_CHECKSUM = 0x09
TAG_CELL_CHECKSUM = 0x0A

VT_INTEGER = 0x0
VT_DOUBLE = 0x1
VT_BOOLEAN = 0x2
VT_STRING = 0x3
VT_BLOB = 0x7
VT_INF_MIN = 0x9
VT_INF_MAX = 0xA
VT_AUTO_INCREMENT = 0xB

DELETE_ALL_VERSION = 0x1
DELETE_ONE_VERSION = 0x3
INCREMENT = 0x4
CELL_TYPES = (DELETE_ALL_VERSION, DELETE_ONE_VERSION, INCREMENT)


class Bound:
    """A primary-key bound that is not a value: INF_MIN, INF_MAX, or an auto-increment placeholder."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


INF_MIN = Bound("INF_MIN")
INF_MAX = Bound("INF_MAX")
AUTO_INCREMENT = Bound("AUTO_INCREMENT")

Value = int | float | bool | str | bytes
PKValue = int | str | bytes | Bound


class PlainBufferError(ValueError):
    """The bytes are not a well-formed PlainBuffer row (the service answers OTSParameterInvalid)."""


@dataclass(frozen=True)
class Cell:
    """One attribute cell of a row change; `op` is None for a put, else a cell-type constant."""

    name: str
    value: Value | None
    op: int | None
    timestamp: int | None


@dataclass(frozen=True)
class ParsedRow:
    """A decoded row: primary-key columns in order, attribute cells, and the delete marker."""

    primary_key: list[tuple[str, PKValue]]
    cells: list[Cell]
    delete_marker: bool


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
        table.append(crc)
    return table


_CRC8 = _crc_table()


def crc8(crc: int, data: bytes) -> int:
    """Extend a CRC-8 (polynomial 0x07, no reflection) over `data`."""
    for byte in data:
        crc = _CRC8[crc ^ byte]
    return crc


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, size: int) -> bytes:
        if size < 0 or self.pos + size > len(self.data):
            raise PlainBufferError("Input encoded row broken, length is shorter than expect.")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u32(self) -> int:
        return int(struct.unpack("<I", self.take(4))[0])

    def i64(self) -> int:
        return int(struct.unpack("<q", self.take(8))[0])

    def peek(self) -> int | None:
        return self.data[self.pos] if self.pos < len(self.data) else None

    def expect(self, tag: int) -> None:
        actual = self.u8()
        if actual != tag:
            raise PlainBufferError(f"Cell data broken, mismatch tag, actual tag({actual}), expect({tag}).")


def _utf8(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PlainBufferError(f"Value of column {what} must be UTF8 encoding.") from None


def _read_typed(reader: _Reader, vtype: int, what: str) -> Value | Bound:
    """Read the payload of a value whose type byte was just read."""
    if vtype == VT_INTEGER:
        return reader.i64()
    if vtype == VT_DOUBLE:
        value = float(struct.unpack("<d", reader.take(8))[0])
        if math.isnan(value):
            raise PlainBufferError("NaN can't be set to double value.")
        if math.isinf(value):
            raise PlainBufferError("Infinity can't be set to double value.")
        return value
    if vtype == VT_BOOLEAN:
        return reader.u8() != 0
    if vtype in (VT_STRING, VT_BLOB):
        raw = reader.take(reader.u32())
        return _utf8(raw, what) if vtype == VT_STRING else raw
    bounds = {VT_INF_MIN: INF_MIN, VT_INF_MAX: INF_MAX, VT_AUTO_INCREMENT: AUTO_INCREMENT}
    if vtype in bounds:
        return bounds[vtype]
    raise PlainBufferError("data format is invalid, unknown variant type occured.")


def _read_cell(reader: _Reader) -> tuple[str, Value | Bound | None, int | None, int | None, int]:
    """Read one cell after its CELL tag; return name, value, op, timestamp and the checked checksum."""
    reader.expect(TAG_CELL_NAME)
    raw_name = reader.take(reader.u32())
    name = _utf8(raw_name, "name")
    crc = crc8(0, raw_name)
    value: Value | Bound | None = None
    op = timestamp = None
    if reader.peek() == TAG_CELL_VALUE:
        reader.pos += 1
        size = reader.u32()
        start = reader.pos
        value = _read_typed(reader, reader.u8(), name)
        if reader.pos - start != size:
            raise PlainBufferError(f"Cell data broken, wrong value length for cell: {name}.")
        crc = crc8(crc, reader.data[start : reader.pos])
    if reader.peek() == TAG_CELL_TYPE:
        reader.pos += 1
        op = reader.u8()
    if reader.peek() == TAG_CELL_TIMESTAMP:
        reader.pos += 1
        timestamp = reader.i64()
        crc = crc8(crc, struct.pack("<q", timestamp))
    if op is not None:
        crc = crc8(crc, bytes([op]))
    if reader.peek() != TAG_CELL_CHECKSUM:
        raise PlainBufferError(f"Invalid Column({name}): missing checksum.")
    reader.pos += 1
    given = reader.u8()
    if given != crc:
        raise PlainBufferError(f"Cell data broken, checksum is mismatch, {given} : {crc} :")
    return name, value, op, timestamp, crc


def _read_row(reader: _Reader) -> ParsedRow:
    reader.expect(TAG_ROW_PK)
    row_crc = 0
    primary_key: list[tuple[str, PKValue]] = []
    while reader.peek() == TAG_CELL:
        reader.pos += 1
        name, value, op, timestamp, crc = _read_cell(reader)
        if value is None:
            raise PlainBufferError(f"Cell data broken, PK value cannot be NULL, name: {name}.")
        if op is not None:
            raise PlainBufferError(f"OpType cannot be given for primary key name :{name}.")
        if timestamp is not None:
            raise PlainBufferError(f"Timestamp cannot be given for primary key name:{name}.")
        if isinstance(value, (bool, float)):
            raise PlainBufferError(f"Unknown or unsupported CellType in primary key: {name}.")
        primary_key.append((name, value))
        row_crc = crc8(row_crc, bytes([crc]))
    if not primary_key:
        raise PlainBufferError("Cell data broken, PK is empty.")
    cells: list[Cell] = []
    if reader.peek() == TAG_ROW_DATA:
        reader.pos += 1
        while reader.peek() == TAG_CELL:
            reader.pos += 1
            name, value, op, timestamp, crc = _read_cell(reader)
            if isinstance(value, Bound):
                raise PlainBufferError(f"Invalid column type for attribute column: {name}.")
            if op is not None and op not in CELL_TYPES:
                raise PlainBufferError(f"Invalid op type of cell: {op}.")
            cells.append(Cell(name, value, op, timestamp))
            row_crc = crc8(row_crc, bytes([crc]))
    delete_marker = reader.peek() == TAG_DELETE_ROW_MARKER
    if delete_marker:
        reader.pos += 1
    row_crc = crc8(row_crc, b"\x01" if delete_marker else b"\x00")
    if reader.peek() != TAG_ROW_CHECKSUM:
        raise PlainBufferError("Invalid row: missing checksum.")
    reader.pos += 1
    given = reader.u8()
    if given != row_crc:
        raise PlainBufferError(f"Cell data broken, checksum is mismatch, {given} : {row_crc} :")
    return ParsedRow(primary_key, cells, delete_marker)


def parse_row(data: bytes) -> ParsedRow:
    """Decode one PlainBuffer row (header included), verifying every checksum."""
    reader = _Reader(bytes(data))
    header = int(struct.unpack("<i", reader.take(4))[0])
    if header != HEADER:
        raise PlainBufferError(f"Cell data broken, mismatch header, actual: {header}, expect: {HEADER}.")
    row = _read_row(reader)
    if reader.pos != len(reader.data):
        raise PlainBufferError("Cell data broken, has more data in cell, but they can't be parsed.")
    return row


def parse_variant(data: bytes) -> Value:
    """Decode a bare value (type byte and payload), as conditions and filters carry their operand."""
    reader = _Reader(bytes(data))
    value = _read_typed(reader, reader.u8(), "condition")
    if isinstance(value, Bound) or reader.pos != len(reader.data):
        raise PlainBufferError("Deserialize relation filter failed.")
    return value

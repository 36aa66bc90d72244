"""The Tablestore emulator, driven by the real `tablestore` SDK over 127.0.0.1."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import tablestore.protobuf.table_store_pb2 as pb
from tablestore import (
    INF_MAX,
    INF_MIN,
    BatchGetRowRequest,
    BatchWriteRowRequest,
    CapacityUnit,
    ComparatorType,
    CompositeColumnCondition,
    Condition,
    DeleteRowItem,
    Direction,
    LogicalOperator,
    OTSClient,
    OTSClientError,
    OTSServiceError,
    PutRowItem,
    ReservedThroughput,
    ReturnType,
    Row,
    RowExistenceExpectation,
    SingleColumnCondition,
    TableInBatchGetRowItem,
    TableInBatchWriteRowItem,
    TableMeta,
    TableOptions,
    UpdateRowItem,
)
from tablestore.retry import NoRetryPolicy

from emulators.tablestore import TablestoreEmulator
from emulators.tablestore.plainbuffer import PlainBufferError, parse_row

ROOT = Path(__file__).resolve().parents[1]
AK, SECRET, INSTANCE = "test-ak", "test-secret", "dwnotify"
IGNORE = Condition(RowExistenceExpectation.IGNORE)
EXIST = Condition(RowExistenceExpectation.EXPECT_EXIST)
NOT_EXIST = Condition(RowExistenceExpectation.EXPECT_NOT_EXIST)
_names = itertools.count()


def client_for(endpoint: str, secret: str = SECRET, **kwargs: Any) -> OTSClient:
    return OTSClient(
        endpoint, AK, secret, INSTANCE, retry_policy=NoRetryPolicy(), socket_timeout=10, **kwargs
    )


def service_error(code: str, status: int, call: Callable[[], Any]) -> str:
    with pytest.raises(OTSServiceError) as caught:
        call()
    assert (caught.value.code, caught.value.get_http_status()) == (code, status), str(caught.value)
    return str(caught.value.message)


def make_table(client: OTSClient, pk: list[tuple[str, str]] | None = None, **options: Any) -> str:
    name = f"t{next(_names)}"
    meta = TableMeta(name, pk or [("id", "STRING")])
    client.create_table(meta, TableOptions(**options), ReservedThroughput(CapacityUnit(0, 0)))
    return name


def puts(table: str, rows: list[tuple[list[Any], list[Any]]]) -> BatchWriteRowRequest:
    request = BatchWriteRowRequest()
    request.add(
        TableInBatchWriteRowItem(table, [PutRowItem(Row(pk, columns), IGNORE) for pk, columns in rows])
    )
    return request


def value_of(row: Row, column: str) -> Any:
    return next(value for name, value, _ in row.attribute_columns if name == column)


@pytest.fixture(scope="module")
def emu() -> Iterator[TablestoreEmulator]:
    with TablestoreEmulator(AK, SECRET, INSTANCE) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def client(emu: TablestoreEmulator) -> OTSClient:
    return client_for(emu.endpoint)


def test_table_lifecycle(client: OTSClient) -> None:
    name = make_table(client, [("run", "STRING"), ("seq", "INTEGER")], time_to_live=86400 * 7, max_version=1)
    assert name in client.list_table()
    described = client.describe_table(name)
    assert described.table_meta.schema_of_primary_key == [("run", "STRING"), ("seq", "INTEGER")]
    assert (described.table_options.time_to_live, described.table_options.max_version) == (604800, 1)
    updated = client.update_table(name, TableOptions(max_version=2))
    assert updated.table_options.max_version == 2
    assert "already exists" in service_error(
        "OTSObjectAlreadyExist",
        409,
        lambda: client.create_table(
            TableMeta(name, [("run", "STRING")]), TableOptions(), ReservedThroughput(CapacityUnit(0, 0))
        ),
    )
    client.delete_table(name)
    assert name not in client.list_table()
    missing = "Requested table does not exist."
    assert service_error("OTSObjectNotExist", 404, lambda: client.describe_table(name)) == missing
    assert service_error("OTSObjectNotExist", 404, lambda: client.delete_table(name)) == missing
    assert (
        service_error("OTSObjectNotExist", 404, lambda: client.get_row(name, [("run", "a"), ("seq", 1)]))
        == missing
    )
    service_error("OTSParameterInvalid", 400, lambda: make_table(client, time_to_live=3600))


def test_put_get_delete_round_trip_all_types(client: OTSClient) -> None:
    table = make_table(client, [("id", "STRING"), ("n", "INTEGER"), ("b", "BINARY")])
    pk = [("id", "运行-1"), ("n", -5), ("b", bytearray(b"\x00\xff"))]
    columns = [("s", "状态"), ("i", 2**40), ("f", 1.5), ("t", True), ("raw", bytearray(b"\x01\x02"))]
    consumed, returned = client.put_row(table, Row(pk, columns), NOT_EXIST, ReturnType.RT_PK)
    assert consumed.write >= 1 and returned.primary_key == pk
    _, row, _ = client.get_row(table, pk)
    assert row.primary_key == pk
    assert [(n, v) for n, v, _ in row.attribute_columns] == sorted(columns)
    assert all(isinstance(ts, int) and ts > 1_600_000_000_000 for _, _, ts in row.attribute_columns)
    _, row, _ = client.get_row(table, pk, columns_to_get=["s", "missing"])
    assert [(n, v) for n, v, _ in row.attribute_columns] == [("s", "状态")]
    assert client.get_row(table, pk, columns_to_get=["missing"])[1] is None
    client.delete_row(table, Row(pk), EXIST)
    assert client.get_row(table, pk)[1] is None
    service_error("OTSConditionCheckFail", 403, lambda: client.delete_row(table, Row(pk), EXIST))


def test_second_expect_not_exist_put_fails(client: OTSClient) -> None:
    table = make_table(client)
    client.put_row(table, Row([("id", "lock")], [("owner", "a")]), NOT_EXIST)
    message = service_error(
        "OTSConditionCheckFail",
        403,
        lambda: client.put_row(table, Row([("id", "lock")], [("owner", "b")]), NOT_EXIST),
    )
    assert message == "Condition check failed."
    assert value_of(client.get_row(table, [("id", "lock")])[1], "owner") == "a"


def test_racing_conditional_puts_have_one_winner(emu: TablestoreEmulator) -> None:
    table = make_table(client_for(emu.endpoint))

    def claim(worker: int) -> str | None:
        try:
            client_for(emu.endpoint).put_row(table, Row([("id", "run-1")], [("owner", worker)]), NOT_EXIST)
        except OTSServiceError as exc:
            return str(exc.code)
        return None

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(claim, range(8)))
    assert sorted(outcomes, key=str) == [None] + ["OTSConditionCheckFail"] * 7


def test_a_row_may_hold_only_its_primary_key(client: OTSClient) -> None:
    table = make_table(client)
    client.put_row(table, Row([("id", "bare")], []), NOT_EXIST)
    _, row, _ = client.get_row(table, [("id", "bare")])
    assert (row.primary_key, row.attribute_columns) == ([("id", "bare")], [])
    service_error(
        "OTSConditionCheckFail", 403, lambda: client.put_row(table, Row([("id", "bare")], []), NOT_EXIST)
    )


def test_stale_version_condition_fails(client: OTSClient) -> None:
    table = make_table(client)
    pk = [("id", "state")]
    client.put_row(table, Row(pk, [("version", 1), ("body", "v1")]), NOT_EXIST)
    bump = Condition(
        RowExistenceExpectation.EXPECT_EXIST, SingleColumnCondition("version", 1, ComparatorType.EQUAL)
    )
    client.update_row(table, Row(pk, {"put": [("version", 2), ("body", "v2")]}), bump)
    service_error(
        "OTSConditionCheckFail",
        403,
        lambda: client.update_row(table, Row(pk, {"put": [("body", "v3")]}), bump),
    )
    service_error(
        "OTSConditionCheckFail", 403, lambda: client.put_row(table, Row(pk, [("body", "v3")]), bump)
    )
    assert value_of(client.get_row(table, pk)[1], "body") == "v2"


def test_update_row_put_delete_delete_all_increment(client: OTSClient) -> None:
    table = make_table(client, max_version=3)
    pk = [("id", "u")]
    now = int(time.time() * 1000)
    client.update_row(
        table, Row(pk, {"put": [("a", "old", now - 2000), ("a", "new", now - 1000), ("b", 1)]}), IGNORE
    )
    _, row, _ = client.get_row(table, pk, max_version=3)
    assert [(n, v, ts) for n, v, ts in row.attribute_columns if n == "a"] == [
        ("a", "new", now - 1000),
        ("a", "old", now - 2000),
    ]
    client.update_row(table, Row(pk, {"delete": [("a", None, now - 1000)], "increment": [("b", 41)]}), EXIST)
    _, row, _ = client.get_row(table, pk)
    assert [(n, v) for n, v, _ in row.attribute_columns] == [("a", "old"), ("b", 42)]
    client.update_row(table, Row(pk, {"delete_all": ["a", "b"]}), EXIST)
    assert client.get_row(table, pk)[1] is None  # a row with no cells left is gone
    client.update_row(table, Row([("id", "ghost")], {"delete_all": ["x"]}), IGNORE)
    assert client.get_row(table, [("id", "ghost")])[1] is None
    service_error(
        "OTSParameterInvalid",
        400,
        lambda: client.update_row(table, Row(pk, {"put": [("c", 1, 1000)]}), IGNORE),
    )


def test_max_version_one_keeps_only_the_latest(client: OTSClient) -> None:
    table = make_table(client, max_version=1)
    pk = [("id", "m")]
    now = int(time.time() * 1000)
    for offset, value in [(3000, "v1"), (2000, "v2"), (1000, "v3")]:
        client.update_row(table, Row(pk, {"put": [("c", value, now - offset)]}), IGNORE)
    _, row, _ = client.get_row(table, pk, max_version=5)
    assert row.attribute_columns == [("c", "v3", now - 1000)]


def test_ttl_hides_rows_older_than_the_table_ttl() -> None:
    with TablestoreEmulator(AK, SECRET, INSTANCE) as emulator:
        client = client_for(emulator.endpoint)
        table = make_table(client, time_to_live=86400)
        client.put_row(table, Row([("id", "old")], [("c", 1)]), IGNORE)
        emulator.advance(43200)
        client.put_row(table, Row([("id", "young")], [("c", 2)]), IGNORE)
        emulator.advance(43201)
        assert client.get_row(table, [("id", "old")])[1] is None
        _, _, rows, _ = client.get_range(table, Direction.FORWARD, [("id", INF_MIN)], [("id", INF_MAX)])
        assert [r.primary_key for r in rows] == [[("id", "young")]]
        client.put_row(table, Row([("id", "old")], [("c", 3)]), NOT_EXIST)  # an expired row no longer exists


COMPARISONS = [
    (ComparatorType.EQUAL, 5, True),
    (ComparatorType.EQUAL, 6, False),
    (ComparatorType.NOT_EQUAL, 6, True),
    (ComparatorType.NOT_EQUAL, 5, False),
    (ComparatorType.GREATER_THAN, 4, True),
    (ComparatorType.GREATER_THAN, 5, False),
    (ComparatorType.GREATER_EQUAL, 5, True),
    (ComparatorType.GREATER_EQUAL, 6, False),
    (ComparatorType.LESS_THAN, 6, True),
    (ComparatorType.LESS_THAN, 5, False),
    (ComparatorType.LESS_EQUAL, 5, True),
    (ComparatorType.LESS_EQUAL, 4, False),
    (ComparatorType.EQUAL, "5", False),  # different types never compare equal
]


@pytest.mark.parametrize(("comparator", "operand", "passes"), COMPARISONS)
def test_single_column_condition_comparators(
    client: OTSClient, comparator: int, operand: Any, passes: bool
) -> None:
    table = make_table(client)
    client.put_row(table, Row([("id", "r")], [("n", 5)]), IGNORE)
    condition = Condition(RowExistenceExpectation.IGNORE, SingleColumnCondition("n", operand, comparator))
    write = Row([("id", "r")], {"put": [("seen", True)]})
    if passes:
        client.update_row(table, write, condition)
    else:
        service_error("OTSConditionCheckFail", 403, lambda: client.update_row(table, write, condition))


def test_pass_if_missing_and_composite_conditions(client: OTSClient) -> None:
    table = make_table(client)
    pk = [("id", "c")]
    client.put_row(table, Row(pk, [("index", 0), ("addr", "china")]), IGNORE)
    write = Row(pk, {"put": [("seen", 1)]})

    def check(column: Any, passes: bool) -> None:
        condition = Condition(RowExistenceExpectation.IGNORE, column)
        if passes:
            client.update_row(table, write, condition)
        else:
            service_error("OTSConditionCheckFail", 403, lambda: client.update_row(table, write, condition))

    check(SingleColumnCondition("nope", 1, ComparatorType.EQUAL, pass_if_missing=True), True)
    check(SingleColumnCondition("nope", 1, ComparatorType.EQUAL, pass_if_missing=False), False)

    def composite(operator: int, *subs: Any) -> CompositeColumnCondition:
        combined = CompositeColumnCondition(operator)
        for sub in subs:
            combined.add_sub_condition(sub)
        return combined

    index0 = SingleColumnCondition("index", 0, ComparatorType.EQUAL)
    not_china = SingleColumnCondition("addr", "china", ComparatorType.NOT_EQUAL)
    check(composite(LogicalOperator.AND, index0, not_china), False)
    check(composite(LogicalOperator.OR, index0, not_china), True)
    check(composite(LogicalOperator.NOT, composite(LogicalOperator.OR, index0, not_china)), False)
    check(composite(LogicalOperator.NOT, not_china), True)


def test_batch_write_200_and_batch_get_100(client: OTSClient, emu: TablestoreEmulator) -> None:
    table = make_table(client)
    before = emu.request_count("BatchWriteRow")
    request = puts(table, [([("id", f"k{i:03}")], [("i", i)]) for i in range(200)])
    assert client.batch_write_row(request).is_all_succeed()
    assert emu.request_count("BatchWriteRow") == before + 1
    get = BatchGetRowRequest()
    get.add(TableInBatchGetRowItem(table, [[("id", f"k{i:03}")] for i in range(0, 200, 2)], max_version=1))
    rows = client.batch_get_row(get).get_result_by_table(table)
    assert [value_of(item.row, "i") for item in rows] == list(range(0, 200, 2))

    too_many = puts(table, [([("id", f"x{i}")], [("i", i)]) for i in range(201)])
    assert service_error("OTSParameterInvalid", 400, lambda: client.batch_write_row(too_many)) == (
        "Rows count exceeds the upper limit: 200."
    )
    get_many = BatchGetRowRequest()
    get_many.add(TableInBatchGetRowItem(table, [[("id", f"k{i:03}")] for i in range(101)], max_version=1))
    service_error("OTSParameterInvalid", 400, lambda: client.batch_get_row(get_many))


def test_batch_write_reports_each_row(client: OTSClient) -> None:
    table = make_table(client)
    client.put_row(table, Row([("id", "taken")], [("v", 1)]), IGNORE)
    client.put_row(table, Row([("id", "other")], [("v", 1)]), IGNORE)
    request = BatchWriteRowRequest()
    request.add(
        TableInBatchWriteRowItem(
            table,
            [
                PutRowItem(Row([("id", "taken")], [("v", 2)]), NOT_EXIST),
                PutRowItem(Row([("id", "fresh")], [("v", 3)]), NOT_EXIST, ReturnType.RT_PK),
                UpdateRowItem(Row([("id", "absent")], {"put": [("v", 4)]}), EXIST),
                DeleteRowItem(Row([("id", "other")]), IGNORE),
                PutRowItem(Row([("wrong", "pk")], [("v", 5)]), IGNORE),
            ],
        )
    )
    request.add(
        TableInBatchWriteRowItem("no_such_table", [PutRowItem(Row([("id", "a")], [("v", 1)]), IGNORE)])
    )
    response = client.batch_write_row(request)
    assert not response.is_all_succeed()
    results = (
        response.get_put_by_table(table)
        + response.get_update_by_table(table)
        + response.get_delete_by_table(table)
    )
    outcome = {item.index: (item.is_ok, item.error_code) for item in results}
    failed = (False, "OTSConditionCheckFail")
    assert outcome == {0: failed, 1: (True, None), 2: failed, 3: (True, None), 4: (False, "OTSInvalidPK")}
    assert response.get_put_by_table(table)[1].row.primary_key == [("id", "fresh")]
    assert response.get_put_by_table("no_such_table")[0].error_code == "OTSObjectNotExist"
    assert client.get_row(table, [("id", "other")])[1] is None
    assert value_of(client.get_row(table, [("id", "taken")])[1], "v") == 1


def test_get_range_pages_both_directions(client: OTSClient) -> None:
    table = make_table(client, [("run", "STRING"), ("seq", "INTEGER")])
    keys = [[("run", run), ("seq", seq)] for run in ("a", "b") for seq in range(12)]
    client.batch_write_row(puts(table, [(pk, [("v", i)]) for i, pk in enumerate(keys)]))

    start, end, pages, seen = [("run", "a"), ("seq", INF_MIN)], [("run", "b"), ("seq", 5)], 0, []
    while start is not None:
        _, start, rows, _ = client.get_range(table, Direction.FORWARD, start, end, limit=5)
        seen += [r.primary_key for r in rows]
        pages += 1
    assert seen == keys[:17] and pages == 4
    back = client.xget_range(
        table,
        Direction.BACKWARD,
        [("run", INF_MAX), ("seq", INF_MAX)],
        [("run", INF_MIN), ("seq", INF_MIN)],
        CapacityUnit(0, 0),
        count=30,
    )
    assert [r.primary_key for r in back] == keys[::-1]
    _, next_pk, rows, _ = client.get_range(
        table, Direction.BACKWARD, [("run", "b"), ("seq", 3)], [("run", "a"), ("seq", 9)], limit=3
    )
    assert [r.primary_key for r in rows] == [keys[15], keys[14], keys[13]] and next_pk == keys[12]
    assert (
        service_error(
            "OTSParameterInvalid",
            400,
            lambda: client.get_range(table, Direction.FORWARD, end, [("run", "a"), ("seq", 0)]),
        )
        == "Begin key must less than end key in FORWARD"
    )
    service_error(
        "OTSParameterInvalid", 400, lambda: client.get_range(table, Direction.FORWARD, keys[0], end, limit=0)
    )
    service_error(
        "OTSInvalidPK", 400, lambda: client.get_range(table, Direction.FORWARD, [("run", INF_MIN)], end)
    )


def test_get_range_stops_at_5000_rows_and_4_mb(client: OTSClient) -> None:
    table = make_table(client, [("n", "INTEGER")])
    for first in range(0, 5001, 200):
        client.batch_write_row(
            puts(table, [([("n", n)], [("v", n)]) for n in range(first, min(first + 200, 5001))])
        )
    _, next_pk, rows, _ = client.get_range(table, Direction.FORWARD, [("n", INF_MIN)], [("n", INF_MAX)])
    assert len(rows) == 5000 and next_pk == [("n", 5000)]

    big = make_table(client, [("n", "INTEGER")])
    for n in range(3):
        client.put_row(big, Row([("n", n)], [("blob", "x" * 1_500_000)]), IGNORE)
    _, next_pk, rows, _ = client.get_range(big, Direction.FORWARD, [("n", INF_MIN)], [("n", INF_MAX)])
    assert len(rows) == 2 and next_pk == [("n", 2)]
    oversized = puts(big, [([("n", n)], [("blob", "y" * 1_500_000)]) for n in range(3)])
    assert "exceeds the limit" in service_error(
        "OTSParameterInvalid", 400, lambda: client.batch_write_row(oversized)
    )


def test_parameter_and_primary_key_errors(client: OTSClient) -> None:
    table = make_table(client, [("id", "STRING"), ("n", "INTEGER")])
    assert service_error("OTSInvalidPK", 400, lambda: client.get_row(table, [("id", "a")])) == (
        "Validate PK size fail. Input: 1, Meta: 2."
    )
    assert service_error(
        "OTSInvalidPK", 400, lambda: client.put_row(table, Row([("id", "a"), ("m", 1)], [("c", 1)]), IGNORE)
    ) == ("Validate PK name fail. Input: m, Meta: n.")
    service_error("OTSInvalidPK", 400, lambda: client.delete_row(table, Row([("id", 1), ("n", 1)]), IGNORE))
    service_error(
        "OTSParameterInvalid",
        400,
        lambda: client.put_row(table, Row([("id", "a"), ("n", 1)], [("id", 1)]), IGNORE),
    )


def test_authentication(emu: TablestoreEmulator) -> None:
    assert (
        service_error("OTSAuthFailed", 403, lambda: client_for(emu.endpoint, secret="wrong").list_table())
        == "Signature mismatch."
    )
    stranger = OTSClient(emu.endpoint, "other-ak", SECRET, INSTANCE, retry_policy=NoRetryPolicy())
    service_error("OTSAuthFailed", 403, stranger.list_table)
    elsewhere = OTSClient(emu.endpoint, AK, SECRET, "other-instance", retry_policy=NoRetryPolicy())
    service_error("OTSAuthFailed", 403, elsewhere.list_table)
    assert isinstance(client_for(emu.endpoint, sts_token="token-1").list_table(), tuple)
    assert isinstance(client_for(emu.endpoint, region="cn-hangzhou").list_table(), tuple)  # v4 signature


def test_raw_http_errors_are_protobuf(emu: TablestoreEmulator) -> None:
    def send(method: str, path: str, body: bytes | None) -> tuple[int, Any]:
        request = urllib.request.Request(emu.endpoint + path, data=body, method=method)
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=10)
        return caught.value.code, pb.Error.FromString(caught.value.read())

    status, error = send("GET", "/ListTable", None)
    assert (status, error.code) == (405, "OTSMethodNotAllowed")
    status, error = send("POST", "/ListTable", b"")
    assert (status, error.code, error.message) == (400, "OTSParameterInvalid", "Missing header: x-ots-date.")


def test_sts_token_is_checked_when_configured() -> None:
    with TablestoreEmulator(AK, SECRET, INSTANCE, sts_token="good") as emulator:
        assert client_for(emulator.endpoint, sts_token="good").list_table() == ()
        service_error(
            "OTSAuthFailed", 403, lambda: client_for(emulator.endpoint, sts_token="bad").list_table()
        )


def test_sdk_rejects_a_tampered_response_signature() -> None:
    with TablestoreEmulator(AK, SECRET, INSTANCE) as emulator:
        client = client_for(emulator.endpoint)
        emulator.tamper_response_signature = True
        with pytest.raises(OTSClientError, match="Invalid signature in response"):
            client.list_table()
        emulator.tamper_response_signature = False
        assert client.list_table() == ()


def test_local_transaction_commit_and_abort(client: OTSClient) -> None:
    table = make_table(client, [("part", "STRING"), ("id", "INTEGER")])
    pk = [("part", "p"), ("id", 1)]
    client.put_row(table, Row(pk, [("v", "origin")]), IGNORE)
    for finish, expected in [(client.abort_transaction, "origin"), (client.commit_transaction, "new")]:
        txn = client.start_local_transaction(table, [("part", "p")])
        client.update_row(table, Row(pk, {"put": [("v", "new")]}), IGNORE, transaction_id=txn)
        assert value_of(client.get_row(table, pk, transaction_id=txn)[1], "v") == "new"
        assert value_of(client.get_row(table, pk)[1], "v") == "origin"
        finish(txn)
        assert value_of(client.get_row(table, pk)[1], "v") == expected


def test_state_persists_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    with TablestoreEmulator(AK, SECRET, INSTANCE, persist_path=path) as emulator:
        client = client_for(emulator.endpoint)
        table = make_table(client, [("id", "BINARY")])
        client.put_row(
            table, Row([("id", bytearray(b"\x00k"))], [("b", b"raw"), ("f", 0.5), ("t", False)]), IGNORE
        )
    with TablestoreEmulator(AK, SECRET, INSTANCE, persist_path=path) as emulator:
        row = client_for(emulator.endpoint).get_row(table, [("id", bytearray(b"\x00k"))])[1]
        assert [(n, v) for n, v, _ in row.attribute_columns] == [("b", "raw"), ("f", 0.5), ("t", False)]


def test_reader_rejects_a_broken_checksum() -> None:
    from tablestore.plainbuffer.plain_buffer_builder import PlainBufferBuilder

    data = bytearray(PlainBufferBuilder.serialize_for_update_row([("id", "a")], {"delete_all": ["c"]}))
    assert parse_row(bytes(data)).cells[0].op == 0x1
    data[-1] ^= 0xFF
    with pytest.raises(PlainBufferError, match="checksum"):
        parse_row(bytes(data))


def test_command_line_prints_the_endpoint_and_stops_on_sigterm() -> None:
    code = "import sys; from emulators.tablestore import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(
        [sys.executable, "-c", code, "--access-key-id", AK, "--instance", INSTANCE],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    ) as process:
        assert process.stdout is not None
        endpoint = process.stdout.readline().strip()
        assert endpoint.startswith("http://127.0.0.1:")
        assert client_for(endpoint).list_table() == ()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0

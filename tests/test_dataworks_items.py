"""A run's items (ListPipelineRunItems): parsing odd answers, and every page through the real SDK."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from dwnotify.answers import parse_item, parse_item_page, spec_owner
from dwnotify.dataworks import MAX_ITEM_PAGES
from dwnotify.errors import DataWorksError
from dwnotify.model import RunItem
from emulators import DataWorksEmulator
from tests.conftest import ManualClock
from tests.test_dataworks import emulator, make_client  # noqa: F401  (the fixture)

ITEM: dict[str, Any] = {
    "Id": "700004534201",
    "Name": "ods_user",
    "Type": "Node",
    "Version": 3,
    "Status": "Termination",
    "Message": "",
    "Spec": json.dumps({"version": "1.1.0", "kind": "Node", "spec": {"nodes": [{"owner": "1379"}]}}),
    "CreateTime": 1724984066000,
    "ModifyTime": 1724984066000,
}


def test_an_item_parses_with_its_owner_and_a_normalized_status() -> None:
    assert parse_item(ITEM) == RunItem(
        name="ods_user",
        type="Node",
        version=3,
        status="terminated",
        message="",
        owner="1379",
        id="700004534201",
    )


@pytest.mark.parametrize(
    ("spec", "owner"),
    [
        ({"metadata": {"owner": "m1"}, "spec": {"nodes": [{"owner": "n1"}]}}, "m1"),
        ({"spec": {"workflows": [{"name": "wf", "owner": 2005}]}}, "2005"),
        ({"spec": {"owner": "s1", "nodes": []}}, "s1"),
        ({"spec": {"nodes": [{"owner": True}]}}, ""),
        ({"spec": {"nodes": "x"}}, ""),
        ([1, 2], ""),
        ("not json", ""),
        (None, ""),
    ],
)
def test_the_owner_comes_from_the_flowspec_when_it_names_one(spec: Any, owner: str) -> None:
    text = spec if isinstance(spec, str) or spec is None else json.dumps(spec)
    assert spec_owner(text) == owner


@pytest.mark.parametrize(
    "raw",
    [
        {"Name": "a"},  # nothing else: init, no version
        {"Name": "a", "Version": "4", "Status": "FAIL", "Spec": 7},
        {"Name": 12, "Type": "Resource", "Version": 2.0},
    ],
)
def test_odd_items_parse(raw: dict[str, Any]) -> None:
    item = parse_item(raw)
    assert item.name and item.owner == ""


def test_a_malformed_item_is_skipped_and_the_page_kept() -> None:
    page = parse_item_page(
        {
            "PagingInfo": {
                "TotalCount": "5",
                "PipelineRunItems": [
                    ITEM,
                    "x",
                    {**ITEM, "Status": {}},
                    {**ITEM, "Version": -1},
                    {**ITEM, "Name": []},
                ],
            }
        }
    )
    assert [i.name for i in page.items] == ["ods_user"]
    assert page.total_count == 5 and len(page.malformed) == 4


@pytest.mark.parametrize("body", [{}, {"PagingInfo": []}, {"PagingInfo": {"PipelineRunItems": {"a": 1}}}])
def test_an_answer_that_is_no_page_is_a_dataworks_error(body: dict[str, Any]) -> None:
    with pytest.raises(DataWorksError):
        parse_item_page(body)


def test_no_items_is_an_empty_page() -> None:
    assert parse_item_page({"PagingInfo": {"TotalCount": 0}}).items == ()


# -- through the SDK -----------------------------------------------------------------------------
def _items(count: int) -> list[dict[str, Any]]:
    return [{"name": f"node_{i:03d}", "owner": "1379"} for i in range(count)]


def test_every_page_is_read_and_counted(emulator: DataWorksEmulator, clock: ManualClock) -> None:  # noqa: F811
    run_id = emulator.add_run(10000, items=_items(250))
    client, project = make_client(emulator, clock)
    items = client.list_run_items(project, run_id)
    assert [i.name for i in items] == [f"node_{i:03d}" for i in range(250)]
    assert items[0].owner == "1379" and items[0].status == "init"
    assert client.calls == 3 == emulator.call_count("ListPipelineRunItems")
    assert [c.params["PageNumber"] for c in emulator.calls] == ["1", "2", "3"]
    assert emulator.calls[0].params == {
        "ProjectId": "10000",
        "PipelineRunId": run_id,
        "PageNumber": "1",
        "PageSize": "100",
    }


def test_smaller_pages_than_asked_are_followed(emulator: DataWorksEmulator, clock: ManualClock) -> None:  # noqa: F811
    run_id = emulator.add_run(10000, items=_items(7))
    emulator.serve_item_page_size = 3
    client, project = make_client(emulator, clock)
    assert len(client.list_run_items(project, run_id)) == 7
    assert client.calls == 3


def test_a_lying_total_is_bounded(emulator: DataWorksEmulator, clock: ManualClock) -> None:  # noqa: F811
    page = {"PagingInfo": {"TotalCount": 10**9, "PipelineRunItems": [ITEM] * 100}}
    emulator.inject_answer("ListPipelineRunItems", page, times=1000)
    client, project = make_client(emulator, clock)
    assert len(client.list_run_items(project, "r")) == 100 * MAX_ITEM_PAGES
    assert client.calls == MAX_ITEM_PAGES


def test_a_run_without_items_costs_one_call(emulator: DataWorksEmulator, clock: ManualClock) -> None:  # noqa: F811
    run_id = emulator.add_run(10000)
    client, project = make_client(emulator, clock)
    assert client.list_run_items(project, run_id) == ()
    assert client.calls == 1


def test_a_malformed_item_on_the_wire_is_skipped_with_a_warning(
    emulator: DataWorksEmulator,  # noqa: F811
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    page = {"PagingInfo": {"TotalCount": 2, "PipelineRunItems": [ITEM, {**ITEM, "Status": ["x"]}]}}
    emulator.inject_answer("ListPipelineRunItems", page)
    client, project = make_client(emulator, clock)
    with caplog.at_level(logging.WARNING, logger="dwnotify.dataworks"):
        items = client.list_run_items(project, "r")
    assert [i.name for i in items] == ["ods_user"]
    assert any("skipped" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_an_unknown_run_is_a_dataworks_error(emulator: DataWorksEmulator, clock: ManualClock) -> None:  # noqa: F811
    client, project = make_client(emulator, clock)
    with pytest.raises(DataWorksError) as caught:
        client.list_run_items(project, "no-such-run")
    assert caught.value.code == "Invalid.Pipeline.NotFound"
    assert client.calls == 1


def test_items_calls_are_retried_like_the_others(emulator: DataWorksEmulator, clock: ManualClock) -> None:  # noqa: F811
    run_id = emulator.add_run(10000, items=_items(2))
    emulator.inject("ListPipelineRunItems", "Throttling.User", 400)
    client, project = make_client(emulator, clock)
    assert len(client.list_run_items(project, run_id)) == 2
    assert client.calls == 2


def test_a_gateway_without_the_action_is_asked_once(clock: ManualClock) -> None:
    with DataWorksEmulator({"projects": [10000], "old_api_only": True}, clock=clock) as emu:
        run_id = emu.add_run(10000, items=_items(2))
        client, project = make_client(emu, clock)
        assert client.list_run_items(project, run_id) == ()
        assert client.list_run_items(project, run_id) == ()
        assert client.calls == 1 and client.items_unavailable
        assert emu.calls[0].code == "InvalidAction.NotFound"

"""Fuzzing the two parsers that read what others wrote: DataWorks answers and the config file.

Invariant: nothing escapes but the documented errors (DataWorksError for a page that is no page,
ConfigError for a config), and a well-formed run keeps its place among malformed ones.
`make soak` runs many more examples (DWNOTIFY_SOAK=1).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dwnotify.answers import parse_page
from dwnotify.config import load
from dwnotify.diff import diff
from dwnotify.errors import ConfigError, DataWorksError

EXAMPLES = 3000 if os.environ.get("DWNOTIFY_SOAK") else 200

GOOD_RUN = {
    "Id": "good-run\n",
    "ProjectId": 10000,
    "Status": "Fail",
    "CreateTime": 1724984066000,
    "ModifyTime": 1724984066000,
    "Stages": [{"Code": "A", "Step": 1, "Type": "Deploy", "Name": "构建", "Status": "Fail", "Detail": {}}],
}

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["", " ", "Success", "TERMINATION", "2024-01-01T00:00:00Z", "[" * 3000, "\u202e\x00"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
FIELDS = [
    "Id",
    "ProjectId",
    "Status",
    "Creator",
    "Message",
    "Description",
    "CreateTime",
    "ModifyTime",
    "Stages",
]
STAGE_FIELDS = ["Code", "Step", "Type", "Name", "Status", "Message", "Description", "Detail"]
stages = st.lists(
    st.one_of(values, st.fixed_dictionaries({}, optional={k: values for k in STAGE_FIELDS})), max_size=3
)
runs = st.one_of(
    values, st.fixed_dictionaries({}, optional={**{k: values for k in FIELDS}, "Stages": stages})
)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(noise=st.lists(runs, max_size=5), position=st.integers(min_value=0, max_value=5), total=values)
def test_a_page_of_noise_keeps_its_good_run(noise: list[Any], position: int, total: Any) -> None:
    items = [*noise[:position], GOOD_RUN, *noise[position:]]
    page = parse_page("ListPipelineRuns", {"PagingInfo": {"TotalCount": total, "PipelineRuns": items}}, 10000)
    good = [run for run in page.runs if run.id == "good-run"]
    assert good, page.malformed
    events, _ = diff(None, good[0])
    assert [event.type for event in events] == ["stage.failed", "run.failed"]
    for run in page.runs:  # whatever was accepted can be diffed
        diff(None, run)
    assert page.total_count >= 0


@settings(max_examples=EXAMPLES, deadline=None)
@given(body=st.dictionaries(st.sampled_from(["PagingInfo", "RequestId", "Code"]), values, max_size=3))
def test_any_body_is_a_page_or_a_dataworks_error(body: dict[str, Any]) -> None:
    with contextlib.suppress(DataWorksError):
        parse_page("ListPipelineRuns", body, 10000)


CONFIG_KEYS = {
    "dataworks": ["region", "projects", "endpoint", "protocol", "runs", "lookback", "max_qps", "timeout"],
    "channels": ["ops"],
    "rules": [],
    "state": ["backend", "path", "endpoint"],
    "delivery": ["timeout", "max_age"],
    "templates": [],
}


@settings(
    max_examples=EXAMPLES // 2, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.dictionaries(st.sampled_from(sorted(CONFIG_KEYS)), values, max_size=6))
def test_any_config_loads_or_is_a_config_error(tmp_path: Path, data: dict[str, Any]) -> None:
    path = tmp_path / "notifier.yaml"
    try:
        path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    except (yaml.YAMLError, RecursionError):
        return
    try:
        load(path, {})
    except ConfigError as error:
        assert error.problems


@settings(
    max_examples=EXAMPLES // 2, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=st.text(st.sampled_from(list("ab: -[]{}&*!|>'\"#\n\t%@`,?\\")), max_size=200))
def test_any_yaml_text_loads_or_is_a_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "notifier.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load(path, {})
    except ConfigError as error:
        assert error.problems

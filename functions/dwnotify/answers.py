"""DataWorks answers -> domain objects: tolerant of every documented quirk, refusing what is malformed.

Tolerated: any status spelling, `Detail` as an object or a JSON string, counts as strings, a run
`Id` with a trailing newline, times in milliseconds, digit strings or ISO 8601. Refused: a run whose
fields have the wrong shape (`Stages: 7`, a status that is an object, an id that is a list). A
refused run is reported as a `MalformedRun` and skipped by its page, so one poison run never stops
the others; a page that is not a page at all is the workspace's `DataWorksError`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

from .errors import DataWorksError, MalformedRun
from .model import Run, RunItem, Stage, normalize_status

# Bounds on what one run may bring into memory, the state store and a message.
MAX_TEXT = 10_000
MAX_DETAIL_JSON = 100_000
_MAX_MILLIS = 253402300799999  # 9999-12-31T23:59:59.999Z: datetime's own end


@dataclass(frozen=True)
class RunPage:
    """One page of ListPipelineRuns: the runs on it, the workspace's total count, and what was refused."""

    total_count: int
    runs: tuple[Run, ...]
    malformed: tuple[MalformedRun, ...] = ()


@dataclass(frozen=True)
class ItemPage:
    """One page of ListPipelineRunItems: its items, the run's total count, and why any was refused."""

    total_count: int
    items: tuple[RunItem, ...]
    malformed: tuple[str, ...] = ()


def _int(value: object, default: int = 0) -> int:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit() and len(value) < 30:
        return int(value.strip())
    return default


def _text(value: object, field: str, limit: int = MAX_TEXT) -> str:
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise MalformedRun(f"{field} is {type(value).__name__}, not text")
    return str(value)[:limit]


def parse_time(value: object) -> datetime | None:
    """A time from milliseconds since the epoch (a number or digits) or ISO 8601; None if unusable."""
    if isinstance(value, str) and value.strip() and not value.strip().isdigit():
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    millis = _int(value, -1)
    if not 0 <= millis <= _MAX_MILLIS:
        return None
    return datetime.fromtimestamp(millis / 1000, tz=timezone.utc)


def _detail(value: object) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and value.strip():
        if len(value) > MAX_DETAIL_JSON:
            return {"raw": value[:MAX_TEXT]}
        try:
            parsed = json.loads(value)
        except (ValueError, RecursionError):
            return {"raw": value[:MAX_TEXT]}
        return parsed if isinstance(parsed, dict) else {"value": parsed}
    return {}


def _status(value: object, field: str) -> str:
    return normalize_status(_text(value, field, limit=64) if value is not None else None)


def parse_stage(raw: object, index: int = 0) -> Stage:
    """A stage from its API object, tolerating missing fields and any status spelling."""
    if not isinstance(raw, Mapping):
        raise MalformedRun(f"Stages[{index}] is {type(raw).__name__}, not an object")
    step = raw.get("Step")
    if step is not None and _int(step, -1) < 0:
        raise MalformedRun(f"Stages[{index}].Step is {type(step).__name__}, not a whole number")
    return Stage(
        code=_text(raw.get("Code"), f"Stages[{index}].Code", 256).strip(),
        step=_int(step),
        type=_text(raw.get("Type"), f"Stages[{index}].Type", 64).strip().capitalize(),
        name=_text(raw.get("Name"), f"Stages[{index}].Name", 1000).strip(),
        description=_text(raw.get("Description"), f"Stages[{index}].Description"),
        status=_status(raw.get("Status"), f"Stages[{index}].Status"),
        message=_text(raw.get("Message"), f"Stages[{index}].Message"),
        detail=_detail(raw.get("Detail")),
    )


def _unique_keys(stages: list[Stage]) -> tuple[Stage, ...]:
    """Stages whose keys differ: a repeated Code is told apart by its Step (first one unchanged)."""
    seen: set[str] = set()
    unique = []
    for index, stage in enumerate(stages):
        kept = stage
        if stage.key in seen:
            ident = f"{stage.key}#{stage.step}"
            kept = replace(stage, ident=ident if ident not in seen else f"{ident}#{index}")
        seen.add(kept.key)
        unique.append(kept)
    return tuple(unique)


def parse_run(raw: object, project_id: int | None = None) -> Run:
    """A run from its API object (`Pipeline`, a `PipelineRuns` item or an old `Deployment`).

    Listed or fetched for a workspace (`project_id`), the run is filed under that workspace whatever
    its own `ProjectId` says: that is where it was found, and where `projects:` filters look.
    """
    if not isinstance(raw, Mapping):
        raise MalformedRun(f"a run is {type(raw).__name__}, not an object")
    raw_id = raw.get("Id")
    run_id = raw_id.strip()[:256] if isinstance(raw_id, str) else ""
    try:
        if not run_id:
            raise MalformedRun("the run has no Id" if raw_id in (None, "") else "Id is not text")
        stages = raw.get("Stages")
        if stages is not None and not isinstance(stages, list):
            raise MalformedRun(f"Stages is {type(stages).__name__}, not a list")
        if project_id is None:  # a run read from a file: its own ProjectId, if it is a usable one
            project_id = _int(raw.get("ProjectId"))
            project_id = project_id if 0 < project_id < 2**53 else 0
        return Run(
            id=run_id,
            project_id=project_id,
            status=_status(raw.get("Status"), "Status"),
            creator=_text(raw.get("Creator"), "Creator", 256).strip(),
            description=_text(raw.get("Description"), "Description"),
            message=_text(raw.get("Message"), "Message"),
            create_time=parse_time(raw.get("CreateTime")),
            modify_time=parse_time(raw.get("ModifyTime")),
            stages=_unique_keys([parse_stage(stage, index) for index, stage in enumerate(stages or ())]),
        )
    except MalformedRun as error:
        raise MalformedRun(str(error), run_id) from None


def parse_page(action: str, body: Mapping[str, Any], project_id: int) -> RunPage:
    """A list answer's runs; a body that is no page is a `DataWorksError` of the workspace."""
    paging = body.get("PagingInfo")
    if not isinstance(paging, Mapping):
        code = body.get("Code")
        shown = f" (Code {str(code)[:80]})" if code else ""
        raise DataWorksError(f"{action} answered without a PagingInfo object{shown}")
    items = paging.get("PipelineRuns")
    if items is None:
        items = paging.get("Deployments")
    if items is None:
        items = []
    if not isinstance(items, list):
        raise DataWorksError(f"{action} answered PagingInfo runs that are {type(items).__name__}, not a list")
    runs: list[Run] = []
    malformed: list[MalformedRun] = []
    for item in items:
        try:
            runs.append(parse_run(item, project_id))
        except MalformedRun as error:
            malformed.append(error)
    total = _int(paging.get("TotalCount"), len(runs))
    return RunPage(total_count=max(total, 0), runs=tuple(runs), malformed=tuple(malformed))


# Where a FlowSpec names its owner: the documented `metadata.owner`, else the first node's or
# workflow's `owner` (what DataWorks writes in `spec.nodes[]` / `spec.workflows[]`), else `spec.owner`.
_OWNER_LISTS = ("nodes", "workflows", "fileResources", "functions")


def spec_owner(spec: object) -> str:
    """The owner a FlowSpec JSON text names, or "" when it names none or is not FlowSpec JSON."""
    if not isinstance(spec, str) or not spec.strip() or len(spec) > MAX_DETAIL_JSON:
        return ""
    try:
        flow = json.loads(spec)
    except (ValueError, RecursionError):
        return ""
    if not isinstance(flow, Mapping):
        return ""
    candidates: list[object] = []
    metadata, body = flow.get("metadata"), flow.get("spec")
    if isinstance(metadata, Mapping):
        candidates.append(metadata.get("owner"))
    if isinstance(body, Mapping):
        for key in _OWNER_LISTS:
            entries = body.get(key)
            if isinstance(entries, list):
                candidates.extend(e.get("owner") for e in entries[:1] if isinstance(e, Mapping))
        candidates.append(body.get("owner"))
    for owner in candidates:
        if isinstance(owner, (str, int)) and not isinstance(owner, bool) and str(owner).strip():
            return str(owner).strip()[:256]
    return ""


def parse_item(raw: object, index: int = 0) -> RunItem:
    """A run item from its API object; `MalformedRun` when its fields have the wrong shape."""
    if not isinstance(raw, Mapping):
        raise MalformedRun(f"PipelineRunItems[{index}] is {type(raw).__name__}, not an object")
    where = f"PipelineRunItems[{index}]"
    version = raw.get("Version")
    number = _int(version, -1) if version is not None else None
    if number is not None and number < 0:
        raise MalformedRun(f"{where}.Version is {type(version).__name__}, not a whole number")
    raw_id = raw.get("Id")
    return RunItem(
        name=_text(raw.get("Name"), f"{where}.Name", 1000).strip(),
        type=_text(raw.get("Type"), f"{where}.Type", 64).strip(),
        version=number,
        status=_status(raw.get("Status"), f"{where}.Status"),
        message=_text(raw.get("Message"), f"{where}.Message"),
        owner=spec_owner(raw.get("Spec")),
        id=_text(raw_id, f"{where}.Id", 256).strip(),
    )


def parse_item_page(body: Mapping[str, Any]) -> ItemPage:
    """A ListPipelineRunItems answer's items; a body that is no page is a `DataWorksError`."""
    paging = body.get("PagingInfo")
    if not isinstance(paging, Mapping):
        raise DataWorksError("ListPipelineRunItems answered without a PagingInfo object")
    raw_items = paging.get("PipelineRunItems")
    if raw_items is None:
        raw_items = []
    if not isinstance(raw_items, list):
        raise DataWorksError(
            f"ListPipelineRunItems answered items that are {type(raw_items).__name__}, not a list"
        )
    items: list[RunItem] = []
    malformed: list[str] = []
    for index, raw in enumerate(raw_items):
        try:
            items.append(parse_item(raw, index))
        except MalformedRun as error:
            malformed.append(str(error))
    total = _int(paging.get("TotalCount"), len(raw_items))
    return ItemPage(total_count=max(total, 0), items=tuple(items), malformed=tuple(malformed))

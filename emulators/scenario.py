"""Scripted DataWorks pipeline runs whose statuses move over scenario time.

A scenario is a dict (from YAML, JSON or code); `emulators/README.md` documents its format. Offsets
are seconds after `start`; a run is invisible before its `created` offset, and its state at any
moment is its timeline replayed up to that moment. Statuses are stored canonically (`init`,
`running`, `success`, `fail`, `terminated`, `canceled`, or any unknown word verbatim) and spelled
per API surface only when a response is rendered.

Two actions change a run as it plays (`RunSpec.execute`, `RunSpec.abolish`, the emulator's
ExecPipelineRunStage and AbolishPipelineRun). Each adds its changes to the timeline at the current
offset, and supersedes what the script had planned for what it decided: changes dated after the
action no longer touch the stage it executed (or, once the run has ended by it, the run, its stages
and its items). Everything else the script planned still happens when it is due (a later stage can
still start on its own), and changes added afterwards (`set_run_status`, another action) apply as
usual. So a script never undoes an executed stage: a stage does not run twice, an ended run stays
ended.

Defaults follow the official SDK's models (`Termination`/`Cancel`, `Stages[].Detail` an object); the
API page's own example differs, and its forms are opt-in quirks (`status_spelling: doc`,
`quirks.detail_as_string`). Its other quirk, a run `Id` ending in a newline, is on by default.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

_ALIASES = {
    "init": "init",
    "running": "running",
    "success": "success",
    "succeeded": "success",
    "fail": "fail",
    "failed": "fail",
    "terminated": "terminated",
    "termination": "terminated",
    "canceled": "canceled",
    "cancelled": "canceled",
    "cancel": "canceled",
}
SPELLINGS: dict[str, dict[str, str]] = {
    "doc": {s: s.capitalize() for s in ("init", "running", "success", "fail", "terminated", "canceled")},
    "sdk": {
        "init": "Init",
        "running": "Running",
        "success": "Success",
        "fail": "Fail",
        "terminated": "Termination",
        "canceled": "Cancel",
    },
}
ENDED = frozenset({"success", "fail", "terminated", "canceled"})  # a run or stage in one has finished
LIST_ORDERS = ("newest", "oldest", "shuffled", "shuffled_per_call", "shuffled_fixed")
# The API page's example: an Id ending in a newline (on), Detail as a JSON string (off: the models
# say object). Unknown quirk names are refused.
DEFAULT_QUIRKS = {"id_trailing_newline": True, "detail_as_string": False}
DEFAULT_CREATOR = "137946317766XXXX"
_TOP_KEYS = {
    "start",
    "old_api_only",
    "status_spelling",
    "list_order",
    "seed",
    "projects",
    "history",
    "quirks",
    "runs",
}
_DEFAULT_STAGES: list[dict[str, Any]] = [
    {"code": "DEV_CHECK", "type": "Check", "name": "发布包构建", "description": "Build the release package"},
    {
        "code": "PROD_DEPLOY",
        "type": "Deploy",
        "name": "发布到生产环境",
        "description": "Deploy to production",
    },
]


class ScenarioError(ValueError):
    """The scenario document is malformed; the message starts with the dotted path."""


def canonical_status(value: str) -> str:
    """The canonical lower-case status for any known spelling; unknown words come back unchanged."""
    return _ALIASES.get(value.strip().lower(), value)


def spell_status(status: str, spelling: str, upper: bool = False) -> str:
    """Render a canonical status in one API surface's spelling."""
    text = SPELLINGS[spelling].get(status, status)
    return text.upper() if upper else text


def parse_start(value: Any, default: float) -> float:
    """Epoch seconds for `start`: ISO 8601 text, a datetime, a number, or "now"/None for `default`."""
    if value is None or value == "now":
        return default
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ScenarioError(f"start: not an ISO 8601 time: {value!r}") from None
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()
    raise ScenarioError(f"start: expected an ISO 8601 time, got {value!r}")


@dataclass
class StageSpec:
    """One stage of a run as scripted."""

    code: str
    step: int
    type: str
    name: str
    description: str = ""
    detail: Any = field(default_factory=dict)
    detail_as_string: bool = False


@dataclass
class ItemSpec:
    """One object a run deploys (a ListPipelineRunItems entry) as scripted; its status moves by timeline."""

    id: str
    name: str
    type: str = "Node"
    version: int = 1
    status: str = "init"
    message: str = ""
    owner: str = ""
    spec: Any = None  # a mapping (served as JSON text) or text served as it is; None: made from the rest

    def spec_text(self) -> str:
        """The item's `Spec` as served: a FlowSpec JSON string."""
        if isinstance(self.spec, str):
            return self.spec
        if self.spec is not None:
            return json.dumps(self.spec, ensure_ascii=False)
        entry: dict[str, Any] = {"id": self.id, "name": self.name}
        if self.owner:
            entry["owner"] = self.owner
        workflow = self.type == "WorkflowDefinition"
        kind = "CycleWorkflow" if workflow else self.type
        flow = {"version": "1.1.0", "kind": kind, "spec": {"workflows" if workflow else "nodes": [entry]}}
        return json.dumps(flow, ensure_ascii=False)


@dataclass
class Change:
    """One timeline step: at `at`, set the run's and some stages' and items' status and message."""

    at: float
    status: str | None = None
    message: str | None = None
    stages: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    items: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)


@dataclass
class RunState:
    """A run's status at one moment."""

    status: str
    message: str
    stages: dict[str, tuple[str, str]]
    modified: float
    items: dict[str, tuple[str, str]] = field(default_factory=dict)


@dataclass
class RunSpec:
    """One scripted pipeline run."""

    project: int
    id: str
    stages: list[StageSpec]
    creator: str = DEFAULT_CREATOR
    description: str = ""
    created: float = 0.0
    timeline: list[Change] = field(default_factory=list)
    id_trailing_newline: bool = True
    objects: tuple[str, ...] = ()
    items: list[ItemSpec] = field(default_factory=list)

    def visible(self, offset: float) -> bool:
        """Whether the run exists at `offset` seconds after the scenario start."""
        return offset >= self.created

    def add_change(self, change: Change) -> None:
        """Append a timeline step, keeping the timeline ordered by time."""
        self.timeline.append(change)
        self.timeline.sort(key=lambda c: c.at)

    def state(self, offset: float) -> RunState:
        """Replay the timeline up to `offset`."""
        status, message, modified = "init", "", self.created
        stages = {s.code: ("init", "") for s in self.stages}
        items = {i.name: (i.status, i.message) for i in self.items}
        for change in self.timeline:
            if change.at > offset:
                break
            modified = max(modified, change.at)
            status = change.status if change.status is not None else status
            message = change.message if change.message is not None else message
            for code, (stage_status, stage_message) in change.stages.items():
                old_status, old_message = stages[code]
                stages[code] = (
                    stage_status or old_status,
                    old_message if stage_message is None else stage_message,
                )
            for name, (item_status, item_message) in change.items.items():
                old_status, old_message = items[name]
                items[name] = (
                    item_status or old_status,
                    old_message if item_message is None else item_message,
                )
        return RunState(status, message, stages, modified, items)

    def gate(self, offset: float) -> StageSpec | None:
        """The stage the run waits at, at `offset`: it runs, every earlier stage (by step) succeeded,
        and this one is still init."""
        state = self.state(offset)
        if state.status != "running":
            return None
        for spec in sorted(self.stages, key=lambda s: s.step):
            status = state.stages[spec.code][0]
            if status != "success":
                return spec if status == "init" else None
        return None

    def execute(self, code: str, offset: float, advance_s: float) -> None:
        """Run the stage `code` from `offset`: running at once, success `advance_s` later, and the run
        a success then too when it was the last stage (the later stages stay init: each is a gate).
        The caller has checked that `code` is the gate."""
        last = max(self.stages, key=lambda s: s.step).code == code
        self._supersede(offset, {code}, run=last)
        self.add_change(Change(offset, stages={code: ("running", None)}))
        self.add_change(
            Change(offset + advance_s, status="success" if last else None, stages={code: ("success", None)})
        )

    def abolish(self, offset: float) -> None:
        """End the run at `offset` as canceled, with every stage and item that had not ended."""
        state = self.state(offset)
        self._supersede(offset, set(state.stages), run=True, items=True)
        stages = {
            code: ("canceled", None) for code, (status, _) in state.stages.items() if status not in ENDED
        }
        items = {name: ("canceled", None) for name, (status, _) in state.items.items() if status not in ENDED}
        self.add_change(Change(offset, status="canceled", stages=stages, items=items))

    def _supersede(self, offset: float, stages: Collection[str], *, run: bool, items: bool = False) -> None:
        """Take out of the changes dated after `offset` what they would do to these stages (with `run`,
        to the run's status and message; with `items`, to its items): an action has decided them."""
        kept: list[Change] = []
        for change in self.timeline:
            if change.at > offset:
                change = replace(  # noqa: PLW2901 - the trimmed change takes the original's place
                    change,
                    status=None if run else change.status,
                    message=None if run else change.message,
                    stages={code: value for code, value in change.stages.items() if code not in stages},
                    items={} if items else change.items,
                )
                if change == Change(change.at):  # nothing left: it would only move ModifyTime
                    continue
            kept.append(change)
        self.timeline = kept

    def render(self, start: float, offset: float, spelling: str, old_api: bool = False) -> dict[str, Any]:
        """The run as the API returns it at `offset`.

        `old_api` (GetDeployment/ListDeployments): upper-case statuses and types, no `Description`.
        """
        state = self.state(offset)
        stages = []
        for spec in sorted(self.stages, key=lambda s: s.step):
            stage_status, stage_message = state.stages[spec.code]
            detail = json.dumps(spec.detail, ensure_ascii=False) if spec.detail_as_string else spec.detail
            stages.append(
                {
                    "Code": spec.code,
                    "Step": spec.step,
                    "Type": spec.type.upper() if old_api else spec.type,
                    "Name": spec.name,
                    "Description": spec.description,
                    "Message": stage_message,
                    "Status": spell_status(stage_status, spelling, old_api),
                    "Detail": detail,
                }
            )
        rendered = {
            "Id": self.id + ("\n" if self.id_trailing_newline else ""),
            "ProjectId": self.project,
            "CreateTime": round((start + self.created) * 1000),
            "ModifyTime": round((start + state.modified) * 1000),
            "Creator": self.creator,
            "Status": spell_status(state.status, spelling, old_api),
            "Message": state.message,
            "Stages": stages,
            "Description": self.description,
        }
        if old_api:  # the old SDKs' models (up to 6.2) have no Description
            del rendered["Description"]
        return rendered

    def render_items(self, start: float, offset: float, spelling: str) -> list[dict[str, Any]]:
        """The run's items as ListPipelineRunItems returns them at `offset`."""
        state = self.state(offset)
        created, modified = round((start + self.created) * 1000), round((start + state.modified) * 1000)
        rendered = []
        for item in self.items:
            status, message = state.items[item.name]
            rendered.append(
                {
                    "Id": item.id,
                    "Name": item.name,
                    "Type": item.type,
                    "Version": item.version,
                    "Status": spell_status(status, spelling),
                    "Message": message,
                    "Spec": item.spec_text(),
                    "CreateTime": created,
                    "ModifyTime": modified,
                }
            )
        return rendered


@dataclass
class Scenario:
    """All scripted runs plus the API-surface choices of one emulated DataWorks."""

    start: float
    old_api_only: bool = False
    status_spelling: str = "sdk"
    list_order: str = "newest"
    seed: int = 0
    projects: set[int] = field(default_factory=set)
    runs: list[RunSpec] = field(default_factory=list)
    quirks: dict[str, bool] = field(default_factory=lambda: dict(DEFAULT_QUIRKS))

    @classmethod
    def load(cls, path: str | Path, *, default_start: float) -> Scenario:
        """Read a YAML or JSON scenario file."""
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
        return cls.from_dict(data, default_start=default_start)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, default_start: float) -> Scenario:
        """Build a scenario from its document form, failing with the dotted path of any error."""
        if not isinstance(data, Mapping):
            raise ScenarioError("scenario: expected a mapping")
        unknown = set(data) - _TOP_KEYS
        if unknown:
            raise ScenarioError(f"{sorted(unknown)[0]}: unknown key (expected one of {sorted(_TOP_KEYS)})")
        given = dict(data.get("quirks") or {})
        for name in sorted(set(given) - set(DEFAULT_QUIRKS)):
            raise ScenarioError(f"quirks.{name}: unknown quirk (expected one of {sorted(DEFAULT_QUIRKS)})")
        quirks = {**DEFAULT_QUIRKS, **given}
        scenario = cls(
            start=parse_start(data.get("start"), default_start),
            old_api_only=bool(data.get("old_api_only", False)),
            status_spelling=check_choice(
                data.get("status_spelling", "sdk"), tuple(SPELLINGS), "status_spelling"
            ),
            list_order=check_choice(data.get("list_order", "newest"), LIST_ORDERS, "list_order"),
            seed=int(data.get("seed", 0)),
            projects={int(p) for p in data.get("projects") or ()},
            quirks=quirks,
        )
        for i, run in enumerate(data.get("runs") or ()):
            scenario.add_run(parse_run(run, f"runs[{i}]", quirks, index=i))
        for project, count in (data.get("history") or {}).items():
            for run_spec in history_runs(int(project), int(count), quirks):
                scenario.add_run(run_spec)
        return scenario

    def add_run(self, run: RunSpec) -> None:
        """Add a run (its workspace becomes known)."""
        if self.find(run.project, run.id) is not None:
            raise ScenarioError(f"run {run.id}: duplicate id in workspace {run.project}")
        self.projects.add(run.project)
        self.runs.append(run)

    def find(self, project: int, run_id: str) -> RunSpec | None:
        """The run with this id in this workspace (the id compared without surrounding whitespace)."""
        wanted = run_id.strip()
        return next((r for r in self.runs if r.project == project and r.id == wanted), None)

    def offset(self, now: float) -> float:
        """Seconds of scenario time elapsed at epoch time `now`."""
        return now - self.start

    @property
    def duration(self) -> float:
        """Offset of the last scripted event (creation or timeline step)."""
        times = [r.created for r in self.runs] + [c.at for r in self.runs for c in r.timeline]
        return max(times, default=0.0)


def check_choice(value: Any, allowed: tuple[str, ...], path: str) -> str:
    """`value` if it is one of `allowed`, else a ScenarioError naming `path`."""
    if value not in allowed:
        raise ScenarioError(f"{path}: {value!r} is not one of {', '.join(allowed)}")
    return str(value)


def parse_run(data: Mapping[str, Any], path: str, quirks: Mapping[str, bool], index: int = 0) -> RunSpec:
    """Build one run from its document form."""
    if not isinstance(data, Mapping):
        raise ScenarioError(f"{path}: expected a mapping")
    if "project" not in data:
        raise ScenarioError(f"{path}.project: required")
    project = int(data["project"])
    run_id = str(data.get("id") or uuid.uuid5(uuid.NAMESPACE_URL, f"emulators/dataworks/{project}/{index}"))
    stage_docs = data.get("stages") or _DEFAULT_STAGES
    stages = [_parse_stage(s, f"{path}.stages[{i}]", i + 1, quirks) for i, s in enumerate(stage_docs)]
    codes = {s.code for s in stages}
    if len(codes) != len(stages):
        raise ScenarioError(f"{path}.stages: stage codes must be unique")
    run = RunSpec(
        project=project,
        id=run_id.strip(),
        stages=stages,
        creator=str(data.get("creator", DEFAULT_CREATOR)),
        description=str(data.get("description", "")),
        created=float(data.get("created", 0)),
        id_trailing_newline=bool(data.get("id_trailing_newline", quirks["id_trailing_newline"])),
        objects=tuple(str(o) for o in data.get("objects") or ()),
        items=[_parse_item(d, f"{path}.items[{i}]", i) for i, d in enumerate(data.get("items") or ())],
    )
    names = {i.name for i in run.items}
    if len(names) != len(run.items):
        raise ScenarioError(f"{path}.items: item names must be unique")
    for i, step in enumerate(data.get("timeline") or ()):
        run.add_change(parse_change(step, f"{path}.timeline[{i}]", codes, names))
    return run


def _parse_item(data: Any, path: str, index: int) -> ItemSpec:
    if not isinstance(data, Mapping) or not data.get("name"):
        raise ScenarioError(f"{path}.name: required")
    return ItemSpec(
        id=str(data.get("id", 700004534200 + index)),
        name=str(data["name"]),
        type=str(data.get("type", "Node")),
        version=int(data.get("version", 1)),
        status=canonical_status(str(data.get("status", "init"))),
        message=str(data.get("message", "")),
        owner=str(data.get("owner", "")),
        spec=data.get("spec"),
    )


def _parse_stage(data: Mapping[str, Any], path: str, step: int, quirks: Mapping[str, bool]) -> StageSpec:
    if not isinstance(data, Mapping) or not data.get("code"):
        raise ScenarioError(f"{path}.code: required")
    return StageSpec(
        code=str(data["code"]),
        step=int(data.get("step", step)),
        type=str(data.get("type", "Deploy")),
        name=str(data.get("name", data["code"])),
        description=str(data.get("description", "")),
        detail=data.get("detail", {}),
        detail_as_string=bool(data.get("detail_as_string", quirks["detail_as_string"])),
    )


def parse_change(
    data: Mapping[str, Any], path: str, codes: set[str], item_names: set[str] | None = None
) -> Change:
    """Build one timeline step; stage and item values are a status or {status, message}."""
    if not isinstance(data, Mapping) or "at" not in data:
        raise ScenarioError(f"{path}.at: required")
    status = data.get("status")
    return Change(
        at=float(data["at"]),
        status=canonical_status(str(status)) if status else None,
        message=_opt_str(data.get("message")),
        stages=_statuses(data.get("stages"), f"{path}.stages", codes, "stage"),
        items=_statuses(data.get("items"), f"{path}.items", item_names or set(), "item"),
    )


def _statuses(values: Any, path: str, known: set[str], what: str) -> dict[str, tuple[str | None, str | None]]:
    statuses: dict[str, tuple[str | None, str | None]] = {}
    for name, value in (values or {}).items():
        if name not in known:
            raise ScenarioError(f"{path}.{name}: no such {what} in this run")
        if isinstance(value, Mapping):
            status = value.get("status")
            statuses[name] = (
                canonical_status(str(status)) if status else None,
                _opt_str(value.get("message")),
            )
        else:
            statuses[name] = (canonical_status(str(value)), None)
    return statuses


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


_HISTORY_OUTCOMES = (("success", 16), ("fail", 2), ("canceled", 1), ("terminated", 1))
_HISTORY_CREATORS = ("137946317766XXXX", "204517703358XXXX", "119866201447XXXX")


def history_runs(project: int, count: int, quirks: Mapping[str, bool]) -> list[RunSpec]:
    """`count` finished runs created before the start, newest first, ids and outcomes deterministic."""
    rng = random.Random(f"history/{project}")
    outcomes = [o for o, weight in _HISTORY_OUTCOMES for _ in range(weight)]
    runs, created = [], -3600.0  # history ends an hour before the start: older than a default lookback
    for i in range(count):
        created -= rng.randint(600, 5400)
        outcome = rng.choice(outcomes)
        deploy_message = {"fail": "节点 ods_orders 依赖缺失 (dependency missing)"}.get(outcome, "")
        run = parse_run(
            {
                "project": project,
                "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"emulators/dataworks/history/{project}/{i}")),
                "creator": rng.choice(_HISTORY_CREATORS),
                "description": f"历史发布 #{count - i}",
                "created": created,
                "timeline": [
                    {"at": created, "status": "Running", "stages": {"DEV_CHECK": "Running"}},
                    {"at": created + 60, "stages": {"DEV_CHECK": "Success", "PROD_DEPLOY": "Running"}},
                    {
                        "at": created + 60 + rng.randint(30, 300),
                        "status": outcome,
                        "message": "部署失败" if outcome == "fail" else "",
                        "stages": {"PROD_DEPLOY": {"status": outcome, "message": deploy_message}},
                    },
                ],
            },
            f"history.{project}[{i}]",
            quirks,
        )
        runs.append(run)
    return runs

"""DataWorks OpenAPI (RPC, version 2024-05-18) stand-in with scripted pipeline runs.

Serves `GetPipelineRun` / `ListPipelineRuns` and their old names `GetDeployment` / `ListDeployments`,
and `ListPipelineRunItems` (a run's deployed objects; the SDK has no old name for it, nor does this),
behind the checks of `rpc.Gateway`, over a `scenario.Scenario` whose runs move with the emulator's
clock. Two actions change a run, each only by POST (as the official SDK sends them), with their
parameters in the query or a form body (both signed), under their old names too (`ExecDeploymentStage`,
`AbolishDeployment`: SDK 6.2 and older, same parameters):

- `ExecPipelineRunStage(ProjectId, Id, Code)`: `Code` must be the run's gate (the run is running,
  every earlier stage succeeded, this one is init). It runs at once (the next read shows it running)
  and succeeds `advance_s` seconds of emulator time later; the run succeeds then too when it was the
  last stage, else it keeps running and the next stage stays init (a gate in its turn).
- `AbolishPipelineRun(ProjectId, Id)`: a run that has not ended is canceled at once, and so is every
  stage and item of it that had not ended.

How these combine with the script is `scenario`'s rule: an action supersedes what the script planned
for what it decided. Both answer `{RequestId, Success: true}`.

Codes chosen where DataWorks documents none (UNCONFIRMED against the live service):

- unknown run id (GetPipelineRun, ListPipelineRunItems, both actions): HTTP 404 `Invalid.Pipeline.NotFound`
- unknown workspace: HTTP 403 `Forbidden.Access`
- a path other than `/`, or a method other than GET/POST, or an action above by GET (the live
  gateway's answer to a GET of them is unknown; refusing it makes the product send what the SDK
  sends): HTTP 404 `InvalidAction.NotFound`
- ExecPipelineRunStage on a run that has ended, AbolishPipelineRun of one: HTTP 400
  `Invalid.Pipeline.Status`
- ExecPipelineRunStage of a stage that is not the gate (already run, running, after the gate, or the
  run not yet running): HTTP 400 `Invalid.Pipeline.StageStatus`; of a stage the run does not have:
  HTTP 400 `InvalidParameter` (Code)

List order is undocumented by DataWorks, so `list_order` picks one: newest or oldest first by
CreateTime, `shuffled` (a new seeded permutation whenever page 1 is listed, continued by the later
pages of that listing), `shuffled_per_call` (a new permutation on every call) or `shuffled_fixed`.

`inject(...)` and `inject_answer(...)` take `drip_s`: the answer then goes out one byte per `drip_s`
seconds (the body, or with `drip_headers=True` the whole answer from the status line on), a slow
drip that no per-read timeout ends.

Limits (`qps_limit`, `daily_limit`) count calls on the emulator clock (a sliding second; a day in
UTC+8), so a test with a manual clock decides when they reset. Throttling is answered with HTTP 400,
as public references show the gateway do; `throttle_status=429` serves the other form.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import yaml

from emulators._base import Emulator, Request, Response, cli_parser, serve
from emulators.rpc import (
    COMMON_PARAMS,
    AcsError,
    Faults,
    FlowControl,
    Gateway,
    default_status,
    error_body,
    invalid,
    missing,
    new_request_id,
    request_params,
    requested_action,
)
from emulators.scenario import (
    ENDED,
    LIST_ORDERS,
    SPELLINGS,
    Change,
    RunSpec,
    Scenario,
    canonical_status,
    check_choice,
    parse_change,
    parse_run,
    spell_status,
)

PRODUCT = "dataworks-public"
VERSIONS = frozenset({"2024-05-18", "2020-05-18"})
# The actions that change a run (their old names too) and the parameters each requires.
WRITES: dict[str, tuple[str, ...]] = {
    "ExecPipelineRunStage": ("Id", "Code"),
    "ExecDeploymentStage": ("Id", "Code"),
    "AbolishPipelineRun": ("Id",),
    "AbolishDeployment": ("Id",),
}
NEW_ACTIONS = frozenset(
    {
        "GetPipelineRun",
        "ListPipelineRuns",
        "ListPipelineRunItems",
        "ExecPipelineRunStage",
        "AbolishPipelineRun",
    }
)
OLD_ACTIONS = frozenset({"GetDeployment", "ListDeployments", "ExecDeploymentStage", "AbolishDeployment"})
MAX_PAGE_SIZE = 100
DEFAULT_ADVANCE_S = 5.0  # how long an executed stage runs before it succeeds
MORNING = Path(__file__).with_name("scenarios") / "morning.yaml"


@dataclass(frozen=True)
class Call:
    """One request as the emulator saw it: business params only (no signing fields).

    `signature` is the scheme the request was read as (`HMAC-SHA1` or `ACS3-HMAC-SHA256`), None when
    the gateway refused it before telling. `params` holds the query's and the form body's together;
    `form` those of the body alone.
    """

    action: str | None
    params: dict[str, str]
    http_status: int
    code: str | None
    at: float
    signature: str | None = None
    method: str = "GET"
    form: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Answer:
    """A raw answer `inject_answer` queued for the next `times` calls of `action` (None: any)."""

    action: str | None
    status: int
    body: bytes
    times: int
    drip_s: float = 0.0
    drip_headers: bool = False


class DataWorksEmulator(Emulator):
    """DataWorks RPC endpoint: signature checks, scripted runs, faults, limits and a call log.

    `latency_s` delays every answer (a network round trip, for benchmarks); default 0. `advance_s`
    is how long an executed stage runs before it succeeds, in emulator seconds.
    """

    service = "dataworks"

    def __init__(
        self,
        scenario: Scenario | Mapping[str, Any] | str | Path | None = None,
        *,
        access_key_id: str = "test-ak",
        access_key_secret: str = "test-secret",  # noqa: S107 - the contract's test credential
        security_token: str | None = None,
        clock: Callable[[], float] | None = None,
        old_api_only: bool | None = None,
        status_spelling: str | None = None,
        list_order: str | None = None,
        qps_limit: int | None = None,
        daily_limit: int | None = None,
        throttle_status: int = 400,
        region: str = "cn-shanghai",
        verbose: bool = False,
        latency_s: float = 0.0,
        advance_s: float = DEFAULT_ADVANCE_S,
    ) -> None:
        super().__init__(clock, verbose=verbose, latency_s=latency_s)
        self.advance_s = advance_s
        created_at = self.clock.now()
        if isinstance(scenario, Scenario):
            self.scenario = scenario
        elif isinstance(scenario, str | Path):
            self.scenario = Scenario.load(scenario, default_start=created_at)
        else:
            self.scenario = Scenario.from_dict(scenario or {}, default_start=created_at)
        if old_api_only is not None:
            self.scenario.old_api_only = old_api_only
        if status_spelling is not None:
            self.scenario.status_spelling = check_choice(status_spelling, tuple(SPELLINGS), "status_spelling")
        if list_order is not None:
            self.scenario.list_order = check_choice(list_order, LIST_ORDERS, "list_order")
        self.gateway = Gateway({access_key_id: access_key_secret}, security_token)
        self.host_id = f"dataworks.{region}.aliyuncs.com"
        self.calls: list[Call] = []
        self._faults = Faults()
        self.throttle_status = throttle_status
        self._limits = FlowControl(qps_limit, daily_limit, throttle_status)
        self._list_calls = 0
        self._listings: dict[int, int] = {}  # project -> page-1 list calls, for "shuffled"
        # Hostile-server controls (tests of the client's defences): a page size served whatever
        # PageSize asked, a TotalCount claimed whatever the runs, fields overridden in one run's
        # rendering, and raw answers served instead of the action's.
        self.serve_page_size: int | None = None
        self.serve_item_page_size: int | None = None  # ListPipelineRunItems pages, whatever was asked
        self.claim_total: int | None = None
        self.run_overrides: dict[str, dict[str, Any]] = {}
        self._answers: list[_Answer] = []

    # -- test controls -----------------------------------------------------------------------
    def inject(
        self,
        action: str | None,
        code: str,
        http_status: int | None = None,
        times: int = 1,
        message: str | None = None,
        drip_s: float = 0.0,
        drip_headers: bool = False,
    ) -> None:
        """Make the next `times` calls of `action` (None: any action) fail with this error.

        `message` is the error's Message as given (`""` or one without a colon too); `drip_s` sends
        the answer one byte per `drip_s` seconds.

        Without `http_status`, the gateway's for the code: `Throttling*` the emulator's
        `throttle_status` (400), `InternalError*` 500, `Forbidden*` 403, `*NotFound` 404, else 400.
        """
        status = http_status if http_status is not None else default_status(code, self.throttle_status)
        with self._lock:
            self._faults.add(action, code, status, times, message, drip_s, drip_headers)

    def inject_answer(
        self,
        action: str | None,
        body: bytes | str | Mapping[str, Any] | list[Any],
        times: int = 1,
        status: int = 200,
        drip_s: float = 0.0,
        drip_headers: bool = False,
    ) -> None:
        """Answer the next `times` signed calls of `action` (None: any) with this raw body and status.

        With `drip_s`, the answer goes out one byte per `drip_s` seconds.
        """
        raw = (
            body
            if isinstance(body, bytes)
            else body.encode()
            if isinstance(body, str)
            else json.dumps(body).encode()
        )
        with self._lock:
            self._answers.append(_Answer(action, status, raw, times, drip_s, drip_headers))

    def _take_answer(self, action: str) -> _Answer | None:
        for index, answer in enumerate(self._answers):
            if answer.action in (None, action):
                if answer.times <= 1:
                    del self._answers[index]
                else:
                    self._answers[index] = replace(answer, times=answer.times - 1)
                return answer
        return None

    def call_count(self, action: str | None = None) -> int:
        """Requests received so far (all of them, or one action's), failures and drops included."""
        with self._lock:
            return sum(1 for c in self.calls if action is None or c.action == action)

    def scenario_offset(self) -> float:
        """Seconds of scenario time elapsed now."""
        return self.scenario.offset(self.now())

    def add_run(
        self,
        project: int,
        run_id: str | None = None,
        *,
        status: str = "Running",
        message: str = "",
        stages: Sequence[Mapping[str, Any]] | None = None,
        stage_statuses: Mapping[str, Any] | None = None,
        created: float | None = None,
        **fields: Any,
    ) -> str:
        """Add a run created now (or at offset `created`) with this status; return its id.

        `stages` use the scenario's stage form; `stage_statuses` maps a stage code to a status or
        {status, message}; other keyword fields (creator, description, objects, items,
        id_trailing_newline) are as in the scenario file.
        """
        with self._lock:
            offset = self.scenario_offset() if created is None else created
            doc: dict[str, Any] = {"project": project, "created": offset, **fields}
            if run_id is not None:
                doc["id"] = run_id
            if stages is not None:
                doc["stages"] = list(stages)
            index = len(self.scenario.runs)
            run = parse_run(doc, "add_run", self.scenario.quirks, index=index)
            change: dict[str, Any] = {"at": offset, "status": status, "message": message}
            run.add_change(_change(run, change, stage_statuses))
            self.scenario.add_run(run)
            return run.id

    def set_run_status(
        self,
        run_id: str,
        status: str | None = None,
        message: str | None = None,
        stages: Mapping[str, Any] | None = None,
        project: int | None = None,
        items: Mapping[str, Any] | None = None,
    ) -> None:
        """Change a run now: its status/message, stages (code -> status or {status, message}) and
        items (name -> the same)."""
        with self._lock:
            wanted = run_id.strip()
            run = next(
                (r for r in self.scenario.runs if r.id == wanted and project in (None, r.project)), None
            )
            if run is None:
                raise KeyError(f"no run {run_id!r}")
            change = {"at": self.scenario_offset(), "status": status, "message": message}
            run.add_change(_change(run, change, stages, items))

    def snapshot(self) -> dict[str, Any]:
        """Clock, scenario offset and the call log (for GET /_emulator)."""
        with self._lock:
            calls = [asdict(c) for c in self.calls]
        return {**super().snapshot(), "offset": self.scenario_offset(), "calls": calls}

    def on_drop(self, request: Request) -> None:
        """Log a dropped request with HTTP status 0."""
        self._record(request, requested_action(request), request_params(request), 0, None)

    # -- the protocol --------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        """Answer one RPC request (HMAC-SHA1 query signature or ACS3-HMAC-SHA256 headers)."""
        params = request_params(request)
        request_id = new_request_id()
        action, scheme = requested_action(request), None
        try:
            if request.path != "/" or request.method not in ("GET", "POST"):
                raise _not_found_action()
            signed = self.gateway.check_common(request)
            action, scheme = signed.action, signed.scheme
            if signed.version not in VERSIONS:
                raise AcsError("InvalidVersion", "Specified parameter Version is not valid.")
            if action not in self._actions() or (action in WRITES and request.method != "POST"):
                raise _not_found_action()
            self.gateway.authenticate(request, signed)
            with self._lock:
                self._faults.take(action)
                self._limits.admit(self.now())
                answer = self._take_answer(action)
            if answer is not None:
                self._record(request, action, params, answer.status, None, scheme)
                headers = {"Content-Type": "application/json;charset=utf-8", "x-acs-request-id": request_id}
                return Response(answer.status, answer.body, headers, answer.drip_s, answer.drip_headers)
            body = self._run_action(action, params)
        except AcsError as error:
            self._record(request, action, params, error.http_status, error.code, scheme)
            document = error_body(error, request_id, self.host_id, PRODUCT)
            response = Response.json(error.http_status, document, {"x-acs-request-id": request_id})
            response.drip_s, response.drip_headers = error.drip_s, error.drip_headers
            return response
        self._record(request, action, params, 200, None, scheme)
        return Response.json(200, {"RequestId": request_id, **body}, {"x-acs-request-id": request_id})

    def _actions(self) -> frozenset[str]:
        return OLD_ACTIONS if self.scenario.old_api_only else NEW_ACTIONS | OLD_ACTIONS

    def _record(
        self,
        request: Request,
        action: str | None,
        params: Mapping[str, str],
        status: int,
        code: str | None,
        scheme: str | None = None,
    ) -> None:
        business = {k: v for k, v in params.items() if k not in COMMON_PARAMS}
        form = {k: v for k, v in _form(request).items() if k not in COMMON_PARAMS}
        call = Call(action, business, status, code, self.now(), scheme, request.method, form)
        with self._lock:
            self.calls.append(call)

    def _run_action(self, action: str, params: Mapping[str, str]) -> dict[str, Any]:
        old = action in OLD_ACTIONS
        project = _int_param(params, "ProjectId", required=True)
        for name in WRITES.get(action, ()):
            if not params.get(name):
                raise missing(name)
        with self._lock:
            if project not in self.scenario.projects:
                raise AcsError(
                    "Forbidden.Access",
                    f"You are not authorized to access workspace {project}, or it does not exist.",
                    403,
                )
            if action in ("GetPipelineRun", "GetDeployment"):
                return {"Pipeline": self._get(project, params, old)}  # GetDeployment too
            if action == "ListPipelineRunItems":
                return {"PagingInfo": self._items(project, params)}
            if action in ("ExecPipelineRunStage", "ExecDeploymentStage"):
                return self._exec(project, params)
            if action in ("AbolishPipelineRun", "AbolishDeployment"):
                return self._abolish(project, params)
            return {"PagingInfo": self._list(project, params, old)}

    def _exec(self, project: int, params: Mapping[str, str]) -> dict[str, Any]:
        run, code, offset = self._find(project, params, "Id"), params["Code"], self.scenario_offset()
        if code not in {stage.code for stage in run.stages}:
            raise invalid("Code", f" The pipeline run {run.id} has no stage {code}.")
        state, spelling = run.state(offset), self.scenario.status_spelling
        if state.status in ENDED:
            raise _ended(run.id, state.status, spelling)
        gate = run.gate(offset)
        if gate is None or gate.code != code:
            stage, status = (spell_status(s, spelling) for s in (state.stages[code][0], state.status))
            raise AcsError(
                "Invalid.Pipeline.StageStatus",
                f"The stage {code} of pipeline run {run.id} is not waiting to be executed: it is "
                f"{stage}, the run {status}.",
            )
        run.execute(code, offset, self.advance_s)
        return {"Success": True}

    def _abolish(self, project: int, params: Mapping[str, str]) -> dict[str, Any]:
        run, offset = self._find(project, params, "Id"), self.scenario_offset()
        status = run.state(offset).status
        if status in ENDED:
            raise _ended(run.id, status, self.scenario.status_spelling)
        run.abolish(offset)
        return {"Success": True}

    def _render(self, run: RunSpec, offset: float, old: bool) -> dict[str, Any]:
        rendered = run.render(self.scenario.start, offset, self.scenario.status_spelling, old)
        return {**rendered, **self.run_overrides.get(run.id, {})}

    def _get(self, project: int, params: Mapping[str, str], old: bool) -> dict[str, Any]:
        run = self._find(project, params, "Id")
        return self._render(run, self.scenario_offset(), old)

    def _find(self, project: int, params: Mapping[str, str], name: str) -> RunSpec:
        run_id = params.get(name)
        if not run_id:
            raise missing(name)
        run = self.scenario.find(project, run_id)
        if run is None or not run.visible(self.scenario_offset()):
            raise AcsError(
                "Invalid.Pipeline.NotFound", f"The pipeline run {run_id.strip()} does not exist.", 404
            )
        return run

    def _items(self, project: int, params: Mapping[str, str]) -> dict[str, Any]:
        run = self._find(project, params, "PipelineRunId")
        page_number, page_size = _paging(params)
        offset = self.scenario_offset()
        items = run.render_items(self.scenario.start, offset, self.scenario.status_spelling)
        page_size = self.serve_item_page_size or page_size
        return {
            "PageNumber": page_number,
            "PageSize": page_size,
            "TotalCount": len(items),
            "PipelineRunItems": items[(page_number - 1) * page_size : page_number * page_size],
        }

    def _list(self, project: int, params: Mapping[str, str], old: bool) -> dict[str, Any]:
        page_number, page_size = _paging(params)
        offset = self.scenario_offset()
        wanted_status = canonical_status(params["Status"]) if params.get("Status") else None
        runs = []
        for run in self.scenario.runs:
            if run.project != project or not run.visible(offset):
                continue
            if params.get("Creator") and run.creator != params["Creator"]:
                continue
            if params.get("ObjectId") and params["ObjectId"] not in run.objects:
                continue
            if wanted_status is not None and run.state(offset).status.lower() != wanted_status.lower():
                continue
            runs.append(run)
        self._list_calls += 1
        if page_number == 1:
            self._listings[project] = self._listings.get(project, 0) + 1
        runs = self._order(runs, project)
        page_size = self.serve_page_size or page_size
        page = runs[(page_number - 1) * page_size : page_number * page_size]
        rendered = [self._render(run, offset, old) for run in page]
        total = len(runs) if self.claim_total is None else self.claim_total
        if old:
            return {
                "PageNumber": str(page_number),
                "PageSize": str(page_size),
                "TotalCount": str(total),
                "Deployments": rendered,
            }
        return {
            "PageNumber": page_number,
            "PageSize": page_size,
            "TotalCount": total,
            "PipelineRuns": rendered,
        }

    def _order(self, runs: list[RunSpec], project: int) -> list[RunSpec]:
        order, seed = self.scenario.list_order, self.scenario.seed
        runs.sort(key=lambda r: (r.created, r.id), reverse=order != "oldest")
        if order == "shuffled":  # a new order per listing; its later pages continue it
            random.Random(f"{seed}/{project}/{self._listings.get(project, 0)}").shuffle(runs)
        elif order == "shuffled_per_call":
            random.Random(f"{seed}/{self._list_calls}").shuffle(runs)
        elif order == "shuffled_fixed":
            runs.sort(key=lambda r: random.Random(f"{self.scenario.seed}/{r.id}").random())
        return runs


def _change(
    run: RunSpec,
    doc: dict[str, Any],
    stages: Mapping[str, Any] | None,
    items: Mapping[str, Any] | None = None,
) -> Change:
    doc = {k: v for k, v in doc.items() if v is not None}
    doc["stages"], doc["items"] = dict(stages or {}), dict(items or {})
    return parse_change(doc, f"run {run.id}", {s.code for s in run.stages}, {i.name for i in run.items})


def _ended(run_id: str, status: str, spelling: str) -> AcsError:
    return AcsError(
        "Invalid.Pipeline.Status",
        f"The pipeline run {run_id} has ended ({spell_status(status, spelling)}): it cannot be changed.",
    )


def _form(request: Request) -> dict[str, str]:
    """The parameters of a POST's form body alone (`rpc.request_params` holds them with the query's)."""
    if request.method != "POST" or not request.body:
        return {}
    return dict(parse_qsl(request.body.decode("utf-8", "replace"), keep_blank_values=True))


def _not_found_action() -> AcsError:
    return AcsError(
        "InvalidAction.NotFound", "Specified api is not found, please check your url and method.", 404
    )


def _paging(params: Mapping[str, str]) -> tuple[int, int]:
    page_number = _int_param(params, "PageNumber", default=1)
    page_size = _int_param(params, "PageSize", default=10)
    if page_number < 1:
        raise invalid("PageNumber", " It must be 1 or more.")
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise invalid("PageSize", f" It must be between 1 and {MAX_PAGE_SIZE}.")
    return page_number, page_size


def _int_param(params: Mapping[str, str], name: str, *, required: bool = False, default: int = 0) -> int:
    value = params.get(name)
    if not value:
        if required:
            raise missing(name)
        return default
    try:
        return int(value)
    except ValueError:
        raise invalid(name, " An integer is expected.") from None


def main(argv: Sequence[str]) -> int:
    """`python -m emulators dataworks`: serve a scenario until SIGTERM/SIGINT."""
    parser = cli_parser("dataworks", "DataWorks OpenAPI (RPC 2024-05-18) stand-in with scripted runs.")
    parser.add_argument("--scenario", type=Path, default=MORNING, help="scenario file (default: morning)")
    parser.add_argument(
        "--start",
        default="now",
        help='scenario start: "now" (default, the script plays out live), "file" (keep the '
        "file's start) or an ISO 8601 time",
    )
    parser.add_argument("--speed", type=float, default=1.0, help="scenario seconds per real second")
    parser.add_argument("--access-key-id", default="test-ak")
    parser.add_argument("--access-key-secret", default="test-secret")
    parser.add_argument("--security-token", help="accept STS requests carrying this token")
    parser.add_argument(
        "--old-api-only", action="store_true", help="serve only the old action names (GetDeployment...)"
    )
    parser.add_argument(
        "--advance-s",
        type=float,
        default=DEFAULT_ADVANCE_S,
        help="seconds an executed stage runs before it succeeds",
    )
    parser.add_argument("--status-spelling", choices=sorted(SPELLINGS))
    parser.add_argument("--list-order", choices=LIST_ORDERS)
    parser.add_argument("--qps-limit", type=int)
    parser.add_argument("--daily-limit", type=int)
    parser.add_argument(
        "--throttle-status", type=int, choices=(400, 429), default=400, help="HTTP status of throttling"
    )
    args = parser.parse_args(argv)
    emulator = DataWorksEmulator(
        _cli_scenario(args),
        access_key_id=args.access_key_id,
        access_key_secret=args.access_key_secret,
        security_token=args.security_token,
        clock=_scaled_clock(args.speed),
        old_api_only=args.old_api_only or None,
        status_spelling=args.status_spelling,
        list_order=args.list_order,
        qps_limit=args.qps_limit,
        daily_limit=args.daily_limit,
        throttle_status=args.throttle_status,
        verbose=args.verbose,
        advance_s=args.advance_s,
    )
    return serve(emulator, args.host, args.port)


def _cli_scenario(args: argparse.Namespace) -> Scenario:
    with open(args.scenario, encoding="utf-8") as f:
        doc = yaml.safe_load(f) or {}
    if args.start != "file":
        doc["start"] = args.start
    return Scenario.from_dict(doc, default_start=time.time())


def _scaled_clock(speed: float) -> Callable[[], float] | None:
    if speed == 1.0:
        return None
    origin = time.time()
    return lambda: origin + (time.time() - origin) * speed

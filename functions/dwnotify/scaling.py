"""The config's `scale` section, and how many shards `auto` makes of the watched workspaces.

`scale: {shards: auto | <n>, endpoint: <FC endpoint>, function: <name>}` turns the timer's invocation
into a coordinator that invokes the function once per shard (`functions/index.py`).
"""

from __future__ import annotations

import math
import re

from dwnotify.addresses import url_problem
from dwnotify.interpolate import Loc
from dwnotify.settings import ScaleSettings
from dwnotify.shards import MAX_SHARDS
from dwnotify.yamlcheck import Checker

# What one invocation is sized for: page 1 of each of its workspaces at a share of `max_qps`, within
# the ~40 s a 60 s deadline leaves after delivery, with room for the runs fetched one by one.
WORKSPACES_PER_SHARD = 10
_FUNCTION = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,127}")


def parse_scale(c: Checker, value: object, loc: Loc) -> ScaleSettings | None:
    """`scale: {shards, endpoint, function}`."""
    if value is None:
        return None
    f = c.section(value, loc, optional=("shards", "endpoint", "function"))
    if f is None:
        return None
    raw, where = f.at("shards")
    shards: int | None = None
    if raw is not None and raw != "auto":
        shards = c.integer(raw, where, minimum=1, maximum=MAX_SHARDS)
    endpoint = c.text(*f.at("endpoint"))
    if endpoint is not None:
        problem = url_problem(endpoint, allow_http=False, http_escape="")
        if problem is not None:
            c.add(f.at("endpoint")[1], problem)
            endpoint = None
    name, there = f.at("function")
    function = c.matching(name, there, _FUNCTION, "must be an FC function name") if name is not None else None
    return ScaleSettings(shards, endpoint, function)


def shard_count(scale: ScaleSettings, workspaces: int, max_qps: float) -> int:
    """How many shards the coordinator invokes: the configured number, or `auto`'s (one invocation
    stays one below WORKSPACES_PER_SHARD + 1 workspaces); never more than workspaces, nor than whole
    requests a second in `max_qps` (each shard keeps to at least one)."""
    wanted = scale.shards if scale.shards is not None else math.ceil(workspaces / WORKSPACES_PER_SHARD)
    return max(1, min(wanted, workspaces, MAX_SHARDS, math.floor(max_qps)))

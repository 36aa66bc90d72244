"""Splitting the watched workspaces over parallel invocations (`{"action": "shard", "index": i, "of": n}`).

Pure. Workspaces are grouped by region and then cut into `of` contiguous slices of sizes that differ
by at most one, so every workspace is in exactly one shard, and a shard mostly calls one region's
endpoint (whose QPS limit it shares with the other shards: each takes `max_qps / of`).
"""

from __future__ import annotations

from collections.abc import Sequence

from .settings import ProjectSettings

MAX_SHARDS = 64  # far beyond what one account's QPS can feed


def shard_projects(projects: Sequence[ProjectSettings], index: int, of: int) -> tuple[ProjectSettings, ...]:
    """The workspaces of shard `index` (0 to `of - 1`) of `of`."""
    if not 0 <= index < of:
        raise ValueError(f"shard index {index} is not in 0..{of - 1}")
    ordered = sorted(projects, key=lambda project: (project.region, project.id))
    size, extra = divmod(len(ordered), of)
    start = index * size + min(index, extra)
    return tuple(ordered[start : start + size + (1 if index < extra else 0)])

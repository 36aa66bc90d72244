"""A CPU quota for a child process: a cgroup limited to a fraction of one CPU, where the machine allows.

cgroup v2 (`cpu.max`) where a cgroup2 hierarchy has the cpu controller enabled, else cgroup v1's cpu
controller (`cpu.cfs_quota_us` over `cpu.cfs_period_us`, the same CFS bandwidth limit). The child
joins the cgroup through a shell that writes its own pid to `cgroup.procs` and then execs the
command, so no code runs between fork and exec in this (threaded) process.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PERIOD_US = 100_000


@dataclass(frozen=True)
class Quota:
    """A cgroup made for the benchmark (`path` None when none could be made, and `why`)."""

    cpus: float
    path: Path | None
    how: str  # what limits it, or why nothing does

    def command(self, argv: list[str]) -> list[str]:
        """`argv`, run inside the cgroup."""
        if self.path is None:
            return argv
        return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(self.path / "cgroup.procs"), *argv]

    def throttled_periods(self) -> int | None:
        """How many CFS periods the cgroup's processes were throttled in (None without a cgroup)."""
        if self.path is None:
            return None
        for line in (self.path / "cpu.stat").read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == "nr_throttled":
                return int(value)
        return None


def _mounts(kind: str) -> list[tuple[Path, list[str]]]:
    found = []
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[2] == kind:
            found.append((Path(fields[1]), fields[3].split(",")))
    return found


def _cgroup(parent: Path, limits: dict[str, str]) -> Path:
    """A new cgroup under `parent` with these files written (removed again if one cannot be)."""
    path = parent / f"dwnotify-bench-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    try:
        for name, value in limits.items():
            (path / name).write_text(value + "\n")
    except OSError:
        os.rmdir(path)
        raise
    return path


def _make_v2(cpus: float) -> tuple[Path, str] | None:
    quota = f"{int(cpus * PERIOD_US)} {PERIOD_US}"
    for mount, _ in _mounts("cgroup2"):
        control = mount / "cgroup.subtree_control"
        if control.is_file() and "cpu" in control.read_text().split():
            return _cgroup(mount, {"cpu.max": quota}), f"cgroup v2 cpu.max {quota}"
    return None


def _make_v1(cpus: float) -> tuple[Path, str] | None:
    quota = str(int(cpus * PERIOD_US))
    for mount, options in _mounts("cgroup"):
        if "cpu" in options:
            limits = {"cpu.cfs_period_us": str(PERIOD_US), "cpu.cfs_quota_us": quota}
            how = f"cgroup v1 cpu.cfs_quota_us {quota} per cpu.cfs_period_us {PERIOD_US}"
            return _cgroup(mount, limits), how
    return None


@contextmanager
def cpu_quota(cpus: float) -> Iterator[Quota]:
    """A cgroup limited to `cpus` CPUs for the duration, removed afterwards; or a Quota saying why not."""
    made: tuple[Path, str] | None = None
    why = "no cgroup hierarchy with the cpu controller is mounted"
    for make in (_make_v2, _make_v1):
        try:
            made = make(cpus)
        except OSError as error:
            why = f"cannot make a cgroup ({type(error).__name__}: {error})"
        if made is not None:
            break
    if made is None:
        yield Quota(cpus, None, why)
        return
    path, how = made
    try:
        yield Quota(cpus, path, how)
    finally:
        with contextlib.suppress(OSError):  # a child still in it: the kernel removes nothing
            os.rmdir(path)

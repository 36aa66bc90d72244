"""Save the store's tables to a JSON file and load them back (values keep their exact types)."""

from __future__ import annotations

import base64
import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from emulators.tablestore.model import StoredRow, TableSpec
from emulators.tablestore.plainbuffer import Value
from emulators.tablestore.store import Store

FORMAT = 1


def _tag(value: Value) -> list[Any]:
    if isinstance(value, bool):
        return ["b", value]
    if isinstance(value, int):
        return ["i", value]
    if isinstance(value, float):
        return ["d", value]
    if isinstance(value, str):
        return ["s", value]
    return ["x", base64.b64encode(value).decode()]


def _untag(tagged: list[Any]) -> Value:
    kind, raw = tagged
    if kind == "x":
        return base64.b64decode(raw)
    return {"b": bool, "i": int, "d": float, "s": str}[kind](raw)  # type: ignore[no-any-return]


def save(store: Store, path: Path) -> None:
    """Write every table atomically (a temporary file renamed over `path`)."""
    tables = []
    for spec, rows in store.export_tables():
        tables.append(
            {
                "spec": asdict(spec),
                "rows": [
                    {
                        "pk": [[name, _tag(value)] for name, value in row.primary_key],  # type: ignore[arg-type]
                        "cells": {n: [[ts, _tag(v)] for ts, v in vs] for n, vs in row.cells.items()},
                        "marker": row.marker,
                    }
                    for row in rows
                ],
            }
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump({"format": FORMAT, "tables": tables}, out)
    os.replace(tmp, path)


def load(store: Store, path: Path) -> None:
    """Replace the store's tables with those saved at `path` (nothing happens if it is missing)."""
    if not path.exists():
        return
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("format") != FORMAT:
        raise ValueError(f"{path}: unknown tablestore emulator state format {data.get('format')!r}")
    tables = []
    for table in data["tables"]:
        spec_fields = table["spec"]
        spec_fields["primary_key"] = [tuple(pk) for pk in spec_fields["primary_key"]]
        spec_fields["defined_columns"] = [tuple(dc) for dc in spec_fields["defined_columns"]]
        rows = [
            StoredRow(
                [(name, _untag(value)) for name, value in row["pk"]],  # type: ignore[misc]
                {n: [(ts, _untag(v)) for ts, v in vs] for n, vs in row["cells"].items()},
                row["marker"],
            )
            for row in table["rows"]
        ]
        tables.append((TableSpec(**spec_fields), rows))
    store.import_tables(tables)

"""Reading the CSV files users bring (history, task lists, plans) with errors that say where.

Every row of a file is checked before anything is sent, so a bad file changes nothing;
each problem names its row (counted from 1 after the header, as spreadsheets show it
minus one) and field.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)

#: Problems listed before the rest are summarised as a count.
MAX_LISTED = 20


class CsvError(ValueError):
    """The file cannot be used; the message lists every problem found (row and field)."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        shown = self.problems[:MAX_LISTED]
        more = len(self.problems) - len(shown)
        super().__init__("\n".join(shown + ([f"… and {more} more"] if more > 0 else [])))


def read_rows(
    path: Path, required: Sequence[str], optional: Sequence[str] = ()
) -> list[dict[str, str]]:
    """The rows of a CSV file, keyed by lower-cased column name.

    Column names match case-insensitively; columns outside ``required`` and ``optional``
    are ignored.

    Raises:
        CsvError: the file cannot be read, or required columns are missing.
    """
    # Tracker exports carry long descriptions: past the csv module's 128 KiB default.
    csv.field_size_limit(sys.maxsize)
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            header = [(name or "").strip().lower() for name in reader.fieldnames or []]
            missing = [c for c in required if c.lower() not in header]
            if missing:
                raise CsvError([f"{path.name}: missing columns: {', '.join(missing)}"])
            wanted = {c.lower() for c in (*required, *optional)}
            return [
                {
                    key: (value or "").strip()
                    for name, value in row.items()
                    if name is not None and (key := name.strip().lower()) in wanted
                }
                for row in reader
            ]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CsvError([f"{path}: {exc}"]) from exc


def parse_rows(rows: Sequence[dict[str, str]], build: Callable[[dict[str, str]], M]) -> list[M]:
    """Build a model from every row; collect every failure as ``row N, field F: why``.

    Raises:
        CsvError: any row failed (nothing is returned then).
    """
    built: list[M] = []
    problems: list[str] = []
    for n, row in enumerate(rows, start=1):
        try:
            built.append(build(row))
        except ValidationError as exc:
            for err in exc.errors(include_url=False):
                field = ".".join(str(p) for p in err["loc"]) or "row"
                problems.append(f"row {n}, field {field}: {err['msg']}")
        except ValueError as exc:
            problems.append(f"row {n}: {exc}")
    if problems:
        raise CsvError(problems)
    return built


def blank_to_none(value: str) -> str | None:
    """None for an empty cell, else the text (numbers are parsed, and named, by pydantic)."""
    return value or None


def split_list(value: str) -> tuple[str, ...]:
    """``"a, b,c"`` as ``("a", "b", "c")``; an empty cell as ``()``."""
    return tuple(part.strip() for part in value.split(",") if part.strip())

"""timings.csv I/O (bench.common.files): append one row per finished cell, read rows back, merge the per-rank part
files of a torchrun sweep."""
from __future__ import annotations

import csv
import math
import sys
from contextlib import suppress
from pathlib import Path

from bench.common.cli import UsageError
from bench.common.files import CsvLog, cell, drop_cut_tail, read_table
from bench.scaling.grid import row_key
from bench.scaling.schema import COLUMNS, KEY_COLUMNS, LEVELS, PASSES, STATUSES

CSV_NAME = "timings.csv"
PARTS_DIR = "parts"


def part_path(run_dir: Path, rank: int) -> Path:
    return Path(run_dir) / PARTS_DIR / f"timings.rank{rank}.csv"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else ""
    return cell(value)  # None empty, text on one line


class RowWriter(CsvLog):
    """Appends rows to a timings CSV; a resumed file first loses a cut last row and gets the current header."""

    def __init__(self, path: Path):
        super().__init__(path, COLUMNS, _fmt)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if note := drop_cut_tail(self.path):
            print(f"bench.scaling: {note}", file=sys.stderr)
        if self.path.exists() and self.path.stat().st_size and read_header(self.path) != COLUMNS:
            self.rewrite(read_rows(self.path))


# the columns whose values the sweep acts on by name (a resume re-measures no 'ok' row, runs levels in order)
CHOICES = {"status": STATUSES, "level": LEVELS, "pass": PASSES}


def read_rows(path: Path) -> list[dict]:
    """Rows of a timings CSV as dicts of strings ([] without the file; a cut last row left out, damage refused)."""
    rows = [row for row in read_table(Path(path), required=tuple(KEY_COLUMNS) + ("status",), cut="drop")
            if row.get("method")]
    for row in rows:
        for column, valid in CHOICES.items():
            if row[column] not in valid:
                raise UsageError(f"{path}: the row of {row['method']} at seq_len {row['seq_len']}: {column} = "
                                 f"{row[column]!r} is not one of {', '.join(valid)} (was the file edited?)")
    return rows


def read_header(path: Path) -> list[str]:
    with open(path, newline="") as fh:
        return next(csv.reader(fh), [])


def finished_rows(run_dir: Path) -> list[dict]:
    """Every row already written in a run folder: timings.csv plus any unmerged part files."""
    run_dir = Path(run_dir)
    rows = read_rows(run_dir / CSV_NAME)
    for part in sorted((run_dir / PARTS_DIR).glob("timings.rank*.csv")):  # none when there is no parts/
        rows.extend(read_rows(part))
    first: dict = {}  # one row per key; the first one written wins (a finished cell is never measured twice)
    for row in rows:
        first.setdefault(row_key(row), row)
    return list(first.values())


def merge_parts(run_dir: Path) -> Path:
    """Rank 0 after the barrier: fold the part files into timings.csv (keeping its rows) in run order, delete them."""
    run_dir = Path(run_dir)
    final = run_dir / CSV_NAME
    rows = finished_rows(run_dir)
    rows.sort(key=lambda r: (LEVELS.index(r["level"]), PASSES.index(r["pass"]), int(r["seq_len"]), r["method"]))
    CsvLog(final, COLUMNS, _fmt).rewrite(rows)
    for part in (run_dir / PARTS_DIR).glob("timings.rank*.csv"):  # none when there is no parts/
        part.unlink()
    with suppress(OSError):  # not there, or holding something else
        (run_dir / PARTS_DIR).rmdir()
    return final

"""timings.csv I/O: append one row per finished cell (flushed at once), read rows back, merge the
per-rank part files of a torchrun sweep. The header is always schema.COLUMNS."""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path

from bench.scaling.grid import row_key
from bench.scaling.schema import COLUMNS, KEY_COLUMNS

CSV_NAME = "timings.csv"
PARTS_DIR = "parts"


def part_path(run_dir: Path, rank: int) -> Path:
    return Path(run_dir) / PARTS_DIR / f"timings.rank{rank}.csv"


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if not math.isfinite(value):
            return ""
        return f"{value:.6g}"
    return " ".join(str(value).split())  # one line, always


class RowWriter:
    """Appends rows to a CSV with the schema header, flushing (and fsyncing) after each row."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists() or self.path.stat().st_size == 0
        if not new and read_header(self.path) != COLUMNS:
            _rewrite_with_schema(self.path)  # resumed folder from an older schema: keep every row
        self._fh = open(self.path, "a", newline="")
        self._writer = csv.DictWriter(self._fh, fieldnames=COLUMNS, extrasaction="raise")
        if new:
            self._writer.writeheader()
            self._flush()

    def write(self, row: dict) -> None:
        self._writer.writerow({c: _fmt(row.get(c)) for c in COLUMNS})
        self._flush()

    def _flush(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()


def read_rows(path: Path) -> list[dict]:
    """Rows of a timings CSV as dicts of strings ([] when the file does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return [row for row in csv.DictReader(fh) if row.get("method")]


def _rewrite_with_schema(path: Path) -> None:
    rows = read_rows(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c) or "" for c in COLUMNS})
    os.replace(tmp, path)


def read_header(path: Path) -> list[str]:
    with open(path, newline="") as fh:
        return next(csv.reader(fh), [])


def finished_rows(run_dir: Path) -> list[dict]:
    """Every row already written in a run folder: timings.csv plus any unmerged part files."""
    run_dir = Path(run_dir)
    rows = read_rows(run_dir / CSV_NAME)
    parts = sorted((run_dir / PARTS_DIR).glob("timings.rank*.csv")) if (run_dir / PARTS_DIR).is_dir() else []
    for part in parts:
        rows.extend(read_rows(part))
    return dedupe(rows)


def dedupe(rows: list[dict]) -> list[dict]:
    """One row per key; the first one written wins (a finished cell is never measured twice)."""
    seen, out = set(), []
    for row in rows:
        key = row_key(row)
        if key not in seen:
            seen.add(key)
            out.append(row)
    return out


def merge_parts(run_dir: Path, world: int) -> Path:
    """Rank 0 after the barrier: fold parts/timings.rank*.csv into timings.csv (rows already in
    timings.csv, from an earlier interrupted run, are kept), ordered by level, pass, length,
    method; then delete the merged part files."""
    run_dir = Path(run_dir)
    final = run_dir / CSV_NAME
    rows = finished_rows(run_dir)
    level_order = {"core": 0, "layer": 1, "model": 2}
    pass_order = {"fwd": 0, "fwdbwd": 1}
    rows.sort(key=lambda r: (level_order.get(r["level"], 9), pass_order.get(r["pass"], 9),
                             int(r["seq_len"]), r["method"]))
    tmp = final.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, "") for c in COLUMNS})
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(final)
    parts_dir = run_dir / PARTS_DIR
    if parts_dir.is_dir():
        for part in parts_dir.glob("timings.rank*.csv"):
            part.unlink()
        try:
            parts_dir.rmdir()
        except OSError:
            pass
    return final


__all__ = ["CSV_NAME", "RowWriter", "read_rows", "read_header", "finished_rows", "merge_parts", "part_path",
           "KEY_COLUMNS"]

"""The one markdown table renderer of the suite (summaries, the results page, the regression gate).

Cells are text: a "|" inside a cell is escaped and line breaks become spaces, so any text is safe
in a cell. Columns are not padded (a rendered table does not need it, and the files stay small).
"""
from __future__ import annotations

from typing import Any, Sequence


def cell(value: Any) -> str:
    """Text safe inside a markdown table cell."""
    return " ".join(str(value).split()).replace("|", "\\|")


def table(headers: Sequence[Any], rows: Sequence[Sequence[Any]]) -> list[str]:
    """Lines of a pipe table; short rows are padded with empty cells."""
    head = [cell(h) for h in headers]
    body = [[cell(v) for v in row] + [""] * (len(head) - len(row)) for row in rows]
    line = lambda cells: "| " + " | ".join(cells) + " |"  # noqa: E731
    return [line(head), "|" + "---|" * len(head)] + [line(r) for r in body]


def frame_table(df, index: bool = False) -> str:
    """A pandas frame as one markdown string (the index as the first column when `index`)."""
    headers = ([df.index.name or ""] if index else []) + [str(c) for c in df.columns]
    rows = [([i] if index else []) + list(r) for i, r in zip(df.index, df.itertuples(index=False))]
    return "\n".join(table(headers, rows))

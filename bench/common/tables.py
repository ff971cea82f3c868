"""The suite's one markdown table renderer: any text is safe in a cell; columns are not padded."""
from __future__ import annotations

from typing import Any, Sequence

from bench.common.cli import squash


def table(headers: Sequence[Any], rows: Sequence[Sequence[Any]]) -> list[str]:
    """Lines of a pipe table ("|" escaped, line breaks as spaces); short rows are padded with empty cells."""
    width = len(headers)
    cells = [[squash(v).replace("|", "\\|") for v in row] + [""] * (width - len(row))
             for row in [headers, *rows]]
    lines = ["| " + " | ".join(r) + " |" for r in cells]
    return [lines[0], "|" + "---|" * width] + lines[1:]


def frame_table(df, index: bool = False) -> str:
    """A pandas frame as one markdown string (the index as the first column when `index`)."""
    headers = ([df.index.name or ""] if index else []) + [str(c) for c in df.columns]
    rows = [([i] if index else []) + list(r) for i, r in zip(df.index, df.itertuples(index=False))]
    return "\n".join(table(headers, rows))

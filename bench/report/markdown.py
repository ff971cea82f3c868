"""Text surgery on a run's summary.md before it goes into results/README.md.

Works line by line and leaves fenced code blocks (``` or ~~~) alone:
- demote(lines, 2): "# T" -> "### T" (capped at level 6);
- rewrite_links(lines, run): "[a](plots/x.png)" -> "[a](runs/<run>/plots/x.png)" for relative targets;
- add_provenance(lines, text): a markdown table is a run of consecutive lines starting with "|";
  after each one a blank line and `text` are inserted.
"""
from __future__ import annotations

import posixpath
import re
from typing import Callable, Iterable

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})(\s)")
LINK = re.compile(r"(!?\[[^\]]*\]\()(<[^>]*>|[^)\s]+)((?:\s+\"[^\"]*\")?\))")
ABSOLUTE = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*:|/|#)")


def _outside_fences(lines: list[str]) -> Iterable[tuple[int, bool]]:
    """(index, outside a code fence) for every line; fence lines themselves count as inside."""
    inside = False
    for i, line in enumerate(lines):
        if FENCE.match(line):
            inside = not inside
            yield i, False
        else:
            yield i, not inside


def demote(lines: list[str], by: int = 2) -> list[str]:
    out = list(lines)
    for i, ok in _outside_fences(out):
        m = HEADING.match(out[i]) if ok else None
        if m:
            level = min(6, len(m.group(1)) + by)
            out[i] = "#" * level + out[i][len(m.group(1)):]
    return out


def relink(target: str, prefix: str) -> str:
    """A link target relative to a run folder, made relative to the README (prefix = runs/<run>)."""
    bracketed = target.startswith("<") and target.endswith(">")
    bare = target[1:-1] if bracketed else target
    if not bare or ABSOLUTE.match(bare):
        return target
    path, hash_, frag = bare.partition("#")
    new = posixpath.normpath(posixpath.join(prefix, path)) + hash_ + frag
    return f"<{new}>" if bracketed else new


def rewrite_links(lines: list[str], prefix: str) -> list[str]:
    out = list(lines)
    for i, ok in _outside_fences(out):
        if ok and "](" in out[i]:
            out[i] = _sub_outside_code(out[i], lambda s: LINK.sub(lambda m: m.group(1) + relink(m.group(2), prefix) + m.group(3), s))
    return out


def _sub_outside_code(line: str, fn: Callable[[str], str]) -> str:
    """Apply fn to the parts of a line outside inline `code` spans."""
    parts = re.split(r"(`+[^`]*`+)", line)
    return "".join(p if p.startswith("`") else fn(p) for p in parts)


def is_table_line(line: str) -> bool:
    return line.lstrip().startswith("|")


def add_provenance(lines: list[str], text: str) -> list[str]:
    out: list[str] = []
    flags = dict(_outside_fences(lines))
    for i, line in enumerate(lines):
        out.append(line)
        in_table = flags[i] and is_table_line(line)
        next_in_table = i + 1 < len(lines) and flags[i + 1] and is_table_line(lines[i + 1])
        if in_table and not next_in_table:
            out += ["", text]
            if i + 1 < len(lines) and lines[i + 1].strip():
                out.append("")
    return out


def cell(value: object) -> str:
    """Text safe inside a markdown table cell."""
    return " ".join(str(value).split()).replace("|", "\\|")


def table(headers: list[str], rows: list[list[object]]) -> list[str]:
    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return lines

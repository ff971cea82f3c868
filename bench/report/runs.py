"""Run folders for the report: kind detection, env.json, the machine and command of a run, and summary regeneration."""
from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common.cli import UsageError, one_line, squash
from bench.common.files import in_use, read_json, read_table
from bench.quality.sweep import planned

# kind -> the CSV every number of that kind comes from; the order is the detection order
KIND_CSV = {"scaling": "timings.csv", "quality": "final.csv", "diagnostics": "diagnostics.csv"}

# kind -> (module, function(run_dir, plots)) that rewrites summary.md (and plots/ when asked) from the run folder
WRITERS = {"scaling": ("bench.scaling.summary", "write_summary"), "quality": ("bench.quality.report", "write_report"),
           "diagnostics": ("bench.diagnostics.__main__", "write_summary")}


@dataclass
class Run:
    path: Path  # resolved run folder
    kind: str  # scaling | quality | diagnostics
    rel: str  # the folder relative to the README's folder, posix style ("runs/<run>")
    env: dict[str, Any] = field(default_factory=dict)


def load_runs(paths: list[str], base: Path, summaries: bool = False) -> list[Run]:
    """Check every folder (with `summaries`, that it holds the summary.md the page links) before anything is
    written; raise UsageError naming the first bad one."""
    base = base.resolve()
    runs: dict[Path, Run] = {}  # by resolved folder: a folder given twice is one run
    for text in paths:
        if not Path(text).exists():
            raise UsageError(f"run folder {text!r} does not exist")
        if not Path(text).is_dir():
            raise UsageError(f"{text!r} is not a folder (expected a run folder such as results/runs/<run>)")
        if (path := Path(text).resolve()) in runs:
            continue
        kind = next((kind for kind, csv in KIND_CSV.items() if (path / csv).is_file()), None)
        if kind is None:
            raise UsageError(f"{text!r} is not a run folder of a known kind: it holds none of "
                             + ", ".join(f"{csv} ({kind})" for kind, csv in KIND_CSV.items()))
        if not path.is_relative_to(base):
            raise UsageError(f"run folder {text!r} is not under {str(base)!r}, the folder of --out, so the README "
                             f"could not link its files; nothing was copied or written: move or copy it under "
                             f"{str(base / 'runs')!r} first (or choose --out inside a folder that holds it)")
        rel = path.relative_to(base).as_posix()
        if rel == ".":
            raise UsageError(f"run folder {text!r} is the README's own folder; put runs in a subfolder (runs/<run>)")
        if (pid := in_use(path)) is not None:
            raise UsageError(f"run folder {text!r} is still being written (pid {pid}); report it once that run ends")
        for name in (*KIND_CSV.values(), "curves.csv"):
            read_table(path / name)  # refuses a cut or damaged file: no number from a cut row may reach the page
        if summaries and not (path / "summary.md").is_file():
            raise UsageError(f"run folder {text!r} has no summary.md for the page to link, and --no-regenerate "
                             "keeps it from being written; drop --no-regenerate")
        if not (path / "env.json").is_file():
            raise UsageError(f"run folder {text!r} has no env.json, which every run writes (the page names each "
                             "run's machine, command and commit from it); copy the run folder whole")
        env = read_json(path / "env.json")
        if kind == "quality":
            planned(env, str(Path(text) / "env.json"))  # the seeds and LRs the page reads must be numbers
        runs[path] = Run(path=path, kind=kind, rel=rel, env=env)
    return list(runs.values())


def code(text: str) -> str:
    """Inline code that survives backticks and table pipes inside the text."""
    text = squash(text)
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def regenerate(run: Run, plots: bool = True) -> None:
    """Rewrite run/summary.md (and plots/ when `plots`) from the run's CSV with its harness's writer. A writer
    that fails on a readable run is a warning on stderr, its summary.md kept; bad input (UsageError) propagates."""
    module_name, name = WRITERS[run.kind]
    try:
        getattr(importlib.import_module(module_name), name)(run.path, plots=plots)
    except UsageError:
        raise
    except Exception as exc:  # a harness bug must not lose the other runs' sections
        print(f"bench.report: warning: {run.rel}: summary.md could not be regenerated ({one_line(exc, named=True)})",
              file=sys.stderr)

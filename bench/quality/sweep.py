"""Which jobs (method, seed, peak LR) a quality run trains, and which LR each method keeps: with --lr-sweep, every
LR at the first seed (stage 1), then the other seeds at the kept LR (stage 2); docs/quality.md, "Learning rates:
tuned and untuned"."""
from __future__ import annotations

import math
from contextlib import suppress
from pathlib import Path
from typing import Iterator

from bench.common.cli import UsageError, is_count
from bench.common.files import read_table
from bench.quality.schema import is_job, lr_of, same_lr


class NoStableLR(Exception):
    """Every LR of the sweep diverged (or ran out of memory) for a method (exit 3)."""


def _val(row: dict) -> float:
    """The loss an LR is chosen by; a job that diverged or ran out of memory never wins, whatever it validated
    before."""
    return math.inf if diverged(row) or ran_out(row) else float(row["best_val_loss"])


def diverged(row: dict) -> bool:
    """The job has no finite validation or test loss: stopped by --max-nonfinite (after its first evaluations it
    keeps a finite best_val_loss, never a test result) or never validated."""
    return not all(math.isfinite(float(row.get(k) or "nan")) for k in ("best_val_loss", "test_loss"))


def ran_out(row: dict) -> bool:
    """The job ran out of memory: its row has no test result to report (an older final.csv has no oom column)."""
    return row.get("oom") == "1"


def _seed_rows(finished: list[dict], method: str, seed: int, lrs: list[float]) -> dict[float, dict]:
    """{lr: row} of `method` at `seed` for the LRs of `lrs` that have a row."""
    return {lr: r for lr in lrs for r in finished if is_job(r, method, seed, lr)}


def _best(got: dict[float, dict]) -> float:
    """The LR whose row has the lowest best validation loss (NaN never wins; a tie keeps the smaller LR)."""
    return min(got, key=lambda lr: (_val(got[lr]), lr))


def choose(finished: list[dict], method: str, seed: int, lrs: list[float]) -> float | None:
    """The kept LR of `method` from its stage-1 rows at `seed`; None while one of them is missing.
    Without a sweep the one LR is kept whatever its row says: there is nothing to choose from."""
    if len(lrs) == 1:
        return lrs[0]
    got = _seed_rows(finished, method, seed, lrs)
    if len(got) < len(lrs):
        return None
    best = _best(got)
    if _val(got[best]) == math.inf:
        raise NoStableLR(f"{method}: every learning rate of the sweep ({', '.join(f'{lr:g}' for lr in lrs)}) "
                         "diverged, ran out of memory or never validated (final.csv has their rows); try smaller "
                         "values, or smaller sizes in a new --out where they ran out of memory")
    return best


def is_done(finished: list[dict], method: str, seed: int, lr: float) -> bool:
    return any(is_job(r, method, seed, lr) for r in finished)


def planned_jobs(settings, methods: dict, finished: list[dict]) -> list[tuple[str, int, float]]:
    """The unfinished jobs known now: stage 1, and stage 2 for the methods whose LR is already chosen."""
    first, lrs = settings.seeds[0], settings.lrs
    kept = {}
    for m in methods:
        with suppress(NoStableLR):
            kept[m] = choose(finished, m, first, lrs)
    known = ([(m, first, lr) for lr in lrs for m in methods]
             + [(m, seed, kept[m]) for seed in settings.seeds[1:] for m in methods if kept.get(m) is not None])
    return [job for job in known if not is_done(finished, *job)]


def jobs(settings, methods: dict, final_path: Path) -> Iterator[tuple[str, int, float]]:
    """The jobs still to train, in order; stage 2 is decided from final.csv once stage 1 is in it."""
    first, lrs = settings.seeds[0], settings.lrs
    yield from _undone(final_path, [(m, first, lr) for lr in lrs for m in methods])
    finished = read_table(final_path, cut="drop")
    kept = {m: choose(finished, m, first, lrs) for m in methods}
    undecided = [m for m, lr in kept.items() if lr is None]
    if settings.seeds[1:] and undecided:  # every stage-1 job has a row by now: one missing is a bug, not a skip
        raise RuntimeError(f"no kept LR for {', '.join(undecided)}: {final_path} lacks stage-1 rows at seed {first}")
    yield from _undone(final_path, [(m, seed, kept[m]) for seed in settings.seeds[1:] for m in methods])


def _undone(final_path: Path, planned: list[tuple[str, int, float]]) -> Iterator[tuple[str, int, float]]:
    for job in planned:  # final.csv is read again before each job: the previous one has just been added
        if not is_done(read_table(final_path, cut="drop"), *job):
            yield job


def tuned_rows(finals: list[dict], first_seed: int | None = None) -> dict[str, dict[int, dict]]:
    """{method: {seed: row}} at each method's kept LR (all rows when a method has one LR); jobs that ran out of memory
    are left out (the summary lists them), so a method whose every job did is not measured."""
    out: dict[str, dict[int, dict]] = {}
    finals = [r for r in finals if not ran_out(r)]
    for m in dict.fromkeys(r["method"] for r in finals):
        rows = [r for r in finals if r["method"] == m]
        lrs = sorted({lr_of(r) for r in rows if not math.isnan(lr_of(r))})
        if len(lrs) > 1:
            seed = first_seed if first_seed is not None else min(int(float(r["seed"])) for r in rows)
            kept = _best(_seed_rows(rows, m, seed, lrs) or {lr: {} for lr in lrs})
            rows = [r for r in rows if same_lr(lr_of(r), kept)]
        out[m] = {int(float(r["seed"])): r for r in rows}
    return out


def rows_at(finals: list[dict], lr: float) -> dict[str, dict[int, dict]]:
    """{method: {seed: row}} of the jobs at one peak LR (rows without the column count as `lr`), as tuned_rows
    without the jobs that ran out of memory."""
    out: dict[str, dict[int, dict]] = {}
    for r in finals:
        if same_lr(lr_of(r, lr), lr) and not ran_out(r):
            out.setdefault(r["method"], {})[int(float(r["seed"]))] = r
    return out


def first_seed(env: dict) -> int | None:
    """The seed a run sweeps its LRs at (the first of --seeds), from its env.json."""
    seeds = planned(env)[0]
    return seeds[0] if seeds else None


def planned(env: dict, name: str = "env.json") -> tuple[list[int], list[float], list[str]]:
    """(seeds, peak LRs, methods) a quality run planned, from its env.json (empty where an older one lacks the
    field); UsageError naming `name` and the field whose value is not what bench.quality writes there."""
    st = env.get("settings") or {}
    lr = (st.get("preset") or {}).get("lr")
    fields = {"seeds": st.get("seeds") or [], "lr_sweep": st.get("lr_sweep") or [],
              "preset.lr": [] if lr is None else [lr]}
    for field, values in fields.items():
        if not isinstance(values, list):
            raise UsageError(f"{name}: settings.{field} is {values!r}, not a list; restore the env.json the run wrote")
        for v in values:
            if not (is_count(v) if field == "seeds" else is_count(v, whole=False) and 0 < v < math.inf):
                want = "an integer seed from 0" if field == "seeds" else "a positive finite learning rate"
                raise UsageError(f"{name}: settings.{field} holds {v!r}, not {want}; restore the env.json the run "
                                 "wrote")
    return fields["seeds"], sorted({*fields["preset.lr"], *fields["lr_sweep"]}), list(env.get("methods") or {})


def jobs_done(env: dict, finals: list[dict]) -> tuple[int, int]:
    """(planned jobs with a row, planned jobs) of a quality run: each method at every LR at the first seed, then
    once at each other seed (at its kept LR); (0, 0) where env.json does not say the plan."""
    seeds, lrs, methods = planned(env)
    if not (seeds and lrs and methods):
        return 0, 0
    seed_rows = {(r["method"], int(float(r["seed"]))) for r in finals}
    done = sum(is_done(finals, m, seeds[0], lr) for m in methods for lr in lrs)
    done += sum((m, seed) in seed_rows for m in methods for seed in seeds[1:])
    return done, len(methods) * (len(lrs) + len(seeds) - 1)

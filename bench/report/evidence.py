"""The numbers behind results/README.md, read from the committed CSVs of the chosen run folders. A number
measured by several runs of one setup (device, dtype, B, H, d, CPU threads, field stride, at model level the LM's
layers and width) is their min-max, never the best."""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field

import pandas as pd

from bench.common.env import env_get
from bench.common.files import read_table
from bench.common.timings import aggregate, fmt, load_timings
from bench.diagnostics.__main__ import run_settings
from bench.quality.analysis import convergence, equal_wall
from bench.quality.schema import lr_of, planned_tokens
from bench.quality.stats import paired_ratios
from bench.quality.sweep import first_seed, jobs_done, rows_at, tuned_rows
from bench.report.runs import Run

SHA_FOLDER = re.compile(r"_([0-9a-f]{7,40})$")
BPE_CLAIM_VOCAB = 8000  # V3.5's BPE-8K (bench/scaling/claims.py): a run within 10% of it answers that claim
EMPTY_CELL_COLUMNS = ["run", "commit", "setup", "gpu", "device", "dtype", "level", "pass", "method", "seq_len",
                      "status", "reason", "median_ms", "peak_mem_mb", "reps"]


def commit(run: Run) -> str:
    """The commit whose code a run measured: that of a session folder <date>-<machine>_<sha> above the run (a
    device machine's env.json holds the sha of the copy it made), else env.json's sha; '+dirty' when env.json says
    the tree had uncommitted changes (the numbers are not that commit's)."""
    dirty = "+dirty" if (run.env.get("git") or {}).get("dirty") is True else ""
    for parent in run.path.parents:
        if parent.name in ("runs", "results"):
            break
        if m := SHA_FOLDER.search(parent.name):
            return m.group(1)[:7] + dirty
    return str(env_get(run.env, "sha_short", default="unknown"))[:7] + dirty


def setup_label(run: Run, row: dict) -> str:
    """'CPU fp32 B=1, 2 threads' or 'H200 bf16 B=8': where and how a cell was measured."""
    dtype = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}.get(row["dtype"], row["dtype"])
    batch = f"B={int(row['batch'])}" if pd.notna(row["batch"]) else ""
    if str(row["device"]).startswith("cuda"):
        gpus = [g for g in run.env.get("gpus") or [] if isinstance(g, dict)]
        name = str(gpus[0].get("name", "GPU")).replace("NVIDIA ", "") if gpus else "GPU"
        return " ".join(filter(None, (name, dtype, batch)))  # a file without dtype or batch: no empty words
    threads = run.env.get("torch_threads")
    return " ".join(filter(None, ("CPU", dtype, batch))) + (f", {threads} thread{'s' * (threads != 1)}" * bool(threads))


def scaling_cells(runs: list[Run]) -> pd.DataFrame:
    """Aggregated cells of every scaling run, with run, commit, setup and device columns."""
    frames = []
    for run in (r for r in runs if r.kind == "scaling"):
        cells = aggregate(load_timings(run.path, cut="error"))
        if not cells.empty:
            cells["run"], cells["commit"] = run.rel, commit(run)
            cells["setup"] = [setup_label(run, r) for r in cells.to_dict("records")]
            cells["gpu"] = cells["device"].str.startswith("cuda")
            sweep = run.env.get("sweep") or {}  # a run's field stride and LM size (not in timings.csv's config)
            stride = sweep.get("field_stride")
            cells["stride"] = f"stride {stride:g}" if isinstance(stride, (int, float)) else "stride ?"
            cells["lm"] = f"LM L={sweep.get('model_layers', '?')} D={sweep.get('model_dim', '?')}"
            frames.append(cells)
    if not frames:  # without scaling runs: no rows, but the columns the sections select on
        return pd.DataFrame(columns=EMPTY_CELL_COLUMNS)
    cells = pd.concat(frames, ignore_index=True)
    # runs of one label at other heads / head widths, field strides or (model level) LM sizes are other setups:
    # where a level has several, say which
    shape = cells["config"].str.findall(r"\b[Hd]=\S+").str.join(" ")
    for part in (shape, cells["stride"], cells["lm"].where(cells["level"] == "model", "")):
        mixed = part.groupby([cells["setup"], cells["level"]]).transform("nunique") > 1
        cells.loc[mixed, "setup"] += ", " + part[mixed]
    return cells


@dataclass
class RunRange:
    """One quantity over the runs of one setup: values per run, shown as min-max; `once`: a time in a value came
    from a single timed repetition (reps 1), not a median."""
    values: list[float] = field(default_factory=list)
    commits: list[str] = field(default_factory=list)
    once: bool = False

    def add(self, value: float, sha: str, once: bool = False) -> None:
        if math.isfinite(value):
            self.values.append(value)
            self.commits.append(sha)
            self.once |= once

    def __bool__(self) -> bool:
        return bool(self.values)

    def text(self, unit: str = "") -> str:
        lo, hi = fmt(min(self.values)), fmt(max(self.values))
        runs = f" ({len(self.values)} runs)" if len(self.values) > 1 else ""
        return (lo if lo == hi else f"{lo}-{hi}") + unit + runs + (" (1 rep)" if self.once else "")

    def commits_text(self) -> str:
        return ", ".join(dict.fromkeys(self.commits))


def ratio(cells: pd.DataFrame, level: str, pas: str, n: int, num: str, den: str | None = None,
          col: str = "median_ms") -> dict[str, RunRange]:
    """setup -> spread over runs of cells[num] / cells[den] (or cells[num]) in `col` at one (level, pass, N); a time
    of one repetition marks its range (RunRange.once)."""
    ok = cells[(cells["level"] == level) & (cells["pass"] == pas) & (cells["seq_len"] == n) & (cells["status"] == "ok")]
    out: dict[str, RunRange] = {}
    for (setup, _), g in ok.groupby(["setup", "run"], sort=False):
        by, reps = g.set_index("method")[col], g.set_index("method")["reps"]
        used = [m for m in (num, den) if m is not None]
        if all(m in by.index for m in used):
            once = col == "median_ms" and any(reps[m] == 1 for m in used)
            out.setdefault(setup, RunRange()).add(float(by[num] / (by[den] if den else 1)), g["commit"].iloc[0], once)
    return out


def quality(run: Run) -> dict:
    """A quality run's wave / standard gap (standard-matched where the run has no standard): per-seed test PPL ratios
    at the kept LRs, at --lr when it swept, at equal wall-clock, convergence verdicts and the setting ('char, seq
    128, D=192 L=4 (cpu-small), ...'); a run that cannot be compared gives its setting and `why` only."""
    env, finals = run.env, read_table(run.path / "final.csv",
                                      required=("method", "seed", "test_ppl", "test_acc", "params"))
    p = (env.get("settings") or {}).get("preset") or {}
    tok, ref_lr = env.get("tokenizer") or {}, p.get("lr", math.nan)
    tokens = planned_tokens(env)
    (label, kind), device = tokenizer(tok), "GPU" if on_gpu(run) else "CPU"
    by = tuned_rows(finals, first_seed(env))
    base = next((b for b in ("standard", "standard-matched") if b in by), None)
    setting = (f"{label}, seq {p.get('seq_len')}, "
               f"D={p.get('d_model')} L={p.get('n_layers')} ({env.get('preset') or '?'}), {tokens / 1e6:.1f}M tokens, "
               f"{device}{'' if base in ('standard', None) else ', vs ' + base}")
    done, planned = jobs_done(env, finals)
    if done < planned:  # a sweep cut short may not have chosen its LRs yet: no verdict from it
        return {"setting": setting, "why": f"incomplete: {done} of the {planned} jobs its env.json plans have a row in "
                "final.csv"}
    if "wave" not in by or base is None:
        return {"setting": setting, "why": f"no finished wave and standard (or standard-matched) jobs to compare "
                f"(methods with a test result: {', '.join(by) or 'none'})"}
    w, s, abl = by["wave"], by[base], by.get("wave-scaled-pos")
    seeds = sorted(set(w) & set(s))
    if not seeds:
        return {"setting": setting, "why": f"wave and {base} share no seed with a test result (jobs out of memory "
                "are left out: its summary lists them)"}
    first = {m: next(iter(rows.values())) for m, rows in by.items()}

    def ratio(a: dict, b: dict) -> list[float]:  # per-seed test PPL of a over b
        return paired_ratios({k: float(r["test_ppl"] or "nan") for k, r in a.items()},
                             {k: float(r["test_ppl"] or "nan") for k, r in b.items()})

    ref = rows_at(finals, ref_lr)
    lrs = {m: [lr_of(r) for r in finals if r["method"] == m and r.get("peak_lr")] for m in ("wave", base)}
    swept = len({lr_of(r) for r in finals if r.get("peak_lr")}) > 1
    curves = read_table(run.path / "curves.csv", cut="drop")
    wall, wall_s = equal_wall(curves, w, s)
    return {"seeds": seeds, "ppl_ratio": ratio(w, s),
            "ablation": {"vs_standard": ratio(abl, s), "vs_wave": ratio(abl, w),
                         "lr": lr_of(first["wave-scaled-pos"])} if abl else None,
            "untuned": ratio(ref.get("wave", {}), ref.get(base, {})) if swept else None,
            "lr": {m: lr_of(first[m], ref_lr) for m in ("wave", base)},
            "edge": [m for m in ("wave", base) if swept and lr_of(first[m]) in (min(lrs[m]), max(lrs[m]))],
            "ref_lr": ref_lr, "wall": wall, "wall_s": wall_s,
            "verdicts": Counter(convergence(curves, r["method"], k, lr_of(r, ref_lr), r).verdict
                                for rows in (w, s) for k, r in rows.items()),
            "wave_acc": [100 * float(w[k]["test_acc"] or "nan") for k in seeds],
            "std_acc": [100 * float(s[k]["test_acc"] or "nan") for k in seeds],
            "tokens_per_param": tokens / float(first["wave"]["params"] or "nan"), "setting": setting, "tokenizer": kind,
            "device": device}


def tokenizer(tok: dict) -> tuple[str, str]:
    """(label, claim key) of a run's tokenizer: ('char', 'char'), ('bpe 8K', 'bpe'); another BPE vocabulary is
    named exactly ('bpe V=300') and answers no published claim (its key is its label)."""
    kind, vocab = tok.get("kind"), tok.get("vocab_size")
    if kind != "bpe":
        return kind, kind
    label = f"bpe {vocab // 1000}K" if isinstance(vocab, int) and vocab % 1000 == 0 else f"bpe V={vocab}"
    near = isinstance(vocab, int) and abs(vocab / BPE_CLAIM_VOCAB - 1) <= 0.1
    return label, ("bpe" if near else label)


def on_gpu(run: Run) -> bool:
    return str(run.env.get("device") or "").startswith("cuda")


def trained(run: Run) -> bool:
    """A diagnostics run of a trained checkpoint (not of a randomly initialised model)."""
    return ("--checkpoint" in [str(a) for a in run.env.get("argv") or []]
            or str(run.env.get("model", "")).startswith("checkpoint"))


def diagnostics(run: Run) -> tuple[dict, dict]:
    """(role counts and largest reach in tokens, causality verdict counts and leak demonstrations shown / run)."""
    rows = read_table(run.path / "diagnostics.csv", required=("check", "quantity", "value", "verdict"))
    heads = [r for r in rows if r["check"] == "heads"]
    roles = [r["quantity"].split(":", 1)[1] for r in heads if r["quantity"].startswith("role:")]
    reach = [float(r["value"] or "nan") for r in heads if r["quantity"] == "reach_tokens"]
    reach = [v for v in reach if not math.isnan(v)]  # empty or NaN: not measured (max() of a NaN is order-bound)
    probes = Counter(r["verdict"] for r in rows if r["check"] in ("causality", "causality_reference", "stride_guard"))
    return ({"heads": len(roles), **{role: roles.count(role) for role in ("local", "medium", "long-range")},
             "max_reach": max(reach) if reach else math.nan},
            {"pass": probes["PASS"], "fail": probes["FAIL"],
             "leaks": sum(r["check"] == "leak_demo" and r["verdict"] == "EXPECTED-LEAK" for r in rows),
             "demos": sum(r["check"] == "leak_demo" and r["quantity"] == "max_score" for r in rows)})


def probe_settings(run: Run) -> tuple[tuple[float, float] | None, str]:
    """(role thresholds local, long-range in tokens; probe dtype) of a diagnostics run, as its env.json recorded them
    (an older one's command line read with today's defaults); (None, 'unknown') where neither says."""
    try:
        s = run_settings(run.env)
        lo, hi = (float(t) for t in s["role_thresholds"])
    except (KeyError, TypeError, ValueError):  # no argv, or a command line or settings that no longer read
        return None, "unknown"
    return (lo, hi), str(s["probe_dtype"])


def param_counts(vocab: int = 1000) -> dict[str, int]:
    """Parameters of the paper-char wave and standard LMs at their ~1k-entry 'character' vocabulary."""
    from bench.quality.methods import resolve_methods
    from bench.quality.presets import PRESETS

    return {m: v["params"] for m, v in resolve_methods(["wave", "standard"], PRESETS["paper-char"], vocab).items()}

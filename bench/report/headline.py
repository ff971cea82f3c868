"""'What reproduces and what does not': the published claims beside numbers read from the CSVs.

Speed: the published advantage (31x / 107x / 367x at N = 2K / 8K / 32K, an operation-count table)
against the measured core-level forward speedup of `wave` over softmax-sdpa, softmax-naive and the
fastest fused softmax kernel: rows of timings.csv with level core, pass fwd, status ok, median_ms.
Quality: the published wave / standard perplexity ratio (char level 6.2 / 5.9 = 1.05; BPE 8K
170.7 / 91.4 = 1.87) against the per-method test_ppl of final.csv.
"""
from __future__ import annotations

import math
import re

import pandas as pd

from bench.report import markdown as md
from bench.report.runs import Run, provenance

PUBLISHED_ADVANTAGE = {2048: 31.0, 8192: 107.0, 32768: 367.0}  # SPEC.md section 5 (bench/scaling/claims.py)
PUBLISHED_PPL = {  # tokenizer kind -> (wave PPL, standard PPL, setup), SPEC.md section 5
    "char": (6.2, 5.9, "V3.5 char-level WikiText-2, 30 epochs"),
    "bpe": (170.7, 91.4, "V3.5 BPE 8K WikiText-2, seq 256, 30 epochs"),
}
SOFTMAX_BASELINES = ("softmax-sdpa", "softmax-naive")
FUSED = re.compile(r"^softmax-(sdpa|flash-attn)")


def _num(x: float) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.1f}" if abs(x) >= 10 else f"{x:.2f}" if abs(x) >= 1 else f"{x:.3g}"


# ---------------------------------------------------------------------------------------------
# speed


def _core_fwd(run: Run) -> pd.DataFrame:
    """Aggregated core/fwd cells of a scaling run (the scaling summary's loader: statuses
    normalised, repeated keys and ranks resolved the same way as in summary.md)."""
    from bench.scaling.summary import aggregate, load_timings

    cells = aggregate(load_timings(run.path))
    if cells.empty:
        return cells
    return cells[(cells["level"] == "core") & (cells["pass"] == "fwd")]


def _why_not(row: pd.Series | None, method: str) -> str:
    if row is None:
        return f"{method}: no row"
    reason = f", {row['reason']}" if row["reason"] else ""
    return f"{method} {row['status']}{reason}"


def speed_rows(run: Run) -> list[list[str]]:
    """One row per (config, claim length) of one scaling run."""
    core = _core_fwd(run)
    rows = []
    for config in sorted(core["config"].unique()) if len(core) else []:
        sub = core[core["config"] == config]
        if not sub["seq_len"].isin(list(PUBLISHED_ADVANTAGE)).any():
            continue  # this configuration never reached a claim length (e.g. a --quick or a long-only sweep)
        for n, pub in PUBLISHED_ADVANTAGE.items():
            at = {r["method"]: r for _, r in sub[sub["seq_len"] == n].iterrows()}
            wave = at.get("wave")
            wave_ok = wave is not None and wave["status"] == "ok"
            cols, measured = [], {}
            for base in SOFTMAX_BASELINES:
                soft = at.get(base)
                if wave_ok and soft is not None and soft["status"] == "ok":
                    measured[base] = soft["median_ms"] / wave["median_ms"]
                    cols.append(f"{_num(measured[base])}x ({_num(soft['median_ms'])} / {_num(wave['median_ms'])} ms)")
                else:
                    bad = [w for w in (None if wave_ok else _why_not(wave, "wave"),
                                       None if soft is not None and soft["status"] == "ok" else _why_not(soft, base)) if w]
                    cols.append(f"not measured ({'; '.join(bad)})")
            fused = [r for m, r in at.items() if FUSED.match(m) and r["status"] == "ok"]
            if wave_ok and fused:
                best = min(fused, key=lambda r: r["median_ms"])
                measured["fused"] = best["median_ms"] / wave["median_ms"]
                cols.append(f"{_num(measured['fused'])}x ({best['method']})")
            else:
                cols.append("not measured (" + (_why_not(wave, "wave") if not wave_ok else "no ok fused softmax row") + ")")
            strongest = measured.get("fused", measured.get("softmax-naive"))
            if strongest is None:
                reading = "not measured"
            elif strongest >= pub:
                reading = f"reproduces: measured {_num(strongest)}x >= published {pub:.0f}x"
            else:
                reading = f"does not reproduce: published is {_num(pub / strongest)}x the measured {_num(strongest)}x"
            rows.append([run.rel, config, str(n), f"{pub:.0f}x",
                         _num(wave["median_ms"]) if wave_ok else _why_not(wave, "wave"), *cols, reading])
    return rows


SPEED_HEADERS = ["run", "config", "N", "published", "wave ms (core fwd)", "measured vs softmax-sdpa",
                 "measured vs softmax-naive", "measured vs fastest fused softmax", "reading (vs the strongest softmax)"]


def speed_section(runs: list[Run]) -> list[str]:
    lines = ["### Speed: the published advantage vs the measured speedup", "",
             "Published: 31x / 107x / 367x at N = 2K / 8K / 32K, from an operation-count table (standard 512 n^2 "
             "vs wave about 3000 n log2 n), not from timings. Measured: softmax median ms / wave median ms at the "
             "core level, forward pass, causal, at exactly that N (> 1x: wave is faster); the strongest softmax is "
             "the fastest fused kernel (SDPA or flash-attn), else the naive one.", ""]
    scaling = [r for r in runs if r.kind == "scaling"]
    rows, sources = [], []
    for run in scaling:
        got = speed_rows(run)
        if got:
            rows += got
            sources.append(provenance(run) + " (rows: level core, pass fwd, status ok, median_ms)")
    if not rows:
        why = ("no scaling run has core fwd rows at N = 2048, 8192 or 32768 (checked: "
               + ", ".join(r.csv_rel for r in scaling) + ")") if scaling else "no scaling run was given to bench.report"
        rows = [["(none)", "", str(n), f"{p:.0f}x", "not measured", "not measured", "not measured",
                 "not measured", "not measured"] for n, p in PUBLISHED_ADVANTAGE.items()]
        return lines + md.table(SPEED_HEADERS, rows) + ["", f"Source: none ({why})", ""]
    return lines + md.table(SPEED_HEADERS, rows) + [""] + [s for src in sources for s in (src, "")]


# ---------------------------------------------------------------------------------------------
# quality


def _final(run: Run) -> pd.DataFrame:
    try:
        df = pd.read_csv(run.csv)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError):
        return pd.DataFrame(columns=["method", "seed", "test_ppl", "test_batch_mean_ppl"])
    for col in ("seed", "test_ppl", "test_batch_mean_ppl"):
        df[col] = pd.to_numeric(df[col], errors="coerce") if col in df else math.nan
    if "method" not in df:
        df["method"] = ""
    return df[df["method"].notna() & df["seed"].notna()]


def _setup(env: dict) -> tuple[str, str]:
    """(tokenizer kind, a one-line description of the run's setup) from a quality run's env.json."""
    settings = env.get("settings") if isinstance(env.get("settings"), dict) else {}
    preset = settings.get("preset") if isinstance(settings.get("preset"), dict) else {}
    tok = env.get("tokenizer") if isinstance(env.get("tokenizer"), dict) else {}
    corpus = env.get("corpus") if isinstance(env.get("corpus"), dict) else {}
    plan = env.get("plan") if isinstance(env.get("plan"), dict) else {}
    kind = str(tok.get("kind") or preset.get("tokenizer") or "char")
    name = env.get("preset") or preset.get("name") or "?"
    bits = [f"preset {name}", f"corpus {corpus.get('name') or preset.get('corpus') or '?'}",
            f"{kind} tokenizer" + (f" V={tok['vocab_size']}" if tok.get("vocab_size") else "")]
    if plan.get("total_steps"):
        epochs = env.get("epochs_covered")
        bits.append(f"{plan['total_steps']} steps" + (f" ({float(epochs):.2f} epochs)" if epochs is not None else ""))
    return kind, ", ".join(bits)


def quality_rows(run: Run) -> list[list[str]]:
    df = _final(run)
    kind, setup = _setup(run.env)
    pub_w, pub_s, pub_setup = PUBLISHED_PPL.get(kind, PUBLISHED_PPL["char"])
    by = {m: g.drop_duplicates("seed", keep="last").set_index("seed") for m, g in df.groupby("method")}
    rows = []
    for base in ("standard", "standard-matched"):
        published = f"{pub_w} / {pub_s} = {pub_w / pub_s:.2f} ({pub_setup})" if base == "standard" else \
            f"none (the paper had no parameter-matched baseline; its wave / standard was {pub_w / pub_s:.2f})"
        if base == "standard-matched" and base not in by:
            continue  # a run with the paper pairing only
        if "wave" not in by or base not in by:
            missing = " and ".join(m for m in ("wave", base) if m not in by)
            rows.append([run.rel, setup, f"wave / {base}", "", "", "", f"not measured (no {missing} row in final.csv)",
                         "", published])
            continue
        w, b = by["wave"], by[base]
        seeds = sorted(set(w.index) & set(b.index))
        ratios = [w.loc[s, "test_ppl"] / b.loc[s, "test_ppl"] for s in seeds]
        paper = [w.loc[s, "test_batch_mean_ppl"] / b.loc[s, "test_batch_mean_ppl"] for s in seeds]
        mean = lambda xs: float(sum(xs) / len(xs)) if xs else math.nan  # noqa: E731
        rows.append([run.rel, setup, f"wave / {base}", ", ".join(str(int(s)) for s in seeds),
                     _num(mean([w.loc[s, "test_ppl"] for s in seeds])), _num(mean([b.loc[s, "test_ppl"] for s in seeds])),
                     f"{mean(ratios):.3f}" if seeds else "not measured (no seed with both)",
                     f"{mean(paper):.3f}" if seeds and math.isfinite(mean(paper)) else "n/a", published])
    return rows


QUALITY_HEADERS = ["run", "setup", "comparison", "seeds", "wave test PPL", "baseline test PPL",
                   "measured PPL ratio (mean of per-seed ratios)", "ratio, paper's batch-mean metric",
                   "published ratio"]


def quality_section(runs: list[Run]) -> list[str]:
    lines = ["### Quality: the published perplexity gap vs the measured gap", "",
             "Ratio of test perplexities, wave / baseline (> 1: wave is worse), best-validation weights. "
             "Perplexity is per token: ratios compare across setups, absolute PPL only within one tokenizer "
             "and corpus; a short run on another corpus is not the published 30-epoch WikiText-2 run.", ""]
    quality = [r for r in runs if r.kind == "quality"]
    if not quality:
        pw, ps, setup = PUBLISHED_PPL["char"]
        rows = [["(no quality run)", "", "wave / standard", "", "", "", "not measured", "", f"{pw} / {ps} = {pw / ps:.2f} ({setup})"]]
        return lines + md.table(QUALITY_HEADERS, rows) + ["", "Source: none (no quality run was given to bench.report)", ""]
    rows, sources = [], []
    for run in quality:
        rows += quality_rows(run)
        sources.append(provenance(run) + " (columns: method, seed, test_ppl, test_batch_mean_ppl)")
    return lines + md.table(QUALITY_HEADERS, rows) + [""] + [s for src in sources for s in (src, "")]


def headline(runs: list[Run]) -> list[str]:
    return (["## What reproduces and what does not", ""] + speed_section(runs) + quality_section(runs))

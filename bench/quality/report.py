"""summary.md and plots/*.png of a quality run, from env.json, final.csv and curves.csv (each method at its kept LR)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from bench.common.env import command_line, machine
from bench.common.figures import color as _color, plt, save
from bench.common.files import read_json, read_table, write_text
from bench.common.tables import table
from bench.quality.analysis import RATIO_BASELINES, WAVE_METHODS, convergence, equal_wall, job_curve, ratio_by_tokens
from bench.quality.schema import lr_of, planned_tokens
from bench.quality.stats import paired_ratios, spread
from bench.quality.sweep import diverged, first_seed, jobs_done, ran_out, rows_at, tuned_rows
from bench.scaling.claims import PUBLISHED_QUALITY


def write_report(run_dir: str | Path, plots: bool = True) -> Path:
    """(Re)write <run>/summary.md and, with `plots`, <run>/plots/*.png from the files in the run folder
    (without, the summary links the plots already there)."""
    run_dir = Path(run_dir)
    env = read_json(run_dir / "env.json")
    finals = read_table(run_dir / "final.csv", cut="drop")
    curves = read_table(run_dir / "curves.csv", cut="drop")
    if plots:
        linked = write_plots(run_dir, curves, finals, env) if curves or finals else []
    else:
        linked = [p for p in (run_dir / "plots" / name for name in PLOT_NAMES) if p.is_file()]
    path = run_dir / "summary.md"
    write_text(path, render(env, finals, curves, linked, run_dir))
    return path


def _col(rows: dict[int, dict], key: str) -> dict[int, float]:
    return {seed: float(r[key]) for seed, r in rows.items()}


def _mean(rows: dict[int, dict], key: str, scale: float = 1.0) -> float:
    """Mean of a final.csv column over seeds (NaN where a row lacks it)."""
    return sum(float(r.get(key) or "nan") for r in rows.values()) / len(rows) * scale


def hardware_line(env: dict) -> str:
    git = env.get("git", {})
    return (f"{machine(env)}; device {env.get('device', '?')}, world size {env.get('world_size', 1)}, autocast "
            f"{env.get('amp', 'off')}; torch {env.get('torch')}, python {env.get('python')}, git {git.get('sha_short')}"
            f"{' (dirty)' if git.get('dirty') else ''}")


def gap_table(by: dict[str, dict[int, dict]]) -> list[str]:
    out = []
    for m, rows in by.items():
        def sp(key, digits=3, pct=False):
            return spread(list(_col(rows, key).values())).fmt(digits, pct)
        params = sorted({int(r["params"]) for r in rows.values()})
        in_order = [r for _, r in sorted(rows.items())]
        out.append([m, ", ".join(f"{p:,}" for p in params), len(rows), sp("test_ppl"), sp("test_bpc"),
                    sp("test_acc", 2, pct=True), sp("test_batch_mean_ppl"), f"{_mean(rows, 'tokens_per_s'):,.0f}",
                    f"{_mean(rows, 'wall_s'):.0f}", f"{_mean(rows, 'peak_mem_mb'):.0f}",
                    ", ".join(str(r["best_step"]) for r in in_order),
                    ", ".join(str(r["nonfinite_steps"]) for r in in_order)])
    return table(["method", "params", "seeds", "test PPL", "test bpc", "test acc %", "paper-style batch-mean PPL",
                  "tokens/s", "wall s", "peak MB", "best step", "non-finite steps"], out)


def ratio_rows(by: dict[str, dict[int, dict]]) -> list[dict]:
    """Per-seed test ratios of every wave model (wave and its ablations) over every standard baseline."""
    out = []
    for num in (m for m in by if m in WAVE_METHODS):
        for base in (b for b in RATIO_BASELINES if b in by):
            w, b = by[num], by[base]
            seeds = sorted(set(w) & set(b))
            out.append({"num": num, "base": base, "seeds": seeds,
                        "ppl": spread(paired_ratios(_col(w, "test_ppl"), _col(b, "test_ppl"))),
                        "bpc": spread(paired_ratios(_col(w, "test_bpc"), _col(b, "test_bpc"))),
                        "acc": spread([100 * (float(w[k]["test_acc"]) - float(b[k]["test_acc"])) for k in seeds])})
    return out


def _section(title: str, intro: str, header: list[str], rows: list) -> list[str]:
    return [f"## {title}", "", intro, "", *table(header, rows), ""]


def _ratio_line(r: dict, label: str) -> list[str]:
    return [f"{r['num']} / {r['base']}{label}", r["ppl"].fmt_ci(3), r["bpc"].fmt_ci(3), r["acc"].fmt_ci(2),
            ", ".join(map(str, r["seeds"]))]


def render(env: dict, finals: list[dict], curves: list[dict], plots: list[Path], run_dir: Path) -> str:
    st, plan, tok, corpus = (env.get(k, {}) for k in ("settings", "plan", "tokenizer", "corpus"))
    p = st.get("preset", {})
    ref_lr = p.get("lr", math.nan)
    by = tuned_rows(finals, first_seed(env))
    ratios = ratio_rows(by)
    lrs = sorted({lr_of(r, ref_lr) for r in finals})
    swept = len(lrs) > 1
    lines = ["# Quality: Wave Field attention vs standard attention", "",
             f"Hardware: {hardware_line(env)}", "",
             f"Command: `{command_line(env)}`", "",
             f"Run folder: `{run_dir.name}`; created {env.get('created')}.", ""]
    done, planned = jobs_done(env, finals)
    if done < planned:
        lines += [f"**Incomplete:** {done} of the {planned} jobs this run plans have a row in final.csv, so the "
                  "learning-rate choice and every table below are provisional; the results page does not compare it.",
                  ""]
    lines += [f"Resumed {r.get('at')} by `{r.get('command', '?')}` on {r.get('device', '?')}: the jobs trained "
              "from then on ran under that command (its device and --threads set their wall-clock and tokens/s)."
              for r in env.get("resumes", [])] + ([""] if env.get("resumes") else [])

    lines += ["## Setup", "",
              f"- Preset `{p.get('name')}`; overridden on the command line: "
              f"{', '.join(st.get('overrides', [])) or 'nothing'}.",
              f"- Corpus `{corpus.get('name')}`: {corpus.get('source')}; licence {corpus.get('license')}; "
              f"split: {corpus.get('split_rule')}; characters {_per_split(corpus.get('chars'), ',')}.",
              f"- Tokenizer `{tok.get('kind')}`, vocabulary {tok.get('vocab_size')} (trained on train only); "
              f"tokens per character {_per_split(env.get('tokens_per_char'), '.3f')}"
              + (f"; share of <unk> tokens {_per_split(env['unk_fraction'], '.2%')}" if "unk_fraction" in env else "")
              + f". Batching `{p.get('batching')}`, seq {p.get('seq_len')}, batch {p.get('batch_size')} (global).",
              f"- Budget ({plan.get('budget')}): {plan.get('total_steps')} optimizer steps for every model "
              f"({plan.get('batches_per_epoch')} batches per epoch, so {env.get('epochs_covered', float('nan')):.2f} "
              f"epochs); warm-up {plan.get('warmup_steps')} steps then cosine from {p.get('lr')} to {p.get('min_lr')}; "
              f"AdamW wd {p.get('weight_decay')}, clip {p.get('grad_clip')}, dropout {p.get('dropout')}.",
              f"- Models: D={p.get('d_model')}, {p.get('n_layers')} layers, {p.get('n_heads')} heads; "
              + "; ".join(f"{m}: {v['params']:,} params, d_ff {v['config']['d_ff']}, "
                          f"{planned_tokens(env) / v['params']:.1f} training tokens per parameter"
                          for m, v in env.get("methods", {}).items())
              + (" (token positions, padding included: line batches train on fewer tokens)."
                 if p.get("batching") == "lines" else "."),
              *([f"- Learning rate: swept over {', '.join(f'{lr:g}' for lr in lrs)} at seed {first_seed(env)} "
                 f"(same budget and schedule shape for every model); each method keeps the LR with the lowest best "
                 f"validation loss and trains the other seeds at it. --lr {p.get('lr')} is the untuned reference."]
                if swept else []),
              f"- Validation every {plan.get('eval_every')} steps on "
              f"{p.get('eval_batches') or 'all'} batches; test on {p.get('test_batches') or 'all'} batches of the test "
              "split with the best-validation weights.", ""]

    n_seeds = max((len(v) for v in by.values()), default=0)
    kept = " at each method's kept learning rate" if swept else ""
    lines += [f"## Gap table (test split{kept}; mean ± std [min, max] over {n_seeds} seed(s))", ""]
    if by:
        lines += [*gap_table(by), "", f"Measured on: {hardware_line(env)}.", "",
                  "PPL = exp(token-weighted loss); bpc = loss / ln 2 x tokens per character of the split; "
                  "accuracy = top-1 over non-pad targets. 'paper-style batch-mean PPL' is the published loop's "
                  "metric: exp(min(mean of per-batch mean losses, 20)). tokens/s counts training target tokens "
                  "over training time only (evaluation excluded); wall s is the whole job. Peak memory: "
                  f"{env.get('memory_method', '?')}{_ranks_measured(env.get('world_size', 1))}.", ""]
    else:
        lines += ["No method has finished yet (final.csv is empty).", ""]

    if swept:
        lines += sweep_section(finals, first_seed(env), by)
    ref = ratio_rows(rows_at(finals, ref_lr)) if swept else []
    lines += _section("Wave / standard ratio", "Per-seed ratio wave(seed) / baseline(seed) (same seed = same batch "
                      "order), mean with a two-sided 95% Student-t interval over seeds (t with n-1 degrees of freedom, "
                      "sample std); ratio > 1 means wave is worse.",
                      ["comparison", "PPL ratio", "bpc ratio", "accuracy difference (wave - baseline, points)",
                       "seeds"],
                      [_ratio_line(r, " (tuned LRs)" if swept else "") for r in ratios]
                      + [_ratio_line(r, f" at --lr {p.get('lr')} (untuned)") for r in ref]
                      or [["(needs wave and a standard method)"]])
    lines += wall_section(curves, by) + convergence_section(curves, by, finals if swept else [], ref_lr)

    acc = lambda v: "n/a" if v is None else f"{v:.1f}"  # noqa: E731
    # --max-nonfinite may change on --resume: the run finished under the last one
    limit = [env.get("max_nonfinite", 20),
             *(r["max_nonfinite"] for r in env.get("resumes", []) if "max_nonfinite" in r)][-1]
    pub_rows = [[f"published: {q['setup']}", q["std_ppl"], acc(q["std_acc"]), q["wave_ppl"], acc(q["wave_acc"]),
                 f"{q['wave_ppl'] / q['std_ppl']:.2f}"] for q in PUBLISHED_QUALITY]
    for r in ratios:
        w, b = by[r["num"]], by[r["base"]]
        pub_rows.append([f"**this run** {r['num']} vs {r['base']}: {tok.get('kind')} tokenizer "
                         f"(V={tok.get('vocab_size')}), corpus {corpus.get('name')}, {plan.get('total_steps')} steps, "
                         f"{n_seeds} seed(s)", f"{_mean(b, 'test_ppl'):.2f}", f"{_mean(b, 'test_acc', 100):.1f}",
                         f"{_mean(w, 'test_ppl'):.2f}", f"{_mean(w, 'test_acc', 100):.1f}", r["ppl"].fmt_ci(2)])
    lines += ["## Published numbers beside ours", "",
              *table(["setup", "Standard PPL", "Standard acc %", "Wave PPL", "Wave acc %", "Wave / Standard PPL"],
                     pub_rows),
              "", "### Differences in setup (read before comparing)", "", *_differences(env, p, plan, tok, corpus),
              "", "## Notes", "",
              "- Perplexity is per token, so PPL across tokenizers (char vs BPE, or vs their ~1k-entry "
              "'character' vocabulary) is not comparable; bits per character is. Compare ratios, or bpc.",
              "- Wave and standard see the same batches in the same order at each seed and the same number of "
              "optimizer steps; only the model differs.",
              "- Non-finite losses skip the step (no update) and are counted; "
              + (f"a job stops after {limit} in a row and is kept as a diverged row (NaN "
                 "test metrics); the run stops only when every LR of a model diverged." if swept else
                 f"a run stops after {limit} in a row."), ""]
    if oom := [f"{r['method']} seed {r['seed']} lr {lr_of(r):g}" for r in finals if ran_out(r)]:
        lines += [f"- Out of memory (final.csv oom 1, NaN test metrics): {', '.join(oom)}; smaller sizes need a new "
                  "run folder (--out).", ""]
    if plots:
        lines += ["## Plots", ""] + [f"![{q.stem}](plots/{q.name})" for q in plots] + [""]
    return "\n".join(lines)


def sweep_section(finals: list[dict], seed: int | None, tuned: dict) -> list[str]:
    rows = []
    for m in dict.fromkeys(r["method"] for r in finals):
        start = [r for r in finals if r["method"] == m and (seed is None or int(float(r["seed"])) == seed)]
        kept = lr_of(next(iter(tuned[m].values()))) if tuned.get(m) else math.nan
        for r in sorted(start, key=lr_of):
            rows.append([m, f"{lr_of(r):g}", f"{float(r['best_val_loss']):.4f}", f"{float(r['test_ppl']):.3f}",
                         f"{r['best_step']} / {r['steps']}", r["nonfinite_steps"] + _stopped(r),
                         _kept(lr_of(r), kept, [lr_of(x) for x in start])])
    return _section(f"Learning-rate sweep (seed {seed})",
                    "Chosen on the best validation loss only; test PPL is shown for reference, it played no part.",
                    ["method", "peak LR", "best val loss", "test PPL", "best step / steps", "non-finite steps",
                     "choice"], rows)


def _stopped(row: dict) -> str:
    """Why a job has no test result; skipped steps alone are no divergence."""
    if ran_out(row):
        return " (out of memory)"
    return " (diverged)" if diverged(row) else ""


def _kept(lr: float, kept: float, swept: list[float]) -> str:
    if lr != kept:
        return ""
    return "kept (edge of the sweep: the best LR may lie beyond it)" if lr in (min(swept), max(swept)) else "kept"


def wall_section(curves: list[dict], by: dict) -> list[str]:
    rows = []
    for base in RATIO_BASELINES:
        if "wave" in by and base in by:
            ratios, t = equal_wall(curves, by["wave"], by[base])
            r = spread(ratios)
            if r.n:
                tw, tb = (_mean(by[m], "train_s") for m in ("wave", base))
                rows.append([f"wave / {base}", f"{t:,.0f}", r.fmt_ci(3), f"{tw:,.0f} / {tb:,.0f}"])
    if not rows:
        return []
    return _section(
        "Equal wall-clock", "Validation PPL ratio wave / baseline when both have run for the same time: the shorter "
        "job's length, per seed (job wall time, evaluations included). Times are only comparable within one machine "
        "and load; see the hardware line.",
        ["comparison", "time (s, mean over seeds)", "val PPL ratio at equal time", "training seconds wave / baseline"],
        rows)


def convergence_section(curves: list[dict], by: dict, finals: list[dict], ref_lr: float) -> list[str]:
    jobs = [r for rows in by.values() for r in rows.values()]
    jobs += [r for r in finals if not any(r is j for j in jobs)]  # the sweep's other LRs
    rows = []
    for r in jobs:
        c = convergence(curves, r["method"], int(float(r["seed"])), lr_of(r, ref_lr), r)
        rows.append([r["method"], r["seed"], f"{lr_of(r, ref_lr):g}", f"{c.best_step} / {c.steps}",
                     "-" if math.isnan(c.val_fall) else f"{100 * c.val_fall:.2f}%",
                     "-" if math.isnan(c.train_change) else f"{c.train_change:+.4f}", c.verdict])
    if not rows:
        return []
    return _section(
        "Convergence", "Where each job stands at its last step: the step with the best validation loss, how much the "
        "validation loss still fell over the last 10% of training tokens, and the least-squares change of the "
        "training loss over the last 10% of steps (nats). Still improving: the validation loss fell by 1% or more "
        "over that stretch; flattening: 0.2% to 1%; flat: less. Under a cosine schedule the learning rate is small at "
        "the end, so 'flat' means this budget and schedule are used up, not that the model cannot improve with more "
        "tokens.",
        ["method", "seed", "peak LR", "best step / steps", "val fall, last 10%", "train change, last 10%", "verdict"],
        rows)


def _differences(env, p, plan, tok, corpus) -> list[str]:
    return [
        f"- Tokenizer: their 'character' tokenizer lowercased the text, dropped whitespace and mixed characters with "
        f"frequent words and n-grams (about 1k entries), so their char-level PPL 5.9 / 6.2 is per token of that "
        f"vocabulary, not per character. Ours: `{tok.get('kind')}`"
        + (" (one token per Unicode character, rare characters -> <unk>; PPL is per character)."
           if tok.get("kind") == "char"
           else f" (byte-level BPE, {tok.get('vocab_size')} entries, trained on our train split)."),
        f"- Corpus: theirs WikiText-2; ours `{corpus.get('name')}` ({corpus.get('source')})."
        + ("" if corpus.get("name") == "wikitext2" else " Different text, so absolute PPL/bpc are not theirs."),
        f"- Budget: theirs 30 epochs over WikiText-2 train (V4.3.3: 20M tokens). Ours: {plan.get('total_steps')} steps "
        f"x {p.get('batch_size')} x {p.get('seq_len')} = {planned_tokens(env):,} token positions "
        f"({env.get('epochs_covered', float('nan')):.2f} epochs of our train split).",
        f"- Samples: theirs one text line per sample, chunked to 128 (+1) and right-padded. Ours: `{p.get('batching')}`"
        + (" (windows over the token stream; every position scored)." if p.get("batching") == "contiguous"
           else " (the same per-line scheme)."),
        "- Metric: their test loss is the mean of per-batch mean losses (we report it as 'paper-style batch-mean "
        "PPL'); our primary metrics are token-weighted over the whole test split.",
        f"- Precision: theirs fp16 autocast; ours {env.get('amp', 'off')}.",
        "- Baseline size: their standard model has about 1M fewer parameters than the wave model at the same d_ff "
        "(and learned positions vs sinusoidal); 'standard-matched' removes the size difference.",
    ]


def _ranks_measured(world: int) -> str:
    """Under torchrun only rank 0 measures its memory: the peak is per process, of one of the `world` ranks."""
    return f"; per process, rank 0 only (the other {world - 1} of {world} are not measured)" if world > 1 else ""


def _per_split(d, spec: str) -> str:
    if not isinstance(d, dict):
        return str(d)
    return ", ".join(f"{k} {format(v, spec)}" for k, v in d.items())


# every plot write_plots can draw, in the order summary.md links them
PLOT_NAMES = ("val_loss_vs_tokens.png", "val_loss_vs_wall.png", "ratio_vs_tokens.png", "lr_sweep.png",
              "final_metrics.png")


def _label(ax, xlabel: str, ylabel: str, title: str) -> None:
    """Axis labels, title, grid and legend of a one-axes quality plot."""
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend()


def _band(ax, x, ys, colour: str, label: str) -> None:
    """Mean line and a min..max band over seeds (ys: one list per x)."""
    mean = [sum(v) / len(v) for v in ys]
    ax.plot(x, mean, color=colour, marker=".", label=f"{label} ({max(len(v) for v in ys)} seed(s))")
    if max(len(v) for v in ys) > 1:
        ax.fill_between(x, [min(v) for v in ys], [max(v) for v in ys], color=colour, alpha=0.2, linewidth=0)


def write_plots(run_dir: Path, curves: list[dict], finals: list[dict], env: dict) -> list[Path]:
    out = run_dir / "plots"
    out.mkdir(exist_ok=True)
    tokens_png, wall_png, ratio_png, lr_png, final_png = PLOT_NAMES
    seed0 = first_seed(env)
    by = tuned_rows(finals, seed0)
    paths = []
    for xkey, xlabel, name in (("tokens", "training tokens", tokens_png),
                               ("wall_s", "job wall time (s, evaluation included)", wall_png)):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for m, rows in by.items():
            runs = [job_curve(curves, m, s, lr_of(r)) for s, r in rows.items()]
            n = min((len(c) for c in runs), default=0)
            if n == 0:
                continue
            x = [sum(float(c[i][xkey]) for c in runs) / len(runs) for i in range(n)]  # wall time: mean over seeds
            _band(ax, x, [[float(c[i]["loss"]) for c in runs] for i in range(n)], _color(m), m)
        _label(ax, xlabel, "validation loss (nats/token)",
               "validation loss: mean over seeds, band = min..max")
        paths.append(save(fig, out / name))

    if "wave" in by and len(by) > 1:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for base, rows in by.items():
            if base not in RATIO_BASELINES:
                continue
            pts = ratio_by_tokens(curves, by["wave"], rows)
            if pts:
                _band(ax, [t for t, _ in pts], [v for _, v in pts], _color(base), f"wave / {base}")
        kind = (env.get("tokenizer") or {}).get("kind", "char")
        pub = next(q for q in PUBLISHED_QUALITY if q["key"] == ("bpe" if kind == "bpe" else "char"))
        ax.axhline(pub["wave_ppl"] / pub["std_ppl"], color="black", linestyle="--",
                   label=f"published V3.5 {pub['key']}: {pub['wave_ppl'] / pub['std_ppl']:.2f}")
        ax.axhline(1.0, color="grey", linewidth=0.8)
        _label(ax, "training tokens", "validation PPL ratio (> 1: wave worse)",
               "wave / baseline validation perplexity")
        paths.append(save(fig, out / ratio_png))

    lrs = {lr_of(r) for r in finals if not math.isnan(lr_of(r))}
    if len(lrs) > 1:
        fig, ax = plt.subplots(figsize=(6, 4))
        for m in by:
            pts = sorted((lr_of(r), float(r["best_val_loss"] or "nan")) for r in finals
                         if r["method"] == m and (seed0 is None or int(float(r["seed"])) == seed0))
            ax.plot([a for a, _ in pts], [b for _, b in pts], color=_color(m), marker="o", label=m)
        ax.set_xscale("log")
        _label(ax, "peak learning rate", "best validation loss (nats/token)",
               f"learning-rate sweep (seed {seed0}, same budget)")
        paths.append(save(fig, out / lr_png))

    fig, axes = plt.subplots(1, 3, figsize=(11, 3.8))
    for ax, (key, label, scale) in zip(axes, (("test_ppl", "test perplexity", 1.0), ("test_bpc", "test bits/char", 1.0),
                                               ("test_acc", "test top-1 accuracy (%)", 100.0))):
        for i, (m, rows) in enumerate(by.items()):
            vals = [float(r[key]) * scale for r in rows.values()]
            std = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
            ax.errorbar([i], [float(np.mean(vals))], yerr=[std], fmt="o", color=_color(m), capsize=6, markersize=8)
            ax.scatter([i + 0.12] * len(vals), vals, color=_color(m), s=12, alpha=0.6)
        ax.set_xticks(range(len(by)))
        ax.set_xticklabels(list(by), rotation=15)
        ax.set_title(label)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle("test metrics (best-validation weights): mean ± std over seeds, dots = seeds")
    paths.append(save(fig, out / final_png))
    return paths

"""The sections of results/README.md: the claims at a glance, key numbers, speed and memory per
level, peers, quality, heads and causality. Every number comes from bench.report.evidence.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from bench.common.tables import table
from bench.common.timings import fmt
from bench.report import evidence as ev
from bench.report.runs import Run
from bench.scaling.claims import (
    CLAIM_LENGTHS, PUBLISHED_ADVANTAGE, PUBLISHED_PARAMS, PUBLISHED_QUALITY, authors_advantage, cost_model_ratio,
)

SDPA = "softmax-sdpa"
PEER_RELATIONS = {  # how the wave operator relates to each peer (docs/mechanism.md, "Relation to other sequence mixers")
    "peer-diag-ssm": "the same operator family: with identity head coupling and unit key norms the wave core equals "
                     "this one-pole diagonal SSM (`test_wave_with_identity_coupling_and_unit_deposit_is_the_diagonal_ssm`)",
    "peer-retnet": "shares a fixed per-head decay; RetNet has a q.k product and a real decay, wave has no q.k term "
                   "and a complex (oscillating) decay",
    "peer-hgrn": "a constant-gate, complex-valued HGRN would be the wave recurrence; HGRN's forget gates depend on "
                 "each token, the wave pole does not",
    "peer-simple-gla": "decayed linear attention with a per-token decay and a q.k product: differs on both counts",
}


class Notes:
    """Footnotes shared by the tables of one section: one per distinct reason, not per cell."""

    PATTERNS = [
        (r"left of (this level/pass's share of )?the total budget", "skipped: the run's total time budget was spent"),
        (r"> time budget", "skipped: predicted time above the per-cell time budget"),
        (r"peak memory .* > memory budget", "skipped: predicted memory above the memory budget"),
        (r"expected scalar type BFloat16 but found Float", "error: bf16 autocast crash in the backward of the "
                                                            "channel-major projection (fixed after this commit)"),
        (r"needs a CUDA device|CUDA only", "skipped: the kernel needs CUDA"),
    ]

    def __init__(self, start: str = "a"):
        self.reasons: list[str] = []

    def mark(self, status: str, reason: str) -> str:
        text = next((t for p, t in self.PATTERNS if re.search(p, reason or "")), None)
        if text is None:
            text = f"{status}: " + re.sub(r"\s+", " ", (reason or "no reason recorded"))[:110]
        if text not in self.reasons:
            self.reasons.append(text)
        return f"- ({chr(ord('a') + self.reasons.index(text))})"

    def lines(self) -> list[str]:
        return [f"({chr(ord('a') + i)}) {r}" + ("  " if i < len(self.reasons) - 1 else "")
                for i, r in enumerate(self.reasons)]


def _cell(cells: pd.DataFrame, setup: str, level: str, pas: str, n: int, method: str, notes: Notes,
          col: str = "median_ms") -> str:
    got = ev.value(cells, level, pas, n, method, col).get(setup)
    if got:
        return got.text()
    rows = cells[(cells["setup"] == setup) & (cells["level"] == level) & (cells["pass"] == pas)
                 & (cells["seq_len"] == n) & (cells["method"] == method)]
    if len(rows):
        return notes.mark(rows["status"].iloc[0], rows["reason"].iloc[0])
    return notes.mark("not measured", "no run of this setup has this cell")


def _ratio(cells, setup, level, pas, n, num, den, col="median_ms", unit="x") -> str:
    got = ev.ratio(cells, level, pas, n, num, den, col).get(setup)
    return got.text(unit) if got else "-"


def _setups(cells: pd.DataFrame) -> list[str]:
    """CPU setups first, then GPU; within each, the order the runs were given."""
    order = cells.drop_duplicates("setup")
    return list(order.sort_values("gpu", kind="stable")["setup"])


def _commits(cells: pd.DataFrame, setup: str) -> str:
    return ", ".join(dict.fromkeys(cells.loc[cells["setup"] == setup, "commit"]))


def level_section(cells: pd.DataFrame) -> list[str]:
    """Speed and memory of wave against SDPA per level and pass, every setup, at the claim lengths."""
    lines = ["## Speed and memory per level", "",
             "Wave against fused softmax attention (SDPA), causal, at the claim lengths. ms = median time per call; "
             "speedup = SDPA ms / wave ms (> 1: wave is faster); memory = peak MB of the call and wave MB / SDPA MB. "
             "A range is the spread over the committed runs of that setup (min-max), never the best run. Levels: "
             "core = the mixing operator alone, layer = the attention layer, model = the whole LM "
             "(docs/method.md). A setup with no measured wave or SDPA cell at a level is left out of its table.", ""]
    notes = Notes()
    if cells.empty:
        return lines + ["No scaling run was given.", ""]
    head = ["setup (commit)", "N", "wave ms", "SDPA ms", "speedup", "wave MB", "SDPA MB", "memory wave / SDPA"]
    for level in ("core", "layer", "model"):
        for pas in ("fwd", "fwdbwd"):
            sub = cells[(cells["level"] == level) & (cells["pass"] == pas)]
            rows = []
            for setup in _setups(sub):
                mine = sub[(sub["setup"] == setup) & sub["method"].isin(["wave", SDPA]) & (sub["status"] == "ok")]
                if mine.empty:  # a setup that measured neither here (e.g. a sweep cut short) adds only dashes
                    continue
                for n in CLAIM_LENGTHS:
                    rows.append([f"{setup} ({_commits(sub, setup)})", n,
                                 _cell(sub, setup, level, pas, n, "wave", notes), _cell(sub, setup, level, pas, n, SDPA, notes),
                                 _ratio(sub, setup, level, pas, n, SDPA, "wave"),
                                 _cell(sub, setup, level, pas, n, "wave", notes, "peak_mem_mb"),
                                 _cell(sub, setup, level, pas, n, SDPA, notes, "peak_mem_mb"),
                                 _ratio(sub, setup, level, pas, n, "wave", SDPA, "peak_mem_mb")])
            if rows:
                lines += [f"### {level}, {'forward' if pas == 'fwd' else 'forward + backward'}", "", *table(head, rows), ""]
    runs = sorted(set(cells["run"]))
    return lines + ["Notes: " + " ".join(notes.lines()), "", _source(runs, "timings.csv"), ""]


def _source(rels: list[str], csv: str) -> str:
    return "Source: " + ", ".join(f"[{r}/{csv}]({r}/{csv})" for r in rels)


def gpu_peer_lines(cells: pd.DataFrame, rel: str, sha: str, tsv: str) -> list[str]:
    """The fla-core kernels timed on a device session (evidence/peers.txt: N, pass, then ms of sdpa,
    hgrn, simple_gla) beside the wave core of the same session's scaling runs (bf16, B=8)."""
    ms: dict[tuple[str, str, int], float] = {}
    lines = [ln.split("\t") for ln in tsv.strip().splitlines()]
    for rec in lines[1:]:
        for name, v in zip(("softmax-sdpa", "peer-hgrn-fla", "peer-simple-gla-fla"), rec[2:5]):
            ms[(name, rec[1], int(rec[0]))] = float(v)
    wave = cells[(cells["gpu"]) & (cells["dtype"] == "bfloat16") & (cells["level"] == "core") & (cells["method"] == "wave")
                 & (cells["status"] == "ok") & (cells["commit"] == sha)] if len(cells) else cells
    for (pas, n), g in (wave.groupby(["pass", "seq_len"]) if len(wave) else []):
        ms[("wave", pas, int(n))] = float(g["median_ms"].median())
    get = lambda m, p, n: fmt(ms[(m, p, n)]) if (m, p, n) in ms else "-"  # noqa: E731
    rows = [[m] + [get(m, "fwd", n) for n in CLAIM_LENGTHS] + [get(m, "fwdbwd", 32768),
            fmt(ms[(m, "fwd", 32768)] / ms[("wave", "fwd", 32768)]) + "x"
            if (m, "fwd", 32768) in ms and ("wave", "fwd", 32768) in ms else "-"]
            for m in ("wave", "softmax-sdpa", "peer-hgrn-fla", "peer-simple-gla-fla")]
    return [f"Core level, H200 bf16 B=8 ({sha}): the fla-core kernels as timed in [{rel}]({rel}) (mean of 20 calls), "
            "wave from the same session's scaling runs (median over runs):", "",
            *table(["method", "fwd ms 2K", "fwd ms 8K", "fwd ms 32K", "fwd+bwd ms 32K", "its ms / wave ms at 32K"], rows), ""]


def peers_section(cells: pd.DataFrame, extra: list[str] = ()) -> list[str]:
    """Wave, SDPA and the sub-quadratic peers at the core level, from the run(s) that measured peers."""
    has = cells[cells["method"].str.startswith("peer-")] if len(cells) else cells
    lines = ["## Sub-quadratic peers", ""]
    if has.empty:
        return lines + (list(extra) or ["No committed run measured the peers.", ""])
    notes, blocks = Notes(), []
    for setup in _setups(has):
        sub = cells[(cells["setup"] == setup) & (cells["level"] == "core") & cells["run"].isin(set(has["run"]))]
        methods = [m for m in ["wave", SDPA] + sorted(set(sub["method"])) if m in set(sub["method"])
                   and not m.startswith("fft-floor") and m != "wave-triton"]
        rows = [[m] + [_cell(sub, setup, "core", "fwd", n, m, notes) for n in CLAIM_LENGTHS]
                + [_cell(sub, setup, "core", "fwdbwd", 32768, m, notes),
                   _cell(sub, setup, "core", "fwd", 32768, m, notes, "peak_mem_mb"),
                   _ratio(sub, setup, "core", "fwd", 32768, m, "wave") if m != "wave" else "1x"]
                for m in dict.fromkeys(methods)]
        blocks += [f"Core level, {setup} ({_commits(sub, setup)}):", "",
                   *table(["method", "fwd ms 2K", "fwd ms 8K", "fwd ms 32K", "fwd+bwd ms 32K", "peak MB 32K",
                           "its ms / wave ms at 32K"], rows), ""]
    lines += blocks + ["Notes: " + " ".join(notes.lines()), "", _source(sorted(set(has["run"])), "timings.csv"), "",
                       *extra, "How the wave operator relates to each peer (docs/mechanism.md):", ""]
    lines += [f"- `{m}`: {text}." for m, text in PEER_RELATIONS.items()]
    return lines + [""]


# ---------------------------------------------------------------------------------------------
# quality, heads, causality


def _rng(values: list[float], digits: int = 2) -> str:
    if not values:
        return "-"
    lo, hi, mean = min(values), max(values), sum(values) / len(values)
    return f"{mean:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f}, {len(values)} seeds)" if len(values) > 1 else f"{mean:.{digits}f}"


def _ci(values: list[float], digits: int = 2) -> str:
    """'1.44 (95% CI 1.09-1.79, 3 seeds)': the mean with its two-sided Student-t interval over seeds."""
    from bench.quality.stats import spread

    if not values:
        return "-"
    sp = spread(values)
    if sp.n < 2:
        return f"{sp.mean:.{digits}f} (1 seed)"
    return f"{sp.mean:.{digits}f} (95% CI {sp.ci_low:.{digits}f}-{sp.ci_high:.{digits}f}, {sp.n} seeds)"


def quality_setting(q: dict) -> str:
    """'char, seq 128, D=192 L=4 (cpu-small), 3.1M tokens, CPU'."""
    tok = q["tokenizer"] + (f" {q['vocab'] // 1000}K" if q["tokenizer"] == "bpe" and q.get("vocab") else "")
    return (f"{tok}, seq {q['seq_len']}, D={q['d_model']} L={q['n_layers']} ({q['preset']}), "
            f"{q['tokens'] / 1e6:.1f}M tokens, {q['device']}")


def quality_section(quality_runs: list[tuple[Run, dict]]) -> list[str]:
    lines = ["## Quality", "", "Wave and standard LMs trained on the same batches for the same steps; ratio = wave "
             "test PPL / standard test PPL per seed (> 1: wave is worse), mean with a 95% Student-t interval over "
             "seeds. Runs with an LR sweep train every model at three peak LRs with the first seed, keep each "
             "model's best on validation loss and train the other seeds at it ('tuned'); 'at --lr' is the same "
             "comparison at one fixed LR for both (the first seed, and later seeds where both kept it). Equal wall-clock: the validation PPL ratio "
             "when both have trained for the same time. Published: "
             + "; ".join(f"V3.5 {q['key']} {q['wave_ppl']} vs {q['std_ppl']} ({q['wave_ppl'] / q['std_ppl']:.2f})"
                         for q in PUBLISHED_QUALITY) + ". Perplexity is per token: compare ratios, not PPL across "
             "tokenizers.", ""]
    rows = []
    for run, q in quality_runs:
        if not q:
            continue
        untuned = "-" if q["untuned"] is None else f"{_ci(q['untuned'])} at {q['ref_lr']:g}"
        lr = ("LR " + ", ".join(f"{m} {q['lr'][m]:g}{' (sweep edge)' if m in q['edge'] else ''}"
                                for m in ("wave", "standard"))
              if q["untuned"] is not None else f"one LR {q['ref_lr']:g} for both, no sweep")
        conv = ", ".join(f"{n} {v}" for v, n in q["verdicts"].items())
        rows.append([quality_setting(q), f"{q['tokens_per_param']:.1f}", f"{_ci(q['ppl_ratio'])}; {lr}",
                     untuned, f"{_ci(q['wall'])} at {q['wall_s']:,.0f} s" if q["wall"] else "-", conv,
                     f"[{run.rel}]({run.rel}/summary.md) ({ev.commit(run)})"])
    if not any(q and q["device"] == "GPU" for _, q in quality_runs):
        rows.append(["char, seq 128, D=256 L=6 (paper-char), 20M+ tokens, GPU", "-", "not measured: needs a device "
                     "session (`python -m bench.quality --preset paper-char --methods wave,standard --tokens 20000000 "
                     "--lr-sweep 1e-3 1e-4 --seeds 0 1 2`)", "-", "-", "-", "-"])
    head = ["setting", "tokens / param", "test PPL ratio (tuned LRs)", "at --lr (untuned)", "val PPL ratio, equal "
            "wall-clock", "convergence (jobs)", "run"]
    ablations = [f"Initialisation ablation ({quality_setting(q)}, [{run.rel}]({run.rel}/summary.md)): "
                 f"`wave-scaled-pos` (sinusoidal positions at the token embedding's 0.02 scale, kept LR "
                 f"{q['ablation']['lr']:g}) / standard test PPL {_ci(q['ablation']['vs_standard'])}; "
                 f"wave-scaled-pos / wave {_ci(q['ablation']['vs_wave'])} (the scaled positions against V3.5's "
                 "unit-amplitude ones)." for run, q in quality_runs if q and q.get("ablation")]
    plots = [f"![wave / standard validation PPL against tokens, {quality_setting(q)}]({run.rel}/plots/ratio_vs_tokens.png)"
             for run, q in quality_runs if q and (run.path / "plots" / "ratio_vs_tokens.png").is_file()]
    source = _source([r.rel for r, _ in quality_runs], "final.csv")
    return lines + table(head, rows) + ["", *[ln for text in ablations + [source] + plots for ln in (text, "")]]


def diagnostics_section(diag: list[tuple[Run, dict, dict]]) -> list[str]:
    lines = ["## Heads and causality", "", "Head roles by reach in tokens (envelope down to 10%): below 4 local, "
             "below 32 medium, otherwise long-range. Causality: perturbation and gradient probes in float64 "
             "(PASS rows); leak demonstrations at V3.5's strides 1.29, 0.996, 0.125 and its fixed-field clamping "
             "(EXPECTED-LEAK rows).", ""]
    rows = [[r.rel, "trained checkpoint" if ev.trained(r) else "random init", h["heads"], h["local"], h["medium"],
             h["long-range"], fmt(h["max_reach"]), f"{c['pass']} PASS, {c['fail']} FAIL, {c['leaks']} leaks shown"]
            for r, h, c in diag]
    head = ["run", "model", "heads", "local", "medium", "long-range", "max reach (tokens)", "causality rows"]
    return lines + table(head, rows) + ["", _source([r.rel for r, _, _ in diag], "diagnostics.csv"), ""]


# ---------------------------------------------------------------------------------------------
# the claims at a glance


def _speed_cells(cells: pd.DataFrame, n: int, gpu: bool) -> tuple[str, list[float]]:
    sub = cells[cells["gpu"] == gpu] if len(cells) else cells
    parts, values = [], []
    for setup in _setups(sub) if len(sub) else []:
        got = ev.ratio(sub, "core", "fwd", n, SDPA, "wave").get(setup)
        if got:
            parts.append(f"{got.text('x')} [{setup}, {got.commits_text()}]")
            values += got.values
    return ("; ".join(parts) or "not measured"), values


def _verdict(values: list[float], published: float) -> str:
    if not values:
        return "not measured"
    hits = sum(v >= published * 0.9 for v in values)
    return "reproduces" if hits == len(values) else "partly" if hits else "does not"


def _quality_verdict(means: list[float], published: float) -> str:
    """Measured wave / standard ratios against a published one: within 10% reproduces."""
    if not means:
        return "not measured"
    near = [abs(m / published - 1) <= 0.1 for m in means]
    if all(near):
        return "reproduces"
    if any(near):
        return "partly"
    return "does not: " + _direction(means, published, "gap larger than published", "gap smaller than published")


def _direction(values: list[float], mark: float, above: str, below: str) -> str:
    if min(values) > mark:
        return above
    if max(values) < mark:
        return below
    return f"depends on the setting ({above} in some, {below} in others)"


def _doc(page: str, anchor: str = "") -> str:
    """A link to docs/<page> from the folder of the page being written (DOCS, set by build_report)."""
    return f"[docs/{page}]({DOCS}/{page}{'#' + anchor if anchor else ''})"


DOCS = "../docs"  # the repository's docs/ relative to the page's folder


def claims_rows(cells, quality_runs, diag, params, evidence_links) -> list[list[str]]:
    rows = []
    for n in CLAIM_LENGTHS:
        pub = PUBLISHED_ADVANTAGE[n]
        cpu, cv = _speed_cells(cells, n, False)
        gpu, gv = _speed_cells(cells, n, True)
        rows.append([f"speed {n // 1024}K: {pub:.0f}x over standard attention", f"{fmt(cost_model_ratio(n))}x "
                     f"(authors' model {fmt(authors_advantage(n))}x)", cpu, gpu, _verdict(cv + gv, pub),
                     evidence_links["speed"]])
    char, bpe, v433 = PUBLISHED_QUALITY
    for pub in (char, bpe):
        published = pub["wave_ppl"] / pub["std_ppl"]
        cols, means = [], []
        for gpu in (False, True):
            got = [q for _, q in quality_runs if q and q["tokenizer"] == pub["key"] and (q["device"] == "GPU") == gpu]
            cols.append("; ".join(f"{_ci(q['ppl_ratio'])} [{quality_setting(q)}]" for q in got) or "not measured")
            means += [sum(q["ppl_ratio"]) / len(q["ppl_ratio"]) for q in got]
        name = "char" if pub["key"] == "char" else "BPE-8K"
        rows.append([f"{name} PPL {pub['wave_ppl']} vs {pub['std_ppl']} (ratio {published:.2f})", "-", *cols,
                     _quality_verdict(means, published), evidence_links["quality"]])
        if pub["key"] == "char":
            got = [q for _, q in quality_runs if q and q["tokenizer"] == "char"]
            diffs = [a - b for q in got for a, b in zip(q["wave_acc"], q["std_acc"])]
            acc = "; ".join(f"wave {_rng(q['wave_acc'], 1)} vs {_rng(q['std_acc'], 1)} % [{quality_setting(q)}]"
                            for q in got) or "not measured"
            near = [abs(sum(a - b for a, b in zip(q["wave_acc"], q["std_acc"])) / len(q["wave_acc"])) <= 1.5
                    for q in got]  # within 1.5 points, as published (0.5)
            rows.append([f"char accuracy {char['wave_acc']} vs {char['std_acc']} %", "-", acc, "not measured",
                         "not measured" if not diffs else "reproduces" if all(near) else "partly" if any(near)
                         else "does not: " + _direction(diffs, 0.0, "wave more accurate", "wave less accurate"),
                         evidence_links["quality"]])
    rows.append([f"V4.3.3 gap {v433['wave_ppl'] / v433['std_ppl']:.2f}x ({v433['wave_ppl']} vs {v433['std_ppl']})", "-",
                 "not measured", "not measured", "not measured", _doc("claims.md")])
    rows.append([f"about {PUBLISHED_PARAMS / 1e6:.0f}M parameters", f"wave {params['wave']:,}, standard "
                 f"{params['standard']:,} (paper-char, V = 1000)", "-", "-",
                 "reproduces" if abs(params["wave"] / PUBLISHED_PARAMS - 1) < 0.1 else "does not",
                 _doc("mechanism.md", "parameter-counts")])
    trained = [(r, h) for r, h, _ in diag if ev.trained(r)]
    if trained:
        roles = "; ".join(f"{h['local']} local, {h['medium']} medium, {h['long-range']} long-range of {h['heads']} "
                          f"heads, max reach {fmt(h['max_reach'])} tokens ({_trained_on(r)})" for r, h in trained)
        verdict = "reproduces" if any(min(h["local"], h["medium"], h["long-range"]) > 0 for _, h in trained) else "partly"
        rows.append(["heads organise into local / medium / long-range roles", "-", roles, "not measured", verdict,
                     ", ".join(f"[{r.rel}]({r.rel}/summary.md)" for r, _ in trained)])
    else:
        rows.append(["heads organise into local / medium / long-range roles", "-", "not measured", "not measured",
                     "not measured", "-"])
    rows.append(["not a variant of Mamba or Hyena", "-", "mechanism: a linear time-invariant one-pole complex recurrence "
                 "per head and channel (a diagonal SSM with a fixed kernel, S4D-like) plus a head mixer; "
                 "`tests/test_peers.py::test_wave_with_identity_coupling_and_unit_deposit_is_the_diagonal_ssm` proves "
                 "it equals the one-pole diagonal SSM peer", "-", "partly: not Mamba (no input-dependent decay), "
                 "but an S4D-family SSM", _doc("mechanism.md", "relation-to-other-sequence-mixers")])
    caus = {gpu: [(r, c) for r, _, c in diag if _on_gpu(r) == gpu] for gpu in (False, True)}
    if diag:
        def said(group):
            if not group:
                return "not measured"
            passed, failed = sum(c["pass"] for _, c in group), sum(c["fail"] for _, c in group)
            leaks = max(c["leaks"] for _, c in group)
            return (f"suite's exact strides: {passed} PASS, {failed} FAIL ({len(group)} run{'s' if len(group) != 1 else ''}, {ev.commit(group[0][0])}); "
                    f"V3.5's published configurations: {leaks} of {leaks} leak")
        every = caus[False] + caus[True]
        failed, leaks = sum(c["fail"] for _, c in every), max(c["leaks"] for _, c in every)
        rows.append(["causal language model", "-", said(caus[False]), said(caus[True]),
                     "does not" if failed else "partly: V3.5's published settings leak" if leaks else "reproduces",
                     f"[{every[0][0].rel}]({every[0][0].rel}/summary.md)"])
    return rows


def _trained_on(run: Run) -> str:
    """'tiny model trained at seq 1024, CPU': what the checkpoint of a diagnostics run learned, read from
    the env.json of the quality run that wrote it when that run sits beside it."""
    ckpt = Path(str(run.env.get("model", "")).removeprefix("checkpoint "))
    src = run.path.parent / (ckpt.parts[-3] if len(ckpt.parts) >= 3 else "?") / "env.json"
    try:
        q = json.loads(src.read_text())
        preset = (q.get("settings") or {}).get("preset") or {}
        method = re.split(r"-lr|-seed", ckpt.stem)[0]
        what = (f"{q.get('preset', '?')} {'' if method == 'wave' else method + ' '}model trained at seq "
                f"{preset.get('seq_len', '?')}")
    except (OSError, ValueError):
        what = "trained model"
    return what + (", GPU" if _on_gpu(run) else ", CPU")


def _on_gpu(run: Run) -> bool:
    return str(run.env.get("device") or "").startswith("cuda")


CLAIMS_HEAD = ["claim (published)", "cost model / count", "measured, CPU", "measured, GPU", "verdict", "evidence"]

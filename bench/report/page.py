"""The sections of results/README.md and the claims at a glance, every number from bench.report.evidence."""
from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd

from bench.common.cli import squash
from bench.common.files import read_env
from bench.common.tables import table
from bench.common.timings import fmt, fmt_x
from bench.quality.stats import spread
from bench.report import evidence as ev
from bench.report.runs import Run
from bench.scaling.claims import (
    CLAIM_LENGTHS, PUBLISHED_ADVANTAGE, PUBLISHED_PARAMS, PUBLISHED_QUALITY, authors_advantage, cost_model_ratio,
)

SDPA = "softmax-sdpa"
RATIO_PLOT = "ratio_vs_tokens.png"  # drawn by bench.quality.report into a quality run's plots/
LINKS = {"speed": "[speed and memory](#speed-and-memory-per-level)", "quality": "[quality](#quality)"}
CLAIMS_HEAD = ["claim (published)", "cost model / count", "measured, CPU", "measured, GPU", "verdict", "evidence"]
FLA_PEERS = ("peer-hgrn-fla", "peer-simple-gla-fla")  # the columns of evidence/peers.txt after sdpa
# a level table's columns after setup and N: (header, method, denominator of a ratio or None, CSV column)
LEVEL_COLUMNS = [("wave ms", "wave", None, "median_ms"), ("SDPA ms", SDPA, None, "median_ms"),
                 ("speedup", SDPA, "wave", "median_ms"), ("wave MB", "wave", None, "peak_mem_mb"),
                 ("SDPA MB", SDPA, None, "peak_mem_mb"), ("memory wave / SDPA", "wave", SDPA, "peak_mem_mb")]
SLACK, ACC_POINTS = 0.1, 1.5  # reproduces: within 10% of a published value or better; accuracy: points
VERDICTS = (f"Verdicts: reproduces (every measurement within {SLACK:.0%} of the published value or better: a "
            f"speedup at least {1 - SLACK:g} times the published one, a wave / standard PPL ratio at most "
            f"{1 + SLACK:g} times the published one, wave accuracy at most {ACC_POINTS:g} points below the standard "
            "model's or above it), partly (some measurements do), does not, not measured; a claim without a number "
            "(head roles, causality, relation to other mixers) is judged in its row, the reason after the verdict.")
ONE_REP = ("A time marked (1 rep), or a ratio or range so marked, includes a cell timed in a single repetition "
           "(too slow to repeat in its budget, or its time budget used up by that one repetition; the run's "
           "summary.md marks it the same way): one repetition, not a median.")
PEER_HEAD = ["method", "fwd ms 2K", "fwd ms 8K", "fwd ms 32K", "fwd+bwd ms 32K"]
# how the wave operator relates to each peer (docs/mechanism.md, "Relation to other sequence mixers")
PEER_RELATIONS = {
    "peer-diag-ssm": "the same operator family: with identity head coupling and unit key norms the wave core equals "
                     "this one-pole diagonal SSM "
                     "(`test_wave_with_identity_coupling_and_unit_deposit_is_the_diagonal_ssm`)",
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

    def __init__(self):
        self.letters: dict[str, str] = {}  # reason -> its letter, in order of first use

    def mark(self, status: str, reason: str) -> str:
        text = next((t for p, t in self.PATTERNS if re.search(p, reason or "")),
                    f"{status}: " + squash(reason or "no reason recorded")[:110])
        return f"- ({self.letters.setdefault(text, chr(ord('a') + len(self.letters)))})"

    def line(self) -> str:
        return "Notes: " + "   ".join(f"({letter}) {text}" for text, letter in self.letters.items())


def _cell(cells: pd.DataFrame, setup: str, level: str, pas: str, n: int, method: str, notes: Notes,
          col: str = "median_ms", den: str | None = None) -> str:
    """One number (with `den`, the ratio method / den) as its spread over runs; missing: a note's mark (a dash)."""
    got = ev.ratio(cells, level, pas, n, method, den, col).get(setup)
    if got or den:
        return got.text("x" if den else "") if got else "-"
    rows = cells[(cells["setup"] == setup) & (cells["level"] == level) & (cells["pass"] == pas)
                 & (cells["seq_len"] == n) & (cells["method"] == method)]
    if rows.empty:
        return notes.mark("not measured", "no run of this setup has this cell")
    return notes.mark(rows["status"].iloc[0], rows["reason"].iloc[0])


def setups(cells: pd.DataFrame) -> list[str]:
    """CPU setups first, then GPU; within each, the order the runs were given."""
    return list(cells.drop_duplicates("setup").sort_values("gpu", kind="stable")["setup"])


def _commits(cells: pd.DataFrame, setup: str) -> str:
    return ", ".join(dict.fromkeys(cells.loc[cells["setup"] == setup, "commit"]))


def _source(rels: list[str], csv: str) -> str:
    return "Source: " + ", ".join(f"[{r}/{csv}]({r}/{csv})" for r in rels)


def level_section(cells: pd.DataFrame) -> list[str]:
    """Speed and memory of wave against SDPA per level and pass, every setup, at the claim lengths."""
    lines = ["## Speed and memory per level", "",
             "Wave against fused softmax attention (SDPA), causal, at the claim lengths. ms = median time per call; "
             "speedup = SDPA ms / wave ms (> 1: wave is faster); memory = peak MB of the call and wave MB / SDPA MB. "
             "A range is the spread over the committed runs of that setup (min-max), never the best run. Levels: "
             "core = the mixing operator alone, layer = the attention layer, model = the whole LM "
             "(docs/method.md). A setup with no measured wave or SDPA cell at a level is left out of its table. "
             + ONE_REP, ""]
    if cells.empty:
        return lines + ["No scaling run was given.", ""]
    notes = Notes()
    head = ["setup (commit)", "N", *(header for header, *_ in LEVEL_COLUMNS)]
    for level in ("core", "layer", "model"):
        for pas in ("fwd", "fwdbwd"):
            sub = cells[(cells["level"] == level) & (cells["pass"] == pas)]
            # a setup without a measured wave or SDPA cell (e.g. a sweep cut short) would be a row of dashes
            measured = set(sub.loc[sub["method"].isin(["wave", SDPA]) & (sub["status"] == "ok"), "setup"])
            rows = [[f"{setup} ({_commits(sub, setup)})", n,
                     *(_cell(sub, setup, level, pas, n, m, notes, col, den) for _, m, den, col in LEVEL_COLUMNS)]
                    for setup in setups(sub) if setup in measured for n in CLAIM_LENGTHS]
            if rows:
                title = f"### {level}, {'forward' if pas == 'fwd' else 'forward + backward'}"
                lines += [title, "", *table(head, rows), ""]
    return lines + [notes.line(), "", _source(sorted(set(cells["run"])), "timings.csv"), ""]


def gpu_peer_lines(cells: pd.DataFrame, rel: str, sha: str, tsv: str) -> list[str]:
    """The fla-core kernels of a device session's evidence/peers.txt (N, pass, ms of sdpa, hgrn, simple_gla)
    beside the wave core of that session's scaling runs (bf16, B=8)."""
    ms: dict[tuple[str, str, int], float] = {}
    for n, pas, *rest in [ln.split("\t") for ln in tsv.strip().splitlines()][1:]:
        ms.update({(name, pas, int(n)): float(v) for name, v in zip((SDPA, *FLA_PEERS), rest)})
    wave = cells[cells["gpu"] & (cells["dtype"] == "bfloat16") & (cells["level"] == "core")
                 & (cells["method"] == "wave") & (cells["status"] == "ok") & cells["commit"].str.startswith(sha)]
    for (pas, n), g in wave.groupby(["pass", "seq_len"]):
        ms[("wave", pas, int(n))] = float(g["median_ms"].median())

    def text(m: str, pas: str, n: int) -> str:
        return fmt(ms[(m, pas, n)]) if (m, pas, n) in ms else "-"

    top = ("wave", "fwd", 32768)
    rows = [[m, *(text(m, "fwd", n) for n in CLAIM_LENGTHS), text(m, "fwdbwd", 32768),
             fmt_x(ms[(m, "fwd", 32768)] / ms[top]) if (m, "fwd", 32768) in ms and top in ms else "-"]
            for m in ("wave", SDPA, *FLA_PEERS)]
    return [f"Core level, H200 bf16 B=8 ({sha}): the fla-core kernels as timed in [{rel}]({rel}) (mean of 20 calls), "
            "wave from the same session's scaling runs (median over runs):", "",
            *table(PEER_HEAD + ["its ms / wave ms at 32K"], rows), ""]


def peers_section(cells: pd.DataFrame, extra: list[str] = ()) -> list[str]:
    """Wave, SDPA and the sub-quadratic peers at the core level, from the run(s) that measured peers."""
    has = cells[cells["method"].str.startswith("peer-")]
    lines = ["## Sub-quadratic peers", ""]
    if has.empty:
        return lines + (list(extra) or ["No committed run measured the peers.", ""])
    notes = Notes()
    for setup in setups(has):
        sub = cells[(cells["setup"] == setup) & (cells["level"] == "core") & cells["run"].isin(set(has["run"]))]
        found = set(sub["method"])
        methods = [m for m in dict.fromkeys(["wave", SDPA, *sorted(found)])
                   if m in found and not m.startswith("fft-floor") and m != "wave-triton"]
        rows = [[m, *(_cell(sub, setup, "core", "fwd", n, m, notes) for n in CLAIM_LENGTHS),
                 _cell(sub, setup, "core", "fwdbwd", 32768, m, notes),
                 _cell(sub, setup, "core", "fwd", 32768, m, notes, "peak_mem_mb"),
                 _cell(sub, setup, "core", "fwd", 32768, m, notes, den="wave") if m != "wave" else "1x"]
                for m in methods]
        lines += [f"Core level, {setup} ({_commits(sub, setup)}):", "",
                  *table(PEER_HEAD + ["peak MB 32K", "its ms / wave ms at 32K"], rows), ""]
    lines += [notes.line(), "", ONE_REP, "", _source(sorted(set(has["run"])), "timings.csv"), "", *extra,
              "How the wave operator relates to each peer (docs/mechanism.md):", ""]
    return lines + [f"- `{m}`: {text}." for m, text in PEER_RELATIONS.items()] + [""]


def ci(values: list[float], digits: int = 2, interval: bool = True) -> str:
    """Seed statistics worded as in the quality summaries (bench.quality.stats.Spread.fmt_ci)."""
    return spread(values).fmt_ci(digits, interval)


def quality_section(quality_runs: list[tuple[Run, dict]]) -> list[str]:
    lines = ["## Quality", "", "Wave and standard LMs trained on the same batches for the same steps; ratio = wave "
             "test PPL / standard test PPL per seed (> 1: wave is worse), mean with a 95% Student-t interval over "
             "seeds. Runs with an LR sweep train every model at three peak LRs with the first seed, keep each "
             "model's best on validation loss and train the other seeds at it ('tuned'); 'at --lr' is the same "
             "comparison at one fixed LR for both (the first seed, and later seeds where both kept it). Equal "
             "wall-clock: the validation PPL ratio when both have trained for the same time. Published: "
             + "; ".join(f"{q['setup'].split()[0]} {q['key']} {q['wave_ppl']} vs {q['std_ppl']} "
                         f"({q['wave_ppl'] / q['std_ppl']:.2f})" for q in PUBLISHED_QUALITY)
             + ". Perplexity is per token: compare ratios, not PPL across tokenizers.", ""]
    measured = [(run, q) for run, q in quality_runs if "why" not in q]
    rows = []
    for run, q in quality_runs:
        if "why" in q:
            rows.append([q["setting"], "-", f"not compared: {q['why']}", "-", "-", "-",
                         f"[{run.rel}]({run.rel}/summary.md) ({ev.commit(run)})"])
            continue
        swept = q["untuned"] is not None
        edge = {m: " (sweep edge)" if m in q["edge"] else "" for m in q["lr"]}
        lr = ("LR " + ", ".join(f"{m} {q['lr'][m]:g}{e}" for m, e in edge.items()) if swept
              else f"one LR {q['ref_lr']:g} for both, no sweep")
        rows.append([q["setting"], f"{q['tokens_per_param']:.1f}", f"{ci(q['ppl_ratio'])}; {lr}",
                     f"{ci(q['untuned'])} at {q['ref_lr']:g}" if swept else "-",
                     f"{ci(q['wall'])} at {q['wall_s']:,.0f} s" if q["wall"] else "-",
                     ", ".join(f"{n} {v}" for v, n in q["verdicts"].items()),
                     f"[{run.rel}]({run.rel}/summary.md) ({ev.commit(run)})"])
    if not any(q["device"] == "GPU" for _, q in measured):
        rows.append(["char, seq 128, D=256 L=6 (paper-char), 20M+ tokens, GPU", "-", "not measured: needs a device "
                     "session (`python -m bench.quality --preset paper-char --methods wave,standard --tokens 20000000 "
                     "--lr-sweep 1e-3 1e-4 --seeds 0 1 2`)", "-", "-", "-", "-"])
    head = ["setting", "tokens / param", "test PPL ratio (tuned LRs)", "at --lr (untuned)", "val PPL ratio, equal "
            "wall-clock", "convergence (the ratio's wave and standard jobs)", "run"]
    ablations = [f"Initialisation ablation ({q['setting']}, [{run.rel}]({run.rel}/summary.md)): "
                 f"`wave-scaled-pos` (sinusoidal positions at the token embedding's 0.02 scale, kept LR "
                 f"{q['ablation']['lr']:g}) / standard test PPL {ci(q['ablation']['vs_standard'])}; "
                 f"wave-scaled-pos / wave {ci(q['ablation']['vs_wave'])} (the scaled positions against V3.5's "
                 "unit-amplitude ones)." for run, q in measured if q.get("ablation")]
    plots = [f"![wave / standard validation PPL against tokens, {q['setting']}]({run.rel}/plots/{RATIO_PLOT})"
             for run, q in measured if (run.path / "plots" / RATIO_PLOT).is_file()]
    source = _source([r.rel for r, _ in quality_runs], "final.csv")
    return lines + table(head, rows) + ["", *[ln for text in ablations + [source] + plots for ln in (text, "")]]


def diagnostics_section(diag: list[tuple[Run, dict, dict]]) -> list[str]:
    settings = [ev.probe_settings(r) for r, _, _ in diag]  # (role thresholds, probe dtype) per run
    shared = settings[0] if len(set(settings)) == 1 and settings[0][0] else None
    if shared:
        (local, long), dtype = shared
        roles = f"below {local:g} local, below {long:g} medium, otherwise long-range"
    else:
        roles, dtype = "local, medium or long-range by the run's role thresholds", "the run's probe dtype"
    lines = ["## Heads and causality", "", f"Head roles by reach in tokens (envelope down to 10%): {roles}. "
             f"Causality: perturbation and gradient probes in {dtype} (PASS rows); leak demonstrations at V3.5's "
             "strides 1.29, 0.996, 0.125 and its fixed-field clamping (EXPECTED-LEAK rows).", ""]
    rows = [[f"{r.rel} ({ev.commit(r)})", ("trained checkpoint" if ev.trained(r) else "random init")
             + (", GPU" if ev.on_gpu(r) else ", CPU"), h["heads"], h["local"], h["medium"],
             h["long-range"], fmt(h["max_reach"]),
             f"{c['pass']} PASS, {c['fail']} FAIL, {c['leaks']} of {c['demos']} leaks shown"]
            + ([] if shared else [_probe_text(*setting)]) for (r, h, c), setting in zip(diag, settings)]
    head = ["run", "model", "heads", "local", "medium", "long-range", "max reach (tokens)", "causality rows"]
    head += [] if shared else ["role thresholds (tokens); probe dtype"]
    return lines + table(head, rows) + ["", _source([r.rel for r, _, _ in diag], "diagnostics.csv"), ""]


def _probe_text(thresholds: tuple[float, float] | None, dtype: str) -> str:
    """'4 / 32; float64': a diagnostics run's role thresholds and probe dtype."""
    return f"{thresholds[0]:g} / {thresholds[1]:g}; {dtype}" if thresholds else f"unknown; {dtype}"


def _speed_cells(cells: pd.DataFrame, n: int, gpu: bool) -> tuple[str, list[float], bool]:
    """The core fwd speedups over SDPA at N on one kind of device: their text per setup, all values, and whether
    one of them includes a single-repetition time."""
    sub = cells[cells["gpu"] == gpu]
    spreads = ev.ratio(sub, "core", "fwd", n, SDPA, "wave")
    got = [(setup, spreads[setup]) for setup in setups(sub) if spreads.get(setup)]
    return ("; ".join(f"{s.text('x')} [{setup}, {s.commits_text()}]" for setup, s in got) or "not measured",
            [v for _, s in got for v in s.values], any(s.once for _, s in got))


def _verdict(near: list[bool], values: list[float] = (), mark: float = 0.0, above: str = "", below: str = "") -> str:
    """reproduces when every measurement is `near`, partly when some are; a miss says on which side of `mark`."""
    if not near:
        return "not measured"
    if any(near):
        return "reproduces" if all(near) else "partly"
    values = [v for v in values if math.isfinite(v)]  # a diverged seed's NaN is on neither side
    if not values:
        return "does not"
    if min(values) > mark:
        return f"does not: {above}"
    if max(values) < mark:
        return f"does not: {below}"
    return f"does not: depends on the setting ({above} in some, {below} in others)"


def _doc(docs: str, page: str, anchor: str = "") -> str:
    """A link to docs/<page>; `docs`: the repository's docs/ relative to the folder of the page written."""
    return f"[docs/{page}]({docs}/{page}{'#' + anchor if anchor else ''})"


def _causality_text(group: list[tuple[Run, dict]]) -> str:
    if not group:
        return "not measured"
    passed, failed = sum(c["pass"] for _, c in group), sum(c["fail"] for _, c in group)
    shown = [c for _, c in group if c["demos"]]  # a leak demonstration that shows no leak is a broken probe
    leaks = (f"{min(c['leaks'] for c in shown)} of {max(c['demos'] for c in shown)} leak" if shown
             else "not demonstrated")
    commits = ", ".join(dict.fromkeys(ev.commit(run) for run, _ in group))
    return (f"suite's exact strides: {passed} PASS, {failed} FAIL ({len(group)} run{'s' if len(group) != 1 else ''}, "
            f"{commits}); V3.5's published configurations: {leaks}")


def claims_rows(cells, quality_runs, diag, params, docs: str) -> list[list[str]]:
    """One row per published claim (CLAIMS_HEAD); `docs`: the repository's docs/ relative to the page's folder."""
    rows = []
    for n, pub in PUBLISHED_ADVANTAGE.items():
        (cpu, cv, c1), (gpu, gv, g1) = _speed_cells(cells, n, False), _speed_cells(cells, n, True)
        once = "; a ratio marked (1 rep) uses one timed call, not a median" if c1 or g1 else ""
        rows.append([f"speed {n // 1024}K: {pub:.0f}x over standard attention", f"{fmt(cost_model_ratio(n))}x "
                     f"(authors' model {fmt(authors_advantage(n))}x)", cpu, gpu,
                     _verdict([v >= pub * (1 - SLACK) for v in cv + gv]) + once, LINKS["speed"]])
    char, bpe, v433 = PUBLISHED_QUALITY
    measured = [q for _, q in quality_runs if "why" not in q]
    for pub, name in ((char, "char"), (bpe, "BPE-8K")):
        published = pub["wave_ppl"] / pub["std_ppl"]
        got = [[q for q in measured if q["tokenizer"] == pub["key"] and (q["device"] == "GPU") == on]
               for on in (False, True)]
        means = [spread(q["ppl_ratio"]).mean for q in got[0] + got[1]]
        rows.append([f"{name} PPL {pub['wave_ppl']} vs {pub['std_ppl']} (ratio {published:.2f})", "-",
                     *("; ".join(f"{ci(q['ppl_ratio'])} [{q['setting']}]" for q in g) or "not measured" for g in got),
                     _verdict([m <= published * (1 + SLACK) for m in means], means, published,  # lower: better
                              "gap larger than published", "gap smaller than published"), LINKS["quality"]])
        if pub is char:
            got = [q for q in measured if q["tokenizer"] == "char"]
            diffs = [[a - b for a, b in zip(q["wave_acc"], q["std_acc"])] for q in got]
            acc = ["; ".join(f"wave {ci(q['wave_acc'], 1, False)} vs {ci(q['std_acc'], 1, False)} % [{q['setting']}]"
                             for q in got if (q["device"] == "GPU") == on) or "not measured" for on in (False, True)]
            rows.append([f"char accuracy {char['wave_acc']} vs {char['std_acc']} %", "-", *acc,
                         _verdict([sum(d) / len(d) >= -ACC_POINTS for d in diffs],  # published: 0.5 points below
                                  [x for d in diffs for x in d], 0.0, "wave more accurate", "wave less accurate"),
                         LINKS["quality"]])
    rows.append([f"V4.3.3 gap {v433['wave_ppl'] / v433['std_ppl']:.2f}x ({v433['wave_ppl']} vs {v433['std_ppl']})", "-",
                 "not measured", "not measured", "not measured", _doc(docs, "claims.md")])
    rows.append([f"about {PUBLISHED_PARAMS / 1e6:.0f}M parameters", f"wave {params['wave']:,}, standard "
                 f"{params['standard']:,} (paper-char, V = 1000)", "-", "-",
                 "reproduces" if abs(params["wave"] / PUBLISHED_PARAMS - 1) < 0.1 else "does not",
                 _doc(docs, "mechanism.md", "parameter-counts")])
    trained = [(r, h) for r, h, _ in diag if ev.trained(r)]
    roles = ["; ".join(f"{h['local']} local, {h['medium']} medium, {h['long-range']} long-range of {h['heads']} "
                       f"heads, max reach {fmt(h['max_reach'])} tokens ({_trained_on(r)})"
                       for r, h in trained if ev.on_gpu(r) == on) or "not measured" for on in (False, True)]
    every_role = any(min(h["local"], h["medium"], h["long-range"]) > 0 for _, h in trained)
    rows.append(["heads organise into local / medium / long-range roles", "-", *roles,
                 ("reproduces" if every_role else "partly") if trained else "not measured",
                 ", ".join(f"[{r.rel}]({r.rel}/summary.md)" for r, _ in trained) or "-"])
    rows.append(["not a variant of Mamba or Hyena", "-", "mechanism: a linear time-invariant one-pole complex "
                 "recurrence per head and channel (a diagonal SSM with a fixed kernel, S4D-like) plus a head mixer; "
                 "`tests/test_peers.py::test_wave_with_identity_coupling_and_unit_deposit_is_the_diagonal_ssm` proves "
                 "it equals the one-pole diagonal SSM peer", "-", "partly: not Mamba (no input-dependent decay), "
                 "but an S4D-family SSM", _doc(docs, "mechanism.md", "relation-to-other-sequence-mixers")])
    if diag:
        cpu, gpu = ([(r, c) for r, _, c in diag if ev.on_gpu(r) == on] for on in (False, True))
        failed, leaks = sum(c["fail"] for _, c in cpu + gpu), max(c["leaks"] for _, c in cpu + gpu)
        probed = any(c["pass"] + c["fail"] for _, c in cpu + gpu)  # no causality row at all: nothing to judge
        first = (cpu + gpu)[0][0].rel
        rows.append(["causal language model", "-", _causality_text(cpu), _causality_text(gpu),
                     "not measured" if not probed else "does not" if failed
                     else "partly: V3.5's published settings leak" if leaks else "reproduces",
                     f"[{first}]({first}/summary.md)"])
    return rows


def _trained_on(run: Run) -> str:
    """'tiny model trained at seq 1024, CPU', from the env.json of the quality run that wrote the checkpoint."""
    ckpt = Path(str(run.env.get("model", "")).removeprefix("checkpoint "))
    q = read_env(run.path.parent / ckpt.parts[-3]) if len(ckpt.parts) >= 3 else {}
    method = re.split(r"-lr|-seed", ckpt.stem)[0]
    what = (f"{q.get('preset', '?')} {'' if method == 'wave' else method + ' '}model trained at seq "
            f"{((q.get('settings') or {}).get('preset') or {}).get('seq_len', '?')}") if q else "trained model"
    return what + (", GPU" if ev.on_gpu(run) else ", CPU")

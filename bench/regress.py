"""Performance regression gate on wave/softmax ratios measured within ONE run, so machine speed cancels.

    python -m bench.regress --baseline tests/benchmarks/baseline_cpu.json --current out.json

docs/regression.md has the metrics, the tolerances, the measurements behind them and the exit codes
(0 within tolerance; 1 regressed, a table on stdout; 2 bad input, one line on stderr).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from bench.common.cli import ArgParser, UsageError, int_at_least, nonneg_float, positive_float, run_cli
from bench.common.files import check_out_file, read_json, write_json
from bench.common.tables import table as md_table
from bench.common.timings import aggregate, config_label, fit_exponent, load_timings, method_kind, times

PROG = "python -m bench.regress"
RATIO_TOL = 0.60
GMEAN_TOL = 0.25
EXPONENT_TOL = 0.25
MIN_LENGTHS = 3
METRICS = ("ratio", "ratio-gmean", "exponent", "lost")
CSV_REQUIRED = ("method", "level", "pass", "seq_len", "status", "median_ms")
INFO_KEYS = ("method", "level", "pass", "seq_len")

# (level, pass, config label) -> method -> seq_len -> seconds
Times = dict[tuple[str, str, str], dict[str, dict[int, float]]]


def load_times(path_text: str, flag: str) -> Times:
    """Median times of a pytest-benchmark .json (benchmarks carrying method/level/pass/seq_len) or of a
    bench.scaling timings.csv (median_ms / 1000 of the ok cells; a cut last row is refused). A bench.scaling
    run folder stands for its timings.csv."""
    path = Path(path_text)
    if path.is_dir():
        if not (path / "timings.csv").is_file():
            raise UsageError(f"{flag} {path_text!r} is a folder without a timings.csv; pass a bench.scaling "
                             "timings.csv or a pytest-benchmark .json")
        path = path / "timings.csv"
    if not path.is_file():
        raise UsageError(f"{flag} {path_text!r} does not exist or is not a file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return times(aggregate(load_timings(path, cut="error", required=CSV_REQUIRED)))
    if suffix != ".json":
        raise UsageError(f"{flag} {path_text!r}: unknown format {suffix or '(no extension)'!r}; valid choices: .json "
                         "(pytest-benchmark --benchmark-json) or .csv (bench.scaling timings.csv)")
    data = read_json(path)
    if not isinstance(data.get("benchmarks"), list):
        raise UsageError(f"{path} has no 'benchmarks' list (expected the --benchmark-json output of tests/benchmarks)")
    out: Times = {}
    for bench in data["benchmarks"]:
        try:
            info, seconds = bench.get("extra_info") or {}, float(bench["stats"]["median"])
            seq_len = int(info["seq_len"])
        except (AttributeError, KeyError, TypeError, ValueError):  # a malformed entry is skipped, not fatal
            continue
        if all(info.get(k) not in (None, "") for k in INFO_KEYS) and seconds > 0 and math.isfinite(seconds):
            key = (str(info["level"]), str(info["pass"]), config_label(info.get))
            out.setdefault(key, {}).setdefault(str(info["method"]), {})[seq_len] = seconds
    return out


@dataclass
class Check:
    metric: str      # "ratio" | "ratio-gmean" | "exponent" | "lost"
    group: str       # "core/fwd", plus the configuration when a file holds several
    name: str        # "wave/softmax-sdpa N=1024", "wave/softmax-sdpa N=256..2048", "wave N=256..2048"
    baseline: float  # lost: the baseline's seconds
    current: float   # lost: NaN
    change: float    # ratios: current / baseline - 1; exponent: current - baseline; lost: inf
    tolerance: float
    ok: bool

    def label(self) -> str:
        return f"{self.group} {self.metric} {self.name}"

    def change_text(self) -> tuple[str, str]:
        """The change and the tolerance as the table shows them."""
        if self.metric == "lost":
            return "no time", "none"
        if self.metric == "exponent":
            return f"{self.change:+.3f}", f"+{self.tolerance:.2f}"
        return f"{self.change:+.1%}", f"+{self.tolerance:.0%}"


def _gmean(values: Sequence[float]) -> float:
    # not statistics.geometric_mean: its fsum moves the last bits, and with them which of two equal
    # changes the summary names as the worst
    return math.exp(sum(math.log(v) for v in values) / len(values))


def _growth(metric: str, group: str, name: str, baseline: float, current: float, tol: float) -> Check:
    change = current / baseline - 1.0
    return Check(metric, group, name, baseline, current, change, tol, change <= tol)


def compare(base: Times, cur: Times, ratio_tol: float = RATIO_TOL, exponent_tol: float = EXPONENT_TOL,
            min_lengths: int = MIN_LENGTHS, gmean_tol: float = GMEAN_TOL) -> list[Check]:
    """Every ratio and exponent both files allow, checked against the tolerances. A cell the baseline
    timed that the current run lacks, at a length the current run timed for another method, is "lost"."""
    checks: list[Check] = []
    panels = [(level, pas) for level, pas, _ in set(base) | set(cur)]  # one entry per configuration
    for key in sorted(set(base) & set(cur)):
        level, pas, config = key
        group = f"{level}/{pas}" + (f" [{config}]" if panels.count((level, pas)) > 1 else "")
        b, c = base[key], cur[key]
        timed = {n for per in c.values() for n in per}
        checks += [Check("lost", group, f"{m} N={n}", t, math.nan, math.inf, 0.0, False)
                   for m in sorted(b) if method_kind(m) in ("wave", "softmax")
                   for n, t in sorted(b[m].items()) if n in timed and n not in c.get(m, {})]
        methods = sorted(set(b) & set(c))
        waves = [m for m in methods if method_kind(m) == "wave"]
        softs = [m for m in methods if method_kind(m) == "softmax"]
        for w in waves:
            for s in softs:
                ns = sorted(set(b[w]) & set(b[s]) & set(c[w]) & set(c[s]))
                rb, rc = ([t[w][n] / t[s][n] for n in ns] for t in (b, c))
                checks += [_growth("ratio", group, f"{w}/{s} N={n}", x, y, ratio_tol) for n, x, y in zip(ns, rb, rc)]
                if len(ns) >= min_lengths:
                    checks.append(_growth("ratio-gmean", group, f"{w}/{s} N={ns[0]}..{ns[-1]}",
                                          _gmean(rb), _gmean(rc), gmean_tol))
        for w in waves:
            ns = sorted(set(b[w]) & set(c[w]))
            if len(ns) < min_lengths:
                continue
            eb, ec = (fit_exponent(ns, [t[w][n] for n in ns])["slope"] for t in (b, c))
            # a steeper slope only counts when the longest length did not also get faster against
            # every softmax method there: short lengths speeding up raise the slope too
            top = ns[-1]
            refs = [s for s in softs if top in b[s] and top in c[s]]
            faster_at_top = bool(refs) and all(c[w][top] / c[s][top] < b[w][top] / b[s][top] for s in refs)
            checks.append(Check("exponent", group, f"{w} N={ns[0]}..{ns[-1]}", eb, ec, ec - eb, exponent_tol,
                                ec - eb <= exponent_tol or faster_at_top))
    return checks


def _worst(checks: list[Check], metric: str) -> str:
    of_kind = [c for c in checks if c.metric == metric]
    if metric == "lost":
        return f"{len(of_kind)} lost cells" + (f" ({of_kind[0].label()}, ...)" if of_kind else "")
    if not of_kind:
        return f"no {metric}s"
    worst = max(of_kind, key=lambda c: c.change)
    return f"worst {metric} change {worst.change_text()[0]} ({worst.label()})"


def fraction(text: str) -> float:
    """A tolerance as a fraction (0.35) or a percentage ('35%')."""
    return positive_float(text[:-1]) / 100 if text.endswith("%") else positive_float(text)


def drop_short(times: Times, min_seq_len: int) -> Times:
    """The same times without lengths below min_seq_len."""
    return {key: {m: {n: t for n, t in per.items() if n >= min_seq_len} for m, per in methods.items()}
            for key, methods in times.items()}


def _measured(times: Times) -> str:
    """Each configuration of a file with its levels and passes: 'cpu float32 B=1 H=8 d=64 (core/fwd, layer/fwd)'."""
    panels: dict[str, list[str]] = {}
    for level, pas, config in sorted(times):
        panels.setdefault(config or "no configuration", []).append(f"{level}/{pas}")
    return "; ".join(f"{config} ({', '.join(names)})" for config, names in panels.items())


def main(argv: Sequence[str] | None = None) -> int:
    ap = ArgParser(prog=PROG, description="Compare wave/softmax time ratios and wave scaling exponents of two runs "
                   "(pytest-benchmark .json or bench.scaling timings.csv).")
    ap.add_argument("--baseline", required=True, help="committed reference (.json or .csv)")
    ap.add_argument("--current", required=True, help="the run to check (.json or .csv)")
    ap.add_argument("--ratio-tol", type=fraction, default=RATIO_TOL,
                    help="largest allowed relative growth of a wave/softmax ratio at one length, as 0.6 or 60%% "
                         f"(default {RATIO_TOL})")
    ap.add_argument("--gmean-tol", type=fraction, default=GMEAN_TOL,
                    help=f"largest allowed relative growth of the geometric mean over lengths of a wave/softmax "
                         f"ratio (default {GMEAN_TOL})")
    ap.add_argument("--exponent-tol", type=nonneg_float, default=EXPONENT_TOL,
                    help=f"largest allowed growth of a wave scaling exponent (default {EXPONENT_TOL})")
    ap.add_argument("--min-seq-len", type=int, default=0, help="ignore lengths below this N in both files "
                    "(default 0, keep all; the CI gate script uses 512, docs/regression.md)")
    ap.add_argument("--min-lengths", type=int_at_least(2, "{value} is below 2 (a slope needs two lengths)"),
                    default=MIN_LENGTHS,
                    help=f"lengths both files must share for an exponent or a mean ratio, >= 2 (default {MIN_LENGTHS})")
    ap.add_argument("--json-out", help="also write every derived metric and verdict to this JSON file")
    ap.add_argument("--show-all", action="store_true", help="print the table of every metric, not only regressions")
    args = ap.parse_args(argv)
    for flag, path in (("--baseline", args.baseline), ("--current", args.current)):
        if args.json_out and Path(args.json_out).resolve() == Path(path).resolve():
            raise UsageError(f"--json-out {args.json_out!r} is the {flag} file, which it would replace; "
                             "choose another path")
    if args.json_out:  # before the work, which a path that cannot be written would throw away
        check_out_file(args.json_out, "--json-out")
    base, cur = load_times(args.baseline, "--baseline"), load_times(args.current, "--current")
    for path, got in ((args.baseline, base), (args.current, cur)):
        if not got:
            raise UsageError(f"{path} holds no usable timings (no ok rows / no benchmarks with method, level, pass, "
                             "seq_len)")
        longest = max(n for methods in got.values() for per in methods.values() for n in per)
        if longest < args.min_seq_len:
            raise UsageError(f"--min-seq-len {args.min_seq_len} leaves no length of {path} to compare: its longest "
                             f"is N={longest}")
    if args.min_seq_len:
        base, cur = drop_short(base, args.min_seq_len), drop_short(cur, args.min_seq_len)
    checks = compare(base, cur, args.ratio_tol, args.exponent_tol, args.min_lengths, args.gmean_tol)
    if not set(base) & set(cur):
        raise UsageError(f"no comparable metrics: {args.baseline} and {args.current} measured different "
                         f"configurations: {_measured(base)} against {_measured(cur)}")
    if not checks:
        raise UsageError(f"no comparable metrics: {args.baseline} and {args.current} share no level/pass with a "
                         f"wave* and a softmax* method at a common length, nor a wave* method at >= "
                         f"{args.min_lengths} lengths")
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        write_json(args.json_out, {
            "baseline": args.baseline, "current": args.current, "ratio_tol": args.ratio_tol,
            "gmean_tol": args.gmean_tol, "exponent_tol": args.exponent_tol, "min_lengths": args.min_lengths,
            "checks": [asdict(c) | {"label": c.label()} for c in checks]})

    bad = [c for c in checks if not c.ok]
    counts = ", ".join(f"{sum(c.metric == m for c in checks)} {m}" for m in METRICS)
    summary = f"{len(checks)} metrics ({counts}); " + "; ".join(_worst(checks, m) for m in METRICS)
    if args.show_all or bad:
        rows = [[c.label(), f"{c.baseline:.4g}", f"{c.current:.4g}".replace("nan", "-"), *c.change_text(),
                 "ok" if c.ok else "REGRESSED"]
                for c in (checks if args.show_all else bad)]
        print("\n".join(md_table(["metric", "baseline", "current", "change", "tolerance", "status"], rows)))
    if bad:
        print(f"bench.regress: REGRESSED: {len(bad)} of {summary}")
        return 1
    print(f"bench.regress: ok: {summary}")
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    """main() with the suite's error handling: a UsageError is one line on stderr and exit code 2."""
    return run_cli(main, argv, prog=PROG)


if __name__ == "__main__":
    raise SystemExit(cli())

"""Performance regression gate on quantities measured within ONE run, so machine speed cancels.

    python -m bench.regress --baseline tests/benchmarks/baseline_cpu.json --current out.json

Inputs (detected by extension): the pytest-benchmark JSON of tests/benchmarks (--benchmark-json;
each benchmark carries method, level, pass, seq_len in extra_info; stats.median is read), or a
bench.scaling timings.csv (rows with status ok; median_ms is read; when several ranks measured a
cell the slowest counts: bench.common.timings.aggregate). Either file can be compared with the other.

Metrics, per level, pass (and device/dtype/B/H/d configuration when a file holds several):
- ratio: t(wave method) / t(softmax method) at each length, for every wave x softmax pair (the
  kind of a method comes from the scaling registry; unknown names by their prefix). The two times
  come from the same run, seconds apart, so a machine that is uniformly 1.4x slower, or slower
  today than yesterday, leaves the ratio unchanged.
- ratio-gmean: the geometric mean of those ratios over the lengths both files measured (at
  least --min-lengths): averaging lengths halves the noise, so a moderate slowdown at every
  length is caught although each per-length ratio stays inside its wider tolerance.
- exponent: slope of log t against log N of each wave method (least squares) over the lengths
  both files measured; needs at least --min-lengths lengths.
The gate is one-sided (getting faster never fails):
    ratio_current    <= ratio_baseline * (1 + ratio_tol)      (each length)
    gmean_current    <= gmean_baseline * (1 + gmean_tol)      (mean over lengths)
    exponent_current <= exponent_baseline + exponent_tol
                        (or, if not, the wave method got faster against every softmax method at
                        the longest length: the slope then rose because short lengths sped up)

Tolerances (how they were measured, and what each still catches, is in docs/regression.md):
ratio_tol = 0.60 (a 2x slowdown at any length fails), gmean_tol = 0.25 (a 1.3x slowdown at every
length fails), exponent_tol = 0.25 (N log N turned N^2, or 2x slower at the longest length, fails).

Exit codes: 0 every metric within tolerance; 1 something regressed (a table on stdout: metric,
baseline, current, change, tolerance); 2 bad input (missing or unreadable file, unknown format,
no comparable metrics) as one line on stderr.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from bench.common.cli import ArgParser, UsageError, nonneg_float, positive_float, positive_int, run_cli
from bench.common.files import read_json, write_json
from bench.common.tables import table as md_table
from bench.common.timings import aggregate, config_label, fit_exponent, load_timings, method_kind, times

PROG = "python -m bench.regress"
RATIO_TOL = 0.60
GMEAN_TOL = 0.25
EXPONENT_TOL = 0.25
MIN_LENGTHS = 3
CSV_REQUIRED = ("method", "level", "pass", "seq_len", "status", "median_ms")

# (level, pass, config label) -> method -> seq_len -> seconds
Times = dict[tuple[str, str, str], dict[str, dict[int, float]]]


# ---------------------------------------------------------------------------------------------
# loading


def load_benchmark_json(path: Path) -> Times:
    """Median times of a pytest-benchmark JSON whose benchmarks carry method/level/pass/seq_len."""
    data = read_json(path)
    if not isinstance(data.get("benchmarks"), list):
        raise UsageError(f"{path} has no 'benchmarks' list (expected the --benchmark-json output of tests/benchmarks)")
    times: Times = {}
    for bench in data["benchmarks"]:
        if not isinstance(bench, dict):
            continue
        info, stats = bench.get("extra_info") or {}, bench.get("stats") or {}
        median = stats.get("median") if isinstance(stats, dict) else None
        if not isinstance(info, dict) or any(info.get(k) in (None, "") for k in ("method", "level", "pass", "seq_len")):
            continue
        try:
            seconds, seq_len = float(median), int(info["seq_len"])
        except (TypeError, ValueError):
            continue
        if seconds > 0 and math.isfinite(seconds):
            key = (str(info["level"]), str(info["pass"]), config_label(info.get))
            times.setdefault(key, {}).setdefault(str(info["method"]), {})[seq_len] = seconds
    return times


def load_times(path_text: str) -> Times:
    """Times of a .json (pytest-benchmark) or .csv (bench.scaling timings.csv: median_ms / 1000 of
    the status-ok cells; a cut last row, an interrupted run, is refused) file."""
    path = Path(path_text)
    if not path.is_file():
        raise UsageError(f"{path_text!r} does not exist or is not a file")
    suffix = path.suffix.lower()
    if suffix == ".json":
        return load_benchmark_json(path)
    if suffix == ".csv":
        return times(aggregate(load_timings(path, cut="error", required=CSV_REQUIRED)))
    raise UsageError(f"{path_text!r}: unknown format {suffix or '(no extension)'!r}; valid choices: .json "
                     "(pytest-benchmark --benchmark-json) or .csv (bench.scaling timings.csv)")


# ---------------------------------------------------------------------------------------------
# metrics


def _gmean(values: Sequence[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


@dataclass
class Check:
    metric: str      # "ratio" | "ratio-gmean" | "exponent"
    group: str       # "core/fwd", plus the configuration when a file holds several
    name: str        # "wave/softmax-sdpa N=1024", "wave/softmax-sdpa N=256..2048", "wave N=256..2048"
    baseline: float
    current: float
    change: float    # ratios: current / baseline - 1; exponent: current - baseline
    tolerance: float
    ok: bool

    def label(self) -> str:
        return f"{self.group} {self.metric} {self.name}"


def drop_short(times: Times, min_seq_len: int) -> Times:
    """The same times without lengths below min_seq_len."""
    return {key: {m: {n: t for n, t in per.items() if n >= min_seq_len} for m, per in methods.items()}
            for key, methods in times.items()}


def compare(base: Times, cur: Times, ratio_tol: float = RATIO_TOL, exponent_tol: float = EXPONENT_TOL,
            min_lengths: int = MIN_LENGTHS, gmean_tol: float = GMEAN_TOL) -> list[Check]:
    """Every ratio and exponent both files allow, checked against the tolerances."""
    checks: list[Check] = []
    configs_per_panel: dict[tuple[str, str], set[str]] = {}
    for level, pas, config in list(base) + list(cur):
        configs_per_panel.setdefault((level, pas), set()).add(config)
    for key in sorted(set(base) & set(cur)):
        level, pas, config = key
        group = f"{level}/{pas}" + (f" [{config}]" if len(configs_per_panel[(level, pas)]) > 1 else "")
        b, c = base[key], cur[key]
        methods = sorted(set(b) & set(c))
        waves = [m for m in methods if method_kind(m) == "wave"]
        softs = [m for m in methods if method_kind(m) == "softmax"]
        for w in waves:
            for s in softs:
                ns = sorted(set(b[w]) & set(b[s]) & set(c[w]) & set(c[s]))
                for n in ns:
                    rb, rc = b[w][n] / b[s][n], c[w][n] / c[s][n]
                    change = rc / rb - 1.0
                    checks.append(Check("ratio", group, f"{w}/{s} N={n}", rb, rc, change, ratio_tol,
                                        change <= ratio_tol))
                if len(ns) >= min_lengths:
                    gb = _gmean([b[w][n] / b[s][n] for n in ns])
                    gc = _gmean([c[w][n] / c[s][n] for n in ns])
                    change = gc / gb - 1.0
                    checks.append(Check("ratio-gmean", group, f"{w}/{s} N={ns[0]}..{ns[-1]}", gb, gc, change,
                                        gmean_tol, change <= gmean_tol))
        for w in waves:
            ns = sorted(set(b[w]) & set(c[w]))
            if len(ns) < min_lengths:
                continue
            eb = fit_exponent(ns, [b[w][n] for n in ns])["slope"]
            ec = fit_exponent(ns, [c[w][n] for n in ns])["slope"]
            # one-sided like the rest: a steeper slope only counts when the longest length did not
            # get faster against every softmax method there (short lengths speeding up raise the
            # slope too, and that is not a regression)
            top = ns[-1]
            refs = [s for s in softs if top in b[s] and top in c[s]]
            faster_at_top = bool(refs) and all(c[w][top] / c[s][top] < b[w][top] / b[s][top] for s in refs)
            checks.append(Check("exponent", group, f"{w} N={ns[0]}..{ns[-1]}", eb, ec, ec - eb, exponent_tol,
                                ec - eb <= exponent_tol or faster_at_top))
    return checks


# ---------------------------------------------------------------------------------------------
# report


def _change_text(check: Check) -> tuple[str, str]:
    if check.metric != "exponent":
        return f"{check.change:+.1%}", f"+{check.tolerance:.0%}"
    return f"{check.change:+.3f}", f"+{check.tolerance:.2f}"


def table(checks: list[Check]) -> str:
    rows = []
    for ch in checks:
        change, tol = _change_text(ch)
        rows.append([ch.label(), f"{ch.baseline:.4g}", f"{ch.current:.4g}", change, tol,
                     "ok" if ch.ok else "REGRESSED"])
    return "\n".join(md_table(["metric", "baseline", "current", "change", "tolerance", "status"], rows))


def _worst(checks: list[Check], metric: str) -> str:
    of_kind = [c for c in checks if c.metric == metric]
    if not of_kind:
        return f"no {metric}s"
    worst = max(of_kind, key=lambda c: c.change)
    return f"worst {metric} change {_change_text(worst)[0]} ({worst.label()})"


def fraction(text: str) -> float:
    """A tolerance as a fraction (0.35) or a percentage ('35%')."""
    return positive_float(text[:-1]) / 100 if text.endswith("%") else positive_float(text)


def at_least_two(text: str) -> int:
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"{value} is below 2 (a slope needs two lengths)")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    ap = ArgParser(prog=PROG,
                   description="Compare wave/softmax time ratios and wave scaling exponents of two runs "
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
    ap.add_argument("--min-seq-len", type=int, default=0,
                    help="ignore lengths below this N in both files (the CI gate script uses 512: N=256 cells "
                         "are dominated by per-call overhead and carried most of the noise); default 0, keep all")
    ap.add_argument("--min-lengths", type=at_least_two, default=MIN_LENGTHS,
                    help=f"lengths both files must share for an exponent or a mean ratio, >= 2 (default {MIN_LENGTHS})")
    ap.add_argument("--json-out", help="also write every derived metric and verdict to this JSON file")
    ap.add_argument("--show-all", action="store_true", help="print the table of every metric, not only regressions")
    args = ap.parse_args(argv)

    base, cur = load_times(args.baseline), load_times(args.current)
    for path, got in ((args.baseline, base), (args.current, cur)):
        if not got:
            raise UsageError(f"{path} holds no usable timings (no ok rows / no benchmarks with method, level, pass, "
                             "seq_len)")
    if args.min_seq_len:
        base, cur = (drop_short(t, args.min_seq_len) for t in (base, cur))
    checks = compare(base, cur, args.ratio_tol, args.exponent_tol, args.min_lengths, args.gmean_tol)
    if not checks:
        raise UsageError(f"no comparable metrics: {args.baseline} and {args.current} share no level/pass with a "
                         f"wave* and a softmax* method at a common length, nor a wave* method at >= "
                         f"{args.min_lengths} lengths")
    if args.json_out:  # a folder that cannot take it is one line and exit 2 (run_cli)
        write_json(args.json_out, {
            "baseline": args.baseline, "current": args.current, "ratio_tol": args.ratio_tol,
            "gmean_tol": args.gmean_tol, "exponent_tol": args.exponent_tol, "min_lengths": args.min_lengths,
            "checks": [asdict(c) | {"label": c.label()} for c in checks]})

    bad = [c for c in checks if not c.ok]
    counts = ", ".join(f"{sum(c.metric == m for c in checks)} {m}" for m in ("ratio", "ratio-gmean", "exponent"))
    summary = (f"{len(checks)} metrics ({counts}); "
               + "; ".join(_worst(checks, m) for m in ("ratio", "ratio-gmean", "exponent")))
    if args.show_all:
        print(table(checks))
    if bad:
        if not args.show_all:
            print(table(bad))
        print(f"bench.regress: REGRESSED: {len(bad)} of {summary}")
        return 1
    print(f"bench.regress: ok: {summary}")
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    """main() with the suite's error handling: a UsageError is one line on stderr and exit code 2."""
    return run_cli(main, argv, prog=PROG)


if __name__ == "__main__":
    raise SystemExit(cli())

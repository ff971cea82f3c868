"""Command line of `python -m bench.quality`: run flags plus one flag per Preset field, which defaults to
None so that `parse()` knows which ones the user set. No torch import here."""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from bench.common.cli import (ArgParser, UsageError, choice_list, finite_float, nonneg_int, positive_int, seed_int,
                              thread_count)
from bench.quality.methods import METHODS
from bench.quality.presets import BUDGET_FIELDS, DEFAULT_PRESET, PRESETS, WARMUP_FIELDS, Preset, preset_fields

PROG = "python -m bench.quality"
PAIRING_METHODS = {"both": ("wave", "standard", "standard-matched"), "paper": ("wave", "standard"),
                   "matched": ("wave", "standard-matched")}
RUN_FLAGS = ("device", "max_nonfinite", "stop_after_steps", "no_progress", "threads")  # a --resume may change them
METHOD_CHOICES = tuple(METHODS)
MAX_SIZE = 2**31 - 1  # sizes past int32 overflow torch's shape checks (a C++ traceback building the model)
MAX_LR = 1e6  # far above any rate that trains; near 1e38 AdamW's float32 step (lr / (1 - beta1^t)) overflows mid-run
FIELD_TYPES = {"int": int, "float": finite_float, "str": str}  # a Preset field's flag type, by its annotation
DETERMINISTIC = ("auto", "on", "off")
NEWER_FIELDS = ("wave_mode",)  # Preset fields added after the first runs, which trained at their default


@dataclass
class Settings:
    """Everything a run needs: the resolved preset plus run options."""
    preset: Preset
    seeds: list[int] = field(default_factory=lambda: [0])
    pairing: str = "both"
    method_names: list[str] = field(default_factory=list)  # --methods; empty: the pairing's methods
    data_dir: str | None = None
    text_file: str | None = None
    out: str | None = None
    resume: str | None = None
    device: str = "auto"
    deterministic: str = "auto"
    max_nonfinite: int = 20
    inject_nan_at_step: list[int] = field(default_factory=list)
    stop_after_steps: int = 0
    no_progress: bool = False
    threads: int = 0
    overrides: list[str] = field(default_factory=list)  # preset fields set on the command line
    lr_sweep: list[float] = field(default_factory=list)  # --lr-sweep: peak LRs tried at the first seed

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(self.method_names) or PAIRING_METHODS[self.pairing]

    @property
    def lrs(self) -> list[float]:
        """The peak learning rates a run trains at: the preset's --lr (the reference) and the sweep's."""
        return sorted({self.preset.lr, *self.lr_sweep})

    def saved(self) -> dict:
        """What defines the experiment (env.json; restored by --resume): all but the run flags, --out, --resume.
        The data paths are saved absolute, so that a --resume from another folder reads the same files."""
        kept = {k: v for k, v in dataclasses.asdict(self).items() if k not in (*RUN_FLAGS, "out", "resume")}
        for name in ("data_dir", "text_file"):
            if kept[name] is not None:
                kept[name] = str(Path(kept[name]).resolve())
        return kept


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _step_list(text: str) -> list[int]:
    """'5' -> [5]; '3-7' -> [3, 4, 5, 6, 7] (1-based optimizer steps)."""
    lo, sep, hi = text.partition("-")
    try:
        steps = list(range(int(lo), int(hi if sep else lo) + 1))
    except ValueError:
        steps = []
    if not steps or steps[0] < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a step or range (expected e.g. 5 or 3-7, steps >= 1)")
    return steps


def build_parser() -> ArgParser:
    p = ArgParser(prog=PROG, description="Train WaveFieldLM and StandardLM under the same budget and report the "
                  "gap in perplexity, bits per character and accuracy.")
    run = p.add_argument_group("run")
    run.add_argument("--preset", default=None, choices=sorted(PRESETS),
                     help=f"named defaults (every field below can override it; default: {DEFAULT_PRESET})")
    run.add_argument("--list-presets", action="store_true", help="print the presets and exit")
    run.add_argument("--seeds", type=seed_int, nargs="+", default=None, metavar="SEED",
                     help="seeds; each seed trains every method (default: 0)")
    run.add_argument("--pairing", choices=tuple(PAIRING_METHODS), default=None,
                     help="paper: wave vs the paper's standard (same d_ff); matched: standard with d_ff matching "
                          "wave's parameters within 2%%; both: all three (default: both)")
    run.add_argument("--methods", type=choice_list(METHOD_CHOICES, "method"), default=None, metavar="NAME[,NAME...]",
                     help=f"methods to train instead of a --pairing, e.g. wave,standard,peer-hgrn (choices: "
                          f"{', '.join(METHOD_CHOICES)})")
    run.add_argument("--lr-sweep", type=finite_float, nargs="+", default=None, metavar="LR",
                     help="peak learning rates to try besides --lr: every method trains at each of them (and at "
                          "--lr) with the first seed, keeps the one with the lowest validation loss, and trains the "
                          "other seeds at that LR; the report shows the tuned result beside the --lr one")
    run.add_argument("--data-dir", default=None, help="folder with the WikiText-2 files (corpus wikitext2)")
    run.add_argument("--text-file", default=None, help="UTF-8 text file (corpus text-file)")
    run.add_argument("--out", default=None, help="results folder (must be new or empty); default "
                     "results/runs/<time>_<sha>_<device>_quality")
    run.add_argument("--resume", default=None, metavar="DIR",
                     help="continue the run in DIR with its saved settings (finished methods are kept)")
    run.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (under torchrun: cuda:LOCAL_RANK)")
    run.add_argument("--deterministic", choices=DETERMINISTIC, default=None,
                     help="torch.use_deterministic_algorithms: auto = on for CPU, off for CUDA (default: auto)")
    run.add_argument("--max-nonfinite", type=positive_int, default=20,
                     help="stop (exit 3, state saved) after this many non-finite steps in a row; with --lr-sweep "
                          "the job ends there as a diverged row and the run goes on (default: 20)")
    run.add_argument("--inject-nan-at-step", type=_step_list, nargs="+", default=None, metavar="STEP",
                     help=argparse.SUPPRESS)  # tests: make the loss NaN at these 1-based steps (5 or 3-7)
    # tests: save the state and stop after this many steps in this invocation, as an interruption would
    run.add_argument("--stop-after-steps", type=nonneg_int, default=0, help=argparse.SUPPRESS)
    run.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    run.add_argument("--threads", type=thread_count, default=0, help="torch CPU threads (0 = torch's default)")

    model = p.add_argument_group("preset fields (override the preset)")
    for f in preset_fields():
        kind = FIELD_TYPES[f.type]  # a string: presets.py defers annotations
        model.add_argument(_flag(f.name), dest=f.name, type=kind, default=None, choices=f.metadata.get("choices"),
                           help=f"{f.metadata.get('help', '')} (preset value if not given)")
    return p


def parse(argv: Sequence[str] | None = None) -> Settings | None:
    """Parse and resolve: None after --list-presets; UsageError (exit 2) on bad input."""
    args = build_parser().parse_args(argv)
    if args.list_presets:
        for p in PRESETS.values():
            budget = next(f"{k}={getattr(p, k)}" for k in BUDGET_FIELDS if getattr(p, k) > 0)
            print(f"{p.name:11s} D={p.d_model} L={p.n_layers} H={p.n_heads} F={p.d_ff} seq={p.seq_len} "
                  f"batch={p.batch_size} lr={p.lr:g} {budget} tokenizer={p.tokenizer}  -- {p.description}")
        return None
    given = {f.name: getattr(args, f.name) for f in preset_fields() if getattr(args, f.name) is not None}
    run_flags = {k: getattr(args, k) for k in RUN_FLAGS}
    if args.resume is not None:
        # every other option is fixed; each defaults to None
        fixed = [k for k, v in vars(args).items() if v is not None and k not in (*RUN_FLAGS, "resume", "list_presets")]
        if fixed:
            raise UsageError(f"--resume continues a run with its saved settings; drop {', '.join(map(_flag, fixed))} "
                             "(allowed with --resume: --device, --max-nonfinite, --no-progress, --threads)")
        return Settings(preset=PRESETS[DEFAULT_PRESET], resume=args.resume, **run_flags)
    if args.methods is not None and args.pairing is not None:
        raise UsageError("give either --methods or --pairing, not both")
    preset = PRESETS[args.preset or DEFAULT_PRESET]
    for group in (BUDGET_FIELDS, WARMUP_FIELDS):  # a given budget (or warm-up) flag replaces the preset's
        set_here = [k for k in group if k in given]
        if len(set_here) > 1:
            raise UsageError(f"give only one of {', '.join(map(_flag, group))} (got {', '.join(map(_flag, set_here))})")
        if set_here:
            preset = dataclasses.replace(preset, **{k: type(getattr(preset, k))(0) for k in group})
    settings = Settings(
        preset=dataclasses.replace(preset, **given), seeds=list(args.seeds or [0]),
        pairing=args.pairing or "both", method_names=sorted(args.methods or [], key=lambda m: m != "wave"),
        data_dir=args.data_dir, text_file=args.text_file, out=args.out, deterministic=args.deterministic or "auto",
        inject_nan_at_step=sorted({s for group in (args.inject_nan_at_step or []) for s in group}),
        overrides=sorted(given), lr_sweep=sorted(set(args.lr_sweep or [])), **run_flags)
    validate(settings)
    return settings


def validate(s: Settings) -> None:
    """Checks that need no data or torch, the first failing one raised; the rest (vocab, stride, data) are the run's."""
    p = s.preset
    if not s.seeds:
        raise UsageError("--seeds needs at least one seed")
    if len(set(s.seeds)) != len(s.seeds):
        raise UsageError(f"--seeds has duplicates: {s.seeds}")
    budgets = [k for k in BUDGET_FIELDS if getattr(p, k) > 0]
    if len(budgets) != 1:
        raise UsageError(f"the budget needs exactly one positive value among --steps, --epochs, --tokens "
                         f"(got {', '.join(f'{k}={getattr(p, k)}' for k in BUDGET_FIELDS)})")
    for name in ("seq_len", "batch_size", "d_model", "n_layers", "n_heads", "d_ff", "vocab_size", "min_count"):
        if not 1 <= getattr(p, name) <= MAX_SIZE:
            raise UsageError(f"{_flag(name)} must be from 1 to {MAX_SIZE:,} (got {getattr(p, name)})")
    for name in ("warmup_steps", "eval_every", "eval_batches", "test_batches", "log_every", "steps", "tokens",
                 "warmup_epochs", "epochs", "weight_decay", "grad_clip", "min_lr"):
        if getattr(p, name) < 0:
            raise UsageError(f"{_flag(name)} must be >= 0 (got {getattr(p, name)})")
    if not 0 < p.lr <= MAX_LR:
        raise UsageError(f"--lr must be positive and at most {MAX_LR:g} (got {p.lr})")
    if p.min_lr > p.lr:
        raise UsageError(f"--min-lr {p.min_lr} exceeds --lr {p.lr}")
    for lr in s.lr_sweep:
        if not (p.min_lr <= lr <= MAX_LR and lr > 0):
            raise UsageError(f"--lr-sweep value {lr} must be positive, at least --min-lr {p.min_lr} and at most "
                             f"{MAX_LR:g}")
    if not 0 <= p.dropout < 1:
        raise UsageError(f"--dropout must be in [0, 1) (got {p.dropout})")
    if not (0 <= p.beta1 < 1 and 0 <= p.beta2 < 1):
        raise UsageError(f"--beta1/--beta2 must be in [0, 1) (got {p.beta1}, {p.beta2})")
    if p.d_model % p.n_heads:
        raise UsageError(f"--d-model {p.d_model} is not divisible by --n-heads {p.n_heads}")
    if p.d_model % 2:
        raise UsageError(f"--d-model must be even for the sinusoidal positions (got {p.d_model})")
    if p.corpus == "wikitext2" and s.data_dir is not None and not Path(s.data_dir).is_dir():
        raise UsageError(f"--data-dir {s.data_dir} is not a folder (expected wiki.train.raw, wiki.valid.raw, "
                         "wiki.test.raw in it)")
    if p.corpus == "text-file" and s.text_file is None:
        raise UsageError("corpus 'text-file' needs --text-file PATH")
    for name, corpus in (("data_dir", "wikitext2"), ("text_file", "text-file")):
        if getattr(s, name) is not None and p.corpus != corpus:
            raise UsageError(f"{_flag(name)} is only used with --corpus {corpus} (corpus is {p.corpus!r})")


def _saved(name: str, value, kind=str, choices: Sequence | None = None):
    """One value of env.json's settings through the type and choices of its flag; ValueError naming the field."""
    try:
        if isinstance(value, bool) or not isinstance(value, str if kind is str else (int, float)):
            raise ValueError(f"{value!r} is not a {'string' if kind is str else 'number'}")
        parsed = kind(str(value))
    except (argparse.ArgumentTypeError, ValueError) as exc:
        raise ValueError(f"field {name}: {exc}") from None
    if choices is not None and parsed not in choices:
        raise ValueError(f"field {name}: {value!r} is not one of {', '.join(map(str, choices))}")
    return parsed


def _saved_list(saved: dict, name: str, kind=str, choices: Sequence | None = None) -> list:
    values = saved.get(name) or []  # an older env.json may lack the field
    if not isinstance(values, list):
        raise ValueError(f"field {name}: {values!r} is not a list")
    return [_saved(f"{name}[{i}]", v, kind, choices) for i, v in enumerate(values)]


def settings_from_saved(saved: dict, cli: Settings) -> Settings:
    """Rebuild the Settings of a run from env.json['settings'], keeping the run flags of `cli`. The saved values
    pass the checks their flags get (env.json may be edited or damaged): a ValueError names the first that fails."""
    fields = {f.name: f for f in dataclasses.fields(Preset)}
    missing = [f"preset.{k}" for k in fields if k not in saved["preset"] and k not in NEWER_FIELDS]
    if missing:  # a class default would silently train another model than the run's
        raise ValueError(f"field(s) {', '.join(missing)} missing")
    preset = {k: _saved(f"preset.{k}", v, FIELD_TYPES[fields[k].type], fields[k].metadata.get("choices"))
              for k, v in saved["preset"].items() if k in fields}
    settings = dataclasses.replace(
        cli, preset=Preset(**preset), seeds=_saved_list(saved, "seeds", seed_int),
        pairing=_saved("pairing", saved["pairing"], choices=tuple(PAIRING_METHODS)),
        deterministic=_saved("deterministic", saved.get("deterministic", "auto"), choices=DETERMINISTIC),
        method_names=_saved_list(saved, "method_names", choices=METHOD_CHOICES),
        inject_nan_at_step=_saved_list(saved, "inject_nan_at_step", positive_int),
        overrides=_saved_list(saved, "overrides"), lr_sweep=_saved_list(saved, "lr_sweep", finite_float), out=None,
        **{k: None if saved.get(k) is None else _saved(k, saved[k]) for k in ("data_dir", "text_file")})
    try:
        validate(settings)
    except UsageError as exc:
        raise ValueError(f"a saved value fails its flag's check: {exc}") from None
    return settings

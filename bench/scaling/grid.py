"""The sweep configuration (env.json's "sweep", reused by --resume), the per-device defaults and the --quick preset,
what one cell is, its CSV key and the order cells run in (reasons and rules: docs/method.md)."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, fields, replace

import psutil
import torch

from bench.common.cli import choice_list, positive_float, positive_int, seed_int, thread_count
from bench.scaling.schema import KEY_COLUMNS, LEVELS, PASSES


@dataclass
class SweepConfig:
    device: str
    dtype: str
    batch: int
    heads: int
    head_dim: int
    field_stride: float
    methods: list[str]
    levels: list[str]
    passes: list[str]
    seq_lens: list[int]
    floor: bool
    warmup: int
    min_run_time: float
    min_reps: int
    seed: int
    threads: int
    time_budget: float
    mem_budget_gb: float
    total_budget: float | None
    model_dim: int
    model_layers: int
    vocab: int
    quick: bool

    @classmethod
    def from_dict(cls, data: dict) -> "SweepConfig":
        """env.json's "sweep", each value checked as its flag checks it; ValueError names the field."""
        if missing := {f.name for f in fields(cls)} - set(data):
            raise KeyError(f"missing {', '.join(sorted(missing))}")
        return cls(**{f.name: _saved(f.name, data[f.name]) for f in fields(cls)})


def saved_threads(text: str) -> int:
    """--threads' rule for the count a run saved, which is the count it used (0, "all cores", is resolved first)."""
    if thread_count(text) == 0:
        raise argparse.ArgumentTypeError("0 is not a thread count (a run saves the count it used)")
    return int(text)


def saved_name(text: str) -> str:
    """A device or method a run saved: what --device auto or --methods all resolved to (an unknown name is refused
    as the flags' are, by resolve_device and the registry)."""
    if text in ("auto", "all"):
        raise argparse.ArgumentTypeError(f"{text!r} is not what a run saves (it saves what {text!r} resolved to)")
    return text


def saved_bool(text: str) -> bool:
    """A saved true or false (floor, quick: their flags take no value)."""
    if text not in ("True", "False"):
        raise argparse.ArgumentTypeError(f"{text!r} is not true or false")
    return text == "True"


# Each saved field's rule: its flag's argparse type (for a field without a flag, the same kind of rule)
SAVED_RULES = {
    "device": saved_name, "dtype": str,  # an unknown dtype is refused as --dtype's is, by resolve_dtype
    "batch": positive_int, "heads": positive_int, "head_dim": positive_int, "field_stride": positive_float,
    "methods": choice_list(["method names"], "method", saved_name),
    "levels": choice_list(LEVELS, "level"), "passes": choice_list(PASSES, "pass"),
    "seq_lens": choice_list(["positive integers"], "length", positive_int), "floor": saved_bool,
    "warmup": positive_int, "min_run_time": positive_float, "min_reps": positive_int, "seed": seed_int,
    "threads": saved_threads, "time_budget": positive_float, "mem_budget_gb": positive_float,
    "total_budget": positive_float, "model_dim": positive_int, "model_layers": positive_int, "vocab": positive_int,
    "quick": saved_bool}


def _saved(name: str, value):
    """A value of env.json's "sweep" through its rule, which must give it back unchanged: a string "8" for heads
    or a 1 for floor is damage, not a value."""
    if value is None and name == "total_budget":  # no total budget (--quick)
        return None
    text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
    try:
        parsed = SAVED_RULES[name](text)
    except argparse.ArgumentTypeError as exc:
        raise ValueError(f"field {name}: {exc}") from None
    if parsed != value:
        raise ValueError(f"field {name}: {value!r} should be saved as {parsed!r}")
    return parsed


DEVICE_DEFAULTS = {
    "cpu": dict(batch=1, dtype="float32", warmup=1, min_reps=5, time_budget=8.0, model_layers=2, mem_fraction=0.6),
    "cuda": dict(batch=8, dtype="bfloat16", warmup=3, min_reps=10, time_budget=30.0, model_layers=6, mem_fraction=0.85),
}
COMMON_DEFAULTS = dict(heads=8, head_dim=64, field_stride=4.0, min_len=512, max_len=32768, seed=0, vocab=256,
                       levels=list(LEVELS), passes=list(PASSES), min_run_time=0.2, total_budget=240.0, model_dim=256)

# --quick: a tiny grid for smoke tests and CI (seconds on a 2-core CPU)
QUICK = dict(seq_lens=[256, 512], heads=2, head_dim=16, batch=1, warmup=1, min_run_time=0.02, min_reps=3,
             time_budget=2.0, total_budget=None, model_dim=32, model_layers=1)


def default_threads(local_world: int = 1) -> int:
    """All cores for one process; shared out when several ranks run on one CPU."""
    cores = psutil.cpu_count(logical=True) or torch.get_num_threads()
    return max(1, cores // max(1, local_world)) if local_world > 1 else torch.get_num_threads()


@dataclass(frozen=True)
class CellSpec:
    """Everything a method's builder needs for one cell; the model level uses model_dim with `heads` heads."""
    level: str
    pass_: str
    batch: int
    heads: int
    head_dim: int
    seq_len: int
    device: torch.device
    dtype: torch.dtype
    field_stride: float = 4.0
    model_dim: int = 256
    model_layers: int = 2
    vocab: int = 256
    seed: int = 0

    @property
    def elem(self) -> int:
        return self.dtype.itemsize

    @property
    def d_model(self) -> int:
        return self.model_dim if self.level == "model" else self.heads * self.head_dim

    @property
    def row_head_dim(self) -> int:
        """head_dim as reported in the CSV (model level: model_dim / heads)."""
        return self.model_dim // self.heads if self.level == "model" else self.head_dim

    @property
    def d_ff(self) -> int:
        return 4 * self.model_dim

    def at(self, **changes) -> "CellSpec":
        return replace(self, **changes)


def cell_key(method: str, spec: CellSpec) -> tuple[str, ...]:
    return (method, spec.level, spec.pass_, spec.device.type, str(spec.dtype).removeprefix("torch."), str(spec.batch),
            str(spec.heads), str(spec.row_head_dim), str(spec.seq_len))


def row_key(row: dict) -> tuple[str, ...]:
    return tuple(str(row[c]) for c in KEY_COLUMNS)


def length_grid(min_len: int, max_len: int) -> list[int]:
    """min_len, 2 min_len, 4 min_len, ... up to max_len; max_len itself is added if not on the grid."""
    # min_len * 2**i <= max_len exactly while 2**i <= max_len // min_len
    lens = [min_len * 2**i for i in range((max_len // min_len).bit_length())]
    if lens[-1] != max_len:
        lens.append(max_len)
    return lens


def groups(levels: list[str], passes: list[str], seq_lens: list[int]) -> list[tuple[str, str, int]]:
    """(level, pass, seq_len) in run order: core fwd first, lengths ascending within a (level, pass)."""
    return [(lv, p, n) for lv in LEVELS if lv in levels for p in PASSES if p in passes for n in sorted(seq_lens)]


def rank_of_group(seq_len: int, seq_lens: list[int], world: int) -> int:
    """The rank that runs a length under torchrun: round-robin in ascending order (one length, one GPU)."""
    return sorted(seq_lens).index(seq_len) % world

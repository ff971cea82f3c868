"""The benchmark grid: what one cell is, its CSV key, and the order cells run in."""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from bench.scaling.schema import KEY_COLUMNS, LEVELS, PASSES


@dataclass(frozen=True)
class CellSpec:
    """Everything a method's builder needs for one cell.

    Core and layer levels use heads x head_dim (d_model = heads * head_dim); the model level uses
    model_dim with `heads` heads (its head_dim is model_dim / heads).
    """
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
    """The schema.KEY_COLUMNS values of a cell, as the strings the CSV holds."""
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
    """(level, pass, seq_len) in run order: core fwd first (what matters most), lengths ascending
    within a (level, pass), so fits and skips can use the shorter lengths already measured."""
    return [(lv, p, n) for lv in LEVELS if lv in levels for p in PASSES if p in passes for n in sorted(seq_lens)]


def rank_of_group(seq_len: int, seq_lens: list[int], world: int) -> int:
    """Which rank runs a length under torchrun: lengths dealt round-robin in ascending order.
    Every method of one length stays on one GPU, so speed ratios come from one device."""
    return sorted(seq_lens).index(seq_len) % world

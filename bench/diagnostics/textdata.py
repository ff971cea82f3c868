"""The batch of text the energy-flow and conservation checks run on: the checkpoint's own tokenizer
on the text file; else, for a random-init model with vocab >= 256, the UTF-8 bytes of the text;
else random tokens, labelled as such in every artifact."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURE_TEXT = REPO_ROOT / "tests" / "fixtures" / "tiny_corpus.txt"


def tokenizer_from_meta(meta: dict, ckpt_path: str | Path | None = None):
    """(the tokenizer a checkpoint was trained with, where it came from), or (None, why not).

    bench.quality stores meta["tokenizer"] = "tokenizer.json", relative to its run folder, and the
    checkpoint sits in <run>/checkpoints/: so the path is tried next to the checkpoint and up to
    two folders above it (an absolute path as it is), then a tokenizer.json in those folders."""
    from bench.quality.tokenizers import load_tokenizer

    bases = [Path(ckpt_path).parent, *list(Path(ckpt_path).parent.parents)[:2]] if ckpt_path is not None else []
    named = [v for v in ((meta or {}).get(k) for k in ("tokenizer_path", "tokenizer")) if isinstance(v, str) and v]
    for p in [b / v for v in named for b in bases] + [Path(v) for v in named] + [b / "tokenizer.json" for b in bases]:
        if p.is_file():
            try:
                return load_tokenizer(p), str(p)
            except Exception:  # noqa: BLE001 - a file that is not a tokenizer: try the next candidate
                continue
    return None, "no tokenizer found (meta tokenizer / tokenizer_path, or tokenizer.json beside the checkpoint)"


def text_batch(vocab_size: int, batch: int, seq_len: int, seed: int, text_file: str | Path | None = None,
               tokenizer=None, tokenizer_desc: str = "", allow_bytes: bool = False,
               device="cpu") -> tuple[torch.Tensor, str, bool]:
    """Return (idx (B, N) int64, description, is_real_text). Windows start at seeded random offsets.

    tokenizer: encodes the text (checkpoint runs); allow_bytes: with no tokenizer, use UTF-8 bytes
    as ids (random-init runs with vocab >= 256). Otherwise random tokens, labelled as such."""
    rng = np.random.default_rng(seed)
    path = Path(text_file) if text_file is not None else FIXTURE_TEXT
    ids, why = None, f"{path} not found" if not path.is_file() else f"text does not fit vocab {vocab_size}"
    if path.is_file():
        text = path.read_text(encoding="utf-8", errors="replace")
        if tokenizer is not None:
            ids = np.asarray(tokenizer.encode(text), dtype=np.int64)
            desc = f"{path.name} encoded with the checkpoint's tokenizer ({tokenizer_desc})"
        elif allow_bytes and vocab_size >= 256:
            ids = np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)
            desc = f"UTF-8 bytes of {path.name} (random-init model, vocab {vocab_size} >= 256)"
        elif not allow_bytes:
            why = tokenizer_desc or "no tokenizer"
    if ids is None or ids.size < 2 or ids.max() >= vocab_size:
        x = torch.from_numpy(rng.integers(0, vocab_size, size=(batch, seq_len))).long()
        return x.to(device), f"RANDOM TOKENS (no real text: {why})", False
    if ids.size < seq_len + 1:  # short text: repeat it
        ids = np.tile(ids, seq_len // ids.size + 2)
        desc += " (repeated to fill the window)"
    starts = rng.integers(0, ids.size - seq_len, size=batch)
    x = np.stack([ids[s:s + seq_len] for s in starts])
    return torch.from_numpy(x).long().to(device), desc, True

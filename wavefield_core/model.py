"""WaveFieldLM: the V3.5 language model (docs/mechanism.md, "The language models") around WaveFieldAttention."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from wavefield_core.attention import WaveFieldAttention
from wavefield_core.kernel import DEFAULT_NORM_CELLS


@dataclass
class LMShape:
    """The sizes every language model of the suite shares; each model's config adds its own fields."""
    vocab_size: int
    d_model: int = 256
    n_layers: int = 6
    n_heads: int = 8
    d_ff: int = 1024
    dropout: float = 0.1

    def to_kwargs(self) -> dict:
        """The constructor keywords of the model this config describes."""
        return asdict(self)


@dataclass
class WaveFieldLMConfig(LMShape):
    field_stride: float = 4.0
    mode: str = "auto"
    interference_every: int = 3
    norm_cells: int = DEFAULT_NORM_CELLS
    pos_scale: float = 1.0  # V3.5 adds unit-amplitude sinusoids to an N(0, 0.02) embedding; 0.02 is the ablation


def sinusoidal_positions(n: int, d_model: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """The fixed sin/cos position encoding, (N, D). No learned table, so no maximum length."""
    pos = torch.arange(n, device=device, dtype=torch.float32)[:, None]  # (N, 1)
    inv = torch.exp(torch.arange(0, d_model, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    pe = torch.zeros(n, d_model, device=device)
    pe[:, 0::2] = torch.sin(pos * inv)
    pe[:, 1::2] = torch.cos(pos * inv[: d_model // 2])
    return pe.to(dtype)


class FieldInterference(nn.Module):
    """V3.5's "field interference" module, inserted after every 3rd block.

    c = Linear(D, D/4)(LN(x)); m_t = (1/t) sum_{j<=t} c_j (running causal mean);
    gbar = Linear(D/4, D)(m); similarity = sigmoid(cos(Wx x, Wg gbar) / temperature),
    temperature = softplus(raw) + 0.05; gate = sigmoid(Linear(2D, D)([x, gbar]));
    out = x + gate * gbar * similarity.
    The LayerNorm on the input is what makes the parameter count land on the published
    5,727,378 + 256 V (296,513 parameters per module at D = 256).
    """

    def __init__(self, d_model: int):
        super().__init__()
        r = d_model // 4
        self.norm = nn.LayerNorm(d_model)
        self.compress = nn.Linear(d_model, r)
        self.expand = nn.Linear(r, d_model)
        self.proj_x = nn.Linear(d_model, d_model)
        self.proj_g = nn.Linear(d_model, d_model)
        self.temperature = nn.Parameter(torch.zeros(()))  # raw; softplus(0) + 0.05 = 0.74
        self.gate = nn.Linear(2 * d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        c = self.compress(self.norm(x))  # (B, N, D/4)
        # counts in float32 (float64 kept): in fp16 they are inf past 65504 tokens, in bf16 inexact past 256
        cdt = torch.float64 if c.dtype == torch.float64 else torch.float32
        count = torch.arange(1, N + 1, device=x.device, dtype=cdt)[None, :, None]  # (1, N, 1)
        m = (torch.cumsum(c, dim=1) / count).to(c.dtype)  # causal running mean: position t sees 1..t only
        gbar = self.expand(m)  # (B, N, D)
        temp = F.softplus(self.temperature) + 0.05
        sim = F.cosine_similarity(self.proj_x(x), self.proj_g(gbar), dim=-1, eps=1e-6)  # (B, N)
        sim = torch.sigmoid(sim / temp).unsqueeze(-1)  # (B, N, 1)
        gate = torch.sigmoid(self.gate(torch.cat([x, gbar], dim=-1)))
        return x + gate * gbar * sim


class WaveBlock(nn.Module):
    """Pre-LN block: x += Attn(LN(x)); x += FFN(LN(x))."""

    def __init__(self, cfg: WaveFieldLMConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = WaveFieldAttention(cfg.d_model, cfg.n_heads, field_stride=cfg.field_stride, mode=cfg.mode, norm_cells=cfg.norm_cells)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.ffn = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.d_ff), nn.GELU(), nn.Dropout(cfg.dropout),
            nn.Linear(cfg.d_ff, cfg.d_model), nn.Dropout(cfg.dropout),
        )

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.ffn(self.ln2(x))


class WaveFieldLM(nn.Module):
    """V3.5 Wave Field language model. forward(idx (B, N) int64, targets=None) -> (logits (B, N, V), loss).

    loss: mean cross-entropy over targets != -100 (padding), computed in float32; None without targets.
    Size at D=256, 6 layers, 8 heads, d_ff=1024: 5,727,378 + 256 V parameters (output head tied).
    """

    def __init__(self, vocab_size: int, d_model: int = 256, n_layers: int = 6, n_heads: int = 8, d_ff: int = 1024,
                 field_stride: float = 4.0, mode: str = "auto", dropout: float = 0.1, interference_every: int = 3,
                 norm_cells: int = DEFAULT_NORM_CELLS, pos_scale: float = 1.0):
        super().__init__()
        self.config = WaveFieldLMConfig(vocab_size, d_model, n_layers, n_heads, d_ff, dropout, field_stride=field_stride,
                                        mode=mode, interference_every=interference_every, norm_cells=norm_cells,
                                        pos_scale=pos_scale)
        self.embed = nn.Embedding(vocab_size, d_model)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(WaveBlock(self.config) for _ in range(n_layers))
        every = interference_every
        self.interference = nn.ModuleDict({
            str(i): FieldInterference(d_model) for i in range(n_layers) if every > 0 and (i + 1) % every == 0
        })
        self.ln_f = nn.LayerNorm(d_model)
        self._init_weights()

    def _init_weights(self):
        # V3.5: every Linear N(0, 0.02) with zero bias (this also resets the gate bias, see
        # WaveFieldAttention), embedding N(0, 0.02). Wave parameters keep their V3.5 init.
        for mod in self.modules():
            if isinstance(mod, nn.Linear):
                nn.init.normal_(mod.weight, 0.0, 0.02)
                if mod.bias is not None:
                    nn.init.zeros_(mod.bias)
        nn.init.normal_(self.embed.weight, 0.0, 0.02)

    @property
    def attention_layers(self) -> list[WaveFieldAttention]:
        return [b.attn for b in self.blocks]

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        B, N = idx.shape
        pos = sinusoidal_positions(N, self.config.d_model, idx.device, self.embed.weight.dtype)
        x = self.embed(idx) + (pos if self.config.pos_scale == 1.0 else pos * self.config.pos_scale)  # (B, N, D)
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            x = block(x)
            if str(i) in self.interference:
                x = self.interference[str(i)](x)
        x = self.ln_f(x)
        logits = x @ self.embed.weight.t()  # tied head, (B, N, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)
        return logits, loss

    def config_dict(self) -> dict:
        return asdict(self.config)

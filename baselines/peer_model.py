"""Peer layers and language models: the sub-quadratic mixers of baselines.peers in the same frame
as Wave Field's, so that a comparison isolates the sequence-mixing operator.

PeerMixer (x (B, N, D) -> (B, N, D)): projections, the operator per head, the same sigmoid
content gate as WaveFieldAttention, output projection, all at width D with biases:
  hgrn       x_in = silu(W_i x), forget logits W_f x; 4 D^2 matmul weights (i, f, gate, out)
  simple-gla q, k, v; log decay = logsigmoid(W_a x + b_a) / 16 per head and token (the scalar
             data-dependent gate; /16 keeps the initial decays near 1, a long memory); per-head RMS
             normalisation of the output; 5 D^2 + D H weights
  retnet     q, k, v with RetNet's fixed decays 1 - 2^(-5-h); per-head RMS normalisation; 5 D^2
  diag-ssm   v only, one complex pole per head with Wave Field's parameters and initial values
             (frequency, damping, phase; stride s); 3 D^2 + 3 H
Simplifications, on purpose: no token shift or short convolution, no rotary/xPos, no HGRN lower
bound, the gate is a sigmoid (wave's) rather than swish, normalisation has no learned weight.

PeerLM: token embedding, dropout, pre-LN blocks (x += Mixer(LN x); x += FFN(LN x)) with the
GELU FFN of both reference LMs, final LayerNorm, head tied to the embedding. No position
embedding: each peer's recurrence orders tokens by itself (as in HGRN, GLA and RetNet LMs).

impl: "torch" runs the chunked PyTorch formulation, "fla" the fla-core kernels (CUDA only),
"reference" the token loop / explicit (N, N) form (checks only), "auto" fla where it can run
(CUDA, package imports, op has an fla kernel) and torch elsewhere.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from baselines import peers
from baselines.model import count_params
from wavefield_core.model import LMShape

PEER_OPS = ("hgrn", "simple-gla", "retnet", "diag-ssm")
PEER_IMPLS = ("auto", "torch", "fla", "reference")
FLA_OPS = ("hgrn", "simple-gla", "retnet")  # the ops fla-core has a kernel for
GLA_GATE_NORMALIZER = 16.0


def _check(op: str, impl: str) -> None:
    if op not in PEER_OPS:
        raise ValueError(f"unknown peer op {op!r}; valid choices: {', '.join(PEER_OPS)}")
    if impl not in PEER_IMPLS:
        raise ValueError(f"unknown peer impl {impl!r}; valid choices: {', '.join(PEER_IMPLS)}")
    if impl == "fla" and op not in FLA_OPS:
        raise ValueError(f"peer op {op!r} has no fla kernel; valid impls: torch, reference, auto")


def resolve_impl(op: str, impl: str, device: torch.device) -> str:
    """The implementation that runs: 'torch', 'fla' or 'reference'."""
    if impl != "auto":
        return impl
    if op in FLA_OPS and peers.fla_available(device) is None:
        return "fla"
    return "torch"


def peer_core(op: str, impl: str, *args, **kw) -> torch.Tensor:
    """Dispatch to the operator of baselines.peers: hgrn (x, forget_logits); simple-gla and retnet
    (q, k, v, log_decay); diag-ssm (u, frequency, damping, phase, stride)."""
    table = {
        "hgrn": {"torch": peers.hgrn_chunked, "fla": peers.hgrn_fla, "reference": peers.hgrn_reference},
        "attn": {"torch": peers.decayed_attention_chunked, "fla": peers.decayed_attention_fla,
                 "reference": peers.decayed_attention_reference},
        "diag-ssm": {"torch": peers.diag_ssm_chunked, "reference": peers.diag_ssm_reference},
    }
    family = "attn" if op in ("simple-gla", "retnet") else op
    return table[family][impl](*args, **kw)


class PeerMixer(nn.Module):
    """A peer sequence-mixing layer, x (B, N, D) -> (B, N, D); see the module docstring."""

    def __init__(self, d_model: int, n_heads: int, op: str, impl: str = "auto", field_stride: float = 4.0,
                 dropout: float = 0.0, bias: bool = True):
        super().__init__()
        _check(op, impl)
        if n_heads <= 0 or d_model <= 0 or d_model % n_heads != 0:  # -8 % 4 == 0 passed
            raise ValueError(f"d_model={d_model} must be a positive multiple of n_heads={n_heads}")
        self.d_model, self.n_heads, self.head_dim = d_model, n_heads, d_model // n_heads
        self.op, self.impl = op, impl
        self.field_stride = float(field_stride)
        if not math.isfinite(self.field_stride) or self.field_stride <= 0:  # diag-ssm's pole: exp((-alpha + i omega) s)
            raise ValueError(f"field_stride must be a positive finite number, got {field_stride!r}")
        D, H = d_model, n_heads
        if op == "hgrn":
            self.proj = nn.Linear(D, 2 * D, bias=bias)  # input, forget logits
        elif op in ("simple-gla", "retnet"):
            self.proj = nn.Linear(D, 3 * D, bias=bias)  # q, k, v
            if op == "simple-gla":
                self.decay = nn.Linear(D, H, bias=True)
        else:
            from wavefield_core import v35_init

            self.proj = nn.Linear(D, D, bias=bias)  # v
            init = v35_init(H)
            self.frequency = nn.Parameter(init["frequency"])
            self.damping = nn.Parameter(init["damping"])
            self.phase = nn.Parameter(init["phase"])
        self.gate = nn.Linear(D, D, bias=bias)
        self.out = nn.Linear(D, D, bias=bias)
        self.drop = nn.Dropout(dropout)
        self.last_backend: str | None = None

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, n_heads={self.n_heads}, op={self.op!r}, impl={self.impl!r}"

    def _heads(self, t: torch.Tensor) -> torch.Tensor:  # (B, N, D) -> (B, H, N, d)
        B, N, _ = t.shape
        return t.view(B, N, self.n_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        impl = resolve_impl(self.op, self.impl, x.device)
        self.last_backend = impl
        p = self.proj(x)
        if self.op == "hgrn":
            i, a = p.chunk(2, dim=-1)
            y = peer_core("hgrn", impl, self._heads(F.silu(i)), self._heads(a))
        elif self.op in ("simple-gla", "retnet"):
            q, k, v = (self._heads(t) for t in p.chunk(3, dim=-1))
            if self.op == "simple-gla":
                a = self.decay(x)
                a = a if a.dtype == torch.float64 else a.float()
                log_decay = (F.logsigmoid(a) / GLA_GATE_NORMALIZER).transpose(1, 2)  # (B, H, N)
            else:  # made here, not kept as a buffer: module.to(bfloat16) would round the decays
                log_decay = peers.retnet_log_decay(self.n_heads, x.device, torch.float64 if x.dtype == torch.float64
                                                   else torch.float32)
            y = peer_core(self.op, impl, q, k, v, log_decay)
            y = F.rms_norm(y, (self.head_dim,), eps=1e-6)
        else:
            y = peer_core("diag-ssm", impl, self._heads(p), self.frequency, self.damping, self.phase,
                          self.field_stride)
        y = y.transpose(1, 2).reshape(B, N, D)
        return self.drop(self.out(torch.sigmoid(self.gate(x)) * y))


@dataclass
class PeerLMConfig(LMShape):
    op: str = "hgrn"
    field_stride: float = 4.0
    impl: str = "auto"


class PeerBlock(nn.Module):
    """Pre-LN block: x += Mixer(LN(x)); x += FFN(LN(x))."""

    def __init__(self, cfg: PeerLMConfig):
        super().__init__()
        D = cfg.d_model
        self.ln1 = nn.LayerNorm(D)
        self.attn = PeerMixer(D, cfg.n_heads, cfg.op, impl=cfg.impl, field_stride=cfg.field_stride, dropout=cfg.dropout)
        self.ln2 = nn.LayerNorm(D)
        self.ffn = nn.Sequential(nn.Linear(D, cfg.d_ff), nn.GELU(), nn.Dropout(cfg.dropout),
                                 nn.Linear(cfg.d_ff, D), nn.Dropout(cfg.dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.ffn(self.ln2(x))


class PeerLM(nn.Module):
    """Causal LM around a peer mixer. forward(idx (B, N) int64, targets (B, N) | None)
    -> (logits (B, N, V), loss or None); loss = mean cross-entropy over targets != -100, float32."""

    def __init__(self, vocab_size: int, op: str = "hgrn", d_model: int = 256, n_layers: int = 6, n_heads: int = 8,
                 d_ff: int = 1024, dropout: float = 0.1, field_stride: float = 4.0, impl: str = "auto"):
        super().__init__()
        self.config = PeerLMConfig(vocab_size, d_model, n_layers, n_heads, d_ff, dropout, op=op,
                                   field_stride=field_stride, impl=impl)
        _check(op, impl)
        self.embed = nn.Embedding(vocab_size, d_model)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(PeerBlock(self.config) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self._init_weights()

    def _init_weights(self) -> None:
        # as both reference LMs: Linear and Embedding N(0, 0.02), zero biases; the peer-specific
        # parameters (diag-ssm poles, RetNet decays) keep their own initial values
        for mod in self.modules():
            if isinstance(mod, (nn.Linear, nn.Embedding)):
                nn.init.normal_(mod.weight, 0.0, 0.02)
            if isinstance(mod, nn.Linear) and mod.bias is not None:
                nn.init.zeros_(mod.bias)

    @property
    def mixers(self) -> list[PeerMixer]:
        return [b.attn for b in self.blocks]

    def set_impl(self, impl: str) -> "PeerLM":
        """Switch every mixer's implementation (e.g. to 'reference' on a float64 copy for checks)."""
        _check(self.config.op, impl)
        self.config.impl = impl
        for m in self.mixers:
            m.impl = impl
        return self

    def backends(self) -> list[str | None]:
        """The implementation each mixer ran in the last forward."""
        return [m.last_backend for m in self.mixers]

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        x = self.drop(self.embed(idx))  # (B, N, D)
        for block in self.blocks:
            x = block(x)
        logits = self.ln_f(x) @ self.embed.weight.t()  # tied head, (B, N, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)
        return logits, loss

    def config_dict(self) -> dict:
        return self.config.to_kwargs()


def peer_params(cfg: PeerLMConfig) -> int:
    """Parameter count of the model a config builds (built on the meta device: no memory used)."""
    with torch.device("meta"):
        return count_params(PeerLM(**cfg.to_kwargs()))


def peer_matched_config(target_params: int, vocab_size: int, op: str, d_model: int, n_layers: int, n_heads: int,
                        *, multiple: int = 8, tol: float = 0.02, **kw) -> PeerLMConfig:
    """Config whose d_ff brings the parameter count nearest to target_params (width, depth and
    heads unchanged). The count is linear in d_ff (slope n_layers (2 D + 1)), so d_ff is solved
    for directly and rounded to a multiple of `multiple`. ValueError when not within `tol`."""
    base = PeerLMConfig(vocab_size=vocab_size, op=op, d_model=d_model, n_layers=n_layers, n_heads=n_heads,
                        d_ff=multiple, **kw)
    at_base = peer_params(base)
    slope = n_layers * (2 * d_model + 1)
    d_ff = max(multiple, round((base.d_ff + (target_params - at_base) / slope) / multiple) * multiple)
    cfg = dataclasses.replace(base, d_ff=d_ff)
    got = peer_params(cfg)
    if abs(got - target_params) > tol * target_params:
        raise ValueError(f"cannot match {target_params:,} parameters within {tol:.0%} by d_ff alone: best is "
                         f"d_ff={d_ff} with {got:,} (op={op}, D={d_model}, layers={n_layers}, V={vocab_size})")
    return cfg

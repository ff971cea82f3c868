"""Sub-quadratic sequence mixers a user would pick instead of Wave Field: the core operators.

Every operator works on ready per-head inputs of shape (B, H, N, d) and comes three ways:
  *_reference  the obvious definition: a Python loop over tokens, or an explicit (N, N) matrix.
               For tests and correctness checks (run it in float64).
  *_chunked    the CPU fast path: chunks of C tokens, O(N) memory, batched tensor ops; the
               "torch reference formulation" that the benchmark times where no fused kernel runs.
  *_fla        flash-linear-attention's fused Triton kernels (the `fla-core` package, CUDA only;
               imported lazily, see fla_available).

The operators (per batch b, head h; t and j index tokens, j <= t):

HGRN-style gated linear recurrence, elementwise per channel:
    f_t = sigmoid(a_t),  h_t = f_t * h_{t-1} + (1 - f_t) * x_t,  o_t = h_t
    inputs x and forget logits a, both (B, H, N, d). Time-varying (data-dependent) gates.

Decayed linear attention (simple GLA; RetNet when the decay is fixed):
    S_t = g_t S_{t-1} + k_t^T v_t   (S is d_k x d_v),   o_t = scale * q_t S_t
    i.e. o_t = scale * sum_{j<=t} (prod_{j<s<=t} g_s) (q_t . k_j) v_j.
    log_decay = log g: (B, H, N) for simple GLA (one data-dependent scalar per head and token),
    or (H,) for RetNet (a fixed decay per head, retnet_log_decay).

Diagonal SSM, "Wave Field minus its extras": one complex pole per head, u = v (no ||k||
deposit), no head coupling:
    h_t = r h_{t-1} + u_t (complex),  y_t = Re(c h_t),  r = exp((-softplus(damping) + i freq) s),
    c = exp(i phase) / Z, from wavefield_core.recurrent.pole_and_gain (the wave's own kernel).
    Linear time-invariant: the parameters do not depend on the input.

How they relate (each proved by a test in tests/test_peers.py):
  * Wave Field's token operator with identity head coupling and unit deposit (||k|| = 1) IS the
    diagonal SSM above, one complex mode per head, fixed (LTI) parameters.
  * The diagonal SSM with a real pole (freq = 0, phase = 0) is RetNet with d_k = 1 and q = k = 1
    (up to the gain 1/Z): o_t = sum_j gamma^(t-j) v_j.
  * HGRN with a constant gate f and input x = v / (1 - f) is that same real one-pole recurrence.
    More generally the LTI diagonal SSM is the constant-gate case of a complex-valued HGRN.
  * HGRN and simple GLA have data-dependent (time-varying) gates: the wave operator is NOT a
    special case of them in general (its pole is complex and its filter does not depend on the
    input; a real, input-dependent gate cannot oscillate), nor are they special cases of the wave
    operator (a fixed filter cannot gate on content).
  * Decayed linear attention routes by content (q_t . k_j); the wave operator and the diagonal
    SSM never read q.

Precision: the chunked forms compute in float32 (float64 kept) with autocast off, whatever the
input dtype, and cast the result back: cumulative decays and long recurrent sums lose too much in
bfloat16. The fla kernels keep their own precision policy (states in float32).
"""
from __future__ import annotations

import contextlib
import functools
import math

import torch
import torch.nn.functional as F

from wavefield_core.kernel import DEFAULT_NORM_CELLS
from wavefield_core.recurrent import pole_and_gain, wave_scan_conv

HGRN_CHUNK = 32  # tokens per chunk of the elementwise recurrence (the intra-chunk loop length)
ATTN_CHUNK = 64  # tokens per chunk of decayed linear attention (the (C, C) score block)
SSM_CHUNK = 32  # wavefield_core.recurrent's chunk

__all__ = [
    "ATTN_CHUNK", "HGRN_CHUNK", "SSM_CHUNK", "decayed_attention_chunked", "decayed_attention_fla",
    "decayed_attention_recurrent", "decayed_attention_reference", "diag_ssm_chunked", "diag_ssm_reference",
    "fla_available", "hgrn_chunked", "hgrn_fla", "hgrn_reference", "retnet_log_decay",
]


def _math_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _full_precision(device: torch.device):
    """Autocast off inside the chunked forms (their math dtype is chosen explicitly)."""
    if torch.is_autocast_enabled(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def _pad_tokens(t: torch.Tensor, total: int, dim: int = 2) -> torch.Tensor:
    """Zeros appended along the token axis up to `total`: after the end, so no output < N changes."""
    extra = total - t.shape[dim]
    if extra == 0:
        return t
    shape = list(t.shape)
    shape[dim] = extra
    return torch.cat([t, t.new_zeros(shape)], dim=dim)


def _shift_chunks(t: torch.Tensor, shift: int, fill: float) -> torch.Tensor:
    """t moved `shift` places later along dim 2 (chunks), the first `shift` entries set to `fill`."""
    head = torch.full_like(t[:, :, :shift], fill)
    return torch.cat([head, t[:, :, :-shift]], dim=2)


def _scan_chunks(decay: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
    """The state entering each chunk of h_m = decay_m * h_{m-1} + state_m (h_{-1} = 0), along dim 2.

    Log-depth doubling (Hillis-Steele): after the step with shift s, (decay_m, state_m) summarise
    the window of 2s chunks ending at m; the identity (decay 1, state 0) fills in before chunk 0.
    Only products of decays in (0, 1] appear, so nothing grows.
    """
    m = state.shape[2]
    shift = 1
    while shift < m:
        state = state + decay * _shift_chunks(state, shift, 0.0)
        decay = decay * _shift_chunks(decay, shift, 1.0)
        shift *= 2
    return _shift_chunks(state, 1, 0.0)


# ---------------------------------------------------------------------------------------------
# HGRN-style gated linear recurrence


def hgrn_reference(x: torch.Tensor, forget_logits: torch.Tensor) -> torch.Tensor:
    """h_t = f_t h_{t-1} + (1 - f_t) x_t with f = sigmoid(forget_logits), token by token. (B, H, N, d)."""
    f = torch.sigmoid(forget_logits)
    h = torch.zeros_like(x[:, :, 0])
    outs = []
    for t in range(x.shape[2]):
        h = f[:, :, t] * h + (1 - f[:, :, t]) * x[:, :, t]
        outs.append(h)
    return torch.stack(outs, dim=2)


def hgrn_chunked(x: torch.Tensor, forget_logits: torch.Tensor, chunk: int = HGRN_CHUNK) -> torch.Tensor:
    """The same recurrence in chunks of C tokens. x, forget_logits (B, H, N, d) -> (B, H, N, d).

    intra-chunk: the recurrence from a zero state, a loop over the C positions that runs every
      chunk at once (C steps of (B, H, N/C, d) tensors, not N steps);
    across chunks: state entering chunk m by a doubling scan over the N/C chunk-end states, with the
      chunk's total decay exp(sum log f);
    carry-in: y[m, t] += exp(G[m, t]) h_{m-1}, G = cumulative log f within the chunk (<= 0, so the
      factor never overflows; no division by small gates anywhere).
    """
    B, H, N, d = x.shape
    md = _math_dtype(x)
    with _full_precision(x.device):
        a = forget_logits.to(md)
        log_f = F.logsigmoid(a)
        u = x.to(md) * torch.sigmoid(-a)  # (1 - f) x, with 1 - f = sigmoid(-a) exactly
        C = max(1, min(chunk, N))
        M = math.ceil(N / C)
        u = _pad_tokens(u, M * C).view(B, H, M, C, d)
        log_f = _pad_tokens(log_f, M * C).view(B, H, M, C, d)
        f_pos = log_f.exp().movedim(3, 0).contiguous()  # (C, B, H, M, d): one contiguous slice per position
        u_pos = u.movedim(3, 0).contiguous()
        h = u_pos[0]
        outs = [h]
        for t in range(1, C):
            h = f_pos[t] * h + u_pos[t]
            outs.append(h)
        y = torch.stack(outs, dim=3)  # (B, H, M, C, d), from a zero state at each chunk start
        if M > 1:
            G = log_f.cumsum(dim=3)  # (B, H, M, C, d)
            h_in = _scan_chunks(G[:, :, :, -1].exp(), y[:, :, :, -1])  # (B, H, M, d) entering each chunk
            y = y + G.exp() * h_in[:, :, :, None]
        return y.reshape(B, H, M * C, d)[:, :, :N].to(x.dtype)


# ---------------------------------------------------------------------------------------------
# decayed linear attention (simple GLA, RetNet)


def retnet_log_decay(n_heads: int, device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """RetNet's fixed per-head decays, log(1 - 2^(-5 - h)) for h = 0..H-1: (H,)."""
    return torch.log1p(-torch.exp2(-5.0 - torch.arange(n_heads, device=device, dtype=dtype)))


def _expand_decay(log_decay: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """log_decay (B, H, N) or (H,) -> (B, H, N)."""
    B, H, N, _ = q.shape
    if log_decay.dim() == 1:
        return log_decay.view(1, H, 1).expand(B, H, N)
    return log_decay.expand(B, H, N)


def decayed_attention_reference(q, k, v, log_decay, scale: float | None = None) -> torch.Tensor:
    """The explicit (N, N) form: o = ((q k^T) * L) v * scale, L[t, j] = exp(G_t - G_j) for j <= t,
    0 above the diagonal, G = cumsum(log_decay). q, k (B, H, N, d_k), v (B, H, N, d_v)."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    G = _expand_decay(log_decay, q).cumsum(-1)  # (B, H, N)
    n = q.shape[2]
    future = torch.ones(n, n, dtype=torch.bool, device=q.device).triu_(1)
    L = (G[..., :, None] - G[..., None, :]).masked_fill(future, float("-inf")).exp()  # (B, H, N, N)
    return ((q @ k.transpose(-1, -2)) * L * scale) @ v


def decayed_attention_recurrent(q, k, v, log_decay, scale: float | None = None) -> torch.Tensor:
    """The recurrence as written, S_t = g_t S_{t-1} + k_t^T v_t, o_t = scale q_t S_t, token by token."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    g = _expand_decay(log_decay, q).exp()  # (B, H, N)
    B, H, N, dk = q.shape
    S = q.new_zeros(B, H, dk, v.shape[-1])
    outs = []
    for t in range(N):
        S = g[:, :, t, None, None] * S + k[:, :, t, :, None] * v[:, :, t, None, :]
        outs.append(scale * (q[:, :, t, None, :] @ S)[:, :, 0])
    return torch.stack(outs, dim=2)


def decayed_attention_chunked(q, k, v, log_decay, scale: float | None = None, chunk: int = ATTN_CHUNK) -> torch.Tensor:
    """Chunks of C tokens. q, k (B, H, N, d_k), v (B, H, N, d_v), log_decay (B, H, N) or (H,).

    G = cumulative log decay within the chunk (<= 0, decreasing), so every factor below is <= 1:
      intra-chunk:  (q k^T * D) v with D[t, j] = exp(G_t - G_j) for j <= t (a (C, C) block);
      chunk state:  s_m = sum_j exp(G_last - G_j) k_j^T v_j, carried across chunks by
                    S_m = exp(G_last) S_{m-1} + s_m (a loop over the N/C chunks, one (d_k, d_v)
                    update each: all states together are as large as one (B, H, N, d) tensor);
      carry-in:     (q_t exp(G_t)) S_{m-1}.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    B, H, N, dk = q.shape
    dv = v.shape[-1]
    md = _math_dtype(q)
    with _full_precision(q.device):
        C = max(1, min(chunk, N))
        M = math.ceil(N / C)
        qc = _pad_tokens(q.to(md) * scale, M * C).view(B, H, M, C, dk)
        kc = _pad_tokens(k.to(md), M * C).view(B, H, M, C, dk)
        vc = _pad_tokens(v.to(md), M * C).view(B, H, M, C, dv)
        G = _pad_tokens(_expand_decay(log_decay, q).to(md), M * C).view(B, H, M, C).cumsum(-1)
        future = torch.ones(C, C, dtype=torch.bool, device=q.device).triu_(1)
        D = (G[..., :, None] - G[..., None, :]).masked_fill(future, float("-inf")).exp()  # (B, H, M, C, C)
        y = ((qc @ kc.transpose(-1, -2)) * D) @ vc  # (B, H, M, C, dv)
        if M > 1:
            last = G[..., -1:]  # (B, H, M, 1)
            s = (kc * (last - G).exp()[..., None]).transpose(-1, -2) @ vc  # (B, H, M, dk, dv)
            a = last[..., 0].exp()  # (B, H, M)
            S = torch.zeros_like(s[:, :, 0])
            entering = [S]
            for m in range(M - 1):
                S = a[:, :, m, None, None] * S + s[:, :, m]
                entering.append(S)
            y = y + (qc * G.exp()[..., None]) @ torch.stack(entering, dim=2)
        return y.reshape(B, H, M * C, dv)[:, :, :N].to(v.dtype)


# ---------------------------------------------------------------------------------------------
# diagonal SSM (one complex pole per head)


def diag_ssm_reference(u: torch.Tensor, frequency, damping, phase, stride: float,
                       norm_cells: int = DEFAULT_NORM_CELLS) -> torch.Tensor:
    """h_t = r h_{t-1} + u_t, y_t = Re(c h_t) token by token; u (B, H, N, d) real -> (B, H, N, d)."""
    r, c, _ = pole_and_gain(frequency, damping, phase, float(stride), norm_cells)  # (H,) complex
    r, c = r[None, :, None], c[None, :, None]
    h = torch.zeros(u.shape[0], u.shape[1], u.shape[3], dtype=r.dtype, device=u.device)
    outs = []
    for t in range(u.shape[2]):
        h = r * h + u[:, :, t]
        outs.append((c * h).real)
    return torch.stack(outs, dim=2).to(u.dtype)


def diag_ssm_chunked(u: torch.Tensor, frequency, damping, phase, stride: float,
                     norm_cells: int = DEFAULT_NORM_CELLS, chunk: int = SSM_CHUNK) -> torch.Tensor:
    """The same operator by wavefield_core's chunked recurrence (intra-chunk Toeplitz matmul, doubling
    scan over chunk states). u (B, H, N, d) token-major -> (B, H, N, d)."""
    with _full_precision(u.device):
        md = _math_dtype(u)
        y = wave_scan_conv(u.to(md), frequency.to(md), damping.to(md), phase.to(md), float(stride), norm_cells,
                           chunk=chunk)
    return y.to(u.dtype)


# ---------------------------------------------------------------------------------------------
# flash-linear-attention (fla-core) kernels, CUDA only


@functools.lru_cache(maxsize=None)
def _fla_import_error() -> str | None:
    try:
        import fla.ops.hgrn  # noqa: F401
        import fla.ops.simple_gla  # noqa: F401
    except Exception as exc:  # ImportError, or a Triton/CUDA mismatch raised at import
        return f"{type(exc).__name__}: {exc}"
    return None


def fla_available(device: torch.device | str) -> str | None:
    """None when the fla-core kernels can run on `device`, else why not."""
    device = torch.device(device)
    if device.type != "cuda":
        return f"the fla-core kernels need a CUDA device (device is {device.type})"
    err = _fla_import_error()
    return None if err is None else f"the fla-core package does not import here ({err})"


def _require_fla(t: torch.Tensor) -> None:
    why = fla_available(t.device)
    if why is not None:
        raise RuntimeError(why)


def hgrn_fla(x: torch.Tensor, forget_logits: torch.Tensor) -> torch.Tensor:
    """HGRN through fla.ops.hgrn.chunk_hgrn, which runs h_t = exp(g_t) h_{t-1} + x_t on (B, T, D)
    with the gate in log space: here D = H * d, g = log f, input (1 - f) x."""
    _require_fla(x)
    from fla.ops.hgrn import chunk_hgrn

    B, H, N, d = x.shape

    def tokens_major(t):  # (B, H, N, d) -> (B, N, H * d)
        return t.transpose(1, 2).reshape(B, N, H * d)

    # the log gate in float32: log f of a gate near 1 keeps its digits (the kernel accumulates in float32)
    log_f = F.logsigmoid(forget_logits.float())
    o, _ = chunk_hgrn(tokens_major(x * torch.sigmoid(-forget_logits)), tokens_major(log_f))
    return o.view(B, N, H, d).transpose(1, 2)


def decayed_attention_fla(q, k, v, log_decay, scale: float | None = None) -> torch.Tensor:
    """Decayed linear attention through fla.ops.simple_gla.chunk_simple_gla ((B, T, H, d) inputs,
    one log decay per token and head (B, T, H)); a fixed (H,) decay is broadcast to that shape."""
    _require_fla(q)
    from fla.ops.simple_gla import chunk_simple_gla

    scale = q.shape[-1] ** -0.5 if scale is None else scale
    g = _expand_decay(log_decay, q).float().transpose(1, 2).contiguous()  # (B, N, H)
    o, _ = chunk_simple_gla(q=q.transpose(1, 2), k=k.transpose(1, 2), v=v.transpose(1, 2), g=g, scale=scale)
    return o.transpose(1, 2)

"""Causal softmax attention baselines.

Three interchangeable implementations of the same function, all taking ready
q, k, v of shape (B, H, N, d) and returning (B, H, N, d):

    softmax_naive       explicit (B, H, N, N) scores: the O(N^2)-memory reference
    softmax_sdpa        torch's scaled_dot_product_attention (fused kernels)
    softmax_flash_attn  the flash_attn package (CUDA, fp16/bf16 only)

plus `SoftmaxAttention`, the multi-head module (fused qkv projection, causal
attention, output projection) that the baseline language model is built from.

Dropout is applied by the module to the projected output only, never to the
attention probabilities: probability dropout makes every fused SDPA kernel on
CPU (and several on CUDA) ineligible, so the timed kernel would silently change,
and it would make the three implementations compute different functions.
"""
from __future__ import annotations

import contextlib
import functools
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------------
# naive


def softmax_naive(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal attention with the full score matrix materialised.

    q, k, v: (B, H, N, d) -> (B, H, N, d). This is deliberately the textbook
    version: every (B, H, N, N) intermediate below is written to and read back
    from memory, and autograd keeps the probabilities for backward, so both
    memory and traffic grow as N^2. Low-precision inputs get their softmax in
    float32 (exp/sum of bf16 scores loses too much) and are cast back for the
    value matmul.
    """
    B, H, N, d = q.shape
    scale = d ** -0.5
    low_precision = q.dtype in (torch.float16, torch.bfloat16)
    # read q, k (2*BHNd); write the raw scores (BHN^2) in the input dtype
    scores = q @ k.transpose(-2, -1)  # (B, H, N, N)
    if low_precision:
        # read BHN^2 low precision, write BHN^2 float32 (twice the bytes)
        scores = scores.float()
    # read + write BHN^2: the scale is applied to the scores, as written in the paper formula
    scores = scores * scale
    # (N, N) mask, True above the diagonal = a future key; shared by every batch and head
    future = torch.ones(N, N, dtype=torch.bool, device=q.device).triu_(1)
    # read BHN^2 (+ N^2 mask), write BHN^2
    scores = scores.masked_fill(future, float("-inf"))
    # read BHN^2 (row max and sum passes), write BHN^2; saved by autograd for backward
    probs = torch.softmax(scores, dim=-1)
    if low_precision:
        # read BHN^2 float32, write BHN^2 in the input dtype
        probs = probs.to(v.dtype)
    # read BHN^2 + BHNd, write BHNd
    return probs @ v  # (B, H, N, d)


# ---------------------------------------------------------------------------------------------
# torch SDPA

# user-facing backend name -> SDPBackend member name
SDPA_BACKENDS = {
    "flash": "FLASH_ATTENTION",
    "efficient": "EFFICIENT_ATTENTION",
    "cudnn": "CUDNN_ATTENTION",
    "math": "MATH",
}


def _sdp_backend_enum(backend: str):
    """Map 'flash' | 'efficient' | 'cudnn' | 'math' to torch's SDPBackend member."""
    if backend not in SDPA_BACKENDS:
        raise ValueError(f"unknown sdpa backend {backend!r}; valid choices: None, {', '.join(SDPA_BACKENDS)}")
    from torch.nn.attention import SDPBackend

    member = getattr(SDPBackend, SDPA_BACKENDS[backend], None)
    if member is None:
        # CUDNN_ATTENTION only exists from torch 2.3 on (and other members may be renamed later)
        raise RuntimeError(
            f"sdpa backend {backend!r} is not available in torch {torch.__version__} "
            f"(torch.nn.attention.SDPBackend has no {SDPA_BACKENDS[backend]})"
        )
    return member


def _pinned(backend: str | None):
    """Context that restricts SDPA to one backend, or does nothing for None."""
    if backend is None:
        return contextlib.nullcontext()
    from torch.nn.attention import sdpa_kernel

    return sdpa_kernel(_sdp_backend_enum(backend))


def softmax_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str | None = None) -> torch.Tensor:
    """Causal attention through F.scaled_dot_product_attention.

    q, k, v: (B, H, N, d) -> (B, H, N, d). backend=None lets torch choose;
    'flash' | 'efficient' | 'cudnn' | 'math' pins one kernel and raises
    RuntimeError (naming the inputs) when that kernel cannot run them.
    """
    if backend is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    ctx = _pinned(backend)
    try:
        with ctx:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    except RuntimeError as e:
        raise RuntimeError(
            f"sdpa backend {backend!r} cannot run these inputs (device={q.device.type}, dtype={q.dtype}, "
            f"shape={tuple(q.shape)}, requires_grad={q.requires_grad}): {e}"
        ) from e


# SDPBackend integer value -> reported name. On CPU torch's FLASH_ATTENTION is its own
# flash-style CPU kernel, not the CUDA flash kernel, so it gets a distinct name.
_CHOICE_NAMES = {0: "math", 1: "flash", 2: "efficient", 3: "cudnn", 4: "overrideable"}


def _report_name(choice: str, device: torch.device) -> str:
    return "cpu-flash" if (device.type == "cpu" and choice == "flash") else choice


def _enabled_in_priority_order() -> list[str]:
    """Globally enabled SDPA backends, in the order torch's dispatcher tries them."""
    try:
        order = [_CHOICE_NAMES.get(int(i)) for i in torch._C._get_sdp_priority_order()]
    except (AttributeError, RuntimeError):
        # torch without the priority-order query: its fixed default order
        order = ["flash", "efficient", "math", "cudnn"]
    enabled = {
        "flash": torch.backends.cuda.flash_sdp_enabled(),
        "efficient": torch.backends.cuda.mem_efficient_sdp_enabled(),
        "math": torch.backends.cuda.math_sdp_enabled(),
        "cudnn": getattr(torch.backends.cuda, "cudnn_sdp_enabled", lambda: False)(),
    }
    return [b for b in order if enabled.get(b, False)]


def _runs(q, k, v, backend: str) -> bool:
    """Whether SDPA pinned to `backend` runs these inputs (forward only, result discarded)."""
    try:
        member = _sdp_backend_enum(backend)
    except RuntimeError:
        return False
    from torch.nn.attention import sdpa_kernel

    with warnings.catch_warnings():
        # a refused kernel warns with its reasons before raising; the refusal is the answer here
        warnings.simplefilter("ignore")
        try:
            with sdpa_kernel(member):
                F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return True
        except RuntimeError:
            return False


def sdpa_backend_that_runs(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str | None = None, method: str = "auto"
) -> str:
    """Name of the kernel `softmax_sdpa(q, k, v, backend)` runs for these inputs.

    Returns 'cpu-flash' or 'math' on CPU (torch's CPU flash-style kernel covers
    fp32/bf16/fp16/fp64 when no probability dropout is needed), and 'flash',
    'efficient', 'cudnn' or 'math' on CUDA.

    method='choice' asks torch._fused_sdp_choice, the very function the SDPA
    dispatcher calls, so the answer is exact and no kernel runs. method='trial'
    runs SDPA pinned to each globally enabled backend in torch's priority order
    and returns the first that does not raise (one extra forward per tried
    backend). 'auto' uses 'choice' when this torch has it, else 'trial'. With
    `backend` given, the pinned kernel is tried and RuntimeError is raised if it
    cannot run.
    """
    if method not in ("auto", "choice", "trial"):
        raise ValueError(f"unknown method {method!r}; valid choices: auto, choice, trial")
    if backend is not None:
        if not _runs(q, k, v, backend):
            raise RuntimeError(
                f"sdpa backend {backend!r} cannot run these inputs (device={q.device.type}, dtype={q.dtype}, "
                f"shape={tuple(q.shape)})"
            )
        return _report_name(backend, q.device)
    if method in ("auto", "choice") and hasattr(torch, "_fused_sdp_choice"):
        idx = int(torch._fused_sdp_choice(q, k, v, is_causal=True))
        if idx not in _CHOICE_NAMES:
            raise RuntimeError(f"torch found no SDPA backend for these inputs (choice={idx})")
        return _report_name(_CHOICE_NAMES[idx], q.device)
    if method == "choice":
        raise RuntimeError(f"torch {torch.__version__} has no torch._fused_sdp_choice; use method='trial'")
    # CPU dispatch only ever picks its flash kernel or math, whatever the CUDA flags say
    order = ["flash", "math"] if q.device.type == "cpu" else _enabled_in_priority_order()
    for name in order:
        if _runs(q, k, v, name):
            return _report_name(name, q.device)
    raise RuntimeError(f"no SDPA backend runs these inputs (tried {', '.join(order)})")


# ---------------------------------------------------------------------------------------------
# flash_attn package


@functools.lru_cache(maxsize=None)
def flash_attn_available() -> bool:
    """True when the flash_attn package imports (its CUDA extension loads with it)."""
    try:
        import flash_attn  # noqa: F401
    except Exception:  # ImportError, or OSError/RuntimeError from a mismatched CUDA build
        return False
    return True


def softmax_flash_attn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal attention through flash_attn.flash_attn_func.

    q, k, v: (B, H, N, d) -> (B, H, N, d); CUDA fp16/bf16 only. flash_attn wants
    (B, N, H, d), so heads are moved with a transpose (a view: the last dim stays
    contiguous, which is all the kernel requires).
    """
    if not flash_attn_available():
        raise RuntimeError("impl 'flash_attn' needs the flash_attn package, which does not import here "
                           "(pip install flash-attn on a CUDA machine, or use impl 'sdpa')")
    if q.device.type != "cuda" or q.dtype not in (torch.float16, torch.bfloat16):
        raise RuntimeError(f"flash_attn runs CUDA float16/bfloat16 only; got device={q.device.type}, dtype={q.dtype}")
    from flash_attn import flash_attn_func

    d = q.shape[-1]
    out = flash_attn_func(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),  # (B, N, H, d)
        dropout_p=0.0, softmax_scale=d ** -0.5, causal=True,
    )  # (B, N, H, d)
    return out.transpose(1, 2)  # (B, H, N, d)


SOFTMAX_IMPLS = {
    "naive": softmax_naive,
    "sdpa": softmax_sdpa,
    "flash_attn": softmax_flash_attn,
}


# ---------------------------------------------------------------------------------------------
# module


def _is_compiling() -> bool:
    fn = getattr(getattr(torch, "compiler", None), "is_compiling", None)
    return bool(fn()) if fn is not None else False


class SoftmaxAttention(nn.Module):
    """Multi-head causal softmax self-attention.

    x (B, N, D) -> (B, N, D): fused qkv Linear(D, 3D), split into H heads of
    d = D / H, causal attention with `impl`, merge heads, Linear(D, D), dropout.
    `last_backend` names the kernel the most recent forward ran ('naive',
    'flash_attn', or an SDPA backend as reported by sdpa_backend_that_runs).
    """

    def __init__(self, d_model: int, n_heads: int, impl: str = "sdpa", sdpa_backend: str | None = None,
                 dropout: float = 0.0, bias: bool = True):
        super().__init__()
        if impl not in SOFTMAX_IMPLS:
            raise ValueError(f"unknown attention impl {impl!r}; valid choices: {', '.join(SOFTMAX_IMPLS)}")
        if n_heads <= 0 or d_model <= 0 or d_model % n_heads != 0:  # -8 % 4 == 0 passed
            raise ValueError(f"d_model={d_model} must be a positive multiple of n_heads={n_heads}")
        if sdpa_backend is not None:
            if impl != "sdpa":
                raise ValueError(f"sdpa_backend only applies to impl 'sdpa' (got impl {impl!r}); "
                                 f"valid sdpa_backend choices: None, {', '.join(SDPA_BACKENDS)}")
            _sdp_backend_enum(sdpa_backend)  # ValueError for unknown names, RuntimeError if torch lacks it
        if impl == "flash_attn" and not flash_attn_available():
            # fail at build time rather than at the first forward of a long run
            raise RuntimeError("impl 'flash_attn' needs the flash_attn package, which does not import here; "
                               f"valid choices that run here: {', '.join(k for k in SOFTMAX_IMPLS if k != 'flash_attn')}")
        self.d_model, self.n_heads, self.head_dim = d_model, n_heads, d_model // n_heads
        self.impl, self.sdpa_backend = impl, sdpa_backend
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.proj = nn.Linear(d_model, d_model, bias=bias)
        self.drop = nn.Dropout(dropout)
        self.last_backend: str | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        H, d = self.n_heads, self.head_dim
        qkv = self.qkv(x).view(B, N, 3, H, d)  # (B, N, 3, H, d)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, H, N, d), strided views, no copy
        if self.impl == "sdpa":
            if self.sdpa_backend is not None:
                # pinned: that kernel runs or softmax_sdpa raises, so no query is needed
                self.last_backend = _report_name(self.sdpa_backend, x.device)
            elif not _is_compiling():
                # exact and cheap on current torch: a dispatcher query, no kernel run
                self.last_backend = sdpa_backend_that_runs(q, k, v)
            y = softmax_sdpa(q, k, v, self.sdpa_backend)
        else:
            self.last_backend = self.impl
            y = SOFTMAX_IMPLS[self.impl](q, k, v)
        y = y.transpose(1, 2).reshape(B, N, D)  # (B, H, N, d) -> (B, N, H, d) -> (B, N, D)
        return self.drop(self.proj(y))

    def backend_name(self) -> str | None:
        """Kernel the last forward ran, None before the first forward."""
        return self.last_backend

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, n_heads={self.n_heads}, impl={self.impl!r}, sdpa_backend={self.sdpa_backend!r}"

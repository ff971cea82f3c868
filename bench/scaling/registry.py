"""The method registry: every benchmarked method is one Method record (data, not code), naming its builder, memory
estimate, cost, correctness check and availability, bound with functools.partial."""
from __future__ import annotations

import importlib.util
import os
import shutil

from dataclasses import dataclass, replace
from functools import partial
from typing import Callable

import torch
import torch.nn.attention

from bench.scaling import budget, builders, costs, peers
from bench.scaling.grid import CellSpec
from bench.scaling.schema import LEVELS, PASSES
from wavefield_core import check_stride

# tiers: run order and protection (docs/method.md, "Run order")
HEADLINE, FIRST, EXTRA = 0, 1, 2


@dataclass(frozen=True)
class Method:
    name: str
    kind: str  # one of bench.common.timings.KINDS
    description: str
    build: Callable[[CellSpec], builders.Built]
    memory: Callable[[CellSpec], float]
    cost: Callable[[CellSpec], costs.Cost]
    check: Callable[[CellSpec], builders.CheckResult]
    # (device, dtype=None) -> None if the method runs on this device (in this dtype, when given), else why not
    why_unavailable: Callable[..., "str | None"]
    levels: tuple[str, ...] = LEVELS
    passes: tuple[str, ...] = PASSES
    default: bool = False  # in the default set
    tier: int = EXTRA
    uses_stride: bool = False  # its operator reads the field stride (recorded in the row)
    integer_stride: bool = False  # a token-level wave operator: exact (and runnable) only for integer strides

    def supports(self, level: str, pass_: str) -> bool:
        return level in self.levels and pass_ in self.passes


def _always(device: torch.device, dtype=None) -> None:
    return None


def _half_only(what: str, dtype) -> str | None:
    if dtype is not None and dtype not in (torch.bfloat16, torch.float16):
        return f"{what} has kernels for bfloat16/float16 only (dtype is {str(dtype).replace('torch.', '')})"
    return None


# baselines is imported inside the availability checks: importing the registry (bench.common.timings does, for the
# method kinds) must not need it, so a broken baselines import only turns the softmax and peer cells into error rows


def _flash_attn(device: torch.device, dtype=None) -> str | None:
    from baselines import flash_attn_available

    if device.type != "cuda":
        return f"needs a CUDA device (device is {device.type})"
    if not flash_attn_available():
        return "the flash_attn package does not import here"
    return _half_only("flash_attn", dtype)


def _sdpa_pinned(backend: str, cuda_only: bool, device: torch.device, dtype=None) -> str | None:
    from baselines.attention import SDPA_BACKENDS

    enum = SDPA_BACKENDS[backend]
    if not hasattr(torch.nn.attention.SDPBackend, enum):
        return f"torch {torch.__version__} has no SDPBackend.{enum}"
    if cuda_only and device.type != "cuda":
        return f"a CUDA-only SDPA kernel (device is {device.type})"
    if device.type == "cuda" and backend in ("flash", "cudnn"):
        # decided before any time is spent: pinned to a backend with no kernel for the dtype, SDPA
        # would raise at every length
        return _half_only(f"SDPA's {backend} backend on CUDA", dtype)
    return None


def _cuda(device: torch.device, dtype=None) -> str | None:
    if device.type != "cuda":
        return f"CUDA graphs need a CUDA device (device is {device.type})"
    return None


def _triton(device: torch.device, dtype=None) -> str | None:
    from wavefield_core.triton_scan import triton_available

    if dtype == torch.float64:
        return "the Triton kernels take float32, bfloat16 or float16"
    return triton_available(device)


def _compiler(device: torch.device, dtype=None) -> str | None:
    """torch.compile's inductor needs a C++ compiler on CPU and triton on CUDA."""
    if device.type == "cuda":
        if importlib.util.find_spec("triton") is None:
            return "torch.compile on CUDA needs triton, which is not installed"
        return None
    cxx = os.environ.get("CXX", "g++")
    if shutil.which(cxx) is None and shutil.which("c++") is None:
        return f"torch.compile on CPU needs a C++ compiler ({cxx} not found)"
    return None


def _wave(name: str, path: str, description: str, v_layout: str = "bhdn", default: bool = True, levels=LEVELS,
          compiled: bool = False, tier: int = EXTRA) -> Method:
    return Method(name, "wave", description,
                  build=partial(builders.build_wave, path=path, v_layout=v_layout, compiled=compiled),
                  memory=partial(budget.wave_memory, path=path),
                  cost=partial(costs.method_cost, "wave", path),
                  check=partial(builders.check_wave, path=path, v_layout=v_layout, compiled=compiled),
                  why_unavailable=_compiler if compiled else _always, default=default, levels=levels, tier=tier,
                  uses_stride=True, integer_stride=path != "field")


def _softmax(name: str, impl: str, backend: str | None, description: str, available, default: bool = False,
             tier: int = EXTRA) -> Method:
    return Method(name, "softmax", description,
                  build=partial(builders.build_softmax, impl=impl, sdpa_backend=backend),
                  memory=partial(budget.softmax_memory, impl=impl, sdpa_backend=backend),
                  cost=partial(costs.method_cost, "softmax", None),
                  check=partial(builders.check_softmax, impl=impl, sdpa_backend=backend),
                  why_unavailable=available, default=default, tier=tier)


def _graphed(base: Method, description: str) -> Method:
    """base's core cells replayed from a CUDA graph: what the GPU executes, without per-call host overhead."""
    return replace(base, name=f"{base.name}-graphed", description=description, default=False, tier=EXTRA,
                   levels=("core",), why_unavailable=_cuda, build=partial(builders.build_graphed, build=base.build))


def _floor(name: str, path: str, description: str) -> Method:
    return Method(name, "reference", description,
                  build=partial(builders.build_floor, path=path),
                  memory=partial(budget.floor_memory, path=path),
                  cost=partial(costs.floor_cost, path=path),
                  check=partial(builders.check_floor, path=path),
                  why_unavailable=_always, levels=("core",), passes=("fwd",), tier=HEADLINE, uses_stride=True)


PINNED_SDPA = [("flash", False, "SDPA pinned to its flash kernel (cpu-flash on CPU)"),
               ("cudnn", True, "SDPA pinned to cuDNN attention"),
               ("efficient", True, "SDPA pinned to memory-efficient attention"),
               ("math", False, "SDPA pinned to its math (materialising) kernel")]
METHODS: dict[str, Method] = {m.name: m for m in [
    _wave("wave", "token", "Wave Field, exact token fast path (FFT size ~2N); core: v channel-major, as its layer "
          "makes it", tier=HEADLINE),
    _wave("wave-bhnd", "token", "wave with v in (B,H,N,d) like SDPA's: the core pays the transpose (core only)",
          v_layout="bhnd", default=False, levels=("core",)),
    _wave("wave-compiled", "token", "wave through torch.compile (inductor); compile time in setup_s, not in the "
          "timings (core only, opt-in)", default=False, levels=("core",), compiled=True),
    _wave("wave-scan", "scan", "Wave Field, the token operator as an exact O(N) one-pole recurrence (no FFT); "
          "core: v token-major, the layout its chunked matmuls use", v_layout="bhnd"),
    replace(_wave("wave-triton", "triton", "Wave Field token operator as one-pole recurrence in fused Triton kernels "
                  "(one pass over memory; CUDA)", default=False, tier=FIRST), why_unavailable=_triton),
    _wave("wave-field", "field", "Wave Field, faithful field path (G = ceil((N-1)s)+2 cells, FFT size ~2sN)"),
    _softmax("softmax-sdpa", "sdpa", None, "causal softmax, torch SDPA (torch picks the kernel)", _always, default=True,
             tier=HEADLINE),
    _softmax("softmax-naive", "naive", None, "causal softmax, explicit (B,H,N,N) scores", _always, default=True,
             tier=FIRST),
    _softmax("softmax-flash-attn", "flash_attn", None, "causal softmax, flash_attn package (CUDA bf16/fp16)",
             _flash_attn),
    *[_softmax(f"softmax-sdpa-{b}", "sdpa", b, text, partial(_sdpa_pinned, b, cuda_only))
      for b, cuda_only, text in PINNED_SDPA],
    _graphed(_wave("wave", "token", ""), "wave replayed from a CUDA graph (core; no Python or launch overhead)"),
    _graphed(_softmax("softmax-sdpa", "sdpa", None, "", _always), "softmax-sdpa replayed from a CUDA graph (core)"),
    # sub-quadratic peers (torch formulations everywhere, fla-core kernels on CUDA): bench/scaling/peers.py
    *peers.methods(Method),
    _floor("fft-floor", "token", "reference: bare rfft * cached spectrum -> irfft at the wave core's shape"),
    _floor("fft-floor-field", "field", "reference: the same at the field size of wave-field"),
]}

FLOOR_METHODS = ("fft-floor", "fft-floor-field")
DEFAULT_METHODS = tuple(name for name, m in METHODS.items() if m.default)


def chosen_methods(methods, floor: bool) -> list[str]:
    """The methods asked for, plus the fft floors (core fwd only) unless --no-floor."""
    return list(dict.fromkeys([*methods, *(FLOOR_METHODS if floor else ())]))


def default_methods(device: torch.device, dtype: torch.dtype) -> list[str]:
    """DEFAULT_METHODS, and softmax-flash-attn (the strongest softmax baseline) where it runs: CUDA bf16/fp16."""
    names = list(DEFAULT_METHODS)
    if METHODS["softmax-flash-attn"].why_unavailable(device, dtype) is None:
        names.append("softmax-flash-attn")
    return names


def stride_refusal(stride: float, names, flag: str = "--field-stride") -> str | None:
    """Why the methods `names` cannot run at this field stride, or None: a leaking stride for any method, a
    non-integer one for the token-level wave operators (they raise at every cell). `flag`: where the stride came
    from, as the message names it."""
    try:
        check_stride(stride)
    except ValueError as exc:
        return f"{flag}: {exc}"
    need = [n for n in names if METHODS[n].integer_stride]
    if float(stride).is_integer() or not need:
        return None
    return (f"{flag} {stride:g}: {', '.join(need)} need an integer stride (the token-level operator is exact "
            "only there); give an integer stride, or leave them out (wave-field takes any stride >= 2)")


def method_table(device: torch.device) -> list[list[str]]:
    """Rows for --list-methods: name, kind, levels, passes, default, available here (or why not)."""
    rows = []
    for m in METHODS.values():
        why = m.why_unavailable(device)
        rows.append([m.name, m.kind, ",".join(m.levels), ",".join(m.passes),
                     "yes" if m.default or m.name in FLOOR_METHODS else "",
                     "yes" if why is None else f"no: {why}", m.description])
    return rows

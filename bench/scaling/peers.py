"""Sub-quadratic peer methods as registry Method records (kind "peer", every level and pass, none default): peer-<op>
runs the chunked PyTorch formulation of baselines/peers.py on any device, peer-<op>-fla fla-core's Triton kernels
(CUDA only). Core inputs come from the draw every method of one length shares: hgrn x = v, forget logits = k;
simple-gla q, k, v and a log decay (an input: it gets a gradient); retnet q, k, v and RetNet's fixed decays; diag-ssm
v and the wave methods' frequency, damping and phase. Layer: PeerMixer; model: PeerLM (d_ff = 4 D)."""
from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F

from bench.scaling import budget, builders, costs
from bench.scaling.grid import CellSpec

# baselines is imported inside the functions that use it (as in builders): importing the registry must not need it

FLA_OPS = ("hgrn", "simple-gla", "retnet")
INPUTS = {"hgrn": 2, "simple-gla": 3, "retnet": 3, "diag-ssm": 1}  # (B, H, N, d) tensors the core reads
GATE_NORMALIZER = 16.0

DESCRIPTIONS = {
    "hgrn": "HGRN-style gated linear recurrence h = f h + (1 - f) x, elementwise data-dependent forget gate",
    "simple-gla": "simple GLA: decayed linear attention, one data-dependent scalar decay per head and token",
    "retnet": "RetNet retention: decayed linear attention with a fixed decay per head",
    "diag-ssm": "diagonal SSM, one complex pole per head: Wave Field without ||k|| deposit and head coupling",
}
IMPL_NOTES = {"torch": "torch reference formulation (chunked PyTorch, float32 math; fla-core has no CPU kernels, so on "
                       "CPU this is the method)", "fla": "flash-linear-attention kernel {kernel} (fla-core, CUDA only)"}


def _fla_kernel(op: str) -> str:  # retnet is simple GLA with fixed decays
    return "hgrn.chunk_hgrn" if op == "hgrn" else "simple_gla.chunk_simple_gla"


def _core_inputs(op: str, q, k, v, spec: CellSpec, seed: int):
    """(inputs that get gradients, extra fixed arguments) of the core for op; decays and wave parameters in float32."""
    from baselines.peers import retnet_log_decay

    if op == "hgrn":
        return [v, k], []
    if op == "simple-gla":
        # log decay (B, H, N) <= 0: logsigmoid(N(0, 1)) / 16, from its own generator
        z = torch.randn(spec.batch, spec.heads, spec.seq_len, generator=torch.Generator().manual_seed(seed + 1),
                        dtype=torch.float64)
        return [q, k, v, (F.logsigmoid(z) / GATE_NORMALIZER).to(q.device, q.dtype)], []
    if op == "retnet":
        return [q, k, v], [retnet_log_decay(spec.heads, q.device)]
    return [v, *builders.wave_params(spec.heads, q.device, seed)[:3]], []


def core_function(op: str, impl: str, stride: float):
    """inputs... -> y (B, H, N, d) for op with impl 'torch', 'fla' or 'reference' (diag-ssm also reads the stride)."""
    from baselines.peer_model import peer_core

    return partial(peer_core, op, impl, **({"stride": stride} if op == "diag-ssm" else {}))


def peer_module(spec: CellSpec, op: str, impl: str):
    """PeerMixer (layer level) or PeerLM (model level) of a cell."""
    from baselines.peer_model import PeerLM, PeerMixer

    if spec.level == "layer":
        return PeerMixer(spec.d_model, spec.heads, op, impl=impl, field_stride=spec.field_stride)
    return PeerLM(spec.vocab, op, d_model=spec.model_dim, n_layers=spec.model_layers, n_heads=spec.heads,
                  d_ff=spec.d_ff, field_stride=spec.field_stride, impl=impl)


def build_peer(spec: CellSpec, op: str, impl: str) -> builders.Built:
    """peer-* methods at any level; impl 'torch' (chunked PyTorch) or 'fla' (fla-core kernels)."""
    kernel = "fla-" + _fla_kernel(op).split(".")[1] if impl == "fla" else "torch-chunked"

    def backend() -> str:
        return kernel
    if spec.level == "core":
        q, k, v = builders.qkv(spec)  # the draw every method of this length shares
        wrt, extra = _core_inputs(op, q, k, v, spec, spec.seed)
        forward = partial(core_function(op, impl, spec.field_stride), *wrt, *extra)
        return builders.core_cell(spec, forward, wrt, v.shape, backend)
    torch.manual_seed(spec.seed)
    module = peer_module(spec, op, impl)
    if spec.level == "layer":
        return builders.layer_cell(spec, module, backend)
    return builders.model_cell(spec, module, backend)


def check_peer(spec: CellSpec, op: str, impl: str) -> builders.CheckResult:
    """builders' check against the peer's float64 reference (core gradients: every input, parameters included)."""
    spec = builders.small_spec(spec)
    s = spec.field_stride
    if spec.level == "core":
        wrt, extra = _core_inputs(op, *builders.qkv(spec, check=True), spec, spec.seed + 7)
        return builders.compare_core(spec, core_function(op, impl, s), core_function(op, "reference", s), wrt, extra)
    make = partial(peer_module, spec, op, impl)
    if spec.level == "layer":
        def reference(layer):  # the check's CPU copy, in float64 on the reference implementation
            layer = layer.double()
            layer.impl = "reference"
            return layer
        return builders.compare_layer(spec, make, reference)
    return builders.compare_model(spec, make, lambda model: model.set_impl("reference"))


def available(impl: str, device: torch.device, dtype: torch.dtype | None = None) -> str | None:
    """torch: always; fla: CUDA with fla-core importable (float32, bfloat16, float16)."""
    if impl == "torch":
        return None
    from baselines.peers import fla_available

    return fla_available(device)


# cost model: elementwise operations one FLOP each (exp and sigmoid too), matmuls 2 per multiply-add, fwdbwd = 3 x
# fwd, the same for torch and fla. With R = B H d rows, C the chunk, M = ceil(N / C), N' = M C:
#   hgrn    fwd = R N' 11 + R M 3 log2 M   (gate and (1 - f) x: 4; f = exp log f: 1; intra-chunk step: 2;
#           cumulative log decay and its exp: 2; carry-in: 2; doubling scan: 3 per state)
#   simple-gla, retnet   fwd = B H [N' (4 C d + 3 C + 4 d^2 + 4 d + 3) + 2 M d^2]   ((C, C) scores and their
#           product with v: 4 C d; decay mask: 3 C; chunk states and carry-in: 4 d^2; q scale, decayed k and q,
#           carry-in add: 4 d; decay factors: 3; state loop: 2 d^2)
#   diag-ssm    costs.scan_flops (the wave-scan path's chunked recurrence, and its fwdbwd 2.5 x fwd)


def core_flops(op: str, b: int, h: int, n: int, d: int, pass_: str) -> float:
    from baselines.peers import ATTN_CHUNK, HGRN_CHUNK, SSM_CHUNK

    if op == "diag-ssm":
        return costs.scan_flops(b, h, n, d, pass_, chunk=SSM_CHUNK)
    c = max(1, min(HGRN_CHUNK if op == "hgrn" else ATTN_CHUNK, n))
    m = math.ceil(n / c)
    if op == "hgrn":
        rows = b * h * d
        fwd = rows * m * c * 11.0 + rows * m * 3.0 * (math.log2(m) if m > 1 else 0.0)
    else:
        fwd = b * h * (m * c * (4.0 * c * d + 3.0 * c + 4.0 * d * d + 4.0 * d + 3.0) + 2.0 * m * d * d)
    return fwd * costs.MATMUL_PASS_MULT[pass_]


def core_bytes(op: str, b: int, h: int, n: int, d: int, elem: int, pass_: str) -> float:
    """Inputs read once, output written once; fwdbwd adds dy read and the input gradients written."""
    unit = b * h * n * d * elem
    io = (INPUTS[op] + 1) * unit + (b * h * n * elem if op == "simple-gla" else 0)
    return io if pass_ == "fwd" else 2 * io


def mixer_matmul_params(op: str, d_model: int, n_heads: int) -> int:
    """Matmul weights of one PeerMixer (projections, gate, output)."""
    return {"hgrn": 4, "simple-gla": 5, "retnet": 5, "diag-ssm": 3}[op] * d_model * d_model + \
        (d_model * n_heads if op == "simple-gla" else 0)


def peer_cost(op: str, spec: CellSpec) -> costs.Cost:
    b, h, n, d, p = spec.batch, spec.heads, spec.seq_len, spec.row_head_dim, spec.pass_
    core = costs.Cost(core_flops(op, b, h, n, d, p), core_bytes(op, b, h, n, d, spec.elem, p))
    return costs.level_cost(spec, core, mixer_matmul_params(op, spec.d_model, h))


# Peak above the inputs, (fwd, fwdbwd) in float32 (B, H, N, d) units: torch-profiler peaks of the torch formulation
# on CPU with about 50% margin (generous, like bench.scaling.budget's); fla's fused kernels keep less, same allowance.
CORE_UNITS = {"hgrn": (12.0, 24.0), "simple-gla": (8.0, 24.0), "retnet": (8.0, 24.0), "diag-ssm": (8.0, 18.0)}


def core_memory_bytes(op: str, b: int, h: int, n: int, d: int, elem: int, pass_: str) -> float:
    from baselines.peers import ATTN_CHUNK

    fwd = pass_ == "fwd"
    extra = 0.0
    if op in ("simple-gla", "retnet"):  # (C, C) score blocks and (d, d) chunk states, float32
        c = max(1, min(ATTN_CHUNK, n))
        m = math.ceil(n / c)
        blocks, states = b * h * m * c * c * 4, b * h * m * d * d * 4
        extra = (3 * blocks + 2 * states) if fwd else (6 * blocks + 4 * states)
    inputs, f32 = INPUTS[op] * b * h * n * d * elem, b * h * n * d * 4
    return (1 if fwd else 2) * inputs + CORE_UNITS[op][0 if fwd else 1] * f32 + extra


def methods(method_cls) -> list:
    """The peer Method records, made with registry.Method (passed in: registry.py imports this module)."""
    out = []
    for impl, op in [("torch", op) for op in DESCRIPTIONS] + [("fla", op) for op in FLA_OPS]:
        note = IMPL_NOTES[impl].format(kernel=f"fla.ops.{_fla_kernel(op)}")
        out.append(method_cls(
            f"peer-{op}" + ("-fla" if impl == "fla" else ""), "peer", f"{DESCRIPTIONS[op]}; {note}",
            build=partial(build_peer, op=op, impl=impl),
            memory=partial(budget.level_memory, core_bytes=partial(core_memory_bytes, op)),
            cost=partial(peer_cost, op),
            check=partial(check_peer, op=op, impl=impl),
            why_unavailable=partial(available, impl),
            uses_stride=op == "diag-ssm",
        ))
    return out

"""Sub-quadratic peer methods for the scaling benchmark, as registry Method records.

    from bench.scaling import peers
    METHODS = {m.name: m for m in [..., *peers.methods()]}

Methods (kind "peer"; levels core, layer, model; passes fwd, fwdbwd; none in the default set):
  peer-hgrn, peer-simple-gla, peer-retnet, peer-diag-ssm   the chunked PyTorch formulations of
      baselines/peers.py, run on any device: the torch reference formulation, which is the method
      on CPU (fla-core has no CPU kernels)
  peer-hgrn-fla, peer-simple-gla-fla, peer-retnet-fla      flash-linear-attention's fla-core Triton
      kernels (CUDA only, fla importable)

Inputs (core level) come from bench.scaling.builders' own draw, so every method of one length sees
the same q, k, v:
  hgrn        x = v, forget logits = k
  simple-gla  q, k, v and log decay = logsigmoid(z) / 16 per head and token, z ~ N(0, 1) from a
              generator seeded seed + 1 (an input: it gets a gradient at fwdbwd)
  retnet      q, k, v; RetNet's fixed decays (not an input, no gradient)
  diag-ssm    u = v token-major; frequency, damping, phase of the wave methods (V3.5 init, stride s)
Layer level: baselines.peer_model.PeerMixer at d_model = H d; model level: PeerLM at the cell's
model sizes (d_ff = 4 D, as the standard model there). Built, timed and checked exactly as the other
methods (bench.scaling.builders / checks conventions): correctness against the token loop or
explicit (N, N) form in float64 on CPU at N = 257.

Cost model (one call; counts are for the operator, the same for a torch and an fla method):
elementwise operations count one FLOP each (an exp or a sigmoid too); matmuls 2 per multiply-add;
fwdbwd = 3 x fwd (the backward of each piece does about twice its forward's work). With R = B H d
rows, C the chunk, M = ceil(N / C), N' = M C:
  hgrn        fwd = R N' 11 + R M 3 log2 M   (log f, 1 - f = sigmoid(-a) and (1 - f) x: 4; f = exp
              log f: 1; intra-chunk step h = f h + u: 2; cumulative log decay and its exp: 2;
              carry-in: 2; the doubling scan: 3 per chunk state per level)
  simple-gla  fwd = B H [N' (4 C d + 3 C + 4 d^2 + 4 d + 3) + 2 M d^2]   ((C, C) scores and their
  retnet      product with v: 4 C d; decay mask (difference, exp, product): 3 C; chunk states
              k^T v and carry-in q S: 4 d^2; q scale, decay-weighted k and q, carry-in add: 4 d;
              decay factors: 3; the state loop: 2 d^2 per chunk)
  diag-ssm    bench.scaling.costs.scan_flops (the wave-scan path: the same chunked recurrence)
Minimum bytes: inputs read once, output written once (fwdbwd: also dy read, input grads written).
"""
from __future__ import annotations

import copy
import math
from functools import partial

import torch
import torch.nn.functional as F

from bench.scaling import builders, checks, costs, footprint
from bench.scaling.builders import Built
from bench.scaling.grid import CellSpec

KIND = "peer"
OPS = ("hgrn", "simple-gla", "retnet", "diag-ssm")
FLA_OPS = ("hgrn", "simple-gla", "retnet")
INPUTS = {"hgrn": 2, "simple-gla": 3, "retnet": 3, "diag-ssm": 1}  # (B, H, N, d) tensors the core reads
GATE_NORMALIZER = 16.0

TORCH_NOTE = ("torch reference formulation (chunked PyTorch, float32 math; fla-core has no CPU kernels, so on CPU "
              "this is the method)")
DESCRIPTIONS = {
    "hgrn": "HGRN-style gated linear recurrence h = f h + (1 - f) x, elementwise data-dependent forget gate",
    "simple-gla": "simple GLA: decayed linear attention, one data-dependent scalar decay per head and token",
    "retnet": "RetNet retention: decayed linear attention with a fixed decay per head",
    "diag-ssm": "diagonal SSM, one complex pole per head: Wave Field without ||k|| deposit and head coupling",
}


def method_name(op: str, impl: str) -> str:
    return f"peer-{op}" + ("-fla" if impl == "fla" else "")


# ---------------------------------------------------------------------------------------------
# inputs and the core function


def _log_decay(spec: CellSpec, device, dtype, generator_seed: int) -> torch.Tensor:
    """simple-gla's log decay (B, H, N) <= 0: logsigmoid(N(0, 1)) / 16, drawn from its own generator."""
    g = torch.Generator().manual_seed(generator_seed)
    z = torch.randn(spec.batch, spec.heads, spec.seq_len, generator=g, dtype=torch.float64)
    return (F.logsigmoid(z) / GATE_NORMALIZER).to(device, dtype)


def _core_inputs(op: str, q, k, v, spec: CellSpec, seed: int):
    """(inputs that get gradients, extra fixed arguments) of the core for op; decays and wave parameters
    in float32 (a check's float64 reference gets float64 copies)."""
    from baselines import peers

    if op == "hgrn":
        return [v, k], []
    if op == "simple-gla":
        return [q, k, v, _log_decay(spec, q.device, q.dtype, seed + 1)], []
    if op == "retnet":
        return [q, k, v], [peers.retnet_log_decay(spec.heads, q.device)]
    return [v, *builders.wave_params(spec.heads, q.device, seed)[:3]], []


def core_function(op: str, impl: str, stride: float):
    """inputs... -> y (B, H, N, d) for op with impl 'torch', 'fla' or 'reference'."""
    from baselines.peer_model import peer_core

    if op == "diag-ssm":
        return lambda u, fr, dm, ph: peer_core(op, impl, u, fr, dm, ph, stride)
    return lambda *args: peer_core(op, impl, *args)


def _backend_name(op: str, impl: str) -> str:
    if impl == "fla":
        return "fla-chunk_hgrn" if op == "hgrn" else "fla-chunk_simple_gla"
    return "torch-chunked"


def peer_layer(spec: CellSpec, op: str, impl: str):
    from baselines.peer_model import PeerMixer

    return PeerMixer(spec.d_model, spec.heads, op, impl=impl, field_stride=spec.field_stride)


def peer_model(spec: CellSpec, op: str, impl: str):
    from baselines.peer_model import PeerLM

    return PeerLM(spec.vocab, op, d_model=spec.model_dim, n_layers=spec.model_layers, n_heads=spec.heads,
                  d_ff=spec.d_ff, field_stride=spec.field_stride, impl=impl)


def build_peer(spec: CellSpec, op: str, impl: str) -> Built:
    """peer-* methods at any level; impl 'torch' (chunked PyTorch) or 'fla' (fla-core kernels)."""
    torch.manual_seed(spec.seed)
    backend = lambda: _backend_name(op, impl)  # noqa: E731
    if spec.level == "core":
        q, k, v = builders._qkv(spec)  # the draw every method of this length shares
        wrt, extra = _core_inputs(op, q, k, v, spec, spec.seed)
        fn = core_function(op, impl, spec.field_stride)
        return Built(builders._pass_fn(spec, lambda: fn(*wrt, *extra), wrt, v.shape), backend)
    if spec.level == "layer":
        return builders._layer(spec, peer_layer(spec, op, impl), backend)
    return builders._model(spec, peer_model(spec, op, impl), backend)


# ---------------------------------------------------------------------------------------------
# correctness


def check_peer(spec: CellSpec, op: str, impl: str) -> checks.CheckResult:
    """The method at N = 257, B = 1 on the cell's device and dtype against the token loop or
    explicit (N, N) form in float64 on CPU: outputs, and input gradients at fwdbwd (core: every
    input that gets a gradient, parameters included; layer: x)."""
    spec = checks.small_spec(spec)
    s = spec.field_stride
    if spec.level == "core":
        wrt, extra = _core_inputs(op, *checks.qkv(spec), spec, spec.seed + 7)
        return checks.compare_core(spec, core_function(op, impl, s), core_function(op, "reference", s), wrt, extra)
    if spec.level == "layer":
        def reference(layer):
            ref = copy.deepcopy(layer).cpu().double()
            ref.impl = "reference"
            return ref
        return checks.compare_layer(spec, lambda: peer_layer(spec, op, impl), reference)
    torch.manual_seed(spec.seed)
    return checks.compare_model(spec, peer_model(spec, op, impl), lambda ref: ref.set_impl("reference"))


# ---------------------------------------------------------------------------------------------
# availability


def available(impl: str, device: torch.device, dtype: torch.dtype | None = None) -> str | None:
    """torch: always; fla: CUDA with fla-core importable (its kernels take float32, bfloat16, float16)."""
    if impl == "torch":
        return None
    from baselines.peers import fla_available

    return fla_available(device)


# ---------------------------------------------------------------------------------------------
# cost model (see the module docstring)


def core_flops(op: str, b: int, h: int, n: int, d: int, pass_: str) -> float:
    from baselines.peers import ATTN_CHUNK, HGRN_CHUNK, SSM_CHUNK

    if op == "diag-ssm":
        return costs.scan_flops(b, h, n, d, pass_, chunk=SSM_CHUNK)
    if op == "hgrn":
        c = max(1, min(HGRN_CHUNK, n))
        m = math.ceil(n / c)
        rows = b * h * d
        fwd = rows * m * c * 11.0 + rows * m * 3.0 * (math.log2(m) if m > 1 else 0.0)
    else:
        c = max(1, min(ATTN_CHUNK, n))
        m = math.ceil(n / c)
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
    b, h, n, d, p, d_model = spec.batch, spec.heads, spec.seq_len, spec.row_head_dim, spec.pass_, spec.d_model
    flops = core_flops(op, b, h, n, d, p)
    if spec.level == "core":
        return costs.Cost(flops, core_bytes(op, b, h, n, d, spec.elem, p))
    if spec.level == "layer":
        return costs.with_projections(flops, mixer_matmul_params(op, d_model, h), b, n, d_model, spec.elem, p)
    mm = spec.model_layers * (mixer_matmul_params(op, d_model, h) + 2 * d_model * spec.d_ff) + spec.vocab * d_model
    return costs.lm_cost(flops, mm, spec.model_layers, b, n, spec.vocab, spec.elem, p)


# ---------------------------------------------------------------------------------------------
# memory (generous, like bench.scaling.footprint: a cell predicted to fit must fit)


# Peak above the inputs, in float32 (B, H, N, d) units, measured with the torch profiler on CPU
# (torch formulation) and rounded up with about 50% margin; fla's kernels keep less (fused), and
# are given the same allowance.
CORE_UNITS = {  # op -> (fwd, fwdbwd)
    "hgrn": (12.0, 24.0),
    "simple-gla": (8.0, 24.0),
    "retnet": (8.0, 24.0),
    "diag-ssm": (8.0, 18.0),
}


def core_memory_bytes(op: str, b: int, h: int, n: int, d: int, elem: int, pass_: str) -> float:
    from baselines.peers import ATTN_CHUNK

    unit = b * h * n * d * elem
    f32 = b * h * n * d * 4
    inputs = INPUTS[op] * unit
    fwd_units, bwd_units = CORE_UNITS[op]
    extra = 0.0
    if op in ("simple-gla", "retnet"):  # (C, C) score blocks and (d, d) chunk states, float32
        c = max(1, min(ATTN_CHUNK, n))
        m = math.ceil(n / c)
        blocks = b * h * m * c * c * 4
        states = b * h * m * d * d * 4
        extra = (3 * blocks + 2 * states) if pass_ == "fwd" else (6 * blocks + 4 * states)
    units = fwd_units if pass_ == "fwd" else bwd_units
    return (1 if pass_ == "fwd" else 2) * inputs + units * f32 + extra


# ---------------------------------------------------------------------------------------------
# records


def methods(method_cls=None) -> list:
    """The peer Method records. method_cls defaults to bench.scaling.registry.Method, imported here
    (not at module level) so that registry.py can import this module while it is being built."""
    if method_cls is None:
        from bench.scaling.registry import Method as method_cls
    out = []
    for impl in ("torch", "fla"):
        for op in OPS:
            if impl == "fla" and op not in FLA_OPS:
                continue
            if impl == "torch":
                desc = f"{DESCRIPTIONS[op]}; {TORCH_NOTE}"
            else:
                kernel = "fla.ops.hgrn.chunk_hgrn" if op == "hgrn" else "fla.ops.simple_gla.chunk_simple_gla"
                desc = f"{DESCRIPTIONS[op]}; flash-linear-attention kernel {kernel} (fla-core, CUDA only)"
            out.append(method_cls(
                method_name(op, impl), KIND, desc,
                build=partial(build_peer, op=op, impl=impl),
                memory=partial(footprint.level_memory, core_bytes=partial(core_memory_bytes, op)),
                cost=partial(peer_cost, op),
                check=partial(check_peer, op=op, impl=impl),
                available=partial(available, impl),
                uses_stride=op == "diag-ssm",
            ))
    return out

"""The fused Triton wave kernels against the float64 token path: values and every gradient.

Without a CUDA device the kernels run in triton's interpreter on cpu tensors. Triton fixes
interpret-or-compile when it is first imported, so TRITON_INTERPRET=1 is set here before anything
imports it (this module is collected before any test runs). With a CUDA device the same checks run
on the compiled kernels. Sizes are small and odd on purpose: N not a multiple of the chunk, N = 1,
d below and between the channel blocks, B and H not powers of two.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

ON_CUDA = torch.cuda.is_available()
if not ON_CUDA and "triton" not in sys.modules:
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest.importorskip("triton", reason="triton is not installed; the fused wave kernels need it")

from wavefield_core import triton_scan as ts  # noqa: E402
from wavefield_core.attention import wave_conv  # noqa: E402

DEVICE = torch.device("cuda" if ON_CUDA else "cpu")
_WHY = ts.triton_available(DEVICE)
if _WHY is not None:
    pytest.skip(f"the triton kernels cannot run in this process: {_WHY}", allow_module_level=True)

# Relative RMS error bounds, ||got - ref|| / ||ref||, per input dtype: the output, then the gradients.
# float32 runs every dot in full fp32. In 16-bit the dot operands (u = v * scale, the kernel taps,
# the output gradient) are rounded to the input dtype, and the output is stored in it. (triton's
# interpreter truncates float32 -> bfloat16 where GPUs round to nearest, about doubling the bfloat16
# error on cpu.)
TOL = {torch.float32: (2e-5, 2e-4), torch.float16: (3e-3, 1e-2), torch.bfloat16: (2.5e-2, 4e-2)}


def _params(heads: int, weak: bool):
    """frequency, damping, phase (float64 leaves). weak: alpha = softplus(-9) ~ 1.2e-4, so the state
    carries across many chunks; otherwise a spread from weak to strong damping."""
    freq = torch.linspace(0.3, 3.7, heads, dtype=torch.float64)
    if weak:
        damp = torch.full((heads,), -9.0, dtype=torch.float64)
    else:
        damp = torch.linspace(-6.0, 0.5, heads, dtype=torch.float64)
    phase = torch.linspace(0.2, 2.9, heads, dtype=torch.float64)
    return [t.requires_grad_() for t in (freq, damp, phase)]


def _shape(layout: str, B: int, H: int, N: int, d: int):
    return {"bhnd": (B, H, N, d), "bnhd": (B, N, H, d), "bhdn": (B, H, d, N)}[layout]


def _scale_shape(layout: str, B: int, H: int, N: int):
    return {"bhnd": (B, H, N, 1), "bnhd": (B, N, H, 1), "bhdn": (B, H, 1, N)}[layout]


def _rel(got: torch.Tensor, ref: torch.Tensor) -> float:
    got, ref = got.detach().double().cpu(), ref.detach().double().cpu()
    return float((got - ref).norm() / ref.norm().clamp_min(1e-300))


def _report(name: str, got: torch.Tensor, ref: torch.Tensor) -> float:
    diff = (got.detach().double().cpu() - ref.detach().double().cpu()).abs()
    err = _rel(got, ref)
    print(f"  {name:9s} rel-rms {err:.2e}  max|diff| {diff.max().item():.2e}  mean|diff| {diff.mean().item():.2e}")
    return err


def compare(B, H, N, d, stride, layout="bhnd", dtype=torch.float32, weak=False, with_scale=True, seed=0):
    """Forward and backward of the kernel vs float64 wave_conv(mode="token") on the same (rounded)
    inputs. Returns {name: relative RMS error}."""
    gen = torch.Generator().manual_seed(seed)
    shape = _shape(layout, B, H, N, d)
    v = torch.randn(*shape, generator=gen).to(dtype)
    scale = (0.5 + 2.0 * torch.rand(*_scale_shape(layout, B, H, N), generator=gen)).to(dtype) if with_scale else None
    g = torch.randn(*shape, generator=gen).to(dtype)
    freq, damp, phase = _params(H, weak)

    v64 = v.double().requires_grad_()
    s64 = scale.double().requires_grad_() if with_scale else None
    ref = wave_conv(v64, freq, damp, phase, stride, "token", layout=layout, scale=s64)
    wrt64 = [v64] + ([s64] if with_scale else []) + [freq, damp, phase]
    ref_grads = torch.autograd.grad(ref, wrt64, g.double())

    vk = v.to(DEVICE).requires_grad_()
    sk = scale.to(DEVICE).requires_grad_() if with_scale else None
    pk = [t.detach().to(DEVICE).requires_grad_() for t in (freq, damp, phase)]
    y = ts.wave_triton_conv(vk, *pk, stride, scale=sk, layout=layout)
    assert y.shape == v.shape and y.dtype == dtype
    wrtk = [vk] + ([sk] if with_scale else []) + pk
    grads = torch.autograd.grad(y, wrtk, g.to(DEVICE))
    for got, want in zip(grads, wrt64):
        assert got.shape == want.shape
    names = ["v"] + (["scale"] if with_scale else []) + ["frequency", "damping", "phase"]
    print(f"B={B} H={H} N={N} d={d} s={stride} {layout} {dtype} weak={weak} scale={with_scale}")
    errs = {"y": _report("y", y, ref)}
    for name, got, want in zip(names, grads, ref_grads):
        errs[name] = _report(name, got, want)
    return errs


def assert_within(errs: dict, dtype: torch.dtype):
    tol_y, tol_g = TOL[dtype]
    assert errs["y"] < tol_y, f"output: relative RMS error {errs['y']:.2e} >= {tol_y:.0e}"
    bad = {k: v for k, v in errs.items() if k != "y" and not v < tol_g}
    assert not bad, f"gradients above {tol_g:.0e} (relative RMS): {bad}"


# ---------------------------------------------------------------------------------------------
# default run


@pytest.mark.parametrize("B,H,N,d,stride,layout,weak", [
    (2, 3, 130, 5, 1, "bhnd", True),   # weak damping: the state crosses every chunk boundary
    (1, 3, 70, 24, 3, "bhdn", False),  # channel-major, d between two channel blocks
])
def test_float32_matches_float64_token_path(B, H, N, d, stride, layout, weak):
    assert_within(compare(B, H, N, d, stride, layout, torch.float32, weak), torch.float32)


def test_single_token_and_bnhd_layout():
    assert_within(compare(3, 3, 1, 5, 2, "bnhd", torch.float32), torch.float32)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_half_precision_inputs(dtype):
    assert_within(compare(2, 3, 100, 24, 2, "bhdn", dtype, weak=False), dtype)


def test_without_scale_and_partial_gradients():
    assert_within(compare(1, 3, 40, 5, 4, "bhnd", torch.float32, with_scale=False), torch.float32)
    # only the parameters need a gradient (no dL/dv written), then only v (no parameter sums)
    freq, damp, phase = _params(3, weak=False)
    v = torch.randn(1, 3, 40, 5, dtype=torch.float64)
    g = torch.randn_like(v)
    ref = torch.autograd.grad(wave_conv(v, freq, damp, phase, 2, "token"), [freq, damp, phase], g)
    pk = [t.detach().to(DEVICE).requires_grad_() for t in (freq, damp, phase)]
    got = torch.autograd.grad(ts.wave_triton_conv(v.float().to(DEVICE), *pk, 2), pk, g.float().to(DEVICE))
    for name, a, b in zip(("frequency", "damping", "phase"), got, ref):
        assert _report(name, a, b) < TOL[torch.float32][1]
    vk = v.float().to(DEVICE).requires_grad_()
    fixed = [t.detach().float().to(DEVICE) for t in (freq, damp, phase)]
    (gv,) = torch.autograd.grad(ts.wave_triton_conv(vk, *fixed, 2), [vk], g.float().to(DEVICE))
    v64 = v.clone().requires_grad_()
    (rv,) = torch.autograd.grad(wave_conv(v64, freq.detach(), damp.detach(), phase.detach(), 2, "token"), [v64], g)
    assert _report("v", gv, rv) < TOL[torch.float32][1]


@pytest.mark.parametrize("t", [37, 64])  # inside a chunk, and the first token of a chunk
def test_causal_by_perturbation(t):
    gen = torch.Generator().manual_seed(1)
    B, H, N, d = 2, 3, 100, 5
    v = torch.randn(B, H, d, N, generator=gen).to(DEVICE)
    scale = torch.rand(B, H, 1, N, generator=gen).add_(0.5).to(DEVICE)
    freq, damp, phase = (p.detach().float().to(DEVICE) for p in _params(H, weak=True))
    y0 = ts.wave_triton_conv(v, freq, damp, phase, 2, scale=scale, layout="bhdn")
    v1 = v.clone()
    v1[..., t] += 10.0
    y1 = ts.wave_triton_conv(v1, freq, damp, phase, 2, scale=scale, layout="bhdn")
    assert torch.equal(y1[..., :t], y0[..., :t]), "an output before the perturbed token changed"
    assert not torch.equal(y1[..., t:], y0[..., t:]), "the perturbation reached no output"
    s1 = scale.clone()
    s1[..., t] *= 3.0
    y2 = ts.wave_triton_conv(v, freq, damp, phase, 2, scale=s1, layout="bhdn")
    assert torch.equal(y2[..., :t], y0[..., :t])


def test_layout_strides_and_dtype_are_kept():
    freq, damp, phase = (p.detach().float().to(DEVICE) for p in _params(3, weak=False))
    u = torch.randn(2, 3, 5, 40, device=DEVICE)  # bhdn, contiguous: the result is laid out alike
    y = ts.wave_triton_conv(u, freq, damp, phase, 1, layout="bhdn")
    assert y.shape == u.shape and y.stride() == u.stride() and y.dtype == u.dtype
    # a non-contiguous (sliced) input is read in place, and agrees with a contiguous copy
    big = torch.randn(2, 3, 50, 9, device=DEVICE)
    view = big[:, :, 5:45, 2:7]  # (2, 3, 40, 5) bhnd
    assert not view.is_contiguous()
    a = ts.wave_triton_conv(view, freq, damp, phase, 1)
    b = ts.wave_triton_conv(view.contiguous(), freq, damp, phase, 1)
    assert torch.equal(a, b)
    # an expanded (stride 0) output gradient, as y.sum() sends, is read in place too
    x = u.clone().requires_grad_()
    ts.wave_triton_conv(x, freq, damp, phase, 1, layout="bhdn").sum().backward()
    x2 = u.clone().requires_grad_()
    y2 = ts.wave_triton_conv(x2, freq, damp, phase, 1, layout="bhdn")
    (want,) = torch.autograd.grad(y2, [x2], torch.ones_like(u))
    assert torch.equal(x.grad, want)


def test_bad_input_is_refused():
    freq, damp, phase = (p.detach().float() for p in _params(3, weak=False))
    u = torch.randn(1, 3, 8, 4, device=DEVICE)
    with pytest.raises(TypeError, match="float32, bfloat16 or float16"):
        ts.wave_triton_conv(u.double(), freq, damp, phase, 1)
    with pytest.raises(ValueError, match="integer strides"):
        ts.wave_triton_conv(u, freq, damp, phase, 2.5)
    with pytest.raises(ValueError, match="unknown layout"):
        ts.wave_triton_conv(u, freq, damp, phase, 1, layout="nhd")
    with pytest.raises(ValueError, match="one channel"):
        ts.wave_triton_conv(u, freq, damp, phase, 1, scale=torch.ones(1, 3, 8, 4, device=DEVICE))
    for i, name in enumerate(("frequency", "damping", "phase")):  # the kernels read one coefficient row per head
        params = [freq, damp, phase]
        params[i] = params[i].repeat(2)
        with pytest.raises(ValueError, match=rf"{name} must have shape \(H,\) = \(3,\)"):
            ts.wave_triton_conv(u, *params, 1)
    assert isinstance(ts.triton_available("meta"), str)


# ---------------------------------------------------------------------------------------------
# slow: every stride, both main layouts, longer sequences


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["bhnd", "bhdn"])
@pytest.mark.parametrize("stride", list(range(1, 9)))
def test_every_stride(stride, layout):
    errs = compare(2, 3, 131, 24, stride, layout, torch.float32, weak=stride % 2 == 1, seed=stride)
    assert_within(errs, torch.float32)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"])
def test_long_weakly_damped(dtype):
    assert_within(compare(3, 3, 1000, 5, 1, "bhdn", dtype, weak=True), dtype)


@pytest.mark.slow
def test_wide_heads_several_channel_blocks():
    assert_within(compare(1, 2, 200, 70, 2, "bhnd", torch.float32), torch.float32)
    assert_within(compare(1, 2, 200, 70, 2, "bhnd", torch.bfloat16), torch.bfloat16)


_COMPILE_SCRIPT = textwrap.dedent("""
    import os, sys
    os.environ.pop("TRITON_INTERPRET", None)
    import triton, triton.language as tl
    from triton.compiler import ASTSource
    from triton.backends.compiler import GPUTarget
    import torch
    from wavefield_core import triton_kernels as tk, triton_scan as ts
    tk._import_triton()
    fwd, bwd = tk._define_kernels()
    target = GPUTarget("cuda", 90, 32)

    def sig(fn, ptrs, consts):
        return {n: "constexpr" if n in consts else ptrs.get(n, "i32") for n in fn.arg_names}

    for torch_dtype, name in ((torch.bfloat16, "bf16"), (torch.float16, "fp16"), (torch.float32, "fp32")):
        dts = tk._dot_dtypes(torch_dtype)
        for backward in (False, True):
            bt, bd, warps = ts._config(torch_dtype, 64, 1024, torch.device("cpu"), backward)
            if backward:
                consts = dict(HAS_SCALE=True, NEED_DV=True, NEED_DS=True, NEED_PARAMS=True, LOAD_V=True, BT=bt, BD=bd,
                              PRECISION="ieee", **dts)
                ptrs = {p: "*" + name for p in ("v_ptr", "s_ptr", "g_ptr", "dv_ptr")}
                ptrs.update(ds_ptr="*fp32", pg_ptr="*fp32", t_ptr="*fp32")
                fn = bwd
            else:
                consts = dict(HAS_SCALE=True, BT=bt, BD=bd, PRECISION="ieee", **dts)
                ptrs = {p: "*" + name for p in ("v_ptr", "s_ptr", "y_ptr")}
                ptrs.update(t_ptr="*fp32")
                fn = fwd
            k = triton.compile(ASTSource(fn, sig(fn, ptrs, consts), consts), target=target,
                               options=dict(num_warps=warps))
            assert "cubin" in k.asm, sorted(k.asm)
            print("compiled", name, "backward" if backward else "forward", flush=True)
""")


@pytest.mark.slow
def test_kernels_compile_for_sm90(tmp_path):
    # Compiles (no GPU needed) the launch variants for an H100/H200 target, which the interpreter
    # cannot check: typing, layouts, tl.dot shapes, register allocation by ptxas.
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "triton-cache")
    proc = subprocess.run([sys.executable, "-c", _COMPILE_SCRIPT], env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0 and ("ModuleNotFoundError" in proc.stderr or "ptxas" in proc.stderr.lower()):
        pytest.skip(f"offline compilation is not available here: {proc.stderr.strip().splitlines()[-1]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("compiled") == 6


def test_layer_triton_mode_matches_token_mode_values_and_grads():
    """WaveFieldAttention(mode="triton") is the token path computed by the kernels: same outputs and
    gradients for the same weights."""
    from wavefield_core import WaveFieldAttention

    torch.manual_seed(3)
    ref = WaveFieldAttention(24, 3, field_stride=2.0, mode="token").to(DEVICE)
    tri = WaveFieldAttention(24, 3, field_stride=2.0, mode="triton").to(DEVICE)
    tri.load_state_dict(ref.state_dict())
    x = torch.randn(2, 45, 24, device=DEVICE)
    g = torch.randn(2, 45, 24, device=DEVICE)
    outs = []
    for layer in (ref, tri):
        xi = x.clone().requires_grad_()
        y = layer(xi)
        grads = torch.autograd.grad((y * g).sum(), [xi, layer.damping, layer.coupling, layer.qkv.weight])
        outs.append([y, *grads])
    for name, a, b in zip(("y", "dx", "d_damping", "d_coupling", "dW_qkv"), outs[0], outs[1]):
        err = ((a - b).norm() / b.norm().clamp_min(1e-30)).item()
        print(name, f"{err:.1e}")
        assert err < 2e-4, name


def test_wave_triton_method_passes_its_correctness_check():
    """The bench.scaling record of the kernels builds and passes the same gate as every method."""
    from bench.scaling.grid import CellSpec
    from bench.scaling.registry import METHODS

    m = METHODS["wave-triton"]
    assert m.why_unavailable(DEVICE, torch.float32) is None
    assert m.why_unavailable(DEVICE, torch.float64) is not None
    for level, pass_ in (("core", "fwd"), ("core", "fwdbwd"), ("layer", "fwd"), ("model", "fwd")):
        spec = CellSpec(level, pass_, 1, 2, 16, 40, DEVICE, torch.float32, 4.0, 32, 1, 64, 0)
        res = m.check(spec)
        assert res.ok, res.reason()
        m.build(spec).fn()


@pytest.mark.parametrize("amp", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_lm_trains_in_triton_mode_under_autocast(amp):
    """Mixed-precision training through the kernels: half-precision v, float32 ||k|| and parameters."""
    from wavefield_core import WaveFieldLM

    if DEVICE.type == "cpu" and amp == torch.float16:
        pytest.skip("CPU autocast to float16 is not exercised here (bf16 is the CPU mixed-precision dtype)")
    torch.manual_seed(0)
    # two layers: the second takes the first's autocast output; 2 heads of 16 (4 of 8 cost twice the interpreter time)
    model = WaveFieldLM(vocab_size=23, d_model=32, n_layers=2, n_heads=2, d_ff=64, dropout=0.0, mode="triton")
    model = model.to(DEVICE)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    data = torch.randint(0, 23, (2, 40), device=DEVICE)
    losses = []
    for _ in range(6):
        with torch.autocast(DEVICE.type, dtype=amp):
            _, loss = model(data[:, :-1], data[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    print([f"{x:.3f}" for x in losses])
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0] - 0.05

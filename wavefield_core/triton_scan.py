"""The token-level wave operator as fused Triton kernels: one pass over memory, forward and backward.

The operator, per batch b, head h, channel e (integer stride s, so every token sits on a cell):
    u[n] = v[n] * scale[n]                     (scale: one number per token, e.g. ||k_n||)
    y[n] = sum_{j <= n} K[n - j] u[j],  K[m] = Re(c r**m)
    r = exp((-alpha + i omega) s),  c = exp(i phi) / Z            (recurrent.pole_and_gain)
equivalently y[n] = Re(c h[n]) with the one-pole recurrence h[n] = r h[n - 1] + u[n].

Forward kernel (one program per (batch * head, block of BD channels)):
  the program walks the sequence in chunks of BT tokens, in order, keeping the complex state h of
  its BD channels in registers (two fp32 vectors). Per chunk:
    y = T @ u + Re(c r**(i+1) h_prev)      T: the BT x BT lower-triangular Toeplitz of K (tl.dot)
    h = r**BT h_prev + sum_j r**(BT-1-j) u[j]
  T and every other coefficient depend only on a lag inside a chunk, so each program gathers them
  once from a small per-head table (r**m, c r**m, m r**(m-1) for m = 0..BT, computed in float64 on
  the host and rounded once to fp32) and reuses them for every chunk. The deposit scale is
  multiplied into v as it is loaded: u never exists in memory. Nothing is saved for backward but
  v and scale.

Backward kernel: the adjoint is the same recurrence run backwards,
    Bk[j] = sum_{n >= j} r**(n-j) g[n] = g[j] + r Bk[j+1],   dL/du[j] = Re(c Bk[j]),
walked in chunks from the end, with T's transpose for the intra-chunk part. The parameter
gradients are reductions that need no forward state at all (so the forward stores nothing):
    dL/dc (holomorphic) = sum_n g[n] h[n]          = sum_j u[j] Bk[j]
    dL/dr (holomorphic) = c sum_{j < n} (n-j) r**(n-j-1) u[j] g[n] = c sum_j u[j] D[j],
    D[j] = sum_{n > j} (n-j) r**(n-j-1) g[n],
with D carried across chunks next to Bk (D[t0] = BT r**(BT-1) Bk[t1] + r**BT D[t1] + in-chunk
terms, t1 = t0 + BT). Inside a chunk both sums weight u[j] g[i] by a function of the lag i - j
only, so the kernel accumulates the chunk Gram matrices sum_e g[i, e] u[j, e] over all chunks
(one tl.dot each) and applies the lag weights once at the end. y = Re(f) with f holomorphic in
c and r, so dL/dRe(c) = Re(.), dL/dIm(c) = -Im(.), and the same for r; autograd carries them on
to frequency, damping and phase through pole_and_gain.

Memory: forward writes y only; backward writes dv, plus an fp32 (B, H, N) buffer per block of
channels for dL/dscale and 4 fp32 numbers per program for the parameters. No (B, H, N, d) fp32
intermediate exists. Parallelism is (batch * heads) x ceil(d / BD) programs, each sequential over
N / BT chunks (sizes in _config).

Precision: all accumulation is fp32. tl.dot inputs are cast to the input dtype (bf16 / fp16 use
the tensor cores; fp32 inputs run the dot in full fp32, "ieee", not TF32). States, carries and the
per-channel reductions stay fp32 elementwise. The result is stored in the input dtype.

triton is imported, and the kernels defined, on first use; triton_available says why they cannot run.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os

import torch
from torch.autograd.function import once_differentiable

from wavefield_core.fftconv import LAYOUTS
from wavefield_core.kernel import DEFAULT_NORM_CELLS, check_stride, stride_is_integer
from wavefield_core.recurrent import pole_and_gain

# triton is imported on first use, not with the package: importing it decides once per process
# whether @triton.jit compiles or interprets (TRITON_INTERPRET), and machines without it must work.
triton = None
tl = None

__all__ = ["wave_triton_conv", "triton_available", "WaveTritonConv", "SUPPORTED_DTYPES"]

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_KERNELS = None  # (forward, backward) once defined
# Whether the kernels were defined for triton's interpreter: @triton.jit decides this when it runs,
# from TRITON_INTERPRET, so it is fixed by the first use in a process.
_INTERPRETED = False
_wave_fwd_kernel = _wave_bwd_kernel = None  # bound by _define_kernels


def triton_available(device) -> str | None:
    """None when the kernels can run on `device`, else a one-line reason.

    Runs on CUDA devices with triton importable; with TRITON_INTERPRET=1 (set before the first
    use in the process) the same kernels run in triton's interpreter on cpu tensors instead.
    """
    device = torch.device(device)
    if triton is None and importlib.util.find_spec("triton") is None:  # not imported here: see _kernels
        return "triton is not installed; it ships with CUDA builds of torch (pip install triton)"
    if _interpreting():
        if device.type == "cpu":
            return None
        return (f"the kernels run in triton's interpreter here (TRITON_INTERPRET=1), which takes cpu tensors; "
                f"device is {device.type}")
    if device.type != "cuda":
        return (f"needs a CUDA device (device is {device.type}); on cpu, set TRITON_INTERPRET=1 before the first "
                "use to run the kernels in triton's interpreter")
    if not torch.cuda.is_available():
        return "no CUDA device is available here"
    return None


def _import_triton() -> str | None:
    """Import triton into this module's globals; None on success, else why not."""
    global triton, tl
    if triton is None:
        try:
            import triton as _triton
            import triton.language as _tl
        except ImportError as exc:  # depends on the machine
            return f"triton does not import here ({exc}); it ships with CUDA builds of torch"
        triton, tl = _triton, _tl
    return None


def _interpreting() -> bool:
    return _INTERPRETED if _KERNELS is not None else os.environ.get("TRITON_INTERPRET", "0") == "1"


def _kernels():
    """The two kernels, defined on first use (see _INTERPRETED)."""
    global _KERNELS, _INTERPRETED
    if _KERNELS is None:
        why = _import_triton()
        if why is not None:
            raise RuntimeError(why)
        _INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"
        _KERNELS = _define_kernels()
    return _KERNELS


def _define_kernels():
    """Define the kernels (module globals, where triton looks names up)."""
    global _wave_fwd_kernel, _wave_bwd_kernel

    # t_ptr: per head, 6 rows of BT + 1 values at m = 0..BT (see _tables):
    #   rows 0, 1: Re, Im r**m;  rows 2, 3: Re, Im c r**m;  rows 4, 5: Re, Im m r**(m-1).
    @triton.jit
    def _wave_fwd_kernel(
        v_ptr, s_ptr, y_ptr, t_ptr,
        H, N, D,
        svb, svh, svn, svd,
        ssb, ssh, ssn,
        syb, syh, syn, syd,
        HAS_SCALE: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr,
        OP_DTYPE: tl.constexpr, DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
    ):
        pid_bh = tl.program_id(0)
        pid_d = tl.program_id(1)
        b = (pid_bh // H).to(tl.int64)
        h = pid_bh % H
        tab = t_ptr + h * (6 * (BT + 1))

        it = tl.arange(0, BT)
        offs_d = pid_d * BD + tl.arange(0, BD)
        mask_d = offs_d < D
        od = offs_d.to(tl.int64)

        # Chunk-invariant coefficients, gathered once from the table.
        lag = it[:, None] - it[None, :]  # output token i (rows) minus input token j (columns)
        kmat = tl.where(lag >= 0, tl.load(tab + 2 * (BT + 1) + tl.maximum(lag, 0)), 0.0)  # Re(c r**(i-j))
        kmat = kmat.to(OP_DTYPE).to(DOT_DTYPE)
        cin_re = tl.load(tab + 2 * (BT + 1) + it + 1)  # carry-in: c r**(i+1)
        cin_im = tl.load(tab + 3 * (BT + 1) + it + 1)
        w_re = tl.load(tab + (BT - 1 - it))  # deposit into the state: r**(BT-1-j)
        w_im = tl.load(tab + (BT + 1) + (BT - 1 - it))
        aT_re = tl.load(tab + BT)  # decay across one chunk: r**BT
        aT_im = tl.load(tab + (BT + 1) + BT)

        v_base = v_ptr + b * svb + h.to(tl.int64) * svh
        y_base = y_ptr + b * syb + h.to(tl.int64) * syh
        s_base = s_ptr + b * ssb + h.to(tl.int64) * ssh

        h_re = tl.zeros([BD], dtype=tl.float32)
        h_im = tl.zeros([BD], dtype=tl.float32)
        for t0 in range(0, N, BT):
            offs_t = t0 + it
            mask_t = offs_t < N
            ot = offs_t.to(tl.int64)
            m2 = mask_t[:, None] & mask_d[None, :]
            u = tl.load(v_base + ot[:, None] * svn + od[None, :] * svd, mask=m2, other=0.0).to(tl.float32)
            if HAS_SCALE:
                sc = tl.load(s_base + ot * ssn, mask=mask_t, other=0.0).to(tl.float32)
                u = u * sc[:, None]
            acc = tl.dot(kmat, u.to(OP_DTYPE).to(DOT_DTYPE), input_precision=PRECISION)
            acc += cin_re[:, None] * h_re[None, :] - cin_im[:, None] * h_im[None, :]
            tl.store(y_base + ot[:, None] * syn + od[None, :] * syd, acc.to(y_ptr.dtype.element_ty), mask=m2)
            s_re = tl.sum(w_re[:, None] * u, axis=0)
            s_im = tl.sum(w_im[:, None] * u, axis=0)
            nh_re = aT_re * h_re - aT_im * h_im + s_re
            nh_im = aT_re * h_im + aT_im * h_re + s_im
            h_re = nh_re
            h_im = nh_im

    @triton.jit
    def _wave_bwd_kernel(
        v_ptr, s_ptr, g_ptr, dv_ptr, ds_ptr, pg_ptr, t_ptr,
        H, N, D, BH,
        svb, svh, svn, svd,
        ssb, ssh, ssn,
        sgb, sgh, sgn, sgd,
        sdb, sdh, sdn, sdd,
        HAS_SCALE: tl.constexpr, NEED_DV: tl.constexpr, NEED_DS: tl.constexpr, NEED_PARAMS: tl.constexpr,
        LOAD_V: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr, OP_DTYPE: tl.constexpr,
        DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
    ):
        pid_bh = tl.program_id(0)
        pid_d = tl.program_id(1)
        b = (pid_bh // H).to(tl.int64)
        h = pid_bh % H
        tab = t_ptr + h * (6 * (BT + 1))

        it = tl.arange(0, BT)
        offs_d = pid_d * BD + tl.arange(0, BD)
        mask_d = offs_d < D
        od = offs_d.to(tl.int64)

        # Transposed Toeplitz: rows j (the token whose gradient is computed), columns i >= j.
        lag_t = it[None, :] - it[:, None]
        ktmat = tl.where(lag_t >= 0, tl.load(tab + 2 * (BT + 1) + tl.maximum(lag_t, 0)), 0.0)
        ktmat = ktmat.to(OP_DTYPE).to(DOT_DTYPE)
        # Carry from the chunks after this one, q = BT - j tokens away: c r**q (dL/du), r**q (the
        # Bk part of sum u Bk and sum u D) and q r**(q-1) (the D part).
        q = BT - it
        cq_re = tl.load(tab + 2 * (BT + 1) + q)
        cq_im = tl.load(tab + 3 * (BT + 1) + q)
        rq_re = tl.load(tab + q)
        rq_im = tl.load(tab + (BT + 1) + q)
        aq_re = tl.load(tab + 4 * (BT + 1) + q)
        aq_im = tl.load(tab + 5 * (BT + 1) + q)
        # What the chunk's own g adds to the states at its first token: r**i and i r**(i-1).
        ri_re = tl.load(tab + it)
        ri_im = tl.load(tab + (BT + 1) + it)
        di_re = tl.load(tab + 4 * (BT + 1) + it)
        di_im = tl.load(tab + 5 * (BT + 1) + it)
        aT_re = tl.load(tab + BT)  # r**BT
        aT_im = tl.load(tab + (BT + 1) + BT)
        bT_re = tl.load(tab + 4 * (BT + 1) + BT)  # BT r**(BT-1)
        bT_im = tl.load(tab + 5 * (BT + 1) + BT)

        v_base = v_ptr + b * svb + h.to(tl.int64) * svh
        s_base = s_ptr + b * ssb + h.to(tl.int64) * ssh
        g_base = g_ptr + b * sgb + h.to(tl.int64) * sgh
        dv_base = dv_ptr + b * sdb + h.to(tl.int64) * sdh
        ds_base = ds_ptr + (pid_d.to(tl.int64) * BH + pid_bh) * N

        bk_re = tl.zeros([BD], dtype=tl.float32)  # Bk at the first token of the chunk after
        bk_im = tl.zeros([BD], dtype=tl.float32)
        dk_re = tl.zeros([BD], dtype=tl.float32)  # D at the first token of the chunk after
        dk_im = tl.zeros([BD], dtype=tl.float32)
        pc_re = tl.zeros([BD], dtype=tl.float32)  # carry parts of sum u Bk and sum u D
        pc_im = tl.zeros([BD], dtype=tl.float32)
        pr_re = tl.zeros([BD], dtype=tl.float32)
        pr_im = tl.zeros([BD], dtype=tl.float32)
        gram = tl.zeros([BT, BT], dtype=tl.float32)  # sum over chunks of g[i] . u[j]
        n_chunks = tl.cdiv(N, BT)
        for ci in range(0, n_chunks):
            t0 = (n_chunks - 1 - ci) * BT
            offs_t = t0 + it
            mask_t = offs_t < N
            ot = offs_t.to(tl.int64)
            m2 = mask_t[:, None] & mask_d[None, :]
            g = tl.load(g_base + ot[:, None] * sgn + od[None, :] * sgd, mask=m2, other=0.0).to(tl.float32)
            du = tl.dot(ktmat, g.to(OP_DTYPE).to(DOT_DTYPE), input_precision=PRECISION)
            du += cq_re[:, None] * bk_re[None, :] - cq_im[:, None] * bk_im[None, :]
            if HAS_SCALE:
                sc = tl.load(s_base + ot * ssn, mask=mask_t, other=0.0).to(tl.float32)
            if NEED_DV:
                if HAS_SCALE:
                    dv = du * sc[:, None]
                else:
                    dv = du
                tl.store(dv_base + ot[:, None] * sdn + od[None, :] * sdd, dv.to(dv_ptr.dtype.element_ty), mask=m2)
            if LOAD_V:  # v is read only for dL/dscale and the parameter sums
                v = tl.load(v_base + ot[:, None] * svn + od[None, :] * svd, mask=m2, other=0.0).to(tl.float32)
            if NEED_DS:
                tl.store(ds_base + ot, tl.sum(v * du, axis=1), mask=mask_t)
            if NEED_PARAMS:
                if HAS_SCALE:
                    u = v * sc[:, None]
                else:
                    u = v
                gram = tl.dot(g.to(OP_DTYPE).to(DOT_DTYPE), tl.trans(u.to(OP_DTYPE).to(DOT_DTYPE)), acc=gram,
                              input_precision=PRECISION)
                q_re = tl.sum(rq_re[:, None] * u, axis=0)
                q_im = tl.sum(rq_im[:, None] * u, axis=0)
                p_re = tl.sum(aq_re[:, None] * u, axis=0)
                p_im = tl.sum(aq_im[:, None] * u, axis=0)
                pc_re += q_re * bk_re - q_im * bk_im
                pc_im += q_re * bk_im + q_im * bk_re
                pr_re += p_re * bk_re - p_im * bk_im + q_re * dk_re - q_im * dk_im
                pr_im += p_re * bk_im + p_im * bk_re + q_re * dk_im + q_im * dk_re
                gd_re = tl.sum(di_re[:, None] * g, axis=0)
                gd_im = tl.sum(di_im[:, None] * g, axis=0)
                nd_re = bT_re * bk_re - bT_im * bk_im + aT_re * dk_re - aT_im * dk_im + gd_re
                nd_im = bT_re * bk_im + bT_im * bk_re + aT_re * dk_im + aT_im * dk_re + gd_im
                dk_re = nd_re
                dk_im = nd_im
            gb_re = tl.sum(ri_re[:, None] * g, axis=0)
            gb_im = tl.sum(ri_im[:, None] * g, axis=0)
            nb_re = aT_re * bk_re - aT_im * bk_im + gb_re
            nb_im = aT_re * bk_im + aT_im * bk_re + gb_im
            bk_re = nb_re
            bk_im = nb_im

        if NEED_PARAMS:
            # In-chunk parts: lag weights r**(i-j) (i >= j) and (i-j) r**(i-j-1) (zero at i = j) on
            # the Gram sum.
            lag = it[:, None] - it[None, :]
            lagc = tl.maximum(lag, 0)
            wc_re = tl.where(lag >= 0, tl.load(tab + lagc), 0.0)
            wc_im = tl.where(lag >= 0, tl.load(tab + (BT + 1) + lagc), 0.0)
            wr_re = tl.where(lag >= 0, tl.load(tab + 4 * (BT + 1) + lagc), 0.0)
            wr_im = tl.where(lag >= 0, tl.load(tab + 5 * (BT + 1) + lagc), 0.0)
            sc_re = tl.sum(pc_re, axis=0) + tl.sum(tl.sum(wc_re * gram, axis=1), axis=0)
            sc_im = tl.sum(pc_im, axis=0) + tl.sum(tl.sum(wc_im * gram, axis=1), axis=0)
            sr_re = tl.sum(pr_re, axis=0) + tl.sum(tl.sum(wr_re * gram, axis=1), axis=0)
            sr_im = tl.sum(pr_im, axis=0) + tl.sum(tl.sum(wr_im * gram, axis=1), axis=0)
            out = pg_ptr + (pid_d.to(tl.int64) * BH + pid_bh) * 4
            tl.store(out + 0, sc_re)
            tl.store(out + 1, sc_im)
            tl.store(out + 2, sr_re)
            tl.store(out + 3, sr_im)

    return _wave_fwd_kernel, _wave_bwd_kernel


def _dot_dtypes(dtype: torch.dtype) -> dict:
    """tl.dot operands are rounded to OP_DTYPE (the input dtype) and multiplied as DOT_DTYPE.

    On a GPU both are the input dtype (tensor cores, fp32 accumulation). triton's interpreter
    multiplies bfloat16 operands as their raw 16-bit patterns, so there the rounded operands are
    multiplied in fp32 instead: the same numbers, since a product of two bfloat16 values is exact
    in fp32 and the accumulation is fp32 either way.
    """
    op = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}[dtype]
    dot = tl.float32 if _INTERPRETED and dtype == torch.bfloat16 else op
    return {"OP_DTYPE": op, "DOT_DTYPE": dot}


def _config(dtype: torch.dtype, d: int, rows: int, device: torch.device, backward: bool) -> tuple[int, int, int]:
    """(BT tokens per chunk, BD channels per program, warps) for one launch.

    Programs are rows x ceil(d / BD) (rows = batch * heads), each walking the whole sequence, so
    BD trades work per program against parallelism. The sizes keep every variant under 255
    registers per thread without spills on sm_90 (ptxas, triton 3.9):
    16-bit inputs: 64-token chunks; forward BD 32 with 8 warps (about 120 registers) unless that
    leaves fewer than two programs per SM, then BD 16 with 4 warps; backward BD 16 with 8 warps
    (about 180). float32 inputs run the dots in full fp32 (FMA, no tensor cores), whose operand
    layouts take more registers: 32-token chunks, BD 16, 4 warps (about 155 / 240).
    The backward must use the forward's chunk length: it reuses the forward's coefficient table.
    """
    if dtype == torch.float32:
        return 32, 16, 4
    if backward or d <= 16:
        return 64, 16, 8 if backward else 4
    if device.type == "cuda":
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        if rows * -(-d // 32) < 2 * sms:
            return 64, 16, 4
    return 64, 32, 8


def log_pole(frequency, damping, stride) -> torch.Tensor:
    """(H, 2) float64 [log|r|, arg r] of the pole r = exp((-alpha + i omega) s), from the parameters.

    Taken from alpha and omega directly rather than from r's fp32 real and imaginary parts: for weak
    damping |r| = 1 - alpha s sits so close to 1 that fp32 keeps only a few digits of alpha s
    (alpha = 1e-4: 5e-4 relative), and r**m would carry that error m-fold. The angle is reduced to
    [-pi, pi] in float64, where omega s is exact for an fp32 omega.
    """
    alpha = torch.nn.functional.softplus(damping.detach().double())
    theta = torch.remainder(frequency.detach().double() * float(stride) + torch.pi, 2 * torch.pi) - torch.pi
    return torch.stack([-alpha * float(stride), theta], dim=1)


def _tables(r_re, r_im, c_re, c_im, pole: torch.Tensor | None, bt: int) -> torch.Tensor:
    """(H, 6, bt + 1) fp32 coefficient table at m = 0..bt: r**m, c r**m, m r**(m-1) (Re, Im each).

    Computed in float64 and rounded once: every kernel coefficient is then accurate to fp32
    rounding, with no exp/cos of large arguments inside the kernels. pole: log_pole's (H, 2), or
    None to take |r| and arg r from r_re, r_im.
    """
    rr, ri, cr, cim = (t.detach().double() for t in (r_re, r_im, c_re, c_im))
    if pole is None:
        logr, theta = 0.5 * torch.log(rr * rr + ri * ri), torch.atan2(ri, rr)
    else:
        logr, theta = pole.detach().double().unbind(1)
    z = torch.complex(logr.clamp(min=-1e4), theta)[:, None]  # log r; the floor keeps 0 * log r finite
    m = torch.arange(bt + 1, device=z.device, dtype=torch.float64)
    rm = torch.exp(z * m)
    crm = torch.complex(cr, cim)[:, None] * rm
    mrm = m * torch.exp(z * (m - 1).clamp(min=0))  # m r**(m-1): zero at m = 0
    return torch.stack([rm.real, rm.imag, crm.real, crm.imag, mrm.real, mrm.imag], dim=1).float().contiguous()


def _on_device(device: torch.device):
    """triton launches on the current CUDA device: make it the tensors' device."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _scale_strides(s4):
    if s4 is None:
        return 0, 0, 0
    return s4.stride(0), s4.stride(1), s4.stride(2)


class WaveTritonConv(torch.autograd.Function):
    """y = wave operator applied to u = v * scale, on logical (B, H, N, d) views of any strides.

    Inputs: v4 (B, H, N, d) float32/bfloat16/float16; s4 (B, H, N, 1) or None; r_re, r_im, c_re,
    c_im (H,) real; pole: optional (H, 2) [log|r|, arg r] (log_pole), the precise pole the kernels
    use (gradients still flow through r_re, r_im). Returns y (B, H, N, d) in v4's dtype, laid out
    like v4 when v4 is dense. Saved for backward: v4, s4 and the (H, 6, BT + 1) coefficient table.
    """

    @staticmethod
    def forward(ctx, v4, s4, r_re, r_im, c_re, c_im, pole=None):
        B, H, N, D = v4.shape
        y4 = torch.empty_like(v4)  # keeps v4's stride order: the caller's layout, no copy
        ctx.save_for_backward(v4, s4, r_re, r_im, c_re, c_im)
        ctx.has_scale = s4 is not None
        if y4.numel() == 0:
            return y4
        bt, bd, warps = _config(v4.dtype, D, B * H, v4.device, backward=False)
        table = _tables(r_re, r_im, c_re, c_im, pole, bt).to(v4.device)
        ctx.table = table  # the backward's chunk length is the forward's (_config)
        grid = (B * H, -(-D // bd))
        s_arg = s4 if s4 is not None else v4  # never read when HAS_SCALE is False
        fwd, _bwd = _kernels()
        with _on_device(v4.device):
            fwd[grid](
                v4, s_arg, y4, table,
                H, N, D,
                *v4.stride(), *_scale_strides(s4), *y4.stride(),
                HAS_SCALE=s4 is not None, BT=bt, BD=bd,
                **_dot_dtypes(v4.dtype), PRECISION="ieee",
                num_warps=warps,
            )
        return y4

    @staticmethod
    @once_differentiable
    def backward(ctx, g4):
        v4, s4, r_re, r_im, c_re, c_im = ctx.saved_tensors
        if not ctx.has_scale:
            s4 = None
        B, H, N, D = v4.shape
        need_dv = ctx.needs_input_grad[0]
        need_ds = s4 is not None and ctx.needs_input_grad[1]
        need_params = any(ctx.needs_input_grad[2:6])
        if not (need_dv or need_ds or need_params) or v4.numel() == 0:
            zero = [None if t is None else torch.zeros_like(t) for t in (v4, s4, r_re, r_im, c_re, c_im)]
            return (*(z if need else None for z, need in zip(zero, ctx.needs_input_grad)), None)
        bt, bd, warps = _config(v4.dtype, D, B * H, v4.device, backward=True)
        table = ctx.table
        assert table.shape[-1] == bt + 1
        ndb = -(-D // bd)
        dv4 = torch.empty_like(v4) if need_dv else v4  # never written when not needed
        ds = torch.empty((ndb, B, H, N) if need_ds else (1,), device=v4.device, dtype=torch.float32)
        pg = torch.empty((ndb, B, H, 4) if need_params else (1,), device=v4.device, dtype=torch.float32)
        s_arg = s4 if s4 is not None else v4
        _fwd, bwd = _kernels()
        with _on_device(v4.device):
            bwd[(B * H, ndb)](
                v4, s_arg, g4, dv4, ds, pg, table,
                H, N, D, B * H,
                *v4.stride(), *_scale_strides(s4), *g4.stride(), *dv4.stride(),
                HAS_SCALE=s4 is not None, NEED_DV=need_dv, NEED_DS=need_ds, NEED_PARAMS=need_params,
                LOAD_V=need_ds or need_params,
                BT=bt, BD=bd, **_dot_dtypes(v4.dtype), PRECISION="ieee",
                num_warps=warps,
            )
        grad_s = None
        if need_ds:
            grad_s = ds.sum(0).unsqueeze(-1).to(s4.dtype)  # (B, H, N, 1)
        grads_p = [None] * 4
        if need_params:
            tot = pg.sum(dim=(0, 1))  # (H, 4): sums over channel blocks and batch
            s_c = torch.complex(tot[:, 0], tot[:, 1])
            s_r = torch.complex(tot[:, 2], tot[:, 3]) * torch.complex(c_re.detach().float(), c_im.detach().float())
            grads_p = [s_r.real.to(r_re.dtype), (-s_r.imag).to(r_im.dtype),
                       s_c.real.to(c_re.dtype), (-s_c.imag).to(c_im.dtype)]
        return (dv4 if need_dv else None), grad_s, *grads_p, None


def _check_inputs(u: torch.Tensor, layout: str, scale: torch.Tensor | None, stride) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; valid choices: {', '.join(LAYOUTS)}")
    if u.dim() != 4:
        raise ValueError(f"u must be 4-D ({layout}), got shape {tuple(u.shape)}")
    if u.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"u has dtype {u.dtype}; the triton kernels take float32, bfloat16 or float16")
    s = check_stride(stride)
    if not stride_is_integer(s):
        raise ValueError(f"the token operator is exact only for integer strides, got field_stride={s:g}")
    if scale is not None:
        want = list(u.shape)
        want[LAYOUTS[layout][2]] = 1  # the channel axis
        if list(scale.shape) != want:
            raise ValueError(f"scale must have u's shape with one channel, {tuple(want)}, got {tuple(scale.shape)}")
        if scale.device != u.device:
            raise ValueError(f"scale is on {scale.device} but u is on {u.device}")
    why = triton_available(u.device)
    if why is not None:
        raise RuntimeError(f"wave_triton_conv cannot run here: {why}")


def wave_triton_conv(u: torch.Tensor, frequency, damping, phase, stride, norm_cells: int = DEFAULT_NORM_CELLS,
                     scale: torch.Tensor | None = None, layout: str = "bhnd") -> torch.Tensor:
    """The wave convolution of deposits u * scale (before head coupling), by the fused Triton kernels.

    Same operator and conventions as wave_conv(..., mode="token"/"scan", layout=layout, scale=scale):
    u is (B, H, N, d) for "bhnd", (B, N, H, d) for "bnhd", (B, H, d, N) for "bhdn", any strides;
    scale has u's shape with one channel, or is None. frequency, damping, phase: (H,). Integer
    strides only. Returns u's shape and dtype, laid out like u when u is dense (no copies either
    way). Differentiable in u, scale, frequency, damping and phase.
    """
    _check_inputs(u, layout, scale, stride)
    perm = LAYOUTS[layout]
    v4 = u.permute(perm).transpose(-1, -2)  # (B, H, N, d) view
    s4 = None if scale is None else scale.permute(perm).transpose(-1, -2)  # (B, H, N, 1) view
    pdt = torch.float32
    freq, damp, ph = frequency.to(pdt), damping.to(pdt), phase.to(pdt)
    r, c, _z = pole_and_gain(freq, damp, ph, float(stride), norm_cells)
    y4 = WaveTritonConv.apply(v4, s4, r.real, r.imag, c.real, c.imag, log_pole(freq, damp, stride))
    inverse = tuple(sorted(range(4), key=perm.__getitem__))
    return y4.transpose(-1, -2).permute(inverse)
